"""The one mechanism that keeps passwords out of everything dbos-migrate prints or records.

URLs are masked structurally where they are rendered (target.PgUrl.masked). Everything
else that is free text (driver errors, command output, headers, history rows) passes
through a Scrubber. A command may print the password through whatever escaping its tool
applies (JSON, repr, a URL, HTML, the shell's `%q`...), so a secret is not looked for in a
fixed list of forms: it matches with each of its characters in any common spelling of that
character, in any mix. docs/security.md, "Keeping passwords out of output", lists the
spellings and the limits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from dbos_migrate.context import ByteWriter

MASK = "***"
#: A secret shorter than this is masked only as a whole token: not next to a letter, digit
#: or `_` (ASCII). Masked everywhere, a one-character password would show itself by the
#: words it mangles (`***ort 5`). docs/security.md, "Short passwords".
SHORT_SECRET = 4
_WORD = "[0-9A-Za-z_]"
_BMASK = MASK.encode()
# The documented DBOS and PostgreSQL defaults. They are public, and scrubbing them from
# free text would mangle names such as `dbos_migrate`; they are still masked in URLs.
PUBLIC_PASSWORDS = frozenset({"dbos", "postgres"})
_URL_PASSWORD = re.compile(r"(://[^:/?#@\s]*:)[^@\s]+@")
# password=, sslpassword=, PGPASSWORD=, DB_PASSWORD=...: any key that ends in "password".
_KV_PASSWORD = re.compile(r"\b(\w*password\s*=\s*)('[^']*'|\S+)", re.I)

# ---------------------------------------------------------------------------- spellings

# Most digits accepted in `\u{...}` and `&#...;`, leading zeros included.
_PAD_DIGITS = 8
# Escapes of control characters: C, JSON, Python, JavaScript, bash's $'...'.
_CONTROL_ESCAPES = {
    "\n": "n",
    "\t": "t",
    "\r": "r",
    "\b": "b",
    "\f": "f",
    "\v": "v",
    "\a": "a",
    "\x1b": "eE",
    "\0": "0",
}
# Quotes that SQL literals, SQL identifiers and CSV fields write twice.
_DOUBLED_QUOTES = "'\""
# The HTML entities that html.escape and other escapers write (HTML 5 named references).
_NAMED_ENTITIES = {"&": "amp", "<": "lt", ">": "gt", '"': "quot", "'": "apos"}
# `\` + one of these can begin a longer escape of that same character (`\u0075` is "u"):
# the characters that may come next in it.
_HEX_DIGITS = "0123456789abcdefABCDEF"
_LONGER_ESCAPE = {"u": _HEX_DIGITS + "{", "x": _HEX_DIGITS, "U": _HEX_DIGITS, "0": "01234567"}
# Below one byte in this many that may begin a match, look for those bytes with bytes.find.
_SPARSE = 64
# How much of the other pipe's output may wait behind one pipe's undecided bytes.
_MAX_PENDING = 1 << 20


class _Atom(NamedTuple):
    """One position of a spelling: any of `chars`, repeated `lo` to `hi` times."""

    chars: str
    lo: int = 1
    hi: int = 1


class _Spelling(NamedTuple):
    """How one character of a secret can be written.

    `unless` (raw backslash only) is what must not follow: `\\` then the next character of the
    secret, which `\\\\` then that character raw spells as well. Without it, every backslash
    in a secret doubles the ways a near miss can be tried (see `_spellings`).
    """

    atoms: tuple[_Atom, ...]
    unless: tuple[tuple[_Atom, ...], str] | None = None


def _lit(text: str) -> tuple[_Atom, ...]:
    return tuple(_Atom(c) for c in text)


def _anycase(text: str) -> tuple[_Atom, ...]:
    return tuple(_Atom(c.lower() + c.upper() if c.lower() != c.upper() else c) for c in text)


def _hex(value: int, width: int) -> tuple[_Atom, ...]:
    return _anycase(f"{value:0{width}x}")


def _padded(digits: str) -> tuple[_Atom, ...]:
    pad = _PAD_DIGITS - len(digits)
    return ((_Atom("0", 0, pad),) if pad > 0 else ()) + _anycase(digits)


def _width(spelling: _Spelling) -> int:
    """The most bytes the spelling can take (the characters of an atom are all as long)."""
    return sum(a.hi * len(a.chars[0].encode()) for a in spelling.atoms)


def _twice(spelling: _Spelling) -> _Spelling:
    """A spelling put through JSON's escaping once more: each `\\` doubled, each `"` escaped."""
    atoms: list[_Atom] = []
    for atom in spelling.atoms:
        if atom.chars in ("\\", '"'):
            atoms += [_Atom("\\"), atom]
        else:
            atoms.append(atom)
    return _Spelling(tuple(atoms))


