"""SalesforceSession against a tiny in-test Salesforce stub: tokens, refresh, errors, limits.

Waits go through the session's injected `sleep`, which records and returns at once: no test
here sleeps for real.
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from estuary_cdk.flow import ValidationError
from estuary_cdk.http import HTTPMixin
from pydantic import BaseModel

from source_bulk_export.auth import (
    LIMIT_WAIT_MAX_SECONDS,
    SERVER_ERROR_ATTEMPTS,
    CredentialsError,
    SalesforceError,
    SalesforceSession,
)
from source_bulk_export.models import ClientCredentials, Credentials, OAuthCredentials

log = logging.getLogger("test_auth")

OAUTH = OAuthCredentials(client_id="cid", client_secret="csecret", refresh_token="rtoken")
VERSION = "62.0"
DATA = f"/services/data/v{VERSION}"


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StubOrg:
    """Just enough Salesforce: a token endpoint and scripted data routes behind bearer tokens."""

    url: str = ""
    token_replies: list[Reply] = field(default_factory=list)  # scripted failures, then success
    routes: dict[str, list[Reply]] = field(default_factory=dict)  # a route's last reply repeats
    valid_tokens: set[str] = field(default_factory=set)
    tokens_issued: int = 0
    token_forms: list[dict[str, str]] = field(default_factory=list)
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path_qs, token)
    instance_url: str | None = None
    gate: asyncio.Event | None = None  # when set, data requests wait for it (to overlap them)

    def route(self, path: str, *replies: Reply) -> None:
        self.routes[path] = list(replies)

    def expire_tokens(self) -> None:
        self.valid_tokens.clear()

    async def token(self, request: web.Request) -> web.Response:
        form = {key: str(value) for key, value in (await request.post()).items()}
        self.token_forms.append(form)
        if self.token_replies:
            reply = self.token_replies.pop(0)
            return web.json_response(reply.body, status=reply.status)
        self.tokens_issued += 1
        token = f"00D!token-{self.tokens_issued}"
        self.valid_tokens.add(token)
        return web.json_response(
            {
                "access_token": token,
                "instance_url": self.instance_url or self.url,
                "id": f"{self.url}/id/00D/005",
                "token_type": "Bearer",
                "issued_at": "1700000000000",
                "signature": "sig",
                "scope": "api refresh_token",
            }
        )

    async def data(self, request: web.Request) -> web.StreamResponse:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen.append((request.method, request.path_qs, token))
        if self.gate is not None:
            await self.gate.wait()
        if token not in self.valid_tokens:
            return web.json_response(
                [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], status=401
            )
        replies = self.routes.get(request.path)
        if not replies:
            return web.json_response(
                [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}], status=404
            )
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        return web.Response(
            status=reply.status, body=body, headers={"Content-Type": "application/json", **reply.headers}
        )


class Http(HTTPMixin):
    """The connector's HTTP layer, without the connector."""


@dataclass
class Harness:
    org: StubOrg
    http: Http
    sleeps: list[float]

    def session(
        self,
        credentials: Credentials = OAUTH,
        login_url: str | None = None,
        on_sleep: Callable[[], None] = lambda: None,
    ) -> SalesforceSession:
        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)
            on_sleep()

        return SalesforceSession(self.http, credentials, login_url or self.org.url, VERSION, sleep=sleep)


@pytest_asyncio.fixture
async def stub() -> AsyncIterator[Harness]:
    org = StubOrg()
    app = web.Application()
    app.router.add_post("/services/oauth2/token", org.token)
    app.router.add_route("*", "/services/{tail:.*}", org.data)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    org.url = str(server.make_url("")).rstrip("/")
    http = Http()
    await http._mixin_enter(log)
    http.rate_limiter.delay = 0.0  # as the connector does
    try:
        yield Harness(org, http, [])
    finally:
        await http._mixin_exit(log)
        await server.close()


class Things(BaseModel):
    things: list[int]


def ok(body: Any = None, **headers: str) -> Reply:
    return Reply(200, {"things": [1, 2]} if body is None else body, headers)


