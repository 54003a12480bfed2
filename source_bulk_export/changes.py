"""The delta stream: every change in a window `(cursor, horizon]`, emitted in (cursor field, Id) order.

A window is read through one REST queryAll (its pages follow one server-side cursor, so many rows
sharing one second never make it loop) or, when `choose_path` says so (a large window, or a query too
long for a REST URL), through Bulk queryAll jobs over sub-windows. The Bulk export is a state machine
(states.py) persisted in the binding's `delta_export`, so a restart polls the same job or reads on
from the page it had reached.

A LogCursor `t` is yielded only once every row with `cursor field <= t` has been emitted: at whole
seconds, once DELTA_CHECKPOINT_ROWS documents have passed, and at the window's end.
"""

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from logging import Logger
from typing import Any

from estuary_cdk.capture.common import LogCursor

from .checkpoints import Binding
from .exports import Exports, Path, choose_path, completed_job
from .fields import KEY_FIELD, ColumnMismatch, Document, ObjectPlan
from .job_errors import JobNotFoundError
from .states import JobBackingOff, JobRunning, ReadingPage, Refused, ToSubmit, Window, on_lost, on_page_read

# A checkpoint falls at the first whole-second boundary after this many documents, so a window of a
# million changes is many small units of work, not one.
DELTA_CHECKPOINT_ROWS = 10_000

# One fetch_changes call returns (at a second boundary) after this many documents; the CDK calls
# again at once while the cursor is behind. The CDK never interrupts a running call, so short calls
# keep a graceful stop prompt.
DELTA_ROWS_PER_CALL = 200_000

type SelectChanges = Callable[..., str]  # (after, through, after_row=None) -> SOQL (api.changes_soql)
type Fits = Callable[[str], bool]


def parse_datetime(value: str) -> datetime:
    """A document's datetime value (`YYYY-MM-DDTHH:MM:SS.sssZ`) as an aware datetime."""
    return datetime.fromisoformat(value)


def document_datetime(moment: datetime) -> str:
    """`moment` as documents write it, so it compares with their values as text."""
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def first_window(after: datetime, through: datetime, rows: int | None, threshold: int) -> Window:
    """The first Bulk sub-window of `(after, through]`: wide enough for about `threshold` of its
    `rows` (all of it when the size is unknown), at least a second."""
    span = through - after
    if rows is not None and rows > threshold:
        span = max(timedelta(seconds=1), timedelta(seconds=int(span.total_seconds() * threshold / rows)))
    return Window(after, min(through, after + span), through)


@dataclass(slots=True)
class _Progress:
    """How far one call has got: the documents it may still emit before returning at a second
    boundary, and the last LogCursor it yielded."""

    cursor: datetime
    remaining: int = DELTA_ROWS_PER_CALL
    exhausted: bool = False


