"""The CLI's parsing, configuration and exit codes that need no database."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crontask_contract.report import decode
from crontask_jobs.cli import EXIT_USAGE, UsageError, parse, run, scan
from crontask_jobs.tasks.decay import DecayOptions

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
                                            "max_decay_per_run": Decimal(10),
                                            "workers": DecayOptions().workers}


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
    (["recover", "--stale-after", "0.0000001s"], {}, "shorter than a microsecond"),
    (["recover", "--stale-after", "99999999999h"], {}, "longer than the maximum"),
    (["recover"], {"CRONTASK_ABANDONED_AFTER": "-1h"}, "CRONTASK_ABANDONED_AFTER"),
    (["decay", "--window", "1e400s"], {}, "--window: invalid duration"),
    (["process", "--batch-size", "0"], {}, "must be an integer from 1 to"),
    (["process", "--batch-size", "-3"], {}, "is not a positive integer"),
    (["process", "--batch-size", "1_000"], {}, "is not a positive integer"),
    (["process", "--batch-size", "9" * 30], {}, "must be an integer from 1 to"),
    (["process", "--batch-size", "9" * 5000], {}, "too long"),
    (["process", "--max-concurrent-pipelines", "5000"], {}, "from 1 to 1000"),
    (["process", "--max-in-flight", "x"], {}, "is not a positive integer"),
    (["process", "--stage-timeout", "=5s"], {}, "stage name"),
    (["process", "--stage-timeout", "summarise=0s"], {}, "must be positive"),
    (["process", "--stage-timeout", "0"], {}, "--stage-timeout: duration '0' must be positive"),
    (["process"], {"CRONTASK_STAGE_TIMEOUT": "30s,persist=0"}, "CRONTASK_STAGE_TIMEOUT"),
    (["process", "--stage-timeout", "30d"], {}, "invalid duration"),
    (["process", "--stage-timeout", "1000h"], {}, "longer than PostgreSQL's statement_timeout"),
    (["decay", "--max-decay-per-run", "150"], {}, "one cent) to 100"),
    (["decay", "--max-decay-per-run", "0.009"], {}, "from 0.01 (one cent)"),
    (["decay", "--max-decay-per-run", "0"], {}, "from 0.01 (one cent)"),
    (["decay", "--max-decay-per-run", "NaN"], {}, "from 0.01 (one cent)"),
    (["decay", "--max-decay-per-run", "sNaN"], {}, "from 0.01 (one cent)"),
    (["decay", "--workers", "0"], {}, "--workers: '0' must be an integer from 1 to 16"),
    (["decay", "--workers", "17"], {}, "from 1 to 16"),
    (["decay"], {"CRONTASK_WORKERS": "two"}, "CRONTASK_WORKERS: 'two' is not a positive integer"),
    (["--log-level", "LOUD", "decay"], {}, "not a log level"),
    (["decay", "--log-format", "xml"], {}, "--log-format: 'xml' is not a log format"),
    (["frobnicate"], {}, "invalid choice"),
    (["recover", "--bogus"], {}, "unrecognized arguments"),
    (["recover", "--stale", "1h"], {}, "unrecognized arguments"),  # no abbreviations
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


def test_global_options_before_or_after_the_task() -> None:
    before = parse(["--log-format", "text", "--report-file=/tmp/r", "decay"], {})
    after = parse(["decay", "--log-format=text", "--report-file", "/tmp/r"], {})
    assert (before.log_format, before.report_file) == (after.log_format, after.report_file) == (
        "text", "/tmp/r")
    assert parse(["--log-level", "ERROR", "recover", "--log-level", "DEBUG"], {}).log_level == 10


@pytest.mark.parametrize(("argv", "task", "report_file"), [
    (["--log-format", "text", "decay", "--window", "garbage"], "decay", None),
    (["--log-format=text", "decay"], "decay", None),
    (["--report-file=/x/r", "process", "--batch-size", "0"], "process", "/x/r"),
    (["--report-file", "/x/r", "--log-level", "LOUD", "recover"], "recover", "/x/r"),
    (["decay", "--report-file=/x/r"], "decay", "/x/r"),
    (["--window", "garbage", "decay"], "decay", None),
    (["frobnicate", "--report-file", "/x/r"], "unknown", "/x/r"),
    (["detect-stuck"], "detect-stuck", None),
    (["--report-file"], "unknown", None),
    ([], "unknown", None),
])
def test_scan_finds_task_and_report_file_in_any_order(argv: list[str], task: str,
                                                       report_file: str | None) -> None:
    assert scan(argv, {}) == (task, report_file)


def test_scan_falls_back_to_the_environment() -> None:
    assert scan(["decay"], {"CRONTASK_REPORT_FILE": "/env/r"}) == ("decay", "/env/r")
    assert scan(["decay", "--report-file=/x"], {"CRONTASK_REPORT_FILE": "/env/r"})[1] == "/x"


@given(st.lists(st.one_of(st.sampled_from(["--report-file", "--log-format", "--window",
                                           "decay", "process", "--", "-", "--report-file=",
                                           "text", "x=y"]), st.text(max_size=12)),
                max_size=8))
def test_scan_never_raises(argv: list[str]) -> None:
    task, report_file = scan(argv, {})
    assert task in ("unknown", "recover", "decay", "process", "migrate", "detect-stuck",
                    "recover-stuck")
    assert report_file is None or report_file in " ".join(argv)


def test_flag_order_does_not_change_the_report(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    report_file = tmp_path / "report"
    code = run(["--log-format", "text", f"--report-file={report_file}", "decay", "--window",
                "garbage"], {"DATABASE_URL": URL})
    assert code == EXIT_USAGE
    report = decode(report_file.read_text())
    assert (report.task, report.status, report.reason) == ("decay", "failed", "usage")
    assert "--window" in (report.error or "")
    assert decode(capsys.readouterr().out.strip().splitlines()[-1]) == report


@pytest.mark.parametrize("url", [
    "postgresql://app:pw@db:notaport/app",
    "postgresql://app:pw@[::1/app",
    "postgresql://app:pw@db/app?sslmode=sometimes",
    "postgresql://app:pw@db/app?nosuchkey=1",
    "postgresql://app:pw%zz@db/app",
    "mysql://app:pw@db/app",
])
def test_malformed_urls_are_usage_errors_with_a_json_report(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report_file = tmp_path / "report"
    code = run(["--report-file", str(report_file), "recover"], {"DATABASE_URL": url})
    assert code == EXIT_USAGE
    out, err = capsys.readouterr()
    report = decode(report_file.read_text())
    assert (report.task, report.status, report.reason) == ("recover", "failed", "usage")
    assert json.loads(out.strip().splitlines()[-1])["reason"] == "usage"
    assert "DATABASE_URL" in (report.error or "")
    assert "Traceback" not in err
    assert "pw" not in out + err + report_file.read_text()
