"""Backfills through the harness, one connector process per session, against the emulator.

Every test compares what the capture holds (reduced by key) with the emulator's rows, field
by field: a count would not notice a wrong value or a row swapped for another.
"""

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest

from tests import flow_harness
from tests.capture_support import (
    PREFIX,
    captured_rows,
    discovered_source,
    expected_rows,
    object_logs,
    preview_until,
    rebound_source,
    row_jobs,
    snapshot_rows,
)
from tests.emulator import EmulatorServer, Org, OrgConfig

TIMESTAMP_FIELDS = {"SystemModstamp", "LastModifiedDate", "CreatedDate", "CloseDate", "LastActivityDate"}


def everything_captured(progress: flow_harness.Progress) -> bool:
    """Every incremental binding finished its backfill and every snapshot binding took one."""
    states = progress.state.get("bindingStateV1") or {}
    for key in progress.state_keys:
        state = states.get(key)
        if not isinstance(state, dict):
            return False
        if state.get("backfill") or ("inc" not in state and "snapshot" not in state):
            return False
    return True


def run_until_captured(source: flow_harness.FlowSource, **kw: Any) -> flow_harness.PreviewResult:
    return preview_until(source, everything_captured, timeout=90, **kw)


def incremental_objects(source: flow_harness.FlowSource) -> list[str]:
    return [b.target.removeprefix(PREFIX) for b in source.enabled_bindings
            if source.collection(b.target).spec()["key"] == ["/Id"]]


@pytest.fixture
def emulator() -> Any:
    with EmulatorServer(Org(OrgConfig(rows=600))) as server:
        server.knobs.max_page_rows = 250
        yield server


def test_every_object_backfills_completely(tmp_path: Path, emulator: EmulatorServer) -> None:
    source = discovered_source(tmp_path, emulator, backfill_slice_rows=400)
    result = run_until_captured(source)

    objects = [b.target.removeprefix(PREFIX) for b in source.enabled_bindings]
    assert len(objects) == 9
    for obj in objects:
        captured = captured_rows(result, obj) if obj in incremental_objects(source) else snapshot_rows(result, obj)
        assert captured == expected_rows(emulator, obj), (obj, object_logs(result, obj))


def test_capture_snapshot(tmp_path: Path, emulator: EmulatorServer, snapshot: Any) -> None:
    source = discovered_source(tmp_path, emulator)
    result = run_until_captured(source)
    assert snapshot("capture.stdout.json") == flow_harness.capture_snapshot(result, redact_fields=TIMESTAMP_FIELDS)


def test_an_object_the_bulk_api_rejects_is_backfilled_through_rest(tmp_path: Path, emulator: EmulatorServer) -> None:
    source = discovered_source(tmp_path, emulator, {"CaseStatus"})
    result = run_until_captured(source)

    assert captured_rows(result, "CaseStatus") == expected_rows(emulator, "CaseStatus")
    assert [j.object for j in emulator.counters.jobs_created] == []  # refused at create: no job exists
    assert emulator.counters.requests["query"] >= 1


def test_a_job_that_fails_transiently_twice_is_resubmitted(tmp_path: Path, emulator: EmulatorServer) -> None:
    source = discovered_source(tmp_path, emulator, {"Contact"})
    emulator.fail_next_jobs(2, "UNKNOWN_EXCEPTION: An unexpected error occurred. Please include this ErrorId",
                            object="Contact")
    result = run_until_captured(source)

    assert captured_rows(result, "Contact") == expected_rows(emulator, "Contact")
    assert len(row_jobs(emulator)) == 3  # two failed, the third exported the object


def test_a_slice_that_times_out_is_split(tmp_path: Path, emulator: EmulatorServer) -> None:
    source = discovered_source(tmp_path, emulator, {"Opportunity"}, backfill_slice_rows=2000)
    emulator.fail_next_jobs(1, "QUERY_TIMEOUT: Your query request was running for too long.", object="Opportunity")
    result = run_until_captured(source)

    assert captured_rows(result, "Opportunity") == expected_rows(emulator, "Opportunity")
    limits = [j.query.rsplit("LIMIT ", 1)[1] for j in row_jobs(emulator)]
    assert limits[:2] == ["2000", "1000"]


def test_a_page_cut_mid_row_loses_and_invents_nothing(tmp_path: Path, emulator: EmulatorServer) -> None:
    source = discovered_source(tmp_path, emulator, {"Account"})
    emulator.reset_next_result_pages(2)
    result = run_until_captured(source)

    assert captured_rows(result, "Account") == expected_rows(emulator, "Account")
    assert all(set(doc) - {"_meta"} == set(expected_rows(emulator, "Account")[doc["Id"]])
               for doc in result.documents_of(PREFIX + "Account"))


