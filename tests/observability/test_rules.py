"""Prometheus rules, their unit tests, the reference scrape config and the
Alertmanager config (deploy/observability), checked by the real tools:
promtool and amtool (`make observability-tools` installs them).

Besides the tools' own checks: every alert is unit-tested both firing and
not firing, carries a severity the Alertmanager routes and a runbook that
exists, every recorded series an expression reads is recorded, and every
scrape job (each roster service, the gateway) pages when it vanishes, the
services' rule generated from the roster.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from social_common.fleet import roster
from social_stack.observability import GATEWAY_JOB, SERVICE_RULES, render_service_rules
from social_stack.paths import REPO_ROOT

OBSERVABILITY = REPO_ROOT / "deploy" / "observability"
PROMETHEUS = OBSERVABILITY / "prometheus"
RULES_DIR = PROMETHEUS / "rules"
TESTS_DIR = PROMETHEUS / "tests"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
TEST_FILES = sorted(TESTS_DIR.glob("*.yml"))
SCRAPE_CONFIG = PROMETHEUS / "prometheus.yml"
ALERTMANAGER_CONFIG = OBSERVABILITY / "alertmanager" / "alertmanager.yml"
RUNBOOKS = OBSERVABILITY / "RUNBOOKS.md"
CHART_TEMPLATES = REPO_ROOT / "deploy" / "helm" / "social" / "templates"
SEVERITY_RECEIVERS = {"critical": "pager", "warning": "chat"}
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")

# The `promtool` and `amtool` fixtures (conftest.py): the tool, run on arguments.
Tool = Callable[..., Any]
Obj = dict[str, Any]


def _load(path: Path) -> Obj:
    loaded: Obj = yaml.safe_load(path.read_text())
    return loaded


def _rules() -> Iterator[tuple[Path, Obj]]:
    for path in RULE_FILES:
        for group in _load(path)["groups"]:
            for rule in group["rules"]:
                yield path, rule


def _alerts() -> list[Obj]:
    return [rule for _, rule in _rules() if "alert" in rule]


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def _output(result: Any) -> str:
    return f"{result.stdout}\n{result.stderr}"


# --- the rules and their unit tests ------------------------------------------------


def test_rule_and_test_files_exist() -> None:
    names = {p.name for p in RULE_FILES}
    assert {"recording.yml", "services.yml", "events.yml", "realtime.yml", "slo.yml"} <= names
    assert TEST_FILES, f"no promtool unit tests in {TESTS_DIR}"


@pytest.mark.parametrize("path", RULE_FILES, ids=_ids(RULE_FILES))
def test_promtool_check_rules(promtool: Tool, path: Path) -> None:
    result = promtool("check", "rules", path)
    assert result.returncode == 0, _output(result)


@pytest.mark.parametrize("path", TEST_FILES, ids=_ids(TEST_FILES))
def test_promtool_test_rules(promtool: Tool, path: Path) -> None:
    # rule_files in a test file are relative to it.
    result = promtool("test", "rules", path.name, cwd=TESTS_DIR)
    assert result.returncode == 0, _output(result)


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    """A new alert without a test of each kind fails here."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        spec = _load(path)
        for rule_file in spec["rule_files"]:
            assert (TESTS_DIR / rule_file).resolve().parent == RULES_DIR, (path.name, rule_file)
        for case in spec["tests"]:
            for test in case.get("alert_rule_test", []):
                (firing if test.get("exp_alerts") else quiet).add(test["alertname"])
    alerts = {rule["alert"] for rule in _alerts()}
    assert alerts, "no alerting rules found"
    assert not alerts - firing, f"alerts never tested firing: {sorted(alerts - firing)}"
    assert not alerts - quiet, f"alerts never tested not firing: {sorted(alerts - quiet)}"
    assert not (firing | quiet) - alerts, f"tests of unknown alerts: {(firing | quiet) - alerts}"


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings: lower case, punctuation dropped,
    spaces as hyphens."""
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#{1,6} (.+)$", markdown, flags=re.MULTILINE)
    }


@pytest.mark.parametrize(
    "alert",
    _alerts(),
    ids=lambda rule: "-".join([rule["alert"], *rule["labels"].values()]),
)
def test_alert_has_severity_annotations_and_runbook(alert: Obj) -> None:
    assert alert["labels"]["severity"] in SEVERITY_RECEIVERS
    annotations = alert["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    page, _, anchor = annotations["runbook_url"].partition("#")
    assert page == RUNBOOKS.relative_to(REPO_ROOT).as_posix()
    assert anchor in _anchors(RUNBOOKS.read_text()), f"no heading for #{anchor} in {RUNBOOKS.name}"


def test_recorded_series_that_expressions_read_are_recorded() -> None:
    recorded = {rule["record"] for _, rule in _rules() if "record" in rule}
    for path, rule in _rules():
        # Names with a colon are recording rules' by convention.
        read = set(re.findall(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", rule["expr"]))
        missing = read - recorded
        assert not missing, f"{path.name}: {rule.get('alert') or rule['record']} reads {missing}"


def test_slo_ratios_recorded_for_every_window_and_slo() -> None:
    pairs = {
        (rule["record"], rule.get("labels", {}).get("slo"))
        for _, rule in _rules()
        if rule.get("record", "").startswith("slo:sli_error:")
    }
    expected = {
        (f"slo:sli_error:ratio_rate{window}", slo)
        for window in SLO_WINDOWS
        for slo in ("availability", "latency")
    }
    assert pairs == expected


def test_slo_route_groups_are_the_roster_services() -> None:
    """Route groups are the gateway's clusters, one per roster service."""
    text = (RULES_DIR / "slo.yml").read_text()
    availability = set(re.findall(r'envoy_cluster_name=~"([a-z|]+)"', text)[0].split("|"))
    assert availability == set(roster().services)


