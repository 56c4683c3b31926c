"""The chart's monitoring and leader-election objects (issue 10.4 and 10.5).

- The ServiceMonitor and PrometheusRule are opt-in (off by default) and validate against the
  Prometheus Operator's own CRD schemas (the pinned module's, fetched by hack/tools.sh);
- the alerting rules pass ``promtool check rules`` and behave as promised under
  ``promtool test rules``: each alert fires on the series that should fire it, after its
  ``for``, with its runbook line, and not on a suspended CronTask, another installation's series
  or a leader handover;
- leader election: the Lease Role grants exactly get/update on the one Lease and create; more
  than one replica needs leader election, which makes rollouts RollingUpdate.

helm and promtool come from hack/tools.sh (built from their Go modules); without them these
tests are skipped with the reason.
"""

from __future__ import annotations

import copy
import glob
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from test_chart import CHART, HELM, by_kind, needs_helm, render

REPO = Path(__file__).resolve().parents[2]
RELEASE_SELECTOR = 'crontask_release="crontask/crontask"'


def _pin(name: str) -> str:
    found = re.search(rf'^{name}="\$\{{{name}:-(\S+)\}}"$',
                      (REPO / "hack" / "lib.sh").read_text(), re.MULTILINE)
    assert found is not None, f"{name} is pinned in hack/lib.sh"
    return found.group(1)


def promtool_binary() -> str | None:
    found = os.environ.get("PROMTOOL")
    if found:
        return found
    cache = os.environ.get("CRONTASK_CACHE", "/var/cache/crontask")
    stamps = glob.glob(f"{cache}/bin/*/.promtool.stamp")
    current = [s for s in stamps if Path(s).read_text().strip() == _pin("PROMETHEUS_VERSION")]
    return str(Path(sorted(current)[-1]).parent / "promtool") if current else None


def crd_schemas() -> dict[str, Any] | None:
    cache = os.environ.get("CRONTASK_CACHE", "/var/cache/crontask")
    folder = Path(cache) / "schemas" / f"prometheus-operator-{_pin('PROMETHEUS_OPERATOR_VERSION')}"
    out = {}
    for kind, file in (("ServiceMonitor", "monitoring.coreos.com_servicemonitors.yaml"),
                       ("PrometheusRule", "monitoring.coreos.com_prometheusrules.yaml")):
        if not (folder / file).exists():
            return None
        crd = yaml.safe_load((folder / file).read_text())
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        out[kind] = version["schema"]["openAPIV3Schema"]
    return out


PROMTOOL = promtool_binary()
SCHEMAS = crd_schemas()
needs_promtool = pytest.mark.skipif(PROMTOOL is None,
                                    reason="promtool not built yet: run hack/tools.sh monitoring")
needs_schemas = pytest.mark.skipif(
    SCHEMAS is None,
    reason="Prometheus Operator CRDs not fetched yet: run hack/tools.sh monitoring")

MONITORING = ("monitoring.serviceMonitor.enabled=true", "monitoring.prometheusRule.enabled=true")


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, check=False,
                          timeout=120, cwd=cwd)


# -- opt-in, and valid for the Prometheus Operator --------------------------------------------
@needs_helm
def test_monitoring_objects_are_opt_in() -> None:
    docs = render()
    assert by_kind(docs, "ServiceMonitor") == [] and by_kind(docs, "PrometheusRule") == []
    docs = render(*MONITORING)
    assert len(by_kind(docs, "ServiceMonitor")) == 1
    assert len(by_kind(docs, "PrometheusRule")) == 1


