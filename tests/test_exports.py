"""The drivers of exports.py against a scripted session, in frozen time: what each persisted state
makes the connector do, and which state it checkpoints next."""

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from source_bulk_export.exports import Exports, Path, UncapturableError, choose_path, hold_for
from source_bulk_export.fields import ObjectPlan, plan_object
from source_bulk_export.jobs import BulkJobs
from source_bulk_export.models import SObjectDescribe
from source_bulk_export.rest import RestQuery
from source_bulk_export.states import (
    Complete,
    JobBackingOff,
    JobRunning,
    Next,
    ReadingPage,
    ReadingRest,
    Slice,
    ToSubmit,
    Unit,
    Whole,
)
from source_bulk_export.waits import Waits
from tests.fakes import (
    FakeSession,
    FrozenTime,
    RecordedCheckpoints,
    binding,
    csv_page,
    job_json,
    page_stream,
    sf_error,
)

LOG = logging.getLogger("test_exports")
T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
LAG = timedelta(minutes=5)
JOB = "750000000000001AAA"
SOQL = "SELECT Id, Name, SystemModstamp FROM Account"


def account_plan() -> ObjectPlan:
    return plan_object(SObjectDescribe.model_validate({"name": "Account", "fields": [
        {"name": "Id", "type": "id"}, {"name": "Name", "type": "string"},
        {"name": "SystemModstamp", "type": "datetime"}]}))


def exports(session: FakeSession, frozen: FrozenTime, cap: int = 2, stopping: asyncio.Event | None = None) -> Exports:
    waits = Waits(sleep=frozen.sleep)
    waits.stopping = stopping
    return Exports(BulkJobs(session, cap, waits, max_records=2), RestQuery(session), waits)  # type: ignore[arg-type]


def created_json(job_id: str, created: datetime = T0) -> bytes:
    body = json.loads(job_json(job_id, "UploadComplete"))
    body["createdDate"] = created.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    return json.dumps(body).encode()


async def states_of[U: Unit](driver: AsyncGenerator[Next[U], None]) -> list[object]:
    return [outcome.state async for outcome in driver]


def names(items: Sequence[object]) -> list[str]:
    return [type(item).__name__ for item in items]


# --- the one decision: Bulk or REST ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("refused", "fits", "rows", "path"),
    [
        (None, True, None, Path.BULK),  # a backfill: size unknown, assume large
        (None, True, 50_000, Path.REST),  # at the threshold
        (None, True, 50_001, Path.BULK),
        (None, False, 10, Path.BULK),  # too long for a REST URL, however small
        ("INVALIDENTITY", True, None, Path.REST),  # refused, remembered
        ("INVALIDENTITY", True, 10_000_000, Path.REST),
    ],
)
def test_choose_path(refused: str | None, fits: bool, rows: int | None, path: Path) -> None:
    assert choose_path(bulk_refused=refused, fits_rest_url=fits, rows=rows, threshold=50_000) is path


def test_an_object_no_api_can_read_is_a_clear_error() -> None:
    with pytest.raises(UncapturableError, match="too long for a REST URL"):
        choose_path(bulk_refused="INVALIDENTITY", fits_rest_url=False, rows=None, threshold=50_000)


# --- the job lifecycle ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_new_unit_is_marked_before_its_job_exists_and_the_job_reported_before_any_poll(
    session: FakeSession, frozen: FrozenTime
) -> None:
    session.script("POST", "/jobs/query", created_json(JOB))
    session.script("GET", f"/jobs/query/{JOB}", job_json(JOB, "InProgress"), job_json(JOB, "JobComplete", rows=3))
    driver = exports(session, frozen).run_job(LOG, ToSubmit(Whole()), lambda _: SOQL, "query", "Account")

    marked = await anext(driver)
    assert marked.state == ToSubmit(Whole(), since=T0)
    assert session.calls == []  # checkpointed before the job can exist
    first = await anext(driver)
    assert first.state == JobRunning(Whole(), 0, JOB, T0)
    assert session.calls_to("GET") == []  # checkpointed before any poll
    assert [o.state async for o in driver] == [ReadingPage(Whole(), JOB, T0, 3, None, 0)]


