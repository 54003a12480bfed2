"""The two references the benchmark compares the connector with, measured on the same export.

- the emulator's serving rate: a plain client downloads every result page of one Bulk job
  (gzip, as the connector asks for them) and counts rows from `Sforce-NumberOfRecords`; the
  ceiling for any client of this emulator on this machine;
- the baseline: `csv.DictReader` over the same pages, in one process (design.md's yardstick).

Also the emulator itself, run standalone (`python -m tests.emulator`) as its own process.
"""

import csv
import gzip
import http.client
import io
import json
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from source_bulk_export.api import backfill_soql
from source_bulk_export.fields import plan_object
from source_bulk_export.models import DEFAULT_API_VERSION, SObjectDescribe
from source_bulk_export.states import Slice
from tests.procstat import OtherLoad

ROOT = Path(__file__).resolve().parent.parent
OBJECT = "BenchRecord__c"  # the emulator's benchmark object: 20 mixed-type fields
WIDE_OBJECT = "WideRecord__c"  # the wide one: 30 fields, three of them long text (seeded on request)
OBJECTS = (OBJECT, WIDE_OBJECT)
PAGE_ROWS = 50_000  # maxRecords per result page, the connector's MAX_RECORDS
READ_SIZE = 1 << 20


class BenchError(Exception):
    """The benchmark could not produce a figure (and says why)."""


@dataclass
class EmulatorRun:
    """Serving all result pages of one job to a client that only counts and stores bytes."""

    rows: int
    pages: int
    seconds: float
    gzip_mb: float
    rows_per_s: float
    other_cores: float = 0.0  # cores other processes used meanwhile (procstat.OtherLoad)


@dataclass
class BaselineRun:
    """`csv.DictReader` over the decompressed pages of the same job."""

    rows: int
    seconds: float
    csv_mb: float
    rows_per_s: float
    other_cores: float = 0.0  # cores other processes used meanwhile (procstat.OtherLoad)


@dataclass
class Emulator:
    url: str
    credentials: dict[str, str]
    process: subprocess.Popen[str]


