"""The Terraform of one environment on Google Cloud (deploy/terraform).

Every file parses (python-hcl2); `terraform fmt` accepts it; checkov and
trivy leave no failed check (each skip is a commented
``#checkov:skip=...:reason`` or ``#trivy:ignore`` in the .tf). The parsed HCL
is then checked for what matters (HA Cloud SQL with private IP only, deletion
protection, Workload Identity, a private bucket; exactly one Redis, an
instance or a cluster, whose URL the secret holds) and for the arithmetic: the
node pool holds 50 pods of everything at the production requests, and
max_connections covers the services' pools, both recomputed from the chart's
values files and the fleet's roster. `terraform validate` needs the providers,
which cannot be downloaded here: it is tried and skipped with the reason.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import hcl2
import pytest
import yaml
from social_stack.chart import CHART, chart_values
from social_stack.paths import REPO_ROOT

from tests.deploy.chart import TrivyConfig, failures

TERRAFORM_DIR = REPO_ROOT / "deploy" / "terraform"
TERRAFORM = shutil.which("terraform")
CHECKOV = REPO_ROOT / ".tools" / "checkov" / "bin" / "checkov"
FLEET_PATH = "libs/common/src/social_common/fleet.yaml"
FLEET = yaml.safe_load((REPO_ROOT / FLEET_PATH).read_text())

# Pods of every service (and of the gateway and web) the node pool must hold.
PODS = 50
# Capacity above the sum of requests: pods do not pack perfectly.
NODE_HEADROOM = 1.15
CONNECTION_HEADROOM = 1.2
# Machines the node pool may use: vCPUs and GiB.
MACHINES = {"n2-standard-8": (8, 32), "n2-standard-16": (16, 64), "n2-standard-32": (32, 128)}

Obj = dict[str, Any]


def unquote(value: Any) -> Any:
    """python-hcl2 8 keeps the quotes of string literals and block labels."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, list):
        return [unquote(item) for item in value]
    return value


def load(path: Path) -> Obj:
    with path.open() as f:
        parsed: Obj = hcl2.load(f)
    return parsed


@pytest.fixture(scope="module")
def tf() -> dict[str, Obj]:
    files = sorted(TERRAFORM_DIR.glob("*.tf"))
    assert files, "no .tf in deploy/terraform"
    return {f.name: load(f) for f in files}


def blocks(tf: dict[str, Obj], kind: str) -> list[Obj]:
    return [block for parsed in tf.values() for block in parsed.get(kind, [])]


def resources(tf: dict[str, Obj], rtype: str) -> dict[str, Obj]:
    found: dict[str, Obj] = {}
    for block in blocks(tf, "resource"):
        for typ, named in block.items():
            if unquote(typ) == rtype:
                found.update({unquote(name): body for name, body in named.items()})
    return found


def resource(tf: dict[str, Obj], rtype: str, name: str) -> Obj:
    return resources(tf, rtype)[name]


def locals_(tf: dict[str, Obj]) -> Obj:
    merged: Obj = {}
    for block in blocks(tf, "locals"):
        merged.update({k: unquote(v) for k, v in block.items() if k != "__is_block__"})
    return merged


def tfvars(name: str) -> Obj:
    return {k: unquote(v) for k, v in load(TERRAFORM_DIR / name).items()}


def variable(tf: dict[str, Obj], name: str) -> Obj:
    for block in blocks(tf, "variable"):
        if unquote(next(iter(block))) == name:
            body: Obj = next(iter(block.values()))
            return body
    raise KeyError(name)


def variable_default(tf: dict[str, Obj], name: str) -> Any:
    return unquote(variable(tf, name).get("default"))


def one(body: Obj, key: str) -> Obj:
    (only,) = body[key]
    return dict(only)


# --- the files ------------------------------------------------------------------


def test_every_file_parses(tf: dict[str, Obj]) -> None:
    expected = {"versions.tf", "variables.tf", "main.tf", "network.tf", "gke.tf"}
    expected |= {"database.tf", "redis.tf", "storage.tf", "registry.tf", "secrets.tf", "ci.tf"}
    assert expected | {"outputs.tf"} <= set(tf)
    for name in ("prod.tfvars", "staging.tfvars"):
        assert tfvars(name)["environment"] == name.split(".")[0]


