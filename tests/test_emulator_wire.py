"""Value formats on the wire (internals.md), and the fast CSV writer against the plain one."""

from datetime import UTC, date, datetime

import pytest

from tests.emulator import Org, OrgConfig, pages
from tests.emulator.binding import bind
from tests.emulator.pages import CsvWriter
from tests.emulator.results import ResultSet
from tests.emulator.soql import parse
from tests.emulator.wire import csv_cell, document_value, json_value

MOMENT = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "cell", "json", "document"),
    [
        (True, '"true"', True, True),
        (42, '"42"', 42, 42),
        (1234.5, '"1234.5"', 1234.5, 1234.5),
        (date(2024, 1, 2), '"2024-01-02"', "2024-01-02", "2024-01-02"),
        (MOMENT, '"2024-01-02T03:04:05.000Z"', "2024-01-02T03:04:05.000+0000", "2024-01-02T03:04:05.000Z"),
        (None, "", None, None),
        ('Zürich, "HQ"\nline 2', '"Zürich, ""HQ""\nline 2"', 'Zürich, "HQ"\nline 2', 'Zürich, "HQ"\nline 2'),
    ],
)
def test_value_formats(value: object, cell: str, json: object, document: object) -> None:
    assert csv_cell(value) == cell
    assert json_value(value) == json
    assert document_value(value) == document


def plain_lines(result: ResultSet, rows: range) -> list[list[str]]:
    """The page's cells as a naive writer renders them: one csv_cell per value."""
    return [[csv_cell(result.value(i, f)) for f in result.fields] for i in rows]


def test_fast_csv_writer_matches_the_plain_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Across pool periods (1,009 rows), Id blocks (3,844), chunks and the shared-stamp block."""
    monkeypatch.setattr(pages, "CHUNK_ROWS", 300)
    org = Org(OrgConfig(rows=7_700))  # the shared-SystemModstamp block is rows 3,850..3,854
    fields = ", ".join(f.name for f in org.spec("BenchRecord__c").fields)
    bound = bind(org, parse(f"SELECT {fields} FROM BenchRecord__c"))
    result = ResultSet(org, bound, org.snapshot(), include_deleted=False)
    first = result.page(result.start(), 3_400)
    assert first.next is not None
    page = result.page(first.next, 700)  # rows 3,400 .. 4,099
    header = ",".join(f'"{f.name}"' for f in bound.fields) + "\n"
    cells = plain_lines(result, range(3_400, 4_100))

    for null in ("", '""'):
        writer = CsvWriter(result.source, bound.fields, ",", "\n", null_as_quoted_empty=bool(null))
        expected = header + "".join(",".join(c or null for c in line) + "\n" for line in cells)
        assert "".join(writer.chunks(page)) == expected
