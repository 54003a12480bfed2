"""A stand-in for `flowctl raw spec|discover` and `flowctl preview` on a local capture.

flowctl is not available on these machines, so tests drive the connector the way
Flow's runtime does: one process per request, JSON lines on stdin and stdout, JSON
logs on stderr. The catalog is the connector's own `test.flow.yaml` (plus its
`import`ed `acmeCo/flow.yaml` and schema files), so the same file serves flowctl in
CI and this module everywhere else.

Library use (all functions take a path to `test.flow.yaml` or a `FlowSource`, and
most take `config=`, `config_patch=` and `env=` overrides):

    spec(src)                         -> the Spec response, in flowctl's field order
    discover(src, write=False)        -> bindings as `flowctl raw discover --emit-raw`
    validate(src) / apply(src)        -> the Validated / Applied responses
    preview(src, sessions=[1], delay=2.0, ...) -> PreviewResult

    result = preview("test.flow.yaml", config_patch={"login_url": emulator.url},
                     sessions=[Session(transactions=-1, until=backfills_complete),
                               Session(transactions=-1, checkpoints=3)])
    result.reduced("acmeCo/Account")      # {(Id,): document}, deletions applied
    capture_snapshot(result, redact_fields={"SystemModstamp"})   # for pytest-insta

CLI use: `python -m tests.flow_harness spec|discover|validate|preview --source F ...`
(`--help` on each).

What `preview` emulates, and what `delay` means
-----------------------------------------------
Each session is one connector process: it is sent `open` with the state merged so
far, stdin stays open (EOF does not stop a CDK capture), and stdout is read as it
arrives. Documents are attributed to the checkpoint that follows them, and every
checkpoint's `state.updated` is applied to the state as an RFC 7396 merge patch (or
replaces it when `mergePatch` is false). Checkpoints are grouped into transactions
the way `flowctl preview` groups them:

* `delay` is measured from the connector's `opened` response for the first
  transaction and from the previous commit for later ones; it is never "time since
  the last output". When it has elapsed, every checkpoint read so far is committed
  as one transaction; if none has been read yet, the transaction commits at the
  first checkpoint that arrives. (flowctl sleeps `delay`, then polls the runtime,
  which holds the poll open until a checkpoint is ready.)
* A session stops after its target number of transactions (flowctl's `--sessions`
  value; negative means unlimited), or earlier at the first of: `checkpoints`
  checkpoints that carried documents, `until(progress)` returning true,
  `duration` seconds after `opened`, or the process exiting by itself. Every stop
  commits the checkpoints read so far; only documents with no checkpoint after them
  are discarded. The process is then killed with SIGKILL, as flowctl does.
* If explicit acknowledgements were requested, each commit is acknowledged right
  away with its checkpoint count (flowctl sends it with its next poll).
* `timeout`: while the session waits on the connector (no `opened` yet, or no
  checkpoint to commit and no `duration` set), at most `timeout` seconds may pass
  without stdout output (counted from the later of the last output and the last
  commit); otherwise `ConnectorTimeout` is raised with the connector's stderr tail.
  (flowctl ends the session quietly instead; give sessions that are expected to go
  quiet a `duration`.)

Not emulated: sops decryption, schema validation of documents, reductions other
than last-write-wins (deletions simply win), the combiner's byte limit, sourced
schema unions and inference, and Validate/Apply before a preview (call
`validate()`/`apply()` yourself). `PreviewResult` holds documents exactly as the
connector emitted them, in arrival order; `flowctl_documents()` rebuilds flowctl's
printed form (combined per transaction, ordered by binding then key, keys sorted,
`_meta.uuid` set to a placeholder).
"""

from __future__ import annotations

import argparse
import collections
import copy
import dataclasses
import fcntl
import os
import re
import selectors
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Collection as AbstractCollection
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

import yaml

try:
    import orjson

    # Bound directly, not wrapped: a wrapper's call costs as much as parsing a small line.
    _loads: Callable[[bytes | str], Any] = orjson.loads

    def _dumps(value: Any) -> bytes:
        return orjson.dumps(value)

    def _dumps_sorted(value: Any) -> bytes:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)

