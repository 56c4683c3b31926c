"""The operator's own defences: the image allow-list as a refusal, the suspension of a CronJob
left from an allowed spec, and credential masking wherever a message leaves the operator
(status, conditions, events, logs). Reconcile runs against a recording CronJob store; what the
API server itself does is proven in tests/cluster and tests/e2e."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from typing import Any

import kopf
import pytest
from operator_helpers import NOW, crontask, crontask_spec

from crontask_contract.report import RunReport, RunStatus, StageErrors, encode
from crontask_operator import config as cfg
from crontask_operator import events as events_module
from crontask_operator import logs, names
from crontask_operator.cronjob import JobDefaults
from crontask_operator.images import AllowList
from crontask_operator.kube import Rejected
from crontask_operator.metrics import Metrics
from crontask_operator.outcomes import job_result, pod_result
from crontask_operator.reconcile import Context, fold, sync
from crontask_operator.spec import parse_spec
from crontask_operator.validation import Refusal, Timing, resolve

LOG = logging.getLogger("test")
SECRET = "s3cr3t-Pa55"
LEAKY = f"could not connect to postgresql://app:{SECRET}@db:5432/app password={SECRET}"


class CronJobStore:
    """Records what reconcile asks of the API server."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.applied: list[dict[str, Any]] = []
        self.suspended: list[str] = []
        self.reject: str | None = None

    async def get_cronjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((namespace, name))
        return copy.deepcopy(found) if found else None

    async def apply_cronjob(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        if self.reject:
            raise Rejected(422, self.reject)
        stored = copy.deepcopy(dict(manifest))
        stored["metadata"].update(uid="cj-uid", resourceVersion=str(len(self.applied) + 1))
        self.objects[(stored["metadata"]["namespace"], stored["metadata"]["name"])] = stored
        self.applied.append(stored)
        return copy.deepcopy(stored)

    async def delete_cronjob(self, namespace: str, name: str, uid: str) -> bool:
        return self.objects.pop((namespace, name), None) is not None

    async def suspend_cronjob(self, namespace: str, name: str, uid: str) -> bool:
        found = self.objects.get((namespace, name))
        if found is None or found["metadata"]["uid"] != uid:
            return False
        found["spec"]["suspend"] = True
        self.suspended.append(name)
        return True


class Recorder:
    """Every Event the operator posts, as ``kopf.event`` receives it (KopfEvents is the one
    way events leave the operator, so its masking is what is under test)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def __call__(self, body: Any, *, type: str, reason: str, message: str) -> None:
        self.events.append((type, reason, message))


@pytest.fixture(autouse=True)
def posted(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(events_module.kopf, "event", recorder)
    return recorder


ALLOWED = AllowList.parse("registry.example/team/*", default_image=names.DEFAULT_IMAGE)


def make() -> tuple[Context, CronJobStore]:
    store = CronJobStore()
    return Context(kube=store, defaults=JobDefaults(), metrics=Metrics(),
                   events=events_module.KopfEvents(), allowed_images=ALLOWED), store


def crontask_object(**spec: Any) -> dict[str, Any]:
    raw = crontask("process", "process", **spec)
    raw["metadata"].update(uid="ct-uid", generation=1)
    raw["status"] = {}
    return raw


def step(ctx: Context, raw: dict[str, Any], trigger: str = "create") -> dict[str, Any]:
    """One sync; its status patch applied to ``raw`` as the API server would."""
    patch = kopf.Patch()
    asyncio.run(sync(ctx, body=kopf.Body(raw), patch=patch, now=NOW,
                     namespace_recover_stale=None, trigger=trigger, logger=LOG))
    status = dict(patch.get("status", {}))
    raw["status"] = {k: v for k, v in {**raw["status"], **status}.items() if v is not None}
    return status


def ready(raw: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in raw["status"]["conditions"] if c["type"] == "Ready")


# --- the allow-list as a refusal --------------------------------------------------------------

@pytest.mark.parametrize("image", [
    "attacker.example/anything:latest", "registry.example/other/x:1", "crontask-jobs/evil",
    "not a reference", "registry.example/team/x:1@sha256:" + "0" * 63,
])
def test_resolve_refuses_an_image_outside_the_allow_list(image: str) -> None:
    decision = resolve("process", parse_spec(crontask_spec(image=image)), NOW,
                       allowed_images=ALLOWED)
    assert isinstance(decision, Refusal)
    assert decision.reason == "ImageNotAllowed"
    assert decision.suspend_cronjob and not decision.delete_cronjob
    assert repr(image) in decision.message


@pytest.mark.parametrize("image", [None, names.DEFAULT_IMAGE, "crontask-jobs:dev",
                                   "registry.example/team/jobs:2.0"])
def test_resolve_admits_the_default_and_allowed_images(image: str | None) -> None:
    extra = {} if image is None else {"image": image}
    decision = resolve("process", parse_spec(crontask_spec(**extra)), NOW,
                       allowed_images=ALLOWED)
    assert isinstance(decision, Timing), decision


def test_resolve_without_an_allow_list_admits_only_the_default_repository() -> None:
    """Forgetting to pass the allow-list must never widen what runs."""
    spec = parse_spec(crontask_spec(image="registry.example/team/jobs:2.0"))
    assert isinstance(resolve("process", spec, NOW), Refusal)
    spec = parse_spec(crontask_spec(image="crontask-jobs:1.2.3"))
    assert isinstance(resolve("process", spec, NOW), Timing)


def test_foreign_image_creates_no_cronjob_and_warns_once(posted: Recorder) -> None:
    ctx, store = make()
    raw = crontask_object(image="attacker.example/anything:latest")
    step(ctx, raw)
    step(ctx, raw, "resync")
    assert store.objects == {} and store.applied == []
    cond = ready(raw)
    assert (cond["status"], cond["reason"]) == ("False", "ImageNotAllowed")
    assert "attacker.example/anything:latest" in cond["message"]
    assert [(t, r) for t, r, _ in posted.events] == [("Warning", "ImageNotAllowed")]


def test_switching_to_a_foreign_image_suspends_the_cronjob_until_fixed() -> None:
    ctx, store = make()
    raw = crontask_object()
    step(ctx, raw)
    assert store.objects[("ns", "process")]["spec"]["suspend"] is False
    store.objects[("ns", "process")]["metadata"]["ownerReferences"][0]["uid"] = "ct-uid"
    raw["spec"]["image"] = "attacker.example/anything:latest"
    raw["metadata"]["generation"] = 2
    step(ctx, raw, "update")
    step(ctx, raw, "resync")
    cronjob = store.objects[("ns", "process")]
    assert cronjob["spec"]["suspend"] is True
    assert store.suspended == ["process"], "suspended once, not on every resync"
    image = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == names.DEFAULT_IMAGE, "the refused image never reaches the CronJob"
    assert ready(raw)["reason"] == "ImageNotAllowed"
    del raw["spec"]["image"]
    raw["metadata"]["generation"] = 3
    step(ctx, raw, "update")
    assert store.objects[("ns", "process")]["spec"]["suspend"] is False
    assert ready(raw)["status"] == "True"


def test_a_cronjob_we_do_not_own_is_never_suspended() -> None:
    ctx, store = make()
    store.objects[("ns", "process")] = {"metadata": {"name": "process", "uid": "other"},
                                        "spec": {"suspend": False}}
    step(ctx, crontask_object(image="attacker.example/x:1"))
    assert store.objects[("ns", "process")]["spec"]["suspend"] is False
    assert store.suspended == []


def test_allowed_images_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    config = cfg.from_args(["--job-image", "registry.example/jobs:1.0"])
    assert config.allowed_images.describe() == "registry.example/jobs"
    assert config.allowed_images.admits("registry.example/jobs:2.0")
    assert not config.allowed_images.admits("crontask-jobs:dev")
    monkeypatch.setenv("CRONTASK_OPERATOR_ALLOWED_IMAGES", "ghcr.io/org/*, quay.io/x:1.*")
    config = cfg.from_args([])
    assert config.allowed_images.describe() == "ghcr.io/org/*, quay.io/x:1.*"
    assert config.allowed_images.admits(names.DEFAULT_IMAGE), "the default image always runs"
    with pytest.raises(SystemExit):
        cfg.from_args(["--allowed-images", "Not An Image"])


# --- masking wherever a message leaves the operator -------------------------------------------

def finished(message: str, failed: bool = True) -> tuple[Any, Any]:
    job = job_result({"metadata": {"name": "process-1", "namespace": "ns",
                                   "labels": {names.LABEL_CRONTASK: "process"}},
                      "status": {"startTime": "2026-01-05T11:59:00Z",
                                 "completionTime": "2026-01-05T12:00:00Z",
                                 "conditions": [{"type": "Failed" if failed else "Complete",
                                                 "status": "True"}]}})
    pod = pod_result({"metadata": {"name": "process-1-x", "creationTimestamp": "t",
                                   "labels": {names.JOB_NAME_LABEL: "process-1"}},
                      "status": {"containerStatuses": [{"name": "crontask-job", "state": {
                          "terminated": {"exitCode": 1 if failed else 0, "message": message}}}]}})
    return job, pod


def folded(ctx: Context, raw: dict[str, Any], message: str, failed: bool = True
           ) -> dict[str, Any]:
    job, pod = finished(message, failed)
    patch = kopf.Patch()
    fold(ctx, body=kopf.Body(raw), patch=patch, now=NOW, jobs=[job], pods=[pod])
    status = dict(patch.get("status", {}))
    raw["status"].update(status)
    return status


def test_a_failed_runs_error_is_masked_in_status_and_events(posted: Recorder) -> None:
    ctx, _ = make()
    raw = crontask_object()
    step(ctx, raw)
    report = encode(RunReport(task="process", status=RunStatus.FAILED, reason="error",
                              error=LEAKY))
    folded(ctx, raw, report)
    assert SECRET not in repr(raw["status"])
    assert raw["status"]["lastRun"]["message"].startswith(
        "could not connect to postgresql://app:***@db:5432/app password=***")
    healthy = next(c for c in raw["status"]["conditions"] if c["type"] == "Healthy")
    assert "***" in healthy["message"] and SECRET not in healthy["message"]
    assert posted.events and all(SECRET not in m for _, _, m in posted.events)
    assert folded(ctx, raw, report) == {}, "masked values compare equal: nothing to rewrite"


def test_stage_errors_and_hostile_stage_names_are_masked(posted: Recorder) -> None:
    ctx, _ = make()
    raw = crontask_object()
    step(ctx, raw)
    report = encode(RunReport(task="process", status=RunStatus.COMPLETED, stage_errors={
        "summarise": StageErrors(2, f"token={SECRET}"),
        f"postgresql://u:{SECRET}@h": StageErrors(1, "x")}))
    folded(ctx, raw, report, failed=False)
    assert SECRET not in repr(raw["status"])
    assert raw["status"]["lastRun"]["stageErrors"]["summarise"]["lastMessage"] == "token=***"
    assert all(SECRET not in m for _, _, m in posted.events)


def test_a_termination_message_that_is_no_report_leaks_nothing(posted: Recorder) -> None:
    """A Secret that is not a database URL, printed by something else in the image."""
    ctx, _ = make()
    raw = crontask_object()
    step(ctx, raw)
    folded(ctx, raw, f"fatal: DATABASE_URL={SECRET} is not a URL; also Bearer {SECRET}")
    assert SECRET not in repr(raw["status"])
    assert all(SECRET not in m for _, _, m in posted.events)


def test_an_api_server_message_is_masked_in_the_condition_and_event(posted: Recorder) -> None:
    ctx, store = make()
    store.reject = f'CronJob.batch "process" is invalid: env[0].value: "{LEAKY}"'
    raw = crontask_object()
    step(ctx, raw)
    cond = ready(raw)
    assert cond["reason"] == "CronJobRejected" and "***" in cond["message"]
    assert SECRET not in cond["message"]
    assert posted.events and all(SECRET not in m for _, _, m in posted.events)
    assert step(ctx, raw, "resync") == {}, "no new write and no new event on the next resync"
    assert len(posted.events) == 1


def test_kopf_events_are_masked_before_they_are_shortened(posted: Recorder) -> None:
    padding = "x" * 1000
    events_module.KopfEvents().warn(crontask_object(), "RunFailed",
                                    f"{padding} postgresql://app:{SECRET}@db/app")
    events_module.KopfEvents().normal(crontask_object(), "RunSucceeded", f"password={SECRET}")
    assert [m for _, _, m in posted.events] == [
        f"{padding} postgresql://app:***@db/app"[:1024], "password=***"]


def test_log_records_are_masked_for_stderr_and_for_kopf_events() -> None:
    record = logging.LogRecord("kopf.objects", logging.ERROR, __file__, 1,
                               "Handler failed: %s", (LEAKY,), None)
    try:
        raise RuntimeError(f"connect failed: Authorization: Bearer {SECRET}1")
    except RuntimeError:
        import sys
        record.exc_info = sys.exc_info()
    assert logs.RedactSecrets().filter(record) is True
    assert SECRET not in record.getMessage()
    assert record.exc_text is not None and SECRET not in record.exc_text
    assert "RuntimeError" in record.exc_text
    logs.configure("json", "INFO")
    assert any(isinstance(f, logs.RedactSecrets) for f in logging.getLogger("kopf.objects").filters)
    assert any(isinstance(f, logs.RedactSecrets) for h in logging.getLogger().handlers
               for f in h.filters)
