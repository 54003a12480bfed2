"""fields.CsvTransform.for_header: the compiled positional row function jobs.py uses gives exactly
the documents of a plain loop over the plan's column converters, whatever the header's order,
with errors that name the column."""

from typing import Any

import pytest

from source_bulk_export.fields import CoercionError, ColumnMismatch, ObjectPlan, plan_object
from tests.test_fields import ACCOUNT_FIELDS, ROW, describe, field


@pytest.fixture
def account() -> ObjectPlan:
    return plan_object(describe("Account", ACCOUNT_FIELDS))


def typed(doc: dict[str, Any]) -> list[tuple[str, type, Any]]:
    """Keys in order, each value with its exact type (True == 1 == 1.0 in Python)."""
    return [(key, type(value), value) for key, value in doc.items()]


def both_ways(plan: ObjectPlan, cells: dict[str, str], header: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The document by the plan's converters, one column at a time (the oracle), and the one the
    compiled function makes of the same cells laid out under `header`."""
    by_name: dict[str, Any] = {}
    for column in plan.fields:
        cell = cells[column.name]
        by_name[column.name] = None if not cell else cell if column.csv is None else column.csv(cell)
    if plan.has_deleted_flag and by_name["IsDeleted"]:
        by_name["_meta"] = {"op": "d"}
    by_position = plan.csv_transform().for_header(header)([cells[column] for column in header])
    return by_name, by_position


@pytest.mark.parametrize("order", ["plan", "reversed"])
def test_positional_rows_equal_named_rows(account: ObjectPlan, order: str) -> None:
    cells = {column: cell for column, cell, _, _ in ROW}
    header = account.field_names if order == "plan" else list(reversed(account.field_names))
    by_name, by_position = both_ways(account, cells, header)
    assert typed(by_position) == typed(by_name)
    assert list(by_position) == account.field_names  # plan order whatever the header's


@pytest.mark.parametrize(
    ("column", "cell"),
    [
        ("SystemModstamp", "2024-01-02T04:04:05.250+0100"),  # not Bulk's own form: normalised
        ("SystemModstamp", "2024-01-02T03:04:05Z"),
        ("CreatedDate", ""),
        ("Active__c", ""),
        ("Active__c", "false"),
        ("IsDeleted", "true"),  # a deletion: `_meta` too
        ("Name", ""),
        ("NumberOfEmployees", ""),
    ],
)
def test_every_cell_form_converts_the_same(account: ObjectPlan, column: str, cell: str) -> None:
    cells = {c: value for c, value, _, _ in ROW} | {column: cell}
    by_name, by_position = both_ways(account, cells, account.field_names)
    assert typed(by_position) == typed(by_name)


@pytest.mark.parametrize(
    ("column", "cell"),
    [
        ("Active__c", "TRUE"),
        ("NumberOfEmployees", "4.5"),
        ("AnnualRevenue", "lots"),
        ("SystemModstamp", "yesterday"),
        ("SystemModstamp", "2024-01-02T03:04:05.000X"),
    ],
)
def test_bad_values_name_the_field(account: ObjectPlan, column: str, cell: str) -> None:
    cells = {c: value for c, value, _, _ in ROW} | {column: cell}
    row = account.csv_transform().for_header(account.field_names)
    with pytest.raises(CoercionError) as caught:
        row([cells[c] for c in account.field_names])
    assert caught.value.field_name == column


def test_header_is_checked_once_per_page(account: ObjectPlan) -> None:
    transform = account.csv_transform()
    with pytest.raises(ColumnMismatch, match="missing \\['Name'\\]"):
        transform.for_header([c for c in account.field_names if c != "Name"])
    with pytest.raises(ColumnMismatch, match="unexpected \\['Surprise'\\]"):
        transform.for_header([*account.field_names, "Surprise"])
    with pytest.raises(ColumnMismatch, match="repeats"):
        transform.for_header([*account.field_names[:-1], "Name"])


def test_column_names_are_data_not_code() -> None:
    odd = "x' : __import__('os').getcwd(), 'y"
    plan = plan_object(describe("Odd", [field("Id", "id"), field(odd, "string"), field("SystemModstamp", "datetime")]))
    header = ["Id", odd, "SystemModstamp"]
    doc = plan.csv_transform().for_header(header)(["1", "v", "2024-01-02T03:04:05.000Z"])
    assert doc == {"Id": "1", odd: "v", "SystemModstamp": "2024-01-02T03:04:05.000Z"}
