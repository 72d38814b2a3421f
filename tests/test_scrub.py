"""Passwords never appear in what dbos-migrate prints, including streamed output.

A command may print the password through any tool's escaping (tests/spellings.py), split
across reads, or split between stdout and stderr; docs/security.md describes what is caught.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from helpers import examples, history_rows, one_json, write_config
from hypothesis import given, settings
from hypothesis import strategies as st
from pgharness import ClusterFactory, run_cli
from spellings import SPELLINGS

from dbos_migrate.engine.scrub import (
    MASK,
    SHORT_SECRET,
    Scrubber,
    _backslash_run,
    _char_regex,
    _char_unit,
    _Secret,
    _spellings,
)

NASTY = "p@ss:w/rd%#?&=+ x"
# The hostile review's password: every character some escaper rewrites.
REVIEW = 'Xy7$p@ss:w/o%r#d?&=x"q\\z'
NAMES = sorted(SPELLINGS)


@pytest.fixture(autouse=True)
def fresh_patterns() -> None:
    """Each test builds the scrubber's patterns anew: the per-character cache would otherwise
    keep what an earlier test built (or, in a mutation run, the unmutated code's patterns from
    its first pass: docs/mutation.md)."""
    _char_unit.cache_clear()
    _backslash_run.cache_clear()


def bash_q(value: str, locale: str = "C.UTF-8") -> str:
    """bash's `printf %q`: backslashes in a UTF-8 locale, $'\\ooo' for non-ASCII in C."""
    done = subprocess.run(
        ["bash", "-c", 'printf %q "$1"', "bash", value],
        env={"LC_ALL": locale, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def spelled(name: str, secret: str) -> str:
    return bash_q(secret) if name == "bash_q" else SPELLINGS[name](secret)


# ---------------------------------------------------------------------------- one per spelling


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("secret", [REVIEW, NASTY, "ünï©ødé pw 😀 \\u00e9"])
def test_text_and_data_scrub_every_spelling(name: str, secret: str) -> None:
    s = Scrubber([secret])
    form = SPELLINGS[name](secret)
    assert s.text(f"error: auth failed for {form} (again: {form})") == f"error: auth failed for {MASK} (again: {MASK})"
    assert s.data(f"<{form}>\n".encode()) == f"<{MASK}>\n".encode()


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
@pytest.mark.parametrize("secret", [REVIEW, "ünï©ødé pw 😀'\"\t"])
def test_bash_printf_q(locale: str, secret: str) -> None:
    form = bash_q(secret, locale)
    assert form != secret
    out = Scrubber([secret]).text(f"[{form}]")
    assert out in (f"[{MASK}]", f"[$'{MASK}']"), out  # C quotes it as $'...'


def test_review_password_has_many_distinct_spellings() -> None:
    """The spellings test something: the review's password gets many distinct forms."""
    forms = {SPELLINGS[n](REVIEW) for n in NAMES} | {bash_q(REVIEW)}
    assert len(forms) >= 15
    assert 'Xy7$p@ss:w/o%r#d?&=x\\"q\\\\z' in forms  # json
    assert "Xy7%24p%40ss%3aw%2fo%25r%23d%3f%26%3dx%22q%5cz" in forms  # lower-case percent
    assert "Xy7$p%40ss%3Aw%2Fo%r%23d%3F&%3Dx%22q%5Cz" in forms  # WHATWG userinfo: % and & stay raw


# Printable Unicode, with the characters escapers treat specially drawn often. `*` is left
# out: the mask is made of it, so a secret of stars would "appear" in every mask.
secret_chars = st.one_of(
    st.sampled_from("%\\\"'&<>$ #?=@:/+;xu0"),
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"), exclude_characters="*"),
)
secrets_st = st.text(alphabet=secret_chars, min_size=1, max_size=24).filter(lambda s: s not in ("dbos", "postgres"))


@settings(max_examples=examples(150), deadline=None)
@given(secret=secrets_st, name=st.sampled_from(NAMES))
def test_any_printable_secret_in_any_spelling(secret: str, name: str) -> None:
    s = Scrubber([secret])
    form = SPELLINGS[name](secret)
    # \x01 and \x02 are no spelling of a printable character: the match is exactly the form.
    assert s.text(f"\x01{form}\x02") == f"\x01{MASK}\x02"
    assert s.data(f"\x01{form}\x02".encode()) == f"\x01{MASK}\x02".encode()


@settings(max_examples=examples(40), deadline=None)
@given(secret=secrets_st)
def test_any_printable_secret_through_bash_q(secret: str) -> None:
    out = Scrubber([secret]).text(f"\x01{bash_q(secret)}\x02")
    assert out == f"\x01{MASK}\x02"


@settings(max_examples=examples(200), deadline=None)
@given(secret=secrets_st, data=st.data())
def test_any_mix_of_spellings(secret: str, data: st.DataObject) -> None:
    """Each character spelled its own way (JSON inside a URL, a tool escaping only some)."""
    names = data.draw(st.lists(st.sampled_from(NAMES), min_size=len(secret), max_size=len(secret)))
    form = "".join(SPELLINGS[n](ch) for n, ch in zip(names, secret, strict=True))
    assert Scrubber([secret]).text(f"\x01{form}\x02") == f"\x01{MASK}\x02"


@settings(max_examples=examples(300), deadline=None)
@given(
    secret=st.text(alphabet=st.sampled_from("\\ux0{a5"), min_size=1, max_size=8),
    text=st.text(alphabet=st.sampled_from("\\ux0{}a5%&#;7cC"), max_size=30),
)
def test_backslash_shortcuts_lose_no_match(secret: str, text: str) -> None:
    """Where `\\\\` + the next character raw reads the same text as `\\` + `\\next`, only the
    first is tried, and a run of backslashes is counted rather than spelled per character: that
    keeps near misses from being tried 2^backslashes ways. Neither may lose a match of the
    plain pattern, one alternation of every spelling per character."""
    plain = re.compile("".join(_char_regex(_spellings(ch, None)) for ch in secret))
    used = re.compile(_Secret(secret).body)  # the short-secret token rule is tested on its own
    for pos in range(len(text) + 1):
        if plain.match(text, pos):
            assert used.match(text, pos), (pos, text)
        elif "\\\\" not in secret:  # a run may also admit a few more texts
            assert not used.match(text, pos), (pos, text)


def test_config_password_in_command_text() -> None:
    """Command text (headers, history, JSON, step summary) goes through Scrubber.text."""
    s = Scrubber([REVIEW])
    lower = SPELLINGS["percent_lower"](REVIEW)
    escaped = SPELLINGS["json"](REVIEW)
    assert s.text(f"psql 'postgresql://u:{lower}@h/db' -c 'select 1'") == "psql 'postgresql://u:***@h/db' -c 'select 1'"
    assert s.text(f'echo "{escaped}"') == 'echo "***"'


# ---------------------------------------------------------------------------- existing rules


def test_several_secrets_and_none_values() -> None:
    s = Scrubber([None, "", "alpha-secret", "beta-secret"])
    assert s.active
    assert s.text("alpha-secret beta-secret gamma") == f"{MASK} {MASK} gamma"


def test_public_default_passwords_not_scrubbed_from_free_text() -> None:
    s = Scrubber(["dbos", "postgres"])
    assert not s.active
    assert s.text("schema dbos_migrate on postgres") == "schema dbos_migrate on postgres"
    assert s.data(b"dbos postgres") == b"dbos postgres"
    assert s.text("postgresql://postgres:dbos@localhost:5432") == "postgresql://postgres:***@localhost:5432"


def test_urls_with_unknown_passwords_are_masked() -> None:
    s = Scrubber([])
    out = s.text("connection to postgresql://admin:Unknown-Pw1@db.example.com:5432/app failed")
    assert out == "connection to postgresql://admin:***@db.example.com:5432/app failed"
    assert s.text("postgres://:pw2@h/db and mysql://u:pw3@h") == "postgres://:***@h/db and mysql://u:***@h"


def test_url_without_password_untouched() -> None:
    s = Scrubber([])
    assert s.text("see https://docs.dbos.dev/x and postgresql://u@h/db") == (
        "see https://docs.dbos.dev/x and postgresql://u@h/db"
    )


def test_url_with_nasty_known_password_in_free_text() -> None:
    s = Scrubber([NASTY])
    line = f"dsn=postgresql://u:{quote(NASTY, safe='')}@h/db raw={NASTY}"
    out = s.text(line)
    assert NASTY not in out and quote(NASTY, safe="") not in out
    assert out == "dsn=postgresql://u:***@h/db raw=***"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("host=h password=s3cret dbname=x", "host=h password=*** dbname=x"),
        ("password = 's3 cret' user=u", "password = *** user=u"),
        ("PASSWORD=abc", "PASSWORD=***"),
        ("?sslmode=require&password=abc", "?sslmode=require&password=***"),
        ("sslpassword=keypass host=h", "sslpassword=*** host=h"),
        ("PGPASSWORD=hunter22 psql -c 'select 1'", "PGPASSWORD=*** psql -c 'select 1'"),
    ],
)
def test_password_key_values_are_masked(line: str, expected: str) -> None:
    assert Scrubber([]).text(line) == expected