def _spellings(ch: str, nxt: str | None) -> list[_Spelling]:
    """Every common spelling of `ch`, longest first; `nxt` is the next character of the secret.

    Raw; percent-encoding of each UTF-8 byte, either hex case (`+` for a space); a backslash
    before it (`\\"`, `\\\\`, `\\/`, `\\'`, `\\$`, and bash's `printf %q` for any character);
    `\\xHH`, `\\ooo`, `\\uXXXX` (a surrogate pair beyond the BMP), `\\UXXXXXXXX`, `\\u{...}`;
    `\\n`-style control escapes; HTML named and numeric character references.
    """
    cp = ord(ch)
    utf8 = ch.encode()
    unless = None
    if ch == "\\" and nxt is not None and nxt != "\\":
        # `\\` + nxt raw and `\` + `\nxt` are the same text: keep only the first reading,
        # except where `\nxt` may go on as a longer escape of nxt (`\u0075`). Not within a
        # run of backslashes, where `\` + `\` raw would be lost too (docs/security.md).
        unless = (_lit("\\" + nxt), _LONGER_ESCAPE.get(nxt, ""))
    forms = [
        _Spelling(_lit(ch), unless),
        _Spelling(sum((_lit("%") + _hex(b, 2) for b in utf8), ())),
        _Spelling(_lit("\\" + ch)),
        _Spelling(sum((_lit(f"\\{b:03o}") for b in utf8), ())),
        _Spelling(_lit("\\U") + _hex(cp, 8)),
        _Spelling(_lit("\\u{") + _padded(f"{cp:x}") + _lit("}")),
        _Spelling(_lit("&#") + _padded(str(cp)) + _lit(";")),
        _Spelling(_lit("&#") + _anycase("x") + _padded(f"{cp:x}") + _lit(";")),
    ]
    if ch == " ":
        forms.append(_Spelling(_lit("+")))
    if cp < 0x100:
        forms.append(_Spelling(_lit("\\x") + _hex(cp, 2)))
    if len(utf8) > 1:
        forms.append(_Spelling(sum((_lit("\\x") + _hex(b, 2) for b in utf8), ())))
    if cp < 0x10000:
        forms.append(_Spelling(_lit("\\u") + _hex(cp, 4)))
    else:
        high, low = 0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF)
        forms.append(_Spelling(_lit("\\u") + _hex(high, 4) + _lit("\\u") + _hex(low, 4)))
    forms += [_Spelling(_lit("\\" + letter)) for letter in _CONTROL_ESCAPES.get(ch, "")]
    if ch in _NAMED_ENTITIES:
        forms.append(_Spelling(_lit("&") + _anycase(_NAMED_ENTITIES[ch]) + _lit(";")))
    if ch in _DOUBLED_QUOTES:  # an SQL literal ('') or a CSV field or SQL identifier ("")
        forms.append(_Spelling(_lit(ch + ch)))
    # A backslash escape escaped once more, as JSON (or repr) of JSON writes it: `\\"`,
    # `\\\\`, `\\u00e9`, `\\n`.
    forms += [_twice(f) for f in forms if f.atoms[0].chars == "\\"]
    # Longest first: where two spellings both fit, the match takes in the longer one.
    return sorted(dict.fromkeys(forms), key=_width, reverse=True)


