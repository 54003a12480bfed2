"""State patches and captured documents: RFC 7396 merge patches, JSON pointers,
collection keys, reductions, flowctl's printed form, and normalisation for snapshot tests."""

from __future__ import annotations

import copy
from collections.abc import Collection as AbstractCollection
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._json import _dumps_sorted
from .errors import HarnessError

if TYPE_CHECKING:
    from .results import Commit, PreviewResult


UUID_PLACEHOLDER = "DocUUIDPlaceholder-329Bb50aa48EAa9ef"
"""What `flowctl preview` prints as every document's `_meta.uuid`."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: `target` with `patch` applied. Neither argument is modified."""
    return _merge_patch_in_place(copy.deepcopy(target), patch)


def _merge_patch_in_place(target: Any, patch: Any) -> Any:
    """Apply `patch` to `target`, modifying `target`; returns the result.

    Values taken from `patch` are copied, so later patches never alter a patch
    that a Checkpoint record still holds.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            target[key] = _merge_patch_in_place(target.get(key), value)
        else:
            target[key] = copy.deepcopy(value) if isinstance(value, list) else value
    return target


def _compose_patches(first: Any, second: Any) -> Any:
    """One merge patch with the effect of `first` then `second` (nulls are kept, as deletions)."""
    if not isinstance(second, dict) or not isinstance(first, dict):
        return copy.deepcopy(second)
    out = dict(first)
    for key, value in second.items():
        out[key] = (
            _compose_patches(first[key], value)
            if isinstance(value, dict) and isinstance(first.get(key), dict)
            else copy.deepcopy(value)
        )
    return out


def resolve_pointer(document: Any, pointer: str) -> Any:
    """The value at a JSON pointer (`/a/0/b`, with `~1` and `~0` escapes), or None if absent."""
    if pointer == "":
        return document
    if not pointer.startswith("/"):
        raise HarnessError(f"not a JSON pointer: {pointer!r}")
    value = document
    for token in pointer[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict):
            if token not in value:
                return None
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            return None
    return value


def key_of(document: Any, key: Sequence[str]) -> tuple[Any, ...]:
    """The document's collection key: the values at `key`'s pointers (None where absent)."""
    return tuple(resolve_pointer(document, pointer) for pointer in key)


def _is_deletion(document: Any) -> bool:
    meta = document.get("_meta") if isinstance(document, dict) else None
    return isinstance(meta, dict) and meta.get("op") == "d"


def reduce_by_key(documents: Iterable[Any], key: Sequence[str]) -> dict[tuple[Any, ...], Any]:
    """What a collection holds after `documents`: the last document per key, keys in the order
    they were (re-)created.

    A deletion (`_meta.op == "d"`) removes its key; a later document re-creates it.
    This is last-write-wins only: schema `reduce` annotations are not applied.
    """
    reduced: dict[tuple[Any, ...], Any] = {}
    for document in documents:
        document_key = key_of(document, key)
        if _is_deletion(document):
            reduced.pop(document_key, None)
        else:
            reduced[document_key] = document
    return reduced


def _packed_order(value: Any) -> tuple[Any, ...]:
    """A sort key approximating Flow's packed-key order: null < string < integer < float < false < true;
    strings by UTF-8 bytes; arrays and objects (rare as keys) by their JSON text, after strings."""
    if value is None:
        return (0,)
    if isinstance(value, str):
        return (1, value.encode())
    if isinstance(value, bool):
        return (5, value)
    if isinstance(value, int):
        return (3, value)
    if isinstance(value, float):
        return (4, value)
    return (2, _dumps_sorted(value))


def flowctl_documents(
    result: PreviewResult, *, commits: Iterable[Commit] | None = None
) -> list[tuple[str, Any]]:
    """The documents as `flowctl preview` prints them.

    Per transaction: documents combined by (collection, key), last write wins (a
    deletion is kept as the final document); ordered by binding, then by key in
    Flow's packed-key order; `_meta.uuid` set to UUID_PLACEHOLDER; object keys
    sorted recursively. Pass `commits` to render only some transactions.
    """
    order = {name: index for index, name in enumerate(result.collections)}
    out: list[tuple[str, Any]] = []
    for commit in result.commits if commits is None else commits:
        combined: dict[tuple[str, tuple[Any, ...]], Any] = {}
        for collection, document in commit.documents:
            combined[(collection, key_of(document, result.collections[collection].key))] = document
        ranked = sorted(
            combined.items(),
            key=lambda item: (order[item[0][0]], tuple(_packed_order(v) for v in item[0][1])),
        )
        out.extend((collection, sort_keys(_with_uuid(document))) for (collection, _), document in ranked)
    return out


def _with_uuid(document: Any) -> Any:
    if not isinstance(document, dict):
        return document
    meta = document.get("_meta")
    return {**document, "_meta": {**(meta if isinstance(meta, dict) else {}), "uuid": UUID_PLACEHOLDER}}


def sort_keys(value: Any) -> Any:
    """`value` with every object's keys sorted, recursively (flowctl prints documents so)."""
    if isinstance(value, dict):
        return {k: sort_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sort_keys(v) for v in value]
    return value


def redact(value: Any, fields: AbstractCollection[str], placeholder: Any = "redacted") -> Any:
    """`value` with the value of every property named in `fields`, at any depth, replaced by `placeholder`."""
    if isinstance(value, dict):
        return {k: placeholder if k in fields else redact(v, fields, placeholder) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, fields, placeholder) for v in value]
    return value


def first_per_collection(documents: Iterable[tuple[str, Any]], *, sort: bool = True) -> list[tuple[str, Any]]:
    """The first document of each collection, in first-appearance order, then
    (with `sort`) stably sorted by collection name."""
    first: dict[str, Any] = {}
    for collection, document in documents:
        first.setdefault(collection, document)
    items = list(first.items())
    return sorted(items, key=lambda item: item[0]) if sort else items


def capture_snapshot(
    result: PreviewResult, *, redact_fields: AbstractCollection[str] = ()
) -> list[list[Any]]:
    """The normalised capture output Estuary's snapshot tests compare, ready for `snapshot(...) ==`.

    flowctl's printed documents (`flowctl_documents`), the first per collection,
    sorted by collection name, with `redact_fields` replaced by "redacted", as
    JSON-ready `[collection, document]` pairs.
    """
    return [[c, redact(d, redact_fields)] for c, d in first_per_collection(flowctl_documents(result))]