def test_mask_does_not_grow_on_rescrub() -> None:
    s = Scrubber(["s3cr3t-value"])
    once = s.text("a s3cr3t-value b")
    assert s.text(once) == once


# ---------------------------------------------------------------------------- one stream


def run_stream(s: Scrubber, chunks: list[bytes]) -> bytes:
    st_ = s.stream()
    out = b"".join(st_.feed(c) for c in chunks)
    return out + st_.flush()


@pytest.mark.parametrize("name", NAMES)
def test_stream_every_spelling_split_at_every_offset(name: str) -> None:
    s = Scrubber([REVIEW])
    form = SPELLINGS[name](REVIEW)
    whole = f"line one\nconnecting with {form} now\nbye {form}".encode()
    expected = s.data(whole)
    assert expected == b"line one\nconnecting with *** now\nbye ***"
    for cut in range(len(whole) + 1):
        assert run_stream(s, [whole[:cut], whole[cut:]]) == expected, (form, cut)
    assert run_stream(s, [bytes([b]) for b in whole]) == expected


@pytest.mark.parametrize("secret", ["hunter2-x", NASTY, "ünï©ødé-pw", "a" * 64, "\\\\\\\\"])
def test_stream_secret_split_at_every_offset(secret: str) -> None:
    s = Scrubber([secret])
    for name in ("raw", "percent", "json", "html"):
        form = SPELLINGS[name](secret)
        whole = f"line one\nconnecting with {form} now\nbye {form}".encode()
        expected = s.data(whole)
        assert form.encode() not in expected
        for cut in range(len(whole) + 1):
            assert run_stream(s, [whole[:cut], whole[cut:]]) == expected, (form, cut)
        assert run_stream(s, [bytes([b]) for b in whole]) == expected


