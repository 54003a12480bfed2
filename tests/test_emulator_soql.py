"""The emulator's SOQL subset: what it parses, how it filters, and Salesforce's errors (§6, §2.3)."""

from datetime import UTC, date, datetime

import pytest

from tests.emulator import EmulatorClient, EmulatorServer, Org, OrgConfig
from tests.emulator.binding import bind
from tests.emulator.results import ResultSet
from tests.emulator.soql import BoolOp, Compare, InList, Kind, SoqlError, parse

ORG = Org(OrgConfig(rows=200))
NO_SUCH_COLUMN = (
    "No such column 'Bogus' on entity 'Account'. If you are attempting to use a "
    "custom field, be sure to append the '__c' after the custom field name. Please "
    "reference your WSDL or the describe call for the appropriate names."
)


def ids(soql: str, include_deleted: bool = False, org: Org = ORG) -> list[str]:
    bound = bind(org, parse(soql))
    result = ResultSet(org, bound, org.snapshot(), include_deleted)
    id_field = bound.spec.field("Id")
    assert id_field is not None
    return [str(result.value(ref, id_field)) for ref in result.page(result.start(), 10**6).refs()]


def account_rows() -> list[dict[str, object]]:
    return ORG.live_rows("Account")


def modstamp(row: dict[str, object]) -> datetime:
    value = row["SystemModstamp"]
    assert isinstance(value, datetime)
    return value


@pytest.mark.parametrize(
    "literal",
    [
        "2022-03-04T05:06:07Z",
        "2022-03-04T05:06:07.000Z",
        "2022-03-04T05:06:07+00:00",
        "2022-03-04T07:06:07+0200",
    ],
)
def test_datetime_literals(literal: str) -> None:
    where = parse(f"SELECT Id FROM Account WHERE SystemModstamp >= {literal}").where

    assert isinstance(where, Compare) and where.value.kind is Kind.DATETIME
    assert where.value.value == datetime(2022, 3, 4, 5, 6, 7, tzinfo=UTC)


def test_other_literals_and_connectives() -> None:
    query = parse(
        "select Id from Account where (Name = 'O\\'Brien' or IsDeleted = TRUE) "
        "and LastActivityDate < 2024-01-01 and Industry in ('Retail', 'Energy') "
        "and NumberOfEmployees > -5 and Name != null order by Name desc nulls last limit 5"
    )

    assert isinstance(query.where, BoolOp) and query.where.op == "AND"
    either, day, industry, employees, name = query.where.parts
    assert isinstance(either, BoolOp) and either.op == "OR"
    assert isinstance(either.parts[0], Compare) and either.parts[0].value.value == "O'Brien"
    assert isinstance(day, Compare) and day.value.value == date(2024, 1, 1)
    assert isinstance(industry, InList) and [v.value for v in industry.values] == ["Retail", "Energy"]
    assert isinstance(employees, Compare) and employees.value.value == -5
    assert isinstance(name, Compare) and name.op == "!=" and name.value.kind is Kind.NULL
    assert query.order_by[0].descending and query.order_by[0].nulls_last and query.limit == 5


def test_id_and_timestamp_ranges_select_the_right_rows() -> None:
    rows = account_rows()
    low, high = str(rows[50]["Id"]), modstamp(rows[120])
    stamp = high.strftime("%Y-%m-%dT%H:%M:%SZ")

    selected = ids(f"SELECT Id FROM Account WHERE Id > '{low}' AND SystemModstamp <= {stamp} ORDER BY Id")
    assert selected == [r["Id"] for r in rows if str(r["Id"]) > low and modstamp(r) <= high]
    assert selected[0] == rows[51]["Id"] and selected[-1] == rows[120]["Id"]


def test_timeline_order_puts_shared_stamps_in_id_order() -> None:
    rows = account_rows()
    shared = [r for r in rows if r["SystemModstamp"] == rows[100]["SystemModstamp"]]
    stamp = modstamp(rows[100]).strftime("%Y-%m-%dT%H:%M:%SZ")

    assert len(shared) == 5  # OrgConfig.shared_modstamp_rows
    assert ids(f"SELECT Id FROM Account WHERE SystemModstamp = {stamp} ORDER BY SystemModstamp, Id") == [
        r["Id"] for r in shared
    ]


