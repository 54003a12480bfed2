"""What the emulator has been asked to do, for tests to assert on.

Endpoint names are stable: ``token``, ``versions``, ``describe_global``, ``describe``,
``get_deleted``, ``limits``, ``job_create``, ``job_info``, ``job_abort``, ``job_delete``,
``job_results``, ``query``, ``query_all``, ``query_more`` (and ``unknown`` for unmatched paths).
Every request is counted, including the ones answered with an error.
"""

import threading
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class JobRecord:
    """A Bulk job as it was submitted."""

    job_id: str
    operation: str  # "query" | "queryAll"
    query: str
    object: str
    api_version: str


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
