"""A Redis Cluster on loopback: its nodes' settings, and forming it once they run.

Three primaries with a replica each, the smallest cluster that survives the
loss of a primary (its replica takes over), as a managed one is laid out.
What a cluster's client needs, the services get from their Redis URL
(``social_common.redis``); this module is the local stack's and the tests'.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial

import redis

PRIMARIES = 3
NODES = 2 * PRIMARIES
SLOTS = 16384
# How long a node may be unreachable before the others fail it over (the
# default is 15 s; loopback needs far less, and the failover test waits this).
NODE_TIMEOUT_MS = 1000


def bus_port(port: int) -> int:
    """A node's cluster bus port: Redis's default, its port + 10,000, unless
    that passes 65,535 (the dev stack's ports, 63799 on): then its port +
    1,000, still above the kernel's ephemeral ports (which any connection's
    source port may hold)."""
    return port + 10_000 if port + 10_000 <= 65_535 else port + 1_000


def node_arguments(config_file: str, port: int) -> list[str]:
    """The server arguments that make the node on ``port`` a cluster node."""
    return [
        "--cluster-enabled", "yes",
        "--cluster-config-file", config_file,
        "--cluster-port", str(bus_port(port)),
        "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
        # A replica takes over however long it was cut off from its primary:
        # on loopback a replica is never stale by more than the timeout.
        "--cluster-replica-validity-factor", "0",
    ]  # fmt: skip


def _text(reply: object) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _info(client: redis.Redis) -> dict[str, str]:
    return {key: _text(value) for key, value in client.cluster("INFO").items()}


def _settled(client: redis.Redis) -> bool:
    info = _info(client)
    return info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == NODES


def _in_sync(replica: redis.Redis) -> bool:
    return bool(replica.info("replication").get("master_link_status") == "up")


def _wait(condition: str, check: Callable[[], bool], deadline: float) -> None:
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Redis cluster did not settle: {condition}")
        time.sleep(0.05)


def form(ports: Sequence[int], timeout: float = 60.0) -> None:
    """Forms the cluster of the nodes listening on ``ports`` (primaries first,
    then their replicas in the same order), unless it already is (a durable
    stack started again: each node keeps its config file); returns once every
    slot is served and every replica follows its primary."""
    if len(ports) != NODES:
        raise ValueError(f"a cluster here has {NODES} nodes, not {len(ports)}")
    deadline = time.monotonic() + timeout
    clients = [redis.Redis(host="127.0.0.1", port=port) for port in ports]
    try:
        if int(_info(clients[0])["cluster_slots_assigned"]) == 0:
            _assign(clients, ports[0], deadline)
        for client in clients:
            _wait("every node sees every slot served", partial(_settled, client), deadline)
        for client in clients[PRIMARIES:]:
            _wait("every replica in sync", partial(_in_sync, client), deadline)
    finally:
        for client in clients:
            client.close()


def _assign(clients: Sequence[redis.Redis], first_port: int, deadline: float) -> None:
    """Slots to the primaries, in equal ranges; every node meets the first;
    each replica follows its primary."""
    per_primary = SLOTS // PRIMARIES
    for i, client in enumerate(clients[:PRIMARIES]):
        last = SLOTS - 1 if i == PRIMARIES - 1 else (i + 1) * per_primary - 1
        client.cluster("ADDSLOTSRANGE", i * per_primary, last)
    for client in clients[1:]:
        client.cluster("MEET", "127.0.0.1", first_port, bus_port(first_port))
    for primary, replica in zip(clients[:PRIMARIES], clients[PRIMARIES:], strict=True):
        primary_id = _text(primary.cluster("MYID"))

        def knows_primary(replica: redis.Redis = replica, primary_id: str = primary_id) -> bool:
            nodes = replica.cluster("NODES").values()
            return any(node["node_id"] == primary_id for node in nodes)

        # A replica can follow a primary only once it has heard of it.
        _wait("a replica learns of its primary", knows_primary, deadline)
        replica.cluster("REPLICATE", primary_id)


def move_slot(slot: int, source: str, target: str) -> None:
    """Moves ``slot`` and its keys from the primary at ``source`` to the one
    at ``target`` (``host:port`` each), as resharding does: the target imports
    the slot, the source migrates its keys (a client of a key already moved
    is sent on with ASK), then every primary is told the target serves it
    (the source unsubscribes the slot's sharded pub/sub clients)."""
    with (
        redis.Redis.from_url(f"redis://{source}/0") as moving_from,
        redis.Redis.from_url(f"redis://{target}/0") as moving_to,
    ):
        source_id = _text(moving_from.cluster("MYID"))
        target_id = _text(moving_to.cluster("MYID"))
        moving_to.cluster("SETSLOT", slot, "IMPORTING", source_id)
        moving_from.cluster("SETSLOT", slot, "MIGRATING", target_id)
        host, port = target.rsplit(":", 1)
        while keys := moving_from.cluster("GETKEYSINSLOT", slot, 100):
            moving_from.migrate(host, int(port), keys, 0, 5000)
        primaries = [
            address
            for address, node in moving_from.cluster("NODES").items()
            if "master" in node["flags"].split(",")
        ]
        # The target first: it serves the slot before the source sends clients on.
        for address in sorted(primaries, key=lambda a: (a != target, a != source)):
            with redis.Redis.from_url(f"redis://{address}/0") as primary:
                primary.cluster("SETSLOT", slot, "NODE", target_id)
