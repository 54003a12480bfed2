"""One cell's capture across its sessions: the collections it built, the state it carries,
the org changes it triggers, and when it is complete.

The collections are kept as fingerprints, not documents (a chaos org holds hundreds of
thousands of rows): each document, `_meta` left out, as canonical JSON (keys sorted, a
float with no fraction written as an int, as Python's `==` would compare them), hashed.
Two fingerprints are equal exactly when the documents are equal field by field.
"""

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from tests import flow_harness as fh
from tests.emulator import EmulatorServer, expected_document

from .changes import change_snapshot_object, make_changes
from .faults import Scenario

PREFIX = "acmeCo/"


def fingerprint(document: Mapping[str, Any]) -> bytes:
    """A document's fields, `_meta` left out, as a 16-byte digest (see the module docstring)."""
    fields = {key: _number(value) for key, value in document.items() if key != "_meta"}
    return hashlib.blake2b(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()


def _number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def truth(emu: EmulatorServer, obj: str) -> dict[str, bytes]:
    """The emulator's live rows of `obj` as the documents a complete capture holds, by Id."""
    spec = emu.org.spec(obj)
    return {str(row["Id"]): fingerprint(expected_document(spec, row)) for row in emu.org.iter_rows(obj)}


def _is_deletion(document: Mapping[str, Any]) -> bool:
    return (document.get("_meta") or {}).get("op") == "d"


def _cursor(inc: object) -> datetime | None:
    """A delta cursor from a binding's `inc` state (the earliest, if it has subtasks)."""
    if not isinstance(inc, Mapping):
        return None
    if isinstance(inc.get("cursor"), str):
        return datetime.fromisoformat(inc["cursor"])
    cursors = [_cursor(sub) for sub in inc.values()]
    known = [c for c in cursors if c is not None]
    return min(known) if known and len(known) == len(cursors) else None


def _strings(value: object) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


class Capture:
    """What the sessions of one cell have committed so far, and what the cell did to the org.

    `on_document` and `on_checkpoint` are the preview callbacks; `after_session` takes each
    session's result. Creating it changes the snapshot object; the first checkpoint of the
    capture makes the other changes (changes.py); the first checkpoint with documents runs
    the scenario's `on_data` faults.
    """

    def __init__(self, emu: EmulatorServer, scenario: Scenario, incremental: Iterable[str],
                 snapshots: Iterable[str]) -> None:
        self._emu = emu
        self._scenario = scenario
        self.incremental = tuple(incremental)
        self.snapshots = tuple(snapshots)
        self.state: dict[str, Any] = {}
        self.snapshots_changed_at = max((change_snapshot_object(emu.org, obj) for obj in self.snapshots),
                                        default=datetime.now(tz=UTC))
        self.last_stamp: datetime | None = None  # of the changes, once made
        self._data_seen = False
        # Incremental collections by Id; snapshot collections by row_id, as (Id, fingerprint).
        self._by_id: dict[str, dict[str, bytes]] = {obj: {} for obj in self.incremental}
        self._by_row: dict[str, dict[int, tuple[str, bytes]]] = {obj: {} for obj in self.snapshots}
        self.recorded: set[str] = set()
        """Every string some committed checkpoint wrote into the state (Bulk job ids among them)."""

    # -- preview callbacks ------------------------------------------------------------------

    def on_document(self, collection: str, document: dict[str, Any]) -> None:
        obj = collection.removeprefix(PREFIX)
        if obj in self._by_id:
            by_id = self._by_id[obj]
            if _is_deletion(document):
                by_id.pop(document["Id"], None)
            else:
                by_id[document["Id"]] = fingerprint(document)
        else:
            row = document["_meta"]["row_id"]
            if _is_deletion(document):
                self._by_row[obj].pop(row, None)
            else:
                self._by_row[obj][row] = (document["Id"], fingerprint(document))

    def on_checkpoint(self, progress: fh.Progress) -> None:
        if self.last_stamp is None:
            self.last_stamp = make_changes(self._emu.org, self.incremental, burst=self._scenario.burst,
                                           late_commit=self._scenario.late_commit)
        if not self._data_seen and progress.checkpoint.document_count:
            self._data_seen = True
            self._scenario.on_data(self._emu)

    def done(self, progress: fh.Progress) -> bool:
        return self.complete(progress.state)

    def after_session(self, result: fh.PreviewResult) -> None:
        self.state = result.state
        for update in result.state_updates:
            self.recorded.update(_strings(update))

    # -- reading ----------------------------------------------------------------------------

    def complete(self, state: Mapping[str, Any]) -> bool:
        """Every incremental binding has finished its backfill and its delta cursor has reached
        the last change; every snapshot binding has completed a pass started after its change."""
        if self.last_stamp is None:
            return False
        bindings = state.get("bindingStateV1") or {}
        for obj in self.incremental:
            binding = bindings.get(fh.state_key([obj]))
            if not isinstance(binding, Mapping) or binding.get("backfill"):
                return False
            cursor = _cursor(binding.get("inc"))
            if cursor is None or cursor < self.last_stamp:
                return False
        for obj in self.snapshots:
            snapshot = (bindings.get(fh.state_key([obj])) or {}).get("snapshot") or {}
            updated_at = snapshot.get("updated_at") if isinstance(snapshot, Mapping) else None
            if not isinstance(updated_at, str) or datetime.fromisoformat(updated_at) <= self.snapshots_changed_at:
                return False
        return True

    def collection(self, obj: str) -> dict[str, bytes]:
        """The collection of `obj` as captured so far, by Id."""
        if obj in self._by_id:
            return dict(self._by_id[obj])
        return {record: print_ for record, print_ in self._by_row[obj].values()}
