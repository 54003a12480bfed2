"""A small blocking HTTP client for poking the emulator from tests and a shell.

It is deliberately dumb: no retries, no automatic decompression, no token refresh. It
exists so tests of the emulator read as HTTP exchanges, not as client-library calls.
"""

import csv
import gzip
import http.client
import io
import json
import urllib.parse
from dataclasses import dataclass
from email.message import Message
from typing import Any

from .knobs import Credentials


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def csv(self) -> list[list[str]]:
        """The body as CSV rows (gunzipped first if the reply is gzip-encoded)."""
        body = gzip.decompress(self.body) if self.headers.get("Content-Encoding") == "gzip" else self.body
        return list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))


class EmulatorClient:
    def __init__(self, url: str, credentials: Credentials | None = None, version: str = "62.0") -> None:
        self.url = url
        self.credentials = credentials or Credentials()
        self.version = version
        self.access_token = ""

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        json_body: object = None,
        form: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        version: str | None = None,
    ) -> Reply:
        """``path`` is a server path (``/services/...``) or relative to the data URL of
        ``version`` (``/sobjects``). Sends the access token if there is one."""
        if not path.startswith("/services/"):
            path = f"/services/data/v{version or self.version}{path}"
        if params:
            path += "?" + urllib.parse.urlencode(params)
        sent = dict(headers or {})
        if self.access_token and "Authorization" not in sent:
            sent["Authorization"] = f"Bearer {self.access_token}"
        if json_body is not None:
            body, sent["Content-Type"] = json.dumps(json_body).encode(), "application/json"
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        parsed = urllib.parse.urlsplit(self.url)
        connection = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            connection.close()

    def token(self, **form: str) -> Reply:
        return self.request("POST", "/services/oauth2/token", form=form)

    def login(self) -> str:
        """Run the refresh-token grant with the configured credentials; keep the token."""
        reply = self.token(
            grant_type="refresh_token",
            client_id=self.credentials.client_id,
            client_secret=self.credentials.client_secret,
            refresh_token=self.credentials.refresh_token,
        )
        assert reply.status == 200, reply.body
        self.access_token = reply.json()["access_token"]
        return self.access_token

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def create_job(self, soql: str, operation: str = "query", **options: str) -> Reply:
        return self.request(
            "POST", "/jobs/query", json_body={"operation": operation, "query": soql, **options}
        )

    def wait_job(self, job_id: str, max_polls: int = 50) -> dict[str, Any]:
        """Poll job info until the job is terminal; returns the final JobInfo."""
        for _ in range(max_polls):
            info: dict[str, Any] = self.get(f"/jobs/query/{job_id}").json()
            if info["state"] in ("JobComplete", "Failed", "Aborted"):
                return info
        raise AssertionError(f"job {job_id} did not finish in {max_polls} polls")

    def run_job(self, soql: str, operation: str = "query") -> str:
        """Create a job, wait for it to complete, return its id."""
        reply = self.create_job(soql, operation)
        assert reply.status == 200, reply.body
        job_id: str = reply.json()["id"]
        assert self.wait_job(job_id)["state"] == "JobComplete"
        return job_id

    def results(
        self,
        job_id: str,
        locator: str | None = None,
        max_records: int | None = None,
        gzip: bool = False,
        version: str | None = None,
    ) -> Reply:
        params = {}
        if locator is not None:
            params["locator"] = locator
        if max_records is not None:
            params["maxRecords"] = str(max_records)
        headers = {"Accept-Encoding": "gzip"} if gzip else {}
        return self.get(f"/jobs/query/{job_id}/results", params=params, headers=headers, version=version)

    def all_results(self, job_id: str, max_records: int | None = None) -> list[list[str]]:
        """Every data row of a completed job (page headers dropped), following locators."""
        rows: list[list[str]] = []
        locator = None
        while True:
            reply = self.results(job_id, locator, max_records)
            assert reply.status == 200, reply.body
            rows.extend(reply.csv()[1:])
            locator = reply.headers["Sforce-Locator"]
            if locator == "null":
                return rows

    def query(self, soql: str, all_rows: bool = False, batch_size: int | None = None) -> Reply:
        headers = {"Sforce-Query-Options": f"batchSize={batch_size}"} if batch_size else {}
        return self.get("/queryAll" if all_rows else "/query", params={"q": soql}, headers=headers)
