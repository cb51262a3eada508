"""The Helm chart (deploy/helm/social): Helm's and Kubernetes' own checks, trivy,
and the chart's promises against the fleet's roster.

Every values file is rendered once per session (two namespaces each), and the
checks read those renders; a few tests render a variation of their own.
"""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from social_common.fleet import Fleet, roster
from social_stack.chart import CHART, Obj, chart_values, deep_merge
from social_stack.paths import REPO_ROOT, binary
from social_stack.web import content_security_policy

from tests.deploy.chart import (
    HELM,
    KUBERNETES_VERSION,
    RELEASE,
    REQUIRED,
    REQUIRED_SETS,
    VALUES_FILES,
    Manifest,
    TrivyConfig,
    changed_objects,
    container,
    failures,
    helm,
    manifest_of,
    pod_spec,
    render,
    render_text,
)

GATEWAY = roster().gateway_ports
NAMESPACES = ("social", "social-staging")
# The chart's own top-level values keys; every other one is a roster service.
CHART_KEYS = {
    "global",
    "clusterDomain",
    "serviceDefaults",
    "gateway",
    "monitoring",
    "web",
    "database",
    "redis",
    "objects",
    "networkPolicy",
    "tracing",
    "logs",
}


@pytest.fixture(scope="session", autouse=True)
def _helm_installed() -> None:
    # A failure, not a skip: `make test` installs it, and a chart no tool
    # read is not checked.
    if not HELM.exists():
        pytest.fail(f"Helm is missing at {HELM}: run `make deploy-tools`")


# --- rendering ------------------------------------------------------------------


def edited_chart(tmp_path: Path, name: str, text: str) -> subprocess.CompletedProcess[str]:
    """`helm template` of a copy of the chart (its links' contents copied, as
    `helm package` does) with the file ``name`` rewritten to ``text``."""
    chart = tmp_path / "social"
    shutil.copytree(CHART, chart, symlinks=False)
    (chart / name).write_text(text)
    return helm("template", RELEASE, str(chart), "--namespace", "social", *REQUIRED_SETS)


@pytest.fixture(scope="session")
def renders() -> dict[tuple[str, str], Manifest]:
    """Every values file in every namespace, rendered once (in parallel)."""
    keys = [(values, namespace) for values in VALUES_FILES for namespace in NAMESPACES]
    with ThreadPoolExecutor(max_workers=len(keys)) as pool:
        manifests = list(pool.map(lambda key: render(*key), keys))
    return dict(zip(keys, manifests, strict=True))


@pytest.fixture(scope="session")
def default(renders: dict[tuple[str, str], Manifest]) -> Manifest:
    return renders[("values.yaml", "social")]


@pytest.fixture(scope="session")
def fleet() -> Fleet:
    return roster()


def all_renders(renders: dict[tuple[str, str], Manifest]) -> Iterator[tuple[str, Manifest]]:
    for (values, namespace), manifest in renders.items():
        yield f"{values} in {namespace}", manifest


def service_values(values: str, service: str) -> Obj:
    merged = chart_values(values)
    return deep_merge(merged["serviceDefaults"], merged.get(service) or {})


def env_of(owner: Obj) -> dict[str, Obj]:
    return {entry["name"]: entry for entry in container(owner).get("env", [])}


def selector_name(peer: Obj) -> str:
    name: str = peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
    return name


def grpc_ingress_sources(policy: Obj, grpc_port: int) -> set[str]:
    return {
        selector_name(peer)
        for rule in policy["spec"].get("ingress", [])
        if any(port["port"] == grpc_port for port in rule.get("ports", []))
        for peer in rule.get("from", [])
    }


def egress_rules_on(policy: Obj, port: int) -> list[Obj]:
    return [
        rule
        for rule in policy["spec"].get("egress", [])
        if any(p["port"] == port for p in rule.get("ports", []))
    ]


def egress_peers_on(policy: Obj, port: int) -> dict[str, Obj]:
    """The pods a policy lets out to on a port, by app name: each one's selector."""
    peers: dict[str, Obj] = {}
    for rule in egress_rules_on(policy, port):
        for peer in rule["to"]:
            selector = peer["podSelector"]
            names = [selector["matchLabels"].get("app.kubernetes.io/name")]
            for expression in selector.get("matchExpressions", []):
                if expression["key"] == "app.kubernetes.io/name":
                    assert expression["operator"] == "In", expression
                    names = expression["values"]
            peers |= dict.fromkeys(names, selector)
    return peers


# --- Helm, Kubernetes schemas, trivy -----------------------------------------------


@pytest.mark.parametrize("values", VALUES_FILES)
def test_helm_lint_strict_passes(values: str) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(CHART / values), *REQUIRED_SETS)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "[WARNING]" not in output, output
    assert "[ERROR]" not in output, output


def test_kubernetes_validate_bundles_the_version_we_check() -> None:
    # validate() silently falls back to an older schema when it lacks one.
    versions = kubernetes_validate.utils.all_versions()
    assert any(v.startswith(f"{KUBERNETES_VERSION}.") for v in versions), versions


def test_manifests_validate_strictly_against_kubernetes_schemas(
    renders: dict[tuple[str, str], Manifest],
) -> None:
    for label, manifest in all_renders(renders):
        assert manifest.objects, label
        for obj in manifest.objects:
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{label}: {obj['kind']}/{obj['metadata']['name']}: {exc.message}")


