"""The named states of a resumable export and their pure transitions, one by one (states.py)."""

from datetime import UTC, datetime, timedelta

import pytest

from source_bulk_export import states
from source_bulk_export.job_errors import (
    BulkUnsupportedError,
    JobFailedError,
    JobTimeoutError,
    JobTooLargeError,
    LimitExhaustedError,
    TransientJobError,
)
from source_bulk_export.states import (
    Complete,
    JobBackingOff,
    JobRunning,
    ReadingPage,
    ReadingRest,
    Refused,
    Slice,
    ToSubmit,
    Whole,
    Window,
    decode,
    encode,
    on_complete,
    on_failed,
    on_lost,
    on_marked,
    on_page_read,
    on_retry_due,
    on_submitted,
)
from tests.flow_harness import merge_patch

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
CREATED = NOW - timedelta(minutes=3)
SLICE = Slice("001000000000000AAA", 500_000)
JOB = "750000000000001AAA"


def transient() -> TransientJobError:
    return TransientJobError("InternalServerError", job_id=JOB, object="Account", state="Failed")


def running(attempt: int = 0) -> JobRunning[Slice]:
    return JobRunning(SLICE, attempt, JOB, CREATED)


# --- the job lifecycle ----------------------------------------------------------------------------


def test_a_submitted_job_is_running_with_its_attempt_count_kept() -> None:
    assert on_submitted(ToSubmit(SLICE, attempt=2), JOB, CREATED) == JobRunning(SLICE, 2, JOB, CREATED)


def test_a_completed_job_is_read_from_its_first_page() -> None:
    assert on_complete(running(1), 1234) == ReadingPage(SLICE, JOB, CREATED, 1234, locator=None, rows_before=0)


def test_transient_failures_back_off_30_60_120_seconds_then_report_and_pause_an_hour() -> None:
    state: ToSubmit[Slice] | JobRunning[Slice] = running()
    waits = []
    for attempt in range(1, states.TRANSIENT_ATTEMPTS + 1):
        outcome = on_failed(state, transient(), NOW)
        assert isinstance(outcome.state, JobBackingOff) and outcome.state.attempt == attempt
        waits.append(outcome.state.retry_at - NOW)
        if attempt < states.TRANSIENT_ATTEMPTS:
            assert outcome.report is None
        else:
            assert isinstance(outcome.report, JobFailedError) and "failed 4 times" in outcome.report.message
        state = JobRunning(SLICE, outcome.state.attempt, JOB, CREATED)
    assert waits == [timedelta(seconds=30), timedelta(seconds=60), timedelta(seconds=120), timedelta(hours=1)]


def test_a_backoff_ends_at_retry_at_and_no_sooner_keeping_the_attempts() -> None:
    waiting = JobBackingOff(SLICE, 3, retry_at=NOW + timedelta(seconds=90), failure="InternalServerError")
    assert on_retry_due(waiting, NOW + timedelta(seconds=89)) is waiting
    # Marked from the backoff's end, whenever the backoff is noticed: the killed process that waited it
    # out computed the same mark from the same state, so a job it submitted under it can be found.
    assert on_retry_due(waiting, NOW + timedelta(seconds=91)) == ToSubmit(SLICE, 3, since=NOW + timedelta(seconds=90))


def test_a_too_large_slice_is_halved_down_to_the_minimum_then_reported() -> None:
    too_large = JobTooLargeError("QUERY_TIMEOUT", job_id=JOB, object="Account", state="Failed")
    after_job = CREATED + timedelta(seconds=1)
    assert on_failed(running(), too_large, NOW).state == ToSubmit(Slice(SLICE.after_id, 250_000), since=after_job)
    timed_out = JobTimeoutError("still InProgress", job_id=JOB, object="Account", state="InProgress")
    assert on_failed(running(), timed_out, NOW).state == ToSubmit(Slice(SLICE.after_id, 250_000), since=after_job)

    smallest = JobRunning(Slice("001", states.MIN_SLICE_ROWS), 0, JOB, CREATED)
    outcome = on_failed(smallest, too_large, NOW)
    assert isinstance(outcome.state, JobBackingOff) and outcome.report is too_large
    assert outcome.state.retry_at == NOW + states.FAILED_PAUSE


