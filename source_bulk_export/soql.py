"""SOQL literals, and how long a query may be to travel in a REST URL."""

from datetime import UTC, datetime
from urllib.parse import quote_plus

# Salesforce refuses a request whose URI passes 16,384 bytes (414), and a REST query travels in
# its URI; a Bulk job's query travels in the request body. This leaves room for the host, the
# path and the other parameters.
MAX_REST_QUERY_BYTES = 15_000


def fits_in_a_rest_url(soql: str) -> bool:
    """Whether `soql`, URL-encoded as REST's `q` parameter, stays under MAX_REST_QUERY_BYTES."""
    return len(quote_plus(soql)) <= MAX_REST_QUERY_BYTES


def soql_datetime(moment: datetime) -> str:
    """A SOQL dateTime literal at whole-second precision (unquoted, UTC)."""
    if moment.microsecond:
        raise ValueError(f"{moment.isoformat()} is not a whole second: windows are whole seconds")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def soql_string(value: str) -> str:
    """A quoted SOQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
