"""The emulator's OAuth token endpoint and access-token rules (salesforce-api.md §1)."""

import base64
import hashlib
import hmac
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.emulator import EmulatorClient, EmulatorServer, Knobs, ManualClock, Org, OrgConfig

SESSION_EXPIRED = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
DATA_ENDPOINTS = [
    "/sobjects/",
    "/sobjects/Account/describe/",
    "/limits/",
    "/query?q=SELECT+Id+FROM+Account",
    "/jobs/query/750Em0000000001IAA",
]


@pytest.fixture
def client(emulator: EmulatorServer) -> EmulatorClient:
    return EmulatorClient(emulator.url)


def refresh(client: EmulatorClient, **overrides: str) -> dict[str, str]:
    creds = client.credentials
    return {
        "grant_type": "refresh_token",
        "client_id": creds.client_id,
        "client_secret": creds.client_secret,
        "refresh_token": creds.refresh_token,
        **overrides,
    }


def test_refresh_token_grant_returns_salesforce_fields(
    emulator: EmulatorServer, client: EmulatorClient
) -> None:
    reply = client.token(**refresh(client))

    body = reply.json()
    assert reply.status == 200
    assert set(body) == {
        "access_token",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
        "signature",
        "scope",
    }  # no expires_in, no refresh_token
    assert body["instance_url"] == emulator.url
    assert body["token_type"] == "Bearer"
    assert body["access_token"].startswith("00D") and "!" in body["access_token"]
    assert body["issued_at"].isdigit() and len(body["issued_at"]) == 13
    assert body["id"] == f"{emulator.url}/id/00DEm0000000001MAA/005Em0000000001IAA"
    digest = hmac.new(
        b"emulator-client-secret", (body["id"] + body["issued_at"]).encode(), hashlib.sha256
    ).digest()
    assert body["signature"] == base64.b64encode(digest).decode()
    assert body["scope"] == "api refresh_token"


def test_client_credentials_grant_in_form_or_basic_auth(client: EmulatorClient) -> None:
    creds = client.credentials
    in_form = client.token(
        grant_type="client_credentials", client_id=creds.client_id, client_secret=creds.client_secret
    )
    basic = base64.b64encode(f"{creds.client_id}:{creds.client_secret}".encode()).decode()
    in_header = client.request(
        "POST",
        "/services/oauth2/token",
        form={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )

    for reply in (in_form, in_header):
        assert reply.status == 200
        assert "refresh_token" not in reply.json() and reply.json()["scope"] == "api"


@pytest.mark.parametrize(
    ("form", "error", "description"),
    [
        ({"refresh_token": "stale"}, "invalid_grant", "expired access/refresh token"),
        ({"client_id": "nobody"}, "invalid_client_id", "client identifier invalid"),
        ({"client_secret": "wrong"}, "invalid_client", "invalid client credentials"),
        ({"grant_type": "password"}, "unsupported_grant_type", "grant type not supported"),
        ({"grant_type": ""}, "unsupported_grant_type", "grant type not supported"),
    ],
)
def test_token_errors(client: EmulatorClient, form: dict[str, str], error: str, description: str) -> None:
    reply = client.token(**refresh(client, **form))

    assert reply.status == 400
    assert reply.json() == {"error": error, "error_description": description}


def test_revoked_refresh_token_is_invalid_grant(emulator: EmulatorServer, client: EmulatorClient) -> None:
    emulator.revoke_refresh_tokens()

    assert client.token(**refresh(client)).json()["error"] == "invalid_grant"


def test_rotation_returns_a_new_refresh_token_and_retires_the_old(
    emulator: EmulatorServer, client: EmulatorClient
) -> None:
    emulator.knobs.rotate_refresh_tokens = True
    first = client.token(**refresh(client)).json()["refresh_token"]

    assert client.token(**refresh(client)).json()["error"] == "invalid_grant"
    second = client.token(**refresh(client, refresh_token=first)).json()["refresh_token"]
    assert second != first


@pytest.mark.parametrize("path", DATA_ENDPOINTS)
def test_every_data_endpoint_needs_a_live_token(
    emulator: EmulatorServer, client: EmulatorClient, path: str
) -> None:
    anonymous = client.get(path)
    client.login()
    emulator.expire_all_tokens()
    expired = client.get(path)

    for reply in (anonymous, expired):
        assert reply.status == 401
        assert reply.json() == SESSION_EXPIRED
        assert reply.headers["WWW-Authenticate"] == "Token"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2025, 1, 1, tzinfo=UTC))


@pytest.fixture
def timed(clock: ManualClock) -> Iterator[EmulatorServer]:
    with EmulatorServer(Org(OrgConfig(rows=10), clock), Knobs(token_ttl_seconds=600)) as server:
        yield server


def test_tokens_expire_after_ttl_of_inactivity(timed: EmulatorServer, clock: ManualClock) -> None:
    client = EmulatorClient(timed.url)
    client.login()

    clock.advance(500)
    assert client.get("/limits").status == 200  # use restarts the inactivity timeout
    clock.advance(500)
    assert client.get("/limits").status == 200
    clock.advance(601)
    assert client.get("/limits").json() == SESSION_EXPIRED
    client.login()  # a new token works again
    assert client.get("/limits").status == 200


def test_api_disabled_for_org(emulator: EmulatorServer, client: EmulatorClient) -> None:
    client.login()
    emulator.knobs.api_enabled = False

    reply = client.get("/sobjects/")
    assert reply.status == 403
    assert reply.json()[0]["errorCode"] == "API_DISABLED_FOR_ORG"