def test_stream_without_secrets_passes_through() -> None:
    s = Scrubber([])
    st_ = s.stream()
    assert st_.feed(b"abc") == b"abc"
    assert st_.flush() == b""


def test_stream_releases_complete_lines_promptly() -> None:
    s = Scrubber(["a-long-secret-value"])
    st_ = s.stream()
    assert st_.feed(b"progress 1\n") == b"progress 1\n"
    assert st_.feed(b"progress 2\npartial a-lo") == b"progress 2\npartial "
    assert st_.flush() == b"a-lo"


def test_stream_holds_back_only_what_could_begin_a_secret() -> None:
    """Without a newline, a tail is held only from where it could begin a spelling."""
    s = Scrubber([REVIEW])
    st_ = s.stream()
    assert st_.feed(b"Applying 0001_initial... ") == b"Applying 0001_initial... "
    assert st_.feed(b"50% Xy7") == b"50% "  # `%` followed by a space cannot begin `%58`
    assert st_.feed(b"!") == b"Xy7!"
    assert st_.feed(b" \\") == b" "  # could be `\X`, `\x58`, ...
    assert st_.flush() == b"\\"


def test_stream_secret_with_newline() -> None:
    secret = "multi\nline-secret"
    s = Scrubber([secret])
    whole = b"x multi\nline-secret y\n"
    for cut in range(len(whole) + 1):
        out = run_stream(s, [whole[:cut], whole[cut:]])
        assert b"line-secret" not in out, cut
        assert out == b"x *** y\n"
    escaped = b'x "multi\\nline-secret" y\n'  # JSON: the newline is `\n`, no newline to wait for
    assert run_stream(s, [escaped[:9], escaped[9:]]) == b'x "***" y\n'


