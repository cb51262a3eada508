"""Prometheus and Alertmanager against the local stack, and the Grafana
dashboards as code.

``prometheus_config`` renders a scrape config for a running stack from its
:class:`Endpoints` and the roster: one job per service (``job`` is the
service's name, its HTTP address serves ``/metrics``; replicas share the
ports, so one target per service is what there is locally), the job
``gateway`` for Envoy's ``/stats/prometheus``, the rule files of
``deploy/observability/prometheus/rules`` and, if given, a local Alertmanager.
``start_prometheus`` and ``start_alertmanager`` run Debian's binaries as
:class:`~social_stack.processes.Component` s on free loopback ports and wait
until they are ready (``python -m social_stack observability``).

The dashboards (``deploy/observability/dashboards/*.json``) are generated
from :data:`DASHBOARDS` below (``python -m social_stack render-dashboards``;
a test fails while the committed files are stale): the panels' queries are
code that the tests run against a real Prometheus, and the JSON model's
boilerplate (ids, grid positions, the data source) is written once.

The same command writes the rule that needs the roster's list of services:
``ServiceAbsent``, one ``absent()`` per service (``absent()`` only knows the
job names it is given), the end of ``rules/services.yml`` from
:data:`GENERATED_RULES_MARKER` on (:func:`render_service_rules`; the lines
above it are written by hand, and a test fails while the end is stale).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from social_common.fleet import roster

from social_stack import processes
from social_stack.local import Endpoints, free_ports, update_state
from social_stack.paths import REPO_ROOT
from social_stack.processes import Component, Probe, StackError

OBSERVABILITY_DIR = REPO_ROOT / "deploy" / "observability"
RULES_DIR = OBSERVABILITY_DIR / "prometheus" / "rules"
ALERTMANAGER_CONFIG = OBSERVABILITY_DIR / "alertmanager" / "alertmanager.yml"
DASHBOARDS_DIR = OBSERVABILITY_DIR / "dashboards"
# The rules file whose end is generated from the roster.
SERVICE_RULES = RULES_DIR / "services.yml"

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
INSTALL_HINT = "make observability-tools installs Prometheus and Alertmanager (Debian packages)"

# The job of Envoy's metrics; the services' jobs are their names.
GATEWAY_JOB = "gateway"
# Local scrapes: often enough that a test sees traffic within seconds.
DEFAULT_SCRAPE_INTERVAL = "5s"


class ToolMissing(StackError):
    """Prometheus or Alertmanager is not installed."""


def tool(path: str) -> str:
    """The binary at ``path`` (Debian's place), else its name on PATH."""
    if Path(path).is_file():
        return path
    found = shutil.which(Path(path).name)
    if found is None:
        raise ToolMissing(f"{Path(path).name} not found: {INSTALL_HINT}")
    return found


def rule_files(rules_dir: Path = RULES_DIR) -> list[Path]:
    """The rule files as they are now (they are globbed when a config is rendered)."""
    return sorted(p.resolve() for p in rules_dir.glob("*.yml"))


def _hostport(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")


def prometheus_config(
    endpoints: Endpoints,
    *,
    scrape_interval: str = DEFAULT_SCRAPE_INTERVAL,
    alertmanager_url: str | None = None,
    rules_dir: Path = RULES_DIR,
) -> dict[str, Any]:
    """A Prometheus config that scrapes the stack of ``endpoints``."""
    jobs: list[dict[str, Any]] = [
        {
            "job_name": name,
            "metrics_path": "/metrics",
            "static_configs": [{"targets": [endpoints.services_http[name]]}],
        }
        for name in roster().names
        if name in endpoints.services_http
    ]
    jobs.append(
        {
            "job_name": GATEWAY_JOB,
            "metrics_path": "/stats/prometheus",
            "static_configs": [{"targets": [_hostport(endpoints.envoy_admin_url)]}],
        }
    )
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": scrape_interval,
            "external_labels": {"stack": "local"},
        },
        "rule_files": [str(path) for path in rule_files(rules_dir)],
        "scrape_configs": jobs,
    }
    if alertmanager_url is not None:
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": [_hostport(alertmanager_url)]}]}]
        }
    return config


