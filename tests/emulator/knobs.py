"""Everything a test can turn: credentials, limits, job timing, and faults (off by default).

``Knobs`` is a plain mutable dataclass read on every request, so a test may change a knob
while the server runs (``emu.knobs.job_in_progress_polls = 3``). Faults that fire "the
first N times" count down in place; faults that fire at a rate draw from a
``random.Random`` seeded by their own ``*_seed`` knob, so one fault's draws never shift
another's. ``FaultState`` does the counting and the drawing under a lock, because the test
thread and the server thread both touch them.
"""

import random
import threading
from dataclasses import dataclass, field
from datetime import datetime

from .deletions import DELETED_ID_LIMIT

# Versions 31.0 (Summer '14) .. 66.0 (Spring '26): the listing of a current org (§2.1).
DEFAULT_VERSIONS = tuple(f"{v}.0" for v in range(31, 67))


@dataclass
class Credentials:
    """The connected app and the refresh token the org accepts (not secrets)."""

    client_id: str = "emulator-client-id"
    client_secret: str = "emulator-client-secret"
    refresh_token: str = "emulator-refresh-token"


@dataclass
class JobFailure:
    """Matching Bulk jobs end ``Failed`` with ``error_message``, the first ``times`` times.
    A job matches when its object is ``object`` (if set) and its SOQL contains
    ``query_contains`` (if set)."""

    error_message: str
    times: int = 1
    object: str | None = None
    query_contains: str | None = None


@dataclass
class JobExpiry:
    """A Bulk job disappears (404 NOT_FOUND, as a deleted job does) right after it has
    served its ``after_pages``-th whole result page, if more pages follow; the first
    ``times`` jobs that get that far (on ``object``, if set) do."""

    after_pages: int = 1
    times: int = 1
    object: str | None = None


# The errorMessage of a job that fails for a reason on Salesforce's side. Salesforce does not
# document it; this is the word issue 7's operator saw (the connector matches it case-blind).
INTERNAL_SERVER_ERROR = "InternalServerError"


@dataclass
class Knobs:
    credentials: Credentials = field(default_factory=Credentials)
    # Access tokens expire after this many seconds without use (Salesforce's session
    # timeout is inactivity-based, default 2 h, §1.6); None: never.
    token_ttl_seconds: float | None = 7200.0
    # Refresh-token rotation: each refresh returns a new refresh token and invalidates
    # the one used (§1.2).
    rotate_refresh_tokens: bool = False
    # False: every data endpoint answers 403 API_DISABLED_FOR_ORG.
    api_enabled: bool = True
    # The daily API request allocation (DailyApiRequests.Max, §7).
    daily_api_requests: int = 100_000
    # Bulk 2.0 query jobs allowed per 24 h (DailyBulkV2QueryJobs.Max, §4.10).
    daily_bulk_jobs: int = 10_000
    # getDeleted answers EXCEEDED_ID_LIMIT when a window holds more deletions (§5.3).
    deleted_id_limit: int = DELETED_ID_LIMIT
    versions: tuple[str, ...] = DEFAULT_VERSIONS
    # A Bulk job answers InProgress to this many job-info polls, then completes (or
    # fails) on the next one, once it is also at least job_in_progress_seconds old.
    job_in_progress_polls: int = 1
    job_in_progress_seconds: float = 0.0
    # Jobs per page of `GET /jobs/query` (Salesforce: up to 1,000, §4.8).
    job_list_page_size: int = 1_000
    # Rows per results page when the request has no maxRecords (server-chosen, §4.6).
    default_max_records: int = 50_000
    # Salesforce may return fewer rows than maxRecords ("page may be smaller due to size
    # limits", §4.6); a page never holds more than this many rows. None: no cap.
    max_page_rows: int | None = None
    gzip_level: int = 1
    # Seconds every Bulk result page waits before its first byte: a small page served as slowly as a
    # large one is read, so a test can hold a backfill mid-job while other reads go on.
    result_page_delay_seconds: float = 0.0
    # Null CSV cells are empty (`,,`); True writes them as `,"",` instead (§4.9, §10).
    csv_null_as_quoted_empty: bool = False

    # -- faults -----------------------------------------------------------------------
    job_failures: list[JobFailure] = field(default_factory=list)
    # Fraction of data requests answered 503 SERVER_UNAVAILABLE, drawn from a
    # random.Random(server_error_seed); limited to server_error_endpoints if set.
    server_error_rate: float = 0.0
    server_error_seed: int = 0
    server_error_endpoints: frozenset[str] | None = None
    # The next N Bulk result pages are cut off mid-body (connection reset), and after that
    # a fraction of them, drawn from random.Random(reset_result_page_seed).
    reset_result_pages: int = 0
    reset_result_page_rate: float = 0.0
    reset_result_page_seed: int = 0
    # False: result pages are never gzip-encoded, even when the request accepts gzip (§4.6:
    # the client honours Content-Encoding; a plain body is a legal answer).
    gzip_results: bool = True
    # Fraction of completing Bulk jobs (those no JobFailure matched) that end Failed with
    # job_failure_message, drawn from random.Random(job_failure_seed).
    job_failure_rate: float = 0.0
    job_failure_message: str = INTERNAL_SERVER_ERROR
    job_failure_seed: int = 0
    # An access token stops working (401 INVALID_SESSION_ID) once it has been accepted for
    # this many data requests, as a session an admin or Salesforce ends early; None: never.
    token_max_requests: int | None = None
    # [start, end) on the org clock: data requests answer 403 REQUEST_LIMIT_EXCEEDED with the
    # concurrent-request message (§2.3, §7), as when the org's other integrations hold every
    # long-running request slot. Refused requests do not use the daily allocation.
    request_limit_window: tuple[datetime, datetime] | None = None
    # Bulk jobs disappear between result pages: the JobExpiry countdowns, then a fraction of
    # the pages that have a next page, drawn from random.Random(job_expiry_seed).
    job_expiries: list[JobExpiry] = field(default_factory=list)
    job_expiry_rate: float = 0.0
    job_expiry_seed: int = 0