@pytest.mark.asyncio
async def test_a_running_job_found_in_the_checkpoint_is_polled_not_submitted(
    session: FakeSession, frozen: FrozenTime
) -> None:
    session.script("GET", f"/jobs/query/{JOB}", job_json(JOB, "InProgress"), job_json(JOB, "JobComplete", rows=3))
    resumed = JobRunning(Whole(), 1, JOB, T0 - timedelta(minutes=10))

    reached = await states_of(exports(session, frozen).run_job(LOG, resumed, lambda _: SOQL, "query", "Account"))

    assert reached == [ReadingPage(Whole(), JOB, resumed.created_at, 3, None, 0)]
    assert session.calls_to("POST") == []


@pytest.mark.asyncio
async def test_a_checkpointed_job_salesforce_lost_is_submitted_again(session: FakeSession, frozen: FrozenTime) -> None:
    gone = "750000000000009AAA"
    session.script("GET", f"/jobs/query/{gone}", sf_error(404, "NOT_FOUND", "The requested resource does not exist"))
    session.script("POST", "/jobs/query", created_json(JOB))
    session.script("GET", f"/jobs/query/{JOB}", job_json(JOB, "JobComplete", rows=3))

    reached = await states_of(exports(session, frozen).run_job(
        LOG, JobRunning(Whole(), 2, gone, T0), lambda _: SOQL, "query", "Account"))

    assert names(reached) == ["ToSubmit", "JobRunning", "ReadingPage"]
    # Losing the job is not a failure of the unit; the new job can only come after the lost one.
    assert reached[0] == ToSubmit(Whole(), 2, since=T0 + timedelta(seconds=1))


@pytest.mark.asyncio
async def test_transient_failures_are_retried_after_their_backoff(session: FakeSession, frozen: FrozenTime) -> None:
    session.script("POST", "/jobs/query", created_json("750A"), created_json("750B"), created_json("750C"))
    session.script("GET", "/jobs/query/750A", job_json("750A", "Failed", error="UNKNOWN_EXCEPTION: try again"))
    session.script("GET", "/jobs/query/750B", job_json("750B", "Failed", error="TooManyLockFailure : locks"))
    session.script("GET", "/jobs/query/750C", job_json("750C", "JobComplete", rows=5))
    session.script("DELETE", "/jobs/query/750A", b"")
    session.script("DELETE", "/jobs/query/750B", b"")

    reached = await states_of(exports(session, frozen).run_job(
        LOG, ToSubmit(Whole()), lambda _: SOQL, "query", "Account"))

    assert names(reached) == ["ToSubmit", "JobRunning", "JobBackingOff", "ToSubmit", "JobRunning", "JobBackingOff",
                              "ToSubmit", "JobRunning", "ReadingPage"]
    backoffs = [s for s in reached if isinstance(s, JobBackingOff)]
    assert [b.attempt for b in backoffs] == [1, 2]
    assert frozen.sleeps == [30.0, 60.0]  # the jobs complete on their first poll
    assert [c.path for c in session.calls_to("DELETE")] == ["/jobs/query/750A", "/jobs/query/750B"]


@pytest.mark.asyncio
async def test_a_restart_during_a_backoff_waits_only_what_remains(session: FakeSession, frozen: FrozenTime) -> None:
    session.script("POST", "/jobs/query", created_json(JOB))
    session.script("GET", f"/jobs/query/{JOB}", job_json(JOB, "JobComplete", rows=1))
    # Checkpointed by a process that failed its second attempt 40 s ago, with a 60 s backoff.
    found = JobBackingOff(Whole(), 2, retry_at=T0 + timedelta(seconds=20), failure="InternalServerError")

    reached = await states_of(exports(session, frozen).run_job(LOG, found, lambda _: SOQL, "query", "Account"))

    assert frozen.sleeps == [20.0]
    assert reached[0] == ToSubmit(Whole(), 2, since=T0 + timedelta(seconds=20))
    assert names(reached)[1:] == ["JobRunning", "ReadingPage"]


@pytest.mark.asyncio
async def test_the_fourth_transient_failure_in_a_row_is_reported_across_processes(
    session: FakeSession, frozen: FrozenTime
) -> None:
    session.script("POST", "/jobs/query", created_json(JOB))
    session.script("GET", f"/jobs/query/{JOB}", job_json(JOB, "Failed", error="InternalServerError"))
    session.script("DELETE", f"/jobs/query/{JOB}", b"")
    # Three attempts failed in earlier processes: this one is the fourth.
    outcomes = [o async for o in exports(session, frozen).run_job(
        LOG, ToSubmit(Whole(), attempt=3), lambda _: SOQL, "query", "Account")]

    last = outcomes[-1]
    assert isinstance(last.state, JobBackingOff) and last.state.attempt == 4
    assert last.report is not None and "failed 4 times" in str(last.report)
    assert len(session.calls_to("POST")) == 1


