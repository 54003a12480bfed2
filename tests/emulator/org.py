"""The org's data: seeded rows plus a versioned mutation overlay (``tables.py``).

Row ``i`` of an object is a pure function of (object, seed, i) until a test mutates it.
Mutations never rewrite anything: each one appends a ``RowVersion`` stamped with a new
org-wide version number. A ``Snapshot`` (version, instant) therefore fixes what every
query sees forever after, which is how a Bulk job's result pages stay identical however
the org changes after the job completed (§4.6: a locator can be re-fetched).

Values are held in one typed form (see ``wire.py``): bool, int, float, str,
``datetime.date``, timezone-aware UTC ``datetime`` with whole seconds (Salesforce stores
datetimes to the second, §3.3), bytes for base64, a dict for compound address fields.

Deletions (``delete``, ``hard_delete``, ``empty_recycle_bin``, ``undelete``) are versions
too, and each is also written to the object's ``DeletionLog`` (``deletions.py``), which
getDeleted reads: a soft-deleted row stays visible to queryAll for the recycle bin's 15
days, a hard-deleted one is seen by nobody, and the log outlives both.

The Python API here is what tests use as the truth. It is thread-safe: tests mutate from
their own thread while the server reads from its event-loop thread.
"""

import dataclasses
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta

from .catalog import build_catalog
from .clock import Clock, SystemClock
from .deletions import (
    DELETED_ID_LIMIT,
    QUERY_ALL_AFTER_EMPTYING,
    RECYCLE_BIN_RETENTION,
    DeletedRecords,
    Deletion,
    DeletionLog,
)
from .ids import record_id, record_index
from .schema import FieldType, ObjectSpec
from .seeding import OrgConfig
from .tables import ObjectTable, Row, RowVersion, Snapshot
from .wire import document_value

AUDIT_STAMPS = ("CreatedDate", "LastModifiedDate", "SystemModstamp")


