"""Deletions a cursor query cannot see: hard deletes, rows emptied from the recycle bin, deletions on
objects without `IsDeleted`, on append-only objects, and on anything while a capture was paused.

Each incremental object has one deletion source, chosen from describe:

- An object Salesforce replicates (`replicateable`) has a deletion log, read through getDeleted window
  after window on the watermark `covered` (getDeleted's `latestDateCovered`: every deletion before it
  has been emitted), up to the delta stream's horizon (so the backfill's hold applies to deletions too):

      covered                                    floor_minute(horizon)
         [ getDeleted: start <= deletedDate < latestDateCovered )

  The log also lists rows deleted to the recycle bin, which can be restored. A listed row that queryAll
  shows live again is left to the delta stream, as is one in the bin when the cursor is SystemModstamp
  (a delete moves it, so the delta stream emits that deletion itself, in order). Every other listed row
  is emitted as a deletion: gone for good (hard-deleted, emptied from the bin, of an object without
  `IsDeleted`), or in the bin of an object whose cursor a delete does not move (append-only objects).

  The log keeps 15 days (less when Salesforce purges it early). A window it no longer has is never
  passed over silently: it is logged as an error and in the connector status, with the remedy, and
  the object's deletions since its last *baseline* are reconciled by comparing Id digests (below).

- An object without a deletion log is reconciled periodically (RECONCILE_EVERY) the same way.

Reconciling: an Id-only export of the object's live rows is folded into an IdDigest (id_digest.py, a
bounded digest that can name the Ids two digests differ by, up to its capacity). The Ids in the last
baseline's digest and not in the new one were deleted in between, and are emitted as deletions; the
new digest becomes the baseline. A baseline is taken after the backfill, then every BASELINE_EVERY
while the log is read without gaps. What an Id digest cannot see: a row created after the baseline and
deleted in a missed window; and beyond the digest's capacity the Ids cannot be named at all. Both are
said in the logs, with the remedy (a backfill with a data-flow reset).
"""

from datetime import datetime, timedelta
from logging import Logger
from typing import Any

from .auth import SalesforceError, SalesforceSession
from .changes import document_datetime
from .checkpoints import Binding, DeletionsState, IdExport, Purpose
from .exports import Exports, Path, choose_path, completed_job
from .fields import DELETED_FIELD, KEY_FIELD, Document, ObjectPlan
from .id_digest import IdDigest
from .job_errors import JobNotFoundError
from .models import DeletedRecords
from .rest import BATCH_SIZE
from .soql import soql_datetime, soql_string
from .states import JobBackingOff, JobRunning, ReadingPage, Refused, ToSubmit, Whole, decode, encode, on_lost

# Salesforce keeps deletion-log entries 15 days (getDeleted answers INVALID_REPLICATION_DATE before).
LOG_RETENTION = timedelta(days=15)
# getDeleted ignores seconds, and its end must come more than a minute after its start (SOAP doc):
# windows span at least two whole minutes. Salesforce asks pollers to wait at least 5 minutes between
# calls; the binding's interval (5 minutes by default) paces them.
MIN_LOG_WINDOW = timedelta(minutes=2)
# (A window with more than 600,000 deletions is refused, EXCEEDED_ID_LIMIT, and read in halves.)
# Listed Ids looked up in queryAll per request: `Id IN (...)` travels in a REST URL, and 500 quoted
# Ids are ~11 KB of the 16 KB Salesforce accepts.
IDS_PER_CHECK = 500
SYSTEM_MODSTAMP = "SystemModstamp"
CREATED_FIELD = "CreatedDate"
# Where to resume reading a log Salesforce no longer has from the watermark on: the oldest instant it
# should still have first, then younger ones in case it was purged early.
RESUME_PROBES = (LOG_RETENTION - timedelta(minutes=5), timedelta(days=1), timedelta(hours=1), timedelta(minutes=3))
# What a baseline cannot name after a missed window are the rows created after it and deleted in the
# window; a weekly baseline bounds those to a week's inserts, for one Id-only export per object a week.
BASELINE_EVERY = timedelta(days=7)
# Objects without a deletion log compare their Ids this often: their deletions arrive within the hour.
# They are mostly small metadata objects, read in one REST call; a large one costs a Bulk job an hour.
RECONCILE_EVERY = timedelta(hours=1)
# An Id-only export that fits in one REST page is that one call; a larger one is a Bulk job, whose
# handful of calls cost less of the daily allocation than a REST page per 2,000 Ids.
REST_ID_EXPORT_ROWS = BATCH_SIZE


def floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def deletion_document(plan: ObjectPlan, record_id: str, deleted_at: datetime) -> Document:
    """A deletion of `record_id`: the key, the deletion time in the cursor field (the collection's schema
    requires it), and `_meta.op = "d"`."""
    doc: Document = {KEY_FIELD: record_id, "_meta": {"op": "d"}}
    if plan.cursor_field is not None:
        doc[plan.cursor_field] = document_datetime(deleted_at)
    if plan.has_deleted_flag:
        doc[DELETED_FIELD] = True
    return doc


class DeletionLogMissing(Exception):
    """Salesforce no longer has part of the deletion log (INVALID_REPLICATION_DATE)."""


class Deletions:
    """Reads and reconciles the deletions of every incremental binding of one process."""

    def __init__(self, session: SalesforceSession, exports: Exports) -> None:
        self._session = session
        self._exports = exports

    async def advance(self, log: Logger, plan: ObjectPlan, binding: Binding, cursor: datetime,
                      horizon: datetime) -> datetime:
        """Emit the object's deletions up to `horizon` (through `binding.save`, each batch with the state
        that covers it) and return the newest instant the delta stream may read."""
        waits = self._exports.waits
        # The log is first read a whole window behind the delta stream's start, so that its first window
        # is readable at once (deleted rows the backfill never sees make harmless deletions).
        start = floor_minute(cursor) - MIN_LOG_WINDOW
        state = binding.deletions or DeletionsState(covered=start if plan.replicateable else None)
        if plan.replicateable:
            state = await self._read_log(log, plan, binding, state, horizon)
        if state.export is not None:
            state = await self._export_step(log, plan, binding, state)
        elif binding.backfilled and (purpose := self._export_due(plan, state, waits.now())) is not None:
            state = await self._start_export(log, plan, binding, state, purpose)
        if state.export is not None and state.export.purpose == "reconcile":
            horizon = min(horizon, state.export.started_at.replace(microsecond=0))
        return horizon

    # --- the deletion log ------------------------------------------------------------------------

    async def _read_log(self, log: Logger, plan: ObjectPlan, binding: Binding, state: DeletionsState,
                        horizon: datetime) -> DeletionsState:
        assert state.covered is not None
        now = self._exports.waits.now()
        end = floor_minute(horizon)
        missed = False
        while end - floor_minute(state.covered) >= MIN_LOG_WINDOW:
            start = floor_minute(state.covered)
            try:
                if start < now - LOG_RETENTION:
                    raise DeletionLogMissing(f"{start} is more than {LOG_RETENTION.days} days ago")
                answer = await self._get_deleted(log, plan.name, start, end)
            except DeletionLogMissing as missing:
                if missed:  # the log was found readable from `covered` a moment ago
                    raise
                missed = True
                state = await self._missed(log, plan, binding, state, now, str(missing))
                continue
            except SalesforceError as err:
                if err.error_code != "EXCEEDED_ID_LIMIT" or end - start <= MIN_LOG_WINDOW:
                    raise
                end = start + max(MIN_LOG_WINDOW, floor_minute(start + (end - start) / 2) - start)
                continue
            since, covered = state.covered, datetime.fromisoformat(answer.latestDateCovered)
            assert since is not None
            if covered <= since:
                break  # Salesforce's log has not caught up yet
            listed = {r.id: deleted_at for r in answer.deletedRecords
                      if (deleted_at := datetime.fromisoformat(r.deletedDate)) >= since}
            carried = await self._carried_by_the_delta_stream(log, plan, list(listed))
            docs = [deletion_document(plan, record_id, at) for record_id, at in listed.items()
                    if record_id not in carried]
            state = state.model_copy(update={"covered": covered})
            await binding.save(documents=docs, deletions=state)
            end = floor_minute(horizon)
        return state

    async def _carried_by_the_delta_stream(self, log: Logger, plan: ObjectPlan, ids: list[str]) -> set[str]:
        """Which of `ids` the delta stream will emit itself: rows queryAll shows live (restored from the
        recycle bin) or, when a delete moves the cursor (SystemModstamp), in the bin."""
        deleted_flag = plan.has_deleted_flag
        bin_is_carried = plan.cursor_field == SYSTEM_MODSTAMP
        carried: set[str] = set()
        for first in range(0, len(ids), IDS_PER_CHECK):
            quoted = ", ".join(soql_string(record_id) for record_id in ids[first:first + IDS_PER_CHECK])
            columns = f"{KEY_FIELD}, {DELETED_FIELD}" if deleted_flag else KEY_FIELD
            soql = f"SELECT {columns} FROM {plan.name} WHERE {KEY_FIELD} IN ({quoted})"
            async for record in self._exports.rest.query(log, soql, _as_is, include_deleted=True):
                if bin_is_carried or not (deleted_flag and record[DELETED_FIELD]):
                    carried.add(str(record[KEY_FIELD]))
        return carried

    async def _get_deleted(self, log: Logger, object_name: str, start: datetime, end: datetime) -> DeletedRecords:
        params = {"start": start.isoformat(), "end": end.isoformat()}
        try:
            return await self._session.request_model(log, f"/sobjects/{object_name}/deleted/", DeletedRecords,
                                                     params=params)
        except SalesforceError as err:
            if err.error_code == "INVALID_REPLICATION_DATE":
                raise DeletionLogMissing(err.message) from err
            raise

    async def _missed(self, log: Logger, plan: ObjectPlan, binding: Binding, state: DeletionsState, now: datetime,
                      why: str) -> DeletionsState:
        """The log no longer reaches back to `covered`: say so loudly, and reconcile where a baseline can."""
        assert state.covered is not None
        resume = await self._readable_from(log, plan.name, now)
        gap = f"{plan.name}: Salesforce's deletion log no longer has {state.covered} to {resume} ({why}): it keeps 15 days, or less when purged early."
        # A baseline names what was deleted after it: one taken since the log's oldest entry adds nothing.
        usable = state.baseline_at is not None and state.baseline_at < resume
        if usable:
            status(log, f"{gap} Rows deleted in that time are being reconciled from an export of its Ids against its "
                        f"Ids of {state.baseline_at}. Rows created after that and deleted in the gap cannot be named "
                        "and stay in the collection; to remove them, backfill this binding with a data flow reset.")
        else:
            status(log, f"{gap} Rows deleted in that time cannot be named and stay in the collection; to remove them, "
                        "backfill this binding with a data flow reset.")
        state = state.model_copy(update={"covered": resume})
        if not usable:
            await binding.save(deletions=state)
        elif state.export is None:
            state = await self._start_export(log, plan, binding, state, "reconcile")
        else:  # the export under way will do: compare it with the baseline when it completes
            state = state.model_copy(update={"export": state.export.model_copy(update={"purpose": "reconcile"})})
            await binding.save(deletions=state)
        return state

    async def _readable_from(self, log: Logger, object_name: str, now: datetime) -> datetime:
        """The oldest of RESUME_PROBES from which Salesforce still answers getDeleted."""
        for age in RESUME_PROBES:
            start = floor_minute(now - age)
            try:
                await self._get_deleted(log, object_name, start, start + MIN_LOG_WINDOW)
            except DeletionLogMissing:
                continue
            return start
        raise DeletionLogMissing(f"getDeleted refuses every window of {object_name}, even the last minutes")

    # --- Id exports ------------------------------------------------------------------------------

    def _export_due(self, plan: ObjectPlan, state: DeletionsState, now: datetime) -> Purpose | None:
        waits = self._exports.waits
        if state.baseline_at is None:
            return "baseline"
        if plan.replicateable:
            return "baseline" if now >= state.baseline_at + BASELINE_EVERY * waits.scale else None
        return "reconcile" if now >= state.baseline_at + RECONCILE_EVERY * waits.scale else None

    async def _start_export(self, log: Logger, plan: ObjectPlan, binding: Binding, state: DeletionsState,
                            purpose: Purpose) -> DeletionsState:
        """Begin an Id export: an object whose Ids fit one REST page is read here and now; a larger one
        gets a Bulk job, advanced one step per call (`_export_step`)."""
        exports = self._exports
        started_at = exports.waits.now().replace(microsecond=0)
        export = IdExport(purpose=purpose, started_at=started_at, job=None, digest=IdDigest().to_text(),
                          compared=IdDigest().to_text() if _compares(plan, state, purpose) else None)
        soql = _id_soql(plan, started_at) + f" ORDER BY {KEY_FIELD}"
        result = await exports.rest.open(log, soql, _id_and_creation, include_deleted=False)
        path = choose_path(bulk_refused=binding.bulk_refused, fits_rest_url=True, rows=result.total_size,
                           threshold=REST_ID_EXPORT_ROWS)
        log.info("exporting the object's Ids", {"object": plan.name, "purpose": purpose, "rows": result.total_size,
                                                "path": path.value})
        if path is Path.REST:
            fold = _IdFold(export, state.baseline_at)
            fold.add([row async for row in result.records])
            return await self._finish(log, plan, binding, state, export, fold)
        await result.records.aclose()
        state = state.model_copy(update={"export": export.model_copy(update={"job": encode(ToSubmit(Whole()))})})
        await binding.save(deletions=state)
        return state

    async def _export_step(self, log: Logger, plan: ObjectPlan, binding: Binding,
                           state: DeletionsState) -> DeletionsState:
        """One step of a Bulk Id export: its job advanced, or one page of Ids folded into the digests."""
        export = state.export
        assert export is not None and export.job is not None
        job = decode(export.job)
        if isinstance(job, ToSubmit | JobRunning | JobBackingOff):
            soql = _id_soql(plan, export.started_at)
            async for outcome in self._exports.run_job(log, job, lambda _: soql, "query", plan.name,
                                                       bulk_refused=binding.bulk_refused):
                if isinstance(outcome.state, Refused):
                    if binding.bulk_refused is None:
                        await binding.save(bulk_refused=outcome.state.reason)
                    return await self._start_export(log, plan, binding, state.model_copy(update={"export": None}),
                                                    export.purpose)
                state = _with(state, job=encode(outcome.state))
                await binding.save(deletions=state)
                if outcome.report is not None:
                    raise outcome.report
            return state
        assert isinstance(job, ReadingPage)
        fold = _IdFold(export, state.baseline_at)
        try:
            page = await self._exports.bulk.page(log, completed_job(plan, job, "query"), _id_and_creation, job.locator,
                                                 rows_before=job.rows_before)
            fold.add([row async for row in page.rows])
        except JobNotFoundError:
            # A digest must hold each Id once: the export starts over.
            state = _with(state, job=encode(on_lost(job)), **_IdFold.empty(export))
            await binding.save(deletions=state)
            return state
        if page.next_locator is None:
            state = await self._finish(log, plan, binding, state, export, fold)
            await self._exports.bulk.finish(log, job.job_id)
            return state
        assert page.rows_after is not None
        reading = ReadingPage(job.unit, job.job_id, job.created_at, job.job_rows, page.next_locator, page.rows_after)
        state = _with(state, job=encode(reading), **fold.texts())
        await binding.save(deletions=state)
        return state

    async def _finish(self, log: Logger, plan: ObjectPlan, binding: Binding, state: DeletionsState, export: IdExport,
                      fold: "_IdFold") -> DeletionsState:
        """The export is complete: reconcile against the baseline if asked to, and make it the baseline."""
        docs: list[Document] = []
        if export.purpose == "reconcile" and state.baseline is not None:
            difference = IdDigest.from_text(state.baseline).minus(fold.compared or fold.every).difference()
            if difference is None:
                status(log, f"{plan.name}: its Ids differ from those of {state.baseline_at} by more than can be named, "
                            "so rows deleted since may stay in the collection; to remove them, backfill this binding "
                            "with a data flow reset.")
            else:
                docs = [deletion_document(plan, record_id, export.started_at)
                        for record_id in sorted(difference.only_here)]
                log.info("reconciled deletions from the object's Ids",
                         {"object": plan.name, "since": state.baseline_at, "deleted": len(docs)})
        state = state.model_copy(
            update={"baseline": fold.every.to_text(), "baseline_at": export.started_at, "export": None})
        await binding.save(documents=docs, deletions=state)
        return state