def _atom_regex(atom: _Atom) -> str:
    body = re.escape(atom.chars) if len(atom.chars) == 1 else "[" + "".join(re.escape(c) for c in atom.chars) + "]"
    return body if (atom.lo, atom.hi) == (1, 1) else f"{body}{{{atom.lo},{atom.hi}}}"


def _pieces(spelling: _Spelling, *, begun: bool) -> list[str]:
    """The spelling as regex pieces, one per atom. For `begun` (a beginning of the spelling,
    in bytes), a raw character is one piece per UTF-8 byte, since a read may end inside it,
    and `unless` is left out (holding back more, never less)."""
    out: list[str] = []
    for atom in spelling.atoms:
        if begun and len(atom.chars) == 1 and not atom.chars.isascii():
            out += [f"\\x{b:02x}" for b in atom.chars.encode()]
        else:
            out.append(_atom_regex(atom))
    if spelling.unless is not None and not begun:
        follow, longer = spelling.unless
        tail = f"(?![{re.escape(longer)}])" if longer else ""
        out.append("(?!" + "".join(_atom_regex(a) for a in follow) + tail + ")")
    return out


class _Node:
    """A trie of spellings: one alternation per character would try a dozen branches at
    every `\\`, `%` or `&`; sharing their beginnings tries one."""

    __slots__ = ("children", "end", "width")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.end = False
        self.width = 0  # of the longest spelling through here

    @classmethod
    def of(cls, spellings: Iterable[_Spelling], *, begun: bool) -> _Node:
        root = cls()
        for spelling in spellings:
            node, width = root, _width(spelling)
            for piece in _pieces(spelling, begun=begun):
                node = node.children.setdefault(piece, cls())
                node.width = max(node.width, width)
            node.end = True
        return root

    def _branches(self) -> list[tuple[str, _Node]]:
        # Longest first: where two spellings both fit (`\\\\` and `\\`, `%25` and `%`),
        # the match takes in the longer one.
        return sorted(self.children.items(), key=lambda item: -item[1].width)

    def regex(self) -> str:
        """Any one of the spellings."""
        alternatives = [piece + child.regex() for piece, child in self._branches()]
        if self.end:
            alternatives.append("")
        return alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"

    def begun_regex(self) -> str:
        """Any beginning of one of the spellings, down to nothing."""
        if not self.children:
            return ""
        return "(?:" + "|".join(piece + child.begun_regex() for piece, child in self._branches()) + ")?"


def _char_regex(spellings: Iterable[_Spelling]) -> str:
    return _Node.of(spellings, begun=False).regex()


class _Unit(NamedTuple):
    """A character of a secret, or a run of backslashes: its regex, the regex of any
    beginning of it (in bytes), and the most bytes it can take."""

    regex: str
    begun: str
    width: int


@lru_cache(maxsize=1024)
def _char_unit(ch: str, nxt: str | None) -> _Unit:
    forms = _spellings(ch, nxt)
    return _Unit(_char_regex(forms), _Node.of(forms, begun=True).begun_regex(), max(_width(s) for s in forms))


@lru_cache(maxsize=64)
def _backslash_run(length: int, nxt: str | None) -> _Unit:
    """A run of `length` backslashes, as one unit.

    One alternation per backslash would read a run of backslashes in the output as `\\` or
    `\\\\` per character in every combination: a near miss would be tried ~2^length ways.
    The run is rather `length` to `4 * length` items, each a backslash or another spelling of
    one (`\\x5c`, `%5C`, ...), which is tried ~length ways: four, as JSON twice writes a
    backslash; a spelling escaped twice (`\\\\x5c`) is a backslash then a spelling. It admits
    a few texts that are not quite spellings of the run (more items than `length`), which are
    masked too.
    """
    others = [s for s in _spellings("\\", None) if s.atoms[:2] not in (_lit("\\"), _lit("\\\\"))]
    item = "(?:" + _char_regex(others) + "|\\\\)"
    most = 4 * length
    regex = f"{item}{{{most}}}"
    if nxt is not None:
        # As for a single backslash (`_spellings`): k items then `\nxt` reads the same as
        # k + 1 items then nxt raw, so take the first reading only where k + 1 is allowed.
        longer = _LONGER_ESCAPE.get(nxt, "")
        follow = "\\\\" + re.escape(nxt) + (f"(?![{re.escape(longer)}])" if longer else "")
        regex = f"(?:{regex}|{item}{{{length},{most - 1}}}(?!{follow}))"
    else:
        regex = f"{item}{{{length},{most}}}"
    begun = f"{item}{{0,{most}}}" + _Node.of(others, begun=True).begun_regex()
    return _Unit(regex, begun, most * max(_width(s) for s in others))


