"""The I/O behind the states of states.py: how each resumable export advances.

Every function here starts from a persisted state, performs what that state calls for (submit a
job, poll it, wait out a backoff, read a page), and yields each state it enters so the caller can
checkpoint it before anything else happens. Nothing about a job lives only in memory: a process
killed at any moment leaves a checkpoint from which the next one goes on.

`choose_path` is the one place that decides whether a read goes through Bulk or REST.

The delta stream is held back while a backfill job's pages are unread (`Binding.hold`): a job's
results are a snapshot taken while it runs, so a row changed after that would otherwise be emitted
by the delta stream first and then overwritten by the job's older version. The hold is the job's
`created_at - lag` (rows stamped before it had committed when the job began, by the same late-commit
allowance as the delta stream's own horizon), and it is derived from the backfill's checkpoint.
"""

from collections.abc import AsyncGenerator, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from enum import StrEnum
from logging import Logger

from .checkpoints import Binding
from .fields import KEY_FIELD, ColumnMismatch, Document, ObjectPlan
from .job_errors import BulkJobError, JobNotFoundError, JobTimeoutError, classify_job
from .jobs import BulkJobs, Operation, created_at
from .models import JobInfo, JobState
from .rest import BATCH_SIZE, RestQuery
from .states import (
    BackfillState,
    Complete,
    JobBackingOff,
    JobPhase,
    JobRunning,
    Next,
    ReadingPage,
    ReadingRest,
    Refused,
    Slice,
    ToSubmit,
    Unit,
    Whole,
    mark_after,
    on_complete,
    on_failed,
    on_lost,
    on_marked,
    on_page_read,
    on_retry_due,
    on_submitted,
)
from .waits import Waits


class Path(StrEnum):
    BULK = "bulk"
    REST = "rest"


class UncapturableError(Exception):
    """An object no API can read as configured: the Bulk API refuses it and its query is too long for
    a REST URL."""


def choose_path(*, bulk_refused: str | None, fits_rest_url: bool, rows: int | None, threshold: int) -> Path:
    """Bulk or REST for one read of an object.

    - An object the Bulk API refused (the reason is persisted) is read through REST, which raises
      UncapturableError if its query does not fit in a REST URL either.
    - A query too long for a REST URL (16 KB: a very wide object) goes through Bulk.
    - A read of unknown size (a backfill) goes through Bulk.
    - Otherwise Bulk above `threshold` rows, REST at or below: a REST page holds 2,000 rows, so
      small reads are faster and spend none of the org's 10,000 daily Bulk jobs.
    """
    if bulk_refused is not None:
        if not fits_rest_url:
            raise UncapturableError(f"the Bulk API refuses the object ({bulk_refused}) and its query is too "
                                    "long for a REST URL: deselect some of its fields")
        return Path.REST
    if not fits_rest_url or rows is None:
        return Path.BULK
    return Path.BULK if rows > threshold else Path.REST


def floor_to_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def hold_for(state: object, lag: timedelta) -> datetime | None:
    """The delta hold a backfill state implies: a job in flight or being read holds the delta stream
    at its creation minus the lag (whole seconds, like every cursor), and so does a marked unit, whose
    job may have been created from its mark on (and be adopted)."""
    if isinstance(state, JobRunning | ReadingPage):
        return floor_to_second(state.created_at - lag)
    if isinstance(state, ToSubmit) and state.since is not None:
        return floor_to_second(state.since - lag)
    return None


def completed_job(plan: ObjectPlan, state: ReadingPage[Unit], operation: Operation) -> JobInfo:
    """The JobInfo of a job the checkpoint says is complete (no need to ask Salesforce again)."""
    return JobInfo(id=state.job_id, operation=operation, object=plan.name, state=JobState.JOB_COMPLETE,
                   numberRecordsProcessed=state.job_rows)


