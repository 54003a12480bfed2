"""Discover and validate, in process, against the Salesforce emulator.

What is checked: which objects become bindings and how (incremental or snapshot, keys,
schedules, schemas), that each way validation can fail says what to fix, and that one
connector process signs in once however many calls it makes.
"""

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from estuary_cdk.capture import request, response
from estuary_cdk.flow import CollectionSpec, ValidationError
from estuary_cdk.logger import FlowLogger

from source_bulk_export import Connector
from source_bulk_export.models import EndpointConfig, ResourceConfig
from tests.capture_support import emulator_config
from tests.emulator import EmulatorServer

# The connector's methods take the CDK's logger type; a detached one is enough here.
log = FlowLogger("test_discover")

CAPTURED = {
    "Account",
    "AccountHistory",
    "Attachment",
    "BenchRecord__c",
    "CaseStatus",  # Bulk rejects it, but only a Bulk job can tell: REST still captures it
    "Contact",
    "Invoice__c",
    "Opportunity",
    "UserRole",
}


def config_for(emulator: EmulatorServer, **overrides: Any) -> EndpointConfig:
    return EndpointConfig.model_validate({**emulator_config(emulator), **overrides})


@pytest_asyncio.fixture
async def connector() -> AsyncIterator[Connector]:
    """A connector with its HTTP session open, as `serve()` leaves it."""
    conn = Connector()
    await conn._mixin_enter(log)
    try:
        yield conn
    finally:
        await conn._mixin_exit(log)


async def discover(connector: Connector, config: EndpointConfig) -> response.Discovered[ResourceConfig]:
    return await connector.discover(log, request.Discover(connectorType="LOCAL", config=config))


async def validate(
    connector: Connector, config: EndpointConfig, names: list[str], snapshot: frozenset[str] = frozenset()
) -> response.Validated:
    bindings = [
        request.ValidateBinding[ResourceConfig](
            collection=CollectionSpec(
                name=f"acmeCo/{name}", key=["/_meta/row_id"] if name in snapshot else ["/Id"], writeSchema={}
            ),
            resourceConfig=ResourceConfig(name=name),
        )
        for name in names
    ]
    return await connector.validate(
        log, request.Validate(name="acmeCo/source-bulk-export", connectorType="LOCAL", config=config, bindings=bindings)
    )


def by_name(discovered: response.Discovered[ResourceConfig]) -> dict[str, Any]:
    return {b.recommendedName: b for b in discovered.bindings}


@pytest.mark.asyncio
async def test_discover_bindings(emulator: EmulatorServer, connector: Connector) -> None:
    bindings = by_name(await discover(connector, config_for(emulator)))
    assert set(bindings) == CAPTURED  # ActivityHistory is listed but not queryable

    account = bindings["Account"]
    assert account.key == ["/Id"]
    assert account.resourceConfig.model_dump(mode="json", exclude_unset=True) == {"name": "Account", "interval": "PT5M"}
    props = account.documentSchema["properties"]
    assert "BillingAddress" not in props and "BillingStreet" in props  # compound parent out, components in
    assert account.documentSchema["required"] == ["Id", "SystemModstamp"]
    assert account.documentSchema["x-infer-schema"] is True

    # A formula field: a daily re-backfill keeps formula values fresh.
    invoice = bindings["Invoice__c"].resourceConfig
    assert invoice.model_dump(mode="json", exclude_unset=True) == {
        "name": "Invoice__c",
        "interval": "PT5M",
        "schedule": "55 23 * * *",
    }
    # Append-only history reads changes by CreatedDate.
    assert bindings["AccountHistory"].documentSchema["required"] == ["Id", "CreatedDate"]
    # No timestamp: a snapshot, keyed the way the CDK addresses deleted snapshot rows.
    user_role = bindings["UserRole"]
    assert user_role.key == ["/_meta/row_id"]
    assert user_role.resourceConfig.model_dump(mode="json", exclude_unset=True) == {
        "name": "UserRole",
        "interval": "PT1H",
    }
    # base64 is not exportable.
    assert "Body" not in bindings["Attachment"].documentSchema["properties"]


@pytest.mark.asyncio
async def test_discover_signs_in_once_and_describes_each_object_once(
    emulator: EmulatorServer, connector: Connector
) -> None:
    await discover(connector, config_for(emulator))
    requests = emulator.counters.requests
    assert emulator.counters.tokens_issued == requests["token"] == 1
    assert requests["describe_global"] == 1
    assert requests["describe"] == len(CAPTURED)
    # No pacing sleeps: Salesforce signals limits with 403s, which the session waits out itself.
    assert connector.rate_limiter.delay == 0


