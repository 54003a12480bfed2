"""Orphaned jobs: a job a process created and was killed before a checkpoint named it is adopted by
the restart, once, when exactly one job fits the mark its unit was checkpointed with (jobs.BulkJobs.orphan,
exports.Exports.run_job), and never when adopting could take another unit's job."""

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from source_bulk_export.exports import Exports
from source_bulk_export.jobs import BulkJobs
from source_bulk_export.rest import RestQuery
from source_bulk_export.states import JobRunning, ReadingPage, Slice, ToSubmit, Whole, on_page_read
from source_bulk_export.waits import Waits
from tests.fakes import FakeSession, FrozenTime, job_json

LOG = logging.getLogger("test_orphans")
T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
MARK = T0 - timedelta(seconds=30, milliseconds=400)  # a mark a killed process checkpointed
SOQL = "SELECT Id, Name FROM Account"
ORPHAN = "750000000000007AAA"
NEW = "750000000000008AAA"


def exports(session: FakeSession, frozen: FrozenTime) -> Exports:
    waits = Waits(sleep=frozen.sleep)
    return Exports(BulkJobs(session, 2, waits), RestQuery(session), waits)  # type: ignore[arg-type]


def listing(*jobs: bytes, next_url: str | None = None) -> bytes:
    records = [json.loads(job) for job in jobs]
    return json.dumps({"done": next_url is None, "records": records, "nextRecordsUrl": next_url}).encode()


def orphan(job_id: str = ORPHAN, **kw: object) -> bytes:
    """A job of the Account export's kind, created in the mark's own second (createdDate is whole seconds)."""
    return job_json(job_id, "JobComplete", rows=3, created=MARK.replace(microsecond=0), **kw)  # type: ignore[arg-type]


def script_submission(session: FakeSession) -> None:
    session.script("POST", "/jobs/query", job_json(NEW, "UploadComplete", created=T0))
    session.script("GET", f"/jobs/query/{NEW}", job_json(NEW, "JobComplete", rows=3))


async def run(driver: Exports, state: ToSubmit[Whole], operation: str = "query") -> list[object]:
    return [outcome.state async for outcome in driver.run_job(LOG, state, lambda _: SOQL, operation,  # type: ignore[arg-type]
                                                              "Account")]


@pytest.mark.asyncio
async def test_a_restored_mark_adopts_the_one_job_that_fits_and_submits_nothing(
    session: FakeSession, frozen: FrozenTime
) -> None:
    named = "750000000000003AAA"
    session.script("GET", "/jobs/query", listing(
        orphan(),
        job_json("750000000000001AAA", "JobComplete", created=MARK - timedelta(seconds=1)),  # before the mark
        job_json("750000000000002AAA", "InProgress", created=T0, object="Contact"),
        job_json("750000000000004AAA", "InProgress", created=T0, operation="queryAll"),
        job_json("750000000000005AAA", "InProgress", created=T0, created_by="005000000000099AAA"),  # another user
        job_json("750000000000006AAA", "Failed", created=T0),
        job_json(named, "InProgress", created=T0),  # named by another state of the checkpoint
    ))
    session.script("GET", f"/jobs/query/{ORPHAN}", orphan())
    driver = exports(session, frozen)
    driver.restored("Account", "query", JobRunning(Whole(), 0, named, T0), adoptable=False)  # an Id export's
    driver.restored("Account", "query", ToSubmit(Whole(), 1, since=MARK))

    reached = await run(driver, ToSubmit(Whole(), 1, since=MARK))

    created = MARK.replace(microsecond=0)
    assert reached == [JobRunning(Whole(), 1, ORPHAN, created), ReadingPage(Whole(), ORPHAN, created, 3, None, 0)]
    assert session.calls_to("POST") == []
    assert [c.params for c in session.calls_to("GET", "/jobs/query") if c.path == "/jobs/query"] == [
        {"jobType": "V2Query"}]


@pytest.mark.asyncio
async def test_the_org_s_jobs_are_listed_page_by_page(session: FakeSession, frozen: FrozenTime) -> None:
    second = "/services/data/v62.0/jobs/query?queryLocator=01gR0000000JobLst-1000"
    session.script("GET", "/jobs/query", listing(job_json("750000000000001AAA", "JobComplete", created=T0,
                                                          object="Contact"), next_url=second))
    session.script("GET", second, listing(orphan()))
    session.script("GET", f"/jobs/query/{ORPHAN}", orphan())
    driver = exports(session, frozen)
    driver.restored("Account", "query", ToSubmit(Whole(), since=MARK))

    reached = await run(driver, ToSubmit(Whole(), since=MARK))

    assert isinstance(reached[0], JobRunning) and reached[0].job_id == ORPHAN


