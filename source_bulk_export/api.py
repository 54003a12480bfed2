"""Fetch functions: how each binding's rows leave Salesforce and become documents.

`resources.py` binds these with `functools.partial` over narrow arguments; the CDK appends
`log` and the cursor arguments. Every HTTP call happens inside `BulkJobs` or `RestQuery`.

Time line of one incremental object (`cf` is its cursor field, a whole-second timestamp):

    start_date              cutoff                     horizon = floor(now) - lag     now
        |-----------------------|-------------------------------|.........................|
        [ backfill: cf <= cutoff ]( delta windows: (cursor, horizon] )( not read yet: late
                                                                        commits land here )

The backfill covers `start_date <= cf <= cutoff` (`start_date` only when configured); the delta
stream starts strictly after `cutoff`. `cutoff` is `floor(now) - lag` when the binding is
initialised (resources.py), so neither side ever reads the newest `lag` of history.
"""

from collections.abc import AsyncGenerator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from logging import Logger
from typing import Any, Literal
from urllib.parse import quote_plus

from estuary_cdk.capture.common import LogCursor, PageCursor, make_cursor_dict

from .fields import KEY_FIELD, Document, ObjectPlan
from .job_errors import BulkUnsupportedError, JobTooLargeError
from .jobs import BulkJobs
from .models import JobInfo, JobState, SalesforceRecord
from .rest import BATCH_SIZE, RestQuery

# A backfill slice that timed out or was too large is halved, down to this many rows. A job this
# small that still times out is failing for a reason other than its size (an expensive formula,
# a sharing computation), so splitting further would only spend the daily job allocation.
MIN_SLICE_ROWS = 1_000

# The delta stream checkpoints at the first whole-second boundary after this many documents,
# so a window of a million changes is many small units of work, not one.
DELTA_CHECKPOINT_ROWS = 10_000

# One fetch_changes call returns (at a second boundary) after this many documents; the CDK calls
# again at once while the cursor is behind. The CDK never interrupts a running call, so short
# calls keep a graceful stop prompt.
DELTA_ROWS_PER_CALL = 200_000

# Salesforce refuses a request whose URI passes 16,384 bytes (414), and a REST query travels in
# its URI; a Bulk job's query travels in the request body. This leaves room for the host, the
# path and the other parameters.
MAX_REST_QUERY_BYTES = 15_000

Operation = Literal["query", "queryAll"]


def fits_in_a_rest_url(soql: str) -> bool:
    """Whether `soql`, URL-encoded as REST's `q` parameter, stays under MAX_REST_QUERY_BYTES."""
    return len(quote_plus(soql)) <= MAX_REST_QUERY_BYTES


def soql_datetime(moment: datetime) -> str:
    """A SOQL dateTime literal at whole-second precision (unquoted, UTC)."""
    if moment.microsecond:
        raise ValueError(f"{moment.isoformat()} is not a whole second: windows are whole seconds")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def soql_string(value: str) -> str:
    """A quoted SOQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def parse_datetime(value: str) -> datetime:
    """A document's datetime value (`YYYY-MM-DDTHH:MM:SS.sssZ`) as an aware datetime."""
    return datetime.fromisoformat(value)


def floor_to_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def delta_horizon(now: datetime, lag: timedelta) -> datetime:
    """The newest instant the delta stream reads: `floor(now) - lag`.

    Salesforce stamps a transaction's rows when it starts, and they become visible when it
    commits; `lag` is how late a commit may be and still be captured.
    """
    return floor_to_second(now) - lag


# --- backfill ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackfillCursor:
    """Where a backfill stands; checkpointed as the CDK's page cursor (a merge-patched dict).

    `last_id` is a value watermark: every row with `Id <= last_id` (in the cutoff window) has been
    emitted, and deletions cannot shift it. `job_id` is the current slice's Bulk job from the
    moment it is created: with `rows_before` None it may still be running (a restart waits for
    it rather than submitting the slice again); with `rows_before` set it is complete and being
    read, `locator` naming the next result page (None: the first) and `rows_before` counting the
    rows of its earlier pages, to reconcile the job's total. A restart resumes that job while
    Salesforce still has it. `slice_rows` is the slice size after any splits, `via_rest` records
    that the Bulk API refused the object, and `complete` that nothing is left to read.
    """

    slice_rows: int
    last_id: str | None = None
    job_id: str | None = None
    locator: str | None = None
    rows_before: int | None = None
    via_rest: bool = False
    complete: bool = False

    @classmethod
    def load(cls, page: PageCursor, default_slice_rows: int) -> "BackfillCursor":
        if page is None:
            return cls(slice_rows=default_slice_rows)
        if not isinstance(page, dict):
            raise TypeError(f"backfill cursor {page!r} is not a dict: was the state written by another connector?")
        return cls(**{"slice_rows": default_slice_rows, **page})

    def checkpoint(self) -> dict[str, Any]:
        # Every key is always present (None clears it under the CDK's merge patch).
        return make_cursor_dict(asdict(self))

    def between_slices(self, last_id: str | None) -> "BackfillCursor":
        return replace(self, last_id=last_id, job_id=None, locator=None, rows_before=None)


