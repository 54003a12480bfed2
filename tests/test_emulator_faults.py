"""Fault knobs: off by default, each doing exactly what it says when switched on."""

import http.client
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.emulator import EmulatorClient, EmulatorServer, Knobs, ManualClock, Org, OrgConfig

FAILURE = (
    "InvalidBatch : Failed to process query: QUERY_TIMEOUT: Your query request was running for too long."
)


@pytest.fixture
def client(emulator: EmulatorServer) -> EmulatorClient:
    client = EmulatorClient(emulator.url)
    client.login()
    return client


def finish(client: EmulatorClient, soql: str) -> dict[str, object]:
    return client.wait_job(client.create_job(soql).json()["id"])


def test_no_faults_by_default() -> None:
    knobs = Knobs()

    assert (knobs.job_failures, knobs.server_error_rate, knobs.reset_result_pages) == ([], 0.0, 0)
    assert (knobs.reset_result_page_rate, knobs.gzip_results, knobs.job_failure_rate) == (0.0, True, 0.0)
    assert (knobs.token_max_requests, knobs.request_limit_window) == (None, None)
    assert (knobs.job_expiries, knobs.job_expiry_rate) == ([], 0.0)


def test_jobs_fail_the_first_n_times(emulator: EmulatorServer, client: EmulatorClient) -> None:
    emulator.fail_next_jobs(2, FAILURE)

    states = [finish(client, "SELECT Id FROM Account") for _ in range(3)]
    assert [(s["state"], s.get("errorMessage")) for s in states] == [
        ("Failed", FAILURE),
        ("Failed", FAILURE),
        ("JobComplete", None),
    ]
    assert states[0]["numberRecordsProcessed"] == 0


def test_job_failures_can_target_an_object_or_query(emulator: EmulatorServer, client: EmulatorClient) -> None:
    emulator.fail_next_jobs(1, FAILURE, object="Contact")
    emulator.fail_next_jobs(1, FAILURE, query_contains="LIMIT 3")

    assert finish(client, "SELECT Id FROM Account")["state"] == "JobComplete"
    assert finish(client, "SELECT Id FROM Account LIMIT 3")["state"] == "Failed"
    assert finish(client, "SELECT Id FROM Account LIMIT 3")["state"] == "JobComplete"
    assert finish(client, "SELECT Id FROM contact")["state"] == "Failed"
    assert finish(client, "SELECT Id FROM Contact")["state"] == "JobComplete"


def test_server_errors_on_a_seeded_fraction(client: EmulatorClient) -> None:
    def outcomes(seed: int) -> list[int]:
        knobs = Knobs(server_error_rate=0.3, server_error_seed=seed)
        with EmulatorServer(Org(OrgConfig(rows=10)), knobs) as emu:
            other = EmulatorClient(emu.url)
            other.login()
            replies = [other.get("/limits") for _ in range(60)]
        unavailable = [r for r in replies if r.status == 503]
        assert all(
            r.json() == [{"message": "Server temporarily unavailable", "errorCode": "SERVER_UNAVAILABLE"}]
            for r in unavailable
        )
        return [r.status for r in replies]

    first = outcomes(7)
    assert first == outcomes(7)  # the same seed fails the same requests
    assert 5 <= first.count(503) <= 35 and first.count(200) + first.count(503) == 60
    assert client.get("/limits").status == 200  # the default emulator has no 5xx


def test_server_errors_can_target_endpoints(emulator: EmulatorServer, client: EmulatorClient) -> None:
    emulator.knobs.server_error_rate = 1.0
    emulator.knobs.server_error_endpoints = frozenset({"job_results"})
    job_id = client.run_job("SELECT Id FROM Account")

    assert client.results(job_id).status == 503
    emulator.knobs.server_error_rate = 0.0
    assert client.results(job_id).status == 200


