"""deletions.py against a scripted session, in frozen time: which getDeleted windows are read, which
listed rows become deletions, what a missed window does, and how Id digests reconcile."""

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from source_bulk_export import deletions
from source_bulk_export.checkpoints import Binding, DeletionsState
from source_bulk_export.deletions import Deletions, deletion_document
from source_bulk_export.exports import Exports
from source_bulk_export.fields import ObjectPlan, plan_object
from source_bulk_export.id_digest import IdDigest
from source_bulk_export.jobs import BulkJobs
from source_bulk_export.models import SObjectDescribe
from source_bulk_export.rest import RestQuery
from source_bulk_export.waits import Waits
from tests.fakes import FakeSession, FrozenTime, RecordedCheckpoints, binding, sf_error

LOG = logging.getLogger("test_deletion_log")
T0 = datetime(2026, 12, 1, 12, 0, 30, tzinfo=UTC)
PATH = "/sobjects/Account/deleted/"
IDS = [f"001{i:015d}" for i in range(6)]


def plan(cursor: str = "SystemModstamp", deleted_flag: bool = True, replicateable: bool = True) -> ObjectPlan:
    fields = [{"name": "Id", "type": "id"}, {"name": "Name", "type": "string"},
              {"name": cursor, "type": "datetime"}]
    if deleted_flag:
        fields.append({"name": "IsDeleted", "type": "boolean"})
    return plan_object(SObjectDescribe.model_validate(
        {"name": "Account", "fields": fields, "replicateable": replicateable}))


def reader(session: FakeSession, frozen: FrozenTime) -> Deletions:
    waits = Waits(sleep=frozen.sleep)
    exports = Exports(BulkJobs(session, 1, waits), RestQuery(session), waits)  # type: ignore[arg-type]
    return Deletions(session, exports)  # type: ignore[arg-type]


def sf_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def deleted(records: list[tuple[str, datetime]], covered: datetime) -> bytes:
    return json.dumps({"deletedRecords": [{"id": i, "deletedDate": sf_time(t)} for i, t in records],
                       "earliestDateAvailable": sf_time(T0 - timedelta(days=15)),
                       "latestDateCovered": sf_time(covered)}).encode()


def query_all(records: list[dict[str, Any]]) -> bytes:
    return json.dumps({"totalSize": len(records), "done": True,
                       "records": [{"attributes": {"type": "Account"}, **r} for r in records]}).encode()


def reading_from(covered: datetime, **kw: Any) -> Binding:
    shared = binding()
    shared.deletions = DeletionsState(covered=covered, **kw)
    return shared


def emitted(shared: Binding) -> list[Any]:
    assert isinstance(shared.checkpoints, RecordedCheckpoints)
    return shared.checkpoints.documents


def minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


# --- the log ------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_hard_deleted_rows_become_deletions_and_the_watermark_moves(
    session: FakeSession, frozen: FrozenTime
) -> None:
    covered = minute(T0) - timedelta(minutes=10)
    latest = minute(T0) - timedelta(minutes=1)
    session.script("GET", PATH, deleted([(IDS[0], covered + timedelta(seconds=5)),
                                         (IDS[1], covered + timedelta(minutes=3))], latest))
    session.script("GET", "/queryAll", query_all([]))  # neither is visible any more
    shared = reading_from(covered)

    horizon = await reader(session, frozen).advance(LOG, plan(), shared, T0 - timedelta(hours=1), T0)

    assert emitted(shared) == [
        deletion_document(plan(), IDS[0], covered + timedelta(seconds=5)),
        deletion_document(plan(), IDS[1], covered + timedelta(minutes=3))]
    assert emitted(shared)[0] == {"Id": IDS[0], "SystemModstamp": "2026-12-01T11:50:05.000Z", "IsDeleted": True,
                                  "_meta": {"op": "d"}}
    assert shared.deletions is not None and shared.deletions.covered == latest
    assert horizon == T0  # the delta stream is not held by the log
    call = session.calls_to("GET", PATH)[0]
    assert call.params == {"start": covered.isoformat(), "end": minute(T0).isoformat()}


