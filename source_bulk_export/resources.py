"""Which Salesforce objects become bindings, and what each binding looks like.

describe-global -> keep what can be exported -> describe each (bounded concurrency) ->
`ObjectPlan` per object (fields.py) -> one `common.Resource` per plan:

- a cursor field: incremental + backfill, key `/Id`; formula fields add a daily re-backfill;
- no cursor field: a snapshot (a full export each interval), keyed on `/_meta/row_id`, which
  is how the CDK addresses the rows a snapshot deletes.
"""

import asyncio
import functools
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from logging import Logger

import aiohttp
from estuary_cdk.capture import Task, common
from estuary_cdk.capture.common import BaseDocument
from estuary_cdk.flow import CaptureBinding, ValidationError

from . import api
from .auth import SalesforceError, SalesforceSession
from .checkpoints import Binding, Checkpoints
from .deletions import Deletions
from .exports import Exports, hold_for
from .fields import ObjectPlan, UncapturableObject, plan_object
from .models import (
    DEFAULT_INTERVAL,
    DescribeGlobal,
    EndpointConfig,
    GlobalSObject,
    ResourceConfig,
    ResourceState,
    SalesforceRecord,
    SObjectDescribe,
)
from .states import decode

# Describes are short requests (they don't count against the org's 25 concurrent long-running
# requests) but each costs one call of the daily allocation. Ten in flight describe ~1,600
# objects in a minute or two; more buys little and looks like a burst to Salesforce.
DESCRIBE_CONCURRENCY = 10

# A snapshot re-exports the whole object each interval, and every export is a Bulk job: at
# five minutes, two dozen cursor-less objects would spend ~7,000 of the org's 10,000 Bulk jobs
# a day. These objects are small, slow-changing metadata (TabDefinition, CronJobDetail, ...),
# so hourly is fresh enough.
SNAPSHOT_INTERVAL = timedelta(hours=1)

# Formula values change without touching SystemModstamp, so objects with formula fields
# re-run their backfill daily. 23:55 UTC is Salesforce-native's default; a daily cron stays
# clear of the CDK's per-minute schedule problem.
FORMULA_REFRESH_SCHEDULE = "55 23 * * *"

# Objects describe-global calls queryable that still cannot be exported with a plain SELECT.
DENIED_OBJECTS = frozenset(
    {
        # "Implementation restriction: ... requires a filter by ...": only queryable with a
        # WHERE on a specific parent or user.
        "CollaborationGroupRecord",
        "ContentDocumentLink",
        "ContentFolderItem",
        "DataStatistics",
        "EntityParticle",
        "FieldDefinition",
        "FlexQueueItem",
        "IdeaComment",
        "PicklistValueInfo",
        "RelationshipDomain",
        "UserEntityAccess",
        "UserFieldAccess",
        "Vote",
        # Only reachable as sub-queries of a parent: "entity type X does not support query".
        "ActivityHistory",
        "AggregateResult",
        "FeedTrackedChange",
        "Name",
        "NoteAndAttachment",
        "OpenActivity",
        "UserRecordAccess",
    }
)

# The CDK types a resource's state as its own ResourceState; the states it hands to `open` are this
# connector's subclass (models.ResourceState), since it parses them with this connector's ConnectorState.
type SalesforceResource = common.Resource[SalesforceRecord, ResourceConfig, common.ResourceState]

OpenBinding = Callable[
    [
        CaptureBinding[ResourceConfig],
        int,
        common.ResourceState,
        Task,
        list[tuple[CaptureBinding[ResourceConfig], SalesforceResource]],
    ],
    None | Awaitable[None],
]


@dataclass
class Discovery:
    """The plans of every capturable object, and why each other candidate was left out."""

    plans: list[ObjectPlan]
    skipped: dict[str, str]


def exclusion_reason(sobject: GlobalSObject) -> str | None:
    """Why describe-global's flags rule an object out, or None if it is a candidate."""
    if not sobject.queryable:
        return "not queryable"
    if not sobject.retrieveable:
        return "not retrieveable"
    if sobject.deprecatedAndHidden:
        return "deprecated and hidden"
    if sobject.name in DENIED_OBJECTS:
        return "needs a special filter to be queried"
    return None


