"""Running the connector: spawning and killing its process, draining its stderr, and
the unary requests (spec, discover, validate, apply), one process each."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple

from ._json import _dumps, _loads
from .build import capture_spec
from .catalog import FlowSource, _resolve, write_discovered
from .errors import ConnectorError, ConnectorTimeout, ProtocolError, _parse_log

DEFAULT_TIMEOUT = 60.0
"""Seconds a unary request, or a preview session waiting on the connector, may take
before the harness gives up. Long enough for a cold CDK import on a loaded machine."""

OPEN_VERSION = "flow-harness"
"""The `version` sent with Apply and Open; the CDK ignores it."""

SPEC_FIELD_ORDER = (
    "protocol",
    "configSchema",
    "resourceConfigSchema",
    "documentationUrl",
    "oauth2",
    "resourcePathPointers",
)
"""Field order of flowctl's Spec output (protobuf field order), which differs from the CDK's."""

DISCOVERED_FIELD_ORDER = (
    "recommendedName",
    "resourceConfig",
    "documentSchema",
    "key",
    "disable",
    "resourcePath",
    "isFallbackKey",
)
"""Field order of a discovered binding as flowctl prints it (protobuf field order)."""

PIPE_SIZE = 1 << 20
"""Requested pipe capacity for stdout (Linux F_SETPIPE_SZ), so the connector's
buffered checkpoint writes rarely wait on us. Best effort."""

KILL_WAIT_SECONDS = 10.0
"""How long to wait for a killed or exiting process to be reaped."""

_F_SETPIPE_SZ = 1031  # From <linux/fcntl.h>; fcntl exposes it only on Python >= 3.10 builds with it.


def _command(source: FlowSource) -> list[str]:
    """The local command, with `python` bound to this interpreter (and so this venv)."""
    command = list(source.command)
    if re.fullmatch(r"python(3(\.\d+)?)?", Path(command[0]).name) and os.sep not in command[0]:
        command[0] = sys.executable
    return command


def _spawn(source: FlowSource) -> subprocess.Popen[bytes]:
    """Start the connector with pipes on all three streams (the CDK needs stdin to be a pipe)."""
    process = subprocess.Popen(
        _command(source),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=source.cwd,
        env={**os.environ, **source.env},
    )
    assert process.stdout is not None
    try:
        fcntl.fcntl(process.stdout.fileno(), _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # Not Linux, or above /proc/sys/fs/pipe-max-size: the default pipe works, just slower.
    return process


def _kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process if it still runs, reap it, and close our pipe ends."""
    if process.poll() is None:
        process.kill()
    try:
        process.wait(timeout=KILL_WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass  # stdin may still hold unflushed bytes for a dead reader.


class LogLine(NamedTuple):
    """One stderr line: the raw text and, when it is a JSON object, the parsed log record."""

    raw: str
    record: dict[str, Any] | None


class _StderrDrain:
    """Reads a process's stderr on a thread until EOF, so a chatty connector never
    blocks on a full pipe while the harness is busy (or not reading at all).

    An exception from `on_log` stops further callbacks but not the draining; the
    first one is re-raised by `raise_callback_error`.
    """

    def __init__(self, stream: IO[bytes], on_log: Callable[[LogLine], None] | None) -> None:
        self.lines: list[str] = []
        self.logs: list[dict[str, Any]] = []
        self._stream = stream
        self._on_log = on_log
        self._callback_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="flow-harness-stderr", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for chunk in iter(self._stream.readline, b""):
            raw = chunk.decode("utf-8", "replace").rstrip("\r\n")
            record = _parse_log(raw)
            # list.append is atomic, so the main thread may read these lists meanwhile.
            self.lines.append(raw)
            if record is not None:
                self.logs.append(record)
            if self._on_log is not None:
                try:
                    self._on_log(LogLine(raw, record))
                except Exception as error:  # noqa: BLE001 - any callback failure must not stop the drain.
                    self._callback_error, self._on_log = error, None
        self._stream.close()

    def join(self) -> None:
        self._thread.join(timeout=KILL_WAIT_SECONDS)

    def raise_callback_error(self) -> None:
        if self._callback_error is not None:
            raise self._callback_error


def _unary(
    source: FlowSource, request: Mapping[str, Any], expect: str, timeout: float | None
) -> dict[str, Any]:
    """Send one request in a fresh process, close stdin, and return the `expect` response body.

    Raises ConnectorError on a non-zero exit, ConnectorTimeout if the process has not
    exited within `timeout` seconds, ProtocolError unless stdout is exactly one `expect` line.
    """
    process = _spawn(source)
    try:
        out, err = process.communicate(_dumps(request) + b"\n", timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise ConnectorTimeout(
            f"{expect}: connector did not finish within {timeout}s",
            stderr=err.decode("utf-8", "replace").splitlines(),
        ) from None
    stderr = err.decode("utf-8", "replace").splitlines()
    if process.returncode != 0:
        raise ConnectorError(
            f"{next(iter(request))}: connector exited with code {process.returncode}",
            exit_code=process.returncode,
            stderr=stderr,
        )
    try:
        responses = [_loads(line) for line in out.splitlines() if line.strip()]
    except ValueError:
        responses = []
    if len(responses) != 1 or not isinstance(responses[0], dict) or expect not in responses[0]:
        raise ProtocolError(
            f"{next(iter(request))}: expected exactly one {expect!r} response, got {out[:2000]!r}",
            exit_code=process.returncode,
            stderr=stderr,
        )
    body: dict[str, Any] = responses[0][expect]
    return body


def spec(
    source: str | os.PathLike[str] | FlowSource,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """The connector's Spec response as `flowctl raw spec` prints it.

    Fields come in protobuf order (protocol, configSchema, resourceConfigSchema,
    documentationUrl, oauth2, resourcePathPointers; unknown fields after) and fields
    holding a protobuf default (absent, null, empty) are dropped. The request is
    `{"spec":{"connectorType":"IMAGE"}}`; CDK connectors ignore its contents.
    """
    src = _resolve(source, None, None, env)
    response = _unary(src, {"spec": {"connectorType": "IMAGE"}}, "spec", timeout)
    return _proto_order(response, SPEC_FIELD_ORDER)


def _proto_order(message: Mapping[str, Any], order: Sequence[str]) -> dict[str, Any]:
    """`message` with known fields in `order`, then the rest, minus protobuf defaults."""
    ordered = {k: message[k] for k in order if k in message}
    ordered.update({k: v for k, v in message.items() if k not in ordered})
    return {k: v for k, v in ordered.items() if v not in (None, "", [], {}, False, 0)}


def discover(
    source: str | os.PathLike[str] | FlowSource,
    *,
    write: bool = False,
    config: Mapping[str, Any] | None = None,
    config_patch: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> list[dict[str, Any]]:
    """The discovered bindings, as `flowctl raw discover -o json --emit-raw` prints them.

    One dict per binding with recommendedName, resourceConfig, documentSchema and key;
    `disable`, `resourcePath` and `isFallbackKey` only when set (true / non-empty).

    With `write=True` it also does what plain `flowctl raw discover --source` does;
    see `write_discovered`.
    """
    src = _resolve(source, config, config_patch, env)
    request = {"discover": {"connectorType": "LOCAL", "config": src.require_config()}}
    response = _unary(src, request, "discovered", timeout)
    bindings = [_proto_order(b, DISCOVERED_FIELD_ORDER) for b in response.get("bindings") or []]
    for binding in bindings:
        # A key is meaningful even when empty, so keep it as flowctl's JSON output does.
        binding.setdefault("key", [])
    if write:
        write_discovered(src, bindings)
    return bindings


def validate(
    source: str | os.PathLike[str] | FlowSource,
    *,
    config: Mapping[str, Any] | None = None,
    config_patch: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """The Validated response for the capture's enabled bindings, as Flow's build sends them.

    Each binding carries its resourceConfig, its target collection (name, key,
    writeSchema from the catalog) and its backfill counter. A ValidationError in the
    connector surfaces as ConnectorError (exit code 1, message in the stderr tail).
    """
    src = _resolve(source, config, config_patch, env)
    request = {
        "validate": {
            "name": src.capture,
            "connectorType": "LOCAL",
            "config": src.require_config(),
            "bindings": [
                {
                    "resourceConfig": b.resource,
                    "collection": src.collection(b.target).spec(),
                    "backfill": b.backfill,
                }
                for b in src.enabled_bindings
            ],
        }
    }
    return _unary(src, request, "validated", timeout)


def apply(
    source: str | os.PathLike[str] | FlowSource,
    *,
    config: Mapping[str, Any] | None = None,
    config_patch: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    resource_path_pointers: Sequence[str] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """The Applied response for the capture (runs Spec first unless pointers are given)."""
    src = _resolve(source, config, config_patch, env)
    if resource_path_pointers is None:
        resource_path_pointers = spec(src, timeout=timeout)["resourcePathPointers"]
    request = {"apply": {"capture": capture_spec(src, resource_path_pointers), "version": OPEN_VERSION}}
    return _unary(src, request, "applied", timeout)
