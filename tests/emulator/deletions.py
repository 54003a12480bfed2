"""The deletion log behind getDeleted (salesforce-api.md §5.1, §5.3).

Salesforce keeps, per object, a log of the records deleted in the last 15 days, apart from
the rows themselves: a soft delete (to the recycle bin), a hard delete (Bulk
``hardDelete``, which bypasses the bin) and a delete on an object without ``IsDeleted``
all add an entry ``(id, deletedDate)``; emptying the recycle bin removes rows from
``queryAll`` but leaves their entries. Entries older than the retention are gone, and the
log may be purged earlier (every 2 h once it exceeds 5,000 × licenses entries); either way
``earliestDateAvailable`` moves forward, and a window starting before it is answered
``INVALID_REPLICATION_DATE``, Salesforce's "do a full pull".

``DeletionLog.window`` is the whole getDeleted contract, in Python: the HTTP handler only
parses the parameters and renders the result. The choices where the documentation is
unsure are listed in the emulator's README; in short:

- ``start`` and ``end`` are truncated to the minute (seconds ignored, §5.3);
- the truncated ``end`` must be *more than* one minute after the truncated ``start`` (the
  SOAP doc's wording; the REST doc only says "precede"), so a window spans at least two
  whole minutes: a client that copes with this copes with the laxer reading too;
- ``latestDateCovered`` is the truncated ``end``, but never later than the current minute
  (now truncated): an ``end`` in the future is not refused, only cut at now;
- listed: entries with ``start <= deletedDate < latestDateCovered``, oldest first, so the
  next window starts at ``latestDateCovered`` with nothing skipped and nothing repeated;
- an entry is kept while it is younger than the retention (15 days), like its row in the
  recycle bin; ``earliestDateAvailable`` is the first whole minute after "now minus the
  retention", or the newest purge boundary rounded up to a minute if that is later, so
  every entry at or after it is still kept. A ``start`` before it, or after the current
  minute, is ``INVALID_REPLICATION_DATE``;
- more than ``id_limit`` entries in the window is ``EXCEEDED_ID_LIMIT``.
"""

import bisect
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .wire import json_datetime

# Salesforce keeps deletion-log entries this long (§5.3: "at most 15 days back").
DELETION_LOG_RETENTION = timedelta(days=15)
# A soft-deleted row stays in the recycle bin, visible to queryAll, this long (§5.1).
RECYCLE_BIN_RETENTION = timedelta(days=15)
# After emptyRecycleBin, the emptied rows stay visible to queryAll for about a day (§5.1).
QUERY_ALL_AFTER_EMPTYING = timedelta(hours=24)
# getDeleted answers at most this many ids per call (EXCEEDED_ID_LIMIT beyond, §5.3).
DELETED_ID_LIMIT = 600_000
# The truncated end must be more than this after the truncated start (SOAP doc, §5.3).
MIN_WINDOW_EXCLUSIVE = timedelta(minutes=1)
ONE_MINUTE = timedelta(minutes=1)


def floor_minute(instant: datetime) -> datetime:
    """``instant`` with seconds and microseconds dropped (how getDeleted reads bounds)."""
    return instant.replace(second=0, microsecond=0)


def ceil_minute(instant: datetime) -> datetime:
    """The first whole minute at or after ``instant``."""
    floor = floor_minute(instant)
    return floor if floor == instant else floor + ONE_MINUTE


@dataclass(frozen=True, slots=True, order=True)
class Deletion:
    """One deletion-log entry. Ordered by (deleted_at, id): the order getDeleted lists them."""

    deleted_at: datetime
    id: str


@dataclass(frozen=True, slots=True)
class DeletedRecords:
    """A getDeleted answer: ``records`` deleted in [start, latest_covered)."""

    records: list[Deletion]
    earliest_available: datetime
    latest_covered: datetime


class ReplicationError(Exception):
    """A getDeleted request Salesforce refuses (HTTP 400 with this errorCode)."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(f"{error_code}: {message}")
        self.error_code = error_code
        self.message = message


@dataclass
class DeletionLog:
    """One object's deletion log. Not thread-safe: the ``Org``'s lock guards it."""

    _entries: list[Deletion] = field(default_factory=list)  # sorted
    # Entries deleted before this instant were purged early (purge_before).
    _purged_before: datetime | None = None

    def record(self, record: str, at: datetime) -> None:
        bisect.insort(self._entries, Deletion(at, record))

    def forget(self, record: str) -> None:
        """Drop every entry of ``record`` (it was restored from the recycle bin)."""
        self._entries = [d for d in self._entries if d.id != record]

    def purge_before(self, before: datetime) -> None:
        """Drop the entries deleted before ``before``; the log then starts there."""
        self._entries = self._entries[self._first_at(before) :]
        if self._purged_before is None or before > self._purged_before:
            self._purged_before = before

    def earliest_available(self, now: datetime) -> datetime:
        """The first minute from which the log is complete as of ``now``: the first whole
        minute after the retention horizon, or the purge boundary if that is later."""
        earliest = floor_minute(now - DELETION_LOG_RETENTION) + ONE_MINUTE
        if self._purged_before is not None:
            earliest = max(earliest, ceil_minute(self._purged_before))
        return earliest

    def retained(self, now: datetime) -> list[Deletion]:
        """Every entry still in the log as of ``now``, oldest first: an entry is kept for
        ``DELETION_LOG_RETENTION``, as long as the recycle bin keeps its row."""
        return [d for d in self._entries if now < d.deleted_at + DELETION_LOG_RETENTION]

    def window(self, start: datetime, end: datetime, now: datetime, id_limit: int) -> DeletedRecords:
        """getDeleted over [start, end) as of ``now``, following the rules in the module
        docstring; raises ``ReplicationError`` for a window Salesforce refuses."""
        start, end, current = floor_minute(start), floor_minute(end), floor_minute(now)
        first, last = json_datetime(start), json_datetime(end)
        if end - start <= MIN_WINDOW_EXCLUSIVE:
            raise ReplicationError(
                "INVALID_REPLICATION_DATE",
                f"endDate ({last}) must be more than one minute after startDate ({first}) "
                "(seconds are ignored)",
            )
        earliest = self.earliest_available(now)
        if start < earliest:
            raise ReplicationError(
                "INVALID_REPLICATION_DATE",
                f"startDate ({first}) is before earliestDateAvailable ({json_datetime(earliest)}): "
                "the deletions before it are no longer available",
            )
        if start > current:
            future = f"startDate ({first}) is in the future ({json_datetime(now)})"
            raise ReplicationError("INVALID_REPLICATION_DATE", future)
        latest = min(end, current)
        records = self._entries[self._first_at(start) : self._first_at(latest)]
        if len(records) > id_limit:
            raise ReplicationError(
                "EXCEEDED_ID_LIMIT",
                f"{len(records)} records were deleted in this window, more than the {id_limit} "
                "getDeleted can return: narrow the window",
            )
        return DeletedRecords(records, earliest, latest)

    def _first_at(self, instant: datetime) -> int:
        """The index of the first entry deleted at or after ``instant``."""
        return bisect.bisect_left(self._entries, Deletion(instant, ""))
