"""Masking of anything shaped like a credential in free text: a second line of defence.

The jobs never echo their connection string, but a run's error message travels far: a pod's
termination message, then a CronTask's status and Events, which many more people may read than
the Secret it came from. A Secret that is not a database URL, a driver that quotes its input, a
plugin stage that prints a token: ``redact`` masks such text by its *shape*, without knowing any
secret, before the operator writes it anywhere.

Shapes that are masked (the value becomes ``***``; everything else is kept):

- the password of a URL's user-info, any scheme: ``postgresql://user:***@host/db``. The
  password runs from the first ``:`` after the user name to the *last* ``@`` of the URL (a
  password may hold raw ``@``, ``:``, ``/``, ``?`` or ``#``; percent-encoded ones are simply
  characters). A URL ends at white space, or at the closing quote when it is quoted. A URL that
  was cut short (at the end of the text or before ``…``) and has no ``@`` left still has its
  password masked, unless what follows the ``:`` reads as a port (digits, then the end
  or ``/``, ``?``, ``#``);
- ``key=value`` and ``"key": "value"`` pairs whose key ends with a credential word
  (``password``, ``passwd``, ``pwd``, ``secret``, ``token``, ``apikey``, ...; any case, so
  ``PGPASSWORD`` and ``sslpassword`` too): libpq's ``password=secret`` and
  ``password = 'it''s \\' quoted'``, a query's ``?password=secret&...`` (up to the next
  ``&key=``), JSON and Python reprs;
- HTTP credentials: ``Authorization: <scheme> <credentials>``, and ``Bearer <token>`` when the
  token looks like one (8 or more token characters, at least one digit).

What is never touched: text without such a shape. ``user@host``, ``https://host:443/path``,
``key=value`` with an ordinary key and ``password authentication failed`` stay as they are.
Known limits: a password with white space inside an unquoted URL is masked only up to the white
space; a cut-short password made only of digits reads as a port. Over-masking is preferred to a
leak: ``https://host:8080/a@b`` has the shape of user-info and loses ``8080/a``.

``redact`` is total (any string in, a string out, no exception), deterministic and idempotent;
``redact_value`` applies it to every string of a JSON-like value (keys included). Standard
library only: both the jobs and the operator import it.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator, Mapping
from typing import Any, Final

MASK: Final = "***"

_ELLIPSES: Final = ("…", "...")
"""How a shortened message ends (crontask_contract.report clips with "…")."""

_SECRET_WORDS: Final = (
    "password", "passwd", "passphrase", "pwd", "secret", "token", "apikey", "api_key",
    "api-key", "accesskey", "access_key", "access-key", "privatekey", "private_key",
    "private-key", "credential", "credentials",
)

_SCHEME: Final = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://")
_KEY: Final = r"[A-Za-z_][A-Za-z0-9_.\-]*"
_BARE_PAIR: Final = re.compile(
    rf"(?<![A-Za-z0-9_.\-])(?P<key>{_KEY})[ \t]*=[ \t]*")
_QUOTED_PAIR: Final = re.compile(
    rf"(?P<q>[\"'])(?P<key>{_KEY})(?P=q)[ \t]*[:=][ \t]*")
_AUTHORIZATION: Final = re.compile(
    r"(?i)\b(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?"
    r"(?:(?:basic|bearer|token|digest|negotiate|aws4-hmac-sha256)[ \t]+)?")
_BEARER: Final = re.compile(r"(?i)\bbearer[ \t]+")
_TOKEN_CHARS: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


_MAX_PASSES: Final = 8


def redact(text: str) -> str:
    """``text`` with every credential-shaped part replaced by ``***`` (see the module doc).

    One pass masks what it finds; a mask can leave a new shape behind (a quoted value masked
    inside a URL turns the rest of the URL into a cut-short password), so passes repeat until
    nothing changes: that is what makes ``redact`` idempotent.
    """
    if not isinstance(text, str):
        return text
    for _ in range(_MAX_PASSES):
        masked = _one_pass(text)
        if masked == text:
            break
        text = masked
    return text


def _one_pass(text: str) -> str:
    spans = _merge(sorted(_spans(text)))
    if not spans:
        return text
    out: list[str] = []
    at = 0
    for start, end in spans:
        out.append(text[at:start])
        out.append(MASK)
        at = end
    out.append(text[at:])
    return "".join(out)


def redact_value(value: Any) -> Any:
    """Every string in a JSON-like value redacted; mappings, lists and tuples rebuilt."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(redact_value(v) for v in value)
    return value