@pytest.mark.asyncio
async def test_rows_the_delta_stream_carries_itself_are_not_emitted_twice(
    session: FakeSession, frozen: FrozenTime
) -> None:
    covered = minute(T0) - timedelta(minutes=10)
    listed = [(record, covered + timedelta(minutes=1)) for record in IDS[:3]]
    session.script("GET", PATH, deleted(listed, minute(T0)))
    # IDS[0] was restored from the bin; IDS[1] is in the bin; IDS[2] is gone for good.
    session.script("GET", "/queryAll", query_all([{"Id": IDS[0], "IsDeleted": False},
                                                  {"Id": IDS[1], "IsDeleted": True}]))
    by_modstamp, append_only = reading_from(covered), reading_from(covered)

    await reader(session, frozen).advance(LOG, plan(), by_modstamp, T0 - timedelta(hours=1), T0)
    await reader(session, frozen).advance(LOG, plan("CreatedDate"), append_only, T0 - timedelta(hours=1), T0)

    # A delete moves SystemModstamp, so the delta stream emits the binned row; it does not move CreatedDate.
    assert [d["Id"] for d in emitted(by_modstamp)] == [IDS[2]]
    assert [d["Id"] for d in emitted(append_only)] == [IDS[1], IDS[2]]
    query = session.calls_to("GET", "/queryAll")[0].params["q"]  # type: ignore[index]
    assert query == f"SELECT Id, IsDeleted FROM Account WHERE Id IN ('{IDS[0]}', '{IDS[1]}', '{IDS[2]}')"


@pytest.mark.asyncio
async def test_nothing_is_read_until_a_two_minute_window_is_complete(session: FakeSession, frozen: FrozenTime) -> None:
    shared = reading_from(minute(T0) - timedelta(minutes=1))
    await reader(session, frozen).advance(LOG, plan(), shared, T0 - timedelta(hours=1), T0)
    assert session.calls == []


@pytest.mark.asyncio
async def test_the_log_is_read_no_further_than_the_backfill_hold(session: FakeSession, frozen: FrozenTime) -> None:
    covered = minute(T0) - timedelta(minutes=30)
    session.script("GET", PATH, deleted([], covered + timedelta(minutes=10)))
    held = covered + timedelta(minutes=10, seconds=45)
    await reader(session, frozen).advance(LOG, plan(), reading_from(covered), T0 - timedelta(hours=1), held)
    assert session.calls_to("GET", PATH)[0].params["end"] == (covered + timedelta(minutes=10)).isoformat()  # type: ignore[index]


@pytest.mark.asyncio
async def test_a_window_with_too_many_deletions_is_read_in_halves(session: FakeSession, frozen: FrozenTime) -> None:
    covered = minute(T0) - timedelta(minutes=20)
    session.script("GET", PATH, sf_error(400, "EXCEEDED_ID_LIMIT", "too many ids"), deleted([], covered + timedelta(minutes=10)),
                   deleted([], minute(T0)))
    shared = reading_from(covered)

    await reader(session, frozen).advance(LOG, plan(), shared, T0 - timedelta(hours=1), T0)

    ends = [c.params["end"] for c in session.calls_to("GET", PATH)]  # type: ignore[index]
    assert ends == [minute(T0).isoformat(), (covered + timedelta(minutes=10)).isoformat(), minute(T0).isoformat()]
    assert shared.deletions is not None and shared.deletions.covered == minute(T0)


@pytest.mark.asyncio
async def test_the_first_window_starts_two_minutes_before_the_delta_stream(
    session: FakeSession, frozen: FrozenTime
) -> None:
    cursor = T0 - timedelta(minutes=5, seconds=20)
    session.script("GET", PATH, deleted([], minute(T0)))
    shared = binding()

    await reader(session, frozen).advance(LOG, plan(), shared, cursor, T0)

    start = session.calls_to("GET", PATH)[0].params["start"]  # type: ignore[index]
    assert start == (minute(cursor) - deletions.MIN_LOG_WINDOW).isoformat()


