"""What the tests of the delta stream and of deletions share: sessions that run until cursors pass
a moment, and ways to read cursors and documents out of harness results."""

from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from tests import flow_harness
from tests.capture_support import PREFIX, preview_until
from tests.emulator import Org

# The connector's resourcePathPointers (pinned by the spec snapshot): passing them saves a Spec
# process per preview.
POINTERS = ["/name"]

TIMESTAMP_FIELDS = {"SystemModstamp", "LastModifiedDate", "CreatedDate", "CloseDate", "LastActivityDate"}

INCREMENTAL = ("Account", "AccountHistory", "Attachment", "BenchRecord__c", "CaseStatus", "Contact", "Invoice__c",
               "Opportunity")

# A text field per object for updates, with a value that is hard to carry through JSON and CSV.
TEXT_FIELD = {"Account": "Name", "Attachment": "Name", "BenchRecord__c": "Name", "CaseStatus": "MasterLabel",
              "Contact": "LastName", "Invoice__c": "Notes__c", "Opportunity": "Name"}
TRICKY = 'Zürich, "HQ"\nline 2, 🚀 \'quoted\''

# Delta sessions poll each binding every second (the discovered default is five minutes, and the
# CDK sleeps `interval` between idle polls).
POLL = {"interval": "PT1S"}
# A first session with this interval never runs the delta stream: the CDK waits until the cursor
# is `interval` old, so the cursor stays at the cutoff while the backfill runs.
NO_POLL = {"interval": "PT1M"}

Until = Callable[[flow_harness.Progress], bool]


def run(source: flow_harness.FlowSource, until: Until, state: dict[str, Any] | None = None,
        **kw: Any) -> flow_harness.PreviewResult:
    """The connector from `state` until `until` holds after a checkpoint (one session, unless it ends
    itself cleanly: see `preview_until`)."""
    return preview_until(source, until, initial_state=state, timeout=60, resource_path_pointers=POINTERS, **kw)


def inc_cursor(state: dict[str, Any], obj: str) -> datetime | None:
    """The delta stream's LogCursor of `obj` in a state or a state update, if it has one."""
    inc = (((state.get("bindingStateV1") or {}).get(obj)) or {}).get("inc") or {}
    value = inc.get("cursor") if isinstance(inc, dict) else None
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def cursor_of(state: dict[str, Any], obj: str) -> datetime:
    cursor = inc_cursor(state, obj)
    assert cursor is not None, f"no delta cursor for {obj} in {state}"
    return cursor


def cursors_reach(objects: Iterable[str], moment: datetime) -> Until:
    """Backfills done and every binding's delta cursor at or past `moment`."""
    objects = tuple(objects)

    def until(progress: flow_harness.Progress) -> bool:
        if not flow_harness.backfills_complete(progress):
            return False
        return all((c := inc_cursor(dict(progress.state), obj)) is not None and c >= moment for obj in objects)

    return until


def combined(*results: flow_harness.PreviewResult) -> flow_harness.PreviewResult:
    """The sessions of several previews as one capture (documents in order, last state)."""
    return flow_harness.PreviewResult(capture=results[0].capture, collections=results[0].collections,
                                      sessions=[s for r in results for s in r.sessions], state=results[-1].state)


def ids_of(result: flow_harness.PreviewResult, obj: str) -> Counter[str]:
    return Counter(doc["Id"] for doc in result.documents_of(PREFIX + obj))


def now_second() -> datetime:
    return datetime.now(tz=UTC).replace(microsecond=0)


def is_deletion(doc: dict[str, Any]) -> bool:
    return (doc.get("_meta") or {}).get("op") == "d"


def rendered(org: Org, obj: str) -> dict[str, dict[str, Any]]:
    """The documents the emulator's rows of `obj` must become, deleted ones included, by Id."""
    return {str(doc["Id"]): dict(doc) for doc in org.expected_documents(obj, include_deleted=True)}


def live_ids(org: Org, obj: str) -> list[str]:
    """The Ids of the live rows of `obj`, in Id order."""
    return [str(row["Id"]) for row in org.live_rows(obj)]


