"""Executing a bound query against one snapshot of the org, lazily.

A ``ResultSet`` is a query's answer as of one snapshot, read page by page from a
``Position`` without ever materialising the whole result:

- Seeded rows are an index range. Top-level ``AND`` conditions on ``Id`` and on the
  object's timeline field (SystemModstamp, or CreatedDate for history objects) narrow
  that range by bisection, since both grow with the index. Other conditions are checked
  row by row ("residual"), and only then does the cost depend on the object's size.
- Mutated rows (the overlay) are materialised, filtered and merged in order; the seeded
  rows they replace are skipped.
- ``ORDER BY Id`` (or no ORDER BY) and ``ORDER BY <timeline field>[, Id]`` (ascending) are
  served by that merge. Any other ORDER BY materialises and sorts the matching rows,
  which is fine for small objects only.

A position is a value (next seeded index, next overlay row, rows emitted), so the same
position always yields the same page: that is what makes locators re-fetchable.
"""

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from .binding import Bound, Getter, compile_condition, fold
from .generators import Constant, Stamp
from .ids import record_id
from .org import Org
from .schema import FieldSpec, FieldType
from .soql import BoolOp, Compare, Condition, Kind, Literal
from .tables import Row, RowSource, RowVersion, Snapshot
from .wire import datetime_to_seconds

type Ref = int | Row  # a seeded row index, or a materialised overlay row
type Segment = range | Row  # consecutive seeded rows, or one overlay row
type Key = tuple[int, ...]  # a row's place in result order: (index,) or (seconds, index)


def _seeded_row(source: RowSource, i: int) -> Getter:
    return lambda f: source.value(f, i)


def _overlay_row(row: Row) -> Getter:
    return lambda f: row[f.name]


class Order(Enum):
    INDEX = "Id order (index order)"
    TIMELINE = "timeline field, then Id"
    SORTED = "materialised sort"


@dataclass(frozen=True, slots=True)
class Position:
    seeded: int  # next seeded index to consider
    overlay: int  # next overlay row to consider
    emitted: int  # rows already returned (for LIMIT, and the offset of SORTED results)


@dataclass(frozen=True, slots=True)
class Page:
    segments: list[Segment]
    rows: int
    next: Position | None  # None: this is the last page

    def refs(self) -> Iterator[Ref]:
        for segment in self.segments:
            if isinstance(segment, range):
                yield from segment
            else:
                yield segment


def _append(segments: list[Segment], ref: Ref) -> None:
    """Append one row, extending the last range when the index follows it."""
    if isinstance(ref, int):
        last = segments[-1] if segments else None
        if isinstance(last, range) and last.stop == ref:
            segments[-1] = range(last.start, ref + 1)
        else:
            segments.append(range(ref, ref + 1))
    else:
        segments.append(ref)


