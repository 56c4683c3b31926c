"""Chaos on the real cluster (issue 10.3 and 10.5), in file order on one shared world.

Each test disrupts, then waits until everything converges (``World.converge``: one CronJob per
CronTask, none orphaned, every finished run counted exactly once, no condition stuck) and prints
how long that took. Leader election is proven on the way: the leader killed mid-reconcile is
replaced by the standby, a frozen leader is replaced and never acts again after it thaws, and
the API server's audit log shows the replicas' writes never interleave.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import subprocess
import time

import pytest

from tests.chaos.conftest import (
    CRONTASKS_PER_NAMESPACE,
    LEASE,
    LOCAL_ONLY,
    REFUSED,
    REPO,
    RUNNERS,
    SCHEDULED,
    World,
    crontask_manifest,
    local_backend,
)
from tests.kube import kubectl, kubectl_json, wait_for

pytestmark = [pytest.mark.timeout(420), pytest.mark.skipif(not local_backend(), reason=LOCAL_ONLY)]


def apply_all(world: World) -> None:
    for ns in world.namespaces:
        names = [*RUNNERS, *SCHEDULED, *REFUSED]
        names += [f"ct-{i:03d}" for i in range(CRONTASKS_PER_NAMESPACE - len(names))]
        docs = [crontask_manifest(name, i) for i, name in enumerate(names)]
        kubectl("apply", "--server-side", "-n", ns, "-f", "-",
                stdin="\n".join(json.dumps(d) for d in docs), timeout=300)


def cronjob_count(world: World) -> int:
    return sum(len(kubectl_json("get", "cronjobs", "-n", ns, "-l",
                                "crontask.dev/crontask")["items"]) for ns in world.namespaces)


def takeover(world: World, old: str, timeout: float = 120) -> str:
    """Wait until another process holds the Lease (``old``: the holder identity); returns the
    new holder's pod."""
    wait_for("another process to take the Lease",
             lambda: ((h := world.holder()) and h != old) or None, timeout=timeout,
             interval=0.2)
    return world.leader()


def runs_everywhere(world: World) -> list[str]:
    return [world.start_run(ns, name) for ns in world.namespaces for name in RUNNERS]


def restart_component(name: str, *flags: str) -> float:
    started = time.monotonic()
    subprocess.run([str(REPO / "hack" / "cluster" / "cluster.sh"), "restart", name, *flags],
                   check=True, timeout=180, capture_output=True)
    return time.monotonic() - started


def test_leader_killed_in_the_middle_of_reconciling_hundreds(world: World) -> None:
    """SIGKILL of the leader while it creates 200 CronJobs: another process takes the Lease once
    it expires and finishes the job (the standby, or the killed pod's container restarted by
    the kubelet: whichever asks first; the frozen-leader test below leaves the standby alone in
    the race)."""
    holder = wait_for("a leader", world.holder, timeout=60)
    old = holder.rsplit("_", 1)[0]
    pid = world.pid(old)
    restarts = world.restarts(old)
    apply_all(world)
    total = 2 * CRONTASKS_PER_NAMESPACE - 2 * len(REFUSED)
    wait_for("a quarter of the CronJobs", lambda: cronjob_count(world) >= total // 4 or None,
             timeout=120, interval=0.2)
    created_before = cronjob_count(world)
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    new = takeover(world, holder)
    world.note("leader SIGKILLed mid-reconcile", takeover_seconds=time.monotonic() - killed)
    print(f"chaos: the Lease went from {old} to {new}"
          f" ({'the standby' if new != old else 'the restarted container'})")
    assert created_before < total, "the kill came in the middle of reconciling"
    world.converge("leader SIGKILLed mid-reconcile", killed)
    assert world.leader() == new
    wait_for("the killed container to restart", lambda: world.restarts(old) > restarts)


def test_a_frozen_leader_is_replaced_and_never_acts_again(world: World) -> None:
    """SIGSTOP the leader past its Lease, with a spec change waiting (someone must act): the
    standby takes over and does it. Thawed while the new leader works, the old one writes
    nothing (its right lapsed on its own clock) and exits, to come back as a standby."""
    holder = wait_for("a leader", world.holder, timeout=60)
    old = holder.rsplit("_", 1)[0]
    pid = world.pid(old)
    old_ip = next(p["status"]["podIP"] for p in world.pods() if p["metadata"]["name"] == old)
    restarts = world.restarts(old)
    frozen = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        kubectl("patch", "ct", "ct-010", "-n", world.namespaces[0], "--type=merge",
                "-p", '{"spec":{"schedule":"7 7 * * *"}}')
        new = takeover(world, holder)
        world.note("leader frozen", takeover_seconds=time.monotonic() - frozen)
        acquired = dt.datetime.fromisoformat(
            world.lease()["acquireTime"].replace("Z", "+00:00"))
    finally:
        os.kill(pid, signal.SIGCONT)
    world.converge("leader frozen", frozen)
    wait_for("the thawed leader to exit and restart", lambda: world.restarts(old) > restarts,
             timeout=120)
    late = [w for w in world.audit_writes() if w[1] == old_ip and w[0] >= acquired]
    assert late == [], f"the old leader wrote after {new} took over at {acquired}"
    assert world.leader() == new


