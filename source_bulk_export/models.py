"""Configuration, resource configuration, state, documents and Salesforce API payloads.

Every model of a Salesforce response lives here, so a reader can check what the connector
relies on in one place. Response models ignore or allow unknown keys (Salesforce adds keys in
every release); they declare only what the code reads.
"""

import ipaddress
import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from estuary_cdk.capture import common
from estuary_cdk.capture.common import BaseDocument, ResourceConfigWithSchedule
from estuary_cdk.flow import ValidationError
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    field_validator,
    model_validator,
)

# ---------------------------------------------------------------------------------------------
# Endpoint configuration
# ---------------------------------------------------------------------------------------------

PRODUCTION_LOGIN_URL = "https://login.salesforce.com"

# The generic login hosts serve every org. Salesforce refuses the client-credentials grant on
# them ("request not supported on this domain"): that flow needs the org's own My Domain host.
GENERIC_LOGIN_HOSTS = frozenset({"login.salesforce.com", "test.salesforce.com"})

# Bulk API 2.0 query jobs exist from v47.0; older versions would fail on the first backfill.
MIN_API_VERSION = 47.0

# Defaults, named so tests and docs can refer to them; the reason for each sits beside its
# field in `Advanced`.
DEFAULT_API_VERSION = "62.0"
DEFAULT_DELTA_LAG = timedelta(minutes=5)
DEFAULT_MAX_CONCURRENT_JOBS = 4
DEFAULT_BULK_DELTA_THRESHOLD = 50_000
DEFAULT_BACKFILL_SLICE_ROWS = 500_000


class OAuthCredentials(BaseModel):
    """A connected app's consumer key and secret plus a user's refresh token (refresh-token grant)."""

    model_config = ConfigDict(title="OAuth")

    credentials_title: Literal["OAuth"] = Field(default="OAuth", json_schema_extra={"type": "string", "order": 0})
    client_id: str = Field(
        title="Client ID",
        description="The Consumer Key of the Salesforce connected app.",
        json_schema_extra={"order": 1},
    )
    client_secret: str = Field(
        title="Client Secret",
        description="The Consumer Secret of the Salesforce connected app.",
        json_schema_extra={"secret": True, "order": 2},
    )
    refresh_token: str = Field(
        title="Refresh Token",
        description=(
            "A refresh token issued to the connected app for the user whose access the capture uses. "
            "The connected app must not rotate refresh tokens."
        ),
        json_schema_extra={"secret": True, "order": 3},
    )


class ClientCredentials(BaseModel):
    """A connected app with the client-credentials flow enabled and a run-as user."""

    model_config = ConfigDict(title="Client Credentials")

    credentials_title: Literal["Client Credentials"] = Field(
        default="Client Credentials", json_schema_extra={"type": "string", "order": 0}
    )
    client_id: str = Field(
        title="Client ID",
        description="The Consumer Key of the Salesforce connected app.",
        json_schema_extra={"order": 1},
    )
    client_secret: str = Field(
        title="Client Secret",
        description="The Consumer Secret of the Salesforce connected app.",
        json_schema_extra={"secret": True, "order": 2},
    )


Credentials = Annotated[OAuthCredentials | ClientCredentials, Field(discriminator="credentials_title")]


def is_loopback_host(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1), where plain http is acceptable."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_login_url(value: str) -> str:
    """Check a login URL and return it as `scheme://host[:port]` without a trailing slash.

    Raises ValidationError, saying what to change, for anything Salesforce would not answer on.
    """
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    example = "https://login.salesforce.com, https://test.salesforce.com or https://<your-domain>.my.salesforce.com"

    if parts.scheme not in ("https", "http") or not host:
        raise ValidationError([f"login_url '{value}' is not a URL: use {example}."])
    if parts.path or parts.query or parts.fragment:
        raise ValidationError([f"login_url '{value}' must be only a scheme and host, without a path: use {example}."])
    if parts.scheme == "http" and not is_loopback_host(host):
        # Tokens and every row of data would cross the network in clear text. Plain http is
        # only for a Salesforce emulator on this machine.
        raise ValidationError(
            [f"login_url '{value}' uses http://, which is only allowed for loopback hosts: use https://{parts.netloc}."]
        )
    if host.endswith(".lightning.force.com"):
        # The Lightning UI host is what users see in the browser, but it has no token endpoint.
        domain = host.removesuffix(".lightning.force.com")
        raise ValidationError(
            [
                f"login_url '{value}' is the Lightning UI address: use the My Domain URL https://{domain}.my.salesforce.com."
            ]
        )
    return f"{parts.scheme}://{parts.netloc.lower()}"


