"""The floor under any estuary-cdk connector's rows/s: each stage no such connector can skip,
timed alone, in this process, on one result page of the benchmark export.

`python -m tests.bench_floor [--rows N] [--objects ...] [--repeat K]` starts the emulator,
downloads one export's pages (gzip, as the connector asks for them) and times, per row of the
first page, best of K:

- `csv.DictReader` over the inflated page: the bench's baseline, measured the same way;
- gzip inflation (zlib, which is what aiohttp runs for `Content-Encoding: gzip`);
- CSV parsing, two ways: the CDK's `IncrementalCSVRowProcessor` (what the connector uses) and
  the stdlib `csv.reader` over the whole page (the fastest parse Python has; for reference);
- the connector's row function (`fields.CsvTransform.for_header`, cells to a document);
- the CDK's work per document: its backfill loop's test of what was yielded, then
  `Task.captured` (orjson, the `SpooledTemporaryFile` buffer, the digest), the CDK's own code
  on a buffer of the CDK's size;
- `pickle.loads` of the documents in batches of 1,000: what a main process pays per row to
  receive documents parsed by page readers in other processes;
- and, for comparison, this connector's own backfill path in-process (`api.backfill_object`
  reading the page from a fake session, each document handed to the CDK's per-document work):
  what is left between it and the floor is the connector's overhead, and what is left between
  it and `make bench` is the process around it (start-up, job polls, HTTP, the copy of each
  checkpoint to stdout).

From these it prints two ceilings, each an upper bound (the async layers between the socket
and the CDK, HTTP, start-up and the checkpoints' copy to stdout are left out, so a real
connector is slower):

- one core: DictReader's time over (inflate + the faster parse + row function + the CDK's
  work per document);
- page readers in other processes: DictReader's time over what stays in the one process that
  holds the CDK's Task (receive a document + the CDK's work per document), however many cores
  parse.

Issue 9's targets are 0.60 and 1.2 of DictReader; a ceiling under a target says the target
cannot be met by a connector that hands the CDK one dict per document.
"""

import argparse
import asyncio
import csv
import io
import pickle
import sys
import tempfile
import time
import zlib
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from logging import getLogger
from pathlib import Path
from typing import Any

import xxhash
from estuary_cdk.capture.common import BaseDocument, is_cursor_dict
from estuary_cdk.capture.task import Task
from estuary_cdk.incremental_csv_processor import IncrementalCSVRowProcessor

from source_bulk_export.api import backfill_cursor, backfill_object
from source_bulk_export.exports import Exports
from source_bulk_export.fields import ObjectPlan, plan_object
from source_bulk_export.jobs import CSV_CONFIG, BulkJobs
from source_bulk_export.models import SObjectDescribe
from source_bulk_export.rest import RestQuery
from source_bulk_export.states import ReadingPage, Slice
from source_bulk_export.waits import Waits
from tests.bench_reference import OBJECTS, WIDE_OBJECT, ExportClient, emulator, measure_emulator
from tests.fakes import FakeSession, Stream, binding

ONE_CORE_TARGET = 0.60
PARALLEL_TARGET = 1.2
CHUNK = 1 << 16  # bytes handed to the CSV processor at a time, about what aiohttp hands on
RECEIVE_BATCH = 1_000
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
LOG = getLogger("bench_floor")


@dataclass
class Floor:
    """Microseconds per row of each stage, on `rows` rows of `object`."""

    object: str
    rows: int
    dict_reader: float
    inflate: float
    cdk_csv: float
    stdlib_csv: float
    row_function: float
    captured: float
    receive: float
    connector: float

    @property
    def one_core(self) -> float:
        return self.inflate + min(self.cdk_csv, self.stdlib_csv) + self.row_function + self.captured

    @property
    def main_process(self) -> float:
        return self.receive + self.captured

    @property
    def connector_ratio(self) -> float:
        return self.dict_reader / self.connector

    @property
    def one_core_ceiling(self) -> float:
        return self.dict_reader / self.one_core

    @property
    def parallel_ceiling(self) -> float:
        return self.dict_reader / self.main_process


