"""Everything one running emulator holds, shared by its request handlers."""

import threading
from dataclasses import dataclass, field

from aiohttp import web

from .auth import TokenStore
from .bulk import JobStore
from .counters import Counters
from .knobs import FaultState, Knobs
from .org import Org
from .rest import CursorStore


class ApiUsage:
    """The daily API request allocation: every authenticated data request uses one
    (§7); when it is used up, data requests answer 403 REQUEST_LIMIT_EXCEEDED."""

    def __init__(self, knobs: Knobs) -> None:
        self._knobs = knobs
        self._lock = threading.Lock()
        self.used = 0

    def charge(self) -> int | None:
        """Count one request; returns the new usage, or None if the allocation is spent."""
        with self._lock:
            if self.used >= self._knobs.daily_api_requests:
                return None
            self.used += 1
            return self.used

    def set(self, used: int) -> None:
        with self._lock:
            self.used = used


@dataclass
class EmulatorState:
    org: Org
    knobs: Knobs
    counters: Counters = field(default_factory=Counters)
    tokens: TokenStore = field(init=False)
    faults: FaultState = field(init=False)
    jobs: JobStore = field(init=False)
    cursors: CursorStore = field(default_factory=CursorStore)
    usage: ApiUsage = field(init=False)
    result_bytes: int = 0  # CSV bytes generated, for DailyBulkV2QueryFileStorageMB

    def __post_init__(self) -> None:
        self.tokens = TokenStore(self.knobs, self.org.clock)
        self.faults = FaultState(self.knobs)
        self.jobs = JobStore(self.org, self.knobs, self.faults, self.counters)
        self.usage = ApiUsage(self.knobs)


STATE = web.AppKey("emulator_state", EmulatorState)
# The Sforce-Limit-Info header value of an admitted data request (§2.5).
LIMIT_INFO = web.RequestKey("limit_info", str)
