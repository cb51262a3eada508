"""PostgreSQL run as another user: its binaries and data placed where that user can reach them.

PostgreSQL refuses to run as root, so a stack run as root runs it as
``nobody`` (:func:`social_stack.processes.unprivileged_uid`). nobody must
reach pgserver's binaries in the checkout's ``.venv`` and the data directory
in its run dir; a checkout in a private directory (under ``/root``, mode 700)
lets it reach neither. Whatever nobody can reach is used where it is, as by a
stack not run as root; the rest is placed in root's own system directories:

- the binaries are copied, once per content of the wheel, to
  ``/var/cache/social-fleet/pgserver-<digest>/`` (``pgserver/pginstall`` and
  the ``pgserver.libs`` beside it that the binaries load their libraries from,
  in the wheel's layout). ``/var/cache`` is where the system keeps data that
  can be made again (any copy not in use may be deleted), and only root
  writes there: unlike ``/tmp`` or ``/var/tmp``, no other user can put a
  directory of their own in our place. A copy is made under a temporary name,
  made root's and world-readable, then renamed: a reused copy is whole.
- the data directory goes to ``/var/lib/social-fleet/postgres-<digest of the
  run dir's real path>/postgres`` (``/var/lib``: the system's place for state,
  root's alone), which ``<run dir>/postgres`` links to, so the run dir still
  tells where its data lives. The link is that data's record: when a start
  finds no link, what is at that place was left by a run dir deleted since,
  and is removed. Deleting the run dir is then a clean slate, as it is for the
  data of Redis and SeaweedFS; the space comes back at the next start from the
  same path, or at once by deleting the linked directory too.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import stat
import tempfile
from pathlib import Path

from social_stack.processes import StackError

CACHE_ROOT = Path("/var/cache/social-fleet")
STATE_ROOT = Path("/var/lib/social-fleet")


def reachable(path: Path, uid: int, access: int = os.R_OK | os.X_OK) -> bool:
    """Whether a process of ``uid``, with its primary group only (as
    :mod:`~social_stack.processes` runs it), may search every directory
    down to ``path`` and has ``access`` to ``path`` itself, by the permission
    bits (access control lists are not read)."""
    gid = pwd.getpwuid(uid).pw_gid

    def allowed(target: Path, wanted: int) -> bool:
        st = target.stat()
        shift = 6 if st.st_uid == uid else 3 if st.st_gid == gid else 0
        return (st.st_mode >> shift) & wanted == wanted

    try:
        target = path.resolve()
        return allowed(target, access) and all(allowed(d, os.X_OK) for d in target.parents)
    except (OSError, RuntimeError):  # RuntimeError: a loop of symbolic links
        return False


def install_for(pginstall: Path, uid: int, cache_root: Path = CACHE_ROOT) -> Path:
    """pgserver's ``pginstall`` directory, or a copy of it that ``uid`` can use."""
    package = pginstall.parent
    libs = package.with_name(f"{package.name}.libs")  # auditwheel's, found via RPATH
    trees = {f"{package.name}/pginstall": pginstall}
    if libs.is_dir():
        trees[libs.name] = libs
    # What initdb and postgres open, each reached through its directories.
    opened = ("bin/initdb", "bin/postgres", "lib/postgresql", "share/postgresql")
    if all(reachable(p, uid) for p in [*(pginstall / n for n in opened), *trees.values()]):
        return pginstall
    entry = cache_root / f"{package.name}-{_digest(trees)}"
    if not entry.is_dir():
        _system_dir(cache_root)
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=cache_root))
        try:
            for name, tree in trees.items():
                shutil.copytree(tree, staging / name, symlinks=True)
            _world_readable(staging)
            try:
                staging.rename(entry)
            except OSError:
                if not entry.is_dir():
                    raise  # else another start made the same copy first
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    copy = entry / package.name / "pginstall"
    if not reachable(copy / "bin" / "postgres", uid):
        raise StackError(f"{_name(uid)} cannot reach {copy}: chmod o+x the directories above it")
    return copy


def data_home(run_dir: Path, uid: int, state_root: Path = STATE_ROOT) -> Path:
    """The directory to keep the data directory ``postgres`` in, for a
    PostgreSQL of ``run_dir`` run as ``uid``: ``run_dir`` itself when ``uid``
    can reach it, else a place of its own under ``state_root``."""
    run_dir.chmod(run_dir.stat().st_mode | 0o011)  # tempfile.mkdtemp's are 700
    if reachable(run_dir, uid, os.X_OK):
        return run_dir
    home = state_root / f"postgres-{hashlib.sha256(bytes(run_dir.resolve())).hexdigest()[:16]}"
    link = run_dir / "postgres"
    if link.is_symlink():
        if (target := link.readlink()) != home / "postgres":
            raise StackError(
                f"{link} links to {target}, not to {home / 'postgres'} where this run dir's "
                f"PostgreSQL data belongs (was the run dir moved or copied?): `mv "
                f"{target.parent} {home}` to keep that data, or delete {link} for a fresh one"
            )
        if home.is_dir():
            return home
    elif link.exists():
        raise StackError(
            f"{_name(uid)} (which runs PostgreSQL, since we are root) cannot reach the data "
            f"in {link}: chmod o+x the directories above it, or delete it for a fresh database"
        )
    # No link to it in run_dir: what is there was left by a run dir deleted since.
    _system_dir(state_root)
    shutil.rmtree(home, ignore_errors=True)
    # Root's, not nobody's: else PostgreSQL could swap its data directory for a
    # link to a file of root's, which the next start would chown to nobody.
    home.mkdir(mode=0o711)
    home.chmod(0o711)
    link.unlink(missing_ok=True)
    link.symlink_to(home / "postgres")
    if not reachable(home, uid, os.X_OK):
        raise StackError(f"{_name(uid)} cannot reach {home}: chmod o+x the directories above it")
    return home


def _digest(trees: dict[str, Path]) -> str:
    """Of the trees' names, file modes and contents: one copy per installed content."""
    digest = hashlib.sha256()
    for name, tree in sorted(trees.items()):
        for path in sorted(tree.rglob("*")):
            entry = f"{name}/{path.relative_to(tree).as_posix()}"
            if path.is_symlink():
                digest.update(f"link {entry} {os.readlink(path)}\n".encode())
            elif path.is_file():
                digest.update(f"file {entry} {path.stat().st_mode & 0o111:o}\n".encode())
                with path.open("rb") as content:
                    digest.update(hashlib.file_digest(content, "sha256").digest())
    return digest.hexdigest()[:16]


def _system_dir(path: Path) -> None:
    """Creates ``path``, or checks that no one but root can write to it."""
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise StackError(f"{path} must be a directory only root can write to: delete it")
    path.chmod(0o755)


def _world_readable(top: Path) -> None:
    """Everyone may read (and run what is executable), only the owner write."""
    top.chmod(0o755)
    for parent, directories, files in os.walk(top):
        for path in (Path(parent, name) for name in [*directories, *files]):
            if not path.is_symlink():  # chmod would change what it points to
                path.chmod(0o755 if path.is_dir() or path.stat().st_mode & 0o111 else 0o644)


def _name(uid: int) -> str:
    return pwd.getpwuid(uid).pw_name
