"""How fast the connector backfills one large object, measured against what the machine can do.

    make bench                                   # 1M and 5M rows of both objects (python -m tests.bench)
    python -m tests.bench --quick                # 100k rows of BenchRecord__c, about a minute
    python -m tests.bench --rows 1000000 10000000 --objects BenchRecord__c
    python -m tests.bench --rows 1000000 --profile

This is a benchmark, not a test: it prints figures and targets and always exits 0 unless
something broke (a wrong document count, a connector that dies or stalls).

For each object and row count N it starts the Salesforce emulator as its own process
(`python -m tests.emulator --rows N`) and measures, on the emulator's `BenchRecord__c` (20
mixed-type fields: ids, strings with commas/quotes/newlines, numbers, dates, datetimes,
booleans, nulls) and `WideRecord__c` (30 fields, three of them long text, ~1.2 KB a row; an
optional object of the emulator, seeded only for this):

1. **emulator**: one Bulk job with the connector's own backfill SOQL for the whole object; a
   plain HTTP client downloads every result page gzip-compressed (50,000 rows a page, as the
   connector asks), counts rows from `Sforce-NumberOfRecords` and keeps the compressed bytes.
   Rows/s over the downloads is the emulator's serving rate: the ceiling for any client.
2. **baseline**: `csv.DictReader` over those same pages (gunzipped beforehand, untimed; UTF-8
   decoding and CSV parsing timed), in this process. That is design.md's yardstick: what
   one Python process does with the bytes when it does nothing else.
3. **connector**: `python -m source_bulk_export` is sent an `open` with one binding,
   `BenchRecord__c` (interval 24h, so the delta stream stays idle), and its stdout is read in
   1 MiB blocks: `captured` lines are counted by prefix, only `checkpoint` lines are parsed.
   The clock runs from writing `open` until the checkpoint that sets the binding's `backfill`
   to null (the binding is incremental, so the process would otherwise keep running). Then
   the process's peak RSS (VmHWM) is read from /proc and it is killed, as flowctl would.

Steps 1 and 2 live in tests/bench_reference.py, the /proc readings in tests/procstat.py.

Then it prints one table with the targets of issue 9 (design.md's were 0.20 and 250 MiB) next
to the figures:

    connector / baseline rows/s   >= 0.60 (one core)
    connector peak RSS            <  150 MiB
    largest run's peak RSS        within 10% of the smallest run's, per object (memory flat in N)
    emulator / connector rows/s   >= 3 (so the emulator is not what limits the connector)

and writes the same figures to `.bench/results.json` (git-ignored) for the README.
`--job-seconds S` makes every Bulk job of the emulator run S seconds before it completes, as
Salesforce's take tens of seconds: the connector then waits for each backfill slice's job, and
the ratio shows what those waits cost (the targets above assume jobs that complete at once).
`--profile` adds one extra connector run (the smallest N) under pyinstrument and prints where
its time goes, by package and by function (see tests/profiles.py); its figures are not mixed
into the table.

The machines are shared 2-core VMs whose speed varies with load: compare the ratios, which are
taken minutes apart on the same machine, rather than absolute rows/s across runs. While the
connector runs, the emulator runs on the other core. Each phase also reports how many cores
other processes used meanwhile (from /proc/stat); above 0.2 the run is flagged as disturbed.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import selectors
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from tests import flow_harness as fh
from tests import profiles
from tests.bench_reference import (
    OBJECT,
    OBJECTS,
    READ_SIZE,
    BaselineRun,
    BenchError,
    Emulator,
    EmulatorRun,
    emulator,
    measure_baseline,
    measure_emulator,
)
from tests.procstat import OtherLoad, cpu_seconds, own_cpu_seconds, peak_rss_mib

ROOT = Path(__file__).resolve().parent.parent
WORK_DIR = ROOT / ".bench"
DEFAULT_ROWS = (1_000_000, 5_000_000)
QUICK_ROWS = (100_000,)

# Targets (issue 9; design.md's "Performance: where the bar is" asked for 0.20 and 250 MiB).
MIN_BASELINE_RATIO = 0.60
MAX_PEAK_RSS_MIB = 150.0
MAX_PEAK_GROWTH = 0.10
MIN_EMULATOR_RATIO = 3.0

# Other processes using more than this many cores during a run make its figures unreliable.
DISTURBED_CORES = 0.2
SILENCE_TIMEOUT_S = 120.0  # the connector may be silent this long (job submit + poll) before we give up
PROGRESS_EVERY_S = 10.0
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = 1031  # <linux/fcntl.h>
# pyinstrument's sampling interval: 5 ms keeps its overhead and its session file (~60 MB for a
# million rows) small, and still gives thousands of samples.
PROFILE_INTERVAL_S = 0.005

CAPTURED = b'{"captured":'
CHECKPOINT = b'{"checkpoint":'


# --------------------------------------------------------------------------------------
# Results


@dataclass
class ConnectorRun:
    """One connector process, from `open` to the checkpoint that completes the backfill."""

    documents: int
    seconds: float
    rows_per_s: float
    first_document_s: float | None
    checkpoints: int
    peak_rss_mib: float
    cpu_seconds: float  # the connector's user + system CPU over its whole life
    emulator_cpu_seconds: float  # the emulator's, over the same span
    # CPU that processes other than the connector, the emulator and this bench used meanwhile, in
    # cores: on a shared machine, anything above ~0.2 means the figures were disturbed.
    other_cores: float
    # CPU this bench's stdout reader used meanwhile, as a share of one core: a few percent means
    # it cannot have been what limited the connector.
    reader_share: float
    log_file: str


@dataclass
class Result:
    object: str
    rows: int
    emulator: EmulatorRun
    baseline: BaselineRun
    connector: ConnectorRun
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def baseline_ratio(self) -> float:
        return self.connector.rows_per_s / self.baseline.rows_per_s

    @property
    def emulator_ratio(self) -> float:
        return self.emulator.rows_per_s / self.connector.rows_per_s


# --------------------------------------------------------------------------------------
# The emulator, as its own process


# --------------------------------------------------------------------------------------
# The connector


def open_request(
    emu: Emulator, module: str, catalog_dir: Path, env: dict[str, str], object_name: str = OBJECT
) -> dict[str, Any]:
    """The `open` Flow would send for a capture with one binding, `object_name`.

    The catalog plumbing (discovered schema, state key, capture spec) goes through the
    harness, on a throwaway flow.yaml in `catalog_dir`.
    """
    config = {
        "credentials": {
            "credentials_title": "OAuth",
            **{k: emu.credentials[k] for k in ("client_id", "client_secret", "refresh_token")},
        },
        "login_url": emu.url,
    }
    endpoint = {"local": {"command": ["python", "-m", module], "config": config, "env": env}}
    flow_path = catalog_dir / "flow.yaml"
    # JSON is YAML: the harness reads it like any flow.yaml.
    flow_path.write_text(json.dumps({"captures": {"acmeCo/bench": {"endpoint": endpoint, "bindings": []}}}))
    discovered = {b["recommendedName"]: b for b in fh.discover(flow_path)}
    if object_name not in discovered:
        raise BenchError(f"discover did not return {object_name}: {sorted(discovered)}")
    binding = discovered[object_name]
    flow_path.write_text(
        json.dumps(
            {
                "captures": {
                    "acmeCo/bench": {
                        "endpoint": endpoint,
                        # A day between delta windows: the delta stream sleeps through the
                        # backfill (the CDK waits until the cursor is `interval` old). The
                        # default 5-minute delta lag only sets the cutoff, which every seeded
                        # row predates.
                        "bindings": [
                            {
                                "resource": {"name": object_name, "interval": "PT24H"},
                                "target": f"acmeCo/{object_name}",
                            }
                        ],
                    }
                },
                "collections": {
                    f"acmeCo/{object_name}": {"key": binding["key"], "schema": binding["documentSchema"]}
                },
            }
        )
    )
    capture = fh.capture_spec(fh.load_source(flow_path), ["/name"])
    return {"open": {"capture": capture, "version": "bench", "range": fh.FULL_RANGE, "state": {}}}


def connector_command(module: str, profile_file: Path | None) -> list[str]:
    if profile_file is None:
        return [sys.executable, "-m", module]
    return [
        sys.executable, "-m", "pyinstrument", "--interval", str(PROFILE_INTERVAL_S), "-r", "pyisession",
        "-o", str(profile_file), "-m", module,
    ]  # fmt: skip


class OutputCounter:
    """Counts a capture's stdout as it streams: `captured` lines by their prefix, without
    decoding them; `checkpoint` lines are parsed, to spot the end of the backfill."""

    def __init__(self, state_key: str) -> None:
        self.state_key = state_key
        self.documents = 0
        self.checkpoints = 0
        self.backfill_done = False
        self._partial = b""

    def feed(self, chunk: bytes) -> None:
        """Count the complete lines in `chunk` (plus what earlier chunks left unfinished). Lines
        after the backfill-complete checkpoint are not counted."""
        end = chunk.rfind(b"\n")
        if end < 0:
            self._partial += chunk
            return
        block, self._partial = self._partial + chunk[: end + 1], chunk[end + 1 :]
        # Every block starts at a line start. Documents are JSON, so `{"captured":` can only
        # begin a line: inside a string its quotes would be escaped.
        if CHECKPOINT not in block:
            self.documents += block.count(b"\n" + CAPTURED) + block.startswith(CAPTURED)
            return
        for line in block.split(b"\n"):
            if line.startswith(CAPTURED):
                self.documents += 1
            elif line.startswith(CHECKPOINT):
                self.checkpoints += 1
                if self._completes_backfill(line):
                    self.backfill_done = True
                    return

    def _completes_backfill(self, line: bytes) -> bool:
        """Whether this checkpoint sets the binding's `backfill` to null, as the CDK does when a
        backfill ends (the binding is incremental, so the process itself keeps running)."""
        updated = orjson.loads(line)["checkpoint"]["state"]["updated"]
        binding = (updated.get("bindingStateV1") or {}).get(self.state_key)
        return isinstance(binding, dict) and "backfill" in binding and binding["backfill"] is None


def spawn_connector(
    module: str, env: dict[str, str], log_path: Path, profile_file: Path | None
) -> subprocess.Popen[bytes]:
    """The connector process, stdin and stdout piped (the CDK needs a pipe on stdin), stderr to
    `log_path`, stdout's pipe enlarged so the connector rarely waits for us."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            connector_command(module, profile_file),
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, **env},
        )
    assert process.stdout is not None
    try:
        fcntl.fcntl(process.stdout.fileno(), F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # best effort: a smaller pipe only costs more wake-ups
    return process


def run_connector(
    emu: Emulator,
    rows: int,
    module: str,
    env: dict[str, str],
    work: Path,
    profile_file: Path | None = None,
    object_name: str = OBJECT,
) -> ConnectorRun:
    """Open the capture, count documents until the backfill-complete checkpoint, then stop.

    Raises BenchError if the connector exits, stalls for SILENCE_TIMEOUT_S, or emits a number
    of documents other than `rows`.
    """
    request = open_request(emu, module, work, env, object_name)
    counter = OutputCounter(request["open"]["capture"]["bindings"][0]["stateKey"])
    log_path = work / ("connector-profiled.log" if profile_file else "connector.log")
    process = spawn_connector(module, env, log_path, profile_file)
    assert process.stdin is not None and process.stdout is not None
    fd = process.stdout.fileno()

    emulator_cpu_start, reader_cpu_start = cpu_seconds(emu.process.pid), own_cpu_seconds()
    load = OtherLoad(emu.process.pid, process.pid)
    first_document: float | None = None
    try:
        process.stdin.write(orjson.dumps(request) + b"\n")
        process.stdin.flush()  # stdin stays open, as Flow keeps it
        started = last_output = last_progress = time.perf_counter()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while not counter.backfill_done:
                now = time.perf_counter()
                if now - last_output > SILENCE_TIMEOUT_S:
                    raise BenchError(
                        f"the connector wrote nothing for {SILENCE_TIMEOUT_S:.0f}s; see {log_path}"
                    )
                if now - last_progress >= PROGRESS_EVERY_S:
                    last_progress = now
                    rate = counter.documents / (now - started)
                    print(
                        f"    connector: {counter.documents:>10,} documents, {rate:>9,.0f} rows/s", flush=True
                    )
                if not selector.select(1.0):
                    continue
                chunk = os.read(fd, READ_SIZE)
                if not chunk:
                    code = process.wait()
                    raise BenchError(
                        f"the connector exited (code {code}) before its backfill completed; see {log_path}"
                    )
                last_output = time.perf_counter()
                counter.feed(chunk)
                if first_document is None and counter.documents:
                    first_document = last_output - started
        done_at = last_output
        peak = peak_rss_mib(process.pid)
        cpu = cpu_seconds(process.pid)
        emulator_cpu = cpu_seconds(emu.process.pid) - emulator_cpu_start
        reader = own_cpu_seconds() - reader_cpu_start
        other_cores = load.cores()
        wall = time.perf_counter() - started
    finally:
        stop_connector(process, graceful=profile_file is not None)

    if counter.documents != rows:
        raise BenchError(
            f"the connector emitted {counter.documents:,} documents for {rows:,} rows; see {log_path}"
        )
    seconds = done_at - started
    return ConnectorRun(
        documents=counter.documents,
        seconds=round(seconds, 2),
        rows_per_s=round(counter.documents / seconds),
        first_document_s=None if first_document is None else round(first_document, 2),
        checkpoints=counter.checkpoints,
        peak_rss_mib=round(peak, 1),
        cpu_seconds=round(cpu, 1),
        emulator_cpu_seconds=round(emulator_cpu, 1),
        other_cores=other_cores,
        reader_share=round(reader / wall, 3),
        log_file=str(log_path.relative_to(ROOT)),
    )


def stop_connector(process: subprocess.Popen[bytes], graceful: bool) -> None:
    """SIGKILL, as flowctl ends a preview; or, under the profiler, SIGINT so pyinstrument
    writes its report (stdout is drained meanwhile so the connector never blocks on it)."""
    assert process.stdout is not None
    if graceful and process.poll() is None:
        # The CDK reads stdin in a worker thread, which the interpreter waits for on its way out:
        # end stdin too, or the process never exits and pyinstrument never writes its session.
        if process.stdin is not None:
            process.stdin.close()
        process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 60
        os.set_blocking(process.stdout.fileno(), False)
        while process.poll() is None and time.monotonic() < deadline:
            try:
                os.read(process.stdout.fileno(), READ_SIZE)
            except BlockingIOError:
                time.sleep(0.05)
    if process.poll() is None:
        process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass


# --------------------------------------------------------------------------------------
# Report


def mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def report(results: Sequence[Result]) -> dict[str, bool]:
    """Print the table; returns the checks that span runs."""
    header = (
        f"{'object':<15}{'rows':>11}  {'connector rows/s':>16}  {'baseline rows/s':>15}  {'ratio':>14}  "
        f"{'peak RSS MiB':>17}  {'emulator rows/s':>15}  {'emulator/conn':>14}"
    )
    print()
    print(header)
    print(
        f"{'':<15}{'':>11}  {'':>16}  {'(DictReader)':>15}  {f'(>= {MIN_BASELINE_RATIO:.2f})':>14}  "
        f"{f'(< {MAX_PEAK_RSS_MIB:.0f})':>17}  {'(serving only)':>15}  {f'(>= {MIN_EMULATOR_RATIO:.0f}x)':>14}"
    )
    print("-" * len(header))
    for r in results:
        ratio = f"{r.baseline_ratio:.3f} {mark(r.checks['baseline_ratio'])}"
        peak = f"{r.connector.peak_rss_mib:.1f} {mark(r.checks['peak_rss'])}"
        headroom = f"{r.emulator_ratio:.1f}x {mark(r.checks['emulator_ratio'])}"
        print(
            f"{r.object:<15}{r.rows:>11,}  {r.connector.rows_per_s:>16,.0f}  {r.baseline.rows_per_s:>15,.0f}  "
            f"{ratio:>14}  "
            f"{peak:>17}  {r.emulator.rows_per_s:>15,.0f}  {headroom:>14}"
        )
    for r in results:
        c = r.connector
        print(
            f"\n{r.object}, {r.rows:,} rows: {r.emulator.pages} result pages, {r.baseline.csv_mb:,.0f} MB of CSV "
            f"({r.emulator.gzip_mb:,.0f} MB gzip)"
        )
        print(
            f"  connector: {c.seconds:.1f}s from open to backfill complete, first documents after "
            f"{c.first_document_s}s, {c.checkpoints} checkpoints"
        )
        connector_share, emulator_share = c.cpu_seconds / c.seconds, c.emulator_cpu_seconds / c.seconds
        print(
            f"  CPU during the connector run: connector {connector_share:.0%} of a core, emulator "
            f"{emulator_share:.0%}, this bench's stdout reader {c.reader_share:.0%}"
        )
        noise = {
            "emulator": r.emulator.other_cores,
            "baseline": r.baseline.other_cores,
            "connector": c.other_cores,
        }
        disturbed = [phase for phase, cores in noise.items() if cores > DISTURBED_CORES]
        print(
            "  other processes on the machine, in cores: "
            + ", ".join(f"{phase} run {cores:.2f}" for phase, cores in noise.items())
            + (
                f" -- DISTURBED ({', '.join(disturbed)}): re-run on a quiet machine"
                if disturbed
                else " (quiet)"
            )
        )
    checks: dict[str, bool] = {}
    for object_name in dict.fromkeys(r.object for r in results):
        runs = [r for r in results if r.object == object_name]
        if len(runs) < 2:
            continue
        small, large = min(runs, key=lambda r: r.rows), max(runs, key=lambda r: r.rows)
        growth = large.connector.peak_rss_mib / small.connector.peak_rss_mib - 1
        check_name = f"peak_rss_flat/{object_name}"
        checks[check_name] = growth <= MAX_PEAK_GROWTH
        print(
            f"\n{object_name}: peak RSS at {large.rows:,} rows vs {small.rows:,} rows: {growth:+.1%} "
            f"(target within {MAX_PEAK_GROWTH:.0%}) {mark(checks[check_name])}"
        )
    return checks


def check(result: Result) -> None:
    result.checks = {
        "baseline_ratio": result.baseline_ratio >= MIN_BASELINE_RATIO,
        "peak_rss": result.connector.peak_rss_mib < MAX_PEAK_RSS_MIB,
        "emulator_ratio": result.emulator_ratio >= MIN_EMULATOR_RATIO,
    }


def write_results(results: Sequence[Result], checks: dict[str, bool], command: list[str]) -> Path:
    path = WORK_DIR / "results.json"
    document = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(command),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "objects": sorted({r.object for r in results}),
        "targets": {
            "connector_over_baseline_min": MIN_BASELINE_RATIO,
            "peak_rss_mib_max": MAX_PEAK_RSS_MIB,
            "peak_rss_growth_max": MAX_PEAK_GROWTH,
            "emulator_over_connector_min": MIN_EMULATOR_RATIO,
        },
        "runs": [
            {
                "object": r.object,
                "rows": r.rows,
                "connector": asdict(r.connector),
                "baseline": asdict(r.baseline),
                "emulator": asdict(r.emulator),
                "connector_over_baseline": round(r.baseline_ratio, 3),
                "emulator_over_connector": round(r.emulator_ratio, 2),
                "checks": r.checks,
            }
            for r in results
        ],
        "checks": checks,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------------------
# Main


def optional_objects(object_name: str) -> tuple[str, ...]:
    """What the emulator must be told to seed for `object_name` (the wide object is optional)."""
    return () if object_name == OBJECT else (object_name,)


def bench_one(object_name: str, rows: int, module: str, env: dict[str, str], job_seconds: float = 0.0) -> Result:
    work = WORK_DIR / f"{object_name}-rows-{rows}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"\n== {rows:,} rows of {object_name} ==", flush=True)
    with emulator(rows, work / "emulator.log", optional_objects(object_name), job_seconds) as emu:
        print(f"  emulator at {emu.url} (pid {emu.process.pid})", flush=True)
        print("  1/3 emulator alone: one Bulk job, all pages downloaded by a plain client ...", flush=True)
        served = measure_emulator(emu, rows, work / "pages", object_name)
        print(f"      {served.rows:,} rows in {served.seconds}s: {served.rows_per_s:,} rows/s", flush=True)
        print("  2/3 baseline: csv.DictReader over the same pages ...", flush=True)
        baseline = measure_baseline(work / "pages")
        shutil.rmtree(work / "pages")
        print(
            f"      {baseline.rows:,} rows in {baseline.seconds}s: {baseline.rows_per_s:,} rows/s", flush=True
        )
        if baseline.rows != rows:
            raise BenchError(f"DictReader read {baseline.rows:,} rows, expected {rows:,}")
        print(f"  3/3 connector ({module}): open -> backfill complete ...", flush=True)
        connector = run_connector(emu, rows, module, env, work, object_name=object_name)
        print(
            f"      {connector.documents:,} documents in {connector.seconds}s: {connector.rows_per_s:,} rows/s, "
            f"peak RSS {connector.peak_rss_mib} MiB",
            flush=True,
        )
    result = Result(object_name, rows, served, baseline, connector)
    check(result)
    return result


def profile_one(object_name: str, rows: int, module: str, env: dict[str, str], top: int) -> None:
    work = WORK_DIR / f"profile-{object_name}-{rows}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(
        f"\n== profile: {rows:,} rows of {object_name} under pyinstrument (figures slowed by the profiler) ==",
        flush=True,
    )
    session_file = work / "profile.pyisession"
    with emulator(rows, work / "emulator.log", optional_objects(object_name)) as emu:
        run = run_connector(emu, rows, module, env, work, profile_file=session_file, object_name=object_name)
    print(f"  {run.documents:,} documents in {run.seconds}s ({run.rows_per_s:,} rows/s while profiled)")
    if not session_file.exists():
        raise BenchError(f"pyinstrument wrote no profile; see {run.log_file}")
    tree_file = work / "profile.txt"
    profiles.render_tree(session_file, tree_file)
    summary = profiles.summarize(session_file).render(top)
    (work / "summary.txt").write_text(summary + "\n")
    print(f"  where the time goes (call tree in {tree_file.relative_to(ROOT)}):")
    print(textwrap.indent(summary, "    "))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=int, nargs="+", default=list(DEFAULT_ROWS), help="row counts to run")
    parser.add_argument(
        "--objects", nargs="+", choices=OBJECTS, default=list(OBJECTS), help="objects to run (default: both)"
    )
    parser.add_argument("--quick", action="store_true", help=f"one run of {QUICK_ROWS[0]:,} rows")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile one connector run (the smallest N) of each object with pyinstrument",
    )
    parser.add_argument("--profile-top", type=int, default=15, help="packages and functions to list")
    parser.add_argument(
        "--job-seconds",
        type=float,
        default=0.0,
        help="how long each Bulk job runs before it completes (default 0: at once; Salesforce takes "
        "tens of seconds), to see what job waits cost a backfill",
    )
    parser.add_argument(
        "--connector-module", default="source_bulk_export", help="module run as the connector (python -m ...)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rows = list(QUICK_ROWS)
        if "--objects" not in argv:
            args.objects = [OBJECT]
    if any(n <= 0 for n in args.rows):
        parser.error("--rows must be positive")
    if not 0 <= args.job_seconds <= 300:
        parser.error("--job-seconds must be between 0 and 300")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # On SIGTERM, unwind like Ctrl-C does, so the emulator and the connector are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.profile:
        try:
            import pyinstrument  # noqa: F401
        except ImportError:
            print("--profile needs pyinstrument: pip install pyinstrument (into this venv)", file=sys.stderr)
            return 2
    # The connector package must import from the checkout even when it is not installed.
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": pythonpath}
    WORK_DIR.mkdir(exist_ok=True)
    print(
        f"bench: {', '.join(args.objects)}, rows {', '.join(f'{n:,}' for n in args.rows)}; {os.cpu_count()} CPUs; "
        f"Bulk jobs complete after {args.job_seconds:g} s; scratch files in {WORK_DIR.relative_to(ROOT)}/"
    )
    try:
        results = [
            bench_one(object_name, rows, args.connector_module, env, args.job_seconds)
            for object_name in args.objects
            for rows in args.rows
        ]
        checks = report(results)
        path = write_results(results, checks, ["python", "-m", "tests.bench", *(argv or sys.argv[1:])])
        print(f"\nwrote {path.relative_to(ROOT)}")
        if args.profile:
            for object_name in args.objects:
                profile_one(object_name, min(args.rows), args.connector_module, env, args.profile_top)
    except BenchError as error:
        print(f"\nbench failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
