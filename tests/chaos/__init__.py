"""The fault matrix ("chaos") of issue 7: the capture under each fault Salesforce can throw at
it, restarted the ways Flow restarts it, judged by what ends up in the collections.

A cell is one scenario (faults.py: failed jobs, 503s, resets mid-page with and without gzip,
token death, REQUEST_LIMIT_EXCEEDED for a while, results expiring between pages, a 5,000-row
burst in one second, a late commit inside the lag, and all of them at once) under one
restart pattern (restarts.py: none, after every checkpoint, at random moments every 1-3 s,
during a backoff). Each cell gets a fresh emulator and runs the connector as a process
through the flowctl stand-in, one session after another with the state carried over, until
the capture is complete (capture.py): every backfill done, every delta cursor past the
changes the cell made once the backfills had started, and a snapshot pass completed after
the snapshot object's change (changes.py). Then it compares every bound object's collection
with the emulator's truth and measures jobs, slices, re-submissions and re-exported rows
against the budgets (measure.py). Every figure comes from the emulator's counters, so the
matrix judges any connector that speaks the protocol, whatever state layout it keeps (it
reads only the CDK's `backfill`, `inc.cursor` and `snapshot.updated_at`, plus any
`"phase": "backing_off"` for the backoff pattern).

    python -m tests.chaos [--accounts N] [--cells PATTERN] [--seed S]
    make chaos                      # the whole matrix on ~200k Accounts

tests/test_chaos.py runs a handful of cells on a small org inside the suite.
"""

from .measure import CellReport
from .runner import CELLS, Caps, Cell, OrgSize, cell_named, discover_catalog, format_table, run_cell, select_cells

__all__ = ["CELLS", "Caps", "Cell", "CellReport", "OrgSize", "cell_named", "discover_catalog", "format_table",
           "run_cell", "select_cells"]
