"""Redis through redis-py's asyncio client (hiredis parses replies when installed):
one server, or a Redis Cluster when the URL says ``?cluster=true``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
import redis.cluster
from redis._parsers import AsyncCommandsParser
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

# A command whose connection broke (Redis restarted, or failed over, since it
# was last used) is sent again on a new one, twice at most and within a
# tenth of a second: a pooled connection gone stale costs no request a 503,
# while Redis that stays down is still reported at once. Not on timeouts,
# which would multiply the wait.
_RETRY = Retry(
    ExponentialWithJitterBackoff(base=0.01, cap=0.1),
    retries=2,
    supported_errors=(RedisConnectionError,),
)

# How long a command's reply may take; a blocking read (XREAD BLOCK) must
# ask to wait less, or every quiet read ends in a timeout.
SOCKET_TIMEOUT_S = 5.0

# What a Redis that is away (restarting, failing over, unreachable) raises:
# callers that can do without it catch this and carry on.
UNAVAILABLE = (RedisError, RedisClusterException, OSError)

# At most this many connections per process (per node of a cluster).
MAX_CONNECTIONS = 256
# Both clients' connections: how many, how long to connect and to wait for a
# reply, a PING on one idle for 30 s before it is used, the retry above.
_OPTIONS: dict[str, Any] = {
    "max_connections": MAX_CONNECTIONS,
    "socket_connect_timeout": 2.0,
    "socket_timeout": SOCKET_TIMEOUT_S,
    "health_check_interval": 30,
    "retry": _RETRY,
}


class _Connection(aioredis.Connection):
    """A connection whose write to a transport already closed (a reset the
    connection has not noticed yet) fails as a broken connection, which the
    retry above sends again on a new one. uvloop raises RuntimeError there
    ("unable to perform operation on <TCPTransport closed=True>"), which
    redis-py would pass on as is: a 500 instead of a retried command. So
    does a write on a connection closed under it while it was connecting
    (redis-py's cluster client, learning its map while commands run, closes
    the connections of the nodes it replaces): AttributeError on its writer."""

    async def _send_packed_command(self, command: Iterable[bytes]) -> None:
        if self._writer is None:
            raise ConnectionResetError("the connection was closed while in use")
        try:
            await super()._send_packed_command(command)
        except RuntimeError as exc:
            raise ConnectionResetError(str(exc)) from exc


class _SSLConnection(aioredis.SSLConnection, _Connection):
    """:class:`_Connection` over TLS (rediss://)."""


def create_redis(url: str, ca_cert: str | None = None) -> aioredis.Redis:
    """A client of the Redis at ``url``. ``ca_cert``: for a rediss:// URL, the
    PEM of the CA certificate(s) that signed the server's certificate (such as
    Memorystore's own CA), trusted besides the system's trust store; the
    server's name (or address) is still checked against its certificate.

    ``?cluster=true`` in the URL: ``url`` is a node (or the discovery
    endpoint) of a Redis Cluster, and the client follows the cluster's map of
    slots to nodes. The client's interface is the one-server client's; what
    a cluster forbids (keys of one command in several slots) the callers
    avoid with the hash tags their key names carry.
    """
    tls: dict[str, Any] = {}
    if ca_cert is not None:
        if urlsplit(url).scheme != "rediss":
            raise ValueError("a CA certificate needs a rediss:// (TLS) URL")
        tls["ssl_ca_data"] = ca_cert
    url, cluster = _split_cluster_flag(url)
    if cluster:
        return _create_cluster(url, tls)
    # At most MAX_CONNECTIONS; past that a command waits (up to 2 s) for one
    # to be free instead of failing: a burst of requests queues briefly rather
    # than answering 503. A pool handed to the client brings its own retry
    # policy (the client's default applies only to pools it makes), so it is
    # given here.
    pool = aioredis.BlockingConnectionPool.from_url(url, timeout=2.0, **_OPTIONS, **tls)
    pool.connection_class = _retrying_class(pool.connection_class)
    return aioredis.Redis.from_pool(pool)  # closing the client closes the pool


def _create_cluster(url: str, tls: dict[str, Any]) -> aioredis.Redis:
    # Per node, at most MAX_CONNECTIONS; past that a command fails at once
    # (the cluster client does not wait for a free one).
    #
    # A MOVED reply corrects the client's map for its slot, and nothing
    # more: redis-py's default also drops the whole map at every fifth,
    # closing the connections of every command in flight, on every node,
    # which it then sends again (twice, if a write had already run). A
    # failover still makes the client learn the whole map again (the
    # commands to the lost primary fail to connect).
    client = _Cluster.from_url(url, reinitialize_steps=0, **_OPTIONS, **tls)
    # Nodes the client learns of later are made from these arguments.
    client.connection_kwargs["connection_class"] = _retrying_class(
        client.connection_kwargs["connection_class"]
    )
    for node in client.get_nodes():
        node.connection_class = client.connection_kwargs["connection_class"]
    client.commands_parser = _StreamKeysParser()
    # The cluster client answers every command the callers send as the
    # one-server client does (routing each by its keys' slot); its classes
    # are not related, so the type checker is told.
    return cast("aioredis.Redis", client)


class _Cluster(RedisCluster):
    """redis-py's cluster client, which learns the cluster's map before it
    routes a command. redis-py routes a command that comes while it knows no
    map (a new client's first commands, or any after it dropped its map on
    a CLUSTERDOWN reply) to a random node, as if the command had no key:
    most come back MOVED. Fifty concurrent commands on a new client failed
    about one time in twenty, as the MOVED replies (every fifth, with
    redis-py's default steps) closed the connections of those in flight."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._initialize:
            await self.initialize()
        return await super().execute_command(*args, **kwargs)


class _StreamKeysParser(AsyncCommandsParser):
    """The cluster client's parser of a command's keys (to route it by their
    slot), reading XREAD's and XREADGROUP's itself: redis-py asks a node
    (``COMMAND GETKEYS``) for the keys of every command whose keys move, twice
    per command (a consumer's every read took three round trips, not one),
    and always the client's default node: while that one failed over, every
    read failed, whatever its slot."""

    async def get_keys(self, *args: Any) -> Any:
        name = as_text(args[0]).upper()
        if name not in _STREAM_READS:
            return await super().get_keys(*args)
        # After the group and consumer names (XREADGROUP GROUP <g> <c>), the
        # first STREAMS is the keyword (COUNT's and BLOCK's values are numbers):
        # the keys, then as many ids.
        words = [as_text(arg).upper() if isinstance(arg, str | bytes) else "" for arg in args]
        start = words.index("STREAMS", _STREAM_READS[name]) + 1
        return args[start : start + (len(args) - start) // 2]


# Where each stream read's options begin (past its name, and XREADGROUP's
# GROUP <group> <consumer>).
_STREAM_READS = {"XREAD": 1, "XREADGROUP": 4}


def _retrying_class(chosen: type[AbstractConnection]) -> type[AbstractConnection]:
    """The URL chose the class (TLS or not): its variant that retries a write
    to a closed transport."""
    if issubclass(chosen, aioredis.SSLConnection):
        return _SSLConnection
    return _Connection if chosen is aioredis.Connection else chosen


def _split_cluster_flag(url: str) -> tuple[str, bool]:
    """``url`` without its ``cluster`` parameter, and whether it was true."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    flags = [value for name, value in query if name == "cluster"]
    if any(value not in ("true", "false") for value in flags):
        raise ValueError("REDIS_URL's cluster parameter is true or false")
    rest = urlencode([(name, value) for name, value in query if name != "cluster"])
    return urlunsplit(parts._replace(query=rest)), flags[-1:] == ["true"]


def create_sync_redis(url: str, **options: Any) -> redis.Redis:
    """A blocking client of the Redis at ``url`` (a cluster's when the URL
    says so), for tools and tests: the services use :func:`create_redis`."""
    url, cluster = _split_cluster_flag(url)
    if cluster:
        return cast("redis.Redis", redis.cluster.RedisCluster.from_url(url, **options))
    return redis.Redis.from_url(url, **options)


def primaries_info(url: str, section: str, **options: Any) -> dict[str, dict[str, Any]]:
    """INFO ``section`` of each primary of the Redis at ``url`` by its
    address (host:port), a cluster's in the order of the slots they serve,
    for tools and tests."""
    with create_sync_redis(url, **options) as client:
        if not isinstance(client, redis.cluster.RedisCluster):
            where = client.connection_pool.connection_kwargs
            return {f"{where['host']}:{where['port']}": client.info(section)}
        slots = client.nodes_manager.slots_cache
        primaries = dict.fromkeys(slots[slot][0] for slot in sorted(slots))
        return {node.name: client.info(section, target_nodes=node) for node in primaries}


def in_cluster(client: aioredis.Redis) -> bool:
    """Whether ``client`` talks to a Redis Cluster (see :func:`create_redis`)."""
    return isinstance(client, RedisCluster)


def slot_groups(client: aioredis.Redis, keys: Sequence[str]) -> list[list[int]]:
    """The positions of ``keys``, grouped so that one command may take each
    group's keys: all of them on one server; on a cluster, those of one hash
    slot (in first-seen order)."""
    if not in_cluster(client):
        return [list(range(len(keys)))]
    groups: dict[int, list[int]] = {}
    for position, key in enumerate(keys):
        groups.setdefault(key_slot(key.encode()), []).append(position)
    return list(groups.values())


async def mget(client: aioredis.Redis, keys: Sequence[str]) -> list[Any]:
    """MGET of ``keys`` in any slots: on a cluster, one MGET per slot, sent
    together (one round trip per node), the values in ``keys``' order."""
    groups = slot_groups(client, keys)
    if len(groups) == 1:
        return list(await client.mget(keys))
    # A cluster's pipeline refuses MGET by name (its keys could span slots);
    # these are in one.
    replies = await pipelined(
        client, [(keys[group[0]], ("MGET", *(keys[i] for i in group))) for group in groups]
    )
    values: list[Any] = [None] * len(keys)
    for group, reply in zip(groups, replies, strict=True):
        for position, value in zip(group, reply, strict=True):
            values[position] = value
    return values


async def run_script(
    client: aioredis.Redis,
    script: AsyncScript,
    calls: Sequence[tuple[Sequence[str], Sequence[Any]]],
) -> list[Any]:
    """Runs ``script`` once per (keys, args) of ``calls``, each call's keys
    in one slot (:func:`slot_groups` makes such calls), sent together: one
    round trip per node. A node that lacks the script (restarted, or a
    replica that took over) is sent it and the calls again, so the scripts
    run this way must be safe to run twice."""
    if len(calls) == 1:
        keys, args = calls[0]
        return [await script(keys=list(keys), args=list(args))]
    # As MGET above: EVALSHA by name is refused, its keys in one slot are not.
    commands = [(keys[0], ("EVALSHA", script.sha, len(keys), *keys, *args)) for keys, args in calls]
    try:
        return await pipelined(client, commands)
    except NoScriptError:
        await client.script_load(script.script)  # on a cluster: to every primary
        return await pipelined(client, commands)


async def pipelined(
    client: aioredis.Redis, commands: Sequence[tuple[str, Sequence[Any]]]
) -> list[Any]:
    """Sends ``commands`` (each the key it routes by and the command, with
    its arguments) at once, and returns their replies in order (or raises an
    error one of them got). For reads, and writes that are safe to send twice.

    On a cluster each primary's commands go down one connection, as the
    client's map says (a key's slot looked up in a table): a 20-key MGET
    (20 slots) costs about 420 µs of client CPU so, 600 µs through redis-py's
    cluster pipeline (one server's pipeline: 150 µs). If the map was stale (a reply
    redirects) or a node's connection broke, the client learns the map
    again and all of them go again through redis-py's pipeline, which
    follows any redirect still to come."""
    if in_cluster(client):
        by_node = await _by_primary(client, commands)
        try:
            await asyncio.gather(*(node.execute_pipeline(sent) for node, sent in by_node.values()))
            return _replies(by_node, len(commands))
        except _STALE_ROUTE:
            with contextlib.suppress(*UNAVAILABLE):
                await learn_cluster_map(client)
    async with client.pipeline(transaction=False) as pipe:
        for _, command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute())


# What a command sent where the client's map says may meet when the map is
# out of date: sent again, redis-py's cluster client follows it. Not a
# timeout, which sending again would double.
_STALE_ROUTE = (
    RedisConnectionError,
    MovedError,
    AskError,
    TryAgainError,
    ClusterDownError,
)


async def node_of(client: aioredis.Redis, channel: str) -> str:
    """Which server holds ``channel`` for sharded pub/sub (SPUBLISH and
    SSUBSCRIBE, Redis 7): on a cluster, the name of the primary serving its
    slot, as the client last learned the cluster's map; "" on one server."""
    if not in_cluster(client):
        return ""
    return str((await _primary(client, channel)).name)


async def _primary(client: aioredis.Redis, key: str) -> ClusterNode:
    """The cluster's primary that serves ``key``, as the client last learned the map."""
    cluster = cast("RedisCluster", client)
    await cluster.initialize()  # the map, read once
    return _serving(cluster, key)


def _serving(cluster: RedisCluster, key: str) -> ClusterNode:
    """The primary that serves ``key`` in the map ``cluster`` has learned."""
    served_by = cluster.nodes_manager.slots_cache.get(key_slot(key.encode()))
    if not served_by:
        raise RedisClusterException(f"no node in the cluster's map serves {key}")
    return served_by[0]


async def channel_on(client: aioredis.Redis, node: str, name: str) -> str:
    """A channel of ``node`` (from :func:`node_of`): ``name``, on a cluster
    with a hash tag that puts it in one of the slots the node serves."""
    if not in_cluster(client):
        return name
    cluster = cast("RedisCluster", client)
    await cluster.initialize()
    for tag in range(1_000_000):
        channel = f"{name}:{{{tag}}}"
        if _serving(cluster, channel).name == node:
            return channel
    raise RedisClusterException(f"{node} serves no slot")


async def learn_cluster_map(client: aioredis.Redis) -> None:
    """Reads the cluster's map of slots to nodes again (after a subscription
    broke: a primary may have failed over, or slots moved); nothing on one server."""
    if in_cluster(client):
        await cast("RedisCluster", client).nodes_manager.initialize()


@contextlib.asynccontextmanager
async def node_pubsub(client: aioredis.Redis, node: str) -> AsyncIterator[PubSub]:
    """A pub/sub connection to ``node`` (from :func:`node_of`), to SSUBSCRIBE
    there to channels of the slots it serves."""
    if not in_cluster(client):
        async with client.pubsub() as pubsub:
            yield pubsub
        return
    found = cast("RedisCluster", client).get_node(node_name=node)
    if found is None:
        raise RedisClusterException(f"no node {node} in the cluster's map")
    pool = aioredis.ConnectionPool(
        connection_class=found.connection_class, **found.connection_kwargs
    )
    node_client = aioredis.Redis.from_pool(pool)
    try:
        async with node_client.pubsub() as pubsub:
            yield pubsub
    finally:
        await node_client.aclose()


class NotReplicated(RedisError):
    """Fewer replicas than asked acknowledged a write within the wait."""


async def execute_replicated(
    client: aioredis.Redis,
    writes: Sequence[tuple[str, Sequence[Any]]],
    replicas: int,
    timeout_ms: int,
) -> list[Any]:
    """Sends ``writes`` (each the key it writes and its command with its
    arguments) and returns their replies; with ``replicas``, only once that
    many replicas of every server written have them (a WAIT per server, on
    the connection of that server's writes), else raises :class:`NotReplicated`.

    On a cluster each primary's writes and its WAIT go down one connection,
    never retried or redirected piecemeal: redis-py's cluster pipeline sends
    again only the commands that failed, and a WAIT sent again alone (to
    another node, or after its writes went down a connection now dead)
    vouches for writes it did not follow — a failover then lost events the
    caller had let go. Any failure here fails the whole, for the caller to
    send it all again."""
    if not in_cluster(client):
        async with client.pipeline(transaction=False) as pipe:
            for _, command in writes:
                pipe.execute_command(*command)
            if replicas:
                pipe.execute_command("WAIT", replicas, timeout_ms)
            answered = list(await pipe.execute())
        if replicas:
            _check_replicated(answered.pop(), replicas)
        return answered
    by_node = await _by_primary(client, writes)
    if replicas:
        for _, sent in by_node.values():
            sent.append(PipelineCommand(len(writes), "WAIT", replicas, timeout_ms))
    try:
        await asyncio.gather(*(node.execute_pipeline(sent) for node, sent in by_node.values()))
        acknowledged = [_result(sent.pop()) for _, sent in by_node.values()] if replicas else []
        replies = _replies(by_node, len(writes))
    except UNAVAILABLE:
        # A primary gone or a slot moved: the next try goes where the cluster says.
        with contextlib.suppress(*UNAVAILABLE):
            await learn_cluster_map(client)
        raise
    for count in acknowledged:
        _check_replicated(count, replicas)
    return replies


async def _by_primary(
    client: aioredis.Redis, commands: Sequence[tuple[str, Sequence[Any]]]
) -> dict[str, tuple[ClusterNode, list[PipelineCommand]]]:
    """``commands`` (each the key it routes by and the command) by the
    primary of the cluster that serves each key, as the client's map says;
    each command knows its position among them."""
    cluster = cast("RedisCluster", client)
    await cluster.initialize()  # the map, read once
    # A batch writes few keys many times (a relay's streams): each looked up once.
    primaries = {key: _serving(cluster, key) for key in dict.fromkeys(k for k, _ in commands)}
    by_node: dict[str, tuple[ClusterNode, list[PipelineCommand]]] = {}
    for position, (key, command) in enumerate(commands):
        node = primaries[key]
        by_node.setdefault(node.name, (node, []))[1].append(PipelineCommand(position, *command))
    return by_node


def _result(command: PipelineCommand) -> Any:
    """A command's reply, or the error it got, raised."""
    if isinstance(command.result, Exception):
        raise command.result
    return command.result


def _replies(
    by_node: dict[str, tuple[ClusterNode, list[PipelineCommand]]], count: int
) -> list[Any]:
    """The replies of the ``count`` commands sent by node, in their order."""
    replies: list[Any] = [None] * count
    for _, sent in by_node.values():
        for command in sent:
            replies[command.position] = _result(command)
    return replies


def _check_replicated(acknowledged: int, replicas: int) -> None:
    """Raises unless WAIT's answer says enough replicas have the writes."""
    if acknowledged < replicas:
        raise NotReplicated(f"{acknowledged} of {replicas} replicas acknowledged")


def pool_usage(client: aioredis.Redis) -> tuple[int, int, int]:
    """Connections in use, idle, and the most there may be: of the client's
    pool; on a cluster, of its busiest node's (the first to run out)."""
    if not in_cluster(client):
        pool = client.connection_pool
        (idle, _), (in_use, _) = pool.get_connection_count()
        return in_use, idle, pool.max_connections
    nodes = cast("RedisCluster", client).get_nodes()
    # A node's pool is its connections, of which those free are idle (redis-py
    # has no public count of them).
    usage = [(len(n._connections) - len(n._free), len(n._free), n.max_connections) for n in nodes]
    return max(usage, default=(0, 0, MAX_CONNECTIONS))


def as_text(value: bytes | str) -> str:
    """A reply of a client that does not decode responses, as text."""
    return value.decode() if isinstance(value, bytes) else value


def stream_position(entry_id: str) -> tuple[int, int]:
    """Where a stream entry id (``<ms>-<seq>``, or ``<ms>``) sits: ids compare by it."""
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)


async def check_redis(client: aioredis.Redis) -> None:
    """Raises when Redis does not answer PING."""
    await client.ping()