def render_prometheus_config(endpoints: Endpoints, **options: Any) -> str:
    return yaml.safe_dump(prometheus_config(endpoints, **options), sort_keys=False)


@dataclass
class Running:
    """A started Prometheus or Alertmanager: its URL, and how to stop it."""

    url: str
    component: Component
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        processes.stop([self.component])

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _launch(component: Component, *, tie_to_parent: bool, timeout: float) -> Running:
    process = processes.start(component, tie_to_parent=tie_to_parent)
    try:
        processes.wait_healthy([component], {component.name: process}, timeout)
    except BaseException:
        processes.stop([component])
        raise
    url = component.probe.address.removesuffix("/-/ready")
    return Running(url, component, process)


def start_prometheus(
    endpoints: Endpoints,
    work_dir: Path,
    *,
    scrape_interval: str = DEFAULT_SCRAPE_INTERVAL,
    alertmanager_url: str | None = None,
    tie_to_parent: bool = True,
    timeout: float = 30.0,
) -> Running:
    """Starts Prometheus on a free loopback port, its config and data under
    ``work_dir``, scraping the stack of ``endpoints``; returns once it is ready."""
    binary = tool(PROMETHEUS)
    work_dir.mkdir(parents=True, exist_ok=True)
    config = work_dir / "prometheus.yml"
    config.write_text(
        render_prometheus_config(
            endpoints, scrape_interval=scrape_interval, alertmanager_url=alertmanager_url
        )
    )
    (port,) = free_ports(1)
    component = Component(
        name="prometheus",
        argv=[
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={work_dir / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ],
        log=str(work_dir / "logs" / "prometheus.log"),
        probe=Probe("http", f"http://127.0.0.1:{port}/-/ready"),
        ports=[port],
    )
    return _launch(component, tie_to_parent=tie_to_parent, timeout=timeout)


def start_alertmanager(
    work_dir: Path,
    *,
    config: Path = ALERTMANAGER_CONFIG,
    tie_to_parent: bool = True,
    timeout: float = 30.0,
) -> Running:
    """Starts Alertmanager on a free loopback port without clustering, with
    ``config`` (the fleet's routes); returns once ready."""
    binary = tool(ALERTMANAGER)
    work_dir.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    component = Component(
        name="alertmanager",
        argv=[
            binary,
            f"--config.file={config}",
            f"--storage.path={work_dir / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        log=str(work_dir / "logs" / "alertmanager.log"),
        probe=Probe("http", f"http://127.0.0.1:{port}/-/ready"),
        ports=[port],
    )
    return _launch(component, tie_to_parent=tie_to_parent, timeout=timeout)


def record_in_stack(run_dir: Path, components: Sequence[Component]) -> None:
    """Adds ``components`` to the stack's ``stack.json``, so that ``make down``
    stops them with the rest; :func:`forget_in_stack` takes them out again."""
    names = {c.name for c in components}

    def add(state: dict[str, Any] | None) -> dict[str, Any]:
        if state is None:
            raise StackError(f"no stack is recorded in {run_dir}")
        kept = [c for c in state["components"] if c["name"] not in names]
        return {**state, "components": kept + [c.record() for c in components]}

    update_state(run_dir, add)


def forget_in_stack(run_dir: Path, components: Sequence[Component]) -> None:
    names = {c.name for c in components}

    def remove(state: dict[str, Any] | None) -> dict[str, Any] | None:
        if state is None:
            return None
        return {**state, "components": [c for c in state["components"] if c["name"] not in names]}

    update_state(run_dir, remove)


# -- dashboards ---------------------------------------------------------------

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
JOB_MATCH = 'job=~"$job"'
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    width: int = 12
    description: str = ""


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    # Template variables besides the data source: name -> label_values() query.
    variables: dict[str, str] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        return f"{self.uid.removeprefix('social-')}.json"


def _panel(title: str, *queries: Query | str, **options: Any) -> Panel:
    return Panel(title, tuple(q if isinstance(q, Query) else Query(q) for q in queries), **options)


def _ratio(part: str, whole: str, by: str) -> str:
    """``part / whole`` summed ``by`` labels, 0 (not no data) where ``part`` has no series."""
    whole_sum = f"sum by ({by}) ({whole})"
    return f"(sum by ({by}) ({part}) or 0 * {whole_sum}) / {whole_sum}"


def _quantiles(metric: str, by: str, selector: str = JOB_MATCH) -> tuple[Query, ...]:
    legend = " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(",") if label.strip())
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}{{{selector}}}[{RATE}])))",
            f"{legend} p{round(q * 100)}".strip(),
        )
        for q in (0.5, 0.95, 0.99)
    )