def test_jobs_fail_at_a_seeded_rate_after_the_countdowns() -> None:
    def outcomes(seed: int) -> list[str | None]:
        knobs = Knobs(job_failure_rate=0.4, job_failure_seed=seed)
        with EmulatorServer(Org(OrgConfig(rows=10)), knobs) as emu:
            emu.fail_next_jobs(1, FAILURE)
            other = EmulatorClient(emu.url)
            other.login()
            return [finish(other, "SELECT Id FROM Account").get("errorMessage") for _ in range(30)]

    first = outcomes(3)
    assert first == outcomes(3)  # the same seed fails the same jobs
    assert first[0] == FAILURE  # the countdown comes first
    drawn = first[1:]
    assert set(drawn) == {"InternalServerError", None} and 4 <= drawn.count("InternalServerError") <= 20


def rate_pattern(knobs: Knobs, attempt: Callable[[EmulatorServer, EmulatorClient], bool], tries: int) -> list[bool]:
    """Which of `tries` attempts hit a rate fault, on a fresh emulator with `knobs`."""
    with EmulatorServer(Org(OrgConfig(rows=300)), knobs) as emu:
        other = EmulatorClient(emu.url)
        other.login()
        return [attempt(emu, other) for _ in range(tries)]


def test_result_pages_are_cut_at_a_seeded_rate() -> None:
    def cut(emu: EmulatorServer, client: EmulatorClient) -> bool:
        job_id = client.run_job("SELECT Id FROM Account")
        try:
            client.results(job_id, max_records=100)
        except http.client.IncompleteRead:
            return True
        return False

    first = rate_pattern(Knobs(reset_result_page_rate=0.3, reset_result_page_seed=5), cut, 40)
    assert first == rate_pattern(Knobs(reset_result_page_rate=0.3, reset_result_page_seed=5), cut, 40)
    assert 4 <= first.count(True) <= 24


def test_result_pages_can_be_served_without_gzip(emulator: EmulatorServer, client: EmulatorClient) -> None:
    job_id = client.run_job("SELECT Id, Name FROM Account")
    emulator.knobs.gzip_results = False
    plain = client.results(job_id, max_records=50, gzip=True)
    emulator.reset_next_result_pages(1)

    with pytest.raises(http.client.IncompleteRead) as cut:
        client.results(job_id, max_records=50, gzip=True)

    assert plain.headers.get("Content-Encoding") is None and plain.body.startswith(b'"Id","Name"\n')
    assert cut.value.partial.startswith(b'"Id","Name"\n')  # cut off in plain CSV, not in a gzip stream
    emulator.knobs.gzip_results = True
    assert client.results(job_id, max_records=50, gzip=True).headers["Content-Encoding"] == "gzip"


def test_an_access_token_dies_after_n_requests(emulator: EmulatorServer, client: EmulatorClient) -> None:
    emulator.knobs.token_max_requests = 3

    statuses = [client.get("/limits").status for _ in range(4)]
    dead = client.get("/limits")
    client.login()

    assert statuses == [200, 200, 200, 401]
    assert dead.status == 401 and dead.json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    assert [client.get("/limits").status for _ in range(4)] == [200, 200, 200, 401]  # a new token, 3 more


