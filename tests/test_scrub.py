"""SPEC §11: passwords never appear in what dbos-migrate prints, including streamed output."""

from __future__ import annotations

from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbos_migrate.scrub import MASK, Scrubber, secret_forms

NASTY = "p@ss:w/rd%#?&=+ x"


def forms(secret: str) -> list[str]:
    return sorted({secret, quote(secret, safe=""), quote_plus(secret, safe=""), quote(secret)})


def test_secret_forms_cover_raw_and_encoded() -> None:
    assert secret_forms(NASTY) == set(forms(NASTY))
    assert "p%40ss%3Aw%2Frd%25%23%3F%26%3D%2B%20x" in secret_forms(NASTY)
    assert "p%40ss%3Aw%2Frd%25%23%3F%26%3D%2B+x" in secret_forms(NASTY)
    assert secret_forms("") == set()


@pytest.mark.parametrize("form", forms(NASTY))
def test_text_scrubs_every_form(form: str) -> None:
    s = Scrubber([NASTY])
    out = s.text(f"error: auth failed for {form} (again: {form})")
    assert out == f"error: auth failed for {MASK} (again: {MASK})"


@pytest.mark.parametrize("form", forms(NASTY))
def test_data_scrubs_every_form(form: str) -> None:
    s = Scrubber([NASTY])
    assert s.data(f"<{form}>\n".encode()) == f"<{MASK}>\n".encode()


def test_several_secrets_and_none_values() -> None:
    s = Scrubber([None, "", "alpha-secret", "beta-secret"])
    assert s.active
    assert s.text("alpha-secret beta-secret gamma") == f"{MASK} {MASK} gamma"


def test_public_default_passwords_not_scrubbed_from_free_text() -> None:
    s = Scrubber(["dbos", "postgres"])
    assert not s.active
    assert s.text("schema dbos_migrate on postgres") == "schema dbos_migrate on postgres"
    assert s.data(b"dbos postgres") == b"dbos postgres"


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
    for f in forms(NASTY):
        assert f not in out
    assert out.startswith("dsn=postgresql://u:***@h/db")


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


# ---------------------------------------------------------------------------- streams


def run_stream(s: Scrubber, chunks: list[bytes]) -> bytes:
    st_ = s.stream()
    out = b"".join(st_.feed(c) for c in chunks)
    return out + st_.flush()


@pytest.mark.parametrize("secret", ["hunter2-x", NASTY, "ünï©ødé-pw", "a" * 64])
def test_stream_secret_split_at_every_offset(secret: str) -> None:
    s = Scrubber([secret])
    for form in secret_forms(secret):
        whole = f"line one\nconnecting with {form} now\nbye {form}".encode()
        expected = s.data(whole)
        assert form.encode() not in expected
        for cut in range(len(whole) + 1):
            assert run_stream(s, [whole[:cut], whole[cut:]]) == expected, (form, cut)
        # one byte at a time
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
    assert st_.feed(b"progress 2\npartial") == b"progress 2\n"
    assert st_.flush() == b"partial"


def test_stream_secret_with_newline() -> None:
    secret = "multi\nline-secret"
    s = Scrubber([secret])
    whole = b"x multi\nline-secret y\n"
    for cut in range(len(whole) + 1):
        out = run_stream(s, [whole[:cut], whole[cut:]])
        assert b"line-secret" not in out, cut
        assert out == b"x *** y\n"


secrets_st = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="*"), min_size=4, max_size=24
).filter(lambda s: s not in ("dbos", "postgres"))


@settings(max_examples=300, deadline=None)
@given(
    secret=secrets_st,
    prefix=st.binary(max_size=40),
    suffix=st.binary(max_size=40),
    form_index=st.integers(0, 3),
    cuts=st.lists(st.integers(0, 200), max_size=8),
)
def test_stream_matches_whole_scrub_for_any_chunking(
    secret: str, prefix: bytes, suffix: bytes, form_index: int, cuts: list[int]
) -> None:
    s = Scrubber([secret])
    all_forms = sorted(secret_forms(secret))
    form = all_forms[form_index % len(all_forms)].encode()
    whole = prefix + form + suffix + form
    points = sorted({min(c, len(whole)) for c in cuts})
    chunks = [whole[a:b] for a, b in zip([0, *points], [*points, len(whole)], strict=True)]
    out = run_stream(s, chunks)
    assert out == s.data(whole)
    assert secret.encode() not in out


@settings(max_examples=300, deadline=None)
@given(
    secrets=st.lists(secrets_st, min_size=2, max_size=3),
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
    assert run_stream(s, [b"aZb", b"Z"]) == b"a***b***"


def test_stream_flush_is_idempotent() -> None:
    s = Scrubber(["secret-12345"])
    st_ = s.stream()
    first = st_.feed(b"tail secret-12")
    assert len(first) < len(b"tail secret-12") - len(b"secret-12") + 1
    assert first + st_.flush() == b"tail secret-12"
    assert st_.flush() == b""
