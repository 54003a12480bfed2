"""Bulk API 2.0 query jobs: submit -> poll -> stream result pages -> delete.

`BulkJobs` owns a job from its creation to its deletion: a job that fails or is abandoned is deleted
as soon as it is terminal; a complete one some minutes after `finish` says its last page was read
(see FINISHED_JOB_GRACE). Callers build the SOQL, turn rows into documents, and keep where a job
stands in their checkpoint (states.py): this module keeps nothing about a job in memory that a restart
needs, so a restart can poll the same job, or read on from a locator, with nothing lost.
"""

import asyncio
import zlib
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from logging import Logger
from typing import Any, Literal, Protocol, cast

import aiohttp
from estuary_cdk.http import Headers
from estuary_cdk.incremental_csv_processor import (
    CSVConfig,
    CSVProcessingError,
    IncrementalCSVRowProcessor,
)

from .auth import BodyStream, SalesforceError, SalesforceSession
from .job_errors import (
    JobNotFoundError,
    JobTimeoutError,
    ResultReadError,
    RowCountMismatchError,
    classify_message,
)
from .models import TERMINAL_JOB_STATES, JobInfo, JobList, JobState
from .waits import Waits

type Operation = Literal["query", "queryAll"]


class ColumnTransform[R](Protocol):
    """A row function that can be bound to a page's header, to take each row's cells by position
    (fields.CsvTransform): the header is checked once per page and no dict is built per row."""

    def __call__(self, row: dict[str, str], /) -> R: ...

    def for_header(self, header: list[str], /) -> Callable[[list[str]], R]: ...


# A function of a row as a dict keyed by the header, or one that binds to the header.
type RowTransform[R] = Callable[[dict[str, str]], R] | ColumnTransform[R]

JOBS_PATH = "/jobs/query"

# Polls come a quarter of the time waited so far apart, from POLL_FIRST_S up to POLL_MAX_S: a job
# is noticed at most a quarter of its wait (and at most 20 s) after it completes. A backfill's
# slices run one after another, so that lateness is paid once per slice (a delay that doubles
# noticed a 20 s job 11.5 s late). The price is requests: about 17 polls for a job of 5 to 60 s
# where doubling spent 7, each counted against the org's daily API allocation, which its other
# integrations share; past 80 s it polls 3 times a minute. Small jobs (a delta window, a backfill's
# last slice) take a second or two: polling sooner than POLL_FIRST_S only spends requests.
POLL_FIRST_S = 0.5
POLL_MAX_S = 20.0
POLL_FRACTION = 0.25
# How long a job may take from its creation. Salesforce gives up on a query after 2 min of
# execution plus 30 min of processing; two hours leaves room for queueing behind the org's other
# jobs. A job still running then is stuck or far too large: it is aborted (and its unit split).
WAIT_TIMEOUT_S = 2 * 60 * 60.0
# Aborting and deleting an abandoned job is a courtesy to the org's query capacity; a stop must
# not hang on it.
ABANDON_TIMEOUT_S = 30.0
# A complete job is deleted this long after its last page was read. The checkpoint that moves past
# the job is written by then, but Flow may not have committed it yet, and a connector killed in between
# restarts from the checkpoint before, which reads that last page again: the job must still be there.
# A process that stops within the grace leaves the job to Salesforce, which deletes jobs after 7 days.
FINISHED_JOB_GRACE_S = 5 * 60.0
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


def created_at(job: JobInfo, fallback: datetime) -> datetime:
    """Salesforce's createdDate of `job`, or `fallback` when the JobInfo has none."""
    return datetime.fromisoformat(job.createdDate) if job.createdDate else fallback