@pytest.mark.asyncio
async def test_a_graceful_stop_during_a_backoff_leaves_the_state_as_it_was(
    session: FakeSession, frozen: FrozenTime
) -> None:
    stopping = asyncio.Event()
    stopping.set()
    found = JobBackingOff(Whole(), 1, retry_at=T0 + timedelta(minutes=1), failure="InternalServerError")

    reached = await states_of(exports(session, frozen, stopping=stopping).run_job(
        LOG, found, lambda _: SOQL, "query", "Account"))

    assert reached == [] and session.calls == []


@pytest.mark.asyncio
async def test_a_split_resubmits_the_smaller_unit_with_its_own_soql(session: FakeSession, frozen: FrozenTime) -> None:
    session.script("POST", "/jobs/query", created_json("750A"), created_json("750B"))
    session.script("GET", "/jobs/query/750A", job_json("750A", "Failed", error="QUERY_TIMEOUT: too long"))
    session.script("GET", "/jobs/query/750B", job_json("750B", "JobComplete", rows=2))
    session.script("DELETE", "/jobs/query/750A", b"")

    reached = await states_of(exports(session, frozen).run_job(
        LOG, ToSubmit(Slice(None, 4000)), lambda s: f"{SOQL} LIMIT {s.rows}", "query", "Account"))

    assert names(reached) == ["ToSubmit", "JobRunning", "ToSubmit", "JobRunning", "ReadingPage"]
    assert [c.json["query"] for c in session.calls_to("POST")] == [  # type: ignore[index]
        f"{SOQL} LIMIT 4000", f"{SOQL} LIMIT 2000"]


@pytest.mark.asyncio
async def test_the_concurrency_cap_makes_an_extra_job_wait(session: FakeSession, frozen: FrozenTime) -> None:
    ids = ["750A", "750B", "750C"]
    session.script("POST", "/jobs/query", *[created_json(i) for i in ids])
    for i in ids:
        session.script("GET", f"/jobs/query/{i}", job_json(i, "InProgress"))
    shared = exports(session, frozen, cap=2)

    async def run() -> list[object]:
        return await states_of(shared.run_job(LOG, ToSubmit(Whole()), lambda _: SOQL, "query", "Account"))

    tasks = [asyncio.create_task(run()) for _ in ids]
    while len(session.calls_to("GET")) < 10:
        await asyncio.sleep(0)
    assert len(session.calls_to("POST")) == 2  # the third waits for a slot

    session.script("GET", "/jobs/query/750A", job_json("750A", "JobComplete"))
    while len(session.calls_to("POST")) < 3:
        await asyncio.sleep(0)
    for i in ids[1:]:
        session.script("GET", f"/jobs/query/{i}", job_json(i, "JobComplete"))
    finished = await asyncio.gather(*tasks)
    assert [s[-1].job_id for s in finished] == ids  # type: ignore[attr-defined]


# --- the backfill driver --------------------------------------------------------------------------

ROWS = [[f"001{i:015d}", f"Name {i}", "2026-01-01T00:00:00.000Z"] for i in range(3)]
HEADER = ("Id", "Name", "SystemModstamp")


def select(part: Slice) -> str:
    return f"{SOQL} WHERE Id > '{part.after_id}' ORDER BY Id LIMIT {part.rows}"


