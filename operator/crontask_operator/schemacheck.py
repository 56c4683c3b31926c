"""Checking a value against the CRD's own OpenAPI schema, at run time.

The operator reads specs and writes status through the same schema the API server enforces
(``crd``): a spec is parsed only after it passed this check (so no later step meets a type it
did not expect), and a status is written only after it passed (so nothing outside the status
schema ever reaches the API server). Covers the keywords ``crd`` uses; CEL rules are the API
server's alone. Pure and total: any value, any depth, no exception.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
MAX_ERRORS: Final = 10
_RFC3339: Final = re.compile(
    r"\A\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z")


@lru_cache(maxsize=256)
def _pattern(text: str) -> re.Pattern[str]:
    # Go's "$" matches only at the very end; Python's also before a final newline.
    return re.compile(text[:-1] + r"\Z" if text.endswith("$") else text)


def is_rfc3339(value: str) -> bool:
    if not _RFC3339.match(value):
        return False
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00")
                                           .replace("t", "T"))
        parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        return False
    return True


def _type_ok(value: Any, schema: Mapping[str, Any]) -> str | None:
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, str) or (type(value) is int and INT64_MIN <= value <= INT64_MAX):
            return None
        return "must be an integer or a string"
    kind = schema.get("type")
    ok = {
        None: True,
        "object": isinstance(value, Mapping),
        "array": isinstance(value, list),
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "integer": type(value) is int and INT64_MIN <= value <= INT64_MAX,
        "number": type(value) in (int, float) and math.isfinite(value),
    }.get(kind, False)
    return None if ok else f"must be of type {kind}"


def errors(value: Any, schema: Mapping[str, Any], path: str = "") -> list[str]:
    """Every way ``value`` breaks ``schema`` (at most MAX_ERRORS), as ``path: problem``."""
    out: list[str] = []
    _check(value, schema, path or "<root>", out)
    return out[:MAX_ERRORS]


def _check(value: Any, schema: Mapping[str, Any], path: str, out: list[str]) -> None:
    if len(out) >= MAX_ERRORS:
        return
    problem = _type_ok(value, schema)
    if problem:
        out.append(f"{path}: {problem}")
        return
    if "anyOf" in schema and not schema.get("x-kubernetes-int-or-string") and not any(
            not errors(value, sub) for sub in schema["anyOf"]):
        out.append(f"{path}: matches none of the allowed forms")
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{path}: {str(value)[:60]!r} is not one of {schema['enum']}")
    if isinstance(value, str):
        _check_string(value, schema, path, out)
    elif type(value) in (int, float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{path}: must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{path}: must be at most {schema['maximum']}")
    elif isinstance(value, list):
        _check_list(value, schema, path, out)
    elif isinstance(value, Mapping):
        _check_object(value, schema, path, out)


def _check_string(value: str, schema: Mapping[str, Any], path: str, out: list[str]) -> None:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        out.append(f"{path}: longer than {schema['maxLength']} characters")
    if "minLength" in schema and len(value) < schema["minLength"]:
        out.append(f"{path}: shorter than {schema['minLength']} characters")
    if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
        out.append(f"{path}: {value[:60]!r} does not match {schema['pattern']}")
    if schema.get("format") == "date-time" and not is_rfc3339(value):
        out.append(f"{path}: {value[:60]!r} is not an RFC 3339 time")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        out.append(f"{path}: not valid Unicode")


def _check_list(value: list[Any], schema: Mapping[str, Any], path: str,
                out: list[str]) -> None:
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        out.append(f"{path}: more than {schema['maxItems']} items")
    if "minItems" in schema and len(value) < schema["minItems"]:
        out.append(f"{path}: fewer than {schema['minItems']} items")
    items = schema.get("items")
    if isinstance(items, Mapping):
        for i, item in enumerate(value):
            _check(item, items, f"{path}[{i}]", out)
    keys = schema.get("x-kubernetes-list-map-keys")
    if keys and schema.get("x-kubernetes-list-type") == "map":
        seen = [tuple(i.get(k) for k in keys) for i in value if isinstance(i, Mapping)]
        if len(seen) != len(set(seen)):
            out.append(f"{path}: duplicate entries for {', '.join(keys)}")


def _check_object(value: Mapping[str, Any], schema: Mapping[str, Any], path: str,
                  out: list[str]) -> None:
    if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
        return
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        out.append(f"{path}: more than {schema['maxProperties']} entries")
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        out.append(f"{path}: fewer than {schema['minProperties']} entries")
    for key in schema.get("required") or ():
        if key not in value:
            out.append(f"{path}.{key}: required")
    properties = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    for key, sub in value.items():
        if not isinstance(key, str):
            out.append(f"{path}: keys must be strings")
            continue
        if key in properties:
            _check(sub, properties[key], f"{path}.{key}", out)
        elif isinstance(extra, Mapping):
            _check(sub, extra, f"{path}.{key}", out)
        elif extra is False or (properties and not schema.get(
                "x-kubernetes-preserve-unknown-fields")):
            out.append(f"{path}.{key}: unknown field")
