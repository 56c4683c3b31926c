"""The handlers' logic with prepared arguments: a fake CronJob store, recorded events."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from typing import Any

import kopf
from operator_helpers import NOW, crontask

from crontask_contract.report import RunReport, RunStatus, StageErrors, encode
from crontask_operator import config as cfg
from crontask_operator import names
from crontask_operator.cronjob import JobDefaults
from crontask_operator.kube import Rejected
from crontask_operator.metrics import Metrics
from crontask_operator.outcomes import job_result, pod_result
from crontask_operator.reconcile import Context, fold, sync

LOG = logging.getLogger("test")


class FakeCronJobs:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.applies = 0
        self.reject: str | None = None

    async def get_cronjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((namespace, name))
        return copy.deepcopy(obj) if obj else None

    async def apply_cronjob(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        if self.reject:
            raise Rejected(422, self.reject)
        self.applies += 1
        obj = copy.deepcopy(dict(manifest))
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        obj["metadata"]["uid"] = "cj-uid"
        obj["metadata"]["resourceVersion"] = str(self.applies)
        self.objects[key] = obj
        return copy.deepcopy(obj)

    async def delete_cronjob(self, namespace: str, name: str, uid: str) -> bool:
        return self.objects.pop((namespace, name), None) is not None


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def warn(self, body: Mapping[str, Any], reason: str, message: str) -> None:
        self.events.append(("Warning", reason, message))

    def normal(self, body: Mapping[str, Any], reason: str, message: str) -> None:
        self.events.append(("Normal", reason, message))


def make() -> tuple[Context, FakeCronJobs, Recorder]:
    kube, rec = FakeCronJobs(), Recorder()
    return Context(kube=kube, defaults=JobDefaults(), metrics=Metrics(), events=rec), kube, rec


def obj(name: str = "process", task: str = "process", **extra: Any) -> dict[str, Any]:
    raw = crontask(name, task, **extra)
    raw["metadata"].update(uid="ct-uid", generation=1)
    raw["status"] = {}
    return raw


def step(ctx: Context, raw: dict[str, Any], trigger: str = "create") -> dict[str, Any]:
    """Run sync once and apply the status patch to ``raw`` like the API server would."""
    patch = kopf.Patch()
    asyncio.run(sync(ctx, body=kopf.Body(raw), patch=patch, now=NOW,
                     namespace_recover_stale=None, trigger=trigger, logger=LOG))
    status = dict(patch.get("status", {}))
    raw["status"] = {k: v for k, v in {**raw["status"], **status}.items() if v is not None}
    return status


def ready(raw: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in raw["status"]["conditions"] if c["type"] == "Ready")


def test_create_applies_cronjob_and_sets_ready() -> None:
    ctx, kube, _ = make()
    raw = obj()
    step(ctx, raw)
    assert kube.applies == 1
    assert ready(raw)["status"] == "True"
    assert raw["status"]["cronJobName"] == "process"
    assert raw["status"]["nextScheduleTime"] == "2026-01-05T12:05:00Z"
    assert raw["status"]["observedGeneration"] == 1


def test_replay_changes_nothing() -> None:
    ctx, kube, rec = make()
    raw = obj()
    step(ctx, raw)
    assert step(ctx, raw, "resume") == {}
    assert kube.applies == 1
    assert rec.events == []


def test_drift_is_repaired_with_a_warning() -> None:
    ctx, kube, rec = make()
    raw = obj()
    step(ctx, raw)
    kube.objects[("ns", "process")]["spec"]["schedule"] = "0 0 * * *"
    step(ctx, raw, "resync")
    assert kube.objects[("ns", "process")]["spec"]["schedule"] == "*/5 * * * *"
    assert ("Warning", "DriftRepaired") in [(t, r) for t, r, _ in rec.events]
    del kube.objects[("ns", "process")]
    step(ctx, raw, "resync")
    assert ("ns", "process") in kube.objects


def test_foreign_cronjob_is_left_alone() -> None:
    ctx, kube, rec = make()
    kube.objects[("ns", "process")] = {"metadata": {"name": "process", "namespace": "ns"},
                                       "spec": {"schedule": "1 1 * * *"}}
    raw = obj()
    step(ctx, raw)
    assert kube.applies == 0
    assert ready(raw)["reason"] == "CronJobConflict"
    assert rec.events[0][:2] == ("Warning", "CronJobConflict")


def test_retired_task_removes_cronjob_and_warns_once() -> None:
    ctx, kube, rec = make()
    raw = obj("legacy", "recover")
    step(ctx, raw)
    assert ("ns", "legacy") in kube.objects
    kube.objects[("ns", "legacy")]["metadata"]["ownerReferences"][0]["uid"] = "ct-uid"
    raw["spec"]["task"] = "detect-stuck"
    raw["metadata"]["generation"] = 2
    step(ctx, raw, "update")
    step(ctx, raw, "resync")
    assert ("ns", "legacy") not in kube.objects
    cond = ready(raw)
    assert (cond["status"], cond["reason"]) == ("False", "TaskGone")
    assert "'recover'" in cond["message"]
    assert cond["observedGeneration"] == 2
    assert [r for t, r, _ in rec.events if t == "Warning"] == ["TaskGone"]
    assert "nextScheduleTime" not in raw["status"]


def test_server_rejection_becomes_ready_false_with_its_message() -> None:
    ctx, kube, _ = make()
    kube.reject = 'CronJob.batch "process" is invalid: spec.timeZone: Invalid value'
    raw = obj()
    step(ctx, raw)
    cond = ready(raw)
    assert (cond["status"], cond["reason"]) == ("False", "CronJobRejected")
    assert "spec.timeZone: Invalid value" in cond["message"]


def test_fold_records_runs_once_with_events() -> None:
    ctx, _, rec = make()
    raw = obj()
    step(ctx, raw)
    text = encode(RunReport(task="process", status=RunStatus.COMPLETED,
                            counts={"processed": 2},
                            stage_errors={"summarise": StageErrors(1, "no messages")}))
    job = job_result({"metadata": {"name": "process-1", "namespace": "ns",
                                   "labels": {names.LABEL_CRONTASK: "process"}},
                      "status": {"startTime": "2026-01-05T11:59:00Z",
                                 "completionTime": "2026-01-05T12:00:00Z",
                                 "conditions": [{"type": "Complete", "status": "True"}]}})
    pod = pod_result({"metadata": {"name": "process-1-x", "creationTimestamp": "t",
                                   "labels": {names.JOB_NAME_LABEL: "process-1"}},
                      "status": {"containerStatuses": [{"name": "crontask-job", "state": {
                          "terminated": {"exitCode": 0, "message": text}}}]}})
    for _ in range(2):
        patch = kopf.Patch()
        fold(ctx, body=kopf.Body(raw), patch=patch, now=NOW, jobs=[job], pods=[pod])
        raw["status"].update(dict(patch.get("status", {})))
    assert raw["status"]["succeededRuns"] == 1
    assert raw["status"]["lastRun"]["stageErrors"]["summarise"]["count"] == 1
    healthy = next(c for c in raw["status"]["conditions"] if c["type"] == "Healthy")
    assert (healthy["status"], healthy["reason"]) == ("False", "StageErrors")
    assert [r for t, r, _ in rec.events] == ["StageErrors"]
    assert ready(raw)["status"] == "True", "folding keeps the Ready condition"


def test_settings_use_our_own_prefixes_and_timeouts() -> None:
    settings = cfg.kopf_settings(cfg.from_args([]))
    assert settings.persistence.finalizer == "crontask.dev/finalizer"
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert settings.persistence.progress_storage.prefix == "crontask.dev"
    assert settings.persistence.diffbase_storage.prefix == "crontask.dev"  # type: ignore[attr-defined]
    assert settings.watching.server_timeout and settings.watching.client_timeout
    assert settings.peering.standalone
    peered = cfg.kopf_settings(cfg.from_args(["--peering", "crontask", "--namespaces", "a,b"]))
    assert peered.peering.name == "crontask"
    assert not peered.peering.standalone
    assert not peered.peering.clusterwide
    assert settings.scanning.disabled, "no CRD/namespace watching needed for exact namespaces"
    globbed = cfg.kopf_settings(cfg.from_args(["--namespaces", "team-*"]))
    assert not globbed.scanning.disabled, "globs need Kopf's namespace scanning"


def test_flags_from_environment(monkeypatch: Any) -> None:
    monkeypatch.setenv("CRONTASK_OPERATOR_NAMESPACES", "team-a, team-b")
    monkeypatch.setenv("CRONTASK_OPERATOR_JOB_IMAGE", "crontask-jobs:1.0")
    monkeypatch.setenv("CRONTASK_OPERATOR_JOB_LIMITS", "memory=1Gi,cpu=1")
    config = cfg.from_args([])
    assert config.namespaces == ("team-a", "team-b")
    assert config.job_defaults.image == "crontask-jobs:1.0"
    assert config.job_defaults.limits == {"memory": "1Gi", "cpu": "1"}


def test_handlers_register_on_a_registry_of_their_own() -> None:
    from crontask_operator import handlers

    registry = kopf.OperatorRegistry()
    handlers.register(registry, cfg.OperatorConfig(resync_interval=5))
    assert len(list(registry._indexing.get_all_handlers())) == 3
    assert len(list(registry._spawning.get_all_handlers())) == 1
    assert len(list(registry._changing.get_all_handlers())) == 3


def test_no_handler_puts_a_finalizer_on_crontasks() -> None:
    """Deletion must not depend on a running operator: `helm uninstall` removes the operator
    and its RBAC together with the release's CronTasks, which then stayed Terminating."""
    from crontask_operator import handlers

    registry = kopf.OperatorRegistry()
    handlers.register(registry, cfg.OperatorConfig(resync_interval=5))
    spawning = list(registry._spawning.get_all_handlers())
    changing = list(registry._changing.get_all_handlers())
    assert [h.id for h in spawning] == ["resync"]
    assert [h.id for h in spawning + changing if h.requires_finalizer] == []


