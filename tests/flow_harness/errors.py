"""The harness's exceptions, and how they quote the connector's stderr."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._json import _loads

if TYPE_CHECKING:
    from .results import PreviewResult


STDERR_TAIL_LINES = 15
"""How many stderr lines an error message quotes."""


class HarnessError(Exception):
    """The catalog or the call is wrong: bad test.flow.yaml, unknown collection, an
    encrypted config with no plaintext override."""


class ConnectorError(HarnessError):
    """The connector failed: non-zero exit, or no answer. Carries its stderr, and for a
    preview the partial result up to the failure."""

    def __init__(
        self,
        message: str,
        *,
        exit_code: int | None = None,
        stderr: Sequence[str] = (),
        result: PreviewResult | None = None,
    ) -> None:
        self.exit_code = exit_code
        self.stderr = list(stderr)
        self.result = result
        tail = describe_stderr(self.stderr)
        super().__init__(f"{message}\n--- connector stderr (last lines) ---\n{tail}" if tail else message)


class ProtocolError(ConnectorError):
    """The connector wrote something the capture protocol does not allow."""


class ConnectorTimeout(ConnectorError):
    """The connector produced nothing for longer than the allowed timeout."""


def _parse_log(raw: str) -> dict[str, Any] | None:
    if not raw.startswith("{"):
        return None
    try:
        record = _loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def describe_stderr(lines: Sequence[str], count: int = STDERR_TAIL_LINES) -> str:
    """The last `count` stderr lines, JSON logs shortened to `LEVEL msg` plus the end of any traceback."""
    rendered: list[str] = []
    for raw in lines[-count:]:
        record = _parse_log(raw)
        if record is None or "msg" not in record:
            rendered.append(raw[:500])
            continue
        rendered.append(f"{record.get('level', '?')} {record['msg']}"[:2000])
        traceback = (record.get("fields") or {}).get("traceback")
        if isinstance(traceback, list):
            rendered.extend("    " + str(t).rstrip()[:500] for t in traceback[-4:])
    return "\n".join(rendered)
