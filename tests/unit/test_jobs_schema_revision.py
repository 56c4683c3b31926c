"""The schema check every run makes first: the revisions it knows are Alembic's own, and its
verdict on whatever `alembic_version` holds is total, deterministic and one of three kinds."""

from __future__ import annotations

from alembic.script import ScriptDirectory
from hypothesis import given
from hypothesis import strategies as st

from crontask_jobs.migrate import alembic_config, head_revision
from crontask_jobs.schema_revision import REQUIRED, REVISIONS, schema_problem


def test_the_known_revisions_are_alembics_chain_and_the_required_one_is_head() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    chain = [r.revision for r in script.walk_revisions("base", "heads")]
    assert tuple(reversed(chain)) == REVISIONS
    assert head_revision() == REQUIRED


def test_each_kind_of_schema() -> None:
    assert schema_problem([REQUIRED]) is None
    assert schema_problem(["0099"]) is None  # a newer release migrated first: it only adds
    never = schema_problem(None)
    assert never is not None and "never migrated" in never and "crontask-job migrate" in never
    assert schema_problem([]) == never  # the table, empty
    behind = schema_problem(["0003"])
    assert behind is not None and "0003" in behind and REQUIRED in behind
    assert "crontask-job migrate" in behind


revisions = st.one_of(st.sampled_from(REVISIONS), st.text(max_size=80))


@given(st.one_of(st.none(), st.lists(revisions, max_size=20)))
def test_the_verdict_is_total_deterministic_and_order_blind(rows: list[str] | None) -> None:
    """Invariants, for any table content: it never raises; the same rows (in any order, with
    repeats) give the same verdict; it passes exactly when some row is the required revision,
    a later one or one this release does not know; a refusal names the hint and stays short."""
    verdict = schema_problem(rows)
    assert verdict == schema_problem(None if rows is None else list(reversed(rows)) + rows)
    later = set(REVISIONS[REVISIONS.index(REQUIRED):])
    passes = rows is not None and any(r in later or r not in REVISIONS for r in rows)
    assert (verdict is None) == passes
    if verdict is not None:
        assert "crontask-job migrate" in verdict and len(verdict) < 400
