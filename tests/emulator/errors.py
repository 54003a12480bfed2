"""Error responses in Salesforce's shapes (salesforce-api.md §2.2, §1.5).

Data endpoints answer errors as a JSON *array* of ``{"message", "errorCode"[, "fields"]}``;
the OAuth token endpoint answers ``{"error", "error_description"}`` with HTTP 400.
Handlers raise ``ApiError`` / ``OAuthError``; the server middleware renders them.
"""

from aiohttp import web
from pydantic import BaseModel

from .soql import SoqlError


class ErrorItem(BaseModel):
    message: str
    errorCode: str
    fields: list[str] | None = None


class ApiError(Exception):
    def __init__(self, status: int, error_code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(f"{status} {error_code}: {message}")
        self.status = status
        self.item = ErrorItem(message=message, errorCode=error_code, fields=fields)

    @classmethod
    def from_soql(cls, error: SoqlError) -> "ApiError":
        """SOQL errors are HTTP 400 with the SOQL error code (§2.3)."""
        return cls(400, error.error_code, error.message)

    def response(self) -> web.Response:
        body = "[" + self.item.model_dump_json(exclude_none=True) + "]"
        return web.Response(status=self.status, text=body, content_type="application/json")


def not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND", "The requested resource does not exist")


def session_invalid() -> ApiError:
    """Expired, revoked or missing access token (§1.6)."""
    return ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")


class OAuthErrorBody(BaseModel):
    error: str
    error_description: str


class OAuthError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.body = OAuthErrorBody(error=error, error_description=description)

    def response(self) -> web.Response:
        return web.Response(status=400, text=self.body.model_dump_json(), content_type="application/json")
