"""Rules for every tier: tests that need a cluster are marked and, without one, skipped."""

from __future__ import annotations

import pathlib

import pytest

from tests.kube import cluster_skip_reason

HERE = pathlib.Path(__file__).resolve().parent
CLUSTER_TIERS = (HERE / "cluster", HERE / "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = cluster_skip_reason()
    for item in items:
        if any(item.path.is_relative_to(tier) for tier in CLUSTER_TIERS):
            item.add_marker(pytest.mark.e2e)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
