"""The scrubber's exact rules, case by case: what a stream holds back and releases, where a
mask goes when a password is split between reads or pipes, and what the pattern admits.

tests/test_scrub.py proves that no spelling of a password gets through; these pin the rest of
the behaviour docs/security.md describes ("Streams", "Short passwords"), so that a change that
leaks nothing but holds output too long, drops a mask, or masks too much is caught too. Each
case was found by mutation testing (docs/mutation.md): a change of the scrubber that every
other fast test passed.
"""

from __future__ import annotations

import io
import json

import pytest
from helpers import examples
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from dbos_migrate.engine.scrub import _MAX_PENDING, MASK, Scrubber, _backslash_run, _char_unit, _spellings

BMASK = MASK.encode()


@pytest.fixture(autouse=True)
def fresh_patterns() -> None:
    """Each test builds the scrubber's patterns anew: the per-character cache would otherwise
    keep what an earlier test built (or, in a mutation run, the unmutated code's patterns from
    its first pass: docs/mutation.md)."""
    _char_unit.cache_clear()
    _backslash_run.cache_clear()


def widest(secret: str) -> str:
    """The secret with each character in its widest spelling: `Scrubber.longest` bytes."""
    out = []
    for i, ch in enumerate(secret):
        nxt = secret[i + 1] if i + 1 < len(secret) else None
        spelling = _spellings(ch, nxt)[0]  # longest first
        out.append("".join(atom.chars[0] * atom.hi for atom in spelling.atoms))
    return "".join(out)


class Sinks:
    """A command's two sinks, recording every write in order."""

    def __init__(self) -> None:
        self.log: list[tuple[int, bytes]] = []
        self.flushes = 0
        self.out = self._Sink(self, 0)
        self.err = self._Sink(self, 1)

    class _Sink(io.BytesIO):
        def __init__(self, owner: Sinks, index: int) -> None:
            super().__init__()
            self.owner, self.index = owner, index

        def write(self, data: bytes) -> int:  # type: ignore[override]
            self.owner.log.append((self.index, bytes(data)))
            return super().write(data)

        def flush(self) -> None:
            self.owner.flushes += 1

    def terminal(self) -> bytes:
        return b"".join(data for _, data in self.log)

    def pipe(self, index: int) -> bytes:
        return b"".join(data for i, data in self.log if i == index)


def run_pipes(s: Scrubber, reads: list[tuple[int, bytes]]) -> Sinks:
    sinks = Sinks()
    feeders = s.streams(sinks.out, sinks.err)
    for pipe, chunk in reads:
        feeders[pipe].feed(chunk)
    feeders[0].flush()
    feeders[1].flush()
    return sinks


# ---------------------------------------------------------------------------- what a stream holds


def test_a_complete_match_is_released_at_once_whatever_follows() -> None:
    """A match that is complete is masked and released with the read; what follows it is
    released too when it cannot begin the password."""
    s = Scrubber(["abcd"])
    for after in (b" ", b"XXXX", b"xyz!"):
        stream = s.stream()
        assert stream.feed(b"abcd" + after) == BMASK + after, after
        assert stream.flush() == b""


def test_only_the_first_four_characters_are_checked_when_holding_back() -> None:
    """docs/security.md, "Streams": a tail is held from where it could begin a password, and
    only its first four characters are checked; past them it is held whatever follows, until
    a newline or the end decides it."""
    s = Scrubber(["abcdefgh"])
    stream = s.stream()
    assert stream.feed(b"x abcZ") == b"x abcZ"  # the fourth character rules it out
    assert stream.feed(b" abcdZ") == b" "  # four characters matched: held
    assert stream.feed(b"Z\n") == b"abcdZZ\n"


def test_a_widest_spelling_at_the_end_of_a_read_is_masked_at_once() -> None:
    """At most the longest spelling minus one byte is held: a match that takes the whole of
    the longest spelling, ending the read, is decided and masked with it."""
    for secret in ("abcd", "pw-é-x"):
        s = Scrubber([secret])
        form = widest(secret).encode()
        assert len(form) == s.longest
        assert s.data(form) == BMASK
        stream = s.stream()
        assert stream.feed(b"x" + form) == b"x" + BMASK, form
        assert stream.flush() == b""