@settings(max_examples=examples(300), deadline=None)
@given(
    secret=secrets_st,
    prefix=st.binary(max_size=40),
    suffix=st.binary(max_size=40),
    name=st.sampled_from(NAMES),
    cuts=st.lists(st.integers(0, 400), max_size=8),
)
def test_stream_matches_whole_scrub_for_any_chunking(
    secret: str, prefix: bytes, suffix: bytes, name: str, cuts: list[int]
) -> None:
    s = Scrubber([secret])
    form = SPELLINGS[name](secret).encode()
    whole = prefix + form + suffix + form
    points = sorted({min(c, len(whole)) for c in cuts})
    chunks = [whole[a:b] for a, b in zip([0, *points], [*points, len(whole)], strict=True)]
    out = run_stream(s, chunks)
    assert out == s.data(whole)
    if len(secret) >= SHORT_SECRET:  # a shorter one may stand next to a letter: left alone
        assert form not in out


@settings(max_examples=examples(300), deadline=None)
@given(
    secrets=st.lists(secrets_st.filter(lambda s: len(s) >= 4), min_size=2, max_size=3),
    filler=st.binary(max_size=16),
    data=st.data(),
)
def test_stream_with_several_overlapping_secrets(secrets: list[str], filler: bytes, data: st.DataObject) -> None:
    """Secrets that contain one another must not leave pieces behind at a chunk boundary."""
    s = Scrubber(secrets)
    whole = filler + b" ".join(x.encode() for x in secrets) + filler
    cut = data.draw(st.integers(0, len(whole)))
    out = run_stream(s, [whole[:cut], whole[cut:]])
    assert out == s.data(whole)
    for x in secrets:
        assert x.encode() not in out


def test_stream_infix_secret_at_boundary() -> None:
    """Two secrets, one inside the other: a read ending inside the longer one must not
    let the shorter one's replacement break the longer one's match (leaking its ends)."""
    s = Scrubber(["XXouterYY-secret", "outer"])
    whole = b"start XXouterYY-secret end"
    expected = s.data(whole)
    assert expected == b"start *** end"
    for cut in range(len(whole) + 1):
        assert run_stream(s, [whole[:cut], whole[cut:]]) == expected, cut


def test_stream_scrubs_a_one_character_secret() -> None:
    """With nothing to hold back, the stream must still scrub (it used to pass chunks through)."""
    s = Scrubber(["Z"])
    assert run_stream(s, [b"a Z b ", b"Z"]) == b"a *** b ***"
    assert run_stream(s, [b"a %5", b"A \\x5", b"A"]) == b"a *** ***"


def test_stream_flush_is_idempotent() -> None:
    s = Scrubber(["secret-12345"])
    st_ = s.stream()
    first = st_.feed(b"tail secret-12")
    assert first == b"tail "
    assert first + st_.flush() == b"tail secret-12"
    assert st_.flush() == b""


# ---------------------------------------------------------------------------- stdout + stderr


class Sinks:
    """A command's two sinks, recording every write in order (as one terminal would show it)."""

    def __init__(self, same: bool = False) -> None:
        self.log: list[tuple[int, bytes]] = []
        self.out = self._Sink(self, 0)
        self.err = self.out if same else self._Sink(self, 1)

    class _Sink(io.BytesIO):
        def __init__(self, owner: Sinks, index: int) -> None:
            super().__init__()
            self.owner, self.index = owner, index

        def write(self, data: bytes) -> int:  # type: ignore[override]
            self.owner.log.append((self.index, bytes(data)))
            return super().write(data)

    def terminal(self) -> bytes:
        return b"".join(data for _, data in self.log)

    def pipe(self, index: int) -> bytes:
        return b"".join(data for i, data in self.log if i == index)


