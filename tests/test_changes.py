"""The Bulk path of the delta stream (changes.py) against a scripted session: each page of a delta
window's job is one transaction with the state after it, so thousands of rows in one second are
never read twice, and a job lost mid-read is exported again only after its last row emitted."""

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from source_bulk_export.api import changes_soql
from source_bulk_export.changes import _bulk_window, _Progress
from source_bulk_export.checkpoints import Binding
from source_bulk_export.exports import Exports
from source_bulk_export.fields import ObjectPlan, plan_object
from source_bulk_export.jobs import BulkJobs
from source_bulk_export.models import SObjectDescribe
from source_bulk_export.rest import RestQuery
from source_bulk_export.states import ReadingPage, ToSubmit, Window
from source_bulk_export.waits import Waits
from tests.fakes import FakeSession, FrozenTime, RecordedCheckpoints, binding, csv_page, page_stream, sf_error

LOG = logging.getLogger("test_changes")
T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
JOB = "750000000000001AAA"
BURST = "2026-12-01T11:50:01.000Z"  # every row of the window in one second
HEADER = ("Id", "Name", "SystemModstamp")
ROWS = [[f"001{i:015d}", f"n{i}", BURST] for i in range(5)]
WINDOW = Window(T0 - timedelta(minutes=10), T0 - timedelta(minutes=5), T0 - timedelta(minutes=5))


def plan() -> ObjectPlan:
    return plan_object(SObjectDescribe.model_validate({"name": "Account", "fields": [
        {"name": "Id", "type": "id"}, {"name": "Name", "type": "string"},
        {"name": "SystemModstamp", "type": "datetime"}]}))


def select(after: datetime, through: datetime, after_row: tuple[datetime, str] | None = None) -> str:
    return changes_soql(plan(), after, through, after_row)


async def run(session: FakeSession, frozen: FrozenTime, shared: Binding, cursor: datetime = WINDOW.lower,
              ) -> list[Any]:
    waits = Waits(sleep=frozen.sleep)
    exports = Exports(BulkJobs(session, 1, waits), RestQuery(session), waits)  # type: ignore[arg-type]
    return [item async for item in _bulk_window(exports, LOG, plan(), shared, _Progress(cursor), select)]


def exporting(state: Any) -> tuple[Binding, RecordedCheckpoints]:
    shared = binding()
    shared.delta_export = state
    assert isinstance(shared.checkpoints, RecordedCheckpoints)
    return shared, shared.checkpoints


def reading(locator: str | None = None, rows_before: int = 0, unit: Window = WINDOW) -> ReadingPage[Window]:
    return ReadingPage(unit, JOB, T0 - timedelta(minutes=4), len(ROWS), locator, rows_before)


@pytest.mark.asyncio
async def test_each_page_lands_with_the_state_after_it_and_the_cursor_moves_at_the_end(
    session: FakeSession, frozen: FrozenTime
) -> None:
    session.script("GET", f"/jobs/query/{JOB}/results", page_stream(csv_page(ROWS[:3], HEADER), "L2", 3))
    session.script("GET", f"/jobs/query/{JOB}/results", page_stream(csv_page(ROWS[3:], HEADER), None, 2), locator="L2")

    shared, checkpoints = exporting(reading())
    items = await run(session, frozen, shared)

    burst_second = datetime(2026, 12, 1, 11, 50, 1, tzinfo=UTC)
    first, last = checkpoints.patches[0]["delta_export"], checkpoints.patches[1]["delta_export"]
    # The first page's rows went out with a state that resumes after its last row, in the same second.
    assert (first["phase"], first["locator"], first["after_id"]) == ("reading", "L2", ROWS[2][0])
    assert datetime.fromisoformat(first["after_stamp"]) == burst_second
    assert [d["Id"] for d in checkpoints.documents] == [r[0] for r in ROWS]
    assert last["phase"] == "reading" and last["after_id"] == ROWS[4][0]  # kept until the cursor moves
    assert items == [WINDOW.upper]  # no document through the delta task: they all went with the states
    assert shared.delta_export is None and checkpoints.patches[-1] == {"delta_export": None}