class _IdFold:
    """The digests an Id export folds its rows into: `every` row (the next baseline), and, when
    reconciling, the rows `compared` with the last baseline: those created before it. Rows created since
    cannot be in it, so they do not spend the digest's capacity for naming differences."""

    def __init__(self, export: IdExport, baseline_at: datetime | None) -> None:
        self.every = IdDigest.from_text(export.digest)
        self.compared = IdDigest.from_text(export.compared) if export.compared is not None else None
        # Bulk CSV and REST write datetimes differently after the seconds; both start like this.
        self._before = f"{baseline_at:%Y-%m-%dT%H:%M:%S}" if baseline_at is not None else ""

    @staticmethod
    def empty(export: IdExport) -> dict[str, str | None]:
        return {"digest": IdDigest().to_text(), "compared": IdDigest().to_text() if export.compared else None}

    def add(self, rows: list[tuple[str, str | None]]) -> None:
        self.every.add(record_id for record_id, _ in rows)
        if self.compared is not None:
            before = self._before
            self.compared.add(record_id for record_id, created in rows if created is None or created[:19] < before)

    def texts(self) -> dict[str, str | None]:
        return {"digest": self.every.to_text(),
                "compared": self.compared.to_text() if self.compared is not None else None}


def _compares(plan: ObjectPlan, state: DeletionsState, purpose: Purpose) -> bool:
    """Whether an export compares only the rows created before the baseline (objects with CreatedDate)."""
    return purpose == "reconcile" and state.baseline_at is not None and plan.has_field(CREATED_FIELD)


