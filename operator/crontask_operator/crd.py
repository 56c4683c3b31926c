"""The CronTask CustomResourceDefinition, generated from code.

The CRD is the API's documentation (``kubectl explain`` reads these descriptions) and its first
line of validation: everything that can be checked by the API server lives here (enums, ranges,
patterns, CEL rules across fields), so a bad CronTask is refused at ``kubectl apply`` time rather
than discovered by the operator. The checked-in copy in ``charts/crontask/crds/`` is produced by
``python -m crontask_operator.crd`` and a unit test fails when the two drift apart.
"""

from __future__ import annotations

import sys
from typing import Any, Final

from crontask_operator import defaults, names

Schema = dict[str, Any]

TASK_ENUM: Final = ("recover", "decay", "process", "detect-stuck", "recover-stuck")
OUTCOMES: Final = ("Succeeded", "Skipped", "Failed")
QUANTITY_PATTERN: Final = (r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
                           r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
"""Kubernetes' quantity grammar without the minus sign: resources are never negative."""
_NONZERO: Final = "[0-9]*[1-9][0-9]*"
POSITIVE_DURATION_PATTERN: Final = (
    rf"^(([0-9]+h)?([0-9]+m)?{_NONZERO}s|([0-9]+h)?{_NONZERO}m([0-9]+s)?"
    rf"|{_NONZERO}h([0-9]+m)?([0-9]+s)?)$")
"""crontask_contract.durations.DURATION_PATTERN (whole h, m and s, which CEL's duration() also
reads) with at least one non-zero part: every duration here is a threshold or a timeout, and a
zero one is refused by the API server instead of by every run exiting 2. Written without
look-ahead, which the API server's RE2 does not have."""
MAX_MESSAGE_CHARS: Final = 1024
"""The longest message or reason text the operator writes into status."""


def _s(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, **extra}


def _i(description: str, **extra: Any) -> Schema:
    return {"type": "integer", "description": description, **extra}


def _b(description: str, **extra: Any) -> Schema:
    return {"type": "boolean", "description": description, **extra}


def _obj(description: str, properties: dict[str, Schema], **extra: Any) -> Schema:
    return {"type": "object", "description": description, "properties": properties, **extra}


def _dur(description: str, default: str | None = None) -> Schema:
    out = _s(description + " A positive duration such as 90s, 30m or 1h30m, at most"
             f" {defaults.MAX_DURATION}.",
             pattern=POSITIVE_DURATION_PATTERN, minLength=2, maxLength=16,
             **{"x-kubernetes-validations": [{
                 "rule": f"duration(self) <= duration('{defaults.MAX_DURATION}')",
                 "message": f"must be at most {defaults.MAX_DURATION}",
             }]})
    if default is not None:
        out["default"] = default
    return out


def _time(description: str) -> Schema:
    return _s(description, format="date-time")


def _quantity() -> Schema:
    return {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN,
        "maxLength": defaults.MAX_QUANTITY_CHARS,
        "minimum": 0,
        "x-kubernetes-int-or-string": True,
    }


def _quantities(description: str) -> Schema:
    return {
        "type": "object",
        "description": description,
        "maxProperties": 16,
        "additionalProperties": _quantity(),
    }


def _recover_spec() -> Schema:
    return _obj(
        "Parameters of the recover task (only with task: recover).",
        {
            "staleAfter": _dur(
                "A conversation in 'processing' for longer than this is marked failed. Process"
                " CronTasks must finish well within it (see spec.process.recoverStaleAfter).",
                defaults.TASK_PARAMS["recover"]["staleAfter"]),
            "abandonedAfter": _dur(
                "A job execution left 'running' for longer than this is closed as abandoned."
                " Must be longer than staleAfter.",
                defaults.TASK_PARAMS["recover"]["abandonedAfter"]),
        },
        **{"x-kubernetes-validations": [{
            "rule": "duration(self.abandonedAfter) > duration(self.staleAfter)",
            "message": "recover.abandonedAfter must be longer than recover.staleAfter",
        }]},
    )


def _decay_spec() -> Schema:
    unset = defaults.JOB_UNSET["decay"]
    return _obj(
        "Parameters of the decay task (only with task: decay).",
        {
            "window": _dur(
                "A decay run within this window of the previous one is skipped with reason"
                " recent_execution. Keep it below the schedule's interval.",
                defaults.TASK_PARAMS["decay"]["window"]),
            "maxDecayPerRun": _i(
                "The most points one user can lose in a single run, 1 to 100 (unset:"
                f" {unset['maxDecayPerRun']}). A score is at most 100, so 100 is no cap.",
                minimum=1, maximum=100),
            "workers": _i(
                f"Database connections that decay users at once, 1 to 16 (unset:"
                f" {unset['workers']}). Below"
                " 50,000 users one connection does it all. Each is busy for the whole run:"
                " more finish sooner on a server with cores to spare.",
                minimum=1, maximum=16),
        },
    )


def _process_spec() -> Schema:
    process = defaults.TASK_PARAMS["process"]
    stage_name = r"^[a-z][a-z0-9_-]{0,62}$"
    return _obj(
        "Parameters of the process task (only with task: process).",
        {
            "idleAfter": _dur("A conversation idle for this long is picked up for processing.",
                              process["idleAfter"]),
            "batchSize": _i("How many conversations one run claims at most.",
                            default=process["batchSize"], minimum=1, maximum=10_000),
            "maxConcurrentPipelines": _i(
                "How many conversations run through the pipeline at once within a pod.",
                default=process["maxConcurrentPipelines"], minimum=1, maximum=1_000),
            "maxInFlight": _i(
                "The most conversations that may be 'processing' at once across all runs"
                " (unset: no global cap).", minimum=1, maximum=1_000_000),
            "parallelism": _i(
                "How many pods of one Job run at once. Runs claim work with FOR UPDATE SKIP"
                " LOCKED, so parallel pods never take the same conversation.",
                default=process["parallelism"], minimum=1, maximum=10),
            "stageTimeout": _dur("The default timeout of every pipeline stage.",
                                 process["stageTimeout"]),
            "stageTimeouts": {
                "type": "object",
                "description": "Per-stage timeouts that override stageTimeout, by stage name.",
                "maxProperties": 32,
                "additionalProperties": _dur("The timeout of this stage."),
                "x-kubernetes-validations": [{
                    "rule": f"self.all(k, k.matches('{stage_name}'))",
                    "message": "stage names are lower-case words (a-z, 0-9, _ and -)",
                }],
            },
            "pipeline": _s(
                "The pipeline to run: an entry-point name of the crontask.pipeline group or"
                " module:callable (unset: the image's default pipeline).",
                maxLength=253, pattern=r"^[A-Za-z0-9_.\-]+(:[A-Za-z0-9_.]+)?$"),
            "recoverStaleAfter": _dur(
                "The staleness threshold of this namespace's recover task. A process run must end"
                " before it, or recover would fail conversations still being processed: the"
                " operator keeps the Job's activeDeadlineSeconds and every stage timeout below it,"
                " and also honours a shorter recover.staleAfter of a recover CronTask in the same"
                " namespace.", process["recoverStaleAfter"]),
        },
        **{"x-kubernetes-validations": [
            {
                "rule": "duration(self.stageTimeout) < duration(self.recoverStaleAfter)",
                "message": "process.stageTimeout must be shorter than process.recoverStaleAfter",
            },
            {
                "rule": "!has(self.stageTimeouts) || self.stageTimeouts.all(k,"
                        " duration(self.stageTimeouts[k]) < duration(self.recoverStaleAfter))",
                "message": "every process.stageTimeouts entry must be shorter than"
                           " process.recoverStaleAfter",
            },
        ]},
    )


def _key_ref(description: str) -> Schema:
    return _obj(description, {
        "name": _s("The object's name.", minLength=1, maxLength=253),
        "key": _s("The key within it.", minLength=1, maxLength=253),
        "optional": _b("Whether the pod may start without it."),
    }, required=["name", "key"])


def _value_from() -> Schema:
    """The sources of a Pod's EnvVarSource, typed: the CronJob gets exactly what the Pod API
    admits, so the API server neither refuses nor silently drops a field of ours."""
    return _obj(
        "Exactly one source for the value, as in a Pod.",
        {
            "secretKeyRef": _key_ref("A key of a Secret in the CronTask's namespace."),
            "configMapKeyRef": _key_ref("A key of a ConfigMap in the CronTask's namespace."),
            "fieldRef": _obj("A field of the job pod.", {
                "fieldPath": _s("The field, e.g. metadata.name.", minLength=1, maxLength=256),
                "apiVersion": _s("The schema version the path is written in (default v1).",
                                 minLength=1, maxLength=64),
            }, required=["fieldPath"]),
            "resourceFieldRef": _obj("A resource request or limit of the job container.", {
                "resource": _s("The resource, e.g. limits.memory.", minLength=1,
                               maxLength=256),
                "containerName": _s("The container (default: the job container).",
                                    minLength=1, maxLength=63),
                "divisor": {**_quantity(), "description": "The unit the value is given in."},
            }, required=["resource"]),
        },
        minProperties=1, maxProperties=1,
    )


def _env_spec() -> Schema:
    return {
        "type": "array",
        "description": "Extra environment variables of the job container (CRONTASK_* settings,"
                       " proxies, ...). DATABASE_URL is not allowed here: it always comes from"
                       " spec.database.secretKeyRef.",
        "maxItems": 32,
        "items": _obj(
            "An environment variable, as in a Pod's container spec.",
            {
                "name": _s("The variable's name.", minLength=1, maxLength=128,
                           pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"),
                "value": _s("A literal value (empty: the empty string).", maxLength=4096),
                "valueFrom": _value_from(),
            },
            required=["name"],
            **{"x-kubernetes-validations": [{
                "rule": "!(has(self.value) && self.value != '' && has(self.valueFrom))",
                "message": "an environment variable has a value or a valueFrom, not both",
            }]},
        ),
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
        "x-kubernetes-validations": [{
            "rule": "self.all(e, e.name != 'DATABASE_URL')",
            "message": "DATABASE_URL comes from spec.database.secretKeyRef, never from spec.env",
        }],
    }


def spec_schema() -> Schema:
    spec = defaults.SPEC
    stale_default = defaults.TASK_PARAMS["process"]["recoverStaleAfter"]
    return _obj(
        "The desired maintenance task and its schedule.",
        {
            "task": _s(
                "Which maintenance task to run: recover (fail conversations stuck in processing),"
                " decay (hourly score decay), or process (run idle conversations through the"
                " pipeline). The retired names detect-stuck and recover-stuck are accepted only to"
                " be answered with Ready=False, reason TaskGone.",
                enum=list(TASK_ENUM), maxLength=32),
            "schedule": _s("When to run, in cron format (five fields, or @hourly, @daily, ...).",
                           minLength=1, maxLength=128),
            "timeZone": _s(
                "The IANA time zone the schedule is read in. Explicit and UTC by default, so that"
                " the schedule never depends on the controller manager's local time.",
                default=spec["timeZone"], minLength=1, maxLength=64),
            "suspend": _b("Stop starting new runs; runs in progress finish.",
                          default=spec["suspend"]),
            "concurrencyPolicy": _s(
                "What to do when a run is due while the previous one still runs: Forbid (skip"
                " the new run), Allow, or Replace (stop the old run).",
                enum=["Forbid", "Allow", "Replace"], default=spec["concurrencyPolicy"]),
            "startingDeadlineSeconds": _i(
                "How late a missed run may still start. Unset: the operator uses the schedule's"
                " interval (at least 60s, at most 1h), so downtime yields one catch-up run, never"
                " a storm, and the CronJob never gives up after 100 missed runs.",
                minimum=defaults.MIN_STARTING_DEADLINE, maximum=defaults.MAX_STARTING_DEADLINE),
            "successfulJobsHistoryLimit": _i(
                "How many finished successful Jobs to keep (at least 1, so that an operator that"
                " was down still finds the last run).",
                default=spec["successfulJobsHistoryLimit"], minimum=defaults.MIN_HISTORY_LIMIT,
                maximum=defaults.MAX_HISTORY_LIMIT),
            "failedJobsHistoryLimit": _i(
                "How many finished failed Jobs to keep (their pods hold the failure's details;"
                " at least 1).",
                default=spec["failedJobsHistoryLimit"], minimum=defaults.MIN_HISTORY_LIMIT,
                maximum=defaults.MAX_HISTORY_LIMIT),
            "activeDeadlineSeconds": _i(
                "How long one run may take before Kubernetes stops it (DeadlineExceeded). Unset:"
                " just below the schedule's shortest real interval, so that with Forbid a slow run"
                " never blocks the next slot; for process also below process.recoverStaleAfter.",
                minimum=1, maximum=defaults.MAX_ACTIVE_DEADLINE),
            "backoffLimit": _i(
                "How many times a failed run's pod is retried within the same run. The next"
                " scheduled run is the natural retry, so the default is 0. A pod whose"
                " container could not be started, or that was disrupted (evicted, preempted,"
                " its node drained), is replaced without using this.",
                default=spec["backoffLimit"], minimum=0, maximum=defaults.MAX_BACKOFF_LIMIT),
            "ttlSecondsAfterFinished": _i(
                "Delete finished Jobs this many seconds after they finish (unset: the history"
                f" limits decide). At least {defaults.MIN_TTL_SECONDS}, so that the operator"
                " sees every finished run even across a restart.",
                minimum=defaults.MIN_TTL_SECONDS, maximum=defaults.MAX_TTL_SECONDS),
            "image": _s("The jobs image (default: the operator's --job-image).",
                        minLength=1, maxLength=512),
            "imagePullPolicy": _s("When to pull the jobs image.",
                                  enum=["Always", "IfNotPresent", "Never"]),
            "logLevel": _s("The jobs' log level.",
                           enum=["DEBUG", "INFO", "WARNING", "ERROR"], default=spec["logLevel"]),
            "resources": _obj(
                "CPU and memory of the job container (default: the operator's --job-requests"
                " and --job-limits).",
                {"requests": _quantities("Minimum resources, as in a Pod."),
                 "limits": _quantities("Maximum resources, as in a Pod.")},
            ),
            "database": _obj(
                "Where the database URL comes from: a key of a Secret in the CronTask's"
                " namespace, injected as DATABASE_URL. Never an inline password.",
                {"secretKeyRef": _obj(
                    "The Secret key holding a libpq URL postgresql://user:pass@host:port/db.",
                    {"name": _s("The Secret's name.", minLength=1, maxLength=253),
                     "key": _s("The key within the Secret.", default=defaults.DATABASE_KEY,
                               minLength=1, maxLength=253)},
                    required=["name"],
                )},
                required=["secretKeyRef"],
            ),
            "env": _env_spec(),
            "recover": _recover_spec(),
            "decay": _decay_spec(),
            "process": _process_spec(),
        },
        required=["task", "schedule", "database"],
        **{"x-kubernetes-validations": [
            *({"rule": f"!has(self.{t}) || self.task == '{t}'",
               "message": f"spec.{t} is only valid with task: {t}"}
              for t in ("recover", "decay", "process")),
            {
                "rule": "self.task != 'process' || !has(self.activeDeadlineSeconds) ||"
                        " self.activeDeadlineSeconds <"
                        " duration(has(self.process) && has(self.process.recoverStaleAfter)"
                        f" ? self.process.recoverStaleAfter : '{stale_default}')"
                        ".getSeconds()",
                "message": "a process run's activeDeadlineSeconds must be shorter than"
                           f" process.recoverStaleAfter (default {stale_default}), or recover"
                           " would fail conversations still being processed",
            },
        ]},
    )


def _text(description: str, limit: int = MAX_MESSAGE_CHARS) -> Schema:
    return _s(description, maxLength=limit)


def _count(description: str) -> Schema:
    return _i(description, minimum=0)


def _counts() -> Schema:
    return {"type": "object", "description": "Task-specific tallies of the run.",
            "maxProperties": 64,
            "additionalProperties": {"type": "integer", "minimum": 0}}


def _run_common() -> dict[str, Schema]:
    return {
        "jobName": _text("The Job that ran.", 253),
        "outcome": _s("Succeeded, Skipped or Failed.", enum=list(OUTCOMES)),
        "reason": _text("Why the run was skipped or failed (recent_execution, already_running,"
                        " OOMKilled, DeadlineExceeded, InvalidReport, ...).", 256),
        "startTime": _time("When the run started."),
        "completionTime": _time("When the run finished."),
        "stageErrorCount": _count("Pipeline stage errors in the run, all stages together."),
    }


def status_schema() -> Schema:
    last_run = _obj(
        "The most recent finished run, as reported by its pod.",
        {
            **_run_common(),
            "message": _text("A human-readable error of a failed run."),
            "executionId": _text("The run's row in job_executions (the full record).", 256),
            "counts": _counts(),
            "stageErrors": {
                "type": "object",
                "description": "Errors per pipeline stage: how many, and the last message.",
                "maxProperties": 64,
                "additionalProperties": _obj("The errors of one stage.", {
                    "count": _count("How many conversations failed in this stage."),
                    "lastMessage": _text("The last error message of this stage."),
                }),
            },
            "stageTimings": {
                "type": "object",
                "description": "Time spent per pipeline stage.",
                "maxProperties": 64,
                "additionalProperties": _obj("The timings of one stage.", {
                    "count": _count("How many times the stage ran."),
                    "totalMs": {"type": "number", "description": "Total milliseconds.",
                                "minimum": 0},
                    "maxMs": {"type": "number", "description": "Longest single run.",
                              "minimum": 0},
                }),
            },
            "truncated": _b("The pod's report was shortened to fit the 4 KiB termination"
                            " message; the database holds the full record."),
        },
    )
    condition = _obj(
        "A condition of the CronTask (Ready: the CronJob is in sync; Healthy: the last run"
        " succeeded without stage errors).",
        {
            "type": _s("The condition's type.", maxLength=316),
            "status": _s("True, False or Unknown.", enum=["True", "False", "Unknown"]),
            "reason": _s("A one-word CamelCase reason.", maxLength=1024),
            "message": _s("A human-readable explanation.", maxLength=32768),
            "lastTransitionTime": _time("When status last changed."),
            "observedGeneration": _i("The spec generation the condition was computed from.",
                                     minimum=0),
        },
        required=["type", "status", "lastTransitionTime", "reason", "message"],
    )
    return _obj(
        "What the operator observed: the CronJob's sync state and the runs' outcomes. Written"
        " only by the operator.",
        {
            "observedGeneration": _i("The spec generation the status reflects.", minimum=0),
            "cronJobName": _text("The CronJob that runs this task.", 253),
            "conditions": {
                "type": "array",
                "description": "Ready and Healthy, keyed by type.",
                "maxItems": 8,
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "lastScheduleTime": _time("When a run was last scheduled."),
            "lastSuccessfulTime": _time("When a run last succeeded (or was skipped)."),
            "lastFailureTime": _time("When a run last failed."),
            "nextScheduleTime": _time("When the next run is due (unset while suspended)."),
            "succeededRuns": _count("Runs that completed, since the CronTask was created."),
            "skippedRuns": _count("Runs that were skipped (recent_execution, already_running)."),
            "failedRuns": _count("Runs that failed, since the CronTask was created."),
            "missedRuns": _count(
                "Runs the CronJob started whose Job was gone before the operator saw it finish"
                " (the operator was down longer than the Job was kept): a lower bound, and"
                " their outcomes are not in the counters above."),
            "countedJobs": {
                "type": "array",
                "description": "UIDs of finished Jobs already counted above that still exist:"
                               " bookkeeping so that a Job the history limits keep is never"
                               " counted twice, across restarts.",
                "maxItems": defaults.MAX_COUNTED_JOBS,
                "items": _s("A Job's UID.", maxLength=64),
            },
            "lastRun": last_run,
            "recentRuns": {
                "type": "array",
                "description": f"The last {defaults.MAX_RECENT_RUNS} runs, newest first.",
                "maxItems": defaults.MAX_RECENT_RUNS,
                "items": _obj("A finished run.", _run_common()),
            },
        },
    )


def printer_columns() -> list[Schema]:
    ready = '.status.conditions[?(@.type=="Ready")].status'
    return [
        {"name": "Task", "type": "string", "jsonPath": ".spec.task"},
        {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
        {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
        {"name": "Ready", "type": "string", "jsonPath": ready},
        {"name": "Last Outcome", "type": "string", "jsonPath": ".status.lastRun.outcome"},
        {"name": "Stage Errors", "type": "integer",
         "jsonPath": ".status.lastRun.stageErrorCount"},
        {"name": "Last Run", "type": "date", "jsonPath": ".status.lastRun.completionTime"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def openapi_schema() -> Schema:
    """The version's openAPIV3Schema: also what the unit tests validate examples against."""
    return {
        "type": "object",
        "description": "A CronTask runs one crontask maintenance task on a schedule, as a CronJob"
                       " owned by the CronTask, and reports each run's outcome in its status.",
        "properties": {
            "apiVersion": _s("The versioned schema of this object."),
            "kind": _s("The REST resource this object represents."),
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        "required": ["spec"],
        "x-kubernetes-validations": [{
            "rule": f"self.metadata.name.size() <= {names.MAX_NAME_LENGTH}",
            "message": f"a CronTask name is at most {names.MAX_NAME_LENGTH} characters: its"
                       " CronJob has the same name and the CronJob controller appends 11",
        }],
    }


def crd() -> Schema:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": names.CRD_NAME,
            "labels": {"app.kubernetes.io/name": "crontask",
                       "app.kubernetes.io/part-of": "crontask"},
        },
        "spec": {
            "group": names.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": names.KIND,
                "listKind": f"{names.KIND}List",
                "plural": names.PLURAL,
                "singular": names.SINGULAR,
                "shortNames": list(names.SHORT_NAMES),
                "categories": list(names.CATEGORIES),
            },
            "versions": [{
                "name": names.VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": printer_columns(),
                "schema": {"openAPIV3Schema": openapi_schema()},
            }],
        },
    }


HEADER: Final = (
    "# Generated by `python -m crontask_operator.crd`; do not edit by hand.\n"
    "# tests/unit/test_operator_crd.py fails when this file and the generator differ.\n"
)


def render() -> str:
    import yaml  # only for writing the file: the operator itself never needs YAML

    return HEADER + str(yaml.safe_dump(crd(), sort_keys=False, width=100))


if __name__ == "__main__":
    sys.stdout.write(render())
