"""The operator's own defences: the image allow-list as a refusal, the suspension of a CronJob
left from an allowed spec, and credential masking wherever a message leaves the operator
(status, conditions, events, logs). Reconciles run through the controller against the fake API
server of ``operator_helpers.World``; what the API server itself does is proven in tests/cluster
and tests/e2e."""

from __future__ import annotations

import logging

import pytest
from operator_helpers import World, condition, crontask_spec

from crontask_contract.report import RunReport, RunStatus, StageErrors, encode
from crontask_operator import config as cfg
from crontask_operator import defaults, logs
from crontask_operator.controller import Controller
from crontask_operator.cronjob import JobDefaults
from crontask_operator.images import IMAGE_NOT_ALLOWED, AllowList, image_check
from crontask_operator.metrics import Metrics
from crontask_operator.spec import parse_spec
from crontask_operator.validation import Refusal

SECRET = "s3cr3t-Pa55"
LEAKY = f"could not connect to postgresql://app:{SECRET}@db:5432/app password={SECRET}"
ALLOWED = AllowList.parse("registry.example/team/*", default_image=defaults.JOB_IMAGE)


def world(allowed: AllowList = ALLOWED) -> World:
    w = World()
    w.controller.checks = (image_check(allowed),)
    return w


def leaks(w: World, name: str = "process") -> list[str]:
    """Every place the secret reached: the status, and the events posted."""
    found = [repr(w.status(name))] + [m for _, _, m in w.events]
    return [text for text in found if SECRET in text]


# --- the allow-list as a refusal --------------------------------------------------------------

@pytest.mark.parametrize("image", [
    "attacker.example/anything:latest", "registry.example/other/x:1", "crontask-jobs/evil",
    "not a reference", "registry.example/team/x:1@sha256:" + "0" * 63,
])
def test_the_check_refuses_an_image_outside_the_allow_list(image: str) -> None:
    refusal = image_check(ALLOWED)(parse_spec(crontask_spec(image=image)), JobDefaults())
    assert isinstance(refusal, Refusal)
    assert refusal.reason == IMAGE_NOT_ALLOWED
    assert refusal.action == "suspend"
    assert repr(image) in refusal.message


@pytest.mark.parametrize("image", [None, defaults.JOB_IMAGE, "crontask-jobs:dev",
                                   "registry.example/team/jobs:2.0"])
def test_the_check_admits_the_default_and_allowed_images(image: str | None) -> None:
    extra = {} if image is None else {"image": image}
    assert image_check(ALLOWED)(parse_spec(crontask_spec(**extra)), JobDefaults()) is None


def test_a_controller_given_no_checks_admits_only_the_default_repository() -> None:
    """Forgetting to pass the allow-list must never widen what runs."""
    ctl = Controller(World(), JobDefaults(), Metrics(), resync_seconds=300)
    (check,) = ctl.checks
    assert check(parse_spec(crontask_spec(image="crontask-jobs:1.2.3")), JobDefaults()) is None
    refused = check(parse_spec(crontask_spec(image="registry.example/team/jobs:2.0")),
                    JobDefaults())
    assert isinstance(refused, Refusal) and refused.reason == IMAGE_NOT_ALLOWED


def test_foreign_image_creates_no_cronjob_and_warns_once() -> None:
    w = world()
    w.add_crontask(image="attacker.example/anything:latest")
    assert w.reconcile() == "refused"
    assert w.reconcile() in ("ok", "refused")
    assert w.cronjob() is None
    assert not [c for c in w.calls if c[0] in ("apply", "create-dry-run")]
    cond = condition(w.status(), "Ready")
    assert (cond["status"], cond["reason"]) == ("False", IMAGE_NOT_ALLOWED)
    assert "attacker.example/anything:latest" in cond["message"]
    assert [(t, r) for t, r, _ in w.events] == [("Warning", IMAGE_NOT_ALLOWED)]


def test_switching_to_a_foreign_image_suspends_the_cronjob_until_fixed() -> None:
    w = world()
    w.add_crontask()
    w.reconcile()
    assert w.cronjob()["spec"]["suspend"] is False  # type: ignore[index]
    w.set_spec("process", image="attacker.example/anything:latest")
    w.deliver()
    w.reconcile()
    w.reconcile()
    cronjob = w.cronjob()
    assert cronjob is not None and cronjob["spec"]["suspend"] is True
    assert [c for c in w.calls if c[0] == "suspend"] == [("suspend", "process")], (
        "suspended once, not on every resync")
    image = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == defaults.JOB_IMAGE, "the refused image never reaches the CronJob"
    assert condition(w.status(), "Ready")["reason"] == IMAGE_NOT_ALLOWED
    del w.crontask()["spec"]["image"]
    w.set_spec("process")
    w.deliver()
    w.reconcile()
    assert w.cronjob()["spec"]["suspend"] is False  # type: ignore[index]
    assert condition(w.status(), "Ready")["status"] == "True"


