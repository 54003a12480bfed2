"""What can go wrong with a Bulk API 2.0 query job, as types callers branch on.

Every failure is a `BulkJobError` subclass carrying the job id, object, state and Salesforce's
message as fields (for structured logs), and `classify_message` / `classify_job` are the one
place where Salesforce's error texts are read.
"""

from typing import Any

from .models import JobInfo, JobState


class BulkJobError(Exception):
    """A Bulk job did not deliver its rows. Callers branch on the subclass, never the message.

    `job_id` is None when Salesforce refused to create the job; `state` is the job's last known
    state (None before creation); `message` is Salesforce's text or ours.
    """

    def __init__(self, message: str, *, job_id: str | None, object: str, state: str | None) -> None:
        super().__init__(f"Bulk job {job_id or '(not created)'} on {object} ({state or 'no state'}): {message}")
        self.message = message
        self.job_id = job_id
        self.object = object
        self.state = state

    def log_fields(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "job_id": self.job_id, "object": self.object,
                "state": self.state, "message": self.message}


class TransientJobError(BulkJobError):
    """A failure a re-submission can fix. `run` retries it, and after the last attempt raises
    JobFailedError instead, so no caller's retry loop can swallow it."""


class JobFailedError(BulkJobError):
    """A failure this module does not know how to fix. Not retried."""


class JobTooLargeError(BulkJobError):
    """The query timed out or its results were too large: the caller should split the work."""


class BulkUnsupportedError(BulkJobError):
    """Bulk API cannot export this object or a selected field: read it through REST, or report it."""


class LimitExhaustedError(BulkJobError):
    """A daily Bulk limit is exhausted. `run` waits it out; raised only after LIMIT_MAX_WAIT_S."""


class JobTimeoutError(BulkJobError):
    """The job did not finish within the wait timeout and was aborted. Splitting may help."""


class JobNotFoundError(BulkJobError):
    """The job no longer exists (deleted, or its results expired after 7 days): re-submit."""


class ResultReadError(BulkJobError):
    """A result page could not be read whole (cut off, malformed, or a different number of rows
    than announced) even after re-fetching it."""

    def __init__(self, message: str, *, job_id: str, object: str, locator: str | None,
                 expected: int | None = None, actual: int | None = None) -> None:
        super().__init__(message, job_id=job_id, object=object, state=JobState.JOB_COMPLETE)
        self.locator = locator
        self.expected = expected
        self.actual = actual

    def log_fields(self) -> dict[str, Any]:
        return {**super().log_fields(), "locator": self.locator, "expected": self.expected, "actual": self.actual}


class RowCountMismatchError(ResultReadError):
    """Rows read differ from Salesforce's count: a page's `Sforce-NumberOfRecords`, or the job's
    `numberRecordsProcessed`."""


# What a failure text means, matched case-insensitively against a Failed job's `errorMessage` or
# a refused creation's "errorCode: message". First match wins. Unmatched failures are
# JobFailedError: retrying an error nobody understands only delays the report.
FAILURE_MARKERS: tuple[tuple[type[BulkJobError], tuple[str, ...]], ...] = (
    (BulkUnsupportedError, (
        "not supported by the bulk api", "invalidentity",  # 400 at creation
        "functionality_not_enabled",  # "Selecting compound data not supported in Bulk Query"
        "featurenotenabled",  # "Cannot serialize value for 'X' in CSV format"
        "invalid_type",  # INVALID_TYPE and INVALID_TYPE_FOR_OPERATION
        "implementation restriction")),  # objects that need a special filter
    # INVALID_FIELD is deliberately absent: a field deleted or hidden since describe is refused by
    # REST too, so it is no reason to move an object off Bulk for good. It stays a JobFailedError
    # (or a SalesforceError at creation), and the restart that follows describes the object anew.
    (JobTooLargeError, (
        "query_timeout", "running for too long", "failed to write query result", "file size",
        "operation_too_large",
        # Salesforce's remedy for this one is "apply a filter criteria and try again": the same
        # SOQL would fail again after another 15 internal retries, so it is a split, not a retry.
        "retried more than 15 times")),
    (LimitExhaustedError, (
        "exceededquota", "request_limit_exceeded", "totalrequests limit exceeded",
        "per 24 hrs")),  # "Max bulk v2 query jobs (10000) per 24 hrs has been reached"
    (TransientJobError, (
        "unknown_exception", "internal server error", "internalservererror", "toomanylockfailure",
        "unable_to_lock_row", "server_unavailable", "api_currently_disabled")),
)


def classify_message(text: str) -> type[BulkJobError] | None:
    """The failure kind a Salesforce error text names, or None when no marker matches."""
    lowered = text.lower()
    return next((kind for kind, markers in FAILURE_MARKERS if any(m in lowered for m in markers)), None)


def classify_job(job: JobInfo) -> BulkJobError | None:
    """The error a terminal job stands for, or None when it completed.

    An Aborted job this module did not abort (its own aborts raise before this point) was stopped
    by an admin or by Salesforce: re-submitting it is what a restart would do anyway.
    """
    if job.state == JobState.JOB_COMPLETE:
        return None
    if job.state == JobState.ABORTED:
        return TransientJobError("aborted outside this connector", job_id=job.id, object=job.object, state=job.state)
    message = job.errorMessage or "no errorMessage"
    return (classify_message(message) or JobFailedError)(message, job_id=job.id, object=job.object, state=job.state)
