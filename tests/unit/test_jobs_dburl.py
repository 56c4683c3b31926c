"""DATABASE_URL parsing and the masking of this run's credentials (pure, no database).

Invariants, for generated URLs: parsing raises nothing but DatabaseUrlError, and its messages
quote no part of the URL; every form of the password libpq accepts (user-info percent-encoded or
raw, the `password` query parameter) is recovered exactly; rendering round-trips; the masked
rendering does not depend on the password at all; masking removes every spelling of a
credential of MIN_BARE_CHARS or more from any text, and leaves text that holds no credential
context untouched whatever the credential's length.
"""

from __future__ import annotations

import contextlib
import re
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from psycopg import pq

from crontask_jobs import masking
from crontask_jobs.dburl import (
    LIBPQ_KEYWORDS,
    SECRET_KEYWORDS,
    DatabaseTarget,
    DatabaseUrlError,
    parse_database_url,
)
from crontask_jobs.masking import MASK, MIN_BARE_CHARS, build_masker, masker_for
from crontask_jobs.messages import safe_text

# Anything UTF-8 can carry except control characters (refused in a URL) and lone surrogates.
PRINTABLE = st.characters(blacklist_categories=("Cc", "Cs"))
SECRETS = st.text(PRINTABLE, min_size=1, max_size=24)
NAMES = st.text(PRINTABLE, min_size=1, max_size=16)
HOSTS = st.sampled_from(["db.example", "127.0.0.1", "localhost", "db-1.svc.cluster.local"])
PORTS = st.sampled_from(["", "5432", "6432", "65535", "1"])


def userinfo_url(user: str, password: str, host: str = "db.example", port: str = "5432",
                 db: str = "app", query: str = "") -> str:
    netloc = host + (f":{port}" if port else "")
    return (f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{netloc}/"
            f"{quote(db, safe='')}" + (f"?{query}" if query else ""))


def test_the_keyword_list_is_the_drivers_libpq() -> None:
    known = {d.keyword.decode() for d in pq.Conninfo.get_defaults()}
    assert known == LIBPQ_KEYWORDS
    stars = {d.keyword.decode() for d in pq.Conninfo.get_defaults() if d.dispchar == b"*"}
    assert stars <= SECRET_KEYWORDS


def test_the_forms_libpq_accepts() -> None:
    cases = {
        "postgresql://app:s3cret@db:5432/app": ("app", "s3cret", "db", "5432", "app"),
        "postgres://app:p%40ss%2Fw@db/app": ("app", "p@ss/w", "db", "", "app"),
        "postgresql://app:p@ss@db/app": ("app", "p@ss", "db", "", "app"),
        "postgresql://app:a:b:c@db/app": ("app", "a:b:c", "db", "", "app"),
        "postgresql://app@db/app?password=s3cret": ("app", None, "db", "", "app"),
        "postgresql://[::1]:6432/app": (None, None, "::1", "6432", "app"),
        "postgresql://%2Fvar%2Frun%2Fpostgresql/app": (None, None, "/var/run/postgresql", "",
                                                        "app"),
        "postgresql://": (None, None, "", "", None),
    }
    for url, (user, password, host, port, db) in cases.items():
        t = parse_database_url(url)
        assert (t.user, t.password, t.hosts[0], t.ports[0], t.dbname) == (
            user, password, host, port, db), url
    t = parse_database_url("postgresql://u@h1:5432,h2:5433/app?password=x&sslmode=require"
                           "&target_session_attrs=read-write&ssl=true")
    assert t.keywords() == {"host": "h1,h2", "port": "5432,5433", "user": "u", "dbname": "app",
                            "password": "x", "sslmode": "require",
                            "target_session_attrs": "read-write"}
    # A query parameter overrides the URL part, as in libpq.
    assert parse_database_url("postgresql://u:a@h/app?password=b").keywords()["password"] == "b"


@pytest.mark.parametrize(("url", "message"), [
    ("postgresql://app:hunter2@db:port/app", "port is not a number"),
    ("postgresql://app:hunter2@db:99999/app", "port is not a number"),
    ("postgresql://app:hunter2@[::1/app", "unbalanced"),
    ("postgresql://app:hunter2@::1]/app", "unbalanced"),
    ("postgresql://app:hunter2@[::1]x/app", "bracketed host"),
    ("postgresql://app:hunter2@db/app?sslmode=hunter2", "sslmode must be one of"),
    ("postgresql://app:hunter2@db/app?hunter2=1", "not a libpq connection keyword"),
    ("postgresql://app:hunter2@db/app?hunter2", "not key=value"),
    ("postgresql://app:hunter2@db/app?connect_timeout=hunter2", "whole number"),
    ("postgresql://app:hunt%zzer2@db/app", "percent-encode '%'"),
    ("postgresql://app:hunter2%00@db/app", "%00"),
    ("postgresql://app:hunter2%FF@db/app", "not valid UTF-8"),
    ("postgresql://app:hunt/er2@db/app", "'@' after the host"),
    ("postgresql://app:hunter2@db/my@db", "'@' after the host"),
    ("postgresql://app:hunter2\n@db/app", "control character"),
    ("postgresql://app:hunter2@db/app\n", None),  # a trailing newline is only whitespace
    ("hunter2", "must start with postgresql://"),
    ("postgresql:hunter2@db", "must start with postgresql://"),
    ("   ", "empty"),
])
def test_malformed_urls_are_refused_without_quoting_them(url: str, message: str | None) -> None:
    if message is None:
        assert parse_database_url(url).dbname == "app"
        return
    with pytest.raises(DatabaseUrlError, match=message) as info:
        parse_database_url(url)
    assert "hunter2" not in str(info.value)
    assert "hunt" not in str(info.value)