async def connect(log: Logger, session: SalesforceSession, config: EndpointConfig) -> DescribeGlobal:
    """Sign in and read describe-global: the cheapest call that proves the API works for this
    user, and one that discovery needs anyway. Failures become ValidationErrors that say what
    to fix.
    """
    try:
        await session.data_url(log)  # signs in: a failure here is about the login host
    except (aiohttp.ClientError, TimeoutError) as err:
        problem = f"Could not connect to login_url {config.login_url} ({err!r})."
        raise ValidationError([f"{problem} Check login_url, and that the host is reachable from here."]) from err

    try:
        return await session.request_model(log, "/sobjects/", DescribeGlobal)
    except (aiohttp.ClientError, TimeoutError) as err:
        problem = f"Signed in, but could not connect to the org's instance URL ({err!r})."
        raise ValidationError([f"{problem} Check the network path to Salesforce."]) from err
    except SalesforceError as err:
        raise ValidationError([_data_api_problem(err, config)]) from err


def _data_api_problem(err: SalesforceError, config: EndpointConfig) -> str:
    if err.error_code == "API_DISABLED_FOR_ORG":
        return (
            "The Salesforce API is disabled for this org or user. Give the user the 'API Enabled' "
            "permission (Setup > Profiles or Permission Sets), on an edition that includes API access. "
            f"(Salesforce said: {err.message})"
        )
    if err.status == 404:
        return (
            f"This org does not serve API version {config.advanced.api_version}. Set advanced.api_version "
            f"to a version the org supports (Salesforce said: {err.message})"
        )
    if err.status == 401:
        return f"Salesforce issued an access token but refuses it for API calls ({err.message}). Re-authorise the connector."
    return f"Salesforce refused to list the org's objects: HTTP {err.status} {err.error_code}: {err.message}"


async def discover_objects(
    log: Logger, session: SalesforceSession, catalog: DescribeGlobal, only: Collection[str] | None = None
) -> Discovery:
    """Describe and plan the candidate objects of `catalog` (only those named in `only`, if given).

    An object whose describe is refused (4xx) or shows it cannot be captured is skipped, with
    a log line saying why. Server errors and credential failures propagate: a transient failure
    must not make an object silently disappear from discovery.
    """
    flagged: dict[str, str] = {}
    candidates: list[str] = []
    for sobject in catalog.sobjects:
        if only is not None and sobject.name not in only:
            continue
        if reason := exclusion_reason(sobject):
            flagged[sobject.name] = reason
        else:
            candidates.append(sobject.name)
    if flagged:
        # One line for all of them: an org has hundreds, and the flags say it all.
        log.info(
            "left out objects that describe-global marks as not exportable", {"count": len(flagged), "objects": flagged}
        )

    skipped: dict[str, str] = dict(flagged)
    if only is not None:
        listed = {sobject.name for sobject in catalog.sobjects}
        skipped.update({name: "not in the org's describe-global" for name in only if name not in listed})

    limit = asyncio.Semaphore(DESCRIBE_CONCURRENCY)

    async def plan(name: str) -> ObjectPlan | str:
        async with limit:
            try:
                describe = await session.request_model(log, f"/sobjects/{name}/describe/", SObjectDescribe)
            except SalesforceError as err:
                if err.status >= 500:
                    raise
                return f"describe failed: HTTP {err.status} {err.error_code}: {err.message}"
        try:
            return plan_object(describe)
        except UncapturableObject as err:
            return str(err)

    plans: list[ObjectPlan] = []
    for name, result in zip(candidates, await asyncio.gather(*(plan(name) for name in candidates)), strict=True):
        if isinstance(result, ObjectPlan):
            plans.append(result)
        else:
            log.info("leaving out an object that cannot be captured", {"object": name, "reason": result})
            skipped[name] = result
    return Discovery(plans=plans, skipped=skipped)


