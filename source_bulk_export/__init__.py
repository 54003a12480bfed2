"""source-bulk-export: capture Salesforce through Bulk API 2.0 exports and REST queryAll deltas."""

import asyncio
import os
from collections.abc import Awaitable, Callable

from estuary_cdk.capture import (
    BaseCaptureConnector,
    Request,
    Task,
    common,
    request,
    response,
)
from estuary_cdk.flow import ConnectorSpec, ValidationError
from estuary_cdk.logger import FlowLogger

from .auth import SalesforceSession, Sleep
from .jobs import BulkJobs
from .models import ConnectorState, EndpointConfig, ResourceConfig
from .resources import Exporters, all_resources
from .rest import RestQuery

DOCUMENTATION_URL = "https://go.estuary.dev/source-bulk-export"

# For tests and the demo only: every wait of the connector (job polls, backoffs, limit waits) is
# multiplied by this, so a test that fails a job twice does not sit through minutes of backoff.
# The schedules themselves are pinned by time-frozen unit tests.
WAIT_SCALE_ENV = "SOURCE_BULK_EXPORT_WAIT_SCALE"


def scaled_sleep() -> Sleep:
    """asyncio.sleep, scaled by WAIT_SCALE_ENV when it is set."""
    scale = float(os.environ.get(WAIT_SCALE_ENV, "1"))
    if scale == 1:
        return asyncio.sleep

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds * scale)

    return sleep


class Connector(BaseCaptureConnector[EndpointConfig, ResourceConfig, ConnectorState]):
    """The Flow capture connector. One `SalesforceSession` per process, shared by every request
    and binding, so a process signs in once.
    """

    def __init__(self) -> None:
        super().__init__()
        self._sessions: dict[str, tuple[SalesforceSession, Exporters]] = {}

    def request_class(self) -> type[Request[EndpointConfig, ResourceConfig, ConnectorState]]:
        return Request[EndpointConfig, ResourceConfig, ConnectorState]

    async def spec(self, log: FlowLogger, _: request.Spec) -> ConnectorSpec:
        return ConnectorSpec(
            configSchema=EndpointConfig.model_json_schema(),
            documentationUrl=DOCUMENTATION_URL,
            resourceConfigSchema=ResourceConfig.model_json_schema(),
            resourcePathPointers=ResourceConfig.PATH_POINTERS,
        )

    async def discover(
        self, log: FlowLogger, discover: request.Discover[EndpointConfig]
    ) -> response.Discovered[ResourceConfig]:
        resources, _ = await all_resources(log, *self.salesforce(discover.config), discover.config)
        return common.discovered(resources)

    async def validate(
        self, log: FlowLogger, validate: request.Validate[EndpointConfig, ResourceConfig]
    ) -> response.Validated:
        # Describe only the bound objects: validating a few bindings must not cost 1,600 describes.
        bound = {binding.resourceConfig.name for binding in validate.bindings}
        resources, discovery = await all_resources(log, *self.salesforce(validate.config), validate.config, only=bound)
        problems = [
            f"Salesforce object '{name}' cannot be captured: {discovery.skipped[name]}."
            for name in sorted(bound & discovery.skipped.keys())
        ]
        if problems:
            raise ValidationError(problems)
        return common.validated(common.resolve_bindings(validate.bindings, resources))

    async def open(
        self, log: FlowLogger, open: request.Open[EndpointConfig, ResourceConfig, ConnectorState]
    ) -> tuple[response.Opened, Callable[[Task], Awaitable[None]]]:
        # Describe only the bound objects, with the fields they have now.
        bound = {binding.resourceConfig.name for binding in open.capture.bindings}
        config = open.capture.config
        resources, _ = await all_resources(log, *self.salesforce(config), config, only=bound)
        return common.open(open, common.resolve_bindings(open.capture.bindings, resources))

    def salesforce(self, config: EndpointConfig) -> tuple[SalesforceSession, Exporters]:
        """The process's session for `config`, and the exporters built on it, created on first use.

        Creating it also sets the CDK rate limiter's delay to 0. The limiter starts by sleeping
        1 s before every request and shrinks only 0.5% per success, which made peers spend most
        of a discovery asleep; Salesforce signals limits with 403 REQUEST_LIMIT_EXCEEDED, which
        SalesforceSession waits out itself, not with 429s the limiter could learn from.
        """
        # Requests of one process normally share a config; a session per sign-in identity covers the rest.
        key = f"{config.credentials.model_dump_json()} {config.login_url} {config.advanced.api_version}"
        if key not in self._sessions:
            self.rate_limiter.delay = 0.0
            sleep = scaled_sleep()
            session = SalesforceSession(
                self, config.credentials, config.login_url, config.advanced.api_version, sleep=sleep
            )
            bulk = BulkJobs(session, config.advanced.max_concurrent_jobs, sleep=sleep)
            self._sessions[key] = (session, Exporters(bulk, RestQuery(session)))
        return self._sessions[key]
