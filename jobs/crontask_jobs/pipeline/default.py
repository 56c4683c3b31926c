"""The default pipeline: load the transcript, summarise it, touch the user, persist.

| stage           | critical | timeout | does                                                   |
|-----------------|----------|---------|--------------------------------------------------------|
| load_transcript | yes      | 10s     | reads the conversation's messages in order             |
| summarise       | no       | 30s     | an extractive summary; fails on an empty conversation  |
| touch_user      | no       | 10s     | users.last_interaction_at := the conversation's last   |
| persist         | yes      | 10s     | writes summary and message_count to the conversation   |

The summary is deliberately model-free (deterministic, no network): it is the slot where a
deployment plugs in its own summariser via `--pipeline`.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta
from typing import Final

import sqlalchemy as sa

from crontask_jobs.pipeline.stage import Stage, StageContext, StageError

NO_MESSAGES: Final = "conversation has no messages to summarise"
_WORD: Final = re.compile(r"[A-Za-zÀ-ÿ']{4,}")
_STOP: Final = frozenset({
    "this", "that", "with", "have", "from", "your", "what", "will", "would", "there", "their",
    "they", "them", "been", "were", "when", "which", "about", "just", "like", "then", "than",
    "into", "also", "could", "should", "very", "some", "more", "here",
})


def _snippet(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def summarise_transcript(transcript: list[tuple[str, str]]) -> str:
    """An extractive summary of (role, content) pairs. Pure, for unit tests."""
    if not transcript:
        raise StageError(NO_MESSAGES)
    roles = Counter(role for role, _ in transcript)
    words = Counter(
        w.lower() for _, content in transcript for w in _WORD.findall(content)
        if w.lower() not in _STOP
    )
    first_user = next((c for r, c in transcript if r == "user"), transcript[0][1])
    parts = [
        f"{len(transcript)} messages ("
        + ", ".join(f"{n} {role}" for role, n in sorted(roles.items())) + ")",
        f"opened with: {_snippet(first_user)!r}",
        f"ended with: {_snippet(transcript[-1][1])!r}",
    ]
    topics = [w for w, _ in words.most_common(5)]
    if topics:
        parts.append("topics: " + ", ".join(topics))
    return "; ".join(parts)


async def load_transcript(ctx: StageContext) -> None:
    rows = await ctx.conn.execute(
        sa.text("SELECT role, content FROM messages WHERE conversation_id = :id"
                " ORDER BY created_at, id"),
        {"id": ctx.conversation_id},
    )
    ctx.state["transcript"] = [(r.role, r.content) for r in rows]


async def summarise(ctx: StageContext) -> None:
    ctx.state["summary"] = summarise_transcript(ctx.state.get("transcript", []))


async def touch_user(ctx: StageContext) -> None:
    await ctx.conn.execute(
        sa.text("UPDATE users SET last_interaction_at = :at, updated_at = now()"
                " WHERE id = :id AND last_interaction_at < :at"),
        {"id": ctx.user_id, "at": ctx.last_message_at},
    )


async def persist(ctx: StageContext) -> None:
    await ctx.conn.execute(
        sa.text("UPDATE conversations SET summary = :summary, message_count = :n"
                " WHERE id = :id"),
        {"id": ctx.conversation_id, "summary": ctx.state.get("summary"),
         "n": len(ctx.state.get("transcript", []))},
    )


def default_stages() -> list[Stage]:
    return [
        Stage("load_transcript", load_transcript, critical=True, timeout=timedelta(seconds=10)),
        Stage("summarise", summarise, critical=False, timeout=timedelta(seconds=30)),
        Stage("touch_user", touch_user, critical=False, timeout=timedelta(seconds=10)),
        Stage("persist", persist, critical=True, timeout=timedelta(seconds=10)),
    ]