class _Secret:
    """The regular expressions of one secret."""

    def __init__(self, secret: str) -> None:
        self.units = []
        for piece in re.finditer(r"\\{2,}|.", secret, re.DOTALL):
            nxt = secret[piece.end()] if piece.end() < len(secret) else None
            if len(piece.group()) > 1:
                self.units.append(_backslash_run(len(piece.group()), nxt))
            else:
                self.units.append(_char_unit(piece.group(), nxt))
        self.body = "".join(u.regex for u in self.units)
        # A short secret only where it stands alone (docs/security.md, "Short passwords").
        short = len(secret) < SHORT_SECRET
        self.regex = f"(?<!{_WORD})(?:{self.body})(?!{_WORD})" if short else self.body
        self.width = sum(u.width for u in self.units)
        self.first_bytes = {c.encode()[0] for s in _spellings(secret[0], None) for c in s.atoms[0].chars}

    def partial_regex(self, depth: int = 4) -> str:
        """Text that could be the beginning of a match: it reaches the end of the buffer.
        Once `depth` units are matched, anything is taken to continue it (holding back more,
        never less): checking every unit would cost more to compile than it saves."""
        out = "(?:.*)" if len(self.units) > depth else ""
        for unit in reversed(self.units[:depth]):
            out = f"(?:{unit.regex}{out}|{unit.begun})" if out else unit.begun
        return out


# ---------------------------------------------------------------------------- scrubber


