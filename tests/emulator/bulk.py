"""Bulk API 2.0 query jobs: creation checks, the state machine, and result pages (§4).

    UploadComplete --poll--> InProgress --poll--> JobComplete | Failed
          \\__________________\\__ PATCH {"state":"Aborted"} __> Aborted

A job advances only when it is polled (``GET /jobs/query/{id}``): it answers
``InProgress`` to the first ``Knobs.job_in_progress_polls`` polls and completes on the
next one, provided it is also at least ``job_in_progress_seconds`` old. With the default
of 1, the second poll sees JobComplete. Results, abort and delete requests never move a
job, so a client that fetches results before it has seen JobComplete gets 412. On
completion the job takes a snapshot of the org: its pages are fixed from then on.

Where Salesforce is unsure, the emulator chooses (salesforce-api.md §4.2, §4.3, §10):

- Errors the SOQL compiler can see are **400 at create**: syntax (MALFORMED_QUERY),
  unknown object (INVALID_TYPE) or field (INVALID_FIELD), objects the Bulk API rejects
  (INVALIDENTITY), SOQL that Bulk does not support (FUNCTIONALITY_NOT_ENABLED), including
  compound fields ("Selecting compound data not supported in Bulk Query": Bulk 2.0
  clients such as Airbyte's and Estuary's handle it as a 400 on job creation; match
  on the message, the errorCode is not documented).
- Errors found while writing the CSV make the job **Failed** with an ``errorMessage``:
  base64 fields ("FeatureNotEnabled : Cannot serialize value for 'Body' in CSV format"),
  and the failures tests inject (``Knobs.job_failures``).
- Results before completion: **412** JOB_NOT_COMPLETE (the v46 documented behaviour).
"""

import base64
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel

from .binding import Bound, bind
from .counters import Counters, JobEnd, JobRecord, PageServed
from .errors import ApiError, not_found
from .ids import record_id
from .knobs import FaultState, Knobs
from .org import Org
from .pages import COLUMN_DELIMITERS, LINE_ENDINGS, CsvWriter, csv_columns
from .results import Page, Position, ResultSet
from .schema import FieldType
from .soql import Aggregate, Construct, SoqlError, parse
from .wire import json_datetime

UNSUPPORTED_IN_BULK = {
    "subquery": "Aggregate Relationships not supported in Bulk V2 Query with CSV content type",
    "aggregate": "Aggregate functions not supported in Bulk V2 Query",
    "GROUP BY": "GROUP BY not supported in Bulk V2 Query",
    "OFFSET": "OFFSET not supported in Bulk V2 Query",
    "TYPEOF": "TYPEOF not supported in Bulk V2 Query",
    "FIELDS()": "FIELDS() not supported in Bulk V2 Query",
    "compound": "Selecting compound data not supported in Bulk Query",
}
NOT_TERMINATED = "Error encountered when deleting the job because the job is not terminated"
_LIST_LOCATOR = "01gR0000000JobLst"


class JobState(StrEnum):
    UPLOAD_COMPLETE = "UploadComplete"
    IN_PROGRESS = "InProgress"
    JOB_COMPLETE = "JobComplete"
    FAILED = "Failed"
    ABORTED = "Aborted"

    @property
    def terminal(self) -> bool:
        return self in (JobState.JOB_COMPLETE, JobState.FAILED, JobState.ABORTED)

    @property
    def status_name(self) -> str:
        """The upper-snake name used in JOB_NOT_COMPLETE messages, e.g. IN_PROGRESS."""
        return self.name


class CreateJobRequest(BaseModel):
    """The body of ``POST /jobs/query`` (§4.2)."""

    operation: Literal["query", "queryAll"]
    query: str
    contentType: Literal["CSV"] = "CSV"
    columnDelimiter: Literal["BACKQUOTE", "CARET", "COMMA", "PIPE", "SEMICOLON", "TAB"] = "COMMA"
    lineEnding: Literal["LF", "CRLF"] = "LF"


class JobInfo(BaseModel):
    """A query job as ``GET /jobs/query/{id}`` describes it (§4.4)."""

    id: str
    operation: str
    object: str
    createdById: str
    createdDate: str
    systemModstamp: str
    state: JobState
    concurrencyMode: str = "Parallel"
    contentType: str = "CSV"
    apiVersion: float
    jobType: str = "V2Query"
    lineEnding: str
    columnDelimiter: str
    numberRecordsProcessed: int = 0
    retries: int = 0
    totalProcessingTime: int = 0
    isPkChunkingSupported: bool = True
    errorMessage: str | None = None


# The create response carries only these (doc example, §4.2).
CREATE_FIELDS = {
    "id",
    "operation",
    "object",
    "createdById",
    "createdDate",
    "systemModstamp",
    "state",
    "concurrencyMode",
    "contentType",
    "apiVersion",
    "lineEnding",
    "columnDelimiter",
}