def run_pipes(s: Scrubber, reads: list[tuple[int, bytes]], same: bool = False) -> Sinks:
    sinks = Sinks(same)
    feeders = s.streams(sinks.out, sinks.err)
    for pipe, chunk in reads:
        feeders[pipe].feed(chunk)
    feeders[0].flush()
    feeders[1].flush()
    return sinks


@pytest.mark.parametrize("name", ["raw", "json", "percent_lower", "html", "whatwg_userinfo"])
def test_secret_split_between_stdout_and_stderr(name: str) -> None:
    """`printf '%s' first-half; printf '%s' second-half >&2`: on a terminal the halves are
    joined. The mask goes where the match starts; the other pipe's part is dropped."""
    s = Scrubber([REVIEW])
    form = SPELLINGS[name](REVIEW).encode()
    for cut in range(1, len(form)):
        sinks = run_pipes(s, [(0, b"url: " + form[:cut]), (1, form[cut:] + b"\nnext\n")])
        assert sinks.pipe(0) == b"url: ***", (name, cut)
        assert sinks.pipe(1) == b"\nnext\n", (name, cut)


def test_secret_on_one_pipe_interrupted_by_the_other() -> None:
    """Written to stdout in two pieces with a stderr line between them: stdout alone (a file,
    a CI log) would show the whole password, so stdout is read on its own too."""
    s = Scrubber([REVIEW])
    form = SPELLINGS["json"](REVIEW).encode()
    for cut in range(1, len(form)):
        sinks = run_pipes(s, [(0, b"a " + form[:cut]), (1, b"warning: slow\n"), (0, form[cut:] + b" b\n")])
        assert sinks.pipe(0) == b"a *** b\n", cut
        assert sinks.pipe(1) == b"warning: slow\n", cut


def test_pipes_without_secrets_pass_through_in_arrival_order() -> None:
    s = Scrubber([REVIEW])
    reads = [(0, b"one\n"), (1, b"two "), (0, b"three"), (1, b" four\n"), (0, b"\n")]
    sinks = run_pipes(s, reads)
    assert sinks.pipe(0) == b"one\nthree\n"
    assert sinks.pipe(1) == b"two  four\n"
    assert sinks.terminal() == b"one\ntwo three four\n\n"
    assert run_pipes(Scrubber([]), reads).terminal() == sinks.terminal()


def test_stderr_lines_are_not_held_behind_a_quiet_stdout() -> None:
    s = Scrubber([REVIEW])
    sinks = Sinks()
    out, err = s.streams(sinks.out, sinks.err)
    out.feed(b"Running migrations... ")
    err.feed(b"INFO step 1\n")
    err.feed(b"INFO step 2\n")
    assert sinks.terminal() == b"Running migrations... INFO step 1\nINFO step 2\n"


def test_undecided_tail_holds_the_other_pipe_within_a_bound() -> None:
    """stdout ends with what could begin the password: stderr waits behind it (in arrival
    order), but not without bound."""
    s = Scrubber([REVIEW])
    sinks = Sinks()
    out, err = s.streams(sinks.out, sinks.err)
    out.feed(b"pw: Xy7$")
    err.feed(b"log line\n")
    assert sinks.terminal() == b"pw: "
    out.feed(b"!\n")
    assert sinks.terminal() == b"pw: Xy7$log line\n!\n"
    out.feed(b"again Xy7$")
    for _ in range(40):
        err.feed(b"x" * 65535 + b"\n")
    assert len(sinks.pipe(1)) > 2 * 65536
    out.flush()
    assert sinks.pipe(0) == b"pw: Xy7$!\nagain Xy7$"


