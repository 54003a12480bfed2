"""A guided run of the connector against the bundled Salesforce emulator: start here.

    make demo            (or: poetry run python -m tests.demo)

It takes under two minutes, needs no Salesforce account and no network, and exits by itself:

1. starts the Salesforce emulator in this process, over a small org (a few thousand rows
   in each large object);
2. runs `spec` and `discover`, the way `flowctl` would, and shows which Salesforce objects
   became bindings and how each one is captured;
3. runs a first capture session that backfills every binding, with live progress, and stops
   once every backfill is done;
4. inserts, updates and deletes Account rows in the emulator, then runs a second session,
   resumed from the first session's state, and shows the three changes arriving;
5. sums up: documents per object, rows/s, sessions, and what the state looks like.

Everything talks to the connector exactly as Flow does: one process per request, JSON lines
on stdin/stdout (see tests/flow_harness/, our stand-in for `flowctl`). Read this file top
to bottom: `main()` is the story, the helpers below it are the details.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from source_bulk_export.models import DEFAULT_MAX_CONCURRENT_JOBS as MAX_JOBS
from tests import flow_harness as fh
from tests.capture_support import emulator_config, preview_restarting
from tests.emulator import EmulatorServer, Org, OrgConfig

ROOT = Path(__file__).resolve().parent.parent
CONNECTOR_MODULE = "source_bulk_export"
CAPTURE = "acmeCo/source-bulk-export"

ROWS = 3_000  # rows in each large object (Account, Contact, Opportunity, BenchRecord__c)
# The delta stream never reads the newest `delta_lag` of history, because Salesforce can make
# a transaction's rows visible after their timestamp. Production uses minutes; 2 s keeps the
# demo short.
DELTA_LAG = "PT2S"
DELTA_LAG_SECONDS = timedelta(seconds=2)
# How often an incremental binding looks for changes. Discovery suggests PT5M; the demo uses
# 3 s so that step 4's changes show up within seconds.
DEMO_INTERVAL = "PT3S"

BACKFILL_CAP_S = 60.0  # step 3 gives up after this long
CHANGES_CAP_S = 30.0  # step 4 gives up after this long
PROGRESS_EVERY_S = 1.0


def main() -> int:
    started = time.monotonic()
    step(1, "Start the Salesforce emulator")
    org = Org(OrgConfig(rows=ROWS))
    with EmulatorServer(org) as emulator, tempfile.TemporaryDirectory(prefix="bulk-export-demo-") as tmp:
        say(f"Serving the Salesforce APIs the connector uses (OAuth, describe, Bulk, REST) at {emulator.url}")
        say(f"Its org has {ROWS:,} rows in each large object and a few small ones, generated on demand.")
        notice("The connector gets nothing special: it signs in with OAuth and calls the real API paths.")
        catalog = Catalog(Path(tmp), emulator)

        step(2, "Ask the connector what it needs (spec) and what it can capture (discover)")
        spec = fh.spec(catalog.path)
        config_fields = ", ".join(spec["configSchema"]["properties"])
        say(f"spec: the endpoint config has {config_fields}.")
        bindings = fh.discover(catalog.path, write=True)
        show_bindings(bindings, org)
        catalog.use_demo_intervals()
        say(f"For the demo, incremental bindings look for changes every {DEMO_INTERVAL} instead of PT5M.")

        step(3, "First capture session: backfill every binding")
        say("One connector process, sent `open` with an empty state. Progress is read from its checkpoints.")
        notice("Bulk exports are asynchronous: per object the connector submits a job, polls it until")
        notice(f"Salesforce has run it, then streams its CSV result pages, at most {MAX_JOBS} jobs at a time")
        notice("(advanced.max_concurrent_jobs). Documents arrive a page at a time, each page followed")
        notice("by a checkpoint, so the first seconds show none.")
        first = backfill_session(catalog, org, spec["resourcePathPointers"])

        step(4, "Change the org, then resume the capture")
        changes = apply_changes(org, first.state)
        second = changes_session(catalog, changes, first.state, spec["resourcePathPointers"])

        step(5, "Summary")
        summarize(catalog, org, first, second, time.monotonic() - started)
    problems = first.problems + second.problems
    if problems:
        print("\nThe demo did not go as expected:", *problems, sep="\n  - ")
        return 1
    return 0


# --------------------------------------------------------------------------------------
# The catalog: a throwaway test.flow.yaml pointing the connector at the emulator


class Catalog:
    """A flow.yaml in a temporary directory, as `flowctl raw discover` would maintain it.

    The endpoint config is the emulator's (its credentials are not secrets) and the bindings
    and collections are what discover writes into it.
    """

    def __init__(self, directory: Path, emulator: EmulatorServer) -> None:
        self.path = directory / "flow.yaml"
        config = emulator_config(emulator, delta_lag=DELTA_LAG)
        # PYTHONPATH lets the connector run from this checkout even before it is installed.
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        endpoint = {
            "local": {
                "command": ["python", "-m", CONNECTOR_MODULE],
                "config": config,
                "env": {"PYTHONPATH": pythonpath},
            }
        }
        # JSON is YAML; discover(write=True) rewrites this file in flowctl's style.
        self.path.write_text(json.dumps({"captures": {CAPTURE: {"endpoint": endpoint, "bindings": []}}}))

    def source(self) -> fh.FlowSource:
        return fh.load_source(self.path)

    def use_demo_intervals(self) -> None:
        """Set DEMO_INTERVAL on every incremental binding (snapshots keep theirs)."""
        source = self.source()
        document = yaml.safe_load(self.path.read_text())
        for binding in document["captures"][CAPTURE]["bindings"]:
            if not is_snapshot(source.collection(binding["target"]).key):
                binding["resource"]["interval"] = DEMO_INTERVAL
        self.path.write_text(json.dumps(document))

    def names(self) -> dict[str, str]:
        """Collection name -> Salesforce object name, in binding order."""
        return {b.target: b.resource["name"] for b in self.source().enabled_bindings}


def is_snapshot(key: list[str] | tuple[str, ...]) -> bool:
    """Snapshot bindings are keyed on the row's position in the export, not on /Id."""
    return list(key) == ["/_meta/row_id"]