# The API's routes: not the probes and scrapes, which would drown a quiet
# service's rate and latency.
_API = f'{JOB_MATCH},route!~"/metrics|/healthz|/readyz"'
_HTTP = f"http_requests_total{{{_API}}}"
_HTTP_5XX = f'http_requests_total{{{_API},status=~"5.."}}'
_GRPC = f"grpc_server_handled_total{{{JOB_MATCH}}}"
_GRPC_FAILED = f'grpc_server_handled_total{{{JOB_MATCH},code!="OK"}}'
_GW = f'job="{GATEWAY_JOB}"'
_DOWNSTREAM = f'{_GW},envoy_http_conn_manager_prefix="public"'
_UPSTREAM = f"envoy_cluster_upstream_rq_xx{{{_GW}}}"
_UPSTREAM_5XX = f'envoy_cluster_upstream_rq_xx{{{_GW},envoy_response_code_class="5"}}'

FLEET = Dashboard(
    uid="social-fleet",
    title="Social / Fleet overview",
    description=(
        "RED per service and API route (probes and scrapes left out), gRPC per method, "
        "and the gateway (Envoy)."
    ),
    variables={"job": "label_values(http_requests_total, job)"},
    rows=(
        Row(
            "HTTP: rate, errors, duration",
            (
                _panel("Scrape targets up", "sum by (job) (up)", kind="stat", width=24),
                _panel(
                    "Request rate per service",
                    Query(f"sum by (job) (rate({_HTTP}[{RATE}]))", "{{job}}"),
                    unit="reqps",
                ),
                _panel(
                    "Request rate per route",
                    Query(
                        f"sum by (job, method, route) (rate({_HTTP}[{RATE}]))",
                        "{{job}} {{method}} {{route}}",
                    ),
                    unit="reqps",
                ),
                _panel(
                    "5xx ratio per service",
                    Query(
                        _ratio(f"rate({_HTTP_5XX}[{RATE}])", f"rate({_HTTP}[{RATE}])", "job"),
                        "{{job}}",
                    ),
                    unit="percentunit",
                ),
                _panel(
                    "5xx ratio per route",
                    Query(
                        _ratio(
                            f"rate({_HTTP_5XX}[{RATE}])", f"rate({_HTTP}[{RATE}])", "job, route"
                        ),
                        "{{job}} {{route}}",
                    ),
                    unit="percentunit",
                ),
                _panel(
                    "Latency per service",
                    *_quantiles("http_request_duration_seconds_bucket", "job", _API),
                    unit="s",
                ),
                _panel(
                    "p95 latency per route",
                    Query(
                        "histogram_quantile(0.95, sum by (job, route, le) "
                        f"(rate(http_request_duration_seconds_bucket{{{_API}}}[{RATE}])))",
                        "{{job}} {{route}}",
                    ),
                    unit="s",
                ),
                _panel(
                    "Requests in flight",
                    Query(f"sum by (job) (http_requests_in_flight{{{JOB_MATCH}}})", "{{job}}"),
                ),
            ),
        ),
        Row(
            "gRPC: per method",
            (
                _panel(
                    "RPC rate per method",
                    Query(f"sum by (job, method) (rate({_GRPC}[{RATE}]))", "{{job}} {{method}}"),
                    unit="reqps",
                ),
                _panel(
                    "RPC error ratio per method (code not OK)",
                    Query(
                        _ratio(
                            f"rate({_GRPC_FAILED}[{RATE}])", f"rate({_GRPC}[{RATE}])", "job, method"
                        ),
                        "{{job}} {{method}}",
                    ),
                    unit="percentunit",
                ),
                _panel(
                    "RPC codes",
                    Query(f"sum by (job, code) (rate({_GRPC}[{RATE}]))", "{{job}} {{code}}"),
                    unit="reqps",
                ),
                _panel(
                    "RPC p95 latency per method",
                    Query(
                        "histogram_quantile(0.95, sum by (job, method, le) "
                        f"(rate(grpc_server_handling_seconds_bucket{{{JOB_MATCH}}}[{RATE}])))",
                        "{{job}} {{method}}",
                    ),
                    unit="s",
                ),
            ),
        ),
        Row(
            "Gateway (Envoy)",
            (
                _panel(
                    "Gateway downstream rate by class",
                    Query(
                        "sum by (envoy_response_code_class) "
                        f"(rate(envoy_http_downstream_rq_xx{{{_DOWNSTREAM}}}[{RATE}]))",
                        "{{envoy_response_code_class}}xx",
                    ),
                    unit="reqps",
                ),
                _panel(
                    "Gateway downstream latency",
                    *(
                        Query(
                            f"histogram_quantile({q}, sum by (le) "
                            f"(rate(envoy_http_downstream_rq_time_bucket{{{_DOWNSTREAM}}}[{RATE}])))",
                            f"p{round(q * 100)}",
                        )
                        for q in (0.5, 0.95, 0.99)
                    ),
                    unit="ms",
                ),
                _panel(
                    "Upstream 5xx ratio per cluster",
                    Query(
                        _ratio(
                            f"rate({_UPSTREAM_5XX}[{RATE}])",
                            f"rate({_UPSTREAM}[{RATE}])",
                            "envoy_cluster_name",
                        ),
                        "{{envoy_cluster_name}}",
                    ),
                    unit="percentunit",
                ),
                _panel(
                    "Upstream p95 latency per cluster",
                    Query(
                        "histogram_quantile(0.95, sum by (envoy_cluster_name, le) "
                        f"(rate(envoy_cluster_upstream_rq_time_bucket{{{_GW}}}[{RATE}])))",
                        "{{envoy_cluster_name}}",
                    ),
                    unit="ms",
                ),
                _panel(
                    "Upstream healthy members per cluster",
                    Query(
                        f"sum by (envoy_cluster_name) (envoy_cluster_membership_healthy{{{_GW}}})",
                        "{{envoy_cluster_name}}",
                    ),
                    width=24,
                ),
            ),
        ),
    ),
)