@settings(max_examples=examples(300), deadline=None)
@given(
    secret=secrets_st.filter(lambda s: len(s) >= SHORT_SECRET),  # shorter: whole tokens only
    name=st.sampled_from(NAMES),
    noise=st.lists(st.tuples(st.integers(0, 1), st.binary(min_size=1, max_size=12)), max_size=6),
    layout=st.sampled_from(["out", "err", "across", "interleaved"]),
    data=st.data(),
)
def test_pipes_never_show_a_secret(
    secret: str, name: str, noise: list[tuple[int, bytes]], layout: str, data: st.DataObject
) -> None:
    """Whatever the chunking and interleaving: no spelling on either pipe alone, nor on a
    terminal showing both, and a pipe's own text around it is kept."""
    s = Scrubber([secret])
    form = SPELLINGS[name](secret).encode()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(form)), max_size=4)))
    pieces = [form[a:b] for a, b in zip([0, *cuts], [*cuts, len(form)], strict=True)]
    if layout == "across":
        reads = [(i % 2, p) for i, p in enumerate(pieces)]
    elif layout == "interleaved":  # one pipe, the other writing in between
        reads = []
        for i, p in enumerate(pieces):
            reads.append((0, p))
            if i < len(noise):
                reads.append((1, noise[i][1]))
    else:
        reads = [(0 if layout == "out" else 1, p) for p in pieces]
    position = data.draw(st.integers(0, len(noise)))
    reads = noise[:position] + reads + noise[position:]
    reads = [(pipe, chunk) for pipe, chunk in reads if chunk]
    for same in (False, True):
        sinks = run_pipes(s, reads, same)
        for shown in (sinks.pipe(0), sinks.pipe(1), sinks.terminal()):
            assert form not in shown
            assert secret.encode() not in shown


# ---------------------------------------------------------------------------- end to end


def node_spellings(password: str) -> dict[str, str]:
    done = subprocess.run(
        ["node", "-e", NODE_SPELL, "out"],
        env={"PGPASSWORD": password},
        capture_output=True,
        text=True,
        check=True,
    )
    pairs = (line.split("=", 1) for line in done.stdout.splitlines())
    return {name: value.strip("\"'") for name, value in pairs}


# Node's own escapers: JSON.stringify, util.inspect, encodeURIComponent, WHATWG URL userinfo.
NODE_SPELL = """
const pw = process.env.PGPASSWORD;
const u = new URL('postgresql://user@host/db'); u.password = pw;
const out = process.argv[process.argv.length - 1] === 'err' ? process.stderr : process.stdout;
out.write(['node_json=' + JSON.stringify(pw), 'node_inspect=' + require('util').inspect(pw),
           'node_uric=' + encodeURIComponent(pw), 'node_userinfo=' + u.password].join('\\n') + '\\n');
"""


def test_password_in_every_spelling_never_reaches_output_or_history(
    tmp_path: Path, own_cluster: ClusterFactory
) -> None:
    """`up` with commands that print $PGPASSWORD in every spelling, on stdout and stderr,
    split between the two, and written into the command text itself (header, history, JSON,
    step summary): no spelling survives anywhere."""
    cluster = own_cluster(password=REVIEW)
    url = cluster.url()
    python = sys.executable
    spell = Path(__file__).with_name("spellings.py")
    forms = {name: spell_(REVIEW) for name, spell_ in SPELLINGS.items()}
    forms |= {"bash_q": bash_q(REVIEW), "bash_q_c": bash_q(REVIEW, "C")}
    commands = [
        f'"{python}" "{spell}" out',
        f'"{python}" "{spell}" err',
        'bash -c \'printf "bash_q=%q\\n" "$PGPASSWORD"; printf "bash_q=%q\\n" "$PGPASSWORD" >&2\'',
        # The review's split: the halves only meet on a terminal.
        'rest="${PGPASSWORD#????????????}"; printf \'split=%s\' "${PGPASSWORD%"$rest"}"; printf \'%s\\n\' "$rest" >&2',
        # The password written into the command text, as the config's author might have.
        f"printf '%s\\n' 'literal_lower={forms['percent_lower']}'",
        f"printf '%s\\n' 'literal_json={forms['json']}' >&2",
    ]
    labels = [*SPELLINGS, "bash_q", "split", "literal_lower", "literal_json"]
    if shutil.which("node"):
        node = tmp_path / "spell.js"
        node.write_text(NODE_SPELL)
        commands += [f'node "{node}" out', f'node "{node}" err']
        forms |= node_spellings(REVIEW)
        labels += ["node_json", "node_inspect", "node_uric", "node_userinfo"]
    assert "'" not in REVIEW  # the commands quote it with ''
    cfg = write_config(tmp_path / "app", app_db_name="spelled_app", migrate=commands)
    summary = tmp_path / "summary.md"
    env: dict[str, str | None] = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
        "NO_COLOR": "1",
    }

    text = run_cli("up", "-c", cfg, "-D", url, env=env)
    assert text.returncode == 0, text.stdout + text.stderr
    as_json = run_cli("up", "-c", cfg, "-D", url, "-o", "json", env=env)
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    one_json(as_json.stdout)
    rows = history_rows(url, "spelled_app")
    assert len(rows) == 2 * len(commands)

    seen = {
        "stdout": text.stdout,
        "stderr": text.stderr,
        "json stdout": as_json.stdout,
        "json stderr": as_json.stderr,
        "step summary": summary.read_text(),
        "history": json.dumps(rows, default=str, ensure_ascii=False) + repr(rows),
    }
    for where, shown in seen.items():
        for name, form in forms.items():
            assert form not in shown, f"{name} spelling {form!r} leaked into {where}:\n{shown}"
        for half in (REVIEW[:12], REVIEW[12:]):
            assert half not in shown, f"half of the password leaked into {where}"
    for label in labels:  # each spelling was printed, and masked (node's keep their quotes)
        printed = re.compile(rf"^{label}=[\"'`]?\*\*\*", re.M)
        assert printed.search(text.stdout + text.stderr), f"{label} was not printed and masked"
        assert printed.search(as_json.stderr), f"{label} was not printed and masked (json)"
    assert "split=***" in text.stdout  # the mask goes where the match starts


