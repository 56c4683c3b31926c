"""Benchmark: crontask's jobs against PostgreSQL's own floor and a naive baseline, same run.

    .venv/bin/python bench/run.py                       # 100k and 1M rows, process, race
    .venv/bin/python bench/run.py --sizes 100000        # a quick run
    .venv/bin/python bench/run.py --with-10m            # adds 10M rows (~40 min on 2 cores)
    .venv/bin/python bench/run.py --only process        # just the process benchmarks

For each size a template database is migrated and seeded once; every measurement then runs in
a fresh file copy of it (same rows, same pages). Each job runs in a process of its own, as the
CLI runs it (bench/jobrun.py): its time (start-up excluded, and printed apart), its peak RSS.
Floors (bench/floors.py): what PostgreSQL itself takes to write the same rows the simplest
way, on the same schema, and for decay on a bare copy too. The naive baseline
(bench/naive.py) is the seed's per-row approach; its decay and process are timed on a sample
and scaled (per-row loops: linear by construction). Load average and server settings are
printed with the results. Uses DATABASE_URL's server (creating and dropping databases
`crontask_bench_*`), or starts a throwaway one. Results go to stdout (and --json FILE).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import contention  # noqa: E402
import dbs  # noqa: E402
import floors  # noqa: E402
import naive  # noqa: E402
import seed  # noqa: E402

from crontask_jobs.db import open_engine  # noqa: E402
from crontask_jobs.tasks.decay import DEFAULT_CHUNK_SIZE, DecayOptions, run_decay  # noqa: E402

Result = dict[str, Any]


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load()}] {text}", flush=True)


def job(db: URL, name: str, spec: Result | None = None,
        during: Callable[[], Any] | None = None) -> Result:
    """Run one job in its own process (bench/jobrun.py); its stderr (the logs) is counted."""
    env = {**os.environ, "DATABASE_URL": dbs.libpq_url(db)}
    with tempfile.TemporaryFile() as logs:
        proc = subprocess.Popen([sys.executable, str(HERE / "jobrun.py"), name,
                                 json.dumps(spec or {})], env=env, stdout=subprocess.PIPE,
                                stderr=logs, text=True)
        if during is not None:
            during()
        out, _ = proc.communicate()
        logs.seek(0)
        log_lines = sum(1 for _ in logs)
        if proc.returncode != 0:
            logs.seek(0)
            raise RuntimeError(f"{name} failed: {logs.read()[-2000:].decode(errors='replace')}")
    result: Result = json.loads(out.strip().splitlines()[-1])
    result["log_lines"] = log_lines
    return result


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


# ---------------------------------------------------------------- recover and decay, per size

def bench_naive(template: URL, rows: int, sample: int) -> Result:
    with dbs.copy_of(template, "naive") as db:
        e = dbs.engine(db)
        with e.connect() as c:
            t_recover, n_recover = timed(lambda: naive.recover(c, timedelta(minutes=30)))
            c.rollback()
            sample = min(sample, rows)
            t_sample, _ = timed(lambda: naive.decay(c, limit=sample))
            c.rollback()
        e.dispose()
    return {"recover_s": t_recover, "recover_rows": n_recover, "decay_sample": sample,
            "decay_sample_s": t_sample, "decay_s": t_sample * rows / sample}


def bench_recover(template: URL) -> Result:
    with dbs.copy_of(template, "recover") as db:
        wal0 = dbs.wal_lsn(db)
        ours = job(db, "recover")
        ours["wal_bytes"] = dbs.wal_lsn(db) - wal0
    with dbs.copy_of(template, "recover_floor") as db:
        floor = floors.recover_floor(db)
    assert ours["counts"]["recovered"] == floor.rows, (ours["counts"], floor.rows)
    return {"ours": ours, "floor_s": floor.seconds, "floor_rows": floor.rows,
            "floor_wal_bytes": floor.wal_bytes}


def bench_decay(template: URL, rows: int, *, contended: bool) -> Result:
    out: Result = {}
    with dbs.copy_of(template, "decay_one") as db:
        say(f"decay of {rows:,} users on one connection (--workers 1)")
        out["one"] = job(db, "decay", {"workers": 1})
        assert out["one"]["counts"]["users_decayed"] == rows, out["one"]["counts"]
    with dbs.copy_of(template, "decay") as decayed:
        wal0 = dbs.wal_lsn(decayed)
        say(f"decay of {rows:,} users")
        out["ours"] = job(decayed, "decay")
        out["ours"]["wal_bytes"] = dbs.wal_lsn(decayed) - wal0
        assert out["ours"]["counts"]["users_decayed"] == rows, out["ours"]["counts"]
        expected = floors.fingerprint(decayed)
        for label, bare in (("floor", False), ("bare", True)):
            with dbs.copy_of(template, label) as db:
                floors.copy_outcome(decayed, db)
                if bare:
                    floors.make_bare(db)
                say(f"decay floor ({'bare copy' if bare else 'same schema'})")
                floor = floors.decay_floor(db, bare=bare)
                assert floors.fingerprint(db, bare=bare) == expected, f"{label}: other writes"
                out[label] = {"seconds": floor.seconds, "wal_bytes": floor.wal_bytes,
                              "parts": floor.parts}
    if contended:
        with dbs.copy_of(template, "contended") as db:
            toucher = contention.Toucher(floors.conninfo(db), DEFAULT_CHUNK_SIZE)
            say("decay while touch_user-style updates run")
            toucher.start(rows)
            try:
                out["contended"] = job(db, "decay")
            finally:
                toucher.stop()
            out["touches"] = toucher.summary()
    return out


def bench_size(server: URL, rows: int, args: argparse.Namespace) -> Result:
    result: Result = {"rows": rows, "load_at_start": load()}
    template = dbs.create(server, f"crontask_bench_{rows}")
    try:
        t, _ = timed(lambda: seed.seed_size(template, rows))
        result["seed_s"] = t
        say(f"seeded {rows:,} users and conversations in {t:.0f}s")
        dbs.checkpoint(template)
        result["naive"] = bench_naive(template, rows, args.naive_sample)
        say("recover")
        result["recover"] = bench_recover(template)
        result["decay"] = bench_decay(template, rows, contended=rows <= args.contend_up_to)
    finally:
        dbs.drop(template)
    result["load_at_end"] = load()
    return result


# ---------------------------------------------------------------- process

def bench_process_ideal(server: URL, batch: int, latency: float,
                        concurrencies: list[int], naive_sample: int, fit: int) -> Result:
    """The job against its ideal and floors; with `fit` > 1, also at `fit` times the batch, so
    that the run's fixed cost is measured against the batch (the intercept of the two)."""
    out: Result = {"batch": batch, "latency_s": latency, "runs": [], "fit": fit}
    template = dbs.create(server, "crontask_bench_idle")
    larger = dbs.create(server, "crontask_bench_idle_fit") if fit > 1 else None
    try:
        seed.seed_idle(template, batch, messages=0)
        if larger is not None:
            seed.seed_idle(larger, batch * fit, messages=0)
        with dbs.copy_of(template, "naive") as db:
            e = dbs.engine(db)
            with e.connect() as c:
                t, n = timed(lambda: naive.process(c, timedelta(minutes=15), naive_sample,
                                                   naive.sleep_stage(latency)))
            e.dispose()
            out["naive_sample"], out["naive_sample_s"] = n, t
            out["naive_s"] = t * batch / n
        for concurrency in concurrencies:
            with dbs.copy_of(template, f"c{concurrency}") as db:
                say(f"process: {batch} conversations, {latency * 1000:.0f} ms stage,"
                    f" concurrency {concurrency}")
                r = job(db, "process", {"batch": batch, "concurrency": concurrency,
                                        "latency_s": latency})
                assert r["counts"]["processed"] == batch, r["counts"]
                r["concurrency"] = concurrency
                r["ideal_s"] = batch / concurrency * latency
            if larger is not None:
                with dbs.copy_of(larger, f"fit{concurrency}") as db:
                    say(f"process: {batch * fit} conversations, concurrency {concurrency}")
                    big = job(db, "process", {"batch": batch * fit, "concurrency": concurrency,
                                              "latency_s": latency})
                    assert big["counts"]["processed"] == batch * fit, big["counts"]
                    r["fit_seconds"] = big["seconds"]
                    r["fit_phases_ms"] = big["details"].get("phases_ms", {})
            for sends, key in (("one_message", "floor_s"), ("round_trip", "round_trip_s"),
                               ("statements", "two_messages_s")):
                with dbs.copy_of(template, f"floor{concurrency}") as db:
                    say(f"process floor ({sends}), concurrency {concurrency}")
                    r[key] = floors.process_floor(db, batch, concurrency, latency, sends=sends)
            out["runs"].append(r)
    finally:
        dbs.drop(template)
        if larger is not None:
            dbs.drop(larger)
    return out


