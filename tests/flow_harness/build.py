"""What Flow's build derives from the catalog for Apply and Open: resource paths,
state keys and the CaptureSpec."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from ._json import _dumps
from .catalog import FlowSource
from .documents import resolve_pointer
from .errors import HarnessError


def state_key(resource_path: Sequence[str], backfill: int = 0) -> str:
    """The binding's stateKey, as Flow derives it from the resource path.

    Components are joined with `/`; every character that is not a Unicode letter or
    digit or one of `-_+.=` (the joining `/` included) is percent-encoded as UTF-8;
    `.v<backfill>` is appended when the counter is non-zero. `["Account"]` gives
    `Account`; `["public", "table"], 1` gives `public%2Ftable.v1`.
    """
    out: list[str] = []
    for char in "/".join(resource_path):
        if char in "-_+.=" or char.isalnum():
            out.append(char)
        else:
            out.append(urllib.parse.quote(char, safe=""))
    key = "".join(out)
    return f"{key}.v{backfill}" if backfill else key


def resource_path(resource: Mapping[str, Any], pointers: Sequence[str]) -> list[str]:
    """The binding's resource path: the value at each pointer, as a string ("" if absent)."""
    path = []
    for pointer in pointers:
        value = resolve_pointer(resource, pointer)
        path.append("" if value is None else value if isinstance(value, str) else _dumps(value).decode())
    return path


def capture_spec(source: FlowSource, resource_path_pointers: Sequence[str]) -> dict[str, Any]:
    """The CaptureSpec Flow would build for Apply and Open: enabled bindings only.

    Raises HarnessError when two bindings share a state key, as Flow's build does.
    """
    bindings = []
    seen: dict[str, str] = {}
    for binding in source.enabled_bindings:
        path = resource_path(binding.resource, resource_path_pointers)
        key = state_key(path, binding.backfill)
        if key in seen:
            raise HarnessError(
                f"{source.path}: bindings {seen[key]!r} and {binding.target!r} share state key {key!r}"
            )
        seen[key] = binding.target
        bindings.append(
            {
                "collection": source.collection(binding.target).spec(),
                "resourceConfig": binding.resource,
                "resourcePath": path,
                "stateKey": key,
                "backfill": binding.backfill,
            }
        )
    return {
        "name": source.capture,
        "connectorType": "LOCAL",
        "config": source.require_config(),
        "intervalSeconds": source.interval_seconds,
        "bindings": bindings,
    }
