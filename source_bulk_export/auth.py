"""Salesforce sign-in and the single door every data call goes through.

`SalesforceSession` owns the access token (one per process, refreshed only when Salesforce says
it expired) and raises the typed errors of errors.py. It sits on the CDK's
`HTTPSession` but never lets the CDK's `TokenSource` near a request: Salesforce returns no
`expires_in`, and `TokenSource` would then fetch a new token before every request.
"""

import asyncio
import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from logging import Logger
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from estuary_cdk.http import Headers, HTTPError, HTTPSession
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from .errors import (
    TOKEN_PATH,
    CredentialsError,
    SalesforceError,
    credentials_error,
    salesforce_error,
    unpack_http_error,
)
from .models import Credentials, OAuthCredentials, TokenResponse, is_loopback_host

# CredentialsError and SalesforceError are part of this module's interface (docs/internals.md).
__all__ = ["BodyStream", "CredentialsError", "SalesforceError", "SalesforceSession", "Sleep"]

# 403 REQUEST_LIMIT_EXCEEDED means either the org's concurrent long-running request limit
# (clears within seconds to minutes, as other requests finish) or its rolling 24-hour API
# allocation (clears as old calls age out of the window). Start short for the first case and
# back off to a quarter hour for the second: at that cap a whole day of waiting costs under a
# hundred calls. The wait never gives up, because ending a fetch early would look like success.
LIMIT_WAIT_INITIAL_SECONDS = 30.0
LIMIT_WAIT_MAX_SECONDS = 15 * 60.0

# 5xx responses are transient on Salesforce (maintenance, instance failover). The CDK's own 5xx
# retry has no pause once the rate limiter's delay is 0, so the CDK is told not to retry
# (`_no_cdk_retry`) and this module retries with a pause instead: 1, 2, 4, 8 s, then raises,
# so a real outage surfaces within half a minute rather than hanging.
SERVER_ERROR_ATTEMPTS = 5
SERVER_ERROR_WAIT_INITIAL_SECONDS = 1.0
SERVER_ERROR_WAIT_MAX_SECONDS = 30.0

# Reading a buffered response body can fail halfway (connection reset). The CDK's `request`
# re-issues the request up to 3 more times; keep that, but never for POST, where a replay
# would create a second Bulk job.
BODY_READ_ATTEMPTS = 4
BODY_READ_ERRORS = (
    asyncio.TimeoutError,
    aiohttp.ClientPayloadError,
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientOSError,
    ConnectionResetError,
)

# `Sforce-Limit-Info: api-usage=U/L` rides on every data response. Log when usage of the daily
# allocation first climbs past each of these fractions, so a draining org is visible in the
# logs well before calls start failing.
API_USAGE_THRESHOLDS = (0.5, 0.75, 0.9, 0.95)
API_USAGE_WARNING = 0.9
_API_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")


Sleep = Callable[[float], Awaitable[None]]
BodyStream = Callable[[], AsyncGenerator[bytes, None]]


def _no_cdk_retry(status: int, headers: Headers, body: bytes, attempt: int) -> bool:
    """`should_retry` for the CDK: raise every 5xx at once; SalesforceSession retries with pauses."""
    return False


def _backoff(attempt: int, initial: float, cap: float) -> float:
    """Seconds to wait before retry number `attempt` (0-based): doubling from `initial`, capped."""
    return min(cap, initial * 2.0**attempt)