def sf_error(status: int, code: str, message: str = "nope") -> Reply:
    return Reply(status, [{"message": message, "errorCode": code}])


# --- tokens ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_one_token_for_many_requests(stub: Harness) -> None:
    stub.org.route(f"{DATA}/things", ok())
    session = stub.session()
    assert await session.data_url(log) == f"{stub.org.url}{DATA}"
    results = await asyncio.gather(*(session.request_model(log, "/things", Things) for _ in range(10)))
    assert all(r.things == [1, 2] for r in results)
    await session.request(log, "/things")
    assert stub.org.tokens_issued == session.tokens_fetched == 1
    assert stub.org.token_forms == [
        {"grant_type": "refresh_token", "client_id": "cid", "client_secret": "csecret", "refresh_token": "rtoken"}
    ]


@pytest.mark.asyncio
async def test_client_credentials_grant(stub: Harness) -> None:
    stub.org.route(f"{DATA}/things", ok())
    session = stub.session(ClientCredentials(client_id="cid", client_secret="csecret"))
    await session.request(log, "/things")
    assert stub.org.token_forms == [
        {"grant_type": "client_credentials", "client_id": "cid", "client_secret": "csecret"}
    ]


@pytest.mark.asyncio
async def test_expired_session_refreshes_once_and_replays(stub: Harness) -> None:
    stub.org.route(f"{DATA}/things", ok())
    session = stub.session()
    await session.request(log, "/things")
    stub.org.expire_tokens()
    assert (await session.request_model(log, "/things", Things)).things == [1, 2]
    assert stub.org.tokens_issued == 2
    # The request, its 401, and the replay with the new token.
    assert [token for _, _, token in stub.org.seen] == ["00D!token-1", "00D!token-1", "00D!token-2"]


