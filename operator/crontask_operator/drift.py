"""Deciding whether the CronJob in the cluster still is the one the operator would apply.

The comparison is made against the API server's canonical form of the desired manifest
(``canonical``): what the server stores for it, so a no-op resync sees no drift for any spec the
CRD admits. The server drops empty strings and nulls of optional fields (an env var with an
empty value has no ``value``), spells quantities its own way (``quantities``), and adds defaults
of its own (extra fields are never drift). Two tests make a CronJob drifted: the applied-hash
annotation differs (the spec changed, including a field that was removed), or a field the
operator sets no longer has its value (a hand edit).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from crontask_operator import quantities
from crontask_operator.cronjob import APPLIED_HASH, Manifest

QUANTITY_MAPS: Final = frozenset({"requests", "limits"})
"""Maps whose values are quantities (container resources: ResourceLists, rounded to milli)."""
QUANTITY_FIELDS: Final = frozenset({"sizeLimit", "divisor"})
VERBATIM_MAPS: Final = frozenset({"labels", "annotations"})
"""Maps whose empty-string values the server keeps."""
LIST_MAP_KEYS: Final = {"containers": "name", "env": "name", "volumes": "name",
                        "volumeMounts": "mountPath", "ownerReferences": "uid"}
"""Lists the API merges by key: another manager (a webhook, a person) may add entries to them
without that being drift; an entry of ours that is gone or changed is. Other lists are atomic."""


def canonical(manifest: Manifest) -> Manifest:
    """``manifest`` as the API server stores it (the fields the operator sets)."""
    return _canonical(copy.deepcopy(manifest), None)  # type: ignore[no-any-return]


def _canonical(node: Any, key: str | None) -> Any:
    if isinstance(node, Mapping):
        out = {}
        for k, v in node.items():
            if v is None:
                continue
            if key in QUANTITY_MAPS:
                out[k] = quantities.canonical(v, resource_list=True)
            elif k in QUANTITY_FIELDS:
                out[k] = quantities.canonical(v)
            elif key in VERBATIM_MAPS:
                out[k] = v
            elif v == "" and isinstance(v, str):
                continue
            else:
                out[k] = _canonical(v, k)
        return out
    if isinstance(node, list):
        return [_canonical(item, key) for item in node]
    return node


def is_subset(desired: Any, actual: Any, key: str | None = None) -> bool:
    """Whether every field the operator sets has its value in ``actual``.

    Maps may carry extra keys (server defaults, other managers' fields); lists must match in
    length and element by element; quantities compare by spelling, or failing that by value.
    """
    if isinstance(desired, Mapping):
        return isinstance(actual, Mapping) and all(
            k in actual and (
                _same_quantity(v, actual[k]) if key in QUANTITY_MAPS or k in QUANTITY_FIELDS
                else is_subset(v, actual[k], k))
            for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(actual, list):
            return False
        merge_key = LIST_MAP_KEYS.get(key or "")
        if merge_key is not None:
            by_key = {a.get(merge_key): a for a in actual if isinstance(a, Mapping)}
            return all(isinstance(d, Mapping) and d.get(merge_key) in by_key
                       and is_subset(d, by_key[d.get(merge_key)], key) for d in desired)
        return len(desired) == len(actual) and all(
            is_subset(d, a, key) for d, a in zip(desired, actual, strict=True))
    return bool(desired == actual) and type(desired) is type(actual)


def _same_quantity(desired: Any, actual: Any) -> bool:
    if isinstance(desired, Mapping):  # e.g. "resources" itself reached by a "limits" key
        return is_subset(desired, actual)
    return bool(desired == actual) or quantities.same(desired, actual)


def drifted(desired: Manifest, actual: Mapping[str, Any]) -> bool:
    """The CronJob in the cluster is no longer what the operator would apply."""
    wanted = canonical(desired)
    meta = actual.get("metadata") or {}
    ours = (wanted["metadata"].get("annotations") or {}).get(APPLIED_HASH)
    if ours is not None and (meta.get("annotations") or {}).get(APPLIED_HASH) != ours:
        return True
    return not (is_subset(wanted["spec"], actual.get("spec"))
                and is_subset(wanted["metadata"].get("labels") or {}, meta.get("labels") or {})
                and is_subset(wanted["metadata"].get("ownerReferences") or [],
                              meta.get("ownerReferences") or [], "ownerReferences"))


def is_owned_by(actual: Mapping[str, Any], uid: str) -> bool:
    refs = (actual.get("metadata") or {}).get("ownerReferences") or []
    return any(isinstance(r, Mapping) and r.get("uid") == uid and r.get("controller") is True
               for r in refs)
