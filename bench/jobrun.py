"""One job, run as the CLI runs it, in a process of its own: for bench/run.py only.

    python bench/jobrun.py JOB SPEC_JSON   (DATABASE_URL in the environment)

The job gets the CLI's engine (the same pool size and session limits) and the CLI's logging
(JSON lines to stderr, every line masked), with the pool opened before the clock starts, so the
time printed is the job's own and the start-up (engine, connections) is printed beside it. The
last line of stdout is JSON: seconds, startup_seconds, the report's counts and status, the
execution row's result details, the peak RSS of this process (ru_maxrss) and its RSS once
everything was imported and connected (what the job itself added is the difference), log lines.
With "profile": a cProfile of the job, summarised.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import logging
import os
import pstats
import resource
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from crontask_jobs import masking  # noqa: E402
from crontask_jobs.db import open_engine  # noqa: E402
from crontask_jobs.dburl import parse_database_url  # noqa: E402
from crontask_jobs.logs import configure  # noqa: E402
from crontask_jobs.pipeline.default import default_stages  # noqa: E402
from crontask_jobs.pipeline.engine import resolve_timeouts  # noqa: E402
from crontask_jobs.pipeline.stage import Stage, StageContext  # noqa: E402
from crontask_jobs.session import SessionLimits, limits_for_process  # noqa: E402
from crontask_jobs.tasks.decay import DecayOptions, run_decay  # noqa: E402
from crontask_jobs.tasks.process import ProcessOptions, run_process  # noqa: E402
from crontask_jobs.tasks.recover import RecoverOptions, run_recover  # noqa: E402


def rss_kib() -> int:
    """The current resident set size, KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def sleep_stages(latency_s: float) -> list[Stage]:
    async def io(ctx: StageContext) -> None:
        await asyncio.sleep(latency_s)

    return [Stage("io", io)]


def profile_summary(profile: cProfile.Profile, top: int = 12) -> dict[str, Any]:
    """Where the job's Python time went: by package, and the costliest functions (own time)."""
    stats = pstats.Stats(profile)
    by_area: dict[str, float] = {}
    rows = []
    for (path, line, func), (_cc, calls, own, cumulative, _callers) in (
            stats.stats.items()):
        area = ("sqlalchemy" if "sqlalchemy" in path else "psycopg" if "psycopg" in path
                else "asyncio" if "asyncio" in path else "crontask" if "crontask" in path
                else "builtins" if path == "~" else "other")
        by_area[area] = by_area.get(area, 0.0) + own
        rows.append((own, calls, cumulative, f"{Path(path).name}:{line}({func})"))
    rows.sort(reverse=True)
    return {"by_area_s": {k: round(v, 3) for k, v in sorted(by_area.items(),
                                                           key=lambda kv: -kv[1])},
            "top": [{"own_s": round(o, 3), "calls": c, "cum_s": round(cu, 3), "function": f}
                    for o, c, cu, f in rows[:top]]}


async def run(job: str, spec: dict[str, Any]) -> dict[str, Any]:
    target = parse_database_url(os.environ["DATABASE_URL"])
    if job == "process":
        stages = (default_stages() if spec.get("pipeline") == "default"
                  else sleep_stages(spec["latency_s"]))
        options = ProcessOptions(batch_size=spec["batch"],
                                 max_concurrent_pipelines=spec["concurrency"])
        limits = limits_for_process(resolve_timeouts(stages, {}, None).values())
        pool = min(options.max_concurrent_pipelines, options.batch_size) + 1
    elif job == "decay":
        decay = DecayOptions(**spec)
        limits, pool = SessionLimits(), decay.pool_size
    else:
        limits, pool = SessionLimits(), 2
    t0 = time.perf_counter()
    async with open_engine(target, task=job, pool_size=pool, limits=limits) as engine:
        held = [await engine.connect() for _ in range(pool)]  # the pool, opened
        for conn in held:
            await conn.close()
        startup = time.perf_counter() - t0
        rss_ready = rss_kib()
        profile = cProfile.Profile() if spec.get("profile") else None
        cpu0 = time.process_time()
        t1 = time.perf_counter()
        if profile:
            profile.enable()
        if job == "recover":
            report = await run_recover(engine, RecoverOptions())
        elif job == "decay":
            report = await run_decay(engine, decay)
        else:
            report = await run_process(engine, options, stages)
        if profile:
            profile.disable()
        seconds = time.perf_counter() - t1
        cpu = time.process_time() - cpu0
        async with engine.connect() as conn:
            result = (await conn.execute(sa.text(
                "SELECT result FROM job_executions WHERE id = CAST(:id AS uuid)"),
                {"id": report.execution_id})).scalar_one_or_none()
    out = {"seconds": seconds, "startup_seconds": startup, "python_cpu_seconds": cpu,
           "status": str(report.status), "counts": report.counts,
           "details": {k: v for k, v in (result or {}).items()
                       if k in ("chunks", "exact_chunks", "longest_chunk_ms", "workers",
                                    "ranges", "phases_ms")},
           "stage_timings": {k: {"n": t.count, "mean_ms": t.total_ms / max(t.count, 1)}
                             for k, t in report.stage_timings.items()},
           "rss_ready_kib": rss_ready,
           "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    if profile:
        out["profile"] = profile_summary(profile)
    return out


def main() -> None:
    job, spec = sys.argv[1], json.loads(sys.argv[2])
    masking.install(masking.masker_for(parse_database_url(os.environ["DATABASE_URL"]),
                                       os.environ["DATABASE_URL"], dict(os.environ)))
    configure(logging.INFO, "json")
    out = asyncio.run(run(job, spec))
    sys.stderr.flush()
    print(json.dumps(out, default=str), flush=True)


if __name__ == "__main__":
    main()