@dataclass
class Job:
    info: JobInfo
    bound: Bound
    api_version: str
    created: datetime
    in_progress_polls: int
    in_progress_seconds: float
    failure: str | None  # the errorMessage this job will fail with, decided at create
    in_progress_answers: int = 0  # polls answered InProgress so far
    pages_served: int = 0  # whole result pages delivered, re-fetches included
    result: ResultSet | None = None
    # Every locator handed out, and the position its page starts at. Kept as long as the
    # job exists, so any page can be fetched again.
    locators: dict[str, Position] = field(default_factory=dict)
    _writers: dict[bool, CsvWriter] = field(default_factory=dict)

    def csv_writer(self, null_as_quoted_empty: bool) -> CsvWriter:
        """The job's CSV writer (built once: it precomputes line templates)."""
        writer = self._writers.get(null_as_quoted_empty)
        if writer is None:
            assert self.result is not None
            writer = self._writers[null_as_quoted_empty] = CsvWriter(
                self.result.source,
                csv_columns(self.bound.fields, self.api_version),
                COLUMN_DELIMITERS[self.info.columnDelimiter],
                LINE_ENDINGS[self.info.lineEnding],
                null_as_quoted_empty,
            )
        return writer


@dataclass(frozen=True)
class ResultsPage:
    job: Job
    page: Page
    locator: str | None  # the next page's locator; None on the last page


