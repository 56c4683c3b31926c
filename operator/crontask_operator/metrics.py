"""Prometheus metrics: what an on-call engineer graphs and alerts on, and what a scale
benchmark reads.

Counters only move on events the operator has seen once (a reconcile, a run folded into status
for the first time), so a restart does not inflate them. The reconcile and API-write counters
make the event-driven design measurable: at steady state reconciles come from the slow resync
only, and writes stay at zero while nothing changes.

Per-CronTask series for alerting (``crontask_*``, see ``taskmetrics``) are read from each
CronTask's status by the ``CronTaskCollector``: only the replica that reconciles fills it.
Label values that come from pods (stage names) are bounded: after ``MAX_STAGE_LABELS`` distinct
names, further ones are counted as ``other``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from crontask_operator.taskmetrics import OUTCOMES, TaskSeries

NAMESPACE: Final = "crontask_operator"
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
MAX_STAGE_LABELS: Final = 64
OTHER_STAGE: Final = "other"
TASK_LABELS: Final = ("namespace", "crontask", "task")


class CronTaskCollector(Collector):
    """The per-CronTask series, from the values the reconciles last set. Scrapes run in the
    metrics server's thread, reconciles in the event loop: a lock keeps the two apart."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], TaskSeries] = {}
        self._lock = threading.Lock()

    def set(self, series: TaskSeries) -> None:
        with self._lock:
            self._series[(series.namespace, series.crontask)] = series

    def remove(self, namespace: str, name: str) -> None:
        with self._lock:
            self._series.pop((namespace, name), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._series)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            series = sorted(self._series.values(), key=lambda s: s.labels)

        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=[*TASK_LABELS, *extra])

        success = gauge("crontask_last_success_timestamp_seconds",
                        "When the CronTask's last successful (or rightly skipped) run finished.")
        failure = gauge("crontask_last_failure_timestamp_seconds",
                        "When the CronTask's last failed run finished.")
        last_run = gauge("crontask_last_run_timestamp_seconds",
                         "When the CronTask's last run finished.")
        outcome = gauge("crontask_last_run_outcome", "The last run's outcome: 1 for the"
                        " outcome it had, 0 for the others.", ("outcome",))
        stage_errors = gauge("crontask_last_run_stage_errors",
                             "Pipeline stage errors in the last run.")
        recent = gauge("crontask_recent_runs", "Runs kept in status.recentRuns (at most 10).")
        recent_errors = gauge("crontask_recent_runs_with_stage_errors",
                              "How many of status.recentRuns had stage errors.")
        runs = CounterMetricFamily("crontask_runs", "Finished runs, each counted once (the"
                                   " status counters).", labels=[*TASK_LABELS, "outcome"])
        missed = CounterMetricFamily("crontask_missed_runs", "Runs whose Job was gone before"
                                     " the operator saw it finish.", labels=list(TASK_LABELS))
        interval = gauge("crontask_schedule_interval_seconds",
                         "The schedule's shortest real interval between two runs.")
        created = gauge("crontask_created_timestamp_seconds", "When the CronTask was created.")
        suspended = gauge("crontask_suspended", "1 when spec.suspend is true.")
        ready = gauge("crontask_ready", "1 when the Ready condition is True, 0 when False.")
        for s in series:
            labels = list(s.labels)
            for family, value in ((success, s.last_success), (failure, s.last_failure),
                                  (last_run, s.last_run), (stage_errors, s.last_stage_errors),
                                  (interval, s.interval), (created, s.created)):
                if value is not None:
                    family.add_metric(labels, float(value))
            if s.last_outcome is not None:
                for name in OUTCOMES:
                    outcome.add_metric([*labels, name], 1.0 if name == s.last_outcome else 0.0)
            recent.add_metric(labels, float(s.recent_runs))
            recent_errors.add_metric(labels, float(s.recent_runs_with_stage_errors))
            for name in OUTCOMES:
                runs.add_metric([*labels, name], float(s.runs.get(name, 0)))
            missed.add_metric(labels, float(s.missed_runs))
            suspended.add_metric(labels, 1.0 if s.suspended else 0.0)
            if s.ready is not None:
                ready.add_metric(labels, 1.0 if s.ready else 0.0)
        yield from (success, failure, last_run, outcome, stage_errors, recent, recent_errors,
                    runs, missed, interval, created, suspended, ready)


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
        self.leader = Gauge(
            "leader", "1 while this replica holds the leader Lease (or runs without leader"
            " election), 0 while it stands by.", namespace=ns, registry=r)
        self.leader_transitions = Counter(
            "leader_transitions", "Times this replica started leading.", namespace=ns,
            registry=r)
        self.crontasks = CronTaskCollector()
        r.register(self.crontasks)
        self._stages: set[str] = set()
        self._stages_lock = threading.Lock()
        self.fold_latency = Histogram(
            "run_fold_latency_seconds", "From a Job's completion time (whole seconds, as the API"
            " server records it) to its run being written into the CronTask's status.",
            buckets=(0.5, 1, 2, 3, 5, 10, 30, 60, 300), namespace=ns, registry=r)

    def stage_label(self, stage: str) -> str:
        """``stage`` as a label value: the first MAX_STAGE_LABELS distinct names are kept, any
        later one is ``other`` (stage names come from pods: they must not grow the series)."""
        with self._stages_lock:
            if stage in self._stages:
                return stage
            if len(self._stages) < MAX_STAGE_LABELS:
                self._stages.add(stage)
                return stage
        return OTHER_STAGE

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - in a pod
        # *_created series are noise for counters that start at boot.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        start_http_server(port, addr=addr, registry=self.registry)
