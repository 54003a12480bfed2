"""getDeleted and the deletion log as the emulator serves them (salesforce-api.md §5.1, §5.3):
minute-truncated half-open windows, earliestDateAvailable after the 15-day retention and after
an early purge, INVALID_REPLICATION_DATE, EXCEEDED_ID_LIMIT, and the deletions only the log
shows (hard deletes, an emptied recycle bin, objects without IsDeleted, append-only objects).

Time is a ManualClock: nothing sleeps. It starts 30 seconds into a minute, so every bound a test
passes exercises the truncation.
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.emulator import EmulatorClient, EmulatorServer, Knobs, ManualClock, Org, OrgConfig, ReplicationError
from tests.emulator.client import Reply

NOW = datetime(2026, 3, 10, 12, 0, 30, tzinfo=UTC)
MINUTE = NOW.replace(second=0)  # 12:00:00, the current minute
ROWS = 40


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def emulator(clock: ManualClock) -> Iterator[EmulatorServer]:
    # Tokens never expire: tests move the clock by weeks.
    with EmulatorServer(Org(OrgConfig(rows=ROWS), clock), Knobs(token_ttl_seconds=None)) as emu:
        yield emu


@pytest.fixture
def client(emulator: EmulatorServer) -> EmulatorClient:
    client = EmulatorClient(emulator.url)
    client.login()
    return client


def get_deleted(client: EmulatorClient, obj: str, start: datetime | str, end: datetime | str) -> Reply:
    params = {
        "start": start.isoformat() if isinstance(start, datetime) else start,
        "end": end.isoformat() if isinstance(end, datetime) else end,
    }
    return client.get(f"/sobjects/{obj}/deleted/", params=params)


def deleted(client: EmulatorClient, obj: str, start: datetime, end: datetime) -> dict[str, Any]:
    reply = get_deleted(client, obj, start, end)
    assert reply.status == 200, reply.body
    body: dict[str, Any] = reply.json()
    return body


def deleted_ids(client: EmulatorClient, obj: str, start: datetime, end: datetime) -> list[str]:
    return [r["id"] for r in deleted(client, obj, start, end)["deletedRecords"]]


def error(reply: Reply) -> tuple[int, str]:
    body = reply.json()
    assert isinstance(body, list) and len(body) == 1, body
    return reply.status, body[0]["errorCode"]


def ids(emulator: EmulatorServer, obj: str) -> list[str]:
    return [str(r["Id"]) for r in emulator.org.live_rows(obj)]


def query_all_ids(client: EmulatorClient, obj: str) -> list[str]:
    body = client.query(f"SELECT Id FROM {obj}", all_rows=True).json()
    assert body["done"], body
    return [r["Id"] for r in body["records"]]


def at(minutes: float) -> datetime:
    """``minutes`` after the current minute's start (12:00:00)."""
    return MINUTE + timedelta(minutes=minutes)


# -- the response ---------------------------------------------------------------------


def test_response_lists_id_and_deleted_date_oldest_first(
    emulator: EmulatorServer, client: EmulatorClient, clock: ManualClock
) -> None:
    first, second = ids(emulator, "Account")[3:5]
    emulator.org.delete("Account", second, at=at(-5) + timedelta(seconds=7))
    emulator.org.delete("Account", first, at=at(-3))

    body = deleted(client, "Account", at(-10), at(0))

    assert body == {
        "deletedRecords": [
            {"id": second, "deletedDate": "2026-03-10T11:55:07.000+0000"},
            {"id": first, "deletedDate": "2026-03-10T11:57:00.000+0000"},
        ],
        "earliestDateAvailable": "2026-02-23T12:01:00.000+0000",  # 15 days back, rounded up
        "latestDateCovered": "2026-03-10T12:00:00.000+0000",
    }


def test_bounds_ignore_seconds(emulator: EmulatorServer, client: EmulatorClient) -> None:
    victims = ids(emulator, "Account")[:3]
    emulator.org.delete("Account", victims[0], at=at(-10))  # 11:50:00: at the truncated start
    emulator.org.delete("Account", victims[1], at=at(-5) - timedelta(seconds=1))  # 11:54:59
    emulator.org.delete("Account", victims[2], at=at(-5))  # 11:55:00: at the truncated end

    body = deleted(client, "Account", at(-10) + timedelta(seconds=59), at(-5) + timedelta(seconds=59))

    assert [r["id"] for r in body["deletedRecords"]] == victims[:2]
    assert body["latestDateCovered"] == "2026-03-10T11:55:00.000+0000"


