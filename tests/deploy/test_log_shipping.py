"""Log shipping: Grafana Alloy (deploy/observability/alloy/config.alloy) in the
chart (templates/logs.yaml, `logs.enabled`).

Off by default; on, objects that Helm, the Kubernetes schemas and trivy
accept, with the file itself in the ConfigMap. The config is then checked
against what it reads: the lines the services' own logging writes (generated
here, in a traced span), the gateway's and the web client's access log
formats, and the labels the chart gives its pods.

No Alloy binary can be installed on this machine, so Alloy itself never reads
the config here: its syntax is not checked by Alloy. A small reader of the
subset of Alloy's syntax the file uses (blocks, attributes, strings, lists,
objects, references, calls and `+`) gives its blocks to the checks, and
fails on anything else. The JMESPath expressions of its stage.json blocks
are run with the `jmespath` package (Alloy runs jmespath-community's Go port,
a superset; the expressions here are plain keys, the same in both).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jmespath
import kubernetes_validate
import pytest
import yaml
from social_stack.chart import CHART, Obj, chart_values
from social_stack.paths import REPO_ROOT

from tests.deploy.chart import (
    KUBERNETES_VERSION,
    RELEASE,
    REQUIRED_SETS,
    VALUES_FILES,
    Manifest,
    TrivyConfig,
    changed_objects,
    container,
    failures,
    helm,
    pod_spec,
    render,
    render_text,
)

ALLOY_DIR = REPO_ROOT / "deploy" / "observability" / "alloy"
SOURCE = ALLOY_DIR / "config.alloy"
LOGS_ON = ("--set", "logs.enabled=true")
NAME = "social-logs"
LOGS_KINDS = ("ConfigMap", "ServiceAccount", "Role", "RoleBinding", "DaemonSet", "NetworkPolicy")


# --- a reader of the subset of Alloy's syntax the config uses -------------------


@dataclass(frozen=True)
class Ref:
    """A reference to another component's export, e.g. loki.write.loki.receiver."""

    name: str


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Concat:
    """`a + b + ...` (strings, in this config)."""

    parts: tuple[Any, ...]


@dataclass
class Block:
    name: str
    label: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)

    def children(self, name: str) -> list[Block]:
        return [b for b in self.blocks if b.name == name]

    def child(self, name: str, label: str | None = None) -> Block:
        (only,) = [b for b in self.children(name) if label is None or b.label == label]
        return only


_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<comment>//[^\n]*|/\*.*?\*/)
    |(?P<string>"(?:[^"\\\n]|\\.)*")
    |(?P<raw>`[^`]*`)
    |(?P<number>\d+(?:\.\d+)?)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<punct>[{}\[\](),=+.])""",
    re.VERBOSE | re.DOTALL,
)


class AlloySyntaxError(Exception):
    pass


class _Reader:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None:
                raise AlloySyntaxError(f"line {text.count(chr(10), 0, pos) + 1}: unexpected text")
            kind = match.lastgroup
            assert kind is not None
            if kind not in ("space", "comment"):
                self.tokens.append((kind, match.group(), text.count("\n", 0, pos) + 1))
            pos = match.end()
        self.index = 0

    def peek(self, offset: int = 0) -> tuple[str, str, int]:
        if self.index + offset < len(self.tokens):
            return self.tokens[self.index + offset]
        return ("end", "", -1)

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        token_kind, token, line = self.peek()
        if (value is not None and token != value) or (kind is not None and token_kind != kind):
            raise AlloySyntaxError(f"line {line}: expected {value or kind}, found {token!r}")
        self.index += 1
        return token

    def dotted(self) -> str:
        parts = [self.take(kind="ident")]
        while self.peek()[1] == ".":
            self.take(".")
            parts.append(self.take(kind="ident"))
        return ".".join(parts)

    def body(self, block: Block, closing: str | None) -> Block:
        """Attributes and blocks up to ``closing`` (None: the end of the text)."""
        while True:
            kind, token, line = self.peek()
            if kind == "end" and closing is None:
                return block
            if kind == "punct" and token == closing:
                self.take(closing)
                return block
            name = self.dotted()
            if self.peek()[1] == "=":
                self.take("=")
                if "." in name or name in block.attrs:
                    raise AlloySyntaxError(f"line {line}: bad or repeated attribute {name}")
                block.attrs[name] = self.expression()
                continue
            label = string_value(self.take()) if self.peek()[0] == "string" else None
            self.take("{")
            block.blocks.append(self.body(Block(name, label), "}"))

    def expression(self) -> Any:
        parts = [self.term()]
        while self.peek()[1] == "+":
            self.take("+")
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else Concat(tuple(parts))

    def term(self) -> Any:
        kind, token, line = self.peek()
        if kind in ("string", "raw"):
            self.take()
            return string_value(token)
        if kind == "number":
            self.take()
            return float(token) if "." in token else int(token)
        if token in ("[", "{"):
            return self.collection()
        if kind == "ident":
            if token in ("true", "false", "null"):
                self.take()
                return {"true": True, "false": False, "null": None}[token]
            name = self.dotted()
            if self.peek()[1] != "(":
                return Ref(name)
            self.take("(")
            args = []
            while self.peek()[1] != ")":
                args.append(self.expression())
                if self.peek()[1] != ")":
                    self.take(",")
            self.take(")")
            return Call(name, tuple(args))
        raise AlloySyntaxError(f"line {line}: unexpected {token!r}")

    def collection(self) -> Any:
        """A list, [a, b,], or an object, {key = value, "key" = value,}."""
        closing = "]" if self.take() == "[" else "}"
        items: list[Any] = []
        fields: dict[str, Any] = {}
        while self.peek()[1] != closing:
            if closing == "]":
                items.append(self.expression())
            else:
                kind, key, _ = self.peek()
                self.take()
                self.take("=")
                fields[string_value(key) if kind == "string" else key] = self.expression()
            if self.peek()[1] != closing:
                self.take(",")
        self.take(closing)
        return items if closing == "]" else fields


def string_value(token: str) -> str:
    if token.startswith("`"):
        return token[1:-1]
    value: str = json.loads(token)  # Go's escapes, as far as this config goes
    return value