# ---------------------------------------------------------------------------- quotes doubled, JSON twice


@pytest.mark.parametrize("secret", ["dep'l\"oy pw", REVIEW, "a\\\\b\\"])
def test_sql_csv_and_json_twice_spellings(secret: str) -> None:
    """The review's leaks: a password in an SQL literal (`'dep''l"oy pw'`), a CSV field or SQL
    identifier (`"dep'l""oy pw"`), and JSON of JSON (a log line whose message is JSON)."""
    s = Scrubber([secret])
    forms = [
        "'" + secret.replace("'", "''") + "'",
        '"' + secret.replace('"', '""') + '"',
        json.dumps(json.dumps(secret)),
        json.dumps(json.dumps(secret, ensure_ascii=False), ensure_ascii=False),
        json.dumps(repr(secret)),
    ]
    for form in forms:
        out = s.text(f"<{form}>")
        assert out.count(MASK) == 1 and "oy" not in out and "Xy7" not in out, (form, out)
        assert s.data(f"<{form}>".encode()).count(MASK.encode()) == 1


# ---------------------------------------------------------------------------- short passwords


@pytest.mark.parametrize(
    ("secret", "text", "expected"),
    [
        ("5", "connection to port 5 failed", "connection to port *** failed"),
        ("p", "could not connect to port 5432", "could not connect to port 5432"),
        ("p", "password p rejected for 'p' (p)", "password *** rejected for '***' (***)"),
        ("ab", "tab abc ab_x ab.", "tab abc ab_x ***."),
        ("a%", "url postgresql://u:a%25@h/db", "url postgresql://u:***@h/db"),
        ("é", "café é", "café ***"),
        ("abc", "abcd xabc abc", "abcd xabc ***"),
        ("abcd", "xabcdx", "x***x"),  # four characters and more: masked anywhere
    ],
)
def test_a_short_password_is_masked_only_as_a_whole_token(secret: str, text: str, expected: str) -> None:
    """Masked everywhere, a one-character password shows itself by what it mangles
    (`***ort 5` says the password is `p`): below four characters only whole tokens are masked."""
    s = Scrubber([secret])
    assert s.text(text) == expected
    assert s.data(text.encode()) == expected.encode()
    raw = text.encode()
    for cut in range(len(raw) + 1):  # a stream decides a token's ends across reads
        assert run_stream(s, [raw[:cut], raw[cut:]]) == expected.encode(), cut
    assert Scrubber(["p"]).weak == 1 and Scrubber(["long-enough"]).weak == 0