# ---------------------------------------------------------------------------- stdout + stderr


def test_a_secret_split_between_the_pipes_at_the_very_end_is_masked() -> None:
    """The two pipes read together decide their tail at the end of the output too: halves that
    meet only there, with no newline after them, are masked (a short password as well)."""
    for secret, text in (("Xy7$p@ss:w/o%r", "url: Xy7$p@ss:w/o%r"), ("ab", "pw: ab")):
        s = Scrubber([secret])
        raw = text.encode()
        start = raw.index(secret.encode())
        for cut in range(start + 1, len(raw)):
            sinks = run_pipes(s, [(0, raw[:cut]), (1, raw[cut:])])
            assert sinks.pipe(0) == raw[:start] + BMASK, (secret, cut)
            assert sinks.pipe(1) == b"", (secret, cut)


def test_a_secret_on_one_pipe_after_a_false_start_gets_its_mask() -> None:
    """stdout holds a false start (`abcd` could begin the password), then writes the password
    in two pieces with stderr lines between: only stdout read alone has the match, which begins
    where an earlier read of stdout ended. The mask goes where the match begins."""
    s = Scrubber(["abcdefgh"])
    reads = [(0, b"abcd"), (1, b"n\n"), (0, b"abcdef"), (1, b"m\n"), (0, b"gh\n")]
    sinks = run_pipes(s, reads)
    assert sinks.pipe(0) == b"abcd" + BMASK + b"\n"
    assert sinks.pipe(1) == b"n\nm\n"


def test_a_line_that_begins_the_password_is_released_with_its_newline() -> None:
    """Complete lines are released at once when no password holds a newline, even a line that
    begins like the password: it is the last newline of the read that decides."""
    s = Scrubber(["abcdefgh"])
    stream = s.stream()
    assert stream.feed(b"1\nabcd\nabcd\n") == b"1\nabcd\nabcd\n"
    assert stream.feed(b"abcd\nx abcd") == b"abcd\nx "


def test_at_most_the_longest_spelling_minus_one_byte_is_held() -> None:
    """A read whose beginning looks like the password, then goes on far longer than any
    spelling of it, is released but for its last possible beginning."""
    s = Scrubber(["abcdefgh"])
    stream = s.stream()
    text = b"abcd" + b"x" * (2 * s.longest) + b"a"
    assert stream.feed(text) == text[:-1]
    assert stream.flush() == b"a"


def test_a_short_password_is_judged_by_the_byte_after_it_across_reads() -> None:
    """A password of fewer than four characters is masked only as a whole token; in any
    spelling, a letter right after it (in the next read) makes it part of a word, not a token.
    The stream must wait for that byte even after a spelling as wide as it gets."""
    s = Scrubber(["ab"])
    first = widest("a")
    for spelling in _spellings("b", None):
        form = (first + "".join(atom.chars[0] * atom.hi for atom in spelling.atoms)).encode()
        for after, expected in ((b"x", b"<" + form + b"x"), (b" ", b"<***" + b" ")):
            whole = b"<" + form + after
            assert s.data(whole) == expected, whole
            for cut in range(len(whole) + 1):
                stream = s.stream()
                assert stream.feed(whole[:cut]) + stream.feed(whole[cut:]) + stream.flush() == expected, (
                    whole,
                    cut,
                )


def test_a_match_that_ends_a_read_does_not_begin_another() -> None:
    """The byte before a read (kept to judge a short password's token) is never the start of
    a new match: `%ab%ab%` holds one `%ab%`, not two overlapping ones, however it is read;
    a match that starts right after that byte is found, and so is every match after a near
    miss. With filler, the sparse search (bytes.find to each byte that may begin a match) is
    used rather than the regex's own."""
    s = Scrubber(["%ab%"])
    cases = [
        (b"%ab%ab%", b"***ab%"),
        (b"%ab%%ab%", b"******"),
        (b"%a %ab% %ab%", b"%a *** ***"),
        (b"%%ab%", b"%***"),
    ]
    for filler in (b"", b"." * 400):
        for whole, expected in cases:
            whole, expected = whole + filler, expected + filler
            assert s.data(whole) == expected
            for cut in range(len(whole) + 1):
                stream = s.stream()
                assert stream.feed(whole[:cut]) + stream.feed(whole[cut:]) + stream.flush() == expected, (
                    whole,
                    cut,
                )


