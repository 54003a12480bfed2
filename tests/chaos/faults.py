"""The faults issue 7 names, as emulator settings, and the scenarios made of them.

A scenario is one row of the matrix: a set of faults, armed on a fresh emulator before the
first session, plus the org changes every cell makes (changes.py) and, for two scenarios,
a change of their own. Rates are issue 7's where it gives one (3% of calls answer 503,
tokens die after 40 calls); the others are chosen so that a capture of the chaos org meets
each fault several times. Every draw is seeded from the cell's seed.
"""

from collections.abc import Callable
from dataclasses import dataclass

from tests.emulator import EmulatorServer
from tests.emulator.knobs import INTERNAL_SERVER_ERROR

from .changes import BURST_OBJECT, LATE_OBJECT

# Issue 7: "3% of calls answer 503".
SERVER_ERROR_RATE = 0.03
# Issue 7: "tokens die after 40 calls".
TOKEN_MAX_REQUESTS = 40
# Of the Bulk jobs that complete, this many fail transiently (issue 7: "jobs fail with
# InternalServerError"): enough that a capture meets several, rare enough that the
# connector's four attempts per job are almost never all spent (0.1^4).
JOB_FAILURE_RATE = 0.1
# The first Account backfill slices (the SOQL with a LIMIT; delta windows have none) fail like
# this, in order: transiently twice, then as too large (a query timeout, which the connector
# answers by splitting the slice).
BACKFILL_SLICE = " LIMIT "
TRANSIENT_FAILURES = 2
TOO_LARGE_MESSAGE = "InvalidBatch : Failed to process query: QUERY_TIMEOUT: Your query request was running for too long."
# Of the result pages, this many are cut off mid-body.
RESET_RATE = 0.1
# The first Account job with a third page disappears after its second; after that, of the
# pages that have a next page, this many are followed by their job disappearing.
EXPIRE_AFTER_PAGES = 2
JOB_EXPIRY_RATE = 0.05
# REQUEST_LIMIT_EXCEEDED on every data call for this long, from the capture's first
# checkpoint with documents: longer than the connector's first two waits for it (1.5 s and
# 3 s at the cells' wait scale), so it has to wait more than once.
REQUEST_LIMIT_SECONDS = 5.0


@dataclass(frozen=True)
class Fault:
    """One fault: `arm`, if any, sets it on the emulator before the first session (given the
    cell's seed); `on_data`, if any, runs once, at the capture's first checkpoint with
    documents."""

    name: str
    arm: Callable[[EmulatorServer, int], None] | None = None
    on_data: Callable[[EmulatorServer], None] | None = None


def _failed_jobs(emu: EmulatorServer, seed: int) -> None:
    emu.fail_next_jobs(TRANSIENT_FAILURES, INTERNAL_SERVER_ERROR, object="Account", query_contains=BACKFILL_SLICE)
    emu.fail_next_jobs(1, TOO_LARGE_MESSAGE, object="Account", query_contains=BACKFILL_SLICE)
    emu.knobs.job_failure_rate, emu.knobs.job_failure_seed = JOB_FAILURE_RATE, seed


def _server_errors(emu: EmulatorServer, seed: int) -> None:
    emu.knobs.server_error_rate, emu.knobs.server_error_seed = SERVER_ERROR_RATE, seed


def _resets(gzip: bool) -> Callable[[EmulatorServer, int], None]:
    def arm(emu: EmulatorServer, seed: int) -> None:
        emu.knobs.reset_result_page_rate, emu.knobs.reset_result_page_seed = RESET_RATE, seed
        emu.knobs.gzip_results = gzip

    return arm


def _token_death(emu: EmulatorServer, seed: int) -> None:
    emu.knobs.token_max_requests = TOKEN_MAX_REQUESTS


def _request_limit_window(emu: EmulatorServer) -> None:
    emu.exceed_request_limit(REQUEST_LIMIT_SECONDS)


def _results_expire(emu: EmulatorServer, seed: int) -> None:
    emu.expire_next_jobs(1, after_pages=EXPIRE_AFTER_PAGES, object="Account")
    emu.knobs.job_expiry_rate, emu.knobs.job_expiry_seed = JOB_EXPIRY_RATE, seed


FAILED_JOBS = Fault("failed jobs", _failed_jobs)
SERVER_ERRORS = Fault("503s", _server_errors)
RESETS_GZIP = Fault("resets (gzip)", _resets(gzip=True))
RESETS_PLAIN = Fault("resets (plain)", _resets(gzip=False))
TOKEN_DEATH = Fault("token death", _token_death)
REQUEST_LIMIT = Fault("request limit", on_data=_request_limit_window)
RESULTS_EXPIRE = Fault("results expire", _results_expire)


@dataclass(frozen=True)
class Scenario:
    """A row of the matrix: its faults, and whether it adds the burst or the late commit
    to the ordinary changes (changes.py)."""

    name: str
    faults: tuple[Fault, ...] = ()
    burst: bool = False
    late_commit: bool = False

    def arm(self, emu: EmulatorServer, seed: int) -> None:
        for fault in self.faults:
            if fault.arm is not None:
                fault.arm(emu, seed)

    @property
    def objects(self) -> frozenset[str]:
        """The objects its own changes need bound."""
        return frozenset({*([BURST_OBJECT] if self.burst else []), *([LATE_OBJECT] if self.late_commit else [])})

    def on_data(self, emu: EmulatorServer) -> None:
        for fault in self.faults:
            if fault.on_data is not None:
                fault.on_data(emu)


SCENARIOS = (
    Scenario("failed-jobs", (FAILED_JOBS,)),
    Scenario("503", (SERVER_ERRORS,)),
    Scenario("reset-gzip", (RESETS_GZIP,)),
    Scenario("reset-plain", (RESETS_PLAIN,)),
    Scenario("token-death", (TOKEN_DEATH,)),
    Scenario("request-limit", (REQUEST_LIMIT,)),
    Scenario("results-expire", (RESULTS_EXPIRE,)),
    Scenario("burst", burst=True),
    Scenario("late-commit", late_commit=True),
    # Resets without gzip here: a cut in plain CSV may end on a row boundary, which only the
    # row count gives away.
    Scenario("everything", (FAILED_JOBS, SERVER_ERRORS, RESETS_PLAIN, TOKEN_DEATH, REQUEST_LIMIT, RESULTS_EXPIRE),
             burst=True, late_commit=True),
)
