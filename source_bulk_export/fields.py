"""From an sObject describe to a plan: which fields to export, the cursor, and how to coerce.

Everything here is decided once per object, from describe, and never per value: the plan holds
one converter per column. Turning a Bulk CSV row into a document is the hot path of every export;
`CsvTransform.for_header` compiles it, once per result page, into one function with one dict
display over the row's cells by position (see `_compile_csv_row`).

One row, one document, whichever path it took: a row read as CSV from a Bulk job and the same
row read as JSON from REST become equal dicts (tests/test_fields.py proves it per type).

| describe type            | CSV cell                   | REST JSON value                   | document                  |
|--------------------------|----------------------------|-----------------------------------|---------------------------|
| boolean                  | true / false               | true / false                      | bool                      |
| int, long                | 42                         | 42                                | int                       |
| double, currency, percent| 1234.5                     | 1234.5                            | float                     |
| date                     | 2024-01-02                 | "2024-01-02"                      | "2024-01-02"              |
| datetime                 | 2024-01-02T03:04:05.000Z   | "2024-01-02T03:04:05.000+0000"    | "2024-01-02T03:04:05.000Z"|
| (null)                   | empty cell                 | null                              | None                      |
| anything else            | the text                   | the text                          | the text, unchanged       |

Salesforce stores no empty strings (an emptied text field is null), and Bulk CSV cannot tell
the two apart, so an empty text value becomes None on both paths. The one type the two paths
can disagree on is the rare `anyType`, whose REST value may be a number or boolean where CSV
has text; it is kept as each path sends it.
"""

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .models import FieldDescribe, SalesforceRecord, SObjectDescribe

# Compound parents (address, location) cannot be selected in a Bulk query; their component
# columns (BillingStreet, ..., Location__Latitude__s) are plain fields and are captured. The
# other types cannot be written to CSV at all ("Cannot serialize value for 'X' in CSV format").
# Leaving them out keeps the whole object on Bulk instead of falling back to REST.
UNSELECTABLE_TYPES = frozenset({"address", "location", "base64", "JunctionIdList", "complexvalue", "json"})

# Best first. SystemModstamp moves on every change, including automated ones; LastModifiedDate
# only on user changes; objects with only CreatedDate (field history, feeds) are append-only.
CURSOR_CANDIDATES = ("SystemModstamp", "LastModifiedDate", "CreatedDate")

KEY_FIELD = "Id"
DELETED_FIELD = "IsDeleted"

Converter = Callable[[Any], Any]
"""Turns one non-null wire value into its document value; raises ValueError/KeyError/TypeError if it cannot."""

Document = dict[str, Any]


class UncapturableObject(Exception):
    """An object that describe shows cannot be captured; the message says why."""


class CoercionError(ValueError):
    """A value did not match its field's describe type."""

    def __init__(self, object_name: str, field_name: str, sf_type: str, value: Any) -> None:
        super().__init__(f"{object_name}.{field_name} ({sf_type}) has the value {value!r}, which is not a {sf_type}")
        self.object_name = object_name
        self.field_name = field_name
        self.sf_type = sf_type
        self.value = value


class ColumnMismatch(ValueError):
    """A row whose columns are not the planned ones."""


# --- converters ------------------------------------------------------------------------------

_OFFSET_WITHOUT_COLON = re.compile(r"[+-]\d{4}$")