def test_consecutive_windows_list_each_deletion_once(emulator: EmulatorServer, client: EmulatorClient) -> None:
    """[start, latestDateCovered) windows: a deletion exactly on a boundary belongs to the later one."""
    victims = ids(emulator, "Contact")[:3]
    for victim, minute in zip(victims, (-20, -10, -9.5), strict=True):
        emulator.org.delete("Contact", victim, at=at(minute))

    first = deleted(client, "Contact", at(-30), at(-10))
    second = deleted(client, "Contact", datetime.fromisoformat(first["latestDateCovered"]), at(0))

    assert [r["id"] for r in first["deletedRecords"]] == victims[:1]
    assert [r["id"] for r in second["deletedRecords"]] == victims[1:]


def test_latest_date_covered_stops_at_the_current_minute(
    emulator: EmulatorServer, client: EmulatorClient, clock: ManualClock
) -> None:
    victim = ids(emulator, "Account")[0]
    emulator.org.delete("Account", victim)  # now: 12:00:30, in the current minute

    now = deleted(client, "Account", at(-5), at(60))  # an end an hour ahead
    clock.advance(60)
    later = deleted(client, "Account", datetime.fromisoformat(now["latestDateCovered"]), at(60))

    assert now["latestDateCovered"] == "2026-03-10T12:00:00.000+0000" and now["deletedRecords"] == []
    assert later["latestDateCovered"] == "2026-03-10T12:01:00.000+0000"
    assert [r["id"] for r in later["deletedRecords"]] == [victim]


# -- refused windows ------------------------------------------------------------------


def test_end_must_follow_start_by_more_than_a_minute(client: EmulatorClient) -> None:
    for start, end in [
        (at(-10), at(-9)),  # one minute
        (at(-10), at(-8) - timedelta(seconds=1)),  # 1:59, read as one minute
        (at(-10), at(-10)),
        (at(-5), at(-10)),
    ]:
        assert error(get_deleted(client, "Account", start, end)) == (400, "INVALID_REPLICATION_DATE"), (start, end)

    assert get_deleted(client, "Account", at(-10), at(-8)).status == 200


def test_a_start_in_the_future_is_refused(client: EmulatorClient) -> None:
    assert error(get_deleted(client, "Account", at(1), at(5))) == (400, "INVALID_REPLICATION_DATE")
    assert get_deleted(client, "Account", at(0), at(5)).json()["deletedRecords"] == []


def test_fifteen_days_back_is_the_limit(emulator: EmulatorServer, client: EmulatorClient, clock: ManualClock) -> None:
    old, recent = ids(emulator, "Opportunity")[:2]
    emulator.org.delete("Opportunity", old, at=NOW - timedelta(days=15, minutes=1))
    emulator.org.delete("Opportunity", recent, at=NOW - timedelta(days=14))
    earliest = datetime(2026, 2, 23, 12, 1, tzinfo=UTC)  # NOW - 15 days (12:00:30), rounded up

    refused = get_deleted(client, "Opportunity", earliest - timedelta(minutes=1), at(0))
    body = deleted(client, "Opportunity", earliest, at(0))

    assert error(refused) == (400, "INVALID_REPLICATION_DATE")
    assert "earliestDateAvailable (2026-02-23T12:01:00.000+0000)" in refused.json()[0]["message"]
    assert [r["id"] for r in body["deletedRecords"]] == [recent]
    assert [d.id for d in emulator.org.deletion_log("Opportunity")] == [recent]  # the old entry is gone


def test_a_capture_paused_for_sixteen_days_is_told_to_start_over(
    emulator: EmulatorServer, client: EmulatorClient, clock: ManualClock
) -> None:
    victim = ids(emulator, "Account")[0]
    covered = datetime.fromisoformat(deleted(client, "Account", at(-10), at(0))["latestDateCovered"])
    emulator.org.hard_delete("Account", victim)  # a deletion the paused capture never saw

    clock.advance(timedelta(days=16))

    assert error(get_deleted(client, "Account", covered, clock.now())) == (400, "INVALID_REPLICATION_DATE")


def test_an_early_purge_moves_earliest_date_available(
    emulator: EmulatorServer, client: EmulatorClient, clock: ManualClock
) -> None:
    older, newer = ids(emulator, "Account")[:2]
    emulator.org.delete("Account", older, at=at(-120))
    emulator.org.delete("Account", newer, at=at(-30))

    emulator.org.purge_deletion_log("Account", at(-60) + timedelta(seconds=20))

    refused = get_deleted(client, "Account", at(-61), at(0))
    body = deleted(client, "Account", at(-59), at(0))
    assert error(refused) == (400, "INVALID_REPLICATION_DATE")
    assert body["earliestDateAvailable"] == "2026-03-10T11:01:00.000+0000"
    assert [r["id"] for r in body["deletedRecords"]] == [newer]
    assert deleted(client, "Contact", at(-120), at(0))["deletedRecords"] == []  # other objects keep their log


