"""Fixtures shared by the test suite."""

from collections.abc import Iterator

import pytest

from tests.emulator import EmulatorServer, Org, OrgConfig


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """A running Salesforce emulator over a small seeded org (200 rows per large object),
    with default knobs; fresh for each test."""
    with EmulatorServer(Org(OrgConfig(rows=200))) as server:
        yield server