def test_cronjobs_and_jobs_deleted_by_hand(world: World) -> None:
    """Every CronJob of one namespace deleted (their Jobs go with them); finished Jobs deleted
    the moment they finish (before or after the fold: counted once either way); a running Job
    deleted (not a run)."""
    a, b = world.namespaces
    done = runs_everywhere(world)
    world.wait_finished(done)
    fresh = [world.start_run(b, name) for name in RUNNERS]
    started = time.monotonic()
    kubectl("delete", "cronjobs", "-n", a, "-l", "crontask.dev/crontask", "--wait=false")
    doomed = world.start_run(b, RUNNERS[0])
    kubectl("delete", "job", doomed, "-n", b, "--wait=false")
    pending = set(fresh)
    while pending:
        for job in sorted(pending):
            state = world.ledger.state(job)
            if state is not None and state["finished"]:
                kubectl("delete", "job", job, "-n", b, "--wait=false")
                pending.discard(job)
        time.sleep(0.1)
        assert time.monotonic() - started < 240, f"jobs {pending} never finished"
    world.converge("CronJobs and Jobs deleted by hand", started)


def test_operator_down_while_runs_finish(world: World) -> None:
    """No replica at all while runs finish and specs change: all of it is folded and applied
    once the operator is back."""
    deployment = f"deployment/{LEASE}"  # the Deployment and its Lease share a name
    kubectl("scale", deployment, "-n", world.system, "--replicas=0")
    wait_for("no operator pod", lambda: not world.pods() or None, timeout=120)
    runs = runs_everywhere(world)
    kubectl("patch", "ct", "ct-011", "-n", world.namespaces[1], "--type=merge",
            "-p", '{"spec":{"schedule":"8 8 * * *"}}')
    world.wait_finished(runs)
    back = time.monotonic()
    kubectl("scale", deployment, "-n", world.system, "--replicas=2")
    leader = wait_for("a leader again", lambda: (p := world.leader()) and any(
        x["metadata"]["name"] == p for x in world.pods()) and p, timeout=120, interval=0.2)
    world.note("operator down while runs finished", leader_after_seconds=time.monotonic() - back)
    world.converge("operator down while runs finished", back)
    assert leader


def test_kube_apiserver_restarted(world: World) -> None:
    """Runs finishing across an API server restart; afterwards a spec change and a deleted
    CronJob are still noticed (the watches came back)."""
    runs = runs_everywhere(world)
    took = restart_component("kube-apiserver")
    back = time.monotonic()
    world.note("kube-apiserver restarted", restart_seconds=took)
    a, b = world.namespaces
    kubectl("patch", "ct", "ct-012", "-n", a, "--type=merge",
            "-p", '{"spec":{"schedule":"9 9 * * *"}}')
    kubectl("delete", "cronjob", "ct-013", "-n", b)
    world.wait_finished(runs)
    world.converge("kube-apiserver restarted", back)


def test_etcd_restarted(world: World) -> None:
    """etcd SIGKILLed and started again under running jobs; then changes are still noticed."""
    runs = runs_everywhere(world)
    took = restart_component("etcd", "--kill")
    back = time.monotonic()
    world.note("etcd restarted", restart_seconds=took)
    a, b = world.namespaces
    wait_for("the API server to serve again", lambda: kubectl(
        "get", "--raw", "/readyz", check=False).returncode == 0 or None, timeout=120)
    kubectl("patch", "ct", "ct-014", "-n", b, "--type=merge",
            "-p", '{"spec":{"schedule":"10 10 * * *"}}')
    kubectl("delete", "cronjob", "ct-015", "-n", a)
    world.wait_finished(runs)
    world.converge("etcd restarted", back)


def test_zz_one_replica_acted_at_a_time(world: World) -> None:
    """Over the whole tier, the writes of the two replicas (the audit log, by source address)
    never interleave: the writer changed at most as often as the Lease changed hands."""
    writes = world.audit_writes()
    assert writes, "the operators wrote"
    switches = sum(1 for before, after in itertools.pairwise(writes)
                   if before[1] != after[1])
    transitions = int(world.lease().get("leaseTransitions") or 0)
    world.note("whole tier", writer_switches=switches, lease_transitions=transitions)
    assert switches <= transitions, (switches, transitions)
    scheduled = world.ledger.runs(world.namespaces[0], SCHEDULED[0])
    assert sum(scheduled.values()) >= 1, "the scheduled CronTask ran through the chaos"