class Advanced(BaseModel):
    """Settings with defaults that suit most orgs."""

    # The class docstring above is the schema's description, shown to users: keep it for them.

    api_version: str = Field(
        default=DEFAULT_API_VERSION,
        title="API Version",
        description=(
            "Salesforce API version used for every call, written like 62.0. "
            f"Must be {MIN_API_VERSION} or later (Bulk API 2.0 query jobs) and supported by the org."
        ),
        json_schema_extra={"order": 0},
    )
    delta_lag: timedelta = Field(
        default=DEFAULT_DELTA_LAG,
        title="Delta Lag",
        description=(
            "How far behind the current time the change stream reads, as an ISO 8601 duration. "
            "Salesforce stamps a transaction's rows when it starts, and they can become visible "
            "later; rows newer than this lag are read on a later pass instead of being missed."
        ),
        json_schema_extra={"order": 1},
    )
    # Salesforce documents no cap on concurrent Bulk 2.0 query jobs, but each job runs on the
    # org's shared query capacity, every poll and result page costs an API call, and result
    # downloads that take more than 20 s count against the org's 25 concurrent long-running
    # requests (5 on Developer Edition), which other integrations share. Parsing is CPU-bound in
    # one process, so a few jobs in flight already overlap server-side query time with
    # downloads; more only queue on the same core.
    max_concurrent_jobs: int = Field(
        default=DEFAULT_MAX_CONCURRENT_JOBS,
        ge=1,
        le=10,
        title="Maximum Concurrent Bulk Jobs",
        description=(
            "Bulk API query jobs in flight at once, across all bindings. Raise it for many large "
            "objects on a production org; lower it if other integrations hit REQUEST_LIMIT_EXCEEDED."
        ),
        json_schema_extra={"order": 2},
    )
    # A REST page holds at most 2,000 rows, so 50,000 rows are 25 REST calls taking roughly half
    # a minute, against a Bulk job's ~5-10 calls plus its queueing latency (often 10-60 s). Below
    # this size REST is faster; above it Bulk is faster and cheaper, and a low value would spend
    # the org's 10,000 Bulk jobs per day on small windows.
    bulk_delta_threshold: int = Field(
        default=DEFAULT_BULK_DELTA_THRESHOLD,
        ge=2_000,
        title="Bulk Delta Threshold",
        description=(
            "Rows in one change window above which the window is exported by a Bulk API job "
            "instead of REST query pages (after downtime or a mass update)."
        ),
        json_schema_extra={"order": 3},
    )
    # Each slice is one Bulk job with ORDER BY Id and LIMIT, which turns off Salesforce's PK
    # chunking, so a slice must stay small enough to finish within the query time limits.
    # 500,000 rows is the page size Estuary's production Salesforce connector settled on after
    # date windows timed out; at one job per slice it also keeps a 100-million-row object at 200
    # of the 10,000 jobs a day.
    backfill_slice_rows: int = Field(
        default=DEFAULT_BACKFILL_SLICE_ROWS,
        ge=1,
        le=10_000_000,
        title="Backfill Slice Rows",
        description=(
            "Rows per Bulk API job during a backfill; the object is exported in slices of this "
            "many rows in Id order. Lower it if backfill jobs fail with query timeouts."
        ),
        json_schema_extra={"order": 4},
    )

    @field_validator("api_version")
    @classmethod
    def _check_api_version(cls, value: str) -> str:
        if not re.fullmatch(r"\d{2,3}\.\d", value):
            raise ValidationError([f"advanced.api_version '{value}' is not a version: write it like 62.0 (no 'v')."])
        if float(value) < MIN_API_VERSION:
            raise ValidationError(
                [f"advanced.api_version {value} predates Bulk API 2.0 queries: use {MIN_API_VERSION} or later."]
            )
        return value

    @field_validator("delta_lag")
    @classmethod
    def _check_delta_lag(cls, value: timedelta) -> timedelta:
        # Cursors in state are whole seconds (docs/internals.md), so the lag must be too.
        if value < timedelta(0) or value > timedelta(days=1) or value.microseconds:
            raise ValidationError(
                [f"advanced.delta_lag {value} must be a whole number of seconds between 0 and 1 day, like PT5M."]
            )
        return value


