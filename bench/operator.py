"""Benchmark: the operator at scale on the local cluster (issue 10.2), side by side with the
engine's own floor.

    hack/cluster/cluster.sh up                      # images built and imported (hack/images.sh)
    hack/cluster/cluster.sh exec -- .venv/bin/python bench/operator.py            # 100, 1000
    hack/cluster/cluster.sh exec -- .venv/bin/python bench/operator.py --sizes 100 --window 120

It installs the Helm chart (the operator image, one replica, leader election on, cluster-wide)
into ``bench-system`` and, for each size N, in fresh namespaces:

1. the floor: ``kubectl apply --server-side`` of N plain CronJobs (the very manifests the
   operator would build, without owner), timed per object until our watch sees it;
2. the same apply of N CronTasks (schedules spread over the hour, all suspended), timed per
   object until its CronJob exists and the CronTask is Ready=True, with the operator's CPU
   seconds over the burst; then ``--runners`` of them are resumed: they run the real
   ``recover`` job every minute against the cluster's PostgreSQL;
3. the steady state, over ``--window`` seconds after ``--settle``: the operator's API requests
   by verb and resource (the API server's audit log, by the operator's ServiceAccount), its CPU
   seconds per minute, the reconciles by trigger (its own metrics), and for every run of the
   runners the time from its Job finishing to the run being in the CronTask's status (our own
   watches on both);
4. the operator's peak RSS (VmHWM of its process).

Results are printed (a Markdown table) and kept in ``.artifacts/bench-operator.json``; copy them
into BENCHMARKS.md. Nothing here is asserted: a benchmark reports.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from crontask_operator.cronjob import JobDefaults, Owner, build_cronjob  # noqa: E402
from crontask_operator.spec import parse_spec  # noqa: E402
from crontask_operator.validation import Timing, resolve  # noqa: E402
from tests.kube import (  # noqa: E402
    container_pid,
    helm,
    kubectl,
    kubectl_json,
    process_cpu_seconds,
    process_memory,
    wait_for,
)
from tests.watching import Watches, finished, ready  # noqa: E402

SYSTEM = "bench-system"
RELEASE = "bench"
SECRET = "crontask-database"
TASKS = ("recover", "decay", "process")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1])."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(-(-q * len(ordered) // 1)) - 1))]


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": percentile(values, 0.5), "p99": percentile(values, 0.99),
            "max": max(values), "mean": statistics.fmean(values)}


# -- the objects ----------------------------------------------------------------------------
def crontask(i: int, n: int, runners: int) -> dict[str, Any]:
    """CronTask i of n: schedules spread over the hour; the first ``runners`` will run every
    minute (all are applied suspended: the runners are resumed once every CronTask is Ready, so
    that the apply burst measures the operator, not a storm of job pods starting on 2 cores)."""
    runner = i < runners
    task = "recover" if runner else TASKS[i % len(TASKS)]
    spec: dict[str, Any] = {"task": task, "schedule": "* * * * *" if runner
                            else f"{(i * 60) // n} * * * *",
                            "suspend": True,
                            "database": {"secretKeyRef": {"name": SECRET}}}
    return {"apiVersion": "crontask.dev/v1alpha1", "kind": "CronTask",
            "metadata": {"name": f"t{i:04d}"}, "spec": spec}


def plain_cronjob(ct: dict[str, Any], namespace: str, image: str) -> dict[str, Any]:
    """What the operator would write for ``ct``, as a plain CronJob (no owner, no labels that
    would make the operator look at it)."""
    spec = parse_spec(ct["spec"])
    timing = resolve(ct["metadata"]["name"], spec, dt.datetime.now(dt.UTC))
    assert isinstance(timing, Timing), timing
    manifest = copy.deepcopy(build_cronjob(Owner(ct["metadata"]["name"], namespace, "none"),
                                           spec, timing,
                                           JobDefaults(image=image, image_pull_policy="Never")))
    manifest["metadata"].pop("ownerReferences", None)
    manifest["metadata"]["labels"] = {"bench": "plain"}
    template = manifest["spec"]["jobTemplate"]
    template["metadata"] = {"labels": {"bench": "plain"}}
    template["spec"]["template"]["metadata"] = {"labels": {"bench": "plain"}}
    return manifest


def apply_all(namespace: str, docs: list[dict[str, Any]]) -> float:
    """``kubectl apply --server-side`` of every document; the seconds kubectl took."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as file:
        yaml.safe_dump_all(docs, file)
    started = time.monotonic()
    try:
        kubectl("apply", "--server-side", "-n", namespace, "-f", file.name, timeout=900)
    finally:
        os.unlink(file.name)
    return time.monotonic() - started