REALTIME = Dashboard(
    uid="social-realtime",
    title="Social / Realtime",
    description="WebSocket connections and the event frames sent to them.",
    variables={"instance": "label_values(realtime_connections, instance)"},
    rows=(
        Row(
            "WebSockets",
            (
                _panel(
                    "Open WebSocket connections (total)",
                    "sum(realtime_connections)",
                    kind="stat",
                ),
                _panel(
                    "Open WebSocket connections",
                    Query(
                        'sum by (instance) (realtime_connections{instance=~"$instance"})',
                        "{{instance}}",
                    ),
                ),
                _panel(
                    "Event frames delivered",
                    Query(
                        "sum by (instance) (rate("
                        f'realtime_events_delivered_total{{instance=~"$instance"}}[{RATE}]))',
                        "{{instance}}",
                    ),
                    unit="ops",
                ),
                _panel(
                    "Clients cut for falling behind",
                    Query(
                        "sum by (instance) (rate("
                        f'realtime_clients_cut_total{{instance=~"$instance"}}[{RATE}]))',
                        "{{instance}}",
                    ),
                    unit="ops",
                ),
            ),
        ),
    ),
)

# Each replica samples the same backlog: max, not sum, across them.
EVENTS = Dashboard(
    uid="social-events",
    title="Social / Events",
    description="The outboxes, their relays to Redis Streams, and the consumer groups.",
    rows=(
        Row(
            "Flow",
            (
                _panel(
                    "Events relayed per type",
                    Query(f"sum by (type) (rate(events_relayed_total[{RATE}]))", "{{type}}"),
                    unit="ops",
                ),
                _panel(
                    "Events handled per type and outcome",
                    Query(
                        f"sum by (type, outcome) (rate(events_handled_total[{RATE}]))",
                        "{{type}} {{outcome}}",
                    ),
                    unit="ops",
                ),
                _panel(
                    "Handler failure ratio per type",
                    Query(
                        _ratio(
                            f'rate(events_handled_total{{outcome!="ok"}}[{RATE}])',
                            f"rate(events_handled_total[{RATE}])",
                            "type",
                        ),
                        "{{type}}",
                    ),
                    unit="percentunit",
                ),
                _panel(
                    "Events dead-lettered per group",
                    Query(
                        f"sum by (stream, group) (rate(events_dead_lettered_total[{RATE}]))",
                        "{{stream}} {{group}}",
                    ),
                    unit="ops",
                ),
            ),
        ),
        Row(
            "Backlogs",
            (
                _panel(
                    "Outbox rows pending per producer",
                    Query("max by (producer) (outbox_pending_events)", "{{producer}}"),
                ),
                _panel(
                    "Oldest pending outbox row per producer",
                    Query("max by (producer) (outbox_oldest_pending_seconds)", "{{producer}}"),
                    unit="s",
                ),
                _panel(
                    "Entries pending (unacknowledged) per group",
                    Query(
                        "max by (stream, group) (events_consumer_pending)", "{{stream}} {{group}}"
                    ),
                ),
                _panel(
                    "Consumer lag per group",
                    Query(
                        "max by (stream, group) (events_consumer_lag_seconds)",
                        "{{stream}} {{group}}",
                    ),
                    unit="s",
                ),
            ),
        ),
    ),
)

