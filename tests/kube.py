"""kubectl and helm as a user runs them, for the cluster and e2e tiers, and a patient wait_for.

Both tiers drive the cluster through the command-line tools a platform engineer uses, so what
they prove (RBAC, admission, printer columns, `kubectl apply` errors) is what users see.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

REPO = pathlib.Path(__file__).resolve().parents[1]
ARTIFACTS = pathlib.Path(os.environ.get("CRONTASK_E2E_ARTIFACTS", REPO / ".artifacts" / "e2e"))
"""Where the cluster tiers keep diagnostics of failed tests (hack/e2e.sh sets it)."""


def _binary(name: str) -> str:
    """The pinned binary from hack/tools.sh when built, else the one on PATH."""
    override = os.environ.get(name.upper())
    if override:
        return override
    cache = os.environ.get("CRONTASK_CACHE", "/var/cache/crontask")
    cached = sorted(glob.glob(f"{cache}/bin/*/{name}"))
    return cached[-1] if cached else (shutil.which(name) or name)


KUBECTL = _binary("kubectl")
HELM = _binary("helm")


def run(args: list[str], *, check: bool = True, stdin: str | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc


def kubectl(*args: str, check: bool = True, stdin: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run([KUBECTL, *args], check=check, stdin=stdin, timeout=timeout)


def kubectl_json(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json").stdout)


def helm(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run([HELM, *args], check=check, timeout=timeout)


def cluster_skip_reason() -> str | None:
    """Why tests that need a cluster cannot run here, or None when they can.

    Never guess a kube context: a developer's default one may be production.
    """
    if os.environ.get("CRONTASK_E2E") != "1":
        return ("needs a test cluster: run hack/e2e.sh, or set CRONTASK_E2E=1 and KUBECONFIG"
                " for a cluster you are willing to test against")
    if not os.environ.get("KUBECONFIG"):
        return "CRONTASK_E2E=1 but no KUBECONFIG: refusing to guess a kube context"
    return None


def apply(namespace: str, manifest: dict[str, Any],
          check: bool = True) -> subprocess.CompletedProcess[str]:
    return kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest), check=check)


def get(kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr:
            return None
        raise AssertionError(result.stderr)
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def events(namespace: str, name: str) -> list[dict[str, Any]]:
    out = kubectl("get", "events", "-n", namespace, "--field-selector",
                  f"involvedObject.name={name}", "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60,
             interval: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def create_restricted_namespace(name: str) -> None:
    """A namespace enforcing the restricted Pod Security Standard, so that admission itself
    proves the security settings of every pod the test makes there."""
    kubectl("create", "namespace", name)
    kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest")


def dump_namespace(namespace: str, extra: dict[str, list[str]] | None = None) -> pathlib.Path:
    """Keep what a person looks at first after a failure: events, pod descriptions, and our
    objects as YAML (plus any ``extra`` kubectl output), in one folder per namespace."""
    target = ARTIFACTS / namespace
    target.mkdir(parents=True, exist_ok=True)
    dumps = {
        "events.txt": ["get", "events", "-n", namespace, "--sort-by=.lastTimestamp"],
        "pods.txt": ["describe", "pods", "-n", namespace],
        "objects.yaml": ["get", "crontasks,cronjobs,jobs,pods", "-n", namespace, "-o", "yaml"],
        **(extra or {}),
    }
    for name, args in dumps.items():
        result = kubectl(*args, check=False)
        (target / name).write_text(result.stdout + result.stderr)
    return target


def container_pid(namespace: str, pod: str, container: str) -> int | None:
    """The host PID of a container's main process, or None where it cannot be found from here.

    Works where the node's processes are this machine's (the local backend: the kubelet's
    cgroupfs layout ``<root>/kubepods/<qos>/pod<uid>/<container id>``); the chaos tier uses it to
    kill or freeze a process the way a crash or a stalled node would, and the benchmark to read
    the operator's CPU time and peak RSS from /proc."""
    obj = kubectl_json("get", "pod", pod, "-n", namespace)
    uid = obj["metadata"]["uid"]
    ids = [s.get("containerID", "") for s in (obj.get("status") or {}).get(
        "containerStatuses") or [] if s.get("name") == container]
    if not ids or "://" not in ids[0]:
        return None
    cid = ids[0].split("://", 1)[1]
    for procs in glob.glob(f"/sys/fs/cgroup/pids/**/pod{uid}/{cid}/cgroup.procs",
                           recursive=True):
        pids = {int(p) for p in pathlib.Path(procs).read_text().split()}
        for pid in sorted(pids):
            try:
                stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) not in pids:  # its parent is outside
                return pid
    return None


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    out = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out
