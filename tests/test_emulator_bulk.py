"""Bulk API 2.0 query jobs as the emulator serves them (salesforce-api.md §4)."""

import gzip
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.emulator import EmulatorClient, EmulatorServer, Knobs, ManualClock, Org, OrgConfig
from tests.emulator.ids import record_id
from tests.emulator.org import expected_document

NOT_FOUND = [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}]
ROWS = 200  # rows per large object in the conftest emulator


@pytest.fixture
def client(emulator: EmulatorServer) -> EmulatorClient:
    client = EmulatorClient(emulator.url)
    client.login()
    return client


def create(client: EmulatorClient, soql: str, operation: str = "query", **options: str) -> str:
    reply = client.create_job(soql, operation, **options)
    assert reply.status == 200, reply.body
    return reply.json()["id"]  # type: ignore[no-any-return]


def state(client: EmulatorClient, job_id: str) -> str:
    return client.get(f"/jobs/query/{job_id}").json()["state"]  # type: ignore[no-any-return]


def test_create_answers_job_info_upload_complete(client: EmulatorClient) -> None:
    reply = client.create_job("SELECT Id, Name FROM Account")

    info = reply.json()
    assert reply.status == 200
    assert set(info) == {
        "id",
        "operation",
        "object",
        "createdById",
        "createdDate",
        "systemModstamp",
        "state",
        "concurrencyMode",
        "contentType",
        "apiVersion",
        "lineEnding",
        "columnDelimiter",
    }
    assert info["id"].startswith("750") and len(info["id"]) == 18
    assert (info["state"], info["object"], info["operation"]) == ("UploadComplete", "Account", "query")
    assert info["apiVersion"] == 62.0 and isinstance(info["apiVersion"], float)
    assert (info["lineEnding"], info["columnDelimiter"], info["contentType"]) == ("LF", "COMMA", "CSV")
    assert info["createdDate"].endswith(".000+0000")


def test_job_completes_on_the_second_poll_by_default(client: EmulatorClient) -> None:
    job_id = create(client, "SELECT Id FROM Account")

    first = client.get(f"/jobs/query/{job_id}").json()
    second = client.get(f"/jobs/query/{job_id}").json()
    assert first["state"] == "InProgress" and first["numberRecordsProcessed"] == 0
    assert second["state"] == "JobComplete"
    assert second["numberRecordsProcessed"] == ROWS
    assert second["jobType"] == "V2Query" and second["retries"] == 0
    assert second["totalProcessingTime"] >= 0 and "errorMessage" not in second


@pytest.mark.parametrize("polls", [0, 3])
def test_in_progress_poll_count_knob(emulator: EmulatorServer, client: EmulatorClient, polls: int) -> None:
    emulator.knobs.job_in_progress_polls = polls
    job_id = create(client, "SELECT Id FROM Account")

    states = [state(client, job_id) for _ in range(polls + 1)]
    assert states == ["InProgress"] * polls + ["JobComplete"]


def test_in_progress_seconds_knob() -> None:
    clock = ManualClock(datetime(2025, 1, 1, tzinfo=UTC))
    knobs = Knobs(job_in_progress_polls=0, job_in_progress_seconds=30)
    with EmulatorServer(Org(OrgConfig(rows=10), clock), knobs) as emu:
        client = EmulatorClient(emu.url)
        client.login()
        job_id = create(client, "SELECT Id FROM Account")

        assert [state(client, job_id) for _ in range(3)] == ["InProgress"] * 3
        clock.advance(30)
        assert state(client, job_id) == "JobComplete"


def test_results_before_completion_are_412(client: EmulatorClient) -> None:
    job_id = create(client, "SELECT Id FROM Account")

    before_poll = client.results(job_id)
    state(client, job_id)
    in_progress = client.results(job_id)
    assert before_poll.status == in_progress.status == 412
    assert before_poll.json()[0]["errorCode"] == "JOB_NOT_COMPLETE"
    assert in_progress.json()[0]["message"].endswith("Current status: IN_PROGRESS")