def test_residual_conditions_or_not_like_in() -> None:
    rows = account_rows()
    expected = [
        r["Id"]
        for r in rows
        if (r["Industry"] == "Retail" or r["Rating"] is None)
        and not str(r["Name"]).endswith("7")
        and r["Type"] in ("Partner", "Prospect")
    ]

    assert (
        ids(
            "SELECT Id FROM Account WHERE (Industry = 'RETAIL' OR Rating = null) "
            "AND NOT Name LIKE '%7' AND Type IN ('Partner', 'prospect')"
        )
        == expected
    )
    assert ids("SELECT Id FROM Account WHERE IsDeleted = false") == [r["Id"] for r in rows]
    assert ids("SELECT Id FROM Account WHERE IsDeleted = true") == []


@pytest.mark.parametrize(
    ("soql", "code", "reason", "column"),
    [
        ("SELECT Id FORM Account", "MALFORMED_QUERY", "unexpected token: 'FORM'", 11),
        ("SELECT Id FROM Account WHERE", "MALFORMED_QUERY", "unexpected token: '<EOF>'", 29),
        ("SELECT Id, Bogus FROM Account", "INVALID_FIELD", NO_SUCH_COLUMN, 12),
        (
            "SELECT Id FROM Acount",
            "INVALID_TYPE",
            "sObject type 'Acount' is not supported. If you are attempting to use a custom object, be "
            "sure to append the '__c' after the entity name. Please reference your WSDL or the describe "
            "call for the appropriate names.",
            16,
        ),
        (
            "SELECT Id FROM Account WHERE SystemModstamp > '2024-01-01T00:00:00Z'",
            "INVALID_FIELD",
            "value of filter criterion for field 'SystemModstamp' must be of type dateTime and should "
            "not be enclosed in quotes",
            47,
        ),
        (
            "SELECT Id FROM Account WHERE SystemModstamp > 2024-01-01",
            "INVALID_FIELD",
            "value of filter criterion for field 'SystemModstamp' must be of type dateTime and should "
            "not be enclosed in quotes",
            47,
        ),
        (
            "SELECT Id FROM Account WHERE Name = 5",
            "INVALID_FIELD",
            "value of filter criterion for field 'Name' must be of type string and should be enclosed "
            "in quotes",
            37,
        ),
        (
            "SELECT Id FROM Account WHERE Description = 'x'",
            "INVALID_FIELD",
            "field 'Description' can not be filtered in a query call",
            30,
        ),
        (
            "SELECT Id FROM Account ORDER BY Description",
            "INVALID_FIELD",
            "field 'Description' can not be sorted in a query call",
            33,
        ),
        ("SELECT Id, id FROM Account", "MALFORMED_QUERY", "duplicate field selected: Id", 12),
    ],
)
def test_errors_point_at_the_offending_token(soql: str, code: str, reason: str, column: int) -> None:
    with pytest.raises(SoqlError) as caught:
        bind(ORG, parse(soql))

    assert caught.value.error_code == code
    assert (
        caught.value.message == f"\n{soql}\n{' ' * (column - 1)}^\nERROR at Row:1:Column:{column}\n{reason}"
    )


@pytest.mark.parametrize(
    "soql",
    [
        "SELECT Owner.Name FROM Account",
        "SELECT Id FROM Account WHERE CreatedDate = TODAY",
        "SELECT Id FROM Account WHERE Id IN (SELECT AccountId FROM Contact)",
        "SELECT Id FROM Account WITH SECURITY_ENFORCED",
    ],
)
def test_what_the_emulator_does_not_implement_fails_loudly(soql: str) -> None:
    with pytest.raises(SoqlError) as caught:
        parse(soql)

    assert caught.value.error_code == "MALFORMED_QUERY"
    assert "The emulator does not implement" in caught.value.message


def test_rest_answers_soql_errors_as_400_arrays(emulator: EmulatorServer) -> None:
    client = EmulatorClient(emulator.url)
    client.login()

    reply = client.query("SELECT Id, Bogus FROM Account")
    assert reply.status == 400
    assert reply.json() == [
        {
            "message": f"\nSELECT Id, Bogus FROM Account\n           ^\n"
            f"ERROR at Row:1:Column:12\n{NO_SUCH_COLUMN}",
            "errorCode": "INVALID_FIELD",
        }
    ]
