"""Running cells: one emulator per cell, the connector as a process through the harness,
one session after another, state carried between them, until the capture is complete."""

import dataclasses
import fnmatch
import random
import time
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from tests import flow_harness as fh
from tests.capture_support import PREFIX, discovered_source, rebound_source
from tests.emulator import EmulatorServer, Knobs, Org, OrgConfig

from .capture import Capture, truth
from .changes import INCREMENTAL, SNAPSHOT
from .faults import SCENARIOS, Scenario
from .measure import CellReport, compare, error_of, job_usage
from .restarts import RESTARTS, RestartPattern

# The connector's waits (job polls, backoffs, limit waits) run at this fraction of real time:
# its 30/60/120 s transient-failure backoffs take 1.5/3/6 s and its first REQUEST_LIMIT_EXCEEDED
# wait 1.5 s, long enough for the "backoff" restart pattern to land inside them, short enough
# that a cell takes seconds, not minutes. (The suite's TEST_ENV uses 0.001.)
CHAOS_ENV = {"SOURCE_BULK_EXPORT_WAIT_SCALE": "0.05"}
# The delta stream reads up to floor(now) - 2 s and polls every second, so changes reach the
# collection within seconds. (Snapshot bindings keep their discovered interval: changes.py.)
POLL = {"interval": "PT1S"}
DELTA_LAG = "PT2S"
# The lowest threshold the connector accepts: the burst's 5,000 rows go through Bulk queryAll.
BULK_DELTA_THRESHOLD = 2_000
# Seconds per preview transaction. Every stop commits what was read anyway, so this only
# spaces the commits of long sessions.
TRANSACTION_DELAY = 0.5
# A session whose connector has not answered `open` by then is stuck (it opens in ~2 s).
OPEN_TIMEOUT = 60.0
POINTERS = ["/name"]  # the connector's resourcePathPointers: saves a Spec process per session
# Every object discovery finds in the emulator's org (ActivityHistory is not queryable).
ALL_OBJECTS = frozenset({*INCREMENTAL, SNAPSHOT})


@dataclass(frozen=True)
class OrgSize:
    """The chaos org: `accounts` Account rows, `rows` rows in each other large object, result
    pages of at most `page_rows` rows, backfill slices of `slice_rows` rows."""

    accounts: int
    rows: int
    page_rows: int
    slice_rows: int


@dataclass(frozen=True)
class Caps:
    """A cell gives up after this many sessions or this many seconds, whichever comes first.
    With `fail_fast` it also stops as soon as its verdict is sealed: a job was re-submitted
    without a reason (measure.py), which nothing later can undo."""

    sessions: int
    seconds: float
    fail_fast: bool = False


@dataclass(frozen=True)
class Cell:
    scenario: Scenario
    restart: RestartPattern

    @property
    def name(self) -> str:
        return f"{self.scenario.name}/{self.restart.name}"


CELLS = tuple(Cell(scenario, restart) for scenario in SCENARIOS for restart in RESTARTS)


def select_cells(patterns: str) -> list[Cell]:
    """The cells whose name (`scenario/restart`) matches any of the comma-separated globs."""
    globs = [p.strip() for p in patterns.split(",") if p.strip()]
    return [cell for cell in CELLS if any(fnmatch.fnmatchcase(cell.name, g) for g in globs)]


def cell_named(name: str) -> Cell:
    (cell,) = [cell for cell in CELLS if cell.name == name]
    return cell


def discover_catalog(workdir: Path) -> fh.FlowSource:
    """One discovery for every cell: every chaos org seeds the same schema, and each cell
    points the catalog at its own emulator."""
    with EmulatorServer(Org(OrgConfig(rows=10))) as emulator:
        return discovered_source(workdir, emulator)


