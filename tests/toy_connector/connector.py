"""A deterministic estuary-cdk capture with no network, for testing the flow harness.

Resources (both discovered, both enabled):

* `items`, key `/id`: incremental + backfill, integer cursors.
  - The backfill emits ids `0 .. backfill_count-1` (version 0) in pages of
    `page_size`; its page cursor is the next id.
  - Incremental poll `p` (the LogCursor is the number of polls done) emits: an
    update of id `p % backfill_count` to version `p+1`, a new id `1000+p`, and on
    poll 1 a deletion (`_meta.op = "d"`) of id `backfill_count-1`. Polls at or past
    `polls` emit nothing, so a resumed capture goes quiet once the script is done.
  - Polls wait for the backfill to finish first, so the order of documents, and
    therefore any last-write-wins reduction, does not depend on scheduling.
  - Opening the binding emits a sourced schema followed by an empty checkpoint.
* `codes`, key `/_meta/row_id`: a snapshot of three fixed documents.

Integer cursors make the CDK call `fetch_changes` again as soon as it yields one, so
every productive poll sleeps `poll_seconds` first; that and the resources' `interval`
keep the loops from spinning.
"""

import asyncio
import functools
from collections.abc import AsyncGenerator
from datetime import timedelta
from logging import Logger
from typing import Any, ClassVar

from estuary_cdk.capture import (
    BaseCaptureConnector,
    Request,
    Task,
    common,
    request,
    response,
)
from estuary_cdk.capture.common import (
    BaseDocument,
    LogCursor,
    PageCursor,
    ResourceConfig,
    ResourceState,
)
from estuary_cdk.flow import CaptureBinding, ConnectorSpec
from pydantic import BaseModel, Field

DOCUMENTATION_URL = "https://example.com/toy-connector"
NEW_ID_BASE = 1000
"""Ids created by incremental polls start here, far above any backfilled id."""


class EndpointConfig(BaseModel):
    backfill_count: int = Field(default=10, ge=0, description="Items in the backfill.")
    page_size: int = Field(default=4, ge=1, description="Items per backfill page.")
    polls: int = Field(default=3, ge=0, description="Incremental polls that produce changes.")
    poll_seconds: float = Field(default=0.2, ge=0, description="Wall time each productive poll takes.")
    stop_after_polls: bool = Field(
        default=False,
        description="Stop the capture gracefully (exit 0) after the last productive poll.",
    )
    explicit_acks: bool = Field(
        default=False, description="Mark `items` as requiring explicit acknowledgements."
    )


ConnectorState = common.ConnectorState[ResourceState]


class Item(BaseDocument, extra="allow"):
    id: int
    name: str
    version: int


class Code(BaseDocument, extra="allow"):
    code: str


CODES: tuple[str, ...] = ("alpha", "beta", "gamma")

ITEMS_SOURCED_SCHEMA: dict[str, Any] = {"properties": {"id": {"type": "integer"}}}


async def backfill_items(
    config: EndpointConfig,
    backfill_done: asyncio.Event,
    log: Logger,
    page: PageCursor,
    cutoff: LogCursor,
) -> AsyncGenerator[Item | PageCursor, None]:
    """One page of ids from `page` (None: 0); yields the next id while ids remain."""
    assert page is None or isinstance(page, int)
    start = page or 0
    end = min(start + config.page_size, config.backfill_count)
    for id in range(start, end):
        yield Item(id=id, name=f"item-{id}", version=0)
    if end < config.backfill_count:
        yield end
    else:
        backfill_done.set()