def open_binding(plan: ObjectPlan, exports: Exports, deletions: Deletions, config: EndpointConfig,
                 checkpoints: Checkpoints) -> OpenBinding:
    """How a binding of `plan` captures: its fetch functions, bound to narrow arguments, and the
    `Binding` they share (restored from the binding's state)."""
    advanced = config.advanced

    def open(
        binding: CaptureBinding[ResourceConfig],
        index: int,
        state: common.ResourceState,
        task: Task,
        all_bindings: list[tuple[CaptureBinding[ResourceConfig], SalesforceResource]],
    ) -> None:
        # The CDK parses every binding's state with this connector's ConnectorState.
        assert isinstance(state, ResourceState)
        exports.waits.stopping = task.stopping.event
        checkpoints.binding_opened(task, len(all_bindings))
        shared = Binding.restore(index, binding.stateKey, checkpoints, state)
        exports.restored(plan.name, "queryAll", shared.delta_export)
        exports.restored(plan.name, "query", shared.snapshot_export)
        id_export = shared.deletions.export if shared.deletions is not None else None
        if id_export is not None and id_export.job is not None:
            # An Id export adopting a backfill's job would take a slice for every Id there is, and
            # report the rest deleted: its job is never adopted, only kept from being adopted.
            exports.restored(plan.name, "query", decode(id_export.job), adoptable=False)

        if plan.cursor_field is None:
            common.open_binding(
                binding,
                index,
                state,
                task,
                fetch_snapshot=functools.partial(
                    api.snapshot_object, exports, plan, shared, advanced.bulk_delta_threshold
                ),
                tombstone=BaseDocument(_meta=BaseDocument.Meta(op="d")),
            )
            return
        if isinstance(state.backfill, ResourceState.Backfill):
            backfill = api.load_backfill(state.backfill.next_page, advanced.backfill_slice_rows)
            exports.restored(plan.name, "query", backfill)
            shared.hold = hold_for(backfill, advanced.delta_lag)
        common.open_binding(
            binding,
            index,
            state,
            task,
            fetch_changes=functools.partial(
                api.fetch_changes, exports, deletions, plan, shared, advanced.delta_lag, advanced.bulk_delta_threshold
            ),
            fetch_page=functools.partial(
                api.backfill_object, exports, plan, shared, config.start_date, advanced.backfill_slice_rows,
                advanced.delta_lag,
            ),
        )

    return open


def resource_for(plan: ObjectPlan, open_fn: OpenBinding, cutoff: datetime) -> SalesforceResource:
    """The binding of one object. `cutoff` is the backfill/delta seam (docs/internals.md)."""
    schema = common.Resource.FixedSchema(plan.json_schema())
    if plan.cursor_field is None:
        return common.SnapshotResource(
            name=plan.name,
            model=schema,
            open=open_fn,
            initial_state=ResourceState(),
            initial_config=ResourceConfig(name=plan.name, interval=SNAPSHOT_INTERVAL),
        )

    if plan.formula_fields:
        config = ResourceConfig(name=plan.name, interval=DEFAULT_INTERVAL, schedule=FORMULA_REFRESH_SCHEDULE)
    else:
        # No schedule argument at all: an explicit "" would show in the discovered resource config.
        # The interval is passed although it is the default, so that it does show.
        config = ResourceConfig(name=plan.name, interval=DEFAULT_INTERVAL)
    return common.Resource(
        name=plan.name,
        key=["/Id"],
        model=schema,
        open=open_fn,
        initial_state=ResourceState(
            inc=ResourceState.Incremental(cursor=cutoff),
            backfill=ResourceState.Backfill(cutoff=cutoff, next_page=None),
        ),
        initial_config=config,
        schema_inference=True,
    )


async def all_resources(
    log: Logger,
    session: SalesforceSession,
    exports: Exports,
    config: EndpointConfig,
    only: Collection[str] | None = None,
    now: datetime | None = None,
) -> tuple[list[SalesforceResource], Discovery]:
    """Resources for every capturable object, or only for the objects named in `only`.

    A binding initialised now gets `cutoff = floor(now) - delta_lag` as its backfill/delta seam.
    """
    catalog = await connect(log, session, config)
    discovery = await discover_objects(log, session, catalog, only)
    cutoff = api.delta_horizon(now or datetime.now(tz=UTC), config.advanced.delta_lag)
    checkpoints = Checkpoints()  # one per request: an `open` shares it between its bindings
    deletions = Deletions(session, exports)
    resources = [
        resource_for(plan, open_binding(plan, exports, deletions, config, checkpoints), cutoff)
        for plan in discovery.plans
    ]
    return resources, discovery
