"""Type fidelity: one row, one document, whichever path it took (design.md "Documents").

Every object of the emulator's seeded org that both paths can read is read twice, in-process
against the emulator over real HTTP: once as a Bulk export (CSV, gzip, several result pages,
`plan.csv_transform()`) and once through REST (JSON, `plan.json_transform()`), each with the
plan the connector builds from the describe it fetches. The two document lists must be equal
value for value *and type for type* (`True` is not `1`, `1.0` is not `1`), and equal to the
emulator's `expected_documents`, the truth. tests/test_fields.py pins the same per type on
hand-written cells; this pins it on the wire, for every field of every object.
"""

import logging
import re
from collections.abc import AsyncIterator, Iterator
from datetime import date
from typing import Any

import pytest
import pytest_asyncio

from source_bulk_export.auth import SalesforceSession
from source_bulk_export.fields import Document, ObjectPlan
from source_bulk_export.job_errors import BulkUnsupportedError
from source_bulk_export.jobs import BulkJobs
from source_bulk_export.models import EndpointConfig
from source_bulk_export.resources import connect, discover_objects
from source_bulk_export.rest import RestQuery
from tests.capture_support import bulk_jobs, completed_job, emulator_config, salesforce_session
from tests.emulator import EmulatorServer, Org, OrgConfig

LOG = logging.getLogger("test_fidelity")

# Enough rows that the seeded value pools show every tricky text (TRICKY_TEXT has 14 values)
# and nulls on nullable fields, few enough to stay quick on a shared 2-core machine.
ROWS = 120
# Rows per Bulk result page: every large object spans several pages (and gzip bodies).
PAGE_ROWS = 50
# Objects the emulator's Bulk API refuses at job creation (INVALIDENTITY); REST still reads them.
BULK_REJECTED = {"CaseStatus"}
# Values a sloppy CSV or JSON path changes: delimiters, quotes, bare CR, CRLF, leading and
# trailing whitespace, Unicode line separators, a BOM, strings that look like numbers, nulls or
# formulas, characters from several planes, and one long value (textarea limit, 32,000).
EDGE_TEXT = (
    "\r", "a\rb", "\n", "ends with CRLF\r\n", 'ends with a quote"', '"starts with one', " ", '""',
    "\u2028line\u0085separators\u2029", "\ufeffBOM", "tab\t", "\\back\\slash", "=1+2", "#N/A", "true", "0",
    "1e3", "ß" * 3_000 + "🚀", "z" * 32_000,
)  # fmt: skip
# Numbers at the edges of float printing and int range (every one round-trips through repr).
EDGE_OPPORTUNITIES = (
    {"Amount": 0.0, "Probability": 0.0, "TotalOpportunityQuantity": 1e-7, "IsClosed": False, "NextStep": None},
    {"Amount": -0.5, "Probability": 100.0, "TotalOpportunityQuantity": 0.1 + 0.2, "IsClosed": True},
    {"Amount": 1e15, "Probability": 12.5, "TotalOpportunityQuantity": 123456789.125, "NextStep": ",,,"},
)
EDGE_ACCOUNTS = ({"NumberOfEmployees": 0}, {"NumberOfEmployees": 2**31 - 1}, {"NumberOfEmployees": -1})


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(Org(OrgConfig(rows=ROWS))) as server:
        org = server.org
        for text in EDGE_TEXT:
            org.insert("Contact", {"Description": text, "Title": text[:128], "FirstName": None})
        for opportunity in EDGE_OPPORTUNITIES:
            org.insert("Opportunity", opportunity)
        for account in EDGE_ACCOUNTS:
            org.insert("Account", account)
        yield server


@pytest_asyncio.fixture
async def session(emu: EmulatorServer) -> AsyncIterator[SalesforceSession]:
    async with salesforce_session(emu, LOG) as session:
        yield session


@pytest.fixture
def csv_nulls_quoted(emu: EmulatorServer, request: pytest.FixtureRequest) -> Iterator[bool]:
    """The emulator knob for the test's parameter, restored afterwards (the server is shared)."""
    emu.knobs.csv_null_as_quoted_empty = request.param
    try:
        yield request.param
    finally:
        emu.knobs.csv_null_as_quoted_empty = False


