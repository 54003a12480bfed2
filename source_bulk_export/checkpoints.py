"""The parts of a binding's state that the CDK's loops do not checkpoint, and what a binding's
fetch functions share within one process.

The CDK checkpoints a binding's `inc`, `backfill` and `snapshot` itself, from the loop that runs
each fetch function. This connector also persists, per binding, where a delta window's Bulk export
stands, where the snapshot's Bulk job stands, and whether the Bulk API refuses the object
(models.ResourceState). A fetch function cannot reach the Task the CDK runs it in, so these are
written through the capture's root Task, one transaction at a time: `Checkpoints`.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from estuary_cdk.capture import Task

from .models import ConnectorState, ResourceState
from .states import State, decode, encode


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
    unread (see exports.py); it is derived from the backfill's checkpoint, so it survives restarts.
    The other fields mirror this connector's part of the binding's state and are changed only
    through `save`, which persists them first.
    """

    index: int
    state_key: str
    checkpoints: Checkpoints
    bulk_refused: str | None = None
    delta_export: State | None = None
    snapshot_export: State | None = None
    hold: datetime | None = field(default=None)

    @classmethod
    def restore(cls, index: int, state_key: str, checkpoints: Checkpoints, state: ResourceState) -> "Binding":
        return cls(
            index=index,
            state_key=state_key,
            checkpoints=checkpoints,
            bulk_refused=state.bulk_refused,
            delta_export=decode(state.delta_export) if state.delta_export else None,
            snapshot_export=decode(state.snapshot_export) if state.snapshot_export else None,
        )

    async def save(self, documents: Sequence[Any] = (), **changes: Any) -> None:
        """Persist `changes` (bulk_refused, delta_export, snapshot_export), with `documents` of this
        binding in the same transaction, then apply them here."""
        patch: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in ("bulk_refused", "delta_export", "snapshot_export"):
                raise TypeError(f"{name} is not part of this connector's binding state")
            patch[name] = encode(value) if name.endswith("_export") and value is not None else value
        await self.checkpoints.write(self.state_key, ResourceState(**patch), [(self.index, d) for d in documents])
        for name, value in changes.items():
            setattr(self, name, value)