def test_request_limit_exceeded_for_a_window_of_the_org_clock() -> None:
    start = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    clock = ManualClock(start)
    with EmulatorServer(Org(OrgConfig(rows=10), clock)) as emu:
        client = EmulatorClient(emu.url)
        client.login()
        emu.exceed_request_limit(10, start=start + timedelta(seconds=5))

        before = client.get("/limits")
        clock.advance(5)
        inside = client.get("/limits")
        used = emu.api_usage
        clock.advance(9)
        still = client.get("/sobjects/")
        clock.advance(1)
        after = client.get("/limits")

    assert (before.status, inside.status, still.status, after.status) == (200, 403, 403, 200)
    assert inside.json() == [{"message": "ConcurrentRequests (Concurrent API Requests) Limit exceeded.",
                              "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    assert used == 1  # refused requests use none of the daily allocation


def test_a_job_disappears_after_serving_n_pages(emulator: EmulatorServer, client: EmulatorClient) -> None:
    emulator.expire_next_jobs(1, after_pages=2, object="Account")
    short = client.run_job("SELECT Id FROM Account LIMIT 50")
    job_id = client.run_job("SELECT Id FROM Account")

    assert client.results(short, max_records=100).status == 200  # one page only: nothing follows it
    first = client.results(job_id, max_records=60)
    second = client.results(job_id, first.headers["Sforce-Locator"], max_records=60)
    third = client.results(job_id, second.headers["Sforce-Locator"], max_records=60)

    assert (first.status, second.status) == (200, 200)
    assert third.status == 404 and third.json() == [
        {"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}]
    assert client.get(f"/jobs/query/{job_id}").status == 404  # as a deleted job
    assert emulator.counters.jobs_expired == [job_id]


def test_jobs_disappear_between_pages_at_a_seeded_rate() -> None:
    def expired(emu: EmulatorServer, client: EmulatorClient) -> bool:
        job_id = client.run_job("SELECT Id FROM Account")
        locator = client.results(job_id, max_records=100).headers["Sforce-Locator"]
        return client.results(job_id, locator, max_records=100).status == 404

    first = rate_pattern(Knobs(job_expiry_rate=0.3, job_expiry_seed=2), expired, 40)
    assert first == rate_pattern(Knobs(job_expiry_rate=0.3, job_expiry_seed=2), expired, 40)
    assert 4 <= first.count(True) <= 24


@pytest.mark.parametrize("gzip", [False, True])
def test_connection_reset_mid_page_then_the_page_again(
    emulator: EmulatorServer, client: EmulatorClient, gzip: bool
) -> None:
    job_id = client.run_job("SELECT Id, Name, Description FROM Account")
    emulator.reset_next_result_pages(1)

    with pytest.raises(http.client.IncompleteRead) as cut:
        client.results(job_id, max_records=150, gzip=gzip)
    again = client.results(job_id, max_records=150, gzip=gzip)

    assert len(cut.value.partial) > 0
    assert again.status == 200 and len(again.csv()) == 151
    assert emulator.counters.rows_served_by_job == {job_id: 150}  # the cut page is not counted


def test_late_rows_are_invisible_to_queries_until_committed(
    emulator: EmulatorServer, client: EmulatorClient
) -> None:
    past = datetime(2025, 9, 1, tzinfo=UTC)  # after every seeded row, before now
    late = emulator.org.insert("Account", {"Name": "late"}, system_modstamp=past, visible=False)
    window = "SELECT Id FROM Account WHERE SystemModstamp >= 2025-08-01T00:00:00Z"

    assert client.query(window).json()["totalSize"] == 0
    assert client.all_results(client.run_job(window)) == []
    emulator.org.make_visible("Account", late)
    assert [r["Id"] for r in client.query(window).json()["records"]] == [late]
    assert client.all_results(client.run_job(window)) == [[late]]


def test_late_rows_become_visible_at_an_instant(emulator: EmulatorServer, client: EmulatorClient) -> None:
    now = datetime.now(UTC)
    emulator.org.insert(
        "Account",
        {"Name": "soon"},
        system_modstamp=now - timedelta(hours=1),
        visible=False,
        visible_at=now - timedelta(seconds=1),
    )
    emulator.org.insert(
        "Account",
        {"Name": "later"},
        system_modstamp=now - timedelta(hours=1),
        visible=False,
        visible_at=now + timedelta(days=1),
    )

    names = [
        r["Name"]
        for r in client.query("SELECT Name FROM Account WHERE Name LIKE 's%' OR Name LIKE 'l%'").json()[
            "records"
        ]
    ]
    assert names == ["soon"]


def test_burst_of_rows_in_one_second(emulator: EmulatorServer, client: EmulatorClient) -> None:
    stamp = datetime(2025, 2, 3, 4, 5, 6, tzinfo=UTC)
    ids = emulator.org.burst("Opportunity", 2500, stamp)

    body = client.query(
        "SELECT Id FROM Opportunity WHERE SystemModstamp = 2025-02-03T04:05:06Z ORDER BY SystemModstamp, Id"
    ).json()
    assert body["totalSize"] == 2500 and [r["Id"] for r in body["records"]] == ids[:2000]
