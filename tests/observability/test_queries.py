"""The dashboards' and the rules' queries against a real Prometheus scraping
the test stack.

Prometheus and Alertmanager are the ones ``python -m social_stack
observability`` starts (social_stack.observability), scraping every second.
Some traffic goes through the gateway first (an account, a post with its
upload, a like, a message); then every panel expression of
deploy/observability/dashboards/*.json and every rule expression of
deploy/observability/prometheus/rules/*.yml must parse, and the panels of
:data:`CORE_PANELS` must show at least one series.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from social_common.fleet import roster
from social_stack import observability
from social_stack.local import Endpoints
from social_stack.observability import (
    DASHBOARDS_DIR,
    INSTALL_HINT,
    RULES_DIR,
    Running,
    ToolMissing,
    panel_queries,
    render_dashboards,
    start_alertmanager,
    start_prometheus,
)
from social_stack.testing import client, create_account, create_post, wait_until

# Panels that must show data once the stack has served some traffic:
# (dashboard uid, panel title). Every query of such a panel must return at
# least one series. Extend it as metrics land; the other panels only have to parse.
# The SLO dashboard reads recording rules that rules/slo.yml evaluates once a
# minute (its group's interval), later than this test waits: they only parse.
CORE_PANELS: frozenset[tuple[str, str]] = frozenset(
    {
        ("social-fleet", "Scrape targets up"),
        ("social-fleet", "Request rate per service"),
        ("social-fleet", "Request rate per route"),
        ("social-fleet", "5xx ratio per service"),
        ("social-fleet", "Latency per service"),
        ("social-fleet", "Requests in flight"),
        ("social-fleet", "RPC rate per method"),
        ("social-fleet", "Gateway downstream rate by class"),
        ("social-fleet", "Gateway downstream latency"),
        ("social-fleet", "Upstream 5xx ratio per cluster"),
        ("social-fleet", "Upstream healthy members per cluster"),
        ("social-realtime", "Open WebSocket connections"),
        ("social-events", "Events relayed per type"),
        ("social-events", "Events handled per type and outcome"),
        ("social-saturation", "DB pool connections in use"),
        ("social-saturation", "Redis pool connections by state"),
        ("social-saturation", "Event loop lag"),
        ("social-saturation", "Media processing slots"),
        ("social-caches", "Lookups per cache, layer and outcome"),
        ("social-business", "Sign-up rate"),
        ("social-business", "Post creation rate"),
        ("social-business", "Uploads by outcome"),
        ("social-business", "Message creation rate"),
    }
)

# What Grafana substitutes, as a query of the last few minutes would have it.
TEMPLATE_VALUES = {
    "__rate_interval": "1m",
    "__interval": "1s",
    "__range": "5m",
    "job": ".*",
    "instance": ".*",
    "route_group": ".*",
}
_TEMPLATE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def substitute(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in TEMPLATE_VALUES:
            raise AssertionError(f"no test value for the template variable ${name} in {expr}")
        return TEMPLATE_VALUES[name]

    return _TEMPLATE.sub(value, expr)


def dashboards() -> dict[str, dict[str, Any]]:
    """The committed dashboards by uid."""
    found = {}
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        document = json.loads(path.read_text())
        found[document["uid"]] = document
    return found


def panel_expressions() -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, expression) of every panel target."""
    return [
        (uid, title, expr)
        for uid, document in dashboards().items()
        for title, expr in panel_queries(document)
    ]


def rule_expressions() -> list[tuple[str, str, str]]:
    """(rule file, record or alert name, expression) of every rule."""
    found = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            for rule in group.get("rules", []):
                name = rule.get("record") or rule.get("alert")
                found.append((path.name, f"{group['name']}/{name}", str(rule["expr"])))
    return found


class QueryError(Exception):
    """Prometheus refused a query (or another API call)."""