@pytest.mark.asyncio
async def test_a_slice_is_submitted_waited_for_and_read_page_by_page_holding_the_delta_stream(
    session: FakeSession, frozen: FrozenTime
) -> None:
    session.script("POST", "/jobs/query", created_json(JOB, T0 - timedelta(seconds=2)))
    session.script("GET", f"/jobs/query/{JOB}", job_json(JOB, "JobComplete", rows=3))
    session.script("GET", f"/jobs/query/{JOB}/results", page_stream(csv_page(ROWS[:2], HEADER), "L2", 2))
    session.script("GET", f"/jobs/query/{JOB}/results", page_stream(csv_page(ROWS[2:], HEADER), None, 1), locator="L2")
    session.script("DELETE", f"/jobs/query/{JOB}", b"")
    driver, plan, shared = exports(session, frozen), account_plan(), binding()
    holds: list[datetime | None] = []

    async def call(state: object) -> list[Any]:
        items = []
        async for item in driver.backfill(LOG, plan, shared, state, select, LAG):  # type: ignore[arg-type]
            items.append(item)
            holds.append(shared.hold)
        return items

    first = await call(ToSubmit(Slice(None, 4)))
    assert names(first) == ["ToSubmit", "JobRunning", "ReadingPage", "dict", "dict", "ReadingPage"]
    assert first[-1] == ReadingPage(Slice(ROWS[1][0], 4), JOB, T0 - timedelta(seconds=2), 3, "L2", 2)
    # From before the job exists (its mark - lag) until its last page is read (the job's creation - lag),
    # the delta stream reads nothing newer than the job may hold an older version of.
    assert holds[:2] == [T0 - LAG] * 2
    assert holds[2:] == [T0 - timedelta(seconds=2) - LAG] * 4
    assert session.calls_to("DELETE") == []  # its checkpoint names a page still to read

    second = await call(first[-1])
    assert [d["Id"] for d in second[:-1]] == [ROWS[2][0]]
    assert second[-1] == Complete()  # 3 rows in a slice of 4: the keyset walk reached the end
    assert shared.hold is None
    # Left for FINISHED_JOB_GRACE_S after the checkpoint past its last page, then deleted.
    assert session.calls_to("DELETE") == []
    assert await call(Complete()) == []


@pytest.mark.asyncio
async def test_a_marked_slice_holds_the_delta_stream_at_its_mark_while_an_orphan_may_be_adopted(
    session: FakeSession, frozen: FrozenTime
) -> None:
    # Restored from a killed process: the job it may have created is as old as the mark, not as now.
    mark = T0 - timedelta(minutes=3)
    shared = binding()
    driver = exports(session, frozen)
    driver.restored("Account", "query", ToSubmit(Slice(None, 4), since=mark))
    session.script("GET", "/jobs/query", json.dumps({"done": True, "records": [], "nextRecordsUrl": None}).encode())
    session.script("POST", "/jobs/query", sf_error(400, "STOP", "the test looks at the hold only"))

    with pytest.raises(Exception, match="STOP"):
        async for _ in driver.backfill(LOG, account_plan(), shared, ToSubmit(Slice(None, 4), since=mark), select, LAG):
            pass

    assert shared.hold == mark - LAG


@pytest.mark.asyncio
async def test_a_slice_whose_job_vanished_mid_read_goes_on_from_the_last_id(
    session: FakeSession, frozen: FrozenTime
) -> None:
    session.script("GET", f"/jobs/query/{JOB}/results", sf_error(404, "NOT_FOUND", "gone"), locator="L2")
    reading = ReadingPage(Slice(ROWS[1][0], 3), JOB, T0, 3, "L2", 2)

    items = [i async for i in exports(session, frozen).backfill(LOG, account_plan(), binding(), reading, select, LAG)]

    assert items == [ToSubmit(Slice(ROWS[1][0], 3), since=T0 + timedelta(seconds=1))]


@pytest.mark.asyncio
async def test_a_slice_whose_job_has_another_plan_s_columns_is_submitted_again(
    session: FakeSession, frozen: FrozenTime
) -> None:
    # Submitted before a field was added (or adopted by mistake): no page of it can be read as planned.
    session.script("GET", f"/jobs/query/{JOB}/results", page_stream(csv_page([r[:2] for r in ROWS[2:]],
                                                                              HEADER[:2]), None, 1), locator="L2")
    reading = ReadingPage(Slice(ROWS[1][0], 3), JOB, T0, 3, "L2", 2)

    items = [i async for i in exports(session, frozen).backfill(LOG, account_plan(), binding(), reading, select, LAG)]

    assert items == [ToSubmit(Slice(ROWS[1][0], 3), since=T0 + timedelta(seconds=1))]


