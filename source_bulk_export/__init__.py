"""source-bulk-export: capture Salesforce through Bulk API 2.0 exports and REST queryAll deltas."""

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

from .auth import SalesforceSession
from .exports import Exports
from .jobs import BulkJobs
from .models import ConnectorState, EndpointConfig, ResourceConfig
from .resources import all_resources
from .rest import RestQuery
from .waits import Waits

DOCUMENTATION_URL = "https://go.estuary.dev/source-bulk-export"

class Connector(BaseCaptureConnector[EndpointConfig, ResourceConfig, ConnectorState]):
    """The Flow capture connector. One `SalesforceSession` per process, shared by every request
    and binding, so a process signs in once.
    """

    def __init__(self) -> None:
        super().__init__()
        self._sessions: dict[str, tuple[SalesforceSession, Exports]] = {}

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

    def salesforce(self, config: EndpointConfig) -> tuple[SalesforceSession, Exports]:
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
            waits = Waits.from_environment()
            session = SalesforceSession(
                self, config.credentials, config.login_url, config.advanced.api_version, sleep=waits.sleep
            )
            bulk = BulkJobs(session, config.advanced.max_concurrent_jobs, waits)
            self._sessions[key] = (session, Exports(bulk, RestQuery(session), waits))
        return self._sessions[key]
