"""`preview`: run the capture like `flowctl preview` over one or more sessions.

What it emulates, and what `delay` means, is in the package docstring."""

from __future__ import annotations

import copy
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._json import _dumps
from .build import capture_spec
from .catalog import FlowSource, _resolve
from .errors import ConnectorError
from .process import DEFAULT_TIMEOUT, OPEN_VERSION, LogLine, _kill, _spawn, _StderrDrain, spec
from .results import Commit, PreviewResult, Progress
from .session_runner import _SessionRunner

DEFAULT_DELAY = 2.0
"""Seconds per preview transaction when the caller gives none (flowctl tests use 10-30)."""

FULL_RANGE = {"keyBegin": 0, "keyEnd": 0xFFFFFFFF, "rClockBegin": 0, "rClockEnd": 0xFFFFFFFF}
"""The key and r-clock range of a capture with a single shard, as flowctl opens it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """When one preview session stops (see the package docstring for exact semantics).

    transactions: flowctl's per-session target; negative means unlimited.
    delay: seconds per transaction; None uses `preview(delay=...)`.
    checkpoints: stop after this many checkpoints that carried documents.
    until: stop after the checkpoint for which it returns true.
    duration: stop this many seconds after `opened`, whatever was read.
    stop_on_log: stop as soon as a stderr line it returns true for has been read (once
      `opened`), after reading whatever stdout the connector had written by then. It runs
      on the stderr reader thread, like `on_log`.
    timeout: None uses `preview(timeout=...)`; `math.inf` disables it.
    """

    transactions: int = 1
    delay: float | None = None
    checkpoints: int | None = None
    until: Callable[[Progress], bool] | None = None
    duration: float | None = None
    stop_on_log: Callable[[LogLine], bool] | None = None
    timeout: float | None = None


def backfills_complete(progress: Progress) -> bool:
    """True once every binding has CDK state and none has a backfill in progress.

    An `until` predicate for "run until the initial load is done". It reads the CDK's
    state layout (`bindingStateV1.<stateKey>.backfill`, `backfillRequests`).
    """
    bindings = progress.state.get("bindingStateV1") or {}
    if progress.state.get("backfillRequests"):
        return False
    return all(
        isinstance(bindings.get(key), dict) and not bindings[key].get("backfill")
        for key in progress.state_keys
    )


def preview(
    source: str | os.PathLike[str] | FlowSource,
    *,
    sessions: Sequence[int | Session] = (1,),
    delay: float = DEFAULT_DELAY,
    timeout: float | None = DEFAULT_TIMEOUT,
    initial_state: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    config_patch: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    resource_path_pointers: Sequence[str] | None = None,
    count_only: bool = False,
    check: bool = True,
    on_document: Callable[[str, Any], None] | None = None,
    on_checkpoint: Callable[[Progress], None] | None = None,
    on_commit: Callable[[Commit], None] | None = None,
    on_log: Callable[[LogLine], None] | None = None,
) -> PreviewResult:
    """Run the capture like `flowctl preview --sessions ... --delay ...` and return what it committed.

    Each entry of `sessions` is one connector process, opened with the state merged
    from `initial_state` and every earlier commit; an int is a Session with that many
    transactions. `timeout` is None for no limit. Without `resource_path_pointers`
    the connector's Spec supplies them (its process runs while the first session's
    process starts up).

    `count_only` keeps no documents (only per-collection counts), and skips parsing
    them unless `on_document` is given: use it for large captures. Callbacks run on
    the calling thread, except `on_log`, which runs on the stderr reader thread:
    `on_document(collection, doc)` for each document when its checkpoint arrives,
    then `on_checkpoint(progress)`; `on_commit(commit)` when a transaction commits.
    An exception from a callback ends the preview (the process is killed).

    With `check` (the default) a session whose process exits non-zero by itself
    raises ConnectorError carrying the result so far; without it the exit code is
    only recorded. Timeouts and protocol violations always raise.
    """
    src = _resolve(source, config, config_patch, env)
    plans = [s if isinstance(s, Session) else Session(transactions=s) for s in sessions]
    result = PreviewResult(
        capture=src.capture,
        collections={b.target: src.collection(b.target) for b in src.enabled_bindings},
        sessions=[],
        state=copy.deepcopy(dict(initial_state or {})),
    )
    names = [b.target for b in src.enabled_bindings]
    open_capture: dict[str, Any] | None = None
    pointers = resource_path_pointers

    for index, plan in enumerate(plans):
        spawned_at = time.monotonic()
        process = _spawn(src)
        assert process.stderr is not None
        logged_stop = threading.Event() if plan.stop_on_log is not None else None
        drain = _StderrDrain(process.stderr, _log_hook(on_log, plan.stop_on_log, logged_stop))
        try:
            if open_capture is None:
                # The first session's process imports its modules while Spec runs.
                if pointers is None:
                    pointers = spec(src)["resourcePathPointers"]
                open_capture = capture_spec(src, pointers)
            runner = _SessionRunner(
                index=index,
                plan=plan,
                process=process,
                spawned_at=spawned_at,
                drain=drain,
                names=names,
                state_keys=tuple(b["stateKey"] for b in open_capture["bindings"]),
                state=result.state,
                delay=plan.delay if plan.delay is not None else delay,
                timeout=plan.timeout if plan.timeout is not None else timeout,
                parse_documents=not count_only or on_document is not None,
                keep_documents=not count_only,
                on_document=on_document,
                on_checkpoint=on_checkpoint,
                on_commit=on_commit,
                logged_stop=logged_stop,
            )
            open_request = {
                "open": {
                    "capture": open_capture,
                    "version": OPEN_VERSION,
                    "range": FULL_RANGE,
                    "state": result.state,
                }
            }
            session = runner.run(_dumps(open_request) + b"\n", result)
        finally:
            _kill(process)
            drain.join()
        result.sessions.append(session)
        result.state = session.state
        drain.raise_callback_error()
        if check and session.stop_reason == "exited" and session.exit_code != 0:
            raise ConnectorError(
                f"session {index}: connector exited with code {session.exit_code}",
                exit_code=session.exit_code,
                stderr=session.stderr,
                result=result,
            )
    return result


def _log_hook(
    on_log: Callable[[LogLine], None] | None,
    stop_on_log: Callable[[LogLine], bool] | None,
    logged_stop: threading.Event | None,
) -> Callable[[LogLine], None] | None:
    """The stderr callback: the caller's `on_log`, then the session's `stop_on_log`, which
    sets `logged_stop` once it matches."""
    if stop_on_log is None or logged_stop is None:
        return on_log

    def hook(line: LogLine) -> None:
        if on_log is not None:
            on_log(line)
        if not logged_stop.is_set() and stop_on_log(line):
            logged_stop.set()

    return hook
