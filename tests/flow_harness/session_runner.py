"""One preview session: a connector process driven from `open` through its checkpoints
and commits until a stop condition (see `preview` and the package docstring)."""

from __future__ import annotations

import copy
import os
import selectors
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._json import _dumps, _loads
from .documents import _merge_patch_in_place
from .errors import ConnectorError, ConnectorTimeout, ProtocolError
from .process import KILL_WAIT_SECONDS, _StderrDrain
from .results import Checkpoint, Commit, PreviewResult, Progress, SessionResult

if TYPE_CHECKING:
    from .preview import Session


READ_SIZE = 1 << 20
"""Bytes per read from the connector's stdout: big reads keep syscalls and line
splitting cheap when a capture streams millions of documents."""

_CAPTURED_PREFIX = b'{"captured":{"binding":'

LOGGED_STOP_POLL_SECONDS = 0.02
"""How often a session with `stop_on_log` looks at its stop flag: the flag is set on the
stderr thread, which cannot wake the select() on stdout."""
"""How every CDK `captured` line starts (pydantic and orjson both put `binding`
first), so a count-only preview can skip parsing documents."""


class _SessionRunner:
    """Drives one connector process through one preview session (see `preview`).

    Single-threaded: stdout is read with select() and large non-blocking-sized
    reads, so time-based rules (delay, duration, timeout) are applied between
    reads without a reader thread and a queue per line.
    """

    def __init__(
        self,
        *,
        index: int,
        plan: Session,
        process: subprocess.Popen[bytes],
        spawned_at: float,
        drain: _StderrDrain,
        names: list[str],
        state_keys: tuple[str, ...],
        state: dict[str, Any],
        delay: float,
        timeout: float | None,
        parse_documents: bool,
        keep_documents: bool,
        on_document: Callable[[str, Any], None] | None,
        on_checkpoint: Callable[[Progress], None] | None,
        on_commit: Callable[[Commit], None] | None,
        logged_stop: threading.Event | None = None,
    ) -> None:
        self.index = index
        self.plan = plan
        self.process = process
        self.stderr = drain
        self.names = names
        self.state_keys = state_keys
        self.initial_state = copy.deepcopy(state)
        self.state = copy.deepcopy(state)  # With every checkpoint read applied.
        self.committed_state = copy.deepcopy(state)  # With every committed checkpoint applied.
        self.delay = delay
        self.timeout = timeout
        self.parse_documents = parse_documents
        self.keep_documents = keep_documents
        self.on_document = on_document
        self.on_checkpoint = on_checkpoint
        self.on_commit = on_commit
        self.logged_stop = logged_stop

        self.started = spawned_at
        self.opened_at: float | None = None
        self.explicit_acks = False
        self.last_output = self.started
        self.transaction_started = self.started
        self.commits: list[Commit] = []
        self.pending_checkpoints: list[Checkpoint] = []
        self.pending_documents: list[tuple[str, Any]] = []
        self.pending_counts = [0] * len(names)
        self.pending_schemas: list[tuple[str, dict[str, Any]]] = []
        self.checkpoint_count = 0
        self.productive_checkpoints = 0
        self.document_count = 0
        self.stop_reason: str | None = None

    # -- the loop

    def run(self, open_line: bytes, result: PreviewResult) -> SessionResult:
        """Send `open_line`, read until a stop condition, and return the session.

        The process is dead and reaped on return. On ConnectorTimeout, ConnectorError
        (exit before `opened`) or ProtocolError, the failed session (stop reason
        "error", with what it committed) is appended to `result`, which the error carries.
        """
        try:
            self._write(open_line)
            # The wait for `opened` starts now: Spec may have run since the spawn.
            self.last_output = self.transaction_started = time.monotonic()
            self._read_until_stopped(result)
        except ConnectorError:
            self._reap()
            self.stop_reason = "error"
            result.sessions.append(self._result())
            result.state = self.committed_state
            raise
        self._reap()
        return self._result()

    def _reap(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.stderr.join()

    def _result(self) -> SessionResult:
        return SessionResult(
            index=self.index,
            initial_state=self.initial_state,
            state=self.committed_state,
            commits=self.commits,
            stop_reason=self.stop_reason or "exited",
            exit_code=self.process.returncode,
            explicit_acknowledgements=self.explicit_acks,
            uncommitted_documents=sum(self.pending_counts),
            stderr=self.stderr.lines,
            logs=self.stderr.logs,
            elapsed=time.monotonic() - self.started,
        )

    def _read_until_stopped(self, result: PreviewResult) -> None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        partial: list[bytes] = []  # Pieces of a line longer than one read.
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while self.stop_reason is None:
                # Once `stop_on_log` matched: read what stdout holds right now, then stop.
                logged = self._logged()
                if not selector.select(0.0 if logged else self._next_wakeup()):
                    if logged:
                        self._stop_logged()
                        return
                    self._on_tick(time.monotonic(), result)
                    continue
                chunk = os.read(fd, READ_SIZE)
                if not chunk:
                    self._on_eof(partial, result)
                    return
                self.last_output = time.monotonic()
                if partial:
                    newline = chunk.find(b"\n")
                    if newline < 0:
                        partial.append(chunk)
                        continue
                    partial.append(chunk[:newline])
                    first = b"".join(partial)
                    partial.clear()
                    chunk = chunk[newline + 1 :]
                    if self._on_lines([first], result):
                        return
                lines = chunk.split(b"\n")
                tail = lines.pop()
                if tail:
                    partial.append(tail)
                if self._on_lines(lines, result):
                    return
                if logged:
                    self._stop_logged()
                    return
                self._on_tick(time.monotonic(), result)

    def _logged(self) -> bool:
        """Whether `stop_on_log` has matched a line and the session is open."""
        return self.logged_stop is not None and self.logged_stop.is_set() and self.opened_at is not None

    def _stop_logged(self) -> None:
        self.stop_reason = "logged"
        self._commit(time.monotonic())

    def _waiting_on_connector(self) -> bool:
        """Whether silence would be a hang: `opened` is due, or the transaction has no
        checkpoint to commit. A session with a `duration` is bounded and expected to
        go quiet, so once opened it is never considered hung."""
        if self.opened_at is None:
            return True
        return not self.pending_checkpoints and self.plan.duration is None

    def _idle_since(self) -> float:
        """When the connector was last heard from, or the wait for it last began.
        (A commit starts a new wait, as flowctl resets its timeout per transaction.)"""
        return max(self.last_output, self.transaction_started)

    def _next_wakeup(self) -> float:
        """Seconds until the next time-based decision (a commit, a hard stop or a timeout)."""
        deadlines: list[float] = []
        if self.opened_at is not None and self.pending_checkpoints:
            deadlines.append(self.transaction_started + self.delay)
        if self.opened_at is not None and self.plan.duration is not None:
            deadlines.append(self.opened_at + self.plan.duration)
        if self.timeout is not None and self._waiting_on_connector():
            deadlines.append(self._idle_since() + self.timeout)
        # Wake at least once a second anyway: cheap, and bounds any clock surprise.
        wakeup = LOGGED_STOP_POLL_SECONDS if self.logged_stop is not None else 1.0
        return min([wakeup, *(max(0.0, d - time.monotonic()) for d in deadlines)])

    def _on_tick(self, now: float, result: PreviewResult) -> None:
        """Apply the time-based rules: commit after `delay`, stop at `duration`, time out."""
        if self.opened_at is None:
            if self.timeout is not None and now - self._idle_since() >= self.timeout:
                self._timeout(f"no 'opened' response within {self.timeout}s", result)
            return
        if self.plan.duration is not None and now - self.opened_at >= self.plan.duration:
            self.stop_reason = "duration"
            self._commit(now)
            return
        if self.pending_checkpoints and now - self.transaction_started >= self.delay:
            if 0 <= self.plan.transactions <= len(self.commits) + 1:
                self.stop_reason = "transactions"
            self._commit(now)
            return
        if (
            self.timeout is not None
            and self._waiting_on_connector()
            and now - self._idle_since() >= self.timeout
        ):
            self._timeout(
                f"no checkpoint for {self.timeout}s (waiting for transaction {len(self.commits) + 1})", result
            )

    def _on_eof(self, partial: list[bytes], result: PreviewResult) -> None:
        """stdout closed, so the process is exiting: commit what it checkpointed."""
        if partial and self._on_lines([b"".join(partial)], result):
            return
        try:
            self.process.wait(timeout=KILL_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            pass  # It closed stdout but lives on; the caller kills it.
        self.stderr.join()  # Complete stderr for the error messages below.
        if self.opened_at is None:
            raise ConnectorError(
                f"session {self.index}: connector exited before 'opened' (code {self.process.returncode})",
                exit_code=self.process.returncode,
                stderr=self.stderr.lines,
                result=result,
            )
        self.stop_reason = "exited"
        self._commit(time.monotonic())
        uncommitted = sum(self.pending_counts)
        if uncommitted and self.process.returncode == 0:
            raise ProtocolError(
                f"session {self.index}: connector exited with {uncommitted} documents not followed by a checkpoint",
                exit_code=self.process.returncode,
                stderr=self.stderr.lines,
                result=result,
            )

    def _timeout(self, what: str, result: PreviewResult) -> None:
        raise ConnectorTimeout(
            f"session {self.index}: {what}; the connector is still running",
            stderr=self.stderr.lines,
            result=result,
        )

    # -- messages

    def _on_lines(self, lines: list[bytes], result: PreviewResult) -> bool:
        """Handle complete stdout lines; True once the session must stop (later lines are dropped)."""
        names = self.names
        counts = self.pending_counts
        pending = self.pending_documents
        parse = self.parse_documents
        loads = _loads
        prefix = _CAPTURED_PREFIX
        prefix_length = len(prefix)
        opened = self.opened_at is not None
        line = b""
        try:
            for line in lines:
                # `captured` lines are the hot path (millions in a large capture): locals
                # only, and no parsing at all when documents are not wanted.
                if opened and line.startswith(prefix):
                    if parse:
                        captured = loads(line)["captured"]
                        binding = captured["binding"]
                        pending.append((names[binding], captured["doc"]))
                    else:
                        binding = int(line[prefix_length : line.index(b",", prefix_length)])
                    counts[binding] += 1
                elif line.strip():
                    if self._on_message(line, result):
                        return True
                    opened = self.opened_at is not None
                    pending = self.pending_documents  # A checkpoint starts a new list.
        except (IndexError, KeyError, TypeError, ValueError) as error:
            raise self._protocol(f"malformed message ({error!r}): {line[:300]!r}", result) from None
        return False

    def _on_message(self, line: bytes, result: PreviewResult) -> bool:
        message = _loads(line)
        if not isinstance(message, dict) or len(message) != 1:
            raise self._protocol(f"expected one message per line, got {line[:300]!r}", result)
        kind, body = next(iter(message.items()))

        if self.opened_at is None:
            if kind != "opened":
                raise self._protocol(f"expected 'opened' first, got {line[:300]!r}", result)
            self.opened_at = self.transaction_started = time.monotonic()
            self.explicit_acks = bool((body or {}).get("explicitAcknowledgements"))
            if self.plan.transactions == 0:
                self.stop_reason = "transactions"
                return True
            return False
        if kind == "checkpoint":
            return self._on_checkpoint(body or {})
        if kind == "captured":
            binding = body["binding"]
            self.pending_counts[binding] += 1
            if self.parse_documents:
                self.pending_documents.append((self.names[binding], body["doc"]))
            return False
        if kind == "sourcedSchema":
            schema = body.get("schema_json", body.get("schemaJson"))
            self.pending_schemas.append((self.names[body["binding"]], schema))
            return False
        raise self._protocol(f"unexpected message {kind!r} during a capture", result)

    def _on_checkpoint(self, body: Mapping[str, Any]) -> bool:
        now = time.monotonic()
        assert self.opened_at is not None
        connector_state = body.get("state") or {}
        updated = connector_state.get("updated") or {}
        is_patch = bool(connector_state.get("mergePatch", False))
        self.state = _merge_patch_in_place(self.state, updated) if is_patch else copy.deepcopy(updated)

        if self.on_document is not None:
            for collection, doc in self.pending_documents:
                self.on_document(collection, doc)
        checkpoint = Checkpoint(
            session=self.index,
            elapsed=now - self.opened_at,
            documents=self.pending_documents if self.keep_documents else [],
            counts={self.names[i]: n for i, n in enumerate(self.pending_counts) if n},
            sourced_schemas=self.pending_schemas,
            updated=updated,
            merge_patch=is_patch,
        )
        self.pending_documents = []
        self.pending_counts[:] = [0] * len(self.pending_counts)
        self.pending_schemas = []
        self.pending_checkpoints.append(checkpoint)
        self.checkpoint_count += 1
        self.document_count += checkpoint.document_count
        if checkpoint.document_count:
            self.productive_checkpoints += 1

        if self.on_checkpoint is not None or self.plan.until is not None:
            progress = Progress(
                session=self.index,
                elapsed=checkpoint.elapsed,
                checkpoint=checkpoint,
                state=self.state,
                state_keys=self.state_keys,
                checkpoints=self.checkpoint_count,
                documents=self.document_count,
            )
            if self.on_checkpoint is not None:
                self.on_checkpoint(progress)
            if self.plan.until is not None and self.plan.until(progress):
                self.stop_reason = "until"
        if self.plan.checkpoints is not None and self.productive_checkpoints >= self.plan.checkpoints:
            self.stop_reason = self.stop_reason or "checkpoints"
        if self.stop_reason is None:
            return False
        self._commit(now)
        return True

    def _commit(self, now: float) -> None:
        """Commit the pending checkpoints as one transaction, and acknowledge it
        if the connector asked for acknowledgements and the session goes on."""
        self.transaction_started = now
        if not self.pending_checkpoints:
            return
        assert self.opened_at is not None
        commit = Commit(
            session=self.index, elapsed=now - self.opened_at, checkpoints=self.pending_checkpoints
        )
        self.pending_checkpoints = []
        self.commits.append(commit)
        self.committed_state = copy.deepcopy(self.state)
        if self.on_commit is not None:
            self.on_commit(commit)
        if self.explicit_acks and self.stop_reason is None:
            self._write(_dumps({"acknowledge": {"checkpoints": len(commit.checkpoints)}}) + b"\n")

    def _write(self, data: bytes) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(data)
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # The process is gone; reading stdout reaches EOF and reports it.

    def _protocol(self, what: str, result: PreviewResult) -> ProtocolError:
        return ProtocolError(
            f"session {self.index}: {what}",
            exit_code=self.process.poll(),
            stderr=self.stderr.lines,
            result=result,
        )
