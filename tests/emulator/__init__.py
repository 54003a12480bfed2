"""A Salesforce emulator: the parts of the REST, Bulk API 2.0 and OAuth APIs a capture
connector uses, faithful to ``salesforce-api.md`` where it matters, over an org whose rows
are generated on demand. See README.md in this directory.

    from tests.emulator import EmulatorServer, Org, OrgConfig, Knobs

    with EmulatorServer(Org(OrgConfig(rows=10_000))) as emu:
        emu.url, emu.knobs.credentials      # where the connector logs in
        emu.org.insert("Account", {"Name": "New"})
        emu.counters.requests["job_create"]
"""

from .client import EmulatorClient
from .clock import Clock, ManualClock, SystemClock
from .counters import Counters, JobEnd, JobRecord, PageServed
from .deletions import DeletedRecords, Deletion, ReplicationError
from .knobs import Credentials, JobExpiry, JobFailure, Knobs
from .org import Org, expected_document
from .seeding import OrgConfig
from .server import EmulatorServer

__all__ = [
    "Clock",
    "Counters",
    "Credentials",
    "DeletedRecords",
    "Deletion",
    "EmulatorClient",
    "EmulatorServer",
    "JobEnd",
    "JobExpiry",
    "JobFailure",
    "JobRecord",
    "Knobs",
    "ManualClock",
    "Org",
    "OrgConfig",
    "PageServed",
    "ReplicationError",
    "SystemClock",
    "expected_document",
]