def read_alloy(text: str) -> Block:
    return _Reader(text).body(Block("<file>"), None)


def evaluate(expr: Any, env: dict[str, str]) -> str:
    """A string expression, with sys.env reading ``env``."""
    if isinstance(expr, str):
        return expr
    if isinstance(expr, Concat):
        return "".join(evaluate(part, env) for part in expr.parts)
    if isinstance(expr, Call) and expr.name == "sys.env":
        (name,) = expr.args
        return env.get(name, "")
    raise AssertionError(f"not a string expression: {expr!r}")


def walk(node: Any) -> Iterator[Any]:
    """Every value in a block or an expression, depth first."""
    if isinstance(node, Block):
        for value in node.attrs.values():
            yield from walk(value)
        for block in node.blocks:
            yield from walk(block)
        return
    yield node
    if isinstance(node, Concat | Call):
        for part in node.parts if isinstance(node, Concat) else node.args:
            yield from walk(part)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)
    elif isinstance(node, dict):
        for item in node.values():
            yield from walk(item)


@pytest.fixture(scope="module")
def alloy() -> Block:
    return read_alloy(SOURCE.read_text())


def test_the_reader_reads_alloy_and_refuses_what_is_not() -> None:
    parsed = read_alloy(
        'a.b "x" {\n  n = 1 // note\n  s = "p" + sys.env("E")\n  c { l = [1, 2,] }\n}'
    )
    block = parsed.child("a.b", "x")
    assert block.attrs == {"n": 1, "s": Concat(("p", Call("sys.env", ("E",))))}
    assert block.child("c").attrs == {"l": [1, 2]}
    for broken in ('a { b = "x" ', 'a { b = "x" c = }', "a { b.c = 1 }", "a { b = 1\n b = 2 }"):
        with pytest.raises(AlloySyntaxError):
            read_alloy(broken)


# --- the chart: off by default, on with one value -----------------------------------


@pytest.fixture(scope="module")
def logs_on() -> dict[str, Manifest]:
    """Every values file rendered with logs on."""
    return {values: render(values, "social", *LOGS_ON) for values in VALUES_FILES}


@pytest.fixture(scope="module")
def on(logs_on: dict[str, Manifest]) -> Manifest:
    return logs_on["values.yaml"]


def shipper_objects(manifest: Manifest) -> list[Obj]:
    return [
        o
        for o in manifest.objects
        if o["metadata"]["labels"].get("app.kubernetes.io/component") == "logs"
    ]


def daemonset(manifest: Manifest) -> Obj:
    return manifest.get("DaemonSet", NAME)