def show_bindings(bindings: list[dict[str, Any]], org: Org) -> None:
    say(f"discover found {len(bindings)} bindings:")
    say(f"  {'object':<16} {'key':<16} {'how':<22} {'interval':<9} schedule")
    for binding in bindings:
        resource = binding["resourceConfig"]
        how = "snapshot" if is_snapshot(binding["key"]) else "incremental + backfill"
        schedule = resource.get("schedule") or "-"
        if schedule != "-":
            schedule += "  (has formula fields: re-backfilled daily)"
        name, key, interval = resource["name"], ",".join(binding["key"]), resource["interval"]
        say(f"  {name:<16} {key:<16} {how:<22} {interval:<9} {schedule}")
    notice("One binding per exportable object. Objects with a timestamp (SystemModstamp, or CreatedDate")
    notice("for append-only ones) are backfilled once, then followed through a stream of changes.")
    snapshots = [b["recommendedName"] for b in bindings if is_snapshot(b["key"])]
    if snapshots:
        notice(
            f"{', '.join(snapshots)}: no timestamp to follow, so exported whole each interval (a snapshot)."
        )
    discovered = {b["recommendedName"] for b in bindings}
    left_out = [spec.name for spec in org.objects if spec.name not in discovered]
    if left_out:
        notice(f"In the org but not exportable, so left out: {', '.join(left_out)}.")


# --------------------------------------------------------------------------------------
# Step 3: the backfill session


@dataclass
class SessionReport:
    """What one session did: documents per object, when each initial load finished, the state after."""

    documents: Counter[str] = field(default_factory=Counter)
    loaded_at: dict[str, float] = field(default_factory=dict)  # object -> seconds after `opened`
    elapsed: float = 0.0
    stop_reason: str = ""
    state: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # what did not go as the demo says it should


