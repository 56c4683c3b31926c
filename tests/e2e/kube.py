"""kubectl and helm as a user runs them, for the e2e suite.

The suite drives the cluster through the same command-line tools a platform engineer uses, so
that what it proves (RBAC, admission, printer columns, `kubectl apply` errors) is what users see.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class CommandFailed(AssertionError):
    pass


@dataclass(frozen=True)
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def run(args: list[str], *, check: bool = True, stdin: str | None = None,
        timeout: float = 180) -> Result:
    proc = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout,
                          check=False)
    result = Result(args, proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise CommandFailed(
            f"{' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
            f"stderr:\n{proc.stderr}"
        )
    return result


def kubectl(*args: str, check: bool = True, stdin: str | None = None,
            timeout: float = 180) -> Result:
    return run(["kubectl", *args], check=check, stdin=stdin, timeout=timeout)


def kubectl_json(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json").stdout)


def helm(*args: str, check: bool = True, timeout: float = 300) -> Result:
    return run(["helm", *args], check=check, timeout=timeout)


def get(kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    """The object, or None when it does not exist."""
    result = kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr or "not found" in result.stderr:
            return None
        raise CommandFailed(result.stderr)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 120,
             interval: float = 1.0) -> T:
    """Poll until probe returns something truthy; fail naming what never happened."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond  # type: ignore[no-any-return]
    return None