def test_a_cronjob_we_do_not_own_is_never_suspended() -> None:
    w = world()
    w.objects[("CronJob", "ns", "process")] = {
        "metadata": {"name": "process", "namespace": "ns", "uid": "other",
                     "resourceVersion": "1"}, "spec": {"suspend": False}}
    w.add_crontask(image="attacker.example/x:1")
    w.reconcile()
    assert w.cronjob()["spec"]["suspend"] is False  # type: ignore[index]
    assert not [c for c in w.calls if c[0] == "suspend"]


def test_allowed_images_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    config = cfg.from_args(["--job-image", "registry.example/jobs:1.0"])
    assert config.allowed_images.describe() == "registry.example/jobs"
    assert config.allowed_images.admits("registry.example/jobs:2.0")
    assert not config.allowed_images.admits("crontask-jobs:dev")
    monkeypatch.setenv("CRONTASK_OPERATOR_ALLOWED_IMAGES", "ghcr.io/org/*, quay.io/x:1.*")
    config = cfg.from_args([])
    assert config.allowed_images.describe() == "ghcr.io/org/*, quay.io/x:1.*"
    assert config.allowed_images.admits(defaults.JOB_IMAGE), "the default image always runs"
    with pytest.raises(SystemExit):
        cfg.from_args(["--allowed-images", "Not An Image"])


# --- masking wherever a message leaves the operator -------------------------------------------

def test_a_failed_runs_error_is_masked_in_status_and_events() -> None:
    w = world()
    w.add_crontask()
    w.reconcile()
    message = encode(RunReport(task="process", status=RunStatus.FAILED, reason="error",
                               error=LEAKY))
    w.add_job("process-1", failed=True, exit_code=1, message=message)
    w.deliver()
    w.reconcile()
    status = w.status()
    assert status["failedRuns"] == 1
    assert status["lastRun"]["message"].startswith(
        "could not connect to postgresql://app:***@db:5432/app password=***")
    healthy = condition(status, "Healthy")
    assert "***" in healthy["message"]
    assert any(r == "RunFailed" for _, r, _ in w.events)
    assert leaks(w) == []
    w.calls.clear()
    w.reconcile()
    assert w.writes() == [], "masked values compare equal: nothing to rewrite"


def test_stage_errors_and_hostile_stage_names_are_masked() -> None:
    w = world()
    w.add_crontask()
    w.reconcile()
    w.add_job("process-1", message=encode(RunReport(
        task="process", status=RunStatus.COMPLETED, stage_errors={
            "summarise": StageErrors(2, f"token={SECRET}"),
            f"postgresql://u:{SECRET}@h": StageErrors(1, "x")})))
    w.deliver()
    w.reconcile()
    assert w.status()["lastRun"]["stageErrors"]["summarise"]["lastMessage"] == "token=***"
    assert leaks(w) == []


def test_a_termination_message_that_is_no_report_leaks_nothing() -> None:
    """A Secret that is not a database URL, printed by something else in the image."""
    w = world()
    w.add_crontask()
    w.reconcile()
    w.add_job("process-1", failed=True, exit_code=1,
              message=f"fatal: DATABASE_URL={SECRET} is not a URL; also Bearer {SECRET}")
    w.deliver()
    w.reconcile()
    assert w.status()["failedRuns"] == 1
    assert leaks(w) == []


def test_an_api_server_message_is_masked_in_the_condition_and_event() -> None:
    w = world()
    w.reject = f'CronJob.batch "process" is invalid: env[0].value: "{LEAKY}"'
    w.add_crontask()
    w.reconcile()
    cond = condition(w.status(), "Ready")
    assert cond["reason"] == "CronJobRejected" and "***" in cond["message"]
    assert leaks(w) == []
    events = len(w.events)
    w.calls.clear()
    w.reconcile()
    assert [c for c in w.writes() if c[0] == "status"] == [] and len(w.events) == events, (
        "no new write and no new event on the next reconcile")


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