def test_service_absent_rule_is_generated_from_the_roster() -> None:
    """ServiceAbsent lists the services (absent() knows only the jobs it is
    given): the end of services.yml is generated from the roster, and fresh."""
    text = SERVICE_RULES.read_text()
    assert text == render_service_rules(text), (
        f"{SERVICE_RULES.name} is stale: python -m social_stack render-dashboards"
    )


def test_every_scrape_job_pages_when_it_vanishes() -> None:
    """A job with no target left has no `up` for ServiceDown to see: an
    absent() alert per job, each roster service and the gateway."""
    absent = {
        rule["alert"]: re.findall(r'absent\(up\{job="(\w+)"\}\)', rule["expr"])
        for rule in _alerts()
        if "absent" in rule["expr"]
    }
    assert absent == {"ServiceAbsent": list(roster().names), "GatewayAbsent": [GATEWAY_JOB]}


# --- the reference scrape config ---------------------------------------------------


def test_promtool_check_config(promtool: Tool, tmp_path: Path) -> None:
    """promtool checks a copy of prometheus.yml (and the rule files it
    names): Debian's promtool has no Kubernetes discovery, so the copy
    discovers from a file instead; every other line is the reference's."""
    config = _load(SCRAPE_CONFIG)
    targets = tmp_path / "targets.json"
    targets.write_text("[]")
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs"), job["job_name"]
        job["file_sd_configs"] = [{"files": [str(targets)]}]
    config["rule_files"] = [str(PROMETHEUS / pattern) for pattern in config["rule_files"]]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config, sort_keys=False))
    result = promtool("check", "config", copy)
    assert result.returncode == 0, _output(result)
    for path in RULE_FILES:
        assert str(path) in result.stdout, f"{path.name} is not in rule_files"


def _scrape_job(name: str) -> Obj:
    jobs: list[Obj] = _load(SCRAPE_CONFIG)["scrape_configs"]
    return next(job for job in jobs if job["job_name"] == name)


