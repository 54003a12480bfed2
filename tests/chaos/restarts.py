"""When a session ends: the restart patterns, one column of the matrix each.

Flow restarts a connector after every error, every publication and every shard move, so a
capture lives as a chain of sessions, each opened with the state the previous ones committed.
Each pattern says when the harness stops a session (SIGKILL, as flowctl does); every session
also stops as soon as the capture is complete, and none outlives the cell's wall-clock cap.

- **none**: one session runs until the capture is complete (a new one only if it exits).
- **checkpoint**: each session stops right after its first checkpoint that carries
  documents. (Not its first checkpoint of any kind: every session starts with eight delta
  cursors moving over empty windows, and stopping there would end every session before a
  backfill could read a page, whatever the connector did.)
- **random**: each session stops at a random moment 1-3 s after it opened (seeded).
- **backoff**: each session stops as soon as the connector is waiting out a backoff
  (`backing_off`), so every wait the connector starts is cut short by a restart.
"""

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tests import flow_harness as fh

type Until = Callable[[fh.Progress], bool]

# Issue 7's sessions live 1-2 transactions: a restart at a random moment this many seconds in.
RANDOM_SESSION_SECONDS = (1.0, 3.0)

# A state waiting out a backoff: any JSON object anywhere under `bindingStateV1` with this
# phase (the named states of the connector's rewrite).
BACKOFF_PHASE = "backing_off"
# Log messages that announce a wait: a Bulk job about to be re-submitted (jobs.py), and the
# session's pauses after REQUEST_LIMIT_EXCEEDED and 5xx (auth.py).
BACKOFF_LOG_MARKERS = ("will be re-submitted", "waiting before retrying")


def backing_off(observed: Mapping[str, Any] | fh.LogLine) -> bool:
    """Whether the connector is waiting out a backoff, from a checkpointed state (a JSON
    object under `bindingStateV1` whose `phase` is `backing_off`) or from a log line (one
    that announces a wait)."""
    if isinstance(observed, fh.LogLine):
        message = str((observed.record or {}).get("msg", ""))
        return any(marker in message for marker in BACKOFF_LOG_MARKERS)
    return _has_backoff_phase(observed.get("bindingStateV1"))


def _has_backoff_phase(value: object) -> bool:
    if isinstance(value, Mapping):
        return value.get("phase") == BACKOFF_PHASE or any(_has_backoff_phase(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_backoff_phase(v) for v in value)
    return False


@dataclass(frozen=True)
class RestartPattern:
    """A column of the matrix: `session(rng, done, seconds_left)` is the next session's plan,
    where `done` tells a complete capture and `seconds_left` is what remains of the cell's
    wall-clock cap."""

    name: str
    session: Callable[[random.Random, Until, float], fh.Session]


def _none(rng: random.Random, done: Until, seconds_left: float) -> fh.Session:
    return fh.Session(transactions=-1, until=done, duration=seconds_left)


def _after_checkpoint(rng: random.Random, done: Until, seconds_left: float) -> fh.Session:
    return fh.Session(transactions=-1, checkpoints=1, until=done, duration=seconds_left)


def _random_moment(rng: random.Random, done: Until, seconds_left: float) -> fh.Session:
    return fh.Session(transactions=-1, until=done, duration=min(seconds_left, rng.uniform(*RANDOM_SESSION_SECONDS)))


def _during_backoff(rng: random.Random, done: Until, seconds_left: float) -> fh.Session:
    def until(progress: fh.Progress) -> bool:
        return done(progress) or backing_off(progress.state)

    return fh.Session(transactions=-1, until=until, stop_on_log=backing_off, duration=seconds_left)


RESTARTS = (
    RestartPattern("none", _none),
    RestartPattern("checkpoint", _after_checkpoint),
    RestartPattern("random", _random_moment),
    RestartPattern("backoff", _during_backoff),
)