def best_us_per_row(rows: int, repeat: int, stage: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        stage()
        best = min(best, time.perf_counter() - started)
    return best / rows * 1e6


# Every stage streams and drops what it made, as the connector does: holding a page's worth of
# rows would time the garbage collector walking them as well.


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def inflate(chunks: list[bytes]) -> None:
    inflater = zlib.decompressobj(wbits=31)
    for chunk in chunks:
        inflater.decompress(chunk)


def cdk_rows(chunks: list[bytes], each: Callable[[list[str]], object]) -> None:
    async def body() -> AsyncGenerator[bytes, None]:
        for chunk in chunks:
            yield chunk

    async def parse() -> None:
        async for cells in IncrementalCSVRowProcessor(body(), config=CSV_CONFIG):
            each(cells)

    asyncio.run(parse())


def stdlib_rows(data: bytes) -> int:
    return sum(1 for _ in csv.reader(io.StringIO(data.decode(), newline="")))


def convert_all(convert: Callable[[list[str]], object], cells_of_rows: list[list[str]]) -> None:
    for cells in cells_of_rows:
        convert(cells)


def receive_all(batches: list[bytes]) -> None:
    for batch in batches:
        pickle.loads(batch)


class _Buffered:
    """The part of a CDK Task that `captured` touches, with the Task's own methods."""

    captured = Task.captured
    _captured = Task._captured

    def __init__(self) -> None:
        self._buffer = tempfile.SpooledTemporaryFile(max_size=Task.MAX_BUFFER_MEM)
        self._hasher = xxhash.xxh3_128()


def connector_backfill(object_name: str, plan: ObjectPlan, gz_chunks: list[bytes], rows: int) -> None:
    """One backfill call of the connector (`api.backfill_object`, reading one page of a complete job)
    over the page's gzip chunks, each document handed to the CDK's per-document work."""
    session = FakeSession()
    session.script(
        "GET", "/jobs/query/J/results", Stream({"Sforce-Locator": "L2", "Sforce-NumberOfRecords": str(rows)}, gz_chunks)
    )
    exports = Exports(BulkJobs(session, 1, Waits()), RestQuery(session), Waits())  # type: ignore[arg-type]
    reading = ReadingPage(Slice(None, 10 * rows), "J", EPOCH, 10 * rows, None, 0)
    task: Any = _Buffered()

    async def backfill() -> None:
        async for item in backfill_object(
            exports, plan, binding(object_name), None, 10 * rows, timedelta(0), LOG, backfill_cursor(reading), EPOCH
        ):
            if isinstance(item, BaseDocument) or (isinstance(item, dict) and not is_cursor_dict(item)):
                task.captured(0, item)

    with task._buffer:
        asyncio.run(backfill())


def capture_all(documents: list[dict[str, Any]]) -> None:
    # What the CDK's backfill loop (`_binding_backfill_task`) does with each document a fetch_page
    # yields, with its own predicates and methods.
    task: Any = _Buffered()  # duck-typed as the Task its methods expect
    with task._buffer:
        for item in documents:
            if isinstance(item, BaseDocument) or (isinstance(item, dict) and not is_cursor_dict(item)):
                task.captured(0, item)


def measure(object_name: str, page_gz: bytes, plan: ObjectPlan, repeat: int) -> Floor:
    """Every stage on one gzip result page of `plan`'s object."""
    data = zlib.decompressobj(wbits=31).decompress(page_gz)
    header, *cells_of_rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
    rows = len(cells_of_rows)
    convert = plan.csv_transform().for_header(header)
    documents = [convert(cells) for cells in cells_of_rows]
    batches = [
        pickle.dumps(documents[start : start + RECEIVE_BATCH], protocol=pickle.HIGHEST_PROTOCOL)
        for start in range(0, rows, RECEIVE_BATCH)
    ]
    # aiohttp hands on what each socket read brought: some KiB of gzip, a few times that inflated.
    gz_chunks, csv_chunks = chunked(page_gz, CHUNK // 4), chunked(data, CHUNK)
    parsed: list[list[str]] = []
    cdk_rows(csv_chunks, parsed.append)
    if parsed != [header, *cells_of_rows]:
        raise AssertionError("the CDK's CSV processor and csv.reader disagree on the page")
    del parsed

    def time_stage(stage: Callable[[], object]) -> float:
        return best_us_per_row(rows, repeat, stage)

    return Floor(
        object=object_name,
        rows=rows,
        dict_reader=time_stage(
            lambda: sum(1 for _ in csv.DictReader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="")))
        ),
        inflate=time_stage(lambda: inflate(gz_chunks)),
        cdk_csv=time_stage(lambda: cdk_rows(csv_chunks, len)),
        stdlib_csv=time_stage(lambda: stdlib_rows(data)),
        row_function=time_stage(lambda: convert_all(convert, cells_of_rows)),
        captured=time_stage(lambda: capture_all(documents)),
        receive=time_stage(lambda: receive_all(batches)),
        connector=time_stage(lambda: connector_backfill(object_name, plan, gz_chunks, rows)),
    )