def initial_load_done(state: Mapping[str, Any], state_key: str) -> bool:
    """Whether a binding's first load is complete, judged from the CDK's state layout.

    An incremental binding keeps `backfill` in its state until the backfill ends, when a
    checkpoint sets it to null (so it disappears from the merged state). A snapshot binding
    has a `snapshot` entry once its first export has been checkpointed.
    """
    binding = (state.get("bindingStateV1") or {}).get(state_key)
    if not isinstance(binding, dict):
        return False
    if "inc" in binding:
        return not binding.get("backfill")
    return "snapshot" in binding


def backfill_session(catalog: Catalog, org: Org, pointers: list[str]) -> SessionReport:
    names = catalog.names()  # collection -> object
    objects = list(names.values())
    report = SessionReport()
    last_print = 0.0

    def on_checkpoint(progress: fh.Progress) -> None:
        nonlocal last_print
        t, documents = progress.elapsed, report.documents
        for collection, count in progress.checkpoint.counts.items():
            documents[names[collection]] += count
        for state_key, obj in zip(progress.state_keys, objects, strict=True):
            if obj not in report.loaded_at and initial_load_done(progress.state, state_key):
                report.loaded_at[obj] = t
                expected = len(org.live_rows(obj))
                say(
                    f"  {t:4.1f}s  loaded {obj:<16} {documents[obj]:>6,} documents, {expected:,} rows in the org"
                )
                if documents[obj] != expected:
                    report.problems.append(f"{obj}: {documents[obj]:,} documents for {expected:,} rows")
        if t - last_print >= PROGRESS_EVERY_S:
            last_print = t
            total = sum(documents.values())
            busy = [
                f"{o} {documents[o]:,} ({documents[o] / t:,.0f}/s)"
                for o in objects
                if o not in report.loaded_at and documents[o]
            ]
            say(
                f"  {t:4.1f}s  {total:,} documents so far ({total / t:,.0f}/s), "
                f"{len(report.loaded_at)} of {len(objects)} bindings loaded"
                + (f"; loading {', '.join(busy)}" if busy else "")
            )

    def everything_loaded(progress: fh.Progress) -> bool:
        return all(initial_load_done(progress.state, key) for key in progress.state_keys)

    result = preview_restarting(
        catalog.source(),
        fh.Session(transactions=-1, until=everything_loaded, duration=BACKFILL_CAP_S),
        resource_path_pointers=pointers,
        count_only=True,  # counts, not documents: a backfill can be millions of rows
        on_checkpoint=on_checkpoint,
        on_log=show_warnings,
        on_restart=say_restarted,
    )
    session = result.sessions[-1]
    report.elapsed = sum(s.elapsed for s in result.sessions)
    report.stop_reason, report.state = session.stop_reason, result.state
    if session.stop_reason == "until":
        total = sum(report.documents.values())
        say(f"Every binding is loaded: {total:,} documents in {max(report.loaded_at.values()):.1f}s.")
        notice("The bindings' backfills ran concurrently, in one process. The flowctl stand-in then killed")
        notice("it, as `flowctl preview` does; the state from its checkpoints is what the next session gets.")
    else:
        missing = ", ".join(o for o in objects if o not in report.loaded_at)
        report.problems.append(f"session 1 stopped ({session.stop_reason}) with these not loaded: {missing}")
        say(f"Stopped after {session.elapsed:.0f}s ({session.stop_reason}); not loaded: {missing}")
    return report


def say_restarted() -> None:
    say("The connector ended itself for a scheduled re-backfill; starting it again, as Flow would.")


