"""A fake capture connector that replays a script: `python -m tests.toy_connector.scripted`.

It is not a CDK connector. It answers `spec` with a fixed response (resource path
pointer `/name`), `discover` with two fixed bindings (`items`, and `archive`, which
is marked disabled), `validate` with each binding's `name` as its resource path,
and `apply` with an empty action. On `open` it runs the steps in
`capture.config.script`, in order:

    {"out": <json>}                    write one stdout line
    {"batch": [<json>, ...]}           write several stdout lines in one write
    {"raw": "<text>"}                  write text as one stdout line, verbatim
    {"documents": n, "binding": 0}     write n `captured` lines: {"id": i, "pad": ...}
    {"stderr": "<text>", "repeat": n}  write a stderr line n times (default 1)
    {"log_state": true}                log the `open.state` it received, as JSON
    {"sleep": seconds}
    {"exit": code}

Lines read from stdin after `open` (acknowledgements) are logged to stderr as
`{"level":"INFO","msg":"stdin","fields":{"request":...}}`. When the script ends
the process idles until killed, like a capture that found nothing more to do.

It imports only the standard library, so it starts in tens of milliseconds.
"""

import json
import os
import sys
import threading
import time
from typing import Any

SPEC = {
    "protocol": 3032023,
    "configSchema": {"type": "object"},
    "resourceConfigSchema": {"type": "object", "properties": {"name": {"type": "string"}}},
    "documentationUrl": "https://example.com/scripted",
    "resourcePathPointers": ["/name"],
}

DISCOVERED = [
    {
        "recommendedName": "items",
        "resourceConfig": {"name": "items"},
        "documentSchema": {"type": "object", "properties": {"id": {"type": "integer"}}},
        "key": ["/id"],
        "isFallbackKey": False,
        "disable": False,
    },
    {
        "recommendedName": "archive",
        "resourceConfig": {"name": "archive"},
        "documentSchema": {"type": "object"},
        "key": ["/_meta/row_id"],
        "isFallbackKey": False,
        "disable": True,
    },
]

PAD = "x" * 200
"""Filler so scripted documents are about as large as a narrow Salesforce row."""


def log(msg: str, **fields: Any) -> None:
    sys.stderr.write(json.dumps({"level": "INFO", "msg": msg, "fields": fields}) + "\n")
    sys.stderr.flush()


def echo_stdin() -> None:
    for line in sys.stdin.buffer:
        log("stdin", request=json.loads(line))


def run_script(open_request: dict[str, Any]) -> int:
    out = sys.stdout.buffer
    for step in open_request["capture"]["config"].get("script", []):
        if "out" in step:
            out.write(json.dumps(step["out"]).encode() + b"\n")
            out.flush()
        elif "batch" in step:
            out.write(b"".join(json.dumps(message).encode() + b"\n" for message in step["batch"]))
            out.flush()
        elif "raw" in step:
            out.write(step["raw"].encode() + b"\n")
            out.flush()
        elif "documents" in step:
            binding = step.get("binding", 0)
            out.writelines(
                b'{"captured":{"binding":%d,"doc":{"id":%d,"pad":"%s"}}}\n' % (binding, i, PAD.encode())
                for i in range(step["documents"])
            )
            out.flush()
        elif "stderr" in step:
            sys.stderr.write((step["stderr"] + "\n") * step.get("repeat", 1))
            sys.stderr.flush()
        elif "log_state" in step:
            log("open state", state=open_request["state"])
        elif "sleep" in step:
            time.sleep(step["sleep"])
        elif "exit" in step:
            # os._exit: a normal exit would stall on the stdin reader thread's lock.
            out.flush()
            sys.stderr.flush()
            os._exit(int(step["exit"]))
    while True:
        time.sleep(3600)


def unary_response(request: dict[str, Any]) -> dict[str, Any] | None:
    if "spec" in request:
        return {"spec": SPEC}
    if "discover" in request:
        return {"discovered": {"bindings": DISCOVERED}}
    if "validate" in request:
        bindings = request["validate"].get("bindings", [])
        return {
            "validated": {"bindings": [{"resourcePath": [b["resourceConfig"]["name"]]} for b in bindings]}
        }
    if "apply" in request:
        return {"applied": {"actionDescription": ""}}
    return None


def main() -> int:
    request = json.loads(sys.stdin.buffer.readline())
    if "open" in request:
        threading.Thread(target=echo_stdin, daemon=True).start()
        return run_script(request["open"])
    response = unary_response(request)
    if response is None:
        log("unsupported request", request=request)
        return 1
    sys.stdout.write(json.dumps(response) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
