"""The Helm chart: values typed by values.schema.json, and (with helm) rendered manifests that
are lint-clean, least-privilege, restricted-PSS and carry CronTasks the CRD accepts.

helm comes from hack/tools.sh (built from its Go module); without it the rendering tests are
skipped with the reason, and the cluster tier validates the chart server-side.
"""

from __future__ import annotations

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
    (("operator", "replicaCount"), -1),
    (("operator", "leaderElection", "retryPeriod"), 0),
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
    assert deploy["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    assert all(p.get("automountServiceAccountToken") is False for p in pods[1:])


@needs_helm
def test_rbac_is_cluster_wide_or_per_namespace() -> None:
    docs = render()
    (role,) = by_kind(docs, "ClusterRole")
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
    assert by_kind(scoped, "ClusterRole") == [] and by_kind(scoped, "ClusterRoleBinding") == []
    assert sorted(r["metadata"]["namespace"] for r in by_kind(scoped, "Role")
                  if r["metadata"]["name"].endswith("-operator")) == ["team-a", "team-b"]
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
