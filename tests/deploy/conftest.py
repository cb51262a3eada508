"""What the deploy checks share: trivy's misconfiguration scanner, offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.chart import TrivyConfig


@pytest.fixture(scope="session")
def trivy_config(tmp_path_factory: pytest.TempPathFactory) -> TrivyConfig:
    """``trivy config`` on a file or a directory, with more flags if given:
    its JSON report. Offline: the checks built into the binary, no update or
    version lookups, no telemetry, a cache of its own; every check it ran is
    in the report, passed or not."""
    trivy = Path(sys.executable).parent / "trivy"
    cache = tmp_path_factory.mktemp("trivy-cache")

    def run(target: Path, *extra: str) -> dict[str, Any]:
        result = subprocess.run(
            [
                str(trivy),
                "config",
                *("--skip-check-update", "--skip-version-check", "--disable-telemetry"),
                *("--cache-dir", str(cache), "--quiet", "--format", "json"),
                "--include-non-failures",
                *extra,
                str(target),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            # Targets in the report are relative to a scanned directory.
            cwd=target if target.is_dir() else target.parent,
        )
        assert result.returncode == 0, result.stderr
        report: dict[str, Any] = json.loads(result.stdout)
        return report

    return run
