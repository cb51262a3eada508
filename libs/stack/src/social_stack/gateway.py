"""Renders the gateway's Envoy config and OpenAPI document from gateway/ and the roster."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
import yaml
from social_common.fleet import Fleet, Route, roster
from social_common.settings import Settings

from social_stack.paths import GATEWAY_DIR, REPO_ROOT
from social_stack.web import security_headers

# The chart's copy of the Kubernetes config (`make chart`): Helm fills in the
# namespace and the cluster's DNS domain when it renders the gateway's ConfigMap.
CHART_ENVOY_YAML = REPO_ROOT / "deploy" / "helm" / "social" / "files" / "envoy.yaml"


# The headers of every API answer, set by the gateway (gateway/envoy.yaml.j2
# adds Cache-Control): JSON is never sniffed as a page, never framed, loads
# nothing and sends no referrer.
API_HEADERS = {
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
}


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int


@dataclass(frozen=True)
class Tracing:
    """Where the gateway sends its spans (an OTLP/HTTP receiver) and the
    share of requests without a trace context it starts one for."""

    host: str
    port: int | str
    sample_percent: float | str
    path: str = "/v1/traces"
    # The chart's condition around the tracing parts (Helm template text);
    # nothing where the config is rendered for one place.
    begin: str = ""
    end: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Tracing | None:
        """The gateway's tracing as OpenTelemetry's standard variables ask
        the services': OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, and the ratio of
        a ``*traceidratio`` OTEL_TRACES_SAMPLER (every request otherwise, as
        the SDK samples). None when no endpoint is set."""
        traces_endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        endpoint = traces_endpoint or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if not endpoint:
            return None
        url = urlsplit(endpoint)
        ratio = 1.0
        if env.get("OTEL_TRACES_SAMPLER", "").endswith("traceidratio"):
            ratio = float(env.get("OTEL_TRACES_SAMPLER_ARG", "1"))
        return cls(
            host=url.hostname or "127.0.0.1",
            port=url.port or 4318,
            sample_percent=round(ratio * 100, 6),
            path=url.path if traces_endpoint else url.path.rstrip("/") + "/v1/traces",
        )


@dataclass(frozen=True)
class GatewayConfig:
    listen_host: str
    listen_port: int
    admin_host: str
    admin_port: int
    upstreams: dict[str, Upstream]
    openapi_path: str
    bench_ceiling: bool
    ops_port: int | None
    health_check_interval: str
    max_connections: int
    # The bucket behind /media/ (None where a CDN serves the images).
    objects: Upstream | None = None
    # The web client's static server (None: pages are 404s, a stack without a built client).
    web: Upstream | None = None
    # Where the images are served when not from the gateway's own /media/
    # (a CDN's scheme://host): the pages' policy lets them load from there.
    media_origin: str = ""
    bucket: str = "social-media"
    jwt_issuer: str = Settings.jwt_issuer
    jwt_audience: str = Settings.jwt_audience
    jwks_cache_seconds: int = 300
    # Requests a second each client address may make through one gateway
    # process, and the burst it may spend at once (the seed's "global: 100
    # requests/s"; Helm expressions in the chart).
    client_rate: int | str = 100
    client_burst: int | str = 200
    xff_trusted_hops: int = 0
    # Spans of the gateway's requests (None: not traced).
    tracing: Tracing | None = None


def dev_config(
    listen_port: int,
    admin_port: int,
    service_ports: dict[str, int],
    openapi_path: Path,
    objects: Upstream | None = None,
    bucket: str = "social-media",
    jwks_cache_seconds: int = 300,
    web: Upstream | None = None,
    tracing: Tracing | None = None,
    client_rate: int = 100,
) -> GatewayConfig:
    """The local stack's gateway: loopback only, with the bench ceiling route."""
    return GatewayConfig(
        listen_host="127.0.0.1",
        listen_port=listen_port,
        admin_host="127.0.0.1",
        admin_port=admin_port,
        upstreams={name: Upstream("127.0.0.1", service_ports[name]) for name in roster().names},
        openapi_path=str(openapi_path),
        bench_ceiling=True,
        ops_port=None,
        health_check_interval="1s",
        max_connections=20000,
        objects=objects,
        bucket=bucket,
        jwks_cache_seconds=jwks_cache_seconds,
        web=web,
        tracing=tracing,
        client_rate=client_rate,
        client_burst=2 * client_rate,
    )


