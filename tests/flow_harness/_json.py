"""JSON encoding and decoding: orjson when it is installed, else the standard library."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import orjson

    # Bound directly, not wrapped: a wrapper's call costs as much as parsing a small line.
    _loads: Callable[[bytes | str], Any] = orjson.loads

    def _dumps(value: Any) -> bytes:
        return orjson.dumps(value)

    def _dumps_sorted(value: Any) -> bytes:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)

except ImportError:  # orjson comes with estuary-cdk; json keeps the module importable without it.
    import json

    _loads = json.loads

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def _dumps_sorted(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()