def test_a_too_large_window_is_halved_down_to_one_second() -> None:
    window = Window(NOW - timedelta(seconds=10), NOW, NOW + timedelta(hours=1))
    too_large = JobTooLargeError("too big", job_id=JOB, object="Account", state="Failed")
    assert on_failed(ToSubmit(window), too_large, NOW).state == ToSubmit(
        Window(window.lower, window.lower + timedelta(seconds=5), window.through), since=NOW)
    second = Window(NOW - timedelta(seconds=1), NOW, NOW)
    assert isinstance(on_failed(ToSubmit(second), too_large, NOW).state, JobBackingOff)
    assert isinstance(on_failed(ToSubmit(Whole()), too_large, NOW).state, JobBackingOff)


def test_a_refusal_of_the_object_hands_it_to_rest() -> None:
    refused = BulkUnsupportedError("Entity 'CaseStatus' is not supported by the Bulk API.", job_id=None,
                                   object="CaseStatus", state=None)
    assert on_failed(ToSubmit(SLICE), refused, NOW).state == Refused(refused.message)


def test_an_exhausted_limit_waits_a_quarter_hour_without_spending_attempts_and_is_reported_after_a_day() -> None:
    limit = LimitExhaustedError("Max bulk v2 query jobs (10000) per 24 hrs", job_id=None, object="Account", state=None)
    first = on_failed(ToSubmit(SLICE, attempt=1), limit, NOW)
    assert first.state == JobBackingOff(SLICE, 1, NOW + states.LIMIT_RETRY, limit.message, limited_since=NOW)
    assert first.report is None

    assert isinstance(first.state, JobBackingOff)
    again = on_retry_due(first.state, NOW + states.LIMIT_RETRY)
    assert again == ToSubmit(SLICE, 1, limited_since=NOW, since=NOW + states.LIMIT_RETRY)
    assert isinstance(again, ToSubmit)
    assert on_failed(again, limit, NOW + timedelta(hours=23)).report is None
    late = on_failed(again, limit, NOW + timedelta(days=1))
    assert late.report is limit and isinstance(late.state, JobBackingOff)  # reported, and still waited out


def test_an_unknown_failure_is_reported_and_retried_after_a_pause() -> None:
    unknown = JobFailedError("INVALID_FIELD: No such column 'Gone__c'", job_id=JOB, object="Account", state="Failed")
    outcome = on_failed(running(), unknown, NOW)
    assert outcome.report is unknown
    assert outcome.state == JobBackingOff(SLICE, 1, NOW + states.FAILED_PAUSE, unknown.message)


def test_a_lost_job_is_submitted_again_without_counting_a_failure() -> None:
    after_job = CREATED + timedelta(seconds=1)
    assert on_lost(running(2)) == ToSubmit(SLICE, 2, since=after_job)
    reading = ReadingPage(Slice("001x", 500_000), JOB, CREATED, 10, locator="L2", rows_before=5)
    assert on_lost(reading) == ToSubmit(Slice("001x", 500_000), since=after_job)


def test_pages_advance_by_locator_then_to_the_next_slice_or_the_end() -> None:
    reading = on_complete(running(), 500_000)
    moved = Slice("001zzz", 500_000)
    assert on_page_read(reading, "L2", 50_000, moved) == ReadingPage(moved, JOB, CREATED, 500_000, "L2", 50_000)
    # A full slice's last page: the next slice starts after its last Id, marked as it is submitted next.
    assert on_page_read(reading, None, 500_000, moved) == ToSubmit(moved, since=CREATED + timedelta(seconds=1))
    # A short slice was the last one.
    short = on_complete(running(), 499_999)
    assert on_page_read(short, None, 499_999, moved) is None


