"""Run the emulator standalone until killed:

    python -m tests.emulator --port 8080 --rows 1000000 [--seed 7] [--json]

It prints its base URL (both the login URL and the instance URL) and the credentials it
accepts, either as readable lines or, with ``--json``, as one JSON object on one line
(for scripts), then serves until SIGINT/SIGTERM.
"""

import argparse
import asyncio
import json
import signal
import sys

from aiohttp import web

from .knobs import Knobs
from .org import Org
from .seeding import OrgConfig
from .server import build_app
from .state import EmulatorState


def _object_rows(text: str) -> tuple[str, int]:
    name, _, rows = text.partition("=")
    if not rows.isdigit():
        raise argparse.ArgumentTypeError(f"expected OBJECT=ROWS, got {text!r}")
    return name, int(rows)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.emulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--rows",
        type=int,
        default=1000,
        help="rows of each large object (Account, Contact, Opportunity, BenchRecord__c)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--object-rows",
        type=_object_rows,
        action="append",
        default=[],
        metavar="OBJECT=ROWS",
        help="row count of one object (repeatable)",
    )
    parser.add_argument(
        "--shared-modstamp-rows",
        type=int,
        default=5,
        help="rows sharing one SystemModstamp in each timestamped object",
    )
    parser.add_argument(
        "--in-progress-polls", type=int, default=1, help="job-info polls a Bulk job answers InProgress to"
    )
    parser.add_argument(
        "--in-progress-seconds", type=float, default=0.0, help="minimum age of a Bulk job before it completes"
    )
    parser.add_argument(
        "--optional-object",
        action="append",
        default=[],
        metavar="OBJECT",
        help="also seed this optional object, e.g. WideRecord__c (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    config = OrgConfig(
        seed=args.seed,
        rows=args.rows,
        object_rows=dict(args.object_rows),
        shared_modstamp_rows=args.shared_modstamp_rows,
        optional_objects=tuple(args.optional_object),
    )
    knobs = Knobs(
        job_in_progress_polls=args.in_progress_polls, job_in_progress_seconds=args.in_progress_seconds
    )
    runner = web.AppRunner(build_app(EmulatorState(Org(config), knobs)), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    host, port = runner.addresses[0][:2]
    url = f"http://{host}:{port}"
    credentials = knobs.credentials
    if args.json:
        print(
            json.dumps(
                {
                    "url": url,
                    "client_id": credentials.client_id,
                    "client_secret": credentials.client_secret,
                    "refresh_token": credentials.refresh_token,
                }
            ),
            flush=True,
        )
    else:
        print(
            f"Salesforce emulator serving at {url} (login URL and instance URL)\n"
            f"  client_id:     {credentials.client_id}\n"
            f"  client_secret: {credentials.client_secret}\n"
            f"  refresh_token: {credentials.refresh_token}\n"
            f"  large objects have {args.rows:,} rows; seed {args.seed}",
            flush=True,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
