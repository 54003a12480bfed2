"""Request handlers, one per endpoint. Authentication, limits, faults and counting happen
in the server middleware before a data handler runs (see ``server.py``)."""

import asyncio
import functools
import json
import zlib
from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, ValidationError

from .auth import token_response
from .bulk import CREATE_FIELDS, CreateJobRequest, Job
from .deletions import ReplicationError
from .errors import ApiError, not_found
from .rest import batch_size, bind_rest
from .results import ResultSet
from .schema import ObjectSpec, describe_global_entry, describe_object
from .state import LIMIT_INFO, STATE
from .wire import json_datetime

FILE_STORAGE_MB = 976_562  # DailyBulkV2QueryFileStorageMB.Max: 1 TB (§2.4)
BULK_API_BATCHES = 15_000
_json = functools.partial(web.json_response, dumps=functools.partial(json.dumps, ensure_ascii=False))


def _payload(model: BaseModel, include: set[str] | None = None) -> web.Response:
    """A JSON response from a payload model; absent optional fields are left out."""
    text = model.model_dump_json(include=include, exclude_none=True)
    return web.Response(text=text, content_type="application/json")


def _version(request: web.Request) -> str:
    return request.match_info["version"]


# -- OAuth and metadata ---------------------------------------------------------------


async def token(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    form = {key: str(value) for key, value in (await request.post()).items()}
    body = token_response(request, form, state.knobs, state.tokens, state.org.clock.now())
    state.counters.token_issued()
    return _payload(body)


def release_label(version: str) -> str:
    """Release name of an API version: 31.0 is Summer '14, then three releases a year."""
    k = int(float(version)) - 31
    return f"{('Summer', 'Winter', 'Spring')[k % 3]} '{14 + (k + 2) // 3:02d}"


async def versions(request: web.Request) -> web.StreamResponse:
    """``GET /services/data/``: unauthenticated, not counted against limits (§2.1)."""
    return _json(
        [
            {"label": release_label(v), "url": f"/services/data/v{v}", "version": v}
            for v in request.app[STATE].knobs.versions
        ]
    )


async def describe_global(request: web.Request) -> web.StreamResponse:
    org = request.app[STATE].org
    return _json(
        {
            "encoding": "UTF-8",
            "maxBatchSize": 200,
            "sobjects": [describe_global_entry(spec, _version(request)) for spec in org.objects],
        }
    )


def _sobject(request: web.Request) -> ObjectSpec:
    """The object named in the path, or 404 NOT_FOUND."""
    try:
        return request.app[STATE].org.spec(request.match_info["object"])
    except KeyError:
        raise not_found() from None


async def describe(request: web.Request) -> web.StreamResponse:
    return _json(describe_object(_sobject(request), _version(request)))


class Limit(BaseModel):
    Max: int
    Remaining: int


async def limits(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    knobs = state.knobs
    storage_used = state.result_bytes // 1_000_000
    body = {
        "DailyApiRequests": Limit(
            Max=knobs.daily_api_requests, Remaining=max(0, knobs.daily_api_requests - state.usage.used)
        ),
        "DailyBulkApiBatches": Limit(Max=BULK_API_BATCHES, Remaining=BULK_API_BATCHES),
        "DailyBulkV2QueryFileStorageMB": Limit(
            Max=FILE_STORAGE_MB, Remaining=max(0, FILE_STORAGE_MB - storage_used)
        ),
        "DailyBulkV2QueryJobs": Limit(
            Max=knobs.daily_bulk_jobs, Remaining=max(0, knobs.daily_bulk_jobs - state.jobs.created_total)
        ),
    }
    return _json({name: limit.model_dump() for name, limit in body.items()})


# -- Bulk API 2.0 query jobs ----------------------------------------------------------


def _job(request: web.Request) -> Job:
    return request.app[STATE].jobs.get(request.match_info["job_id"])


def _job_info(job: Job, fields: set[str] | None = None) -> web.StreamResponse:
    return _payload(job.info, fields)


async def job_create(request: web.Request) -> web.StreamResponse:
    try:
        body = CreateJobRequest.model_validate_json(await request.read())
    except ValidationError as error:
        raise ApiError(400, "API_ERROR", f"Invalid job request: {error.errors()[0]['msg']}") from None
    job = request.app[STATE].jobs.create(body, _version(request))
    return _job_info(job, CREATE_FIELDS)


async def job_list(request: web.Request) -> web.StreamResponse:
    """``GET /jobs/query`` (§4.8): ``nextRecordsUrl`` is null on the last page, not absent."""
    jobs, locator = request.app[STATE].jobs.listing(request.query.get("jobType"), request.query.get("queryLocator"))
    next_url = None if locator is None else f"/services/data/v{_version(request)}/jobs/query?queryLocator={locator}"
    records = [job.model_dump(mode="json", exclude_none=True) for job in jobs]
    return _json({"done": locator is None, "records": records, "nextRecordsUrl": next_url})


async def job_info(request: web.Request) -> web.StreamResponse:
    job = _job(request)
    request.app[STATE].jobs.poll(job)
    return _job_info(job)


async def job_abort(request: web.Request) -> web.StreamResponse:
    job = _job(request)
    try:
        body = json.loads(await request.read())
    except ValueError:
        body = None
    if body != {"state": "Aborted"}:
        raise ApiError(400, "API_ERROR", 'A query job can only be updated with {"state":"Aborted"}')
    request.app[STATE].jobs.abort(job)
    return _job_info(job)


async def job_delete(request: web.Request) -> web.StreamResponse:
    request.app[STATE].jobs.delete(_job(request))
    return web.Response(status=204)


def _accepts_gzip(request: web.Request) -> bool:
    codings = request.headers.get("Accept-Encoding", "").split(",")
    return any(c.split(";")[0].strip().lower() == "gzip" for c in codings)


async def job_results(request: web.Request) -> web.StreamResponse:
    """One CSV page, streamed a chunk of rows at a time, gzip-compressed when accepted
    (§4.6). ``Sforce-Locator`` is the next page's locator, literally ``null`` on the last."""
    state = request.app[STATE]
    job = _job(request)
    locator = request.query.get("locator") or None
    max_records = request.query.get("maxRecords", str(state.knobs.default_max_records))
    if not max_records.isdigit() or int(max_records) < 1:
        raise ApiError(400, "API_ERROR", f"Invalid maxRecords: {max_records}")
    page_rows = int(max_records)
    if state.knobs.max_page_rows is not None:
        page_rows = min(page_rows, state.knobs.max_page_rows)
    out = state.jobs.results(job, _version(request), locator, page_rows)
    state.counters.locator_fetched(job.info.id, locator)
    if state.knobs.result_page_delay_seconds:
        # A large page takes a while to render and download; this makes a small one take as long.
        await asyncio.sleep(state.knobs.result_page_delay_seconds)

    gzip = _accepts_gzip(request) and state.knobs.gzip_results
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=UTF-8",
            "Sforce-Locator": out.locator or "null",
            "Sforce-NumberOfRecords": str(out.page.rows),
            "Sforce-Limit-Info": request[LIMIT_INFO],
            **({"Content-Encoding": "gzip"} if gzip else {}),
        }
    )
    await response.prepare(request)
    compressor = zlib.compressobj(state.knobs.gzip_level, zlib.DEFLATED, 31) if gzip else None
    # Fault: cut the page off in its first data chunk (or its header, if it has no rows).
    cut_at = (1 if out.page.rows else 0) if state.faults.reset_result_page() else -1
    chunks = job.csv_writer(state.knobs.csv_null_as_quoted_empty).chunks(out.page)
    try:
        for index, text in enumerate(chunks):
            data = text.encode()
            state.result_bytes += len(data)
            if index == cut_at:
                await _write(response, compressor, data[: len(data) // 2], flush=True)
                if request.transport is not None:
                    request.transport.abort()
                return response
            await _write(response, compressor, data)
        if compressor is not None:
            await response.write(compressor.flush())
        # Counted before the terminating chunk, so a client that has read the whole page
        # always finds it counted (and, if the expiry fault fires, its job gone).
        state.counters.rows(out.page.rows, job.info.id)
        state.jobs.page_delivered(job, out, locator)
        await response.write_eof()
    except ConnectionError:
        # The client went away mid-page (a connector killed between sessions): nothing to answer.
        # aiohttp says so as a reset, or as a plain ConnectionError when a write is draining.
        return response
    return response


async def _write(
    response: web.StreamResponse, compressor: "zlib._Compress | None", data: bytes, flush: bool = False
) -> None:
    if compressor is not None:
        data = compressor.compress(data) + (compressor.flush(zlib.Z_SYNC_FLUSH) if flush else b"")
    if data:
        await response.write(data)


# -- REST query -----------------------------------------------------------------------


async def query(request: web.Request) -> web.StreamResponse:
    """``query`` and ``queryAll`` (the latter also returns soft-deleted rows)."""
    state = request.app[STATE]
    text = request.query.get("q", "")
    if not text.strip():
        raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
    bound = bind_rest(state.org, text)
    include_deleted = request.match_info.route.name == "query_all"
    result = ResultSet(state.org, bound, state.org.snapshot(), include_deleted)
    rows = batch_size(request.headers.get("Sforce-Query-Options"))
    body = state.cursors.first_page(result, rows, _version(request))
    state.counters.rows(len(body.records))
    return _payload(body)


async def query_more(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    rows = batch_size(request.headers.get("Sforce-Query-Options"))
    body = state.cursors.next_page(request.match_info["locator"], rows, _version(request))
    state.counters.rows(len(body.records))
    return _payload(body)


# -- getDeleted -------------------------------------------------------------------------


class DeletedRecord(BaseModel):
    id: str
    deletedDate: str


class GetDeletedResult(BaseModel):
    """``GET /sobjects/{X}/deleted/`` (§5.3)."""

    deletedRecords: list[DeletedRecord]
    earliestDateAvailable: str
    latestDateCovered: str


def _replication_date(request: web.Request, name: str) -> datetime:
    """Query parameter ``name`` as a timezone-aware dateTime (ISO 8601 with an offset)."""
    text = request.query.get(name)
    if not text:
        raise ApiError(400, "MISSING_ARGUMENT", f"Missing required parameter '{name}' (a dateTime)")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        message = f"Invalid {name}: '{text}' is not a dateTime with a time zone, e.g. 2024-05-06T00:00:00Z"
        raise ApiError(400, "MALFORMED_QUERY", message)
    return value


async def get_deleted(request: web.Request) -> web.StreamResponse:
    """The records of one object deleted in [start, end), both truncated to the minute,
    with ``earliestDateAvailable`` and ``latestDateCovered`` (rules in ``deletions.py``)."""
    state = request.app[STATE]
    spec = _sobject(request)
    if not spec.replicateable:
        message = f"entity type {spec.name} does not support getDeleted (it is not replicateable)"
        raise ApiError(400, "INVALID_TYPE_FOR_OPERATION", message)
    start, end = _replication_date(request, "start"), _replication_date(request, "end")
    try:
        answer = state.org.get_deleted(spec.name, start, end, id_limit=state.knobs.deleted_id_limit)
    except ReplicationError as error:
        raise ApiError(400, error.error_code, error.message) from None
    records = [DeletedRecord(id=d.id, deletedDate=json_datetime(d.deleted_at)) for d in answer.records]
    body = GetDeletedResult(
        deletedRecords=records,
        earliestDateAvailable=json_datetime(answer.earliest_available),
        latestDateCovered=json_datetime(answer.latest_covered),
    )
    return _payload(body)
