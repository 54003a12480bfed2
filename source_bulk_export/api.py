"""Fetch functions: how each binding's rows leave Salesforce and become documents.

`resources.py` binds these with `functools.partial` over narrow arguments; the CDK appends `log`
and the cursor arguments. Each one loads its state, lets exports.py / changes.py advance it, and
yields; every HTTP call happens inside `BulkJobs` or `RestQuery`.

Time line of one incremental object (`cf` is its cursor field, a whole-second timestamp):

    start_date              cutoff                     horizon = floor(now) - lag     now
        |-----------------------|-------------------------------|.........................|
        [ backfill: cf <= cutoff ]( delta windows: (cursor, horizon] )( not read yet: late
                                                                        commits land here )

The backfill covers `start_date <= cf <= cutoff` (`start_date` only when configured); the delta
stream starts strictly after `cutoff`. `cutoff` is `floor(now) - lag` when the binding is
initialised (resources.py), so neither side ever reads the newest `lag` of history.

While a backfill job is in flight or its pages are being read, the horizon is also held at or below
`job created - lag` (exports.py), so no newer version of a row lands before the job's older one:

    ...( delta windows ]( held: rows the running backfill job may hold older versions of )....
                       ^ min(floor(now) - lag, job created - lag)
"""

from collections.abc import AsyncGenerator
from datetime import datetime, timedelta
from logging import Logger
from typing import Any

from estuary_cdk.capture.common import LogCursor, PageCursor, make_cursor_dict

from .changes import read_changes
from .checkpoints import Binding
from .deletions import Deletions
from .exports import Exports, floor_to_second
from .fields import KEY_FIELD, Document, ObjectPlan
from .models import SalesforceRecord
from .soql import fits_in_a_rest_url, soql_datetime, soql_string
from .states import BackfillState, Complete, ReadingRest, Slice, ToSubmit, decode, encode


def delta_horizon(now: datetime, lag: timedelta) -> datetime:
    """The newest instant the delta stream reads: `floor(now) - lag`.

    Salesforce stamps a transaction's rows when it starts, and they become visible when it
    commits; `lag` is how late a commit may be and still be captured.
    """
    return floor_to_second(now) - lag


def backfill_soql(plan: ObjectPlan, cutoff: datetime, start_date: datetime | None, part: Slice) -> str:
    """One Id keyset slice: the next `part.rows` rows after `part.after_id` with `start_date <= cf <= cutoff`."""
    assert plan.cursor_field is not None
    conditions = [f"{plan.cursor_field} <= {soql_datetime(cutoff)}"]
    if start_date is not None:
        conditions.append(f"{plan.cursor_field} >= {soql_datetime(floor_to_second(start_date))}")
    if part.after_id is not None:
        conditions.append(f"{KEY_FIELD} > {soql_string(part.after_id)}")
    return f"{plan.soql_select()} WHERE {' AND '.join(conditions)} ORDER BY {KEY_FIELD} LIMIT {part.rows}"


def changes_soql(plan: ObjectPlan, after: datetime, through: datetime, after_row: tuple[datetime, str] | None = None,
                 ) -> str:
    """Rows with `after < cf <= through`, in (cf, Id) order, deleted ones included by queryAll; with
    `after_row` (a cf and an Id), only the rows after it in that order."""
    assert plan.cursor_field is not None
    cf = plan.cursor_field
    conditions = f"{cf} > {soql_datetime(after)} AND {cf} <= {soql_datetime(through)}"
    if after_row is not None:
        stamp, record_id = after_row
        conditions += (f" AND ({cf} > {soql_datetime(stamp)}"
                       f" OR ({cf} = {soql_datetime(stamp)} AND {KEY_FIELD} > {soql_string(record_id)}))")
    return f"{plan.soql_select()} WHERE {conditions} ORDER BY {cf}, {KEY_FIELD}"


def snapshot_soql(plan: ObjectPlan) -> str:
    # Salesforce guarantees no order without ORDER BY, and a pass in another order would look changed.
    return f"{plan.soql_select()} ORDER BY {KEY_FIELD}"


# --- backfill ------------------------------------------------------------------------------------


