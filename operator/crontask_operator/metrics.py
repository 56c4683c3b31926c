"""Prometheus metrics: what an on-call engineer graphs and alerts on.

Counters only move on events the operator has seen once (a reconcile, a run folded into status
for the first time), so a restart does not inflate them: folding is idempotent, and so are they.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    disable_created_metrics,
    start_http_server,
)

NAMESPACE: Final = "crontask_operator"


class Metrics:
    """The operator's metrics, on a registry of their own (tests create as many as they like)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles = Counter(
            "reconciles", "CronTask reconciliations, by trigger and result.",
            ["trigger", "result"], namespace=NAMESPACE, registry=self.registry)
        self.errors = Counter(
            "errors", "Errors while reconciling (API failures, rejected CronJobs, bad specs).",
            ["reason"], namespace=NAMESPACE, registry=self.registry)
        self.applies = Counter(
            "cronjob_applies", "CronJobs written (created, updated or repaired after drift).",
            ["kind"], namespace=NAMESPACE, registry=self.registry)
        self.runs = Counter(
            "runs", "Finished runs folded into CronTask status, by task and outcome.",
            ["namespace", "task", "outcome"], namespace=NAMESPACE, registry=self.registry)
        self.stage_errors = Counter(
            "stage_errors", "Pipeline stage errors reported by finished runs.",
            ["namespace", "task", "stage"], namespace=NAMESPACE, registry=self.registry)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - in a pod
        # *_created series are noise for counters that start at boot.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        start_http_server(port, addr=addr, registry=self.registry)
