"""The seeded org and its mutation overlay: the truth the other tests compare against."""

import threading
import time
import tracemalloc
from datetime import UTC, date, datetime, timedelta

import pytest

from tests.emulator import EmulatorClient, EmulatorServer, ManualClock, Org, OrgConfig, expected_document
from tests.emulator.binding import bind
from tests.emulator.ids import case_safe_suffix, record_id, record_ids
from tests.emulator.results import ResultSet
from tests.emulator.seeding import TIMELINE_END, TIMELINE_START
from tests.emulator.soql import parse

T0 = datetime(2025, 7, 1, tzinfo=UTC)


def stamp(row: dict[str, object], name: str) -> datetime:
    value = row[name]
    assert isinstance(value, datetime)
    return value


@pytest.fixture
def org() -> Org:
    return Org(OrgConfig(rows=300), ManualClock(T0))


def test_rows_are_a_function_of_object_seed_and_index() -> None:
    first, again = Org(OrgConfig(rows=50, seed=1)), Org(OrgConfig(rows=50, seed=1))
    other = Org(OrgConfig(rows=50, seed=2))

    assert first.live_rows("Contact") == again.live_rows("Contact")
    assert first.live_rows("Contact") != other.live_rows("Contact")
    assert [r["Id"] for r in first.live_rows("Contact")] == [r["Id"] for r in other.live_rows("Contact")]


def test_ids_are_18_char_case_safe_and_sorted_like_indices() -> None:
    indices = [0, 1, 61, 62, 3843, 3844, 10**6, 62**5, 10**12]
    ids = [record_id("a02", i) for i in indices]

    assert all(len(i) == 18 and i.startswith("a02") for i in ids)
    assert all(i[15:] == case_safe_suffix(i[:15]) for i in ids)
    assert ids == sorted(ids)
    assert record_ids("a02", indices) == ids
    assert record_ids("a02", range(3800, 3900)) == [record_id("a02", i) for i in range(3800, 3900)]


def test_seeded_timestamps_are_past_ordered_and_consistent(org: Org) -> None:
    rows = org.live_rows("Opportunity")
    stamps = [stamp(r, "SystemModstamp") for r in rows]

    assert stamps == sorted(stamps)
    assert stamps[0] == TIMELINE_START and all(s <= TIMELINE_END < T0 for s in stamps)
    assert all(
        stamp(r, "CreatedDate") <= stamp(r, "LastModifiedDate") <= stamp(r, "SystemModstamp") for r in rows
    )
    assert max(stamps.count(s) for s in stamps) == 5  # the shared-SystemModstamp block


def test_shared_modstamp_rows_are_configurable() -> None:
    stamps = [
        r["SystemModstamp"] for r in Org(OrgConfig(rows=100, shared_modstamp_rows=40)).live_rows("Account")
    ]

    assert max(stamps.count(s) for s in stamps) == 40


def test_insert_update_delete(org: Org) -> None:
    new = org.insert(
        "Account", {"Name": 'Zürich, "HQ"', "AnnualRevenue": 12.5}, system_modstamp=T0 - timedelta(hours=1)
    )
    target = str(org.live_rows("Account")[5]["Id"])
    org.update("Account", target, {"Rating": "Hot"})
    org.delete("Account", str(org.live_rows("Account")[6]["Id"]), at=T0)

    inserted = org.row("Account", new)
    assert inserted is not None and inserted["Name"] == 'Zürich, "HQ"'
    assert inserted["CreatedDate"] == inserted["SystemModstamp"] == T0 - timedelta(hours=1)
    updated = org.row("Account", target)
    assert updated is not None and updated["Rating"] == "Hot" and updated["SystemModstamp"] == T0
    assert updated["LastModifiedDate"] == T0  # default stamp: the clock's now
    assert len(org.live_rows("Account")) == 300
    assert len(org.all_rows("Account")) == 301
    deleted = [r for r in org.all_rows("Account") if r["IsDeleted"]]
    assert len(deleted) == 1 and deleted[0]["SystemModstamp"] == T0
    assert org.live_rows("Account")[-1]["Id"] == new  # new Ids sort after seeded ones


def test_objects_without_is_deleted_lose_deleted_rows(org: Org) -> None:
    role = str(org.live_rows("UserRole")[0]["Id"])
    org.delete("UserRole", role)

    assert role not in [r["Id"] for r in org.all_rows("UserRole", include_deleted=True)]
    with pytest.raises(KeyError):
        org.update("UserRole", role, {"Name": "gone"})


def test_mutations_reject_unknown_and_derived_fields(org: Org) -> None:
    cases: list[dict[str, object]] = [{"Bogus": 1}, {"BillingAddress": {}}, {"Id": "x"}]
    for values in cases:
        with pytest.raises(ValueError):
            org.insert("Account", values)
    with pytest.raises(ValueError):
        org.insert("Invoice__c", {"Amount_With_Tax__c": 1.0})


