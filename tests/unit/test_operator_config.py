"""Flags (and their environment variables), the process identity and the log format."""

from __future__ import annotations

import json
import logging
from typing import Any

import kopf
import pytest

from crontask_operator import config as cfg
from crontask_operator import defaults


def test_defaults_come_from_the_table() -> None:
    config = cfg.from_args([])
    assert config.resync_interval == defaults.RESYNC_SECONDS
    assert config.workers == defaults.WORKERS
    assert dict(config.job_defaults.requests) == dict(defaults.JOB_REQUESTS)
    assert dict(config.job_defaults.limits) == dict(defaults.JOB_LIMITS)
    assert config.job_defaults.image == defaults.JOB_IMAGE


def test_flags_from_environment(monkeypatch: Any) -> None:
    monkeypatch.setenv("CRONTASK_OPERATOR_NAMESPACES", "team-a, team-b")
    monkeypatch.setenv("CRONTASK_OPERATOR_JOB_IMAGE", "crontask-jobs:1.0")
    monkeypatch.setenv("CRONTASK_OPERATOR_JOB_LIMITS", "memory=1024Mi,cpu=1000m")
    monkeypatch.setenv("CRONTASK_OPERATOR_RESYNC_INTERVAL", "60")
    config = cfg.from_args([])
    assert config.namespaces == ("team-a", "team-b")
    assert config.job_defaults.image == "crontask-jobs:1.0"
    assert config.job_defaults.limits == {"memory": "1Gi", "cpu": "1"}, "the server's spelling"
    assert config.resync_interval == 60


@pytest.mark.parametrize("args", [["--job-limits", "memory=lots"], ["--job-requests", "cpu"],
                                  ["--job-limits", "memory=-1"], ["--resync-interval", "0"],
                                  ["--workers", "-2"], ["--resync-interval", "soon"]])
def test_bad_flags_stop_the_operator_with_a_message(args: list[str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cfg.from_args(args)
    assert "error:" in capsys.readouterr().err


def test_json_logs_survive_kopf_records() -> None:
    """Kopf's per-object records carry its settings object; the line must still be JSON."""
    from crontask_operator.logs import OperatorJsonFormatter

    record = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "Handler %r done.",
                               ("x",), None)
    record.settings = kopf.OperatorSettings()  # type: ignore[attr-defined]
    record.k8s_skip = False  # type: ignore[attr-defined]
    record.k8s_ref = {"kind": "CronTask", "namespace": "ns", "name": "process"}  # type: ignore[attr-defined]
    line = json.loads(OperatorJsonFormatter().format(record))
    assert line["message"] == "Handler 'x' done."
    assert line["level"] == "INFO"
    assert line["object"] == {"kind": "CronTask", "namespace": "ns", "name": "process"}
    assert "settings" not in line


def test_identity_without_a_passwd_entry(monkeypatch: Any) -> None:
    """uid 65532 has no passwd entry: Kopf's getpass.getuser() would crash the operator."""
    import getpass
    import os

    from crontask_operator.__main__ import ensure_identity

    def no_user() -> str:
        raise KeyError("getpwuid(): uid not found: 65532")

    monkeypatch.setenv("POD_ID", "")  # recorded, so the value set below is undone
    monkeypatch.setattr(getpass, "getuser", no_user)
    ensure_identity()
    assert os.environ["POD_ID"].startswith("crontask-operator@")
