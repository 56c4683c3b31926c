"""What a decay run costs everyone else: a pipeline's `touch_user`, played during the run.

A thread updates one user at a time, as the default pipeline's touch_user stage does (its own
short transaction, no lock timeout to cut a wait short), and times each update. It aims at
the users decay is about to take: it knows the walk order (chapter, last_interaction_at, id)
from a sample taken before the run, and where the walk is from a user of one of the last
chunks committed (one of the last 2 x chunk history rows, so with several connections it
follows each of them), so most touches land on a chunk in flight or the next one; some wait
for a chunk to commit, and decay skips (and counts) the users a touch holds.
"""

from __future__ import annotations

import bisect
import random
import statistics
import threading
import time
from dataclasses import dataclass, field

import psycopg

SAMPLE = """
SELECT chapter, last_interaction_at, id FROM (
    SELECT chapter, last_interaction_at, id,
           row_number() OVER (ORDER BY chapter, last_interaction_at, id) AS rn
      FROM users WHERE game_status = 'active' AND relationship_score > 0) AS walk
 WHERE rn %% %(step)s = 0
 ORDER BY rn
"""
RECENT = """
SELECT u.chapter, u.last_interaction_at, u.id
  FROM (SELECT user_id FROM score_history ORDER BY id DESC LIMIT 1 OFFSET %s) AS h
  JOIN users AS u ON u.id = h.user_id
"""
TOUCH = ("UPDATE users SET last_interaction_at = last_interaction_at, updated_at = now()"
         " WHERE id = %s")


@dataclass
class Toucher:
    conninfo: str
    chunk: int
    interval_s: float = 0.005
    waits: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, users: int) -> None:
        with psycopg.connect(self.conninfo) as conn:
            self._step = max(users // 20_000, 1)
            self._keys = [tuple(r) for r in conn.execute(SAMPLE, {"step": self._step})]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        rng = random.Random(11)
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute("SET lock_timeout = 0")
            ahead = max(2 * self.chunk // self._step, 1)  # sampled users in two chunks
            while not self._stop.is_set():
                at = conn.execute(RECENT, (rng.randrange(2 * self.chunk),)).fetchone()
                lo = bisect.bisect_right(self._keys, tuple(at)) if at else 0
                if lo >= len(self._keys):
                    lo = 0
                user = self._keys[rng.randrange(lo, min(lo + ahead, len(self._keys)))][2]
                t0 = time.perf_counter()
                conn.execute(TOUCH, (user,))
                self.waits.append(time.perf_counter() - t0)
                time.sleep(self.interval_s)

    def summary(self) -> dict[str, float]:
        waits = sorted(self.waits) or [0.0]
        return {"touches": len(self.waits),
                "waited_over_10ms": sum(w > 0.010 for w in waits),
                "max_s": waits[-1],
                "p99_s": waits[min(int(len(waits) * 0.99), len(waits) - 1)],
                "median_s": statistics.median(waits)}