async def _checkpointed(docs: AsyncGenerator[Document, None], plan: ObjectPlan, through: datetime,
                        progress: _Progress) -> AsyncGenerator[Document | LogCursor, None]:
    """Documents in (cf, Id) order, with a LogCursor at each whole second fully emitted once
    DELTA_CHECKPOINT_ROWS documents have passed, then `through` at the end (when it is past the last
    cursor).

    When `progress` runs out of documents it stops at the next second boundary after a cursor, and
    marks itself exhausted instead of yielding `through`.
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
                if progress.remaining <= 0 or since_checkpoint >= DELTA_CHECKPOINT_ROWS:
                    progress.cursor = parse_datetime(current)
                    yield progress.cursor
                    since_checkpoint = 0
                    if progress.remaining <= 0:
                        progress.exhausted = True
                        return
            current = stamp
            since_checkpoint += 1
            progress.remaining -= 1
            yield doc
    finally:
        await docs.aclose()
    if through > progress.cursor:
        progress.cursor = through
        yield through


async def read_changes(exports: Exports, log: Logger, plan: ObjectPlan, binding: Binding, cursor: datetime,
                       horizon: datetime, threshold: int, select: SelectChanges,
                       fits_rest_url: Fits) -> AsyncGenerator[Document | LogCursor, None]:
    """Every change with `cursor < cf <= horizon` (deletions as `_meta.op = "d"` documents), or, when
    a Bulk export of an earlier window is in progress, the rest of that window first."""
    progress = _Progress(cursor)
    if binding.delta_export is not None:
        async for item in _bulk_window(exports, log, plan, binding, progress, select):
            yield item
        return
    if horizon <= cursor:
        return

    soql = select(cursor, horizon)
    fits = fits_rest_url(soql)
    result = await exports.rest.open(log, soql, plan.json_transform(), include_deleted=True) if fits else None
    rows = result.total_size if result is not None else None
    path = choose_path(bulk_refused=binding.bulk_refused, fits_rest_url=fits, rows=rows, threshold=threshold)
    if path is Path.REST:
        assert result is not None
        async for item in _checkpointed(result.records, plan, horizon, progress):
            yield item
        return

    if result is not None:
        await result.records.aclose()
    log.info("exporting a delta window through Bulk queryAll",
             {"object": plan.name, "rows": rows, "fits_rest_url": fits, "after": cursor, "through": horizon})
    await binding.save(delta_export=ToSubmit(first_window(cursor, horizon, rows, threshold), since=exports.waits.now()))
    async for item in _bulk_window(exports, log, plan, binding, progress, select):
        yield item


async def _bulk_window(exports: Exports, log: Logger, plan: ObjectPlan, binding: Binding, progress: _Progress,
                       select: SelectChanges) -> AsyncGenerator[Document | LogCursor, None]:
    """Advance the persisted Bulk export of a delta window until it is done, the call's budget is
    spent, or a stop cuts a wait short."""
    while (state := binding.delta_export) is not None:
        match state:
            case ReadingPage():
                async for item in _window_page(exports, log, plan, binding, state, progress):
                    yield item
                if progress.exhausted:
                    return
            case ToSubmit() | JobRunning() | JobBackingOff():
                unit = state.unit
                assert isinstance(unit, Window)
                before = state
                async for outcome in exports.run_job(log, state, _window_soql(select), "queryAll", plan.name,
                                                     bulk_refused=binding.bulk_refused):
                    if isinstance(outcome.state, Refused):
                        log.warning("the Bulk API cannot export this object; reading the delta window through REST",
                                    {"object": plan.name, "reason": outcome.state.reason})
                        await binding.save(bulk_refused=outcome.state.reason, delta_export=None)
                        result = await exports.rest.open(log, select(progress.cursor, unit.through),
                                                         plan.json_transform(), include_deleted=True)
                        async for item in _checkpointed(result.records, plan, unit.through, progress):
                            yield item
                        return
                    await binding.save(delta_export=outcome.state)
                    if outcome.report is not None:
                        raise outcome.report
                if binding.delta_export is before:
                    return  # a stop cut the wait short
            case _:
                raise AssertionError(f"a delta export is never {state}")


def _window_soql(select: SelectChanges) -> Callable[[Window], str]:
    def soql(window: Window) -> str:
        after_row = None
        if window.after_stamp is not None and window.after_id is not None:
            after_row = (window.after_stamp, window.after_id)
        return select(window.lower, window.upper, after_row)

    return soql


async def _window_page(exports: Exports, log: Logger, plan: ObjectPlan, binding: Binding,
                       state: ReadingPage[Window], progress: _Progress) -> AsyncGenerator[Document | LogCursor, None]:
    """Read one page of a sub-window's completed job. Its documents and the state after it (the next
    page, with the sub-window's watermark moved to its last row) are one transaction, so a restart
    re-reads at most the page in flight, and a job lost mid-read is exported again only for the rows
    after the watermark. After the sub-window's last page, the LogCursor moves to its end.

    The delta stream's own LogCursor cannot checkpoint inside one second, and a mass update puts
    thousands of rows in one second: that is why these documents go with the export's state instead.
    Rows a LogCursor already covers (a page read again after a restart) are skipped.
    """
    assert plan.cursor_field is not None
    cf = plan.cursor_field
    skip_through = document_datetime(progress.cursor)
    unit = state.unit
    last: Document | None = None
    try:
        page = await exports.bulk.page(log, completed_job(plan, state, "queryAll"), plan.csv_transform(),
                                       state.locator, rows_before=state.rows_before)
    except JobNotFoundError:
        log.warning("bulk job is gone before its pages were read; exporting the rest of its window again",
                    {"job_id": state.job_id, "object": plan.name, "after": (unit.after_stamp, unit.after_id)})
        await binding.save(delta_export=on_lost(state))
        return

    async def documents() -> AsyncGenerator[Document, None]:
        nonlocal last
        async for doc in page.rows:
            if doc[cf] > skip_through:
                last = doc
                progress.remaining -= 1
                yield doc

    def moved_on() -> dict[str, Any]:
        watermark = unit if last is None else replace(unit, after_stamp=parse_datetime(last[cf]).replace(microsecond=0),
                                                      after_id=last[KEY_FIELD])
        assert page.rows_after is not None
        after = on_page_read(state, page.next_locator, page.rows_after, watermark)
        # After the last sub-window its state stays until the LogCursor below has moved past it.
        return {"delta_export": after if after is not None else replace(state, unit=watermark)}

    try:
        await binding.save_streamed(documents(), moved_on)
    except ColumnMismatch as err:
        # Raised at the header, before any row: a job submitted under an earlier plan (a field added
        # or removed since), or one adopted by mistake. Only a new job can have the planned columns.
        log.warning("bulk job's columns are not the planned ones; exporting the rest of its window again",
                    {"job_id": state.job_id, "object": plan.name, "error": str(err)})
        await binding.save(delta_export=on_lost(state))
        return
    if page.next_locator is not None:
        progress.exhausted = progress.remaining <= 0
        return
    if unit.upper > progress.cursor:
        progress.cursor = unit.upper
        yield unit.upper
    if isinstance(binding.delta_export, ReadingPage):
        await binding.save(delta_export=None)
    await exports.bulk.finish(log, state.job_id)  # checkpointed past it: nothing will read it again