def test_too_many_ids_is_exceeded_id_limit(emulator: EmulatorServer, client: EmulatorClient) -> None:
    emulator.knobs.deleted_id_limit = 3
    for minute, victim in enumerate(ids(emulator, "Contact")[:4]):
        emulator.org.hard_delete("Contact", victim, at=at(-10 + minute))

    assert error(get_deleted(client, "Contact", at(-10), at(0))) == (400, "EXCEEDED_ID_LIMIT")
    assert len(deleted_ids(client, "Contact", at(-10), at(-7))) == 3  # exactly the limit: answered
    assert len(deleted_ids(client, "Contact", at(-7), at(0))) == 1


# -- what the log holds ---------------------------------------------------------------


def test_a_hard_delete_leaves_no_row_but_a_log_entry(emulator: EmulatorServer, client: EmulatorClient) -> None:
    org = emulator.org
    victim = ids(emulator, "Account")[7]

    org.hard_delete("Account", victim, at=at(-2))

    bulk = client.all_results(client.run_job("SELECT Id FROM Account", "queryAll"))
    assert victim not in query_all_ids(client, "Account") and victim not in [row[0] for row in bulk]
    assert len(bulk) == ROWS - 1
    assert victim not in [r["Id"] for r in org.all_rows("Account")] and org.row("Account", victim) is None
    assert victim not in [d["Id"] for d in org.expected_documents("Account", include_deleted=True)]
    assert deleted(client, "Account", at(-5), at(0))["deletedRecords"] == [
        {"id": victim, "deletedDate": "2026-03-10T11:58:00.000+0000"}
    ]


def test_a_soft_delete_is_in_query_all_and_in_the_log(emulator: EmulatorServer, client: EmulatorClient) -> None:
    victim = ids(emulator, "Opportunity")[2]

    emulator.org.delete("Opportunity", victim)

    assert victim in query_all_ids(client, "Opportunity") and victim not in ids(emulator, "Opportunity")
    assert deleted_ids(client, "Opportunity", at(-5), at(5)) == []  # the current minute is not covered yet
    assert [d.id for d in emulator.org.deletion_log("Opportunity")] == [victim]


def test_the_recycle_bin_keeps_soft_deleted_rows_fifteen_days(
    emulator: EmulatorServer, client: EmulatorClient, clock: ManualClock
) -> None:
    victim = ids(emulator, "Contact")[1]
    emulator.org.delete("Contact", victim, at=NOW)

    clock.advance(timedelta(days=15) - timedelta(seconds=1))
    assert victim in query_all_ids(client, "Contact")
    clock.advance(1)
    assert victim not in query_all_ids(client, "Contact") and emulator.org.deletion_log("Contact") == []


def test_emptying_the_recycle_bin_keeps_the_log_entries(
    emulator: EmulatorServer, client: EmulatorClient, clock: ManualClock
) -> None:
    first, second, third = ids(emulator, "Account")[:3]
    for victim in (first, second, third):
        emulator.org.delete("Account", victim, at=at(-3))

    assert emulator.org.empty_recycle_bin("Account", [first]) == [first]
    assert emulator.org.empty_recycle_bin("Account", query_all_grace=timedelta(0)) == [second, third]

    in_query_all = query_all_ids(client, "Account")
    assert first in in_query_all and second not in in_query_all  # the emptied rows linger a day by default
    clock.advance(timedelta(hours=24))
    assert first not in query_all_ids(client, "Account")
    assert deleted_ids(client, "Account", at(-5), clock.now()) == [first, second, third]


def test_emptying_refuses_rows_not_in_the_bin(emulator: EmulatorServer) -> None:
    live, hard = ids(emulator, "Account")[:2]
    emulator.org.hard_delete("Account", hard)

    for record in (live, hard):
        with pytest.raises(ValueError, match="not in the recycle bin"):
            emulator.org.empty_recycle_bin("Account", [record])


def test_deletions_on_objects_without_is_deleted_are_logged(
    emulator: EmulatorServer, client: EmulatorClient
) -> None:
    role = ids(emulator, "UserRole")[4]

    emulator.org.delete("UserRole", role, at=at(-1))  # no IsDeleted: the row leaves queryAll too

    assert role not in query_all_ids(client, "UserRole")
    assert deleted_ids(client, "UserRole", at(-5), at(0)) == [role]


def test_deletions_on_append_only_objects_are_logged(emulator: EmulatorServer, client: EmulatorClient) -> None:
    """Deleting a history row moves no cursor (CreatedDate is its only timestamp): only the log shows it."""
    entry = emulator.org.live_rows("AccountHistory")[9]

    emulator.org.delete("AccountHistory", str(entry["Id"]), at=at(-1))

    row = emulator.org.row("AccountHistory", str(entry["Id"]))
    assert row is not None and row["IsDeleted"] is True and row["CreatedDate"] == entry["CreatedDate"]
    assert deleted_ids(client, "AccountHistory", at(-5), at(0)) == [entry["Id"]]


