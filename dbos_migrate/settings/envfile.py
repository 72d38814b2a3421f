"""`--env-file PATH`: variables from dotenv files, read before the config (docs/behaviour.md).

Like dbmate's `--env-file`: `KEY=VALUE` lines, an optional `export ` prefix, `#` comments,
'single-quoted' values taken literally, "double-quoted" values with \\n \\t \\" \\\\ escapes.
Nothing is interpolated. A variable already set in the environment is never overridden,
and later files do not override earlier ones. No value is ever shown in a message.

Every variable the tool reads is honoured: the config's `${...}`, the target's
(`DBOS_DATABASE_URL`, `DBOS_SYSTEM_DATABASE_URL`, `PG*`, `DBOS_DB*`, `DBOS__CLOUD`), the
commands' environment, and the `DBOS_MIGRATE_<OPTION>` variables of the options, which the
CLI turns into option defaults (docs/behaviour.md, "Options, environment and env files").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from dbos_migrate.errors import UsageError
from dbos_migrate.settings.regular import NotRegularFile, read_regular

_LINE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*\Z")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}
MAX_BYTES = 1_000_000


def parse(text: str, file: str) -> list[tuple[str, str]]:
    """The (key, value) pairs of one file, in order; UsageError at file:line on a bad line."""
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise UsageError(f"{file}:{number}: not a KEY=VALUE line", "write KEY=VALUE, optionally quoted")
        key, raw = match.groups()
        pairs.append((key, _value(raw, file, number)))
    return pairs


def _value(raw: str, file: str, number: int) -> str:
    if raw[:1] == "'":
        end = raw.find("'", 1)
        if end == -1:
            raise UsageError(f"{file}:{number}: the single quote is never closed")
        return raw[1:end]
    if raw[:1] == '"':
        out, i = [], 1
        while i < len(raw):
            ch = raw[i]
            if ch == "\\" and i + 1 < len(raw):
                out.append(_ESCAPES.get(raw[i + 1], "\\" + raw[i + 1]))
                i += 2
                continue
            if ch == '"':
                return "".join(out)
            out.append(ch)
            i += 1
        raise UsageError(f"{file}:{number}: the double quote is never closed")
    return re.split(r"\s+#", raw, maxsplit=1)[0].strip()


def load(paths: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with the files' variables added where it has none (first file wins)."""
    return {**environ, **added(paths, environ)}


def added(paths: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The variables the files add to `environ`: those it does not have (first file wins).
    UsageError, naming the file (and line) but no value, when one cannot be read."""
    out: dict[str, str] = {}
    for path in paths:
        try:
            data = read_regular(path, MAX_BYTES + 1)
            if len(data) > MAX_BYTES:
                raise UsageError(f"--env-file {path}: larger than {MAX_BYTES} bytes")
            text = data.decode("utf-8")
        except FileNotFoundError:
            raise UsageError(f"{path}: no such file", "check the path given to --env-file") from None
        except NotRegularFile as exc:  # a FIFO would block forever (docs/security.md)
            raise UsageError(f"{path}: is {exc.kind}, not a regular file", "give --env-file a dotenv file") from None
        except IsADirectoryError:
            raise UsageError(f"{path}: a directory, not a file", "give --env-file a dotenv file") from None
        except PermissionError:
            raise UsageError(f"{path}: permission denied", "the file must be readable by this user") from None
        except UnicodeDecodeError:
            raise UsageError(f"{path}: not UTF-8 text") from None
        except OSError as exc:
            raise UsageError(f"{path}: cannot read it ({exc.strerror or type(exc).__name__})") from None
        for key, value in parse(text, path):
            if key not in environ:
                out.setdefault(key, value)
    return out
