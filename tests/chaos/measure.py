"""What a cell measured, from the emulator's counters and the capture, and its verdict.

Definitions (every figure comes from what the emulator served, not from what the connector
says it did):

- **sessions**: connector processes; **restarts** = sessions - 1, whatever ended each one.
- **jobs created**: Bulk jobs Salesforce accepted (`job_create` answered 200); **jobs spent** are
  those of them that did not end Failed or Aborted and did not expire: the jobs the connector chose
  to spend (Salesforce's failures and losses are the faults' doing, and each is re-submitted).
- **slices needed**: the Bulk jobs a capture could not have done without. A job is *read to
  the end* when its last result page was delivered whole, or when it completed with no rows.
  For an incremental object, each distinct (operation, SOQL) with a job read to the end is
  one slice (a split slice is two new SOQLs, a delta window through Bulk one each); for the
  snapshot object every job read to the end is one (each is a pass).
- **duplicate submissions**: jobs whose (operation, SOQL) an earlier job already had. Each
  is *justified* by the latest such earlier job when that job ended Failed or Aborted, was
  made to disappear (expired), or was *killed before recorded* (no committed state
  mentions its id: a restart resumes from committed state only, so a job whose checkpoint
  the kill cut off is unknowable to it, however far the killed process got with it; a
  connector that kept jobs only in memory is caught by the jobs budget instead). A snapshot job is always a pass of its own: the CDK keeps
  no state for a snapshot to resume a job from, so an interrupted pass is simply lost (its
  rows count as re-exported, its job against the job budget). Any other is unjustified.
- **rows re-exported**: Bulk rows the emulator delivered beyond what one clean pass needs.
  For incremental objects, rows in whole result pages that an earlier whole page (of any
  job) had already delivered in the same version (`Counters.rows_served_again`: a row
  changed since counts anew). For the snapshot object, rows in whole pages of jobs never
  read to the end, plus pages of a pass fetched more than once. REST pages are not
  counted. A page cut off by a reset is not delivered, so the fetch that repairs it is
  not a re-export.
- **page**: `Knobs.max_page_rows` rows, the most a result page holds (the connector asks for
  50,000 a page; chaos orgs cap pages below that).
- **pages re-fetched**: result requests for a (job, locator) asked for before, whatever the
  reason (a reset, a restart).

Budgets (every one must hold for a PASS): the capture completes within the cell's caps;
every bound object's collection equals the emulator's truth, field by field; jobs spent
<= 2 x slices needed; no unjustified duplicate submission; for every object, rows re-exported
<= restarts x page (bindings read their pages concurrently, so a restart can cut one page of
each short).
"""

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from tests.emulator import Counters

# Jobs created may be at most this many times the slices needed.
JOBS_PER_SLICE = 2
MISMATCH_EXAMPLES = 3


@dataclass
class JobUsage:
    jobs_created: int
    slices_needed: int
    duplicates: int
    unjustified: list[str]  # one line per unjustified duplicate
    rows_re_exported: int
    most_re_exported: tuple[str, int]  # the object with the most rows re-exported, and how many
    pages_refetched: int
    jobs_spent: int
    by_object: dict[str, tuple[int, int]]  # object -> (jobs created, slices needed)

    def busiest(self, count: int = 3) -> str:
        """The objects with the most jobs, as `Object created/needed`."""
        ranked = sorted(self.by_object.items(), key=lambda item: -item[1][0])[:count]
        return ", ".join(f"{obj} {created}/{needed}" for obj, (created, needed) in ranked)


