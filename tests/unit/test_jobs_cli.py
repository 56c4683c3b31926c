"""The CLI's parsing, configuration and exit codes that need no database."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from crontask_contract.report import decode
from crontask_jobs.cli import EXIT_USAGE, UsageError, parse, run
from crontask_jobs.db import mask_url, scrub, to_sqlalchemy_url

URL = "postgresql://app:hunter2@db.example:5432/app"


def test_defaults() -> None:
    inv = parse(["process"], {})
    assert inv.options["idle_after"] == timedelta(minutes=15)
    assert (inv.options["batch_size"], inv.options["max_concurrent_pipelines"]) == (10, 10)
    assert inv.options["max_in_flight"] is None
    assert inv.options["stage_timeout"] == ({}, None)
    assert inv.options["pipeline"] == "default"
    assert parse(["recover"], {}).options == {"stale_after": timedelta(minutes=30),
                                              "abandoned_after": timedelta(hours=2)}
    assert parse(["decay"], {}).options == {"window": timedelta(minutes=50),
                                            "max_decay_per_run": Decimal(10)}


def test_environment_and_flag_precedence() -> None:
    env = {"CRONTASK_BATCH_SIZE": "25", "CRONTASK_IDLE_AFTER": "1h",
           "CRONTASK_STAGE_TIMEOUT": "30s,summarise=5s", "CRONTASK_LOG_FORMAT": "text"}
    inv = parse(["process", "--batch-size", "7"], env)
    assert inv.options["batch_size"] == 7
    assert inv.options["idle_after"] == timedelta(hours=1)
    assert inv.options["stage_timeout"] == ({"summarise": timedelta(seconds=5)},
                                            timedelta(seconds=30))
    assert inv.log_format == "text"
    inv = parse(["process", "--stage-timeout", "persist=2s", "--stage-timeout", "1m"], env)
    assert inv.options["stage_timeout"] == ({"persist": timedelta(seconds=2)},
                                            timedelta(minutes=1))


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["recover", "--stale-after", "0"], {}, "--stale-after: duration '0' must be positive"),
    (["recover", "--stale-after", "soon"], {}, "invalid duration 'soon'"),
    (["recover"], {"CRONTASK_ABANDONED_AFTER": "-1h"}, "CRONTASK_ABANDONED_AFTER"),
    (["process", "--batch-size", "0"], {}, "must be a positive integer"),
    (["process", "--max-in-flight", "x"], {}, "is not an integer"),
    (["process", "--stage-timeout", "=5s"], {}, "stage name"),
    (["decay", "--max-decay-per-run", "150"], {}, "(0, 100]"),
    (["--log-level", "LOUD", "decay"], {}, "not a log level"),
    (["frobnicate"], {}, "invalid choice"),
    (["recover", "--bogus"], {}, "unrecognized arguments"),
    (["detect-stuck"], {}, "task 'detect-stuck' is gone: use 'recover' instead"),
    (["recover-stuck", "--x"], {}, "task 'recover-stuck' is gone: use 'recover' instead"),
])
def test_usage_errors(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse(argv, env)
    assert message in str(info.value)


@pytest.mark.parametrize("task", ["detect-stuck", "recover-stuck"])
def test_gone_tasks_exit_2_with_a_report(task: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    report_file = tmp_path / "report"
    code = run(["--report-file", str(report_file), task], {"DATABASE_URL": URL})
    assert code == EXIT_USAGE
    out, err = capsys.readouterr()
    assert "use 'recover'" in err
    report = decode(out.strip().splitlines()[-1])
    assert (report.status, report.reason) == ("failed", "usage")
    assert decode(report_file.read_text()) == report


def test_missing_database_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["recover"], {}) == EXIT_USAGE
    assert "DATABASE_URL is not set" in capsys.readouterr().err


def test_bad_database_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["recover"], {"DATABASE_URL": "mysql://a:b@c/d"}) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert "must start with postgresql://" in err
    assert json.loads(out.splitlines()[-1])["status"] == "failed"


def test_url_conversion_and_masking() -> None:
    url = to_sqlalchemy_url(URL)
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port, url.database, url.password) == ("db.example", 5432, "app",
                                                                "hunter2")
    assert "hunter2" not in mask_url(url)
    assert scrub("failed for postgresql://app:hunter2@db", url) == "failed for postgresql://app:***@db"
    assert to_sqlalchemy_url("postgres://u@h/d").drivername == "postgresql+psycopg"
