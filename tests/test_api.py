"""Time logic and cursor rules of the fetch functions, with frozen time and fake exporters.

The end-to-end behaviour (against the emulator, through the harness) is in test_capture*.py and
test_delta.py; these pin the arithmetic that decides what each window and slice contains.
"""

from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from logging import getLogger
from typing import Any

import pytest
from freezegun import freeze_time

from source_bulk_export import api, changes
from source_bulk_export.api import (
    backfill_soql,
    changes_soql,
    delta_horizon,
    fetch_changes,
    load_backfill,
)
from source_bulk_export.checkpoints import Binding
from source_bulk_export.deletions import Deletions
from source_bulk_export.exports import Exports
from source_bulk_export.fields import ObjectPlan, plan_object
from source_bulk_export.models import SObjectDescribe
from source_bulk_export.states import Complete, JobRunning, ReadingRest, Slice, ToSubmit, Window, encode
from source_bulk_export.waits import Waits
from tests.fakes import binding

LOG = getLogger("test")
T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
LAG = timedelta(minutes=5)


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
    """Records the jobs it is asked to submit; runs none."""

    runs: list[tuple[str, str]] = field(default_factory=list)

    def slot(self) -> AbstractAsyncContextManager[Any]:
        return nullcontext()

    async def orphan(self, log: Any, object_name: str, operation: str, since: datetime) -> None:
        return None  # no restored marks here

    async def submit(self, log: Any, soql: str, operation: str, object_name: str) -> Any:
        self.runs.append((soql, operation))
        raise RuntimeError("stop here: the test only checks which jobs would run")


def exports(bulk: FakeBulk, rest: FakeRest) -> Exports:
    return Exports(bulk, rest, Waits())  # type: ignore[arg-type]


async def collect(gen: AsyncGenerator[Any, None]) -> list[Any]:
    return [item async for item in gen]


def changes_of(bulk: FakeBulk, rest: FakeRest, cursor: datetime, threshold: int = 50_000,
               shared: Binding | None = None, plan: ObjectPlan | None = None) -> AsyncGenerator[Any, None]:
    # The plan is not replicateable and the binding not backfilled: no deletion source reads anything.
    shared_exports = exports(bulk, rest)
    return fetch_changes(shared_exports, Deletions(None, shared_exports), plan or account_plan(),  # type: ignore[arg-type]
                         shared or binding(), LAG, threshold, LOG, cursor)


# --- horizon, lag and the seam ------------------------------------------------------------------


def test_horizon_is_now_floored_to_the_second_minus_lag() -> None:
    now = datetime(2026, 11, 26, 12, 0, 7, 999_999, tzinfo=UTC)
    assert delta_horizon(now, timedelta(minutes=5)) == datetime(2026, 11, 26, 11, 55, 7, tzinfo=UTC)


def test_backfill_and_delta_meet_at_the_cutoff_without_gap_or_overlap() -> None:
    plan = account_plan()
    cutoff = datetime(2026, 11, 26, 11, 55, 0, tzinfo=UTC)
    backfill = backfill_soql(plan, cutoff, None, Slice(None, 500_000))
    delta = changes_soql(plan, cutoff, cutoff + timedelta(minutes=5))
    assert "SystemModstamp <= 2026-11-26T11:55:00Z" in backfill
    assert "SystemModstamp > 2026-11-26T11:55:00Z" in delta


def test_backfill_slice_is_a_keyset_page_after_the_last_id() -> None:
    soql = backfill_soql(
        account_plan(), T0, datetime(2020, 1, 1, 0, 0, 0, 500, tzinfo=UTC), Slice("001000000000000042", 1000)
    )
    assert soql == (
        "SELECT Id, Name, IsDeleted, SystemModstamp FROM Account WHERE SystemModstamp <= 2026-11-26T12:00:00Z"
        " AND SystemModstamp >= 2020-01-01T00:00:00Z AND Id > '001000000000000042' ORDER BY Id LIMIT 1000"
    )


