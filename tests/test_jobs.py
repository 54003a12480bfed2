"""Unit tests of the Bulk API 2.0 job module against a scripted session, in frozen time."""

import asyncio
import gzip
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from source_bulk_export import jobs
from source_bulk_export.job_errors import (
    BulkJobError,
    BulkUnsupportedError,
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
    JobTooLargeError,
    LimitExhaustedError,
    ResultReadError,
    RowCountMismatchError,
    TransientJobError,
    classify_job,
    classify_message,
)
from source_bulk_export.jobs import BulkJobs
from source_bulk_export.models import JobInfo
from source_bulk_export.waits import Waits
from tests.fakes import (
    FakeSession,
    FrozenTime,
    Stream,
    csv_page,
    job_json,
    page_stream,
    sf_error,
)

LOG = logging.getLogger("test_jobs")
SOQL = "SELECT Id, Name FROM Account WHERE Id > '001' ORDER BY Id LIMIT 500000"
T0 = datetime(2024, 5, 1, tzinfo=UTC)
JOB = "750000000000001AAA"


def bulk(session: FakeSession, frozen: FrozenTime, cap: int = 2, **kw: Any) -> BulkJobs:
    return BulkJobs(session, cap, Waits(sleep=frozen.sleep), **kw)  # type: ignore[arg-type]


def completed(job_id: str = JOB, rows: int = 0) -> JobInfo:
    return JobInfo.model_validate_json(job_json(job_id, "JobComplete", rows=rows))


def identity(row: dict[str, str]) -> dict[str, str]:
    return row


