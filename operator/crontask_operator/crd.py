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

import yaml

from crontask_contract.durations import DURATION_PATTERN
from crontask_operator import names

Schema = dict[str, Any]

TASK_ENUM: Final = ("recover", "decay", "process", "detect-stuck", "recover-stuck")
OUTCOMES: Final = ("Succeeded", "Skipped", "Failed")
DEFAULT_TIME_ZONE: Final = "Etc/UTC"
DEFAULT_RECOVER_STALE_AFTER: Final = "30m"
QUANTITY_PATTERN: Final = (r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
                           r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")


def _s(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, **extra}


def _i(description: str, **extra: Any) -> Schema:
    return {"type": "integer", "description": description, **extra}


def _b(description: str, **extra: Any) -> Schema:
    return {"type": "boolean", "description": description, **extra}


def _obj(description: str, properties: dict[str, Schema], **extra: Any) -> Schema:
    return {"type": "object", "description": description, "properties": properties, **extra}


def _dur(description: str, default: str | None = None) -> Schema:
    out = _s(description + " A duration such as 90s, 30m or 1h30m.",
             pattern=DURATION_PATTERN, minLength=2, maxLength=16)
    if default is not None:
        out["default"] = default
    return out


def _time(description: str) -> Schema:
    return _s(description, format="date-time")


def _quantities(description: str) -> Schema:
    return {
        "type": "object",
        "description": description,
        "maxProperties": 16,
        "additionalProperties": {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        },
    }


def _recover_spec() -> Schema:
    return _obj(
        "Parameters of the recover task (only with task: recover).",
        {
            "staleAfter": _dur(
                "A conversation in 'processing' for longer than this is marked failed. Process"
                " CronTasks must finish well within it (see spec.process.recoverStaleAfter).",
                "30m"),
            "abandonedAfter": _dur(
                "A job execution left 'running' for longer than this is closed as abandoned."
                " Must be longer than staleAfter.", "2h"),
        },
        **{"x-kubernetes-validations": [{
            "rule": "duration(self.abandonedAfter) > duration(self.staleAfter)",
            "message": "recover.abandonedAfter must be longer than recover.staleAfter",
        }]},
    )


def _decay_spec() -> Schema:
    return _obj(
        "Parameters of the decay task (only with task: decay).",
        {
            "window": _dur(
                "A decay run within this window of the previous one is skipped with reason"
                " recent_execution. Keep it below the schedule's interval.", "50m"),
            "maxDecayPerRun": _i(
                "The most points one user can lose in a single run (unset: no cap).",
                minimum=1, maximum=1_000_000),
        },
    )


def _process_spec() -> Schema:
    stage_name = r"^[a-z][a-z0-9_-]{0,62}$"
    return _obj(
        "Parameters of the process task (only with task: process).",
        {
            "idleAfter": _dur("A conversation idle for this long is picked up for processing.",
                              "15m"),
            "batchSize": _i("How many conversations one run claims at most.",
                            default=10, minimum=1, maximum=10_000),
            "maxConcurrentPipelines": _i(
                "How many conversations run through the pipeline at once within a pod.",
                default=10, minimum=1, maximum=1_000),
            "maxInFlight": _i(
                "The most conversations that may be 'processing' at once across all runs"
                " (unset: no global cap).", minimum=1, maximum=1_000_000),
            "parallelism": _i(
                "How many pods of one Job run at once. Runs claim work with FOR UPDATE SKIP"
                " LOCKED, so parallel pods never take the same conversation.",
                default=1, minimum=1, maximum=10),
            "stageTimeout": _dur("The default timeout of every pipeline stage.", "60s"),
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
                " namespace.", DEFAULT_RECOVER_STALE_AFTER),
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
                "value": _s("A literal value.", maxLength=4096),
                "valueFrom": {
                    "type": "object",
                    "description": "A source for the value (secretKeyRef, configMapKeyRef,"
                                   " fieldRef, resourceFieldRef), as in a Pod.",
                    "x-kubernetes-preserve-unknown-fields": True,
                },
            },
            required=["name"],
        ),
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
        "x-kubernetes-validations": [{
            "rule": "self.all(e, e.name != 'DATABASE_URL')",
            "message": "DATABASE_URL comes from spec.database.secretKeyRef, never from spec.env",
        }],
    }


