"""`crontask-job [global options] TASK [task options]`: parse, run one task, report, exit.

Exit codes: 0 completed or skipped; 1 the run failed (its report's `reason` says how: see
`faults`); 2 usage or configuration error (a bad flag, variable or DATABASE_URL, an unknown
pipeline, a retired task name); 3 the database could not be reached or refused the connection.
Global options may come before or after the task. Whatever goes wrong, the run's report is the
last line of stdout and the content of the report file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn, TypeVar

from crontask_contract.report import GONE_TASKS, TASKS, RunReport, RunStatus, gone_message
from crontask_jobs import config, masking
from crontask_jobs.dburl import DatabaseTarget, DatabaseUrlError, parse_database_url
from crontask_jobs.faults import DATABASE_UNAVAILABLE, EXIT_DATABASE, EXIT_FAILED, classify
from crontask_jobs.logs import configure
from crontask_jobs.messages import safe_text
from crontask_jobs.reporting import default_report_file, emit
from crontask_jobs.schema_revision import SchemaBehind
from crontask_jobs.tasks.common import TERMINATED, utc_now

log = logging.getLogger("crontask_jobs")
T = TypeVar("T")

EXIT_OK: Final = 0
EXIT_USAGE: Final = 2
USAGE: Final = "usage"
SCHEMA_BEHIND: Final = "schema_behind"
"""The database was never migrated, or is behind this release: exit 2, as a retry is no cure."""


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


@dataclass(frozen=True)
class Opt:
    flag: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    repeatable: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


GLOBAL_OPTS: Final = (
    Opt("--report-file", str, None, "termination-message file "
        "(default: /dev/termination-log when writable)"),
    Opt("--log-format", config.log_format, "json", "json or text (default json)"),
    Opt("--log-level", config.log_level, logging.INFO, "DEBUG, INFO, WARNING, ERROR"),
)
TASK_OPTS: Final[dict[str, tuple[Opt, ...]]] = {
    "recover": (
        Opt("--stale-after", config.duration, "30m",
            "conversations processing and not updated for this long become failed (30m)"),
        Opt("--abandoned-after", config.duration, "2h",
            "job executions running for this long become failed as abandoned (2h)"),
    ),
    "decay": (
        Opt("--window", config.duration, "50m",
            "skip when a decay completed within this window (50m)"),
        Opt("--max-decay-per-run", config.points, "10",
            "the most points one run takes from a user, at least 0.01 (10)"),
        Opt("--workers", config.decay_workers, "2",
            "connections that decay users at once, 1 to 16; one below 50,000 users (2)"),
    ),
    "process": (
        Opt("--idle-after", config.duration, "15m",
            "conversations active and idle this long are eligible (15m)"),
        Opt("--batch-size", config.batch_size, "10",
            "claim at most this many per run; the rest are deferred (10)"),
        Opt("--max-concurrent-pipelines", config.pipelines, "10",
            "pipelines running at once in this run, one connection each (10)"),
        Opt("--max-in-flight", config.in_flight, None,
            "cap on conversations processing across all runs (unset: no cap)"),
        Opt("--stage-timeout", str, [], "[STAGE=]DUR, repeatable; a bare DUR is the "
            "default for every stage (60s unless the stage sets its own)", repeatable=True),
        Opt("--pipeline", str, "default",
            "entry point name in group crontask.pipeline, or module:callable (default)"),
    ),
    "migrate": (),
}
TASK_HELP: Final = {
    "recover": "fail conversations stuck in processing; close abandoned executions (FR-001)",
    "decay": "hourly score decay, at most once per window (FR-002)",
    "process": "run idle conversations through the pipeline, a batch at a time (FR-003/4)",
    "migrate": "alembic upgrade head (idempotent, serialised by an advisory lock)",
}
_VALUE_FLAGS: Final = frozenset(o.flag for opts in (GLOBAL_OPTS, *TASK_OPTS.values())
                                for o in opts)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="crontask-job", allow_abbrev=False,
                     description="crontask maintenance jobs. Every flag can also be set as "
                     "CRONTASK_<FLAG_UPPER_SNAKE>; DATABASE_URL is required.")
    for opt in GLOBAL_OPTS:
        parser.add_argument(opt.flag, dest=opt.dest, default=None, help=opt.help)
    sub = parser.add_subparsers(dest="task", metavar="TASK", parser_class=_Parser)
    sub.required = True
    for task, opts in TASK_OPTS.items():
        p = sub.add_parser(task, help=TASK_HELP[task], description=TASK_HELP[task],
                           allow_abbrev=False)
        for opt in opts:
            p.add_argument(opt.flag, dest=opt.dest, default=None, help=opt.help,
                           action="append" if opt.repeatable else "store")
        for opt in GLOBAL_OPTS:  # also after the task; given twice, the later one wins
            p.add_argument(opt.flag, dest=opt.dest, default=argparse.SUPPRESS, help=opt.help)
    for gone in GONE_TASKS:
        sub.add_parser(gone, help=f"gone: use {GONE_TASKS[gone]}", add_help=False)
    return parser


def _value(opt: Opt, given: Any, env: dict[str, str]) -> Any:
    """Flag, else environment, else default; parsed and validated either way."""
    source, raw = opt.flag, given
    if raw is None:
        name = config.env_name(opt.flag)
        if name in env and env[name].strip():
            source, raw = name, ([env[name]] if opt.repeatable else env[name])
        else:
            source, raw = "default", opt.default
    if raw is None:
        return None
    try:
        if opt.repeatable:
            return config.stage_timeouts(list(raw))
        return opt.parse(raw) if isinstance(raw, str) else raw
    except config.ConfigError as exc:
        raise UsageError(f"{source}: {exc}") from exc


@dataclass(frozen=True)
class Invocation:
    task: str
    options: dict[str, Any]
    report_file: str | None
    log_format: str
    log_level: int


def parse(argv: Sequence[str], env: dict[str, str]) -> Invocation:
    ns, extra = build_parser().parse_known_args(list(argv))
    if ns.task in GONE_TASKS:  # answered whatever options follow the retired name
        raise UsageError(gone_message(ns.task))
    if extra:
        raise UsageError(f"unrecognized arguments: {' '.join(extra)}")
    values = {opt.dest: _value(opt, getattr(ns, opt.dest), env) for opt in GLOBAL_OPTS}
    options = {opt.dest: _value(opt, getattr(ns, opt.dest), env) for opt in TASK_OPTS[ns.task]}
    report_file = values["report_file"] if values["report_file"] else default_report_file()
    return Invocation(ns.task, options, report_file, values["log_format"], values["log_level"])


def scan(argv: Sequence[str], env: dict[str, str]) -> tuple[str, str | None]:
    """(task, report file) from arguments that may not parse (pure, never raises).

    The task is the first argument that is neither an option nor an option's value, if it
    names a task; the report file is `--report-file PATH` or `--report-file=PATH` wherever it
    stands (the last one wins), else CRONTASK_REPORT_FILE.
    """
    task, report_file = "unknown", None
    seen_positional = False
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg.partition("=")
            if name in _VALUE_FLAGS and not eq:
                value = args[i + 1] if i + 1 < len(args) else ""
                i += 1
            if name == "--report-file" and value:
                report_file = value
        elif not arg.startswith("-") and not seen_positional:
            seen_positional = True
            if arg in (*TASKS, "migrate", *GONE_TASKS):
                task = arg
        i += 1
    if report_file is None:
        report_file = env.get(config.env_name("--report-file"), "").strip() or None
    return task, report_file


def database_target(env: dict[str, str]) -> DatabaseTarget:
    raw = env.get("DATABASE_URL", "")
    if not raw.strip():
        raise UsageError("DATABASE_URL is not set (postgresql://user:password@host:port/db)")
    try:
        return parse_database_url(raw)
    except DatabaseUrlError as exc:
        raise UsageError(str(exc)) from exc


def _install_masker(env: dict[str, str]) -> None:
    raw = env.get("DATABASE_URL")
    try:
        target = parse_database_url(raw) if raw and raw.strip() else None
    except DatabaseUrlError:
        target = None
    masking.install(masking.masker_for(target, raw, env))


def _run_until_signalled(work: Callable[[], Awaitable[T]]) -> T:
    """Run `work` in an event loop whose task SIGTERM (or SIGINT) cancels, so a run stopped by
    Kubernetes still settles its claims and closes its execution row."""
    async def main() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        try:
            return await work()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    return asyncio.run(main())


async def _run_task(inv: Invocation, target: DatabaseTarget) -> RunReport:
    # Imported here so `--help` and usage errors stay fast.
    from crontask_jobs.db import open_engine
    from crontask_jobs.schema_revision import ensure_schema
    from crontask_jobs.session import SessionLimits, limits_for_process
    from crontask_jobs.tasks.decay import DecayOptions, run_decay
    from crontask_jobs.tasks.process import ProcessOptions, run_process
    from crontask_jobs.tasks.recover import RecoverOptions, run_recover

    o = inv.options
    if inv.task == "process":
        from crontask_jobs.pipeline.engine import resolve_timeouts
        from crontask_jobs.pipeline.loader import PipelineError, load_pipeline
        try:
            stages = load_pipeline(o["pipeline"])
        except PipelineError as exc:
            raise UsageError(str(exc)) from exc
        overrides, default = o["stage_timeout"]
        unknown = sorted(set(overrides) - {s.name for s in stages})
        if unknown:
            raise UsageError(f"--stage-timeout names unknown stage(s) {', '.join(unknown)}; "
                             f"stages: {', '.join(s.name for s in stages)}")
        options = ProcessOptions(o["idle_after"], o["batch_size"], o["max_concurrent_pipelines"],
                                 o["max_in_flight"], overrides, default)
        limits = limits_for_process(resolve_timeouts(stages, overrides, default).values())
        async with open_engine(target, task="process", limits=limits,
                               pool_size=min(options.max_concurrent_pipelines,
                                             options.batch_size) + 1) as engine:
            await ensure_schema(engine)
            return await run_process(engine, options, stages)
    if inv.task == "decay":
        decay = DecayOptions(o["window"], o["max_decay_per_run"], workers=o["workers"])
        async with open_engine(target, task="decay", pool_size=decay.pool_size,
                               limits=SessionLimits()) as engine:
            await ensure_schema(engine)
            return await run_decay(engine, decay)
    async with open_engine(target, task=inv.task, pool_size=2,
                           limits=SessionLimits()) as engine:
        await ensure_schema(engine)
        return await run_recover(engine, RecoverOptions(o["stale_after"], o["abandoned_after"]))


def _migrate(target: DatabaseTarget) -> RunReport:
    from crontask_jobs.migrate import upgrade

    started = utc_now()
    before, after = upgrade(target)
    log.info("migrate: schema at %s (was %s)", after, before or "empty")
    return RunReport(task="migrate", status=RunStatus.COMPLETED, started_at=started,
                     finished_at=utc_now(), reason=None if before != after else "up_to_date")


def _failed(task: str, reason: str, error: str, execution_id: str | None = None) -> RunReport:
    return RunReport(task=task, status=RunStatus.FAILED, reason=reason, error=safe_text(error),
                     execution_id=execution_id, finished_at=utc_now())


def exit_code(report: RunReport) -> int:
    if report.status is not RunStatus.FAILED:
        return EXIT_OK
    if report.reason in (USAGE, SCHEMA_BEHIND):
        return EXIT_USAGE
    return EXIT_DATABASE if report.reason == DATABASE_UNAVAILABLE else EXIT_FAILED


def run(argv: Sequence[str], env: dict[str, str]) -> int:
    _install_masker(env)
    try:
        inv = parse(argv, env)
        target = database_target(env)
    except UsageError as exc:
        message = safe_text(exc)
        configure(logging.INFO, "text")
        print(f"crontask-job: error: {message}", file=sys.stderr)
        task, report_file = scan(argv, env)
        emit(_failed(task, USAGE, message), report_file or default_report_file())
        return EXIT_USAGE

    configure(inv.log_level, inv.log_format)
    log.info("crontask-job %s against %s", inv.task, target.render())
    try:
        if inv.task == "migrate":
            report = _migrate(target)
        else:
            report = _run_until_signalled(lambda: _run_task(inv, target))
    except UsageError as exc:
        log.error("%s", exc)
        report = _failed(inv.task, USAGE, str(exc))
    except SchemaBehind as exc:
        log.error("%s: %s", inv.task, exc)
        report = _failed(inv.task, SCHEMA_BEHIND, str(exc))
    except (asyncio.CancelledError, KeyboardInterrupt):
        log.error("%s: terminated", inv.task)
        report = _failed(inv.task, TERMINATED, "the run was terminated before it could report")
    except Exception as exc:
        fault = classify(exc)
        if fault.reason == DATABASE_UNAVAILABLE:
            message = f"database unreachable at {target.render()}: {fault.message}"
            log.error("%s", message)
        else:
            message = f"{inv.task} failed: {fault.reason}: {fault.message}"
            log.error("%s", message, exc_info=exc)
        report = _failed(inv.task, fault.reason, message)
    emit(report, inv.report_file)
    return exit_code(report)


def main(argv: Sequence[str] | None = None) -> int:
    return run(sys.argv[1:] if argv is None else argv, dict(os.environ))


if __name__ == "__main__":
    sys.exit(main())
