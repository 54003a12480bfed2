"""EndpointConfig: what is accepted, and that every rejection says what to change."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from estuary_cdk.flow import ValidationError

from source_bulk_export.models import (
    DEFAULT_API_VERSION,
    DEFAULT_BACKFILL_SLICE_ROWS,
    DEFAULT_BULK_DELTA_THRESHOLD,
    DEFAULT_DELTA_LAG,
    DEFAULT_MAX_CONCURRENT_JOBS,
    ClientCredentials,
    EndpointConfig,
    OAuthCredentials,
    ResourceConfig,
)

OAUTH = {"credentials_title": "OAuth", "client_id": "id", "client_secret": "secret", "refresh_token": "rt"}
CLIENT = {"credentials_title": "Client Credentials", "client_id": "id", "client_secret": "secret"}


def config(**overrides: Any) -> EndpointConfig:
    return EndpointConfig.model_validate({"credentials": OAUTH, **overrides})


def rejection(**overrides: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        config(**overrides)
    assert len(caught.value.errors) == 1
    return caught.value.errors[0]


def test_defaults() -> None:
    cfg = config()
    assert isinstance(cfg.credentials, OAuthCredentials)
    assert cfg.login_url == "https://login.salesforce.com"
    assert cfg.start_date is None  # all history
    assert cfg.advanced.api_version == DEFAULT_API_VERSION == "62.0"
    assert cfg.advanced.delta_lag == DEFAULT_DELTA_LAG == timedelta(minutes=5)
    assert cfg.advanced.max_concurrent_jobs == DEFAULT_MAX_CONCURRENT_JOBS
    assert cfg.advanced.bulk_delta_threshold == DEFAULT_BULK_DELTA_THRESHOLD
    assert cfg.advanced.backfill_slice_rows == DEFAULT_BACKFILL_SLICE_ROWS


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("https://login.salesforce.com/", "https://login.salesforce.com"),
        ("https://test.salesforce.com", "https://test.salesforce.com"),
        ("https://Acme.my.salesforce.com", "https://acme.my.salesforce.com"),
        ("https://acme--dev.sandbox.my.salesforce.com", "https://acme--dev.sandbox.my.salesforce.com"),
        ("http://127.0.0.1:8123", "http://127.0.0.1:8123"),
        ("http://127.1.2.3:8123/", "http://127.1.2.3:8123"),
        ("http://localhost:9000", "http://localhost:9000"),
        ("http://[::1]:9000", "http://[::1]:9000"),
    ],
)
def test_login_urls_accepted(given: str, kept: str) -> None:
    assert config(login_url=given).login_url == kept


@pytest.mark.parametrize(
    "url", ["http://acme.my.salesforce.com", "http://10.0.0.5:8080", "http://login.salesforce.com"]
)
def test_http_is_only_for_loopback(url: str) -> None:
    message = rejection(login_url=url)
    assert "only allowed for loopback" in message
    assert "https://" in message


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("login.salesforce.com", "is not a URL"),
        ("ftp://login.salesforce.com", "is not a URL"),
        ("https://acme.my.salesforce.com/services/oauth2/token", "without a path"),
        ("https://acme.lightning.force.com", "https://acme.my.salesforce.com"),
    ],
)
def test_bad_login_urls_say_what_to_use(url: str, says: str) -> None:
    assert says in rejection(login_url=url)


@pytest.mark.parametrize(
    "url", ["https://login.salesforce.com", "https://test.salesforce.com", "https://LOGIN.salesforce.com/"]
)
def test_client_credentials_need_my_domain(url: str) -> None:
    message = rejection(credentials=CLIENT, login_url=url)
    assert "My Domain" in message
    assert "login_url" in message


def test_client_credentials_on_my_domain_and_loopback() -> None:
    for url in ("https://acme.my.salesforce.com", "http://127.0.0.1:5000"):
        assert isinstance(config(credentials=CLIENT, login_url=url).credentials, ClientCredentials)


def test_client_credentials_default_login_url_is_rejected() -> None:
    with pytest.raises(ValidationError, match="My Domain"):
        EndpointConfig.model_validate({"credentials": CLIENT})


def test_start_date_is_utc_whole_seconds() -> None:
    cfg = config(start_date="2024-01-02T03:04:05.678+02:00")
    assert cfg.start_date == datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("version", "says"),
    [("v62.0", "like 62.0"), ("62", "like 62.0"), ("46.0", "47.0 or later")],
)
def test_api_version(version: str, says: str) -> None:
    assert says in rejection(advanced={"api_version": version})
    assert config(advanced={"api_version": "66.0"}).advanced.api_version == "66.0"


@pytest.mark.parametrize("lag", ["PT0.5S", "-PT1M", "P2D"])
def test_delta_lag_bounds(lag: str) -> None:
    assert "whole number of seconds" in rejection(advanced={"delta_lag": lag})


def test_delta_lag_zero_and_iso() -> None:
    assert config(advanced={"delta_lag": "PT0S"}).advanced.delta_lag == timedelta(0)
    assert config(advanced={"delta_lag": "PT10M"}).advanced.delta_lag == timedelta(minutes=10)


def test_secrets_and_groups_in_schema() -> None:
    schema = EndpointConfig.model_json_schema()
    defs = schema["$defs"]
    assert defs["OAuthCredentials"]["properties"]["client_secret"]["secret"] is True
    assert defs["OAuthCredentials"]["properties"]["refresh_token"]["secret"] is True
    assert defs["ClientCredentials"]["properties"]["client_secret"]["secret"] is True
    assert "secret" not in defs["OAuthCredentials"]["properties"]["client_id"]
    assert schema["properties"]["advanced"]["advanced"] is True
    assert schema["properties"]["credentials"]["discriminator"]["propertyName"] == "credentials_title"
    # Every field says what it is for.
    for model in ("Advanced", "OAuthCredentials", "ClientCredentials"):
        for name, prop in defs[model]["properties"].items():
            assert name == "credentials_title" or prop.get("description"), f"{model}.{name}"
    for name, prop in schema["properties"].items():
        assert prop.get("description"), name


def test_resource_config_polls_every_five_minutes_by_default() -> None:
    # The CDK's default interval is zero, which would poll in a tight loop.
    resource = ResourceConfig.model_validate({"name": "Account"})
    assert resource.interval == timedelta(minutes=5)
    assert resource.schedule == ""
    assert ResourceConfig.model_json_schema()["properties"]["interval"]["default"] == "PT5M"