class Scrubber:
    """Replaces known secrets, and any `scheme://user:password@` or `password=...`, with ***."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._kept = tuple(dict.fromkeys(s for s in secrets if s and s not in PUBLIC_PASSWORDS))
        self.spans_newline = any("\n" in s for s in self._kept)

    @property
    def active(self) -> bool:
        return bool(self._kept)

    @property
    def weak(self) -> int:
        """How many secrets are shorter than SHORT_SECRET (masked only as whole tokens)."""
        return sum(1 for s in self._kept if len(s) < SHORT_SECRET)

    @cached_property
    def _secrets(self) -> list[_Secret]:
        """Built when first needed: a scrubber often has no text to scrub."""
        # One leftmost match per position, the secret with the longest spellings tried first.
        return sorted((_Secret(s) for s in self._kept), key=lambda s: s.width, reverse=True)

    @cached_property
    def longest(self) -> int:
        """The most bytes a match can take."""
        return max((s.width for s in self._secrets), default=0)

    @cached_property
    def _reach(self) -> int:
        """The most bytes a match depends on: its own and, with a short secret, the byte after
        it, which decides whether it stands alone (docs/security.md, "Short passwords")."""
        return self.longest + (1 if self.weak else 0)

    @cached_property
    def _pattern(self) -> re.Pattern[str] | None:
        if not self._secrets:
            return None
        return re.compile("|".join(s.regex for s in self._secrets))

    @cached_property
    def _bpattern(self) -> re.Pattern[bytes] | None:
        """The same secrets over UTF-8 bytes: escapes are ASCII, and a raw character is its
        UTF-8 sequence (the text pattern's source, encoded)."""
        if not self._secrets:
            return None
        return re.compile("|".join(s.regex for s in self._secrets).encode())

    @cached_property
    def _partial(self) -> re.Pattern[bytes]:
        source = "|".join(s.partial_regex() for s in self._secrets)
        return re.compile(f"(?:{source})\\Z".encode(), re.DOTALL)

    @cached_property
    def _first_bytes(self) -> bytes:
        """A translation table: 0 for a byte that can begin a match, 1 for any other."""
        firsts = {b for s in self._secrets for b in s.first_bytes}
        return bytes(0 if b in firsts else 1 for b in range(256))

    def text(self, value: str) -> str:
        if self._pattern is not None:
            value = self._pattern.sub(MASK, value)
        value = _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + "@", value)
        return _KV_PASSWORD.sub(lambda m: m.group(1) + MASK, value)

    def data(self, value: bytes) -> bytes:
        if self._bpattern is None:
            return value
        return self._bpattern.sub(_BMASK, value)

    def stream(self) -> StreamScrubber:
        return StreamScrubber(self)

    def streams(self, out: ByteWriter, err: ByteWriter) -> tuple[PipeFeeder, PipeFeeder]:
        """Feeders for a command's stdout and stderr pipes that share one scrubber, so a
        secret split between the two is caught too. Each writes what is safe to its sink."""
        merge = _Merge(self, 2)
        sinks = (out, err)
        return PipeFeeder(merge, 0, sinks), PipeFeeder(merge, 1, sinks)

    def _scan(self, buf: bytes, final: bool, before: bytes = b"") -> tuple[list[tuple[int, int]], int]:
        """The matches in `buf` that no later byte can change, and where the undecided rest
        of `buf` begins (what is held back until more bytes, or the end, decide it).
        `before` is the byte that came before `buf`: a short secret's match must see it."""
        k = len(before)
        data = before + buf if k else buf
        starts = data.translate(self._first_bytes)  # 0 where a match may begin
        limit = len(data)
        if not final:
            # A match starting before `limit` fits in buf with the byte after it (or, with no
            # newline in any secret, ends before the last newline); from there on, hold back
            # only from where the rest of buf could be the beginning of a match.
            limit = max(len(data) - self._reach + 1, k)
            if not self.spans_newline:
                limit = max(limit, data.rfind(b"\n") + 1)
            first = starts.find(0, limit)
            found = self._partial.search(data, first) if first != -1 else None
            limit = found.start() if found is not None else len(data)
        matches: list[tuple[int, int]] = []
        pos = k
        for start, end in self._finditer(data, starts, k):
            if start >= limit:
                break
            matches.append((start - k, end - k))
            pos = end
        return matches, max(limit, pos) - k

    def _finditer(self, buf: bytes, starts: bytes, begin: int = 0) -> Iterator[tuple[int, int]]:
        """The spans of pattern.finditer(buf, begin). The regex engine tests every byte against
        the bytes that may begin a match, at ~200 MB/s; where those bytes are rare, bytes.find
        skips to each of them and the pattern is tried there only."""
        pattern = self._bpattern
        assert pattern is not None
        if starts.count(0, begin) * _SPARSE > len(buf) - begin:
            yield from (m.span() for m in pattern.finditer(buf, begin))
            return
        pos = starts.find(0, begin)
        while pos != -1:
            match = pattern.match(buf, pos)
            if match is None:
                pos = starts.find(0, pos + 1)
            else:
                yield match.span()
                pos = starts.find(0, match.end())


class _View:
    """One reading of the output (one pipe, or both in arrival order): the bytes it has not
    decided yet, and the position of the first of them in that reading."""

    __slots__ = ("before", "held", "start")

    def __init__(self) -> None:
        self.held = b""
        self.start = 0
        self.before = b""  # the byte before `held`: whether a short secret stands alone


