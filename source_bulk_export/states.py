"""The named states of every resumable Bulk export, and the pure transitions between them.

Flow restarts a connector after every error, publication or shard move, so a wait that lives only
in memory can repeat forever. Every state below is a checkpoint: a restart resumes the state it
finds, waits only for what remains of a wait, and counts attempts across processes.

One Bulk job exports one *unit*: a backfill `Slice` (the next rows after an Id), a delta `Window`
`(lower, upper]`, or a `Whole` object (a snapshot). A unit's job goes through:

                       POST /jobs/query                  JobComplete
    ToSubmit(unit) ─────────────────────▶ JobRunning ───────────────────▶ ReadingPage(locator)
      ▲   ▲   ▲                             │  │                            │ page read: the next
      │   │   │ split (too large,           │  │ Failed / Aborted           │ locator, or after the
      │   │   │ timed out)                  │  ▼                            ▼ unit's last page:
      │   │   └─────────────────────────────┤ JobBackingOff(retry_at)       ToSubmit(following unit)
      │   │       retry_at reached          │   │                           or done
      │   └─────────────────────────────────┼───┘
      └─────────────────────────────────────┴── a job Salesforce lost (404), from JobRunning or
                                                ReadingPage: the same unit again
    The Bulk API refuses the object: `Refused`, and the caller reads it through REST.
    A ToSubmit checkpointed by a process that may have submitted its job carries a mark (`since`):
    a restart adopts the job that process created, if Salesforce lists exactly one, as JobRunning.

A backfill adds two states of its own: `ReadingRest` (an object the Bulk API refuses, read in REST
pages on the same Id watermark) and `Complete`. Functions named
`on_*` are the transitions: pure, given the facts (a JobInfo, an error, `now`), and tested one by
one. Running them (HTTP, waits) is exports.py's job; persisting them is `encode`/`decode`.
"""

from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol, Self

from .job_errors import (
    BulkJobError,
    BulkUnsupportedError,
    JobFailedError,
    JobTimeoutError,
    JobTooLargeError,
    LimitExhaustedError,
    TransientJobError,
)

# Salesforce has already retried a job's chunks before it reports Failed, so a transient failure is
# an incident lasting minutes: re-submit after 30, 60 and 120 s (four attempts in all, across any
# number of processes), then report the failure and try again an hour later.
TRANSIENT_ATTEMPTS = 4
TRANSIENT_BACKOFF_FIRST = timedelta(seconds=30)
GIVE_UP_PAUSE = timedelta(hours=1)
# Daily Bulk limits (10,000 jobs or 1 TB of results per rolling 24 h) free up as old jobs age out of
# the window: every quarter hour is often enough, and at that pace a day of waiting costs ~100 calls.
# After a whole day the window has rolled over completely, so a limit still exhausted is being spent
# by someone else: each further refusal is reported (and still waited out).
LIMIT_RETRY = timedelta(minutes=15)
LIMIT_REPORT_AFTER = timedelta(days=1)
# A failure nobody here understands (or a field removed since describe) is reported at once; the
# restart describes the object anew and tries again after this pause, so a broken query does not
# spend the org's 10,000 daily jobs one restart at a time.
FAILED_PAUSE = timedelta(minutes=15)
# A backfill slice that timed out or was too large is halved, down to this many rows. A job this
# small that still times out fails for another reason (an expensive formula, a sharing computation),
# so splitting further would only spend the daily job allocation.
MIN_SLICE_ROWS = 1_000


class Unit(Protocol):
    """What one Bulk job exports."""

    KIND: ClassVar[str]

    def split(self) -> Self | None:
        """The first half of this unit, for a job that was too large; None if it cannot shrink."""
        ...

    def following(self, job_rows: int) -> Self | None:
        """The unit after this one, once its job (`job_rows` rows) has been read; None: done."""
        ...