def test_providers_pinned_and_backend_partial(tf: dict[str, Obj]) -> None:
    (terraform,) = tf["versions.tf"]["terraform"]
    assert terraform["required_version"]
    (providers,) = terraform["required_providers"]
    for name in ("google", "google-beta"):
        assert unquote(providers[name]["version"]).startswith("~> 6."), name
    (backend,) = terraform["backend"]
    assert list(map(unquote, backend)) == ["gcs"]
    # Partial: the bucket comes from `terraform init -backend-config`.
    assert "bucket" not in next(iter(backend.values()))


@pytest.mark.skipif(TERRAFORM is None, reason="no terraform binary on this machine")
def test_terraform_fmt() -> None:
    assert TERRAFORM is not None
    result = subprocess.run(
        [TERRAFORM, "fmt", "-check", "-recursive", "-diff"],
        cwd=TERRAFORM_DIR,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(TERRAFORM is None, reason="no terraform binary on this machine")
def test_terraform_validate(tmp_path: Path) -> None:
    """Needs the providers: init offline (no backend) and validate if it
    gets them, else skip with the reason."""
    assert TERRAFORM is not None
    work = tmp_path / "terraform"
    shutil.copytree(TERRAFORM_DIR, work, ignore=shutil.ignore_patterns(".terraform*"))
    init = subprocess.run(
        [TERRAFORM, "init", "-backend=false", "-input=false", "-no-color"],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if init.returncode != 0:
        pytest.skip(
            "terraform init -backend=false cannot install the providers offline "
            "(no registry access, no plugin cache): validate needs them"
        )
    result = subprocess.run(
        [TERRAFORM, "validate", "-no-color"],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not CHECKOV.exists(), reason="no checkov in .tools/checkov")
def test_checkov_no_failed_check() -> None:
    result = subprocess.run(
        [
            str(CHECKOV),
            "-d",
            str(TERRAFORM_DIR),
            "--framework",
            "terraform",
            # Offline: no fetch of Prisma Cloud's guidelines.
            "--skip-download",
            "--compact",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}"
        for r in reports
        for c in r["results"]["failed_checks"]
    ]
    assert not failed, failed
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports)
    # A resource with a count is scanned whatever var.redis_mode says (as its
    # first instance). checkov has no check of google_redis_cluster, nor trivy
    # one of either Redis: test_redis_cluster_is_ha_encrypted_and_private
    # holds the cluster to what they check of the instance.
    scanned = {c["resource"] for r in reports for c in r["results"]["passed_checks"]}
    assert "google_redis_instance.main[0]" in scanned
    # Every skip says why.
    for r in reports:
        skipped_checks = r["results"]["skipped_checks"]
        assert len(skipped_checks) >= 1
        for skipped in skipped_checks:
            reason = skipped["check_result"].get("suppress_comment", "")
            assert reason.strip(), skipped["check_id"]


def test_trivy_no_failed_check(trivy_config: TrivyConfig) -> None:
    report = trivy_config(TERRAFORM_DIR)
    assert not failures(report, {"LOW", "MEDIUM", "HIGH", "CRITICAL"})


def test_trivy_ignores_are_explained() -> None:
    for path in TERRAFORM_DIR.glob("*.tf"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip().startswith("#trivy:ignore"):
                assert lines[i - 1].strip().startswith("#"), f"{path.name}:{i + 1}"
            if "checkov:skip=" in line:
                assert re.search(r"checkov:skip=CKV2?_\w+:\S", line), f"{path.name}:{i + 1}"


def called_functions(node: Any) -> Iterator[str]:
    """The names called in the expressions of a parsed file."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "type":  # a variable's type constraint: map(string) is no call
                yield from called_functions(value)
    elif isinstance(node, list):
        for item in node:
            yield from called_functions(item)
    elif isinstance(node, str) and "${" in node:
        yield from re.findall(r"(?<![\w.])([a-z][a-z0-9_]*)\(", node)


@pytest.mark.skipif(TERRAFORM is None, reason="no terraform binary")
def test_every_function_is_terraforms(tf: dict[str, Obj]) -> None:
    # `terraform validate` cannot run offline; its function list can, and a
    # misspelt function (sorted for sort) fails every plan.
    result = subprocess.run(
        [str(TERRAFORM), "metadata", "functions", "-json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    known = set(json.loads(result.stdout)["function_signatures"])
    called = {name for parsed in tf.values() for name in called_functions(parsed)}
    assert {"yamldecode", "file", "sort", "jsonencode", "sum"} <= called
    assert called <= known, called - known


# --- what the resources say -----------------------------------------------------


def test_services_and_pools_are_read_from_the_roster_and_the_chart(tf: dict[str, Obj]) -> None:
    local = locals_(tf)
    roster_path, values_path = (
        re.search(r'file\("\$\{path.module\}/([^"]+)"\)', local[key]).group(1)  # type: ignore[union-attr]
        for key in ("roster", "production_values")
    )
    assert (TERRAFORM_DIR / roster_path).resolve() == REPO_ROOT / FLEET_PATH
    assert (TERRAFORM_DIR / values_path).resolve() == CHART / "values-production.yaml"
    assert "if service.database" in local["database_services"]
    pool = "${local.production_values.serviceDefaults.databasePool.max}"
    assert local["database_pool_max"] == pool


def test_cloud_sql_is_ha_private_and_protected(tf: dict[str, Obj]) -> None:
    db = resource(tf, "google_sql_database_instance", "main")
    assert unquote(db["database_version"]) == "POSTGRES_16"
    assert db["deletion_protection"] is True
    settings = one(db, "settings")
    assert unquote(settings["availability_type"]) == "REGIONAL"
    assert settings["deletion_protection_enabled"] is True
    ip = one(settings, "ip_configuration")
    assert ip["ipv4_enabled"] is False
    assert "google_compute_network.main" in ip["private_network"]
    assert unquote(ip["ssl_mode"]) in ("ENCRYPTED_ONLY", "TRUSTED_CLIENT_CERTIFICATE_REQUIRED")
    backups = one(settings, "backup_configuration")
    assert backups["enabled"] is True
    assert backups["point_in_time_recovery_enabled"] is True


def test_redis_is_ha_with_auth_and_tls(tf: dict[str, Obj]) -> None:
    redis = resource(tf, "google_redis_instance", "main")
    assert unquote(redis["tier"]) == "STANDARD_HA"
    assert redis["auth_enabled"] is True
    assert unquote(redis["transit_encryption_mode"]) == "SERVER_AUTHENTICATION"
    assert unquote(redis["connect_mode"]) == "PRIVATE_SERVICE_ACCESS"
    # The chart's NetworkPolicy lets Memorystore's TLS port out.
    assert 6378 in chart_values("values.yaml")["networkPolicy"]["redis"]["ports"]


REDIS_RESOURCES = ("google_redis_instance", "google_redis_cluster")
# A Memorystore for Redis Cluster's nodes: the discovery endpoint's port, and
# those of the nodes behind its Private Service Connect addresses (Google's
# "Troubleshoot issues" page of Memorystore for Redis Cluster).
CLUSTER_PORTS = [6379, *range(11000, 13048)]


def redis_modes(tf: dict[str, Obj]) -> list[str]:
    """The values var.redis_mode's validation admits."""
    (validation,) = variable(tf, "redis_mode")["validation"]
    found = re.fullmatch(
        r"\$\{contains\((\[[^\]]*\]), var\.redis_mode\)\}", validation["condition"]
    )
    assert found, validation["condition"]
    modes: list[str] = json.loads(found.group(1))
    return modes


def made_in_mode(body: Obj) -> str:
    """The var.redis_mode in which a resource exists: its count is 1 there, 0
    in every other."""
    found = re.fullmatch(r'\$\{var\.redis_mode == "(\w+)" \? 1 : 0\}', str(body.get("count")))
    assert found, body.get("count")
    return found.group(1)


def test_redis_mode_makes_exactly_one_redis(tf: dict[str, Obj]) -> None:
    modes = redis_modes(tf)
    assert sorted(modes) == ["cluster", "instance"]
    assert variable_default(tf, "redis_mode") == "instance"
    for name in ("prod.tfvars", "staging.tfvars"):
        assert tfvars(name).get("redis_mode", "instance") in modes, name
    # Each mode makes one of the two and only one: their counts are 1 in
    # different modes, and between them cover every mode.
    made = {rtype: made_in_mode(resource(tf, rtype, "main")) for rtype in REDIS_RESOURCES}
    assert sorted(made.values()) == sorted(modes), made
    # What only the cluster needs comes and goes with it.
    policy = resource(tf, "google_network_connectivity_service_connection_policy", "redis")
    assert made_in_mode(policy) == made["google_redis_cluster"]
    cluster = resource(tf, "google_redis_cluster", "main")
    assert "google_network_connectivity_service_connection_policy.redis" in str(
        cluster["depends_on"]
    )
    shards = variable(tf, "redis_shard_count")
    assert variable_default(tf, "redis_shard_count") == 3
    (validation,) = shards["validation"]
    assert "var.redis_shard_count >= 1" in validation["condition"]
    assert cluster["shard_count"] == "${var.redis_shard_count}"


def test_the_redis_secret_holds_the_url_of_the_redis_that_exists(tf: dict[str, Obj]) -> None:
    local = locals_(tf)
    # one() of the two resources' URLs (a for expression over each, empty
    # when its count is 0): the plan fails unless exactly one exists.
    assert local["redis_url"].startswith("${one(concat(")
    urls = dict(
        re.findall(r'\[for \w+ in (google_redis_\w+)\.main : "([^"]+)"\]', local["redis_url"])
    )
    assert set(urls) == set(REDIS_RESOURCES)
    # The query by hand: the interpolations' [0] would read as an IPv6 host.
    queries = {rtype: parse_qs(url.partition("?")[2]) for rtype, url in urls.items()}
    for rtype, url in urls.items():
        assert url.startswith("rediss://"), rtype
        assert queries[rtype]["ssl_check_hostname"] == ["false"], rtype
    # The services take a cluster from the URL alone.
    assert queries["google_redis_cluster"]["cluster"] == ["true"]
    assert "cluster" not in queries["google_redis_instance"]
    assert "discovery_endpoints[0].address" in urls["google_redis_cluster"]
    assert "@" not in urls["google_redis_cluster"]  # no password to give (redis.tf)
    assert "auth_string" in urls["google_redis_instance"]
    # The CA of each: the instance's server_ca_certs, the cluster's managed CA.
    assert local["redis_ca"].startswith("${one(concat(")
    assert "for redis in google_redis_instance.main : " in local["redis_ca"]
    assert "redis.server_ca_certs" in local["redis_ca"]
    assert "for redis in google_redis_cluster.main : " in local["redis_ca"]
    assert "redis.managed_server_ca[0].ca_certs" in local["redis_ca"]
    secret = local["secrets"][next(k for k in local["secrets"] if "redis" in k)]
    assert "url = local.redis_url" in re.sub(r"\s+", " ", secret)
    assert '"ca.crt" = local.redis_ca' in re.sub(r"\s+", " ", secret)
    # managed_server_ca came with google 6.40.
    (terraform,) = tf["versions.tf"]["terraform"]
    (providers,) = terraform["required_providers"]
    for name in ("google", "google-beta"):
        minor = int(unquote(providers[name]["version"]).removeprefix("~> 6."))
        assert minor >= 40, name


def test_redis_cluster_is_ha_encrypted_and_private(tf: dict[str, Obj]) -> None:
    cluster = resource(tf, "google_redis_cluster", "main")
    instance = resource(tf, "google_redis_instance", "main")
    # A replica of every primary in another zone, as the instance has.
    assert locals_(tf)["redis_replicas"] >= 1
    for body in (cluster, instance):
        assert body["replica_count"] == "${local.redis_replicas}"
    assert unquote(one(cluster, "zone_distribution_config")["mode"]) == "MULTI_ZONE"
    assert unquote(cluster["transit_encryption_mode"]) == (
        "TRANSIT_ENCRYPTION_MODE_SERVER_AUTHENTICATION"
    )
    # The other mode is IAM authentication, whose short-lived tokens the
    # fleet's client does not fetch (redis.tf says why none).
    assert unquote(cluster["authorization_mode"]) == "AUTH_MODE_DISABLED"
    assert cluster["deletion_protection_enabled"] is True
    assert unquote(one(cluster, "persistence_config")["mode"]) == "RDB"
    # Private Service Connect in the VPC, addresses from the nodes' subnet.
    assert "google_compute_network.main" in one(cluster, "psc_configs")["network"]
    policy = resource(tf, "google_network_connectivity_service_connection_policy", "redis")
    assert unquote(policy["service_class"]) == "gcp-memorystore-redis"
    assert "google_compute_network.main" in policy["network"]
    assert one(policy, "psc_config")["subnetworks"] == ["${google_compute_subnetwork.nodes.id}"]
    (apis,) = resources(tf, "google_project_service").values()
    assert "networkconnectivity.googleapis.com" in apis["for_each"]
    # The chart's NetworkPolicy lets the discovery endpoint and every node out.
    allowed = chart_values("values.yaml")["networkPolicy"]["redis"]["ports"]
    ranges = [
        range(p["port"], p["endPort"] + 1) if isinstance(p, dict) else range(p, p + 1)
        for p in allowed
    ]
    for port in CLUSTER_PORTS:
        assert any(port in r for r in ranges), port


def test_gke_private_regional_workload_identity(tf: dict[str, Obj]) -> None:
    cluster = resource(tf, "google_container_cluster", "main")
    assert cluster["location"] == "${var.region}"  # regional, not a zone
    assert cluster["deletion_protection"] is True
    private = one(cluster, "private_cluster_config")
    assert private["enable_private_nodes"] is True
    assert private["enable_private_endpoint"] is True
    assert "svc.id.goog" in one(cluster, "workload_identity_config")["workload_pool"]
    assert cluster["enable_shielded_nodes"] is True
    assert unquote(one(cluster, "release_channel")["channel"]) in ("REGULAR", "STABLE")
    # Dataplane V2 enforces the chart's NetworkPolicies.
    assert unquote(cluster["datapath_provider"]) == "ADVANCED_DATAPATH"
    ip = one(cluster, "ip_allocation_policy")
    subnet = resource(tf, "google_compute_subnetwork", "nodes")
    ranges = {unquote(r["range_name"]) for r in subnet["secondary_ip_range"]}
    assert {unquote(ip["cluster_secondary_range_name"])} | {
        unquote(ip["services_secondary_range_name"])
    } == ranges
    pool = resource(tf, "google_container_node_pool", "fleet")
    node = one(pool, "node_config")
    assert unquote(one(node, "workload_metadata_config")["mode"]) == "GKE_METADATA"
    shielded = one(node, "shielded_instance_config")
    assert shielded["enable_secure_boot"] is True
    assert shielded["enable_integrity_monitoring"] is True


def test_network_nat_and_private_service_access(tf: dict[str, Obj]) -> None:
    assert resources(tf, "google_compute_router_nat")
    psa = resource(tf, "google_service_networking_connection", "private_services")
    assert unquote(psa["service"]) == "servicenetworking.googleapis.com"
    for rtype in ("google_sql_database_instance", "google_redis_instance"):
        (body,) = resources(tf, rtype).values()
        assert "google_service_networking_connection.private_services" in str(body["depends_on"])


def test_bucket_is_not_public(tf: dict[str, Obj]) -> None:
    bucket = resource(tf, "google_storage_bucket", "media")
    assert bucket["uniform_bucket_level_access"] is True
    assert unquote(bucket["public_access_prevention"]) == "enforced"
    assert bucket["lifecycle_rule"]
    for rtype in ("google_storage_bucket_iam_member", "google_storage_bucket_iam_binding"):
        for body in resources(tf, rtype).values():
            members = str(body.get("member", "")) + str(body.get("members", ""))
            assert "allUsers" not in members
            assert "allAuthenticatedUsers" not in members
    hmac = resource(tf, "google_storage_hmac_key", "media")
    assert "google_service_account.media" in hmac["service_account_email"]


# --- the arithmetic -------------------------------------------------------------


def gke_allocatable(vcpus: int, gib: int) -> tuple[int, int]:
    """GKE's allocatable CPU (millicores) and memory (MiB) of a Standard node."""
    cpu_reserved = 0.0
    for start, end, share in ((0, 1, 0.06), (1, 2, 0.01), (2, 4, 0.005), (4, 10**6, 0.0025)):
        cpu_reserved += max(0, min(vcpus, end) - start) * 1000 * share
    mem = gib * 1024
    mem_reserved = 0.0
    tiers = ((0, 4, 0.25), (4, 8, 0.20), (8, 16, 0.10), (16, 128, 0.06), (128, 10**6, 0.02))
    for start, end, share in tiers:
        mem_reserved += max(0, min(gib, end) - start) * 1024 * share
    return vcpus * 1000 - math.ceil(cpu_reserved), int(mem - mem_reserved - 100)


def quantity_m(value: str | int | float) -> int:
    text = str(value)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def quantity_mib(value: str) -> int:
    units = {"Mi": 1, "Gi": 1024}
    return int(value[:-2]) * units[value[-2:]]


def test_node_pool_holds_50_pods_of_everything(tf: dict[str, Obj]) -> None:
    values = chart_values("values-production.yaml")
    sections = [values["gateway"], values["web"]]
    for service, facts in FLEET["services"].items():
        assert facts["replicas"]["max"] <= PODS, service
        requests = (
            values.get(service, {}).get("resources") or values["serviceDefaults"]["resources"]
        )
        sections.append({"resources": requests})
    cpu = PODS * sum(quantity_m(s["resources"]["requests"]["cpu"]) for s in sections)
    memory = PODS * sum(quantity_mib(s["resources"]["requests"]["memory"]) for s in sections)
    assert (cpu, memory) == (425_000, 126_400)  # as gke.tf's comment says

    local = locals_(tf)
    vcpus, gib = MACHINES[local["node_machine_type"]]
    node = resource(tf, "google_container_node_pool", "fleet")
    assert one(node, "node_config")["machine_type"] == "${local.node_machine_type}"
    assert (local["node_allocatable_cpu_millicores"], local["node_allocatable_memory_mib"]) == (
        gke_allocatable(vcpus, gib)
    )
    per_node_cpu = local["node_allocatable_cpu_millicores"] - local["node_system_cpu_millicores"]
    per_node_mem = local["node_allocatable_memory_mib"] - local["node_system_memory_mib"]
    # The largest pod fits a node.
    assert per_node_cpu >= 2000

    autoscaling = one(node, "autoscaling")
    assert autoscaling["total_max_node_count"] == "${var.node_pool_max_nodes}"
    max_nodes = tfvars("prod.tfvars").get("node_pool_max_nodes") or variable_default(
        tf, "node_pool_max_nodes"
    )
    assert variable_default(tf, "node_pool_max_nodes") == max_nodes
    assert max_nodes * per_node_cpu >= cpu * NODE_HEADROOM, (max_nodes, per_node_cpu, cpu)
    assert max_nodes * per_node_mem >= memory * NODE_HEADROOM, (max_nodes, per_node_mem, memory)


def test_max_connections_cover_the_pools(tf: dict[str, Obj]) -> None:
    values = chart_values("values-production.yaml")
    needed = 0
    for service, facts in FLEET["services"].items():
        if facts["database"]:
            pool = (
                values.get(service, {}).get("databasePool")
                or values["serviceDefaults"]["databasePool"]
            )
            needed += facts["replicas"]["max"] * pool["max"]
    assert needed == 1200  # 4 x 50 x 6, as database.tf's comment says

    # Terraform sums the same (the roster's maxima, the chart's pool) and
    # refuses a plan whose max_connections falls under 1.2 x that.
    local = locals_(tf)
    assert (
        "local.roster.services[name].replicas.max * local.database_pool_max"
        in (local["database_max_clients"])
    )
    db = resource(tf, "google_sql_database_instance", "main")
    (precondition,) = one(db, "lifecycle")["precondition"]
    assert precondition["condition"] == (
        "${local.database_max_connections >= 1.2 * local.database_max_clients}"
    )
    flags = {unquote(f["name"]): f["value"] for f in one(db, "settings")["database_flags"]}
    assert flags["max_connections"] == "${tostring(local.database_max_connections)}"
    max_connections = local["database_max_connections"]
    assert max_connections >= needed * CONNECTION_HEADROOM, (max_connections, needed)
    # The prod tier's memory holds them: ~10 MiB a backend in at most half of it.
    tier = tfvars("prod.tfvars")["database_tier"]
    memory_mib = int(tier.rsplit("-", 1)[1])
    assert max_connections * 10 <= memory_mib / 2, tier


# --- what the chart gets --------------------------------------------------------


def leaf_paths(node: Obj, prefix: str = "") -> Iterator[str]:
    for key, value in node.items():
        path = f"{prefix}{unquote(key)}"
        if isinstance(value, dict):
            yield from leaf_paths(value, f"{path}.")
        else:
            yield path


def test_helm_values_are_the_charts(tf: dict[str, Obj]) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    outputs: dict[str, Obj] = {}
    for block in blocks(tf, "output"):
        outputs.update({unquote(k): v for k, v in block.items()})
    paths = set(leaf_paths(outputs["helm_values"]["value"]))
    assert paths == {
        "global.image.registry",
        "database.existingSecret",
        "database.adminSecret.name",
        "database.adminSecret.key",
        "redis.existingSecret",
        "redis.caKey",
        "redis.waitReplicas",
        "objects.endpointUrl",
        "objects.region",
        "objects.bucket",
        "objects.publicBaseUrl",
        "objects.existingSecret",
    }
    for path in paths:
        node: Any = values
        for key in path.split("."):
            assert isinstance(node, dict), path
            assert key in node, path
            node = node[key]


def test_the_relay_waits_for_the_replica_every_primary_has(tf: dict[str, Obj]) -> None:
    outputs: dict[str, Obj] = {}
    for block in blocks(tf, "output"):
        outputs.update({unquote(k): v for k, v in block.items()})
    redis = outputs["helm_values"]["value"]["redis"]
    assert redis["waitReplicas"] == "${local.redis_replicas}"
    assert chart_values("values.yaml")["redis"]["waitReplicas"] == locals_(tf)["redis_replicas"]


def test_the_secrets_hold_the_keys_the_chart_reads(tf: dict[str, Obj]) -> None:
    values = chart_values("values.yaml")
    secrets = locals_(tf)["secrets"]
    keys = {
        name.split("-")[-1].rstrip('}"'): set(re.findall(r'[{,]\s*"?([\w.-]+)"?\s*=(?![=>])', body))
        for name, body in ((unquote(k), v) for k, v in secrets.items())
    }
    assert {values["redis"]["key"], "ca.crt"} <= keys["redis"]
    assert {values["objects"]["accessKeyIdKey"], values["objects"]["secretAccessKeyKey"]} <= (
        keys["objects"]
    )
    # One <service>-url per database service, made in a for expression, and
    # the administrator's URL for the migration Jobs alone.
    database = secrets[next(k for k in secrets if "database" in k)]
    assert '"${service}-url"' in database
    assert values["database"]["adminSecret"]["key"] in keys["database"]
    # The service roles are the migrations' (no cloudsqlsuperuser membership).
    assert list(resources(tf, "google_sql_user")) == ["admin"]


def test_ci_gets_short_lived_tokens_for_its_repository_and_environment(
    tf: dict[str, Obj],
) -> None:
    assert not resources(tf, "google_service_account_key")
    provider = resource(tf, "google_iam_workload_identity_pool_provider", "github")
    assert (
        unquote(one(provider, "oidc")["issuer_uri"])
        == "https://token.actions.githubusercontent.com"
    )
    condition = provider["attribute_condition"]
    assert (
        "assertion.sub == 'repo:${var.github_repository}:environment:${var.github_environment}'"
        in condition
    )
    assert "assertion.ref == 'refs/heads/main'" in condition
    binding = resource(tf, "google_service_account_iam_member", "release_workload_identity")
    assert unquote(binding["role"]) == "roles/iam.workloadIdentityUser"
    assert "attribute.repository/${var.github_repository}" in binding["member"]
    # In the project: find the cluster, no more (its namespace's RBAC does the rest).
    release = resource(tf, "google_project_iam_member", "release")
    assert unquote(release["role"]) == "roles/container.clusterViewer"
    # The deploy jobs reach the private cluster through its DNS endpoint.
    cluster = resource(tf, "google_container_cluster", "main")
    endpoints = one(cluster, "control_plane_endpoints_config")
    assert one(endpoints, "dns_endpoint_config")["allow_external_traffic"] is True
