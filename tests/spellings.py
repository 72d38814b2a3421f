"""How tools print a string: the spellings of a password the scrubber must recognise.

Each function spells a whole string the way one tool does, character by character, so a mix
of spellings is a spelling too. Run as a script (`python spellings.py out|err`), this prints
$PGPASSWORD in every spelling, one `name=<spelling>` line each, to stdout or stderr: the
end-to-end test's migration commands do that.
"""

from __future__ import annotations

import html
import json
import os
import re
import sys
from collections.abc import Callable
from urllib.parse import quote, quote_plus


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), text)


def _repr_other_quote(text: str) -> str:
    """Python's repr written with the quote it did not choose."""
    spelled = repr(text)
    inner = spelled[1:-1]
    if spelled[0] == "'":
        return inner.replace("\\'", "'").replace('"', '\\"')
    return inner.replace("'", "\\'")


def _node_inspect(text: str) -> str:
    """Node's util.inspect of a string, quotes left off (lib/internal/util/inspect.js strEscape)."""
    quote_char = "'"
    if "'" in text:
        if '"' not in text:
            quote_char = '"'
        elif "`" not in text and "${" not in text:
            quote_char = "`"
    named = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", "\\": "\\\\"}
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "'" and quote_char == "'":
            out.append("\\'")
        elif ch in named:
            out.append(named[ch])
        elif code < 0x20 or 0x7F <= code <= 0x9F:
            out.append(f"\\x{code:02X}")
        else:
            out.append(ch)
    return "".join(out)


def _utf16_escapes(text: str) -> str:
    """`\\uXXXX` for every character, surrogate pairs beyond the BMP (Java, JSON of everything)."""
    units = text.encode("utf-16-be")
    return "".join(f"\\u{int.from_bytes(units[i : i + 2], 'big'):04x}" for i in range(0, len(units), 2))


SPELLINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda s: s,
    "percent": lambda s: quote(s, safe=""),
    "percent_lower": lambda s: _lower_hex(quote(s, safe="")),
    "percent_plus": lambda s: quote_plus(s, safe=""),
    "percent_path": lambda s: quote(s),
    "encode_uri_component": lambda s: quote(s, safe="!'()*"),
    "whatwg_userinfo": lambda s: quote(s, safe="!$%&'()*+,"),
    "json": lambda s: json.dumps(s)[1:-1],
    "json_utf8": lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
    "repr": lambda s: repr(s)[1:-1],
    "repr_other_quote": _repr_other_quote,
    "ascii": lambda s: ascii(s)[1:-1],
    "bytes_repr": lambda s: repr(s.encode())[2:-1],
    "node_inspect": _node_inspect,
    "html": html.escape,
    "html_39": lambda s: html.escape(s).replace("&#x27;", "&#39;"),
    "html_apos": lambda s: html.escape(s).replace("&#x27;", "&apos;"),
    "html_decimal": lambda s: "".join(f"&#{ord(c)};" for c in s),
    "html_hex_padded": lambda s: "".join(f"&#X{ord(c):04X};" for c in s),
    "utf16_escapes": _utf16_escapes,
    "js_code_points": lambda s: "".join(f"\\u{{{ord(c):x}}}" for c in s),
    "octal_bytes": lambda s: "".join(f"\\{b:03o}" for b in s.encode()),
    "hex_bytes": lambda s: "".join(f"\\x{b:02X}" for b in s.encode()),
    "backslash_every_char": lambda s: "".join("\\" + c for c in s),
    # SQL: a string literal doubles its single quotes (`quote_literal`, psql's echo of a query),
    # an identifier and a CSV field their double quotes (`quote_ident`, COPY ... CSV, Excel).
    "sql_literal": lambda s: s.replace("'", "''"),
    "csv_quoted": lambda s: s.replace('"', '""'),
    # JSON of a JSON document (a log line whose message is JSON), ASCII and UTF-8.
    "json_twice": lambda s: json.dumps(json.dumps(s)[1:-1])[1:-1],
    "json_twice_utf8": lambda s: json.dumps(json.dumps(s, ensure_ascii=False)[1:-1], ensure_ascii=False)[1:-1],
}


def main(where: str) -> None:
    password = os.environ["PGPASSWORD"]
    stream = sys.stderr if where == "err" else sys.stdout
    for name, spell in SPELLINGS.items():
        stream.write(f"{name}={spell(password)}\n")
    stream.flush()


if __name__ == "__main__":
    main(sys.argv[1])
