"""A small fault matrix in the suite (the whole one is `make chaos`, see tests/chaos/).

Each cell captures a small org with the connector as a process, restarted by its pattern
while the emulator injects its faults, until the capture is complete; it passes when every
bound object's collection equals the emulator's truth field by field and the job, slice,
re-submission and re-exported-row budgets hold (tests/chaos/measure.py). Together the
cells meet every fault (all at once, in `everything`) and every restart pattern.
"""

from collections.abc import Collection
from pathlib import Path

import pytest

from tests import flow_harness as fh
from tests.chaos import Caps, OrgSize, cell_named, discover_catalog, format_table, run_cell
from tests.chaos.runner import ALL_OBJECTS

# 2,000 Accounts in 500-row pages: a 2,000-row slice of four pages (which a too-large failure
# splits in two: the connector splits down to 1,000 rows), so restarts land between pages
# and between slices; other large objects hold 100 rows.
SMALL_ORG = OrgSize(accounts=2_000, rows=100, page_rows=500, slice_rows=2_000)
# A clean capture of that org takes a few seconds, with every fault at once about fifteen; a
# cell still running at the cap has failed. A sealed verdict (an unjustified re-submission)
# stops a cell at once.
CAPS = Caps(sessions=40, seconds=30.0, fail_fast=True)
SEED = 7
# Restarting after every checkpoint costs a session per page of every object, so that cell
# binds the objects its faults and changes need, and the snapshot object.
FEW_OBJECTS = frozenset({"Account", "Opportunity", "UserRole"})


CELLS = [
    pytest.param("everything/random", ALL_OBJECTS),
    pytest.param("results-expire/checkpoint", FEW_OBJECTS),
    pytest.param("request-limit/backoff", ALL_OBJECTS),
    pytest.param("burst/none", ALL_OBJECTS),
]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> fh.FlowSource:
    return discover_catalog(Path(tmp_path_factory.mktemp("chaos")))


@pytest.mark.parametrize(("name", "objects"), CELLS)
def test_the_capture_survives_the_cell(catalog: fh.FlowSource, name: str, objects: Collection[str]) -> None:
    report = run_cell(catalog, cell_named(name), SMALL_ORG, CAPS, SEED, objects)
    assert report.passed, "\n" + format_table([report])