class ResultSet:
    """The rows ``bound`` matches as of ``snapshot``; ``include_deleted`` for queryAll."""

    def __init__(self, org: Org, bound: Bound, snapshot: Snapshot, include_deleted: bool) -> None:
        spec = bound.spec
        table = org.table(spec.name)
        self.bound = bound
        self.source: RowSource = table.source(snapshot)
        self.limit = bound.query.limit
        self._order = self._choose_order(bound)
        self._timeline = spec.field(spec.timeline_field) if spec.timeline_field else None
        self._plan_seeded(table.seeded)
        self._plan_overlay(org.overlay(table, snapshot), include_deleted)
        self._start = Position(self._lo, 0, 0)
        offset = bound.query.offset or 0
        self._sorted: list[Ref] | None = None  # the whole result, for Order.SORTED only
        self._skipped = 0  # rows OFFSET skipped
        if self._order is Order.SORTED:
            self._sorted = self._sort_all()[offset:]
        elif offset:
            _, self._skipped, s, o = self._collect(self._lo, 0, offset)
            self._start = Position(s, o, 0)
        self._count: int | None = None

    # -- planning ---------------------------------------------------------------------

    def _plan_seeded(self, seeded: int) -> None:
        """Seeded rows: the index range [lo, hi) the WHERE clause allows, and the residual
        conditions to check row by row within it."""
        where = self.bound.query.where
        self._lo, self._hi = 0, seeded
        residual: list[Condition] = []
        if isinstance(where, BoolOp) and where.op == "AND":
            conjuncts: tuple[Condition, ...] = where.parts
        else:
            conjuncts = (where,) if where is not None else ()
        for cond in conjuncts:
            self._narrow(cond, residual)
        self._hi = max(self._lo, self._hi)
        self._residual = compile_condition(self.bound, BoolOp("AND", tuple(residual))) if residual else None

    def _plan_overlay(self, overlay: dict[int, RowVersion], include_deleted: bool) -> None:
        """Mutated rows: the seeded indices they replace, and, in result order, those that
        match the WHERE clause."""
        where = self.bound.query.where
        predicate = compile_condition(self.bound, where) if where is not None else None
        self._shadowed = sorted(i for i in overlay if self._lo <= i < self._hi)
        rows: list[tuple[Key, Row]] = []
        for index, version in overlay.items():
            if version.purged or (version.deleted and not include_deleted):
                continue
            row = self.source.row(index, version.overrides)
            if predicate is None or predicate(_overlay_row(row)):
                rows.append((self._overlay_key(index, row), row))
        rows.sort(key=lambda pair: pair[0])
        self._overlay_keys = [key for key, _ in rows]
        self._overlay_rows = [row for _, row in rows]

    @staticmethod
    def _choose_order(bound: Bound) -> Order:
        items = [(bound.field(o.field).name, o.descending) for o in bound.query.order_by]
        timeline = bound.spec.timeline_field
        if items in ([], [("Id", False)]):
            return Order.INDEX
        if timeline and items in ([(timeline, False)], [(timeline, False), ("Id", False)]):
            return Order.TIMELINE
        return Order.SORTED

    def _narrow(self, cond: Condition, residual: list[Condition]) -> None:
        """Turn a top-level conjunct into a seeded index range when it is a range on Id or
        on the timeline field; decide it once when it only reads a constant field."""
        if isinstance(cond, Compare):
            f = self.bound.field(cond.field)
            key = self._range_key(f, cond.value)
            if key is not None and cond.op != "!=":
                self._bisect(cond.op, *key)
                return
            if isinstance(f.gen, Constant):
                constant = f.gen.constant
                if not compile_condition(self.bound, cond)(lambda _: constant):
                    self._hi = self._lo
                return
        residual.append(cond)

    def _bisect(self, op: str, keys: Callable[[int], Any], target: Any) -> None:
        """Narrow the seeded range to the rows where ``keys(i) <op> target``."""
        seeded = range(self._lo, self._hi)
        lower = {">": bisect_right, ">=": bisect_left, "=": bisect_left}.get(op)
        upper = {"<": bisect_left, "<=": bisect_right, "=": bisect_right}.get(op)
        lo = self._lo + lower(seeded, target, key=keys) if lower else self._lo
        hi = self._lo + upper(seeded, target, key=keys) if upper else self._hi
        self._lo, self._hi = lo, max(lo, hi)

    def _range_key(self, f: FieldSpec, value: Literal) -> tuple[Callable[[int], Any], Any] | None:
        """How to bisect seeded rows on ``f`` against ``value``: Ids compare as strings,
        timeline stamps as seconds since the epoch. None: not a range over the index."""
        prefix = self.bound.spec.key_prefix
        if f.type is FieldType.ID and value.kind is Kind.STRING:
            return (lambda i: record_id(prefix, i)), value.value
        if self._timeline is f and value.kind is Kind.DATETIME and isinstance(f.gen, Stamp):
            stamp = f.gen
            assert isinstance(value.value, datetime)
            return stamp.second, value.value.timestamp()
        return None

    def _overlay_key(self, index: int, row: Row) -> Key:
        if self._order is Order.TIMELINE:
            assert self._timeline is not None
            stamp = row[self._timeline.name]
            assert isinstance(stamp, datetime)
            return (datetime_to_seconds(stamp), index)
        return (index,)

    def _seeded_key(self, i: int) -> Key:
        if self._order is Order.TIMELINE:
            assert self._timeline is not None and isinstance(self._timeline.gen, Stamp)
            return (self._timeline.gen.second(i), i)
        return (i,)

    # -- reading ----------------------------------------------------------------------

    @property
    def fields(self) -> tuple[FieldSpec, ...]:
        return self.bound.fields

    def value(self, ref: Ref, f: FieldSpec) -> object:
        """The typed value of field ``f`` in a row of this result."""
        return ref[f.name] if isinstance(ref, dict) else self.source.value(f, ref)

    def start(self) -> Position:
        """Where the first page starts (after OFFSET)."""
        return self._start

    def page(self, position: Position, max_rows: int) -> Page:
        """Up to ``max_rows`` rows from ``position``, and where the next page starts.
        The same position always yields the same page."""
        want = max_rows if self.limit is None else max(0, min(max_rows, self.limit - position.emitted))
        if self._sorted is not None:
            end = position.emitted + want
            segments: list[Segment] = []
            for ref in self._sorted[position.emitted : end]:
                _append(segments, ref)
            more = end < len(self._sorted) and (self.limit is None or end < self.limit)
            rows = min(end, len(self._sorted)) - position.emitted
            return Page(segments, rows, Position(0, 0, end) if more else None)
        segments, rows, s, o = self._collect(position.seeded, position.overlay, want)
        emitted = position.emitted + rows
        more = (self.limit is None or emitted < self.limit) and self._collect(s, o, 1)[1] > 0
        return Page(segments, rows, Position(s, o, emitted) if more else None)

    def count(self) -> int:
        """The number of rows in the whole result (REST totalSize, Bulk
        numberRecordsProcessed). Free unless a residual condition forces a scan."""
        if self._count is None:
            if self._sorted is not None:
                total = len(self._sorted)
            elif self._residual is None:
                total = self._hi - self._lo - len(self._shadowed) + len(self._overlay_rows) - self._skipped
            else:
                total, s, o = 0, self._start.seeded, self._start.overlay
                while True:
                    _, found, s, o = self._collect(s, o, 100_000)
                    if not found:
                        break
                    total += found
            self._count = total if self.limit is None else min(total, self.limit)
        return self._count

    def _collect(self, s: int, o: int, want: int) -> tuple[list[Segment], int, int, int]:
        """Merge seeded rows (from index ``s``) and overlay rows (from ``o``) in result
        order until ``want`` rows are found; returns them, their number and the two new
        cursors."""
        segments: list[Segment] = []
        found = 0
        shadowed, keys, rows, hi = self._shadowed, self._overlay_keys, self._overlay_rows, self._hi
        while found < want:
            k = bisect_left(shadowed, s)
            while k < len(shadowed) and shadowed[k] == s:  # replaced by an overlay version
                s, k = s + 1, k + 1
            end = min(hi, shadowed[k]) if k < len(shadowed) else hi
            if o < len(rows) and s < end:  # seeded rows that sort before the next overlay row
                end = s + bisect_right(range(s, end), keys[o], key=self._seeded_key)
            if s < end:
                if self._residual is None:
                    take = min(end - s, want - found)
                    segments.append(range(s, s + take))
                    found += take
                    s += take
                else:
                    while s < end and found < want:
                        if self._residual(_seeded_row(self.source, s)):
                            _append(segments, s)
                            found += 1
                        s += 1
                continue
            if o < len(rows):
                segments.append(rows[o])
                found += 1
                o += 1
                continue
            break
        return segments, found, s, o

    def _sort_all(self) -> list[Ref]:
        """Every matching row, sorted by the query's ORDER BY (stable, multi-key)."""
        everything = self._collect(self._lo, 0, self._hi - self._lo + len(self._overlay_rows))[0]
        refs: list[Ref] = list(Page(everything, 0, None).refs())
        for order in reversed(self.bound.query.order_by):
            f = self.bound.field(order.field)
            null_rank = 0 if order.nulls_last == order.descending else 2

            def key(ref: Ref, f: FieldSpec = f, null_rank: int = null_rank) -> tuple[int, Any]:
                v = fold(f, self.value(ref, f))
                return (null_rank, 0) if v is None else (1, v)

            refs.sort(key=key, reverse=order.descending)
        return refs
