"""fields.py: field selection, cursor choice, and one row giving one document on both wire formats."""

import csv
import io
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from estuary_cdk.incremental_csv_processor import IncrementalCSVProcessor

from source_bulk_export.fields import (
    CoercionError,
    ColumnMismatch,
    ObjectPlan,
    UncapturableObject,
    choose_cursor,
    plan_object,
    to_utc_millis,
)
from source_bulk_export.models import FieldDescribe, SObjectDescribe


def field(name: str, sf_type: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": sf_type, "filterable": True, "sortable": True, **extra}


ACCOUNT_FIELDS = [
    field("Id", "id"),
    field("IsDeleted", "boolean"),
    field("Name", "string"),
    field("BillingStreet", "textarea", compoundFieldName="BillingAddress"),
    field("BillingPostalCode", "string", compoundFieldName="BillingAddress"),
    field("BillingAddress", "address"),
    field("Site__Latitude__s", "double", compoundFieldName="Site__c"),
    field("Site__Longitude__s", "double", compoundFieldName="Site__c"),
    field("Site__c", "location"),
    field("Logo__c", "base64"),
    field("NumberOfEmployees", "int"),
    field("AnnualRevenue", "currency"),
    field("Score__c", "double"),
    field("Share__c", "percent"),
    field("Active__c", "boolean"),
    field("Founded__c", "date"),
    field("Opens__c", "time"),
    field("Tier__c", "picklist"),
    field("Tags__c", "multipicklist"),
    field("Phone", "phone"),
    field("Website", "url"),
    field("OwnerId", "reference"),
    field("Big__c", "long"),
    field("Ratio__c", "double", calculated=True),
    field("CreatedDate", "datetime"),
    field("LastModifiedDate", "datetime"),
    field("SystemModstamp", "datetime"),
]


def describe(name: str, fields: list[dict[str, Any]]) -> SObjectDescribe:
    return SObjectDescribe.model_validate({"name": name, "fields": fields})


@pytest.fixture
def account() -> ObjectPlan:
    return plan_object(describe("Account", ACCOUNT_FIELDS))


# --- selection and cursor --------------------------------------------------------------------


def test_compound_parents_and_base64_are_left_out_components_kept(account: ObjectPlan) -> None:
    names = account.field_names
    assert names[0] == "Id"
    for dropped in ("BillingAddress", "Site__c", "Logo__c"):
        assert dropped not in names
    for kept in ("BillingStreet", "BillingPostalCode", "Site__Latitude__s", "Site__Longitude__s"):
        assert kept in names
    assert account.soql_select() == f"SELECT {', '.join(names)} FROM Account"


def test_formula_fields(account: ObjectPlan) -> None:
    assert account.formula_fields == ("Ratio__c",)
    assert plan_object(describe("Plain", [field("Id", "id")])).formula_fields == ()


@pytest.mark.parametrize(
    ("present", "cursor"),
    [
        (["SystemModstamp", "LastModifiedDate", "CreatedDate"], "SystemModstamp"),
        (["LastModifiedDate", "CreatedDate"], "LastModifiedDate"),  # e.g. *Share objects
        (["CreatedDate"], "CreatedDate"),  # append-only, e.g. AccountHistory
        ([], None),  # snapshot
    ],
)
def test_cursor_choice(present: list[str], cursor: str | None) -> None:
    fields = [field("Id", "id")] + [field(name, "datetime") for name in present]
    assert plan_object(describe("X", fields)).cursor_field == cursor


def test_history_object_uses_created_date() -> None:
    history = describe(
        "AccountHistory",
        [
            field("Id", "id"),
            field("AccountId", "reference"),
            field("Field", "picklist"),
            field("CreatedDate", "datetime"),
        ],
    )
    assert plan_object(history).cursor_field == "CreatedDate"


def test_cursor_must_be_a_filterable_sortable_datetime() -> None:
    fields = [
        FieldDescribe.model_validate(field("SystemModstamp", "datetime", filterable=False)),
        FieldDescribe.model_validate(field("LastModifiedDate", "date")),
        FieldDescribe.model_validate(field("CreatedDate", "datetime")),
    ]
    assert choose_cursor(fields) == "CreatedDate"


def test_object_without_id_cannot_be_captured() -> None:
    with pytest.raises(UncapturableObject, match="no Id field"):
        plan_object(describe("Weird", [field("Name", "string"), field("SystemModstamp", "datetime")]))


# --- coercion: one row, one document ---------------------------------------------------------

TRICKY_TEXT = 'Smith, "Jr."\nline two, naïve café 東京 ✓'

# (column, CSV cell, REST JSON value, document value)
ROW: list[tuple[str, str, Any, Any]] = [
    ("Id", "001000000000001AAA", "001000000000001AAA", "001000000000001AAA"),
    ("IsDeleted", "false", False, False),
    ("Name", TRICKY_TEXT, TRICKY_TEXT, TRICKY_TEXT),
    ("BillingStreet", "1 Main St\r\nSuite 5", "1 Main St\r\nSuite 5", "1 Main St\r\nSuite 5"),
    ("BillingPostalCode", "01234", "01234", "01234"),  # a ZIP stays text
    ("Site__Latitude__s", "37.7749", 37.7749, 37.7749),
    ("Site__Longitude__s", "-122", -122, -122.0),
    ("NumberOfEmployees", "42", 42, 42),
    ("AnnualRevenue", "1234.5", 1234.5, 1234.5),
    ("Score__c", "1.5E10", 1.5e10, 1.5e10),
    ("Share__c", "12.5", 12.5, 12.5),
    ("Active__c", "true", True, True),
    ("Founded__c", "2024-01-02", "2024-01-02", "2024-01-02"),
    ("Opens__c", "09:30:00.000Z", "09:30:00.000Z", "09:30:00.000Z"),
    ("Tier__c", "NA", "NA", "NA"),  # "NA" stays text
    ("Tags__c", "a;b;c", "a;b;c", "a;b;c"),
    ("Phone", "", None, None),
    ("Website", "", "", None),  # Salesforce has no empty strings: empty is null on both paths
    ("OwnerId", "005000000000001AAA", "005000000000001AAA", "005000000000001AAA"),
    ("Big__c", "9007199254740993", 9007199254740993, 9007199254740993),
    ("Ratio__c", "", None, None),
    ("CreatedDate", "2024-01-02T03:04:05.000Z", "2024-01-02T03:04:05.000+0000", "2024-01-02T03:04:05.000Z"),
    ("LastModifiedDate", "2024-01-02T03:04:05.123Z", "2024-01-02T03:04:05.123+0000", "2024-01-02T03:04:05.123Z"),
    ("SystemModstamp", "2024-06-30T23:59:59.999Z", "2024-06-30T23:59:59.999+0000", "2024-06-30T23:59:59.999Z"),
]


def csv_bytes(rows: list[list[str]], header: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


async def parse_csv(data: bytes, chunk: int = 7) -> list[dict[str, str]]:
    """Through the CDK's processor, as jobs.py reads Bulk results, in small chunks so quoted
    newlines and multi-byte characters straddle chunk boundaries."""

    async def chunks() -> AsyncGenerator[bytes, None]:
        for i in range(0, len(data), chunk):
            yield data[i : i + chunk]

    return [row async for row in IncrementalCSVProcessor(chunks())]


def rest_record(values: dict[str, Any]) -> dict[str, Any]:
    return {"attributes": {"type": "Account", "url": "/services/data/v62.0/sobjects/Account/001"}, **values}


def test_row_sample_covers_every_planned_column(account: ObjectPlan) -> None:
    assert [column for column, *_ in ROW] == account.field_names


@pytest.mark.asyncio
async def test_csv_and_json_give_identical_documents(account: ObjectPlan) -> None:
    expected = {column: doc for column, _, _, doc in ROW}
    [csv_row] = await parse_csv(csv_bytes([[cell for _, cell, _, _ in ROW]], account.field_names))
    from_csv = account.csv_transform()(csv_row)
    from_json = account.json_transform()(rest_record({column: value for column, _, value, _ in ROW}))

    assert from_csv == expected
    assert from_json == expected
    # Same types too (1 == 1.0 == True in Python, so compare them explicitly).
    assert {k: type(v) for k, v in from_csv.items()} == {k: type(v) for k, v in from_json.items()}
    assert type(from_csv["Site__Longitude__s"]) is float
    assert type(from_csv["NumberOfEmployees"]) is int
    assert from_csv["Name"] == TRICKY_TEXT
    assert list(from_csv) == list(from_json) == account.field_names  # same key order, no `attributes`


@pytest.mark.asyncio
async def test_header_order_does_not_matter(account: ObjectPlan) -> None:
    header = list(reversed(account.field_names))
    cells = {column: cell for column, cell, _, _ in ROW}
    [csv_row] = await parse_csv(csv_bytes([[cells[c] for c in header]], header))
    assert account.csv_transform()(csv_row) == {column: doc for column, _, _, doc in ROW}


@pytest.mark.asyncio
async def test_deleted_rows_become_deletions_on_both_paths(account: ObjectPlan) -> None:
    cells = {column: cell for column, cell, _, _ in ROW} | {"IsDeleted": "true"}
    values = {column: value for column, _, value, _ in ROW} | {"IsDeleted": True}
    [csv_row] = await parse_csv(csv_bytes([list(cells.values())], list(cells)))
    from_csv = account.csv_transform()(csv_row)
    from_json = account.json_transform()(rest_record(values))
    assert from_csv == from_json
    assert from_csv["_meta"] == {"op": "d"}
    assert from_csv["IsDeleted"] is True


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("2024-01-02T03:04:05.000Z", "2024-01-02T03:04:05.000Z"),
        ("2024-01-02T03:04:05.000+0000", "2024-01-02T03:04:05.000Z"),
        ("2024-01-02T03:04:05+00:00", "2024-01-02T03:04:05.000Z"),
        ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05.000Z"),
        ("2024-01-02T04:04:05.250+0100", "2024-01-02T03:04:05.250Z"),
    ],
)
def test_datetime_forms(given: str, normal: str) -> None:
    assert to_utc_millis(given) == normal
    plan = plan_object(describe("X", [field("Id", "id"), field("SystemModstamp", "datetime")]))
    assert plan.csv_transform()({"Id": "1", "SystemModstamp": given})["SystemModstamp"] == normal
    assert plan.json_transform()({"Id": "1", "SystemModstamp": given})["SystemModstamp"] == normal


