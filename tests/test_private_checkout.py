"""As root, the stack runs PostgreSQL as nobody: from a checkout in a private
directory (as under /root, mode 700), nobody reaches neither the binaries in
its .venv nor the data in its run dir, and the stack must place them where
nobody can."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from social_stack import processes
from social_stack.local import (
    DATABASE,
    DEV_PG_ADMIN_PASSWORD,
    Ports,
    Stack,
    _ensure_database,
    with_credentials,
)
from social_stack.paths import postgres_install_dir
from social_stack.postgres import (
    CACHE_ROOT,
    STATE_ROOT,
    data_home,
    install_for,
    reachable,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="only a stack run as root runs PostgreSQL as another user (nobody)",
)

NOBODY = pwd.getpwnam("nobody").pw_uid


def _directory(mode: int) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="social-private-"))
    path.chmod(mode)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A directory only root may enter, as /root."""
    yield from _directory(0o700)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory anyone may enter, standing in for /var/cache or /var/lib."""
    yield from _directory(0o755)


def _installed_in(directory: Path) -> Path:
    """pgserver's pginstall as the wheel installs it (with the libraries its
    binaries load from beside the package), copied into ``directory``."""
    site = postgres_install_dir().parents[1]
    copy = directory / ".venv" / "site-packages"
    for tree in ("pgserver/pginstall", "pgserver.libs"):
        shutil.copytree(site / tree, copy / tree, symlinks=True)
    return copy / "pgserver" / "pginstall"


def test_postgres_starts_from_a_private_checkout(
    private_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pginstall = _installed_in(private_dir)
    run_dir = private_dir / "checkout" / ".run"
    run_dir.mkdir(parents=True)
    monkeypatch.chdir(run_dir.parent)  # as `make dev` runs
    assert not reachable(pginstall / "bin" / "initdb", NOBODY)
    stack = Stack(run_dir, Ports.free(), tie_to_parent=True, durable=False, external={})
    link = run_dir / "postgres"
    try:
        component = stack._postgres(pginstall)
        assert component is not None
        stack._launch([component], timeout=30)
        admin = stack.endpoints.database_admin_url
        # Waits out "the database system is starting up", as the stack does.
        _ensure_database(
            with_credentials(admin, "postgres", DEV_PG_ADMIN_PASSWORD, "postgres"), DATABASE
        )
        with psycopg.connect(admin) as connection:
            assert connection.execute("SELECT 1").fetchone() == (1,)

        assert Path(component.argv[0]).is_relative_to(CACHE_ROOT)
        # The run dir tells where its data lives: nobody's alone.
        data = link.readlink()
        assert data.is_relative_to(STATE_ROOT)
        assert (data.stat().st_uid, data.stat().st_mode & 0o777) == (NOBODY, 0o700)
    finally:
        stack.stop()
        if link.is_symlink() and link.readlink().is_relative_to(STATE_ROOT):
            shutil.rmtree(link.readlink().parent)


def test_binaries_are_copied_once_and_only_root_may_change_them(
    private_dir: Path, shared_dir: Path
) -> None:
    pginstall = _installed_in(private_dir)
    cache = shared_dir / "social-fleet"
    copy = install_for(pginstall, NOBODY, cache)
    entry = copy.parents[1]
    assert entry.parent == cache
    assert install_for(pginstall, NOBODY, cache) == copy
    assert [p.name for p in cache.iterdir()] == [entry.name]  # reused, nothing half-made
    for path in [cache, entry, *entry.rglob("*")]:
        st = path.lstat()
        assert st.st_uid == 0
        assert not st.st_mode & 0o022, path
    processes.run_once([str(copy / "bin" / "initdb"), "--version"], run_as_uid=NOBODY, what="a")

    private_dir.chmod(0o711)  # now nobody reaches it: used where it is
    assert install_for(pginstall, NOBODY, cache) == pginstall


def test_data_out_of_reach_lives_where_the_run_dir_links_to(
    private_dir: Path, shared_dir: Path
) -> None:
    run_dir = private_dir / ".run"
    run_dir.mkdir()
    home = data_home(run_dir, NOBODY, shared_dir)
    assert home.parent == shared_dir
    assert (run_dir / "postgres").readlink() == home / "postgres"
    (home / "postgres").mkdir()
    (home / "postgres" / "PG_VERSION").write_text("16\n")
    # `make down`, then `make up`: the same data.
    assert data_home(run_dir, NOBODY, shared_dir) == home
    assert (home / "postgres" / "PG_VERSION").exists()

    # The run dir deleted: a clean slate, as for Redis's and SeaweedFS's data.
    shutil.rmtree(run_dir)
    run_dir.mkdir()
    assert data_home(run_dir, NOBODY, shared_dir) == home
    assert not (home / "postgres").exists()

    private_dir.chmod(0o711)  # now nobody reaches it: data stays in the run dir
    reachable_run_dir = private_dir / "reachable"
    reachable_run_dir.mkdir()
    assert data_home(reachable_run_dir, NOBODY, shared_dir) == reachable_run_dir
