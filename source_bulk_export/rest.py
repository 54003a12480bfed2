"""REST query/queryAll: one SOQL query read page by page through `nextRecordsUrl`.

Used by the delta stream for windows small enough not to need a Bulk job, and for objects the
Bulk API cannot export. Each page (at most 2,000 records) is read whole and parsed in one
Pydantic call: measured on a 2,000-record, 29-field page, that is ~16x faster than the CDK's
IncrementalJsonProcessor (33 ms vs 530 ms), whose per-event Python object building dominates.
A page is bounded, so memory stays flat however many pages a query has, and reading it whole
lets the session re-request a page whose body broke off, which a streamed body cannot.
"""

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from logging import Logger
from typing import Any

from .auth import SalesforceSession
from .models import QueryPage

type RecordTransform[R] = Callable[[dict[str, Any]], R]

QUERY_PATH = "/query"
QUERY_ALL_PATH = "/queryAll"

# Records per page. 2,000 is Salesforce's maximum (and its default, sent anyway so the page size
# is a decision here, not an accident): the fewest round trips and API calls per window.
# Salesforce may return fewer records for wide rows.
BATCH_SIZE = 2_000
MIN_BATCH_SIZE = 200  # Salesforce rejects smaller values


class RecordsPage(QueryPage):
    """A REST query page with its records (QueryPage declares only the envelope)."""

    records: list[dict[str, Any]]


class RestCountMismatchError(Exception):
    """A query's pages held a different number of records than its first page's `totalSize`.

    A cursor is a snapshot taken when the query ran, so the two agree unless records were lost.
    """

    def __init__(self, soql: str, total_size: int, received: int) -> None:
        super().__init__(f"REST query returned {received} records but announced totalSize {total_size}: {soql}")
        self.soql = soql
        self.total_size = total_size
        self.received = received


@dataclass(slots=True)
class QueryResult[R]:
    """An open query: its size, known from the first page, and its records.

    `records` yields every record in the query's order, each through the caller's transform,
    with REST's `attributes` envelope already removed. It fetches pages as it goes (following
    `nextRecordsUrl` verbatim until `done`) and, once exhausted, has checked that the records
    add up to `total_size` (RestCountMismatchError otherwise). Abandoning it is fine: the
    cursor simply expires on Salesforce's side.
    """

    total_size: int
    records: AsyncGenerator[R, None] = field(init=False)


class RestQuery:
    """Runs SOQL through REST `query` (live rows) or `queryAll` (also deleted and archived rows)."""

    def __init__(self, session: SalesforceSession) -> None:
        self._session = session

    async def open[R](self, log: Logger, soql: str, transform: RecordTransform[R], *,
                      include_deleted: bool, batch_size: int = BATCH_SIZE) -> QueryResult[R]:
        """Run `soql` and read its first page, so the caller can choose a path from `total_size`
        (for example a Bulk job for a large window) before any record is emitted.

        `include_deleted` selects queryAll. Errors propagate as the session raises them
        (SalesforceError with Salesforce's errorCode, e.g. INVALID_FIELD, INVALID_QUERY_LOCATOR).
        """
        if not MIN_BATCH_SIZE <= batch_size <= BATCH_SIZE:
            raise ValueError(f"batch_size {batch_size} is outside Salesforce's {MIN_BATCH_SIZE}..{BATCH_SIZE}")
        headers = {"Sforce-Query-Options": f"batchSize={batch_size}"}
        path = QUERY_ALL_PATH if include_deleted else QUERY_PATH
        first = await self._session.request_model(log, path, RecordsPage, params={"q": soql}, headers=headers)
        result: QueryResult[R] = QueryResult(first.totalSize)
        result.records = self._records(log, soql, first, transform, headers)
        return result

    async def query[R](self, log: Logger, soql: str, transform: RecordTransform[R], *,
                       include_deleted: bool, batch_size: int = BATCH_SIZE) -> AsyncGenerator[R, None]:
        """Every record of `soql`, as `open(...).records` yields them."""
        result = await self.open(log, soql, transform, include_deleted=include_deleted, batch_size=batch_size)
        async for record in result.records:
            yield record

    async def _records[R](self, log: Logger, soql: str, page: RecordsPage, transform: RecordTransform[R],
                          headers: dict[str, str]) -> AsyncGenerator[R, None]:
        received = 0
        while True:
            for record in page.records:
                record.pop("attributes", None)
                yield transform(record)
            received += len(page.records)
            if page.done or page.nextRecordsUrl is None:
                break
            page = await self._session.request_model(log, page.nextRecordsUrl, RecordsPage, headers=dict(headers))
        if received != page.totalSize:
            raise RestCountMismatchError(soql, page.totalSize, received)