class FaultState:
    """Draws and counts down the faults configured in ``Knobs``."""

    def __init__(self, knobs: Knobs) -> None:
        self._knobs = knobs
        self._lock = threading.Lock()
        # One generator per rate fault, made again whenever that fault's seed knob changes.
        self._draws: dict[str, tuple[int, random.Random]] = {}

    def _draw(self, fault: str, rate: float, seed: int) -> bool:
        """One draw of a rate fault; call with the lock held."""
        if rate <= 0:
            return False
        seeded = self._draws.get(fault)
        if seeded is None or seeded[0] != seed:
            seeded = self._draws[fault] = (seed, random.Random(seed))
        return seeded[1].random() < rate

    def server_error(self, endpoint: str) -> bool:
        """Whether this request to ``endpoint`` fails with 503."""
        knobs = self._knobs
        if knobs.server_error_endpoints is not None and endpoint not in knobs.server_error_endpoints:
            return False
        with self._lock:
            return self._draw("server_error", knobs.server_error_rate, knobs.server_error_seed)

    def job_failure(self, object_name: str, soql: str) -> str | None:
        """The errorMessage a completing job must fail with: the first JobFailure that
        matches (counted down), else the rate draw, else None."""
        knobs = self._knobs
        with self._lock:
            for failure in knobs.job_failures:
                if failure.times <= 0:
                    continue
                if failure.object is not None and failure.object.lower() != object_name.lower():
                    continue
                if failure.query_contains is not None and failure.query_contains not in soql:
                    continue
                failure.times -= 1
                return failure.error_message
            if self._draw("job_failure", knobs.job_failure_rate, knobs.job_failure_seed):
                return knobs.job_failure_message
        return None

    def add_job_failure(self, failure: JobFailure) -> None:
        with self._lock:
            self._knobs.job_failures.append(failure)

    def add_result_resets(self, times: int) -> None:
        with self._lock:
            self._knobs.reset_result_pages += times

    def reset_result_page(self) -> bool:
        """Whether this results page is to be cut off mid-body: the countdown, then the rate."""
        knobs = self._knobs
        with self._lock:
            if knobs.reset_result_pages > 0:
                knobs.reset_result_pages -= 1
                return True
            return self._draw("reset_result_page", knobs.reset_result_page_rate, knobs.reset_result_page_seed)

    def add_job_expiry(self, expiry: JobExpiry) -> None:
        with self._lock:
            self._knobs.job_expiries.append(expiry)

    def job_expires(self, object_name: str, pages_served: int) -> bool:
        """Whether a job that has just served its ``pages_served``-th whole page, with more
        to follow, disappears now: a matching JobExpiry (counted down), else the rate draw."""
        knobs = self._knobs
        with self._lock:
            for expiry in knobs.job_expiries:
                if expiry.times <= 0 or expiry.after_pages != pages_served:
                    continue
                if expiry.object is not None and expiry.object.lower() != object_name.lower():
                    continue
                expiry.times -= 1
                return True
            return self._draw("job_expiry", knobs.job_expiry_rate, knobs.job_expiry_seed)

    def set_request_limit_window(self, window: tuple[datetime, datetime] | None) -> None:
        with self._lock:
            self._knobs.request_limit_window = window

    def request_limited(self, now: datetime) -> bool:
        """Whether ``now`` (the org clock) is inside the REQUEST_LIMIT_EXCEEDED window."""
        window = self._knobs.request_limit_window
        return window is not None and window[0] <= now < window[1]
