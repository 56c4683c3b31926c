"""Classification and session limits, without a database (tests/db/test_fault_classification.py
raises the real errors)."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.exc import OperationalError, PendingRollbackError

from crontask_jobs.db import ConnectFailed
from crontask_jobs.faults import classify
from crontask_jobs.session import (
    MAX_TIMEOUT,
    SessionLimits,
    client_keywords,
    limits_for_process,
    milliseconds,
)

REASONS = {"database_unavailable", "lock_timeout", "statement_timeout", "query_canceled",
           "deadlock", "serialization_failure", "backend_terminated", "connection_lost",
           "error"}


@given(st.text(), st.sampled_from([ValueError, RuntimeError, KeyError, OSError, Exception]),
       st.booleans())
def test_classify_never_raises_and_always_answers(text: str, kind: type[Exception],
                                                  connecting: bool) -> None:
    exc: Exception = kind(text)
    if connecting:
        try:
            raise ConnectFailed("could not connect") from exc
        except ConnectFailed as wrapped:
            exc = wrapped
    fault = classify(exc)
    assert fault.reason in REASONS
    assert fault.reason == ("database_unavailable" if connecting else "error")
    assert "\n" not in fault.message and len(fault.message) <= 300


def test_sqlalchemy_messages_lose_their_sql() -> None:
    exc = PendingRollbackError("Can't reconnect until invalid transaction is rolled back.\n"
                               "[SQL: SELECT secret FROM t]")
    assert "SELECT" not in classify(exc).message
    wrapped = OperationalError("SELECT 1", {}, Exception("boom"))
    assert "SELECT" not in classify(wrapped).message


def test_an_exception_whose_str_raises() -> None:
    class Nasty(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert classify(Nasty()).reason == "error"


def test_session_settings() -> None:
    settings = SessionLimits().settings(150000)
    assert settings["statement_timeout"] == "60000"
    assert settings["lock_timeout"] == "5000"
    assert settings["idle_in_transaction_session_timeout"] == "30000"
    assert settings["idle_session_timeout"] == "60000"
    assert settings["TimeZone"] == "UTC"
    assert "idle_session_timeout" not in SessionLimits().settings(130000)  # not before 14


def test_a_pipeline_may_idle_in_its_transaction_as_long_as_its_longest_stage() -> None:
    limits = limits_for_process([10.0, 30.0, 0.5])
    assert limits.idle_in_transaction_timeout == timedelta(seconds=40)
    assert limits_for_process([10**9]).idle_in_transaction_timeout == MAX_TIMEOUT


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=999)))
def test_milliseconds_fit_the_server(value: timedelta) -> None:
    ms = int(milliseconds(value))
    assert 1 <= ms <= 2**31 - 1


def test_the_url_wins_over_client_defaults() -> None:
    keywords = client_keywords("decay", {"connect_timeout": "3", "host": "db"})
    assert keywords["connect_timeout"] == "3"
    assert keywords["keepalives_idle"] == "30"
    assert keywords["application_name"] == "crontask-job decay"