@dataclass(frozen=True, slots=True)
class Slice:
    """The next `rows` rows in Id order after `after_id` (None: from the first row).

    While a slice's pages are read, `after_id` follows the last Id emitted (a value watermark that
    deletions cannot shift), so a job lost mid-read is re-submitted from there.
    """

    KIND: ClassVar[str] = "slice"
    after_id: str | None
    rows: int

    def split(self) -> "Slice | None":
        return None if self.rows <= MIN_SLICE_ROWS else replace(self, rows=max(MIN_SLICE_ROWS, self.rows // 2))

    def following(self, job_rows: int) -> "Slice | None":
        # A short slice was the last one: the keyset walk has reached the end.
        return None if job_rows < self.rows else self


@dataclass(frozen=True, slots=True)
class Window:
    """Rows with `lower < cursor field <= upper`: one sub-window of a delta window ending at `through`.

    While its pages are read, (`after_stamp`, `after_id`) follows the last row emitted, in (cursor
    field, Id) order: a job lost mid-read is re-submitted for the rows after it, and so is not read
    twice even when thousands of rows share one second.
    """

    KIND: ClassVar[str] = "window"
    lower: datetime
    upper: datetime
    through: datetime
    after_stamp: datetime | None = None
    after_id: str | None = None

    def split(self) -> "Window | None":
        first = self.lower if self.after_stamp is None else max(self.lower, self.after_stamp - timedelta(seconds=1))
        if self.upper - first <= timedelta(seconds=1):
            return None
        half = timedelta(seconds=(self.upper - first).total_seconds() // 2)
        return replace(self, lower=first, upper=first + half)

    def following(self, job_rows: int) -> "Window | None":
        if self.upper >= self.through:
            return None
        width = self.upper - self.lower
        return Window(self.upper, min(self.through, self.upper + width), self.through)


@dataclass(frozen=True, slots=True)
class Whole:
    """Every live row of an object: a snapshot's export, which cannot be split."""

    KIND: ClassVar[str] = "whole"

    def split(self) -> "Whole | None":
        return None

    def following(self, job_rows: int) -> "Whole | None":
        return None


# --- the states ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToSubmit[U: Unit]:
    """No job is known for `unit` yet. `attempt` counts its failed jobs so far; `limited_since` is when
    Salesforce first refused it for an exhausted daily limit, while it keeps doing so.

    `since` (the mark) is the earliest instant a job for `unit` can have been created: a process
    that reached this state may have created it (Salesforce names a job only in the answer to its
    creation) and been killed before a checkpoint named it. A restart looks for such an orphan, a
    job of the connector's user for the same object and operation created from `since` (whole
    seconds) on, and adopts it rather than submit the unit again (jobs.BulkJobs.orphan). None: no
    job can exist yet; the state is checkpointed with a mark before its job is submitted.
    """

    PHASE: ClassVar[str] = "to_submit"
    unit: U
    attempt: int = 0
    limited_since: datetime | None = None
    since: datetime | None = None


@dataclass(frozen=True, slots=True)
class JobRunning[U: Unit]:
    """`job_id` exports `unit`; a restart polls it, never submits the unit again.

    `created_at` is Salesforce's createdDate: the job reads rows after it, so the delta stream is held
    below it until the job's pages are read (design.md, "Deletions and versions").
    """

    PHASE: ClassVar[str] = "running"
    unit: U
    attempt: int
    job_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class JobBackingOff[U: Unit]:
    """The last job for `unit` failed (`failure` says how); the next is submitted at `retry_at`."""

    PHASE: ClassVar[str] = "backing_off"
    unit: U
    attempt: int
    retry_at: datetime
    failure: str
    limited_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class ReadingPage[U: Unit]:
    """`job_id` completed with `job_rows` rows; the next page to read is at `locator` (None: the first),
    after `rows_before` rows on earlier pages."""

    PHASE: ClassVar[str] = "reading"
    unit: U
    job_id: str
    created_at: datetime
    job_rows: int
    locator: str | None
    rows_before: int


type JobPhase[U: Unit] = ToSubmit[U] | JobRunning[U] | JobBackingOff[U] | ReadingPage[U]


@dataclass(frozen=True, slots=True)
class Refused:
    """The Bulk API cannot export the object (or one of its fields' types): read it through REST."""

    reason: str


@dataclass(frozen=True, slots=True)
class Next[U: Unit]:
    """A transition's result: the state to checkpoint, and an error to raise once it is checkpointed
    (a failure the user must see; the state already says when the next attempt happens)."""

    state: JobPhase[U] | Refused
    report: BulkJobError | None = None


# --- transitions ---------------------------------------------------------------------------------


def mark_after(state: "JobPhase[Any]") -> datetime | None:
    """The mark of the ToSubmit that `state` leads to: after a job (running, read, lost or failed),
    the second after its creation; after a backoff, its end; a ToSubmit's own mark.

    Marks derive from the state, not the clock: a restart from `state` computes the same mark a
    killed process computed from it, and so can look for the job that process may have submitted
    under it (BulkJobs.restored). Starting past the job's own creation second, a mark never takes
    that job, kept for its deletion grace, for its successor's orphan.
    """
    match state:
        case JobRunning() | ReadingPage():
            return state.created_at + timedelta(seconds=1)
        case JobBackingOff():
            return state.retry_at
        case ToSubmit():
            return state.since
    return None


def on_marked[U: Unit](state: ToSubmit[U], now: datetime) -> ToSubmit[U]:
    """A unit about to be submitted for the first time: checkpoint the mark before the job exists."""
    return replace(state, since=now)


def on_submitted[U: Unit](state: ToSubmit[U], job_id: str, created_at: datetime) -> JobRunning[U]:
    """The job was created, or (after a restart) an orphan created for the same mark was adopted."""
    return JobRunning(state.unit, state.attempt, job_id, created_at)


def on_complete[U: Unit](state: JobRunning[U], job_rows: int) -> ReadingPage[U]:
    return ReadingPage(state.unit, state.job_id, state.created_at, job_rows, locator=None, rows_before=0)


def on_failed[U: Unit](state: ToSubmit[U] | JobRunning[U], error: BulkJobError, now: datetime) -> Next[U]:
    """A job ended Failed or Aborted, timed out, or Salesforce refused to create it."""
    unit, attempt = state.unit, state.attempt
    match error:
        case BulkUnsupportedError():
            return Next(Refused(error.message))
        case JobTooLargeError() | JobTimeoutError():
            smaller = unit.split()
            if smaller is not None:
                return Next(ToSubmit(smaller, since=mark_after(state) or now))
            return Next(JobBackingOff(unit, attempt + 1, now + FAILED_PAUSE, error.message), report=error)
        case LimitExhaustedError():
            # Waiting for the allocation to roll over is not an attempt at the unit.
            first_refused = (state.limited_since if isinstance(state, ToSubmit) else None) or now
            waiting = JobBackingOff(unit, attempt, now + LIMIT_RETRY, error.message, limited_since=first_refused)
            return Next(waiting, report=error if now - first_refused >= LIMIT_REPORT_AFTER else None)
        case TransientJobError():
            attempt += 1
            if attempt < TRANSIENT_ATTEMPTS:
                retry_at = now + TRANSIENT_BACKOFF_FIRST * 2 ** (attempt - 1)
                return Next(JobBackingOff(unit, attempt, retry_at, error.message))
            gave_up = JobFailedError(f"failed {attempt} times, last: {error.message}", job_id=error.job_id,
                                     object=error.object, state=error.state)
            return Next(JobBackingOff(unit, attempt, now + GIVE_UP_PAUSE, error.message), report=gave_up)
        case _:
            return Next(JobBackingOff(unit, attempt + 1, now + FAILED_PAUSE, error.message), report=error)


def on_retry_due[U: Unit](state: JobBackingOff[U], now: datetime) -> JobPhase[U]:
    """The backoff's end: the unit is submitted again, or (before `retry_at`) nothing changes."""
    if now < state.retry_at:
        return state
    return ToSubmit(state.unit, state.attempt, state.limited_since, since=mark_after(state))


def on_lost[U: Unit](state: JobRunning[U] | ReadingPage[U]) -> ToSubmit[U]:
    """Salesforce no longer has the job (deleted, or its results expired), or its pages cannot be
    read as planned (a job of an earlier plan): not a failure of the unit."""
    return ToSubmit(state.unit, state.attempt if isinstance(state, JobRunning) else 0, since=mark_after(state))


def on_page_read[U: Unit](state: ReadingPage[U], next_locator: str | None, rows_after: int,
                          unit: U) -> ReadingPage[U] | ToSubmit[U] | None:
    """A page was read whole. `unit` is the unit as it stands after the page (a slice's watermark
    moved to the page's last Id). Returns the next page, the following unit, or None when the unit
    was the last one."""
    if next_locator is not None:
        return replace(state, unit=unit, locator=next_locator, rows_before=rows_after)
    following = unit.following(state.job_rows)
    return None if following is None else ToSubmit(following, since=mark_after(state))


# --- the backfill's own states -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadingRest:
    """The Bulk API refuses the object: it is read in REST pages, in Id order after `after_id`."""

    PHASE: ClassVar[str] = "rest"
    after_id: str | None


@dataclass(frozen=True, slots=True)
class Complete:
    """Every row up to the cutoff has been emitted."""

    PHASE: ClassVar[str] = "complete"


type BackfillState = JobPhase[Slice] | ReadingRest | Complete


# --- persistence ---------------------------------------------------------------------------------

type State = JobPhase[Any] | ReadingRest | Complete

_STATES: dict[str, type[Any]] = {
    cls.PHASE: cls for cls in (ToSubmit, JobRunning, JobBackingOff, ReadingPage, ReadingRest, Complete)
}
_UNITS: dict[str, type[Any]] = {cls.KIND: cls for cls in (Slice, Window, Whole)}
_DATETIMES = frozenset({"created_at", "retry_at", "limited_since", "since", "lower", "upper", "through",
                        "after_stamp"})
# Every key any state can have. A checkpoint is a JSON merge patch, so each one writes all of them
# (null where unused): a key left out would keep the previous state's value.
KEYS = ("phase", "unit", "after_id", "rows", "lower", "upper", "through", "after_stamp", "attempt", "job_id",
        "created_at", "retry_at", "failure", "limited_since", "since", "job_rows", "locator", "rows_before")


def encode(state: State) -> dict[str, Any]:
    """`state` as a flat JSON object with every key of `KEYS` present."""
    out: dict[str, Any] = {key: None for key in KEYS} | {"phase": state.PHASE}
    for field in fields(state):
        value = getattr(state, field.name)
        if field.name == "unit":
            out["unit"] = value.KIND
            out.update({f.name: getattr(value, f.name) for f in fields(value)})
        else:
            out[field.name] = value
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in out.items()}


def decode(data: dict[str, Any]) -> State:
    """The state `encode` wrote (datetimes may arrive as strings or, in memory, as datetimes)."""
    values: dict[str, Any] = {
        k: datetime.fromisoformat(v) if k in _DATETIMES and isinstance(v, str) else v for k, v in data.items()
    }
    cls = _STATES[values["phase"]]
    # A key a merge patch set to null is absent from the merged state: read it as None.
    arguments = {f.name: values.get(f.name) for f in fields(cls) if f.name != "unit"}
    if any(f.name == "unit" for f in fields(cls)):
        unit_cls = _UNITS[values["unit"]]
        arguments["unit"] = unit_cls(**{f.name: values.get(f.name) for f in fields(unit_cls)})
    return cls(**arguments)
