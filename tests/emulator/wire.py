"""How typed row values are written on the wire: Bulk CSV cells, REST JSON, documents.

The emulator holds every value in one typed form (see ``org.py``): ``bool``, ``int``,
``float``, ``str``, ``datetime.date``, timezone-aware UTC ``datetime`` (whole seconds),
``bytes`` for base64 fields, a ``dict`` for compound address fields, or ``None``.
This module is the only place that turns them into bytes, following the wire-format table
in ``docs/internals.md`` (the emulator's choices where salesforce-api.md §4.9/§10 is unsure):

| type                     | Bulk CSV cell                  | REST JSON value                   |
|--------------------------|--------------------------------|-----------------------------------|
| boolean                  | ``"true"`` / ``"false"``       | ``true`` / ``false``              |
| int                      | ``"42"``                       | ``42``                            |
| double/currency/percent  | ``"1234.5"``                   | ``1234.5``                        |
| date                     | ``"2024-01-02"``               | ``"2024-01-02"``                  |
| datetime                 | ``"2024-01-02T03:04:05.000Z"`` | ``"2024-01-02T03:04:05.000+0000"``|
| null                     | empty cell (unquoted)          | ``null``                          |
| everything else          | the string, quoted             | the string                        |

Every non-null CSV cell is double-quoted, as in the Bulk 2.0 doc example (§8.3); an
embedded ``"`` is doubled. Empty text never reaches the wire: Salesforce stores an empty
text value as null (§4.9).
"""

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from itertools import repeat
from operator import add, floordiv, mod

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The two halves of a datetime CSV cell, by day number and by second of the day, so the
# CSV hot path formats a timestamp with two C-level lookups instead of strftime.
_TIME_CELLS = [f'{h:02d}:{m:02d}:{s:02d}.000Z"' for h in range(24) for m in range(60) for s in range(60)]


class _DayCells(dict[int, str]):
    """``'"YYYY-MM-DDT'`` by day number since the epoch, computed on first use."""

    def __missing__(self, day: int) -> str:
        text = self[day] = '"' + (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d") + "T"
        return text


_DAY_CELLS = _DayCells()


def quote(text: str) -> str:
    """A CSV cell holding ``text``: always quoted, embedded quotes doubled (RFC 4180)."""
    return '"' + text.replace('"', '""') + '"'


def seconds_to_datetime(seconds: int) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)


def datetime_to_seconds(value: datetime) -> int:
    return int((value - _EPOCH).total_seconds())


def datetime_pieces(seconds: list[int]) -> list[Iterable[str]]:
    """Whole-second UTC timestamps (seconds since the epoch) as two lazy streams whose
    per-row concatenation is the CSV cell: ``'"YYYY-MM-DDT'`` and ``'HH:MM:SS.000Z"'``."""
    days = map(_DAY_CELLS.__getitem__, map(floordiv, seconds, repeat(86400)))
    times = map(_TIME_CELLS.__getitem__, map(mod, seconds, repeat(86400)))
    return [days, times]


def datetime_cells(seconds: list[int]) -> list[str]:
    """The CSV cells of whole-second UTC timestamps given as seconds since the epoch."""
    return list(map(add, *datetime_pieces(seconds)))


def csv_datetime(value: datetime) -> str:
    """``2024-01-02T03:04:05.000Z``: the Bulk CSV datetime format (§4.9, believed)."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def json_datetime(value: datetime) -> str:
    """``2024-01-02T03:04:05.000+0000``: the REST JSON datetime format (§5.1)."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def number_text(value: int | float) -> str:
    """Plain decimal text; ``repr`` keeps a float's shortest round-tripping form."""
    return repr(value) if isinstance(value, float) else str(value)


def csv_cell(value: object) -> str:
    """The CSV cell of one typed value (see the table above)."""
    match value:
        case None:
            return ""
        case bool():
            return '"true"' if value else '"false"'
        case int() | float():
            return '"' + number_text(value) + '"'
        case datetime():
            return '"' + csv_datetime(value) + '"'
        case date():
            return '"' + value.isoformat() + '"'
        case str():
            return quote(value)
    raise TypeError(f"no CSV form for {type(value).__name__}")


def json_value(value: object) -> object:
    """The REST JSON form of one typed scalar value (compound and base64 are handled by
    the caller, which knows the record's URL)."""
    match value:
        case datetime():
            return json_datetime(value)
        case date():
            return value.isoformat()
    return value


def document_value(value: object) -> object:
    """A value as the connector must emit it in a document (internals.md "Documents"):
    bool/int/float/str/None unchanged, date ``YYYY-MM-DD``, datetime
    ``YYYY-MM-DDTHH:MM:SS.sssZ``."""
    match value:
        case datetime():
            return csv_datetime(value)
        case date():
            return value.isoformat()
    return value