def load_backfill(page: PageCursor, slice_rows: int) -> BackfillState:
    """The backfill state a page cursor holds (None: a backfill that has not started)."""
    if page is None:
        return ToSubmit(Slice(None, slice_rows))
    if not isinstance(page, dict):
        raise TypeError(f"backfill cursor {page!r} is not a dict: was the state written by another connector?")
    if "phase" not in page:
        return _from_first_release(page, slice_rows)
    state = decode(page)
    if isinstance(state, ReadingRest | Complete) or isinstance(state.unit, Slice):
        return state
    raise TypeError(f"backfill cursor {page!r} is not a backfill's state")


def _from_first_release(page: dict[str, Any], slice_rows: int) -> BackfillState:
    """A backfill cursor written by version 0.1 (`last_id`, `job_id`, `via_rest`, `complete`, ...): go on
    from its Id watermark. Its job, if any, is exported again: that release did not record enough of
    it to resume."""
    if page.get("complete"):
        return Complete()
    if page.get("via_rest"):
        return ReadingRest(page.get("last_id"))
    return ToSubmit(Slice(page.get("last_id"), page.get("slice_rows") or slice_rows))


def backfill_cursor(state: BackfillState) -> dict[str, Any]:
    return make_cursor_dict(encode(state))


async def backfill_object(exports: Exports, plan: ObjectPlan, binding: Binding, start_date: datetime | None,
                          slice_rows: int, lag: timedelta, log: Logger, page: PageCursor,
                          cutoff: LogCursor) -> AsyncGenerator[Document | PageCursor, None]:
    """Backfill `plan`'s object: every row with `start_date <= cf <= cutoff`, in Id order.

    Each call advances the checkpointed state (states.py) by one unit of work: a slice's job created
    and waited for, one result page, one REST page, or a backoff waited out. The backfill is complete
    when a call returns without a trailing cursor.
    """
    assert isinstance(cutoff, datetime)

    def select(part: Slice) -> str:
        return backfill_soql(plan, cutoff, start_date, part)

    async for item in exports.backfill(log, plan, binding, load_backfill(page, slice_rows), select, lag):
        # Documents are dicts; everything else is a state, checkpointed as the page cursor.
        yield item if isinstance(item, dict) else backfill_cursor(item)


# --- snapshots -----------------------------------------------------------------------------------


async def snapshot_object(exports: Exports, plan: ObjectPlan, binding: Binding, threshold: int,
                          log: Logger) -> AsyncGenerator[SalesforceRecord, None]:
    """Every live row of an object that has no cursor field, in Id order.

    The order is stable, so the CDK's digest of an unchanged object does not churn, and its
    deletions are inferred from rows that stop appearing.
    """
    soql = snapshot_soql(plan)
    async for doc in exports.snapshot(log, plan, binding, soql, fits_in_a_rest_url(soql), threshold):
        yield SalesforceRecord.model_validate(doc)


# --- the delta stream ----------------------------------------------------------------------------


async def fetch_changes(exports: Exports, deletions: Deletions, plan: ObjectPlan, binding: Binding, lag: timedelta,
                        bulk_threshold: int, log: Logger, cursor: LogCursor) -> AsyncGenerator[Document | LogCursor, None]:
    """Every change with `cursor < cf <= horizon`, deletions as `_meta.op = "d"` documents.

        cursor (exclusive)                                  horizon (inclusive)
            (--------------------- one window -------------------]
              ^ checkpoint at whole seconds that were fully emitted

    `horizon = min(floor(now) - lag, the backfill's hold, what the deletions have covered)`: first the
    deletions a cursor query cannot see are emitted up to it (deletions.py), then the window is read.
    A window larger than `bulk_threshold` rows (or too wide for a REST URL) is exported by checkpointed
    Bulk queryAll jobs (changes.py). A LogCursor `t` is yielded only once every row with `cf <= t` has
    been emitted; the last one is `horizon`. Nothing is yielded for a window that has not opened yet.
    """
    assert isinstance(cursor, datetime)
    horizon = delta_horizon(exports.waits.now(), lag)
    if binding.hold is not None:
        horizon = min(horizon, binding.hold)
    horizon = await deletions.advance(log, plan, binding, cursor, horizon)

    def select(after: datetime, through: datetime, after_row: tuple[datetime, str] | None = None) -> str:
        return changes_soql(plan, after, through, after_row)

    async for item in read_changes(exports, log, plan, binding, cursor, horizon, bulk_threshold, select,
                                   fits_in_a_rest_url):
        yield item
