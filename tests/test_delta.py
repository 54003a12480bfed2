"""The delta stream through the harness against the emulator: inserts, updates, deletions,
bursts, late commits, the Bulk path for large windows, and the backfill/delta seam.

Each test backfills in a first session, changes the org with chosen SystemModstamps, and lets
later sessions read the changes. Sessions stop on a condition (every cursor has passed the
changes), not after fixed sleeps: the connector reads up to `floor(now) - delta_lag`, so a
session simply runs until real time has carried its horizon past the stamps (the one explicit
wait, in the Bulk test, is bounded by the same rule). Stamps are chosen relative to the cursors
in the state (always after them, so the delta stream, not the backfill, must read them).
Captures are compared with the emulator's rows field by field, reduced by Id with deletions
applied, and each changed row must be captured exactly once.

Deletions a cursor query cannot see (hard deletes, objects without `IsDeleted`, append-only
objects) are covered by test_deletions.py.
"""

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests import flow_harness
from tests.capture_support import (
    PREFIX,
    captured_rows,
    discovered_source,
    expected_rows,
    rebound_source,
    row_jobs,
    without_meta,
)
from tests.delta_support import (
    INCREMENTAL,
    NO_POLL,
    POLL,
    TEXT_FIELD,
    TIMESTAMP_FIELDS,
    TRICKY,
    combined,
    cursor_of,
    cursors_reach,
    ids_of,
    inc_cursor,
    is_deletion,
    live_ids,
    now_second,
    rendered,
    run,
)
from tests.emulator import EmulatorServer, ManualClock, Org, OrgConfig


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> flow_harness.FlowSource:
    """One discovery for the module: every emulator here seeds the same schema, and
    `rebound_source` points the catalog at each test's own emulator."""
    with EmulatorServer(Org(OrgConfig(rows=10))) as emulator:
        return discovered_source(tmp_path_factory.mktemp("delta"), emulator)


# --- 1. every incremental object ------------------------------------------------------------------