def to_utc_millis(value: str) -> str:
    """An ISO 8601 date-time with an offset as `YYYY-MM-DDTHH:MM:SS.sssZ` (UTC, milliseconds)."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"date-time without an offset: {value!r}")
    parsed = parsed.astimezone(UTC)
    return f"{parsed:%Y-%m-%dT%H:%M:%S}.{parsed.microsecond // 1000:03d}Z"


def _csv_datetime(value: str) -> str:
    # Bulk writes the target form already; check its shape cheaply and normalise anything else.
    if len(value) == 24 and value[23] == "Z" and value[19] == ".":
        return value
    return to_utc_millis(value)


def _json_datetime(value: str) -> str:
    # REST writes "2024-01-02T03:04:05.000+0000".
    if len(value) == 28 and value[23:] == "+0000" and value[19] == ".":
        return value[:23] + "Z"
    return to_utc_millis(value)


def _json_int(value: Any) -> int:
    if type(value) is int:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise TypeError(value)


def _json_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(value)
    return float(value)


def _json_bool(value: Any) -> bool:
    if type(value) is not bool:
        raise TypeError(value)
    return value


def _json_text(value: Any) -> Any:
    return None if value == "" else value


_CSV_BOOLEANS = {"true": True, "false": False}

# CSV converters see only non-empty cells (empty cells become None before any converter).
# None means "the text is the value", which the row loop handles without a call.
_CSV_CONVERTERS: dict[str, Converter | None] = {
    "boolean": _CSV_BOOLEANS.__getitem__,
    "int": int,
    "long": int,
    "double": float,
    "currency": float,
    "percent": float,
    "datetime": _csv_datetime,
    # date is already YYYY-MM-DD; time, text, ids, picklists etc. are text.
}

# JSON converters see only non-null values.
_JSON_CONVERTERS: dict[str, Converter] = {
    "boolean": _json_bool,
    "int": _json_int,
    "long": _json_int,
    "double": _json_float,
    "currency": _json_float,
    "percent": _json_float,
    "datetime": _json_datetime,
}

_JSON_SCHEMA_TYPES: dict[str, dict[str, Any]] = {
    "boolean": {"type": ["boolean", "null"]},
    "int": {"type": ["integer", "null"]},
    "long": {"type": ["integer", "null"]},
    "double": {"type": ["number", "null"]},
    "currency": {"type": ["number", "null"]},
    "percent": {"type": ["number", "null"]},
    "date": {"type": ["string", "null"], "format": "date"},
    "datetime": {"type": ["string", "null"], "format": "date-time"},
    # anyType holds a value of any primitive type.
    "anyType": {},
}
_TEXT_SCHEMA: dict[str, Any] = {"type": ["string", "null"]}


# --- the plan --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldPlan:
    name: str
    sf_type: str
    calculated: bool
    csv: Converter | None
    json: Converter


@dataclass(slots=True)
class ObjectPlan:
    """How one object is exported. Built from describe by `plan_object`.

    `fields` are in SELECT order, `Id` among them. `cursor_field` is None for objects with no
    usable timestamp (captured as snapshots). `replicateable` objects have a deletion log
    (getDeleted).
    """

    name: str
    fields: tuple[FieldPlan, ...]
    cursor_field: str | None
    formula_fields: tuple[str, ...]
    replicateable: bool = False
    _by_name: dict[str, FieldPlan] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {f.name: f for f in self.fields}

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def has_deleted_flag(self) -> bool:
        return DELETED_FIELD in self._by_name

    def has_field(self, name: str) -> bool:
        return name in self._by_name

    def soql_fields(self) -> str:
        """The SELECT list: `Id, Name, ...`."""
        return ", ".join(f.name for f in self.fields)

    def soql_select(self) -> str:
        """`SELECT <fields> FROM <object>`; callers append WHERE / ORDER BY / LIMIT."""
        return f"SELECT {self.soql_fields()} FROM {self.name}"

    def csv_transform(self) -> "CsvTransform":
        """Row function for Bulk CSV rows: called with a dict keyed by the header (aiocsv,
        csv.DictReader), or bound to a page's header with `for_header` and called with the
        row's cells by position (what jobs.py does). Both give the same documents."""
        return CsvTransform(self)

    def json_transform(self) -> Callable[[dict[str, Any]], Document]:
        """Row function for REST records: keeps the planned columns (so drops `attributes`) and
        coerces them. A record without a planned column raises ColumnMismatch.
        """
        pairs = [(p.name, p.json) for p in self.fields]
        mark_deleted = self.has_deleted_flag

        def transform(record: dict[str, Any]) -> Document:
            try:
                doc = {name: None if (value := record[name]) is None else convert(value) for name, convert in pairs}
            except (ValueError, KeyError, TypeError):
                raise self.explain(record, csv=False) from None
            if mark_deleted and doc[DELETED_FIELD]:
                doc["_meta"] = {"op": "d"}
            return doc

        return transform

    def json_schema(self) -> dict[str, Any]:
        """The collection schema: `Id` (key) and the cursor as required date-time, the rest
        typed loosely from describe with null allowed. Inference widens it at runtime.

        Snapshot objects (no cursor) require nothing beyond the base document: the CDK's
        deletion tombstones for them carry only `_meta`.
        """
        schema = SalesforceRecord.model_json_schema(mode="serialization")
        properties: dict[str, Any] = {"_meta": schema["properties"]["_meta"]}
        for plan in self.fields:
            properties[plan.name] = _JSON_SCHEMA_TYPES.get(plan.sf_type, _TEXT_SCHEMA)
        properties[KEY_FIELD] = {"type": "string"}
        if self.cursor_field:
            properties[self.cursor_field] = {"type": "string", "format": "date-time"}
            schema["required"] = [KEY_FIELD, self.cursor_field]
        else:
            schema.pop("required", None)
        schema["title"] = self.name
        schema.pop("description", None)  # SalesforceRecord's docstring, written for developers
        schema["properties"] = properties
        return schema

    def explain(self, row: dict[str, Any], csv: bool) -> Exception:
        """Find what failed in a row, for an error that names the column (slow path only)."""
        missing = [name for name in self._by_name if name not in row]
        # REST records also carry `attributes`, and whatever else is not planned is ignored.
        extra = [name for name in row if name not in self._by_name] if csv else []
        if missing or extra:
            return ColumnMismatch(
                f"{self.name}: a row's columns differ from the plan (missing {missing}, unexpected {extra})"
            )
        for plan in self.fields:
            value = row[plan.name]
            convert = plan.csv if csv else plan.json
            if value is None or value == "" or convert is None:
                continue
            try:
                convert(value)
            except (ValueError, KeyError, TypeError):
                return CoercionError(self.name, plan.name, plan.sf_type, value)
        return ValueError(f"{self.name}: a row could not be converted: {row!r}")


