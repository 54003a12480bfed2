"""Counters: what tests read to prove how a connector used the API."""

import http.client
from datetime import UTC, datetime

import pytest

from tests.emulator import EmulatorClient, EmulatorServer, JobEnd, JobRecord, PageServed


def test_counters_record_every_exchange(emulator: EmulatorServer) -> None:
    client = EmulatorClient(emulator.url)
    client.get("/services/data/")
    client.get("/sobjects/")  # unauthenticated: still counted
    client.login()
    client.get("/sobjects/")
    client.get("/sobjects/Account/describe")
    client.get("/limits")
    job_id = client.create_job("SELECT Id FROM Account").json()["id"]
    client.wait_job(job_id)
    first = client.results(job_id, max_records=120)
    client.results(job_id, first.headers["Sforce-Locator"], max_records=120)
    client.results(job_id, first.headers["Sforce-Locator"], max_records=120)  # a re-fetch
    rest = client.query("SELECT Id FROM Contact", all_rows=True).json()
    client.get("/query/01gEm0000000999IAA-200")
    done = client.run_job("SELECT Id FROM Opportunity LIMIT 5")
    client.request("DELETE", f"/jobs/query/{done}")
    client.request(
        "PATCH",
        f"/jobs/query/{client.create_job('SELECT Id FROM Account').json()['id']}",
        json_body={"state": "Aborted"},
    )

    counters = emulator.counters
    assert counters.requests == {
        "versions": 1,
        "describe_global": 2,
        "token": 1,
        "describe": 1,
        "limits": 1,
        "job_create": 3,
        "job_info": 4,
        "job_results": 3,
        "query_all": 1,
        "query_more": 1,
        "job_delete": 1,
        "job_abort": 1,
    }
    assert counters.tokens_issued == 1
    assert [(j.operation, j.query, j.object) for j in counters.jobs_created] == [
        ("query", "SELECT Id FROM Account", "Account"),
        ("query", "SELECT Id FROM Opportunity LIMIT 5", "Opportunity"),
        ("query", "SELECT Id FROM Account", "Account"),
    ]
    assert isinstance(counters.jobs_created[0], JobRecord)
    assert counters.jobs_created[0].job_id == job_id and counters.jobs_created[0].api_version == "62.0"
    assert counters.locators_fetched == {
        job_id: [None, first.headers["Sforce-Locator"], first.headers["Sforce-Locator"]]
    }
    assert counters.rows_served_by_job == {job_id: 120 + 80 + 80}
    assert counters.rows_served == 280 + len(rest["records"])


def test_counters_record_how_jobs_end_and_which_pages_arrived_whole(emulator: EmulatorServer) -> None:
    client = EmulatorClient(emulator.url)
    client.login()
    emulator.fail_next_jobs(1, "InternalServerError")
    failed = client.create_job("SELECT Id FROM Account").json()["id"]
    client.wait_job(failed)
    aborted = client.create_job("SELECT Id FROM Account").json()["id"]
    client.request("PATCH", f"/jobs/query/{aborted}", json_body={"state": "Aborted"})
    done = client.run_job("SELECT Id FROM Account")
    first = client.results(done, max_records=150)
    emulator.reset_next_result_pages(1)
    with pytest.raises(http.client.IncompleteRead):  # cut off: not delivered whole
        client.results(done, first.headers["Sforce-Locator"], max_records=150)
    client.results(done, first.headers["Sforce-Locator"], max_records=150)

    counters = emulator.counters
    assert counters.jobs_ended == {failed: JobEnd("Failed", 0), aborted: JobEnd("Aborted", 0),
                                   done: JobEnd("JobComplete", 200)}
    assert counters.pages_served == [
        PageServed(done, None, 150, last=False),
        PageServed(done, first.headers["Sforce-Locator"], 50, last=True),
    ]
    assert counters.jobs_expired == []


def test_rows_served_again_counts_row_versions_already_delivered(emulator: EmulatorServer) -> None:
    client = EmulatorClient(emulator.url)
    client.login()
    org = emulator.org
    seeded = [str(row["Id"]) for row in org.live_rows("Account")]
    org.update("Account", seeded[10], {"Name": "changed"}, system_modstamp=datetime(2026, 1, 1, tzinfo=UTC))
    inserted = org.insert("Account", system_modstamp=datetime(2026, 1, 1, tzinfo=UTC))

    once = client.run_job("SELECT Id FROM Account")
    client.all_results(once)  # 201 rows: 199 seeded, 1 updated, 1 inserted
    assert emulator.counters.rows_served_again == {}
    again = client.run_job(f"SELECT Id FROM Account WHERE Id > '{seeded[99]}'")
    client.all_results(again)  # the last 101 of them, a second time
    assert emulator.counters.rows_served_again == {"Account": 101}

    org.update("Account", inserted, {"Name": "changed again"}, system_modstamp=datetime(2026, 1, 2, tzinfo=UTC))
    changed = client.run_job(f"SELECT Id FROM Account WHERE Id = '{inserted}'")
    client.all_results(changed)  # a new version of the row: not a re-export
    assert emulator.counters.rows_served_again == {"Account": 101}


def test_reset_counters(emulator: EmulatorServer) -> None:
    client = EmulatorClient(emulator.url)
    client.login()
    client.run_job("SELECT Id FROM Account")
    emulator.reset_counters()

    counters = emulator.counters
    assert (
        counters.requests,
        counters.tokens_issued,
        counters.jobs_created,
        counters.rows_served,
        counters.rows_served_by_job,
        counters.locators_fetched,
        counters.pages_served,
        counters.jobs_ended,
        counters.rows_served_again,
    ) == ({}, 0, [], 0, {}, {}, [], {}, {})
    assert emulator.api_usage == 3  # the API allocation is not a counter: it stays used