def test_a_mark_is_the_earliest_creation_of_the_next_job_and_never_takes_in_the_previous_one() -> None:
    # After a job, the second after its creation (createdDate is whole seconds): the job itself, kept
    # for its deletion grace, is never the next unit's orphan. The same state gives the same mark in
    # any process, so a restart from it looks where the killed process may have submitted.
    assert states.mark_after(running()) == CREATED + timedelta(seconds=1)
    assert states.mark_after(ReadingPage(SLICE, JOB, CREATED, 10, "L2", 5)) == CREATED + timedelta(seconds=1)
    assert states.mark_after(JobBackingOff(SLICE, 1, NOW, "InternalServerError")) == NOW
    assert states.mark_after(ToSubmit(SLICE, since=NOW)) == NOW
    assert states.mark_after(ToSubmit(SLICE)) is None


def test_a_unit_never_checkpointed_is_marked_before_its_job_exists() -> None:
    assert on_marked(ToSubmit(SLICE, attempt=1), NOW) == ToSubmit(SLICE, attempt=1, since=NOW)


def test_windows_follow_one_another_to_the_end_of_the_delta_window() -> None:
    through = NOW + timedelta(seconds=25)
    first = Window(NOW, NOW + timedelta(seconds=10), through)
    second = first.following(0)
    assert second == Window(NOW + timedelta(seconds=10), NOW + timedelta(seconds=20), through)
    assert second is not None
    assert second.following(0) == Window(NOW + timedelta(seconds=20), through, through)
    assert Window(NOW, through, through).following(0) is None
    assert Whole().following(10) is None


# --- persistence ----------------------------------------------------------------------------------

EVERY_STATE = [
    ToSubmit(SLICE),
    ToSubmit(Slice(None, 1000), attempt=2, limited_since=NOW),
    ToSubmit(SLICE, since=NOW + timedelta(microseconds=250_001)),
    JobRunning(SLICE, 1, JOB, CREATED),
    JobBackingOff(SLICE, 2, NOW, "InternalServerError"),
    ReadingPage(SLICE, JOB, CREATED, 10, "MTAwMDA", 5),
    ReadingPage(Window(NOW, NOW, NOW), JOB, CREATED, 10, None, 0),
    ToSubmit(Whole()),
    ReadingRest("001"),
    Complete(),
]


@pytest.mark.parametrize("state", EVERY_STATE, ids=lambda s: type(s).__name__)
def test_every_state_survives_a_checkpoint(state: states.State) -> None:
    assert decode(encode(state)) == state


@pytest.mark.parametrize("state", EVERY_STATE, ids=lambda s: type(s).__name__)
def test_every_checkpoint_writes_every_key_so_a_merge_patch_replaces_the_previous_state(state: states.State) -> None:
    encoded = encode(state)
    assert tuple(encoded) == states.KEYS
    # What Flow does with it: a merge patch over the previous state leaves nothing of that one behind.
    previous = encode(JobBackingOff(Window(NOW, NOW, NOW), 3, NOW, "x", limited_since=NOW))
    assert decode(merge_patch(previous, encoded)) == state


def test_a_windows_watermark_goes_with_its_first_half_and_not_to_the_next_window() -> None:
    watermarked = Window(NOW, NOW + timedelta(seconds=10), NOW + timedelta(seconds=20),
                         after_stamp=NOW + timedelta(seconds=3), after_id="001x")
    half = watermarked.split()
    # The rows up to the watermark are out anyway: the split halves what is left.
    assert half == Window(NOW + timedelta(seconds=2), NOW + timedelta(seconds=6), watermarked.through,
                          after_stamp=NOW + timedelta(seconds=3), after_id="001x")
    assert watermarked.following(0) == Window(NOW + timedelta(seconds=10), NOW + timedelta(seconds=20),
                                              watermarked.through)