@pytest.mark.asyncio
async def test_no_fitting_job_means_the_unit_is_submitted_again(session: FakeSession, frozen: FrozenTime) -> None:
    # The process was killed after the mark and before its submission reached Salesforce.
    session.script("GET", "/jobs/query", listing())
    script_submission(session)
    driver = exports(session, frozen)
    driver.restored("Account", "query", ToSubmit(Whole(), since=MARK))

    reached = await run(driver, ToSubmit(Whole(), since=MARK))

    assert [type(s).__name__ for s in reached] == ["JobRunning", "ReadingPage"]
    assert isinstance(reached[0], JobRunning) and reached[0].job_id == NEW


@pytest.mark.asyncio
async def test_two_fitting_jobs_are_not_adopted(session: FakeSession, frozen: FrozenTime) -> None:
    session.script("GET", "/jobs/query", listing(orphan(), orphan("750000000000009AAA")))
    script_submission(session)
    driver = exports(session, frozen)
    driver.restored("Account", "query", ToSubmit(Whole(), since=MARK))

    reached = await run(driver, ToSubmit(Whole(), since=MARK))

    assert isinstance(reached[0], JobRunning) and reached[0].job_id == NEW


@pytest.mark.asyncio
async def test_two_restored_marks_of_one_object_and_operation_adopt_nothing(
    session: FakeSession, frozen: FrozenTime
) -> None:
    # The one orphan could be either unit's: a wrong guess would read one export's rows as the other's.
    script_submission(session)
    driver = exports(session, frozen)
    driver.restored("Account", "query", ToSubmit(Whole(), since=MARK))
    driver.restored("Account", "query", ToSubmit(Whole(), since=MARK + timedelta(seconds=1)))

    reached = await run(driver, ToSubmit(Whole(), since=MARK))

    assert isinstance(reached[0], JobRunning) and reached[0].job_id == NEW
    assert session.calls_to("GET", "/jobs/query") == [c for c in session.calls_to("GET") if c.path.endswith(NEW)]


@pytest.mark.asyncio
async def test_a_mark_this_process_wrote_lists_nothing(session: FakeSession, frozen: FrozenTime) -> None:
    script_submission(session)

    reached = await run(exports(session, frozen), ToSubmit(Whole(), since=T0))

    assert isinstance(reached[0], JobRunning) and reached[0].job_id == NEW
    assert [c.path for c in session.calls_to("GET")] == [f"/jobs/query/{NEW}"]


@pytest.mark.asyncio
async def test_a_job_this_process_created_is_never_taken_for_an_orphan(session: FakeSession, frozen: FrozenTime) -> None:
    # Another export of the object was submitted before the mark was resolved: its job fits the mark
    # by every listed field, but this process knows it.
    script_submission(session)
    driver = exports(session, frozen)
    driver.restored("Account", "query", ToSubmit(Whole(), since=MARK))
    await run(driver, ToSubmit(Whole()))
    session.script("GET", "/jobs/query", listing(job_json(NEW, "JobComplete", created=T0)))
    session.script("POST", "/jobs/query", job_json("75000000000000AAAA", "UploadComplete", created=T0))
    session.script("GET", "/jobs/query/75000000000000AAAA", job_json("75000000000000AAAA", "JobComplete", rows=3))

    reached = await run(driver, ToSubmit(Whole(), since=MARK))

    assert isinstance(reached[0], JobRunning) and reached[0].job_id == "75000000000000AAAA"


@pytest.mark.asyncio
async def test_a_restart_from_a_last_page_finds_the_next_unit_s_job_the_killed_process_submitted(
    session: FakeSession, frozen: FrozenTime
) -> None:
    # The killed process read the page, checkpointed the next unit (never committed), submitted it,
    # and died. The restart reads the page again and reaches the same mark from the same state.
    created = MARK.replace(microsecond=0) - timedelta(minutes=10)
    last_page = ReadingPage(Slice(None, 3), "750000000000001AAA", created, 3, "L3", 2)
    following = on_page_read(last_page, None, 3, Slice("001000000000000003", 3))
    assert isinstance(following, ToSubmit)
    session.script("GET", "/jobs/query", listing(
        job_json("750000000000001AAA", "JobComplete", created=created),  # the job just read
        orphan()))
    session.script("GET", f"/jobs/query/{ORPHAN}", orphan())
    driver = exports(session, frozen)
    driver.restored("Account", "query", last_page)

    reached = [outcome.state async for outcome in driver.run_job(LOG, following, lambda _: SOQL, "query", "Account")]

    assert isinstance(reached[0], JobRunning) and reached[0].job_id == ORPHAN
    assert session.calls_to("POST") == []