def show_warnings(line: fh.LogLine) -> None:
    """Connector log lines at WARN or above, as they arrive (runs on the harness's stderr thread)."""
    record = line.record or {}
    if record.get("level") in ("WARN", "WARNING", "ERROR"):
        fields = (record.get("fields") or {}).get("args") or {}
        about = fields.get("object") or fields.get("error") or ""
        say(f"  connector {record['level'].lower()}: {record.get('msg')}" + (f" ({about})" if about else ""))


# --------------------------------------------------------------------------------------
# Step 4: live changes and the resumed session


@dataclass
class Changes:
    inserted: str
    updated: str
    deleted: str
    stamp: datetime

    def ids(self) -> dict[str, str]:
        return {self.inserted: "insert", self.updated: "update", self.deleted: "delete"}


def account_cursor(state: Mapping[str, Any]) -> datetime | None:
    """Where Account's delta stream stands: every change up to this instant has been captured.
    (A binding's state key is its resource path, here the object name.)"""
    account = (state.get("bindingStateV1") or {}).get("Account") or {}
    cursor = (account.get("inc") or {}).get("cursor")
    return datetime.fromisoformat(cursor) if isinstance(cursor, str) else None


def apply_changes(org: Org, state: Mapping[str, Any]) -> Changes:
    """Insert, update and delete one Account row each, all stamped with one SystemModstamp.

    The stamp is older than the delta lag, so the connector's next change window,
    (cursor, now - lag], already covers it; and newer than Account's cursor, the end of the
    last window read, so it belongs to that next window. (A change stamped at or before the
    cursor would be missed: that is a late commit, which the lag exists to wait for.)
    """
    cursor = account_cursor(state)
    say(f"Account's cursor in the state is {fmt(cursor)}: its delta stream has read every change up to then.")
    stamp = datetime.now(UTC).replace(microsecond=0) - DELTA_LAG_SECONDS - timedelta(seconds=1)
    if cursor is not None and stamp <= cursor:
        # The first session read a window a moment ago: wait until a stamp can be both.
        wait = (cursor - stamp).total_seconds() + 1
        say(f"(waiting {wait:.0f}s, so that a stamp older than the lag is also newer than the cursor)")
        time.sleep(wait)
        stamp += timedelta(seconds=wait)
    existing = [str(row["Id"]) for row in org.iter_rows("Account")][:2]
    inserted = org.insert("Account", {"Name": "Demo Insert Ltd"}, system_modstamp=stamp)
    org.update("Account", existing[0], {"Name": "Renamed by the demo"}, system_modstamp=stamp)
    org.delete("Account", existing[1], at=stamp)
    say(f"Changed Account through the emulator's Python API, stamped {fmt(stamp)} (older than the lag):")
    say(f"  inserted {inserted} (Name 'Demo Insert Ltd')")
    say(f"  updated  {existing[0]} (Name -> 'Renamed by the demo')")
    say(f"  deleted  {existing[1]} (a soft delete: IsDeleted = true, visible to queryAll only)")
    return Changes(inserted, existing[0], existing[1], stamp)


def changes_session(
    catalog: Catalog, changes: Changes, state: dict[str, Any], pointers: list[str]
) -> SessionReport:
    say("Second connector process, opened with the merged state of the first: no backfill runs again.")
    names = catalog.names()
    wanted = changes.ids()
    seen: dict[str, dict[str, Any]] = {}
    report = SessionReport()

    def on_checkpoint(progress: fh.Progress) -> None:
        for collection, count in progress.checkpoint.counts.items():
            report.documents[names[collection]] += count
        for collection, doc in progress.checkpoint.documents:
            if names[collection] == "Account" and doc.get("Id") in wanted and doc["Id"] not in seen:
                seen[doc["Id"]] = doc
                show_change(wanted[doc["Id"]], doc, progress.elapsed)

    result = preview_restarting(
        catalog.source(),
        fh.Session(transactions=-1, until=lambda _: len(seen) == len(wanted), duration=CHANGES_CAP_S),
        initial_state=state,
        resource_path_pointers=pointers,
        on_checkpoint=on_checkpoint,
        on_log=show_warnings,
        on_restart=say_restarted,
    )
    session = result.sessions[-1]
    report.elapsed = sum(s.elapsed for s in result.sessions)
    report.stop_reason, report.state = session.stop_reason, result.state
    if len(seen) == len(wanted):
        notice("The insert and the update are ordinary documents; the delete is a document with")
        notice("_meta.op 'd', which tells Flow to remove that key from the collection.")
    else:
        missing = ", ".join(kind for record, kind in wanted.items() if record not in seen)
        report.problems.append(f"session 2 stopped ({session.stop_reason}) without seeing the {missing}")
        say(f"Stopped after {session.elapsed:.0f}s ({session.stop_reason}) without seeing the {missing}")
    return report


