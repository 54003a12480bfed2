"""Deletions a cursor query cannot see, end to end through the harness against the emulator: hard
deletes, rows emptied from the recycle bin, deletions on objects without `IsDeleted` and on
append-only objects, a deletion log Salesforce no longer has, and a backfill page read after a newer
version of one of its rows (which must not win).

getDeleted reads whole minutes, and its windows span at least two: a test that deleted rows "now"
would wait for real minutes to pass. Instead the deletions are stamped a few minutes back and the
binding's deletion watermark is moved back before them, which is exactly the state of a capture
whose deletion log reading lags by those minutes.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests import flow_harness
from tests.capture_support import PREFIX, captured_rows, discovered_source, expected_rows, preview_until, rebound_source
from tests.delta_support import POINTERS, POLL, Until, combined, cursor_of, cursors_reach, run
from tests.emulator import EmulatorServer, Org, OrgConfig

OBJECTS = ("Account", "Contact", "Opportunity", "AccountHistory", "CaseStatus")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> flow_harness.FlowSource:
    with EmulatorServer(Org(OrgConfig(rows=10))) as emulator:
        return discovered_source(tmp_path_factory.mktemp("deletions"), emulator, set(OBJECTS))


def deletions_of(state: dict[str, Any], obj: str) -> dict[str, Any]:
    return ((state.get("bindingStateV1") or {}).get(obj) or {}).get("deletions") or {}


def baselines_taken(objects: tuple[str, ...]) -> Until:
    """Backfills done and every object's first Id baseline taken."""

    def until(progress: flow_harness.Progress) -> bool:
        state = dict(progress.state)
        return flow_harness.backfills_complete(progress) and all(
            deletions_of(state, obj).get("baseline_at") for obj in objects)

    return until


def minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def watermark_moved_back(state: dict[str, Any], objects: tuple[str, ...], to: datetime) -> dict[str, Any]:
    """`state` as if the deletion log of `objects` had been read only up to `to`."""
    for obj in objects:
        deletions_of(state, obj)["covered"] = to.isoformat()
    return state


def deletions_arrive(ids: dict[str, set[str]], seen: dict[str, set[str]]) -> Until:
    def until(progress: flow_harness.Progress) -> bool:
        return all(ids[obj] <= seen[obj] for obj in ids)

    return until


def test_hard_deletes_emptied_bins_and_deletions_no_cursor_can_see_all_arrive(
        catalog: flow_harness.FlowSource) -> None:
    with EmulatorServer(Org(OrgConfig(rows=200))) as emulator:
        org = emulator.org
        source = rebound_source(catalog, emulator, resource=POLL, delta_lag="PT2S")
        first = run(source, baselines_taken(OBJECTS))

        # Deletions stamped at a whole minute, three minutes back; the log watermark moved back before it.
        at = minute(datetime.now(tz=UTC)) - timedelta(minutes=3)
        state = watermark_moved_back(first.state, ("Account", "Contact", "Opportunity", "AccountHistory"),
                                     at - timedelta(minutes=2))
        live = {obj: [str(r["Id"]) for r in org.live_rows(obj)] for obj in OBJECTS}
        gone: dict[str, set[str]] = {obj: set() for obj in OBJECTS}
        for record in live["Account"][:15]:  # hard deletes: the Bulk API's hardDelete
            org.hard_delete("Account", record, at=at)
            gone["Account"].add(record)
        for record in live["Contact"][:10]:
            org.hard_delete("Contact", record, at=at)
            gone["Contact"].add(record)
        for record in live["Contact"][10:13]:  # soft deletes whose recycle bin is emptied at once
            org.delete("Contact", record, at=at)
            gone["Contact"].add(record)
        org.empty_recycle_bin("Contact", live["Contact"][10:13], at=at, query_all_grace=timedelta(0))
        for record in live["Opportunity"][:5]:  # soft deletes: queryAll shows these
            org.delete("Opportunity", record, at=cursor_of(first.state, "Opportunity") + timedelta(seconds=1))
            gone["Opportunity"].add(record)
        for record in live["AccountHistory"][:4]:  # append-only: a delete does not move CreatedDate
            org.delete("AccountHistory", record, at=at)
            gone["AccountHistory"].add(record)
        org.delete("CaseStatus", live["CaseStatus"][0])  # no IsDeleted, and no deletion log
        gone["CaseStatus"].add(live["CaseStatus"][0])

        seen: dict[str, set[str]] = {obj: set() for obj in OBJECTS}

        def collect(collection: str, doc: Any) -> None:
            if (doc.get("_meta") or {}).get("op") == "d":
                seen[collection.removeprefix(PREFIX)].add(doc["Id"])

        second = preview_until(source, deletions_arrive(gone, seen), initial_state=state, timeout=60,
                               resource_path_pointers=POINTERS, on_document=collect)

        everything = combined(first, second)
        for obj in OBJECTS:
            assert captured_rows(everything, obj) == expected_rows(emulator, obj), obj
        assert emulator.counters.requests["get_deleted"] >= 1