@pytest.mark.asyncio
async def test_a_second_401_raises(stub: Harness) -> None:
    # Every token passes the stub's check, and the route itself answers 401 whatever the token.
    stub.org.valid_tokens = _AllTokens()
    stub.org.route(f"{DATA}/things", sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid"))
    session = stub.session()
    with pytest.raises(SalesforceError) as caught:
        await session.request(log, "/things")
    assert caught.value.status == 401
    assert caught.value.error_code == "INVALID_SESSION_ID"
    assert stub.org.tokens_issued == 2  # the first token and exactly one refresh
    assert len(stub.org.seen) == 2


class _AllTokens(set[str]):
    def __contains__(self, item: object) -> bool:
        return True


@pytest.mark.asyncio
async def test_concurrent_401s_cause_one_refresh(stub: Harness) -> None:
    stub.org.route(f"{DATA}/things", ok())
    session = stub.session()
    await session.request(log, "/things")
    stub.org.expire_tokens()
    gate = stub.org.gate = asyncio.Event()
    pending = [asyncio.create_task(session.request(log, "/things")) for _ in range(8)]
    while len(stub.org.seen) < 9:  # all eight are at the server with the stale token
        await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(*pending)
    assert stub.org.tokens_issued == 2


@pytest.mark.parametrize(
    ("error", "description", "credentials", "field", "says"),
    [
        ("invalid_grant", "expired access/refresh token", OAUTH, "refresh_token", "Re-authorise"),
        ("invalid_client_id", "client identifier invalid", OAUTH, "client_id", "Consumer Key"),
        ("invalid_client", "invalid client credentials", OAUTH, "client_secret", "Consumer Secret"),
        ("invalid_grant", "inactive user", OAUTH, "credentials", "inactive"),
        (
            "invalid_grant",
            "request not supported on this domain",
            ClientCredentials(client_id="c", client_secret="s"),
            "login_url",
            "My Domain",
        ),
        (
            "invalid_grant",
            "no client credentials user enabled",
            ClientCredentials(client_id="c", client_secret="s"),
            "credentials",
            "run-as user",
        ),
    ],
)
@pytest.mark.asyncio
async def test_token_refusals_say_what_to_fix(
    stub: Harness, error: str, description: str, credentials: Credentials, field: str, says: str
) -> None:
    stub.org.token_replies = [Reply(400, {"error": error, "error_description": description})]
    with pytest.raises(CredentialsError) as caught:
        await stub.session(credentials).data_url(log)
    assert caught.value.field == field
    assert caught.value.error_code == error
    assert says in str(caught.value)
    assert description in str(caught.value)
    assert isinstance(caught.value, ValidationError)  # printed without a traceback by the CDK


@pytest.mark.asyncio
async def test_a_login_url_that_is_not_salesforce(stub: Harness) -> None:
    with pytest.raises(CredentialsError) as caught:
        await stub.session(login_url=f"{stub.org.url}/elsewhere").data_url(log)
    assert caught.value.field == "login_url"
    assert "did not answer like a Salesforce login server (HTTP 404" in str(caught.value)


@pytest.mark.asyncio
async def test_instance_url_must_be_https_off_this_machine(stub: Harness) -> None:
    stub.org.instance_url = "http://acme.my.salesforce.com"
    with pytest.raises(CredentialsError, match="will not send tokens"):
        await stub.session().data_url(log)


# --- data errors, limits, retries ------------------------------------------------------------


@pytest.mark.asyncio
async def test_error_array_becomes_salesforce_error(stub: Harness) -> None:
    stub.org.route(
        f"{DATA}/query",
        Reply(
            400,
            [
                {
                    "message": "No such column 'Nope' on entity 'Account'",
                    "errorCode": "INVALID_FIELD",
                    "fields": ["Nope"],
                }
            ],
        ),
    )
    with pytest.raises(SalesforceError) as caught:
        await stub.session().request(log, "/query", params={"q": "SELECT Nope FROM Account"})
    err = caught.value
    assert (err.status, err.code, err.error_code) == (400, 400, "INVALID_FIELD")
    assert err.message == "No such column 'Nope' on entity 'Account'"
    assert err.url.startswith(f"{stub.org.url}{DATA}/query?q=SELECT")


@pytest.mark.asyncio
async def test_request_limit_waits_with_capped_backoff_and_retries(
    stub: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    limited = sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
    stub.org.route(f"{DATA}/things", *([limited] * 8), ok())
    with caplog.at_level(logging.WARNING):
        result = await stub.session().request_model(log, "/things", Things)
    assert result.things == [1, 2]
    assert stub.sleeps == [
        30,
        60,
        120,
        240,
        480,
        LIMIT_WAIT_MAX_SECONDS,
        LIMIT_WAIT_MAX_SECONDS,
        LIMIT_WAIT_MAX_SECONDS,
    ]
    waits = [r for r in caplog.records if "API limit exceeded" in r.getMessage()]
    assert len(waits) == 8


@pytest.mark.asyncio
async def test_a_token_that_expires_while_waiting_out_limits_is_refreshed_again(stub: Harness) -> None:
    session = stub.session(on_sleep=stub.org.expire_tokens)
    limited = sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
    stub.org.route(f"{DATA}/things", ok())
    await session.request(log, "/things")
    # Expired, refreshed and replayed; the replay meets the limit; the token expires again
    # during the wait; the next attempt refreshes once more and succeeds.
    stub.org.expire_tokens()
    stub.org.route(f"{DATA}/things", limited, ok())
    assert (await session.request_model(log, "/things", Things)).things == [1, 2]
    assert stub.org.tokens_issued == 3
    assert stub.sleeps == [30]


@pytest.mark.asyncio
async def test_login_server_errors_are_retried(stub: Harness) -> None:
    stub.org.token_replies = [Reply(503, {"error": "unavailable"}), Reply(500, {"error": "oops"})]
    stub.org.route(f"{DATA}/things", ok())
    await stub.session().request(log, "/things")
    assert stub.org.tokens_issued == 1
    assert stub.sleeps == [1, 2]


@pytest.mark.asyncio
async def test_other_403s_raise(stub: Harness) -> None:
    stub.org.route(
        f"{DATA}/things",
        sf_error(403, "API_DISABLED_FOR_ORG", "API is not enabled for this Salesforce Organization or Partner"),
    )
    with pytest.raises(SalesforceError) as caught:
        await stub.session().request(log, "/things")
    assert caught.value.error_code == "API_DISABLED_FOR_ORG"
    assert stub.sleeps == []


@pytest.mark.asyncio
async def test_server_errors_are_retried_then_succeed(stub: Harness) -> None:
    stub.org.route(f"{DATA}/things", sf_error(503, "SERVER_UNAVAILABLE"), Reply(500, b"<html>oops</html>"), ok())
    assert (await stub.session().request_model(log, "/things", Things)).things == [1, 2]
    assert stub.sleeps == [1, 2]


@pytest.mark.asyncio
async def test_server_errors_are_retried_a_bounded_number_of_times(stub: Harness) -> None:
    stub.org.route(f"{DATA}/things", Reply(502, b"Bad Gateway"))
    with pytest.raises(SalesforceError) as caught:
        await stub.session().request(log, "/things")
    assert caught.value.status == 502
    assert caught.value.error_code == ""
    assert caught.value.message == "Bad Gateway"
    assert len(stub.org.seen) == SERVER_ERROR_ATTEMPTS
    assert stub.sleeps == [1, 2, 4, 8]


@pytest.mark.asyncio
async def test_paths_relative_to_data_url_or_verbatim(stub: Harness) -> None:
    stub.org.route(f"{DATA}/query/01gXX-2000", ok())
    stub.org.route(f"{DATA}/sobjects/", ok())
    session = stub.session()
    await session.request(log, "/sobjects/")
    await session.request(log, f"{DATA}/query/01gXX-2000")
    assert [path for _, path, _ in stub.org.seen] == [f"{DATA}/sobjects/", f"{DATA}/query/01gXX-2000"]
    with pytest.raises(ValueError):
        await session.request(log, "sobjects")


@pytest.mark.asyncio
async def test_methods_and_json_bodies(stub: Harness) -> None:
    stub.org.route(f"{DATA}/jobs/query", ok({"id": "750", "state": "UploadComplete"}))
    stub.org.route(f"{DATA}/jobs/query/750", Reply(204, b""))
    session = stub.session()
    await session.request(
        log, "/jobs/query", method="POST", json={"operation": "query", "query": "SELECT Id FROM Account"}
    )
    assert await session.request(log, "/jobs/query/750", method="DELETE") == b""
    assert [method for method, _, _ in stub.org.seen] == ["POST", "DELETE"]


@pytest.mark.asyncio
async def test_request_stream(stub: Harness) -> None:
    stub.org.route(f"{DATA}/jobs/query/750/results", Reply(200, b'"Id"\n"001"\n', {"Sforce-Locator": "null"}))
    headers, body = await stub.session().request_stream(log, "/jobs/query/750/results", params={"maxRecords": 10})
    assert headers["Sforce-Locator"] == "null"
    assert b"".join([chunk async for chunk in body()]) == b'"Id"\n"001"\n'
    assert stub.org.seen[0][1] == f"{DATA}/jobs/query/750/results?maxRecords=10"


@pytest.mark.asyncio
async def test_api_usage_is_logged_at_thresholds(stub: Harness, caplog: pytest.LogCaptureFixture) -> None:
    usage = [10, 4_000, 5_000, 5_100, 7_600, 9_000, 9_600, 9_700]
    stub.org.route(f"{DATA}/things", *[ok(**{"Sforce-Limit-Info": f"api-usage={u}/10000"}) for u in usage])
    session = stub.session()
    with caplog.at_level(logging.INFO):
        for _ in usage:
            await session.request(log, "/things")
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if "daily API usage" in r.getMessage()]
    assert logged == [
        ("INFO", "Salesforce daily API usage passed 50 percent of the org's allocation"),
        ("INFO", "Salesforce daily API usage passed 75 percent of the org's allocation"),
        ("WARNING", "Salesforce daily API usage passed 90 percent of the org's allocation"),
        ("WARNING", "Salesforce daily API usage passed 95 percent of the org's allocation"),
    ]
