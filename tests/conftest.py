"""What the cross-service checks share: the Prometheus and Alertmanager tools
(the rules in tests/observability, the chart's PrometheusRules in tests/deploy)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

# Runs a tool with arguments: its completed process (never raises on exit code).
Tool = Callable[..., subprocess.CompletedProcess[str]]


def _tool(name: str, package: str) -> Tool:
    path = shutil.which(name)
    if path is None:
        # A failure, not a skip: `make test` installs it, and a file no tool
        # read is not checked.
        pytest.fail(
            f"{name} is missing (Debian package {package}): `make observability-tools` installs it"
        )

    def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [path, *map(str, args)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            cwd=cwd,
        )

    return run


@pytest.fixture(scope="session")
def promtool() -> Tool:
    """``promtool`` (Debian's ``prometheus``)."""
    return _tool("promtool", "prometheus")


@pytest.fixture(scope="session")
def amtool() -> Tool:
    """``amtool`` (Debian's ``prometheus-alertmanager``)."""
    return _tool("amtool", "prometheus-alertmanager")