class JobStore:
    """All query jobs of the org. Used only from the server's event-loop thread."""

    def __init__(self, org: Org, knobs: Knobs, faults: FaultState, counters: Counters) -> None:
        self._org = org
        self._knobs = knobs
        self._faults = faults
        self._counters = counters
        self._jobs: dict[str, Job] = {}
        self.created_total = 0  # counts toward DailyBulkV2QueryJobs; never reset

    def create(self, request: CreateJobRequest, api_version: str) -> Job:
        """Validate and register a job (raises ``ApiError`` 400 as described above)."""
        try:
            query = parse(request.query)
            try:
                spec = self._org.spec(query.object.text)
            except KeyError:
                spec = None  # bind() raises INVALID_TYPE with Salesforce's message
            if spec is not None and not spec.bulk_supported:
                raise ApiError(
                    400, "INVALIDENTITY", f"Entity '{spec.name}' is not supported by the Bulk API."
                )
            bound = bind(self._org, query)
        except SoqlError as error:
            raise ApiError.from_soql(error) from None
        unsupported = _unsupported_construct(bound)
        if unsupported:
            raise ApiError(400, "FUNCTIONALITY_NOT_ENABLED", UNSUPPORTED_IN_BULK[unsupported])
        if self.created_total >= self._knobs.daily_bulk_jobs:
            raise ApiError(
                400,
                "LIMIT_EXCEEDED",
                f"Max bulk v2 query jobs ({self._knobs.daily_bulk_jobs}) per 24 hrs has been reached",
            )
        blobs = [f.name for f in bound.fields if f.type is FieldType.BASE64]
        failure = (
            f"FeatureNotEnabled : Cannot serialize value for '{blobs[0]}' in CSV format" if blobs else None
        )

        self.created_total += 1
        now = self._org.clock.now()
        stamp = now.replace(microsecond=0)  # Salesforce datetimes are whole seconds
        job_id = record_id("750", self.created_total)
        info = JobInfo(
            id=job_id,
            operation=request.operation,
            object=bound.spec.name,
            createdById=record_id("005", 1),
            createdDate=json_datetime(stamp),
            systemModstamp=json_datetime(stamp),
            state=JobState.UPLOAD_COMPLETE,
            apiVersion=float(api_version),
            lineEnding=request.lineEnding,
            columnDelimiter=request.columnDelimiter,
            isPkChunkingSupported=not bound.query.order_by and bound.query.limit is None,
        )
        job = Job(
            info,
            bound,
            api_version,
            now,
            self._knobs.job_in_progress_polls,
            self._knobs.job_in_progress_seconds,
            failure,
        )
        self._jobs[job_id] = job
        self._counters.job_created(
            JobRecord(job_id, request.operation, request.query, bound.spec.name, api_version)
        )
        return job

    def listing(self, job_type: str | None, locator: str | None) -> tuple[list[JobInfo], str | None]:
        """One page of ``GET /jobs/query`` (§4.8): the jobs not deleted, newest first (Salesforce
        documents no order), and the locator of the next page (None: done). Every job here is a
        V2Query job, so another ``jobType`` lists none. The locator is the doc's shape,
        ``<query id>-<offset>``; an unknown one answers INVALID_QUERY_LOCATOR."""
        offset = 0
        if locator is not None:
            prefix, _, number = locator.rpartition("-")
            if prefix != _LIST_LOCATOR or not number.isdigit():
                raise ApiError(400, "INVALID_QUERY_LOCATOR", f"invalid query locator: {locator}")
            offset = int(number)
        jobs = [job.info for job in reversed(self._jobs.values())] if job_type in (None, "", "V2Query") else []
        end = offset + self._knobs.job_list_page_size
        return jobs[offset:end], f"{_LIST_LOCATOR}-{end}" if end < len(jobs) else None

    def get(self, job_id: str) -> Job:
        """The job, or 404 NOT_FOUND (unknown or deleted)."""
        job = self._jobs.get(job_id)
        if job is None:
            raise not_found()
        return job

    def poll(self, job: Job) -> None:
        """A job-info GET: completes (or fails) the job if it has answered InProgress to
        enough polls and is old enough; otherwise answers InProgress once more."""
        if job.info.state.terminal:
            return
        now = self._org.clock.now()
        old_enough = (now - job.created).total_seconds() >= job.in_progress_seconds
        if job.in_progress_answers >= job.in_progress_polls and old_enough:
            self._finish(job, now)
        else:
            job.in_progress_answers += 1
            self._set_state(job, JobState.IN_PROGRESS, now)

    def abort(self, job: Job) -> None:
        if job.info.state.terminal:
            raise ApiError(400, "API_ERROR", f"Job is already in a terminal state: {job.info.state.value}")
        self._set_state(job, JobState.ABORTED, self._org.clock.now())

    def delete(self, job: Job) -> None:
        if not job.info.state.terminal:
            raise ApiError(400, "API_ERROR", NOT_TERMINATED)
        del self._jobs[job.info.id]

    def page_delivered(self, job: Job, results: ResultsPage, locator: str | None) -> None:
        """Count a result page delivered whole; then the expiry fault may make the job
        disappear, if more pages follow (Salesforce deletes jobs 7 days after they complete,
        §4.10, whatever the client is doing)."""
        job.pages_served += 1
        seeded, mutated = _row_identities(job, results.page)
        page = PageServed(job.info.id, locator, results.page.rows, results.locator is None)
        columns = tuple(f.name for f in job.bound.fields)
        self._counters.page_served(page, job.info.object, columns, seeded, mutated)
        if results.locator is not None and self._faults.job_expires(job.info.object, job.pages_served):
            self._jobs.pop(job.info.id, None)
            self._counters.job_expired(job.info.id)

    def results(self, job: Job, api_version: str, locator: str | None, max_records: int) -> ResultsPage:
        """The page at ``locator`` (None: the first page), ``max_records`` rows at most."""
        if api_version != job.api_version:
            raise ApiError(
                409,
                "API_ERROR",
                f"The job was created with API version "
                f"{job.api_version}; request its results with that version",
            )
        if job.info.state is not JobState.JOB_COMPLETE or job.result is None:
            raise ApiError(
                412,
                "JOB_NOT_COMPLETE",
                "can only download query results of "
                "successfully completed bulk job with status: JOB_COMPLETE. "
                f"Current status: {job.info.state.status_name}",
            )
        start = job.result.start() if locator is None else job.locators.get(locator)
        if start is None:
            raise ApiError(400, "INVALID_QUERY_LOCATOR", f"invalid locator: {locator}")
        page = job.result.page(start, max_records)
        next_locator = None
        if page.next is not None:
            # Opaque to clients; base64 of the row offset, like the doc's "MTAwMDA".
            next_locator = base64.b64encode(str(page.next.emitted).encode()).decode().rstrip("=")
            job.locators.setdefault(next_locator, page.next)
        return ResultsPage(job, page, next_locator)

    def _finish(self, job: Job, now: datetime) -> None:
        info = job.info
        failure = job.failure or self._faults.job_failure(info.object, job.bound.query.text)
        if failure is not None:
            info.errorMessage = failure
            self._set_state(job, JobState.FAILED, now)
        else:
            job.result = ResultSet(
                self._org, job.bound, self._org.snapshot(), include_deleted=info.operation == "queryAll"
            )
            info.numberRecordsProcessed = job.result.count()
            self._set_state(job, JobState.JOB_COMPLETE, now)
        info.totalProcessingTime = int((now - job.created).total_seconds() * 1000)

    def _set_state(self, job: Job, state: JobState, now: datetime) -> None:
        job.info.state = state
        job.info.systemModstamp = json_datetime(now.replace(microsecond=0))
        if state.terminal:
            self._counters.job_ended(job.info.id, JobEnd(state.value, job.info.numberRecordsProcessed))


def _row_identities(job: Job, page: Page) -> tuple[list[range], list[Hashable]]:
    """The rows of ``page``: seeded rows as index ranges, and every other row (mutated or
    inserted) as (Id, timeline stamp, IsDeleted), which changes with each version a
    mutation makes (every mutation moves SystemModstamp, or CreatedDate on history)."""
    timeline = job.bound.spec.timeline_field
    seeded: list[range] = []
    mutated: list[Hashable] = []
    for segment in page.segments:
        if isinstance(segment, range):
            seeded.append(segment)
        else:
            mutated.append((segment["Id"], segment.get(timeline) if timeline else None, segment.get("IsDeleted")))
    return seeded, mutated


def _unsupported_construct(bound: Bound) -> str | None:
    """The first SOQL construct Bulk 2.0 query rejects (§4.3), if any."""
    query = bound.query
    for item in query.select:
        if isinstance(item, Construct):
            return item.name
        if isinstance(item, Aggregate):
            return "aggregate"
    if query.group_by:
        return "GROUP BY"
    if query.offset is not None:
        return "OFFSET"
    if any(f.compound for f in bound.fields):
        return "compound"
    return None
