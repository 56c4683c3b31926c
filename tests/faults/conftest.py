"""Fault tier fixtures: servers the tests own (start, stop, restart, starve, lock against).

`server` is shared by the tests that do not break it; `own_server` is a fresh one for a test
that restarts it or changes its settings (`@pytest.mark.parametrize("own_server", [opts],
indirect=True)`). Every test gets a fresh database copied from a migrated template.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from faults_support import Server

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.faults)


def _started(name: str, options: str = "") -> Server:
    server = Server(name, options)
    server.start()
    server.setup()
    return server


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    s = _started("shared")
    try:
        yield s
    finally:
        s.destroy()


@pytest.fixture
def own_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    s = _started("own", getattr(request, "param", ""))
    try:
        yield s
    finally:
        s.destroy()


@pytest.fixture
def database(server: Server) -> Iterator[str]:
    name = server.fresh_database()
    try:
        yield name
    finally:
        server.drop_database(name)


@pytest.fixture
def url(server: Server, database: str) -> str:
    """DATABASE_URL for the CLI: the `crontask` role, its password percent-encoded."""
    return server.url(database)


@pytest.fixture
def sql(server: Server, database: str) -> Iterator[sa.Engine]:
    """A superuser engine on the test's database, for arranging and asserting."""
    engine = server.admin(database)
    try:
        yield engine
    finally:
        engine.dispose()