class CsvTransform:
    """A plan's row function for Bulk CSV rows, in two forms that give equal documents.

    - `for_header(header)` checks a result page's header against the plan once and returns a
      function of the row's cells (a list, in header order), for IncrementalCSVRowProcessor.
      This is the form jobs.py uses, since it builds no dict per row to look values up in.
    - Called with a row as a dict keyed by the header (aiocsv, csv.DictReader): the same function,
      bound to that row's keys, so the header's column order does not matter; a row with a
      missing or extra column raises ColumnMismatch, a value that does not fit its type
      CoercionError. It compiles per call: for tests and one-off rows, not for pages.
    """

    __slots__ = ("_plan",)

    def __init__(self, plan: ObjectPlan) -> None:
        self._plan = plan

    def __call__(self, row: dict[str, str]) -> Document:
        header = list(row)
        return self.for_header(header)([row[name] for name in header])

    def for_header(self, header: Sequence[str]) -> Callable[[list[str]], Document]:
        """The row function for the cells of rows under `header`. Raises ColumnMismatch when
        the header's columns are not exactly the plan's (in any order). The function does not
        check a row's width: its caller does, once per row, before calling it."""
        plan = self._plan
        names = list(header)
        if len(set(names)) != len(names):
            raise ColumnMismatch(f"{plan.name}: a result page's header repeats a column: {names}")
        if set(names) != set(plan.field_names):
            raise plan.explain(dict.fromkeys(names, ""), csv=True)
        return _compile_csv_row(plan, names)


# Expressions for `_compile_csv_row` that take the form Bulk writes without a call: `v` holds the
# cell; anything else goes to the column's converter (which raises for a bad value), empty to None.
_CSV_INLINE = {
    "datetime": "(v if len(v := {cell}) == 24 and v[23] == 'Z' and v[19] == '.' else {convert}(v) if v else None)",
    "boolean": "(True if (v := {cell}) == 'true' else False if v == 'false' else {convert}(v) if v else None)",
}