class _Merge:
    """The output of a command's pipes, scrubbed and released in the order it arrived.

    Each pipe is read on its own, so a secret written to one pipe in pieces, with the other
    pipe's output in between, is caught; with two pipes, both are also read together in
    arrival order, so halves written to different pipes are caught. Bytes are released in
    arrival order once no reading can still find a secret in them: whoever reads one pipe,
    or both on one terminal, sees a sequence that was scanned. A match is masked once, on the
    pipe where it starts; its bytes on the other pipe are dropped.
    """

    def __init__(self, scrubber: Scrubber, pipes: int) -> None:
        self._scrub = scrubber
        self._own = [_View() for _ in range(pipes)]
        self._both = _View() if pipes > 1 else None
        self._counts = [0] * pipes  # bytes read from each pipe
        self._arrived = 0
        self._released = 0  # arrival position of _pending[0]
        self._pending = bytearray()
        self._runs: list[list[int]] = []  # [arrival start, pipe, length] of _pending's bytes
        # Per pipe: [position in the pipe, arrival position, length] of its recent reads.
        self._places: list[list[list[int]]] = [[] for _ in range(pipes)]
        self._covered: list[tuple[int, int]] = []  # arrival spans of matches
        self._marks: set[int] = set()  # arrival positions where a mask is written

    def feed(self, pipe: int, chunk: bytes) -> list[tuple[int, bytes]]:
        """Take a read from `pipe`; return what can be released now, as (pipe, bytes)."""
        if self._scrub._bpattern is None:
            return [(pipe, chunk)] if chunk else []
        if not chunk:
            return []
        both, own = self._both, self._own[pipe]
        # Both readings in the same state (nothing held, or only this pipe's latest bytes):
        # scan once for the two.
        shared = both is None or (
            len(both.held) == len(own.held)
            and (not own.held or (self._runs[-1][1] == pipe and self._runs[-1][0] <= both.start))
        )
        start, count = self._arrived, self._counts[pipe]
        self._arrived += len(chunk)
        self._counts[pipe] += len(chunk)
        self._pending += chunk
        if self._runs and self._runs[-1][1] == pipe:
            self._runs[-1][2] += len(chunk)
        else:
            self._runs.append([start, pipe, len(chunk)])
        places = self._places[pipe]
        if places and places[-1][0] + places[-1][2] == count and places[-1][1] + places[-1][2] == start:
            places[-1][2] += len(chunk)
        else:
            places.append([count, start, len(chunk)])
        if shared and both is not None:
            offset = both.start - own.start
            spans = self._advance(own, chunk, final=False)
            both.held, both.start, both.before = own.held, own.start + offset, own.before
            for first, end in spans:
                self._cover([(first + offset, end + offset)])
        else:
            for first, end in self._advance(own, chunk, final=False):
                self._cover(self._arrival(pipe, first, end))
            if both is not None:
                for first, end in self._advance(both, chunk, final=False):
                    self._cover([(first, end)])
        return self._release(self._frontier())

    def finish(self) -> list[tuple[int, bytes]]:
        """The end of the output: decide and release everything."""
        if self._scrub._bpattern is None:
            return []
        for pipe, own in enumerate(self._own):
            for first, end in self._advance(own, b"", final=True):
                self._cover(self._arrival(pipe, first, end))
        if self._both is not None:
            for first, end in self._advance(self._both, b"", final=True):
                self._cover([(first, end)])
        return self._release(self._arrived)

    def _advance(self, view: _View, chunk: bytes, *, final: bool) -> list[tuple[int, int]]:
        buf = view.held + chunk
        matches, cut = self._scrub._scan(buf, final, view.before)
        if cut:
            view.before = buf[cut - 1 : cut]
        spans = [(view.start + first, view.start + end) for first, end in matches]
        view.held, view.start = buf[cut:], view.start + cut
        return spans

    def _arrival(self, pipe: int, first: int, end: int) -> list[tuple[int, int]]:
        """A span of one pipe's bytes as spans of arrival positions."""
        out = []
        for at, arrival, length in self._places[pipe]:
            lo, hi = max(first, at), min(end, at + length)
            if lo < hi:
                out.append((arrival + lo - at, arrival + hi - at))
        return out

    def _cover(self, spans: list[tuple[int, int]]) -> None:
        # Normally nothing of a match has been released; if the other pipe forced its
        # release (_MAX_PENDING), mask what is left of it.
        spans = [(max(first, self._released), end) for first, end in spans if end > self._released]
        if spans:
            self._covered += spans
            self._marks.add(spans[0][0])

    def _frontier(self) -> int:
        """Where the bytes that some reading has not decided begin, in arrival order."""
        frontier = self._arrived if self._both is None else self._both.start
        for pipe, own in enumerate(self._own):
            if own.held:
                frontier = min(frontier, self._arrival(pipe, own.start, own.start + 1)[0][0])
        if self._both is not None and self._arrived - frontier > _MAX_PENDING:
            # One pipe's undecided tail has held up too much of the other's output.
            frontier = self._both.start
        return frontier

    def _release(self, frontier: int) -> list[tuple[int, bytes]]:
        base = self._released
        if frontier <= base:
            return []
        covered = sorted(s for s in self._covered if s[0] < frontier)
        marks = sorted(m for m in self._marks if m < frontier)
        out: list[tuple[int, bytes]] = []
        for run_start, pipe, length in self._runs:
            first, end = max(run_start, base), min(run_start + length, frontier)
            if first >= end:
                continue
            pieces: list[bytes | bytearray] = []
            pos = first
            for lo, hi in covered:
                lo, hi = max(lo, first), min(hi, end)
                if lo >= hi or hi <= pos:
                    continue
                if lo > pos:
                    pieces.append(self._pending[pos - base : lo - base])
                pieces += [_BMASK for m in marks if max(lo, pos) <= m < hi]
                pos = hi
            pieces.append(self._pending[pos - base : end - base])
            data = b"".join(pieces)
            if data:
                out.append((pipe, data))
        del self._pending[: frontier - base]
        self._released = frontier
        self._runs = [r for r in self._runs if r[0] + r[2] > frontier]
        if self._runs and self._runs[0][0] < frontier:
            self._runs[0] = [frontier, self._runs[0][1], self._runs[0][0] + self._runs[0][2] - frontier]
        self._covered = [s for s in self._covered if s[1] > frontier]
        self._marks = {m for m in self._marks if m >= frontier}
        for pipe, own in enumerate(self._own):
            self._places[pipe] = [p for p in self._places[pipe] if p[0] + p[2] > own.start]
        return out