def first_page(object_name: str, rows: int, work: Path) -> tuple[bytes, ObjectPlan]:
    """The first gzip result page of an export of `rows` rows of `object_name`, and its plan."""
    optional = (WIDE_OBJECT,) if object_name == WIDE_OBJECT else ()
    with emulator(rows, work / "emulator.log", optional) as emu:
        client = ExportClient(emu.url, emu.credentials)
        try:
            plan = plan_object(SObjectDescribe.model_validate(client.describe(object_name)))
        finally:
            client.close()
        measure_emulator(emu, rows, work / "pages", object_name)
    return min((work / "pages").iterdir()).read_bytes(), plan


def report(floors: Sequence[Floor]) -> str:
    lines = [f"{'us per row':<34}" + "".join(f"{f.object:>16}" for f in floors)]
    stages = [
        ("csv.DictReader (the baseline)", "dict_reader"),
        ("gzip inflation", "inflate"),
        ("CSV: the CDK's row processor", "cdk_csv"),
        ("CSV: stdlib csv.reader", "stdlib_csv"),
        ("row function (cells -> document)", "row_function"),
        ("the CDK per document (captured)", "captured"),
        ("pickle.loads (receive a document)", "receive"),
    ]
    for label, name in stages:
        lines.append(f"{label:<34}" + "".join(f"{getattr(f, name):>16.2f}" for f in floors))
    lines.append("")
    lines.append(f"{'one core: floor':<34}" + "".join(f"{f.one_core:>16.2f}" for f in floors))
    lines.append(
        f"{f'  ceiling, x DictReader (>= {ONE_CORE_TARGET:.2f})':<34}"
        + "".join(f"{f.one_core_ceiling:>16.2f}" for f in floors)
    )
    lines.append(f"{'this connector, in-process':<34}" + "".join(f"{f.connector:>16.2f}" for f in floors))
    lines.append(f"{'  x DictReader':<34}" + "".join(f"{f.connector_ratio:>16.2f}" for f in floors))
    lines.append(f"{'parallel: main process floor':<34}" + "".join(f"{f.main_process:>16.2f}" for f in floors))
    lines.append(
        f"{f'  ceiling, x DictReader (>= {PARALLEL_TARGET:.1f})':<34}"
        + "".join(f"{f.parallel_ceiling:>16.2f}" for f in floors)
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000, help="rows exported (the first page is timed)")
    parser.add_argument("--objects", nargs="+", default=list(OBJECTS), choices=OBJECTS)
    parser.add_argument("--repeat", type=int, default=3, help="timings per stage; the best counts")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    floors = []
    for object_name in args.objects:
        with tempfile.TemporaryDirectory(prefix="bench-floor-") as work:
            page_gz, plan = first_page(object_name, args.rows, Path(work))
        floors.append(measure(object_name, page_gz, plan, args.repeat))
    print(f"floor under a CDK connector, one result page ({', '.join(f'{f.rows:,} rows' for f in floors)}):")
    print(report(floors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