def _compile_csv_row(plan: ObjectPlan, header: list[str]) -> Callable[[list[str]], Document]:
    """Compile the row function for `plan`'s columns under `header` (checked against the plan).

    Hand-tuned, because it runs once per row of every Bulk export, where a generic loop over
    (column, converter) pairs costs about as much as parsing the CSV itself. The function is one
    dict display, in the plan's field order (so documents have the same key order whatever the
    header's), with one entry per column:

        'Name': c[3] or None,                     # text: an empty cell is null, else the text
        'Amount__c': _4(c[4]) if c[4] else None,  # typed: the column's converter, nulls kept

    Datetimes and booleans, the most common typed cells, test for the form Bulk writes inline
    and call their converter only for anything else (`_CSV_INLINE`), which saves a call per cell.

    Only constants go into the source: column names as Python literals (`repr`), cell positions
    as integers, converters by a generated local name. A value that does not convert makes the
    function re-examine the row the slow way (`ObjectPlan.explain`) and raise what it finds.
    """
    position = {name: index for index, name in enumerate(header)}
    namespace: dict[str, Any] = {"_explain": plan.explain, "_header": tuple(header)}
    entries: list[str] = []
    for field_plan in plan.fields:
        index = position[field_plan.name]
        cell = f"c[{index}]"
        if field_plan.csv is None:
            entries.append(f"{field_plan.name!r}: {cell} or None")
            continue
        convert = f"_{index}"
        namespace[convert] = field_plan.csv
        inline = _CSV_INLINE.get(field_plan.sf_type)
        if inline is not None:
            entries.append(f"{field_plan.name!r}: {inline.format(cell=cell, convert=convert)}")
        else:
            entries.append(f"{field_plan.name!r}: {convert}({cell}) if {cell} else None")
    mark_deleted = ""
    if plan.has_deleted_flag:
        mark_deleted = f"\n    if doc[{DELETED_FIELD!r}]:\n        doc['_meta'] = {{'op': 'd'}}"
    source = (
        "def csv_row(c):\n"
        "    try:\n"
        f"        doc = {{{', '.join(entries)}}}\n"
        "    except (ValueError, KeyError, TypeError):\n"
        "        raise _explain(dict(zip(_header, c)), csv=True) from None"
        f"{mark_deleted}\n"
        "    return doc\n"
    )
    exec(compile(source, f"<csv row of {plan.name}>", "exec"), namespace)  # noqa: S102 - constants only, see above
    row_function: Callable[[list[str]], Document] = namespace["csv_row"]
    return row_function


def _field_plan(describe: FieldDescribe) -> FieldPlan:
    return FieldPlan(
        name=describe.name,
        sf_type=describe.type,
        calculated=describe.calculated,
        csv=_CSV_CONVERTERS.get(describe.type),
        json=_JSON_CONVERTERS.get(describe.type, _json_text),
    )


def selectable(field_describe: FieldDescribe) -> bool:
    """Whether a field goes into exports (compound parents and unserialisable types do not)."""
    return field_describe.type not in UNSELECTABLE_TYPES and not field_describe.deprecatedAndHidden


def choose_cursor(fields: Sequence[FieldDescribe]) -> str | None:
    """The best timestamp to read changes by, or None when the object has none usable."""
    by_name = {f.name: f for f in fields}
    for name in CURSOR_CANDIDATES:
        candidate = by_name.get(name)
        if candidate and candidate.type == "datetime" and candidate.filterable and candidate.sortable:
            return name
    return None


def plan_object(describe: SObjectDescribe) -> ObjectPlan:
    """Plan an object's export from its describe. Raises UncapturableObject saying why not."""
    fields = [f for f in describe.fields if selectable(f)]
    if not any(f.name == KEY_FIELD for f in fields):
        raise UncapturableObject(f"{describe.name} has no {KEY_FIELD} field, so its rows cannot be keyed")
    return ObjectPlan(
        name=describe.name,
        fields=tuple(_field_plan(f) for f in fields),
        cursor_field=choose_cursor(fields),
        formula_fields=tuple(f.name for f in fields if f.calculated),
        replicateable=describe.replicateable,
    )
