"""Prometheus metrics: what an on-call engineer graphs and alerts on, and what a scale
benchmark reads.

Counters only move on events the operator has seen once (a reconcile, a run folded into status
for the first time), so a restart does not inflate them. The reconcile and API-write counters
make the event-driven design measurable: at steady state reconciles come from the slow resync
only, and writes stay at zero while nothing changes.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

NAMESPACE: Final = "crontask_operator"
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


class Metrics:
    """The operator's metrics, on a registry of their own (tests create as many as they like)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r, ns = self.registry, NAMESPACE
        self.reconciles = Counter(
            "reconciles", "CronTask reconciles, by what queued them (crontask, cronjob, job, pod,"
            " recover, resync, requeue, retry) and result (ok, refused, conflict, rejected,"
            " error, gone).", ["trigger", "result"], namespace=ns, registry=r)
        self.reconcile_seconds = Histogram(
            "reconcile_duration_seconds", "Time one reconcile took, API calls included.",
            buckets=LATENCY_BUCKETS, namespace=ns, registry=r)
        self.queue_depth = Gauge(
            "queue_depth", "CronTasks waiting for a worker now.", namespace=ns, registry=r)
        self.queue_wait = Histogram(
            "queue_wait_seconds", "Time a CronTask waited in the queue before a worker took it.",
            buckets=LATENCY_BUCKETS, namespace=ns, registry=r)
        self.events_seen = Counter(
            "watch_events", "Watch events received, by resource and whether one asked for a"
            " reconcile.", ["resource", "queued"], namespace=ns, registry=r)
        self.api_writes = Counter(
            "api_writes", "Requests the operator made to change objects, by resource and verb.",
            ["resource", "verb"], namespace=ns, registry=r)
        self.errors = Counter(
            "errors", "Errors while reconciling (API failures, rejected CronJobs, bad specs).",
            ["reason"], namespace=ns, registry=r)
        self.applies = Counter(
            "cronjob_applies", "CronJobs written (created, updated or repaired after drift).",
            ["kind"], namespace=ns, registry=r)
        self.runs = Counter(
            "runs", "Finished runs folded into CronTask status, by task and outcome.",
            ["namespace", "task", "outcome"], namespace=ns, registry=r)
        self.stage_errors = Counter(
            "stage_errors", "Pipeline stage errors reported by finished runs.",
            ["namespace", "task", "stage"], namespace=ns, registry=r)
        self.missed_runs = Counter(
            "missed_runs", "Runs whose Job was gone before the operator saw it finish.",
            ["namespace", "task"], namespace=ns, registry=r)
        self.fold_latency = Histogram(
            "run_fold_latency_seconds", "From a Job's completion time (whole seconds, as the API"
            " server records it) to its run being written into the CronTask's status.",
            buckets=(0.5, 1, 2, 3, 5, 10, 30, 60, 300), namespace=ns, registry=r)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - in a pod
        # *_created series are noise for counters that start at boot.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        start_http_server(port, addr=addr, registry=self.registry)
