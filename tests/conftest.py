"""Rules for every tier: tests that need a cluster are marked and, without one, skipped; property
tests run under one fast, deterministic Hypothesis profile."""

from __future__ import annotations

import os
import pathlib

import pytest
from hypothesis import HealthCheck, settings

from tests.kube import cluster_skip_reason

HERE = pathlib.Path(__file__).resolve().parent
CLUSTER_TIERS = (HERE / "cluster", HERE / "e2e")

# Deterministic (the same examples on every run and machine: a CI failure reproduces locally),
# bounded (the unit tier stays quick on 2 cores), without per-example deadlines (timing on a
# shared machine must never fail a test) and without an example database written into the
# checkout. HYPOTHESIS_PROFILE=deep explores more, randomly.
settings.register_profile("ci", derandomize=True, max_examples=50, deadline=None,
                          database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("deep", max_examples=5000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = cluster_skip_reason()
    for item in items:
        if any(item.path.is_relative_to(tier) for tier in CLUSTER_TIERS):
            item.add_marker(pytest.mark.e2e)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