class SalesforceSession:
    """One per connector process, shared by every binding (docs/internals.md fixes this interface).

    Promises:
    - One access token per process, fetched on first use and cached. A 401 invalidates it and
      fetches one new token (serialised by a lock, so concurrent 401s cause one refresh), then
      replays the request once; a 401 to the replay raises SalesforceError.
    - Token endpoint refusals raise CredentialsError; data endpoint errors raise SalesforceError.
    - 403 REQUEST_LIMIT_EXCEEDED waits (logged, capped backoff) and retries without end.
    - 5xx is retried SERVER_ERROR_ATTEMPTS times with pauses, then raised.
    - Connection errors propagate after the CDK's own immediate retries.

    `path` is relative to the data URL ("/jobs/query") or a server path starting with
    "/services/" (a REST nextRecordsUrl), used verbatim. `sleep` exists so tests can wait
    without waiting.
    """

    def __init__(
        self,
        http: HTTPSession,
        credentials: Credentials,
        login_url: str,
        api_version: str,
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._http = http
        self._credentials = credentials
        self._login_url = login_url.rstrip("/")
        self._api_version = api_version
        self._sleep = sleep
        self._token: TokenResponse | None = None
        self._lock = asyncio.Lock()
        self._usage_level = 0.0
        self.tokens_fetched = 0
        """How many access tokens this session has fetched (logged, and read by tests)."""

    async def user_id(self, log: Logger) -> str | None:
        """The Id of the user the connector acts as: the last segment of the token's identity URL
        (`.../id/<org Id>/<user Id>`); None when the token response has no identity URL."""
        token = await self._current_token(log)
        user = token.id.rstrip("/").rpartition("/")[2]
        return user or None

    async def data_url(self, log: Logger) -> str:
        """`<instance_url>/services/data/v<api_version>`, fetching the first token if needed."""
        token = await self._current_token(log)
        return f"{token.instance_url}/services/data/v{self._api_version}"

    async def request(
        self,
        log: Logger,
        path: str,
        *,
        method: str = "GET",
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """The whole response body. An interrupted body is re-requested, except for POST."""
        attempt = 1
        while True:
            _, body = await self._open(log, path, method, params, json, headers)
            try:
                return b"".join([chunk async for chunk in body()])
            except BODY_READ_ERRORS as err:
                if method == "POST" or attempt >= BODY_READ_ATTEMPTS:
                    raise
                log.warning(
                    "reading a Salesforce response failed (will retry)",
                    {"path": path, "attempt": attempt, "error": repr(err)},
                )
                attempt += 1

    async def request_model[T: BaseModel](
        self,
        log: Logger,
        path: str,
        model: type[T],
        *,
        method: str = "GET",
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> T:
        """The response body parsed as `model`."""
        body = await self.request(log, path, method=method, params=params, json=json, headers=headers)
        return model.model_validate_json(body)

    async def request_stream(
        self,
        log: Logger,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[Headers, BodyStream]:
        """A GET whose body is streamed. Errors after the headers (a reset mid-body) propagate."""
        return await self._open(log, path, "GET", params, None, headers)

    # -----------------------------------------------------------------------------------------

    def _url(self, instance_url: str, path: str) -> str:
        if path.startswith("/services/"):
            return f"{instance_url}{path}"
        if not path.startswith("/"):
            raise ValueError(f"Salesforce path must start with '/': {path!r}")
        return f"{instance_url}/services/data/v{self._api_version}{path}"

    async def _open(
        self,
        log: Logger,
        path: str,
        method: str,
        params: dict[str, Any] | None,
        json: dict[str, Any] | None,
        headers: dict[str, str] | None,
    ) -> tuple[Headers, BodyStream]:
        refreshed = False
        limit_waits = 0
        server_errors = 0
        while True:
            token = await self._current_token(log)
            url = self._url(token.instance_url, path)
            try:
                response_headers, body = await self._http.request_stream(
                    log,
                    url,
                    method=method,
                    params=params,
                    json=json,
                    with_token=False,
                    # A fresh dict each attempt: the CDK mutates the one it is given.
                    headers={**(headers or {}), "Authorization": f"Bearer {token.access_token}"},
                    should_retry=_no_cdk_retry,
                )
            except HTTPError as err:
                error_url, error_body = unpack_http_error(err)
                error = salesforce_error(err.code, error_body, error_url or url)

                if error.status == 401 and not refreshed:
                    # Salesforce's only 401 is an expired or invalid session
                    # (INVALID_SESSION_ID; Bulk spells it InvalidSessionId).
                    log.info(
                        "Salesforce session expired, fetching a new access token",
                        {"path": path, "error_code": error.error_code},
                    )
                    await self._refresh(log, stale=token)
                    refreshed = True
                    continue
                # A 401 counts as "second" only right after a replay: a token may well expire
                # again during hours of waiting out limits, and that deserves its own refresh.
                refreshed = False
                if error.status == 403 and error.error_code == "REQUEST_LIMIT_EXCEEDED":
                    await self._wait(
                        log,
                        "Salesforce API limit exceeded, waiting before retrying",
                        error,
                        limit_waits,
                        LIMIT_WAIT_INITIAL_SECONDS,
                        LIMIT_WAIT_MAX_SECONDS,
                    )
                    limit_waits += 1
                    continue
                if await self._pause_after_server_error(log, "Salesforce server error", error, server_errors):
                    server_errors += 1
                    continue
                raise error from None

            self._observe_api_usage(log, response_headers)
            return response_headers, body

    async def _pause_after_server_error(self, log: Logger, what: str, error: SalesforceError, attempt: int) -> bool:
        """Wait before retrying a 5xx and return True, or return False once attempts are spent
        (or the error is not a 5xx)."""
        if not 500 <= error.status < 600 or attempt + 1 >= SERVER_ERROR_ATTEMPTS:
            return False
        await self._wait(log, f"{what}, waiting before retrying", error, attempt,
                         SERVER_ERROR_WAIT_INITIAL_SECONDS, SERVER_ERROR_WAIT_MAX_SECONDS)
        return True

    async def _wait(
        self, log: Logger, msg: str, error: SalesforceError, attempt: int, initial: float, cap: float
    ) -> None:
        seconds = _backoff(attempt, initial, cap)
        log.warning(
            msg,
            {
                "status": error.status,
                "error_code": error.error_code,
                "message": error.message,
                "url": error.url,
                "attempt": attempt + 1,
                "wait_seconds": seconds,
            },
        )
        await self._sleep(seconds)

    def _observe_api_usage(self, log: Logger, headers: Headers) -> None:
        match = _API_USAGE.search(headers.get("Sforce-Limit-Info", ""))
        if match is None or int(match[2]) <= 0:
            return
        used, allowed = int(match[1]), int(match[2])
        level = max((t for t in API_USAGE_THRESHOLDS if used / allowed >= t), default=0.0)
        if level > self._usage_level:
            log.log(
                logging.WARNING if level >= API_USAGE_WARNING else logging.INFO,
                # No "%" in the text: log messages are %-formatted with their arguments.
                f"Salesforce daily API usage passed {round(level * 100)} percent of the org's allocation",
                {"api_usage": used, "api_limit": allowed},
            )
        # Usage is a rolling 24 h window, so it also falls; then a later climb is logged again.
        self._usage_level = level

    # --- tokens ------------------------------------------------------------------------------

    async def _current_token(self, log: Logger) -> TokenResponse:
        token = self._token
        if token is None:
            async with self._lock:
                # Concurrent first requests queue here; only the first one fetches.
                if self._token is None:
                    self._token = await self._fetch_token(log)
                token = self._token
        return token

    async def _refresh(self, log: Logger, stale: TokenResponse) -> None:
        async with self._lock:
            # Another request may have refreshed while this one waited for the lock.
            if self._token is stale or self._token is None:
                self._token = None
                self._token = await self._fetch_token(log)

    async def _fetch_token(self, log: Logger) -> TokenResponse:
        credentials = self._credentials
        form: dict[str, Any]
        if isinstance(credentials, OAuthCredentials):
            form = {
                "grant_type": "refresh_token",
                "client_id": credentials.client_id,
                "client_secret": credentials.client_secret,
                "refresh_token": credentials.refresh_token,
            }
        else:
            form = {
                "grant_type": "client_credentials",
                "client_id": credentials.client_id,
                "client_secret": credentials.client_secret,
            }
        url = f"{self._login_url}{TOKEN_PATH}"

        server_errors = 0
        while True:
            try:
                body = await self._http.request(
                    log,
                    url,
                    method="POST",
                    form=form,
                    with_token=False,
                    headers={"Accept": "application/json"},
                    should_retry=_no_cdk_retry,
                )
                break
            except HTTPError as err:
                _, error_body = unpack_http_error(err)
                if 500 <= err.code < 600:
                    error = salesforce_error(err.code, error_body, url)
                    if await self._pause_after_server_error(log, "Salesforce login server error", error, server_errors):
                        server_errors += 1
                        continue
                    raise error from None
                raise credentials_error(err.code, error_body, credentials, self._login_url) from None

        try:
            token = TokenResponse.model_validate_json(body)
        except PydanticValidationError:
            raise credentials_error(200, body, credentials, self._login_url) from None
        token.instance_url = self._check_instance_url(token.instance_url)

        self.tokens_fetched += 1
        log.info(
            "fetched a Salesforce access token",
            {
                "login_url": self._login_url,
                "instance_url": token.instance_url,
                "grant_type": form["grant_type"],
                "tokens_fetched": self.tokens_fetched,
            },
        )
        if (
            token.refresh_token
            and isinstance(credentials, OAuthCredentials)
            and token.refresh_token != credentials.refresh_token
        ):
            log.warning(
                "the connected app rotates refresh tokens, so the configured refresh_token may stop working; "
                "turn off refresh token rotation for this connected app"
            )
        return token

    def _check_instance_url(self, instance_url: str) -> str:
        parts = urlsplit(instance_url)
        host = parts.hostname or ""
        # The access token goes to this host on every request: never in clear text off this machine.
        if not host or not (parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(host))):
            raise CredentialsError(
                f"Salesforce at {self._login_url} returned an instance_url this connector will not send "
                f"tokens to ({instance_url!r}). Check login_url.",
                field="login_url",
            )
        return f"{parts.scheme}://{parts.netloc}"
