"""The Helm chart: values typed by values.schema.json, and (with helm) rendered manifests that
are lint-clean, least-privilege, restricted-PSS and carry CronTasks the CRD accepts.

helm comes from hack/tools.sh (built from its Go module); without it the rendering tests are
skipped with the reason, and the cluster tier validates the chart server-side.
"""

from __future__ import annotations

import copy
import functools
import glob
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from operator_helpers import NOW

from crontask_operator import crd
from crontask_operator.spec import parse_spec
from crontask_operator.validation import Timing, resolve

CHART = Path(__file__).resolve().parents[2] / "charts" / "crontask"


def helm_binary() -> str | None:
    found = os.environ.get("HELM") or shutil.which("helm")
    if found:
        return found
    cache = os.environ.get("CRONTASK_CACHE", "/var/cache/crontask")
    cached = sorted(glob.glob(f"{cache}/bin/*/helm"))
    return cached[-1] if cached else None


HELM = helm_binary()
needs_helm = pytest.mark.skipif(HELM is None, reason="helm not built yet: run hack/tools.sh")


def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def test_values_match_their_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(values())


@pytest.mark.parametrize(("path", "value"), [
    (("operator", "replicaCount"), 2),
    (("operator", "image", "tag"), "latest"),
    (("operator", "image", "digest"), "sha256:short"),
    (("operator", "resyncInterval"), 0),
    (("operator", "securityContext", "allowPrivilegeEscalation"), True),
    (("watch", "namespaces"), ["Not_A_Namespace"]),
    (("database", "secretName"), ""),
])
def test_schema_refuses_bad_values(path: tuple[str, ...], value: Any) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    doc = values()
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(doc)


def test_crd_ships_in_crds_directory() -> None:
    files = sorted(p.name for p in (CHART / "crds").iterdir())
    assert files == ["crontasks.crontask.dev.yaml"]


def helm(*args: str) -> str:
    assert HELM is not None
    result = subprocess.run([HELM, *args], capture_output=True, text=True, check=False,
                            timeout=60)
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def render(*sets: str, namespace: str = "crontask") -> list[dict[str, Any]]:
    return copy.deepcopy(_rendered(sets, namespace))


