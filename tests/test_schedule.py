"""Scheduled re-backfills of objects with formula fields (design.md "Discovery").

Formula values change without touching SystemModstamp, so the delta stream never sees them;
objects with formula fields are discovered with a daily `schedule`, and the CDK re-runs their
backfill when a fire was missed (estuary-cdk.md §2.9): on open, a binding with state whose
`last_initialized` is before a fire gets a fresh backfill whose cutoff is the incremental
cursor, the cursor itself kept.

The first tests pin that decision with frozen time, through `common.open` itself; the last ones
run it end to end, one connector process per session, against the emulator.
"""

import asyncio
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from logging import getLogger
from typing import Any

import pytest
from estuary_cdk import _background
from estuary_cdk.capture import Task, common, request
from estuary_cdk.cron import next_fire
from estuary_cdk.flow import CaptureBinding, CaptureSpec, CollectionSpec, RangeSpec
from freezegun import freeze_time

from source_bulk_export.fields import plan_object
from source_bulk_export.models import ConnectorState, ResourceConfig, ResourceState, SObjectDescribe
from source_bulk_export.resources import FORMULA_REFRESH_SCHEDULE, SalesforceResource, resource_for
from tests import flow_harness
from tests.capture_support import PREFIX, captured_rows, discovered_source, expected_rows, row_jobs
from tests.emulator import EmulatorServer, Org, OrgConfig
from tests.emulator.schema import describe_object

LOG = getLogger("test_schedule")
FORMULA_OBJECT = "Invoice__c"  # Amount_With_Tax__c is a formula (calculated) field
FORMULA_FIELD = "Amount_With_Tax__c"

YESTERDAY_NOON = datetime(2026, 3, 9, 12, 0, tzinfo=UTC)
TODAY_0010 = datetime(2026, 3, 10, 0, 10, tzinfo=UTC)
SAME_DAY_2350 = datetime(2026, 3, 9, 23, 50, tzinfo=UTC)
FIRE = datetime(2026, 3, 9, 23, 55, tzinfo=UTC)
CURSOR = datetime(2026, 3, 9, 23, 40, 17, tzinfo=UTC)  # where a caught-up binding's delta stream is


# --- the CDK's decision, with frozen time ---------------------------------------------------


def test_formula_objects_refresh_daily_at_2355_utc() -> None:
    assert FORMULA_REFRESH_SCHEDULE == "55 23 * * *"


@pytest.mark.parametrize(
    ("opened_at", "missed"),
    [(TODAY_0010, FIRE), (SAME_DAY_2350, None), (FIRE, FIRE), (FIRE + timedelta(days=2), FIRE)],
    ids=["next-day-00:10", "same-day-23:50", "at-the-fire", "two-days-later"],
)
def test_missed_fire_as_common_open_computes_it(opened_at: datetime, missed: datetime | None) -> None:
    """`common.open` asks `next_fire(schedule, last_initialized, NOW)`: a fire after the
    binding was initialised and no later than now is a missed one (the earliest is returned)."""
    with freeze_time(opened_at):
        now = datetime.now(tz=UTC)
        assert next_fire(FORMULA_REFRESH_SCHEDULE, YESTERDAY_NOON, now) == missed


def invoice_resource(opened: list[ResourceState]) -> SalesforceResource:
    """The connector's resource for the formula object, whose open only records its state."""
    describe = SObjectDescribe.model_validate(describe_object(Org(OrgConfig(rows=1)).spec(FORMULA_OBJECT), "62.0"))
    plan = plan_object(describe)
    assert plan.formula_fields == (FORMULA_FIELD,)

    def open_binding(binding: Any, index: int, state: ResourceState, task: Any, all_bindings: Any) -> None:
        opened.append(state.model_copy(deep=True))

    return resource_for(plan, open_binding, cutoff=datetime(2026, 1, 1, tzinfo=UTC))


@dataclass
class FakeTask:
    """What `common.open`'s run function uses of a Task: a logger, checkpoints, `stopping`."""

    log: Any = field(default_factory=lambda: LOG)
    checkpoints: list[ConnectorState] = field(default_factory=list)
    stopping: Task.Stopping = field(default_factory=Task.Stopping)

    async def checkpoint(self, state: ConnectorState, merge_patch: bool = True) -> None:
        assert merge_patch
        self.checkpoints.append(state.model_copy(deep=True))