@dataclass(slots=True)
class ResultPage[R]:
    """One page of a completed job's results.

    `rows` yields the page's rows through the caller's transform, once each, unless the body
    broke off and the page was re-fetched: then the rows before the break come again (a duplicate
    is harmless under the collection key; a skipped row is not). It never yields a partial row.
    When `rows` ends without an error, all `expected_rows` were yielded and the caller may
    checkpoint `next_locator` (None: this was the last page: `finish` the job after that checkpoint) and
    `rows_after`. When it raises, checkpoint nothing from this page.
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

    At most `max_concurrent_jobs` jobs are between creation and a terminal state at once: callers
    hold `slot()` from `submit` until `wait` returns (the server-side work, which is what loads the
    org). Reading results takes no slot: the CDK calls a backfill once per page, and a slot held
    across calls (or across a restart) would leak whenever a binding stops between pages. Backoffs
    between attempts hold no slot either.

    Time goes through `waits`, so tests can freeze it and a graceful stop cuts polling short.
    """

    def __init__(self, session: SalesforceSession, max_concurrent_jobs: int, waits: Waits, *,
                 max_records: int = MAX_RECORDS) -> None:
        self._session = session
        self._slots = asyncio.Semaphore(max_concurrent_jobs)
        self._waits = waits
        self._max_records = max_records
        self._finished: dict[str, datetime] = {}  # complete jobs read to the end: when to delete them
        # What the checkpoint this process started from names (see `restored`), and every job this
        # process created or adopted: none of them can be another unit's orphan.
        self._known: set[str] = set()
        self._marks: Counter[tuple[str, Operation]] = Counter()
        self._unresolved: set[tuple[str, Operation, datetime]] = set()
        # The org's jobs as listed once, the first time a mark is resolved. Submissions wait while the
        # list is taken, so a job of this process is always in `_known` before it can be listed.
        self._listing: list[JobInfo] | None = None
        self._listing_lock = asyncio.Lock()

    def slot(self) -> AbstractAsyncContextManager[Any]:
        """One of the `max_concurrent_jobs` places for a job between creation and a terminal state."""
        return self._slots

    def restored(self, object_name: str, operation: Operation, *, job_id: str | None = None,
                 since: datetime | None = None) -> None:
        """Say what the checkpoint this process started from holds for one export of `object_name`: the
        job it names (never taken for an orphan), and the mark of the next submission it leads to
        (`orphan` resolves it once). Call for every export state before the first submission."""
        if job_id is not None:
            self._known.add(job_id)
        if since is not None:
            self._marks[object_name, operation] += 1
            self._unresolved.add((object_name, operation, since))

    async def orphan(self, log: Logger, object_name: str, operation: Operation, since: datetime) -> JobInfo | None:
        """The job a killed process created for the mark `since`, if the checkpoint this process started
        from held that mark and exactly one job fits it.

        A job fits when Salesforce lists it for `object_name` and `operation`, created by the connector's
        user from `since` on (createdDate is whole seconds), neither Failed nor Aborted (those are
        deleted by whoever saw them end), and no checkpoint or submission of this process names it.
        The first mark resolved lists the org's jobs (a request per 1,000 jobs the org keeps, Salesforce
        keeping them 7 days), once per process; a mark this process wrote costs nothing.

        None, and the unit is submitted again (one job spent, nothing lost), when no job fits, when
        several do, or when two marks of the same object and operation were restored: a job could then
        fit both, and adopting the other unit's job would export the wrong rows.
        """
        key = (object_name, operation, since)
        if key not in self._unresolved:
            return None
        self._unresolved.discard(key)
        if self._marks[object_name, operation] > 1:
            log.info("not looking for an orphaned bulk job: two exports of the object were being submitted",
                     {"object": object_name, "operation": operation})
            return None
        user = await self._session.user_id(log)
        earliest = since.replace(microsecond=0)
        fits = [job for job in await self._jobs_listed(log)
                if job.object == object_name and job.operation == operation and job.id not in self._known
                and job.state not in (JobState.FAILED, JobState.ABORTED) and job.createdDate is not None
                and created_at(job, since) >= earliest and (user is None or job.createdById == user)]
        if len(fits) != 1:
            if fits:
                log.warning("several bulk jobs could be the one a killed process created; submitting anew",
                            {"object": object_name, "operation": operation, "jobs": [job.id for job in fits]})
            return None
        job = fits[0]
        self._known.add(job.id)
        log.info("adopting the bulk job a killed process created", {"job_id": job.id, "object": object_name,
                                                                     "since": since, "state": job.state})
        return job

    async def _jobs_listed(self, log: Logger) -> list[JobInfo]:
        async with self._listing_lock:
            if self._listing is None:
                listing: list[JobInfo] = []
                page = await self._session.request_model(log, JOBS_PATH, JobList, params={"jobType": "V2Query"})
                listing.extend(page.records)
                while not page.done and page.nextRecordsUrl:
                    page = await self._session.request_model(log, page.nextRecordsUrl, JobList)
                    listing.extend(page.records)
                self._listing = listing
            return self._listing

    async def submit(self, log: Logger, soql: str, operation: Operation, object_name: str) -> JobInfo:
        """Create a job. A refusal whose text classifies (unsupported object, limits) raises that
        BulkJobError; any other refusal propagates as SalesforceError."""
        await self._delete_finished(log)
        body = {"operation": operation, "query": soql, "contentType": "CSV", "columnDelimiter": "COMMA",
                "lineEnding": "LF"}
        # While a mark may still be resolved, a new job must be known before the org's jobs are listed.
        listing_possible = self._listing_lock if self._unresolved else nullcontext()
        try:
            async with listing_possible:
                job = await self._session.request_model(log, JOBS_PATH, JobInfo, method="POST", json=body)
                self._known.add(job.id)
        except SalesforceError as err:
            kind = classify_message(f"{err.error_code}: {err.message}")
            if kind is None:
                raise
            raise kind(err.message, job_id=None, object=object_name, state=None) from err
        self._log_state(log, job)
        return job

    async def wait(self, log: Logger, job_id: str, object_name: str, *, created: datetime,
                   waits: Waits | None = None) -> JobInfo | None:
        """Poll the job until it is JobComplete, Failed or Aborted, and return that JobInfo.

        A Failed or Aborted job has been deleted by then (`classify_job` says what it means); a
        complete one is left for its pages and `finish`. Returns None, the job left running,
        when a graceful stop cuts the wait short: the caller's checkpoint still names the job.
        Polls come a quarter of the time this call has waited apart, from POLL_FIRST_S to
        POLL_MAX_S. A job still running WAIT_TIMEOUT_S
        after `created` is abandoned (aborted and deleted) and JobTimeoutError raised. A job
        Salesforce no longer has raises JobNotFoundError. Any other error propagates and leaves
        the job running, for the restart to poll. `waits` overrides the instance's (for a wait that
        a stop must not cut short).
        """
        waits = waits or self._waits
        await self._delete_finished(log)
        # Counted in the schedule's own seconds, not the clock's: test processes scale waits down.
        polled_for = 0.0
        job = await self._get(log, job_id, object_name)
        while job.state not in TERMINAL_JOB_STATES:
            waited = (waits.now() - created).total_seconds()
            if waited >= WAIT_TIMEOUT_S:
                await self.abandon(log, job)
                raise JobTimeoutError(f"still {job.state} {waited:.0f} s after its creation", job_id=job.id,
                                      object=job.object, state=job.state)
            delay = min(POLL_MAX_S, max(POLL_FIRST_S, polled_for * POLL_FRACTION))
            if not await waits.pause(delay):
                return None
            polled_for += delay
            polled = await self._get(log, job_id, object_name)
            if polled.state != job.state:
                self._log_state(log, polled)
            job = polled
        if job.state != JobState.JOB_COMPLETE:
            await self._delete(log, job.id)
        return job

    async def abandon(self, log: Logger, job: JobInfo) -> None:
        """Abort the job if it is still running, then delete it; best effort, never raises."""
        log.warning("abandoning bulk job", {"job_id": job.id, "object": job.object, "state": job.state})
        try:
            async with asyncio.timeout(ABANDON_TIMEOUT_S):
                if job.state not in TERMINAL_JOB_STATES:
                    await self._session.request_model(log, f"{JOBS_PATH}/{job.id}", JobInfo, method="PATCH",
                                                      json={"state": JobState.ABORTED.value})
                await self._delete(log, job.id)
        except Exception as err:  # best effort: whatever made the caller give up on the job matters more
            log.warning("could not abort or delete bulk job", {"job_id": job.id, "error": str(err)})

    async def finish(self, log: Logger, job_id: str) -> None:
        """Say that a complete job's last page has been read and checkpointed past: it is deleted
        FINISHED_JOB_GRACE_S later, by whichever call of this object comes then."""
        self._finished[job_id] = self._waits.after(timedelta(seconds=FINISHED_JOB_GRACE_S))
        await self._delete_finished(log)

    async def _delete_finished(self, log: Logger) -> None:
        now = self._waits.now()
        for job_id in [job_id for job_id, due in self._finished.items() if due <= now]:
            # Bindings share this object: another call may have taken the job while we awaited.
            if self._finished.pop(job_id, None) is not None:
                await self._delete(log, job_id)

    async def _get(self, log: Logger, job_id: str, object_name: str) -> JobInfo:
        try:
            return await self._session.request_model(log, f"{JOBS_PATH}/{job_id}", JobInfo)
        except SalesforceError as err:
            if err.status == 404:
                raise JobNotFoundError("Salesforce no longer has the job", job_id=job_id, object=object_name,
                                       state=None) from err
            raise

    async def _delete(self, log: Logger, job_id: str) -> None:
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
        await self._delete_finished(log)
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
                # The hot path: nothing per row but the width check, the count and the row function.
                # The header row is read first and the row function bound to it, once per page (the
                # cast: the processor only ever calls `__anext__`, which the pump has).
                cells_of_rows = aiter(IncrementalCSVRowProcessor(cast(AsyncGenerator[bytes, None], pump),
                                                                 config=CSV_CONFIG))
                header = await anext(cells_of_rows, None)
                if header is not None:
                    width = len(header)
                    convert = _bind(transform, header)
                    async for cells in cells_of_rows:
                        if len(cells) != width:
                            raise CSVProcessingError(f"CSV row {rows + 2} has {len(cells)} columns but {width} "
                                                     "were expected.")
                        rows += 1
                        yield convert(cells)
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
                await self._waits.sleep(PAGE_RETRY_FIRST_S * 2 ** (attempt - 1))
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
        """The page body as CSV bytes for IncrementalCSVRowProcessor.

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

    def _log_state(self, log: Logger, job: JobInfo) -> None:
        log.info("bulk job state", {"job_id": job.id, "object": job.object, "state": job.state,
                                    "rows": job.numberRecordsProcessed})


class _BodyPump:
    """Reads a page body in a task of its own and hands its chunks to the CSV parser.

    IncrementalCSVRowProcessor parses with aiocsv, whose C parser does not pass an exception thrown
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


def _bind[R](transform: RowTransform[R], header: list[str]) -> Callable[[list[str]], R]:
    """`transform` as a function of a row's cells under `header`."""
    for_header = getattr(transform, "for_header", None)
    if for_header is not None:
        return cast(Callable[[list[str]], R], for_header(header))
    return lambda cells: transform(dict(zip(header, cells, strict=True)))


def _next_locator(headers: Headers) -> str | None:
    locator = headers.get("Sforce-Locator")
    return None if locator in (None, "", "null") else locator


def _record_count(job: JobInfo, locator: str | None, headers: Headers) -> int:
    count = headers.get("Sforce-NumberOfRecords")
    if count is None or not count.isdigit():
        raise ResultReadError(f"the page has no usable Sforce-NumberOfRecords header ({count!r})",
                              job_id=job.id, object=job.object, locator=locator)
    return int(count)
