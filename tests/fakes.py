"""Test doubles for unit tests of jobs.py and rest.py: a scripted SalesforceSession and frozen time.

`FakeSession` implements the SalesforceSession interface of docs/internals.md. Each route is a
queue of scripted responses keyed by (method, path, locator); a route's last response repeats,
so a test scripts "InProgress, InProgress, JobComplete" and can replace a route mid-test.
"""

import asyncio
import gzip
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from logging import Logger
from typing import Any

from freezegun.api import (
    FrozenDateTimeFactory,
    StepTickTimeFactory,
    TickingDateTimeFactory,
)
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import BaseModel

from source_bulk_export.auth import SalesforceError
from source_bulk_export.checkpoints import Binding, Checkpoints
from source_bulk_export.models import ResourceState

type Key = tuple[str, str, str | None]


@dataclass
class Stream:
    """A streamed response: headers, body chunks, and optionally an error raised after them."""

    headers: dict[str, str]
    chunks: Sequence[bytes]
    error: BaseException | None = None
    hang: bool = False  # after the chunks, wait for the network forever


type Response = bytes | Stream | BaseException


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, Any] | None
    json: dict[str, Any] | None
    headers: dict[str, str] | None


@dataclass
class FakeSession:
    routes: dict[Key, list[Response]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    open_bodies: int = 0  # response bodies started and not yet finished or closed
    user: str | None = "005000000000001AAA"  # the user the token's identity URL names

    def script(self, method: str, path: str, *responses: Response, locator: str | None = None) -> None:
        self.routes[(method, path, locator)] = list(responses)

    def calls_to(self, method: str, path_prefix: str = "") -> list[Call]:
        return [c for c in self.calls if c.method == method and c.path.startswith(path_prefix)]

    def _next(self, method: str, path: str, params: dict[str, Any] | None) -> Response:
        key = (method, path, (params or {}).get("locator"))
        queue = self.routes.get(key)
        if not queue:
            raise AssertionError(f"unscripted request {key}")
        return queue.pop(0) if len(queue) > 1 else queue[0]

    async def data_url(self, log: Logger) -> str:
        return "https://fake.my.salesforce.com/services/data/v62.0"

    async def user_id(self, log: Logger) -> str | None:
        return self.user

    async def request(
        self,
        log: Logger,
        path: str,
        *,
        method: str = "GET",
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        self.calls.append(Call(method, path, params, json, headers))
        await asyncio.sleep(0)  # a real request yields to the loop
        response = self._next(method, path, params)
        if isinstance(response, BaseException):
            raise response
        assert isinstance(response, bytes), f"{method} {path} is scripted as a stream"
        return response

    async def request_model[T: BaseModel](self, log: Logger, path: str, model: type[T], **kw: Any) -> T:
        return model.model_validate_json(await self.request(log, path, **kw))

    async def request_stream(
        self,
        log: Logger,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[CIMultiDictProxy[str], Callable[[], AsyncGenerator[bytes, None]]]:
        self.calls.append(Call("GET", path, params, None, headers))
        await asyncio.sleep(0)
        response = self._next("GET", path, params)
        if isinstance(response, BaseException):
            raise response
        assert isinstance(response, Stream), f"GET {path} is not scripted as a stream"

        async def body() -> AsyncGenerator[bytes, None]:
            self.open_bodies += 1
            try:
                for chunk in response.chunks:
                    yield chunk
                if response.error is not None:
                    # Like a real connection: the error arrives while the reader waits for the
                    # network, thrown into the waiting task by the event loop.
                    arrival = asyncio.get_running_loop().create_future()
                    asyncio.get_running_loop().call_soon(arrival.set_exception, response.error)
                    await arrival
                if response.hang:
                    await asyncio.get_running_loop().create_future()
            finally:
                self.open_bodies -= 1  # the CDK releases the response here

        return CIMultiDictProxy(CIMultiDict(response.headers)), body


class FrozenTime:
    """`sleep` and `clock` for the module under test, driven by a freezegun factory.

    `sleep` records the delay, moves frozen time forward by it, and yields to the event loop,
    so no test waits for real and other tasks still interleave.
    """

    def __init__(self, frozen: FrozenDateTimeFactory | StepTickTimeFactory | TickingDateTimeFactory) -> None:
        self._frozen = frozen
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return time.time()  # frozen by freezegun

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._frozen.tick(seconds)
        await asyncio.sleep(0)


def sf_error(status: int, code: str, message: str, path: str = "") -> SalesforceError:
    return SalesforceError(status, code, message, f"https://fake.my.salesforce.com{path}")


def job_json(
    job_id: str,
    state: str,
    *,
    object: str = "Account",
    rows: int = 0,
    error: str | None = None,
    operation: str = "query",
    created: datetime | None = None,
    created_by: str = "005000000000001AAA",
) -> bytes:
    body: dict[str, Any] = {
        "id": job_id,
        "operation": operation,
        "object": object,
        "state": state,
        "numberRecordsProcessed": rows,
        "contentType": "CSV",
        "apiVersion": 62.0,
    }
    if error is not None:
        body["errorMessage"] = error
    if created is not None:
        body["createdDate"] = created.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
        body["createdById"] = created_by
    return json.dumps(body).encode()


def csv_page(rows: Sequence[Sequence[str]], header: Sequence[str] = ("Id", "Name")) -> bytes:
    """A Bulk results body the way Salesforce writes it: every value quoted, LF line endings."""

    def line(cells: Sequence[str]) -> str:
        return ",".join('"' + c.replace('"', '""') + '"' for c in cells) + "\n"

    return (line(header) + "".join(line(r) for r in rows)).encode()


def page_stream(
    body: bytes,
    next_locator: str | None,
    count: int,
    *,
    chunk: int = 7,
    error: BaseException | None = None,
    gzipped: bool = False,
) -> Stream:
    headers = {
        "Sforce-Locator": next_locator or "null",
        "Sforce-NumberOfRecords": str(count),
        "Content-Type": "text/csv; charset=UTF-8",
    }
    if gzipped:
        body = gzip.compress(body)
    return Stream(headers, [body[i : i + chunk] for i in range(0, len(body), chunk)], error)


class RecordedCheckpoints(Checkpoints):
    """Keeps the state patches a binding saves (as they would be serialised) instead of writing them
    to a capture Task; documents saved with them are kept too."""

    def __init__(self) -> None:
        super().__init__()
        self.patches: list[dict[str, Any]] = []
        self.documents: list[Any] = []

    async def write(self, state_key: str, patch: ResourceState, documents: Sequence[tuple[int, Any]] = ()) -> None:
        self.patches.append(patch.model_dump(exclude_unset=True))
        self.documents.extend(document for _, document in documents)

    async def write_streamed(self, state_key: str, index: int, documents: AsyncIterator[Any],
                             patch: Callable[[], ResourceState]) -> None:
        read = [document async for document in documents]
        await self.write(state_key, patch(), [(index, document) for document in read])


def binding(state_key: str = "Account") -> Binding:
    """A binding whose saves are recorded (RecordedCheckpoints)."""
    return Binding(index=0, state_key=state_key, checkpoints=RecordedCheckpoints())