def kubernetes_config(
    namespace: str, cluster_domain: str = "cluster.local", xff_trusted_hops: int = 0
) -> GatewayConfig:
    """The cluster's gateway: headless service names, so Envoy sees (and health
    checks) every pod rather than one virtual IP; admin stays on loopback and
    an ops listener exposes only /ready and /stats/prometheus."""
    fleet = roster()
    port = fleet.pod_ports.http
    return GatewayConfig(
        listen_host="0.0.0.0",  # noqa: S104  # the pod's listener
        listen_port=fleet.gateway_ports.public,
        admin_host="127.0.0.1",
        admin_port=fleet.gateway_ports.admin,
        upstreams={
            name: Upstream(f"{name}-headless.{namespace}.svc.{cluster_domain}", port)
            for name in fleet.names
        },
        openapi_path="/etc/envoy/openapi.json",
        bench_ceiling=False,
        ops_port=fleet.gateway_ports.ops,
        health_check_interval="5s",
        max_connections=50000,
        web=Upstream(f"web-headless.{namespace}.svc.{cluster_domain}", port),
        xff_trusted_hops=xff_trusted_hops,
    )


def helm_config() -> GatewayConfig:
    """The chart's gateway: the Kubernetes one, with Helm's names for the
    namespace, the cluster domain and the images' origin (the ConfigMap
    renders it with ``tpl``)."""
    config = kubernetes_config("{{ .Release.Namespace }}", "{{ .Values.clusterDomain }}")
    tracing = Tracing(
        host="{{ .Values.tracing.collector.host }}",
        port="{{ .Values.tracing.collector.port }}",
        sample_percent="{{ mulf .Values.tracing.sampleRatio 100 }}",
        begin="{{- if .Values.tracing.enabled }}",
        end="{{- end }}",
    )
    return replace(
        config,
        media_origin="{{ include `social.imagesOrigin` . }}",
        tracing=tracing,
        client_rate="{{ .Values.gateway.clientRateLimit.perSecond }}",
        client_burst="{{ .Values.gateway.clientRateLimit.burst }}",
    )


# Envoy's name for each kind of roster route.
_ROUTE_MATCH = {
    "regex": "safe_regex",
    "websocket": "path",
    "path": "path",
    "prefix": "path_separated_prefix",
}


def _route_match(route: Route) -> dict[str, Any]:
    key = _ROUTE_MATCH[route.kind]
    return {key: {"regex": route.value} if key == "safe_regex" else route.value}


def _routes(fleet: Fleet) -> list[dict[str, Any]]:
    """The roster's public routes, in the order Envoy must try them."""
    return [
        {
            "service": name,
            "match": _route_match(route),
            "websocket": route.kind == "websocket",
            "timeout": fleet.services[name].timeout_seconds,
        }
        for name, route in fleet.routes()
    ]


def _cached_path_regex(fleet: Fleet) -> str:
    """What the gateway's cache answers: the roster's cached paths, whole
    (``:path`` carries the query string, so a request with one never matches)."""
    paths = [re.escape(path) for service in fleet.services.values() for path in service.cached]
    return f"^({'|'.join(paths)})$" if paths else ""


def render_envoy(config: GatewayConfig) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(GATEWAY_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701  # YAML, not HTML
    )
    fleet = roster()
    return env.get_template("envoy.yaml.j2").render(
        services=fleet.names,
        routes=_routes(fleet),
        websocket_services={name for name, route in fleet.routes() if route.kind == "websocket"},
        cached_path_regex=_cached_path_regex(fleet),
        web_headers=security_headers(config.media_origin),
        api_headers=API_HEADERS,
        **{f.name: getattr(config, f.name) for f in fields(config)},
    )


def openapi_document() -> dict[str, Any]:
    # Generated by `make openapi` (social_stack.openapi) and committed.
    document: dict[str, Any] = yaml.safe_load((GATEWAY_DIR / "openapi.yaml").read_text())
    return document


def write_gateway(config: GatewayConfig, out_dir: Path) -> Path:
    """Writes envoy.yaml and openapi.json into ``out_dir``; returns envoy.yaml's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "openapi.json").write_text(json.dumps(openapi_document(), indent=2))
    envoy_yaml = out_dir / "envoy.yaml"
    envoy_yaml.write_text(render_envoy(config))
    return envoy_yaml