async def fetch_items(
    config: EndpointConfig,
    task: Task,
    backfill_done: asyncio.Event,
    log: Logger,
    cursor: LogCursor,
) -> AsyncGenerator[Item | LogCursor, None]:
    """Poll number `cursor`: its changes, then `cursor + 1`; nothing once `polls` ran."""
    assert isinstance(cursor, int)
    if cursor >= config.polls:
        return
    await backfill_done.wait()
    await asyncio.sleep(config.poll_seconds)

    version = cursor + 1
    if config.backfill_count:
        updated = cursor % config.backfill_count
        yield Item(id=updated, name=f"item-{updated}-v{version}", version=version)
    yield Item(id=NEW_ID_BASE + cursor, name=f"new-{cursor}", version=version)
    if cursor == 1 and config.backfill_count:
        deleted = config.backfill_count - 1
        yield Item(
            id=deleted,
            name=f"item-{deleted}",
            version=version,
            _meta=Item.Meta(op="d"),
        )
    yield version

    if config.stop_after_polls and version >= config.polls:
        log.info("toy: all polls done, stopping", {"polls": version})  # noqa: PLE1205 - CDK log fields
        task.stopping.event.set()


async def snapshot_codes(log: Logger) -> AsyncGenerator[Code, None]:
    for code in CODES:
        yield Code(code=code)


def resources(config: EndpointConfig) -> list[common.Resource[Any, ResourceConfig, ResourceState]]:
    async def open_items(
        binding: CaptureBinding[ResourceConfig],
        binding_index: int,
        state: ResourceState,
        task: Task,
        all_bindings: list[Any],
    ) -> None:
        backfill_done = asyncio.Event()
        if not state.backfill:
            backfill_done.set()
        # A sourced schema reaches stdout only with a checkpoint of the same Task.
        task.sourced_schema(binding_index, ITEMS_SOURCED_SCHEMA)
        await task.checkpoint(ConnectorState())
        common.open_binding(
            binding,
            binding_index,
            state,
            task,
            fetch_changes=functools.partial(fetch_items, config, task, backfill_done),
            fetch_page=functools.partial(backfill_items, config, backfill_done),
        )

    def open_codes(
        binding: CaptureBinding[ResourceConfig],
        binding_index: int,
        state: ResourceState,
        task: Task,
        all_bindings: list[Any],
    ) -> None:
        common.open_binding(binding, binding_index, state, task, fetch_snapshot=snapshot_codes)

    return [
        common.Resource(
            name="items",
            key=["/id"],
            model=Item,
            open=open_items,
            initial_state=ResourceState(
                inc=ResourceState.Incremental(cursor=0),
                backfill=ResourceState.Backfill(cutoff=0, next_page=None),
            ),
            initial_config=ResourceConfig(name="items", interval=timedelta(seconds=1)),
            schema_inference=True,
            requires_explicit_acks=config.explicit_acks,
        ),
        common.SnapshotResource(
            name="codes",
            model=Code,
            open=open_codes,
            initial_config=ResourceConfig(name="codes", interval=timedelta(seconds=1)),
        ),
    ]


class Connector(BaseCaptureConnector[EndpointConfig, ResourceConfig, ConnectorState]):
    PATH_POINTERS: ClassVar[list[str]] = ResourceConfig.PATH_POINTERS

    def request_class(self) -> type[Request[EndpointConfig, ResourceConfig, ConnectorState]]:
        return Request[EndpointConfig, ResourceConfig, ConnectorState]

    async def spec(self, log: Logger, _: request.Spec) -> ConnectorSpec:
        return ConnectorSpec(
            configSchema=EndpointConfig.model_json_schema(),
            documentationUrl=DOCUMENTATION_URL,
            resourceConfigSchema=ResourceConfig.model_json_schema(),
            resourcePathPointers=self.PATH_POINTERS,
        )

    async def discover(
        self, log: Logger, discover: request.Discover[EndpointConfig]
    ) -> response.Discovered[ResourceConfig]:
        return common.discovered(resources(discover.config))

    async def validate(
        self, log: Logger, validate: request.Validate[EndpointConfig, ResourceConfig]
    ) -> response.Validated:
        resolved = common.resolve_bindings(validate.bindings, resources(validate.config))
        return common.validated(resolved)

    async def open(
        self, log: Logger, open: request.Open[EndpointConfig, ResourceConfig, ConnectorState]
    ) -> tuple[response.Opened, Any]:
        resolved = common.resolve_bindings(open.capture.bindings, resources(open.capture.config))
        return common.open(open, resolved)