def test_pages_follow_locators_to_null(emulator: EmulatorServer, client: EmulatorClient) -> None:
    job_id = client.run_job("SELECT Id, Name FROM Account")

    pages, locator = [], None
    while locator != "null":
        reply = client.results(job_id, locator, max_records=75)
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "text/csv; charset=UTF-8"
        assert "api-usage=" in reply.headers["Sforce-Limit-Info"]
        pages.append(reply)
        locator = reply.headers["Sforce-Locator"]

    assert [p.headers["Sforce-NumberOfRecords"] for p in pages] == ["75", "75", "50"]
    assert all(p.csv()[0] == ["Id", "Name"] for p in pages)  # a header row on every page
    assert all(p.body.startswith(b'"Id","Name"\n') for p in pages)
    ids = [row[0] for p in pages for row in p.csv()[1:]]
    assert ids == [r["Id"] for r in emulator.org.live_rows("Account")]
    locators = [p.headers["Sforce-Locator"] for p in pages]
    assert len(set(locators)) == 3 and all(loc.isalnum() for loc in locators[:2])


def test_a_locator_can_be_fetched_again(client: EmulatorClient) -> None:
    job_id = client.run_job("SELECT Id, Name FROM Account")
    locator = client.results(job_id, max_records=60).headers["Sforce-Locator"]

    first = client.results(job_id, locator, max_records=60)
    again = client.results(job_id, locator, max_records=60)
    assert first.body == again.body
    assert first.headers["Sforce-Locator"] == again.headers["Sforce-Locator"]


def test_unknown_locator_is_rejected(client: EmulatorClient) -> None:
    job_id = client.run_job("SELECT Id FROM Account")

    assert client.results(job_id, "bm9wZQ").status == 400


def test_default_page_size_and_gzip(emulator: EmulatorServer, client: EmulatorClient) -> None:
    emulator.knobs.default_max_records = 150
    job_id = client.run_job("SELECT Id, Name FROM Account")

    plain = client.results(job_id)
    zipped = client.results(job_id, gzip=True)
    assert plain.headers["Sforce-NumberOfRecords"] == "150"
    assert "Content-Encoding" not in plain.headers
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.body) == plain.body


def test_pages_can_be_smaller_than_max_records(emulator: EmulatorServer, client: EmulatorClient) -> None:
    emulator.knobs.max_page_rows = 80
    job_id = client.run_job("SELECT Id FROM Account")

    first = client.results(job_id, max_records=150)
    assert first.headers["Sforce-NumberOfRecords"] == "80"
    second = client.results(job_id, first.headers["Sforce-Locator"], max_records=50)
    assert second.headers["Sforce-NumberOfRecords"] == "50"


def test_results_need_the_jobs_api_version(client: EmulatorClient) -> None:
    job_id = client.run_job("SELECT Id FROM Account")

    reply = client.results(job_id, version="61.0")
    assert reply.status == 409


def test_abort_from_upload_complete_or_in_progress_only(client: EmulatorClient) -> None:
    aborted = []
    for polls in (0, 1):
        job_id = create(client, "SELECT Id FROM Account")
        for _ in range(polls):
            state(client, job_id)
        reply = client.request("PATCH", f"/jobs/query/{job_id}", json_body={"state": "Aborted"})
        aborted.append((reply.status, reply.json()["state"], state(client, job_id)))
    done = client.run_job("SELECT Id FROM Account")
    refused = client.request("PATCH", f"/jobs/query/{done}", json_body={"state": "Aborted"})
    wrong_body = client.request("PATCH", f"/jobs/query/{done}", json_body={"state": "JobComplete"})

    assert aborted == [(200, "Aborted", "Aborted")] * 2
    assert refused.status == wrong_body.status == 400
    assert state(client, done) == "JobComplete"


def test_delete_only_terminal_jobs(client: EmulatorClient) -> None:
    running = create(client, "SELECT Id FROM Account")
    refused = client.request("DELETE", f"/jobs/query/{running}")
    done = client.run_job("SELECT Id FROM Account")
    deleted = client.request("DELETE", f"/jobs/query/{done}")

    assert refused.status == 400
    assert refused.json() == [
        {
            "message": "Error encountered when deleting the job because the job is not terminated",
            "errorCode": "API_ERROR",
        }
    ]
    assert deleted.status == 204 and deleted.body == b""
    for reply in (
        client.get(f"/jobs/query/{done}"),
        client.results(done),
        client.request("DELETE", f"/jobs/query/{done}"),
    ):
        assert reply.status == 404 and reply.json() == NOT_FOUND


