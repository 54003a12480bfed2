"""One object's rows: seeded rows generated on demand, and the versions tests add.

Row ``i`` of an object is a pure function of (object, seed, i) until a test mutates it.
Mutations never rewrite anything: each one appends a ``RowVersion`` stamped with a new
org-wide version number, so a ``Snapshot`` (version, instant) fixes what a reader sees
forever after (see ``org.py``, which owns the versions and the mutation API).
"""

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from .schema import FieldSpec, ObjectSpec
from .wire import csv_cell

type Row = dict[str, object]
type ValueByName = Callable[[str], object]


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
    purged: bool = False  # hard-deleted (or deleted without IsDeleted): seen by nobody
    # A soft-deleted row leaves queryAll at this instant: when the recycle bin drops it
    # (15 days), or a day after the bin was emptied.
    gone_at: datetime | None = None
    emptied: bool = False  # removed from the recycle bin (queryAll still sees it until gone_at)
    # A late commit: invisible until make_visible() or until the clock reaches visible_at.
    hidden: bool = False
    visible_at: datetime | None = None

    def visible(self, at: datetime) -> bool:
        return not self.hidden or (self.visible_at is not None and at >= self.visible_at)

    def gone(self, at: datetime) -> bool:
        """Whether this soft-deleted version has left the recycle bin (and queryAll) at ``at``."""
        return self.gone_at is not None and at >= self.gone_at


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
                    # A row gone from the recycle bin reads like a hard-deleted one.
                    overlay[index] = dataclasses.replace(v, purged=True) if v.gone(snapshot.at) else v
                    break
        return overlay
