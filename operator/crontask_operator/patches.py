"""JSON merge patches (RFC 7386) computed from two versions of a document.

The operator writes a CronTask's status as the difference between the status it read and the
status it wants: nothing when they are equal (a no-op resync writes nothing), and ``null`` for
every key that must go, at any depth (a merge patch that only set the new ``lastRun`` would keep
the previous run's ``message`` and ``stageErrors`` inside it). Pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_patch(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The smallest merge patch that turns ``before`` into ``after`` (values in ``after`` are
    never null: RFC 7386 cannot set a null)."""
    patch: dict[str, Any] = {}
    for key in before:
        if key not in after:
            patch[key] = None
    for key, value in after.items():
        old = before.get(key)
        if key in before and old == value and type(old) is type(value):
            continue
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            patch[key] = merge_patch(old, value)
        elif isinstance(value, Mapping):
            patch[key] = merge_patch({}, value)
        else:
            patch[key] = value
    return patch


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 applied (what the API server does with the patch)."""
    if not isinstance(patch, Mapping):
        return patch
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = apply_merge_patch(out.get(key), value)
    return out