def run_cell(catalog: fh.FlowSource, cell: Cell, size: OrgSize, caps: Caps, seed: int,
             objects: Collection[str] = ALL_OBJECTS) -> CellReport:
    """Run `cell` on a fresh emulator with `objects` bound (by default every object discovery
    finds) and judge it (see measure.py)."""
    assert cell.scenario.objects <= set(objects), f"{cell.name} changes {sorted(cell.scenario.objects)}"
    cell_seed = zlib.crc32(f"{seed}:{cell.name}".encode())
    org = Org(OrgConfig(seed=seed, rows=size.rows, object_rows={"Account": size.accounts}))
    with EmulatorServer(org, Knobs(max_page_rows=size.page_rows)) as emu:
        source = _bind(catalog, emu, size, objects)
        cell.scenario.arm(emu, cell_seed)
        capture = Capture(emu, cell.scenario, [o for o in INCREMENTAL if o in objects],
                          [o for o in (SNAPSHOT,) if o in objects])
        rng = random.Random(cell_seed)

        started = time.monotonic()
        sessions = crashes = 0
        first_error: str | None = None
        sealed = False
        while not capture.complete(capture.state):
            seconds_left = caps.seconds - (time.monotonic() - started)
            if sessions >= caps.sessions or seconds_left <= 0:
                break
            if caps.fail_fast and job_usage(emu.counters, capture.snapshots, capture.recorded).unjustified:
                sealed = True
                break
            plan = cell.restart.session(rng, capture.done, seconds_left)
            try:
                result = fh.preview(source, sessions=[plan], delay=TRANSACTION_DELAY, timeout=OPEN_TIMEOUT,
                                    initial_state=capture.state, env=CHAOS_ENV, resource_path_pointers=POINTERS,
                                    count_only=True, on_document=capture.on_document,
                                    on_checkpoint=capture.on_checkpoint, check=False)
            except fh.ConnectorError as error:  # no `opened`, a protocol error: Flow restarts it too
                if error.result is None:
                    raise
                result = error.result
                first_error = first_error or str(error).splitlines()[0]
            sessions += 1
            capture.after_session(result)
            session = result.sessions[-1]
            if session.stop_reason in ("exited", "error") and session.exit_code not in (0, None):
                crashes += 1
                first_error = first_error or error_of(session.logs) or f"exit code {session.exit_code}"

        mismatches = {}
        for obj in (*capture.incremental, *capture.snapshots):
            difference = compare(capture.collection(obj), truth(emu, obj))
            if difference is not None:
                mismatches[obj] = difference
        report = CellReport(
            cell=cell.name, sessions=sessions, crashes=crashes, first_error=first_error,
            usage=job_usage(emu.counters, capture.snapshots, capture.recorded), page_rows=size.page_rows,
            seconds=time.monotonic() - started, complete=capture.complete(capture.state), mismatches=mismatches,
            sealed=sealed)
    report.judge()
    return report


def _bind(catalog: fh.FlowSource, emu: EmulatorServer, size: OrgSize, objects: Collection[str]) -> fh.FlowSource:
    """The catalog pointed at `emu`, narrowed to `objects`, with the cells' settings: the delta
    stream polls every second (snapshots keep their discovered interval, see changes.py)."""
    source = rebound_source(catalog, emu, objects=set(objects), delta_lag=DELTA_LAG,
                            bulk_delta_threshold=BULK_DELTA_THRESHOLD, backfill_slice_rows=size.slice_rows)
    bindings = tuple(dataclasses.replace(b, resource={**b.resource, **POLL})
                     if b.target.removeprefix(PREFIX) in INCREMENTAL else b for b in source.bindings)
    bound = {b.target.removeprefix(PREFIX) for b in bindings if not b.disable}
    assert bound == set(objects), f"asked to bind {sorted(objects)}, the catalog has {sorted(bound)}"
    return dataclasses.replace(source, bindings=bindings)


COLUMNS = ("cell", "sessions", "jobs created", "jobs spent", "slices needed", "dup (unjust.)", "rows re-exported",
           "most, one object", "rows budget", "pages re-fetched", "crashes", "seconds", "verdict")


def format_table(reports: list[CellReport]) -> str:
    """One row per cell, then each failing cell's reasons."""
    rows = [COLUMNS]
    for r in reports:
        u = r.usage
        rows.append((r.cell, str(r.sessions), str(u.jobs_created), str(u.jobs_spent), str(u.slices_needed),
                     f"{u.duplicates} ({len(u.unjustified)})", str(u.rows_re_exported), str(u.most_re_exported[1]),
                     str(r.rows_budget),
                     str(u.pages_refetched), str(r.crashes), f"{r.seconds:.0f}", "PASS" if r.passed else "FAIL"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths,
                                                                                                     strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in reports:
        if r.failures:
            lines.append(f"{r.cell}: " + "; ".join(r.failures))
        if r.first_error and (r.failures or r.crashes):
            lines.append(f"{r.cell}: first connector error: {r.first_error}")
    return "\n".join(lines)