def fixed_from_fit(batch: int, seconds: float, larger_batch: int, larger_seconds: float
                   ) -> tuple[float, float]:
    """(seconds per conversation, fixed seconds per run) from two runs of different batches:
    the line through them. What does not grow with the batch is the run's fixed cost,
    whatever phase of the run it falls in."""
    per = (larger_seconds - seconds) / (larger_batch - batch)
    return per, seconds - per * batch


def fixed_ms(phases: dict[str, int]) -> int:
    """The run's fixed cost from its own phases (`phases_ms`): all but the work."""
    return sum(phases.get(k, 0) for k in ("start", "ramp", "end"))


def pg_statements(db: URL, top: int = 8) -> list[Result]:
    e = dbs.engine(db)
    try:
        with e.connect() as c:
            got = c.execute(sa.text("""
                SELECT calls, total_exec_time, mean_exec_time,
                       left(regexp_replace(query, '\\s+', ' ', 'g'), 70) AS query
                  FROM pg_stat_statements
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                 ORDER BY total_exec_time DESC LIMIT :top"""), {"top": top}).all()
    except sa.exc.DBAPIError:
        return []
    finally:
        e.dispose()
    return [{"calls": r.calls, "total_ms": round(r.total_exec_time), "mean_ms":
             round(r.mean_exec_time, 3), "query": r.query} for r in got]


