"""REST query / queryAll as the emulator serves them (salesforce-api.md §5.1)."""

import re
from collections.abc import Iterator

import pytest

from tests.emulator import EmulatorClient, EmulatorServer, Org, OrgConfig
from tests.emulator.org import expected_document

ROWS = 200


@pytest.fixture
def client(emulator: EmulatorServer) -> EmulatorClient:
    client = EmulatorClient(emulator.url)
    client.login()
    return client


def all_pages(
    client: EmulatorClient, soql: str, all_rows: bool = False, batch_size: int | None = None
) -> list[dict[str, object]]:
    """Every page's body, following nextRecordsUrl verbatim."""
    pages = [client.query(soql, all_rows, batch_size).json()]
    while not pages[-1]["done"]:
        headers = {"Sforce-Query-Options": f"batchSize={batch_size}"} if batch_size else {}
        pages.append(client.get(str(pages[-1]["nextRecordsUrl"]), headers=headers).json())
    return pages


def test_query_pages_with_next_records_url(emulator: EmulatorServer, client: EmulatorClient) -> None:
    emulator.org.burst("Account", 250)
    pages = all_pages(client, "SELECT Id, Name FROM Account", batch_size=200)

    assert [len(p["records"]) for p in pages] == [200, 200, 50]  # type: ignore[arg-type]
    assert all(p["totalSize"] == ROWS + 250 for p in pages)
    assert [p["done"] for p in pages] == [False, False, True]
    assert "nextRecordsUrl" not in pages[-1]
    assert re.fullmatch(r"/services/data/v62\.0/query/01g\w{15}-200", str(pages[0]["nextRecordsUrl"]))
    assert str(pages[1]["nextRecordsUrl"]).endswith("-400")
    ids = [r["Id"] for p in pages for r in p["records"]]  # type: ignore[attr-defined]
    assert ids == [r["Id"] for r in emulator.org.live_rows("Account")]


def test_records_carry_attributes_and_json_values(emulator: EmulatorServer, client: EmulatorClient) -> None:
    body = client.query(
        "SELECT Id, IsDeleted, AnnualRevenue, NumberOfEmployees, "
        "LastActivityDate, SystemModstamp, BillingAddress FROM Account LIMIT 1"
    ).json()

    record = body["records"][0]
    truth = emulator.org.live_rows("Account")[0]
    assert record["attributes"] == {
        "type": "Account",
        "url": f"/services/data/v62.0/sobjects/Account/{truth['Id']}",
    }
    assert list(record) == [
        "attributes",
        "Id",
        "IsDeleted",
        "AnnualRevenue",
        "NumberOfEmployees",
        "LastActivityDate",
        "SystemModstamp",
        "BillingAddress",
    ]
    assert record["SystemModstamp"] == "2019-01-01T00:00:00.000+0000"
    assert record["IsDeleted"] is False
    assert record["BillingAddress"]["city"] == truth["BillingCity"]
    document = expected_document(emulator.org.spec("Account"), truth)
    for name in ("AnnualRevenue", "NumberOfEmployees", "LastActivityDate"):
        assert record[name] == document[name]


def test_base64_fields_are_blob_urls(client: EmulatorClient) -> None:
    record = client.query("SELECT Id, Body FROM Attachment LIMIT 1").json()["records"][0]

    assert record["Body"] == f"/services/data/v62.0/sobjects/Attachment/{record['Id']}/Body"


@pytest.fixture(scope="module")
def contacts() -> Iterator[EmulatorClient]:
    with EmulatorServer(Org(OrgConfig(rows=10, object_rows={"Contact": 2100}))) as emu:
        client = EmulatorClient(emu.url)
        client.login()
        yield client


@pytest.mark.parametrize(("asked", "served"), [(None, 2000), (50, 200), (500, 500), (5000, 2000)])
def test_batch_size_is_clamped(contacts: EmulatorClient, asked: int | None, served: int) -> None:
    body = contacts.query("SELECT Id FROM Contact", batch_size=asked).json()

    assert len(body["records"]) == served and body["totalSize"] == 2100