def test_restarts_resume_jobs_and_repeat_at_most_one_page(tmp_path: Path) -> None:
    org = Org(OrgConfig(rows=200, object_rows={"Account": 6_000}))
    with EmulatorServer(org) as emulator:
        emulator.knobs.max_page_rows = 500
        source = discovered_source(tmp_path, emulator, {"Account"}, backfill_slice_rows=2_500)
        emulator.reset_counters()

        restarts = 0
        state: dict[str, Any] = {}
        seen: list[flow_harness.PreviewResult] = []
        while True:
            # Each session stops after two checkpoints with documents: mid-slice, mid-job.
            result = flow_harness.preview(source, sessions=[flow_harness.Session(transactions=-1, checkpoints=2,
                                                                                 until=everything_captured)],
                                          delay=0.2, timeout=60, initial_state=state)
            seen.append(result)
            state = result.state
            if everything_captured_state(state):
                break
            restarts += 1
            assert restarts < 40, "the backfill is not making progress across restarts"

        captured: dict[str, dict[str, Any]] = {}
        for result in seen:
            captured |= captured_rows(result, "Account")
        assert captured == expected_rows(emulator, "Account")

        counters = emulator.counters
        checkpointed_jobs = checkpointed_job_ids(seen, "Account")
        assert restarts >= 5
        # Three slices of 2,500 rows, the last one short. A slice's job is submitted again only
        # if the connector was killed after creating it and before checkpointing its id.
        jobs = row_jobs(emulator)
        queries = [job.query for job in jobs]
        assert len(set(queries)) == 3
        for job in jobs[:-1]:
            later = queries[queries.index(job.query) + 1:]
            assert job.job_id not in checkpointed_jobs or job.query not in later, job
        for job in jobs:
            fetched = counters.locators_fetched.get(job.job_id, [])
            # A page is fetched again only when a restart cut it off: at most once per restart.
            assert len(fetched) - len(set(fetched)) <= restarts


def checkpointed_job_ids(results: list[flow_harness.PreviewResult], state_key: str) -> set[str]:
    """Every Bulk job id a backfill checkpoint of `state_key` recorded."""
    ids: set[str] = set()
    for result in results:
        for update in result.state_updates:
            backfill = ((update.get("bindingStateV1") or {}).get(state_key) or {}).get("backfill") or {}
            job_id = (backfill.get("next_page") or {}).get("job_id")
            if job_id:
                ids.add(job_id)
    return ids


def everything_captured_state(state: dict[str, Any]) -> bool:
    bindings = state.get("bindingStateV1") or {}
    return bool(bindings) and all(isinstance(s, dict) and not s.get("backfill") for s in bindings.values())


def test_an_unchanged_snapshot_is_not_emitted_again(tmp_path: Path, emulator: EmulatorServer) -> None:
    source = rebound_source(discovered_source(tmp_path, emulator, {"UserRole"}), resource={"interval": "PT1S"})
    documents_per_pass: list[int] = []

    def count_passes(progress: flow_harness.Progress) -> bool:
        if ((progress.checkpoint.updated.get("bindingStateV1") or {}).get("UserRole") or {}).get("snapshot"):
            documents_per_pass.append(progress.checkpoint.document_count)
        return len(documents_per_pass) >= 4

    result = flow_harness.preview(source, sessions=[flow_harness.Session(transactions=-1, until=count_passes)],
                                  delay=0.2, timeout=60)

    rows = len(expected_rows(emulator, "UserRole"))
    # The CDK labels the first pass's rows as creates ("c") and later ones as updates ("u"), and
    # its digest covers that label, so the second pass is emitted once more. After that, an
    # unchanged object emits nothing: the rows come in the same order every time.
    assert documents_per_pass == [rows, rows, 0, 0]
    # Salesforce guarantees no order without ORDER BY (PK-chunked jobs finish in any order),
    # and a reordered pass would look changed.
    assert all(job.query.endswith(" ORDER BY Id") for job in row_jobs(emulator))
    assert snapshot_rows(result, "UserRole") == expected_rows(emulator, "UserRole")


def test_a_token_that_expires_mid_backfill_is_refreshed_once(tmp_path: Path, emulator: EmulatorServer) -> None:
    source = discovered_source(tmp_path, emulator, {"Account"})
    emulator.reset_counters()
    expired: list[int] = []

    def expire_after_first_page(progress: flow_harness.Progress) -> None:
        if progress.checkpoint.document_count and not expired:
            emulator.expire_all_tokens()
            expired.append(progress.checkpoints)

    result = run_until_captured(source, on_checkpoint=expire_after_first_page)

    assert expired, "the backfill never reached a page to expire the token after"
    assert captured_rows(result, "Account") == expected_rows(emulator, "Account")
    assert emulator.counters.tokens_issued == 2  # the first sign-in, and one refresh after the expiry


def test_an_exhausted_api_allocation_is_waited_out_not_reported_as_done(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    source = discovered_source(tmp_path, emulator, {"Contact"})
    exhausted: list[threading.Timer] = []

    def exhaust_after_first_page(progress: flow_harness.Progress) -> None:
        if progress.checkpoint.document_count and not exhausted:
            emulator.set_api_usage(emulator.knobs.daily_api_requests)
            # The allocation rolls over later: refill it from another thread while the connector waits.
            refill = threading.Timer(3.0, emulator.set_api_usage, args=(0,))
            refill.start()
            exhausted.append(refill)

    result = run_until_captured(source, on_checkpoint=exhaust_after_first_page)

    assert exhausted, "the backfill never reached a page to exhaust the allocation after"
    waits = [log for log in result.logs if log.get("fields", {}).get("args", {}).get("error_code") ==
             "REQUEST_LIMIT_EXCEEDED"]
    assert waits, "the connector never met the exhausted allocation"
    assert captured_rows(result, "Contact") == expected_rows(emulator, "Contact")


def test_start_date_bounds_the_backfill_exactly(tmp_path: Path, emulator: EmulatorServer) -> None:
    rows = emulator.org.live_rows("Contact")
    start = rows[len(rows) // 2]["SystemModstamp"]  # rows at exactly this second must be captured
    source = discovered_source(tmp_path, emulator, {"Contact"})
    source = dataclasses.replace(source, config={**source.config, "start_date": start.isoformat()})

    result = run_until_captured(source)

    expected = {doc_id: doc for doc_id, doc in expected_rows(emulator, "Contact").items()
                if doc["SystemModstamp"] >= start.strftime("%Y-%m-%dT%H:%M:%S.000Z")}
    assert 0 < len(expected) < len(rows)
    assert captured_rows(result, "Contact") == expected
