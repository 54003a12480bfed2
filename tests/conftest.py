"""Fixtures shared by the test suite."""

from collections.abc import Iterator

import pytest
from freezegun import freeze_time

from tests.emulator import EmulatorServer, Org, OrgConfig
from tests.fakes import FakeSession, FrozenTime


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """A running Salesforce emulator over a small seeded org (200 rows per large object),
    with default knobs; fresh for each test."""
    with EmulatorServer(Org(OrgConfig(rows=200))) as server:
        yield server


@pytest.fixture
def frozen(request: pytest.FixtureRequest) -> Iterator[FrozenTime]:
    """Time frozen at the test module's `T0`; it moves only when the test moves it (asyncio's own
    clock still runs, so awaits complete)."""
    with freeze_time(request.module.T0, tick=False, real_asyncio=True) as factory:
        yield FrozenTime(factory)


@pytest.fixture
def session() -> FakeSession:
    """A scripted Salesforce session (tests/fakes.py), fresh for each test."""
    return FakeSession()