@pytest.mark.asyncio
async def test_discover_with_client_credentials(emulator: EmulatorServer, connector: Connector) -> None:
    credentials = emulator.knobs.credentials
    config = config_for(
        emulator,
        credentials={
            "credentials_title": "Client Credentials",
            "client_id": credentials.client_id,
            "client_secret": credentials.client_secret,
        },
    )
    assert {b.recommendedName for b in (await discover(connector, config)).bindings} == CAPTURED
    assert emulator.counters.tokens_issued == 1


@pytest.mark.asyncio
async def test_one_more_token_after_a_forced_expiry(emulator: EmulatorServer, connector: Connector) -> None:
    config = config_for(emulator)
    await discover(connector, config)
    await validate(connector, config, ["Account", "Contact"])
    assert emulator.counters.tokens_issued == 1  # the process reuses its token across requests

    emulator.expire_all_tokens()
    assert len((await discover(connector, config)).bindings) == len(CAPTURED)
    await validate(connector, config, ["Account"])
    assert emulator.counters.tokens_issued == 2


@pytest.mark.asyncio
async def test_validate_describes_only_bound_objects(emulator: EmulatorServer, connector: Connector) -> None:
    validated = await validate(
        connector, config_for(emulator), ["Account", "UserRole"], snapshot=frozenset({"UserRole"})
    )
    assert [b.resourcePath for b in validated.bindings] == [["Account"], ["UserRole"]]
    requests = emulator.counters.requests
    assert (requests["token"], requests["describe_global"], requests["describe"]) == (1, 1, 2)


@pytest.mark.asyncio
async def test_validate_names_objects_that_cannot_be_captured(emulator: EmulatorServer, connector: Connector) -> None:
    with pytest.raises(ValidationError) as caught:
        await validate(connector, config_for(emulator), ["Account", "ActivityHistory", "Nope__c"])
    assert caught.value.errors == [
        "Salesforce object 'ActivityHistory' cannot be captured: not queryable.",
        "Salesforce object 'Nope__c' cannot be captured: not in the org's describe-global.",
    ]


@pytest.mark.asyncio
async def test_validate_snapshot_collections_need_row_id_keys(emulator: EmulatorServer, connector: Connector) -> None:
    with pytest.raises(ValidationError, match="must be keyed on /_meta/row_id"):
        await validate(connector, config_for(emulator), ["UserRole"])


# --- each way of failing says what to fix ----------------------------------------------------


@pytest.mark.parametrize(
    ("credential", "says"),
    [
        ("client_secret", "Salesforce rejected the client_secret. Re-enter the connected app's Consumer Secret."),
        ("client_id", "does not know this client_id. Re-enter the connected app's Consumer Key as client_id"),
    ],
)
@pytest.mark.asyncio
async def test_wrong_client_credential(
    emulator: EmulatorServer, connector: Connector, credential: str, says: str
) -> None:
    config = config_for(emulator)
    setattr(config.credentials, credential, "wrong")
    with pytest.raises(ValidationError) as caught:
        await validate(connector, config, ["Account"])
    assert says in caught.value.errors[0]


@pytest.mark.asyncio
async def test_revoked_refresh_token(emulator: EmulatorServer, connector: Connector) -> None:
    emulator.revoke_refresh_tokens()
    with pytest.raises(ValidationError) as caught:
        await discover(connector, config_for(emulator))
    assert "Re-authorise the connector" in caught.value.errors[0]


@pytest_asyncio.fixture
async def not_salesforce() -> AsyncIterator[str]:
    """A web server that answers 404 to everything, like a mistyped host that exists."""
    server = TestServer(web.Application(), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.mark.asyncio
async def test_login_url_that_is_not_salesforce(
    emulator: EmulatorServer, connector: Connector, not_salesforce: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await validate(connector, config_for(emulator, login_url=not_salesforce), ["Account"])
    assert "did not answer like a Salesforce login server (HTTP 404" in caught.value.errors[0]
    assert "Check login_url" in caught.value.errors[0]


@pytest.mark.asyncio
async def test_unreachable_login_host(emulator: EmulatorServer, connector: Connector) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(ValidationError) as caught:
        await validate(connector, config_for(emulator, login_url=f"http://127.0.0.1:{closed_port}"), ["Account"])
    assert caught.value.errors[0].startswith(f"Could not connect to login_url http://127.0.0.1:{closed_port}")


@pytest.mark.asyncio
async def test_api_disabled(emulator: EmulatorServer, connector: Connector) -> None:
    emulator.knobs.api_enabled = False
    with pytest.raises(ValidationError) as caught:
        await validate(connector, config_for(emulator), ["Account"])
    assert "API is disabled for this org or user" in caught.value.errors[0]
    assert "'API Enabled'" in caught.value.errors[0]


@pytest.mark.asyncio
async def test_unsupported_api_version(emulator: EmulatorServer, connector: Connector) -> None:
    with pytest.raises(ValidationError) as caught:
        await discover(connector, config_for(emulator, advanced={"api_version": "99.0"}))
    assert "does not serve API version 99.0" in caught.value.errors[0]
