"""The shape-based credential masker (crontask_contract.redact), by example and by property.

Invariants, for any text: ``redact`` never raises, is deterministic and idempotent; a secret
placed in any recognised shape (URL user-info, raw or percent-encoded; libpq key=value, bare or
quoted; a query string; JSON or a Python repr; HTTP credentials) never survives, also when the
message was cut short inside it; text made only of secret-free parts comes back unchanged.
"""

from __future__ import annotations

import json
import re
import string
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from crontask_contract.redact import MASK, redact, redact_value

# --- examples -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("connect: postgresql://app:s3cr%40t@db:5432/app?sslmode=require",
     "connect: postgresql://app:***@db:5432/app?sslmode=require"),
    ("postgresql://app:p@ss:w/rd?#x@db:5432/app failed",
     "postgresql://app:***@db:5432/app failed"),
    ("jdbc:postgresql://u:pw@h/db", "jdbc:postgresql://u:***@h/db"),
    ("redis://:only-a-password@cache:6379/0", "redis://:***@cache:6379/0"),
    ("invalid DATABASE_URL 'postgresql://u:pa ss@h/db'",
     "invalid DATABASE_URL 'postgresql://u:***@h/db'"),
    ("(postgresql://u:x@h/db)", "(postgresql://u:***@h/db)"),
    ("url postgresql://u:secretpart…", "url postgresql://u:***…"),
    ("url postgresql://u:secretpart...", "url postgresql://u:***..."),
    ("host=db user=app password=hunter2 dbname=x", "host=db user=app password=*** dbname=x"),
    ("host=db password = 'it''s a \\' secret' dbname=x", "host=db password = '***' dbname=x"),
    ("password='never closed", "password='***"),
    ("postgresql://db/app?user=u&password=abc%26def&sslmode=require",
     "postgresql://db/app?user=u&password=***&sslmode=require"),
    ("postgresql://db/app?password=raw&#chars&sslmode=require",
     "postgresql://db/app?password=***&sslmode=require"),
    ("PGPASSWORD=abc sslpassword=def", "PGPASSWORD=*** sslpassword=***"),
    ("(got scheme 'password=Sup3r')", "(got scheme 'password=***"),
    ("{'password': 'x y z', 'user': 'u'}", "{'password': '***', 'user': 'u'}"),
    ('{"apiToken": "abc123", "n": 1}', '{"apiToken": "***", "n": 1}'),
    ('{"client_secret": 12345}', '{"client_secret": ***}'),
    ("Authorization: Bearer eyJhbGciOi.JIUzI1NiJ9.abc", "Authorization: Bearer ***"),
    ("authorization=Basic dXNlcjpwYXNz", "authorization=Basic ***"),
    ("got Bearer abcdefgh1234 back", "got Bearer *** back"),
])
def test_masks(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected


@pytest.mark.parametrize("text", [
    "",
    "stage summarise: conversation has no messages to summarise",
    'FATAL: password authentication failed for user "app"',
    "fe_sendauth: no password supplied",
    "user@example.com wrote https://example.com:8443/path?x=1#frag",
    "postgresql://app@db:5432/app (no password given)",
    "http://host:8080",
    "http://host:8080/metrics",
    "bearer token expired",
    "Bearer abcdefghijkl",
    "secretKeyRef=crontask-database passfile=/etc/pgpass max_tokens=3",
    "run recover-28 failed (DatabaseUnreachable): could not connect to db:5432",
    "spec.image 'registry.example/jobs:1.2@sha256:" + "a" * 64 + "' is not allowed",
    "2026-01-05T12:00:07Z ratio=0.5 password_file=/run/secrets/db",
    "already masked: postgresql://u:***@h password=*** Bearer ***",
])
def test_leaves_secret_free_text_alone(text: str) -> None:
    assert redact(text) == text


def test_redact_value_walks_json_like_values() -> None:
    status = {"lastRun": {"message": "postgresql://u:pw@h failed", "counts": {"n": 3},
                          "stageErrors": {"load": {"count": 1, "lastMessage": "password=x"}}},
              "recentRuns": [{"jobName": "j", "outcome": "Failed"}], "flag": True, "none": None}
    out = redact_value(status)
    assert out == {"lastRun": {"message": "postgresql://u:***@h failed", "counts": {"n": 3},
                               "stageErrors": {"load": {"count": 1,
                                                        "lastMessage": "password=***"}}},
                   "recentRuns": [{"jobName": "j", "outcome": "Failed"}], "flag": True,
                   "none": None}
    assert redact_value(("Bearer abc123456789",)) == ("Bearer ***",)


def test_hostile_inputs_stay_linear() -> None:
    """Pathological repetitions finish (a quadratic scan would take minutes on these)."""
    for text in ("a://" * 20_000, "'a://" * 20_000, "a://x:" * 10_000, "password=" * 10_000,
                 "'password'='" * 10_000, "a://a:" * 10_000 + "@", "Bearer " * 10_000,
                 "x" * 100_000 + "://u:"):
        assert isinstance(redact(text), str)


# --- properties -----------------------------------------------------------------------------

NO_SPACE = st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"))
"""Any printable character but white space (a URL's password ends at white space)."""
ANY_CHAR = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")

secrets = st.text(NO_SPACE, min_size=1, max_size=24).filter(lambda s: s not in MASK)
secrets_with_spaces = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.just(" "),
                              min_size=1, max_size=24).filter(lambda s: s.strip() not in MASK)
