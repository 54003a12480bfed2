"""Time logic and cursor rules of the fetch functions, with frozen time and fake exporters.

The end-to-end behaviour (against the emulator, through the harness) is in test_capture*.py;
these pin the arithmetic that decides what each window and slice contains.
"""

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from logging import getLogger
from typing import Any

import pytest
from freezegun import freeze_time

from source_bulk_export import api
from source_bulk_export.api import (
    BackfillCursor,
    backfill_soql,
    changes_soql,
    delta_horizon,
    fetch_changes,
    split_window,
)
from source_bulk_export.fields import ObjectPlan, plan_object
from source_bulk_export.models import SObjectDescribe

LOG = getLogger("test")
T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


def account_plan() -> ObjectPlan:
    describe = SObjectDescribe.model_validate(
        {
            "name": "Account",
            "fields": [
                {"name": "Id", "type": "id", "soapType": "tns:ID"},
                {"name": "Name", "type": "string", "soapType": "xsd:string"},
                {"name": "IsDeleted", "type": "boolean", "soapType": "xsd:boolean"},
                {"name": "SystemModstamp", "type": "datetime", "soapType": "xsd:dateTime"},
            ],
        }
    )
    return plan_object(describe)


def row(i: int, stamp: str, deleted: bool = False) -> dict[str, Any]:
    return {"Id": f"001{i:015d}", "Name": f"n{i}", "IsDeleted": deleted, "SystemModstamp": stamp}


async def agen(items: list[dict[str, Any]]) -> AsyncGenerator[dict[str, Any], None]:
    for item in items:
        yield item


@dataclass
class FakeQueryResult:
    total_size: int
    records: AsyncGenerator[dict[str, Any], None]


@dataclass
class FakeRest:
    """Answers every query with the given records, after recording the SOQL."""

    records: list[dict[str, Any]]
    queries: list[str] = field(default_factory=list)

    async def open(
        self, log: Any, soql: str, transform: Callable[[dict[str, Any]], Any], *, include_deleted: bool
    ) -> FakeQueryResult:
        assert include_deleted, "the delta stream must read deletions (queryAll)"
        self.queries.append(soql)
        return FakeQueryResult(len(self.records), agen([transform(dict(r)) for r in self.records]))


@dataclass
class FakeBulk:
    """Records the jobs it is asked to run; serves no rows."""

    runs: list[tuple[str, str]] = field(default_factory=list)

    async def run(self, log: Any, soql: str, operation: str, object_name: str) -> Any:
        self.runs.append((soql, operation))
        raise RuntimeError("stop here: the test only checks which jobs would run")


async def collect(gen: AsyncGenerator[Any, None]) -> list[Any]:
    return [item async for item in gen]


# --- horizon, lag and the seam ------------------------------------------------------------------


def test_horizon_is_now_floored_to_the_second_minus_lag() -> None:
    now = datetime(2026, 11, 26, 12, 0, 7, 999_999, tzinfo=UTC)
    assert delta_horizon(now, timedelta(minutes=5)) == datetime(2026, 11, 26, 11, 55, 7, tzinfo=UTC)


def test_backfill_and_delta_meet_at_the_cutoff_without_gap_or_overlap() -> None:
    plan = account_plan()
    cutoff = datetime(2026, 11, 26, 11, 55, 0, tzinfo=UTC)
    backfill = backfill_soql(plan, cutoff, None, None, 500_000)
    delta = changes_soql(plan, cutoff, cutoff + timedelta(minutes=5))
    assert "SystemModstamp <= 2026-11-26T11:55:00Z" in backfill
    assert "SystemModstamp > 2026-11-26T11:55:00Z" in delta


def test_backfill_slice_is_a_keyset_page_after_the_last_id() -> None:
    soql = backfill_soql(
        account_plan(), T0, datetime(2020, 1, 1, 0, 0, 0, 500, tzinfo=UTC), "001000000000000042", 1000
    )
    assert soql == (
        "SELECT Id, Name, IsDeleted, SystemModstamp FROM Account WHERE SystemModstamp <= 2026-11-26T12:00:00Z"
        " AND SystemModstamp >= 2020-01-01T00:00:00Z AND Id > '001000000000000042' ORDER BY Id LIMIT 1000"
    )


def test_windows_must_be_whole_seconds() -> None:
    with pytest.raises(ValueError, match="whole second"):
        changes_soql(account_plan(), T0.replace(microsecond=5), T0 + timedelta(seconds=1))


def test_backfill_cursor_round_trips_through_the_checkpoint() -> None:
    cursor = BackfillCursor(slice_rows=1000, last_id="001x", job_id="750y", locator="abc", rows_before=2000)
    stored = cursor.checkpoint()
    assert stored.pop("__flow_cursor__") is True
    assert BackfillCursor.load(stored, 500_000) == cursor
    assert BackfillCursor.load(None, 500_000) == BackfillCursor(slice_rows=500_000)


def test_between_slices_clears_the_job_so_a_merge_patch_removes_it() -> None:
    cursor = BackfillCursor(slice_rows=1000, last_id="a", job_id="750y", locator="abc", rows_before=5)
    stored = cursor.between_slices("b").checkpoint()
    assert stored["job_id"] is None and stored["locator"] is None and stored["last_id"] == "b"


# --- the delta stream's checkpoint rule ---------------------------------------------------------


@freeze_time(T0)
async def test_a_window_that_has_not_opened_yields_nothing() -> None:
    rest = FakeRest([row(1, "2026-11-26T11:55:00.000+0000")])
    cursor = T0 - timedelta(minutes=5)
    assert (
        await collect(
            fetch_changes(FakeBulk(), rest, account_plan(), timedelta(minutes=5), 50_000, LOG, cursor)
        )
        == []
    )
    assert rest.queries == []