def test_schema_validation_rejects_unknown_fields(default: Manifest) -> None:
    deployment = copy.deepcopy(default.get("Deployment", "posts"))
    pod_spec(deployment)["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_oldest_supported_kubernetes_renders_valid_manifests() -> None:
    # kubeVersion >=1.29: there the gateway has no preStop sleep (1.30+).
    manifest = render("values.yaml", "social", "--kube-version", "1.29.0")
    for obj in manifest.objects:
        kubernetes_validate.validate(obj, "1.29", strict=True)
    for envoy in ("gateway", "web"):
        assert "lifecycle" not in container(manifest.get("Deployment", envoy)), envoy


def _write_objects(manifest: Manifest, directory: Path) -> list[Path]:
    directory.mkdir(parents=True)
    paths = []
    for obj in manifest.objects:
        path = directory / f"{obj['kind']}-{obj['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(obj))
        paths.append(path)
    return paths


@dataclass(frozen=True)
class TrivyScan:
    report: Obj
    root: Path
    workloads: tuple[Path, ...]


@pytest.fixture(scope="session")
def trivy_scan(
    renders: dict[tuple[str, str], Manifest],
    trivy_config: TrivyConfig,
    tmp_path_factory: pytest.TempPathFactory,
) -> TrivyScan:
    """Trivy on the chart (packaged, so that its links are followed: trivy does
    not follow them in a directory) and on every render, one file per object."""
    root = tmp_path_factory.mktemp("trivy")
    packaged = helm("package", str(CHART), "--destination", str(root / "chart"))
    assert packaged.returncode == 0, packaged.stderr
    workloads: list[Path] = []
    for values in VALUES_FILES:  # one namespace: the others differ only in names
        written = _write_objects(renders[(values, "social")], root / "rendered" / values)
        workloads += [p for p in written if p.name.startswith(("Deployment-", "Job-"))]
    report = trivy_config(
        root,
        "--ignorefile",
        str(CHART / ".trivyignore.yaml"),
        "--helm-set",
        REQUIRED_SETS[1],
    )
    return TrivyScan(report, root, tuple(workloads))


def test_trivy_finds_nothing_high_or_critical(trivy_scan: TrivyScan) -> None:
    assert failures(trivy_scan.report, {"HIGH", "CRITICAL"}) == []


def test_trivy_scanned_the_chart_and_every_workload(trivy_scan: TrivyScan) -> None:
    results = trivy_scan.report.get("Results", [])
    # Its Helm scanner rendered the packaged chart's templates...
    helm_targets = {r["Target"] for r in results if r["Type"] == "helm"}
    for template in ("service-deployment.yaml", "gateway-deployment.yaml", "web-deployment.yaml"):
        assert any(template in t for t in helm_targets), (template, helm_targets)
    # ...and its Kubernetes checks ran on every rendered Deployment and Job.
    checked = {
        r["Target"]
        for r in results
        if r["Type"] == "kubernetes" and r.get("MisconfSummary", {}).get("Successes", 0) > 10
    }
    expected = {str(p.relative_to(trivy_scan.root)) for p in trivy_scan.workloads}
    assert expected <= checked, sorted(expected - checked)


def test_trivy_is_not_vacuous(trivy_config: TrivyConfig, tmp_path: Path) -> None:
    """The same command flags a root, privileged pod."""
    target = tmp_path / "bad"
    target.mkdir()
    (target / "bad.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "bad", "namespace": "social"},
                "spec": {
                    "selector": {"matchLabels": {"app": "bad"}},
                    "template": {
                        "metadata": {"labels": {"app": "bad"}},
                        "spec": {
                            "containers": [
                                {
                                    "name": "bad",
                                    "image": "bad:latest",
                                    "securityContext": {"privileged": True, "runAsUser": 0},
                                }
                            ]
                        },
                    },
                },
            }
        )
    )
    report = trivy_config(target, "--ignorefile", str(CHART / ".trivyignore.yaml"))
    found = failures(report, {"HIGH", "CRITICAL"})
    assert any("KSV-0017" in f for f in found), found  # privileged


def test_every_trivy_skip_says_why() -> None:
    ignores = yaml.safe_load((CHART / ".trivyignore.yaml").read_text())
    entries = ignores["misconfigurations"]
    assert entries
    for entry in entries:
        assert re.fullmatch(r"KSV-\d{4,5}", entry["id"]), entry
        assert len(entry.get("statement", "")) > 20, f"{entry['id']} needs a reason"


# --- the roster's services ------------------------------------------------------


def test_values_have_a_section_per_roster_service_and_nothing_else(fleet: Fleet) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) - CHART_KEYS == set(fleet.names)


def test_a_values_key_that_is_no_service_fails_the_render() -> None:
    result = render_text("values.yaml", "social", "--set", "post.image.tag=2.0.0")
    assert result.returncode != 0
    assert "neither a service of fleet.yaml" in result.stderr


def test_every_service_has_its_objects(
    renders: dict[tuple[str, str], Manifest], fleet: Fleet
) -> None:
    for label, manifest in all_renders(renders):
        keys = manifest.by_key()
        for name, service in fleet.services.items():
            for kind, object_name in [
                ("Deployment", name),
                ("Service", name),
                ("Service", f"{name}-headless"),
                ("PodDisruptionBudget", name),
                ("ServiceAccount", name),
                ("NetworkPolicy", name),
            ]:
                assert (kind, object_name) in keys, f"{label}: {kind}/{object_name}"
            has_job = ("Job", f"{name}-migrate") in keys
            assert has_job == service.database, f"{label}: {name} migration Job"


def test_services_expose_the_pod_ports(default: Manifest, fleet: Fleet) -> None:
    ports = fleet.pod_ports
    for name in fleet.names:
        for service_name in (name, f"{name}-headless"):
            service = default.get("Service", service_name)
            by_name = {p["name"]: p for p in service["spec"]["ports"]}
            assert by_name["http"]["port"] == ports.http
            assert by_name["grpc"]["port"] == ports.grpc
            assert all(p.get("appProtocol") for p in by_name.values())
            assert service["spec"]["selector"]["app.kubernetes.io/name"] == name
        headless = default.get("Service", f"{name}-headless")["spec"]
        assert headless["clusterIP"] == "None"
        assert headless["publishNotReadyAddresses"] is False
        container_ports = {
            p["name"]: p["containerPort"]
            for p in container(default.get("Deployment", name))["ports"]
        }
        assert container_ports == {"http": ports.http, "grpc": ports.grpc}


def test_autoscaling_follows_the_roster(
    renders: dict[tuple[str, str], Manifest], fleet: Fleet
) -> None:
    bounds = {name: (s.min_replicas, s.max_replicas) for name, s in fleet.services.items()}
    bounds["web"] = (fleet.web.min_replicas, fleet.web.max_replicas)
    for values in ("values.yaml", "values-production.yaml"):
        manifest = renders[(values, "social")]
        for name, (low, high) in bounds.items():
            hpa = manifest.get("HorizontalPodAutoscaler", name)["spec"]
            assert hpa["scaleTargetRef"] == {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": name,
            }
            assert (hpa["minReplicas"], hpa["maxReplicas"]) == (low, high), name
            cpu = [m for m in hpa["metrics"] if m["resource"]["name"] == "cpu"]
            assert cpu[0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
            assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
            assert hpa["behavior"]["scaleUp"]["policies"]
            # Helm must not reset what the HPA decided.
            assert "replicas" not in manifest.get("Deployment", name)["spec"]
            requests = container(manifest.get("Deployment", name))["resources"]["requests"]
            assert "cpu" in requests  # what utilization is a percentage of


def test_default_bounds_are_3_to_50(default: Manifest, fleet: Fleet) -> None:
    for hpa in default.of_kind("HorizontalPodAutoscaler"):
        if hpa["metadata"]["name"] in fleet.names:
            assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 50)


def test_values_may_override_the_roster_bounds() -> None:
    manifest = render(
        "values.yaml",
        "social",
        "--set",
        "posts.autoscaling.minReplicas=5",
        "--set",
        "posts.autoscaling.maxReplicas=80",
    )
    hpa = manifest.get("HorizontalPodAutoscaler", "posts")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (5, 80)
    assert manifest.get("HorizontalPodAutoscaler", "auth")["spec"]["maxReplicas"] == 50
    # The web client's too, checked as the others' are.
    result = render_text("values.yaml", "social", "--set", "web.autoscaling.maxReplicas=1")
    assert result.returncode != 0
    assert "web: autoscaling.minReplicas (2) is above maxReplicas (1)" in result.stderr


