"""Every free text the jobs log or store passes through `safe_text`: masked, one line, bounded.

Stage errors, failure reasons, run errors and driver messages come from code and servers we do
not control. Stored in a column, a report or a log line, each must be free of this run's
credentials (masked before anything is cut, so no prefix of a secret survives), on one line (no
forged log lines) and short (MAX_MESSAGE_CHARS, the report's own bound, so the database, the
logs and the CronTask's status say the same thing).
"""

from __future__ import annotations

import re
from typing import Final

from crontask_contract.report import MAX_MESSAGE_CHARS
from crontask_jobs import masking

_BREAKS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SURROGATES: Final = re.compile("[\ud800-\udfff]")


def clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def one_line(text: str) -> str:
    return _SURROGATES.sub("\ufffd", _BREAKS.sub(" ", text)).strip()


def describe(value: object) -> str:
    """`str(value)`, never raising (an exception's __str__ may)."""
    try:
        return str(value)
    except Exception:
        return type(value).__name__


def safe_text(value: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Masked, then on one line, then at most `limit` characters."""
    return clip(one_line(masking.active().mask(describe(value))), limit)