SATURATION = Dashboard(
    uid="social-saturation",
    title="Social / Saturation",
    description="How full the pools, the event loops and the media queue are.",
    variables={"job": "label_values(up, job)"},
    rows=(
        Row(
            "PostgreSQL pool",
            (
                _panel(
                    "DB pool connections in use",
                    Query(
                        f'sum by (job) (db_pool_connections{{{JOB_MATCH},state="in_use"}})',
                        "{{job}} in use",
                    ),
                    Query(f"sum by (job) (db_pool_max_connections{{{JOB_MATCH}}})", "{{job}} max"),
                ),
                _panel(
                    "DB pool utilisation (busiest instance)",
                    Query(
                        "max by (job) ("
                        f'db_pool_connections{{{JOB_MATCH},state="in_use"}} '
                        f"/ ignoring (state) db_pool_max_connections{{{JOB_MATCH}}})",
                        "{{job}}",
                    ),
                    unit="percentunit",
                ),
                _panel(
                    "Requests waiting for a DB connection",
                    Query(f"sum by (job) (db_pool_requests_waiting{{{JOB_MATCH}}})", "{{job}}"),
                    width=24,
                ),
            ),
        ),
        Row(
            "Redis pool",
            (
                _panel(
                    "Redis pool connections by state",
                    Query(
                        f"sum by (job, state) (redis_pool_connections{{{JOB_MATCH}}})",
                        "{{job}} {{state}}",
                    ),
                ),
                _panel(
                    "Redis pool utilisation (busiest instance)",
                    Query(
                        "max by (job) ("
                        f'redis_pool_connections{{{JOB_MATCH},state="in_use"}} '
                        f"/ ignoring (state) redis_pool_max_connections{{{JOB_MATCH}}})",
                        "{{job}}",
                    ),
                    unit="percentunit",
                ),
            ),
        ),
        Row(
            "Event loops and queues",
            (
                _panel(
                    "Event loop lag",
                    *_quantiles("event_loop_lag_seconds_bucket", "job"),
                    unit="s",
                ),
                _panel(
                    "Media processing slots",
                    Query("sum(media_queue_in_use)", "in use"),
                    Query("sum(media_queue_capacity)", "capacity"),
                ),
                _panel(
                    "Requests in flight per service",
                    Query(f"sum by (job) (http_requests_in_flight{{{JOB_MATCH}}})", "{{job}}"),
                    width=24,
                ),
            ),
        ),
    ),
)

