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
  `duration` seconds after `opened`, `stop_on_log(line)` returning true for a
  stderr line (a test's hook; flowctl has none), or the process exiting by itself. Every stop
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

from .build import capture_spec, resource_path, state_key
from .catalog import DEFAULT_INTERVAL_SECONDS as DEFAULT_INTERVAL_SECONDS
from .catalog import Binding, Collection, FlowSource, load_source, parse_duration, write_discovered
from .cli import main as main
from .documents import (
    UUID_PLACEHOLDER,
    capture_snapshot,
    first_per_collection,
    flowctl_documents,
    key_of,
    merge_patch,
    redact,
    reduce_by_key,
    resolve_pointer,
    sort_keys,
)
from .errors import STDERR_TAIL_LINES as STDERR_TAIL_LINES
from .errors import ConnectorError, ConnectorTimeout, HarnessError, ProtocolError, describe_stderr
from .preview import DEFAULT_DELAY as DEFAULT_DELAY
from .preview import FULL_RANGE as FULL_RANGE
from .preview import Session, backfills_complete, preview
from .process import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from .process import DISCOVERED_FIELD_ORDER as DISCOVERED_FIELD_ORDER
from .process import KILL_WAIT_SECONDS as KILL_WAIT_SECONDS
from .process import OPEN_VERSION as OPEN_VERSION
from .process import PIPE_SIZE as PIPE_SIZE
from .process import SPEC_FIELD_ORDER as SPEC_FIELD_ORDER
from .process import LogLine, apply, discover, spec, validate
from .results import Checkpoint, Commit, PreviewResult, Progress, SessionResult
from .session_runner import READ_SIZE as READ_SIZE

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
