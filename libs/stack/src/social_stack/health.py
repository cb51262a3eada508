"""`make health-check`: every component's health and each service's key
signals on one screen, read from the processes themselves (their probes and
/metrics, Envoy's stats): no Prometheus needed.

The service figures cover each process's life so far (a fresh one has few
requests): requests, the share answered 5xx, the p95 of their latency from
the histogram's buckets, and now: requests in flight, PostgreSQL and Redis
connections in use of the pool's limit, the event loop's p99 lateness, the
outbox's waiting events and the worst consumer lag.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from social_stack import processes
from social_stack.local import Endpoints
from social_stack.processes import Component

Samples = list[Sample]


def scrape(url: str, timeout: float = 2.0) -> Samples:
    text = httpx.get(url, timeout=timeout, trust_env=False).text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def _sum(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def quantile(buckets: Mapping[float, float], q: float) -> float | None:
    """The q-quantile of a cumulative histogram (upper bound -> count), as
    Prometheus's histogram_quantile interpolates it; None without samples."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total == 0:
        return None
    rank, below, lower = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # past the last finite bucket: its bound is all we know
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        below, lower = count, bound
    return lower


def _buckets(samples: Samples, name: str) -> dict[float, float]:
    merged: dict[float, float] = defaultdict(float)
    for sample in samples:
        if sample.name == f"{name}_bucket":
            merged[float(sample.labels["le"])] += sample.value
    return merged


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _of(in_use: float, limit: float) -> str:
    return f"{in_use:.0f}/{limit:.0f}" if limit else "-"


def signals(samples: Samples) -> dict[str, float]:
    """A service process's key signals from its /metrics: requests and 5xx
    answered so far, and now: requests in flight, pool connections in use
    and their limits, the outbox's waiting events and the worst consumer lag
    (s)."""
    lags = [s.value for s in samples if s.name == "events_consumer_lag_seconds"]
    return {
        "requests": _sum(samples, "http_requests_total"),
        "errors": sum(
            s.value
            for s in samples
            if s.name == "http_requests_total" and s.labels.get("status", "").startswith("5")
        ),
        # Less the scrape that reads it.
        "in_flight": max(0.0, _sum(samples, "http_requests_in_flight") - 1),
        "db_in_use": _sum(samples, "db_pool_connections", state="in_use"),
        "db_max": _sum(samples, "db_pool_max_connections"),
        "redis_in_use": _sum(samples, "redis_pool_connections", state="in_use"),
        "redis_max": _sum(samples, "redis_pool_max_connections"),
        "outbox": _sum(samples, "outbox_pending_events"),
        "consumer_lag_s": max(lags, default=0.0),
    }


def service_row(name: str, samples: Samples) -> list[str]:
    now = signals(samples)
    requests = now["requests"]
    has_consumers = any(s.name == "events_consumer_lag_seconds" for s in samples)
    return [
        name,
        f"{requests:,.0f}",
        f"{now['errors'] / requests:.1%}" if requests else "-",
        _ms(quantile(_buckets(samples, "http_request_duration_seconds"), 0.95)),
        f"{now['in_flight']:.0f}",
        _of(now["db_in_use"], now["db_max"]),
        _of(now["redis_in_use"], now["redis_max"]),
        _ms(quantile(_buckets(samples, "event_loop_lag_seconds"), 0.99)),
        f"{now['outbox']:.0f}",
        f"{now['consumer_lag_s']:.1f} s" if has_consumers else "-",
    ]


_HEADER = [
    "service",
    "requests",
    "5xx",
    "p95",
    "in flight",
    "db pool",
    "redis pool",
    "loop lag p99",
    "outbox",
    "consumer lag",
]


def _table(rows: Iterable[list[str]]) -> str:
    rows = list(rows)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def report(endpoints: Endpoints, components: list[Component]) -> tuple[str, bool]:
    """The screen, and whether every component is healthy."""
    healthy_all = True
    states = [["component", "state", "probe"]]
    for component in components:
        running = processes.is_running(component)
        healthy = running and component.probe.healthy()
        healthy_all &= healthy
        state = "healthy" if healthy else ("UNHEALTHY" if running else "NOT RUNNING")
        states.append([component.name, state, component.probe.address])
    services = [_HEADER]
    for name, address in endpoints.services_http.items():
        try:
            services.append(service_row(name, scrape(f"http://{address}/metrics")))
        except httpx.HTTPError:
            services.append([name, "unreachable", *["-"] * (len(_HEADER) - 2)])
    lines = [_table(states), "", _table(services)]
    try:
        envoy = scrape(f"{endpoints.envoy_admin_url}/stats/prometheus")
        realtime = scrape(f"http://{endpoints.services_http['realtime']}/metrics")
    except httpx.HTTPError:
        lines.append("\ngateway: unreachable")
    else:
        public = {"envoy_http_conn_manager_prefix": "public"}
        downstream = _sum(envoy, "envoy_http_downstream_rq_xx", **public)
        failed = _sum(envoy, "envoy_http_downstream_rq_xx", **public, envoy_response_code_class="5")
        unhealthy = [
            s.labels["envoy_cluster_name"]
            for s in envoy
            if s.name == "envoy_cluster_membership_healthy" and s.value == 0
        ]
        lines += [
            "",
            f"gateway: {downstream:,.0f} requests, "
            + (f"{failed / downstream:.1%} 5xx" if downstream else "no 5xx")
            + f"; upstreams without a healthy host: {', '.join(unhealthy) or 'none'}",
            f"realtime: {_sum(realtime, 'realtime_connections'):.0f} sockets open, "
            f"{_sum(realtime, 'realtime_events_delivered_total'):,.0f} events delivered, "
            f"{_sum(realtime, 'realtime_clients_cut_total'):.0f} slow clients closed",
            "(service figures since each process started)",
        ]
    return "\n".join(lines), healthy_all