def test_query_all_returns_deleted_rows_query_does_not(
    emulator: EmulatorServer, client: EmulatorClient
) -> None:
    victim = str(emulator.org.live_rows("Account")[10]["Id"])
    emulator.org.delete("Account", victim)

    live = all_pages(client, "SELECT Id, IsDeleted FROM Account")
    every = all_pages(client, "SELECT Id, IsDeleted FROM Account", all_rows=True, batch_size=200)
    live_ids = [r["Id"] for p in live for r in p["records"]]  # type: ignore[attr-defined]
    deleted = [r for p in every for r in p["records"] if r["IsDeleted"]]  # type: ignore[attr-defined]
    assert victim not in live_ids and live[0]["totalSize"] == ROWS - 1
    assert [r["Id"] for r in deleted] == [victim] and every[0]["totalSize"] == ROWS


def test_query_all_cursor_keeps_query_all_semantics(emulator: EmulatorServer, client: EmulatorClient) -> None:
    emulator.org.burst("Account", 50)
    ids = [str(r["Id"]) for r in emulator.org.live_rows("Account")]
    emulator.org.delete("Account", ids[-1])

    pages = all_pages(client, "SELECT Id FROM Account", all_rows=True, batch_size=200)
    assert "/query/" in str(pages[0]["nextRecordsUrl"])
    assert pages[-1]["records"][-1]["Id"] == ids[-1]  # type: ignore[index]


def test_count_offset_and_order(emulator: EmulatorServer, client: EmulatorClient) -> None:
    count = client.query("SELECT COUNT() FROM Account WHERE Industry = 'Retail'").json()
    names = client.query("SELECT Name FROM Account ORDER BY Name DESC LIMIT 3 OFFSET 1").json()

    retail = [r for r in emulator.org.live_rows("Account") if r["Industry"] == "Retail"]
    assert count == {"totalSize": len(retail), "done": True, "records": []}
    assert [r["Name"] for r in names["records"]] == ["Acme 0000198", "Acme 0000197", "Acme 0000196"]
    assert names["totalSize"] == 3


def test_cursor_snapshot_ignores_later_mutations(emulator: EmulatorServer, client: EmulatorClient) -> None:
    first = client.query("SELECT Id, Name FROM Account", batch_size=200).json()
    emulator.org.insert("Account", {"Name": "After the cursor"})
    emulator.org.update("Account", str(emulator.org.live_rows("Account")[-2]["Id"]), {"Name": "X"})

    assert first["done"] is True and first["totalSize"] == ROWS
    second = client.query("SELECT Id, Name FROM Account", batch_size=200).json()
    assert second["totalSize"] == ROWS + 1


def test_invalid_query_locator(client: EmulatorClient) -> None:
    reply = client.get("/query/01gEm0000000999IAA-2000")

    assert reply.status == 400
    assert reply.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_missing_query_string(client: EmulatorClient) -> None:
    reply = client.get("/query")

    assert reply.status == 400 and reply.json()[0]["errorCode"] == "MALFORMED_QUERY"


def test_queryable_rest_objects_that_bulk_rejects(client: EmulatorClient) -> None:
    body = client.query("SELECT MasterLabel, SortOrder, IsClosed FROM CaseStatus ORDER BY SortOrder").json()

    assert [r["MasterLabel"] for r in body["records"]] == [
        "New",
        "Working",
        "Escalated",
        "On Hold",
        "Closed",
        "Resolved",
    ]


def test_non_queryable_object(client: EmulatorClient) -> None:
    reply = client.query("SELECT Id FROM ActivityHistory")

    assert reply.status == 400
    assert reply.json() == [
        {
            "message": "entity type ActivityHistory does not support query",
            "errorCode": "INVALID_TYPE_FOR_OPERATION",
        }
    ]