def _spans(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of every part to mask; an already masked value yields nothing."""
    for span in (*_url_passwords(text), *_pair_values(text), *_http_credentials(text)):
        start, end = span
        if end > start and text[start:end] != MASK:
            yield span


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


class _Next:
    """The first match of a pattern at or after a position that only moves forward.

    Every scan below asks "where is the next X after here" for positions in increasing order;
    remembering the answer keeps the whole of ``redact`` linear in the length of the text, so a
    hostile message cannot make it slow.
    """

    def __init__(self, text: str, pattern: re.Pattern[str]) -> None:
        self._text, self._pattern = text, pattern
        self._found = -1

    def at_or_after(self, pos: int) -> int:
        if self._found < pos:
            match = self._pattern.search(self._text, pos)
            self._found = match.start() if match else len(self._text)
        return self._found


_SPACE: Final = re.compile(r"\s")
_NEWLINE: Final = re.compile(r"\n")
_COLON: Final = re.compile(r":")
_NOT_IN_USER: Final = re.compile(r"[/?#@]")
_DIGITS: Final = re.compile(r"\d*")


_SCHEME_CHAIN: Final = re.compile(r"[A-Za-z0-9+.\-:]+")
"""A run of scheme characters: ``jdbc:postgresql`` is one scheme for the quote before it."""


def _before_scheme(text: str, scheme_start: int, chains: list[int]) -> str:
    """The character before the scheme chain a scheme starts in (a quote opens a quoted URL)."""
    chain = chains[bisect.bisect_right(chains, scheme_start) - 1]
    return text[chain - 1] if chain > 0 else ""


def _url_passwords(text: str) -> Iterator[tuple[int, int]]:
    space, newline = _Next(text, _SPACE), _Next(text, _NEWLINE)
    colons, not_in_user = _Next(text, _COLON), _Next(text, _NOT_IN_USER)
    last_at: dict[int, int] = {}
    chains = [m.start() for m in _SCHEME_CHAIN.finditer(text)]
    covered = 0
    for match in _SCHEME.finditer(text):
        after = match.end()
        if match.start() < covered:
            continue
        colon = colons.at_or_after(after)
        if colon == len(text) or not_in_user.at_or_after(after) < colon:
            continue  # no "user:" right after the scheme: no password here
        end = space.at_or_after(after)
        quote = _before_scheme(text, match.start(), chains)
        if quote in ("'", '"'):
            close = text.find(quote, after, newline.at_or_after(after))
            end = max(end, close)
        if colon >= end:
            continue
        if end not in last_at:
            last_at[end] = text.rfind("@", after, end)
        at = last_at[end]
        if at > colon:
            covered = at
            yield colon + 1, at
            continue
        # No "@" left: a URL cut short inside its password, or simply host:port.
        stop, cut = end, end == len(text)
        for ellipsis in _ELLIPSES:
            if text.startswith(ellipsis, end - len(ellipsis)) and end - len(ellipsis) > colon:
                stop, cut = end - len(ellipsis), True
                break
        digits = _DIGITS.match(text, colon + 1, stop)
        port_like = digits is not None and (digits.end() == stop or text[digits.end()] in "/?#")
        if cut and stop > colon + 1 and not port_like:
            covered = stop
            yield colon + 1, stop


def _is_secret_key(key: str) -> bool:
    return key.lower().endswith(_SECRET_WORDS)


_QUOTED_VALUE: Final = {
    q: re.compile(rf"(?:[^{q}\\]|\\.|{q}{q})*", re.DOTALL) for q in ("'", '"')}
"""The content of a quoted value: backslash escapes and libpq/SQL's doubled quote."""
_BARE_END: Final = {
    **{stops: re.compile(rf"[\s{re.escape(stops)}]") for stops in ("", ",}]", ",;\"'")},
    "&": re.compile(rf"\s|&(?={_KEY}=)"),
}
"""Where a bare value ends: white space or a stop character; in a query string, the ``&``
that starts the next ``key=`` (a raw ``&`` or ``#`` in a sloppy password is kept in)."""


def _value_spans(text: str, starts: Iterator[tuple[int, str]]) -> Iterator[tuple[int, int]]:
    """The values that begin at each (position, stop characters): a quoted value's content,
    or a bare value up to white space or a stop character."""
    ends = {stops: _Next(text, pattern) for stops, pattern in _BARE_END.items()}
    covered = 0
    for start, stops in starts:
        if start < covered:
            continue
        if start < len(text) and text[start] in _QUOTED_VALUE:
            content = _QUOTED_VALUE[text[start]].match(text, start + 1)
            span = (start + 1, content.end() if content else start + 1)
        else:
            span = (start, ends[stops].at_or_after(start))
        covered = span[1]
        yield span


def _pair_values(text: str) -> Iterator[tuple[int, int]]:
    def bare() -> Iterator[tuple[int, str]]:
        for match in _BARE_PAIR.finditer(text):
            if _is_secret_key(match.group("key")):
                in_query = match.start() > 0 and text[match.start() - 1] in "?&"
                yield match.end(), "&" if in_query else ""

    def quoted() -> Iterator[tuple[int, str]]:
        for match in _QUOTED_PAIR.finditer(text):
            if _is_secret_key(match.group("key")):
                yield match.end(), ",}]"

    yield from _value_spans(text, bare())
    yield from _value_spans(text, quoted())


def _http_credentials(text: str) -> Iterator[tuple[int, int]]:
    yield from _value_spans(text, ((m.end(), ",;\"'") for m in _AUTHORIZATION.finditer(text)))
    for match in _BEARER.finditer(text):
        token = _TOKEN_CHARS.match(text, match.end())
        if token and len(token.group()) >= 8 and any(c.isdigit() for c in token.group()):
            yield token.span()
