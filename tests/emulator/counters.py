"""What the emulator has been asked to do, for tests to assert on.

Endpoint names are stable: ``token``, ``versions``, ``describe_global``, ``describe``,
``get_deleted``, ``limits``, ``job_create``, ``job_info``, ``job_abort``, ``job_delete``,
``job_results``, ``query``, ``query_all``, ``query_more`` (and ``unknown`` for unmatched paths).
Every request is counted, including the ones answered with an error.
"""

import threading
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class JobRecord:
    """A Bulk job as it was submitted."""

    job_id: str
    operation: str  # "query" | "queryAll"
    query: str
    object: str
    api_version: str


@dataclass(frozen=True)
class JobEnd:
    """How a Bulk job ended: its terminal state and, when JobComplete, its row count."""

    state: str  # "JobComplete" | "Failed" | "Aborted"
    rows: int  # numberRecordsProcessed


@dataclass(frozen=True)
class PageServed:
    """A Bulk result page delivered whole (a page cut off by a reset is not)."""

    job_id: str
    locator: str | None  # the page's own locator; None: the job's first page
    rows: int
    last: bool  # no page follows it (its Sforce-Locator was null)


class _Runs:
    """A set of ints held as sorted, disjoint ``[start, stop)`` runs (seeded row indices)."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._stops: list[int] = []

    def add(self, span: range) -> int:
        """Add ``span``; returns how many of its ints were already in the set."""
        lo, hi = span.start, span.stop
        if lo >= hi:
            return 0
        first = bisect_left(self._stops, lo)  # runs ending at or after lo touch it
        end = bisect_right(self._starts, hi)  # runs starting at or before hi touch it
        touching = list(zip(self._starts[first:end], self._stops[first:end], strict=True))
        already = sum(max(0, min(hi, stop) - max(lo, start)) for start, stop in touching)
        if touching:
            lo, hi = min(lo, touching[0][0]), max(hi, touching[-1][1])
        self._starts[first:end] = [lo]
        self._stops[first:end] = [hi]
        return already


class Counters:
    """Thread-safe counters; every property returns a copy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._requests: Counter[str] = Counter()
            self._tokens_issued = 0
            self._jobs: list[JobRecord] = []
            self._rows_served = 0
            self._rows_by_job: Counter[str] = Counter()
            self._locators: dict[str, list[str | None]] = {}
            self._pages: list[PageServed] = []
            self._jobs_ended: dict[str, JobEnd] = {}
            self._jobs_expired: list[str] = []
            self._served_again: Counter[str] = Counter()
            # Per object, every row version a whole Bulk page has delivered: seeded rows by
            # index, mutated and inserted rows by their identity (see page_served).
            self._seeded_seen: dict[tuple[str, tuple[str, ...]], _Runs] = {}
            self._mutated_seen: dict[tuple[str, tuple[str, ...]], set[Hashable]] = {}

    # -- recording (server side) ------------------------------------------------------

    def request(self, endpoint: str) -> None:
        with self._lock:
            self._requests[endpoint] += 1

    def token_issued(self) -> None:
        with self._lock:
            self._tokens_issued += 1

    def job_created(self, record: JobRecord) -> None:
        with self._lock:
            self._jobs.append(record)

    def locator_fetched(self, job_id: str, locator: str | None) -> None:
        with self._lock:
            self._locators.setdefault(job_id, []).append(locator)

    def job_ended(self, job_id: str, end: JobEnd) -> None:
        with self._lock:
            self._jobs_ended[job_id] = end

    def job_expired(self, job_id: str) -> None:
        with self._lock:
            self._jobs_expired.append(job_id)

    def page_served(self, page: PageServed, obj: str, columns: tuple[str, ...], seeded: list[range],
                    mutated: list[Hashable]) -> None:
        """A whole Bulk page of ``obj`` with ``columns``: its seeded rows as index ranges, and an
        identity of each of its other rows that changes with every version of the row. A row is
        delivered again when an earlier page had it with the same columns (an export of the
        object's Ids alone re-exports no row its backfill delivered)."""
        with self._lock:
            self._pages.append(page)
            runs = self._seeded_seen.setdefault((obj, columns), _Runs())
            seen = self._mutated_seen.setdefault((obj, columns), set())
            again = sum(runs.add(span) for span in seeded)
            for identity in mutated:
                if identity in seen:
                    again += 1
                seen.add(identity)
            self._served_again[obj] += again

    def rows(self, count: int, job_id: str | None = None) -> None:
        """Rows fully served: a complete Bulk page (``job_id``) or a REST page."""
        with self._lock:
            self._rows_served += count
            if job_id is not None:
                self._rows_by_job[job_id] += count

    # -- reading (test side) ----------------------------------------------------------

    @property
    def requests(self) -> Counter[str]:
        """Requests per endpoint name."""
        with self._lock:
            return Counter(self._requests)

    @property
    def tokens_issued(self) -> int:
        with self._lock:
            return self._tokens_issued

    @property
    def jobs_created(self) -> list[JobRecord]:
        with self._lock:
            return list(self._jobs)

    @property
    def rows_served(self) -> int:
        """Rows in complete result pages, Bulk and REST."""
        with self._lock:
            return self._rows_served

    @property
    def rows_served_by_job(self) -> dict[str, int]:
        with self._lock:
            return dict(self._rows_by_job)

    @property
    def locators_fetched(self) -> dict[str, list[str | None]]:
        """Per job, the ``locator`` of every results request in order (None: the first
        page, requested without a locator), whether or not the page was delivered whole."""
        with self._lock:
            return {job: list(locators) for job, locators in self._locators.items()}

    @property
    def pages_served(self) -> list[PageServed]:
        """Every Bulk result page delivered whole, in order."""
        with self._lock:
            return list(self._pages)

    @property
    def jobs_ended(self) -> dict[str, JobEnd]:
        """How each job ended, once it reached a terminal state."""
        with self._lock:
            return dict(self._jobs_ended)

    @property
    def jobs_expired(self) -> list[str]:
        """The jobs the expiry fault made disappear between result pages, in order."""
        with self._lock:
            return list(self._jobs_expired)

    @property
    def rows_served_again(self) -> dict[str, int]:
        """Per object, Bulk rows in whole pages that an earlier whole page (of any job) had
        already delivered in the same version: re-exported rows. A row changed since counts
        anew, so a row captured by a backfill and then by the delta stream is not counted."""
        with self._lock:
            return {obj: n for obj, n in self._served_again.items() if n}
