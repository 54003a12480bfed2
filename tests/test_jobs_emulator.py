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
from source_bulk_export.job_errors import BulkUnsupportedError
from source_bulk_export.jobs import BulkJobs
from source_bulk_export.rest import RestQuery
from tests.capture_support import salesforce_session
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


async def no_sleep(seconds: float) -> None:
    """The emulator's jobs complete on the next poll; waiting for real would only slow tests."""


def bulk(session: SalesforceSession, **kw: Any) -> BulkJobs:
    return BulkJobs(session, 2, sleep=no_sleep, **kw)


async def export(jobs: BulkJobs, soql: str) -> tuple[list[dict[str, str]], list[str | None]]:
    job = await jobs.run(LOG, soql, "query", "Account")
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
async def test_transient_failure_is_resubmitted(emu: EmulatorServer, session: SalesforceSession) -> None:
    emu.fail_next_jobs(1, "UNKNOWN_EXCEPTION: An unexpected error occurred", object="Account")
    rows, _ = await export(bulk(session), "SELECT Id FROM Account")
    assert len(rows) == ROWS


@pytest.mark.asyncio
async def test_bulk_unsupported_object(session: SalesforceSession) -> None:
    with pytest.raises(BulkUnsupportedError):
        await bulk(session).run(LOG, "SELECT Id FROM CaseStatus", "query", "CaseStatus")


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