def test_undelete_restores_the_row_and_drops_its_log_entry(
    emulator: EmulatorServer, client: EmulatorClient
) -> None:
    restored, kept = ids(emulator, "Contact")[:2]
    for victim in (restored, kept):
        emulator.org.delete("Contact", victim, at=at(-3))

    emulator.org.undelete("Contact", restored, at=at(-2))
    emulator.org.undelete("Contact", kept, at=at(-2), keep_log_entry=True)

    row = emulator.org.row("Contact", restored)
    assert row is not None and row["IsDeleted"] is False and row["SystemModstamp"] == at(-2)
    assert {restored, kept} <= set(ids(emulator, "Contact"))
    assert deleted_ids(client, "Contact", at(-5), at(0)) == [kept]


def test_a_deleted_row_cannot_be_deleted_again(emulator: EmulatorServer) -> None:
    soft, hard = ids(emulator, "Account")[:2]
    emulator.org.delete("Account", soft)
    emulator.org.hard_delete("Account", hard)

    with pytest.raises(ValueError, match="is deleted"):
        emulator.org.hard_delete("Account", soft)
    with pytest.raises(KeyError):
        emulator.org.delete("Account", hard)
    assert len(emulator.org.deletion_log("Account")) == 2


# -- objects, parameters, allocation ---------------------------------------------------


def test_replicateable_flags_and_not_replicateable_objects(
    emulator: EmulatorServer, client: EmulatorClient
) -> None:
    flags = {o["name"]: o["replicateable"] for o in client.get("/sobjects/").json()["sobjects"]}
    assert [name for name, flag in flags.items() if not flag] == ["CaseStatus", "ActivityHistory"]
    assert client.get("/sobjects/CaseStatus/describe/").json()["replicateable"] is False

    assert error(get_deleted(client, "CaseStatus", at(-5), at(0))) == (400, "INVALID_TYPE_FOR_OPERATION")
    emulator.org.set_replicateable("CaseStatus", True)
    assert client.get("/sobjects/CaseStatus/describe/").json()["replicateable"] is True
    assert deleted_ids(client, "CaseStatus", at(-5), at(0)) == []


def test_unknown_object_is_not_found(client: EmulatorClient) -> None:
    assert error(get_deleted(client, "Nope__c", at(-5), at(0))) == (404, "NOT_FOUND")


def test_missing_or_malformed_dates_are_refused(client: EmulatorClient) -> None:
    missing = client.get("/sobjects/Account/deleted/", params={"start": at(-5).isoformat()})
    without_zone = get_deleted(client, "Account", "2026-03-10T11:00:00", at(0))
    # An unencoded "+" in a query string is a space: the offset is lost.
    unencoded = client.get("/sobjects/Account/deleted/?start=2026-03-10T11:00:00+00:00&end=2026-03-10T12:00:00Z")

    assert error(missing) == (400, "MISSING_ARGUMENT")
    assert error(without_zone) == (400, "MALFORMED_QUERY")
    assert error(unencoded) == (400, "MALFORMED_QUERY")
    assert get_deleted(client, "Account", "2026-03-10T11:00:00.000+0000", "2026-03-10T12:00:00Z").status == 200


def test_offsets_are_read_as_utc(emulator: EmulatorServer) -> None:
    """A +05:30 bound truncates to the minute in UTC (the Python API, like the endpoint)."""
    victim = ids(emulator, "Account")[0]
    emulator.org.delete("Account", victim, at=at(-3))
    india = datetime.fromisoformat("2026-03-10T17:25:00+05:30")  # 11:55 UTC

    answer = emulator.org.get_deleted("Account", india, MINUTE)

    assert [d.id for d in answer.records] == [victim] and answer.latest_covered == MINUTE
    with pytest.raises(ReplicationError, match="INVALID_REPLICATION_DATE"):
        emulator.org.get_deleted("Account", MINUTE, MINUTE)


def test_each_call_uses_the_api_allocation(emulator: EmulatorServer, client: EmulatorClient) -> None:
    emulator.set_api_usage(0)

    ok = get_deleted(client, "Account", at(-5), at(0))
    refused = get_deleted(client, "Account", at(-1), at(0))
    client.access_token = "00Dexpired"
    unauthorized = get_deleted(client, "Account", at(-5), at(0))

    assert ok.headers["Sforce-Limit-Info"] == "api-usage=1/100000"
    assert refused.status == 400 and refused.headers["Sforce-Limit-Info"] == "api-usage=2/100000"
    assert unauthorized.status == 401 and emulator.api_usage == 2
    assert emulator.counters.requests["get_deleted"] == 3