def test_naive_datetime_is_an_error() -> None:
    with pytest.raises(ValueError):
        to_utc_millis("2024-01-02T03:04:05")


@pytest.mark.parametrize(
    ("column", "csv_cell", "json_value"),
    [
        ("Active__c", "TRUE", "true"),
        ("NumberOfEmployees", "4.5", 4.5),
        ("AnnualRevenue", "lots", "lots"),
        ("SystemModstamp", "yesterday", "yesterday"),
    ],
)
def test_bad_values_name_the_field(account: ObjectPlan, column: str, csv_cell: str, json_value: Any) -> None:
    cells = {c: cell for c, cell, _, _ in ROW} | {column: csv_cell}
    values = {c: value for c, _, value, _ in ROW} | {column: json_value}
    with pytest.raises(CoercionError) as from_csv:
        account.csv_transform()(cells)
    with pytest.raises(CoercionError) as from_json:
        account.json_transform()(rest_record(values))
    for caught in (from_csv.value, from_json.value):
        assert caught.field_name == column
        assert f"Account.{column}" in str(caught)


def test_json_booleans_are_not_numbers(account: ObjectPlan) -> None:
    values = {c: value for c, _, value, _ in ROW} | {"AnnualRevenue": True}
    with pytest.raises(CoercionError):
        account.json_transform()(rest_record(values))