@given(st.text(max_size=120))
def test_parse_never_raises_anything_else(text: str) -> None:
    with contextlib.suppress(DatabaseUrlError):
        parse_database_url(text)


@given(st.text(st.sampled_from("postgresql:/@?&=%[],:.abc01"), max_size=60))
def test_parse_never_raises_on_url_shaped_garbage(text: str) -> None:
    try:
        target = parse_database_url(text)
    except DatabaseUrlError:
        return
    assert parse_database_url(target.render(masked=False)).keywords() == target.keywords()


@given(NAMES, SECRETS, HOSTS, PORTS, NAMES)
def test_percent_encoded_userinfo_round_trips(user: str, password: str, host: str, port: str,
                                              db: str) -> None:
    target = parse_database_url(userinfo_url(user, password, host, port, db))
    assert (target.user, target.password, target.dbname) == (user, password, db)
    again = parse_database_url(target.render(masked=False))
    assert again.keywords() == target.keywords()


RAW_SAFE = st.text(PRINTABLE.filter(lambda c: c not in "/?%"), min_size=1, max_size=24)


@given(st.text(st.characters(whitelist_categories=("Ll", "Nd")), min_size=1, max_size=8),
       RAW_SAFE)
def test_raw_special_characters_in_the_password(user: str, password: str) -> None:
    """An unencoded '@' or ':' (or any character but '/', '?', '%') stays in the password."""
    target = parse_database_url(f"postgresql://{user}:{password}@db.example:5432/app")
    assert target.password == password
    assert target.hosts == ("db.example",)


@given(SECRETS, SECRETS)
def test_the_masked_rendering_does_not_depend_on_the_password(p: str, q: str) -> None:
    for make in (lambda pw: userinfo_url("app", pw),
                 lambda pw: f"postgresql://app@db/app?password={quote(pw, safe='')}",
                 lambda pw: f"postgresql://app@db/app?sslpassword={quote(pw, safe='')}"):
        assert parse_database_url(make(p)).render() == parse_database_url(make(q)).render()


@given(SECRETS, st.text(PRINTABLE, max_size=40), st.text(PRINTABLE, max_size=40))
def test_masking_removes_every_spelling_of_a_credential(secret: str, before: str,
                                                        after: str) -> None:
    assume(len(secret) >= MIN_BARE_CHARS)
    raw = userinfo_url("app", secret, query=f"password={quote(secret, safe='')}")
    masker = masker_for(parse_database_url(raw), raw, {})
    for form in masking.spellings(secret):
        masked = masker.mask(before + form + after)
        assert secret not in masked
        assert form not in masked
    assert secret not in masker.mask(f"{before}{raw}{after}")


@given(st.text(st.characters(whitelist_categories=("L", "N", "Zs")), max_size=80),
       st.text(st.characters(whitelist_categories=("L", "N")), min_size=1,
               max_size=MIN_BARE_CHARS - 1))
def test_a_short_password_does_not_mangle_other_text(text: str, secret: str) -> None:
    masker = build_masker([secret])
    assert masker.mask(text) == text
    assert masker.mask(f"postgresql://app:{secret}@db/app") == f"postgresql://app:{MASK}@db/app"
    assert masker.mask(f"password={secret} sslmode=require") == f"password={MASK} sslmode=require"


def test_one_letter_password_regression() -> None:
    raw = "postgresql://app:a@db.example:5432/app"
    masker = masker_for(parse_database_url(raw), raw, {})
    line = "database unreachable at postgresql://app:***@db.example:5432/app: connection failed"
    assert masker.mask(line) == line
    assert masker.mask(raw) == "postgresql://app:***@db.example:5432/app"


def test_pgpassword_is_masked_too() -> None:
    raw = "postgresql://app@db/app"
    masker = masker_for(parse_database_url(raw), raw, {"PGPASSWORD": "from-the-environment"})
    assert masker.mask("x from-the-environment y") == f"x {MASK} y"


@given(st.text(max_size=600), st.integers(1, 400))
def test_safe_text_is_one_bounded_line(text: str, limit: int) -> None:
    out = safe_text(text, limit)
    assert len(out) <= limit
    assert "\n" not in out and "\r" not in out
    assert all(ord(c) >= 0x20 for c in out)
    assert safe_text(out, limit) == out


def test_render_masks_every_secret_keyword() -> None:
    t = DatabaseTarget(user="app", password="pw", hosts=("db",), ports=("",), dbname="app",
                       params=(("sslpassword", "k"), ("sslmode", "require")))
    assert t.render() == "postgresql://app:***@db/app?sslpassword=***&sslmode=require"


def test_the_repr_of_a_target_holds_no_credential() -> None:
    target = parse_database_url("postgresql://app:ab@db/app?password=cd&sslpassword=ef")
    assert not {"ab", "cd", "ef"} & set(re.findall(r"\w+", repr(target)))


def test_documents_are_masked_string_by_string() -> None:
    masker = build_masker(["hunter2-secret"])
    doc = {"errors": [{"message": "login hunter2-secret failed", "n": 1}],
           "hunter2-secret": None, "ok": True}
    assert masking.mask_document(doc, masker) == {
        "errors": [{"message": f"login {MASK} failed", "n": 1}], MASK: None, "ok": True}