@pytest.mark.asyncio
async def test_a_job_lost_mid_window_is_exported_again_after_its_last_row_emitted(
    session: FakeSession, frozen: FrozenTime
) -> None:
    session.script("GET", f"/jobs/query/{JOB}/results", sf_error(404, "NOT_FOUND", "gone"), locator="L2")
    mid_second = Window(WINDOW.lower, WINDOW.upper, WINDOW.through,
                        after_stamp=datetime(2026, 12, 1, 11, 50, 1, tzinfo=UTC), after_id=ROWS[2][0])
    session.script("POST", "/jobs/query", sf_error(400, "STOP", "the test only looks at the query"))

    with pytest.raises(Exception, match="STOP"):
        await run(session, frozen, exporting(reading("L2", 3, mid_second))[0])

    query = session.calls_to("POST")[0].json["query"]  # type: ignore[index]
    assert query.endswith(f"(SystemModstamp = 2026-12-01T11:50:01Z AND Id > '{ROWS[2][0]}')) "
                          "ORDER BY SystemModstamp, Id")


@pytest.mark.asyncio
async def test_a_job_of_an_earlier_plan_is_exported_again_not_read_forever(
    session: FakeSession, frozen: FrozenTime
) -> None:
    # A field was added to the object after the job was submitted: its pages lack the planned column.
    session.script("GET", f"/jobs/query/{JOB}/results",
                   page_stream(csv_page([r[:-1] for r in ROWS[3:]], HEADER[:-1]), None, 2), locator="L2")
    mid_second = Window(WINDOW.lower, WINDOW.upper, WINDOW.through,
                        after_stamp=datetime(2026, 12, 1, 11, 50, 1, tzinfo=UTC), after_id=ROWS[2][0])
    session.script("POST", "/jobs/query", sf_error(400, "STOP", "the next job is not the test's concern"))
    shared, checkpoints = exporting(reading("L2", 3, mid_second))

    with pytest.raises(Exception, match="STOP"):
        await run(session, frozen, shared)

    assert checkpoints.documents == []
    assert shared.delta_export == ToSubmit(mid_second, since=T0 - timedelta(minutes=4) + timedelta(seconds=1))


@pytest.mark.asyncio
async def test_rows_a_cursor_already_covers_are_not_emitted_again(session: FakeSession, frozen: FrozenTime) -> None:
    """The last page of the last sub-window, read again after a restart that came after the cursor moved."""
    session.script("GET", f"/jobs/query/{JOB}/results", page_stream(csv_page(ROWS[3:], HEADER), None, 2), locator="L2")

    shared, checkpoints = exporting(reading("L2", 3))
    items = await run(session, frozen, shared, cursor=WINDOW.upper)

    assert checkpoints.documents == [] and items == []
    assert shared.delta_export is None


@pytest.mark.asyncio
async def test_the_next_sub_window_is_checkpointed_with_the_last_page_of_this_one(
    session: FakeSession, frozen: FrozenTime
) -> None:
    half = Window(WINDOW.lower, WINDOW.lower + timedelta(minutes=2), WINDOW.through)
    session.script("GET", f"/jobs/query/{JOB}/results", page_stream(csv_page(ROWS, HEADER), None, 5))
    session.script("POST", "/jobs/query", sf_error(400, "STOP", "the next job is not the test's concern"))

    shared, checkpoints = exporting(reading(unit=half))
    with pytest.raises(Exception, match="STOP"):
        await run(session, frozen, shared)

    following = Window(half.upper, half.upper + timedelta(minutes=2), WINDOW.through)
    assert checkpoints.patches[0]["delta_export"]["phase"] == "to_submit"
    assert [d["Id"] for d in checkpoints.documents] == [r[0] for r in ROWS]
    # Marked from the second after the job just read was created: the next job can only come later.
    assert shared.delta_export == ToSubmit(following, since=T0 - timedelta(minutes=4) + timedelta(seconds=1))
    assert session.calls_to("POST")[0].json["query"].endswith(  # type: ignore[index]
        "SystemModstamp > 2026-12-01T11:52:00Z AND SystemModstamp <= 2026-12-01T11:54:00Z ORDER BY SystemModstamp, Id")