def test_formula_epoch_changes_values_not_modstamps(org: Org) -> None:
    before = org.live_rows("Invoice__c")
    org.bump_formula_epoch("Invoice__c")
    after = org.live_rows("Invoice__c")

    changed = [
        (b, a)
        for b, a in zip(before, after, strict=True)
        if b["Amount_With_Tax__c"] != a["Amount_With_Tax__c"]
    ]
    assert changed
    assert [r["SystemModstamp"] for r in before] == [r["SystemModstamp"] for r in after]
    b, a = changed[0]
    assert a["Amount_With_Tax__c"] == round(b["Amount__c"] * 1.21, 2)  # type: ignore[operator]


def test_late_rows_stay_invisible_until_made_visible(org: Org) -> None:
    clock = org.clock
    assert isinstance(clock, ManualClock)
    past = T0 - timedelta(days=1)
    late = org.insert("Account", {"Name": "late"}, system_modstamp=past, visible=False)
    timed = org.insert(
        "Account",
        {"Name": "timed"},
        system_modstamp=past,
        visible=False,
        visible_at=T0 + timedelta(minutes=5),
    )
    target = str(org.live_rows("Account")[0]["Id"])
    org.update("Account", target, {"Name": "late update"}, system_modstamp=past, visible=False)

    names = {r["Name"] for r in org.live_rows("Account")}
    assert not {"late", "timed", "late update"} & names
    assert org.row("Account", target)["Name"] == "Acme 0000000"  # type: ignore[index]
    assert {"late", "timed"} <= {r["Name"] for r in org.all_rows("Account", include_hidden=True)}

    org.make_visible("Account", late)
    org.make_visible("Account", target)
    clock.advance(timedelta(minutes=5))
    rows = {r["Id"]: r for r in org.live_rows("Account")}
    assert rows[late]["SystemModstamp"] == past and rows[timed]["Name"] == "timed"
    assert rows[target]["Name"] == "late update" and rows[target]["SystemModstamp"] == past


def test_burst_shares_one_system_modstamp(org: Org) -> None:
    ids = org.burst("Contact", 1000, T0 - timedelta(seconds=30))

    rows = [r for r in org.live_rows("Contact") if r["Id"] in set(ids)]
    assert len(rows) == 1000 and {r["SystemModstamp"] for r in rows} == {T0 - timedelta(seconds=30)}


def test_bulk_results_are_a_snapshot_at_completion() -> None:
    with EmulatorServer(Org(OrgConfig(rows=300))) as emu:
        client = EmulatorClient(emu.url)
        client.login()
        job_id = client.run_job("SELECT Id, Name, Amount_With_Tax__c FROM Invoice__c")
        first = client.results(job_id, max_records=100)
        locator = first.headers["Sforce-Locator"]
        second = client.results(job_id, locator, max_records=100).body

        rows = emu.org.live_rows("Invoice__c")
        emu.org.update("Invoice__c", str(rows[150]["Id"]), {"Name": "changed"})
        emu.org.delete("Invoice__c", str(rows[151]["Id"]))
        emu.org.insert("Invoice__c", {"Name": "new"})
        emu.org.bump_formula_epoch("Invoice__c")

        assert client.results(job_id, max_records=100).body == first.body
        assert client.results(job_id, locator, max_records=100).body == second
        assert client.wait_job(job_id)["numberRecordsProcessed"] == 250
        later = client.all_results(client.run_job("SELECT Id, Name FROM Invoice__c"))
        assert len(later) == 250 and [r[1] for r in later if r[1] == "new"] == ["new"]


def test_expected_document_renders_the_connector_view(org: Org) -> None:
    spec = org.spec("Account")
    row = org.live_rows("Account")[1]

    document = expected_document(spec, row)
    assert "BillingAddress" not in document and "BillingCity" in document
    stamp = row["SystemModstamp"]
    assert isinstance(stamp, datetime)
    assert document["SystemModstamp"] == stamp.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert document["IsDeleted"] is False
    assert isinstance(row["LastActivityDate"], date | None)
    assert document["LastActivityDate"] in (None, str(row["LastActivityDate"]))
    assert "Body" not in expected_document(org.spec("Attachment"), org.live_rows("Attachment")[0])
    assert org.expected_documents("Account")[1] == document


def test_mutation_api_is_thread_safe(org: Org) -> None:
    def writer() -> None:
        for _ in range(50):
            org.insert("Opportunity", {"Name": "concurrent"})

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    ids = [r["Id"] for r in org.live_rows("Opportunity") if r["Name"] == "concurrent"]
    assert len(ids) == len(set(ids)) == 200


def test_a_ten_million_row_object_costs_nothing_until_read() -> None:
    tracemalloc.start()
    started = time.perf_counter()
    org = Org(OrgConfig(rows=10_000_000, seed=3))
    bound = bind(
        org,
        parse(
            "SELECT Id, Name, SystemModstamp FROM BenchRecord__c "
            f"WHERE Id > '{record_id('a02', 7_654_321)}' ORDER BY Id LIMIT 5"
        ),
    )
    result = ResultSet(org, bound, org.snapshot(), include_deleted=False)
    page = result.page(result.start(), 5)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert list(page.refs()) == list(range(7_654_322, 7_654_327))
    assert result.count() == 5
    assert peak < 30 * 2**20 and elapsed < 10
    assert org.row("BenchRecord__c", record_id("a02", 9_999_999)) is not None