def test_column_mismatch(account: ObjectPlan) -> None:
    cells = {c: cell for c, cell, _, _ in ROW}
    with pytest.raises(ColumnMismatch, match="missing \\['Name'\\]"):
        account.csv_transform()({c: v for c, v in cells.items() if c != "Name"})
    with pytest.raises(ColumnMismatch, match="unexpected \\['Surprise'\\]"):
        account.csv_transform()(cells | {"Surprise": "x"})
    with pytest.raises(ColumnMismatch):
        account.json_transform()(rest_record({c: v for c, _, v, _ in ROW if c != "Name"}))


# --- schema ----------------------------------------------------------------------------------


def test_schema_of_an_incremental_object(account: ObjectPlan) -> None:
    schema = account.json_schema()
    assert schema["title"] == "Account"
    assert schema["required"] == ["Id", "SystemModstamp"]
    props = schema["properties"]
    assert props["Id"] == {"type": "string"}
    assert props["SystemModstamp"] == {"type": "string", "format": "date-time"}
    assert props["CreatedDate"] == {"type": ["string", "null"], "format": "date-time"}
    assert props["Active__c"] == {"type": ["boolean", "null"]}
    assert props["NumberOfEmployees"] == {"type": ["integer", "null"]}
    assert props["AnnualRevenue"] == {"type": ["number", "null"]}
    assert props["Founded__c"] == {"type": ["string", "null"], "format": "date"}
    assert props["BillingPostalCode"] == {"type": ["string", "null"]}
    assert "BillingAddress" not in props
    assert "_meta" in props and schema["additionalProperties"] is True


def test_schema_of_a_snapshot_object() -> None:
    plan = plan_object(describe("TabDefinition", [field("Id", "id"), field("Name", "string")]))
    schema = plan.json_schema()
    assert plan.cursor_field is None
    assert "required" not in schema  # the CDK's deletion tombstones carry only _meta
