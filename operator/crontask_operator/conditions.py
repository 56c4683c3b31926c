"""Conditions the Kubernetes way (api-conventions; apimachinery's meta.SetStatusCondition).

A list keyed by ``type``; ``lastTransitionTime`` moves only when ``status`` flips, so a message
that changes every resync does not make the condition look new; every condition carries the
``observedGeneration`` it was computed from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

READY: Final = "Ready"
HEALTHY: Final = "Healthy"
ORDER: Final = (READY, HEALTHY)


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str


def set_condition(current: Sequence[Mapping[str, Any]], new: Condition, generation: int | None,
                  now: str) -> list[dict[str, Any]]:
    """A new conditions list with ``new`` set; other types are kept as they are."""
    out: list[dict[str, Any]] = []
    found = False
    for cond in current:
        if cond.get("type") != new.type:
            out.append(dict(cond))
            continue
        found = True
        flipped = cond.get("status") != new.status
        out.append(_render(new, generation,
                           now if flipped else str(cond.get("lastTransitionTime") or now)))
    if not found:
        out.append(_render(new, generation, now))
    rank = {t: i for i, t in enumerate(ORDER)}
    return sorted(out, key=lambda c: (rank.get(str(c.get("type")), len(rank)), str(c.get("type"))))


def _render(cond: Condition, generation: int | None, transition: str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": cond.type, "status": cond.status, "reason": cond.reason,
                           "message": cond.message, "lastTransitionTime": transition}
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def find(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)
