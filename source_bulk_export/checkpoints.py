"""The parts of a binding's state that the CDK's loops do not checkpoint, and what a binding's
fetch functions share within one process.

The CDK checkpoints a binding's `inc`, `backfill` and `snapshot` itself, from the loop that runs
each fetch function. This connector also persists, per binding, where a delta window's Bulk export
stands, where the snapshot's Bulk job stands, whether the Bulk API refuses the object, and how far
its deletions have been read (models.ResourceState). A fetch function cannot reach the Task the CDK
runs it in, so these are written through the capture's root Task, one transaction at a time:
`Checkpoints`.
"""

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from estuary_cdk.capture import Task
from pydantic import AwareDatetime, BaseModel

from .models import ConnectorState, ResourceState
from .states import State, decode, encode

type Purpose = Literal["baseline", "reconcile"]


class IdExport(BaseModel):
    """An export of an object's live Ids in progress (deletions.py), and what it is for.

    Every field that may be None defaults to it: the checkpoints are merge patches, in which a null
    removes the key.
    """

    purpose: Purpose
    started_at: AwareDatetime  # reconciling holds the delta stream here: a row restored later comes after
    job: dict[str, Any] | None = None  # states.encode of its Bulk export
    digest: str  # IdDigest.to_text() of the Ids read so far: the next baseline
    compared: str | None = None  # reconciling: the same, of the rows created before the baseline


class DeletionsState(BaseModel):
    """Where an object's deletions stand (deletions.py): its deletion log read up to `covered`, its live
    Ids as of `baseline_at` (a digest), and an Id export in progress besides, if any."""

    covered: AwareDatetime | None = None  # objects with a deletion log: every deletion before it was emitted
    baseline: str | None = None  # IdDigest.to_text()
    baseline_at: AwareDatetime | None = None
    export: IdExport | None = None


class Checkpoints:
    """Writes checkpoints (with documents, when they must land in the same transaction) through the
    capture's root Task.

    The root Task is the one the CDK checkpoints each binding's initial state through while it opens
    the bindings; a Task must not be written by two coroutines at once. So writes wait until every
    binding is open, and take turns.
    """

    def __init__(self) -> None:
        self._task: Task | None = None
        self._bindings = 0
        self._opened = 0
        self._ready = asyncio.Event()
        self._turn = asyncio.Lock()

    def binding_opened(self, task: Task, bindings: int) -> None:
        """Called as each of the capture's `bindings` is opened on `task` (the root Task)."""
        self._task, self._bindings = task, bindings
        self._opened += 1
        if self._opened >= self._bindings:
            self._ready.set()

    async def write_streamed(self, state_key: str, index: int, documents: AsyncIterator[Any],
                             patch: Callable[[], ResourceState]) -> None:
        """Emit every document `documents` yields (of binding `index`) and then `patch()` as one
        transaction; nothing of it when `documents` raises."""
        await self._ready.wait()
        assert self._task is not None
        async with self._turn:
            try:
                async for document in documents:
                    self._task.captured(index, document)
            except BaseException:
                self._task.reset()
                raise
            await self._task.checkpoint(ConnectorState(bindingStateV1={state_key: patch()}))

    async def write(self, state_key: str, patch: ResourceState, documents: Sequence[tuple[int, Any]] = ()) -> None:
        """Emit `documents` ((binding index, document) pairs) and the state patch as one transaction."""
        await self._ready.wait()
        assert self._task is not None
        async with self._turn:
            for index, document in documents:
                self._task.captured(index, document)
            await self._task.checkpoint(ConnectorState(bindingStateV1={state_key: patch}))


@dataclass
class Binding:
    """One binding's share of the process: what its fetch functions read and write between calls.

    `hold` is the newest instant the delta stream may read while a backfill job's pages are still
    unread (see exports.py), and `backfilled` says the backfill is done; both are derived from the
    backfill's checkpoint, so they survive restarts. The other fields mirror this connector's part of
    the binding's state and are changed only through `save`, which persists them first.
    """

    index: int
    state_key: str
    checkpoints: Checkpoints
    bulk_refused: str | None = None
    delta_export: State | None = None
    snapshot_export: State | None = None
    deletions: DeletionsState | None = None
    hold: datetime | None = field(default=None)
    backfilled: bool = False

    @classmethod
    def restore(cls, index: int, state_key: str, checkpoints: Checkpoints, state: ResourceState) -> "Binding":
        return cls(
            index=index,
            state_key=state_key,
            checkpoints=checkpoints,
            bulk_refused=state.bulk_refused,
            delta_export=decode(state.delta_export) if state.delta_export else None,
            snapshot_export=decode(state.snapshot_export) if state.snapshot_export else None,
            deletions=DeletionsState.model_validate(state.deletions) if state.deletions else None,
            backfilled=state.backfill is None,
        )

    async def save_streamed(self, documents: AsyncIterator[Any], changes: Callable[[], dict[str, Any]]) -> None:
        """Like `save`, for documents read as they are emitted: `changes()` is called once they all were."""
        applied: dict[str, Any] = {}

        def patch() -> ResourceState:
            applied.update(changes())
            return ResourceState(**{name: self._encode(name, value, getattr(self, name))
                                    for name, value in applied.items()})

        await self.checkpoints.write_streamed(self.state_key, self.index, documents, patch)
        for name, value in applied.items():
            setattr(self, name, value)

    async def save(self, documents: Sequence[Any] = (), **changes: Any) -> None:
        """Persist `changes` (bulk_refused, delta_export, snapshot_export, deletions), with `documents` of
        this binding in the same transaction, then apply them here."""
        patch: dict[str, Any] = {}
        for name, value in changes.items():
            patch[name] = self._encode(name, value, getattr(self, name))
        await self.checkpoints.write(self.state_key, ResourceState(**patch), [(self.index, d) for d in documents])
        for name, value in changes.items():
            setattr(self, name, value)

    @staticmethod
    def _encode(name: str, value: Any, previous: Any) -> Any:
        # The checkpoint is a merge patch: an export state writes every key, null included, since a key
        # left out would keep its previous value. The deletions state writes only what changed, since
        # it carries a digest of tens of kilobytes that changes weekly while `covered` moves each call.
        if value is None or name == "bulk_refused":
            return value
        if name in ("delta_export", "snapshot_export"):
            return encode(value)
        if name == "deletions":
            new = value.model_dump(mode="json")
            if previous is None:
                return new
            old = previous.model_dump(mode="json")
            return {key: item for key, item in new.items() if old.get(key) != item}
        raise TypeError(f"{name} is not part of this connector's binding state")
