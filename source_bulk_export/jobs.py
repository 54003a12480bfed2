"""Bulk API 2.0 query jobs: submit -> poll -> stream result pages.

`BulkJobs` owns a job's whole lifecycle; callers build the SOQL and turn rows into documents.
A completed job's results are read one page at a time by locator, so a caller can checkpoint
between pages and resume a job from its locator after a restart.
"""

import asyncio
import time
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from logging import Logger
from typing import Any, Literal, cast

import aiohttp
from estuary_cdk.http import Headers
from estuary_cdk.incremental_csv_processor import (
    CSVConfig,
    CSVProcessingError,
    IncrementalCSVProcessor,
)

from .auth import BodyStream, SalesforceError, SalesforceSession, Sleep
from .job_errors import (
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
    LimitExhaustedError,
    ResultReadError,
    RowCountMismatchError,
    TransientJobError,
    classify_job,
    classify_message,
)
from .models import TERMINAL_JOB_STATES, JobInfo, JobState

type Operation = Literal["query", "queryAll"]
type RowTransform[R] = Callable[[dict[str, str]], R]
type Clock = Callable[[], float]

JOBS_PATH = "/jobs/query"

# First poll delay. Small jobs (a delta window, a backfill's last slice) finish in a second or
# two; polling sooner only spends API requests.
POLL_FIRST_S = 0.5
# The delay doubles up to this cap (reached after ~30 s). A long job is noticed at most 20 s
# after it completes and costs at most 3 polls a minute of the org's daily API allocation (every
# poll counts), which the org's other integrations share.
POLL_MAX_S = 20.0
# Overall wait for one job. Salesforce gives up on a query after 2 min of execution plus 30 min
# of processing; two hours leaves room for queueing behind the org's other jobs. A job still
# running then is stuck or far too large: it is aborted.
WAIT_TIMEOUT_S = 2 * 60 * 60.0
# Salesforce has already retried a job's chunks before it reports Failed, so a transient failure
# is an incident lasting minutes: re-submit after 30, 60 and 120 s, then give up.
TRANSIENT_ATTEMPTS = 4
TRANSIENT_BACKOFF_FIRST_S = 30.0
# Daily Bulk limits (10,000 jobs or 1 TB of results per rolling 24 h) free up as old jobs age
# out of the window. Retry every 15 min; after 24 h the window has rolled over completely, so a
# limit still exhausted is being consumed by someone else, and is reported.
LIMIT_RETRY_S = 15 * 60.0
LIMIT_MAX_WAIT_S = 24 * 60 * 60.0
# Aborting an abandoned job is a courtesy to the org's query capacity; a stop must not hang on it.
ABORT_TIMEOUT_S = 30.0
# Rows per result page. At ~500 bytes a row a page is ~25 MB of CSV (~5 MB gzip): few requests
# (each counts against the daily allocation), and a restart re-reads at most one page.
# Salesforce may return fewer rows when a page would be too big.
MAX_RECORDS = 50_000
# Reads of one result page. A body that breaks off (connection reset, truncated gzip) is
# re-fetched by its locator, which Salesforce keeps stable for the job's lifetime.
PAGE_READ_ATTEMPTS = 3
PAGE_RETRY_FIRST_S = 1.0

# Jobs are created with COMMA and LF; Salesforce quotes values and doubles embedded quotes.
CSV_CONFIG = CSVConfig(delimiter=",", quotechar='"', lineterminator="\n", encoding="utf-8")
_GZIP_MAGIC = b"\x1f\x8b"
# How a result body can break off while it is read; each is worth re-fetching the page for.
_READ_ERRORS = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionError, TimeoutError,
                CSVProcessingError)


@dataclass(slots=True)
class ResultPage[R]:
    """One page of a completed job's results.

    `rows` yields the page's rows through the caller's transform, once each, unless the body
    broke off and the page was re-fetched: then the rows before the break come again (a duplicate
    is harmless under the collection key; a skipped row is not). It never yields a partial row.
    When `rows` ends without an error, all `expected_rows` were yielded and the caller may
    checkpoint `next_locator` (None: this was the last page) and `rows_after`. When it raises,
    checkpoint nothing from this page.
    """

    job: JobInfo
    locator: str | None
    next_locator: str | None
    expected_rows: int
    rows_before: int | None  # rows in the job's earlier pages; None: unknown, job total unchecked
    rows: AsyncGenerator[R, None] = field(init=False)
    consumed: bool = False

    @property
    def rows_after(self) -> int | None:
        return None if self.rows_before is None else self.rows_before + self.expected_rows