CACHES = Dashboard(
    uid="social-caches",
    title="Social / Caches",
    description="Hit ratios of the caches per layer (l1 in process, l2 Redis, response).",
    variables={"job": "label_values(cache_requests_total, job)"},
    rows=(
        Row(
            "Caches",
            (
                _panel(
                    "Hit ratio per cache and layer",
                    Query(
                        _ratio(
                            f'rate(cache_requests_total{{{JOB_MATCH},outcome="hit"}}[{RATE}])',
                            f"rate(cache_requests_total{{{JOB_MATCH}}}[{RATE}])",
                            "cache, layer",
                        ),
                        "{{cache}} {{layer}}",
                    ),
                    unit="percentunit",
                ),
                _panel(
                    "Lookups per cache, layer and outcome",
                    Query(
                        "sum by (cache, layer, outcome) "
                        f"(rate(cache_requests_total{{{JOB_MATCH}}}[{RATE}]))",
                        "{{cache}} {{layer}} {{outcome}}",
                    ),
                    unit="ops",
                ),
            ),
        ),
    ),
)

_SIGNUPS = 'http_requests_total{job="auth",route="/api/v1/users/register",status="201"}'
_MESSAGES = 'events_relayed_total{type="message.created"}'

BUSINESS = Dashboard(
    uid="social-business",
    title="Social / Business",
    description="What people do: sign-ups, posts, likes, uploads, messages.",
    rows=(
        Row(
            "In the selected range",
            (
                _panel("Sign-ups", f"sum(increase({_SIGNUPS}[$__range]))", kind="stat", width=6),
                _panel(
                    "Posts created",
                    "sum(increase(posts_created_total[$__range]))",
                    kind="stat",
                    width=6,
                ),
                _panel(
                    "Messages created",
                    f"sum(increase({_MESSAGES}[$__range]))",
                    kind="stat",
                    width=6,
                ),
                _panel(
                    "Uploads stored",
                    'sum(increase(media_uploads_total{outcome="stored"}[$__range]))',
                    kind="stat",
                    width=6,
                ),
            ),
        ),
        Row(
            "Rates",
            (
                _panel(
                    "Sign-up rate", Query(f"sum(rate({_SIGNUPS}[{RATE}]))", "sign-ups"), unit="ops"
                ),
                _panel(
                    "Post creation rate",
                    Query(f"sum(rate(posts_created_total[{RATE}]))", "posts"),
                    unit="ops",
                ),
                _panel(
                    "Likes by action",
                    Query(f"sum by (action) (rate(posts_likes_total[{RATE}]))", "{{action}}"),
                    unit="ops",
                ),
                _panel(
                    "Uploads by outcome",
                    Query(f"sum by (outcome) (rate(media_uploads_total[{RATE}]))", "{{outcome}}"),
                    unit="ops",
                ),
                _panel(
                    "Message creation rate",
                    Query(f"sum(rate({_MESSAGES}[{RATE}]))", "messages"),
                    unit="ops",
                    width=24,
                ),
            ),
        ),
    ),
)