class Prometheus:
    """Queries of a running Prometheus."""

    def __init__(self, running: Running, alertmanager: Running) -> None:
        self.url = running.url
        self.alertmanager_url = alertmanager.url
        self.http = httpx.Client(base_url=running.url, timeout=10, trust_env=False)

    def api(self, path: str, **params: str) -> Any:
        response = self.http.get(f"/api/v1/{path}", params=params)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise QueryError(f"{response.status_code} {body.get('error', body)}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        return list(data["result"]) if data["resultType"] == "vector" else [data["result"]]


@pytest.fixture(scope="module")
def prometheus(stack: Endpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    work = tmp_path_factory.mktemp("observability")
    try:
        with (
            start_alertmanager(work) as alertmanager,
            start_prometheus(
                stack, work, scrape_interval="1s", alertmanager_url=alertmanager.url
            ) as running,
        ):
            prometheus = Prometheus(running, alertmanager)
            yield prometheus
            prometheus.http.close()
    except ToolMissing as missing:
        pytest.fail(f"{missing}", pytrace=False)


@pytest.fixture(scope="module")
def traffic(stack: Endpoints) -> None:
    """Requests through the gateway: a sign-up, an upload and a post, a like, a message."""
    account = create_account(stack.gateway_url)
    post = create_post(stack.gateway_url, account, caption="observed")
    with client(stack.gateway_url) as http:
        liked = http.post(f"/api/v1/posts/{post['id']}/like", headers=account.auth)
        assert liked.status_code < 300, liked.text
        sent = http.post(
            f"/api/v1/posts/{post['id']}/messages",
            headers=account.auth,
            json={"message": "seen by Prometheus"},
        )
        assert sent.status_code == 201, sent.text
        assert http.get(f"/api/v1/posts/{post['id']}").status_code == 200
        assert http.get(f"/api/v1/posts/{post['id']}/messages").status_code == 200


def test_committed_dashboards_are_generated() -> None:
    committed = {p.name: p.read_text() for p in DASHBOARDS_DIR.glob("*.json")}
    assert committed == render_dashboards(), (
        "deploy/observability/dashboards is stale: python -m social_stack render-dashboards"
    )
    for uid, document in dashboards().items():
        assert document["title"], uid
        assert uid.startswith("social-"), uid
        variables = {v["name"]: v for v in document["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        ids = [p["id"] for p in document["panels"]]
        assert len(ids) == len(set(ids)), uid
        for panel in document["panels"]:
            if panel["type"] != "row":
                assert panel["type"] in ("timeseries", "stat"), panel["title"]
                assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
                assert panel["targets"], panel["title"]
    titles = {(uid, title) for uid, title, _ in panel_expressions()}
    assert titles >= CORE_PANELS, f"CORE_PANELS names no panel: {sorted(CORE_PANELS - titles)}"


def test_missing_binaries_name_the_install_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observability, "PROMETHEUS", "/nonexistent/prometheus")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolMissing, match=re.escape(INSTALL_HINT)):
        observability.tool(observability.PROMETHEUS)


def test_every_service_and_the_gateway_are_scraped(
    stack: Endpoints, prometheus: Prometheus
) -> None:
    jobs = {*roster().names, "gateway"}

    def all_up() -> bool:
        up = {s["metric"]["job"]: s["value"][1] for s in prometheus.query("up")}
        return all(up.get(job) == "1" for job in jobs)

    wait_until(all_up, timeout=20, what=f"up == 1 for {sorted(jobs)}")
    targets = prometheus.api("targets")["activeTargets"]
    assert {t["labels"]["job"]: t["scrapeUrl"] for t in targets} == {
        **{name: f"http://{stack.services_http[name]}/metrics" for name in roster().names},
        "gateway": f"{stack.envoy_admin_url}/stats/prometheus",
    }
    # The local Alertmanager is where alerts go.
    wait_until(
        lambda: bool(prometheus.api("alertmanagers")["activeAlertmanagers"]),
        what="Prometheus has found its Alertmanager",
    )
    assert prometheus.alertmanager_url.removeprefix("http://") in json.dumps(
        prometheus.api("alertmanagers")
    )


def test_every_panel_expression_parses(prometheus: Prometheus) -> None:
    failures = []
    for uid, title, expr in panel_expressions():
        try:
            prometheus.query(substitute(expr))
        except QueryError as error:
            failures.append(f"{uid} / {title}: {error}")
    assert not failures, "\n".join(failures)


def test_core_panels_show_data(prometheus: Prometheus, traffic: None) -> None:
    core = [
        (uid, title, expr)
        for uid, title, expr in panel_expressions()
        if (uid, title) in CORE_PANELS
    ]
    empty: list[str] = []

    def every_core_query_has_series() -> bool:
        empty[:] = [
            f"{uid} / {title}: {expr}"
            for uid, title, expr in core
            if not prometheus.query(substitute(expr))
        ]
        return not empty

    try:
        wait_until(every_core_query_has_series, timeout=30, what="every core panel shows data")
    except AssertionError:
        pytest.fail("core panels without a series:\n" + "\n".join(empty), pytrace=False)


def test_every_rule_expression_parses_and_is_loaded(prometheus: Prometheus) -> None:
    rules = rule_expressions()
    assert rules, f"no rules in {RULES_DIR}"
    failures = []
    for file, name, expr in rules:
        try:
            prometheus.query(expr)
        except QueryError as error:
            failures.append(f"{file} {name}: {error}")
    assert not failures, "\n".join(failures)
    loaded = {
        f"{group['name']}/{rule['name']}"
        for group in prometheus.api("rules")["groups"]
        for rule in group["rules"]
    }
    assert {name for _, name, _ in rules} <= loaded


def test_the_command_runs_both_against_a_recorded_stack(stack: Endpoints) -> None:
    """``python -m social_stack observability`` against the test stack's run dir:
    it prints the URLs of a ready Prometheus and Alertmanager, records them for
    ``make down``, and takes them out again when interrupted."""
    run_dir = Path(stack.run_dir)
    command = subprocess.Popen(
        [sys.executable, "-m", "social_stack", "--run-dir", str(run_dir), "observability",
         "--scrape-interval", "1s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert command.stdout is not None
    printed = []
    try:
        for line in command.stdout:
            printed.append(line)
            if "Ctrl-C stops both" in line:
                break
        output = "".join(printed)
        urls = dict(re.findall(r"^\s+(Prometheus|Alertmanager)\s+(http://\S+)", output, re.M))
        assert set(urls) == {"Prometheus", "Alertmanager"}, output
        for url in urls.values():
            assert httpx.get(f"{url}/-/ready", trust_env=False).status_code == 200
        recorded = json.loads((run_dir / "stack.json").read_text())["components"]
        assert {"prometheus", "alertmanager"} <= {c["name"] for c in recorded}
    finally:
        command.send_signal(signal.SIGINT)
        # Within the stop timeout (10 s) of the two, stopped together.
        rest = command.communicate(timeout=60)[0]
    assert command.returncode == 0, "".join(printed) + rest
    assert "Stopped." in rest
    recorded = json.loads((run_dir / "stack.json").read_text())["components"]
    assert not {"prometheus", "alertmanager"} & {c["name"] for c in recorded}