def test_the_org_s_jobs_are_listed_page_by_page_until_done(emulator: EmulatorServer, client: EmulatorClient) -> None:
    emulator.knobs.job_list_page_size = 2
    created = [create(client, "SELECT Id FROM Account") for _ in range(4)]
    deleted = client.run_job("SELECT Id FROM Contact")
    assert client.request("DELETE", f"/jobs/query/{deleted}").status == 204

    pages = [client.get("/jobs/query?jobType=V2Query").json()]
    while not pages[-1]["done"]:
        path = pages[-1]["nextRecordsUrl"]
        assert path.startswith("/services/data/v62.0/jobs/query?queryLocator=")
        pages.append(client.get(path.removeprefix("/services/data/v62.0")).json())

    assert [len(page["records"]) for page in pages] == [2, 2] and pages[-1]["nextRecordsUrl"] is None
    listed = [job for page in pages for job in page["records"]]
    assert sorted(job["id"] for job in listed) == sorted(created)  # a deleted job is not listed
    assert {(job["object"], job["operation"], job["createdById"]) for job in listed} == {
        ("Account", "query", record_id("005", 1))}
    assert all(job["createdDate"].endswith(".000+0000") for job in listed)
    # Every job here is a Bulk 2.0 query job.
    assert client.get("/jobs/query?jobType=V2Ingest").json() == {"done": True, "records": [], "nextRecordsUrl": None}
    bad = client.get("/jobs/query?queryLocator=nonsense")
    assert bad.status == 400 and bad.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_unknown_job_is_not_found(client: EmulatorClient) -> None:
    reply = client.get(f"/jobs/query/{record_id('750', 999)}")

    assert reply.status == 404 and reply.json() == NOT_FOUND


def test_bulk_rejects_unsupported_objects(client: EmulatorClient) -> None:
    reply = client.create_job("SELECT Id, MasterLabel FROM CaseStatus")

    assert reply.status == 400
    assert reply.json() == [
        {"message": "Entity 'CaseStatus' is not supported by the Bulk API.", "errorCode": "INVALIDENTITY"}
    ]
    assert client.query("SELECT Id, MasterLabel FROM CaseStatus").status == 200  # REST is fine


@pytest.mark.parametrize(
    ("soql", "message"),
    [
        ("SELECT Id, BillingAddress FROM Account", "Selecting compound data not supported in Bulk Query"),
        ("SELECT Id FROM Account OFFSET 5", "OFFSET not supported in Bulk V2 Query"),
        ("SELECT COUNT() FROM Account", "Aggregate functions not supported in Bulk V2 Query"),
        (
            "SELECT Industry, COUNT(Id) FROM Account GROUP BY Industry",
            "Aggregate functions not supported in Bulk V2 Query",
        ),
        ("SELECT Industry FROM Account GROUP BY Industry", "GROUP BY not supported in Bulk V2 Query"),
        (
            "SELECT Id, TYPEOF Owner WHEN User THEN Name END FROM Account",
            "TYPEOF not supported in Bulk V2 Query",
        ),
        (
            "SELECT Id, (SELECT Id FROM Contacts) FROM Account",
            "Aggregate Relationships not supported in Bulk V2 Query with CSV content type",
        ),
        ("SELECT FIELDS(ALL) FROM Account LIMIT 200", "FIELDS() not supported in Bulk V2 Query"),
    ],
)
def test_bulk_rejects_unsupported_soql_at_create(client: EmulatorClient, soql: str, message: str) -> None:
    reply = client.create_job(soql)

    assert reply.status == 400
    assert reply.json() == [{"message": message, "errorCode": "FUNCTIONALITY_NOT_ENABLED"}]


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Id FORM Account", "MALFORMED_QUERY"),
        ("SELECT Id, Bogus FROM Account", "INVALID_FIELD"),
        ("SELECT Id FROM Bogus__c", "INVALID_TYPE"),
    ],
)
def test_soql_errors_at_create(client: EmulatorClient, soql: str, code: str) -> None:
    reply = client.create_job(soql)

    assert reply.status == 400 and reply.json()[0]["errorCode"] == code


def test_base64_fields_fail_the_job(client: EmulatorClient) -> None:
    job_id = create(client, "SELECT Id, Body FROM Attachment")

    info = client.wait_job(job_id)
    assert info["state"] == "Failed"
    assert info["errorMessage"] == "FeatureNotEnabled : Cannot serialize value for 'Body' in CSV format"
    assert client.results(job_id).json()[0]["message"].endswith("Current status: FAILED")


