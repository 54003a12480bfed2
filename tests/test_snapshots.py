"""Spec, discover and validate through `tests/flow_harness/`, one connector process per
request as Flow runs them, against the Salesforce emulator.

The catalog is written to a temporary directory (the emulator listens on a random port, so
its URL is passed as the config), and `discover(write=True)` fills it in the way plain
`flowctl raw discover` does, so validate runs on exactly what discover produced.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import flow_harness
from tests.capture_support import CATALOG, REPO, emulator_config
from tests.emulator import EmulatorServer


@pytest.fixture
def source(tmp_path: Path, emulator: EmulatorServer) -> Iterator[flow_harness.FlowSource]:
    catalog = tmp_path / "test.flow.yaml"
    catalog.write_text(CATALOG)
    yield flow_harness.load_source(catalog, config=emulator_config(emulator), cwd=REPO)


def test_spec(source: flow_harness.FlowSource, snapshot: Any) -> None:
    assert snapshot("stdout.json") == flow_harness.spec(source)


def test_discover(source: flow_harness.FlowSource, emulator: EmulatorServer, snapshot: Any) -> None:
    bindings = flow_harness.discover(source)
    assert snapshot("stdout.json") == sorted(bindings, key=lambda b: b["recommendedName"])
    # One process, one sign-in, however many objects it describes.
    assert emulator.counters.tokens_issued == 1
    assert emulator.counters.requests["describe"] == len(bindings)


def test_validate_what_discover_wrote(source: flow_harness.FlowSource, emulator: EmulatorServer, snapshot: Any) -> None:
    flow_harness.discover(source, write=True)
    written = flow_harness.load_source(source.path, config=source.config, cwd=REPO)
    assert snapshot("stdout.json") == flow_harness.validate(written)
    # Each process signed in exactly once: discover's, then validate's.
    assert emulator.counters.tokens_issued == emulator.counters.requests["token"] == 2


def test_validate_reports_what_to_fix(source: flow_harness.FlowSource, emulator: EmulatorServer) -> None:
    flow_harness.discover(source, write=True)
    written = flow_harness.load_source(source.path, config=source.config, cwd=REPO)
    emulator.knobs.api_enabled = False
    with pytest.raises(flow_harness.ConnectorError) as caught:
        flow_harness.validate(written)
    assert caught.value.exit_code == 1
    assert any("API is disabled for this org or user" in line for line in caught.value.stderr)