def state_logs(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [r.args for r in caplog.records if r.getMessage() == "bulk job state"]  # type: ignore[misc]


def now() -> datetime:
    return datetime.now(tz=UTC)


# --- submit and wait ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_job_is_noticed_within_a_quarter_of_its_wait_and_transitions_alone_are_logged(
    session: FakeSession, frozen: FrozenTime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    session.script("POST", "/jobs/query", job_json(JOB, "UploadComplete"))
    polls = [job_json(JOB, "UploadComplete")] + [job_json(JOB, "InProgress", rows=i) for i in range(40)]
    session.script("GET", f"/jobs/query/{JOB}", *polls, job_json(JOB, "JobComplete", rows=70))
    jobs_ = bulk(session, frozen)

    created = await jobs_.submit(LOG, SOQL, "queryAll", "Account")
    job = await jobs_.wait(LOG, created.id, "Account", created=now())

    assert job is not None and job.state == "JobComplete" and job.numberRecordsProcessed == 70
    sleeps = frozen.sleeps
    assert len(sleeps) == 41
    # Every half second for the first two (a small job is done by then), then a quarter of the time
    # waited: a job that completes between two polls is noticed within a quarter of its wait.
    assert sleeps[:6] == [0.5, 0.5, 0.5, 0.5, 0.5, 0.625]
    waited = [sum(sleeps[:i]) for i in range(len(sleeps))]
    assert all(delay <= max(0.5, waited_so_far / 4) for delay, waited_so_far in zip(sleeps, waited, strict=True))
    # What that costs in requests: about a poll a second at first, then 3 a minute past 80 s.
    assert sum(1 for w in waited if w < 60) <= 22
    assert all(delay == 20.0 for delay, w in zip(sleeps, waited, strict=True) if w >= 80)
    assert sleeps[-1] == 20.0
    post = session.calls_to("POST")[0]
    assert post.json == {
        "operation": "queryAll",
        "query": SOQL,
        "contentType": "CSV",
        "columnDelimiter": "COMMA",
        "lineEnding": "LF",
    }
    # One line per state, not per poll, with the fields the runbook greps for.
    logs = state_logs(caplog)
    assert [entry["state"] for entry in logs] == ["UploadComplete", "InProgress", "JobComplete"]
    assert logs[-1] == {"job_id": JOB, "object": "Account", "state": "JobComplete", "rows": 70}
    assert session.calls_to("DELETE") == []  # a complete job lives until its last page is read


@pytest.mark.asyncio
async def test_a_failed_job_is_deleted_as_soon_as_it_is_seen(session: FakeSession, frozen: FrozenTime) -> None:
    session.script("GET", f"/jobs/query/{JOB}", job_json(JOB, "Failed", error="InternalServerError"))
    session.script("DELETE", f"/jobs/query/{JOB}", b"")

    job = await bulk(session, frozen).wait(LOG, JOB, "Account", created=now())

    assert job is not None and job.state == "Failed"
    assert [c.path for c in session.calls_to("DELETE")] == [f"/jobs/query/{JOB}"]


@pytest.mark.asyncio
async def test_a_job_still_running_long_after_its_creation_is_abandoned(
    session: FakeSession, frozen: FrozenTime
) -> None:
    session.script("GET", f"/jobs/query/{JOB}", job_json(JOB, "InProgress"))
    session.script("PATCH", f"/jobs/query/{JOB}", job_json(JOB, "Aborted"))
    session.script("DELETE", f"/jobs/query/{JOB}", b"")
    # Created (by an earlier process, say) a minute short of the timeout.
    created = now() - timedelta(seconds=jobs.WAIT_TIMEOUT_S - 60)

    with pytest.raises(JobTimeoutError) as raised:
        await bulk(session, frozen).wait(LOG, JOB, "Account", created=created)

    assert sum(frozen.sleeps) >= 60
    assert (raised.value.job_id, raised.value.object, raised.value.state) == (JOB, "Account", "InProgress")
    assert [c.json for c in session.calls_to("PATCH")] == [{"state": "Aborted"}]
    assert len(session.calls_to("DELETE")) == 1


@pytest.mark.asyncio
async def test_a_cancelled_wait_leaves_the_job_for_the_restart(session: FakeSession, frozen: FrozenTime) -> None:
    session.script("GET", f"/jobs/query/{JOB}", job_json(JOB, "InProgress"))
    task = asyncio.create_task(bulk(session, frozen).wait(LOG, JOB, "Account", created=now()))
    while len(session.calls_to("GET")) < 3:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    # The checkpoint names the job: the next process polls it instead of exporting its rows again.
    assert session.calls_to("PATCH") == [] and session.calls_to("DELETE") == []


@pytest.mark.asyncio
async def test_a_graceful_stop_ends_the_wait_without_touching_the_job(
    session: FakeSession, frozen: FrozenTime
) -> None:
    session.script("GET", f"/jobs/query/{JOB}", job_json(JOB, "InProgress"))
    waits = Waits(sleep=frozen.sleep)
    waits.stopping = asyncio.Event()
    waits.stopping.set()

    assert await BulkJobs(session, 1, waits).wait(LOG, JOB, "Account", created=now()) is None  # type: ignore[arg-type]
    assert session.calls_to("PATCH") == [] and session.calls_to("DELETE") == []


@pytest.mark.asyncio
async def test_a_job_salesforce_no_longer_has_is_reported_as_not_found(
    session: FakeSession, frozen: FrozenTime
) -> None:
    session.script("GET", f"/jobs/query/{JOB}", sf_error(404, "NOT_FOUND", "The requested resource does not exist"))
    with pytest.raises(JobNotFoundError) as raised:
        await bulk(session, frozen).wait(LOG, JOB, "Account", created=now())
    assert raised.value.job_id == JOB


@pytest.mark.asyncio
async def test_an_abandoned_job_that_cannot_be_aborted_does_not_hide_the_timeout(
    session: FakeSession, frozen: FrozenTime
) -> None:
    session.script("GET", f"/jobs/query/{JOB}", job_json(JOB, "InProgress"))
    session.script("PATCH", f"/jobs/query/{JOB}", sf_error(500, "", "still down"))

    with pytest.raises(JobTimeoutError):
        await bulk(session, frozen).wait(LOG, JOB, "Account", created=now() - timedelta(hours=3))
    assert len(session.calls_to("PATCH")) == 1


@pytest.mark.asyncio
async def test_unsupported_object_refused_at_creation(session: FakeSession, frozen: FrozenTime) -> None:
    session.script(
        "POST",
        "/jobs/query",
        sf_error(400, "INVALIDENTITY", "Entity 'RecentlyViewed' is not supported by the Bulk API."),
    )

    with pytest.raises(BulkUnsupportedError) as raised:
        await bulk(session, frozen).submit(LOG, "SELECT Id FROM RecentlyViewed", "query", "RecentlyViewed")

    assert (raised.value.job_id, raised.value.object, raised.value.state) == (None, "RecentlyViewed", None)


@pytest.mark.asyncio
async def test_other_creation_errors_propagate_unchanged(session: FakeSession, frozen: FrozenTime) -> None:
    refusal = sf_error(400, "MALFORMED_QUERY", "unexpected token: FROM")
    session.script("POST", "/jobs/query", refusal)
    with pytest.raises(type(refusal)) as raised:
        await bulk(session, frozen).submit(LOG, SOQL, "query", "Account")
    assert raised.value is refusal


@pytest.mark.asyncio
async def test_a_daily_limit_at_creation_is_classified(session: FakeSession, frozen: FrozenTime) -> None:
    limit = sf_error(400, "LIMIT_EXCEEDED", "Max bulk v2 query jobs (10000) per 24 hrs has been reached")
    session.script("POST", "/jobs/query", limit)
    with pytest.raises(LimitExhaustedError):
        await bulk(session, frozen).submit(LOG, SOQL, "query", "Account")


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (
            "InvalidBatch : Failed to process query: QUERY_TIMEOUT: Your query request was running for too long.",
            JobTooLargeError,
        ),
        ("Your query request was running for too long.", JobTooLargeError),
        ("Retried more than 15 times", JobTooLargeError),
        ("Failed to write query result.", JobTooLargeError),
        ("The query result exceeded the maximum file size", JobTooLargeError),
        ("OPERATION_TOO_LARGE: exceeded 100000 distinct ids", JobTooLargeError),
        ("INVALIDENTITY: Entity 'TaskStatus' is not supported by the Bulk API.", BulkUnsupportedError),
        (
            "FUNCTIONALITY_NOT_ENABLED: Selecting compound data not supported in Bulk Query",
            BulkUnsupportedError,
        ),
        ("FeatureNotEnabled : Cannot serialize value for 'Body' in CSV format", BulkUnsupportedError),
        (
            "INVALID_TYPE_FOR_OPERATION: entity type ActivityHistory does not support query",
            BulkUnsupportedError,
        ),
        (
            "InvalidBatch : Failed to process query: INVALID_FIELD: No such column 'Foo__c' on entity 'Account'",
            None,  # REST would refuse it too: a restart re-describes the object instead
        ),
        (
            "MALFORMED_QUERY: Implementation restriction: ContentDocumentLink requires a filter by a single Id",
            BulkUnsupportedError,
        ),
        (
            "ExceededQuota : Max bulk v2 query result size stored (1000000000) kb per 24 hrs has been exceeded",
            LimitExhaustedError,
        ),
        ("REQUEST_LIMIT_EXCEEDED: TotalRequests Limit exceeded.", LimitExhaustedError),
        ("UNKNOWN_EXCEPTION: An unexpected error occurred. Please include this ErrorId", TransientJobError),
        ("InternalServerError : retry later", TransientJobError),
        ("TooManyLockFailure : Too many lock failure 200 Trying again later.", TransientJobError),
        ("SERVER_UNAVAILABLE", TransientJobError),
        ("QUERY_TOO_COMPLICATED: query is too complicated", None),
        ("something nobody has seen before", None),
    ],
)
def test_classification_table(message: str, kind: type[BulkJobError] | None) -> None:
    assert classify_message(message) is kind
    job = JobInfo.model_validate_json(job_json(JOB, "Failed", error=message))
    assert type(classify_job(job)) is (kind or JobFailedError)


