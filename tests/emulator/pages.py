"""Rendering pages of a ``ResultSet``: Bulk CSV text, and REST JSON records.

CSV is the hot path (a benchmark reads millions of rows), so a ``CsvWriter`` runs no
Python code per row. Periodic columns (see ``generators.py``) are baked into one line
template per residue ``i % period``, cut into parts around holes for the other columns.
Those columns come as lazy "pieces" streams; a chunk of rows is one ``str.join`` over
template parts and pieces interleaved by ``zip``. A page is produced a chunk at a time,
never as one string.
"""

import math
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, cycle, islice

from .results import Page, ResultSet
from .schema import FieldSpec, FieldType
from .tables import RowSource
from .wire import csv_cell, json_value, quote

COLUMN_DELIMITERS = {"BACKQUOTE": "`", "CARET": "^", "COMMA": ",", "PIPE": "|", "SEMICOLON": ";", "TAB": "\t"}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
CHUNK_ROWS = 2000
# More templates than this (an unlucky mix of pool sizes) and every column is computed.
MAX_TEMPLATES = 20_000


def csv_columns(fields: Sequence[FieldSpec], api_version: str) -> list[FieldSpec]:
    """Result columns: SELECT order from v50.0, alphabetical before (§4.6)."""
    if float(api_version) >= 50.0:
        return list(fields)
    return sorted(fields, key=lambda f: f.name.lower())


class CsvWriter:
    """Writes rows of one result in one CSV dialect. Every page starts with its own
    header row (§4.6); null cells are empty, or ``""`` with ``null_as_quoted_empty``."""

    def __init__(
        self,
        source: RowSource,
        columns: Sequence[FieldSpec],
        delimiter: str,
        line_ending: str,
        null_as_quoted_empty: bool,
    ) -> None:
        self.header = delimiter.join(quote(f.name) for f in columns) + line_ending
        self._source = source
        self._columns = columns
        self._delimiter = delimiter
        self._line_ending = line_ending
        self._quote_nulls = null_as_quoted_empty
        periods = [source.period(f) for f in columns]
        period = math.lcm(*(p for p in periods if p))
        if period > MAX_TEMPLATES:
            periods, period = [None] * len(columns), 1
        self._computed = [f for f, p in zip(columns, periods, strict=True) if p is None]
        # One line per residue, as parts: part 0, hole, part 1, hole, ..., last part. A
        # column may fill several adjacent holes (its pieces), with empty parts between.
        holes = [len(self._pieces_of(f)) if p is None else 0 for f, p in zip(columns, periods, strict=True)]
        self._parts: list[list[str]] = [[] for _ in range(sum(holes) + 1)]
        for r in range(period):
            line = [""]
            for k, (f, p) in enumerate(zip(columns, periods, strict=True)):
                if k:
                    line[-1] += delimiter
                if p is None:
                    line.extend([""] * holes[k])
                else:
                    line[-1] += self._cell(source.cell_at(f, r))
            line[-1] += line_ending
            for part, text in zip(self._parts, line, strict=True):
                part.append(text)

    def chunks(self, page: Page) -> Iterator[str]:
        """The header, then the page's rows, about ``CHUNK_ROWS`` lines at a time."""
        yield self.header
        lines: list[str] = []
        for segment in page.segments:
            if isinstance(segment, range):
                if lines:
                    yield "".join(lines)
                    lines = []
                for start in range(0, len(segment), CHUNK_ROWS):
                    yield self._seeded_text(segment[start : start + CHUNK_ROWS])
            else:
                cells = (self._cell(csv_cell(segment[f.name])) for f in self._columns)
                lines.append(self._delimiter.join(cells) + self._line_ending)
        if lines:
            yield "".join(lines)

    def _pieces_of(self, f: FieldSpec, rows: range = range(0)) -> list[Iterable[str]]:
        pieces = self._source.pieces(f, rows)
        if self._quote_nulls and len(pieces) == 1:
            pieces = [map(self._cell, pieces[0])]
        return pieces

    def _seeded_text(self, rows: range) -> str:
        """The lines of consecutive seeded rows."""
        begin = rows.start % len(self._parts[0])
        parts = [islice(cycle(part), begin, begin + len(rows)) for part in self._parts]
        pieces = [piece for f in self._computed for piece in self._pieces_of(f, rows)]
        streams: list[Iterable[str]] = [parts[0]]
        for piece, part in zip(pieces, parts[1:], strict=True):
            streams += [piece, part]
        return "".join(chain.from_iterable(zip(*streams, strict=True)))

    def _cell(self, cell: str) -> str:
        return cell or ('""' if self._quote_nulls else "")


def json_records(result: ResultSet, page: Page, api_version: str) -> list[dict[str, object]]:
    """REST records: an ``attributes`` envelope, then the fields in SELECT order (§5.1).
    Compound fields are nested objects; base64 fields are the URL of their blob."""
    spec = result.bound.spec
    id_field = spec.field("Id")
    assert id_field is not None
    base = f"/services/data/v{api_version}/sobjects/{spec.name}"
    records = []
    for ref in page.refs():
        url = f"{base}/{result.value(ref, id_field)}"
        record: dict[str, object] = {"attributes": {"type": spec.name, "url": url}}
        for f in result.fields:
            value = result.value(ref, f)
            if f.type is FieldType.BASE64:
                record[f.name] = f"{url}/{f.name}"
            elif isinstance(value, dict):
                record[f.name] = {key: json_value(v) for key, v in value.items()}
            else:
                record[f.name] = json_value(value)
        records.append(record)
    return records