class EndpointConfig(BaseModel):
    credentials: Credentials = Field(
        title="Authentication",
        description="How the connector signs in to Salesforce.",
        json_schema_extra={"order": 0},
    )
    login_url: str = Field(
        default=PRODUCTION_LOGIN_URL,
        title="Login URL",
        description=(
            "Where access tokens come from: https://login.salesforce.com for production orgs, "
            "https://test.salesforce.com for sandboxes, or the org's My Domain URL "
            "(https://<domain>.my.salesforce.com), which Client Credentials require."
        ),
        json_schema_extra={"order": 1},
    )
    start_date: AwareDatetime | None = Field(
        default=None,
        title="Start Date",
        description=(
            "Capture only rows changed at or after this UTC time, in RFC 3339 format. "
            "Leave it empty to capture all history."
        ),
        json_schema_extra={"order": 2},
    )
    advanced: Advanced = Field(
        default_factory=Advanced,
        title="Advanced",
        description="Settings that rarely need changing.",
        json_schema_extra={"advanced": True, "order": 3},
    )

    @field_validator("login_url")
    @classmethod
    def _check_login_url(cls, value: str) -> str:
        return normalize_login_url(value)

    @field_validator("start_date")
    @classmethod
    def _floor_start_date(cls, value: datetime | None) -> datetime | None:
        # SOQL literals have whole seconds. Flooring can only include a few more rows, never fewer.
        return value.astimezone(UTC).replace(microsecond=0) if value else None

    @model_validator(mode="after")
    def _client_credentials_need_my_domain(self) -> "EndpointConfig":
        host = urlsplit(self.login_url).hostname or ""
        if isinstance(self.credentials, ClientCredentials) and host in GENERIC_LOGIN_HOSTS:
            raise ValidationError(
                [
                    (
                        f"Client Credentials cannot sign in through {self.login_url}: Salesforce only allows "
                        "this flow on the org's own domain. Set login_url to the org's My Domain URL, like "
                        "https://<domain>.my.salesforce.com (Setup > My Domain)."
                    )
                ]
            )
        return self


# ---------------------------------------------------------------------------------------------
# Resources, state, documents
# ---------------------------------------------------------------------------------------------

# The CDK's own default interval is zero, which would make a binding added by hand poll in a
# tight loop; five minutes matches what discovery proposes for incremental objects.
DEFAULT_INTERVAL = timedelta(minutes=5)


class ResourceConfig(ResourceConfigWithSchedule):
    """A binding: the Salesforce object's API name, how often to poll it, and an optional cron
    schedule that re-runs its backfill (discovery sets a daily one for objects with formula fields).
    """

    interval: timedelta = Field(
        default=DEFAULT_INTERVAL,
        description="How often to read this object's changes (or, without a timestamp field, re-export it).",
        json_schema_extra={"nonsensitive": True},
    )


class ResourceState(common.ResourceState):
    """A binding's state: the CDK's own parts (`inc`, `backfill`, `snapshot`, ...), which its loops
    checkpoint, and this connector's, which `checkpoints.BindingCheckpoints` writes.

    The export states are `states.encode` objects: every key always present, so that a checkpoint,
    a JSON merge patch, replaces the previous state instead of merging with it.
    """

    bulk_refused: str | None = Field(
        default=None, description="Why the Bulk API refuses this object; it is read through REST from then on."
    )
    delta_export: dict[str, Any] | None = Field(
        default=None, description="A change window being exported by Bulk jobs, where it stands."
    )
    snapshot_export: dict[str, Any] | None = Field(
        default=None, description="The Bulk job of the snapshot in progress, where it stands."
    )
    deletions: dict[str, Any] | None = Field(
        default=None, description="How far the object's deletions have been read (deletions.DeletionsState)."
    )


ConnectorState = common.ConnectorState[ResourceState]


class SalesforceRecord(BaseDocument, extra="allow"):
    """One Salesforce row. Keys are the API field names; values are coerced by `fields.py`.

    Only the key is declared: the cursor field differs per object and is read through the
    object's plan.
    """

    Id: str


# ---------------------------------------------------------------------------------------------
# OAuth token endpoint
# ---------------------------------------------------------------------------------------------