class BulkJobs:
    """Runs Bulk API 2.0 query jobs for every binding of one capture task.

    At most `max_concurrent_jobs` jobs are between creation and a terminal state at once. The
    slot covers only that span (the server-side work, which is what loads the org) and is taken
    and given back inside `run`, so no caller can leak it. Reading results takes no slot: the CDK
    calls a backfill once per page, and a slot held across calls (or across a restart) would leak
    whenever a binding stops between pages, and deadlock bindings that each hold a finished job
    while waiting for a slot. Backoffs between attempts hold no slot either.

    Time goes through `sleep` and `clock` (monotonic seconds), so tests can freeze it.
    """

    def __init__(self, session: SalesforceSession, max_concurrent_jobs: int, *, sleep: Sleep = asyncio.sleep,
                 clock: Clock = time.monotonic, wait_timeout_s: float = WAIT_TIMEOUT_S,
                 max_records: int = MAX_RECORDS) -> None:
        self._session = session
        self._slots = asyncio.Semaphore(max_concurrent_jobs)
        self._sleep = sleep
        self._clock = clock
        self._wait_timeout_s = wait_timeout_s
        self._max_records = max_records

    async def run(self, log: Logger, soql: str, operation: Operation, object_name: str) -> JobInfo:
        """Export `soql` as a job and return its JobInfo once it is JobComplete.

        The same as the last JobInfo `run_steps` yields; see there.
        """
        last: JobInfo | None = None
        async for step in self.run_steps(log, soql, operation, object_name):
            last = step
        assert last is not None and last.state == JobState.JOB_COMPLETE
        return last

    async def run_steps(self, log: Logger, soql: str, operation: Operation, object_name: str, *,
                        resume: str | None = None) -> AsyncGenerator[JobInfo, None]:
        """Export `soql` as a job: yields each job as it is created, then, last, the JobInfo of
        the job that completed (state JobComplete).

        A caller that checkpoints the created job's id can pass it back as `resume` after a
        restart: that job is waited for instead of submitting a new one, unless Salesforce no
        longer has it. Transient failures are re-submitted (TRANSIENT_ATTEMPTS in all) and
        exhausted limits are waited out; neither is ever returned as a completed job. Raises
        JobTooLargeError, BulkUnsupportedError, JobTimeoutError, JobFailedError,
        LimitExhaustedError, and session errors (SalesforceError) unchanged. Cancelling the caller
        aborts the job in flight. The concurrency slot is held across the yields of created jobs
        (a checkpoint), never across the final one.
        """
        transient_failures = 0
        limited_since: float | None = None
        while True:
            async with self._slots:
                try:
                    resumed = await self.get(log, resume) if resume is not None else None
                    resume = None
                    if resumed is None:
                        job = await self.submit(log, soql, operation, object_name)
                        yield job
                    else:
                        job = resumed
                        log.info("resuming bulk job", {"job_id": job.id, "object": job.object, "state": job.state})
                    job = await self.wait(log, job)
                    error = classify_job(job)
                except (TransientJobError, LimitExhaustedError) as refused:
                    error = refused
            if error is None:
                yield job
                return
            if isinstance(error, TransientJobError):
                transient_failures += 1
                if transient_failures >= TRANSIENT_ATTEMPTS:
                    raise JobFailedError(f"failed {transient_failures} times, last: {error.message}",
                                         job_id=error.job_id, object=object_name, state=error.state) from error
                delay = TRANSIENT_BACKOFF_FIRST_S * 2 ** (transient_failures - 1)
            elif isinstance(error, LimitExhaustedError):
                limited_since = self._clock() if limited_since is None else limited_since
                if self._clock() - limited_since >= LIMIT_MAX_WAIT_S:
                    raise error
                delay = LIMIT_RETRY_S
            else:
                raise error
            log.warning("bulk job will be re-submitted", {**error.log_fields(), "delay_s": delay})
            await self._sleep(delay)

    async def submit(self, log: Logger, soql: str, operation: Operation, object_name: str) -> JobInfo:
        """Create a job, taking no concurrency slot: use `run` unless you manage that yourself.

        A refusal whose text classifies (unsupported object, limits) raises that BulkJobError;
        any other refusal propagates as SalesforceError.
        """
        body = {"operation": operation, "query": soql, "contentType": "CSV", "columnDelimiter": "COMMA",
                "lineEnding": "LF"}
        try:
            job = await self._session.request_model(log, JOBS_PATH, JobInfo, method="POST", json=body)
        except SalesforceError as err:
            kind = classify_message(f"{err.error_code}: {err.message}")
            if kind is None:
                raise
            raise kind(err.message, job_id=None, object=object_name, state=None) from err
        self._log_state(log, job, 0.0)
        return job

    async def wait(self, log: Logger, job: JobInfo, *, timeout_s: float | None = None) -> JobInfo:
        """Poll `job` until it is JobComplete, Failed or Aborted, and return that JobInfo.

        Failed and Aborted are returned, not raised (`classify_job` names them). Polls come
        POLL_FIRST_S apart, doubling to POLL_MAX_S. After `timeout_s` (default: the instance's)
        the job is aborted and JobTimeoutError raised. If the wait ends any other way before a
        terminal state (cancellation, an HTTP error), the job is aborted, best effort, and the
        exception propagates unchanged.
        """
        started = self._clock()
        deadline = started + (self._wait_timeout_s if timeout_s is None else timeout_s)
        delay = POLL_FIRST_S
        try:
            while job.state not in TERMINAL_JOB_STATES:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise JobTimeoutError(f"still {job.state} after {self._clock() - started:.0f} s",
                                          job_id=job.id, object=job.object, state=job.state)
                await self._sleep(min(delay, remaining))
                delay = min(delay * 2, POLL_MAX_S)
                polled = await self.get(log, job.id)
                if polled is None:
                    raise JobNotFoundError("deleted while running", job_id=job.id, object=job.object, state=job.state)
                if polled.state != job.state:
                    self._log_state(log, polled, self._clock() - started)
                job = polled
        except BaseException:
            await self._abandon(log, job)
            raise
        return job

    async def get(self, log: Logger, job_id: str) -> JobInfo | None:
        """The job's current JobInfo, or None when Salesforce no longer has it (404)."""
        try:
            return await self._session.request_model(log, f"{JOBS_PATH}/{job_id}", JobInfo)
        except SalesforceError as err:
            if err.status == 404:
                return None
            raise

    async def abort(self, log: Logger, job_id: str) -> None:
        """Ask Salesforce to stop the job. Raises SalesforceError when it is already terminal."""
        await self._session.request_model(log, f"{JOBS_PATH}/{job_id}", JobInfo, method="PATCH",
                                          json={"state": JobState.ABORTED.value})

    async def delete(self, log: Logger, job_id: str) -> None:
        """Delete a terminal job and its results; a job that is already gone is not an error."""
        try:
            await self._session.request(log, f"{JOBS_PATH}/{job_id}", method="DELETE")
        except SalesforceError as err:
            if err.status != 404:
                raise

    async def page[R](self, log: Logger, job: JobInfo, transform: RowTransform[R], locator: str | None = None,
                      *, rows_before: int | None = 0) -> ResultPage[R]:
        """Open the result page at `locator` (None: the first) of `job`, a JobComplete JobInfo.

        See ResultPage for what its rows promise. `rows_before` counts the rows of the job's
        earlier pages: 0 for the first page; a resuming caller passes the `rows_after` it
        checkpointed, or None without one. When it is known, the last page also checks the job's
        total against `numberRecordsProcessed`, so a job read to its end is reconciled as a whole
        however many processes read it. Raises JobNotFoundError when the job is gone.
        """
        if job.state != JobState.JOB_COMPLETE:
            raise ValueError(f"bulk job {job.id} is {job.state}: only a JobComplete job has results")
        headers, body = await self._open(log, job, locator)
        page: ResultPage[R] = ResultPage(job, locator, _next_locator(headers), _record_count(job, locator, headers),
                                         rows_before)
        page.rows = self._page_rows(log, page, transform, body)
        return page

    async def results[R](self, log: Logger, job: JobInfo, transform: RowTransform[R], locator: str | None = None,
                         *, rows_before: int | None = 0) -> AsyncIterator[ResultPage[R]]:
        """Every page of a JobComplete `job` from `locator` on, in order, each as `page` opens it.

        Consume each page's rows before asking for the next page (RuntimeError otherwise).
        """
        while True:
            current = await self.page(log, job, transform, locator, rows_before=rows_before)
            yield current
            if not current.consumed:
                await current.rows.aclose()
                raise RuntimeError(f"page {locator} of bulk job {job.id} was not consumed before the next")
            if current.next_locator is None:
                return
            locator, rows_before = current.next_locator, current.rows_after

    async def _page_rows[R](self, log: Logger, page: ResultPage[R], transform: RowTransform[R],
                            body: BodyStream) -> AsyncGenerator[R, None]:
        job = page.job
        attempt = 1
        while True:
            rows = 0
            pump = _BodyPump(self._csv_bytes(page, body()))
            try:
                # The hot path: nothing per row but the count and the caller's transform. (The cast:
                # the processor only ever calls `__anext__`, which the pump has.)
                source = cast(AsyncGenerator[bytes, None], pump)
                async for row in IncrementalCSVProcessor(source, config=CSV_CONFIG):
                    rows += 1
                    yield transform(row)
                if rows != page.expected_rows:
                    raise RowCountMismatchError(
                        f"page held {rows} rows, Sforce-NumberOfRecords said {page.expected_rows}", job_id=job.id,
                        object=job.object, locator=page.locator, expected=page.expected_rows, actual=rows)
                break
            except (ResultReadError, *_READ_ERRORS) as err:
                if attempt >= PAGE_READ_ATTEMPTS:
                    raise
                log.warning("bulk result page will be re-fetched", {
                    "job_id": job.id, "object": job.object, "locator": page.locator, "rows_yielded": rows,
                    "attempt": attempt, "error": str(err)})
                await self._sleep(PAGE_RETRY_FIRST_S * 2 ** (attempt - 1))
                attempt += 1
                headers, body = await self._open(log, job, page.locator)
                if (_next_locator(headers), _record_count(job, page.locator, headers)) != (
                        page.next_locator, page.expected_rows):
                    raise ResultReadError("the page changed when it was re-fetched", job_id=job.id,
                                          object=job.object, locator=page.locator) from err
            finally:
                await pump.close()

        if page.next_locator is None:
            total = page.rows_after
            if total is not None and total != job.numberRecordsProcessed:
                raise RowCountMismatchError(
                    f"job held {total} rows, numberRecordsProcessed said {job.numberRecordsProcessed}",
                    job_id=job.id, object=job.object, locator=page.locator, expected=job.numberRecordsProcessed,
                    actual=total)
            log.info("bulk job results read", {"job_id": job.id, "object": job.object, "rows": total})
        page.consumed = True

    async def _open(self, log: Logger, job: JobInfo, locator: str | None) -> tuple[Headers, BodyStream]:
        params: dict[str, str | int] = {"maxRecords": self._max_records}
        if locator is not None:
            params["locator"] = locator
        try:
            # A fresh headers dict per request: the HTTP layer adds the token to it.
            return await self._session.request_stream(log, f"{JOBS_PATH}/{job.id}/results", params=params,
                                                      headers={"Accept": "text/csv", "Accept-Encoding": "gzip"})
        except SalesforceError as err:
            if err.status == 404:
                raise JobNotFoundError(err.message, job_id=job.id, object=job.object, state=job.state) from err
            raise

    async def _csv_bytes(self, page: ResultPage[Any], chunks: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        """The page body as CSV bytes for IncrementalCSVProcessor.

        Drops empty chunks (the CSV processor takes b"" for end of input). Inflates a body that is
        still gzip: aiohttp decodes `Content-Encoding: gzip` (and keeps the header, so it cannot
        tell us), but Salesforce documents result bodies as "always compressed", and one sent
        without the header would reach us raw. Raises ResultReadError when the body does not end
        with a line ending, *before* the CSV parser sees end of input: a cut-off last line must
        never be parsed into a row.
        """
        gunzip: _Gunzip | None = None
        first = True
        last = b"\n"
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                if first:
                    first = False
                    gunzip = _Gunzip() if chunk.startswith(_GZIP_MAGIC) else None
                if gunzip is not None and not (chunk := gunzip.feed(chunk)):
                    continue
                last = chunk[-1:]
                yield chunk
            if (gunzip is not None and not gunzip.complete) or last != b"\n":
                raise ResultReadError("the page body ended in the middle of a row", job_id=page.job.id,
                                      object=page.job.object, locator=page.locator)
        finally:
            await chunks.aclose()

    async def _abandon(self, log: Logger, job: JobInfo) -> None:
        if job.state in TERMINAL_JOB_STATES:
            return
        log.warning("aborting abandoned bulk job", {"job_id": job.id, "object": job.object, "state": job.state})
        try:
            async with asyncio.timeout(ABORT_TIMEOUT_S):
                await self.abort(log, job.id)
        except Exception as err:  # best effort: the exception that abandoned the job is what matters
            log.warning("could not abort bulk job", {"job_id": job.id, "error": str(err)})

    def _log_state(self, log: Logger, job: JobInfo, elapsed_s: float) -> None:
        log.info("bulk job state", {"job_id": job.id, "object": job.object, "state": job.state,
                                    "rows": job.numberRecordsProcessed, "elapsed_s": round(elapsed_s, 1)})


class _BodyPump:
    """Reads a page body in a task of its own and hands its chunks to the CSV parser.

    IncrementalCSVProcessor parses with aiocsv, whose C parser does not pass an exception thrown
    into it on to the awaitable it is waiting on. A connection reset arrives exactly so (thrown
    into the waiting task), and would leave the body generator suspended for good: its response
    never released, and its `aclose()` failing with "already running". Here the parser only ever
    waits on a queue, a read error reaches it as a value that `__anext__` raises, and `close()`
    cancels the reader, so the body's own cleanup runs.
    """

    _END = object()

    def __init__(self, chunks: AsyncGenerator[bytes, None]) -> None:
        # Two chunks in flight overlap the next network read with parsing; more only holds memory.
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=2)
        self._reader = asyncio.create_task(self._read(chunks))

    async def _read(self, chunks: AsyncGenerator[bytes, None]) -> None:
        try:
            async for chunk in chunks:
                await self._queue.put(chunk)
            await self._queue.put(self._END)
        except Exception as err:
            await self._queue.put(err)

    def __aiter__(self) -> "_BodyPump":
        return self

    async def __anext__(self) -> bytes:
        item = await self._queue.get()
        if item is self._END:
            raise StopAsyncIteration
        if isinstance(item, Exception):
            raise item
        assert isinstance(item, bytes)
        return item

    async def close(self) -> None:
        self._reader.cancel()
        await asyncio.wait({self._reader})


class _Gunzip:
    """Incremental gzip inflation that, unlike the CDK's GunzipStream, continues across members."""

    def __init__(self) -> None:
        self._inflater = zlib.decompressobj(wbits=31)

    @property
    def complete(self) -> bool:
        return self._inflater.eof and not self._inflater.unused_data

    def feed(self, data: bytes) -> bytes:
        out = self._inflater.decompress(data)
        while self._inflater.eof and self._inflater.unused_data:
            rest = self._inflater.unused_data
            self._inflater = zlib.decompressobj(wbits=31)
            out += self._inflater.decompress(rest)
        return out


def _next_locator(headers: Headers) -> str | None:
    locator = headers.get("Sforce-Locator")
    return None if locator in (None, "", "null") else locator


def _record_count(job: JobInfo, locator: str | None, headers: Headers) -> int:
    count = headers.get("Sforce-NumberOfRecords")
    if count is None or not count.isdigit():
        raise ResultReadError(f"the page has no usable Sforce-NumberOfRecords header ({count!r})",
                              job_id=job.id, object=job.object, locator=locator)
    return int(count)