class StreamScrubber:
    """Scrubs one byte stream that arrives in arbitrary chunks.

    A secret split across two reads must still be caught, so the end of what has arrived is
    held back, at most `longest - 1` bytes (`longest` with a short secret, whose next byte
    decides it) and only from where it could be the beginning of a secret, until more data (or
    a newline, or the end) decides it. The held-back bytes stay raw: scrubbing them early could
    replace a shorter secret inside a longer one that is not complete yet, and leak the longer
    one's ends.
    """

    def __init__(self, scrubber: Scrubber) -> None:
        self._merge = _Merge(scrubber, 1)

    def feed(self, chunk: bytes) -> bytes:
        return b"".join(data for _, data in self._merge.feed(0, chunk))

    def flush(self) -> bytes:
        return b"".join(data for _, data in self._merge.finish())


class PipeFeeder:
    """One pipe of a command (stdout or stderr) feeding a scrubber it shares with the other.

    What is read from the pipe goes to `feed`; whatever becomes safe, from either pipe, is
    written to that pipe's sink at once, in the order it arrived. `flush` at the end writes
    the rest of both pipes (once; calling it again does nothing).
    """

    def __init__(self, merge: _Merge, pipe: int, sinks: Sequence[ByteWriter]) -> None:
        self._merge = merge
        self._pipe = pipe
        self._sinks = sinks

    def feed(self, chunk: bytes) -> None:
        self._write(self._merge.feed(self._pipe, chunk))

    def flush(self) -> None:
        self._write(self._merge.finish())
        for sink in dict.fromkeys(self._sinks):
            sink.flush()

    def _write(self, pieces: list[tuple[int, bytes]]) -> None:
        for pipe, data in pieces:
            self._sinks[pipe].write(data)
        for sink in dict.fromkeys(self._sinks[pipe] for pipe, _ in pieces):
            sink.flush()