class TokenResponse(BaseModel, extra="ignore"):
    """`POST /services/oauth2/token` success. Salesforce sends no `expires_in`: a 401 is the expiry signal."""

    access_token: str
    instance_url: str
    id: str = ""
    token_type: str = "Bearer"
    issued_at: str = ""
    signature: str = ""
    scope: str = ""
    # Present only when the connected app rotates refresh tokens.
    refresh_token: str | None = None


class OAuthError(BaseModel, extra="allow"):
    """Token endpoint failure body: `{"error": "...", "error_description": "..."}`."""

    error: str
    error_description: str = ""


# ---------------------------------------------------------------------------------------------
# Data API errors
# ---------------------------------------------------------------------------------------------


class SalesforceErrorItem(BaseModel, extra="allow"):
    message: str
    errorCode: str
    fields: list[str] | None = None


class SalesforceErrorList(RootModel[list[SalesforceErrorItem]]):
    """Every REST and Bulk 2.0 error body: a JSON array of error items."""


# ---------------------------------------------------------------------------------------------
# Describe
# ---------------------------------------------------------------------------------------------


class GlobalSObject(BaseModel, extra="ignore"):
    """One entry of describe-global. Ignores the ~30 other flags to keep 1,600 entries small."""

    name: str
    label: str = ""
    custom: bool = False
    queryable: bool = False
    retrieveable: bool = False
    replicateable: bool = False
    deprecatedAndHidden: bool = False


class DescribeGlobal(BaseModel, extra="ignore"):
    """`GET /sobjects/`."""

    sobjects: list[GlobalSObject]


class FieldDescribe(BaseModel, extra="allow"):
    """One field of an sObject describe. `type` is the logical type coercion is planned from."""

    name: str
    type: str
    soapType: str = ""
    calculated: bool = False
    compoundFieldName: str | None = None
    nillable: bool = True
    # Salesforce always sends these two; a describe without them is read as "capable".
    filterable: bool = True
    sortable: bool = True
    custom: bool = False
    deprecatedAndHidden: bool = False


class SObjectDescribe(BaseModel, extra="allow"):
    """`GET /sobjects/{name}/describe/` (only the fields visible to the user are listed)."""

    name: str
    fields: list[FieldDescribe]
    queryable: bool = True
    retrieveable: bool = True
    replicateable: bool = False
    custom: bool = False


# ---------------------------------------------------------------------------------------------
# Bulk API 2.0 and REST query envelopes
# ---------------------------------------------------------------------------------------------


class JobState(StrEnum):
    UPLOAD_COMPLETE = "UploadComplete"
    IN_PROGRESS = "InProgress"
    JOB_COMPLETE = "JobComplete"
    FAILED = "Failed"
    ABORTED = "Aborted"


TERMINAL_JOB_STATES = frozenset({JobState.JOB_COMPLETE, JobState.FAILED, JobState.ABORTED})


class JobInfo(BaseModel, extra="allow"):
    """A Bulk API 2.0 query job (`POST /jobs/query`, `GET /jobs/query/{id}`).

    `state` stays a plain string so a state this code has never seen parses, and is compared
    against `JobState` members (a StrEnum compares equal to its value).
    """

    id: str
    operation: str
    object: str
    state: str
    apiVersion: float | None = None
    createdById: str | None = None
    createdDate: str | None = None
    systemModstamp: str | None = None
    numberRecordsProcessed: int = 0
    retries: int = 0
    totalProcessingTime: int = 0
    errorMessage: str | None = None


class JobList(BaseModel, extra="allow"):
    """`GET /jobs/query`: the org's jobs, at most 1,000 a page, in no documented order."""

    done: bool
    records: list[JobInfo]
    nextRecordsUrl: str | None = None


class DeletedRecord(BaseModel, extra="allow"):
    id: str
    deletedDate: str


class DeletedRecords(BaseModel, extra="allow"):
    """`GET /sobjects/{name}/deleted/?start=&end=` (getDeleted): the records deleted in the window, and
    how far the answer reaches (`latestDateCovered`: the next window starts there)."""

    deletedRecords: list[DeletedRecord]
    earliestDateAvailable: str | None = None
    latestDateCovered: str


class QueryPage(BaseModel, extra="allow"):
    """A REST query/queryAll page, without `records` (rest.py streams those)."""

    totalSize: int
    done: bool
    nextRecordsUrl: str | None = None