class Exports:
    """Runs Bulk jobs and REST queries for every binding of one process, state by state."""

    def __init__(self, bulk: BulkJobs, rest: RestQuery, waits: Waits) -> None:
        self.bulk = bulk
        self.rest = rest
        self.waits = waits

    def restored(self, object_name: str, operation: Operation, state: object, *, adoptable: bool = True) -> None:
        """Tell BulkJobs what an export state of the checkpoint this process started from holds: the job
        it names, and the mark of the submission it leads to, which the killed process may have made
        unrecorded (see BulkJobs.restored). A state not `adoptable` names its job only: no job is
        adopted for it (an export that must not risk reading another export's rows)."""
        if isinstance(state, ToSubmit | JobRunning | JobBackingOff | ReadingPage):
            job_id = state.job_id if isinstance(state, JobRunning | ReadingPage) else None
            self.bulk.restored(object_name, operation, job_id=job_id, since=mark_after(state) if adoptable else None)

    async def run_job[U: Unit](self, log: Logger, state: ToSubmit[U] | JobRunning[U] | JobBackingOff[U],
                               select: Callable[[U], str], operation: Operation, object_name: str, *,
                               bulk_refused: str | None = None,
                               interruptible: bool = True) -> AsyncGenerator[Next[U], None]:
        """Advance a unit's job until it completes (ReadingPage), the object is refused (Refused) or a
        failure must be reported (`Next.report`), yielding every state entered, in order. `select` is
        a unit's SOQL (a unit may be split on the way).

        `bulk_refused` is the refusal already recorded for the object: a job planned before it was
        learned is not submitted, the object is Refused at once.

        A unit without a mark is yielded with one (`ToSubmit.since`) before its job is submitted; a
        mark the process started from may name a job a killed process created, which is adopted
        instead of submitting another (BulkJobs.orphan).

        Backoffs are waited out within the call. With `interruptible`, a graceful stop ends the call
        early, after the last state yielded (a job left running is polled again by the restart).
        """
        waits = self.waits if interruptible else self.waits.ignoring_stop()
        while True:
            outcome: Next[U] | None
            if bulk_refused is not None and isinstance(state, ToSubmit | JobBackingOff):
                yield Next(Refused(bulk_refused))
                return
            match state:
                case JobBackingOff():
                    if not await waits.until(state.retry_at):
                        return
                    outcome = Next(on_retry_due(state, waits.now()))
                case ToSubmit(since=datetime() as since):
                    async with self.bulk.slot():
                        try:
                            job = (await self.bulk.orphan(log, object_name, operation, since)
                                   or await self.bulk.submit(log, select(state.unit), operation, object_name))
                        except BulkJobError as err:
                            outcome = self._failed(log, state, err)
                        else:
                            running = on_submitted(state, job.id, created_at(job, waits.now()))
                            yield Next(running)
                            outcome = await self._finish(log, running, object_name, waits)
                case ToSubmit():
                    outcome = Next(on_marked(state, waits.now()))
                case JobRunning():
                    async with self.bulk.slot():
                        outcome = await self._finish(log, state, object_name, waits)
            if outcome is None:
                return
            yield outcome
            if outcome.report is not None or isinstance(outcome.state, ReadingPage | Refused):
                return
            state = outcome.state

    async def _finish[U: Unit](self, log: Logger, state: JobRunning[U], object_name: str,
                               waits: Waits) -> Next[U] | None:
        """Wait for a running job's end; None when a stop cut the wait short."""
        try:
            job = await self.bulk.wait(log, state.job_id, object_name, created=state.created_at, waits=waits)
        except JobNotFoundError:
            log.warning("bulk job is gone; submitting its work again", {"job_id": state.job_id, "object": object_name})
            return Next(on_lost(state))
        except JobTimeoutError as err:
            return self._failed(log, state, err)
        if job is None:
            return None
        error = classify_job(job)
        if error is None:
            return Next(on_complete(state, job.numberRecordsProcessed))
        return self._failed(log, state, error)

    def _failed[U: Unit](self, log: Logger, state: ToSubmit[U] | JobRunning[U], error: BulkJobError) -> Next[U]:
        outcome = on_failed(state, error, self.waits.now())
        if isinstance(outcome.state, JobBackingOff):
            # Waits are shortened in test processes; the schedule itself is pinned by unit tests.
            backing_off = replace(outcome.state, retry_at=self.waits.scaled(outcome.state.retry_at))
            outcome = replace(outcome, state=backing_off)
            log.warning("bulk job failed; backing off", {**error.log_fields(), "attempt": backing_off.attempt,
                                                          "retry_at": backing_off.retry_at})
        return outcome

    # --- backfill ----------------------------------------------------------------------------------

    async def backfill(self, log: Logger, plan: ObjectPlan, binding: Binding, state: BackfillState,
                       select: Callable[[Slice], str], lag: timedelta) -> AsyncGenerator[Document | BackfillState, None]:
        """One fetch_page call of a backfill in Id keyset slices (`select` is a slice's SOQL).

        Yields documents and states; every state is a checkpoint, and the call ends on one (or on
        nothing, when the backfill is complete). A call submits and waits for a slice's job, reads
        one page, reads one REST page, or waits out a backoff, so a restart repeats at most one page.
        """
        while True:
            match state:
                case Complete():
                    binding.backfilled = True
                    return
                case ReadingRest():
                    async for item in self._backfill_rest_page(log, plan, binding, state, select, lag):
                        yield item
                    return
                case ReadingPage():
                    async for item in self._backfill_page(log, plan, binding, state, lag):
                        yield item
                    return
                case ToSubmit() | JobRunning() | JobBackingOff():
                    job_phase = state
                    if isinstance(state, ToSubmit):
                        # No delta read may overtake the job while it is being created, nor the job a
                        # killed process may have created from the unit's mark on (it may be adopted).
                        binding.hold = hold_for(state, lag) or floor_to_second(self.waits.now() - lag)
                    progressed = False
                    async for outcome in self.run_job(log, job_phase, select, "query", plan.name,
                                                      bulk_refused=binding.bulk_refused):
                        state = await self._settle(log, plan, binding, job_phase, outcome.state)
                        if isinstance(state, ToSubmit | JobRunning | JobBackingOff):
                            job_phase = state
                        progressed = True
                        yield state
                        binding.hold = hold_for(state, lag)
                        if outcome.report is not None:
                            raise outcome.report
                    if not progressed:
                        yield state  # a stop cut the first wait short: end on a cursor all the same
                        return
                    if not isinstance(state, ReadingPage | ReadingRest):
                        return  # a stop cut a later wait short

    async def _settle(self, log: Logger, plan: ObjectPlan, binding: Binding, current: JobPhase[Slice],
                      reached: JobPhase[Slice] | Refused) -> BackfillState:
        if isinstance(reached, Refused):
            log.warning("the Bulk API cannot export this object; reading it through REST",
                        {"object": plan.name, "reason": reached.reason})
            await binding.save(bulk_refused=reached.reason)
            return ReadingRest(current.unit.after_id)
        return reached

    async def _backfill_page(self, log: Logger, plan: ObjectPlan, binding: Binding, state: ReadingPage[Slice],
                             lag: timedelta) -> AsyncGenerator[Document | BackfillState, None]:
        last_id = state.unit.after_id
        following: BackfillState | None
        read_to_the_end = False
        try:
            page = await self.bulk.page(log, completed_job(plan, state, "query"), plan.csv_transform(),
                                        state.locator, rows_before=state.rows_before)
            async for doc in page.rows:
                last_id = doc[KEY_FIELD]
                yield doc
        except (JobNotFoundError, ColumnMismatch) as err:
            # The rows emitted so far are covered by the watermark: go on from the last one. A page
            # whose columns are not the planned ones (a job of an earlier plan, or one adopted by
            # mistake) fails at its header, and only a new job can have the planned columns.
            log.warning("bulk job's pages cannot be read; submitting its slice again",
                        {"job_id": state.job_id, "object": plan.name, "last_id": last_id, "error": str(err)})
            following = on_lost(replace(state, unit=replace(state.unit, after_id=last_id)))
        else:
            assert page.rows_after is not None
            following = on_page_read(state, page.next_locator, page.rows_after, replace(state.unit, after_id=last_id))
            read_to_the_end = page.next_locator is None
        following = following or Complete()
        yield following
        binding.hold = hold_for(following, lag)
        if read_to_the_end:
            await self.bulk.finish(log, state.job_id)  # checkpointed past it: nothing will read it again

    async def _backfill_rest_page(self, log: Logger, plan: ObjectPlan, binding: Binding, state: ReadingRest,
                                  select: Callable[[Slice], str], lag: timedelta,
                                  ) -> AsyncGenerator[Document | BackfillState, None]:
        """One REST page of the same keyset walk. A REST query reads a snapshot when it runs, so the
        delta stream is held for the length of the call."""
        binding.hold = floor_to_second(self.waits.now() - lag)
        last_id, count = state.after_id, 0
        async for doc in self.rest.query(log, select(Slice(state.after_id, BATCH_SIZE)), plan.json_transform(),
                                         include_deleted=False):
            last_id = doc[KEY_FIELD]
            count += 1
            yield doc
        yield ReadingRest(last_id) if count == BATCH_SIZE else Complete()
        binding.hold = None

    # --- snapshots ---------------------------------------------------------------------------------

    async def snapshot(self, log: Logger, plan: ObjectPlan, binding: Binding, soql: str, fits_rest_url: bool,
                       threshold: int) -> AsyncGenerator[Document, None]:
        """Every live row of the object, in the order of `soql` (a whole pass, for the CDK to compare
        with the previous one).

        A pass whose Bulk job is in flight or complete (`binding.snapshot_export`) goes on with that
        job. Otherwise the first REST page says how large the object is, and `choose_path` decides:
        small objects (the usual cursor-less metadata) are read through REST in a call or a few, large
        ones through a Bulk job that is checkpointed the moment it exists. A pass is never cut short
        by a graceful stop: a partial pass would delete every row it did not reach.
        """
        state = binding.snapshot_export
        transform = plan.json_transform()
        if state is None:
            result = None
            if fits_rest_url:
                result = await self.rest.open(log, soql, transform, include_deleted=False)
            path = choose_path(bulk_refused=binding.bulk_refused, fits_rest_url=fits_rest_url,
                               rows=result.total_size if result is not None else None, threshold=threshold)
            if path is Path.REST:
                assert result is not None
                async for doc in result.records:
                    yield doc
                return
            if result is not None:
                await result.records.aclose()
            state = ToSubmit(Whole(), since=self.waits.now())
            await binding.save(snapshot_export=state)

        while True:
            if isinstance(state, ReadingPage):
                emitted = 0
                try:
                    async for page in self.bulk.results(log, completed_job(plan, state, "query"),
                                                        plan.csv_transform()):
                        async for doc in page.rows:
                            emitted += 1
                            yield doc
                except (JobNotFoundError, ColumnMismatch):  # see _backfill_page
                    state = on_lost(state)
                    await binding.save(snapshot_export=state)
                    if emitted:
                        raise  # part of the pass is out already: fail it, and the restart exports anew
                    continue
                await binding.save(snapshot_export=None)
                await self.bulk.finish(log, state.job_id)
                return
            assert isinstance(state, ToSubmit | JobRunning | JobBackingOff)
            async for outcome in self.run_job(log, state, lambda _: soql, "query", plan.name,
                                              bulk_refused=binding.bulk_refused, interruptible=False):
                if isinstance(outcome.state, Refused):
                    log.warning("the Bulk API cannot export this object; reading it through REST",
                                {"object": plan.name, "reason": outcome.state.reason})
                    await binding.save(bulk_refused=outcome.state.reason, snapshot_export=None)
                    async for doc in self.rest.query(log, soql, transform, include_deleted=False):
                        yield doc
                    return
                await binding.save(snapshot_export=outcome.state)
                if outcome.report is not None:
                    raise outcome.report
            state = binding.snapshot_export