def test_a_window_resumed_after_a_row_reads_only_the_rows_after_it() -> None:
    soql = changes_soql(account_plan(), T0, T0 + timedelta(seconds=5), (T0 + timedelta(seconds=1), "001x"))
    assert soql.endswith(
        "WHERE SystemModstamp > 2026-11-26T12:00:00Z AND SystemModstamp <= 2026-11-26T12:00:05Z"
        " AND (SystemModstamp > 2026-11-26T12:00:01Z OR (SystemModstamp = 2026-11-26T12:00:01Z AND Id > '001x'))"
        " ORDER BY SystemModstamp, Id")


def test_windows_must_be_whole_seconds() -> None:
    with pytest.raises(ValueError, match="whole second"):
        changes_soql(account_plan(), T0.replace(microsecond=5), T0 + timedelta(seconds=1))


def test_a_backfill_starts_with_its_first_slice_and_resumes_from_its_checkpoint() -> None:
    assert load_backfill(None, 500_000) == ToSubmit(Slice(None, 500_000))
    running = JobRunning(Slice("001x", 1000), 2, "750y", T0)
    stored = api.backfill_cursor(running)
    assert stored.pop("__flow_cursor__") is True
    assert load_backfill(stored, 500_000) == running


@pytest.mark.parametrize(
    ("first_release", "state"),
    [
        ({"slice_rows": 1000, "last_id": "001a", "job_id": "750y", "locator": "L", "rows_before": 5,
          "via_rest": False, "complete": False}, ToSubmit(Slice("001a", 1000))),
        ({"slice_rows": 1000, "last_id": None, "job_id": "750y", "locator": None, "rows_before": None,
          "via_rest": False, "complete": False}, ToSubmit(Slice(None, 1000))),
        ({"slice_rows": 2000, "last_id": "001b", "via_rest": True, "complete": False}, ReadingRest("001b")),
        ({"slice_rows": 2000, "last_id": "001c", "via_rest": False, "complete": True}, Complete()),
    ],
)
def test_a_backfill_checkpointed_by_the_first_release_goes_on_from_its_id_watermark(
    first_release: dict[str, Any], state: object
) -> None:
    assert load_backfill(first_release, 500_000) == state


def test_a_page_cursor_of_another_kind_is_refused() -> None:
    with pytest.raises(TypeError):
        load_backfill(encode(ToSubmit(Window(T0, T0, T0))), 500_000)


# --- the delta stream's checkpoint rule ---------------------------------------------------------


@freeze_time(T0)
async def test_a_window_that_has_not_opened_yields_nothing() -> None:
    rest = FakeRest([row(1, "2026-11-26T11:55:00.000+0000")])
    cursor = T0 - timedelta(minutes=5)
    assert await collect(changes_of(FakeBulk(), rest, cursor)) == []
    assert rest.queries == []


@freeze_time(T0)
async def test_the_window_ends_at_the_horizon_and_the_last_cursor_is_the_horizon() -> None:
    rest = FakeRest([row(1, "2026-11-26T11:50:00.000+0000"), row(2, "2026-11-26T11:51:00.000+0000")])
    cursor = T0 - timedelta(minutes=20)
    items = await collect(changes_of(FakeBulk(), rest, cursor))
    assert rest.queries == [
        "SELECT Id, Name, IsDeleted, SystemModstamp FROM Account WHERE SystemModstamp > 2026-11-26T11:40:00Z"
        " AND SystemModstamp <= 2026-11-26T11:55:00Z ORDER BY SystemModstamp, Id"
    ]
    assert [d["Id"] for d in items[:-1]] == [row(1, "")["Id"], row(2, "")["Id"]]
    assert items[-1] == T0 - timedelta(minutes=5)


@freeze_time(T0)
async def test_deleted_rows_become_deletion_documents() -> None:
    rest = FakeRest([row(1, "2026-11-26T11:50:00.000+0000", deleted=True)])
    items = await collect(changes_of(FakeBulk(), rest, T0 - timedelta(hours=1)))
    assert items[0]["_meta"] == {"op": "d"}