@pytest.mark.asyncio
async def test_an_object_the_bulk_api_refuses_is_read_through_rest_and_the_refusal_remembered(
    session: FakeSession, frozen: FrozenTime
) -> None:
    refusal = sf_error(400, "INVALIDENTITY", "Entity 'Account' is not supported by the Bulk API.")
    session.script("POST", "/jobs/query", refusal)
    records = [{"Id": r[0], "Name": r[1], "SystemModstamp": "2026-01-01T00:00:00.000+0000"} for r in ROWS]
    session.script("GET", "/query", rest_page(records))
    shared = binding()

    items = [i async for i in exports(session, frozen).backfill(
        LOG, account_plan(), shared, ToSubmit(Slice(None, 500)), select, LAG)]

    # In the same call: the mark, the refusal, then the first REST page (short, so the last).
    assert items[:2] == [ToSubmit(Slice(None, 500), since=T0), ReadingRest(None)]
    assert [d["Id"] for d in items[2:-1]] == [r[0] for r in ROWS] and items[-1] == Complete()
    assert shared.bulk_refused == "Entity 'Account' is not supported by the Bulk API."
    assert isinstance(shared.checkpoints, RecordedCheckpoints)
    assert shared.checkpoints.patches == [{"bulk_refused": shared.bulk_refused}]


def test_the_hold_follows_the_backfill_state() -> None:
    created = T0 - timedelta(minutes=1)
    assert hold_for(JobRunning(Slice(None, 1), 0, JOB, created), LAG) == created - LAG
    assert hold_for(ReadingPage(Slice(None, 1), JOB, created, 1, None, 0), LAG) == created - LAG
    assert hold_for(ToSubmit(Slice(None, 1)), LAG) is None
    # A marked unit's job may exist from the mark on, and be adopted after a restart.
    assert hold_for(ToSubmit(Slice(None, 1), since=created), LAG) == created - LAG
    assert hold_for(Complete(), LAG) is None


# --- the snapshot driver --------------------------------------------------------------------------


def rest_page(records: list[dict[str, Any]], total: int | None = None, done: bool = True) -> bytes:
    body: dict[str, Any] = {"totalSize": len(records) if total is None else total, "done": done, "records": [
        {"attributes": {"type": "Account"}, **r} for r in records]}
    if not done:
        body["nextRecordsUrl"] = "/services/data/v62.0/query/01g-2000"
    return json.dumps(body).encode()


@pytest.mark.asyncio
async def test_a_small_snapshot_is_one_rest_call_and_no_job(session: FakeSession, frozen: FrozenTime) -> None:
    records = [{"Id": r[0], "Name": r[1], "SystemModstamp": "2026-01-01T00:00:00.000+0000"} for r in ROWS]
    session.script("GET", "/query", rest_page(records))
    shared = binding()

    docs = [d async for d in exports(session, frozen).snapshot(LOG, account_plan(), shared, SOQL, True, 50_000)]

    assert [d["Id"] for d in docs] == [r[0] for r in ROWS]
    assert session.calls_to("POST") == [] and shared.snapshot_export is None


@pytest.mark.asyncio
async def test_a_large_snapshot_checkpoints_its_job_and_clears_it_when_read(
    session: FakeSession, frozen: FrozenTime
) -> None:
    session.script("GET", "/query", rest_page([], total=3, done=False))
    session.script("POST", "/jobs/query", created_json(JOB))
    session.script("GET", f"/jobs/query/{JOB}", job_json(JOB, "JobComplete", rows=3))
    session.script("GET", f"/jobs/query/{JOB}/results", page_stream(csv_page(ROWS, HEADER), None, 3))
    session.script("DELETE", f"/jobs/query/{JOB}", b"")
    shared = binding()

    docs = [d async for d in exports(session, frozen).snapshot(LOG, account_plan(), shared, SOQL, True, 2)]

    assert [d["Id"] for d in docs] == [r[0] for r in ROWS]
    assert isinstance(shared.checkpoints, RecordedCheckpoints)
    phases = [(p["snapshot_export"] or {}).get("phase") for p in shared.checkpoints.patches]
    assert phases == ["to_submit", "running", "reading", None]


@pytest.mark.asyncio
async def test_a_snapshot_restarted_while_its_job_runs_waits_for_that_job(
    session: FakeSession, frozen: FrozenTime
) -> None:
    session.script("GET", f"/jobs/query/{JOB}", job_json(JOB, "InProgress"), job_json(JOB, "JobComplete", rows=3))
    session.script("GET", f"/jobs/query/{JOB}/results", page_stream(csv_page(ROWS, HEADER), None, 3))
    session.script("DELETE", f"/jobs/query/{JOB}", b"")
    shared = binding()
    shared.snapshot_export = JobRunning(Whole(), 0, JOB, T0)

    docs = [d async for d in exports(session, frozen).snapshot(LOG, account_plan(), shared, SOQL, True, 2)]

    assert len(docs) == 3
    assert session.calls_to("POST") == [] and session.calls_to("GET", "/query") == []
    assert shared.snapshot_export is None