@needs_helm
def test_the_service_monitor_scrapes_the_operators_metrics_port() -> None:
    docs = render(*MONITORING, "monitoring.serviceMonitor.labels.release=prom")
    (monitor,) = by_kind(docs, "ServiceMonitor")
    (service,) = by_kind(docs, "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["honorLabels"] is True
    assert {"action": "replace", "targetLabel": "crontask_release",
            "replacement": "crontask/crontask"} in endpoint["relabelings"]
    assert monitor["metadata"]["labels"]["release"] == "prom"


@needs_helm
@needs_schemas
@pytest.mark.parametrize("sets", [(), ("monitoring.prometheusRule.alertLabels.team=platform",
                                       "monitoring.prometheusRule.labels.release=prom",
                                       "monitoring.serviceMonitor.interval=1m")])
def test_the_templates_validate_against_the_prometheus_operator_crds(sets: tuple[str, ...]
                                                                      ) -> None:
    assert SCHEMAS is not None
    docs = render(*MONITORING, *sets)
    for kind, schema in SCHEMAS.items():
        (doc,) = by_kind(docs, kind)
        jsonschema.Draft7Validator(schema).validate(doc)


@needs_helm
@needs_schemas
def test_the_crd_schemas_have_teeth() -> None:
    """The validation above would catch a broken template (the schemas are the real ones)."""
    assert SCHEMAS is not None
    docs = render(*MONITORING)
    (monitor,) = by_kind(docs, "ServiceMonitor")
    (rule,) = by_kind(docs, "PrometheusRule")
    bad_interval = copy.deepcopy(monitor)
    bad_interval["spec"]["endpoints"][0]["interval"] = "30 seconds"
    bad_rule = copy.deepcopy(rule)
    del bad_rule["spec"]["groups"][0]["rules"][0]["expr"]
    for kind, doc in (("ServiceMonitor", bad_interval), ("PrometheusRule", bad_rule)):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft7Validator(SCHEMAS[kind]).validate(doc)


# -- the rules under promtool ---------------------------------------------------------------
def rules_file(tmp_path: Path, *sets: str) -> tuple[Path, dict[str, dict[str, Any]]]:
    """The PrometheusRule's groups as a plain rules file, and each alert rule by name."""
    (rule,) = by_kind(render(*MONITORING, *sets), "PrometheusRule")
    path = tmp_path / "crontask-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    return path, alerts


@needs_helm
@needs_promtool
def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    path, alerts = rules_file(tmp_path)
    result = promtool("check", "rules", path.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout + result.stderr
    assert set(alerts) == {"CronTaskRunFailed", "CronTaskNoRecentSuccess",
                           "CronTaskStageErrorsRecurring", "CronTaskNotReady",
                           "CronTaskRunsMissed", "CrontaskOperatorDown"}
    for name, alert in alerts.items():
        assert alert["annotations"]["runbook"], f"{name} has a runbook line"
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert RELEASE_SELECTOR in alert["expr"], f"{name} selects this installation only"


def task_labels(name: str, **extra: str) -> dict[str, str]:
    return {"crontask_release": "crontask/crontask", "job": "crontask", "namespace": "team-a",
            "crontask": name, "task": "recover", **extra}


def series(metric: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{metric}{{{inner}}}", "values": values}


def expand(text: str, labels: dict[str, str], value: str) -> str:
    """What Prometheus makes of an annotation template, for the few forms ours use."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
    return text.replace("{{ $value | humanizeDuration }}", value).replace("{{ $value }}", value)


def firing(alerts: dict[str, dict[str, Any]], name: str, labels: dict[str, str],
           value: str = "") -> dict[str, Any]:
    rule = alerts[name]
    return {"exp_labels": {**labels, **rule["labels"]},
            "exp_annotations": {k: expand(v, labels, value)
                                for k, v in rule["annotations"].items()}}


def scenarios(alerts: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One promtool test group per alert: what must fire, when, and what must not."""
    failed, ok, other = (task_labels("nightly"), task_labels("fine"),
                         {**task_labels("nightly"), "crontask_release": "elsewhere/crontask"})
    stale, suspended, fresh, never = (task_labels(n) for n in ("stale", "paused", "fresh",
                                                               "never"))
    errors, refused, missed = task_labels("flaky"), task_labels("refused"), task_labels("lost")
    out = [
        {"name": "a failed last run fires after 1m and clears with a success",
         "input_series": [
             series("crontask_last_run_outcome", {**failed, "outcome": "Failed"},
                    "0 0 0 1 1 1 1 1 0 0"),
             series("crontask_last_run_outcome", {**ok, "outcome": "Failed"}, "0x9"),
             series("crontask_last_run_outcome", {**other, "outcome": "Failed"}, "1x9")],
         "alert_rule_test": [
             {"eval_time": "3m", "alertname": "CronTaskRunFailed", "exp_alerts": []},
             {"eval_time": "5m", "alertname": "CronTaskRunFailed", "exp_alerts": [
                 firing(alerts, "CronTaskRunFailed", {**failed, "outcome": "Failed"})]},
             {"eval_time": "9m", "alertname": "CronTaskRunFailed", "exp_alerts": []}]},
        {"name": "no success for 3 intervals fires; suspended and succeeding ones do not",
         "input_series": [
             *(series("crontask_schedule_interval_seconds", labels, "60x30")
               for labels in (stale, suspended, fresh, never)),
             series("crontask_last_success_timestamp_seconds", stale, "0x30"),
             series("crontask_last_success_timestamp_seconds", suspended, "0x30"),
             series("crontask_suspended", suspended, "1x30"),
             series("crontask_suspended", stale, "0x30"),
             series("crontask_last_success_timestamp_seconds", fresh, "0+60x30"),
             series("crontask_created_timestamp_seconds", never, "0x30")],
         "alert_rule_test": [
             {"eval_time": "7m", "alertname": "CronTaskNoRecentSuccess", "exp_alerts": []},
             {"eval_time": "10m", "alertname": "CronTaskNoRecentSuccess", "exp_alerts": [
                 firing(alerts, "CronTaskNoRecentSuccess", stale, "10m 0s"),
                 firing(alerts, "CronTaskNoRecentSuccess", never, "10m 0s")]}]},
        {"name": "stage errors in 3 of the recent runs fire; 2 do not",
         "input_series": [series("crontask_recent_runs_with_stage_errors", errors,
                                 "0 1 2 3 3 3 2 2")],
         "alert_rule_test": [
             {"eval_time": "3m", "alertname": "CronTaskStageErrorsRecurring", "exp_alerts": []},
             {"eval_time": "5m", "alertname": "CronTaskStageErrorsRecurring", "exp_alerts": [
                 firing(alerts, "CronTaskStageErrorsRecurring", errors, "3")]},
             {"eval_time": "7m", "alertname": "CronTaskStageErrorsRecurring",
              "exp_alerts": []}]},
        {"name": "a refusal fires after 15m",
         "input_series": [series("crontask_ready", refused, "1 0x20")],
         "alert_rule_test": [
             {"eval_time": "10m", "alertname": "CronTaskNotReady", "exp_alerts": []},
             {"eval_time": "17m", "alertname": "CronTaskNotReady", "exp_alerts": [
                 firing(alerts, "CronTaskNotReady", refused)]}]},
        {"name": "a missed run fires for an hour",
         "input_series": [series("crontask_missed_runs_total", missed, "0 0 1x70")],
         "alert_rule_test": [
             {"eval_time": "1m", "alertname": "CronTaskRunsMissed", "exp_alerts": []},
             {"eval_time": "3m", "alertname": "CronTaskRunsMissed", "exp_alerts": [
                 firing(alerts, "CronTaskRunsMissed", missed)]},
             {"eval_time": "65m", "alertname": "CronTaskRunsMissed", "exp_alerts": []}]},
    ]
    release = {"crontask_release": "crontask/crontask"}
    leader_a = {**release, "job": "crontask", "pod": "crontask-operator-a"}
    leader_b = {**release, "job": "crontask", "pod": "crontask-operator-b"}
    down = {"name": "no leader for 5m fires; a handover does not",
            "input_series": [series("crontask_operator_leader", leader_a, "1x9 stale"),
                             series("crontask_operator_leader", leader_b, "0x30")],
            "alert_rule_test": [
                {"eval_time": "12m", "alertname": "CrontaskOperatorDown", "exp_alerts": []},
                {"eval_time": "16m", "alertname": "CrontaskOperatorDown", "exp_alerts": [
                    firing(alerts, "CrontaskOperatorDown", {})]}]}
    handover = {"name": "a handover within the for: no alert",
                "input_series": [series("crontask_operator_leader", leader_a, "1x9 stale"),
                                 series("crontask_operator_leader", leader_b, "0x11 1x20")],
                "alert_rule_test": [{"eval_time": t, "alertname": "CrontaskOperatorDown",
                                     "exp_alerts": []} for t in ("11m", "16m", "25m")]}
    return [*out, down, handover]


@needs_helm
@needs_promtool
def test_promtool_unit_tests_of_every_alert(tmp_path: Path) -> None:
    path, alerts = rules_file(tmp_path)
    tests = {"rule_files": [path.name], "evaluation_interval": "1m",
             "tests": [{"interval": "1m", **s} for s in scenarios(alerts)]}
    tested = {t["alertname"] for s in tests["tests"] for t in s["alert_rule_test"]}
    assert tested == set(alerts), "every alert has a test"
    (tmp_path / "crontask-rules.test.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = promtool("test", "rules", "crontask-rules.test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


@needs_helm
@needs_promtool
def test_a_broken_rule_fails_promtool(tmp_path: Path) -> None:
    """The promtool checks above can fail: a rule that no longer fires is caught."""
    path, alerts = rules_file(tmp_path, "monitoring.prometheusRule.stageErrorRuns=9")
    tests = {"rule_files": [path.name], "evaluation_interval": "1m",
             "tests": [{"interval": "1m", **s} for s in scenarios(alerts)
                       if "stage errors" in s["name"]]}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(tests))
    assert promtool("test", "rules", "t.yaml", cwd=tmp_path).returncode != 0
    broken = yaml.safe_load(path.read_text())
    broken["groups"][0]["rules"][0]["expr"] = "crontask_last_run_outcome{"
    path.write_text(yaml.safe_dump(broken))
    assert promtool("check", "rules", path.name, cwd=tmp_path).returncode != 0


# -- leader election in the chart -------------------------------------------------------------
@needs_helm
def test_leader_election_is_on_with_a_lease_role_of_its_own() -> None:
    docs = render("operator.replicaCount=2")
    (deploy,) = by_kind(docs, "Deployment")
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {
        "maxSurge": 1, "maxUnavailable": 0}}
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    for arg in ("--leader-election=true", "--lease-name=crontask-operator",
                "--lease-duration=15", "--renew-deadline=10", "--retry-period=2"):
        assert arg in container["args"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env["POD_NAMESPACE"] == "metadata.namespace"
    (role,) = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-election")]
    assert role["metadata"]["namespace"] == "crontask"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": ["crontask-operator"], "verbs": ["get", "update"]}]
    (binding,) = [b for b in by_kind(docs, "RoleBinding")
                  if b["metadata"]["name"].endswith("-election")]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


@needs_helm
def test_without_leader_election_one_replica_and_recreate() -> None:
    docs = render("operator.leaderElection.enabled=false")
    (deploy,) = by_kind(docs, "Deployment")
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    assert "--leader-election=false" in deploy["spec"]["template"]["spec"]["containers"][0][
        "args"]
    assert not [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-election")]
    assert HELM is not None
    refused = subprocess.run(
        [HELM, "template", "crontask", str(CHART), "--set", "operator.replicaCount=2",
         "--set", "operator.leaderElection.enabled=false"],
        capture_output=True, text=True, check=False, timeout=60)
    assert refused.returncode != 0 and "replicaCount" in refused.stderr


def test_values_schema_takes_two_replicas_only_with_leader_election() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    values["operator"]["replicaCount"] = 2
    jsonschema.Draft7Validator(schema).validate(values)
    values["operator"]["leaderElection"]["enabled"] = False
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(values)
