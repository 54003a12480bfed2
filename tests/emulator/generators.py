"""Seeded field values: each is a pure function of the row index.

A generator answers two questions about row ``i`` of its field: ``value(i)``, the typed
value (used by REST, filters, and the truth tests read), and ``cells(indices)``, the CSV
cells of many rows at once (the Bulk hot path). Nothing is stored per row, so an object
of ten million rows costs nothing until read.

Speed comes from two properties. A *periodic* generator (``period`` is not None) gives
row ``i`` the value of row ``i % period``: CSV rendering bakes such columns into one
precomputed line template per residue (see ``pages.py``). The other generators provide
``pieces(rows)``: lazy C-level ``map``/``islice``/``repeat`` streams whose per-row
concatenation is the cell, so that no Python code runs per row.
"""

import functools
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from itertools import cycle, islice, repeat
from operator import add, floordiv, mul, sub
from typing import Protocol, TypeGuard, cast

from .ids import record_id, record_id_pieces, record_ids
from .wire import csv_cell, datetime_cells, datetime_pieces, datetime_to_seconds, seconds_to_datetime

type Indices = range | list[int]


class Gen(Protocol):
    @property
    def period(self) -> int | None:
        """value(i) == value(i % period) for every i; None when the generator is not periodic."""
        ...

    def value(self, i: int) -> object:
        """The typed value of row ``i``."""
        ...

    def cells(self, indices: Indices) -> list[str]:
        """``[csv_cell(self.value(i)) for i in indices]``, computed faster."""
        ...

    def pieces(self, rows: range) -> list[Iterable[str]]:
        """Lazy streams whose per-row concatenation is ``self.cells(rows)``."""
        ...


def _contiguous(indices: Indices) -> TypeGuard[range]:
    return isinstance(indices, range) and indices.step == 1


class Constant:
    """The same value on every row (e.g. ``IsDeleted`` is false on every seeded row)."""

    period = 1

    def __init__(self, value: object) -> None:
        self.constant = value
        self._cell = csv_cell(value)

    def value(self, i: int) -> object:
        return self.constant

    def cells(self, indices: Indices) -> list[str]:
        return [self._cell] * len(indices)

    def pieces(self, rows: range) -> list[Iterable[str]]:
        return [repeat(self._cell, len(rows))]


class Pool:
    """Row ``i`` takes ``values[(i + salt) % len(values)]``; the pool is drawn once from
    the org's seed, so values look random but cost one lookup.

    ``values`` may be a function that draws them: it runs on first use, so creating an
    org is cheap and each object pays for its pools only when it is first read.
    """

    def __init__(
        self, values: Sequence[object] | Callable[[], Sequence[object]], salt: int, size: int | None = None
    ) -> None:
        if callable(values):
            assert size is not None, "a drawn pool needs its size up front"
            self._draw = values
        else:
            drawn, size = tuple(values), len(values)
            self._draw = lambda: drawn
        if not size:
            raise ValueError("a pool needs at least one value")
        self.period: int | None = size
        self._salt = salt % size

    @functools.cached_property
    def values(self) -> tuple[object, ...]:
        values = tuple(self._draw())
        assert len(values) == self.period
        return values

    @functools.cached_property
    def _cells(self) -> list[str]:
        # Pools repeat values (picklists, booleans): render each distinct value once.
        rendered = {value: csv_cell(value) for value in set(self.values)}
        return [rendered[value] for value in self.values]

    def value(self, i: int) -> object:
        return self.values[(i + self._salt) % len(self.values)]

    def pick[T](self, table: Sequence[T], indices: Indices) -> list[T]:
        """``table[(i + salt) % n]`` for each index; a C-level slice of the cycled table
        when the indices are a contiguous range."""
        n = len(table)
        if _contiguous(indices) and indices:
            start = (indices.start + self._salt) % n
            return list(islice(cycle(table), start, start + len(indices)))
        return [table[(i + self._salt) % n] for i in indices]

    def cells(self, indices: Indices) -> list[str]:
        return self.pick(self._cells, indices)

    def pieces(self, rows: range) -> list[Iterable[str]]:
        return [self.cells(rows)]