def test_a_capture_paused_longer_than_the_deletion_log_says_so_and_reconciles(
        catalog: flow_harness.FlowSource) -> None:
    with EmulatorServer(Org(OrgConfig(rows=200))) as emulator:
        org = emulator.org
        source = rebound_source(catalog, emulator, objects={"Account", "Contact"}, resource=POLL, delta_lag="PT2S")
        first = run(source, baselines_taken(("Account", "Contact")))

        # Sixteen days of pause: rows deleted then are no longer in Salesforce's deletion log.
        paused_at = datetime.now(tz=UTC) - timedelta(days=16)
        accounts = [str(r["Id"]) for r in org.live_rows("Account")][:7]
        for record in accounts:
            org.hard_delete("Account", record, at=paused_at + timedelta(hours=1))
        state = watermark_moved_back(first.state, ("Account", "Contact"), minute(paused_at))
        # The Ids of the first session are the baseline of before the pause.
        deletions_of(state, "Account")["baseline_at"] = (paused_at - timedelta(hours=1)).isoformat()
        # Contact's baseline is lost: its missed deletions cannot be named.
        deletions_of(state, "Contact").update(baseline=None, baseline_at=None)
        contact = str(org.live_rows("Contact")[0]["Id"])
        org.hard_delete("Contact", contact, at=paused_at + timedelta(hours=1))

        def reconciled(progress: flow_harness.Progress) -> bool:
            account = deletions_of(dict(progress.state), "Account")
            resumed = datetime.fromisoformat(account["covered"]) > paused_at + timedelta(days=1)
            return resumed and not account.get("export")

        second = run(source, reconciled, state)

        errors = [str(line.get("msg")) for line in second.logs if line.get("level") == "ERROR"]
        account_error = next(e for e in errors if e.startswith("Account: Salesforce's deletion log no longer has"))
        assert "reconciled from an export of its Ids" in account_error
        contact_error = next(e for e in errors if e.startswith("Contact: Salesforce's deletion log no longer has"))
        assert "cannot be named" in contact_error and "data flow reset" in contact_error
        statuses = [line for line in second.logs if (line.get("fields") or {}).get("eventType") == "connectorStatus"
                    and "deletion log" in str(line.get("msg"))]
        assert len(statuses) == 2

        everything = combined(first, second)
        assert captured_rows(everything, "Account") == expected_rows(emulator, "Account")
        # Said, and left: the one Contact deletion no source could name.
        assert set(captured_rows(everything, "Contact")) - set(expected_rows(emulator, "Contact")) == {contact}


def test_a_row_updated_after_its_backfill_job_completed_ends_with_its_newer_values(
        catalog: flow_harness.FlowSource) -> None:
    """The backfill's job holds the row's old version; the update lands after the job completed and
    before its page is read. Result pages come slowly here, so without the delta stream's hold the
    newer version would be emitted first and then overwritten by the page's older one."""
    with EmulatorServer(Org(OrgConfig(rows=10, object_rows={"Account": 2_000}))) as emulator:
        emulator.knobs.max_page_rows = 200
        org = emulator.org
        source = rebound_source(catalog, emulator, objects={"Account"}, resource=POLL, delta_lag="PT1S",
                                backfill_slice_rows=2_000)
        late_row = str(org.live_rows("Account")[-1]["Id"])  # on the job's last page
        updated: list[datetime] = []

        def update_once_the_job_is_read_from(progress: flow_harness.Progress) -> None:
            page = ((((progress.state.get("bindingStateV1") or {}).get("Account") or {}).get("backfill") or {})
                    .get("next_page") or {})
            if page.get("phase") == "reading" and page.get("locator") and not updated:
                emulator.knobs.result_page_delay_seconds = 0.3
                stamp = datetime.now(tz=UTC).replace(microsecond=0)
                org.update("Account", late_row, {"Name": "newer"}, system_modstamp=stamp)
                updated.append(stamp)

        results = []
        state: dict[str, Any] = {}
        for _ in range(4):  # restarts mid-job too
            results.append(flow_harness.preview(
                source, sessions=[flow_harness.Session(transactions=-1, duration=3.0)], delay=0.2, timeout=60,
                initial_state=state, resource_path_pointers=POINTERS, on_checkpoint=update_once_the_job_is_read_from))
            state = results[-1].state
        assert updated, "the backfill never reached its second page"
        results.append(run(source, cursors_reach(["Account"], updated[0]), state))

        everything = combined(*results)
        assert captured_rows(everything, "Account")[late_row]["Name"] == "newer"
        assert captured_rows(everything, "Account") == expected_rows(emulator, "Account")