def test_halves_that_meet_only_in_arrival_order_hold_both_pipes() -> None:
    """The two pipes read together can hold a beginning that neither pipe holds alone
    (`a` on stderr, `bcd` on stdout, `e` on stderr): nothing of it is released until the
    password is complete, and then it is masked where it starts."""
    s = Scrubber(["abcdefgh"])
    sinks = Sinks()
    out, err = s.streams(sinks.out, sinks.err)
    err.feed(b"a")
    out.feed(b"bcd")
    err.feed(b"e")
    assert sinks.terminal() == b""
    out.feed(b"fgh")
    out.flush()
    err.flush()
    assert sinks.terminal() == BMASK
    assert sinks.pipe(1) == BMASK


def test_the_other_pipe_waits_up_to_exactly_one_mebibyte() -> None:
    """docs/security.md, "Streams": behind one pipe's undecided tail, the other pipe's output
    waits; after 1 MiB it is released anyway. Up to exactly 1 MiB the held tail stays held
    (and is masked when the password completes), also late in a long output."""
    secret = "Xy7$p@ss:w/o%r"
    for before in (0, 600 * 1024):
        s = Scrubber([secret])
        reads = [(1, b"." * before + b"\n")] if before else []
        reads += [
            (0, b"pw: Xy7$"),
            (1, b"x" * (_MAX_PENDING - 4)),
            (0, b"p@ss:w/o%r\n"),
        ]
        sinks = run_pipes(s, reads)
        assert sinks.pipe(0) == b"pw: " + BMASK + b"\n", before


def test_a_run_released_with_a_match_on_the_other_pipe_keeps_to_its_own_bytes() -> None:
    """Both pipes released at once, the password in the middle of stderr's part: each pipe
    gets exactly its own bytes, the mask where the password was."""
    s = Scrubber(["Xy7$p@ss:w/o%r"])
    sinks = run_pipes(s, [(0, b"Xy7"), (1, b"noise Xy7$p@ss:w/o%r more\n"), (0, b"!\n")])
    assert sinks.pipe(0) == b"Xy7!\n"
    assert sinks.pipe(1) == b"noise " + BMASK + b" more\n"
    assert sinks.terminal() == b"Xy7noise " + BMASK + b" more\n!\n"


def test_a_password_with_a_newline_split_between_the_pipes_gets_its_mask() -> None:
    """A password that holds a newline, its last character on stderr: the two pipes read
    together find it; the mask goes on stdout where it starts, and stderr's part is dropped."""
    s = Scrubber(["'éu\n"])
    sinks = run_pipes(s, [(1, b"%"), (0, "&apos;éu".encode()), (1, b"\n;")])
    assert sinks.pipe(0) == BMASK
    assert sinks.pipe(1) == b"%;"


def test_the_record_of_interleaved_reads_is_trimmed_as_output_is_released() -> None:
    """docs/security.md, "Streams": memory stays flat however long the output. Where each
    pipe's reads arrived is kept only for bytes not yet released, so two pipes that take turns
    for a long time keep no growing record."""
    s = Scrubber(["Xy7$p@ss:w/o%r"])
    sinks = Sinks()
    out, err = s.streams(sinks.out, sinks.err)
    for _ in range(300):
        out.feed(b".")
        err.feed(b"-" * 10)
    merge = out._merge
    assert sum(len(places) for places in merge._places) <= 2
    assert len(merge._runs) <= 1
    assert sinks.pipe(0) == b"." * 300


# A secret and reads drawn near its spellings: the characters escapers write, taking turns
# between the pipes.
_NEAR = b"\\%&#;ux0an\n\"'"
_near = st.binary(min_size=1, max_size=8).map(lambda b: bytes(_NEAR[c % len(_NEAR)] for c in b))