def test_limit_and_order_by_are_accepted(emulator: EmulatorServer, client: EmulatorClient) -> None:
    job_id = client.run_job("SELECT Id FROM Account WHERE Id > '001Em00000000010IAA' ORDER BY Id LIMIT 7")

    rows = client.all_results(job_id)
    expected = [r["Id"] for r in emulator.org.live_rows("Account") if str(r["Id"]) > "001Em00000000010IAA"]
    assert [r[0] for r in rows] == expected[:7]


def test_query_all_includes_deleted_rows(emulator: EmulatorServer, client: EmulatorClient) -> None:
    victim = str(emulator.org.live_rows("Opportunity")[3]["Id"])
    emulator.org.delete("Opportunity", victim)

    live = client.all_results(client.run_job("SELECT Id, IsDeleted FROM Opportunity"))
    every = client.all_results(client.run_job("SELECT Id, IsDeleted FROM Opportunity", "queryAll"))
    assert victim not in [r[0] for r in live] and len(live) == ROWS - 1
    assert [victim, "true"] in every and len(every) == ROWS


def test_csv_dialect_and_column_order(client: EmulatorClient) -> None:
    piped = create(client, "SELECT Name, Id FROM Account LIMIT 2", columnDelimiter="PIPE", lineEnding="CRLF")
    client.wait_job(piped)
    old = client.request(
        "POST",
        "/jobs/query",
        version="49.0",
        json_body={"operation": "query", "query": "SELECT Name, Id FROM Account LIMIT 1"},
    )
    client.wait_job(old.json()["id"])

    assert client.results(piped).body.startswith(b'"Name"|"Id"\r\n"Acme 0000000"|"001Em')
    assert client.results(old.json()["id"], version="49.0").body.startswith(b'"Id","Name"\n')


def test_an_empty_result_is_one_header_only_page(client: EmulatorClient) -> None:
    job_id = client.run_job("SELECT Id, Name FROM Account WHERE Name = 'no such name'")

    reply = client.results(job_id)
    assert reply.body == b'"Id","Name"\n'
    assert reply.headers["Sforce-NumberOfRecords"] == "0"
    assert reply.headers["Sforce-Locator"] == "null"


def test_daily_job_allocation(emulator: EmulatorServer, client: EmulatorClient) -> None:
    emulator.knobs.daily_bulk_jobs = 1
    create(client, "SELECT Id FROM Account")

    reply = client.create_job("SELECT Id FROM Account")
    assert reply.status == 400
    assert reply.json()[0]["message"] == "Max bulk v2 query jobs (1) per 24 hrs has been reached"


def test_csv_values_match_the_org(emulator: EmulatorServer, client: EmulatorClient) -> None:
    """Every exportable field of every object, compared with the truth as documents."""
    for spec in emulator.org.objects:
        if not spec.bulk_supported:
            continue
        fields = [f for f in spec.fields if not f.compound and f.type.value != "base64"]
        job_id = client.run_job(f"SELECT {', '.join(f.name for f in fields)} FROM {spec.name}")
        rows = client.all_results(job_id, max_records=70)
        expected = [expected_document(spec, row) for row in emulator.org.live_rows(spec.name)]
        assert len(rows) == len(expected)
        for row, document in zip(rows, expected, strict=True):
            for f, cell in zip(fields, row, strict=True):
                assert cell == csv_text(document[f.name]), (spec.name, f.name)


def csv_text(value: object) -> str:
    """A document value as the emulator writes it in CSV (see internals.md)."""
    match value:
        case None:
            return ""
        case bool():
            return "true" if value else "false"
    return value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)


@pytest.fixture
def wide() -> Iterator[EmulatorServer]:
    with EmulatorServer(Org(OrgConfig(rows=5000))) as server:
        yield server


def test_csv_special_values(wide: EmulatorServer) -> None:
    client = EmulatorClient(wide.url)
    client.login()
    rows = client.all_results(
        client.run_job("SELECT Description, AnnualRevenue, LastActivityDate, SystemModstamp FROM Account")
    )

    descriptions = {r[0] for r in rows}
    assert {
        'Zürich, "HQ"\nline 2',
        "Rocket 🚀 launch, phase 2",
        "first line\r\nsecond line",
        "NA",
        "01234",
        "",
    } <= descriptions
    assert all(r[3].endswith(".000Z") and len(r[3]) == 24 for r in rows)
    assert any(r[2] == "" for r in rows) and all(len(r[2]) in (0, 10) for r in rows)