def bench_process_default(server: URL, conversations: int, messages: int,
                          concurrencies: list[int], profiled: int) -> Result:
    """Throughput of the default pipeline at each concurrency (no profiler), then one run of
    `profiled` conversations under cProfile, with the server's side from pg_stat_statements."""
    out: Result = {"conversations": conversations, "messages": messages, "runs": []}
    template = dbs.create(server, "crontask_bench_pipeline")
    try:
        seed.seed_idle(template, conversations, messages)
        statements = True
        try:
            with dbs.admin(template).connect() as c:
                c.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        except sa.exc.DBAPIError:
            statements = False
        for concurrency in concurrencies:
            with dbs.copy_of(template, f"c{concurrency}") as db:
                if statements:
                    dbs.scalar(db, "SELECT pg_stat_statements_reset()")
                say(f"process, default pipeline: {conversations:,} conversations,"
                    f" concurrency {concurrency}")
                r = job(db, "process", {"batch": conversations, "concurrency": concurrency,
                                        "pipeline": "default"})
                assert r["counts"]["processed"] == conversations, r["counts"]
                r["concurrency"] = concurrency
                r["sql"] = pg_statements(db) if statements else []
                out["runs"].append(r)
        with dbs.copy_of(template, "profiled") as db:
            concurrency = concurrencies[-1]
            say(f"process, default pipeline under cProfile: {profiled:,} conversations,"
                f" concurrency {concurrency}")
            r = job(db, "process", {"batch": profiled, "concurrency": concurrency,
                                    "pipeline": "default", "profile": True})
            r["concurrency"] = concurrency
            r["batch"] = profiled
            out["profiled"] = r
    finally:
        dbs.drop(template)
    return out