def job_usage(counters: Counters, snapshots: Collection[str], recorded: Collection[str]) -> JobUsage:
    """Jobs, slices, duplicates and re-exported rows, as the module docstring defines them."""
    jobs = counters.jobs_created
    ended = counters.jobs_ended
    expired = set(counters.jobs_expired)
    pages = counters.pages_served
    locators = counters.locators_fetched
    read_to_end = {page.job_id for page in pages if page.last} | {
        job_id for job_id, end in ended.items() if end.state == "JobComplete" and end.rows == 0}

    created: Counter[str] = Counter(job.object for job in jobs)
    needed: Counter[str] = Counter()
    sliced: set[tuple[str, str]] = set()
    latest: dict[tuple[str, str], str] = {}  # (operation, SOQL) -> the latest job id
    duplicates = 0
    unjustified: list[str] = []
    for job in jobs:
        soql = (job.operation, job.query)
        snapshot = job.object in snapshots
        if job.job_id in read_to_end and (snapshot or soql not in sliced):
            needed[job.object] += 1
            sliced.add(soql)
        earlier = latest.get(soql)
        latest[soql] = job.job_id
        if earlier is None:
            continue
        duplicates += 1
        end = ended.get(earlier)
        if end is not None and end.state in ("Failed", "Aborted"):
            continue
        if earlier in expired or snapshot:
            continue  # a snapshot job is a pass of its own (the CDK gives a snapshot no state to resume it from)
        if earlier not in recorded:
            continue  # killed before recorded
        state = end.state if end is not None else "never completed"
        unjustified.append(f"{job.job_id} re-submitted {job.object} SOQL of {earlier} ({state}"
                           f"{', read to the end' if earlier in read_to_end else ''}): {job.query[-90:]}")

    again: Counter[str] = Counter(
        {obj: rows for obj, rows in counters.rows_served_again.items() if obj not in snapshots})
    object_of = {job.job_id: job.object for job in jobs}
    seen_pages: set[tuple[str, str | None]] = set()
    for page in pages:
        if object_of.get(page.job_id) not in snapshots:
            continue
        if page.job_id not in read_to_end or (page.job_id, page.locator) in seen_pages:
            again[object_of[page.job_id]] += page.rows
        seen_pages.add((page.job_id, page.locator))

    refetched = sum(len(fetched) - len(set(fetched)) for fetched in locators.values())
    by_object = {obj: (created[obj], needed[obj]) for obj in created}
    spent = sum(1 for job in jobs if job.job_id not in expired
                and (ended.get(job.job_id) is None or ended[job.job_id].state not in ("Failed", "Aborted")))
    most = again.most_common(1)[0] if again else ("", 0)
    return JobUsage(len(jobs), sum(needed.values()), duplicates, unjustified, sum(again.values()), most, refetched,
                    spent, by_object)


def compare(captured: Mapping[str, bytes], truth: Mapping[str, bytes]) -> str | None:
    """None when the collection equals the truth; otherwise what differs, with a few Ids."""
    missing = sorted(truth.keys() - captured.keys())
    extra = sorted(captured.keys() - truth.keys())
    different = sorted(key for key in truth.keys() & captured.keys() if truth[key] != captured[key])
    if not (missing or extra or different):
        return None
    parts = [f"{len(ids)} {what} (e.g. {', '.join(ids[:MISMATCH_EXAMPLES])})"
             for what, ids in (("missing", missing), ("extra", extra), ("with other values", different)) if ids]
    return "; ".join(parts)


@dataclass
class CellReport:
    """One cell's figures and verdict. `failures` lists every budget that did not hold."""

    cell: str
    sessions: int
    crashes: int  # sessions that ended with a connector error
    first_error: str | None
    usage: JobUsage
    page_rows: int
    seconds: float
    complete: bool
    mismatches: dict[str, str]  # object -> what differs
    sealed: bool = False  # stopped early by Caps.fail_fast: an unjustified re-submission
    failures: list[str] = field(default_factory=list)

    @property
    def restarts(self) -> int:
        return max(0, self.sessions - 1)

    @property
    def rows_budget(self) -> int:
        return self.restarts * self.page_rows

    @property
    def passed(self) -> bool:
        return not self.failures

    def judge(self) -> None:
        """Fill `failures` from the budgets (module docstring)."""
        usage = self.usage
        if self.sealed:
            self.failures.append(f"stopped after {self.sessions} sessions, at the first unjustified re-submission")
        elif not self.complete:
            self.failures.append(f"did not finish in {self.sessions} sessions, {self.seconds:.0f} s")
        if self.complete or not self.sealed:  # an unfinished capture's collections differ anyway
            for obj, difference in sorted(self.mismatches.items()):
                self.failures.append(f"{obj}: {difference}")
        if usage.jobs_spent > JOBS_PER_SLICE * usage.slices_needed:
            self.failures.append(f"{usage.jobs_spent} jobs spent ({usage.jobs_created} created) for "
                                 f"{usage.slices_needed} slices needed (created/needed: {usage.busiest()})")
        if usage.unjustified:
            self.failures.append(f"{len(usage.unjustified)} unjustified re-submissions, first: {usage.unjustified[0]}")
        worst, rows = usage.most_re_exported
        if rows > self.rows_budget:
            self.failures.append(f"{rows} {worst} rows re-exported, budget {self.rows_budget} per object "
                                 f"({self.restarts} restarts x {self.page_rows})")


ERROR_LEVELS = frozenset({"ERROR", "FATAL", "CRITICAL"})


def error_of(logs: list[dict[str, object]]) -> str | None:
    """The last error a connector logged, shortened, or None."""
    for record in reversed(logs):
        if str(record.get("level", "")).upper() in ERROR_LEVELS:
            return str(record.get("msg", ""))[:200]
    return None
