"""The command line: `python -m tests.flow_harness spec|discover|validate|preview --source F ...`."""

from __future__ import annotations

import argparse
import collections
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __doc__ as _package_doc  # The help text is the package docstring's first paragraph.
from ._json import _dumps, _loads
from .catalog import FlowSource, load_source, parse_duration
from .documents import flowctl_documents
from .errors import HarnessError
from .flow_yaml import _load_yaml
from .preview import DEFAULT_DELAY, preview
from .process import DEFAULT_TIMEOUT, LogLine, discover, spec, validate
from .results import Commit, PreviewResult


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
        prog="python -m tests.flow_harness", description=_package_doc.split("\n\n")[0]
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
