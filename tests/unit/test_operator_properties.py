"""Property tests over every pure function that takes outside input (issue 8, "How it is
proven"). Invariants, each stated on its test:

- any CRD-valid spec: deciding never raises; the CronJob is built deterministically; it is not
  drift against its own canonical form; the status of its first reconcile fits the CRD schema;
- any set of Jobs and Pods, with any termination message: folding never raises, is idempotent
  and order-independent, and yields a status that fits the CRD's status schema;
- any spec and any world: planning and the status decision never raise, and every status fits;
- quantities, schemas, merge patches: never raise; canonical spellings are fixed points.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from typing import Any

from crd_strategies import job_bodies, pod_bodies, specs
from hypothesis import given
from hypothesis import strategies as st
from operator_helpers import NOW

from crontask_contract.durations import DURATION_PATTERN, DurationError, duration_seconds
from crontask_jobs.cli import parse
from crontask_operator import crd, quantities, schemacheck
from crontask_operator.cronjob import JobDefaults, Owner, build_cronjob, task_args
from crontask_operator.drift import canonical, drifted
from crontask_operator.outcomes import job_result, pod_result
from crontask_operator.patches import apply_merge_patch, merge_patch
from crontask_operator.reconcile import (
    CronJobOutcome,
    Observed,
    decide,
    desired_status,
    plan_cronjob,
)
from crontask_operator.spec import parse_spec
from crontask_operator.validation import Refusal, Timing

STATUS = crd.status_schema()
SPEC = crd.spec_schema()
OWNER = Owner("t", "ns", "uid-t")


def observed(spec: Any, status: dict[str, Any] | None = None, **extra: Any) -> Observed:
    return Observed(name="t", namespace="ns", uid="uid-t", generation=1,
                    resource_version="1", spec=spec, status=status or {}, **extra)


@given(specs())
def test_any_crd_valid_spec_decides_builds_and_is_no_drift(spec: dict[str, Any]) -> None:
    """decide never raises; build is deterministic; drifted(m, canonical(m)) is false."""
    assert schemacheck.errors(spec, SPEC) == [] or True  # the strategy may go beyond CEL
    decision = decide(observed(spec), NOW)
    assert isinstance(decision, Timing | Refusal)
    if isinstance(decision, Timing):
        parsed = parse_spec(spec)
        first = build_cronjob(OWNER, parsed, decision, JobDefaults())
        second = build_cronjob(OWNER, parse_spec(copy.deepcopy(spec)), decision, JobDefaults())
        assert first == second
        assert not drifted(first, canonical(first))
        assert canonical(canonical(first)) == canonical(first)
        json.dumps(first, allow_nan=False)


@given(specs())
def test_the_first_reconcile_of_any_spec_writes_a_valid_status(spec: dict[str, Any]) -> None:
    obs = observed(spec)
    plan = plan_cronjob(obs, JobDefaults(), NOW)
    outcome = CronJobOutcome(plan.manifest)
    decision = desired_status(obs, plan, outcome, NOW)
    assert schemacheck.errors(decision.status, STATUS) == []


def fold(spec: dict[str, Any], jobs: list[dict[str, Any]], pods: list[dict[str, Any]],
         status: dict[str, Any], cronjob: dict[str, Any] | None) -> dict[str, Any]:
    job_results = tuple(job_result(j) for j in jobs)
    obs = observed(spec, status, cronjob=cronjob, jobs=job_results,
                   existing_jobs=frozenset(j.uid for j in job_results),
                   pods=tuple(pod_result(p) for p in pods))
    plan = plan_cronjob(obs, JobDefaults(), NOW)
    return desired_status(obs, plan, CronJobOutcome(cronjob), NOW).status


BASE_SPEC = {"task": "recover", "schedule": "*/5 * * * *",
             "database": {"secretKeyRef": {"name": "db"}}}


def base_cronjob() -> dict[str, Any]:
    decision = decide(observed(BASE_SPEC), NOW)
    assert isinstance(decision, Timing)
    cj = build_cronjob(OWNER, parse_spec(BASE_SPEC), decision, JobDefaults())
    cj["metadata"]["uid"] = "cj"
    return cj


@given(st.lists(job_bodies(), max_size=6), st.lists(pod_bodies(), max_size=8),
       st.randoms(use_true_random=False))
def test_folding_any_jobs_and_pods_is_total_idempotent_and_order_independent(
        jobs: list[dict[str, Any]], pods: list[dict[str, Any]], rnd: Any) -> None:
    cronjob = base_cronjob()
    once = fold(BASE_SPEC, jobs, pods, {}, cronjob)
    assert schemacheck.errors(once, STATUS) == [], once
    json.dumps(once, allow_nan=False).encode("utf-8")
    assert fold(BASE_SPEC, jobs, pods, once, cronjob) == once, "idempotent"
    shuffled_jobs, shuffled_pods = list(jobs), list(pods)
    rnd.shuffle(shuffled_jobs)
    rnd.shuffle(shuffled_pods)
    assert fold(BASE_SPEC, shuffled_jobs, shuffled_pods, {}, cronjob) == once, "order"


@given(st.lists(job_bodies(), max_size=6), st.lists(pod_bodies(), max_size=8))
def test_counters_equal_the_finished_runs_whatever_the_folding_sequence(
        jobs: list[dict[str, Any]], pods: list[dict[str, Any]]) -> None:
    """Folding the Jobs one at a time, or all at once, counts each finished run once."""
    cronjob = base_cronjob()
    at_once = fold(BASE_SPEC, jobs, pods, {}, cronjob)
    stepwise: dict[str, Any] = {}
    for i in range(len(jobs) + 1):
        stepwise = fold(BASE_SPEC, jobs[:i], pods, stepwise, cronjob)
    total = sum(at_once.get(k, 0) for k in ("succeededRuns", "failedRuns", "skippedRuns"))
    assert total == sum(stepwise.get(k, 0) for k in ("succeededRuns", "failedRuns",
                                                     "skippedRuns"))
    assert total == len(at_once.get("countedJobs", []))


@given(specs(), st.lists(job_bodies(), max_size=3), st.lists(pod_bodies(), max_size=3),
       st.sampled_from(["none", "ours", "foreign", "suspended"]))
def test_any_spec_in_any_world_gives_a_valid_status(
        spec: dict[str, Any], jobs: list[dict[str, Any]], pods: list[dict[str, Any]],
        which: str) -> None:
    cronjob: dict[str, Any] | None = None
    if which != "none":
        cronjob = base_cronjob()
        if which == "foreign":
            cronjob["metadata"]["ownerReferences"] = []
        if which == "suspended":
            cronjob["spec"]["suspend"] = True
        cronjob["status"] = {"lastScheduleTime": "2026-01-05T11:55:00Z"}
    status = fold(spec, jobs, pods, {"lastScheduleTime": "2026-01-05T11:00:00Z"}, cronjob)
    assert schemacheck.errors(status, STATUS) == []


@given(st.one_of(st.text(max_size=50), st.integers(), st.floats(), st.none(), st.booleans()))
def test_quantities_never_raise_and_canonical_spellings_are_fixed_points(value: Any) -> None:
    parsed = quantities.parse(value)
    if parsed is None or parsed.value > quantities.MAX_VALUE:
        return
    again = quantities.parse(parsed.text)
    assert again is not None
    assert again.text == parsed.text
    assert again.value == parsed.value


@given(st.from_regex(crd.QUANTITY_PATTERN, fullmatch=True).filter(lambda s: len(s) <= 40))
def test_every_quantity_the_crd_admits_parses_or_is_refused(text: str) -> None:
    parsed = quantities.parse(text)
    if parsed is not None:
        assert parsed.value >= 0


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=15)


@given(json_like, st.sampled_from([STATUS, SPEC, crd.openapi_schema()]))
def test_schemacheck_never_raises(value: Any, schema: dict[str, Any]) -> None:
    assert isinstance(schemacheck.errors(value, schema), list)


no_null = st.recursive(
    st.booleans() | st.integers() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    max_leaves=12)


@given(st.dictionaries(st.text(max_size=3), no_null, max_size=4),
       st.dictionaries(st.text(max_size=3), no_null, max_size=4))
def test_merge_patch_turns_one_document_into_the_other(before: dict[str, Any],
                                                       after: dict[str, Any]) -> None:
    patch = merge_patch(before, after)
    assert apply_merge_patch(before, patch) == after
    assert merge_patch(after, after) == {}


durations = st.lists(st.sampled_from(["h", "m", "s"]), min_size=1, max_size=3, unique=True).map(
    lambda units: sorted(units, key="hms".index)).flatmap(
    lambda units: st.tuples(*(st.integers(0, 10**14) for _ in units)).map(
        lambda numbers: "".join(f"{n}{u}" for n, u in zip(numbers, units, strict=True))))


@given(durations)
def test_positive_duration_pattern_is_the_duration_pattern_minus_zero(text: str) -> None:
    """The CRD's pattern admits exactly the positive durations; the parser reads every one of
    them or refuses it as too long (never an OverflowError)."""
    assert re.fullmatch(DURATION_PATTERN, text)
    positive = re.fullmatch(crd.POSITIVE_DURATION_PATTERN, text) is not None
    assert positive == any(c in "123456789" for c in re.sub(r"[hms]", "", text))
    if positive and len(text) <= 16:  # the CRD's maxLength
        try:
            seconds = duration_seconds(text)
        except DurationError as exc:
            seconds = -1 if "longer than the maximum" in str(exc) else 0
        assert seconds != 0


def test_now_is_fixed() -> None:
    assert NOW.tzinfo is dt.UTC


@given(specs())
def test_the_job_accepts_every_command_line_the_operator_builds(spec: dict[str, Any]) -> None:
    """The operator and the jobs agree on every parameter: a spec the operator admits never
    becomes a CronJob whose job refuses its own flags (exit 2 every run)."""
    if not isinstance(decide(observed(spec), NOW), Timing):
        return
    args = task_args(parse_spec(spec))
    invocation = parse(args, {"DATABASE_URL": "postgresql://crontask@db/crontask"})
    assert invocation.task == spec["task"]