def _id_soql(plan: ObjectPlan, started_at: datetime) -> str:
    """An export of the Ids of the rows created before `started_at`. The bound makes the baseline a set
    that a later export can reproduce exactly (rows created while this one runs may or may not be in it);
    objects without CreatedDate export every Id."""
    if not plan.has_field(CREATED_FIELD):
        return f"SELECT {KEY_FIELD} FROM {plan.name}"
    return (f"SELECT {KEY_FIELD}, {CREATED_FIELD} FROM {plan.name}"
            f" WHERE {CREATED_FIELD} < {soql_datetime(started_at)}")


def _with(state: DeletionsState, **export_changes: Any) -> DeletionsState:
    assert state.export is not None
    return state.model_copy(update={"export": state.export.model_copy(update=export_changes)})


def _as_is(record: dict[str, Any]) -> dict[str, Any]:
    return record


def _id_and_creation(row: dict[str, Any]) -> tuple[str, str | None]:
    """A row of an Id export (a Bulk CSV row or a REST record): its Id and, if selected, CreatedDate."""
    return str(row[KEY_FIELD]), row.get(CREATED_FIELD)


def status(log: Logger, message: str) -> None:
    """An error the user must see: in the logs, and in the connector status where the CDK's logger has it."""
    log.error(message)
    event = getattr(log, "event", None)
    if event is not None:
        event.status(message)