def test_every_incremental_object_captures_changes_deletions_a_burst_and_a_late_commit(
        catalog: flow_harness.FlowSource) -> None:
    """Inserts, updates and deletes on every incremental object, a 5,000-row burst in one second,
    and a row whose commit comes after a session has already run past its stamp in real time.

    The lag is 10 s here (not 2 s) so that the late commit is real: the row is stamped at `t`, one
    second before the changes are made; the second session runs at real times after `t` but,
    reading only up to `now - 10 s`, stops short of `t`; the row then commits (typically 4 s after
    `t`) and the third session captures it. A lag shorter than that delay would lose the row, as
    connectors that read up to `now` do. (10 s rather than less leaves a slow machine 7 s to
    finish the second session before its horizon would pass `t`; it costs 2 s of waiting.)
    """
    lag = timedelta(seconds=10)
    org = Org(OrgConfig(rows=20, object_rows={"Invoice__c": 20, "AccountHistory": 20, "Attachment": 10}))
    with EmulatorServer(org) as emulator:
        source = rebound_source(catalog, emulator, objects=set(INCREMENTAL), resource=POLL, delta_lag="PT10S",
                                bulk_delta_threshold=100_000)
        first = run(source, flow_harness.backfills_complete)
        assert {obj: captured_rows(first, obj) for obj in INCREMENTAL} == {
            obj: expected_rows(emulator, obj) for obj in INCREMENTAL}

        # Every cursor is at most floor(now) - lag, so these stamps are all after every cursor
        # (and after the cutoff): only the delta stream can capture them.
        now = now_second()
        changed_at = now - lag + timedelta(seconds=1)  # inserts and the burst
        settled_at = changed_at + timedelta(seconds=1)  # updates and deletes
        late_at = now - timedelta(seconds=1)  # the late commit's stamp: its transaction began a second ago
        assert max(cursor_of(first.state, obj) for obj in INCREMENTAL) < changed_at

        changed: dict[str, set[str]] = {obj: set() for obj in INCREMENTAL}
        deleted: dict[str, str] = {}
        for obj in INCREMENTAL:
            seeded = live_ids(org, obj)
            changed[obj] |= {org.insert(obj, system_modstamp=changed_at) for _ in range(2)}
            if obj == "AccountHistory":
                continue  # append-only: history rows are only ever inserted
            values: dict[str, object] = {TEXT_FIELD[obj]: TRICKY}
            if obj == "Invoice__c":
                values["Amount__c"] = 1234.5  # an input of the formula field
            org.update(obj, seeded[1], values, system_modstamp=settled_at)
            changed[obj].add(seeded[1])
            if obj != "CaseStatus":  # CaseStatus has no IsDeleted: a deleted row leaves queryAll too
                org.delete(obj, seeded[2], at=settled_at)
                changed[obj].add(seeded[2])
                deleted[obj] = seeded[2]
        burst = set(org.burst("BenchRecord__c", 5_000, changed_at))
        changed["BenchRecord__c"] |= burst
        late = org.insert("Opportunity", system_modstamp=late_at, visible=False)  # its transaction is open

        emulator.reset_counters()
        second = run(source, cursors_reach(INCREMENTAL, settled_at), first.state)
        # REST only (the threshold is above the burst), and the burst's second took several pages.
        assert row_jobs(emulator) == [] and emulator.counters.requests["query_more"] >= 2
        second_cursor = cursor_of(second.state, "Opportunity")
        assert second_cursor < late_at, (
            "precondition: the second session must stop before its horizon reaches the late row "
            f"(cursor {second_cursor}, row stamped {late_at}); the machine was too slow for this test")
        assert late not in ids_of(second, "Opportunity")
        org.make_visible("Opportunity", late)
        commit_delay = time.time() - late_at.timestamp()
        assert 1 < commit_delay < lag.total_seconds(), commit_delay  # late, but by less than the lag
        changed["Opportunity"].add(late)

        third = run(source, cursors_reach(INCREMENTAL, late_at), second.state)
        assert ids_of(third, "Opportunity")[late] == 1

        everything = combined(first, second, third)
        delta = combined(second, third)
        for obj in INCREMENTAL:
            assert captured_rows(everything, obj) == expected_rows(emulator, obj), obj
            # Each change exactly once (no loop over the burst's second, nothing re-read), and
            # nothing the backfill already held.
            assert ids_of(delta, obj) == Counter(changed[obj]), obj
            truth = rendered(org, obj)
            for doc in delta.documents_of(PREFIX + obj):
                assert is_deletion(doc) == (doc["Id"] == deleted.get(obj)), doc["Id"]
                assert without_meta(doc) == truth[doc["Id"]], doc["Id"]
        assert set(deleted) == set(INCREMENTAL) - {"AccountHistory", "CaseStatus"}

        # The checkpoint rule: no LogCursor at or past the burst's second before all of it was emitted.
        emitted, cursors_past = 0, 0
        for checkpoint in second.checkpoints:
            emitted += sum(1 for c, doc in checkpoint.documents
                           if c == PREFIX + "BenchRecord__c" and doc["Id"] in burst)
            moved = inc_cursor(checkpoint.updated, "BenchRecord__c")
            if moved is not None and moved >= changed_at:
                cursors_past += 1
                assert emitted == len(burst), (moved, emitted)
        assert cursors_past >= 1


# --- 2. a large window goes through Bulk queryAll ---------------------------------------------------


def test_a_window_over_the_threshold_is_exported_by_bulk_queryall_as_rest_would_have(
        catalog: flow_harness.FlowSource) -> None:
    """2,200+ changes in one window, with the threshold at its minimum (2,000): Bulk queryAll
    jobs export it, and their documents equal, one for one and in order, those REST produces
    for the same window from the same state, and the emulator's rows (deleted ones included)."""
    org = Org(OrgConfig(rows=20))
    with EmulatorServer(org) as emulator:
        bulk = rebound_source(catalog, emulator, objects={"Account"}, resource=POLL, delta_lag="PT2S",
                              bulk_delta_threshold=2_000)
        rest = rebound_source(catalog, emulator, objects={"Account"}, resource=POLL, delta_lag="PT2S",
                              bulk_delta_threshold=1_000_000)
        first = run(rebound_source(bulk, resource=NO_POLL), flow_harness.backfills_complete)
        cutoff = cursor_of(first.state, "Account")

        seeded = live_ids(org, "Account")
        early_at, last_at = cutoff + timedelta(seconds=1), cutoff + timedelta(seconds=2)
        early = org.burst("Account", 1_100, early_at)
        for record in seeded[1:4]:
            org.update("Account", record, {"Name": TRICKY, "NumberOfEmployees": None}, system_modstamp=early_at)
        for record in seeded[4:6]:
            org.delete("Account", record, at=early_at)
        inserted = [org.insert("Account", system_modstamp=last_at) for _ in range(2)]
        org.burst("Account", 1_100, last_at)
        org.delete("Account", early[0], at=last_at)
        deleted = {*seeded[4:6], early[0]}

        # The whole window must be over the threshold in one fetch: start the session only once
        # the horizon (floor(now) - 2 s) has reached the last stamp, or a first fetch could read
        # the first burst alone (1,100 rows, through REST). Rarely more than a second or two,
        # as the backfill already took most of it.
        time.sleep(max(0.0, last_at.timestamp() + 2 - time.time()))

        emulator.reset_counters()
        via_bulk = run(bulk, cursors_reach(["Account"], last_at), first.state)
        jobs = row_jobs(emulator)
        assert jobs and {(job.operation, job.object) for job in jobs} == {("queryAll", "Account")}
        assert emulator.counters.requests["query_more"] == 0  # no REST page past each window's first

        emulator.reset_counters()
        via_rest = run(rest, cursors_reach(["Account"], last_at), first.state)
        assert row_jobs(emulator) == []
        assert emulator.counters.requests["query_more"] >= 1

        bulk_docs = via_bulk.documents_of(PREFIX + "Account")
        assert len(bulk_docs) == 1_100 + 3 + 2 + 2 + 1_100
        assert bulk_docs == via_rest.documents_of(PREFIX + "Account")
        assert {doc["Id"] for doc in bulk_docs if is_deletion(doc)} == deleted
        assert {*inserted, *seeded[1:4]} <= {doc["Id"] for doc in bulk_docs if not is_deletion(doc)}
        truth = rendered(org, "Account")
        for doc in bulk_docs:
            assert without_meta(doc) == truth[doc["Id"]], doc["Id"]
        assert captured_rows(combined(first, via_bulk), "Account") == expected_rows(emulator, "Account")