@freeze_time(T0)
async def test_the_window_ends_at_the_horizon_and_the_last_cursor_is_the_horizon() -> None:
    rest = FakeRest([row(1, "2026-11-26T11:50:00.000+0000"), row(2, "2026-11-26T11:51:00.000+0000")])
    cursor = T0 - timedelta(minutes=20)
    items = await collect(
        fetch_changes(FakeBulk(), rest, account_plan(), timedelta(minutes=5), 50_000, LOG, cursor)
    )
    assert rest.queries == [
        "SELECT Id, Name, IsDeleted, SystemModstamp FROM Account WHERE SystemModstamp > 2026-11-26T11:40:00Z"
        " AND SystemModstamp <= 2026-11-26T11:55:00Z ORDER BY SystemModstamp, Id"
    ]
    assert [d["Id"] for d in items[:-1]] == [row(1, "")["Id"], row(2, "")["Id"]]
    assert items[-1] == T0 - timedelta(minutes=5)


@freeze_time(T0)
async def test_deleted_rows_become_deletion_documents() -> None:
    rest = FakeRest([row(1, "2026-11-26T11:50:00.000+0000", deleted=True)])
    items = await collect(
        fetch_changes(
            FakeBulk(), rest, account_plan(), timedelta(minutes=5), 50_000, LOG, T0 - timedelta(hours=1)
        )
    )
    assert items[0]["_meta"] == {"op": "d"}


async def test_checkpoints_fall_only_between_whole_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "DELTA_CHECKPOINT_ROWS", 3)
    # Five rows in one second (more than a checkpoint's worth), then two in the next.
    stamps = ["2026-11-26T11:00:01.000Z"] * 5 + ["2026-11-26T11:00:02.000Z"] * 2
    docs = agen([{"Id": str(i), "SystemModstamp": s} for i, s in enumerate(stamps)])
    items = await collect(api._checkpointed(docs, account_plan(), T0, api._CallBudget()))
    cursors = [(i, item) for i, item in enumerate(items) if isinstance(item, datetime)]
    # The burst is never split: the first cursor comes after all five rows of second 01.
    assert cursors == [(5, datetime(2026, 11, 26, 11, 0, 1, tzinfo=UTC)), (8, T0)]


async def test_a_call_stops_at_a_second_boundary_when_its_budget_is_spent() -> None:
    stamps = ["2026-11-26T11:00:01.000Z"] * 3 + ["2026-11-26T11:00:02.000Z"] * 3
    docs = agen([{"Id": str(i), "SystemModstamp": s} for i, s in enumerate(stamps)])
    budget = api._CallBudget(remaining=2)
    items = await collect(api._checkpointed(docs, account_plan(), T0, budget))
    assert budget.exhausted
    assert len([i for i in items if isinstance(i, dict)]) == 3
    assert items[-1] == datetime(2026, 11, 26, 11, 0, 1, tzinfo=UTC)


# --- the REST -> Bulk switch --------------------------------------------------------------------


@freeze_time(T0)
async def test_a_window_over_the_threshold_goes_through_bulk_queryall() -> None:
    rest = FakeRest([row(i, "2026-11-26T11:50:00.000+0000") for i in range(11)])
    bulk = FakeBulk()
    with pytest.raises(RuntimeError, match="stop here"):
        await collect(
            fetch_changes(bulk, rest, account_plan(), timedelta(minutes=5), 10, LOG, T0 - timedelta(hours=1))
        )
    soql, operation = bulk.runs[0]
    assert operation == "queryAll"
    assert soql.endswith("ORDER BY SystemModstamp, Id")


@freeze_time(T0)
async def test_a_window_at_the_threshold_stays_on_rest() -> None:
    rest = FakeRest([row(i, "2026-11-26T11:50:00.000+0000") for i in range(10)])
    bulk = FakeBulk()
    items = await collect(
        fetch_changes(bulk, rest, account_plan(), timedelta(minutes=5), 10, LOG, T0 - timedelta(hours=1))
    )
    assert bulk.runs == [] and len(items) == 11


@freeze_time(T0)
async def test_an_object_too_wide_for_a_rest_url_reads_its_changes_through_bulk() -> None:
    describe = SObjectDescribe.model_validate({
        "name": "Wide__c",
        "fields": [
            {"name": "Id", "type": "id", "soapType": "tns:ID"},
            {"name": "SystemModstamp", "type": "datetime", "soapType": "xsd:dateTime"},
            *({"name": f"A_Rather_Long_Custom_Field_Name_{i:04d}__c", "type": "string", "soapType": "xsd:string"}
              for i in range(500)),
        ],
    })
    rest, bulk = FakeRest([]), FakeBulk()
    with pytest.raises(RuntimeError, match="stop here"):
        await collect(fetch_changes(bulk, rest, plan_object(describe), timedelta(minutes=5), 50_000, LOG,
                                    T0 - timedelta(hours=1)))
    assert rest.queries == []  # it would have been refused with 414
    assert [operation for _, operation in bulk.runs] == ["queryAll"]
    assert not api.fits_in_a_rest_url(bulk.runs[0][0])


def test_split_window_covers_the_window_exactly_in_whole_seconds() -> None:
    after, through = T0, T0 + timedelta(seconds=10)
    parts = split_window(after, through, 3)
    assert parts[0][0] == after and parts[-1][1] == through
    assert all(a < b and (b - a).total_seconds() == int((b - a).total_seconds()) for a, b in parts)
    assert all(parts[i][1] == parts[i + 1][0] for i in range(len(parts) - 1))
