"""What a preview reports: each checkpoint, commit and session, the overall
PreviewResult, and the Progress that `until` and `on_checkpoint` see."""

from __future__ import annotations

import collections
import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .catalog import Collection
from .documents import _compose_patches, reduce_by_key


@dataclass(slots=True)
class Checkpoint:
    """One connector checkpoint and everything it committed.

    `documents` is empty in count-only mode; `counts` (documents per collection) is
    always filled. `updated` is the state patch as sent; `merge_patch` says whether
    it was a merge patch (true for every CDK checkpoint) or a replacement.
    `elapsed` is seconds since the session's `opened`.
    """

    session: int
    elapsed: float
    documents: list[tuple[str, Any]]
    counts: dict[str, int]
    sourced_schemas: list[tuple[str, dict[str, Any]]]
    updated: dict[str, Any]
    merge_patch: bool

    @property
    def document_count(self) -> int:
        return sum(self.counts.values())


@dataclass(slots=True)
class Commit:
    """One flowctl-style transaction: the checkpoints committed together."""

    session: int
    elapsed: float
    checkpoints: list[Checkpoint]

    @property
    def documents(self) -> list[tuple[str, Any]]:
        return [doc for checkpoint in self.checkpoints for doc in checkpoint.documents]

    @property
    def document_count(self) -> int:
        return sum(checkpoint.document_count for checkpoint in self.checkpoints)

    @property
    def state_update(self) -> dict[str, Any]:
        """The transaction's combined state update, as `--output-state` prints it.

        `mergePatch` is false if any checkpoint replaced the state. Composing merge
        patches is approximate where a patch deletes an object that a later patch
        re-creates: the result keeps both as one patch.
        """
        combined: Any = {}
        replaced = False
        for checkpoint in self.checkpoints:
            if checkpoint.merge_patch:
                combined = _compose_patches(combined, checkpoint.updated)
            else:
                combined, replaced = copy.deepcopy(checkpoint.updated), True
        return {"updated": combined, "mergePatch": not replaced}


@dataclass(slots=True)
class SessionResult:
    """One connector process of a preview.

    `stop_reason` is one of "transactions", "checkpoints", "until", "duration", "logged"
    (`stop_on_log`), "exited", or "error" for a session that raised (found in the error's
    `result`).
    `state` is the state after its last commit. `exit_code` is the process's return
    code: -9 when the harness killed it. `elapsed` runs from spawn to stop; commit
    and checkpoint times count from `opened`.
    `uncommitted_documents` counts documents read after the last checkpoint (dropped).
    """

    index: int
    initial_state: dict[str, Any]
    state: dict[str, Any]
    commits: list[Commit]
    stop_reason: str
    exit_code: int | None
    explicit_acknowledgements: bool
    uncommitted_documents: int
    stderr: list[str]
    logs: list[dict[str, Any]]
    elapsed: float


@dataclass(slots=True)
class PreviewResult:
    """Everything a preview committed, across sessions.

    `collections` maps each enabled binding's target to its Collection, in binding order.
    """

    capture: str
    collections: dict[str, Collection]
    sessions: list[SessionResult]
    state: dict[str, Any]

    @property
    def commits(self) -> list[Commit]:
        return [commit for session in self.sessions for commit in session.commits]

    @property
    def transactions(self) -> list[list[tuple[str, Any]]]:
        """Documents per committed transaction, as (collection, document), in arrival order."""
        return [commit.documents for commit in self.commits]

    @property
    def checkpoints(self) -> list[Checkpoint]:
        return [cp for commit in self.commits for cp in commit.checkpoints]

    @property
    def state_updates(self) -> list[dict[str, Any]]:
        """Every committed checkpoint's `state.updated`, in order."""
        return [cp.updated for cp in self.checkpoints]

    @property
    def documents(self) -> list[tuple[str, Any]]:
        """Every committed (collection, document), in the order the connector emitted them."""
        return [doc for commit in self.commits for doc in commit.documents]

    @property
    def counts(self) -> dict[str, int]:
        """Committed documents per collection (filled in count-only mode too)."""
        counter: collections.Counter[str] = collections.Counter()
        for cp in self.checkpoints:
            counter.update(cp.counts)
        return dict(counter)

    @property
    def sourced_schemas(self) -> list[tuple[str, dict[str, Any]]]:
        return [s for cp in self.checkpoints for s in cp.sourced_schemas]

    @property
    def exit_code(self) -> int | None:
        """The last session's exit code (-9: killed by the harness)."""
        return self.sessions[-1].exit_code if self.sessions else None

    @property
    def stderr(self) -> list[str]:
        return [line for session in self.sessions for line in session.stderr]

    @property
    def logs(self) -> list[dict[str, Any]]:
        return [record for session in self.sessions for record in session.logs]

    def documents_of(self, collection: str) -> list[Any]:
        return [doc for name, doc in self.documents if name == collection]

    def reduced(self, collection: str) -> dict[tuple[Any, ...], Any]:
        """The collection's documents reduced by its key (see `reduce_by_key`)."""
        return reduce_by_key(self.documents_of(collection), self.collections[collection].key)


@dataclass(frozen=True, slots=True)
class Progress:
    """What `until` and `on_checkpoint` see after each checkpoint.

    `state` is the merged state including this checkpoint; treat it as read-only.
    `elapsed` counts from the session's `opened`; counts are for the current session.
    """

    session: int
    elapsed: float
    checkpoint: Checkpoint
    state: Mapping[str, Any]
    state_keys: tuple[str, ...]
    checkpoints: int
    documents: int