@freeze_time(T0)
async def test_a_backfill_job_in_flight_holds_the_window_below_its_creation() -> None:
    rest = FakeRest([])
    shared = binding()
    shared.hold = T0 - timedelta(minutes=30)
    items = await collect(changes_of(FakeBulk(), rest, T0 - timedelta(hours=1), shared=shared))
    assert rest.queries[0].endswith("SystemModstamp <= 2026-11-26T11:30:00Z ORDER BY SystemModstamp, Id")
    assert items == [T0 - timedelta(minutes=30)]

    shared.hold = T0 - timedelta(hours=2)  # behind the cursor: nothing to read yet
    assert await collect(changes_of(FakeBulk(), rest, T0 - timedelta(hours=1), shared=shared)) == []


async def test_checkpoints_fall_only_between_whole_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changes, "DELTA_CHECKPOINT_ROWS", 3)
    # Five rows in one second (more than a checkpoint's worth), then two in the next.
    stamps = ["2026-11-26T11:00:01.000Z"] * 5 + ["2026-11-26T11:00:02.000Z"] * 2
    docs = agen([{"Id": str(i), "SystemModstamp": s} for i, s in enumerate(stamps)])
    items = await collect(changes._checkpointed(docs, account_plan(), T0, changes._Progress(T0 - timedelta(hours=1))))
    cursors = [(i, item) for i, item in enumerate(items) if isinstance(item, datetime)]
    # The burst is never split: the first cursor comes after all five rows of second 01.
    assert cursors == [(5, datetime(2026, 11, 26, 11, 0, 1, tzinfo=UTC)), (8, T0)]


async def test_a_call_stops_at_a_second_boundary_when_its_budget_is_spent() -> None:
    stamps = ["2026-11-26T11:00:01.000Z"] * 3 + ["2026-11-26T11:00:02.000Z"] * 3
    docs = agen([{"Id": str(i), "SystemModstamp": s} for i, s in enumerate(stamps)])
    budget = changes._Progress(T0 - timedelta(hours=1), remaining=2)
    items = await collect(changes._checkpointed(docs, account_plan(), T0, budget))
    assert budget.exhausted
    assert len([i for i in items if isinstance(i, dict)]) == 3
    assert items[-1] == datetime(2026, 11, 26, 11, 0, 1, tzinfo=UTC)


# --- the REST -> Bulk switch --------------------------------------------------------------------


@freeze_time(T0)
async def test_a_window_over_the_threshold_goes_through_bulk_queryall() -> None:
    rest = FakeRest([row(i, "2026-11-26T11:50:00.000+0000") for i in range(11)])
    bulk, shared = FakeBulk(), binding()
    with pytest.raises(RuntimeError, match="stop here"):
        await collect(changes_of(bulk, rest, T0 - timedelta(hours=1), threshold=10, shared=shared))
    soql, operation = bulk.runs[0]
    assert operation == "queryAll"
    assert soql.endswith("ORDER BY SystemModstamp, Id")
    # The export was checkpointed, marked, before its first job: a restart goes on with it (or its job).
    assert shared.delta_export == ToSubmit(changes.first_window(T0 - timedelta(hours=1), T0 - LAG, 11, 10), since=T0)


@freeze_time(T0)
async def test_a_window_at_the_threshold_stays_on_rest() -> None:
    rest = FakeRest([row(i, "2026-11-26T11:50:00.000+0000") for i in range(10)])
    bulk = FakeBulk()
    items = await collect(changes_of(bulk, rest, T0 - timedelta(hours=1), threshold=10))
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
        await collect(changes_of(bulk, rest, T0 - timedelta(hours=1), plan=plan_object(describe)))
    assert rest.queries == []  # it would have been refused with 414
    assert [operation for _, operation in bulk.runs] == ["queryAll"]
    assert not api.fits_in_a_rest_url(bulk.runs[0][0])


def test_the_first_bulk_window_holds_about_a_threshold_of_rows_in_whole_seconds() -> None:
    after, through = T0, T0 + timedelta(hours=1)
    assert changes.first_window(after, through, 100_000, 50_000) == Window(after, T0 + timedelta(minutes=30), through)
    assert changes.first_window(after, through, None, 50_000) == Window(after, through, through)
    # A burst in one second cannot be narrowed below a second.
    assert changes.first_window(after, through, 10**9, 1) == Window(after, T0 + timedelta(seconds=1), through)
