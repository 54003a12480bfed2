"""What the capture tests share: a catalog discovered from the emulator, and the emulator's
rows as the documents a complete capture must hold."""

import dataclasses
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from logging import Logger
from pathlib import Path
from typing import Any

from estuary_cdk.http import HTTPMixin

from source_bulk_export.auth import SalesforceSession
from source_bulk_export.jobs import BulkJobs, Operation
from source_bulk_export.models import JobInfo, JobState, OAuthCredentials
from source_bulk_export.waits import Waits
from tests import flow_harness
from tests.emulator import EmulatorServer
from tests.emulator.counters import JobRecord

REPO = Path(__file__).resolve().parent.parent
PREFIX = "acmeCo/"

CATALOG = """\
captures:
  acmeCo/source-bulk-export:
    endpoint:
      local:
        command: [python, -m, source_bulk_export]
        config: {}
    bindings: []
"""

# Waits (job polls, backoffs) in the connector process are multiplied by this, so a test that
# makes a job fail twice does not sit through real minutes of backoff. The schedule itself is
# pinned by the time-frozen tests in test_jobs.py.
TEST_ENV = {"SOURCE_BULK_EXPORT_WAIT_SCALE": "0.001"}


# The Id-only exports deletions.py takes for its baselines and reconciliations.
ID_EXPORT = re.compile(r"SELECT Id(, CreatedDate)? FROM \w+( WHERE CreatedDate < \S+)?")


def row_jobs(emulator: EmulatorServer) -> list[JobRecord]:
    """The Bulk jobs that exported rows (backfill slices, delta windows, snapshots): every job created
    but the Id-only exports of deletions.py."""
    return [job for job in emulator.counters.jobs_created if not ID_EXPORT.fullmatch(job.query)]


def emulator_config(emulator: EmulatorServer, **advanced: Any) -> dict[str, Any]:
    """The endpoint config that signs in to `emulator`, with `advanced` settings."""
    credentials = emulator.knobs.credentials
    config: dict[str, Any] = {
        "credentials": {
            "credentials_title": "OAuth",
            "client_id": credentials.client_id,
            "client_secret": credentials.client_secret,
            "refresh_token": credentials.refresh_token,
        },
        "login_url": emulator.url,
    }
    if advanced:
        config["advanced"] = advanced
    return config


class _Http(HTTPMixin):
    """The CDK's HTTP session on its own, as a connector process would hold it."""


@asynccontextmanager
async def salesforce_session(emulator: EmulatorServer, log: Logger) -> AsyncIterator[SalesforceSession]:
    """A connector-side session signed in to `emulator`, for tests that call the connector's
    modules in-process."""
    http = _Http()
    await http._mixin_enter(log)
    http.rate_limiter.delay = 0  # the CDK's 1 s start-up pacing is pointless against localhost
    creds = emulator.knobs.credentials
    credentials = OAuthCredentials(
        client_id=creds.client_id, client_secret=creds.client_secret, refresh_token=creds.refresh_token
    )
    try:
        yield SalesforceSession(http, credentials, emulator.url, "62.0")
    finally:
        await http._mixin_exit(log)


async def no_sleep(seconds: float) -> None:
    """The emulator's jobs complete on their next poll: waiting for real would only slow tests."""


def bulk_jobs(session: SalesforceSession, max_jobs: int = 2, **kw: Any) -> BulkJobs:
    """A BulkJobs that polls without waiting."""
    return BulkJobs(session, max_jobs, Waits(sleep=no_sleep), **kw)


async def completed_job(bulk: BulkJobs, log: Logger, soql: str, object_name: str,
                        operation: Operation = "query") -> JobInfo:
    """Submit `soql` and wait for its job, which must complete (tests that need retries use exports.py)."""
    created = await bulk.submit(log, soql, operation, object_name)
    job = await bulk.wait(log, created.id, object_name, created=datetime.now(tz=UTC))
    assert job is not None and job.state == JobState.JOB_COMPLETE, job
    return job


def discovered_source(tmp_path: Path, emulator: EmulatorServer, objects: set[str] | None = None,
                      **advanced: Any) -> flow_harness.FlowSource:
    """A catalog in `tmp_path` that discover filled in (optionally narrowed to `objects`)."""
    catalog = tmp_path / "test.flow.yaml"
    catalog.write_text(CATALOG)
    config = emulator_config(emulator, **advanced)
    source = flow_harness.load_source(catalog, config=config, env=TEST_ENV, cwd=REPO)
    bindings = flow_harness.discover(source)
    if objects is not None:
        bindings = [b for b in bindings if b["recommendedName"] in objects]
    flow_harness.write_discovered(source, bindings)
    return flow_harness.load_source(catalog, config=config, env=TEST_ENV, cwd=REPO)


