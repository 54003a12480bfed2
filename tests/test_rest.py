"""Unit tests of the REST query pager against a scripted session."""

import json
import logging
from typing import Any

import pytest

from source_bulk_export.rest import RestCountMismatchError, RestQuery
from tests.fakes import FakeSession, sf_error

LOG = logging.getLogger("test_rest")
SOQL = "SELECT Id, Name, IsDeleted FROM Account WHERE SystemModstamp > 2024-01-01T00:00:00Z ORDER BY SystemModstamp, Id"
NEXT_1 = "/services/data/v62.0/query/01gD0000002HU6KIAW-2"
NEXT_2 = "/services/data/v62.0/query/01gD0000002HU6KIAW-4"


def record(i: int, deleted: bool = False) -> dict[str, Any]:
    return {
        "attributes": {"type": "Account", "url": f"/services/data/v62.0/sobjects/Account/001{i:015d}"},
        "Id": f"001{i:015d}",
        "Name": f"Name {i}",
        "IsDeleted": deleted,
    }


def page(records: list[dict[str, Any]], total: int, next_url: str | None) -> bytes:
    body: dict[str, Any] = {"totalSize": total, "done": next_url is None, "records": records}
    if next_url is not None:
        body["nextRecordsUrl"] = next_url
    return json.dumps(body).encode()


def script_three_pages(session: FakeSession, path: str) -> None:
    session.script("GET", path, page([record(0), record(1)], 5, NEXT_1))
    session.script("GET", NEXT_1, page([record(2), record(3, deleted=True)], 5, NEXT_2))
    session.script("GET", NEXT_2, page([record(4)], 5, None))


@pytest.mark.asyncio
async def test_pages_follow_next_records_url_verbatim() -> None:
    session = FakeSession()
    script_three_pages(session, "/query")

    result = await RestQuery(session).open(LOG, SOQL, lambda r: r, include_deleted=False)  # type: ignore[arg-type]

    assert result.total_size == 5
    assert len(session.calls) == 1  # the size is known before any record is read past page one
    records = [r async for r in result.records]
    assert [r["Id"] for r in records] == [f"001{i:015d}" for i in range(5)]
    assert [c.path for c in session.calls] == ["/query", NEXT_1, NEXT_2]
    assert session.calls[0].params == {"q": SOQL}
    assert all(c.headers == {"Sforce-Query-Options": "batchSize=2000"} for c in session.calls)


@pytest.mark.asyncio
async def test_query_all_and_batch_size() -> None:
    session = FakeSession()
    script_three_pages(session, "/queryAll")

    records = [
        r
        async for r in RestQuery(session).query(  # type: ignore[arg-type]
            LOG, SOQL, lambda r: r, include_deleted=True, batch_size=500
        )
    ]

    assert session.calls[0].path == "/queryAll"
    assert session.calls[0].headers == {"Sforce-Query-Options": "batchSize=500"}
    assert [r["IsDeleted"] for r in records] == [False, False, False, True, False]


@pytest.mark.asyncio
async def test_transform_sees_records_without_attributes() -> None:
    session = FakeSession()
    script_three_pages(session, "/query")
    seen: list[dict[str, Any]] = []

    def transform(r: dict[str, Any]) -> str:
        seen.append(dict(r))
        return str(r["Name"]).upper()

    names = [n async for n in RestQuery(session).query(LOG, SOQL, transform, include_deleted=False)]  # type: ignore[arg-type]

    assert names == [f"NAME {i}" for i in range(5)]
    assert all("attributes" not in r for r in seen)
    assert set(seen[0]) == {"Id", "Name", "IsDeleted"}


@pytest.mark.asyncio
async def test_empty_result() -> None:
    session = FakeSession()
    session.script("GET", "/query", page([], 0, None))
    result = await RestQuery(session).open(LOG, SOQL, lambda r: r, include_deleted=False)  # type: ignore[arg-type]
    assert result.total_size == 0
    assert [r async for r in result.records] == []


@pytest.mark.asyncio
async def test_missing_records_are_an_error() -> None:
    session = FakeSession()
    session.script("GET", "/query", page([record(0), record(1)], 3, None))
    with pytest.raises(RestCountMismatchError) as raised:
        [r async for r in RestQuery(session).query(LOG, SOQL, lambda r: r, include_deleted=False)]  # type: ignore[arg-type]
    assert (raised.value.total_size, raised.value.received) == (3, 2)


@pytest.mark.asyncio
async def test_errors_propagate_and_batch_size_is_checked() -> None:
    session = FakeSession()
    error = sf_error(400, "INVALID_FIELD", "No such column 'Foo__c' on entity 'Account'")
    session.script("GET", "/query", error)
    with pytest.raises(type(error)):
        await RestQuery(session).open(LOG, SOQL, lambda r: r, include_deleted=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await RestQuery(session).open(LOG, SOQL, lambda r: r, include_deleted=False, batch_size=100)  # type: ignore[arg-type]
