"""`init`: write or complete the `database:` section of dbos-config.yaml from the migration
tool the app uses, after showing the diff and asking (docs/behaviour.md, "init")."""

from __future__ import annotations

import contextlib
import difflib
import os
import stat
from pathlib import Path

from dbos_migrate.context import Context
from dbos_migrate.errors import ConfigError, GuardRefused, MigrateError, UsageError
from dbos_migrate.events import ConfigDiff, Finished, Notice, Sink
from dbos_migrate.model import InitReport
from dbos_migrate.settings import config as config_mod

MAX_BYTES = 1 << 20


def init(ctx: Context, config: str | None, emit: Sink, *, yes: bool = False, dry_run: bool = False) -> InitReport:
    """Find the tool, show the diff, ask (a terminal), write atomically. Without a terminal
    the file is written only with `yes`; otherwise the diff is shown and nothing written."""
    path = Path(config or config_mod.DEFAULT_CONFIG)
    report = InitReport(str(path))
    try:
        _init(ctx, path, emit, report, yes=yes, dry_run=dry_run)
    except MigrateError as exc:
        report.error = exc
    emit(Finished(report))
    return report


def _read(path: Path) -> str | None:
    """The config's text, None when it does not exist; a symlink or non-regular file is refused."""
    from dbos_migrate.settings.regular import NotRegularFile, open_regular

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise UsageError(f"{path}: is a symbolic link; init edits only a regular file", "edit the file it points to")
    try:
        with os.fdopen(open_regular(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except (NotRegularFile, IsADirectoryError):
        raise UsageError(f"{path}: is not a regular file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the config file: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise UsageError(f"{path}: larger than {MAX_BYTES} bytes: not a config file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: the file is not valid UTF-8") from None


def _init(ctx: Context, path: Path, emit: Sink, report: InitReport, *, yes: bool, dry_run: bool) -> None:
    from dbos_migrate.settings.initconfig import CannotEdit, complete, detect

    directory = path.parent if str(path.parent) else Path(".")
    tools = detect(directory)
    if not tools:
        raise UsageError(
            f"no migration tool found in {directory.absolute()}: looked for alembic.ini, knexfile.*, "
            "prisma/schema.prisma and drizzle.config.*",
            "write database.migrate (and database.rollback) by hand",
        )
    tool = tools[0]
    report.tool = tool.name
    if len(tools) > 1:
        emit(Notice(f"found {', '.join(t.found for t in tools)}: using {tool.name} ({tool.found})", "warning"))
    old = _read(path)
    report.existed = old is not None
    try:
        new, report.added = complete(old or "", tool)
    except CannotEdit as exc:
        raise UsageError(f"{path}: {exc}; nothing was written") from None
    if not report.added:
        emit(Notice(f"{path}: database.migrate and database.rollback are already set; nothing to add"))
        return
    if not report.existed:
        new = f"name: {_app_name(directory)}\n" + new
    try:
        config_mod.from_text(new, path.absolute(), ctx.environ, display=str(path))
    except ConfigError as exc:
        raise UsageError(
            f"{path}: the completed file would not be valid ({exc.problems[0].render() if exc.problems else exc}); "
            "nothing was written"
        ) from None
    report.diff = "".join(
        difflib.unified_diff(
            (old or "").splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=str(path) if old is not None else "/dev/null",
            tofile=str(path),
        )
    )
    emit(ConfigDiff(str(path), report.diff))
    if dry_run:
        return
    if not yes:
        if ctx.ask is None:
            emit(Notice(f"{path} was not written (no terminal to ask on): rerun with --yes to write it"))
            return
        answer = ctx.ask(f"Write {path}? [y/N] ", False)
        if (answer or "").strip().lower() not in ("y", "yes"):
            raise GuardRefused(f"{path} was not written", "answer y to write it, or pass --yes")
    _write_atomically(path, new)
    report.written = True
    emit(Notice(f"{path}: wrote database.{' and database.'.join(report.added)} for {tool.name}"))


def _app_name(directory: Path) -> str:
    import re

    name = re.sub(r"[^a-z0-9_-]+", "-", directory.absolute().name.lower()).strip("-")
    return name if len(name) >= 3 else "my-app"


def _write_atomically(path: Path, text: str) -> None:
    """A temp file in the same directory, fsynced, renamed over the config; the target is
    checked again not to be a symlink just before (docs/security.md)."""
    import tempfile

    directory = path.parent if str(path.parent) else Path(".")
    mode = 0o644
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            raise UsageError(f"{path}: is a symbolic link; nothing was written")
        mode = stat.S_IMODE(st.st_mode)
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=".dbos-config.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