@pytest.mark.parametrize("values", VALUES_FILES)
def test_logs_are_off_by_default(values: str) -> None:
    assert chart_values(values)["logs"]["enabled"] is False
    manifest = render(values)
    assert shipper_objects(manifest) == []
    kinds = {o["kind"] for o in manifest.objects}
    assert not kinds & {"DaemonSet", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def test_logs_on_adds_its_objects_and_changes_nothing_else(on: Manifest) -> None:
    assert changed_objects(render(), on) == {(kind, NAME) for kind in LOGS_KINDS}
    assert {(o["kind"], o["metadata"]["name"]) for o in shipper_objects(on)} == {
        (kind, NAME) for kind in LOGS_KINDS
    }
    # Read access to pods in its namespace, never cluster-wide.
    assert not {"ClusterRole", "ClusterRoleBinding"} & {o["kind"] for o in on.objects}


@pytest.mark.parametrize("values", VALUES_FILES)
def test_helm_lint_strict_passes_with_logs_on(values: str) -> None:
    result = helm(
        "lint", "--strict", str(CHART), "-f", str(CHART / values), *REQUIRED_SETS, *LOGS_ON
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "[WARNING]" not in output, output
    assert "[ERROR]" not in output, output


def test_manifests_with_logs_on_validate_strictly_against_kubernetes_schemas(
    logs_on: dict[str, Manifest],
) -> None:
    oldest = render("values.yaml", "social", "--kube-version", "1.29.0", *LOGS_ON)
    for label, manifest, version in [
        *((values, manifest, KUBERNETES_VERSION) for values, manifest in logs_on.items()),
        ("values.yaml on Kubernetes 1.29", oldest, "1.29"),
    ]:
        assert shipper_objects(manifest), label
        for obj in manifest.objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{label}: {obj['kind']}/{obj['metadata']['name']}: {exc.message}")


def test_trivy_finds_nothing_high_or_critical_in_the_log_shipper(
    on: Manifest, trivy_config: TrivyConfig, tmp_path: Path
) -> None:
    for obj in shipper_objects(on):
        (tmp_path / f"{obj['kind']}-{obj['metadata']['name']}.yaml").write_text(yaml.safe_dump(obj))
    report = trivy_config(tmp_path, "--ignorefile", str(CHART / ".trivyignore.yaml"))
    assert failures(report, {"HIGH", "CRITICAL"}) == []
    # It did check the DaemonSet (its pod spec's many checks passed).
    (result,) = [r for r in report["Results"] if r["Target"] == f"DaemonSet-{NAME}.yaml"]
    assert result["MisconfSummary"]["Successes"] > 10


def test_the_config_map_is_the_file_byte_for_byte(logs_on: dict[str, Manifest]) -> None:
    link = CHART / "files" / "alloy"
    # A link, as files/dashboards and files/prometheus-rules: never a copy.
    assert link.is_symlink()
    assert os.readlink(link) == "../../../observability/alloy"
    assert link.resolve() == ALLOY_DIR.resolve()
    source = SOURCE.read_bytes()
    for values, manifest in logs_on.items():
        data = manifest.get("ConfigMap", NAME)["data"]
        assert list(data) == ["config.alloy"], values
        assert data["config.alloy"].encode() == source, values
        # Its pods roll when it changes.
        annotations = daemonset(manifest)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["checksum/config"] == hashlib.sha256(source).hexdigest(), values


def test_the_daemonset_runs_alloy_unprivileged_with_the_node_logs_read_only(
    logs_on: dict[str, Manifest],
) -> None:
    for values, manifest in logs_on.items():
        ds = daemonset(manifest)
        spec = pod_spec(ds)
        c = container(ds)
        cfg = chart_values(values)["logs"]
        # A pinned Alloy image, never latest.
        image = c["image"]
        assert re.fullmatch(r"docker\.io/grafana/alloy:v\d+\.\d+\.\d+", image), image
        # Non-root (the image's alloy user), root group only to read the files.
        pod = spec["securityContext"]
        assert (pod["runAsNonRoot"], pod["runAsUser"], pod["runAsGroup"]) == (True, 473, 473)
        assert pod["supplementalGroups"] == [0]
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["privileged"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert c["resources"] == cfg["resources"]
        assert c["resources"]["requests"]["cpu"]
        assert c["resources"]["requests"]["memory"]
        assert c["resources"]["limits"]["memory"]
        # Probes on Alloy's /-/ready, on the port it listens on for them.
        (port,) = c["ports"]
        assert (port["name"], port["containerPort"]) == ("http", 12345)
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"] == {"path": "/-/ready", "port": "http"}, probe
        assert f"--server.http.listen-addr=0.0.0.0:{port['containerPort']}" in c["args"]
        # The one host path is the container logs, mounted read-only.
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        host_paths = {name: v["hostPath"] for name, v in volumes.items() if "hostPath" in v}
        assert host_paths == {"pod-logs": {"path": "/var/log/pods", "type": "Directory"}}
        assert mounts["/var/log/pods"] == {
            "name": "pod-logs",
            "mountPath": "/var/log/pods",
            "readOnly": True,
        }
        # Everything it writes is an emptyDir: its data (positions) and /tmp.
        for path in ("/var/lib/alloy/data", "/tmp"):
            assert volumes[mounts[path]["name"]]["emptyDir"]["sizeLimit"], path
        assert "--storage.path=/var/lib/alloy/data" in c["args"]
        # The config: the ConfigMap's one key, where `alloy run` reads it.
        assert c["args"][:2] == ["run", "/etc/alloy/config.alloy"]
        assert volumes[mounts["/etc/alloy"]["name"]]["configMap"]["name"] == NAME
        assert mounts["/etc/alloy"]["readOnly"] is True
        assert spec["tolerations"] == cfg["tolerations"]
        assert "topologySpreadConstraints" not in spec


def test_only_the_log_shipper_gets_an_api_token_to_read_pods(on: Manifest) -> None:
    account = on.get("ServiceAccount", NAME)
    assert account["automountServiceAccountToken"] is False  # as every account of the chart
    spec = pod_spec(daemonset(on))
    assert (spec["serviceAccountName"], spec["automountServiceAccountToken"]) == (NAME, True)
    role = on.get("Role", NAME)
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    ]
    binding = on.get("RoleBinding", NAME)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": NAME,
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": "social"}]


def test_the_network_policy_lets_it_out_to_dns_loki_and_the_api_server_only(
    on: Manifest,
) -> None:
    cfg = chart_values("values.yaml")["logs"]["networkPolicy"]
    spec = on.get("NetworkPolicy", NAME)["spec"]
    assert spec["podSelector"] == daemonset(on)["spec"]["selector"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == []  # its UI and API: nobody's business
    by_ports = {
        tuple(sorted((p["port"], p["protocol"]) for p in rule["ports"])): rule["to"]
        for rule in spec["egress"]
    }
    assert by_ports.keys() == {
        ((53, "TCP"), (53, "UDP")),
        tuple(sorted((port, "TCP") for port in cfg["loki"]["ports"])),
        tuple(sorted((port, "TCP") for port in cfg["apiServer"]["ports"])),
    }
    loki = by_ports[tuple(sorted((port, "TCP") for port in cfg["loki"]["ports"]))]
    assert loki == [
        {
            "namespaceSelector": cfg["loki"]["namespaceSelector"],
            "podSelector": cfg["loki"]["podSelector"],
        }
    ]
    api = by_ports[tuple(sorted((port, "TCP") for port in cfg["apiServer"]["ports"]))]
    assert api == [{"ipBlock": {"cidr": cidr}} for cidr in cfg["apiServer"]["cidrs"]]
    # A Loki outside the cluster: its addresses, on the same ports.
    outside = render(
        "values.yaml", "social", *LOGS_ON, "--set", "logs.networkPolicy.loki.cidrs={203.0.113.0/24}"
    )
    egress = outside.get("NetworkPolicy", NAME)["spec"]["egress"]
    assert {"ipBlock": {"cidr": "203.0.113.0/24"}} in [peer for r in egress for peer in r["to"]]


def test_loki_settings_reach_the_pods_and_a_url_is_required() -> None:
    manifest = render(
        "values.yaml",
        "social",
        *LOGS_ON,
        *("--set", "logs.lokiUrl=https://logs.example.com/loki/api/v1/push"),
        *("--set", "logs.tenantId=social"),
    )
    env = {e["name"]: e for e in container(daemonset(manifest))["env"]}
    assert env["LOKI_URL"]["value"] == "https://logs.example.com/loki/api/v1/push"
    assert env["LOKI_TENANT_ID"]["value"] == "social"
    assert env["RELEASE_NAME"]["value"] == RELEASE
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    result = render_text("values.yaml", "social", *LOGS_ON, "--set", "logs.lokiUrl=")
    assert result.returncode != 0
    assert "logs.lokiUrl is required" in result.stderr


# --- the config against the chart ----------------------------------------------------


def test_the_config_reads_exactly_the_environment_the_pods_get(alloy: Block, on: Manifest) -> None:
    read = {
        node.args[0] for node in walk(alloy) if isinstance(node, Call) and node.name == "sys.env"
    }
    assert read == {e["name"] for e in container(daemonset(on))["env"]}


def test_every_component_the_config_refers_to_exists(alloy: Block) -> None:
    defined = {f"{b.name}.{b.label}" for b in alloy.blocks if b.label}
    assert {b.name for b in alloy.blocks} == {
        "logging",
        "discovery.kubernetes",
        "discovery.relabel",
        "loki.source.file",
        "loki.process",
        "loki.write",
    }
    refs = {node.name for node in walk(alloy) if isinstance(node, Ref)}
    assert refs
    for ref in refs:
        component, _, export = ref.rpartition(".")
        assert component in defined, ref
        assert export in ("targets", "output", "receiver"), ref
    # One chain: targets flow from discovery to loki.source.file, which sends
    # the lines on to the receivers of its forward_to, and so on to Loki.
    # Every component is read by another but loki.source.file, where they meet.
    read = {ref.rpartition(".")[0] for ref in refs}
    assert defined - read == {"loki.source.file.pods"}


def test_discovery_selects_the_release_pods_of_its_node_and_not_its_own(
    alloy: Block, on: Manifest
) -> None:
    discovery = alloy.child("discovery.kubernetes", "pods")
    assert discovery.attrs["role"] == "pod"
    assert discovery.child("namespaces").attrs == {"own_namespace": True}
    selectors = discovery.child("selectors")
    env = {"NODE_NAME": "node-a", "RELEASE_NAME": RELEASE}
    assert selectors.attrs["role"] == "pod"
    assert evaluate(selectors.attrs["field"], env) == "spec.nodeName=node-a"
    selector = evaluate(selectors.attrs["label"], env)
    requirements = [re.fullmatch(r"([\w./-]+)(!=|=)(.*)", part) for part in selector.split(",")]
    assert all(requirements), selector

    def selected(labels: dict[str, str]) -> bool:
        return all(
            (labels.get(key) == value) == (op == "=")
            for key, op, value in (m.groups() for m in requirements if m)
        )

    owners = [o for o in on.objects if o["kind"] in ("Deployment", "Job", "DaemonSet")]
    assert {o["kind"] for o in owners} == {"Deployment", "Job", "DaemonSet"}
    for owner in owners:
        labels = owner["spec"]["template"]["metadata"]["labels"]
        assert selected(labels) == (owner["kind"] != "DaemonSet"), owner["metadata"]["name"]
    # Another release's Alloy leaves these pods alone.
    other = evaluate(selectors.attrs["label"], env | {"RELEASE_NAME": "other"})
    assert other.replace("=other", f"={RELEASE}") == selector


def relabel_rules(alloy: Block) -> list[dict[str, Any]]:
    return [rule.attrs for rule in alloy.child("discovery.relabel", "pods").children("rule")]


def test_relabelling_reads_labels_the_pods_have_and_makes_few_labels(
    alloy: Block, on: Manifest
) -> None:
    rules = relabel_rules(alloy)
    pods = [o["spec"]["template"]["metadata"]["labels"] for o in on.pod_owners()]
    for rule in rules:
        assert rule.keys() <= {"source_labels", "target_label", "separator", "replacement"}
        for source in rule["source_labels"]:
            assert source.startswith("__meta_kubernetes_"), source
            name = source.removeprefix("__meta_kubernetes_pod_label_")
            if name != source:  # a pod label, sanitized: every pod has it
                for labels in pods:
                    assert name in {re.sub(r"[^\w]", "_", key) for key in labels}, source
    targets = {rule["target_label"] for rule in rules}
    assert targets == {"namespace", "pod", "container", "service", "component", "__path__"}
    (path,) = [rule for rule in rules if rule["target_label"] == "__path__"]
    assert path["source_labels"] == [
        "__meta_kubernetes_pod_uid",
        "__meta_kubernetes_pod_container_name",
    ]
    # /var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log, under the mount.
    uid, name = "0b1c2d3e-aaaa-bbbb-cccc-123456789abc", "alloy"
    glob = path["replacement"].replace("$1", f"{uid}{path['separator']}{name}")
    assert Path(f"/var/log/pods/social_pod-x_{uid}/{name}/0.log").match(glob), glob
    mounts = {m["mountPath"] for m in container(daemonset(on))["volumeMounts"]}
    assert glob.startswith("/var/log/pods/")
    assert "/var/log/pods" in mounts
    source = alloy.child("loki.source.file", "pods")
    assert source.child("file_match").attrs["enabled"] is True


# --- the config against the lines -----------------------------------------------------

# Writes what a service's container writes on stdout: its own logging
# (social_common.logging) with its own tracing (social_common.tracing, here
# exporting to memory), lines in and out of a traced request. The span's ids
# go to stderr.
LOG_SCRIPT = """
import json, logging, sys
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from social_common import tracing
from social_common.logging import bind_request_context, clear_request_context
from social_common.logging import configure_logging, get_logger

service = sys.argv[1]
configure_logging(service)
assert tracing.configure_tracing(service, exporter=InMemorySpanExporter())
log = get_logger("logs.check")
log.info("started")
with tracing.tracer.start_as_current_span("POST /api/v1/posts") as span:
    bind_request_context(request_id="req-1")
    log.info("post_created", post_id="p1")
    logging.getLogger("some.library").warning("pool %s exhausted", "db")
    try:
        raise RuntimeError("disk on fire")
    except RuntimeError:
        log.exception("write_failed")
    clear_request_context()
context = span.get_span_context()
log.info("stopped")
tracing.shutdown_tracing()
json.dump({"trace_id": format(context.trace_id, "032x"),
           "span_id": format(context.span_id, "016x")}, sys.stderr)
"""
SERVICE = "posts"
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")


@dataclass(frozen=True)
class ServiceLines:
    lines: list[str]
    trace_id: str
    span_id: str


@pytest.fixture(scope="module")
def service_lines() -> ServiceLines:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", LOG_SCRIPT, SERVICE],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=REPO_ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    ids = json.loads(result.stderr.strip().splitlines()[-1])
    return ServiceLines(result.stdout.splitlines(), ids["trace_id"], ids["span_id"])


def stages(alloy: Block) -> list[Block]:
    return alloy.child("loki.process", "pods").blocks


def top_json_expressions(alloy: Block) -> dict[str, str]:
    (json_stage,) = [s for s in stages(alloy) if s.name == "stage.json"]
    expressions: dict[str, str] = json_stage.attrs["expressions"]
    return expressions


def extract(expressions: dict[str, str], line: str) -> dict[str, Any]:
    """What stage.json puts in the extracted map for a line (None: absent)."""
    data = json.loads(line)
    return {name: jmespath.search(expr or name, data) for name, expr in expressions.items()}


def test_the_services_lines_give_service_level_trace_id_and_time(
    alloy: Block, service_lines: ServiceLines
) -> None:
    expressions = top_json_expressions(alloy)
    lines = [extract(expressions, line) for line in service_lines.lines]
    assert [(x["service"], x["level"]) for x in lines] == [
        (SERVICE, "info"),
        (SERVICE, "info"),
        (SERVICE, "warning"),
        (SERVICE, "error"),
        (SERVICE, "info"),
    ]
    # The span's trace, on the lines written in it, and on those only.
    assert [x["trace_id"] for x in lines] == [None, *[service_lines.trace_id] * 3, None]
    assert re.fullmatch(r"[0-9a-f]{32}", service_lines.trace_id)
    for x in lines:
        # What stage.timestamp parses with Go's RFC3339Nano layout.
        assert RFC3339.fullmatch(x["timestamp"]), x["timestamp"]
    # The lines do carry the other keys the config's comments name.
    traced = json.loads(service_lines.lines[1])
    assert (traced["span_id"], traced["request_id"]) == (service_lines.span_id, "req-1")
    assert traced["event"] == "post_created"


def test_service_and_level_are_labels_and_trace_id_is_structured_metadata(
    alloy: Block,
) -> None:
    expressions = top_json_expressions(alloy)
    by_name = {s.name: s for s in stages(alloy)}
    labels = by_name["stage.labels"].attrs["values"]
    metadata = by_name["stage.structured_metadata"].attrs["values"]
    # Low cardinality only; trace_id (a value per request) never a label.
    assert labels == {"service": "service", "level": "level"}
    assert metadata["trace_id"] == "trace_id"
    assert metadata["pod"] == "pod"  # the relabelled pod name, out of the labels
    for source in [*labels.values(), metadata["trace_id"]]:
        assert source in expressions, source
    assert "filename" in by_name["stage.label_drop"].attrs["values"]
    timestamp = by_name["stage.timestamp"].attrs
    assert expressions[timestamp["source"]] == "timestamp"  # structlog's key
    assert timestamp["format"] == "RFC3339Nano"
    # A line without it (the gateway's) keeps the runtime's time, unchanged.
    assert timestamp["action_on_failure"] == "skip"
    # The runtime's framing is undone before anything reads the line.
    assert stages(alloy)[0].name == "stage.cri"


def access_log_keys(template: Path) -> list[str]:
    """The keys of an Envoy access log's json_format in one of our templates."""
    text = template.read_text()
    block = re.search(r"access_log:.*?json_format:\n((?:[ \t]+\w+: \"[^\"\n]*\"\n)+)", text, re.S)
    assert block, template
    return re.findall(r"^\s+(\w+):", block.group(1), re.M)


def test_the_gateways_access_log_gives_its_trace_id_and_keeps_the_pods_service(
    alloy: Block, on: Manifest
) -> None:
    keys = access_log_keys(REPO_ROOT / "gateway" / "envoy.yaml.j2")
    assert "trace_id" in keys
    assert not {"service", "level", "timestamp"} & set(keys)
    line = json.dumps({key: f"<{key}>" for key in keys} | {"trace_id": "ab" * 16, "status": 201})
    extracted = extract(top_json_expressions(alloy), line)
    assert extracted == {"service": None, "level": None, "timestamp": None, "trace_id": "ab" * 16}
    # No service in the line: the label stays the pod's app.kubernetes.io/name.
    (rule,) = [r for r in relabel_rules(alloy) if r["target_label"] == "service"]
    assert rule["source_labels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
    assert pod_labels(on.get("Deployment", "gateway"))["app.kubernetes.io/name"] == "gateway"


def pod_labels(owner: Obj) -> dict[str, str]:
    labels: dict[str, str] = owner["spec"]["template"]["metadata"]["labels"]
    return labels


def test_only_the_web_clients_probes_and_health_checks_are_dropped(
    alloy: Block, on: Manifest
) -> None:
    (match,) = [s for s in stages(alloy) if s.name == "stage.match"]
    # On the web client's pods alone.
    selector = re.fullmatch(r'\{(\w+)="([^"]*)"\}', match.attrs["selector"])
    assert selector, match.attrs["selector"]
    label, value = selector.groups()
    assert label == "component"  # a relabelled pod label (see the relabel rules)
    for owner in on.pod_owners():
        is_web = owner["metadata"]["name"] == "web"
        assert (pod_labels(owner)["app.kubernetes.io/component"] == value) == is_web
    expressions = match.child("stage.json").attrs["expressions"]
    drop = match.child("stage.drop").attrs
    pattern = re.compile(drop["expression"])  # RE2 and Python agree on this one

    def dropped(method: str, path: str) -> bool:
        """stage.drop on a web access log line: the sources' values joined
        (a source the line lacks keeps the line)."""
        keys = access_log_keys(REPO_ROOT / "web" / "envoy.yaml.j2")
        line = json.dumps({key: f"<{key}>" for key in keys} | {"method": method, "path": path})
        extracted = extract(expressions, line)
        values = [extracted[name] for name in drop["source"].split(",")]
        if None in values:
            return False
        return bool(pattern.search(drop["separator"].join(values)))

    # What probes it: the kubelet (its Deployment's probes) and the gateway
    # (the health checks of its cluster `web`), all GET on one path.
    probes = {
        probe["httpGet"]["path"]
        for key, probe in container(on.get("Deployment", "web")).items()
        if key.endswith("Probe")
    }
    envoy = yaml.safe_load(on.get("ConfigMap", "gateway")["data"]["envoy.yaml"])
    (cluster,) = [c for c in envoy["static_resources"]["clusters"] if c["name"] == "web"]
    checks = {check["http_health_check"]["path"] for check in cluster["health_checks"]}
    assert probes | checks == {"/"}
    assert dropped("GET", "/")
    for method, path in [("GET", "/assets/app.js"), ("GET", "/?ref=mail"), ("HEAD", "/")]:
        assert not dropped(method, path), (method, path)