def test_json_logs_survive_kopf_records() -> None:
    """Kopf's per-object records carry its settings object; the line must still be JSON."""
    import json as _json

    from crontask_operator.logs import OperatorJsonFormatter

    record = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "Timer %r succeeded.",
                               ("resync",), None)
    record.settings = kopf.OperatorSettings()  # type: ignore[attr-defined]
    record.k8s_skip = False  # type: ignore[attr-defined]
    record.k8s_ref = {"kind": "CronTask", "namespace": "ns", "name": "process"}  # type: ignore[attr-defined]
    line = _json.loads(OperatorJsonFormatter().format(record))
    assert line["message"] == "Timer 'resync' succeeded."
    assert line["level"] == "INFO"
    assert line["object"] == {"kind": "CronTask", "namespace": "ns", "name": "process"}
    assert "settings" not in line


def test_last_schedule_time_is_copied_in_kubernetes_format() -> None:
    ctx, kube, _ = make()
    raw = obj()
    step(ctx, raw)
    kube.objects[("ns", "process")]["status"] = {"lastScheduleTime": "2026-01-05T12:00:00+00:00"}
    step(ctx, raw, "resync")
    assert raw["status"]["lastScheduleTime"] == "2026-01-05T12:00:00Z"


def test_identity_without_a_passwd_entry(monkeypatch: Any) -> None:
    """uid 65532 has no passwd entry: Kopf's getpass.getuser() would crash the operator."""
    import getpass

    from crontask_operator.__main__ import ensure_identity

    def no_user() -> str:
        raise KeyError("getpwuid(): uid not found: 65532")

    monkeypatch.setenv("POD_ID", "")  # recorded, so the value set below is undone
    monkeypatch.setattr(getpass, "getuser", no_user)
    ensure_identity()
    import os

    assert os.environ["POD_ID"].startswith("crontask-operator@")