schemes = st.sampled_from(["postgresql", "postgres", "mysql", "redis", "amqp", "https", "s3",
                           "jdbc:postgresql", "git+ssh"])
LOWER_DIGITS = string.ascii_lowercase + string.digits
users = st.text(string.ascii_letters + string.digits + "._~%-", max_size=12)
hosts = st.builds(str.__add__, st.text(LOWER_DIGITS + ".-", min_size=1, max_size=20),
                  st.just("") | st.integers(0, 65535).map(":{}".format))
paths = st.text(LOWER_DIGITS + "_.-", max_size=10).map("/{}".format)
CREDENTIAL_WORDS = re.compile(
    r"(?i).*(password|passwd|passphrase|pwd|secret|token|key|credential|bearer|authorization)")
"""What a secret-free text's words and keys must not contain."""
queries = st.builds("?{}={}".format, st.text(string.ascii_lowercase, min_size=1, max_size=8)
                    .filter(lambda k: not CREDENTIAL_WORDS.match(k)),
                    st.text(LOWER_DIGITS, max_size=8))
tails = st.builds(str.__add__, st.just("") | paths, st.just("") | queries)
outside = st.text(ANY_CHAR, max_size=30)
SECRET_KEYS = ["password", "PGPASSWORD", "sslpassword", "db_password", "passwd", "pwd",
               "api_key", "apiToken", "client_secret", "access-key", "Passphrase"]
secret_keys = st.sampled_from(SECRET_KEYS)


HOLE = "\x00"
"""Where a test's template takes the secret (the masker must leave everything else)."""


def survives(secret: str, template: str, written: str | None = None) -> bool:
    """Whether ``secret``, written into the template's hole (as ``written``, by default as
    itself), is still in the masked text. Examples where the secret is also part of the
    template's own text, or of the (quoted) mask, prove nothing and are skipped."""
    assume(not any(secret in template.replace(HOLE, mask)
                   for mask in (MASK, f"'{MASK}'", f'"{MASK}"')))
    return secret in redact(template.replace(HOLE, secret if written is None else written))


@given(st.text(ANY_CHAR, max_size=400))
def test_never_raises_and_is_idempotent(text: str) -> None:
    once = redact(text)
    assert isinstance(once, str)
    assert redact(once) == once
    assert redact(text) == once, "deterministic"