async def discovered_plans(emu: EmulatorServer, session: SalesforceSession) -> list[ObjectPlan]:
    """The plans discovery builds: describe-global, then each object's describe (resources.py)."""
    config = EndpointConfig.model_validate(emulator_config(emu))
    discovery = await discover_objects(LOG, session, await connect(LOG, session, config))
    return discovery.plans


async def via_bulk(bulk: BulkJobs, plan: ObjectPlan, soql: str, operation: str = "query") -> list[Document]:
    job = await completed_job(bulk, LOG, soql, plan.name, operation)  # type: ignore[arg-type]
    docs: list[Document] = []
    async for page in bulk.results(LOG, job, plan.csv_transform()):
        docs.extend([doc async for doc in page.rows])
    return docs


async def via_rest(rest: RestQuery, plan: ObjectPlan, soql: str, include_deleted: bool = False) -> list[Document]:
    return [doc async for doc in rest.query(LOG, soql, plan.json_transform(), include_deleted=include_deleted)]


async def null_cells_on_the_wire(session: SalesforceSession) -> str:
    """How a raw Bulk result page writes UserRole's null ParentRoleId cells: "" or '""'."""
    job = await completed_job(bulk_jobs(session), LOG, "SELECT Id, ParentRoleId FROM UserRole WHERE ParentRoleId = NULL",
                              "UserRole")
    body = (await session.request(LOG, f"/jobs/query/{job.id}/results", headers={"Accept": "text/csv"})).decode()
    cells = {match[1] for match in re.finditer(r",([^,\n]*)\n", body.split("\n", 1)[1])}
    assert len(cells) == 1 and job.numberRecordsProcessed > 0, body
    return cells.pop()


def typed(doc: Document) -> dict[str, tuple[type, Any]]:
    """A document with each value paired with its exact type: `==` alone has True == 1 == 1.0."""
    return {key: (type(value), typed(value) if isinstance(value, dict) else value) for key, value in doc.items()}


def typed_list(docs: list[Document]) -> list[dict[str, tuple[type, Any]]]:
    return [typed(doc) for doc in docs]


def first_difference(left: list[Document], right: list[Document]) -> str:
    if len(left) != len(right):
        return f"{len(left)} documents vs {len(right)}"
    for a, b in zip(left, right, strict=True):
        if typed(a) != typed(b):
            keys = sorted(k for k in set(a) | set(b) if typed(a).get(k) != typed(b).get(k))
            diff = {k: (a.get(k, "<missing>"), b.get(k, "<missing>")) for k in keys}
            return f"Id {a.get('Id')}: {diff}"
    return "no difference"


async def both_paths(emu: EmulatorServer, session: SalesforceSession) -> dict[str, tuple[list[Document], ...]]:
    """Every discovered object read both ways ({name: (bulk, rest)}), Bulk-rejected ones skipped."""
    bulk = bulk_jobs(session, max_records=PAGE_ROWS)
    rest = RestQuery(session)
    read: dict[str, tuple[list[Document], ...]] = {}
    rejected: set[str] = set()
    for plan in await discovered_plans(emu, session):
        soql = f"{plan.soql_select()} ORDER BY Id"
        try:
            bulk_docs = await via_bulk(bulk, plan, soql)
        except BulkUnsupportedError:
            rejected.add(plan.name)
            continue
        read[plan.name] = (bulk_docs, await via_rest(rest, plan, soql))
    assert rejected == BULK_REJECTED
    return read