def namespace(name: str, *, secret_url: str | None = None) -> None:
    kubectl("create", "namespace", name)
    kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    if secret_url:
        kubectl("create", "secret", "generic", SECRET, "-n", name,
                f"--from-literal=url={secret_url}")


def delete_namespaces(*names: str) -> None:
    kubectl("delete", "namespace", *names, "--wait=false", check=False)
    wait_for(f"namespaces {names} to go", lambda: all(
        kubectl("get", "namespace", n, check=False).returncode != 0 for n in names),
        timeout=900, interval=2)


# -- what we watch ----------------------------------------------------------------------------
class Seen:
    """First-seen times (monotonic) of what the benchmark waits for."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cronjobs: dict[tuple[str, str], float] = {}
        self.ready: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.folded: dict[str, float] = {}

    def on_cronjob(self, kind: str, obj: dict[str, Any], at: float) -> None:
        meta = obj["metadata"]
        if kind != "DELETED":
            with self.lock:
                self.cronjobs.setdefault((meta["namespace"], meta["name"]), at)

    def on_crontask(self, kind: str, obj: dict[str, Any], at: float) -> None:
        if kind == "DELETED":
            return
        with self.lock:
            if ready(obj):
                self.ready.setdefault(obj["metadata"]["name"], at)
            for run in (obj.get("status") or {}).get("recentRuns") or []:
                self.folded.setdefault(str(run.get("jobName")), at)

    def on_job(self, kind: str, obj: dict[str, Any], at: float) -> None:
        if finished(obj):
            with self.lock:
                self.finished.setdefault(obj["metadata"]["name"], at)


# -- the operator process ---------------------------------------------------------------------
def operator_pod() -> str:
    lease = kubectl_json("get", "lease", f"{RELEASE}-crontask-operator", "-n", SYSTEM)
    holder = lease["spec"].get("holderIdentity") or ""
    return holder.rsplit("_", 1)[0]


def operator_metrics(pod: str) -> dict[str, float]:
    ip = kubectl_json("get", "pod", pod, "-n", SYSTEM)["status"]["podIP"]
    with urllib.request.urlopen(f"http://{ip}:8080/metrics", timeout=10) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("crontask_operator_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def metric_delta(before: dict[str, float], after: dict[str, float],
                 prefix: str) -> dict[str, float]:
    return {k[len(prefix):]: after[k] - before.get(k, 0.0) for k in after
            if k.startswith(prefix) and after[k] - before.get(k, 0.0) > 0}


# -- the audit log -------------------------------------------------------------------------------
def audit_counts(user: str, start: dt.datetime, end: dt.datetime) -> Counter[str]:
    """Requests by ``user`` received in [start, end), by "verb resource"."""
    path = os.environ.get("CRONTASK_AUDIT_LOG")
    counts: Counter[str] = Counter()
    if not path:
        return counts
    seen: set[str] = set()
    for file in sorted(Path(path).parent.glob(Path(path).name + "*")):
        with file.open() as lines:
            for line in lines:
                if user not in line:
                    continue
                event = json.loads(line)
                if event.get("auditID") in seen or (event.get("user") or {}).get(
                        "username") != user:
                    continue
                at = dt.datetime.fromisoformat(
                    event["requestReceivedTimestamp"].replace("Z", "+00:00"))
                if not start <= at < end:
                    continue
                seen.add(event["auditID"])
                ref = event.get("objectRef") or {}
                resource = ref.get("resource", "?") + (
                    f"/{ref['subresource']}" if ref.get("subresource") else "")
                counts[f"{event['verb']} {resource}"] += 1
    return counts


# -- one size -------------------------------------------------------------------------------------
def run_size(n: int, args: argparse.Namespace, pid: int, pod: str) -> dict[str, Any]:
    ct_ns, cj_ns = f"bench-ct-{n}", f"bench-cj-{n}"
    namespace(ct_ns, secret_url=os.environ["DATABASE_URL"])
    namespace(cj_ns)
    crontasks = [crontask(i, n, args.runners) for i in range(n)]
    plain = [plain_cronjob(ct, cj_ns, args.jobs_image) for ct in crontasks]
    seen = Seen()
    watches = Watches()
    watches.add("cronjobs", cj_ns, seen.on_cronjob)
    watches.add("cronjobs", ct_ns, seen.on_cronjob)
    watches.add("crontasks", ct_ns, seen.on_crontask)
    watches.add("jobs", ct_ns, seen.on_job)
    watches.start()
    result: dict[str, Any] = {"n": n, "runners": args.runners,
                              "load_average_at_start": os.getloadavg()}
    try:
        log(f"N={n}: applying {n} plain CronJobs (the floor)")
        t0 = time.monotonic()
        result["plain_kubectl_seconds"] = apply_all(cj_ns, plain)
        wait_for("every plain CronJob", lambda: sum(1 for k in seen.cronjobs if k[0] == cj_ns)
                 >= n or None, timeout=600, interval=0.2)
        result["plain"] = summary([at - t0 for (ns, _), at in seen.cronjobs.items()
                                   if ns == cj_ns])
        log(f"N={n}: plain CronJobs all exist after {result['plain']['max']:.1f}s")
        time.sleep(5)

        log(f"N={n}: applying {n} CronTasks")
        cpu0 = process_cpu_seconds(pid)
        t0 = time.monotonic()
        result["crontask_kubectl_seconds"] = apply_all(ct_ns, crontasks)

        def all_ready() -> bool | None:
            cronjobs = sum(1 for k in seen.cronjobs if k[0] == ct_ns)
            return (cronjobs >= n and len(seen.ready) >= n) or None
        wait_for("every CronTask Ready", all_ready, timeout=args.ready_timeout, interval=0.2)
        per_object = [max(seen.ready[ct["metadata"]["name"]],
                          seen.cronjobs[(ct_ns, ct["metadata"]["name"])]) - t0
                      for ct in crontasks]
        burst = time.monotonic() - t0
        result["crontask"] = summary(per_object)
        result["burst_cpu_seconds"] = process_cpu_seconds(pid) - cpu0
        result["burst_seconds"] = burst
        log(f"N={n}: every CronTask Ready after {result['crontask']['max']:.1f}s"
            f" (operator CPU {result['burst_cpu_seconds']:.1f}s)")

        log(f"N={n}: resuming {args.runners} runners; settling {args.settle}s, then the"
            f" steady state for {args.window}s")
        for ct in crontasks[:args.runners]:
            kubectl("patch", "ct", ct["metadata"]["name"], "-n", ct_ns, "--type=merge",
                    "-p", '{"spec":{"suspend":false}}')
        time.sleep(args.settle)
        wall0, cpu0, mono0 = dt.datetime.now(dt.UTC), process_cpu_seconds(pid), time.monotonic()
        metrics0 = operator_metrics(pod)
        time.sleep(args.window)
        wall1, cpu1, mono1 = dt.datetime.now(dt.UTC), process_cpu_seconds(pid), time.monotonic()
        metrics1 = operator_metrics(pod)
        minutes = (mono1 - mono0) / 60
        result["steady_cpu_seconds_per_minute"] = (cpu1 - cpu0) / minutes
        user = f"system:serviceaccount:{SYSTEM}:{RELEASE}-crontask"
        requests = audit_counts(user, wall0, wall1)
        result["steady_requests_per_minute"] = {k: round(v / minutes, 2)
                                                for k, v in sorted(requests.items())}
        result["steady_reconciles_per_minute"] = {
            k: round(v / minutes, 2) for k, v in metric_delta(
                metrics0, metrics1, "crontask_operator_reconciles_total").items()}
        with seen.lock:
            runs = [seen.folded[job] - at for job, at in seen.finished.items()
                    if job in seen.folded and mono0 - 60 <= at <= mono1]
            unfolded = [job for job, at in seen.finished.items()
                        if job not in seen.folded and at <= mono1 - 10]
        result["status_latency"] = summary(runs)
        result["status_latencies"] = sorted(round(r, 3) for r in runs)
        result["runs_not_folded"] = unfolded
        result["memory"] = process_memory(pid)
        result["load_average_at_end"] = os.getloadavg()
        log(f"N={n}: steady CPU {result['steady_cpu_seconds_per_minute']:.2f}s/min,"
            f" requests/min {result['steady_requests_per_minute']},"
            f" status latency {result['status_latency']}")
    finally:
        watches.stop()
        result["watch_restarts"] = watches.restarts
    if not args.keep:
        log(f"N={n}: deleting the namespaces")
        delete_namespaces(ct_ns, cj_ns)
    return result


def install(args: argparse.Namespace) -> None:
    kubectl("create", "namespace", SYSTEM, check=False)
    kubectl("create", "secret", "generic", SECRET, "-n", SYSTEM,
            f"--from-literal=url={os.environ['DATABASE_URL']}", check=False)
    repository, _, tag = args.operator_image.rpartition(":")
    jobs_repository, _, jobs_tag = args.jobs_image.rpartition(":")
    helm("upgrade", "--install", RELEASE, str(REPO / "charts" / "crontask"), "-n", SYSTEM,
         "--wait", "--timeout", "300s",
         "--set", f"operator.image.repository={repository}", "--set", f"operator.image.tag={tag}",
         "--set", "operator.image.pullPolicy=Never",
         "--set", f"jobs.image.repository={jobs_repository}", "--set", f"jobs.image.tag={jobs_tag}",
         "--set", "jobs.image.pullPolicy=Never",
         "--set", f"operator.replicaCount={args.replicas}",
         "--set", "operator.resources.limits.memory=512Mi",
         "--set", f"operator.logLevel={args.operator_log_level}", timeout=400)


def table(results: list[dict[str, Any]]) -> str:
    rows = ["| N | plain CronJobs: p50 / p99 / all | CronTasks Ready: p50 / p99 / all |"
            " burst CPU | steady CPU | peak RSS | Job→status p50 / p99 (runs) |",
            "|---:|---|---|---:|---:|---:|---|"]
    for r in results:
        rows.append(
            f"| {r['n']} | {r['plain']['p50']:.1f} / {r['plain']['p99']:.1f} /"
            f" {r['plain']['max']:.1f} s | {r['crontask']['p50']:.1f} /"
            f" {r['crontask']['p99']:.1f} / {r['crontask']['max']:.1f} s |"
            f" {r['burst_cpu_seconds']:.1f} s | {r['steady_cpu_seconds_per_minute']:.2f} s/min |"
            f" {r['memory'].get('VmHWM', 0) / 2**20:.0f} MiB |"
            f" {r['status_latency'].get('p50', float('nan')):.2f} /"
            f" {r['status_latency'].get('p99', float('nan')):.2f} s"
            f" ({r['status_latency']['n']}) |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000", help="comma-separated CronTask counts")
    parser.add_argument("--runners", type=int, default=10,
                        help="CronTasks of each size that run a real job every minute")
    parser.add_argument("--settle", type=float, default=60,
                        help="seconds after resuming the runners before the window")
    parser.add_argument("--window", type=float, default=300,
                        help="steady-state seconds (default: one resync interval)")
    parser.add_argument("--ready-timeout", type=float, default=900)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--operator-log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--keep", action="store_true", help="keep the namespaces and release")
    parser.add_argument("--operator-image",
                        default=os.environ.get("CRONTASK_OPERATOR_IMAGE", "crontask-operator:dev"))
    parser.add_argument("--jobs-image",
                        default=os.environ.get("CRONTASK_JOBS_IMAGE", "crontask-jobs:dev"))
    parser.add_argument("--out", default=str(REPO / ".artifacts" / "bench-operator.json"))
    args = parser.parse_args()
    if not os.environ.get("KUBECONFIG") or not os.environ.get("DATABASE_URL"):
        sys.exit("run it where the cluster is: hack/cluster/cluster.sh exec -- .venv/bin/python"
                 " bench/operator.py (KUBECONFIG and DATABASE_URL are set there)")
    log("installing the chart")
    install(args)
    pod = wait_for("the leader", lambda: operator_pod() or None, timeout=120)
    pid = wait_for("the operator's process", lambda: container_pid(SYSTEM, pod, "operator"))
    log(f"operator pod {pod}, pid {pid}")
    results = []
    started = time.monotonic()
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            results.append(run_size(n, args, pid, pod))
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=2))
    finally:
        if not args.keep:
            helm("uninstall", RELEASE, "-n", SYSTEM, "--wait", check=False)
            kubectl("delete", "namespace", SYSTEM, "--wait=false", check=False)
    print()
    print(table(results))
    print()
    for r in results:
        print(f"N={r['n']}: steady requests/min by the operator: {r['steady_requests_per_minute']}")
        print(f"N={r['n']}: reconciles/min by trigger: {r['steady_reconciles_per_minute']}")
        print(f"N={r['n']}: kubectl apply took {r['plain_kubectl_seconds']:.1f}s (plain),"
              f" {r['crontask_kubectl_seconds']:.1f}s (CronTasks); memory {r['memory']}")
    print(f"\nwhole run {time.monotonic() - started:.0f}s; results in {args.out}")


if __name__ == "__main__":
    main()