def backfill_soql(plan: ObjectPlan, cutoff: datetime, start_date: datetime | None, last_id: str | None,
                  limit: int) -> str:
    """One Id keyset slice: the next `limit` rows after `last_id` with `start_date <= cf <= cutoff`."""
    assert plan.cursor_field is not None
    conditions = [f"{plan.cursor_field} <= {soql_datetime(cutoff)}"]
    if start_date is not None:
        conditions.append(f"{plan.cursor_field} >= {soql_datetime(floor_to_second(start_date))}")
    if last_id is not None:
        conditions.append(f"{KEY_FIELD} > {soql_string(last_id)}")
    return f"{plan.soql_select()} WHERE {' AND '.join(conditions)} ORDER BY {KEY_FIELD} LIMIT {limit}"


async def backfill_object(
    bulk: BulkJobs,
    rest: RestQuery,
    plan: ObjectPlan,
    start_date: datetime | None,
    slice_rows: int,
    log: Logger,
    page: PageCursor,
    cutoff: LogCursor,
) -> AsyncGenerator[Document | PageCursor, None]:
    """Backfill `plan`'s object: every row with `start_date <= cf <= cutoff`, in Id order.

    One call does one unit and checkpoints it: runs a slice's Bulk job (checkpointing its id as
    soon as it exists, then reading its first page), or reads one further result page. A restart
    therefore repeats at most one page and never re-submits a job Salesforce still has. The
    backfill is complete when a call returns without a trailing cursor.
    """
    assert isinstance(cutoff, datetime)
    cursor = BackfillCursor.load(page, slice_rows)

    if cursor.complete:
        return
    if cursor.via_rest or plan.bulk_supported is False:
        async for item in _backfill_rest_page(rest, plan, start_date, cutoff, cursor, log):
            yield item
        return

    if cursor.rows_before is None:
        soql = backfill_soql(plan, cutoff, start_date, cursor.last_id, cursor.slice_rows)
        try:
            async for job in bulk.run_steps(log, soql, "query", plan.name, resume=cursor.job_id):
                if job.state != JobState.JOB_COMPLETE:  # just created: remember it before waiting
                    yield replace(cursor, job_id=job.id).checkpoint()
        except JobTooLargeError as err:
            if cursor.slice_rows <= MIN_SLICE_ROWS:
                raise
            smaller = max(MIN_SLICE_ROWS, cursor.slice_rows // 2)
            log.warning("backfill slice was too large for one job; splitting it",
                        {**err.log_fields(), "slice_rows": cursor.slice_rows, "new_slice_rows": smaller})
            yield replace(cursor.between_slices(cursor.last_id), slice_rows=smaller).checkpoint()
            return
        except BulkUnsupportedError as err:
            log.warning("the Bulk API cannot export this object; backfilling it through REST",
                        {**err.log_fields()})
            plan.bulk_supported = False
            yield replace(cursor.between_slices(cursor.last_id), via_rest=True).checkpoint()
            return
        plan.bulk_supported = True
        if job.numberRecordsProcessed == 0:
            await bulk.delete(log, job.id)
            yield replace(cursor.between_slices(cursor.last_id), complete=True).checkpoint()
            return
        cursor = replace(cursor, job_id=job.id, locator=None, rows_before=0)
        yield cursor.checkpoint()
    else:
        assert cursor.job_id is not None
        resumed = await bulk.get(log, cursor.job_id)
        if resumed is None or resumed.state != JobState.JOB_COMPLETE:
            log.info("backfill job is gone; re-submitting its slice from the last Id",
                     {"object": plan.name, "job_id": cursor.job_id, "last_id": cursor.last_id})
            yield cursor.between_slices(cursor.last_id).checkpoint()
            return
        job = resumed

    result = await bulk.page(log, job, plan.csv_transform(), cursor.locator, rows_before=cursor.rows_before)
    last_id = cursor.last_id
    async for doc in result.rows:
        last_id = doc[KEY_FIELD]
        yield doc

    if result.next_locator is not None:
        yield replace(cursor, last_id=last_id, locator=result.next_locator, rows_before=result.rows_after).checkpoint()
        return

    await bulk.delete(log, job.id)
    if job.numberRecordsProcessed < cursor.slice_rows:
        return  # A short slice is the last one: ending on a document completes the backfill.
    yield cursor.between_slices(last_id).checkpoint()


async def _backfill_rest_page(rest: RestQuery, plan: ObjectPlan, start_date: datetime | None, cutoff: datetime,
                              cursor: BackfillCursor, log: Logger) -> AsyncGenerator[Document | PageCursor, None]:
    """One REST page of the same keyset walk, for objects the Bulk API refuses."""
    soql = backfill_soql(plan, cutoff, start_date, cursor.last_id, BATCH_SIZE)
    last_id = cursor.last_id
    count = 0
    async for doc in rest.query(log, soql, plan.json_transform(), include_deleted=False):
        last_id = doc[KEY_FIELD]
        count += 1
        yield doc
    if count == BATCH_SIZE:
        yield replace(cursor.between_slices(last_id), via_rest=True).checkpoint()


# --- snapshots ---------------------------------------------------------------------------------


async def snapshot_object(bulk: BulkJobs, rest: RestQuery, plan: ObjectPlan,
                          log: Logger) -> AsyncGenerator[SalesforceRecord, None]:
    """Every live row of an object that has no cursor field, in Id order.

    The order is stable, so the CDK's digest of an unchanged object does not churn, and its
    deletions are inferred from rows that stop appearing.
    """
    soql = f"{plan.soql_select()} ORDER BY {KEY_FIELD}"
    if plan.bulk_supported is not False:
        try:
            job = await bulk.run(log, soql, "query", plan.name)
        except BulkUnsupportedError as err:
            log.warning("the Bulk API cannot export this object; reading it through REST", {**err.log_fields()})
            plan.bulk_supported = False
        else:
            plan.bulk_supported = True
            async for doc in _job_documents(bulk, plan, job, log):
                yield SalesforceRecord.model_validate(doc)
            await bulk.delete(log, job.id)
            return
    async for doc in rest.query(log, soql, plan.json_transform(), include_deleted=False):
        yield SalesforceRecord.model_validate(doc)


# --- the delta stream ----------------------------------------------------------------------------


def changes_soql(plan: ObjectPlan, after: datetime, through: datetime) -> str:
    """Rows with `after < cf <= through`, in (cf, Id) order, deleted ones included by queryAll."""
    assert plan.cursor_field is not None
    cf = plan.cursor_field
    return (f"{plan.soql_select()} WHERE {cf} > {soql_datetime(after)} AND {cf} <= {soql_datetime(through)}"
            f" ORDER BY {cf}, {KEY_FIELD}")


async def fetch_changes(
    bulk: BulkJobs,
    rest: RestQuery,
    plan: ObjectPlan,
    lag: timedelta,
    bulk_threshold: int,
    log: Logger,
    cursor: LogCursor,
) -> AsyncGenerator[Document | LogCursor, None]:
    """Every change with `cursor < cf <= horizon`, deletions as `_meta.op = "d"` documents.

        cursor (exclusive)                                  horizon (inclusive)
            (--------------------- one window -------------------]
              ^ checkpoint at whole seconds that were fully emitted

    `horizon = floor(now) - lag` (see `delta_horizon`). Rows come in (cf, Id) order from one
    REST queryAll (a query's pages follow one server-side cursor, so many rows sharing one second
    never make it loop) or, when the window holds more than `bulk_threshold` rows, from Bulk
    queryAll jobs over sub-windows (as are all windows of an object whose query is too long for a
    REST URL). A LogCursor `t` is yielded only once every row with
    `cf <= t` has been emitted; the last one is `horizon`. Nothing is yielded for a window that
    has not opened yet.
    """
    assert isinstance(cursor, datetime)
    horizon = delta_horizon(datetime.now(tz=UTC), lag)
    if horizon <= cursor:
        return

    soql = changes_soql(plan, cursor, horizon)
    if not fits_in_a_rest_url(soql) and plan.bulk_supported is not False:
        log.info("the object has too many fields for a REST query URL; reading its changes through Bulk queryAll",
                 {"object": plan.name, "fields": len(plan.fields), "after": cursor, "through": horizon})
        async for item in _changes_via_bulk(bulk, rest, plan, cursor, horizon, bulk_threshold, bulk_threshold, log):
            yield item
        return

    result = await rest.open(log, soql, plan.json_transform(), include_deleted=True)
    if result.total_size > bulk_threshold and plan.bulk_supported is not False:
        await result.records.aclose()
        log.info("delta window is large; exporting it through Bulk queryAll",
                 {"object": plan.name, "rows": result.total_size, "after": cursor, "through": horizon})
        async for item in _changes_via_bulk(bulk, rest, plan, cursor, horizon, result.total_size, bulk_threshold, log):
            yield item
        return

    async for item in _checkpointed(result.records, plan, horizon, _CallBudget()):
        yield item


@dataclass(slots=True)
class _CallBudget:
    """Documents one fetch_changes call may still emit before it returns at a second boundary."""

    remaining: int = DELTA_ROWS_PER_CALL
    exhausted: bool = False


async def _checkpointed(docs: AsyncGenerator[Document, None], plan: ObjectPlan, through: datetime,
                        budget: _CallBudget) -> AsyncGenerator[Document | LogCursor, None]:
    """Documents in (cf, Id) order, with a LogCursor at each whole second fully emitted once
    DELTA_CHECKPOINT_ROWS documents have passed, then `through` at the end.

    When `budget` runs out it stops at the next second boundary after a cursor, and marks the
    budget exhausted instead of yielding `through`.
    """
    assert plan.cursor_field is not None
    cf = plan.cursor_field
    current: str | None = None  # cf of the last emitted document
    since_checkpoint = 0
    try:
        async for doc in docs:
            stamp = doc[cf]
            if current is not None and stamp != current:
                # Every row with cf <= current has been emitted: ORDER BY cf puts them all first.
                if budget.remaining <= 0:
                    budget.exhausted = True
                    yield parse_datetime(current)
                    return
                if since_checkpoint >= DELTA_CHECKPOINT_ROWS:
                    yield parse_datetime(current)
                    since_checkpoint = 0
            current = stamp
            since_checkpoint += 1
            budget.remaining -= 1
            yield doc
    finally:
        await docs.aclose()
    yield through


def _whole_seconds(span: timedelta) -> timedelta:
    return timedelta(seconds=int(span.total_seconds()))


def split_window(after: datetime, through: datetime, parts: int) -> list[tuple[datetime, datetime]]:
    """`(after, through]` as consecutive sub-windows `(a, b]` of whole seconds, about `parts` of them."""
    step = max(timedelta(seconds=1), _whole_seconds((through - after) / parts))
    windows = []
    lower = after
    while lower < through:
        upper = min(through, lower + step)
        windows.append((lower, upper))
        lower = upper
    return windows


async def _changes_via_bulk(bulk: BulkJobs, rest: RestQuery, plan: ObjectPlan, after: datetime, through: datetime,
                            total: int, threshold: int, log: Logger) -> AsyncGenerator[Document | LogCursor, None]:
    """The window `(after, through]` through Bulk queryAll jobs, one per sub-window of about
    `threshold` rows (split evenly in time, halved again when a job is too large). If the Bulk
    API refuses the object, what is left of the window is read through REST."""
    pending = split_window(after, through, max(1, -(-total // threshold)))
    budget = _CallBudget()
    while pending:
        lower, upper = pending.pop(0)
        try:
            job = await bulk.run(log, changes_soql(plan, lower, upper), "queryAll", plan.name)
        except JobTooLargeError:
            if upper - lower <= timedelta(seconds=1):
                raise
            pending[:0] = split_window(lower, upper, 2)
            continue
        except BulkUnsupportedError as err:
            # Only a refusal tells, and this process may not have seen one: the backfill that
            # learned it can have ended in an earlier session. Everything up to `lower` is emitted.
            log.warning("the Bulk API cannot export this object; reading the delta window through REST",
                        {**err.log_fields(), "after": lower, "through": through})
            plan.bulk_supported = False
            result = await rest.open(log, changes_soql(plan, lower, through), plan.json_transform(),
                                     include_deleted=True)
            async for item in _checkpointed(result.records, plan, through, budget):
                yield item
            return

        async for item in _checkpointed(_job_documents(bulk, plan, job, log), plan, upper, budget):
            yield item
        if budget.exhausted:
            return  # The next call resumes after the last cursor.
        await bulk.delete(log, job.id)


async def _job_documents(bulk: BulkJobs, plan: ObjectPlan, job: JobInfo, log: Logger) -> AsyncGenerator[Document, None]:
    """Every row of a completed job, page after page, as documents."""
    async for result in bulk.results(log, job, plan.csv_transform()):
        async for doc in result.rows:
            yield doc
