"""A CronTask gives its author no power they do not already have (issue 9), on a real cluster.

The chart is installed as its own release (its admission policy, aggregated roles and image
allow-list are the subject), and people are played by impersonation (``kubectl --as``), as the
API server authorises them:

- ``AUTHOR``: CronTask rights only (the chart's ``<fullname>-edit`` role) and ``get`` on one
  Secret; ``DEPLOYER``: a ServiceAccount with CronTask rights only, the issue's attacker;
- ``JOB_USER``: the built-in ``edit`` role (may create Jobs and read Secrets);
- ``VIEWER``: the built-in ``view`` role.

The tests run in file order: the last one switches the admission policy off.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import CHART, image_values
from tests.kube import (
    condition,
    create_restricted_namespace,
    dump_namespace,
    events,
    get,
    helm,
    kubectl,
    wait_for,
)

RELEASE = "ctsec"
FULLNAME = f"{RELEASE}-crontask"
"""The chart's name prefix for a release whose name does not contain the chart's."""
POLICY = f"{FULLNAME}-author-rights"
AUTHOR = "crontask-author"
JOB_USER = "crontask-job-user"
VIEWER = "crontask-viewer"
AUTHOR_SECRET = "author-db"
TEAM_SECRET = "team-db"
HOSTILE_SECRET = "hostile-db"
HOSTILE_VALUE = "password=Sup3rS3cret-e2e"
FOREIGN_IMAGE = "attacker.example/anything:latest"
APPROVED_IMAGE = "registry.example/approved/jobs:1.0"

# The module's release is installed by the first test's fixture; a scheduled run takes a minute.
pytestmark = pytest.mark.timeout(400)


def deployer(namespace: str) -> str:
    return f"system:serviceaccount:{namespace}:app-deployer"


def rbac(namespace: str) -> list[dict[str, Any]]:
    def binding(name: str, role_kind: str, role: str, *subjects: dict[str, str]
                ) -> dict[str, Any]:
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": name, "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind,
                            "name": role},
                "subjects": list(subjects)}

    def user(name: str) -> dict[str, str]:
        return {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}

    return [
        binding("crontask-authors", "ClusterRole", f"{FULLNAME}-edit", user(AUTHOR),
                {"kind": "ServiceAccount", "name": "app-deployer", "namespace": namespace}),
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "read-author-db", "namespace": namespace},
         "rules": [{"apiGroups": [""], "resources": ["secrets"],
                    "resourceNames": [AUTHOR_SECRET], "verbs": ["get"]}]},
        binding("author-reads-author-db", "Role", "read-author-db", user(AUTHOR)),
        binding("job-user-edit", "ClusterRole", "edit", user(JOB_USER)),
        binding("viewer-view", "ClusterRole", "view", user(VIEWER)),
    ]


def crontask(name: str, task: str = "recover", secret: str = AUTHOR_SECRET,
             **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "crontask.dev/v1alpha1", "kind": "CronTask",
            "metadata": {"name": name},
            "spec": {"task": task, "schedule": "0 3 * * *", "suspend": True,
                     "database": {"secretKeyRef": {"name": secret}}, **spec}}


def apply_as(user: str, namespace: str, manifest: dict[str, Any], *,
             dry_run: bool = False) -> subprocess.CompletedProcess[str]:
    args = ["apply", "--as", user, "-n", namespace, "-f", "-"]
    if dry_run:
        args.append("--dry-run=server")
    return kubectl(*args, stdin=json.dumps(manifest), check=False)


def patch_as(user: str, namespace: str, name: str, spec: dict[str, Any]
             ) -> subprocess.CompletedProcess[str]:
    return kubectl("patch", "crontask", name, "--as", user, "-n", namespace, "--type=merge",
                   "-p", json.dumps({"spec": spec}), check=False)


def refused(result: subprocess.CompletedProcess[str], *phrases: str) -> str:
    """The admission policy's answer: a refusal that names the missing right."""
    assert result.returncode != 0, f"admitted:\n{result.stdout}"
    message = result.stderr
    assert f"ValidatingAdmissionPolicy '{POLICY}'" in message, message
    assert "denied request" in message, message
    for phrase in phrases:
        assert phrase in message, message
    return message