# ---------------------------------------------------------------- the race

def bench_race(server: URL, runs: int = 16) -> Result:
    """How many of `runs` simultaneous decays apply decay: naive guard vs ours."""
    out: Result = {}
    for side in ("naive", "ours"):
        db = dbs.create(server, "crontask_bench_race")
        try:
            sql = dbs.engine(db)
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
                async def main() -> None:
                    async with open_engine(dbs.target(db), task="bench", pool_size=2) as engine:
                        async with engine.connect() as conn:
                            await conn.execute(sa.text("SELECT 1"))
                        barrier.wait()
                        await run_decay(engine, DecayOptions())
                asyncio.run(main())

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
        finally:
            dbs.drop(db)
    return out


# ---------------------------------------------------------------- printing

def secs(s: float) -> str:
    return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"


def mib(kib: float) -> str:
    return f"{kib / 1024:.0f} MiB"


def print_size(r: Result) -> None:
    rows = r["rows"]
    rec, dec, nv = r["recover"], r["decay"], r["naive"]
    ours_r, ours_d = rec["ours"], dec["ours"]

    def rss(r: Result) -> str:
        return f"{mib(r['peak_rss_kib'])} (+{mib(r['peak_rss_kib'] - r['rss_ready_kib'])})"
    print(f"\n### {rows:,} users (load average {r['load_at_start']} at start,"
          f" {r['load_at_end']} at end; seeding {r['seed_s']:.0f} s)\n")
    print("| job | naive | floor | crontask | crontask / floor | naive / crontask |"
          " peak RSS (growth) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| recover: {rec['floor_rows']:,} stuck of {rows:,} conversations"
          f" | {secs(nv['recover_s'])} | {secs(rec['floor_s'])} | {secs(ours_r['seconds'])}"
          f" | {ours_r['seconds'] / rec['floor_s']:.2f}x"
          f" | {nv['recover_s'] / ours_r['seconds']:.1f}x | {rss(ours_r)} |")
    print(f"| decay: {rows:,} users (naive: {nv['decay_sample']:,} timed, scaled)"
          f" | {secs(nv['decay_s'])} | {secs(dec['floor']['seconds'])} | {secs(ours_d['seconds'])}"
          f" | {ours_d['seconds'] / dec['floor']['seconds']:.2f}x"
          f" | {nv['decay_s'] / ours_d['seconds']:.1f}x"
          f" | {rss(ours_d)} |")
    print(f"| decay against the floor on a bare copy (no secondary index, no trigger) | |"
          f" {secs(dec['bare']['seconds'])} | {secs(ours_d['seconds'])}"
          f" | {ours_d['seconds'] / dec['bare']['seconds']:.2f}x | | |")
    if "one" in dec:
        one = dec["one"]
        print(f"| decay on one connection (--workers 1): against the floor; the bare floor"
              f" | {secs(nv['decay_s'])} | {secs(dec['floor']['seconds'])}"
              f" | {secs(one['seconds'])} | {one['seconds'] / dec['floor']['seconds']:.2f}x;"
              f" {one['seconds'] / dec['bare']['seconds']:.2f}x"
              f" | {nv['decay_s'] / one['seconds']:.1f}x | {rss(one)} |")
    wal = {k: v["wal_bytes"] / rows for k, v in (("crontask", ours_d), ("floor", dec["floor"]),
                                                  ("bare", dec["bare"]))}
    fl, bare = dec["floor"]["parts"], dec["bare"]["parts"]
    print(f"\ndecay: {ours_d['details'].get('workers')} connection(s),"
          f" {ours_d['details'].get('ranges')} key ranges,"
          f" {ours_d['details'].get('chunks')} chunks"
          f" ({ours_d['details'].get('exact_chunks')} by the skip-locked scan), longest chunk"
          f" {ours_d['details'].get('longest_chunk_ms')} ms;"
          f" start-up {ours_d['startup_seconds']:.2f} s."
          f" Floor: UPDATE {fl['update']:.1f} s + INSERT {fl['insert']:.1f} s; bare: UPDATE"
          f" {bare['update']:.1f} s + INSERT {bare['insert']:.1f} s. WAL per user: crontask"
          f" {wal['crontask']:.0f} B, floor {wal['floor']:.0f} B, bare {wal['bare']:.0f} B.")
    print(f"recover: {ours_r['log_lines']} log lines; start-up {ours_r['startup_seconds']:.2f} s;"
          f" WAL {ours_r['wal_bytes'] / 1e6:.1f} MB (floor {rec['floor_wal_bytes'] / 1e6:.1f} MB).")
    if "contended" in dec:
        c, t = dec["contended"], dec["touches"]
        print(f"decay under touch_user-style updates: {t['touches']:,} touches aimed at the users"
              f" it was about to take; {t['waited_over_10ms']} waited over 10 ms; the longest"
              f" wait {t['max_s']:.3f} s (p99 {t['p99_s'] * 1000:.1f} ms, median"
              f" {t['median_s'] * 1000:.1f} ms). The run: {secs(c['seconds'])},"
              f" {c['counts']['skipped_locked']} users skipped (held by a touch),"
              f" {c['details'].get('exact_chunks')} of {c['details'].get('chunks')} chunks by the"
              f" skip-locked scan, longest chunk (the longest any user was locked)"
              f" {c['details'].get('longest_chunk_ms')} ms.")