async def open_with(state: ResourceState, resource: SalesforceResource) -> tuple[FakeTask, datetime | None]:
    """Run `common.open` for one binding of `resource` with `state`; returns the task and when
    the scheduled stop it spawned would fire (the spawned sleeper is cancelled)."""
    config = resource.initial_config
    assert isinstance(config, ResourceConfig)
    binding = CaptureBinding[ResourceConfig](
        collection=CollectionSpec(name=PREFIX + config.name, key=["/Id"], writeSchema={}),
        resourceConfig=config,
        resourcePath=[config.name],
        stateKey=config.name,
    )
    open_request = request.Open[dict[str, Any], ResourceConfig, ConnectorState](
        capture=CaptureSpec[dict[str, Any], ResourceConfig](
            name="acmeCo/source-bulk-export", connectorType="LOCAL", config={}, intervalSeconds=0, bindings=[binding]
        ),
        version="test",
        range=RangeSpec(),
        state=ConnectorState(bindingStateV1={config.name: state}),
    )
    _, run = common.open(open_request, common.resolve_bindings(open_request.capture.bindings, [resource]))

    before = set(_background._tasks)
    task = FakeTask()
    await run(task)  # type: ignore[arg-type]
    stops = [t for t in _background._tasks - before if t.get_coro().__qualname__ == "scheduled_stop"]  # type: ignore[union-attr]
    stop_at = None
    for stop in stops:
        stop_at = stop.get_coro().cr_frame.f_locals["future_dt"]  # type: ignore[union-attr]
        stop.cancel()
    await asyncio.gather(*stops, return_exceptions=True)
    return task, stop_at


def caught_up_state(last_initialized: datetime) -> ResourceState:
    """A binding whose backfill finished, its delta stream at `CURSOR`."""
    return ResourceState(inc=ResourceState.Incremental(cursor=CURSOR), backfill=None, last_initialized=last_initialized)


@pytest.mark.asyncio
async def test_open_after_a_missed_fire_reinitialises_the_backfill_at_the_cursor() -> None:
    opened: list[ResourceState] = []
    with freeze_time(TODAY_0010, real_asyncio=True):
        task, stop_at = await open_with(caught_up_state(YESTERDAY_NOON), invoice_resource(opened))

    reinitialised = ResourceState(
        inc=ResourceState.Incremental(cursor=CURSOR),  # the delta stream goes on where it was
        backfill=ResourceState.Backfill(cutoff=CURSOR, next_page=None),  # a fresh walk up to it
        last_initialized=TODAY_0010,
        is_connector_initiated=True,
    )
    assert opened == [reinitialised]
    assert task.checkpoints == [ConnectorState(bindingStateV1={FORMULA_OBJECT: reinitialised})]
    assert stop_at == TODAY_0010.replace(hour=23, minute=55)  # the process stops for the next fire


@pytest.mark.asyncio
async def test_open_before_the_fire_leaves_the_binding_alone() -> None:
    opened: list[ResourceState] = []
    state = caught_up_state(YESTERDAY_NOON)
    with freeze_time(SAME_DAY_2350, real_asyncio=True):
        task, stop_at = await open_with(state, invoice_resource(opened))

    assert opened == [state]
    assert task.checkpoints == []
    assert stop_at == FIRE  # five minutes later the process stops, and the next open re-backfills


@pytest.mark.asyncio
async def test_an_object_without_formula_fields_is_never_rebackfilled() -> None:
    describe = SObjectDescribe.model_validate(describe_object(Org(OrgConfig(rows=1)).spec("Contact"), "62.0"))
    opened: list[ResourceState] = []
    resource = resource_for(plan_object(describe), lambda b, i, s, t, a: opened.append(s), cutoff=CURSOR)
    state = caught_up_state(YESTERDAY_NOON - timedelta(days=30))
    with freeze_time(TODAY_0010, real_asyncio=True):
        task, stop_at = await open_with(state, resource)

    assert opened == [state] and task.checkpoints == [] and stop_at is None


# --- end to end, through the harness, against the emulator -----------------------------------


@dataclass
class FirstBackfill:
    emulator: EmulatorServer
    source: flow_harness.FlowSource
    result: flow_harness.PreviewResult
    state_key: str


def binding_state(state: dict[str, Any], key: str) -> dict[str, Any]:
    return (state.get("bindingStateV1") or {}).get(key) or {}


@pytest.fixture(scope="module")
def first_backfill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirstBackfill]:
    """The formula object, discovered and backfilled in one session (in slices of 100 rows)."""
    now = datetime.now(tz=UTC)
    if next_fire(FORMULA_REFRESH_SCHEDULE, now - timedelta(minutes=1), now + timedelta(minutes=3)):
        pytest.skip("the formula refresh fires while these sessions run (it is about 23:55 UTC)")
    with EmulatorServer(Org(OrgConfig(rows=20))) as emulator:
        source = discovered_source(tmp_path_factory.mktemp("schedule"), emulator, {FORMULA_OBJECT},
                                   backfill_slice_rows=100)
        (binding,) = source.enabled_bindings
        assert binding.resource["schedule"] == FORMULA_REFRESH_SCHEDULE  # what discover wrote

        def backfilled(progress: flow_harness.Progress) -> bool:
            state = binding_state(dict(progress.state), progress.state_keys[0])
            return "inc" in state and not state.get("backfill")

        result = flow_harness.preview(source, sessions=[flow_harness.Session(transactions=-1, until=backfilled)],
                                      delay=0.2, timeout=60, resource_path_pointers=ResourceConfig.PATH_POINTERS)
        (key,) = result.state["bindingStateV1"]
        assert captured_rows(result, FORMULA_OBJECT) == expected_rows(emulator, FORMULA_OBJECT)
        yield FirstBackfill(emulator, source, result, key)


