"""What a cell does to the org while the capture runs, so the delta stream must carry it.

Every cell makes the same ordinary changes, once, at the capture's first checkpoint (the
backfills have started, and every delta cursor is at most `floor(now) - lag`): on each
incremental object two inserts, one update of a text field with awkward characters and
one soft delete. Two scenarios add their own change:

- **burst**: `BURST_ROWS` Account rows sharing one SystemModstamp (a mass update), more
  than the delta stream's Bulk threshold, so its window goes through Bulk queryAll;
- **late commit**: an Opportunity insert and an Opportunity update stamped at the start of
  their transaction and visible `LATE_COMMIT_SECONDS` later, inside the delta lag, so
  only a connector that keeps the lag captures them.

Every change is stamped `floor(now)`, after every delta cursor and after the backfill's
cutoff, so only the delta stream can capture it.

The snapshot object changes before the first session instead (an insert, an update and a
hard delete), and its binding keeps the interval discovery gives it (an hour): a cell must
complete one pass of it, as issue 7's operator never saw. A snapshot pass cannot be resumed
(the CDK gives it no state), so with a pass every second, every restart would throw one
away, whatever the connector did.
"""

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from itertools import islice

from tests.emulator import Org

# The objects the delta stream reads (they have a cursor field), and the snapshot object.
INCREMENTAL = ("Account", "AccountHistory", "Attachment", "BenchRecord__c", "CaseStatus", "Contact", "Invoice__c",
               "Opportunity")
SNAPSHOT = "UserRole"

# A text field per object for updates, and a value that is hard to carry through CSV and JSON.
TEXT_FIELD = {"Account": "Name", "Attachment": "Name", "BenchRecord__c": "Name", "CaseStatus": "MasterLabel",
              "Contact": "LastName", "Invoice__c": "Notes__c", "Opportunity": "Name", "UserRole": "Name"}
TRICKY = 'Zürich, "HQ"\nline 2, 🚀 \'quoted\''

# Objects whose deletions the delta stream cannot see: CaseStatus has no IsDeleted (a deleted
# row leaves queryAll), AccountHistory is append-only (a deletion does not move CreatedDate).
NOT_DELETED = frozenset({"CaseStatus", "AccountHistory"})
APPEND_ONLY = frozenset({"AccountHistory"})

# Issue 7: "5,000 rows in one second". Above the delta stream's Bulk threshold (cells run with
# its minimum, 2,000), so the window holding them is exported by Bulk queryAll.
BURST_ROWS = 5_000
BURST_OBJECT = "Account"

# A late commit becomes visible this long after its stamp: later than the stamp's second, but
# inside the cells' 2 s delta lag, so a connector reading up to `floor(now) - lag` sees it.
LATE_COMMIT_SECONDS = 1.5
LATE_OBJECT = "Opportunity"


def change_snapshot_object(org: Org, obj: str) -> datetime:
    """Change a snapshot object; returns when (a pass starting later sees the change)."""
    roles = first_ids(org, obj, 3)
    org.insert(obj)
    org.update(obj, roles[1], {TEXT_FIELD[obj]: TRICKY})
    org.delete(obj, roles[2])
    return datetime.now(tz=UTC)


def make_changes(org: Org, objects: Iterable[str], *, burst: bool, late_commit: bool) -> datetime:
    """Change the incremental `objects` as the module docstring says, once the capture has
    started; returns the stamp of the changes (every delta cursor must reach it)."""
    now = datetime.now(tz=UTC)
    stamp = now.replace(microsecond=0)
    for obj in objects:
        live = first_ids(org, obj, 3)
        for _ in range(2):
            org.insert(obj, system_modstamp=stamp)
        if obj in APPEND_ONLY:
            continue
        org.update(obj, live[1], {TEXT_FIELD[obj]: TRICKY}, system_modstamp=stamp)
        if obj not in NOT_DELETED:
            org.delete(obj, live[2], at=stamp)
    if burst:
        org.burst(BURST_OBJECT, BURST_ROWS, stamp)
    if late_commit:
        visible_at = stamp + timedelta(seconds=LATE_COMMIT_SECONDS)
        seeded = first_ids(org, LATE_OBJECT, 4)[3]
        org.insert(LATE_OBJECT, {"Name": "late insert"}, system_modstamp=stamp, visible=False, visible_at=visible_at)
        org.update(LATE_OBJECT, seeded, {"Name": "late update"}, system_modstamp=stamp, visible=False,
                   visible_at=visible_at)
    return stamp


def first_ids(org: Org, obj: str, count: int) -> list[str]:
    """The Ids of the first `count` live rows of `obj` (lazily: Account may be large)."""
    return [str(row["Id"]) for row in islice(org.iter_rows(obj), count)]
