"""The password never leaks, in any URL form libpq accepts, right or wrong, against a server
that really checks it (SCRAM): not one byte of it in stdout, stderr, the report file or the
rows the run wrote."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from faults_support import PASSWORD, Server, cli, report_of, rows

PORT_FORMS = ("user-info, percent-encoded", "user-info, raw '@' and ':'",
              "password query parameter", "PGPASSWORD", "PGPASSFILE")


def spellings(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote(secret, safe="@:"), secret.encode(
        "unicode_escape").decode(), "s3cr3t-" + secret.rsplit("-", 1)[1]}


def form(server: Server, database: str, kind: str, password: str,
         tmp_path: Path) -> tuple[str, dict[str, str]]:
    base = f"127.0.0.1:{server.port}/{database}"
    if kind == "user-info, percent-encoded":
        return f"postgresql://crontask:{quote(password, safe='')}@{base}", {}
    if kind == "user-info, raw '@' and ':'":
        raw = quote(password, safe="@:")  # '@' and ':' unencoded; '/', '?', '%' cannot be
        assert "@" in raw and ":" in raw
        return f"postgresql://crontask:{raw}@{base}", {}
    if kind == "password query parameter":
        return f"postgresql://crontask@{base}?password={quote(password, safe='')}", {}
    if kind == "PGPASSWORD":
        return f"postgresql://crontask@{base}", {"PGPASSWORD": password}
    passfile = tmp_path / "pgpass"
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    passfile.write_text(f"127.0.0.1:{server.port}:{database}:crontask:{escaped}\n")
    os.chmod(passfile, 0o600)
    return f"postgresql://crontask@{base}", {"PGPASSFILE": str(passfile)}


def everything(proc_out: str, proc_err: str, report_file: Path, sql: sa.Engine) -> str:
    stored = rows(sql, "SELECT coalesce(result::text, '') || coalesce(error, '') AS text"
                       " FROM job_executions")
    return proc_out + proc_err + report_file.read_text() + "".join(r.text for r in stored)


@pytest.mark.parametrize(("kind", "log_format"),
                         list(zip(PORT_FORMS, ["json", "text", "json", "text", "json"],
                                  strict=True)))
def test_right_password_runs_and_is_never_printed(server: Server, database: str,
                                                  sql: sa.Engine, tmp_path: Path, kind: str,
                                                  log_format: str) -> None:
    url, env = form(server, database, kind, PASSWORD, tmp_path)
    report_file = tmp_path / "report"
    proc = cli(["--log-format", log_format, "--log-level", "DEBUG", "--report-file",
                str(report_file), "recover"], url, extra_env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report_of(proc.stdout)["status"] == "completed"
    output = everything(proc.stdout, proc.stderr, report_file, sql)
    for secret in spellings(PASSWORD):
        assert secret not in output, kind
    assert f"127.0.0.1:{server.port}/{database}" in proc.stderr  # the URL is shown, masked


@pytest.mark.parametrize(("kind", "task"), list(zip(
    PORT_FORMS, ["recover", "decay", "process", "recover", "decay"], strict=True)))
def test_wrong_password_is_exit_3_and_never_printed(server: Server, database: str,
                                                    tmp_path: Path, kind: str,
                                                    task: str) -> None:
    wrong = "Wr0ng@pa:ss/w?rd-" + PASSWORD.rsplit("-", 1)[1][::-1]
    url, env = form(server, database, kind, wrong, tmp_path)
    report_file = tmp_path / "report"
    proc = cli(["--report-file", str(report_file), task], url, extra_env=env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    report = report_of(proc.stdout)
    assert (report["task"], report["status"], report["reason"]) == (
        task, "failed", "database_unavailable")
    assert "password authentication failed" in report["error"]
    assert "SELECT" not in report["error"]
    output = proc.stdout + proc.stderr + report_file.read_text()
    for secret in spellings(wrong) | spellings(PASSWORD):
        assert secret not in output, (kind, task)
    assert "Traceback" not in proc.stderr


def test_a_one_letter_password_mangles_nothing(server: Server, database: str,
                                               tmp_path: Path) -> None:
    url = f"postgresql://onechar:a@127.0.0.1:{server.port}/{database}"
    report_file = tmp_path / "report"
    proc = cli(["--log-format", "text", "--report-file", str(report_file), "recover"], url)
    assert proc.returncode == 0, proc.stderr
    assert f"recover against postgresql://onechar:***@127.0.0.1:{server.port}/{database}" in (
        proc.stderr)
    assert proc.stderr.count("***") == 1  # the user-info, and nothing else
    assert "recovered" in proc.stderr and "abandoned" in proc.stderr
    report = report_of(proc.stdout)
    assert report["status"] == "completed" and "***" not in proc.stdout
    bad = cli(["--report-file", str(report_file), "recover"],
              f"postgresql://onechar:b@127.0.0.1:{server.port}/{database}")
    assert bad.returncode == 3
    error = report_of(bad.stdout)["error"]
    assert "password authentication failed for user \"onechar\"" in error
    assert error.count("***") == 1


@pytest.mark.parametrize("url", [
    "postgresql://crontask:{pw}@127.0.0.1:notaport/db",
    "postgresql://crontask:{pw}@[127.0.0.1/db",
    "postgresql://crontask:{pw}@127.0.0.1/db?sslmode=whenever",
    "postgresql://crontask:{pw}@127.0.0.1/db?password={pw}&bogus=1",
])
def test_a_malformed_url_is_exit_2_with_a_report_and_no_password(url: str,
                                                                  tmp_path: Path) -> None:
    report_file = tmp_path / "report"
    proc = cli(["--report-file", str(report_file), "decay"],
               url.format(pw=quote(PASSWORD, safe="")))
    assert proc.returncode == 2
    report = report_of(proc.stdout)
    assert (report["task"], report["status"], report["reason"]) == ("decay", "failed", "usage")
    assert "Traceback" not in proc.stderr
    output = proc.stdout + proc.stderr + report_file.read_text()
    for secret in spellings(PASSWORD):
        assert secret not in output