def test_a_large_window_on_an_object_the_bulk_api_rejects_is_read_through_rest(
        catalog: flow_harness.FlowSource) -> None:
    """CaseStatus is refused by Bulk. A session whose state does not record that refusal finds a
    window over the threshold: it tries Bulk at most once, reads the window through REST, and records
    the refusal, so that the next large window goes to REST without trying Bulk again.

    The session's periodic Id export (over 2,000 Ids, so Bulk too) races the delta window: whichever
    asks Bulk first learns the refusal, and the other then reads through REST without asking. Both
    orders are correct; the assertions hold for either."""
    org = Org(OrgConfig(rows=5))
    with EmulatorServer(org) as emulator:
        source = rebound_source(catalog, emulator, objects={"CaseStatus"}, resource=POLL, delta_lag="PT2S",
                                bulk_delta_threshold=2_000)
        first = run(rebound_source(source, resource=NO_POLL), flow_harness.backfills_complete)
        assert first.state["bindingStateV1"]["CaseStatus"]["bulk_refused"]  # the backfill learned it
        del first.state["bindingStateV1"]["CaseStatus"]["bulk_refused"]
        changed_at = cursor_of(first.state, "CaseStatus") + timedelta(seconds=1)
        seeded = live_ids(org, "CaseStatus")
        burst = org.burst("CaseStatus", 2_001, changed_at)
        org.update("CaseStatus", seeded[0], {"MasterLabel": TRICKY}, system_modstamp=changed_at)

        emulator.reset_counters()
        second = run(source, cursors_reach(["CaseStatus"], changed_at), first.state)
        # Refused: no job was created, and each of the two readers asked Bulk at most once.
        assert 1 <= emulator.counters.requests["job_create"] <= 2 and emulator.counters.jobs_created == []
        assert ids_of(second, "CaseStatus") == Counter([*burst, seeded[0]])
        assert second.state["bindingStateV1"]["CaseStatus"]["bulk_refused"]

        again_at = cursor_of(second.state, "CaseStatus") + timedelta(seconds=1)
        later = org.burst("CaseStatus", 2_001, again_at)
        emulator.reset_counters()
        third = run(source, cursors_reach(["CaseStatus"], again_at), second.state)
        assert emulator.counters.requests["job_create"] == 0
        assert ids_of(third, "CaseStatus") == Counter(later)
        assert captured_rows(combined(first, second, third), "CaseStatus") == expected_rows(emulator, "CaseStatus")


# --- 3. a snapshot of delta documents ---------------------------------------------------------------


