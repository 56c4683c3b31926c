"""Exact masking of this run's credentials in any text the jobs print or store.

The credentials are known exactly (DATABASE_URL is parsed by `dburl`, plus PGPASSWORD when set),
so masking removes exactly them, in every spelling an echo could take: decoded, percent-encoded
as written in the URL or canonically, `+` for spaces, and escaped as `repr` or JSON would.
A credential of at least MIN_BARE_CHARS characters is removed wherever it appears; a shorter
one only where it stands as a credential (`:pw@`, `password=pw`), because removing a one-letter
password from every word would mangle the text and protect nothing.

This is not a generic detector of credential-shaped text: it knows one run's secrets. The CLI
installs the run's masker once; `messages.safe_text`, the log handler and the report writer use it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, quote_plus

from crontask_jobs.dburl import SECRET_KEYWORDS, DatabaseTarget

MASK: Final = "***"
MIN_BARE_CHARS: Final = 4
_KEYWORDS: Final = "|".join(sorted({*SECRET_KEYWORDS, "PGPASSWORD"}, key=len, reverse=True))


def spellings(secret: str) -> set[str]:
    """The ways an echo may spell `secret`."""
    encoded = quote(secret, safe="")
    forms = {secret, encoded, re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded),
             quote_plus(secret, safe=""), repr(secret)[1:-1],
             json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    return {f for f in forms if f}


@dataclass(frozen=True)
class Masker:
    bare: tuple[str, ...] = ()
    """Spellings removed wherever they appear (longest first)."""
    contextual: tuple[re.Pattern[str], ...] = ()
    """Patterns of short credentials where they stand as credentials."""
    whole: tuple[tuple[str, str], ...] = field(default=())
    """Whole texts replaced first (the raw URL by its masked rendering)."""

    def mask(self, text: str) -> str:
        for raw, shown in self.whole:
            text = text.replace(raw, shown)
        changed = True
        while changed:  # each replacement shortens the text, so this ends
            changed = False
            for form in self.bare:
                if form in text:
                    text = text.replace(form, MASK)
                    changed = True
        for pattern in self.contextual:
            text = pattern.sub(lambda m: m.group("pre") + MASK + m.group("post"), text)
        return text


def build_masker(secrets: Iterable[str], whole: Iterable[tuple[str, str]] = ()) -> Masker:
    bare: set[str] = set()
    short: set[str] = set()
    for secret in secrets:
        for form in spellings(secret):
            (bare if len(form) >= MIN_BARE_CHARS else short).add(form)
    contextual = []
    for form in sorted(short, key=len, reverse=True):
        value = re.escape(form)
        contextual.append(re.compile(rf"(?P<pre>:){value}(?P<post>@)"))
        contextual.append(re.compile(
            rf"(?P<pre>(?<![A-Za-z0-9_])(?:{_KEYWORDS})\s*=\s*(?P<q>['\"]?)){value}"
            rf"(?P<post>(?P=q))(?=$|[\s&;,'\"])"))
    return Masker(bare=tuple(sorted(bare, key=len, reverse=True)),
                  contextual=tuple(contextual),
                  whole=tuple((raw, shown) for raw, shown in whole if raw))


def masker_for(target: DatabaseTarget | None, raw_url: str | None,
               env: dict[str, str]) -> Masker:
    """The run's masker: the URL's credentials, the raw URL itself, and PGPASSWORD."""
    secrets = list(target.secrets()) if target is not None else []
    if env.get("PGPASSWORD"):
        secrets.append(env["PGPASSWORD"])
    whole = []
    if raw_url and raw_url.strip():
        shown = target.render() if target is not None else "(DATABASE_URL)"
        whole = [(raw_url.strip(), shown)]
    return build_masker(secrets, whole)


def mask_document(value: Any, masker: Masker) -> Any:
    """A JSON-able document with every string in it (keys too) masked."""
    if isinstance(value, str):
        return masker.mask(value)
    if isinstance(value, dict):
        return {mask_document(k, masker): mask_document(v, masker) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_document(v, masker) for v in value]
    return value


_active = Masker()


def install(masker: Masker) -> None:
    """Make `masker` the one `active()` returns (the CLI does this once per run)."""
    global _active
    _active = masker


def active() -> Masker:
    return _active