class Numbered:
    """Text unique to each row from a printf-style template, e.g. ``"Acme %07d"``."""

    period = None

    def __init__(self, template: str) -> None:
        self._template = template
        self._cell_template = '"' + template.replace('"', '""') + '"'

    def value(self, i: int) -> object:
        return self._template % i

    def cells(self, indices: Indices) -> list[str]:
        return list(map(self._cell_template.__mod__, indices))

    def pieces(self, rows: range) -> list[Iterable[str]]:
        return [map(self._cell_template.__mod__, rows)]


class RecordIds:
    """The ``Id`` field: ordered by index (see ``ids.py``)."""

    period = None

    def __init__(self, key_prefix: str) -> None:
        self._prefix = key_prefix

    def value(self, i: int) -> object:
        return record_id(self._prefix, i)

    def cells(self, indices: Indices) -> list[str]:
        return record_ids(self._prefix, indices, wrap='"')

    def pieces(self, rows: range) -> list[Iterable[str]]:
        return record_id_pieces(self._prefix, rows, wrap='"')


class Timeline:
    """Whole-second timestamps spread evenly from ``start`` to ``end`` over ``rows`` rows.

    The value never decreases as the index grows, so a range condition on the field that
    uses it becomes an index range. The ``shared`` rows starting at the middle row all
    carry the middle row's timestamp: many rows in one second, as after a mass update.
    """

    def __init__(self, rows: int, start: datetime, end: datetime, shared: int) -> None:
        self._start = datetime_to_seconds(start)
        self._span = datetime_to_seconds(end) - self._start
        self._rows = max(rows, 1)
        self.shared_from = rows // 2
        self.shared_to = min(rows, self.shared_from + max(shared, 0))
        # The seconds of the last range asked for: an object's CreatedDate,
        # LastModifiedDate and SystemModstamp columns all start from the same seconds.
        self._last: tuple[range, list[int]] = (range(0), [])

    def second(self, i: int) -> int:
        if self.shared_from <= i < self.shared_to:
            i = self.shared_from
        return self._start + (i * self._span) // self._rows

    def seconds(self, indices: Indices) -> list[int]:
        """The timestamps of ``indices`` (a fresh list)."""
        last_range, last_seconds = self._last
        if indices == last_range and isinstance(indices, range):
            return list(last_seconds)
        spread = map(floordiv, map(mul, indices, repeat(self._span)), repeat(self._rows))
        out = list(map(add, repeat(self._start), spread))
        if self.shared_from < self.shared_to:
            if _contiguous(indices):
                lo = max(self.shared_from, indices.start) - indices.start
                hi = min(self.shared_to, indices.stop) - indices.start
                if lo < hi:
                    out[lo:hi] = [self.second(self.shared_from)] * (hi - lo)
            else:
                out = [self.second(i) for i in indices]
        if isinstance(indices, range):
            self._last = (indices, out)
            return list(out)
        return out


class Stamp:
    """A datetime field: the object's timeline minus a per-row lag in seconds (so that,
    e.g., ``CreatedDate <= LastModifiedDate <= SystemModstamp`` on every seeded row)."""

    period = None

    def __init__(self, timeline: Timeline, lag: Pool | None = None) -> None:
        self._timeline = timeline
        self._lag = lag

    def _seconds(self, indices: Indices) -> list[int]:
        seconds = self._timeline.seconds(indices)
        if self._lag is None:
            return seconds
        lags = cast(list[int], self._lag.pick(self._lag.values, indices))
        return list(map(sub, seconds, lags))

    def second(self, i: int) -> int:
        """Row ``i``'s timestamp as seconds since the epoch."""
        return self._seconds([i])[0]

    def value(self, i: int) -> object:
        return seconds_to_datetime(self.second(i))

    def cells(self, indices: Indices) -> list[str]:
        return datetime_cells(self._seconds(indices))

    def pieces(self, rows: range) -> list[Iterable[str]]:
        return datetime_pieces(self._seconds(rows))


class Blob:
    """A base64 field's content. Bulk refuses to serialise it (§4.3) and REST returns a
    blob URL in its place, so it never becomes a CSV cell."""

    period = None

    def __init__(self, template: str, repeat: int) -> None:
        self._template = template
        self._repeat = repeat

    def value(self, i: int) -> object:
        return (self._template % i).encode() * self._repeat

    def cells(self, indices: Indices) -> list[str]:
        raise TypeError("base64 fields have no CSV form")

    def pieces(self, rows: range) -> list[Iterable[str]]:
        raise TypeError("base64 fields have no CSV form")