@pytest.mark.parametrize(
    ("job", "component", "port_name", "path", "template"),
    [
        ("services", "server", "http", "/metrics", "service-deployment.yaml"),
        ("gateway", "gateway", "ops", "/stats/prometheus", "gateway-deployment.yaml"),
    ],
)
def test_scrape_job_follows_the_chart(
    job: str, component: str, port_name: str, path: str, template: str
) -> None:
    """Discovery by the chart's pod labels and its container port names (the
    address is the discovered port's: no number is written here)."""
    config = _scrape_job(job)
    assert config["metrics_path"] == path
    [sd] = config["kubernetes_sd_configs"]
    assert sd["role"] == "pod"
    [selector] = sd["selectors"]
    assert selector["role"] == "pod"
    labels = dict(pair.split("=") for pair in selector["label"].split(","))
    assert labels == {
        "app.kubernetes.io/instance": "social",
        "app.kubernetes.io/component": component,
    }
    keep = {
        tuple(r["source_labels"]): r["regex"]
        for r in config["relabel_configs"]
        if r.get("action") == "keep"
    }
    assert keep[("__meta_kubernetes_pod_container_port_name",)] == port_name
    # The chart names that container port so, and the roster gives its number.
    manifest = (CHART_TEMPLATES / template).read_text()
    assert re.search(rf"\{{name: {port_name}, containerPort: [^}}]+\}}", manifest), template
    assert "__address__" not in {r.get("target_label") for r in config["relabel_configs"]}
    # job: the service's name for the services (the label the rules group by).
    targets = {r.get("target_label"): r for r in config["relabel_configs"]}
    if job == "services":
        assert targets["job"]["source_labels"] == [
            "__meta_kubernetes_pod_label_app_kubernetes_io_name"
        ]
    else:
        assert targets["job"]["replacement"] == "gateway"
    assert targets["instance"]["source_labels"] == ["__meta_kubernetes_pod_name"]


# --- Alertmanager -------------------------------------------------------------------


def test_amtool_check_config(amtool: Tool) -> None:
    result = amtool("check-config", ALERTMANAGER_CONFIG)
    assert result.returncode == 0, _output(result)


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (("severity=critical", "alertname=ServiceDown", "job=posts"), "pager"),
        (("severity=critical", "alertname=SLOAvailabilityBudgetBurn", "route_group=auth"), "pager"),
        (("severity=warning", "alertname=EventsDeadLettered", "job=messages"), "chat"),
        (("severity=warning", "alertname=SLOLatencyBudgetBurn", "burn=ticket"), "chat"),
        (("severity=info", "alertname=Something"), "default"),
        (("alertname=NoSeverity",), "default"),
    ],
)
def test_amtool_routes(amtool: Tool, labels: tuple[str, ...], receiver: str) -> None:
    result = amtool(
        "config",
        "routes",
        "test",
        "--config.file",
        ALERTMANAGER_CONFIG,
        "--verify.receivers",
        receiver,
        *labels,
    )
    assert result.returncode == 0, _output(result)
    assert result.stdout.strip() == receiver


def test_every_severity_of_the_rules_is_routed(amtool: Tool) -> None:
    for severity in sorted({rule["labels"]["severity"] for rule in _alerts()}):
        result = amtool(
            "config", "routes", "test", "--config.file", ALERTMANAGER_CONFIG, f"severity={severity}"
        )
        assert result.stdout.strip() == SEVERITY_RECEIVERS[severity], _output(result)


def test_alertmanager_groups_and_inhibits() -> None:
    config = _load(ALERTMANAGER_CONFIG)
    assert config["route"]["group_by"] == ["alertname", "job"]
    inhibit = config["inhibit_rules"]
    critical = next(r for r in inhibit if r["source_matchers"] == ['severity="critical"'])
    assert critical["target_matchers"] == ['severity="warning"']
    assert {"alertname", "job"} <= set(critical["equal"])
    down = next(
        r for r in inhibit if r["source_matchers"] == ['alertname=~"ServiceDown|ServiceAbsent"']
    )
    assert down["target_matchers"] == ['alertname!~"ServiceDown|ServiceAbsent"']
    assert down["equal"] == ["job"]