def test_dev_has_one_replica_and_no_autoscaler(renders: dict[tuple[str, str], Manifest]) -> None:
    manifest = renders[("values-dev.yaml", "social")]
    assert manifest.of_kind("HorizontalPodAutoscaler") == []
    for deployment in manifest.of_kind("Deployment"):
        assert deployment["spec"]["replicas"] == 1, deployment["metadata"]["name"]


def test_disruption_budgets_never_block_a_drain(
    renders: dict[tuple[str, str], Manifest],
) -> None:
    for label, manifest in all_renders(renders):
        for pdb in manifest.of_kind("PodDisruptionBudget"):
            spec = pdb["spec"]
            assert "minAvailable" not in spec, label
            allowed = spec["maxUnavailable"]
            assert (allowed >= 1) if isinstance(allowed, int) else int(allowed.rstrip("%")) > 0
            assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
            target = manifest.get("Deployment", pdb["metadata"]["name"])
            assert spec["selector"] == target["spec"]["selector"]


def test_no_service_account_token_is_mounted(renders: dict[tuple[str, str], Manifest]) -> None:
    for label, manifest in all_renders(renders):
        accounts = manifest.names("ServiceAccount")
        for account in manifest.of_kind("ServiceAccount"):
            assert account["automountServiceAccountToken"] is False, label
        for owner in manifest.pod_owners():
            spec = pod_spec(owner)
            assert spec["automountServiceAccountToken"] is False, label
            assert spec["serviceAccountName"] in accounts, label


def test_no_container_runs_as_root(renders: dict[tuple[str, str], Manifest]) -> None:
    for label, manifest in all_renders(renders):
        for owner in manifest.pod_owners():
            where = f"{label}: {owner['kind']}/{owner['metadata']['name']}"
            spec = pod_spec(owner)
            pod = spec["securityContext"]
            assert pod["runAsNonRoot"] is True, where
            assert pod["runAsUser"] != 0, where
            assert pod["runAsGroup"] != 0, where
            assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
            for c in spec["containers"] + spec.get("initContainers", []):
                sc = c["securityContext"]
                assert sc.get("runAsUser", pod["runAsUser"]) != 0, where
                assert sc["runAsNonRoot"] is True, where
                assert sc["readOnlyRootFilesystem"] is True, where
                assert sc["allowPrivilegeEscalation"] is False, where
                assert sc["capabilities"] == {"drop": ["ALL"]}, where
                # A read-only root needs a writable /tmp.
                mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
                volumes = {v["name"]: v for v in spec["volumes"]}
                assert volumes[mounts["/tmp"]]["emptyDir"]["sizeLimit"], where


def _image_user(dockerfile: Path) -> tuple[int, int]:
    """The USER uid:gid the image runs as (its last USER instruction)."""
    users = re.findall(r"^USER\s+(\d+):(\d+)\s*$", dockerfile.read_text(), re.MULTILINE)
    uid, gid = users[-1]
    return int(uid), int(gid)


def test_pods_run_as_their_images_users(default: Manifest, fleet: Fleet) -> None:
    owners = {name: REPO_ROOT / "services" / name / "Dockerfile" for name in fleet.names}
    owners["gateway"] = REPO_ROOT / "gateway" / "Dockerfile"
    owners["web"] = REPO_ROOT / "web" / "Dockerfile"
    for name, dockerfile in owners.items():
        context = pod_spec(default.get("Deployment", name))["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"]) == _image_user(dockerfile), name


def test_probes(default: Manifest, fleet: Fleet) -> None:
    for name in fleet.names:
        c = container(default.get("Deployment", name))
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["livenessProbe"]["grpc"] == {"port": fleet.pod_ports.grpc}
    gateway = container(default.get("Deployment", "gateway"))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert gateway[probe]["httpGet"] == {"path": "/ready", "port": "ops"}
    # The web client's page, on the HTTP port (its admin API is on loopback).
    web = container(default.get("Deployment", "web"))
    assert {p["name"]: p["containerPort"] for p in web["ports"]} == {"http": fleet.pod_ports.http}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert web[probe]["httpGet"] == {"path": "/", "port": "http"}


def test_termination_grace_matches_the_shutdown_settings(
    renders: dict[tuple[str, str], Manifest], fleet: Fleet
) -> None:
    """The pod gets preStop + SHUTDOWN_DELAY + SHUTDOWN_GRACE + margin, and
    never waits twice (a preStop sleep and the app's own delay)."""
    for values in VALUES_FILES:
        manifest = renders[(values, "social")]
        for name in fleet.names:
            deployment = manifest.get("Deployment", name)
            env = env_of(deployment)
            delay = float(env["SHUTDOWN_DELAY_SECONDS"]["value"])
            grace = float(env["SHUTDOWN_GRACE_SECONDS"]["value"])
            shutdown = service_values(values, name)["shutdown"]
            assert (delay, grace) == (shutdown["delaySeconds"], shutdown["graceSeconds"])
            pre_stop = container(deployment).get("lifecycle", {}).get("preStop", {})
            sleep = pre_stop.get("sleep", {}).get("seconds", 0)
            assert sleep == 0 or delay == 0, name
            expected = sleep + math.ceil(delay) + math.ceil(grace) + shutdown["marginSeconds"]
            assert pod_spec(deployment)["terminationGracePeriodSeconds"] == expected, name
        assert (
            float(env_of(manifest.get("Deployment", "realtime"))["SHUTDOWN_GRACE_SECONDS"]["value"])
            >= 30
        )
        for envoy in ("gateway", "web"):
            deployment = manifest.get("Deployment", envoy)
            sleep = container(deployment)["lifecycle"]["preStop"]["sleep"]["seconds"]
            margin = chart_values(values)[envoy]["shutdown"]["marginSeconds"]
            assert sleep > 0, envoy
            assert pod_spec(deployment)["terminationGracePeriodSeconds"] == sleep + margin
        # A web pod serves on until the gateway's health checks could have
        # given up on it (the sleep also covers the gateway's DNS forgetting it).
        config = yaml.safe_load(manifest.get("ConfigMap", "gateway")["data"]["envoy.yaml"])
        (cluster,) = (c for c in config["static_resources"]["clusters"] if c["name"] == "web")
        (check,) = cluster["health_checks"]
        noticed = float(check["interval"].removesuffix("s")) * check["unhealthy_threshold"]
        sleep = container(manifest.get("Deployment", "web"))["lifecycle"]["preStop"]["sleep"]
        assert sleep["seconds"] >= noticed, values