def test_delta_snapshot(catalog: flow_harness.FlowSource, snapshot: Any) -> None:
    """The second session's documents after an insert, an update and a delete on Contact."""
    org = Org(OrgConfig(rows=12))
    with EmulatorServer(org) as emulator:
        source = rebound_source(catalog, emulator, objects={"Contact"}, resource=POLL, delta_lag="PT2S")
        first = run(source, flow_harness.backfills_complete)
        stamp = cursor_of(first.state, "Contact") + timedelta(seconds=1)

        seeded = live_ids(org, "Contact")
        org.insert("Contact", {"FirstName": "Zoë", "LastName": TRICKY}, system_modstamp=stamp)
        org.update("Contact", seeded[3], {"Title": "VP, \"Growth\"", "DoNotCall": True, "Email": None},
                   system_modstamp=stamp)
        org.delete("Contact", seeded[5], at=stamp)

        second = run(source, cursors_reach(["Contact"], stamp), first.state)
        documents = sorted(((c, flow_harness.sort_keys(d)) for c, d in second.documents),
                           key=lambda item: (item[0], item[1]["Id"]))
        assert snapshot("capture.stdout.json") == [[c, flow_harness.redact(d, TIMESTAMP_FIELDS)] for c, d in documents]


# --- 4. the seam between backfill and delta ---------------------------------------------------------


def test_rows_at_the_cutoff_go_to_the_backfill_and_one_second_later_to_the_delta_stream(
        catalog: flow_harness.FlowSource) -> None:
    """Rows stamped at the cutoff second (and before) are captured by the backfill, rows stamped
    one second later (and after) by the delta stream; every row of the org exactly once.

    The cutoff is `floor(open) - lag`, known only once the first session opens, so the seam rows
    are made when its first checkpoint (the initialised state) arrives. The org's clock is
    manual and Bulk jobs need one second of it to complete, so the backfill's jobs wait for the
    rows; with `NO_POLL` the delta stream does not read before the second session.
    """
    objects = ("AccountHistory", "Contact")
    clock = ManualClock(datetime.now(tz=UTC))
    org = Org(OrgConfig(rows=12, object_rows={"AccountHistory": 12}), clock)
    with EmulatorServer(org) as emulator:
        emulator.knobs.job_in_progress_seconds = 1.0
        source = rebound_source(catalog, emulator, objects=set(objects), resource=POLL, delta_lag="PT2S")
        seam: dict[str, datetime] = {}
        opened_by = now_second()

        def make_seam_rows(progress: flow_harness.Progress) -> None:
            cutoff = inc_cursor(progress.checkpoint.updated, objects[0]) or inc_cursor(
                progress.checkpoint.updated, objects[1])
            if seam or cutoff is None:
                return
            seam["cutoff"], seam["opened"] = cutoff, now_second()
            for obj in objects:
                for offset in (-1, 0, 0, 1, 1, 2):
                    org.insert(obj, system_modstamp=cutoff + timedelta(seconds=offset))
            contact = live_ids(org, "Contact")
            org.update("Contact", contact[0], {"Title": "at the cutoff"}, system_modstamp=cutoff)
            org.update("Contact", contact[1], {"Title": "just after"}, system_modstamp=cutoff + timedelta(seconds=1))
            org.delete("Contact", contact[2], at=cutoff + timedelta(seconds=1))
            emulator.knobs.job_in_progress_seconds = 0.0
            clock.advance(2)  # release the jobs waiting for the rows

        first = run(rebound_source(source, resource=NO_POLL), flow_harness.backfills_complete,
                    on_checkpoint=make_seam_rows)
        cutoff = seam["cutoff"]
        assert opened_by - timedelta(seconds=2) <= cutoff <= seam["opened"] - timedelta(seconds=2)
        second = run(source, cursors_reach(objects, cutoff + timedelta(seconds=2)), first.state)

        for obj in objects:
            cf = "CreatedDate" if obj == "AccountHistory" else "SystemModstamp"
            stamps: dict[str, datetime] = {}
            for row in org.all_rows(obj):  # deleted rows included
                stamp = row[cf]
                assert isinstance(stamp, datetime)
                stamps[str(row["Id"])] = stamp
            emitted = Counter[tuple[str, str]]()
            for session, result in (("backfill", first), ("delta", second)):
                for checkpoint in result.checkpoints:
                    patch = ((checkpoint.updated.get("bindingStateV1") or {}).get(obj)) or {}
                    for collection, doc in checkpoint.documents:
                        if collection == PREFIX + obj:
                            assert ("backfill" in patch) == (session == "backfill"), (obj, doc["Id"], patch)
                            emitted[(doc["Id"], session)] += 1
            assert emitted == Counter({(record, "backfill" if stamp <= cutoff else "delta"): 1
                                       for record, stamp in stamps.items()}), obj
            seam_rows = Counter(stamp - cutoff for stamp in stamps.values())
            assert seam_rows[timedelta(0)] >= 2 and seam_rows[timedelta(seconds=1)] >= 2, obj
            assert captured_rows(combined(first, second), obj) == expected_rows(emulator, obj), obj
