"""The org's data: seeded rows plus a versioned mutation overlay.

Row ``i`` of an object is a pure function of (object, seed, i) until a test mutates it.
Mutations never rewrite anything: each one appends a ``RowVersion`` stamped with a new
org-wide version number. A ``Snapshot`` (version, instant) therefore fixes what every
query sees forever after, which is how a Bulk job's result pages stay identical however
the org changes after the job completed (§4.6: a locator can be re-fetched).

Values are held in one typed form (see ``wire.py``): bool, int, float, str,
``datetime.date``, timezone-aware UTC ``datetime`` with whole seconds (Salesforce stores
datetimes to the second, §3.3), bytes for base64, a dict for compound address fields.

The Python API here is what tests use as the truth. It is thread-safe: tests mutate from
their own thread while the server reads from its event-loop thread.
"""

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .catalog import build_catalog
from .clock import Clock, SystemClock
from .ids import record_id, record_index
from .schema import FieldSpec, FieldType, ObjectSpec
from .seeding import OrgConfig
from .wire import csv_cell, document_value

type Row = dict[str, object]
type ValueByName = Callable[[str], object]
AUDIT_STAMPS = ("CreatedDate", "LastModifiedDate", "SystemModstamp")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a reader sees: mutations up to ``version``, late rows visible as of ``at``."""

    version: int
    at: datetime


@dataclass(frozen=True, slots=True)
class RowVersion:
    version: int
    # Stored field values replacing the generated ones (cumulative over versions).
    overrides: Mapping[str, object]
    deleted: bool = False  # soft-deleted: IsDeleted = true, seen by queryAll only
    purged: bool = False  # hard-deleted (objects without IsDeleted): seen by nobody
    # A late commit: invisible until make_visible() or until the clock reaches visible_at.
    hidden: bool = False
    visible_at: datetime | None = None

    def visible(self, at: datetime) -> bool:
        return not self.hidden or (self.visible_at is not None and at >= self.visible_at)


class RowSource:
    """Reads rows of one object as of one formula epoch (part of a snapshot)."""

    def __init__(self, spec: ObjectSpec, epoch: int) -> None:
        self.spec = spec
        self.epoch = epoch

    def value(self, f: FieldSpec, i: int) -> object:
        """The value of field ``f`` on seeded row ``i``."""
        if f.gen is not None:
            return f.gen.value(i)
        return self._derived(f, lambda name: self.value(self._field(name), i))

    def cells(self, f: FieldSpec, indices: range | list[int]) -> list[str]:
        """The CSV cells of field ``f`` on seeded rows ``indices``."""
        if f.gen is not None:
            return f.gen.cells(indices)
        return [csv_cell(self.value(f, i)) for i in indices]

    def pieces(self, f: FieldSpec, rows: range) -> list[Iterable[str]]:
        """Lazy streams whose per-row concatenation is ``self.cells(f, rows)``."""
        if f.gen is not None:
            return f.gen.pieces(rows)
        return [self.cells(f, rows)]

    def period(self, f: FieldSpec) -> int | None:
        """``f``'s value on seeded row ``i`` is its value on row ``i % period``; None
        when ``f`` is not periodic (see ``generators.py``)."""
        return f.gen.period if f.gen is not None else None

    def cell_at(self, f: FieldSpec, residue: int) -> str:
        """The CSV cell of periodic field ``f`` on every row ``i`` with
        ``i % period == residue``."""
        return csv_cell(self.value(f, residue))

    def row(self, i: int, overrides: Mapping[str, object] | None = None) -> Row:
        """Every field of row ``i``: generated values, then overrides, then derived fields."""
        stored: Row = {f.name: f.gen.value(i) for f in self.spec.fields if f.gen is not None}
        if overrides:
            stored.update(overrides)
        return {
            f.name: stored[f.name] if f.gen is not None else self._derived(f, stored.__getitem__)
            for f in self.spec.fields
        }

    def _field(self, name: str) -> FieldSpec:
        f = self.spec.field(name)
        assert f is not None, name
        return f

    def _derived(self, f: FieldSpec, get: ValueByName) -> object:
        if f.formula is not None:
            return f.formula.compute(tuple(get(n) for n in f.formula.inputs), self.epoch)
        if f.compound:
            return {key: get(component) for key, component in f.components}
        raise AssertionError(f"{f.name} is neither stored nor derived")


@dataclass
class ObjectTable:
    """One object's rows: ``seeded`` generated rows, then rows inserted by tests."""

    spec: ObjectSpec
    seeded: int
    next_index: int = field(init=False)  # the index the next inserted row gets
    history: dict[int, list[RowVersion]] = field(default_factory=dict)  # mutated rows only
    # (org version, epoch) pairs: the formula epoch in force from each version on.
    formula_epochs: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)])

    def __post_init__(self) -> None:
        self.next_index = self.seeded

    def epoch_at(self, snapshot: Snapshot) -> int:
        return [epoch for version, epoch in self.formula_epochs if version <= snapshot.version][-1]

    def source(self, snapshot: Snapshot) -> RowSource:
        return RowSource(self.spec, self.epoch_at(snapshot))

    def overlay(self, snapshot: Snapshot, include_hidden: bool = False) -> dict[int, RowVersion]:
        """The effective version of every mutated row as of ``snapshot``: its newest
        version that is visible then (late commits may hide the newest ones). A row with no
        visible version is absent from the result: a seeded row then shows its generated
        values, an inserted row does not exist yet."""
        overlay: dict[int, RowVersion] = {}
        for index, versions in self.history.items():
            for v in reversed(versions):
                if v.version <= snapshot.version and (include_hidden or v.visible(snapshot.at)):
                    overlay[index] = v
                    break
        return overlay


class Org:
    def __init__(self, config: OrgConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or OrgConfig()
        self.clock: Clock = clock or SystemClock()
        self._tables = {
            seeded.spec.name.lower(): ObjectTable(seeded.spec, seeded.rows)
            for seeded in build_catalog(self.config)
        }
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
            index, current = self._current(table, record)
            if current is not None and current.deleted:
                raise ValueError(f"{record} is deleted")
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
        """Soft-delete a row: IsDeleted becomes true and SystemModstamp ``at`` (default:
        now); only queryAll sees it from then on. Objects without IsDeleted lose the row."""
        table = self.table(obj)
        stamp = self._stamp(at)
        with self._lock:
            index, current = self._current(table, record)
            soft = table.spec.field("IsDeleted") is not None
            overrides = {
                **(current.overrides if current else {}),
                **self._stamps(table.spec, ("SystemModstamp",), stamp),
                **({"IsDeleted": True} if soft else {}),
            }
            self._append(
                table, index, RowVersion(self._next_version(), overrides, deleted=soft, purged=not soft)
            )

    def make_visible(self, obj: str, record: str) -> None:
        """Commit a late row (or late update) now, keeping its old timestamps."""
        table = self.table(obj)
        with self._lock:
            index, current = self._current(table, record)
            if current is None or not current.hidden:
                raise ValueError(f"{record} has no hidden change")
            self._append(
                table,
                index,
                RowVersion(
                    self._next_version(), current.overrides, deleted=current.deleted, purged=current.purged
                ),
            )

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

    @staticmethod
    def _append(table: ObjectTable, index: int, version: RowVersion) -> None:
        table.history.setdefault(index, []).append(version)


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
