"""What the stack does over a load test, sampled every SAMPLE_S: each
component's CPU (cores) and memory (the PSS of its process tree, from /proc,
as the bench reads them) and the load generator's (k6, on the same cores);
the connections PostgreSQL and Redis hold; each service's pool connections,
outbox and consumer lag (its /metrics, as ``make health-check`` reads them);
and realtime's sockets.

A sample that cannot be read (a component restarting in the chaos test)
leaves that value out of that sample; the plots show the hole.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from social_common.redis import UNAVAILABLE, primaries_info
from social_stack.health import scrape, signals
from social_stack.local import Endpoints

from tools.bench import observe

SAMPLE_S = 1.0
# The load generator's name beside the components'.
GENERATOR = "k6"


@dataclass
class Sample:
    t: float
    # Per component: CPU seconds so far, memory bytes now.
    cpu_s: dict[str, float]
    memory: dict[str, int]
    # Store connections, service signals (name -> signal -> value), sockets.
    postgres_connections: int | None = None
    redis_clients: int | None = None
    services: dict[str, dict[str, float]] = field(default_factory=dict)
    sockets: float | None = None


class Sampler:
    """Samples in a thread of its own between start() and stop()."""

    def __init__(self, endpoints: Endpoints, run_dir: Path, generator_pid: int) -> None:
        self.endpoints = endpoints
        self.run_dir = run_dir
        self.generator = {GENERATOR: generator_pid}
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join()
        return self.samples

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.samples.append(self.sample())
            self._stop.wait(max(0.0, SAMPLE_S - (time.monotonic() - started)))

    def sample(self) -> Sample:
        usage = observe.usage(self.run_dir, self.generator)
        sample = Sample(
            t=time.time(),
            cpu_s={name: cpu for name, (cpu, _) in usage.items()},
            memory={name: memory for name, (_, memory) in usage.items()},
        )
        try:
            with psycopg.connect(self.endpoints.database_admin_url, connect_timeout=1) as conn:
                row = conn.execute("SELECT count(*) FROM pg_stat_activity").fetchone()
                sample.postgres_connections = int(row[0]) if row else None
        except psycopg.Error:
            pass
        with contextlib.suppress(*UNAVAILABLE):
            sample.redis_clients = sum(
                int(info["connected_clients"])
                for info in primaries_info(
                    self.endpoints.redis_url, "clients", socket_timeout=1
                ).values()
            )
        for name, address in self.endpoints.services_http.items():
            try:
                samples = scrape(f"http://{address}/metrics")
            except httpx.HTTPError:
                continue
            sample.services[name] = signals(samples)
            if name == "realtime":
                sample.sockets = sum(s.value for s in samples if s.name == "realtime_connections")
        return sample
