"""recover's log of what it recovered (pure): every conversation named once, in few lines.

The server groups the recovered ids (RECOVER_CONVERSATIONS: by the execution that claimed
them, IDS_PER_LOG_LINE to a group, in id order; tests/db/test_recover.py holds the statement to
that); `groups` below does the same here. Invariants, for any set of recovered rows (ids and
the executions that claimed them, some never claimed): each id appears in exactly one line; a
line names one claiming execution and at most IDS_PER_LOG_LINE ids, so it fits the log's line
bound; the "k-n of total" ranges tile 1..total; nothing is logged for nothing recovered.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from crontask_jobs.logs import MAX_LOG_MESSAGE_CHARS
from crontask_jobs.tasks.recover import IDS_PER_LOG_LINE, log_lines


@dataclass(frozen=True)
class Row:
    id: uuid.UUID
    claimed_by: uuid.UUID | None


OWNERS = st.sampled_from([None, *(uuid.UUID(int=i) for i in range(1, 4))])
ROWS = st.lists(st.builds(Row, st.uuids(), OWNERS), max_size=300,
                unique_by=lambda r: r.id)
RANGE = re.compile(r"\((\d+)-(\d+) of (\d+)\)")


@dataclass(frozen=True)
class Group:
    owner: str | None
    recovered: int
    ids: str


def groups(rows: list[Row]) -> list[Group]:
    """What RECOVER_CONVERSATIONS returns for these rows."""
    by_owner: dict[uuid.UUID | None, list[str]] = {}
    for r in rows:
        by_owner.setdefault(r.claimed_by, []).append(str(r.id))
    out = []
    for owner in sorted(by_owner, key=lambda o: (o is not None, str(o))):
        ids = sorted(by_owner[owner])
        for at in range(0, len(ids), IDS_PER_LOG_LINE):
            part = ids[at:at + IDS_PER_LOG_LINE]
            out.append(Group(None if owner is None else str(owner), len(part), ", ".join(part)))
    return out


@given(ROWS)
def test_every_recovered_conversation_is_named_once(rows: list[Row]) -> None:
    lines = log_lines(groups(rows))
    named = [i for line in lines for i in re.findall(r"[0-9a-f]{8}-[0-9a-f-]{27}", line)]
    ids = [i for i in named if i not in {str(r.claimed_by) for r in rows}]
    assert sorted(ids) == sorted(str(r.id) for r in rows)
    assert all(len(line) <= MAX_LOG_MESSAGE_CHARS for line in lines)
    spans = [tuple(int(n) for n in m.groups()) for m in map(RANGE.search, lines) if m]
    assert len(spans) == len(lines)
    starts = [s[0] for s in spans]
    assert starts == [1, *(s[1] + 1 for s in spans[:-1])][:len(starts)]
    assert (spans[-1][1] if spans else 0) == len(rows)
    assert all(s[2] == len(rows) for s in spans)
    for line, row_owner in ((line, line.split("claimed by execution ")[1].split(" ")[0])
                            for line in lines):
        ids_in_line = line.split("): ", 1)[1].split(", ")
        assert len(ids_in_line) <= IDS_PER_LOG_LINE
        assert {str(r.claimed_by) for r in rows if str(r.id) in ids_in_line} == {row_owner}


def test_ten_thousand_conversations_take_a_few_hundred_lines() -> None:
    rows = [Row(uuid.uuid4(), uuid.UUID(int=1)) for _ in range(10_000)]
    assert len(log_lines(groups(rows))) == 250


def test_nothing_recovered_logs_nothing() -> None:
    assert log_lines([]) == []
