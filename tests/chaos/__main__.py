"""`python -m tests.chaos [--accounts N] [--cells PATTERN] [--seed S]`: run the fault matrix on
a chaos org and print its table; exit 1 if a cell fails (see tests/chaos/__init__.py)."""

import argparse
import sys
import tempfile
import time
from pathlib import Path

from .runner import Caps, OrgSize, discover_catalog, format_table, run_cell, select_cells

# `make chaos`: issue 7's org, about 200k Accounts (other objects small) in 5,000-row pages.
DEFAULT_ACCOUNTS = 200_000
OTHER_ROWS = 500
PAGE_ROWS = 5_000
# Four Account slices, so a restart can land between slices as well as between pages.
SLICE_ROWS = 50_000
# A clean capture of that org takes ~15 s in one session; a cell that has not finished in 10x
# that is not going to.
CAPS = Caps(sessions=200, seconds=150.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--accounts", type=int, default=DEFAULT_ACCOUNTS, help="Account rows in the chaos org")
    parser.add_argument("--cells", default="*", help="comma-separated globs over scenario/restart, e.g. 'everything/*'")
    parser.add_argument("--seed", type=int, default=7, help="seeds the org, every fault draw and every restart moment")
    args = parser.parse_args(argv)

    cells = select_cells(args.cells)
    if not cells:
        parser.error(f"no cell matches {args.cells!r}")
    size = OrgSize(accounts=args.accounts, rows=OTHER_ROWS, page_rows=PAGE_ROWS, slice_rows=SLICE_ROWS)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chaos-") as workdir:
        catalog = discover_catalog(Path(workdir))
        reports = []
        for cell in cells:
            report = run_cell(catalog, cell, size, CAPS, args.seed)
            reports.append(report)
            verdict = "PASS" if report.passed else "FAIL"
            print(f"{cell.name}: {verdict} ({report.sessions} sessions, {report.seconds:.0f} s)", flush=True)
    print()
    print(format_table(reports))
    failed = sum(not r.passed for r in reports)
    print(f"\n{len(reports) - failed} passed, {failed} failed in {time.monotonic() - started:.0f} s "
          f"({args.accounts} Accounts, seed {args.seed})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