def show_change(kind: str, doc: Mapping[str, Any], elapsed: float) -> None:
    shown = {k: doc.get(k) for k in ("Id", "Name", "IsDeleted", "SystemModstamp")}
    meta = doc.get("_meta")
    if isinstance(meta, dict) and "op" in meta:
        shown["_meta"] = {"op": meta["op"]}
    say(f"  {elapsed:4.1f}s  {kind:<6} arrived: {json.dumps(shown, ensure_ascii=False)}")


# --------------------------------------------------------------------------------------
# Step 5: summary


def summarize(
    catalog: Catalog, org: Org, first: SessionReport, second: SessionReport, total_s: float
) -> None:
    say(f"{'object':<16} {'rows in org':>11} {'session 1':>10} {'session 2':>10} {'loaded after':>13}")
    for obj in catalog.names().values():
        loaded = first.loaded_at.get(obj)
        when = f"{loaded:.1f}s" if loaded is not None else "not loaded"
        say(
            f"{obj:<16} {len(org.live_rows(obj)):>11,} {first.documents[obj]:>10,} {second.documents[obj]:>10,} "
            f"{when:>13}"
        )
    notice("'rows in org' is the count now: Account gained a row and lost one in step 4.")
    if first.loaded_at:
        total, last = sum(first.documents.values()), max(first.loaded_at.values())
        say(
            f"session 1 loaded {total:,} documents in {last:.1f}s: {total / last:,.0f} documents/s "
            f"(a small org: mostly time spent waiting on Bulk jobs; `make bench` measures throughput)"
        )
    say(
        f"sessions: backfill {first.elapsed:.1f}s (stopped: {first.stop_reason}), "
        f"resumed {second.elapsed:.1f}s (stopped: {second.stop_reason}); the whole demo took {total_s:.0f}s"
    )

    say("")
    say("The state Flow keeps between sessions (bindingStateV1, one entry per binding):")
    bindings = second.state.get("bindingStateV1") or {}
    for key, binding in sorted(bindings.items()):
        say(f"  {key:<16} {describe_binding_state(binding)}")
    if "Account" in bindings:
        say("Account's entry in full:")
        say("  " + json.dumps(bindings["Account"], sort_keys=True))
    notice("A restart resumes from these cursors: nothing is re-read, nothing is skipped.")


def describe_binding_state(binding: Any) -> str:
    if not isinstance(binding, dict):
        return repr(binding)
    if "inc" in binding:
        cursor = (binding["inc"] or {}).get("cursor")
        backfill = "backfill done" if not binding.get("backfill") else f"backfill at {binding['backfill']}"
        return f"delta cursor {cursor}; {backfill}"
    snapshot = binding.get("snapshot") or {}
    return f"snapshot of {snapshot.get('last_count', '?')} rows taken at {snapshot.get('updated_at', '?')}"


# --------------------------------------------------------------------------------------
# Printing


def step(number: int, title: str) -> None:
    print(f"\n[{number}/5] {title}", flush=True)


def say(text: str) -> None:
    print(f"      {text}", flush=True)


def notice(text: str) -> None:
    print(f"      > notice: {text}", flush=True)


def fmt(moment: datetime | None) -> str:
    return "(none)" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


if __name__ == "__main__":
    sys.exit(main())