def spec_schema() -> Schema:
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
                default=DEFAULT_TIME_ZONE, minLength=1, maxLength=64),
            "suspend": _b("Stop starting new runs; runs in progress finish.", default=False),
            "concurrencyPolicy": _s(
                "What to do when a run is due while the previous one still runs: Forbid (skip"
                " the new run), Allow, or Replace (stop the old run).",
                enum=["Forbid", "Allow", "Replace"], default="Forbid"),
            "startingDeadlineSeconds": _i(
                "How late a missed run may still start. Unset: the operator uses the schedule's"
                " interval (at least 60s, at most 1h), so downtime yields one catch-up run, never"
                " a storm, and the CronJob never gives up after 100 missed runs.",
                minimum=10, maximum=86_400),
            "successfulJobsHistoryLimit": _i(
                "How many finished successful Jobs to keep.",
                default=3, minimum=0, maximum=names.MAX_HISTORY_LIMIT),
            "failedJobsHistoryLimit": _i(
                "How many finished failed Jobs to keep (their pods hold the failure's details).",
                default=3, minimum=0, maximum=names.MAX_HISTORY_LIMIT),
            "activeDeadlineSeconds": _i(
                "How long one run may take before Kubernetes stops it (DeadlineExceeded). Unset:"
                " just below the schedule's shortest interval, so that with Forbid a slow run"
                " never blocks the next slot; for process also below process.recoverStaleAfter.",
                minimum=1, maximum=604_800),
            "backoffLimit": _i(
                "How many times a failed run's pod is retried within the same run. The next"
                " scheduled run is the natural retry, so the default is 0.",
                default=0, minimum=0, maximum=10),
            "ttlSecondsAfterFinished": _i(
                "Delete finished Jobs after this many seconds (unset: the history limits decide).",
                minimum=0, maximum=2_592_000),
            "image": _s("The jobs image (default: the operator's --job-image).",
                        minLength=1, maxLength=512),
            "imagePullPolicy": _s("When to pull the jobs image.",
                                  enum=["Always", "IfNotPresent", "Never"]),
            "logLevel": _s("The jobs' log level.",
                           enum=["DEBUG", "INFO", "WARNING", "ERROR"], default="INFO"),
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
                     "key": _s("The key within the Secret.", default="url", minLength=1,
                               maxLength=253)},
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
                        f" ? self.process.recoverStaleAfter : '{DEFAULT_RECOVER_STALE_AFTER}')"
                        ".getSeconds()",
                "message": "a process run's activeDeadlineSeconds must be shorter than"
                           " process.recoverStaleAfter (default 30m), or recover would fail"
                           " conversations still being processed",
            },
        ]},
    )


def _counts() -> Schema:
    return {"type": "object", "description": "Task-specific tallies of the run.",
            "additionalProperties": {"type": "integer"}}


def _run_common() -> dict[str, Schema]:
    return {
        "jobName": _s("The Job that ran."),
        "outcome": _s("Succeeded, Skipped or Failed.", enum=list(OUTCOMES)),
        "reason": _s("Why the run was skipped or failed (recent_execution, already_running,"
                     " OOMKilled, DeadlineExceeded, BackoffLimitExceeded, ...)."),
        "startTime": _time("When the run started."),
        "completionTime": _time("When the run finished."),
        "stageErrorCount": _i("Pipeline stage errors in the run, all stages together."),
    }


def status_schema() -> Schema:
    last_run = _obj(
        "The most recent finished run, as reported by its pod.",
        {
            **_run_common(),
            "message": _s("A human-readable error of a failed run."),
            "executionId": _s("The run's row in job_executions (the full record)."),
            "counts": _counts(),
            "stageErrors": {
                "type": "object",
                "description": "Errors per pipeline stage: how many, and the last message.",
                "additionalProperties": _obj("The errors of one stage.", {
                    "count": _i("How many conversations failed in this stage."),
                    "lastMessage": _s("The last error message of this stage."),
                }),
            },
            "stageTimings": {
                "type": "object",
                "description": "Time spent per pipeline stage.",
                "additionalProperties": _obj("The timings of one stage.", {
                    "count": _i("How many times the stage ran."),
                    "totalMs": {"type": "number", "description": "Total milliseconds."},
                    "maxMs": {"type": "number", "description": "Longest single run."},
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
            "cronJobName": _s("The CronJob that runs this task."),
            "conditions": {
                "type": "array",
                "description": "Ready and Healthy, keyed by type.",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "lastScheduleTime": _time("When a run was last scheduled."),
            "lastSuccessfulTime": _time("When a run last succeeded (or was skipped)."),
            "lastFailureTime": _time("When a run last failed."),
            "nextScheduleTime": _time("When the next run is due (unset while suspended)."),
            "succeededRuns": _i("Runs that completed, since the CronTask was created.",
                                minimum=0),
            "skippedRuns": _i("Runs that were skipped (recent_execution, already_running).",
                              minimum=0),
            "failedRuns": _i("Runs that failed, since the CronTask was created.", minimum=0),
            "lastRun": last_run,
            "recentRuns": {
                "type": "array",
                "description": f"The last {names.MAX_RECENT_RUNS} runs, newest first.",
                "maxItems": names.MAX_RECENT_RUNS,
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
    return HEADER + str(yaml.safe_dump(crd(), sort_keys=False, width=100))


if __name__ == "__main__":
    sys.stdout.write(render())
