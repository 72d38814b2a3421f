"""`--env-file PATH`: variables from dotenv files, read before the config (docs/behaviour.md).

Like dbmate's `--env-file`: `KEY=VALUE` lines, an optional `export ` prefix, `#` comments,
'single-quoted' values taken literally, "double-quoted" values with \\n \\t \\" \\\\ escapes.
Nothing is interpolated. A variable already set in the environment is never overridden,
and later files do not override earlier ones. No value is ever shown in a message.
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
    out = dict(environ)
    for path in paths:
        try:
            data = read_regular(path, MAX_BYTES + 1)
            if len(data) > MAX_BYTES:
                raise UsageError(f"--env-file {path}: larger than {MAX_BYTES} bytes")
            text = data.decode("utf-8")
        except FileNotFoundError:
            raise UsageError(f"--env-file {path}: no such file") from None
        except NotRegularFile as exc:  # a FIFO would block forever (docs/security.md)
            raise UsageError(f"--env-file {path}: is {exc.kind}, not a regular file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--env-file {path}: cannot read it ({type(exc).__name__})") from None
        for key, value in parse(text, path):
            out.setdefault(key, value)
    return out