@given(st.lists(st.sampled_from(["postgresql://", "u:", "p@", "@h", ":", "/", "?", "#", "'",
                                 '"', "…", " ", "password", "=", "'password':", "Bearer ",
                                 "x9y8z7w6", "\n", "&", ";", "***"]), max_size=30))
def test_idempotent_on_shape_fragments(parts: list[str]) -> None:
    """Texts made of the very characters the shapes are built from: the hard cases."""
    text = "".join(parts)
    once = redact(text)
    assert redact(once) == once


@given(outside, schemes, users, secrets, hosts, tails, outside)
def test_url_password_never_survives(before: str, scheme: str, user: str, secret: str,
                                     host: str, tail: str, after: str) -> None:
    assume(not before.endswith(tuple(string.ascii_letters + string.digits + "+.-")))
    assert not survives(secret, f"{before}{scheme}://{user}:{HOLE}@{host}{tail} {after}")


@given(outside, schemes, users, secrets, hosts, outside)
def test_url_password_survives_neither_quoted_nor_glued_to_more_text(
        before: str, scheme: str, user: str, secret: str, host: str, after: str) -> None:
    for template in (f"'{scheme}://{user}:{HOLE}@{host}'{after}",
                     f'"{scheme}://{user}:{HOLE}@{host}/db"',
                     f"{before} ({scheme}://{user}:{HOLE}@{host}){after}",
                     f"{before}\n{scheme}://{user}:{HOLE}@{host}{after}"):
        assert not survives(secret, template), template


@given(schemes, users, secrets_with_spaces, hosts)
def test_quoted_url_password_with_spaces_never_survives(scheme: str, user: str, secret: str,
                                                        host: str) -> None:
    assume("'" not in secret and "\n" not in secret)
    assert not survives(secret, f"invalid DATABASE_URL '{scheme}://{user}:{HOLE}@{host}/db'")


@given(schemes, users, secrets, hosts)
def test_percent_encoded_url_password_never_survives(scheme: str, user: str, secret: str,
                                                     host: str) -> None:
    encoded = quote(secret, safe="")
    assert not survives(encoded, f"could not connect to {scheme}://{user}:{HOLE}@{host}/db")


@given(schemes, users, secrets, hosts, st.integers(min_value=1, max_value=24))
def test_url_cut_inside_its_password_hides_what_is_left(scheme: str, user: str, secret: str,
                                                        host: str, keep: int) -> None:
    """The run report shortens long messages with "…"; a cut may fall inside the password."""
    fragment = secret[:keep]
    assume("@" not in fragment and not re.match(r"\d*([/?#]|$)", fragment))
    head = f"run failed: {scheme}://{user}:"
    clipped = head + fragment + "…"
    assert redact(clipped) == head + MASK + "…"


def libpq_value(secret: str) -> str:
    """How libpq's key=value syntax writes a value: bare, or quoted with backslash escapes."""
    if secret and not any(c.isspace() or c in "'\\" for c in secret):
        return secret
    return "'" + secret.replace("\\", "\\\\").replace("'", "\\'") + "'"


@given(secret_keys, secrets_with_spaces, users, hosts, st.sampled_from(["=", " = ", "= "]),
       st.sampled_from([" ", "'", '"', "(", "[", "{", ",", ";", ":", "?", "&", "\n"]))
def test_key_value_password_never_survives(key: str, secret: str, user: str, host: str,
                                           equals: str, before: str) -> None:
    if before in "?&":
        assume(not re.search(r"&[A-Za-z_][A-Za-z0-9_.-]*=", secret))  # a query's next pair
    template = (f"connection to host={host} user={user}{before}{key}{equals}{HOLE} dbname=app"
                " failed")
    assert not survives(secret, template, libpq_value(secret))


@given(secret_keys, secrets)
def test_a_pair_quoted_as_a_whole_never_survives(key: str, secret: str) -> None:
    """What an error message quotes whole: got scheme 'password=...'."""
    assume("'" not in secret)
    assert not survives(secret, f"must start with postgresql:// (got scheme '{key}={HOLE}')")


