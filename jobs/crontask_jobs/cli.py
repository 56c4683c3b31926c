"""`crontask-job [global options] TASK [task options]`: parse, run one task, report, exit.

Exit codes: 0 completed or skipped; 1 the run failed; 2 usage or configuration error
(including the retired task names); 3 database unreachable or authentication failed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from sqlalchemy.engine import URL

from crontask_contract.report import GONE_TASKS, RunReport, RunStatus, gone_message
from crontask_jobs import config
from crontask_jobs.db import (
    DatabaseUrlError,
    describe_connection_failure,
    is_connection_failure,
    mask_url,
    open_engine,
    scrub,
    to_sqlalchemy_url,
)
from crontask_jobs.logs import configure
from crontask_jobs.reporting import default_report_file, emit
from crontask_jobs.tasks.common import TaskFailed, utc_now

log = logging.getLogger("crontask_jobs")

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_DATABASE: Final = 3


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
            "the most points one run takes from a user (10)"),
    ),
    "process": (
        Opt("--idle-after", config.duration, "15m",
            "conversations active and idle this long are eligible (15m)"),
        Opt("--batch-size", config.positive_int, "10",
            "claim at most this many per run; the rest are deferred (10)"),
        Opt("--max-concurrent-pipelines", config.positive_int, "10",
            "pipelines running at once in this run (10)"),
        Opt("--max-in-flight", config.positive_int, None,
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="crontask-job", description="crontask maintenance jobs. Every flag "
                     "can also be set as CRONTASK_<FLAG_UPPER_SNAKE>; DATABASE_URL is required.")
    for opt in GLOBAL_OPTS:
        parser.add_argument(opt.flag, dest=opt.dest, default=None, help=opt.help)
    sub = parser.add_subparsers(dest="task", metavar="TASK", parser_class=_Parser)
    sub.required = True
    for task, opts in TASK_OPTS.items():
        p = sub.add_parser(task, help=TASK_HELP[task], description=TASK_HELP[task])
        for opt in opts:
            p.add_argument(opt.flag, dest=opt.dest, default=None, help=opt.help,
                           action="append" if opt.repeatable else "store")
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


def database_url(env: dict[str, str]) -> URL:
    raw = env.get("DATABASE_URL", "")
    if not raw.strip():
        raise UsageError("DATABASE_URL is not set (postgresql://user:password@host:port/db)")
    try:
        return to_sqlalchemy_url(raw)
    except DatabaseUrlError as exc:
        raise UsageError(str(exc)) from exc


async def _run_task(inv: Invocation, url: URL) -> RunReport:
    # Imported here so `--help` and usage errors stay fast.
    from crontask_jobs.tasks.decay import DecayOptions, run_decay
    from crontask_jobs.tasks.process import ProcessOptions, run_process
    from crontask_jobs.tasks.recover import RecoverOptions, run_recover

    o = inv.options
    if inv.task == "process":
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
        async with open_engine(url, pool_size=options.max_concurrent_pipelines + 2) as engine:
            return await run_process(engine, options, stages)
    async with open_engine(url) as engine:
        if inv.task == "recover":
            return await run_recover(engine, RecoverOptions(o["stale_after"],
                                                            o["abandoned_after"]))
        return await run_decay(engine, DecayOptions(o["window"], o["max_decay_per_run"]))


def _migrate(url: URL) -> RunReport:
    from crontask_jobs.migrate import upgrade

    started = utc_now()
    before, after = upgrade(url)
    log.info("migrate: schema at %s (was %s)", after, before or "empty")
    return RunReport(task="migrate", status=RunStatus.COMPLETED, started_at=started,
                     finished_at=utc_now(), reason=None if before != after else "up_to_date")


def _failed(task: str, reason: str, error: str, execution_id: str | None = None) -> RunReport:
    return RunReport(task=task, status=RunStatus.FAILED, reason=reason, error=error,
                     execution_id=execution_id, finished_at=utc_now())


def run(argv: Sequence[str], env: dict[str, str]) -> int:
    task_guess = next((a for a in argv if not a.startswith("-")), "unknown")
    try:
        inv = parse(argv, env)
        url = database_url(env)
    except UsageError as exc:
        message = str(exc)
        configure(logging.INFO, "text", None)
        print(f"crontask-job: error: {message}", file=sys.stderr)
        explicit = env.get(config.env_name("--report-file"))
        if "--report-file" in argv:
            explicit = argv[argv.index("--report-file") + 1 : argv.index("--report-file") + 2][0] \
                if argv.index("--report-file") + 1 < len(argv) else None
        emit(_failed(task_guess, "usage", message), explicit or default_report_file())
        return EXIT_USAGE

    configure(inv.log_level, inv.log_format, url.password)
    log.info("crontask-job %s against %s", inv.task, mask_url(url))
    try:
        report = _migrate(url) if inv.task == "migrate" else asyncio.run(_run_task(inv, url))
    except UsageError as exc:
        log.error("%s", exc)
        emit(_failed(inv.task, "usage", str(exc)), inv.report_file)
        return EXIT_USAGE
    except TaskFailed as exc:
        cause = exc.cause or exc
        exec_id = str(exc.execution_id) if exc.execution_id else None
        if is_connection_failure(cause):
            message = describe_connection_failure(cause, url)
            log.error("%s", message)
            emit(_failed(inv.task, "database_unavailable", message, exec_id), inv.report_file)
            return EXIT_DATABASE
        message = scrub(f"{exc}: {cause}", url)
        log.error("%s", message, exc_info=cause)
        emit(_failed(inv.task, "error", message, exec_id), inv.report_file)
        return EXIT_FAILED
    except Exception as exc:
        if is_connection_failure(exc):
            message = describe_connection_failure(exc, url)
            log.error("%s", message)
            emit(_failed(inv.task, "database_unavailable", message), inv.report_file)
            return EXIT_DATABASE
        message = scrub(f"{type(exc).__name__}: {exc}", url)
        log.error("%s failed: %s", inv.task, message, exc_info=exc)
        emit(_failed(inv.task, "error", message), inv.report_file)
        return EXIT_FAILED
    emit(report, inv.report_file)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    return run(sys.argv[1:] if argv is None else argv, dict(os.environ))


if __name__ == "__main__":
    sys.exit(main())