def test_the_pages_may_load_images_from_where_the_media_are_served(default: Manifest) -> None:
    config = yaml.safe_load(default.get("ConfigMap", "gateway")["data"]["envoy.yaml"])
    (host,) = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    routes = host["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    to_web = [r for r in routes if r.get("route", {}).get("cluster") == "web"]
    assert len(to_web) == 2  # /api/docs and every other page
    media = REQUIRED["objects.publicBaseUrl"]
    for route in to_web:
        added = route["response_headers_to_add"]
        headers = {h["header"]["key"]: h["header"]["value"] for h in added}
        assert headers["content-security-policy"] == content_security_policy(media)


def test_spread_over_zones_and_nodes(default: Manifest) -> None:
    for deployment in default.of_kind("Deployment"):
        constraints = pod_spec(deployment)["topologySpreadConstraints"]
        keys = {c["topologyKey"]: c for c in constraints}
        assert set(keys) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        for constraint in constraints:
            assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
            assert constraint["labelSelector"] == deployment["spec"]["selector"]


# --- environment -----------------------------------------------------------------


def test_peer_addresses_are_exactly_the_roster_peers(
    renders: dict[tuple[str, str], Manifest], fleet: Fleet
) -> None:
    grpc = fleet.pod_ports.grpc
    for (_, namespace), manifest in renders.items():
        for name, service in fleet.services.items():
            env = env_of(manifest.get("Deployment", name))
            addresses = {k: v["value"] for k, v in env.items() if k.endswith("_GRPC_ADDR")}
            assert addresses == {
                f"{peer.upper()}_GRPC_ADDR": (
                    f"dns:///{peer}-headless.{namespace}.svc.cluster.local:{grpc}"
                )
                for peer in service.peers
            }


def test_base_environment(default: Manifest, fleet: Fleet) -> None:
    for name in fleet.names:
        env = env_of(default.get("Deployment", name))
        assert env["APP_ENV"]["value"] == "production"
        assert env["BIND_HOST"]["value"] == "0.0.0.0"  # noqa: S104  # the pod's own interfaces
        assert env["HTTP_PORT"]["value"] == str(fleet.pod_ports.http)
        assert env["GRPC_PORT"]["value"] == str(fleet.pod_ports.grpc)
        assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "social-redis",
            "key": "url",
        }


def test_redis_ca_comes_from_the_redis_secret_only_when_given(
    renders: dict[tuple[str, str], Manifest], fleet: Fleet
) -> None:
    for label, manifest in all_renders(renders):
        for owner in manifest.pod_owners():
            assert "REDIS_CA_CERT" not in env_of(owner), f"{label}: {owner['metadata']['name']}"
    manifest = render("values.yaml", "social", "--set", "redis.caKey=ca.crt")
    for name in fleet.names:
        env = env_of(manifest.get("Deployment", name))
        assert env["REDIS_CA_CERT"]["valueFrom"]["secretKeyRef"] == {
            "name": "social-redis",
            "key": "ca.crt",
        }, name
    # Neither the migration Jobs (no Redis) nor the gateway and web pods.
    services = {("Deployment", name) for name in fleet.names}
    for owner in manifest.pod_owners():
        if (owner["kind"], owner["metadata"]["name"]) not in services:
            assert "REDIS_CA_CERT" not in env_of(owner), owner["metadata"]["name"]


def test_redis_wait_replicas_reaches_every_service_and_nothing_else(
    renders: dict[tuple[str, str], Manifest], fleet: Fleet
) -> None:
    # Production-shaped: Memorystore's primaries have a replica each.
    assert chart_values("values.yaml")["redis"]["waitReplicas"] == 1
    for (values, namespace), manifest in renders.items():
        expected = str(chart_values(values)["redis"]["waitReplicas"])
        for name in fleet.names:
            env = env_of(manifest.get("Deployment", name))
            assert env["REDIS_WAIT_REPLICAS"] == {
                "name": "REDIS_WAIT_REPLICAS",
                "value": expected,
            }, f"{values} in {namespace}: {name}"
    services = {("Deployment", name) for name in fleet.names}
    for given in ("0", "2"):
        manifest = render("values.yaml", "social", "--set", f"redis.waitReplicas={given}")
        for owner in manifest.pod_owners():
            env = env_of(owner)
            if (owner["kind"], owner["metadata"]["name"]) in services:
                assert env["REDIS_WAIT_REPLICAS"]["value"] == given, owner["metadata"]["name"]
            else:  # the migration Jobs, the gateway and the web client use no Redis
                assert "REDIS_WAIT_REPLICAS" not in env, owner["metadata"]["name"]


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--set", "-1"), ("--set", "1.5"), ("--set", "one"), ("--set-string", "1"), ("--set", "null")],
)
def test_redis_wait_replicas_must_be_a_whole_number_of_zero_or_more(flag: str, value: str) -> None:
    result = render_text("values.yaml", "social", flag, f"redis.waitReplicas={value}")
    assert result.returncode != 0
    assert "redis.waitReplicas must be a whole number of 0 or more" in result.stderr


def test_database_and_object_store_settings_only_where_the_roster_says(
    renders: dict[tuple[str, str], Manifest], fleet: Fleet
) -> None:
    s3 = {"S3_REGION", "S3_BUCKET", "MEDIA_PUBLIC_BASE_URL"}
    for label, manifest in all_renders(renders):
        for name, service in fleet.services.items():
            env = env_of(manifest.get("Deployment", name))
            assert ("DATABASE_URL" in env) == service.database, f"{label}: {name}"
            assert ("DB_POOL_MAX" in env) == service.database, f"{label}: {name}"
            if service.database:
                assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
                    "name": "social-database",
                    "key": f"{name}-url",
                }
            assert (s3 <= set(env)) == service.objects, f"{label}: {name}"
            if not service.objects:
                assert not {k for k in env if k.startswith("S3_")}, f"{label}: {name}"