def fire_is_near(last_initialized: str) -> bool:
    """Whether a scheduled fire falls between `last_initialized` and a minute from now: only when
    the test runs at about 23:55 UTC, when a re-backfill would be right."""
    start = datetime.fromisoformat(last_initialized)
    return next_fire(FORMULA_REFRESH_SCHEDULE, start, datetime.now(tz=UTC) + timedelta(minutes=1)) is not None


def test_a_session_without_a_missed_fire_does_not_reexport(first_backfill: FirstBackfill) -> None:
    emulator, key = first_backfill.emulator, first_backfill.state_key
    state = copy.deepcopy(first_backfill.result.state)
    if fire_is_near(binding_state(state, key)["last_initialized"]):
        pytest.skip("the formula refresh fires during this test (it runs at about 23:55 UTC)")
    # The first session ended on a cursor at `now - lag`; a process started within the same second
    # finds its window not yet open and checkpoints nothing until its interval. Rewound a few
    # seconds (no row of this org was written then), the first window is open however fast it starts.
    inc = binding_state(state, key)["inc"]
    inc["cursor"] = (datetime.fromisoformat(inc["cursor"]) - timedelta(seconds=3)).isoformat().replace("+00:00", "Z")
    emulator.reset_counters()

    # Stop at the delta stream's first checkpoint: the CDK writes a re-initialisation (and
    # starts the backfill) before it opens the binding, so one would have come first.
    def delta_checkpointed(progress: flow_harness.Progress) -> bool:
        return "inc" in binding_state(progress.checkpoint.updated, key)

    result = flow_harness.preview(first_backfill.source,
                                  sessions=[flow_harness.Session(transactions=-1, until=delta_checkpointed)],
                                  delay=0.2, timeout=30, initial_state=state,
                                  resource_path_pointers=ResourceConfig.PATH_POINTERS)

    assert result.sessions[0].stop_reason == "until"
    assert emulator.counters.requests["query_all"] >= 1  # the connector ran: its delta stream read
    assert row_jobs(emulator) == []
    assert all("backfill" not in binding_state(update, key) and "last_initialized" not in binding_state(update, key)
               for update in result.state_updates)
    assert binding_state(result.state, key)["last_initialized"] == binding_state(state, key)["last_initialized"]
    assert result.documents_of(PREFIX + FORMULA_OBJECT) == []


def test_a_missed_fire_rebackfills_the_new_formula_values(first_backfill: FirstBackfill) -> None:
    emulator, key = first_backfill.emulator, first_backfill.state_key
    before = captured_rows(first_backfill.result, FORMULA_OBJECT)

    emulator.org.bump_formula_epoch(FORMULA_OBJECT)  # SystemModstamp untouched: no delta sees it
    now_rows = expected_rows(emulator, FORMULA_OBJECT)
    changed = {i for i in now_rows if now_rows[i][FORMULA_FIELD] != before[i][FORMULA_FIELD]}
    assert len(changed) > len(now_rows) // 2
    assert all({k for k in now_rows[i] if now_rows[i][k] != before[i][k]} == {FORMULA_FIELD} for i in changed)

    # The connector was down (or running) across a fire: initialised two days ago.
    state = copy.deepcopy(first_backfill.result.state)
    two_days_ago = (datetime.now(tz=UTC) - timedelta(days=2)).replace(microsecond=0)
    binding_state(state, key)["last_initialized"] = two_days_ago.isoformat().replace("+00:00", "Z")
    cursor = binding_state(state, key)["inc"]["cursor"]
    emulator.reset_counters()

    def rebackfilled(progress: flow_harness.Progress) -> bool:
        current = binding_state(dict(progress.state), key)
        return bool(current.get("is_connector_initiated")) and not current.get("backfill")

    result = flow_harness.preview(first_backfill.source, sessions=[flow_harness.Session(transactions=-1,
                                                                                        until=rebackfilled)],
                                  delay=0.2, timeout=60, initial_state=state,
                                  resource_path_pointers=ResourceConfig.PATH_POINTERS)

    # The CDK re-initialised it before anything else: a fresh backfill up to the delta cursor,
    # which itself stays where it was.
    first = binding_state(result.state_updates[0], key)
    assert first["backfill"] == {"cutoff": cursor, "next_page": None}
    assert first["inc"] == {"cursor": cursor} and first["is_connector_initiated"] is True
    assert datetime.fromisoformat(first["last_initialized"]) > two_days_ago + timedelta(days=1)
    # The re-backfill exported the object again through Bulk jobs, up to that cutoff.
    jobs = row_jobs(emulator)
    assert len(jobs) == 3 and {job.object for job in jobs} == {FORMULA_OBJECT}  # 250 rows, slices of 100
    cutoff_literal = datetime.fromisoformat(cursor).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert all(f"SystemModstamp <= {cutoff_literal}" in job.query for job in jobs)

    # It delivered every row again, with the new formula values, field by field.
    assert captured_rows(result, FORMULA_OBJECT) == now_rows
    assert before | captured_rows(result, FORMULA_OBJECT) == now_rows