class Org:
    def __init__(self, config: OrgConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or OrgConfig()
        self.clock: Clock = clock or SystemClock()
        self._tables = {
            seeded.spec.name.lower(): ObjectTable(seeded.spec, seeded.rows)
            for seeded in build_catalog(self.config)
        }
        self._deletions = {name: DeletionLog() for name in self._tables}
        self._version = 0
        self._lock = threading.RLock()

    # -- schema -----------------------------------------------------------------------

    @property
    def objects(self) -> list[ObjectSpec]:
        return [t.spec for t in self._tables.values()]

    def table(self, name: str) -> ObjectTable:
        """The table of object ``name`` (case-insensitive); ``KeyError`` if unknown."""
        return self._tables[name.lower()]

    def spec(self, name: str) -> ObjectSpec:
        return self.table(name).spec

    def set_replicateable(self, obj: str, replicateable: bool) -> None:
        """Override describe's ``replicateable`` for ``obj`` (whether getDeleted serves it)."""
        table = self.table(obj)
        with self._lock:
            table.spec = dataclasses.replace(table.spec, replicateable=replicateable)

    # -- reading ----------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(self._version, self.clock.now())

    def overlay(
        self, table: ObjectTable, snapshot: Snapshot, include_hidden: bool = False
    ) -> dict[int, RowVersion]:
        with self._lock:
            return table.overlay(snapshot, include_hidden)

    def iter_rows(
        self, obj: str, include_deleted: bool = False, include_hidden: bool = False
    ) -> Iterator[Row]:
        """Rows as the API would show them now, in Id order: soft-deleted rows only with
        ``include_deleted`` (queryAll's view), late rows only with ``include_hidden``.
        Lazy: safe to start on a ten-million-row object."""
        table = self.table(obj)
        snapshot = self.snapshot()
        overlay = self.overlay(table, snapshot, include_hidden)
        source = table.source(snapshot)
        for i in range(table.next_index):
            v = overlay.get(i)
            if v is None:
                if i < table.seeded:
                    yield source.row(i)
            elif not v.purged and (include_deleted or not v.deleted):
                yield source.row(i, v.overrides)

    def live_rows(self, obj: str) -> list[Row]:
        """The rows ``query`` returns: visible and not deleted, in Id order."""
        return list(self.iter_rows(obj))

    def all_rows(self, obj: str, include_deleted: bool = True, include_hidden: bool = False) -> list[Row]:
        """The rows ``queryAll`` returns (with ``include_deleted``), in Id order."""
        return list(self.iter_rows(obj, include_deleted, include_hidden))

    def row(self, obj: str, record: str) -> Row | None:
        """One row by Id, deleted or not, as visible now; None if it does not exist."""
        table = self.table(obj)
        index = record_index(table.spec.key_prefix, record)
        snapshot = self.snapshot()
        v = self.overlay(table, snapshot).get(index)
        if v is None:
            return table.source(snapshot).row(index) if index < table.seeded else None
        return None if v.purged else table.source(snapshot).row(index, v.overrides)

    def expected_documents(self, obj: str, include_deleted: bool = False) -> list[Row]:
        """``expected_document`` of every row ``iter_rows`` yields."""
        spec = self.spec(obj)
        return [expected_document(spec, r) for r in self.iter_rows(obj, include_deleted)]

    # -- mutating ---------------------------------------------------------------------

    def insert(
        self,
        obj: str,
        values: Mapping[str, object] | None = None,
        *,
        system_modstamp: datetime | None = None,
        visible: bool = True,
        visible_at: datetime | None = None,
    ) -> str:
        """Create a row and return its Id. Its audit timestamps (CreatedDate,
        LastModifiedDate, SystemModstamp: those the object has) are ``system_modstamp``
        (default: now); fields not in ``values`` get generated values. With
        ``visible=False`` the row is a late commit: no query sees it until
        ``make_visible`` or until the clock reaches ``visible_at``."""
        return self.burst(obj, 1, system_modstamp, values, visible=visible, visible_at=visible_at)[0]

    def burst(
        self,
        obj: str,
        n: int,
        system_modstamp: datetime | None = None,
        values: Mapping[str, object] | None = None,
        *,
        visible: bool = True,
        visible_at: datetime | None = None,
    ) -> list[str]:
        """Insert ``n`` rows that share one SystemModstamp (a mass update or import)."""
        table = self.table(obj)
        stamp = self._stamp(system_modstamp)
        overrides = {**self._stamps(table.spec, AUDIT_STAMPS, stamp), **self._checked(table.spec, values)}
        with self._lock:
            version = RowVersion(self._next_version(), overrides, hidden=not visible, visible_at=visible_at)
            first = table.next_index
            table.next_index += n
            for index in range(first, first + n):
                table.history[index] = [version]
        return [record_id(table.spec.key_prefix, index) for index in range(first, first + n)]

    def update(
        self,
        obj: str,
        record: str,
        values: Mapping[str, object] | None = None,
        *,
        system_modstamp: datetime | None = None,
        visible: bool = True,
        visible_at: datetime | None = None,
    ) -> None:
        """Change fields of a row; SystemModstamp and LastModifiedDate become
        ``system_modstamp`` (default: now) unless ``values`` sets them. ``visible`` and
        ``visible_at`` make it a late commit, as for ``insert``."""
        table = self.table(obj)
        stamp = self._stamp(system_modstamp)
        with self._lock:
            index, current = self._live(table, record)
            overrides = {
                **(current.overrides if current else {}),
                **self._stamps(table.spec, ("LastModifiedDate", "SystemModstamp"), stamp),
                **self._checked(table.spec, values),
            }
            self._append(
                table,
                index,
                RowVersion(self._next_version(), overrides, hidden=not visible, visible_at=visible_at),
            )

    def delete(self, obj: str, record: str, *, at: datetime | None = None) -> None:
        """Soft-delete a row at ``at`` (default: now): IsDeleted becomes true and
        SystemModstamp ``at``; only queryAll sees it, until the recycle bin drops it 15
        days after ``at`` (or ``empty_recycle_bin``). Objects without IsDeleted lose the row
        at once. Either way the deletion log records (Id, ``at``)."""
        table = self.table(obj)
        stamp = self._stamp(at)
        with self._lock:
            index, current = self._live(table, record)
            overrides = dict(current.overrides) if current else {}
            if table.spec.field("IsDeleted") is None:
                version = RowVersion(self._next_version(), overrides, purged=True)
            else:
                overrides |= {**self._stamps(table.spec, ("SystemModstamp",), stamp), "IsDeleted": True}
                gone_at = stamp + RECYCLE_BIN_RETENTION
                version = RowVersion(self._next_version(), overrides, deleted=True, gone_at=gone_at)
            self._append(table, index, version)
            self._log(table).record(record_id(table.spec.key_prefix, index), stamp)

    def hard_delete(self, obj: str, record: str, *, at: datetime | None = None) -> None:
        """Delete a row past the recycle bin, as Bulk ``hardDelete`` does: no query,
        queryAll or Bulk job sees it from now on; the deletion log records (Id, ``at``,
        default now)."""
        table = self.table(obj)
        stamp = self._stamp(at)
        with self._lock:
            index, current = self._live(table, record)
            overrides = current.overrides if current else {}
            self._append(table, index, RowVersion(self._next_version(), overrides, purged=True))
            self._log(table).record(record_id(table.spec.key_prefix, index), stamp)

    def empty_recycle_bin(
        self,
        obj: str,
        ids: Iterable[str] | None = None,
        *,
        at: datetime | None = None,
        query_all_grace: timedelta = QUERY_ALL_AFTER_EMPTYING,
    ) -> list[str]:
        """Remove soft-deleted rows of ``obj`` from the recycle bin (all of them, or
        ``ids``) at ``at`` (default: now) and return their Ids. queryAll still sees
        them until ``at + query_all_grace`` (about a day in Salesforce; pass
        ``timedelta(0)`` for rows that vanish at once); their deletion-log entries stay.
        ``ValueError`` if one of ``ids`` is not in the bin."""
        table = self.table(obj)
        stamp = self._stamp(at)
        with self._lock:
            now = self.clock.now()
            in_bin = {i: v[-1] for i, v in table.history.items() if _in_recycle_bin(v[-1], now)}
            if ids is None:
                indices = sorted(in_bin)
            else:
                indices = [record_index(table.spec.key_prefix, record) for record in ids]
                if missing := [i for i in indices if i not in in_bin]:
                    raise ValueError(f"not in the recycle bin: {missing}")
            for index in indices:
                current = in_bin[index]
                gone_at = stamp + query_all_grace
                if current.gone_at is not None:
                    gone_at = min(gone_at, current.gone_at)
                version = self._next_version()
                emptied = RowVersion(version, current.overrides, deleted=True, gone_at=gone_at, emptied=True)
                self._append(table, index, emptied)
        return [record_id(table.spec.key_prefix, index) for index in indices]

    def undelete(
        self, obj: str, record: str, *, at: datetime | None = None, keep_log_entry: bool = False
    ) -> None:
        """Restore a row from the recycle bin at ``at`` (default: now): IsDeleted becomes
        false, LastModifiedDate and SystemModstamp ``at``. Its deletion-log entry is
        dropped, unless ``keep_log_entry`` (Salesforce does not say which; see README)."""
        table = self.table(obj)
        stamp = self._stamp(at)
        with self._lock:
            index, current = self._current(table, record)
            if current is None or not _in_recycle_bin(current, self.clock.now()):
                raise ValueError(f"{record} is not in the recycle bin")
            overrides = {
                **current.overrides,
                **self._stamps(table.spec, ("LastModifiedDate", "SystemModstamp"), stamp),
                "IsDeleted": False,
            }
            self._append(table, index, RowVersion(self._next_version(), overrides))
            if not keep_log_entry:
                self._log(table).forget(record_id(table.spec.key_prefix, index))

    # -- the deletion log (getDeleted) ------------------------------------------------

    def purge_deletion_log(self, obj: str, before: datetime | None = None) -> None:
        """Purge ``obj``'s deletion log early, as Salesforce does every 2 h once it holds
        more than 5,000 × licenses entries: entries deleted before ``before`` (default:
        now) are gone and earliestDateAvailable moves up to it."""
        stamp = self._stamp(before)
        with self._lock:
            self._log(self.table(obj)).purge_before(stamp)

    def deletion_log(self, obj: str) -> list[Deletion]:
        """Every deletion-log entry of ``obj`` still kept now, oldest first."""
        with self._lock:
            return self._log(self.table(obj)).retained(self.clock.now())

    def get_deleted(
        self, obj: str, start: datetime, end: datetime, *, id_limit: int = DELETED_ID_LIMIT
    ) -> DeletedRecords:
        """What getDeleted answers now for [start, end) (rules in ``deletions.py``);
        raises ``ReplicationError`` where Salesforce answers 400."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        with self._lock:
            return self._log(self.table(obj)).window(start, end, self.clock.now(), id_limit)

    def make_visible(self, obj: str, record: str) -> None:
        """Commit a late row (or late update) now, keeping its old timestamps."""
        table = self.table(obj)
        with self._lock:
            index, current = self._current(table, record)
            if current is None or not current.hidden:
                raise ValueError(f"{record} has no hidden change")
            version = self._next_version()
            committed = dataclasses.replace(current, version=version, hidden=False, visible_at=None)
            self._append(table, index, committed)

    def bump_formula_epoch(self, obj: str) -> int:
        """Change the output of every formula field of ``obj`` without touching any row's
        SystemModstamp (as when a formula's inputs on other records change, §6.2).
        Returns the new epoch."""
        table = self.table(obj)
        with self._lock:
            epoch = table.formula_epochs[-1][1] + 1
            table.formula_epochs.append((self._next_version(), epoch))
            return epoch

    # -- internals --------------------------------------------------------------------

    def _next_version(self) -> int:
        self._version += 1
        return self._version

    def _stamp(self, at: datetime | None) -> datetime:
        at = at or self.clock.now()
        if at.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return at.astimezone(UTC).replace(microsecond=0)

    @staticmethod
    def _stamps(spec: ObjectSpec, names: tuple[str, ...], stamp: datetime) -> Row:
        return {name: stamp for name in names if spec.field(name) is not None}

    @staticmethod
    def _checked(spec: ObjectSpec, values: Mapping[str, object] | None) -> Row:
        """Values keyed by their canonical field names; datetimes truncated to seconds."""
        checked: Row = {}
        for name, value in (values or {}).items():
            f = spec.field(name)
            if f is None or f.gen is None or f.type is FieldType.ID:
                raise ValueError(f"{spec.name}.{name} is not a stored, writable field")
            if isinstance(value, datetime):
                value = value.astimezone(UTC).replace(microsecond=0)
            checked[f.name] = None if value == "" else value  # Salesforce stores "" as null
        return checked

    def _current(self, table: ObjectTable, record: str) -> tuple[int, RowVersion | None]:
        """The row's index and latest version (hidden or not); ``KeyError`` if absent."""
        index = record_index(table.spec.key_prefix, record)
        versions = table.history.get(index)
        if versions is None and index >= table.seeded:
            raise KeyError(record)
        current = versions[-1] if versions else None
        if current is not None and current.purged:
            raise KeyError(record)
        return index, current

    def _live(self, table: ObjectTable, record: str) -> tuple[int, RowVersion | None]:
        """Like ``_current``, but ``ValueError`` if the row is deleted."""
        index, current = self._current(table, record)
        if current is not None and current.deleted:
            raise ValueError(f"{record} is deleted")
        return index, current

    def _log(self, table: ObjectTable) -> DeletionLog:
        return self._deletions[table.spec.name.lower()]

    @staticmethod
    def _append(table: ObjectTable, index: int, version: RowVersion) -> None:
        table.history.setdefault(index, []).append(version)


def _in_recycle_bin(version: RowVersion, now: datetime) -> bool:
    """Whether a row whose latest version is ``version`` is in the recycle bin at ``now``."""
    return version.deleted and not (version.purged or version.emptied or version.hidden or version.gone(now))


def expected_document(spec: ObjectSpec, row: Mapping[str, object]) -> Row:
    """The document the connector must capture for ``row`` (internals.md "Documents"):
    every field except compound (address) and base64 fields, which exports leave out,
    with values as ``wire.document_value`` renders them. The connector adds ``_meta``;
    a row with ``IsDeleted: true`` is captured as a deletion."""
    return {
        f.name: document_value(row[f.name])
        for f in spec.fields
        if not f.compound and f.type is not FieldType.BASE64
    }
