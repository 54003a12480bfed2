"""The HTTP server: routes, the request pipeline, and running it in a background thread.

Every request to a *data* endpoint (everything under ``/services/data/vNN.N/``) passes
these checks, in order, before its handler runs:

1. the API version is one the org lists, else 404 NOT_FOUND;
2. the 5xx fault knob may answer 503 SERVER_UNAVAILABLE;
3. the bearer token is live, else 401 INVALID_SESSION_ID (§1.6);
4. the API is enabled for the org, else 403 API_DISABLED_FOR_ORG;
5. the org clock is outside the request-limit fault window, else 403
   REQUEST_LIMIT_EXCEEDED with the concurrent-request message (§2.3);
6. the daily request allocation is not spent, else 403 REQUEST_LIMIT_EXCEEDED (§7);
   the request is then counted and its response carries ``Sforce-Limit-Info`` (§2.5).

Every error is answered in Salesforce's shape (a JSON array), including unknown paths.
"""

import asyncio
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Self

from aiohttp import web

from . import handlers
from .auth import bearer_token
from .counters import Counters
from .errors import ApiError, OAuthError, not_found, session_invalid
from .knobs import JobExpiry, JobFailure, Knobs
from .org import Org
from .soql import SoqlError
from .state import LIMIT_INFO, STATE, EmulatorState

DATA = r"/services/data/v{version:\d+\.\d+}"
type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# (method, path, endpoint name, handler); the name is the counters' endpoint name.
ROUTES: list[tuple[str, str, str, Handler]] = [
    ("POST", "/services/oauth2/token", "token", handlers.token),
    ("GET", "/services/data{slash:/?}", "versions", handlers.versions),
    ("GET", DATA + "/sobjects{slash:/?}", "describe_global", handlers.describe_global),
    ("GET", DATA + "/sobjects/{object}/describe{slash:/?}", "describe", handlers.describe),
    ("GET", DATA + "/sobjects/{object}/deleted{slash:/?}", "get_deleted", handlers.get_deleted),
    ("GET", DATA + "/limits{slash:/?}", "limits", handlers.limits),
    ("POST", DATA + "/jobs/query{slash:/?}", "job_create", handlers.job_create),
    ("GET", DATA + "/jobs/query{slash:/?}", "job_list", handlers.job_list),
    ("GET", DATA + "/jobs/query/{job_id}", "job_info", handlers.job_info),
    ("PATCH", DATA + "/jobs/query/{job_id}", "job_abort", handlers.job_abort),
    ("DELETE", DATA + "/jobs/query/{job_id}", "job_delete", handlers.job_delete),
    ("GET", DATA + "/jobs/query/{job_id}/results", "job_results", handlers.job_results),
    ("GET", DATA + "/query{slash:/?}", "query", handlers.query),
    ("GET", DATA + "/queryAll{slash:/?}", "query_all", handlers.query),
    ("GET", DATA + r"/{kind:query|queryAll}/{locator}", "query_more", handlers.query_more),
]
UNAUTHENTICATED = frozenset({"token", "versions"})
# The concurrent long-running request limit's message (§2.3, observed).
CONCURRENT_LIMIT_MESSAGE = "ConcurrentRequests (Concurrent API Requests) Limit exceeded."