def print_growth(sizes: list[Result]) -> None:
    if len(sizes) < 2:
        return
    print("\n### Growth\n")
    print("| users | decay | per 1M users | decay, one connection | per 1M users | floor | bare"
          " | recover | decay peak RSS |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sizes:
        d = r["decay"]
        one = d.get("one", {}).get("seconds", float("nan"))
        print(f"| {r['rows']:,} | {secs(d['ours']['seconds'])}"
              f" | {secs(d['ours']['seconds'] * 1e6 / r['rows'])} | {secs(one)}"
              f" | {secs(one * 1e6 / r['rows'])} | {secs(d['floor']['seconds'])}"
              f" | {secs(d['bare']['seconds'])} | {secs(r['recover']['ours']['seconds'])}"
              f" | {mib(d['ours']['peak_rss_kib'])} |")


def print_process(ideal: Result | None, default: Result | None) -> None:
    if ideal:
        print(f"\n### process: {ideal['batch']:,} conversations, one"
              f" {ideal['latency_s'] * 1000:.0f} ms stage\n")
        print("| concurrency | ideal | round trips only | floor (its statements) | its"
              " statements in two messages | naive (serial) | crontask (start-up apart) |"
              " % of ideal | % of floor | the run's fixed start + ramp + end | % of ideal,"
              " those apart | start-up | Python CPU | peak RSS |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in ideal["runs"]:
            phases = r["details"].get("phases_ms", {})
            fixed = fixed_ms(phases) / 1000
            print(f"| {r['concurrency']} | {secs(r['ideal_s'])} | {secs(r['round_trip_s'])}"
                  f" ({r['ideal_s'] / r['round_trip_s'] * 100:.0f}%) | {secs(r['floor_s'])}"
                  f" ({r['ideal_s'] / r['floor_s'] * 100:.0f}%) | {secs(r['two_messages_s'])}"
                  f" ({r['ideal_s'] / r['two_messages_s'] * 100:.0f}%)"
                  f" | {secs(ideal['naive_s'])}"
                  f" | {secs(r['seconds'])} | {r['ideal_s'] / r['seconds'] * 100:.0f}%"
                  f" | {r['floor_s'] / r['seconds'] * 100:.0f}%"
                  f" | {phases.get('start', 0)} + {phases.get('ramp', 0)}"
                  f" + {phases.get('end', 0)} ms"
                  f" | {r['ideal_s'] / (r['seconds'] - fixed) * 100:.0f}%"
                  f" | {r['startup_seconds']:.2f} s | {r['python_cpu_seconds']:.2f} s"
                  f" | {mib(r['peak_rss_kib'])} |")
        fitted = [r for r in ideal["runs"] if "fit_seconds" in r]
        if fitted:
            larger = ideal["batch"] * ideal["fit"]
            print(f"\nThe fixed cost measured against the batch: the same run at {larger:,}"
                  " conversations, and the line through the two.\n")
            print(f"| concurrency | {ideal['batch']:,} conversations | {larger:,} |"
                  " per conversation (ideal) | fixed per run, from the line | from the run's"
                  f" phases | {ideal['batch']:,} conversations, the fixed cost apart:"
                  " % of ideal |")
            print("|---:|---:|---:|---:|---:|---:|---:|")
            for r in fitted:
                per, fixed_s = fixed_from_fit(ideal["batch"], r["seconds"], larger,
                                              r["fit_seconds"])
                phases = r["details"].get("phases_ms", {})
                in_run = fixed_ms(phases)
                print(f"| {r['concurrency']} | {secs(r['seconds'])} | {secs(r['fit_seconds'])}"
                      f" | {per * 1000:.3f} ms ({ideal['latency_s'] / r['concurrency'] * 1000:.3f}"
                      f" ms) | {fixed_s * 1000:.0f} ms | {in_run} ms"
                      f" | {r['ideal_s'] / (r['seconds'] - fixed_s) * 100:.0f}% |")
        print(f"\n(naive: {ideal['naive_sample']} timed serially in"
              f" {ideal['naive_sample_s']:.1f} s, scaled. Floors: bare psycopg connections on"
              " one event loop, their slots started a few at a time as the job's are, each"
              " conversation a stage-long sleep and one round trip, as the job's: `SELECT 1`,"
              " or the job's own final message with the next claim; and the job's statements"
              " in two messages (the claim, the final update), as it sent them before; see"
              " bench/floors.py."
              " The run's fixed start: its execution row and its slots' connections, before the"
              " first claim; its ramp: until the last slot's first claim came back (the slots"
              " start a few at a time and keep that phase, so the last ends that much after the"
              " first, whatever the batch); its fixed end: settling claims after the last"
              " outcome)")
    if default:
        print(f"\n### process, default pipeline: {default['conversations']:,} conversations of"
              f" {default['messages']} messages\n")
        print("| concurrency | time | conversations/s | start-up | Python CPU |"
              " load_transcript | summarise | touch_user | persist | peak RSS |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in default["runs"]:
            st = r["stage_timings"]
            stage = " | ".join(f"{st[s]['mean_ms']:.1f} ms" if s in st else "-" for s in
                               ("load_transcript", "summarise", "touch_user", "persist"))
            print(f"| {r['concurrency']} | {secs(r['seconds'])}"
                  f" | {default['conversations'] / r['seconds']:,.0f}"
                  f" | {r['startup_seconds']:.2f} s | {r['python_cpu_seconds']:.2f} s | {stage}"
                  f" | {mib(r['peak_rss_kib'])} |")
        for r in default["runs"]:
            if r["sql"]:
                print(f"\nServer time by statement at concurrency {r['concurrency']}"
                      " (pg_stat_statements):")
                for q in r["sql"]:
                    print(f"    {q['total_ms']:>7,} ms {q['calls']:>7,} calls"
                          f" {q['mean_ms']:7.3f} ms  {q['query']}")
        r = default.get("profiled")
        if r:
            p = r["profile"]
            print(f"\nProfile of {r['batch']:,} conversations at concurrency {r['concurrency']}"
                  f" under cProfile (which slows Python about 2x): Python time by package:"
                  f" {', '.join(f'{k} {v:.2f} s' for k, v in p['by_area_s'].items())}")
            for f in p["top"]:
                print(f"    {f['own_s']:6.2f} s own {f['cum_s']:6.2f} s cum {f['calls']:>8,}"
                      f"  {f['function']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000",
                    help="comma-separated user counts (default 100000,1000000)")
    ap.add_argument("--with-10m", action="store_true", help="add 10,000,000 users")
    ap.add_argument("--only", choices=["sizes", "process", "race"], action="append",
                    help="run only these parts (repeatable)")
    ap.add_argument("--naive-sample", type=int, default=20_000,
                    help="users the naive decay loop is timed on (scaled)")
    ap.add_argument("--contend-up-to", type=int, default=1_000_000,
                    help="measure touch_user waits during decay up to this size")
    ap.add_argument("--process-batch", type=int, default=1000)
    ap.add_argument("--process-fit", type=int, default=3,
                    help="also run process at this many times the batch, to measure its fixed"
                         " cost against the batch (0: no)")
    ap.add_argument("--concurrency", default="10,50")
    ap.add_argument("--latency", type=float, default=0.05, help="stage latency, seconds")
    ap.add_argument("--pipeline-conversations", type=int, default=10_000)
    ap.add_argument("--pipeline-messages", type=int, default=8)
    ap.add_argument("--profiled-conversations", type=int, default=2000)
    ap.add_argument("--json", type=Path, help="also write every figure to this file")
    args = ap.parse_args()
    parts = set(args.only or ["sizes", "process", "race"])
    sizes = [int(s) for s in args.sizes.split(",") if s] + ([10_000_000] if args.with_10m
                                                            else [])
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    results: Result = {"load_at_start": load(), "cpus": os.cpu_count()}
    say("starting")
    with dbs.server() as url:
        results["server"] = dbs.settings(url)
        t0 = time.perf_counter()
        if "race" in parts:
            say("16 simultaneous decays")
            results["race"] = bench_race(url)
        if "process" in parts:
            results["process_ideal"] = bench_process_ideal(
                url, args.process_batch, args.latency, concurrencies, naive_sample=100,
                fit=args.process_fit)
            results["process_default"] = bench_process_default(
                url, args.pipeline_conversations, args.pipeline_messages, concurrencies,
                profiled=args.profiled_conversations)
        results["sizes"] = []
        if "sizes" in parts:
            for rows in sizes:
                results["sizes"].append(bench_size(url, rows, args))
        results["total_s"] = time.perf_counter() - t0
    results["load_at_end"] = load()

    s = results["server"]
    print(f"\n## crontask vs PostgreSQL's floor and the naive baseline ({results['cpus']} CPUs,"
          f" load average {results['load_at_start']} at start, {results['load_at_end']} at end)")
    print(f"\nPostgreSQL {s['server_version']}: shared_buffers {s['shared_buffers']}, work_mem"
          f" {s['work_mem']}, max_wal_size {s['max_wal_size']}, fsync {s['fsync']},"
          f" synchronous_commit {s['synchronous_commit']}, full_page_writes"
          f" {s['full_page_writes']}. Python {sys.version.split()[0]}.")
    for r in results["sizes"]:
        print_size(r)
    print_growth(results["sizes"])
    print_process(results.get("process_ideal"), results.get("process_default"))
    if "race" in results:
        race = results["race"]
        print(f"\n16 simultaneous decay runs, times decay applied: naive {race['naive']},"
              f" crontask {race['ours']} (must be 1)")
    print(f"\nbench total {results['total_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
