"""Benchmark: crontask's jobs against the naive baseline (bench/naive.py), side by side.

    .venv/bin/python bench/run.py              # 1M rows (a few minutes on 2 cores)
    .venv/bin/python bench/run.py --rows 100000  # a quick run

Uses DATABASE_URL (it creates and drops a database `crontask_bench_*` on that server) or
starts a throwaway server with hack/postgres.sh. Results go to stdout; copy them into
BENCHMARKS.md. The naive decay and recover run inside a transaction that is rolled back, so
both sides see the same data; the naive decay is timed on a sample and scaled linearly (it is
a per-row loop, linear by construction), unless --naive-sample >= --rows.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import naive  # noqa: E402

from crontask_jobs.db import open_engine  # noqa: E402
from crontask_jobs.dburl import DatabaseTarget, parse_database_url  # noqa: E402
from crontask_jobs.migrate import upgrade  # noqa: E402
from crontask_jobs.pipeline import Stage, StageContext  # noqa: E402
from crontask_jobs.tasks.decay import DecayOptions, run_decay  # noqa: E402
from crontask_jobs.tasks.process import ProcessOptions, run_process  # noqa: E402
from crontask_jobs.tasks.recover import RecoverOptions, run_recover  # noqa: E402


@contextmanager
def server() -> Iterator[URL]:
    if os.environ.get("DATABASE_URL"):
        yield make_url(os.environ["DATABASE_URL"]).set(drivername="postgresql+psycopg")
        return
    work = tempfile.mkdtemp(prefix="crontask-bench-")
    os.chmod(work, 0o755)
    env = {**os.environ, "CRONTASK_PG_DIR": f"{work}/pg"}
    script = str(HERE.parent / "hack/postgres.sh")
    out = subprocess.run([script, "start"], env=env, check=True, capture_output=True, text=True)
    try:
        yield make_url(out.stdout.split()[-1]).set(drivername="postgresql+psycopg")
    finally:
        subprocess.run([script, "destroy"], env=env, check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def database(url: URL) -> Iterator[URL]:
    name = f"crontask_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        db = url.set(database=name)
        upgrade(target(db))
        yield db
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def target(url: URL) -> DatabaseTarget:
    """The database as the CLI sees it: a parsed libpq URL."""
    return parse_database_url(url.set(drivername="postgresql").render_as_string(
        hide_password=False))


def run_async(url: URL, fn: Callable[[Any], Any], pool: int = 12) -> Any:
    async def main() -> Any:
        async with open_engine(target(url), task="bench", pool_size=pool) as engine:
            return await fn(engine)
    return asyncio.run(main())


def seed(sql: sa.Engine, rows: int) -> None:
    with sql.begin() as c:
        c.execute(sa.text("""
            INSERT INTO users (chapter, relationship_score, last_interaction_at)
            SELECT 1 + i % 5, 20 + (i % 80), now() - make_interval(hours => 80 + i % 50)
              FROM generate_series(1, :n) AS i"""), {"n": rows})
        # 1% stuck in processing, 1% processing but fresh, 98% processed long ago.
        c.execute(sa.text("""
            INSERT INTO conversations (user_id, status, last_message_at, updated_at)
            SELECT id,
                   CASE WHEN rn % 100 IN (0, 1) THEN 'processing' ELSE 'processed' END,
                   now() - interval '3 hours',
                   CASE WHEN rn % 100 = 0 THEN now() - interval '2 hours'
                        ELSE now() - interval '1 minute' END
              FROM (SELECT id, row_number() OVER () AS rn FROM users) AS u"""))
    with sql.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(sa.text("VACUUM ANALYZE"))


def bench_recover(db: URL, sql: sa.Engine) -> dict[str, float]:
    with sql.connect() as c:
        t_naive, n_naive = timed(lambda: naive.recover(c, timedelta(minutes=30)))
        c.rollback()
    t_ours, report = timed(lambda: run_async(db, lambda e: run_recover(e, RecoverOptions())))
    assert report.counts["recovered"] == n_naive, (report.counts, n_naive)
    return {"rows": n_naive, "naive_s": t_naive, "ours_s": t_ours}


def bench_decay(db: URL, sql: sa.Engine, rows: int, sample: int) -> dict[str, float]:
    sample = min(sample, rows)
    with sql.connect() as c:
        t_sample, _n_sample = timed(lambda: naive.decay(c, limit=sample))
        c.rollback()
    t_naive = t_sample * rows / sample
    t_ours, report = timed(lambda: run_async(db, lambda e: run_decay(e, DecayOptions())))
    assert report.counts["users_decayed"] == rows, report.counts
    return {"rows": rows, "naive_s": t_naive, "naive_sample": sample, "naive_sample_s": t_sample,
            "ours_s": t_ours}


def bench_process(db: URL, sql: sa.Engine, batch: int, concurrency: int,
                  latency: float) -> dict[str, float]:
    def add() -> None:
        with sql.begin() as c:
            c.execute(sa.text("""
                INSERT INTO conversations (user_id, status, last_message_at)
                SELECT id, 'active', now() - interval '1 hour' FROM users LIMIT :b"""),
                {"b": batch})

    async def stage(ctx: StageContext) -> None:
        await asyncio.sleep(latency)

    add()
    with sql.connect() as c:
        t_naive, n = timed(lambda: naive.process(c, timedelta(minutes=15), batch,
                                                 naive.sleep_stage(latency)))
    assert n == batch
    add()
    options = ProcessOptions(batch_size=batch, max_concurrent_pipelines=concurrency)
    t_ours, report = timed(lambda: run_async(
        db, lambda e: run_process(e, options, [Stage("io", stage)]), pool=concurrency + 1))
    assert report.counts["processed"] == batch, report.counts
    ideal = batch / concurrency * latency
    return {"batch": batch, "concurrency": concurrency, "latency_s": latency,
            "ideal_s": ideal, "naive_s": t_naive, "ours_s": t_ours}


def bench_race(url: URL, runs: int = 16) -> dict[str, int]:
    """How many of `runs` simultaneous decays apply decay: naive guard vs ours."""
    out: dict[str, int] = {}
    for side in ("naive", "ours"):
        with database(url) as db:
            sql = sa.create_engine(db, poolclass=sa.pool.NullPool)
            with sql.begin() as c:
                c.execute(sa.text("INSERT INTO users (chapter, last_interaction_at) SELECT 1,"
                                  " now() - interval '20 hours' FROM generate_series(1, 200)"))
            barrier = threading.Barrier(runs)

            def one_naive(sql: sa.Engine = sql, barrier: threading.Barrier = barrier) -> None:
                with sql.connect() as c:
                    barrier.wait()
                    if naive.guard_then_insert(c, "decay", timedelta(minutes=50)):
                        naive.decay(c)
                        c.commit()

            def one_ours(db: URL = db, barrier: threading.Barrier = barrier) -> None:
                async def main(engine: Any) -> None:
                    async with engine.connect() as conn:
                        await conn.execute(sa.text("SELECT 1"))
                    barrier.wait()
                    await run_decay(engine, DecayOptions())
                run_async(db, main, pool=2)

            threads = [threading.Thread(target=one_naive if side == "naive" else one_ours)
                       for _ in range(runs)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            with sql.connect() as c:
                out[side] = c.execute(sa.text(
                    "SELECT count(*) FROM score_history")).scalar_one() // 200
            sql.dispose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--naive-sample", type=int, default=50_000,
                    help="users the naive decay loop is timed on (scaled to --rows)")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--latency", type=float, default=0.05, help="stage latency, seconds")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the jobs log every recovered row

    with server() as url:
        t0 = time.perf_counter()
        race = bench_race(url)
        with database(url) as db:
            sql = sa.create_engine(db, poolclass=sa.pool.NullPool)
            t_seed, _ = timed(lambda: seed(sql, args.rows))
            print(f"seeded {args.rows:,} users and conversations in {t_seed:.1f}s", flush=True)
            rec = bench_recover(db, sql)
            dec = bench_decay(db, sql, args.rows, args.naive_sample)
            pro = bench_process(db, sql, args.batch, args.concurrency, args.latency)
            sql.dispose()
        total = time.perf_counter() - t0

    print(f"\n## crontask vs naive baseline ({args.rows:,} rows, {os.cpu_count()} CPUs)\n")
    print("| benchmark | naive | crontask | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| recover: {rec['rows']:,.0f} stuck of {args.rows:,} conversations "
          f"| {rec['naive_s']:.2f} s | {rec['ours_s']:.2f} s "
          f"| {rec['naive_s'] / rec['ours_s']:.1f}x faster |")
    print(f"| decay: {args.rows:,} users (naive timed on {dec['naive_sample']:,.0f}: "
          f"{dec['naive_sample_s']:.1f} s, scaled) | {dec['naive_s']:.1f} s "
          f"| {dec['ours_s']:.1f} s | {dec['naive_s'] / dec['ours_s']:.1f}x faster |")
    print(f"| process: {pro['batch']:.0f} conversations, {pro['latency_s'] * 1000:.0f} ms stage, "
          f"concurrency {pro['concurrency']:.0f} (ideal {pro['ideal_s']:.2f} s) "
          f"| {pro['naive_s']:.2f} s | {pro['ours_s']:.2f} s "
          f"| {pro['naive_s'] / pro['ours_s']:.1f}x faster; "
          f"{pro['ideal_s'] / pro['ours_s'] * 100:.0f}% of ideal |")
    print(f"| 16 simultaneous decay runs: times decay applied | {race['naive']} | {race['ours']} "
          f"| must be 1 |")
    print(f"\nbench total {total:.0f}s (seeding included)")


if __name__ == "__main__":
    main()
