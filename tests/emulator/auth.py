"""OAuth 2.0: the token endpoint and access-token checks (salesforce-api.md §1).

``POST /services/oauth2/token`` (form-encoded) serves the ``refresh_token`` and
``client_credentials`` grants. The client may authenticate in the form or with HTTP Basic.
Checks run in this order, each with Salesforce's error:

| failure                                  | error                    | error_description              |
|------------------------------------------|--------------------------|--------------------------------|
| grant_type missing or not one of the two | unsupported_grant_type   | grant type not supported       |
| unknown client_id                        | invalid_client_id        | client identifier invalid      |
| wrong client_secret                      | invalid_client           | invalid client credentials     |
| refresh token unknown/revoked/rotated    | invalid_grant            | expired access/refresh token   |

The response has no ``expires_in`` (Salesforce sends none): an access token lives until
``Knobs.token_ttl_seconds`` pass without it being used (inactivity timeout, §1.6), until
it has been accepted for ``Knobs.token_max_requests`` data requests (a fault: sessions
that end early), or until a test calls ``expire_all_tokens()``. After that every data
endpoint answers 401.
"""

import base64
import hashlib
import hmac
import secrets
import threading
from datetime import datetime

from aiohttp import BasicAuth, web
from pydantic import BaseModel

from .clock import Clock
from .errors import OAuthError
from .ids import record_id
from .knobs import Knobs

ORG_ID = record_id("00D", 1)
USER_ID = record_id("005", 1)
GRANTS = ("refresh_token", "client_credentials")


class TokenResponse(BaseModel):
    """The token endpoint's 200 body (§1.4)."""

    access_token: str
    instance_url: str
    id: str
    token_type: str = "Bearer"
    issued_at: str  # Unix epoch in milliseconds: 13 digits
    signature: str
    scope: str
    refresh_token: str | None = None  # only when refresh tokens rotate


class TokenStore:
    """Issued access tokens and the refresh token currently accepted. Thread-safe."""

    def __init__(self, knobs: Knobs, clock: Clock) -> None:
        self._knobs = knobs
        self._clock = clock
        self._lock = threading.Lock()
        self._last_used: dict[str, datetime] = {}
        self._uses: dict[str, int] = {}  # data requests each live token was accepted for
        self._rotated: str | None = None  # the current refresh token, once rotated
        self._revoked = False

    def issue(self) -> str:
        token = f"{ORG_ID[:15]}!AR{secrets.token_urlsafe(48)}"
        with self._lock:
            self._last_used[token] = self._clock.now()
        return token

    def check(self, token: str) -> bool:
        """Whether ``token`` is a live access token; using it restarts its timeout and
        counts one use toward ``Knobs.token_max_requests``."""
        now = self._clock.now()
        ttl = self._knobs.token_ttl_seconds
        max_uses = self._knobs.token_max_requests
        with self._lock:
            last = self._last_used.get(token)
            if last is None:
                return False
            uses = self._uses.get(token, 0)
            timed_out = ttl is not None and (now - last).total_seconds() > ttl
            if timed_out or (max_uses is not None and uses >= max_uses):
                del self._last_used[token]
                self._uses.pop(token, None)
                return False
            self._last_used[token] = now
            self._uses[token] = uses + 1
            return True

    def expire_all(self) -> None:
        with self._lock:
            self._last_used.clear()
            self._uses.clear()

    def revoke_refresh_tokens(self) -> None:
        """From now on every refresh-token grant fails with invalid_grant."""
        with self._lock:
            self._revoked = True

    def redeem(self, refresh_token: str) -> str | None:
        """Accept ``refresh_token`` or raise invalid_grant. Returns the refresh token to
        hand back: a new one when rotation is on (the old one then stops working)."""
        with self._lock:
            current = self._rotated or self._knobs.credentials.refresh_token
            if self._revoked or not hmac.compare_digest(refresh_token, current):
                raise OAuthError("invalid_grant", "expired access/refresh token")
            if not self._knobs.rotate_refresh_tokens:
                return None
            self._rotated = f"5Aep{secrets.token_urlsafe(60)}"
            return self._rotated


def _client(request: web.Request, form: dict[str, str]) -> tuple[str, str]:
    header = request.headers.get("Authorization", "")
    if header.startswith("Basic "):
        basic = BasicAuth.decode(header)
        return basic.login, basic.password
    return form.get("client_id", ""), form.get("client_secret", "")


def token_response(
    request: web.Request, form: dict[str, str], knobs: Knobs, store: TokenStore, now: datetime
) -> TokenResponse:
    """Run the grant in ``form`` and return the token response (or raise OAuthError)."""
    grant = form.get("grant_type", "")
    if grant not in GRANTS:
        raise OAuthError("unsupported_grant_type", "grant type not supported")
    client_id, client_secret = _client(request, form)
    if client_id != knobs.credentials.client_id:
        raise OAuthError("invalid_client_id", "client identifier invalid")
    if not hmac.compare_digest(client_secret, knobs.credentials.client_secret):
        raise OAuthError("invalid_client", "invalid client credentials")
    new_refresh_token = store.redeem(form.get("refresh_token", "")) if grant == "refresh_token" else None

    base_url = f"{request.scheme}://{request.host}"
    identity = f"{base_url}/id/{ORG_ID}/{USER_ID}"
    issued_at = str(int(now.timestamp() * 1000))
    digest = hmac.new(client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256)
    return TokenResponse(
        access_token=store.issue(),
        instance_url=base_url,
        id=identity,
        issued_at=issued_at,
        signature=base64.b64encode(digest.digest()).decode(),
        scope="api refresh_token" if grant == "refresh_token" else "api",
        refresh_token=new_refresh_token,
    )


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
