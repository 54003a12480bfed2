"""Measure how fast the emulator serves Bulk results, and its peak memory.

    python -m tests.emulator.bench --rows 10000000 [--read 2000000] [--max-records 50000]

Starts ``python -m tests.emulator`` as a subprocess with ``--rows`` rows per large object,
exports ``BenchRecord__c`` (20 mixed-type fields) through one Bulk job, reads ``--read``
rows of it (default: all) page by page with gzip, as a connector would (aiohttp, which
decompresses), and reports rows/s of result serving and the emulator's peak RSS (VmHWM).
The client only counts bytes, so the figure is the emulator's serving rate, not a
connector's parsing rate.

These machines are shared and their speed varies several-fold with load, so the report
also gives a baseline taken at the same moment: ``csv.DictReader`` rows/s over the first
page's bytes, in the client process (design.md's baseline, ~190k rows/s on a quiet
machine). Compare the two, not absolute figures across runs.
"""

import argparse
import asyncio
import csv
import io
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

FIELDS = (
    "Id, Name, IsDeleted, CreatedDate, CreatedById, LastModifiedDate, LastModifiedById, SystemModstamp, "
    "OwnerId, Account__c, Amount__c, Quantity__c, Discount__c, Active__c, Region__c, Close_Date__c, "
    "Last_Seen__c, Email__c, Code__c, Notes__c"
)
VERSION = "62.0"


@dataclass
class Export:
    rows: int
    csv_bytes: int  # decompressed
    seconds: float  # spent fetching result pages
    first_page: bytes


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def dict_reader_rate(page: bytes) -> float:
    """Rows/s of csv.DictReader over one CSV page (header included)."""
    started = time.perf_counter()
    rows = sum(1 for _ in csv.DictReader(io.StringIO(page.decode(), newline="")))
    return rows / (time.perf_counter() - started)


async def export(url: str, credentials: dict[str, str], read: int | None, max_records: int) -> Export:
    async with aiohttp.ClientSession() as session:
        form = {"grant_type": "refresh_token"} | {
            key: credentials[key] for key in ("client_id", "client_secret", "refresh_token")
        }
        async with session.post(f"{url}/services/oauth2/token", data=form) as response:
            token = (await response.json())["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        jobs = f"{url}/services/data/v{VERSION}/jobs/query"
        soql = f"SELECT {FIELDS} FROM BenchRecord__c" + (f" LIMIT {read}" if read else "")
        body = {"operation": "query", "query": soql}
        async with session.post(jobs, json=body, headers=headers) as response:
            job_id = (await response.json())["id"]
        while True:
            async with session.get(f"{jobs}/{job_id}", headers=headers) as response:
                if (await response.json())["state"] == "JobComplete":
                    break

        result = Export(0, 0, 0.0, b"")
        locator = None
        started = time.perf_counter()
        while locator != "null":
            params = {"maxRecords": str(max_records)} | ({"locator": locator} if locator else {})
            async with session.get(
                f"{jobs}/{job_id}/results", params=params, headers=headers | {"Accept-Encoding": "gzip"}
            ) as response:
                assert response.status == 200, await response.text()
                async for chunk in response.content.iter_chunked(1 << 16):
                    result.csv_bytes += len(chunk)
                    if result.rows == 0:
                        result.first_page += chunk
                result.rows += int(response.headers["Sforce-NumberOfRecords"])
                locator = response.headers["Sforce-Locator"]
        result.seconds = time.perf_counter() - started
        return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--read", type=int, default=None, help="rows to export (default: all)")
    parser.add_argument("--max-records", type=int, default=50_000)
    args = parser.parse_args()

    emulator = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator", "--rows", str(args.rows), "--json"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert emulator.stdout is not None
        started = json.loads(emulator.stdout.readline())
        result = asyncio.run(export(started["url"], started, args.read, args.max_records))
        report = {
            "object_rows": args.rows,
            "rows_read": result.rows,
            "seconds": round(result.seconds, 2),
            "rows_per_second": round(result.rows / result.seconds),
            "csv_mb": round(result.csv_bytes / 1e6, 1),
            "emulator_peak_rss_mb": round(peak_rss_mb(emulator.pid), 1),
            "baseline_dict_reader_rows_per_second": round(dict_reader_rate(result.first_page)),
        }
        print(json.dumps(report))
    finally:
        emulator.terminate()
        emulator.wait()


if __name__ == "__main__":
    main()
