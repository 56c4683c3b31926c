"""Finding the pipeline to run: an entry point in group `crontask.pipeline`, or `module:callable`.

Third-party packages register their pipeline as an entry point and select it by name; a module
on the path can be named directly. Either resolves to a Stage sequence, or a callable returning
one, validated here so a bad plugin is a configuration error (exit 2), not a failed run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Final

from crontask_contract.durations import format_duration
from crontask_jobs.pipeline.stage import Stage
from crontask_jobs.session import MAX_TIMEOUT

ENTRY_POINT_GROUP: Final = "crontask.pipeline"
_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""Stage names appear in logs, reports, result documents and flags: short and plain."""
DEFAULT_PIPELINE: Final = "default"


class PipelineError(ValueError):
    pass


def _resolve(spec: str) -> Any:
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = import_module(module_name)
        except ImportError as exc:
            raise PipelineError(f"pipeline {spec!r}: cannot import {module_name!r}: {exc}") from exc
        try:
            return getattr(module, attr)
        except AttributeError as exc:
            raise PipelineError(f"pipeline {spec!r}: {module_name!r} has no {attr!r}") from exc
    found = entry_points(group=ENTRY_POINT_GROUP, name=spec)
    if not found:
        known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
        raise PipelineError(f"no pipeline named {spec!r} in entry point group "
                            f"{ENTRY_POINT_GROUP!r} (known: {', '.join(known) or 'none'}); "
                            "or give module:callable")
    return next(iter(found)).load()


def validate(stages: Any, spec: str) -> list[Stage]:
    if not isinstance(stages, Sequence) or not stages:
        raise PipelineError(f"pipeline {spec!r} must give a non-empty list of Stage")
    names: set[str] = set()
    for stage in stages:
        if not isinstance(stage, Stage):
            raise PipelineError(f"pipeline {spec!r}: {str(stage)[:80]!r} is not a Stage")
        if not (isinstance(stage.name, str) and _NAME.fullmatch(stage.name)):
            raise PipelineError(f"pipeline {spec!r}: a stage name must be 1 to 64 letters, "
                                f"digits, '_', '-' or '.' (got {str(stage.name)[:80]!r})")
        if stage.name in names:
            raise PipelineError(f"pipeline {spec!r}: stage name {stage.name!r} is repeated")
        timeout = stage.timeout
        if timeout is not None and not (
                isinstance(timeout, timedelta) and timedelta(0) < timeout <= MAX_TIMEOUT):
            raise PipelineError(f"pipeline {spec!r}: stage {stage.name!r} has a timeout that is "
                                f"not between 0 and {format_duration(MAX_TIMEOUT)}")
        names.add(stage.name)
    return list(stages)


def load_pipeline(spec: str = DEFAULT_PIPELINE) -> list[Stage]:
    target = _resolve(spec)
    stages = target() if callable(target) else target
    return validate(stages, spec)
