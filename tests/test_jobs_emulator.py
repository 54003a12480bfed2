"""BulkJobs and RestQuery against the Salesforce emulator, over real HTTP through the CDK.

These check what the scripted unit tests cannot: the wire (gzip decoded by aiohttp, locators,
headers, error bodies) as the emulator serves it.
"""

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from source_bulk_export.auth import SalesforceSession
from source_bulk_export.exports import Exports
from source_bulk_export.job_errors import BulkUnsupportedError
from source_bulk_export.jobs import BulkJobs
from source_bulk_export.rest import RestQuery
from source_bulk_export.states import JobRunning, ReadingPage, ToSubmit, Whole
from source_bulk_export.waits import Waits
from tests.capture_support import bulk_jobs, completed_job, no_sleep, salesforce_session
from tests.emulator import EmulatorServer, Org, OrgConfig

LOG = logging.getLogger("test_jobs_emulator")
ROWS = 2_500


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(Org(OrgConfig(rows=ROWS))) as server:
        yield server


@pytest_asyncio.fixture
async def session(emu: EmulatorServer) -> AsyncIterator[SalesforceSession]:
    async with salesforce_session(emu, LOG) as session:
        yield session


def bulk(session: SalesforceSession, **kw: Any) -> BulkJobs:
    return bulk_jobs(session, **kw)


async def export(jobs: BulkJobs, soql: str) -> tuple[list[dict[str, str]], list[str | None]]:
    job = await completed_job(jobs, LOG, soql, "Account")
    rows: list[dict[str, str]] = []
    locators: list[str | None] = []
    async for page in jobs.results(LOG, job, lambda r: r):
        rows.extend([r async for r in page.rows])
        locators.append(page.next_locator)
    return rows, locators


@pytest.mark.asyncio
async def test_full_export_pages_through_gzip(emu: EmulatorServer, session: SalesforceSession) -> None:
    rows, locators = await export(
        bulk(session, max_records=1_000), "SELECT Id, Name, AnnualRevenue FROM Account"
    )

    expected = emu.org.live_rows("Account")
    assert len(locators) == 3 and locators[-1] is None and all(locators[:-1])
    assert [r["Id"] for r in rows] == [str(e["Id"]) for e in expected]
    assert [r["Name"] for r in rows] == [str(e["Name"]) for e in expected]
    assert set(rows[0]) == {"Id", "Name", "AnnualRevenue"}


@pytest.mark.asyncio
async def test_reset_mid_page_loses_no_row(emu: EmulatorServer, session: SalesforceSession) -> None:
    emu.state.faults.add_result_resets(1)
    rows, _ = await export(bulk(session, max_records=1_000), "SELECT Id, Name FROM Account")

    expected = {str(e["Id"]): str(e["Name"]) for e in emu.org.live_rows("Account")}
    assert {r["Id"]: r["Name"] for r in rows} == expected  # every row, none partial
    assert len(rows) >= len(expected)  # the broken page's first rows may come twice


@pytest.mark.asyncio
async def test_a_job_created_by_a_process_killed_before_naming_it_is_adopted_by_the_restart(
    emu: EmulatorServer, session: SalesforceSession
) -> None:
    # Contact: this module's other tests leave Account jobs created in the same second, which would
    # make the orphan ambiguous (and rightly not adopted).
    soql = "SELECT Id, LastName FROM Contact"
    emu.reset_counters()
    killed = Exports(bulk(session), RestQuery(session), Waits(scale=0.0, sleep=no_sleep))
    steps = killed.run_job(LOG, ToSubmit(Whole()), lambda _: soql, "query", "Contact")
    mark = (await anext(steps)).state  # the last checkpoint the killed process committed
    orphan = (await anext(steps)).state  # created on Salesforce, never committed
    await steps.aclose()
    assert isinstance(mark, ToSubmit) and isinstance(orphan, JobRunning)

    restart = Exports(bulk(session), RestQuery(session), Waits(scale=0.0, sleep=no_sleep))
    restart.restored("Contact", "query", mark)
    states = [outcome.state async for outcome in restart.run_job(LOG, mark, lambda _: soql, "query", "Contact")]

    assert isinstance(states[0], JobRunning) and states[0].job_id == orphan.job_id
    assert isinstance(states[-1], ReadingPage) and states[-1].job_rows == len(emu.org.live_rows("Contact"))
    assert emu.counters.requests["job_create"] == 1 and emu.counters.requests["job_list"] == 1


@pytest.mark.asyncio
async def test_a_transient_failure_backs_off_then_the_job_is_submitted_again(
    emu: EmulatorServer, session: SalesforceSession
) -> None:
    emu.reset_counters()
    emu.fail_next_jobs(1, "UNKNOWN_EXCEPTION: An unexpected error occurred", object="Account")
    exports = Exports(bulk(session), RestQuery(session), Waits(scale=0.0, sleep=no_sleep))
    states = [outcome.state async for outcome in exports.run_job(
        LOG, ToSubmit(Whole()), lambda _: "SELECT Id FROM Account", "query", "Account")]

    assert [type(s).__name__ for s in states] == [
        "ToSubmit", "JobRunning", "JobBackingOff", "ToSubmit", "JobRunning", "ReadingPage"]
    first, retried = (s for s in states if isinstance(s, JobRunning))
    assert first.job_id != retried.job_id and retried.attempt == 1
    assert isinstance(states[-1], ReadingPage) and states[-1].job_rows == ROWS
    assert emu.counters.requests["job_delete"] == 1  # the failed job; the complete one is finished once read


@pytest.mark.asyncio
async def test_bulk_unsupported_object(session: SalesforceSession) -> None:
    with pytest.raises(BulkUnsupportedError):
        await bulk(session).submit(LOG, "SELECT Id FROM CaseStatus", "query", "CaseStatus")


@pytest.mark.asyncio
async def test_rest_query_pages_to_the_end(emu: EmulatorServer, session: SalesforceSession) -> None:
    result = await RestQuery(session).open(
        LOG, "SELECT Id, Name FROM Account ORDER BY Id", lambda r: r, include_deleted=False, batch_size=1_000
    )
    assert result.total_size == ROWS
    records = [r async for r in result.records]

    assert sorted(r["Id"] for r in records) == sorted(str(e["Id"]) for e in emu.org.live_rows("Account"))
    assert all("attributes" not in r for r in records)
    assert emu.counters.requests["query_more"] >= 2
