"""Who runs the server, and files opened so that nobody else can redirect them.

Threat model (docs/local-postgres.md, "Security"): other local users, and the server's own OS
user, whom anyone knowing the public superuser password can drive (`COPY ... TO PROGRAM`). So
as root we never open a path inside a directory that user controls (the data directory) for
writing, every file we open is opened without following a final symlink, and the directories
we keep our own files in must be ours and writable by nobody else.
"""

from __future__ import annotations

import contextlib
import os
import stat
import typing
from collections.abc import Sequence
from pathlib import Path

from dbos_migrate.localpg.base import LocalPostgresError

if typing.TYPE_CHECKING:
    import pwd

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


# -------------------------------------------------------------------------------- users


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def lookup_user(name: str) -> pwd.struct_passwd | None:
    import pwd

    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def default_service_user() -> pwd.struct_passwd:
    """The unprivileged user that runs the server when we are root: `postgres`, else `nobody`."""
    for name in ("postgres", "nobody"):
        entry = lookup_user(name)
        if entry is not None:
            return entry
    raise LocalPostgresError(
        "running as root, and there is neither a 'postgres' nor a 'nobody' user to run PostgreSQL as",
        hint="run dbos-migrate as a normal user, or create a 'postgres' user",
    )


def groups_of(entry: pwd.struct_passwd) -> list[int]:
    return list(os.getgrouplist(entry.pw_name, entry.pw_gid))


def has_perm(path: Path, entry: pwd.struct_passwd, groups: Sequence[int], bit: int) -> bool:
    """Whether `entry` has permission `bit` (4 read, 1 execute/search) on `path`, judged from its
    mode bits as the kernel does (owner, else group, else other; ACLs are not consulted)."""
    st = path.stat()
    if entry.pw_uid == 0:
        return True
    if st.st_uid == entry.pw_uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid in groups:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def unreachable_prefix(path: Path, entry: pwd.struct_passwd) -> Path | None:
    """The first existing directory on the way to `path` that `entry` cannot traverse, or None.
    Directories that do not exist yet are skipped: we create them world-traversable."""
    groups = groups_of(entry)
    path = path.absolute()
    for directory in [*reversed(path.parents), path]:
        if not directory.exists():
            break
        if directory.is_dir() and not has_perm(directory, entry, groups, 1):
            return directory
    return None


def run_as_kwargs(entry: pwd.struct_passwd | None) -> dict[str, typing.Any]:
    """subprocess keyword arguments that run the child as `entry` (nothing when not root).
    subprocess drops root's supplementary groups, then sets gid and uid, in the child."""
    if entry is None:
        return {}
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": groups_of(entry)}


# -------------------------------------------------------------------------------- directories


def open_dir(path: Path) -> int:
    """A descriptor of the directory `path` itself, never of a symlink's target."""
    return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW)


def mkdirs(path: Path) -> None:
    """Create `path` and missing parents as mode 0755 whatever the umask, so the unprivileged
    server user can traverse what we created (chmod through a no-follow descriptor)."""
    missing = []
    probe = path.absolute()
    while not os.path.lexists(probe):
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue
        fd = open_dir(directory)
        try:
            os.fchmod(fd, 0o755)
        finally:
            os.close(fd)


def untrusted_reason(path: Path, *, follow: bool = False) -> str | None:
    """Why `path` is not a directory we may keep our files in, or None when it is: it must be a
    directory (not a symlink, unless `follow`), owned by us (root when root), and writable by
    nobody else (no group/other write bit)."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return "missing"
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not by us (uid {os.geteuid()})"
    if st.st_mode & 0o022:
        return f"writable by other users (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def require_trusted(path: Path, *, follow: bool = False) -> None:
    """Raise LocalPostgresError unless `path` is a directory we may keep our files in."""
    reason = untrusted_reason(path, follow=follow)
    if reason is not None:
        raise LocalPostgresError(
            f"refusing to use {path}: it is {reason}; dbos-migrate keeps the server's settings "
            "and records there, so it must belong to the user running dbos-migrate and be "
            "writable by nobody else",
            hint=f"chown/chmod it (e.g. chmod go-w {path}), or point DBOS_MIGRATE_HOME at a directory of yours",
        )


def ensure_trusted_dir(path: Path, *, follow: bool = False) -> None:
    """Create `path` if missing (0755), then require it to be trusted."""
    mkdirs(path)
    require_trusted(path, follow=follow)


# -------------------------------------------------------------------------------- files


def open_own(path: Path, flags: int, mode: int = 0o600) -> int:
    """os.open without following a final symlink; the result must be a regular file of ours
    with one link (a hard link to someone else's file is refused)."""
    fd = os.open(path, flags | _NOFOLLOW, mode)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
        os.close(fd)
        raise LocalPostgresError(f"refusing to use {path}: not a regular file of ours")
    return fd


def write_atomic(path: Path, data: bytes, mode: int = 0o600, owner: tuple[int, int] | None = None) -> None:
    """Replace `path` by a new file with `data`, `mode` and `owner` (uid, gid), via a fresh
    O_EXCL temp file and rename in the same (trusted) directory: readers never see half a file
    and nothing already there is ever followed or truncated."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    try:
        try:
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_small(path: Path, limit: int = 65536) -> str | None:
    """The text of a small regular file, or None. Safe on paths another user controls: no
    symlink is followed and a FIFO does not block (O_NONBLOCK, then only regular files)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def tail(path: Path, offset: int = 0, lines: int = 20) -> str:
    """The last lines of a log written since `offset`, for error messages; control characters
    (which the server's user could plant to drive a terminal) are shown as `?`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW)
    except OSError:
        return ""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return ""
        os.lseek(fd, max(offset, st.st_size - (1 << 16)), os.SEEK_SET)
        text = os.read(fd, 1 << 16).decode("utf-8", "replace")
    except OSError:
        return ""
    finally:
        os.close(fd)
    kept = "\n".join(text.rstrip().splitlines()[-lines:])
    return "".join(c if c.isprintable() or c in "\n\t" else "?" for c in kept)