@given(hosts, users, secret_keys, secrets)
def test_query_password_never_survives(host: str, user: str, key: str, secret: str) -> None:
    encoded = quote(secret, safe="")
    assert not survives(encoded, f"postgresql://{host}/app?user={user}&{key}={HOLE}&sslmode=require")


@given(secret_keys, secrets_with_spaces, st.dictionaries(
    st.sampled_from(["user", "host", "n", "detail"]),
    st.text(ANY_CHAR, max_size=8) | st.integers()))
def test_json_and_repr_passwords_never_survive(key: str, secret: str,
                                               other: dict[str, Any]) -> None:
    doc = {**other, key: HOLE}
    for dump in (json.dumps, lambda d: json.dumps(d, ensure_ascii=False)):
        template = dump(doc).replace(dump(HOLE)[1:-1], HOLE)
        assert not survives(dump(secret)[1:-1], template), template
    template = repr(doc).replace(repr(HOLE), HOLE)
    assert not survives(secret, template, repr(secret)), template


@given(st.text(string.ascii_letters + string.digits + "-._~+/", min_size=7, max_size=40),
       st.integers(0, 9),
       st.sampled_from(["Authorization: Bearer ", "authorization=Bearer ", "Bearer ",
                        "Proxy-Authorization: Basic "]))
def test_http_credentials_never_survive(token: str, digit: int, prefix: str) -> None:
    assert not survives(f"{token}{digit}", f"request failed: {prefix}{HOLE} (401)")


# Secret-free texts: words, numbers, e-mail addresses, URLs without user-info, key=value pairs
# with ordinary keys, JSON, and the sentences drivers print about passwords.
words = st.text(string.ascii_letters, min_size=1, max_size=11).filter(
    lambda w: not CREDENTIAL_WORDS.match(w))
values = st.text(string.ascii_letters + string.digits + "_./-", max_size=12)
benign_pieces = st.one_of(
    words,
    st.integers().map(str),
    st.builds("{}@{}".format, words, hosts),
    st.builds("{}://{}{}".format, schemes, hosts, tails),
    st.builds("{}://{}@{}{}".format, schemes, users, hosts, tails),
    st.builds("{}={}".format, words, values),
    st.builds(lambda k, v: json.dumps({k: v}), words, values),
    st.sampled_from([
        'password authentication failed for user "app"', "no password supplied",
        "bearer token expired", "Bearer abcdefghij", "secretKeyRef", "host:5432",
        "2026-01-05T12:00:07Z", "stage summarise: 1 error(s)", "…", "...", "(", ")",
    ]),
)


@given(st.lists(benign_pieces, max_size=12), st.sampled_from([" ", ", ", "; ", "\n", " - "]))
def test_secret_free_text_is_unchanged(pieces: list[str], separator: str) -> None:
    text = separator.join(pieces)
    assert redact(text) == text


def leaves(value: Any) -> list[Any]:
    """The non-string leaves of a JSON-like value, in order (strings are what redact changes)."""
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in leaves(v)]
    return [] if isinstance(value, str) else [value]


def json_like(strings: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | st.integers() | strings,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(strings, inner, max_size=4),
        max_leaves=20)


@given(json_like(st.text(max_size=30)))
def test_redact_value_keeps_every_non_string_and_is_idempotent(value: Any) -> None:
    masked = redact_value(value)
    assert redact_value(masked) == masked
    if not isinstance(value, dict) or len({redact(k) for k in value}) == len(value):
        assert type(masked) is type(value)
    assert all(isinstance(s, str) for s in [masked] if isinstance(value, str))
    if not any(isinstance(v, dict) for v in [value]):
        assert leaves(masked) == leaves(value)


@given(json_like(words))
def test_redact_value_leaves_secret_free_values_equal(value: Any) -> None:
    assert redact_value(value) == value