def test_aborted_elsewhere_is_transient_and_complete_is_no_error() -> None:
    assert type(classify_job(JobInfo.model_validate_json(job_json(JOB, "Aborted")))) is TransientJobError
    assert classify_job(completed()) is None


# --- result pages ------------------------------------------------------------------------------


def script_pages(session: FakeSession, job_id: str, pages: list[tuple[str | None, Stream]]) -> None:
    for locator, stream in pages:
        session.script("GET", f"/jobs/query/{job_id}/results", stream, locator=locator)
    session.script("DELETE", f"/jobs/query/{job_id}", b"")


ROWS = [[f"001{i:015d}", f'Name {i}, "quoted"\nline two'] for i in range(5)]


@pytest.mark.asyncio
async def test_results_page_by_locator_until_null(
    session: FakeSession, frozen: FrozenTime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    script_pages(
        session,
        JOB,
        [
            (None, page_stream(csv_page(ROWS[:2]), "MTAwMDA", 2)),
            ("MTAwMDA", page_stream(csv_page(ROWS[2:4]), "MjAwMDAw", 2)),
            ("MjAwMDAw", page_stream(csv_page(ROWS[4:]), None, 1)),
        ],
    )
    seen: list[tuple[str | None, str | None, int | None, list[tuple[str, str]]]] = []
    jobs_ = bulk(session, frozen, max_records=2)

    async for page in jobs_.results(LOG, completed(rows=5), identity):
        rows = [(r["Id"], r["Name"]) async for r in page.rows]
        seen.append((page.locator, page.next_locator, page.rows_after, rows))

    assert [(s[0], s[1], s[2]) for s in seen] == [
        (None, "MTAwMDA", 2),
        ("MTAwMDA", "MjAwMDAw", 4),
        ("MjAwMDAw", None, 5),
    ]
    assert [r for s in seen for r in s[3]] == [(a, b) for a, b in ROWS]
    first = session.calls_to("GET", f"/jobs/query/{JOB}/results")[0]
    assert first.params == {"maxRecords": 2}
    assert first.headers == {"Accept": "text/csv", "Accept-Encoding": "gzip"}
    done = [r.args for r in caplog.records if r.getMessage() == "bulk job results read"]
    assert done == [{"job_id": JOB, "object": "Account", "rows": 5}]
    # Reading the last page does not delete the job: the caller's checkpoint still names that page.
    assert session.calls_to("DELETE") == []


@pytest.mark.asyncio
async def test_resumed_page_reconciles_the_job_total(session: FakeSession, frozen: FrozenTime) -> None:
    script_pages(session, JOB, [("MjAwMDAw", page_stream(csv_page(ROWS[4:]), None, 1))])
    jobs_ = bulk(session, frozen)

    page = await jobs_.page(LOG, completed(rows=5), identity, "MjAwMDAw", rows_before=4)
    assert [r["Id"] async for r in page.rows] == [ROWS[4][0]]
    assert page.consumed and page.rows_after == 5

    page = await jobs_.page(LOG, completed(rows=5), identity, "MjAwMDAw", rows_before=3)
    with pytest.raises(RowCountMismatchError) as raised:
        [r async for r in page.rows]
    assert (raised.value.expected, raised.value.actual, raised.value.job_id) == (5, 4, JOB)

    # Without a checkpointed count the total cannot be checked, and is not.
    page = await jobs_.page(LOG, completed(rows=5), identity, "MjAwMDAw", rows_before=None)
    assert len([r async for r in page.rows]) == 1


@pytest.mark.asyncio
async def test_job_total_mismatch_names_the_job(session: FakeSession, frozen: FrozenTime) -> None:
    script_pages(session, JOB, [(None, page_stream(csv_page(ROWS[:2]), None, 2))])

    with pytest.raises(RowCountMismatchError, match=JOB):
        async for page in bulk(session, frozen).results(LOG, completed(rows=3), identity):
            [r async for r in page.rows]


@pytest.mark.asyncio
async def test_page_count_mismatch_is_refetched_then_raised(session: FakeSession, frozen: FrozenTime) -> None:
    script_pages(session, JOB, [(None, page_stream(csv_page(ROWS[:2]), None, 3))])
    page = await bulk(session, frozen).page(LOG, completed(rows=3), identity)

    with pytest.raises(RowCountMismatchError, match=JOB) as raised:
        [r async for r in page.rows]

    assert (raised.value.expected, raised.value.actual, raised.value.locator) == (3, 2, None)
    assert len(session.calls_to("GET")) == jobs.PAGE_READ_ATTEMPTS
    assert frozen.sleeps == [1.0, 2.0]
    assert not page.consumed


@pytest.mark.asyncio
async def test_reset_mid_row_yields_no_partial_row_and_loses_none(
    session: FakeSession, frozen: FrozenTime
) -> None:
    body = csv_page(ROWS[:3])
    cut = body.index(ROWS[2][0].encode()) + 5  # inside the third row's Id
    reset = Stream(
        page_stream(body, None, 3).headers,
        [body[:cut]],
        aiohttp.ClientPayloadError("Response payload is not completed"),
    )
    script_pages(session, JOB, [(None, reset)])
    session.routes[("GET", f"/jobs/query/{JOB}/results", None)].append(page_stream(body, None, 3))

    page = await bulk(session, frozen).page(LOG, completed(rows=3), identity)
    ids = [r["Id"] async for r in page.rows]

    # The first read's two whole rows come again after the re-fetch: duplicates, no loss, no partials.
    assert ids == [ROWS[0][0], ROWS[1][0], ROWS[0][0], ROWS[1][0], ROWS[2][0]]
    assert page.consumed
    assert session.open_bodies == 0  # the broken response was released, not left hanging


@pytest.mark.asyncio
async def test_cancelling_a_reader_mid_page_releases_the_response(
    session: FakeSession, frozen: FrozenTime
) -> None:
    body = csv_page(ROWS[:3])
    stalled = Stream(page_stream(body, None, 3).headers, [body[: body.index(ROWS[1][0].encode())]], hang=True)
    script_pages(session, JOB, [(None, stalled)])
    page = await bulk(session, frozen).page(LOG, completed(rows=3), identity)
    seen: list[str] = []

    async def consume() -> None:
        async for row in page.rows:
            seen.append(row["Id"])

    task = asyncio.create_task(consume())
    while not seen:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert seen == [ROWS[0][0]]
    assert session.open_bodies == 0


@pytest.mark.asyncio
async def test_body_cut_at_a_clean_eof_is_never_parsed_into_a_row(
    session: FakeSession, frozen: FrozenTime
) -> None:
    # Unquoted cells: without the line-ending check, "001...3,Jo" would parse as a whole row.
    body = b"Id,Name\n0011,Ann\n0012,Bob\n0013,Jo"
    script_pages(session, JOB, [(None, page_stream(body, None, 3))])
    page = await bulk(session, frozen).page(LOG, completed(rows=3), identity)

    seen: list[dict[str, str]] = []
    with pytest.raises(ResultReadError, match="middle of a row"):
        async for row in page.rows:
            seen.append(row)

    assert {r["Id"] for r in seen} == {"0011", "0012"}
    assert len(session.calls_to("GET")) == jobs.PAGE_READ_ATTEMPTS


@pytest.mark.asyncio
async def test_empty_chunks_mid_body_are_not_end_of_input(session: FakeSession, frozen: FrozenTime) -> None:
    body = csv_page(ROWS[:3])
    chunks = [body[:20], b"", body[20:40], b"", b"", body[40:]]
    script_pages(session, JOB, [(None, Stream(page_stream(body, None, 3).headers, chunks))])

    page = await bulk(session, frozen).page(LOG, completed(rows=3), identity)
    assert [r["Id"] async for r in page.rows] == [r[0] for r in ROWS[:3]]


@pytest.mark.asyncio
async def test_gzip_body_is_decoded_across_members(session: FakeSession, frozen: FrozenTime) -> None:
    body = csv_page(ROWS)
    cut = body.index(b"\n", len(body) // 2) + 1
    raw = gzip.compress(body[:cut]) + gzip.compress(body[cut:])  # two members, as concatenated chunks
    script_pages(
        session,
        JOB,
        [(None, Stream(page_stream(body, None, 5).headers, [raw[i : i + 9] for i in range(0, len(raw), 9)]))],
    )

    page = await bulk(session, frozen).page(LOG, completed(rows=5), identity)
    assert [(r["Id"], r["Name"]) async for r in page.rows] == [(a, b) for a, b in ROWS]


@pytest.mark.asyncio
async def test_truncated_gzip_body_is_an_error(session: FakeSession, frozen: FrozenTime) -> None:
    raw = gzip.compress(csv_page(ROWS))
    script_pages(session, JOB, [(None, Stream(page_stream(b"", None, 5).headers, [raw[:-12]]))])

    page = await bulk(session, frozen).page(LOG, completed(rows=5), identity)
    with pytest.raises(ResultReadError):
        [r async for r in page.rows]


@pytest.mark.asyncio
async def test_transform_runs_per_row(session: FakeSession, frozen: FrozenTime) -> None:
    script_pages(session, JOB, [(None, page_stream(csv_page(ROWS[:2]), None, 2))])
    page = await bulk(session, frozen).page(LOG, completed(rows=2), lambda r: r["Id"][-1])
    assert [r async for r in page.rows] == ["0", "1"]


@pytest.mark.asyncio
async def test_next_page_requires_the_previous_one_consumed(session: FakeSession, frozen: FrozenTime) -> None:
    script_pages(session, JOB, [(None, page_stream(csv_page(ROWS[:2]), "L2", 2))])
    pages = bulk(session, frozen).results(LOG, completed(rows=5), identity)
    await anext(pages)
    with pytest.raises(RuntimeError, match="not consumed"):
        await anext(pages)


@pytest.mark.asyncio
async def test_results_of_a_vanished_job(session: FakeSession, frozen: FrozenTime) -> None:
    session.script(
        "GET",
        f"/jobs/query/{JOB}/results",
        sf_error(404, "NOT_FOUND", "The requested resource does not exist"),
    )
    with pytest.raises(JobNotFoundError):
        await bulk(session, frozen).page(LOG, completed(rows=1), identity)


@pytest.mark.asyncio
async def test_a_finished_job_is_deleted_after_the_grace_by_the_next_call(session: FakeSession, frozen: FrozenTime) -> None:
    """A checkpoint is written before Flow commits it: a restart from the one before must still find
    the job's last page."""
    session.script("DELETE", f"/jobs/query/{JOB}", sf_error(404, "NOT_FOUND", "gone"))  # already gone: fine
    session.script("POST", "/jobs/query", job_json("750B", "UploadComplete"))
    jobs_ = bulk(session, frozen)

    await jobs_.finish(LOG, JOB)
    await frozen.sleep(jobs.FINISHED_JOB_GRACE_S - 1)
    await jobs_.submit(LOG, SOQL, "query", "Account")
    assert session.calls_to("DELETE") == []

    await frozen.sleep(1)
    await jobs_.submit(LOG, SOQL, "query", "Account")
    assert [c.path for c in session.calls_to("DELETE")] == [f"/jobs/query/{JOB}"]