@contextmanager
def emulator(rows: int, log_path: Path, optional_objects: tuple[str, ...] = (),
             job_seconds: float = 0.0) -> Iterator[Emulator]:
    """`python -m tests.emulator --rows N` on a free port, stopped (SIGTERM) on exit; with the
    optional objects (WIDE_OBJECT) named too, and Bulk jobs that take `job_seconds` to complete."""
    optional = [arg for name in optional_objects for arg in ("--optional-object", name)]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.emulator", "--rows", str(rows), *optional,
             "--in-progress-seconds", str(job_seconds), "--json"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line:
                raise BenchError(f"the emulator exited before serving; see {log_path}")
            started = json.loads(line)
            yield Emulator(started["url"], started, process)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class ExportClient:
    """A plain, blocking HTTP/1.1 client on one keep-alive connection: just enough Salesforce
    (token, describe, Bulk query job, result pages) to export an object without the connector."""

    def __init__(self, url: str, credentials: dict[str, str], api_version: str = DEFAULT_API_VERSION) -> None:
        parsed = urllib.parse.urlsplit(url)
        self._token = ""
        self._connection = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=300)
        self._data = f"/services/data/v{api_version}"
        form = urllib.parse.urlencode(
            {"grant_type": "refresh_token"}
            | {k: credentials[k] for k in ("client_id", "client_secret", "refresh_token")}
        )
        token = self._json("POST", "/services/oauth2/token", form, "application/x-www-form-urlencoded")
        self._token = token["access_token"]

    def close(self) -> None:
        self._connection.close()

    def _request(
        self,
        method: str,
        path: str,
        body: str | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        sent = dict(headers or {})
        if self._token:
            sent["Authorization"] = f"Bearer {self._token}"
        if content_type:
            sent["Content-Type"] = content_type
        self._connection.request(method, path, body=body, headers=sent)
        return self._connection.getresponse()

    def _json(self, method: str, path: str, body: str | None = None, content_type: str | None = None) -> Any:
        response = self._request(method, path, body, content_type)
        data = response.read()
        if response.status >= 300:
            raise BenchError(f"{method} {path}: HTTP {response.status}: {data[:500]!r}")
        return json.loads(data)

    def describe(self, name: str) -> dict[str, Any]:
        described: dict[str, Any] = self._json("GET", f"{self._data}/sobjects/{name}/describe/")
        return described

    def run_job(self, soql: str) -> tuple[str, int]:
        """Create a Bulk query job, poll until it completes; returns (job id, rows)."""
        body = json.dumps({"operation": "query", "query": soql})
        job = self._json("POST", f"{self._data}/jobs/query", body, "application/json")
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            info = self._json("GET", f"{self._data}/jobs/query/{job['id']}")
            if info["state"] == "JobComplete":
                return job["id"], int(info["numberRecordsProcessed"])
            if info["state"] in ("Failed", "Aborted"):
                raise BenchError(f"job {job['id']} ended {info['state']}: {info.get('errorMessage')}")
            time.sleep(0.05)
        raise BenchError(f"job {job['id']} did not complete")

    def download(self, job_id: str, directory: Path) -> EmulatorRun:
        """Every result page, gzip-compressed, into `directory` (one file a page), timed."""
        directory.mkdir(parents=True)
        rows = pages = size = 0
        locator: str | None = None
        started = time.perf_counter()
        while True:
            query = {"maxRecords": str(PAGE_ROWS)} | ({"locator": locator} if locator else {})
            path = f"{self._data}/jobs/query/{job_id}/results?{urllib.parse.urlencode(query)}"
            response = self._request("GET", path, headers={"Accept": "text/csv", "Accept-Encoding": "gzip"})
            if response.status != 200:
                raise BenchError(f"results page {pages}: HTTP {response.status}: {response.read()[:500]!r}")
            suffix = ".csv.gz" if response.getheader("Content-Encoding") == "gzip" else ".csv"
            with (directory / f"page-{pages:05d}{suffix}").open("wb") as out:
                while chunk := response.read(READ_SIZE):
                    out.write(chunk)
                    size += len(chunk)
            rows += int(response.getheader("Sforce-NumberOfRecords") or 0)
            pages += 1
            locator = response.getheader("Sforce-Locator")
            if not locator or locator == "null":
                break
        seconds = time.perf_counter() - started
        return EmulatorRun(rows, pages, round(seconds, 2), round(size / 1e6, 1), round(rows / seconds))


def bench_soql(client: ExportClient, rows: int, object_name: str = OBJECT) -> str:
    """The connector's own backfill SOQL for the whole object as one slice: same columns, same
    WHERE/ORDER BY shape, cutoff now."""
    plan = plan_object(SObjectDescribe.model_validate(client.describe(object_name)))
    cutoff = datetime.now(UTC).replace(microsecond=0)
    return backfill_soql(plan, cutoff, None, Slice(None, max(rows, 1)))


def measure_emulator(emu: Emulator, rows: int, pages_dir: Path, object_name: str = OBJECT) -> EmulatorRun:
    client = ExportClient(emu.url, emu.credentials)
    try:
        job_id, total = client.run_job(bench_soql(client, rows, object_name))
        if total != rows:
            raise BenchError(f"the export job has {total:,} rows, expected {rows:,}")
        load = OtherLoad(emu.process.pid)
        served = client.download(job_id, pages_dir)
        served.other_cores = load.cores()
    finally:
        client.close()
    if served.rows != rows:
        raise BenchError(f"the result pages announced {served.rows:,} rows, expected {rows:,}")
    return served


def measure_baseline(pages_dir: Path) -> BaselineRun:
    """`csv.DictReader` over each page in turn (each page has its own header row, as the
    connector sees them). Only decoding and parsing are timed."""
    rows = size = 0
    seconds = 0.0
    load = OtherLoad()
    for page in sorted(pages_dir.iterdir()):
        data = page.read_bytes()
        if page.suffix == ".gz":
            data = gzip.decompress(data)
        size += len(data)
        started = time.perf_counter()
        for _ in csv.DictReader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="")):
            rows += 1
        seconds += time.perf_counter() - started
        del data
    return BaselineRun(rows, round(seconds, 2), round(size / 1e6, 1), round(rows / seconds), load.cores())
