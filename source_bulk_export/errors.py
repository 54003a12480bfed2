"""Salesforce's failure shapes, turned into typed errors that say what to fix.

Two kinds, because callers treat them differently:
- `CredentialsError`: the token endpoint refused to sign in. A configuration problem, so a
  `ValidationError`, printed by the CDK without a traceback; `field` names what to re-enter.
- `SalesforceError`: a data endpoint's error array (`[{"message", "errorCode"}]`), with
  Salesforce's `errorCode` to branch on.
"""

import re

from estuary_cdk.flow import ValidationError
from estuary_cdk.http import HTTPError
from pydantic import ValidationError as PydanticValidationError

from .models import ClientCredentials, Credentials, OAuthError, SalesforceErrorList

TOKEN_PATH = "/services/oauth2/token"

# The HTTPError text the CDK builds: "Encountered HTTP error status N...\nURL: <url>\nResponse:\n<body>".
_CDK_ERROR = re.compile(r"\nURL: (?P<url>[^\n]*)\nResponse:\n(?P<body>.*)\Z", re.DOTALL)


class CredentialsError(ValidationError):
    """The token endpoint refused to sign in. `field` names the config field to fix.

    A ValidationError, so that wherever it surfaces the CDK prints the message without a
    traceback: it is a configuration problem the user has to fix.
    """

    def __init__(self, message: str, *, field: str, error_code: str = "") -> None:
        super().__init__([message])
        self.field = field
        self.error_code = error_code

    def __str__(self) -> str:
        return self.errors[0]


class SalesforceError(HTTPError):
    """A data endpoint answered with an error that was not retried (or no longer retried).

    `error_code` is Salesforce's `errorCode` (e.g. INVALID_FIELD, INVALIDENTITY, NOT_FOUND), or
    "" when the body was not a Salesforce error array. `message` is Salesforce's own text.
    `code` (from HTTPError) equals `status`, so code that handles HTTPError keeps working.
    """

    def __init__(self, status: int, error_code: str, message: str, url: str) -> None:
        super().__init__(
            f"Salesforce answered HTTP {status} {error_code or '(no error code)'} for {url}: {message}", status
        )
        self.status = status
        self.error_code = error_code
        self.message = message
        self.url = url


def unpack_http_error(err: HTTPError) -> tuple[str, bytes]:
    """The URL and response body inside a CDK HTTPError (it keeps only the formatted text)."""
    match = _CDK_ERROR.search(err.message)
    if match is None:
        return "", err.message.encode()
    return match["url"], match["body"].encode()


def salesforce_error(status: int, body: bytes, url: str) -> SalesforceError:
    """Parse Salesforce's error array `[{"message", "errorCode", "fields"?}, ...]`.

    Several items are joined into one message; the first item's code is the error's code.
    A body of any other shape (an HTML error page, a proxy's text) is kept as the message.
    """
    try:
        items = SalesforceErrorList.model_validate_json(body).root
    except PydanticValidationError:
        items = []
    if not items:
        return SalesforceError(status, "", body.decode("utf-8", "backslashreplace")[:2000], url)
    return SalesforceError(status, items[0].errorCode, "; ".join(item.message for item in items), url)


def credentials_error(status: int, body: bytes, credentials: Credentials, login_url: str) -> ValidationError:
    """Say which credential or setting to fix, from a failed token request."""
    token_url = f"{login_url}{TOKEN_PATH}"
    try:
        oauth = OAuthError.model_validate_json(body)
    except PydanticValidationError:
        return CredentialsError(
            f"{login_url} did not answer like a Salesforce login server (HTTP {status} from {token_url}). "
            "Check login_url: https://login.salesforce.com, https://test.salesforce.com for sandboxes, "
            "or the org's My Domain URL.",
            field="login_url",
        )

    said = f"Salesforce said: {oauth.error}: {oauth.error_description}".rstrip(": ")
    is_client_credentials = isinstance(credentials, ClientCredentials)
    description = oauth.error_description.lower()

    field, message = _fix_for(oauth.error, description, is_client_credentials, login_url)
    return CredentialsError(f"{message} ({said})", field=field, error_code=oauth.error)


def _fix_for(error: str, description: str, is_client_credentials: bool, login_url: str) -> tuple[str, str]:
    """(field to fix, what to do) for an OAuth error code and its lower-cased description."""
    match error:
        case "invalid_client_id":
            return "client_id", (
                f"Salesforce at {login_url} does not know this client_id. Re-enter the connected app's "
                "Consumer Key as client_id, and check that login_url belongs to the org where the app "
                "lives (sandboxes use https://test.salesforce.com or their My Domain URL)."
            )
        case "invalid_client":
            return (
                "client_secret",
                "Salesforce rejected the client_secret. Re-enter the connected app's Consumer Secret.",
            )
        case "invalid_grant" if "not supported on this domain" in description:
            return "login_url", (
                "Salesforce only allows Client Credentials on the org's own domain. Set login_url to the "
                "org's My Domain URL, like https://<domain>.my.salesforce.com."
            )
        case "invalid_grant" if "inactive" in description:
            who = " (the connected app's run-as user)." if is_client_credentials else " and re-authorise."
            return (
                "credentials",
                f"The Salesforce user or org is inactive. Reactivate it, or sign in as an active user{who}",
            )
        case "invalid_grant" if is_client_credentials:
            return "credentials", (
                "Salesforce refused the client-credentials grant. In the connected app, enable the Client "
                "Credentials Flow and set a run-as user, then check client_id and client_secret."
            )
        case "invalid_grant":
            return "refresh_token", (
                "Salesforce rejected the refresh_token (it expired, was revoked, or was issued for another "
                "org or connected app). Re-authorise the connector to obtain a new refresh token."
            )
        case "unsupported_grant_type" if is_client_credentials:
            return "credentials", (
                "This connected app does not allow the Client Credentials Flow. Enable it in the "
                "connected app's OAuth settings, or use OAuth credentials instead."
            )
        case _:
            return "credentials", "Salesforce refused to sign in. Check the credentials and login_url."