# The SLOs of deploy/observability/prometheus/rules/slo.yml: its recording
# rules slo:sli_error:ratio_rate<window>{slo, route_group} are the share of
# bad requests; divided by the error budget (1 - objective), the burn rate.
SLO_OBJECTIVES = {"availability": 0.999, "latency": 0.99}
_SLO_WINDOWS = ("5m", "1h", "6h", "3d")


def _slo_row(slo: str, objective: float) -> Row:
    budget = f"{1 - objective:g}"
    selector = f'{{slo="{slo}",route_group=~"$route_group"}}'
    return Row(
        f"{slo.capitalize()} ({objective:.1%} good)",
        (
            _panel(
                f"{slo.capitalize()} over 3d",
                Query(f"1 - slo:sli_error:ratio_rate3d{selector}", "{{route_group}}"),
                kind="stat",
                unit="percentunit",
                width=24,
            ),
            _panel(
                f"{slo.capitalize()} burn rate (1 = budget lasts 30 days)",
                *(
                    Query(
                        f"slo:sli_error:ratio_rate{window}{selector} / {budget}",
                        f"{{{{route_group}}}} {window}",
                    )
                    for window in _SLO_WINDOWS
                ),
            ),
            _panel(
                f"{slo.capitalize()}: bad share of requests",
                *(
                    Query(
                        f"slo:sli_error:ratio_rate{window}{selector}",
                        f"{{{{route_group}}}} {window}",
                    )
                    for window in _SLO_WINDOWS[:2]
                ),
                unit="percentunit",
            ),
        ),
    )


SLO = Dashboard(
    uid="social-slo",
    title="Social / SLO burn",
    description=(
        "Availability (99.9% not 5xx) and latency (99% fast) per route group, "
        "measured at the gateway: burn rates of the error budgets (rules/slo.yml)."
    ),
    variables={"route_group": "label_values(slo:sli_error:ratio_rate5m, route_group)"},
    rows=tuple(_slo_row(slo, objective) for slo, objective in SLO_OBJECTIVES.items()),
)

DASHBOARDS: tuple[Dashboard, ...] = (FLEET, REALTIME, EVENTS, SATURATION, CACHES, BUSINESS, SLO)


def _variables(dashboard: Dashboard) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
            "regex": "",
            "options": [],
        }
    ]
    for name, query in dashboard.variables.items():
        found.append(
            {
                "name": name,
                "label": name,
                "type": "query",
                "datasource": DATASOURCE,
                "definition": query,
                "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "includeAll": True,
                "allValue": ".*",
                "multi": True,
                "hide": 0,
                "refresh": 2,
                "sort": 1,
                "regex": "",
                "options": [],
            }
        )
    return found


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    height = 4 if panel.kind == "stat" else 8
    options: dict[str, Any]
    if panel.kind == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
            "orientation": "auto",
        }
    else:
        options = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": options,
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": query.expr,
                "legendFormat": query.legend or "__auto",
                "range": True,
            }
            for i, query in enumerate(panel.queries)
        ],
    }


