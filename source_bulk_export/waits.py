"""How the connector waits: on the wall clock, cut short by a graceful stop, scaled in tests.

Every wait that matters across a restart is an instant in the checkpoint (a job's creation, a
backoff's `retry_at`); this module only sleeps until such an instant, so a restart waits for what
remains of it and no more. The CDK never interrupts a running fetch call, so a wait that a graceful
stop cuts short reports it, and the caller returns with its state unchanged.
"""

import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

type Sleep = Callable[[float], Awaitable[None]]

# For tests and the demo only: every wait of the connector (job polls, backoffs, limit waits) is
# multiplied by this, so a test that fails a job twice does not sit through minutes of backoff.
# The schedules themselves are pinned by time-frozen unit tests.
WAIT_SCALE_ENV = "SOURCE_BULK_EXPORT_WAIT_SCALE"


class Waits:
    """The clock and the sleeps of one connector process.

    `scale` multiplies every duration passed to `delay`, `pause` and `after`. `stopping` is the
    capture's graceful-stop event, once `open` has it (discover and validate have none).
    """

    def __init__(self, *, scale: float = 1.0, sleep: Sleep = asyncio.sleep) -> None:
        self.scale = scale
        self._sleep = sleep
        self.stopping: asyncio.Event | None = None

    @classmethod
    def from_environment(cls) -> "Waits":
        return cls(scale=float(os.environ.get(WAIT_SCALE_ENV, "1")))

    def ignoring_stop(self) -> "Waits":
        """The same clock, with waits that a graceful stop does not cut short: for work that cannot
        end early (a snapshot pass is compared whole with the previous one)."""
        return Waits(scale=self.scale, sleep=self._sleep)

    def now(self) -> datetime:
        return datetime.now(tz=UTC)

    def scaled(self, moment: datetime) -> datetime:
        """`moment`, a deadline computed from real durations, with its distance from now scaled."""
        now = self.now()
        return now + (moment - now) * self.scale

    def after(self, duration: timedelta) -> datetime:
        """The instant `duration` (scaled) from now."""
        return self.now() + duration * self.scale

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds` (scaled), whatever happens: for waits inside one HTTP exchange."""
        await self._sleep(seconds * self.scale)

    async def pause(self, seconds: float) -> bool:
        """Sleep `seconds` (scaled). False when a graceful stop cut it short."""
        return await self._interruptible(seconds * self.scale)

    async def until(self, moment: datetime) -> bool:
        """Sleep until `moment` (already scaled when it was computed). False when a stop cut it short."""
        return await self._interruptible((moment - self.now()).total_seconds())

    def stopped(self) -> bool:
        return self.stopping is not None and self.stopping.is_set()

    async def _interruptible(self, seconds: float) -> bool:
        if self.stopped():
            return False
        if seconds <= 0:
            return True
        if self.stopping is None:
            await self._sleep(seconds)
            return True
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        stopper = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopper):
                task.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)
        return not self.stopping.is_set()
