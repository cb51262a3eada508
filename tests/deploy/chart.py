"""The chart tests' rendering and reading helpers (deploy/helm/social): `helm`
run on the chart, its renders read as objects, and the values and pod specs
read from them. A plain module: test_chart.py and test_log_shipping.py both
import from it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from social_stack.chart import CHART, Obj
from social_stack.paths import REPO_ROOT

HELM = REPO_ROOT / ".tools" / "bin" / "helm"
# The `trivy_config` fixture (conftest.py): trivy config on a path, its report.
TrivyConfig = Callable[..., dict[str, Any]]
VALUES_FILES = ("values.yaml", "values-production.yaml", "values-dev.yaml")
KUBERNETES_VERSION = "1.33"
RELEASE = "social"


# --- rendering ------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """The objects of one `helm template`."""

    objects: tuple[Obj, ...]

    def by_key(self) -> dict[tuple[str, str], Obj]:
        return {(o["kind"], o["metadata"]["name"]): o for o in self.objects}

    def get(self, kind: str, name: str) -> Obj:
        return self.by_key()[(kind, name)]

    def names(self, kind: str) -> set[str]:
        return {o["metadata"]["name"] for o in self.objects if o["kind"] == kind}

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def pod_owners(self) -> list[Obj]:
        return [o for o in self.objects if o["kind"] in ("Deployment", "Job")]


# What an install must say (the chart has no default for them).
REQUIRED = {"objects.bucket": "social-media", "objects.publicBaseUrl": "https://media.example.com"}
REQUIRED_SETS = ("--set", ",".join(f"{key}={value}" for key, value in REQUIRED.items()))


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, check=False, timeout=120
    )


def render_text(
    values: str = "values.yaml", namespace: str = "social", *extra: str
) -> subprocess.CompletedProcess[str]:
    return helm(
        "template",
        RELEASE,
        str(CHART),
        *("--namespace", namespace, "-f", str(CHART / values), *REQUIRED_SETS, *extra),
    )


def manifest_of(result: subprocess.CompletedProcess[str]) -> Manifest:
    assert result.returncode == 0, result.stderr
    docs = yaml.load_all(result.stdout, Loader=yaml.CSafeLoader)
    return Manifest(tuple(doc for doc in docs if doc))


def render(values: str = "values.yaml", namespace: str = "social", *extra: str) -> Manifest:
    return manifest_of(render_text(values, namespace, *extra))


def changed_objects(before: Manifest, after: Manifest) -> set[tuple[str, str]]:
    old, new = before.by_key(), after.by_key()
    return {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)}


# --- reading values, pod specs and trivy's reports ------------------------------


def pod_spec(owner: Obj) -> Obj:
    spec: Obj = owner["spec"]["template"]["spec"]
    return spec


def container(owner: Obj) -> Obj:
    (only,) = pod_spec(owner)["containers"]
    return dict(only)


def failures(report: Obj, severities: set[str]) -> list[str]:
    return [
        f"{result['Target']}: {m['ID']} ({m['Severity']}) {m['Message']}"
        for result in report.get("Results", [])
        for m in result.get("Misconfigurations", [])
        if m["Status"] == "FAIL" and m["Severity"] in severities
    ]