# How often the connector is started again after it ended itself cleanly.
CLEAN_EXIT_RESTARTS = 2


def preview_restarting(source: flow_harness.FlowSource, session: flow_harness.Session, *,
                       initial_state: Mapping[str, Any] | None = None,
                       on_restart: Callable[[], None] | None = None, **kw: Any) -> flow_harness.PreviewResult:
    """`session`, from `initial_state`, started again (CLEAN_EXIT_RESTARTS times at most) whenever the
    connector ends itself cleanly, as the Flow runtime does; the result holds every session.

    The CDK ends a clean process when a scheduled re-backfill falls due while the capture runs (a
    binding of an object with formula fields finishing its backfill after 23:55 UTC,
    FORMULA_REFRESH_SCHEDULE): the runtime starts it again, the object is backfilled anew and the
    other bindings resume from their checkpoints. A test that happens to run across 23:55 sees the
    same.
    """
    sessions: list[flow_harness.SessionResult] = []
    state = dict(initial_state or {})
    for _ in range(1 + CLEAN_EXIT_RESTARTS):
        result = flow_harness.preview(source, sessions=[session], initial_state=state, **kw)
        sessions += result.sessions
        state = result.state
        if (sessions[-1].stop_reason, sessions[-1].exit_code) != ("exited", 0):
            break
        if on_restart is not None:
            on_restart()
    return dataclasses.replace(result, sessions=sessions)


def preview_until(source: flow_harness.FlowSource, until: Callable[[flow_harness.Progress], bool],
                  **kw: Any) -> flow_harness.PreviewResult:
    """The connector until `until` holds after a checkpoint (see `preview_restarting`); a session that
    ends any other way fails, with its last logs."""
    kw.setdefault("delay", 0.2)
    result = preview_restarting(source, flow_harness.Session(transactions=-1, until=until), **kw)
    last = result.sessions[-1]
    assert last.stop_reason == "until", (
        f"session {len(result.sessions)} stopped ({last.stop_reason}, exit {last.exit_code}) before it was "
        f"done; last logs: {last.logs[-20:]}")
    return result


def object_logs(result: flow_harness.PreviewResult, obj: str) -> list[str]:
    """The connector's log lines that name `obj`, for a failure message."""
    return [f"{log.get('msg')} {log.get('fields')}" for session in result.sessions for log in session.logs
            if obj in str(log.get("fields"))]


def without_meta(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "_meta"}


def captured_rows(result: flow_harness.PreviewResult, obj: str) -> dict[str, dict[str, Any]]:
    """The collection of `obj` reduced by Id (deletions applied), `_meta` left out."""
    docs: dict[str, dict[str, Any]] = {}
    for doc in result.documents_of(PREFIX + obj):
        if doc.get("_meta", {}).get("op") == "d" and "Id" in doc:
            docs.pop(doc["Id"], None)
        elif "Id" in doc:
            docs[doc["Id"]] = without_meta(doc)
    return docs


def expected_rows(emulator: EmulatorServer, obj: str) -> dict[str, dict[str, Any]]:
    """The emulator's live rows of `obj` as the documents the connector must capture."""
    return {doc["Id"]: dict(doc) for doc in emulator.org.expected_documents(obj)}


def snapshot_rows(result: flow_harness.PreviewResult, obj: str) -> dict[str, dict[str, Any]]:
    """A snapshot binding's documents of its last complete pass, by Id."""
    docs = [d for d in result.documents_of(PREFIX + obj) if d.get("_meta", {}).get("op") != "d"]
    return {doc["Id"]: without_meta(doc) for doc in docs}


def rebound_source(source: flow_harness.FlowSource, emulator: EmulatorServer | None = None, *,
                   objects: set[str] | None = None, resource: Mapping[str, Any] | None = None,
                   **advanced: Any) -> flow_harness.FlowSource:
    """`source` with its bindings narrowed to `objects`, `resource` merged into each binding's
    resource config (e.g. `{"interval": "PT1S"}`), and, given an emulator, its endpoint config
    pointed at it with `advanced` settings. The catalog files are not rewritten, so one discovery
    serves every emulator over the same seeded schema."""
    bindings = tuple(
        dataclasses.replace(b, resource={**b.resource, **(resource or {})})
        for b in source.bindings
        if objects is None or b.target.removeprefix(PREFIX) in objects
    )
    changes: dict[str, Any] = {"bindings": bindings}
    if emulator is not None:
        changes["config"] = emulator_config(emulator, **advanced)
    return dataclasses.replace(source, **changes)
