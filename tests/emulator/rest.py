"""REST ``query`` / ``queryAll`` and their cursors (salesforce-api.md §5.1).

A query is answered from one snapshot; if it does not fit in one page, a cursor keeps the
result and ``nextRecordsUrl`` (``/services/data/vNN.N/query/<cursorId>-<offset>``) points
at the next page. The client follows it verbatim; the cursor remembers whether it came
from queryAll. Cursors are dropped oldest-first beyond ``MAX_CURSORS`` (Salesforce keeps
them 2 days); a dropped or made-up locator answers 400 INVALID_QUERY_LOCATOR.
"""

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from .binding import Bound, bind
from .errors import ApiError
from .ids import record_id
from .org import Org
from .pages import json_records
from .results import Position, ResultSet
from .soql import UNSUPPORTED_PREFIX, Aggregate, Construct, SoqlError, located, parse

DEFAULT_BATCH_SIZE = 2000
MIN_BATCH_SIZE = 200
MAX_CURSORS = 1000
_BATCH_SIZE = re.compile(r"batchSize\s*=\s*(\d+)", re.IGNORECASE)


def batch_size(query_options: str | None) -> int:
    """Rows per page from ``Sforce-Query-Options: batchSize=N``: default 2,000, clamped
    to 200..2,000 (§5.1)."""
    match = _BATCH_SIZE.search(query_options or "")
    if match is None:
        return DEFAULT_BATCH_SIZE
    return max(MIN_BATCH_SIZE, min(DEFAULT_BATCH_SIZE, int(match.group(1))))


def bind_rest(org: Org, text: str) -> Bound:
    """Parse and check a REST query. REST accepts everything the SOQL subset parses except
    aggregates other than a bare ``COUNT()``, GROUP BY, TYPEOF, subqueries and FIELDS(),
    which the emulator does not implement."""
    try:
        bound = bind(org, parse(text))
    except SoqlError as error:
        raise ApiError.from_soql(error) from None
    query = bound.query
    for item in query.select:
        if isinstance(item, Construct) or (isinstance(item, Aggregate) and not query.count_only):
            what = item.name if isinstance(item, Construct) else f"{item.function}() here"
            raise ApiError(400, "MALFORMED_QUERY", located(text, item.pos, f"{UNSUPPORTED_PREFIX} {what}"))
    if query.group_by:
        raise ApiError(
            400, "MALFORMED_QUERY", located(text, query.group_by[0].pos, f"{UNSUPPORTED_PREFIX} GROUP BY")
        )
    return bound


class QueryResponse(BaseModel):
    """A REST query page (§5.1); ``nextRecordsUrl`` only while ``done`` is false."""

    totalSize: int
    done: bool
    nextRecordsUrl: str | None = None
    records: list[dict[str, Any]]


@dataclass
class Cursor:
    result: ResultSet
    # The page start behind every offset handed out in a nextRecordsUrl.
    positions: dict[int, Position] = field(default_factory=dict)


class CursorStore:
    """Open REST query cursors. Used only from the server's event-loop thread."""

    def __init__(self) -> None:
        self._cursors: OrderedDict[str, Cursor] = OrderedDict()
        self._opened = 0

    def first_page(self, result: ResultSet, rows: int, api_version: str) -> QueryResponse:
        """The response to ``query``/``queryAll``: the first page, plus a cursor if more."""
        if result.bound.query.count_only:
            return QueryResponse(totalSize=result.count(), done=True, records=[])
        cursor_id = record_id("01g", self._opened + 1)
        cursor = Cursor(result)
        body = self._page(cursor_id, cursor, result.start(), rows, api_version)
        if not body.done:
            self._opened += 1
            self._cursors[cursor_id] = cursor
            while len(self._cursors) > MAX_CURSORS:
                self._cursors.popitem(last=False)
        return body

    def next_page(self, locator: str, rows: int, api_version: str) -> QueryResponse:
        """The response to ``GET /query/<cursorId>-<offset>``."""
        cursor_id, _, offset = locator.rpartition("-")
        cursor = self._cursors.get(cursor_id)
        position = cursor.positions.get(int(offset)) if cursor and offset.isdigit() else None
        if cursor is None or position is None:
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(cursor_id, cursor, position, rows, api_version)

    @staticmethod
    def _page(
        cursor_id: str, cursor: Cursor, position: Position, rows: int, api_version: str
    ) -> QueryResponse:
        page = cursor.result.page(position, rows)
        next_url = None
        if page.next is not None:
            cursor.positions[page.next.emitted] = page.next
            next_url = f"/services/data/v{api_version}/query/{cursor_id}-{page.next.emitted}"
        # Built without validation: the records are the emulator's own output.
        return QueryResponse.model_construct(
            totalSize=cursor.result.count(),
            done=next_url is None,
            nextRecordsUrl=next_url,
            records=json_records(cursor.result, page, api_version),
        )