def dashboard_json(dashboard: Dashboard) -> dict[str, Any]:
    """The dashboard in Grafana's JSON model (rows laid out left to right, top to bottom)."""
    panels: list[dict[str, Any]] = []
    y = 0
    for row in dashboard.rows:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        x = row_height = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y, row_height = 0, y + row_height, 0
            body = _panel_json(panel, len(panels) + 1, x, y)
            panels.append(body)
            x += panel.width
            row_height = max(row_height, body["gridPos"]["h"])
        y += row_height
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["social"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "templating": {"list": _variables(dashboard)},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def render_dashboards() -> dict[str, str]:
    """Every dashboard's file name and JSON text, as committed."""
    return {
        d.filename: json.dumps(dashboard_json(d), indent=2, ensure_ascii=False) + "\n"
        for d in DASHBOARDS
    }


# The generated end of rules/services.yml: the ServiceAbsent rule, one
# absent() per roster service (why names and not one expression without them:
# the comment above the marker in that file). Its first line is the marker.
_GENERATED_RULES_HEADER = """\
  # --- Generated from the roster (libs/common/src/social_common/fleet.yaml)
  # down to the end of this file by `python -m social_stack render-dashboards`
  # (social_stack.observability.render_service_rules): edit that, not these
  # lines; tests/observability/test_rules.py fails while they are stale.
  - name: services-absent
    rules:
      # One absent() per service: each gives {job="<service>"} while that
      # job has no `up` series, and each job's alert waits its own 2 minutes.
      - alert: ServiceAbsent
        expr: >-
"""

# Where the generated end starts: the lines above it are written by hand.
GENERATED_RULES_MARKER = _GENERATED_RULES_HEADER.splitlines()[0]

# After the expression (annotations read the job label that absent() takes
# from the selector's equality matcher).
_GENERATED_RULES_FOOTER = """\
        for: 2m
        labels:
          severity: critical
        annotations:
          summary: "{{ $labels.job }} has no target to scrape"
          description: >-
            Prometheus has had no target of {{ $labels.job }} for 2 minutes:
            every pod of it is gone (deleted, scaled to zero, not running) or
            no longer discovered. If its pods are gone its routes fail at the
            gateway; either way none of its other alerts can fire.
          runbook_url: deploy/observability/RUNBOOKS.md#serviceabsent
"""


def service_absent_rules() -> str:
    """The generated end of rules/services.yml: its header and the
    ServiceAbsent rule, one absent() per service of the roster in its order."""
    terms = [f'absent(up{{job="{name}"}})' for name in roster().names]
    expr = "".join(f"          {'or ' if i else ''}{term}\n" for i, term in enumerate(terms))
    return _GENERATED_RULES_HEADER + expr + _GENERATED_RULES_FOOTER


def render_service_rules(text: str) -> str:
    """``text`` (rules/services.yml) with its end, from the marker line on,
    generated anew; the lines above the marker are kept as they are."""
    head, marker, _ = text.partition(GENERATED_RULES_MARKER + "\n")
    if not marker:
        raise ValueError(f"no line {GENERATED_RULES_MARKER.strip()!r} in the rules file")
    return head + service_absent_rules()


def write_generated(out: Path = DASHBOARDS_DIR, service_rules: Path = SERVICE_RULES) -> list[Path]:
    """Writes what is generated: the dashboards into ``out``, and the
    roster's rules at the end of ``service_rules``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_dashboards().items():
        path = out / name
        path.write_text(text)
        written.append(path)
    service_rules.write_text(render_service_rules(service_rules.read_text()))
    written.append(service_rules)
    return written


def panel_queries(document: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Every (panel title, expression) of a dashboard in Grafana's JSON model."""
    for panel in document["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
        # Collapsed rows keep their panels inside.
        if panel["type"] == "row":
            yield from panel_queries({"panels": panel.get("panels", [])})


__all__ = [
    "ALERTMANAGER_CONFIG",
    "DASHBOARDS",
    "DASHBOARDS_DIR",
    "GENERATED_RULES_MARKER",
    "INSTALL_HINT",
    "RULES_DIR",
    "SERVICE_RULES",
    "Running",
    "ToolMissing",
    "dashboard_json",
    "forget_in_stack",
    "panel_queries",
    "prometheus_config",
    "record_in_stack",
    "render_dashboards",
    "render_prometheus_config",
    "render_service_rules",
    "rule_files",
    "service_absent_rules",
    "start_alertmanager",
    "start_prometheus",
    "write_generated",
]