@functools.cache
def _rendered(sets: tuple[str, ...], namespace: str) -> list[dict[str, Any]]:
    """One `helm template` per distinct set of values for the whole session (it is the slow
    part of these tests); callers get their own copy."""
    args = ["template", "crontask", str(CHART), "-n", namespace, "--include-crds"]
    for item in sets:
        args += ["--set", item]
    return [d for d in yaml.safe_load_all(helm(*args)) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@needs_helm
def test_helm_lint_is_clean() -> None:
    out = helm("lint", str(CHART), "--strict", "--set", "defaultCronTasks.enabled=true")
    assert "0 chart(s) failed" in out


@needs_helm
def test_default_crontasks_are_valid() -> None:
    docs = render("defaultCronTasks.enabled=true")
    tasks = by_kind(docs, "CronTask")
    assert sorted(t["spec"]["task"] for t in tasks) == ["decay", "process", "recover"]
    validator = jsonschema.Draft7Validator(crd.openapi_schema())
    for task in tasks:
        validator.validate(task)
        decision = resolve(task["metadata"]["name"], parse_spec(task["spec"]), NOW)
        assert isinstance(decision, Timing), decision
    assert by_kind(render(), "CronTask") == [], "default CronTasks are opt-in"


@needs_helm
def test_every_workload_is_restricted() -> None:
    docs = render()
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "Job")]
    pods += [d["spec"] for d in by_kind(docs, "Pod")]
    assert len(pods) == 3, "operator, migrate hook, helm test"
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["limits"]["memory"]
    (deploy,) = by_kind(docs, "Deployment")
    assert deploy["spec"]["strategy"]["type"] == "Recreate"
    assert deploy["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    assert all(p.get("automountServiceAccountToken") is False for p in pods[1:])


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    return found


@needs_helm
def test_rbac_is_cluster_wide_or_per_namespace() -> None:
    docs = render()
    role = named(docs, "ClusterRole", "crontask-operator")
    verbs = {(r["apiGroups"][0], res): set(r["verbs"])
             for r in role["rules"] for res in r["resources"]}
    assert verbs == {
        ("crontask.dev", "crontasks"): {"list", "watch"},
        ("crontask.dev", "crontasks/status"): {"patch"},
        ("crontask.dev", "crontasks/finalizers"): {"update"},
        ("batch", "cronjobs"): {"list", "watch", "create", "patch", "delete"},
        ("batch", "jobs"): {"list", "watch"},
        ("", "pods"): {"list", "watch"},
        ("", "events"): {"create"},
    }
    scoped = render("watch.namespaces={team-a,team-b}")
    assert [r["metadata"]["name"] for r in by_kind(scoped, "ClusterRole")] == [
        "crontask-view", "crontask-edit"], "only the aggregated user roles"
    assert by_kind(scoped, "ClusterRoleBinding") == []
    assert sorted(r["metadata"]["namespace"] for r in by_kind(scoped, "Role")) == [
        "team-a", "team-b"]
    (deploy,) = by_kind(scoped, "Deployment")
    assert "--namespaces=team-a,team-b" in deploy["spec"]["template"]["spec"]["containers"][0][
        "args"]


@needs_helm
def test_images_default_to_the_app_version_and_take_a_digest() -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    (deploy,) = by_kind(render(), "Deployment")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"crontask-operator:{app_version}"
    assert f"--job-image=crontask-jobs:{app_version}" in container["args"]
    digest = "sha256:" + "a" * 64
    (deploy,) = by_kind(render(f"operator.image.digest={digest}",
                               "operator.image.registry=registry.example"), "Deployment")
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == (
        f"registry.example/crontask-operator@{digest}")


@needs_helm
def test_images_and_standard_labels() -> None:
    docs = render("operator.image.registry=registry.example", "operator.image.tag=dev",
                  "jobs.image.tag=1.2.3", "jobs.image.pullPolicy=Never")
    (deploy,) = by_kind(docs, "Deployment")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/crontask-operator:dev"
    assert "--job-image=crontask-jobs:1.2.3" in container["args"]
    assert "--job-image-pull-policy=Never" in container["args"]
    for doc in docs:
        if doc["kind"] == "CustomResourceDefinition":
            continue
        labels = doc["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                    "app.kubernetes.io/version", "app.kubernetes.io/managed-by"):
            assert key in labels, (doc["kind"], key)


@needs_helm
def test_one_kind_per_template_file() -> None:
    out = helm("template", "crontask", str(CHART), "--set", "defaultCronTasks.enabled=true",
               "--set", "watch.namespaces={a,b}")
    kinds: dict[str, set[str]] = {}
    source = ""
    for line in out.splitlines():
        if line.startswith("# Source: "):
            source = line.removeprefix("# Source: ")
        elif line.startswith("kind: "):
            kinds.setdefault(source, set()).add(line.removeprefix("kind: "))
    assert kinds and all(len(k) == 1 for k in kinds.values()), kinds


@needs_helm
def test_the_packaged_chart_installs_without_the_repository(tmp_path: Path) -> None:
    """A user installs the .tgz (or a repository's copy of it): it must render on its own, and
    its notes must not send them to paths only this repository has."""
    helm("package", str(CHART), "-d", str(tmp_path))
    (package,) = tmp_path.glob("crontask-*.tgz")
    out = helm("template", "crontask", str(package), "-n", "crontask", "--include-crds")
    kinds = {d["kind"] for d in yaml.safe_load_all(out) if d}
    assert {"CustomResourceDefinition", "Deployment", "ClusterRole"} <= kinds
    # helm template does not render NOTES.txt: render the packaged notes as a template.
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    with tarfile.open(package) as archive:
        archive.extractall(unpacked, filter="data")
    templates = unpacked / "crontask" / "templates"
    (templates / "_notes_as_template.tpl").write_text(
        '{{- define "test.notes" -}}\n' + (templates / "NOTES.txt").read_text() + "{{- end }}\n")
    (templates / "notes-as-template.yaml").write_text(
        'kind: Notes\ntext: {{ include "test.notes" . | toJson }}\n')
    for sets in ([], ["--set", "defaultCronTasks.enabled=true"],
                 ["--set", "watch.namespaces={a,b}"]):
        notes = yaml.safe_load(helm(
            "template", "crontask", str(unpacked / "crontask"), "-n", "crontask",
            "--show-only", "templates/notes-as-template.yaml", *sets))["text"]
        assert "is installed in namespace crontask" in notes
        for path in ("charts/", "examples/", "crds/", "hack/"):
            assert path not in notes, (path, notes)
        assert "helm show crds CHART" in notes


# --- issue 9: a CronTask gives its author no power they do not already have ----------------

POLICY = "crontask-author-rights"


@needs_helm
def test_admission_policy_is_on_by_default_and_binds_the_watched_namespaces() -> None:
    docs = render()
    policy = named(docs, "ValidatingAdmissionPolicy", POLICY)
    assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert policy["spec"]["failurePolicy"] == "Fail"
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert (rule["apiGroups"], rule["resources"]) == (["crontask.dev"], ["crontasks"])
    assert sorted(rule["operations"]) == ["CREATE", "UPDATE"]
    binding = named(docs, "ValidatingAdmissionPolicyBinding", POLICY)
    assert binding["spec"]["policyName"] == POLICY
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["matchResources"]["namespaceSelector"] == {}, "all namespaces"
    scoped = named(render("watch.namespaces={team-a,team-b}"),
                   "ValidatingAdmissionPolicyBinding", POLICY)
    (expr,) = scoped["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
    assert expr == {"key": "kubernetes.io/metadata.name", "operator": "In",
                    "values": ["team-a", "team-b"]}
    off = render("admissionPolicy.enabled=false")
    assert by_kind(off, "ValidatingAdmissionPolicy") == []
    assert by_kind(off, "ValidatingAdmissionPolicyBinding") == []
    audit = render("admissionPolicy.validationActions={Warn,Audit}")
    assert named(audit, "ValidatingAdmissionPolicyBinding", POLICY)["spec"][
        "validationActions"] == ["Warn", "Audit"]
    other = render("fullnameOverride=team-crontask")
    assert by_kind(other, "ValidatingAdmissionPolicy")[0]["metadata"]["name"] == (
        "team-crontask-author-rights"), "cluster-scoped names follow the release"


@needs_helm
def test_admission_policy_checks_each_right_with_its_own_message() -> None:
    spec = named(render(), "ValidatingAdmissionPolicy", POLICY)["spec"]
    variables = {v["name"]: v["expression"] for v in spec["variables"]}
    assert "authorizer.group('batch').resource('jobs')" in variables["mayCreateJobs"]
    assert ".check('create').allowed()" in variables["mayCreateJobs"]
    assert "authorizer.group('').resource('secrets')" in variables["mayGetSecret"]
    assert ".name(variables.secretName).check('get').allowed()" in variables["mayGetSecret"]
    checks = {v["messageExpression"].split(":")[0].strip("' "): v["expression"]
              for v in spec["validations"]}
    assert checks == {
        "spec.image": "!variables.imageChanged || variables.mayCreateJobs",
        "spec.env": "!variables.envChanged || variables.mayCreateJobs",
        "spec.process.pipeline": "!variables.pipelineChanged || variables.mayCreateJobs",
        "spec.database.secretKeyRef": "!variables.secretChanged || variables.mayGetSecret",
    }
    for validation in spec["validations"]:
        assert validation["reason"] == "Forbidden"
        assert validation["message"] and "may not" in validation["messageExpression"]


@needs_helm
def test_admission_policy_reads_only_fields_the_crd_has() -> None:
    """A renamed CRD field would make has() false and the policy check nothing: every spec path
    the policy reads must exist in the CRD's schema."""
    import re

    spec = named(render(), "ValidatingAdmissionPolicy", POLICY)["spec"]
    text = json.dumps(spec)
    found = re.findall(r"(?:oldObject|object)\.spec((?:\.[A-Za-z]+)+)(\(?)", text)
    paths = {path.rsplit(".", 1)[0] if call else path for path, call in found}
    assert {".image", ".env", ".process.pipeline", ".database.secretKeyRef.name",
            ".database.secretKeyRef.key"} <= paths
    for path in paths:
        node = crd.spec_schema()
        for part in path.strip(".").split("."):
            assert part in node.get("properties", {}), f"spec{path} is not in the CRD"
            node = node["properties"][part]


@needs_helm
def test_aggregated_roles_let_people_manage_and_read_crontasks_without_secrets() -> None:
    docs = render()
    view = named(docs, "ClusterRole", "crontask-view")
    edit = named(docs, "ClusterRole", "crontask-edit")
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    assert {k.removeprefix(aggregate) for k, v in view["metadata"]["labels"].items()
            if k.startswith(aggregate) and v == "true"} == {"view", "edit", "admin"}
    assert {k.removeprefix(aggregate) for k, v in edit["metadata"]["labels"].items()
            if k.startswith(aggregate) and v == "true"} == {"edit", "admin"}

    def grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
        return {(g, r): set(rule["verbs"]) for rule in role["rules"]
                for g in rule["apiGroups"] for r in rule["resources"]}

    assert grants(view) == {("crontask.dev", "crontasks"): {"get", "list", "watch"},
                            ("crontask.dev", "crontasks/status"): {"get", "list", "watch"}}
    assert grants(edit)[("crontask.dev", "crontasks")] >= {"create", "update", "patch",
                                                          "delete"}
    assert grants(edit)[("crontask.dev", "crontasks/status")] == {"get", "list", "watch"}, (
        "people never write the operator's status")
    for role in (view, edit):
        assert all(g == "crontask.dev" for g, _ in grants(role)), "no Secrets, nothing else"
    assert [r["metadata"]["name"] for r in by_kind(render("rbac.aggregatedRoles=false"),
                                                   "ClusterRole")] == ["crontask-operator"]


@needs_helm
def test_allowed_images_default_to_the_jobs_image_repository() -> None:
    def args(*sets: str) -> list[str]:
        (deploy,) = by_kind(render(*sets), "Deployment")
        return list(deploy["spec"]["template"]["spec"]["containers"][0]["args"])

    assert "--allowed-images=crontask-jobs" in args()
    assert "--allowed-images=registry.example/crontask-jobs" in args(
        "jobs.image.registry=registry.example")
    assert "--allowed-images=registry.example/team/*,ghcr.io/org/jobs:1.*" in args(
        "jobs.allowedImages={registry.example/team/*,ghcr.io/org/jobs:1.*}")


@pytest.mark.parametrize(("path", "value"), [
    (("admissionPolicy", "validationActions"), ["Deny", "Warn"]),
    (("admissionPolicy", "validationActions"), []),
    (("admissionPolicy", "failurePolicy"), "Sometimes"),
    (("jobs", "allowedImages"), ["a,b"]),
    (("jobs", "allowedImages"), ["with space"]),
])
def test_schema_refuses_bad_security_values(path: tuple[str, ...], value: Any) -> None:
    test_schema_refuses_bad_values(path, value)