@pytest.mark.asyncio
@pytest.mark.parametrize("csv_nulls_quoted", [False, True], ids=["null-empty", "null-quoted"], indirect=True)
async def test_bulk_and_rest_documents_are_identical(
    emu: EmulatorServer, session: SalesforceSession, csv_nulls_quoted: bool
) -> None:
    read = await both_paths(emu, session)
    # The knob is in force: the wire really carries the null form under test.
    assert await null_cells_on_the_wire(session) == ('""' if csv_nulls_quoted else "")

    # Every object the connector discovers and Bulk accepts, including the snapshot object
    # (UserRole), the append-only one (AccountHistory, anyType fields) and the formula one.
    assert set(read) == {"Account", "Contact", "Opportunity", "BenchRecord__c", "Invoice__c", "AccountHistory",
                         "UserRole", "Attachment"}
    failures = []
    for name, (bulk_docs, rest_docs) in read.items():
        expected = [dict(doc) for doc in emu.org.expected_documents(name)]
        assert expected, name
        if typed_list(bulk_docs) != typed_list(rest_docs):
            failures.append(f"{name}: Bulk vs REST: {first_difference(bulk_docs, rest_docs)}")
        if typed_list(bulk_docs) != typed_list(expected):
            failures.append(f"{name}: Bulk vs the org: {first_difference(bulk_docs, expected)}")
    assert not failures, "\n".join(failures)

    # The comparison is only as good as what it covered: every coerced type, nulls, and every
    # text a CSV or JSON path could mangle, each seen in documents.
    values = [value for bulk_docs, _ in read.values() for doc in bulk_docs for value in doc.values()]
    assert {type(v) for v in values} == {str, bool, int, float, type(None)}
    assert {True, False} <= {v for v in values if type(v) is bool}
    strings = {v for v in values if type(v) is str}
    for text in (*EDGE_TEXT, 'Zürich, "HQ"\nline 2', "first line\r\nsecond line", "Rocket 🚀 launch, phase 2",
                 "  padded  ", "null", "NA", "01234"):
        assert text in strings, repr(text)
    contact = {doc["Id"]: doc for doc in read["Contact"][0]}
    assert any(doc["FirstName"] is None and doc["Description"] == "z" * 32_000 for doc in contact.values())
    opportunities = read["Opportunity"][0]
    for edge in EDGE_OPPORTUNITIES:
        assert any(all(typed(doc)[k] == typed(edge)[k] for k in edge) for doc in opportunities), edge
    # Dates and datetimes: `YYYY-MM-DD` and `YYYY-MM-DDTHH:MM:SS.sssZ` (UTC, milliseconds).
    account = read["Account"][0][0]
    assert date.fromisoformat(account["LastActivityDate"]).isoformat() == account["LastActivityDate"]
    assert len(account["SystemModstamp"]) == 24 and account["SystemModstamp"].endswith(".000Z")


@pytest.mark.asyncio
async def test_the_bulk_rejected_object_reads_right_through_rest(emu: EmulatorServer, session: SalesforceSession) -> None:
    (plan,) = [p for p in await discovered_plans(emu, session) if p.name in BULK_REJECTED]
    docs = await via_rest(RestQuery(session), plan, f"{plan.soql_select()} ORDER BY Id")
    assert typed_list(docs) == typed_list([dict(d) for d in emu.org.expected_documents(plan.name)])


@pytest.mark.asyncio
@pytest.mark.parametrize("obj", ["Contact", "Invoice__c"])
async def test_a_soft_deleted_row_is_the_same_deletion_on_both_paths(
    emu: EmulatorServer, session: SalesforceSession, obj: str
) -> None:
    values = {"Description": 'gone, "for good"\r\nbye'} if obj == "Contact" else {"Notes__c": "Zürich, 🚀"}
    record = emu.org.insert(obj, values)
    emu.org.delete(obj, record)
    (plan,) = [p for p in await discovered_plans(emu, session) if p.name == obj]
    soql = f"{plan.soql_select()} WHERE Id = '{record}'"

    bulk_docs = await via_bulk(bulk_jobs(session), plan, soql, "queryAll")
    rest_docs = await via_rest(RestQuery(session), plan, soql, include_deleted=True)

    (expected,) = [dict(d) for d in emu.org.expected_documents(obj, include_deleted=True) if d["Id"] == record]
    assert expected["IsDeleted"] is True
    assert typed_list(bulk_docs) == typed_list(rest_docs) == typed_list([{**expected, "_meta": {"op": "d"}}])
    # query (not queryAll) no longer sees it, on either path.
    assert await via_rest(RestQuery(session), plan, soql) == []
    assert await via_bulk(bulk_jobs(session), plan, soql) == []