except ImportError:  # orjson comes with estuary-cdk; json keeps the module importable without it.
    import json

    _loads = json.loads

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def _dumps_sorted(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


__all__ = [
    "UUID_PLACEHOLDER",
    "Binding",
    "Checkpoint",
    "Collection",
    "Commit",
    "ConnectorError",
    "ConnectorTimeout",
    "FlowSource",
    "HarnessError",
    "LogLine",
    "PreviewResult",
    "Progress",
    "ProtocolError",
    "Session",
    "SessionResult",
    "apply",
    "backfills_complete",
    "capture_snapshot",
    "capture_spec",
    "describe_stderr",
    "discover",
    "first_per_collection",
    "flowctl_documents",
    "key_of",
    "load_source",
    "merge_patch",
    "parse_duration",
    "preview",
    "redact",
    "reduce_by_key",
    "resolve_pointer",
    "resource_path",
    "sort_keys",
    "spec",
    "state_key",
    "validate",
    "write_discovered",
]

UUID_PLACEHOLDER = "DocUUIDPlaceholder-329Bb50aa48EAa9ef"
"""What `flowctl preview` prints as every document's `_meta.uuid`."""

DEFAULT_TIMEOUT = 60.0
"""Seconds a unary request, or a preview session waiting on the connector, may take
before the harness gives up. Long enough for a cold CDK import on a loaded machine."""

DEFAULT_DELAY = 2.0
"""Seconds per preview transaction when the caller gives none (flowctl tests use 10-30)."""

DEFAULT_INTERVAL_SECONDS = 300
"""Flow's default capture `interval` (5 minutes), sent as `intervalSeconds`."""

FULL_RANGE = {"keyBegin": 0, "keyEnd": 0xFFFFFFFF, "rClockBegin": 0, "rClockEnd": 0xFFFFFFFF}
"""The key and r-clock range of a capture with a single shard, as flowctl opens it."""

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

READ_SIZE = 1 << 20
"""Bytes per read from the connector's stdout: big reads keep syscalls and line
splitting cheap when a capture streams millions of documents."""

PIPE_SIZE = 1 << 20
"""Requested pipe capacity for stdout (Linux F_SETPIPE_SZ), so the connector's
buffered checkpoint writes rarely wait on us. Best effort."""

STDERR_TAIL_LINES = 15
"""How many stderr lines an error message quotes."""

KILL_WAIT_SECONDS = 10.0
"""How long to wait for a killed or exiting process to be reaped."""

_F_SETPIPE_SZ = 1031  # From <linux/fcntl.h>; fcntl exposes it only on Python >= 3.10 builds with it.

_CAPTURED_PREFIX = b'{"captured":{"binding":'
"""How every CDK `captured` line starts (pydantic and orjson both put `binding`
first), so a count-only preview can skip parsing documents."""


# --------------------------------------------------------------------------------------
# Errors


class HarnessError(Exception):
    """The catalog or the call is wrong: bad test.flow.yaml, unknown collection, an
    encrypted config with no plaintext override."""


class ConnectorError(HarnessError):
    """The connector failed: non-zero exit, or no answer. Carries its stderr, and for a
    preview the partial result up to the failure."""

    def __init__(
        self,
        message: str,
        *,
        exit_code: int | None = None,
        stderr: Sequence[str] = (),
        result: PreviewResult | None = None,
    ) -> None:
        self.exit_code = exit_code
        self.stderr = list(stderr)
        self.result = result
        tail = describe_stderr(self.stderr)
        super().__init__(f"{message}\n--- connector stderr (last lines) ---\n{tail}" if tail else message)


class ProtocolError(ConnectorError):
    """The connector wrote something the capture protocol does not allow."""


class ConnectorTimeout(ConnectorError):
    """The connector produced nothing for longer than the allowed timeout."""


# --------------------------------------------------------------------------------------
# The catalog: test.flow.yaml, its imports and schema files


class _FlowYamlLoader(yaml.SafeLoader):
    """YAML 1.2-ish loading, as serde_yaml does it: timestamps stay strings and only
    true/false are booleans (PyYAML would turn `start_date: 2024-01-01T00:00:00Z`
    into a datetime and `on` into True)."""


_FlowYamlLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:bool")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_FlowYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


class _FlowYamlDumper(yaml.SafeDumper):
    """Writes YAML in flowctl's (serde_yaml's) style: `---` first, sequences indented
    under their key, double quotes where quoting is needed, and `-m`-like strings quoted."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def choose_scalar_style(self) -> str:
        style = super().choose_scalar_style()
        if style == "'":
            return '"'
        if style == "" and isinstance(self.event, yaml.ScalarEvent) and self.event.value.startswith("-"):
            # Plain `-m` is valid YAML, but serde_yaml quotes it; match its output.
            return '"' if self.event.implicit[0] and not _is_number(self.event.value) else style
        return style


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _load_yaml(path: Path) -> Any:
    with path.open("rb") as f:
        return yaml.load(f, Loader=_FlowYamlLoader)  # A SafeLoader subclass: no arbitrary objects.


def _dump_yaml(value: Any) -> str:
    text: str = yaml.dump(
        value,
        Dumper=_FlowYamlDumper,
        sort_keys=False,
        explicit_start=True,
        allow_unicode=True,
        width=1 << 30,
    )
    return text


@dataclass(frozen=True, slots=True)
class Collection:
    """A collection a binding captures into, as the connector sees it in Validate and Open."""

    name: str
    key: tuple[str, ...]
    write_schema: Mapping[str, Any]
    read_schema: Mapping[str, Any] | None = None

    def spec(self) -> dict[str, Any]:
        """The CollectionSpec fields the CDK reads."""
        out: dict[str, Any] = {"name": self.name, "key": list(self.key), "writeSchema": self.write_schema}
        if self.read_schema is not None:
            out["readSchema"] = self.read_schema
        return out


@dataclass(frozen=True, slots=True)
class Binding:
    """One `bindings[]` entry of the capture in test.flow.yaml."""

    resource: Mapping[str, Any]
    target: str
    disable: bool = False
    backfill: int = 0


@dataclass(frozen=True, slots=True)
class FlowSource:
    """A capture loaded from a test.flow.yaml, with overrides applied.

    `config` is the plaintext endpoint config, or None when it cannot be used (then
    `config_error` says why, and requests that need a config raise HarnessError).
    `env` holds only the variables the harness adds to the inherited environment:
    `LOG_LEVEL`, `endpoint.local.env`, then caller overrides.
    """

    path: Path
    capture: str
    command: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]
    config: Mapping[str, Any] | None
    config_error: str | None
    interval_seconds: int
    bindings: tuple[Binding, ...]
    collections: Mapping[str, Collection]
    missing_imports: tuple[Path, ...] = ()

    @property
    def enabled_bindings(self) -> tuple[Binding, ...]:
        """Bindings Flow sends to Validate and Open (`disable: true` ones are left out)."""
        return tuple(b for b in self.bindings if not b.disable)

    @property
    def prefix(self) -> str:
        """The catalog prefix discovered collections go under (`acmeCo`)."""
        return self.capture.rsplit("/", 1)[0] if "/" in self.capture else "acmeCo"

    def require_config(self) -> Mapping[str, Any]:
        if self.config is None:
            raise HarnessError(self.config_error or f"{self.path}: no endpoint config")
        return self.config

    def collection(self, name: str) -> Collection:
        try:
            return self.collections[name]
        except KeyError:
            hint = (
                f"; imports not found: {', '.join(map(str, self.missing_imports))}"
                if self.missing_imports
                else ""
            )
            raise HarnessError(
                f"{self.path}: collection {name!r} is not defined (run discover with write=True?){hint}"
            ) from None


def load_source(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    config_patch: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> FlowSource:
    """Load the capture in `path` (a test.flow.yaml), following `import:` for collections.

    - `name` picks the capture when the file has several.
    - The endpoint config is `config` if given, else the inline object or file named
      by `endpoint.local.config`. A sops-encrypted file cannot be decrypted here: the
      file named by the `FLOW_HARNESS_CONFIG` environment variable (a plaintext
      copy, e.g. a git-ignored config.local.yaml) stands in for it, with the
      `_sops` key suffixes stripped as flowctl does; without one `config` is unset
      (spec still works; requests that need the config raise HarnessError).
      `config_patch` is then applied as an RFC 7396 merge patch, e.g. to point the
      connector at an emulator on a random port.
    - `env` is added to the spawned process's environment, over `LOG_LEVEL`
      (`shards.logLevel`, default `info`) and `endpoint.local.env`.
    - `cwd` defaults to the directory holding `path`, as flowctl runs local commands.

    Import files that do not exist are tolerated (a fresh catalog before
    `discover(write=True)`), and reported when a collection is looked up.
    """
    path = Path(path).resolve()
    document = _load_yaml(path) or {}
    captures = document.get("captures") or {}
    if not captures:
        raise HarnessError(f"{path}: no captures")
    if name is None:
        if len(captures) != 1:
            raise HarnessError(f"{path}: several captures ({', '.join(captures)}); pass name=")
        name = next(iter(captures))
    if name not in captures:
        raise HarnessError(f"{path}: no capture {name!r}")
    capture = captures[name] or {}

    local = (capture.get("endpoint") or {}).get("local")
    if not isinstance(local, dict) or not local.get("command"):
        raise HarnessError(f"{path}: capture {name!r} needs endpoint.local.command")
    command = tuple(str(part) for part in local["command"])

    endpoint_config, config_error = _endpoint_config(path, local.get("config"), config)
    if endpoint_config is not None and config_patch is not None:
        endpoint_config = merge_patch(endpoint_config, config_patch)

    log_level = str(((capture.get("shards") or {}).get("logLevel")) or "info")
    process_env = {"LOG_LEVEL": log_level}
    process_env.update({str(k): str(v) for k, v in (local.get("env") or {}).items()})
    process_env.update(env or {})

    interval = capture.get("interval")
    interval_seconds = DEFAULT_INTERVAL_SECONDS if interval is None else int(parse_duration(interval))

    bindings = tuple(
        Binding(
            resource=b.get("resource") or {},
            target=str(b["target"]),
            disable=bool(b.get("disable", False)),
            backfill=int(b.get("backfill", 0)),
        )
        for b in capture.get("bindings") or []
    )

    collections_found: dict[str, Collection] = {}
    missing: list[Path] = []
    _load_collections(path, document, collections_found, missing, visited=set())

    return FlowSource(
        path=path,
        capture=name,
        command=command,
        cwd=Path(cwd).resolve() if cwd is not None else path.parent,
        env=process_env,
        config=endpoint_config,
        config_error=config_error,
        interval_seconds=interval_seconds,
        bindings=bindings,
        collections=collections_found,
        missing_imports=tuple(missing),
    )


def _endpoint_config(
    path: Path, declared: Any, override: Mapping[str, Any] | None
) -> tuple[dict[str, Any] | None, str | None]:
    """The plaintext endpoint config, or (None, why not)."""
    if override is not None:
        return copy.deepcopy(dict(override)), None
    if declared is None or isinstance(declared, dict):
        return copy.deepcopy(declared or {}), None
    if not isinstance(declared, str):
        return None, f"{path}: endpoint.local.config must be an object or a file name"

    declared_path = path.parent / declared
    if not declared_path.exists():
        return None, f"{path}: endpoint config file {declared_path} does not exist"
    loaded = _load_yaml(declared_path)
    if not (isinstance(loaded, dict) and "sops" in loaded):
        return loaded if isinstance(loaded, dict) else {}, None

    plaintext = os.environ.get("FLOW_HARNESS_CONFIG")
    if not plaintext:
        return None, (
            f"{declared_path} is sops-encrypted and the harness cannot decrypt it: "
            "pass config=... or set FLOW_HARNESS_CONFIG to a plaintext copy"
        )
    decrypted = _load_yaml(Path(plaintext))
    if not isinstance(decrypted, dict) or "sops" in decrypted:
        return None, f"FLOW_HARNESS_CONFIG={plaintext} is not a plaintext config object"
    suffix = str((loaded["sops"] or {}).get("encrypted_suffix") or "_sops")
    return _strip_suffix(decrypted, suffix), None


def _strip_suffix(value: Any, suffix: str) -> Any:
    """Remove a sops `encrypted_suffix` from every key, as flowctl does after decrypting."""
    if isinstance(value, dict):
        return {
            (k[: -len(suffix)] if isinstance(k, str) and k.endswith(suffix) else k): _strip_suffix(v, suffix)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_strip_suffix(v, suffix) for v in value]
    return value


def _load_collections(
    path: Path,
    document: Mapping[str, Any],
    out: dict[str, Collection],
    missing: list[Path],
    visited: set[Path],
) -> None:
    visited.add(path)
    for name, spec_ in (document.get("collections") or {}).items():
        spec_ = spec_ or {}
        write = spec_.get("writeSchema", spec_.get("schema"))
        read = spec_.get("readSchema")
        out[str(name)] = Collection(
            name=str(name),
            key=tuple(spec_.get("key") or ()),
            write_schema=_load_schema(path, write),
            read_schema=None if read is None else _load_schema(path, read),
        )
    imports = document.get("import") or []
    for entry in imports:
        target = (path.parent / str(entry)).resolve()
        if target in visited:
            continue
        if not target.exists():
            missing.append(target)
            continue
        _load_collections(target, _load_yaml(target) or {}, out, missing, visited)


def _load_schema(path: Path, schema: Any) -> Mapping[str, Any]:
    if schema is None:
        return {}
    loaded: Mapping[str, Any] = _load_yaml(path.parent / schema) or {} if isinstance(schema, str) else schema
    return loaded


def _resolve(
    source: str | os.PathLike[str] | FlowSource,
    config: Mapping[str, Any] | None,
    config_patch: Mapping[str, Any] | None,
    env: Mapping[str, str] | None,
) -> FlowSource:
    """A FlowSource for `source`, with per-call overrides layered on."""
    if not isinstance(source, FlowSource):
        return load_source(source, config=config, config_patch=config_patch, env=env)
    changes: dict[str, Any] = {}
    if config is not None:
        changes["config"], changes["config_error"] = copy.deepcopy(dict(config)), None
    if config_patch is not None:
        base = changes.get("config", source.config)
        if base is not None:
            changes["config"] = merge_patch(base, config_patch)
    if env:
        changes["env"] = {**source.env, **env}
    return dataclasses.replace(source, **changes) if changes else source


_DURATION_UNITS = {
    "ms": 0.001, "msec": 0.001, "millis": 0.001,
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}  # fmt: skip
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)")


def parse_duration(value: str | float) -> float:
    """Seconds in a humantime duration (`10s`, `3m`, `1h 30m`, `500ms`); a bare number is seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    text = value.strip().lower()
    total, pos = 0.0, 0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if not match or (match.group(2) and match.group(2) not in _DURATION_UNITS):
            raise HarnessError(f"not a duration: {value!r}")
        total += float(match.group(1)) * _DURATION_UNITS.get(match.group(2), 1.0)
        pos = match.end()
    if pos == 0:
        raise HarnessError(f"not a duration: {value!r}")
    return total


# --------------------------------------------------------------------------------------
# Running the connector


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


def _parse_log(raw: str) -> dict[str, Any] | None:
    if not raw.startswith("{"):
        return None
    try:
        record = _loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def describe_stderr(lines: Sequence[str], count: int = STDERR_TAIL_LINES) -> str:
    """The last `count` stderr lines, JSON logs shortened to `LEVEL msg` plus the end of any traceback."""
    rendered: list[str] = []
    for raw in lines[-count:]:
        record = _parse_log(raw)
        if record is None or "msg" not in record:
            rendered.append(raw[:500])
            continue
        rendered.append(f"{record.get('level', '?')} {record['msg']}"[:2000])
        traceback = (record.get("fields") or {}).get("traceback")
        if isinstance(traceback, list):
            rendered.extend("    " + str(t).rstrip()[:500] for t in traceback[-4:])
    return "\n".join(rendered)


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


# --------------------------------------------------------------------------------------
# Spec, discover, validate, apply


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


def write_discovered(
    source: str | os.PathLike[str] | FlowSource, bindings: Sequence[Mapping[str, Any]]
) -> list[Path]:
    """Rewrite the catalog around `bindings` the way plain `flowctl raw discover` does.

    - test.flow.yaml: the capture's `bindings` become one entry per discovered
      binding (`resource` = its resourceConfig, `disable: true` if marked, `target` =
      `<prefix>/<recommendedName>`), `<prefix>/flow.yaml` is added to `import` (listed
      first in the file); everything else, including the endpoint config as written
      in the file, is kept.
    - `<prefix>/flow.yaml`: `collections`, sorted by name, each with
      `schema: <recommendedName>.schema.yaml` and `key`.
    - `<prefix>/<recommendedName>.schema.yaml` per binding, holding its documentSchema;
      other `*.schema.yaml` files under `<prefix>/` are deleted.

    Returns the files written. `<prefix>` is the capture name's prefix (`acmeCo`).
    """
    src = source if isinstance(source, FlowSource) else load_source(source)
    prefix = src.prefix
    root = src.path.parent
    catalog_dir = root / prefix
    catalog_dir.mkdir(parents=True, exist_ok=True)

    document = _load_yaml(src.path) or {}
    capture = document["captures"][src.capture]
    new_bindings = []
    for binding in bindings:
        entry: dict[str, Any] = {"resource": binding["resourceConfig"]}
        if binding.get("disable"):
            entry["disable"] = True
        entry["target"] = f"{prefix}/{binding['recommendedName']}"
        new_bindings.append(entry)
    capture["bindings"] = new_bindings

    flow_import = f"{prefix}/flow.yaml"
    imports = list(document.get("import") or [])
    if flow_import not in imports:
        imports.append(flow_import)
    rewritten = {"import": imports, **{k: v for k, v in document.items() if k != "import"}}

    written: list[Path] = []
    schema_files: set[Path] = set()
    collections_doc: dict[str, Any] = {}
    for binding in sorted(bindings, key=lambda b: str(b["recommendedName"])):
        name = str(binding["recommendedName"])
        schema_path = catalog_dir / f"{name}.schema.yaml"
        schema_path.parent.mkdir(parents=True, exist_ok=True)
        schema_path.write_text(_dump_yaml(binding["documentSchema"]))
        schema_files.add(schema_path.resolve())
        written.append(schema_path)
        collections_doc[f"{prefix}/{name}"] = {
            "schema": f"{name}.schema.yaml",
            "key": list(binding.get("key") or []),
        }

    for stale in catalog_dir.rglob("*.schema.yaml"):
        if stale.resolve() not in schema_files:
            stale.unlink()

    flow_path = catalog_dir / "flow.yaml"
    flow_path.write_text(_dump_yaml({"collections": collections_doc}))
    src.path.write_text(_dump_yaml(rewritten))
    return [src.path, flow_path, *written]


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


# --------------------------------------------------------------------------------------
# The CaptureSpec


def state_key(resource_path: Sequence[str], backfill: int = 0) -> str:
    """The binding's stateKey, as Flow derives it from the resource path.

    Components are joined with `/`; every character that is not a Unicode letter or
    digit or one of `-_+.=` (the joining `/` included) is percent-encoded as UTF-8;
    `.v<backfill>` is appended when the counter is non-zero. `["Account"]` gives
    `Account`; `["public", "table"], 1` gives `public%2Ftable.v1`.
    """
    out: list[str] = []
    for char in "/".join(resource_path):
        if char in "-_+.=" or char.isalnum():
            out.append(char)
        else:
            out.append(urllib.parse.quote(char, safe=""))
    key = "".join(out)
    return f"{key}.v{backfill}" if backfill else key


def resource_path(resource: Mapping[str, Any], pointers: Sequence[str]) -> list[str]:
    """The binding's resource path: the value at each pointer, as a string ("" if absent)."""
    path = []
    for pointer in pointers:
        value = resolve_pointer(resource, pointer)
        path.append("" if value is None else value if isinstance(value, str) else _dumps(value).decode())
    return path


def capture_spec(source: FlowSource, resource_path_pointers: Sequence[str]) -> dict[str, Any]:
    """The CaptureSpec Flow would build for Apply and Open: enabled bindings only.

    Raises HarnessError when two bindings share a state key, as Flow's build does.
    """
    bindings = []
    seen: dict[str, str] = {}
    for binding in source.enabled_bindings:
        path = resource_path(binding.resource, resource_path_pointers)
        key = state_key(path, binding.backfill)
        if key in seen:
            raise HarnessError(
                f"{source.path}: bindings {seen[key]!r} and {binding.target!r} share state key {key!r}"
            )
        seen[key] = binding.target
        bindings.append(
            {
                "collection": source.collection(binding.target).spec(),
                "resourceConfig": binding.resource,
                "resourcePath": path,
                "stateKey": key,
                "backfill": binding.backfill,
            }
        )
    return {
        "name": source.capture,
        "connectorType": "LOCAL",
        "config": source.require_config(),
        "intervalSeconds": source.interval_seconds,
        "bindings": bindings,
    }


# --------------------------------------------------------------------------------------
# Preview: results


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

    `stop_reason` is one of "transactions", "checkpoints", "until", "duration",
    "exited", or "error" for a session that raised (found in the error's `result`).
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """When one preview session stops (see the module docstring for exact semantics).

    transactions: flowctl's per-session target; negative means unlimited.
    delay: seconds per transaction; None uses `preview(delay=...)`.
    checkpoints: stop after this many checkpoints that carried documents.
    until: stop after the checkpoint for which it returns true.
    duration: stop this many seconds after `opened`, whatever was read.
    timeout: None uses `preview(timeout=...)`; `math.inf` disables it.
    """

    transactions: int = 1
    delay: float | None = None
    checkpoints: int | None = None
    until: Callable[[Progress], bool] | None = None
    duration: float | None = None
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


# --------------------------------------------------------------------------------------
# Preview: running sessions


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
        drain = _StderrDrain(process.stderr, on_log)
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
                if not selector.select(self._next_wakeup()):
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
                self._on_tick(time.monotonic(), result)

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
        return min([1.0, *(max(0.0, d - time.monotonic()) for d in deadlines)])

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


# --------------------------------------------------------------------------------------
# State and documents


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: `target` with `patch` applied. Neither argument is modified."""
    return _merge_patch_in_place(copy.deepcopy(target), patch)


def _merge_patch_in_place(target: Any, patch: Any) -> Any:
    """Apply `patch` to `target`, modifying `target`; returns the result.

    Values taken from `patch` are copied, so later patches never alter a patch
    that a Checkpoint record still holds.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            target[key] = _merge_patch_in_place(target.get(key), value)
        else:
            target[key] = copy.deepcopy(value) if isinstance(value, list) else value
    return target


def _compose_patches(first: Any, second: Any) -> Any:
    """One merge patch with the effect of `first` then `second` (nulls are kept, as deletions)."""
    if not isinstance(second, dict) or not isinstance(first, dict):
        return copy.deepcopy(second)
    out = dict(first)
    for key, value in second.items():
        out[key] = (
            _compose_patches(first[key], value)
            if isinstance(value, dict) and isinstance(first.get(key), dict)
            else copy.deepcopy(value)
        )
    return out


def resolve_pointer(document: Any, pointer: str) -> Any:
    """The value at a JSON pointer (`/a/0/b`, with `~1` and `~0` escapes), or None if absent."""
    if pointer == "":
        return document
    if not pointer.startswith("/"):
        raise HarnessError(f"not a JSON pointer: {pointer!r}")
    value = document
    for token in pointer[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict):
            if token not in value:
                return None
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            return None
    return value


def key_of(document: Any, key: Sequence[str]) -> tuple[Any, ...]:
    """The document's collection key: the values at `key`'s pointers (None where absent)."""
    return tuple(resolve_pointer(document, pointer) for pointer in key)


def _is_deletion(document: Any) -> bool:
    meta = document.get("_meta") if isinstance(document, dict) else None
    return isinstance(meta, dict) and meta.get("op") == "d"


def reduce_by_key(documents: Iterable[Any], key: Sequence[str]) -> dict[tuple[Any, ...], Any]:
    """What a collection holds after `documents`: the last document per key, keys in the order
    they were (re-)created.

    A deletion (`_meta.op == "d"`) removes its key; a later document re-creates it.
    This is last-write-wins only: schema `reduce` annotations are not applied.
    """
    reduced: dict[tuple[Any, ...], Any] = {}
    for document in documents:
        document_key = key_of(document, key)
        if _is_deletion(document):
            reduced.pop(document_key, None)
        else:
            reduced[document_key] = document
    return reduced


def _packed_order(value: Any) -> tuple[Any, ...]:
    """A sort key approximating Flow's packed-key order: null < string < integer < float < false < true;
    strings by UTF-8 bytes; arrays and objects (rare as keys) by their JSON text, after strings."""
    if value is None:
        return (0,)
    if isinstance(value, str):
        return (1, value.encode())
    if isinstance(value, bool):
        return (5, value)
    if isinstance(value, int):
        return (3, value)
    if isinstance(value, float):
        return (4, value)
    return (2, _dumps_sorted(value))


def flowctl_documents(
    result: PreviewResult, *, commits: Iterable[Commit] | None = None
) -> list[tuple[str, Any]]:
    """The documents as `flowctl preview` prints them.

    Per transaction: documents combined by (collection, key), last write wins (a
    deletion is kept as the final document); ordered by binding, then by key in
    Flow's packed-key order; `_meta.uuid` set to UUID_PLACEHOLDER; object keys
    sorted recursively. Pass `commits` to render only some transactions.
    """
    order = {name: index for index, name in enumerate(result.collections)}
    out: list[tuple[str, Any]] = []
    for commit in result.commits if commits is None else commits:
        combined: dict[tuple[str, tuple[Any, ...]], Any] = {}
        for collection, document in commit.documents:
            combined[(collection, key_of(document, result.collections[collection].key))] = document
        ranked = sorted(
            combined.items(),
            key=lambda item: (order[item[0][0]], tuple(_packed_order(v) for v in item[0][1])),
        )
        out.extend((collection, sort_keys(_with_uuid(document))) for (collection, _), document in ranked)
    return out


def _with_uuid(document: Any) -> Any:
    if not isinstance(document, dict):
        return document
    meta = document.get("_meta")
    return {**document, "_meta": {**(meta if isinstance(meta, dict) else {}), "uuid": UUID_PLACEHOLDER}}


# --------------------------------------------------------------------------------------
# Normalisation for snapshot tests


def sort_keys(value: Any) -> Any:
    """`value` with every object's keys sorted, recursively (flowctl prints documents so)."""
    if isinstance(value, dict):
        return {k: sort_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sort_keys(v) for v in value]
    return value


def redact(value: Any, fields: AbstractCollection[str], placeholder: Any = "redacted") -> Any:
    """`value` with the value of every property named in `fields`, at any depth, replaced by `placeholder`."""
    if isinstance(value, dict):
        return {k: placeholder if k in fields else redact(v, fields, placeholder) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, fields, placeholder) for v in value]
    return value


def first_per_collection(documents: Iterable[tuple[str, Any]], *, sort: bool = True) -> list[tuple[str, Any]]:
    """The first document of each collection, in first-appearance order, then
    (with `sort`) stably sorted by collection name."""
    first: dict[str, Any] = {}
    for collection, document in documents:
        first.setdefault(collection, document)
    items = list(first.items())
    return sorted(items, key=lambda item: item[0]) if sort else items


def capture_snapshot(
    result: PreviewResult, *, redact_fields: AbstractCollection[str] = ()
) -> list[list[Any]]:
    """The normalised capture output Estuary's snapshot tests compare, ready for `snapshot(...) ==`.

    flowctl's printed documents (`flowctl_documents`), the first per collection,
    sorted by collection name, with `redact_fields` replaced by "redacted", as
    JSON-ready `[collection, document]` pairs.
    """
    return [[c, redact(d, redact_fields)] for c, d in first_per_collection(flowctl_documents(result))]


# --------------------------------------------------------------------------------------
# CLI


def _print_line(value: Any) -> None:
    sys.stdout.buffer.write(_dumps(value) + b"\n")
    sys.stdout.buffer.flush()


def _load_state_argument(value: str) -> dict[str, Any]:
    """`--initial-state`: inline JSON if it starts with `{`, else a JSON or YAML file."""
    loaded: dict[str, Any] = (
        _loads(value) if value.lstrip().startswith("{") else _load_yaml(Path(value)) or {}
    )
    return loaded


def _parse_json_or_file(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return _load_state_argument(value)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tests.flow_harness spec|discover|validate|preview --source F ...`; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.flow_harness", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        sub.add_argument("--source", required=True, help="the catalog, e.g. test.flow.yaml")
        sub.add_argument("--config", help="endpoint config replacing the catalog's (JSON text or a file)")
        sub.add_argument(
            "--config-patch", help="RFC 7396 merge patch for the endpoint config (JSON text or a file)"
        )
        sub.add_argument(
            "--env", action="append", default=[], metavar="NAME=VALUE", help="extra connector environment"
        )
        sub.add_argument(
            "--timeout",
            type=parse_duration,
            default=None,
            help="give up on a silent connector after this long (e.g. 60s; preview default: never)",
        )
        return sub

    add("spec", "print the Spec response like `flowctl raw spec`")
    discover_cmd = add("discover", "print discovered bindings like `flowctl raw discover -o json --emit-raw`")
    discover_cmd.add_argument(
        "--write", action="store_true", help="rewrite the catalog like plain `flowctl raw discover`"
    )
    add("validate", "print the Validated response")
    preview_cmd = add("preview", "run the capture like `flowctl preview`")
    preview_cmd.add_argument(
        "--sessions",
        type=_sessions_argument,
        default=[-1],
        help="comma-separated transactions per session; -1 = unlimited (the default)",
    )
    preview_cmd.add_argument(
        "--delay",
        type=parse_duration,
        default=DEFAULT_DELAY,
        help="time per transaction, e.g. 10s (default 2s)",
    )
    preview_cmd.add_argument("--initial-state", help="initial connector state (JSON text or a file)")
    preview_cmd.add_argument(
        "--output-state", action="store_true", help='also print ["connectorState", {...}] lines'
    )
    preview_cmd.add_argument(
        "--count-only", action="store_true", help="print per-transaction counts to stderr instead"
    )
    preview_cmd.add_argument(
        "--log-json", action="store_true", help="copy connector logs to stderr as they arrive"
    )
    args = parser.parse_args(argv)

    try:
        source = load_source(
            args.source,
            config=_parse_json_or_file(args.config),
            config_patch=_parse_json_or_file(args.config_patch),
            env=dict(item.split("=", 1) for item in args.env),
        )
        timeout = args.timeout
        if args.command == "spec":
            _print_line(spec(source, timeout=timeout or DEFAULT_TIMEOUT))
        elif args.command == "discover":
            bindings = discover(source, write=args.write, timeout=timeout or DEFAULT_TIMEOUT)
            if args.write:
                print(f"Wrote {len(bindings)} bindings under {source.path.as_uri()}.", file=sys.stderr)
            else:
                for binding in bindings:
                    _print_line(binding)
        elif args.command == "validate":
            _print_line(validate(source, timeout=timeout or DEFAULT_TIMEOUT))
        else:
            return _preview_cli(source, args)
    except HarnessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout was closed early (`| head`): stop quietly, and keep Python's exit
        # flush from raising again on the dead pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


def _sessions_argument(value: str) -> list[int]:
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def _preview_cli(source: FlowSource, args: argparse.Namespace) -> int:
    collections_ = {b.target: source.collection(b.target) for b in source.enabled_bindings}
    printer = PreviewResult(capture=source.capture, collections=collections_, sessions=[], state={})

    def print_commit(commit: Commit) -> None:
        if args.count_only:
            counts: collections.Counter[str] = collections.Counter()
            for cp in commit.checkpoints:
                counts.update(cp.counts)
            print(f"session {commit.session} t={commit.elapsed:.1f}s {dict(counts)}", file=sys.stderr)
        else:
            for collection, document in flowctl_documents(printer, commits=[commit]):
                _print_line([collection, document])
        if args.output_state:
            _print_line(["connectorState", commit.state_update])

    def print_log(line: LogLine) -> None:
        print(line.raw, file=sys.stderr, flush=True)

    result = preview(
        source,
        sessions=args.sessions,
        delay=args.delay,
        timeout=args.timeout,
        initial_state=_parse_json_or_file(args.initial_state),
        count_only=args.count_only,
        on_commit=print_commit,
        on_log=print_log if args.log_json else None,
    )
    if args.output_state:
        _print_line(["connectorState", {"updated": result.state, "mergePatch": False}])
    return 0


if __name__ == "__main__":
    sys.exit(main())