# --- a window the log no longer has --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_watermark_older_than_the_log_is_reported_and_reconciled_from_the_baseline(
    session: FakeSession, frozen: FrozenTime, caplog: pytest.LogCaptureFixture
) -> None:
    baseline = IdDigest()
    baseline.add(IDS)
    covered = minute(T0) - timedelta(days=16)
    resume = minute(T0 - deletions.RESUME_PROBES[0])
    session.script("GET", PATH, deleted([], resume + deletions.MIN_LOG_WINDOW), deleted([], minute(T0)))
    # The Id export: small, so one REST page; IDS[1] and IDS[4] are gone, one row is new.
    now_live = [record for record in IDS if record not in (IDS[1], IDS[4])] + ["001999999999999999"]
    session.script("GET", "/query", query_all([{"Id": record} for record in now_live]))
    shared = reading_from(covered, baseline=baseline.to_text(), baseline_at=covered - timedelta(days=2))

    await reader(session, frozen).advance(LOG, plan(), shared, T0 - timedelta(hours=1), T0)

    error = next(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert error.startswith(f"Account: Salesforce's deletion log no longer has {covered} to {resume}")
    assert "being reconciled" in error and "data flow reset" in error
    assert sorted(d["Id"] for d in emitted(shared)) == [IDS[1], IDS[4]]
    assert shared.deletions is not None and shared.deletions.covered == minute(T0)
    assert shared.deletions.baseline_at == T0 and shared.deletions.export is None


@pytest.mark.asyncio
async def test_a_log_purged_early_without_a_baseline_says_the_ids_cannot_be_named(
    session: FakeSession, frozen: FrozenTime, caplog: pytest.LogCaptureFixture
) -> None:
    covered = minute(T0) - timedelta(days=3)
    purged = sf_error(400, "INVALID_REPLICATION_DATE", "start is before earliestDateAvailable")
    # The watermark, then the first two probes, are refused; an hour back is still there.
    session.script("GET", PATH, purged, purged, purged, deleted([], minute(T0)), deleted([], minute(T0)))
    shared = reading_from(covered)

    await reader(session, frozen).advance(LOG, plan(), shared, T0 - timedelta(hours=1), T0)

    error = next(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert "cannot be named" in error and "backfill this binding with a data flow reset" in error
    starts = [c.params["start"] for c in session.calls_to("GET", PATH)]  # type: ignore[index]
    assert starts[3] == minute(T0 - timedelta(hours=1)).isoformat()
    assert shared.deletions is not None and emitted(shared) == []


# --- objects without a deletion log ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_object_without_a_log_compares_its_ids_every_reconcile_period(
    session: FakeSession, frozen: FrozenTime
) -> None:
    unlogged = plan(deleted_flag=False, replicateable=False)
    shared = binding()
    shared.backfilled = True
    session.script("GET", "/query", query_all([{"Id": record} for record in IDS]))
    driver = reader(session, frozen)

    await driver.advance(LOG, unlogged, shared, T0, T0)  # the first baseline
    assert shared.deletions is not None and shared.deletions.baseline_at == T0 and emitted(shared) == []

    session.script("GET", "/query", query_all([{"Id": record} for record in IDS[1:]]))
    frozen.sleeps.clear()
    await driver.advance(LOG, unlogged, shared, T0, T0)  # too soon: nothing read
    assert len(session.calls_to("GET", "/query")) == 1

    await frozen.sleep(deletions.RECONCILE_EVERY.total_seconds())
    await driver.advance(LOG, unlogged, shared, T0, T0)
    assert [d["Id"] for d in emitted(shared)] == [IDS[0]]
    assert "IsDeleted" not in emitted(shared)[0]


@pytest.mark.asyncio
async def test_a_reconciliation_compares_only_the_rows_that_existed_at_the_baseline(
    session: FakeSession, frozen: FrozenTime
) -> None:
    """Rows created since the baseline cannot be among its deletions: they are left out of the
    comparison, so they spend none of the digest's capacity, and the next baseline includes them."""
    with_creation = plan_object(SObjectDescribe.model_validate({"name": "Account", "replicateable": False, "fields": [
        {"name": "Id", "type": "id"}, {"name": "CreatedDate", "type": "datetime"},
        {"name": "SystemModstamp", "type": "datetime"}]}))
    baseline_at = T0 - timedelta(hours=2)
    baseline = IdDigest()
    baseline.add(IDS[:4])
    shared = binding()
    shared.backfilled = True
    shared.deletions = DeletionsState(baseline=baseline.to_text(), baseline_at=baseline_at)
    old, new = sf_time(baseline_at - timedelta(days=1)), sf_time(T0 - timedelta(minutes=5))
    session.script("GET", "/query", query_all([{"Id": IDS[0], "CreatedDate": old}, {"Id": IDS[2], "CreatedDate": old},
                                               {"Id": IDS[3], "CreatedDate": old},
                                               {"Id": IDS[5], "CreatedDate": new}]))

    await reader(session, frozen).advance(LOG, with_creation, shared, T0, T0)

    assert [d["Id"] for d in emitted(shared)] == [IDS[1]]
    soql = session.calls_to("GET", "/query")[0].params["q"]  # type: ignore[index]
    assert soql == ("SELECT Id, CreatedDate FROM Account WHERE CreatedDate < 2026-12-01T12:00:30Z ORDER BY Id")
    assert shared.deletions is not None and shared.deletions.baseline_at == T0
    assert shared.deletions.baseline is not None
    assert IdDigest.from_text(shared.deletions.baseline).count == 4  # the new row is in the next baseline