def test_s3_keys_come_from_a_secret_when_one_is_given(fleet: Fleet) -> None:
    manifest = render("values.yaml", "social", "--set", "objects.existingSecret=social-s3")
    for name, service in fleet.services.items():
        env = env_of(manifest.get("Deployment", name))
        if service.objects:
            ref = env["S3_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "social-s3", "key": "secret-access-key"}
        else:
            assert "S3_SECRET_ACCESS_KEY" not in env


def test_only_migration_jobs_get_the_admin_url_and_only_when_given(fleet: Fleet) -> None:
    assert not any("DATABASE_ADMIN_URL" in env_of(owner) for owner in render().pod_owners())
    manifest = render("values.yaml", "social", "--set", "database.adminSecret.name=social-admin")
    for name, service in fleet.services.items():
        assert "DATABASE_ADMIN_URL" not in env_of(manifest.get("Deployment", name))
        if service.database:
            env = env_of(manifest.get("Job", f"{name}-migrate"))
            ref = env["DATABASE_ADMIN_URL"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "social-admin", "key": "admin-url"}


@pytest.mark.parametrize("key", sorted(REQUIRED))
def test_an_install_must_name_the_bucket_and_where_images_are_served(key: str) -> None:
    others = ",".join(f"{k}={v}" for k, v in REQUIRED.items() if k != key)
    result = helm("template", RELEASE, str(CHART), "--namespace", "social", "--set", others)
    assert result.returncode != 0
    assert f"{key} is required" in result.stderr


def test_secrets_are_never_inline(renders: dict[tuple[str, str], Manifest]) -> None:
    secret = {
        "DATABASE_URL",
        "DATABASE_ADMIN_URL",
        "REDIS_URL",
        "S3_ACCESS_KEY_ID",
        "S3_SECRET_ACCESS_KEY",
    }
    for label, manifest in all_renders(renders):
        for owner in manifest.pod_owners():
            for name, entry in env_of(owner).items():
                if name in secret:
                    assert "value" not in entry, label
                    assert "secretKeyRef" in entry["valueFrom"], label
    # Nor in a values file: no URL with a password in any value.
    credentials = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
    for values in VALUES_FILES:
        assert not [
            s
            for s in strings(yaml.safe_load((CHART / values).read_text()))
            if credentials.search(s)
        ]


def strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def test_extra_env_overrides_and_adds() -> None:
    manifest = render(
        "values.yaml", "social", "--set", "posts.env.LOG_LEVEL=debug", "--set", "posts.env.X=1"
    )
    env = env_of(manifest.get("Deployment", "posts"))
    assert env["LOG_LEVEL"]["value"] == "debug"
    assert env["X"]["value"] == "1"
    names = [entry["name"] for entry in container(manifest.get("Deployment", "posts"))["env"]]
    assert len(names) == len(set(names))


# --- network policies ------------------------------------------------------------


def test_namespace_denies_by_default(renders: dict[tuple[str, str], Manifest]) -> None:
    for label, manifest in all_renders(renders):
        deny = manifest.get("NetworkPolicy", "default-deny")["spec"]
        assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, label


def test_grpc_ingress_is_exactly_the_roster_callers(
    renders: dict[tuple[str, str], Manifest], fleet: Fleet
) -> None:
    grpc = fleet.pod_ports.grpc
    for label, manifest in all_renders(renders):
        for name in fleet.names:
            callers = {other for other, s in fleet.services.items() if name in s.peers}
            policy = manifest.get("NetworkPolicy", name)
            assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
            assert grpc_ingress_sources(policy, grpc) == callers, f"{label}: {name}"


def test_grpc_egress_is_exactly_the_roster_peers(
    renders: dict[tuple[str, str], Manifest], fleet: Fleet
) -> None:
    grpc = fleet.pod_ports.grpc
    for label, manifest in all_renders(renders):
        for name, service in fleet.services.items():
            rules = egress_rules_on(manifest.get("NetworkPolicy", name), grpc)
            peers = {selector_name(peer) for rule in rules for peer in rule["to"]}
            assert peers == set(service.peers), f"{label}: {name}"


def test_http_port_is_open_to_the_gateway_only(default: Manifest, fleet: Fleet) -> None:
    for name in fleet.names:
        ingress = default.get("NetworkPolicy", name)["spec"]["ingress"]
        http_rules = [r for r in ingress if r["ports"] == [{"port": 8080, "protocol": "TCP"}]]
        assert len(http_rules) == 1
        assert [selector_name(p) for p in http_rules[0]["from"]] == ["gateway"]
        assert {p["port"] for r in ingress for p in r["ports"]} <= {
            fleet.pod_ports.http,
            fleet.pod_ports.grpc,
        }


def test_monitoring_may_scrape_when_enabled(
    renders: dict[tuple[str, str], Manifest], fleet: Fleet
) -> None:
    manifest = renders[("values-production.yaml", "social")]
    for name in fleet.names:
        sources = [
            peer
            for rule in manifest.get("NetworkPolicy", name)["spec"]["ingress"]
            for peer in rule["from"]
        ]
        assert any("namespaceSelector" in peer for peer in sources), name
    gateway = manifest.get("NetworkPolicy", "gateway")["spec"]["ingress"]
    assert any(r["ports"] == [{"port": GATEWAY.ops, "protocol": "TCP"}] for r in gateway)


def test_backing_services_egress_only_where_the_roster_says(
    default: Manifest, fleet: Fleet
) -> None:
    for name, service in fleet.services.items():
        policy = default.get("NetworkPolicy", name)
        assert bool(egress_rules_on(policy, 5432)) == service.database, name
        assert bool(egress_rules_on(policy, 443)) == service.objects, name
        assert egress_rules_on(policy, 6379), name
        assert egress_rules_on(policy, 6378), name
        dns = egress_rules_on(policy, 53)
        assert {p["protocol"] for p in dns[0]["ports"]} == {"UDP", "TCP"}


def test_redis_egress_reaches_every_node_of_a_memorystore_cluster(
    default: Manifest, fleet: Fleet
) -> None:
    # A cluster client connects to every node the cluster names: Memorystore
    # for Redis Cluster's answer on 11000-13047 besides its discovery
    # endpoint's 6379, a range in one entry (endPort).
    for name in fleet.names:
        (rule,) = egress_rules_on(default.get("NetworkPolicy", name), 6379)
        assert {"port": 11000, "endPort": 13047, "protocol": "TCP"} in rule["ports"], name
        assert {"port": 6378, "protocol": "TCP"} in rule["ports"], name


def test_gateway_network_policy(default: Manifest, fleet: Fleet) -> None:
    policy = default.get("NetworkPolicy", "gateway")
    spec = policy["spec"]
    assert spec["ingress"] == [{"ports": [{"port": GATEWAY.public, "protocol": "TCP"}]}]  # anyone
    upstreams = egress_peers_on(policy, fleet.pod_ports.http)
    assert set(upstreams) == {*fleet.names, "web"}
    for name in fleet.names:
        assert upstreams[name]["matchLabels"]["app.kubernetes.io/component"] == "server"
    # The web client's pods, by their Deployment's own selector.
    web = default.get("Deployment", "web")["spec"]["selector"]
    assert upstreams["web"] == {"matchLabels": web["matchLabels"]}
    assert egress_rules_on(policy, 53)


def test_web_network_policy_admits_the_gateway_alone_and_lets_nothing_out(
    renders: dict[tuple[str, str], Manifest], fleet: Fleet
) -> None:
    for label, manifest in all_renders(renders):
        spec = manifest.get("NetworkPolicy", "web")["spec"]
        gateway = manifest.get("Deployment", "gateway")["spec"]["selector"]
        assert spec["podSelector"] == manifest.get("Deployment", "web")["spec"]["selector"]
        assert spec["policyTypes"] == ["Ingress", "Egress"], label
        assert spec["ingress"] == [
            {
                "from": [{"podSelector": gateway}],
                "ports": [{"port": fleet.pod_ports.http, "protocol": "TCP"}],
            }
        ], label
        assert spec["egress"] == [], label  # it calls nothing, not even DNS


def test_migration_jobs_are_hooks_with_their_own_account_and_policy(
    default: Manifest, fleet: Fleet
) -> None:
    for name in fleet.database_services:
        job = default.get("Job", f"{name}-migrate")
        annotations = job["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        assert container(job)["args"] == ["migrate"]
        deployment = default.get("Deployment", name)
        assert container(job)["image"] == container(deployment)["image"]
        assert env_of(job)["DATABASE_URL"] == env_of(deployment)["DATABASE_URL"]
        # What `migrate` reads, and no credential only serving needs.
        assert set(env_of(job)) == {"APP_ENV", "LOG_LEVEL", "DATABASE_URL"}
        assert pod_spec(job)["restartPolicy"] == "Never"
        for key in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
            assert job["spec"][key] > 0
        # Its pods are no server pods: never behind the Services, the HPA, the PDB.
        labels = job["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert not selector.items() <= labels.items()
        # What it needs exists before it, as hooks (nothing else does on a first install).
        weight = int(annotations["helm.sh/hook-weight"])
        account = default.get("ServiceAccount", pod_spec(job)["serviceAccountName"])
        policy = default.get("NetworkPolicy", f"{name}-migrate")
        for hook in (account, policy):
            assert "pre-install" in hook["metadata"]["annotations"]["helm.sh/hook"]
            assert int(hook["metadata"]["annotations"]["helm.sh/hook-weight"]) < weight
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        assert egress_rules_on(policy, 5432)
        assert egress_rules_on(policy, 53)
        assert "ingress" not in policy["spec"]


# --- the gateway -------------------------------------------------------------------


def test_gateway_objects(default: Manifest) -> None:
    service = default.get("Service", "gateway")["spec"]
    assert service["type"] == "LoadBalancer"
    assert service["externalTrafficPolicy"] == "Local"
    assert service["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}
    ]
    ops = default.get("Service", "gateway-ops")["spec"]
    assert [p["port"] for p in ops["ports"]] == [GATEWAY.ops]
    deployment = default.get("Deployment", "gateway")
    c = container(deployment)
    assert c["args"][:3] == ["-c", "/etc/envoy/envoy.yaml", "--disable-hot-restart"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "http": GATEWAY.public,
        "ops": GATEWAY.ops,
    }
    assert {"/etc/envoy", "/tmp"} <= {m["mountPath"] for m in c["volumeMounts"]}
    assert default.get("HorizontalPodAutoscaler", "gateway")
    assert default.get("PodDisruptionBudget", "gateway")


def test_gateway_config_map_holds_the_rendered_config(
    renders: dict[tuple[str, str], Manifest], fleet: Fleet
) -> None:
    openapi = yaml.safe_load((REPO_ROOT / "gateway" / "openapi.yaml").read_text())
    for (_, namespace), manifest in renders.items():
        data = manifest.get("ConfigMap", "gateway")["data"]
        assert json.loads(data["openapi.json"]) == openapi
        assert "{{" not in data["envoy.yaml"]
        # The bench's ceiling (Envoy answering alone) is the local stack's only.
        assert "/__bench/" not in data["envoy.yaml"]
        envoy = yaml.safe_load(data["envoy.yaml"])
        addresses = {
            cluster["name"]: cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
                "endpoint"
            ]["address"]["socket_address"]
            for cluster in envoy["static_resources"]["clusters"]
            if cluster["name"] in {*fleet.names, "web"}
        }
        # Every upstream, the web client too, at its headless Service's name and port.
        assert addresses == {
            name: {
                "address": f"{name}-headless.{namespace}.svc.cluster.local",
                "port_value": fleet.pod_ports.http,
            }
            for name in [*fleet.names, "web"]
        }
        for name in addresses:
            ports = manifest.get("Service", f"{name}-headless")["spec"]["ports"]
            assert {p["name"]: p["port"] for p in ports}["http"] == fleet.pod_ports.http, name
        listeners = {
            listener["name"]: listener["address"]["socket_address"]["port_value"]
            for listener in envoy["static_resources"]["listeners"]
        }
        assert listeners["ops"] == GATEWAY.ops
        assert GATEWAY.public in listeners.values()


def test_gateway_config_passes_envoy_validate(default: Manifest, tmp_path: Path) -> None:
    assert_envoy_accepts(default.get("ConfigMap", "gateway")["data"], tmp_path)


def assert_envoy_accepts(data: dict[str, str], tmp_path: Path) -> None:
    """Envoy's own check of a gateway ConfigMap's config."""
    openapi = tmp_path / "openapi.json"
    openapi.write_text(data["openapi.json"])
    assert "/etc/envoy/openapi.json" in data["envoy.yaml"]
    config = tmp_path / "envoy.yaml"
    config.write_text(data["envoy.yaml"].replace("/etc/envoy/openapi.json", str(openapi)))
    result = subprocess.run(
        [binary("envoy"), "--mode", "validate", "-c", str(config), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_gateway_pods_roll_when_its_config_changes(default: Manifest) -> None:
    def checksum(manifest: Manifest) -> str:
        annotations = manifest.get("Deployment", "gateway")["spec"]["template"]["metadata"]
        value: str = annotations["annotations"]["checksum/config"]
        return value

    changed = render("values.yaml", "social", "--set", "clusterDomain=cluster.example")
    assert checksum(changed) != checksum(default)
    config = changed.get("ConfigMap", "gateway")["data"]["envoy.yaml"]
    assert "posts-headless.social.svc.cluster.example" in config
    assert re.fullmatch(r"[0-9a-f]{64}", checksum(default))


# --- the web client --------------------------------------------------------------


def test_web_client_objects(renders: dict[tuple[str, str], Manifest], fleet: Fleet) -> None:
    for (values, namespace), manifest in renders.items():
        label = f"{values} in {namespace}"
        deployment = manifest.get("Deployment", "web")
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector["app.kubernetes.io/component"] == "web"
        for name in ("web", "web-headless"):
            service = manifest.get("Service", name)["spec"]
            assert service["type"] == "ClusterIP", label  # behind the gateway only
            assert service["selector"] == selector, label
            assert service["ports"] == [
                {
                    "name": "http",
                    "port": fleet.pod_ports.http,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ], label
        headless = manifest.get("Service", "web-headless")["spec"]
        assert (headless["clusterIP"], headless["publishNotReadyAddresses"]) == ("None", False)
        c = container(deployment)
        cfg = chart_values(values)["web"]
        assert c["image"].rpartition(":")[0] == "social-web", label
        assert c["args"] == [
            *("-c", "/etc/envoy/envoy.yaml", "--disable-hot-restart"),
            *("--concurrency", str(cfg["concurrency"])),
        ]
        # The bundle and its config are the image's: only /tmp is mounted.
        assert [m["mountPath"] for m in c["volumeMounts"]] == ["/tmp"]
        assert pod_spec(deployment)["serviceAccountName"] == "web"
        for kind in ("PodDisruptionBudget", "ServiceAccount", "NetworkPolicy"):
            assert (kind, "web") in manifest.by_key(), f"{label}: {kind}"
        has_hpa = ("HorizontalPodAutoscaler", "web") in manifest.by_key()
        assert has_hpa == cfg["autoscaling"]["enabled"], label


def test_a_disabled_web_client_renders_none_of_its_objects(default: Manifest) -> None:
    manifest = render("values.yaml", "social", "--set", "web.enabled=false")
    leftovers = [
        f"{o['kind']}/{o['metadata']['name']}"
        for o in manifest.objects
        if o["metadata"]["labels"].get("app.kubernetes.io/name") == "web"
    ]
    assert leftovers == []
    upstreams = egress_peers_on(manifest.get("NetworkPolicy", "gateway"), 8080)
    assert set(upstreams) == set(roster().names)
    removed = {
        key
        for key, obj in default.by_key().items()
        if obj["metadata"]["labels"].get("app.kubernetes.io/name") == "web"
    }
    assert changed_objects(default, manifest) == removed | {("NetworkPolicy", "gateway")}
    # The gateway still routes the pages to it: they answer 503 (as values.yaml says).
    assert "web-headless." in manifest.get("ConfigMap", "gateway")["data"]["envoy.yaml"]


def test_a_new_web_image_tag_changes_only_its_deployment(default: Manifest) -> None:
    upgraded = render("values.yaml", "social", "--set", "web.image.tag=X")
    assert changed_objects(default, upgraded) == {("Deployment", "web")}
    assert container(upgraded.get("Deployment", "web"))["image"] == "social-web:X"


# --- upgrades and switches -----------------------------------------------------------


def test_a_new_image_tag_changes_only_that_services_workloads(default: Manifest) -> None:
    upgraded = render("values.yaml", "social", "--set", "posts.image.tag=X")
    assert changed_objects(default, upgraded) == {("Deployment", "posts"), ("Job", "posts-migrate")}
    assert container(upgraded.get("Deployment", "posts"))["image"].endswith("social-posts:X")


def test_an_env_change_rolls_only_that_service(default: Manifest) -> None:
    changed = render("values.yaml", "social", "--set", "realtime.env.REALTIME_RETENTION=500")
    assert changed_objects(default, changed) == {("Deployment", "realtime")}


def test_registry_and_release_tag_apply_to_every_image_but_a_services_own_tag_wins() -> None:
    manifest = render(
        "values.yaml",
        "social",
        *("--set", "global.image.registry=ghcr.io/acme", "--set", "global.image.tag=r7"),
        *("--set", "posts.image.tag=p8"),
    )
    for owner in manifest.pod_owners():
        image = container(owner)["image"]
        assert image.startswith("ghcr.io/acme/social-")
        tag = "p8" if image.startswith("ghcr.io/acme/social-posts:") else "r7"
        assert image.endswith(f":{tag}"), image


@pytest.mark.parametrize("service", roster().names)
def test_a_disabled_service_renders_none_of_its_objects(service: str, default: Manifest) -> None:
    manifest = render("values.yaml", "social", "--set", f"{service}.enabled=false")
    leftovers = [
        f"{o['kind']}/{o['metadata']['name']}"
        for o in manifest.objects
        if o["metadata"]["labels"].get("app.kubernetes.io/name") == service
        or o["metadata"]["name"] in (service, f"{service}-headless", f"{service}-migrate")
    ]
    assert leftovers == []
    upstreams = egress_peers_on(manifest.get("NetworkPolicy", "gateway"), 8080)
    assert set(upstreams) == {*roster().names, "web"} - {service}
    # Nothing else changes: the others keep their peers (the roster's) as they were.
    removed = {
        key
        for key, obj in default.by_key().items()
        if obj["metadata"]["labels"].get("app.kubernetes.io/name") == service
    }
    assert changed_objects(default, manifest) == removed | {("NetworkPolicy", "gateway")}


def test_a_name_yaml_1_1_reads_as_a_boolean_fails_the_render(tmp_path: Path) -> None:
    """Helm reads YAML 1.1: an unquoted `on` or `yes` would be served as true."""
    openapi = "openapi: 3.1.0\ncomponents:\n  schemas:\n    A: {required: [yes]}\n"
    result = edited_chart(tmp_path, "files/openapi.yaml", openapi)
    assert result.returncode != 0
    assert "reads as a boolean" in result.stderr


def test_templates_name_no_service(fleet: Fleet) -> None:
    """Only the roster lists the services; the templates range over it."""
    for template in (CHART / "templates").iterdir():
        text = template.read_text()
        named = [name for name in fleet.names if re.search(rf"\b{name}\b", text)]
        assert named == [], f"{template.name} names {named}"


def test_a_service_added_to_the_roster_gets_its_objects(tmp_path: Path, fleet: Fleet) -> None:
    raw = yaml.safe_load((CHART / "fleet.yaml").read_text())
    raw["services"]["search"] = {
        "ports": {"http": 8199, "grpc": 9199},
        "database": True,
        "peers": ["auth"],
        "replicas": {"min": 2, "max": 7},
    }
    manifest = manifest_of(edited_chart(tmp_path, "fleet.yaml", yaml.safe_dump(raw)))
    keys = manifest.by_key()
    for key in [
        ("Deployment", "search"),
        ("Service", "search-headless"),
        ("NetworkPolicy", "search"),
        ("Job", "search-migrate"),
    ]:
        assert key in keys, key
    hpa = manifest.get("HorizontalPodAutoscaler", "search")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 7)
    assert "AUTH_GRPC_ADDR" in env_of(manifest.get("Deployment", "search"))
    callers = grpc_ingress_sources(manifest.get("NetworkPolicy", "auth"), fleet.pod_ports.grpc)
    assert "search" in callers


def test_a_new_chart_version_rolls_no_pod(tmp_path: Path, default: Manifest) -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    meta["version"] = f"{meta['version']}-next"
    bumped = manifest_of(edited_chart(tmp_path, "Chart.yaml", yaml.safe_dump(meta))).by_key()
    for owner in default.pod_owners():
        key = (owner["kind"], owner["metadata"]["name"])
        assert bumped[key]["spec"]["template"] == owner["spec"]["template"], key


def test_more_autoscaling_metrics_join_cpu() -> None:
    pods_metric = {
        "type": "Pods",
        "pods": {
            "metric": {"name": "realtime_connections"},
            "target": {"type": "AverageValue", "averageValue": "6000"},
        },
    }
    manifest = render(
        "values-production.yaml",
        "social",
        "--set-json",
        f"realtime.autoscaling.metrics={json.dumps([pods_metric])}",
    )
    metrics = manifest.get("HorizontalPodAutoscaler", "realtime")["spec"]["metrics"]
    assert [m["type"] for m in metrics] == ["Resource", "Pods"]
    assert metrics[1] == pods_metric
    posts = manifest.get("HorizontalPodAutoscaler", "posts")["spec"]["metrics"]
    assert [m["resource"]["name"] for m in posts] == ["cpu"]


# --- monitoring (kube-prometheus-stack objects, off by default) ----------------

OBSERVABILITY = REPO_ROOT / "deploy" / "observability"
MONITORING_ON = tuple(
    arg
    for part in ("podMonitors", "prometheusRules", "dashboards")
    for arg in ("--set", f"monitoring.{part}.enabled=true")
)
MONITORING_KINDS = {"PodMonitor", "PrometheusRule"}


@pytest.fixture(scope="module")
def monitored() -> Manifest:
    return render("values.yaml", "social", *MONITORING_ON)


def test_monitoring_objects_are_off_by_default(renders: dict[tuple[str, str], Manifest]) -> None:
    for label, manifest in all_renders(renders):
        assert not MONITORING_KINDS & {o["kind"] for o in manifest.objects}, label
        assert not [n for n in manifest.names("ConfigMap") if "dashboard" in n], label


def test_pod_monitors_scrape_every_server_pod_and_the_gateway_as_the_rules_expect(
    monitored: Manifest, fleet: Fleet
) -> None:
    monitors = {o["metadata"]["name"]: o["spec"] for o in monitored.of_kind("PodMonitor")}
    assert set(monitors) == {"social-services", "social-gateway"}
    for owner in monitored.of_kind("Deployment"):
        labels = owner["spec"]["template"]["metadata"]["labels"]
        chosen = [
            spec
            for spec in monitors.values()
            if spec["selector"]["matchLabels"].items() <= labels.items()
        ]
        name = owner["metadata"]["name"]
        if name == "web":
            assert chosen == [], "the web server has no metrics of its own"
            continue
        (spec,) = chosen
        (endpoint,) = spec["podMetricsEndpoints"]
        ports = {p["name"] for p in container(owner)["ports"]}
        assert endpoint["port"] in ports, name
        if name == "gateway":
            assert endpoint["path"] == "/stats/prometheus"
            assert {"targetLabel": "job", "replacement": "gateway"} in endpoint["relabelings"]
        else:
            assert name in fleet.services
            assert (endpoint["path"], spec["jobLabel"]) == ("/metrics", "app.kubernetes.io/name")


def test_prometheus_rules_are_the_rules_files_and_promtool_accepts_them(
    monitored: Manifest, promtool: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    sources = sorted((OBSERVABILITY / "prometheus" / "rules").glob("*.yml"))
    rules = {o["metadata"]["name"]: o["spec"] for o in monitored.of_kind("PrometheusRule")}
    assert set(rules) == {f"social-{p.stem}" for p in sources}
    for source in sources:
        spec = rules[f"social-{source.stem}"]
        assert spec == {"groups": yaml.safe_load(source.read_text())["groups"]}, source.name
        rendered = tmp_path / source.name
        rendered.write_text(yaml.safe_dump(spec))
        checked = promtool("check", "rules", rendered)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dashboards_are_config_maps_for_grafanas_sidecar(monitored: Manifest) -> None:
    sources = sorted((OBSERVABILITY / "dashboards").glob("*.json"))
    maps = [o for o in monitored.of_kind("ConfigMap") if "dashboard" in o["metadata"]["name"]]
    assert len(maps) == len(sources)
    ordered = sorted(maps, key=lambda o: o["metadata"]["name"])
    for source, config_map in zip(sources, ordered, strict=True):
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(config_map["data"][source.name]) == json.loads(source.read_text())
        kubernetes_validate.validate(config_map, KUBERNETES_VERSION, strict=True)


# --- tracing ------------------------------------------------------------------

TRACING_ON = ("--set", "tracing.enabled=true")
OTEL_VARIABLES = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.monitoring.svc:4318",
    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    "OTEL_TRACES_SAMPLER_ARG": "0.01",
}


def test_tracing_is_off_by_default(renders: dict[tuple[str, str], Manifest]) -> None:
    for label, manifest in all_renders(renders):
        for owner in manifest.pod_owners():
            assert not {n for n in env_of(owner) if n.startswith("OTEL_")}, label
        envoy = yaml.safe_load(manifest.get("ConfigMap", "gateway")["data"]["envoy.yaml"])
        clusters = {c["name"] for c in envoy["static_resources"]["clusters"]}
        assert "otlp" not in clusters, label
        assert "tracing" not in json.dumps(envoy), label


def test_tracing_is_on_with_one_value_for_the_gateway_and_every_service(
    fleet: Fleet, tmp_path: Path
) -> None:
    traced = render("values.yaml", "social", *TRACING_ON)
    for name in fleet.names:
        env = env_of(traced.get("Deployment", name))
        assert {k: env[k].get("value") for k in OTEL_VARIABLES} == OTEL_VARIABLES, name
    data = traced.get("ConfigMap", "gateway")["data"]
    envoy = yaml.safe_load(data["envoy.yaml"])
    (manager,) = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    tracing = manager["typed_config"]["tracing"]
    # The gateway starts a trace for the sampled share; the services follow it.
    assert tracing["random_sampling"] == {"value": 1}
    provider = tracing["provider"]["typed_config"]
    assert provider["service_name"] == "gateway"
    assert provider["http_service"]["http_uri"]["uri"] == (
        OTEL_VARIABLES["OTEL_EXPORTER_OTLP_ENDPOINT"] + "/v1/traces"
    )
    (otlp,) = [c for c in envoy["static_resources"]["clusters"] if c["name"] == "otlp"]
    address = otlp["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {
        "address": "otel-collector.monitoring.svc",
        "port_value": 4318,
    }
    assert_envoy_accepts(data, tmp_path)
    for obj in traced.objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_tracing_lets_the_gateway_and_the_services_reach_the_collector(
    default: Manifest, fleet: Fleet
) -> None:
    def collector_egress(manifest: Manifest, policy: str) -> list[Obj]:
        return [
            rule
            for rule in manifest.get("NetworkPolicy", policy)["spec"]["egress"]
            if rule.get("ports") == [{"port": 4318, "protocol": "TCP"}]
        ]

    policies = ["gateway", *fleet.names]
    assert all(collector_egress(default, name) == [] for name in policies)
    traced = render("values.yaml", "social", *TRACING_ON)
    for name in policies:
        (rule,) = collector_egress(traced, name)
        (peer,) = rule["to"]
        assert peer["podSelector"]["matchLabels"] == {
            "app.kubernetes.io/name": "opentelemetry-collector"
        }, name