@web.middleware
async def salesforce_pipeline(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    route = request.match_info.route
    endpoint = route.name or "unknown"
    state.counters.request(endpoint)
    try:
        if request.match_info.http_exception is not None:
            raise (
                not_found()
                if request.match_info.http_exception.status == 404
                else ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{request.method}' not allowed")
            )
        if endpoint not in UNAUTHENTICATED:
            _admit(request, state, endpoint)
        response = await handler(request)
    except ApiError as error:
        response = error.response()
        if error.status == 401:
            response.headers["WWW-Authenticate"] = "Token"
    except OAuthError as error:
        response = error.response()
    except SoqlError as error:
        response = ApiError.from_soql(error).response()
    if LIMIT_INFO in request and not response.prepared:
        response.headers["Sforce-Limit-Info"] = request[LIMIT_INFO]
    return response


def _admit(request: web.Request, state: EmulatorState, endpoint: str) -> None:
    """Checks 1-6 above; raises the ApiError to answer with."""
    if request.match_info["version"] not in state.knobs.versions:
        raise not_found()
    if state.faults.server_error(endpoint):
        raise ApiError(503, "SERVER_UNAVAILABLE", "Server temporarily unavailable")
    if not state.tokens.check(bearer_token(request)):
        raise session_invalid()
    if not state.knobs.api_enabled:
        raise ApiError(403, "API_DISABLED_FOR_ORG", "The REST API is not enabled for this Organization.")
    if state.faults.request_limited(state.org.clock.now()):
        raise ApiError(403, "REQUEST_LIMIT_EXCEEDED", CONCURRENT_LIMIT_MESSAGE)
    used = state.usage.charge()
    if used is None:
        raise ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
    request[LIMIT_INFO] = f"api-usage={used}/{state.knobs.daily_api_requests}"


def build_app(state: EmulatorState) -> web.Application:
    app = web.Application(middlewares=[salesforce_pipeline])
    app[STATE] = state
    for method, path, name, handler in ROUTES:
        app.router.add_route(method, path, handler, name=name)
    return app


class EmulatorServer:
    """A running emulator: ``with EmulatorServer(org, knobs) as emu: emu.url``.

    The aiohttp server runs on a background thread with its own event loop, so a test can
    spawn the connector as a subprocess pointed at ``emu.url`` and meanwhile mutate
    ``emu.org``, turn ``emu.knobs`` and read ``emu.counters`` from its own thread.
    """

    def __init__(
        self, org: Org | None = None, knobs: Knobs | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.org = org or Org()
        self.knobs = knobs or Knobs()
        self.state = EmulatorState(self.org, self.knobs)
        self._host, self._port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    @property
    def counters(self) -> Counters:
        return self.state.counters

    def start(self) -> Self:
        """Bind (127.0.0.1, an ephemeral port by default) and serve; returns self."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            try:
                self._runner = loop.run_until_complete(self._serve())
            except BaseException as error:  # reported to the starting thread
                failure.append(error)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="salesforce-emulator", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    async def _serve(self) -> web.AppRunner:
        runner = web.AppRunner(build_app(self.state), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self._host, self._port).start()
        host, port = runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return runner

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # -- test controls ----------------------------------------------------------------

    def expire_all_tokens(self) -> None:
        """Invalidate every access token issued so far (data endpoints then answer 401)."""
        self.state.tokens.expire_all()

    def revoke_refresh_tokens(self) -> None:
        """Make every refresh-token grant fail with invalid_grant from now on."""
        self.state.tokens.revoke_refresh_tokens()

    @property
    def api_usage(self) -> int:
        """API requests used of today's allocation (``Knobs.daily_api_requests``)."""
        return self.state.usage.used

    def set_api_usage(self, used: int) -> None:
        """Set the day's usage, e.g. to ``knobs.daily_api_requests`` to exhaust it, or 0
        to refill it."""
        self.state.usage.set(used)

    def fail_next_jobs(
        self, times: int, error_message: str, *, object: str | None = None, query_contains: str | None = None
    ) -> JobFailure:
        """Make the next ``times`` matching Bulk jobs end Failed with ``error_message``."""
        failure = JobFailure(error_message, times, object, query_contains)
        self.state.faults.add_job_failure(failure)
        return failure

    def reset_next_result_pages(self, times: int = 1) -> None:
        """Cut the next ``times`` Bulk result pages off mid-body (connection reset)."""
        self.state.faults.add_result_resets(times)

    def expire_next_jobs(self, times: int = 1, *, after_pages: int = 1, object: str | None = None) -> JobExpiry:
        """Make the next ``times`` Bulk jobs (on ``object``, if set) that serve their
        ``after_pages``-th whole result page, with more to follow, disappear right after it:
        job info and results then answer 404 NOT_FOUND, as for a deleted job."""
        expiry = JobExpiry(after_pages, times, object)
        self.state.faults.add_job_expiry(expiry)
        return expiry

    def exceed_request_limit(self, seconds: float, *, start: datetime | None = None) -> tuple[datetime, datetime]:
        """Answer every data request with 403 REQUEST_LIMIT_EXCEEDED for ``seconds`` of the
        org clock from ``start`` (default: now); returns the window [start, end)."""
        begin = start or self.org.clock.now()
        window = (begin, begin + timedelta(seconds=seconds))
        self.state.faults.set_request_limit_window(window)
        return window

    def reset_counters(self) -> None:
        self.state.counters.reset()