@settings(max_examples=examples(200), deadline=None)
@given(
    secret=st.text(alphabet=st.sampled_from("\na\\ué\"%'x0"), min_size=4, max_size=9),
    reads=st.lists(st.tuples(st.integers(0, 1), _near), max_size=10),
)
@example(
    secret='\na\\ué"%\\',
    reads=[
        (0, b"\\"),
        (1, b"%"),
        (0, b"na"),
        (1, '\\ué\\\\\\"'.encode()),
        (1, b"\\"),
        (0, b"u0025"),
        (1, b"\\"),
    ],
)
def test_output_that_holds_no_password_in_any_reading_comes_out_unchanged(
    secret: str, reads: list[tuple[int, bytes]]
) -> None:
    """Where neither pipe alone nor both in arrival order hold a spelling of the password,
    each pipe's output is exactly what the command wrote there, however the reads took turns.
    (The example: pipe readings in different states must not be mixed up.)"""
    s = Scrubber([secret])
    pipes = [b"".join(c for p, c in reads if p == i) for i in (0, 1)]
    terminal = b"".join(c for _, c in reads)
    assume(all(s.data(x) == x for x in (*pipes, terminal)))
    sinks = run_pipes(s, reads)
    assert (sinks.pipe(0), sinks.pipe(1)) == (pipes[0], pipes[1])
    assert sinks.terminal() == terminal


def test_a_whole_password_read_after_the_other_pipe_is_masked_in_place() -> None:
    """stderr has written a line, then stdout writes a whole line with the password: both
    readings are in step, so one scan serves them; the mask lands exactly on the password."""
    s = Scrubber(["Xy7$p@ss:w/o%r"])
    sinks = run_pipes(s, [(1, b"noise\n"), (0, b"pw: Xy7$p@ss:w/o%r ok\n")])
    assert sinks.pipe(0) == b"pw: " + BMASK + b" ok\n"
    assert sinks.pipe(1) == b"noise\n"
    assert sinks.terminal() == b"noise\npw: " + BMASK + b" ok\n"


# ---------------------------------------------------------------------------- what the pattern admits


def test_numeric_references_take_up_to_eight_digits_of_zero_padding_only() -> None:
    """`\\u{...}` and `&#...;` take leading zeros up to eight digits in all; more digits, or
    padding that is not zeros, is no spelling of the character and stays as it is."""
    s = Scrubber(["abcd"])
    for spelled in ("&#00000097;", "&#x00000061;", "\\u{00000061}", "&#97;", "&#X61;"):
        assert s.text(spelled + "bcd") == MASK, spelled
    for near in ("&#000000097;", "&#x000000061;", "\\u{000000061}", "&#xX61;", "\\u{X61}", "&#X97;"):
        assert s.text(near + "bcd") == near + "bcd", near
    # A code point of seven decimal digits takes one zero of padding, no more.
    far = Scrubber(["abc\U0010fffd"])
    assert far.text("abc&#01114109;") == MASK
    assert far.text("abc&#001114109;") == "abc&#001114109;"


def test_a_backslash_before_an_escaped_character_is_read_both_ways() -> None:
    """`\\` then `\\u0075` is a raw backslash and an escaped `u`: the shortcut that skips the
    reading `\\\\` + `u` raw must not skip a longer escape of the next character, nor the raw
    password itself."""
    s = Scrubber(["x\\uy"])
    assert s.text("x\\\\u0075y") == MASK  # raw `\`, then `u` as \u0075
    assert s.text("x\\\\uy") == MASK  # `\` escaped, then `u` raw
    assert s.text("x\\uy") == MASK
    odd = Scrubber(["\\XX\\XXX"])
    assert odd.text("<\\XX\\XXX>") == "<***>"


def test_characters_at_the_edges_of_the_escape_ranges() -> None:
    """`\\xHH` is for code points below 0x100, `\\uXXXX` below 0x10000, and a surrogate pair
    beyond (JSON's ensure_ascii): U+0100 has no `\\x100`, U+10000 and U+10400 are written as
    surrogate pairs whose halves end in zero bits."""
    s = Scrubber(["ab\U00010000\U00010400"])
    assert s.text(json.dumps("ab\U00010000\U00010400")) == f'"{MASK}"'
    edge = Scrubber(["ab\u0100c"])
    assert edge.text("ab\\u0100c") == MASK
    assert edge.text("ab\\x100c") == "ab\\x100c"