def admitted(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr


def can_i(user: str, namespace: str, verb: str, resource: str, subresource: str = "") -> bool:
    extra = [f"--subresource={subresource}"] if subresource else []
    result = kubectl("auth", "can-i", verb, resource, *extra, "--as", user, "-n", namespace,
                     check=False)
    return result.stdout.strip() == "yes"


def ready_condition(name: str, namespace: str, reason: str) -> dict[str, Any]:
    return wait_for(f"{name} Ready reason {reason}", lambda: (
        (c := condition(get("crontask", name, namespace), "Ready")) and c["reason"] == reason
        and c), timeout=90)


@pytest.fixture(scope="module")
def secured(request: pytest.FixtureRequest, database_url: str) -> Iterator[str]:
    """The chart with its defaults (policy on, aggregated roles, allow-list of the jobs image
    plus one approved repository) in a fresh restricted namespace, and the people above."""
    namespace = f"crontask-sec-{uuid.uuid4().hex[:6]}"
    create_restricted_namespace(namespace)
    kubectl("create", "secret", "generic", AUTHOR_SECRET, "-n", namespace,
            f"--from-literal=url={database_url}")
    kubectl("create", "secret", "generic", TEAM_SECRET, "-n", namespace,
            f"--from-literal=url={database_url}")
    kubectl("create", "secret", "generic", HOSTILE_SECRET, "-n", namespace,
            f"--from-literal=url={HOSTILE_VALUE}://db/app")
    jobs_image = os.environ.get("CRONTASK_JOBS_IMAGE", "crontask-jobs:dev")
    jobs_repository = jobs_image.rpartition(":")[0]
    helm("upgrade", "--install", RELEASE, str(CHART), "-n", namespace, "--wait",
         "--timeout", "180s",
         *image_values("operator", os.environ.get("CRONTASK_OPERATOR_IMAGE",
                                                  "crontask-operator:dev")),
         *image_values("jobs", jobs_image),
         "--set", f"database.secretName={AUTHOR_SECRET}",
         "--set", f"watch.namespaces={{{namespace}}}",
         "--set", f"jobs.allowedImages={{{jobs_repository},registry.example/approved/*}}")
    for manifest in rbac(namespace):
        kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    # The API server loads policies and aggregates roles asynchronously: wait until both work.
    wait_for("the built-in roles to aggregate the chart's CronTask rules", lambda: (
        can_i(VIEWER, namespace, "list", "crontasks.crontask.dev")
        and can_i(JOB_USER, namespace, "create", "crontasks.crontask.dev")), timeout=60)
    wait_for("the author's CronTask rights", lambda: can_i(
        AUTHOR, namespace, "create", "crontasks.crontask.dev"), timeout=60)
    wait_for("the admission policy to be enforced", lambda: "denied request" in apply_as(
        AUTHOR, namespace, crontask("probe", image=FOREIGN_IMAGE), dry_run=True).stderr,
        timeout=60)
    yield namespace
    if request.session.testsfailed:
        target = dump_namespace(namespace, {"operator.log": [
            "logs", "-n", namespace, "-l", "app.kubernetes.io/component=operator",
            "--tail=-1", "--all-containers", "--prefix"]})
        print(f"\nsecurity e2e diagnostics kept in {target}")
    helm("uninstall", RELEASE, "-n", namespace, "--wait", check=False)
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_author_is_refused_a_foreign_image(secured: str) -> None:
    message = refused(apply_as(AUTHOR, secured, crontask("own-image", image=FOREIGN_IMAGE)),
                      "spec.image", f"{AUTHOR} may not create jobs.batch in namespace {secured}")
    assert "leave spec.image unset" in message
    assert get("crontask", "own-image", secured) is None
    # Even an image the operator would run: choosing the image is a right of Job creators.
    refused(apply_as(AUTHOR, secured, crontask("approved", image=APPROVED_IMAGE)), "spec.image")


def test_author_is_refused_an_env(secured: str) -> None:
    manifest = crontask("preload", env=[{"name": "LD_PRELOAD", "value": "/tmp/x.so"}])
    refused(apply_as(AUTHOR, secured, manifest), "spec.env",
            f"{AUTHOR} may not create jobs.batch")
    code = crontask("code", "process", process={"pipeline": "os:abort"})
    refused(apply_as(AUTHOR, secured, code), "spec.process.pipeline")
    assert get("crontask", "preload", secured) is None and get("crontask", "code", secured) is None


def test_author_is_refused_a_secret_they_cannot_read(secured: str) -> None:
    assert not can_i(AUTHOR, secured, "get", f"secret/{TEAM_SECRET}")
    refused(apply_as(AUTHOR, secured, crontask("team", secret=TEAM_SECRET)),
            "spec.database.secretKeyRef",
            f"{AUTHOR} may not get secret {TEAM_SECRET} in namespace {secured}")
    assert get("crontask", "team", secured) is None


def test_the_issues_service_account_attack_is_refused(secured: str) -> None:
    """A ServiceAccount that may only create CronTasks: image, env and a Secret at once."""
    attack = crontask("attack", secret=TEAM_SECRET, image=FOREIGN_IMAGE, suspend=False,
                      schedule="* * * * *",
                      env=[{"name": "LD_PRELOAD", "value": "/tmp/x.so"}])
    refused(apply_as(deployer(secured), secured, attack), deployer(secured))
    for field, manifest in {
        "spec.image": crontask("a1", image=FOREIGN_IMAGE),
        "spec.env": crontask("a2", env=[{"name": "X", "value": "1"}]),
        "spec.database.secretKeyRef": crontask("a3", secret=TEAM_SECRET),
    }.items():
        refused(apply_as(deployer(secured), secured, manifest), field)
    # The ServiceAccount reads no Secret at all, so it cannot name even the author's.
    refused(apply_as(deployer(secured), secured, crontask("a4")), "may not get secret")
    assert not [ct for ct in ("attack", "a1", "a2", "a3", "a4") if get("crontask", ct, secured)]


def test_author_creates_a_default_crontask_with_their_secret_and_it_runs(secured: str) -> None:
    manifest = crontask("author-recover", schedule="* * * * *", suspend=False,
                        activeDeadlineSeconds=50)
    admitted(apply_as(AUTHOR, secured, manifest))
    cronjob = wait_for("the CronJob of the author's CronTask",
                       lambda: get("cronjob", "author-recover", secured))
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == AUTHOR_SECRET

    def succeeded() -> dict[str, Any] | None:
        result = kubectl("get", "crontask", "author-recover", "--as", AUTHOR, "-n", secured,
                         "-o", "json")
        last = (json.loads(result.stdout).get("status") or {}).get("lastRun") or {}
        return last if last.get("outcome") == "Succeeded" else None
    # A scheduled run: the CronJob controller starts it within a minute, against PostgreSQL.
    last = wait_for("a scheduled run of the author's CronTask to succeed", succeeded,
                    timeout=180, interval=2)
    assert "recovered" in last["counts"], last
    # The author may change what they own (no new image, env or Secret): no rights beyond it.
    admitted(patch_as(AUTHOR, secured, "author-recover", {"suspend": True}))


def test_updates_are_checked_for_what_they_change(secured: str) -> None:
    """A CronTask set up by someone with Job rights, with an image, an env and a Secret the
    author cannot read: the author may still suspend or reschedule it, but not change what it
    runs or which Secret it reads."""
    admitted(apply_as(JOB_USER, secured, crontask(
        "shared", secret=TEAM_SECRET, image=APPROVED_IMAGE,
        env=[{"name": "CRONTASK_LOG_LEVEL", "value": "DEBUG"}])))
    admitted(patch_as(AUTHOR, secured, "shared", {"schedule": "0 4 * * *", "suspend": True}))
    refused(patch_as(AUTHOR, secured, "shared", {"image": "registry.example/approved/jobs:2"}),
            "spec.image")
    refused(patch_as(AUTHOR, secured, "shared", {"env": [{"name": "X", "value": "1"}]}),
            "spec.env")
    refused(patch_as(AUTHOR, secured, "shared",
                     {"database": {"secretKeyRef": {"name": TEAM_SECRET, "key": "other"}}}),
            f"may not get secret {TEAM_SECRET}")
    admitted(patch_as(AUTHOR, secured, "shared",
                      {"database": {"secretKeyRef": {"name": AUTHOR_SECRET}}}))
    shared = get("crontask", "shared", secured)
    assert shared is not None
    assert (shared["spec"]["image"], shared["spec"]["schedule"]) == (APPROVED_IMAGE,
                                                                     "0 4 * * *")
    assert shared["spec"]["database"]["secretKeyRef"]["name"] == AUTHOR_SECRET


def test_job_rights_admit_an_image_and_the_allow_list_still_decides(secured: str) -> None:
    """Layering: admission checks who may choose an image; the operator which images run."""
    admitted(apply_as(JOB_USER, secured, crontask("foreign", image=FOREIGN_IMAGE)))
    cond = ready_condition("foreign", secured, "ImageNotAllowed")
    assert cond["status"] == "False" and FOREIGN_IMAGE in cond["message"]
    assert get("cronjob", "foreign", secured) is None
    warnings = {e["reason"] for e in events(secured, "foreign") if e["type"] == "Warning"}
    assert warnings == {"ImageNotAllowed"}, warnings
    admitted(apply_as(JOB_USER, secured, crontask("approved", image=APPROVED_IMAGE)))
    cronjob = wait_for("the CronJob of an allowed image", lambda: get("cronjob", "approved",
                                                                       secured))
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == APPROVED_IMAGE
    assert ready_condition("approved", secured, "CronJobReady")["status"] == "True"


def test_a_cronjob_is_suspended_when_its_crontask_turns_to_a_foreign_image(secured: str
                                                                           ) -> None:
    admitted(apply_as(JOB_USER, secured, crontask("turning", suspend=False)))
    before = wait_for("the CronJob", lambda: get("cronjob", "turning", secured))
    assert before["spec"]["suspend"] is False
    admitted(patch_as(JOB_USER, secured, "turning", {"image": FOREIGN_IMAGE}))
    ready_condition("turning", secured, "ImageNotAllowed")
    after = wait_for("the CronJob to be suspended", lambda: (
        (c := get("cronjob", "turning", secured)) and c["spec"]["suspend"] and c))
    image = after["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image != FOREIGN_IMAGE, "the refused image never reaches the CronJob"
    admitted(patch_as(JOB_USER, secured, "turning", {"image": None}))
    wait_for("the CronJob to run again once the image is fixed", lambda: (
        (c := get("cronjob", "turning", secured)) and c["spec"]["suspend"] is False))


def test_viewer_reads_crontasks_and_their_status_but_no_secret(secured: str) -> None:
    listed = kubectl("get", "crontasks", "--as", VIEWER, "-n", secured, "-o", "json")
    names = {ct["metadata"]["name"] for ct in json.loads(listed.stdout)["items"]}
    assert "author-recover" in names
    author = json.loads(kubectl("get", "crontask", "author-recover", "--as", VIEWER,
                                "-n", secured, "-o", "json").stdout)
    assert author["status"]["lastRun"]["outcome"] == "Succeeded"
    denied = kubectl("get", "secret", AUTHOR_SECRET, "--as", VIEWER, "-n", secured,
                     check=False)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr, denied.stderr
    assert not can_i(VIEWER, secured, "list", "secrets")
    assert not can_i(VIEWER, secured, "create", "crontasks.crontask.dev")
    assert can_i(VIEWER, secured, "get", "crontasks.crontask.dev", "status")
    assert not can_i(VIEWER, secured, "patch", "crontasks.crontask.dev", "status")
    assert not can_i(AUTHOR, secured, "patch", "crontasks.crontask.dev", "status")
    assert not can_i(JOB_USER, secured, "patch", "crontasks.crontask.dev", "status")
    assert not can_i(AUTHOR, secured, "create", "jobs.batch")
    assert not can_i(AUTHOR, secured, "create", "cronjobs.batch")


def test_a_secret_echoed_by_a_failed_run_reaches_no_status_or_event(secured: str) -> None:
    """A Secret that is not a database URL: the run fails on it, and whatever of it the run's
    error carries, the CronTask's status and Events show it masked."""
    admitted(apply_as(JOB_USER, secured, crontask("hostile", secret=HOSTILE_SECRET)))
    wait_for("the CronJob", lambda: get("cronjob", "hostile", secured))
    job = f"hostile-{uuid.uuid4().hex[:6]}"
    kubectl("create", "job", job, "--from=cronjob/hostile", "-n", secured)
    last = wait_for("the failed run", lambda: (
        (ct := get("crontask", "hostile", secured)) and
        ((ct.get("status") or {}).get("lastRun") or {}).get("jobName") == job and ct),
        timeout=120)["status"]["lastRun"]
    assert last["outcome"] == "Failed", last
    shown = json.dumps(get("crontask", "hostile", secured)) + json.dumps(
        events(secured, "hostile"))
    assert "Sup3rS3cret" not in shown
    assert "Sup3rS3cret" not in kubectl("get", "crontask", "hostile", "--as", VIEWER, "-n",
                                        secured, "-o", "yaml").stdout


def test_with_the_policy_off_the_allow_list_still_refuses_a_foreign_image(secured: str
                                                                            ) -> None:
    jobs_image = os.environ.get("CRONTASK_JOBS_IMAGE", "crontask-jobs:dev")
    helm("upgrade", RELEASE, str(CHART), "-n", secured, "--reuse-values", "--wait",
         "--set", "admissionPolicy.enabled=false")
    assert kubectl("get", "validatingadmissionpolicy", POLICY, check=False).returncode != 0
    wait_for("the admission policy to be gone", lambda: apply_as(
        AUTHOR, secured, crontask("probe", image=FOREIGN_IMAGE), dry_run=True
    ).returncode == 0, timeout=60)
    admitted(apply_as(AUTHOR, secured, crontask("unguarded", image=FOREIGN_IMAGE)))
    cond = ready_condition("unguarded", secured, "ImageNotAllowed")
    assert cond["status"] == "False"
    assert get("cronjob", "unguarded", secured) is None
    assert {e["reason"] for e in events(secured, "unguarded") if e["type"] == "Warning"} == {
        "ImageNotAllowed"}
    # The default image still runs: the allow-list admits its repository.
    admitted(apply_as(AUTHOR, secured, crontask("unguarded-default", image=jobs_image)))
    ready_condition("unguarded-default", secured, "CronJobReady")
