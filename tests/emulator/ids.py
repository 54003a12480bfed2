"""Salesforce record Ids, generated from a row index.

A Salesforce Id is 15 case-sensitive base-62 characters plus a 3-character suffix that
encodes the case of the first 15, so the 18-character form survives case-insensitive
systems (salesforce-api.md §0). The first 3 characters are the object's key prefix.

The emulator's Ids are ``<prefix><"Em0"><9 base-62 digits of the index><suffix>``. The
base-62 alphabet is in ASCII order, and every Id of an object has the same length, so
**string order equals index order**: ``Id > 'x'`` becomes a bisect over indices, and
``ORDER BY Id`` is index order, for any number of rows.
"""

import functools
from collections.abc import Iterable
from itertools import chain, repeat

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Characters 4-6 of a real Id are the pod ("Em" here) and a reserved character.
POD = "Em0"
RECORD_DIGITS = 9
_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_PAIR_SPAN = 62 * 62


def _upper_mask(chars: str) -> int:
    """Bit k is set when character k is an uppercase ASCII letter."""
    return sum(1 << k for k, ch in enumerate(chars) if "A" <= ch <= "Z")


def _base62(n: int, width: int) -> str:
    digits = []
    for _ in range(width):
        n, r = divmod(n, 62)
        digits.append(BASE62[r])
    if n:
        raise ValueError("index too large for a record Id")
    return "".join(reversed(digits))


# Every two-digit tail: its characters and the uppercase bits they contribute.
_PAIRS = [(a + b, _upper_mask(a + b)) for a in BASE62 for b in BASE62]


def case_safe_suffix(body: str) -> str:
    """The 3-character suffix that turns a 15-character Id into its 18-character form."""
    return "".join(_SUFFIX_ALPHABET[_upper_mask(body[k : k + 5])] for k in (0, 5, 10))


def record_id(prefix: str, index: int) -> str:
    """The 18-character Id of row ``index`` of the object with key prefix ``prefix``."""
    body = prefix + POD + _base62(index, RECORD_DIGITS)
    return body + case_safe_suffix(body)


def record_index(prefix: str, record_id: str) -> int:
    """The row index an emulator Id encodes; ``ValueError`` if it is not one of ``prefix``'s."""
    if len(record_id) not in (15, 18) or not record_id.startswith(prefix + POD):
        raise ValueError(f"{record_id!r} is not an Id of key prefix {prefix!r}")
    index = 0
    for ch in record_id[6:15]:
        digit = BASE62.find(ch)
        if digit < 0:
            raise ValueError(f"{record_id!r} is not an Id of key prefix {prefix!r}")
        index = index * 62 + digit
    if len(record_id) == 18 and record_id[15:] != case_safe_suffix(record_id[:15]):
        raise ValueError(f"{record_id!r} has a wrong case-safe suffix")
    return index


@functools.cache
def _tails(second_chunk: str, head_bits: int, wrap: str) -> tuple[str, ...]:
    """The last 5 characters (plus ``wrap``) of each of the 3,844 Ids of a block whose
    head has these suffix characters and bits."""
    return tuple(
        pair + second_chunk + _SUFFIX_ALPHABET[head_bits | bits << 3] + wrap for pair, bits in _PAIRS
    )


@functools.lru_cache(maxsize=256)
def _block(prefix: str, head: int, wrap: str) -> tuple[str, tuple[str, ...]]:
    """Block ``head`` holds rows ``head * 3844`` to ``head * 3844 + 3843``: their Ids
    share everything but the last two digits and the last suffix character."""
    digits = _base62(head, RECORD_DIGITS - 2)
    first_chunk = _SUFFIX_ALPHABET[_upper_mask(prefix + POD[:2])]
    second_chunk = first_chunk + _SUFFIX_ALPHABET[_upper_mask(POD[2] + digits[:4])]
    return wrap + prefix + POD + digits, _tails(second_chunk, _upper_mask(digits[4:]), wrap)


def record_id_pieces(prefix: str, rows: range, wrap: str = "") -> list[Iterable[str]]:
    """The Ids of a contiguous range of rows as two lazy streams whose per-row
    concatenation is ``wrap + record_id(prefix, i) + wrap``: the head of each row's block,
    and its tail. This is the CSV hot path: no Python code runs per row."""
    heads: list[Iterable[str]] = []
    tails: list[Iterable[str]] = []
    i, stop = rows.start, rows.stop
    while i < stop:
        head, low = divmod(i, _PAIR_SPAN)
        count = min(stop - i, _PAIR_SPAN - low)
        start, block_tails = _block(prefix, head, wrap)
        heads.append(repeat(start, count))
        tails.append(block_tails[low : low + count])
        i += count
    return [chain.from_iterable(heads), chain.from_iterable(tails)]


def record_ids(prefix: str, indices: Iterable[int], wrap: str = "") -> list[str]:
    """``[wrap + record_id(prefix, i) + wrap for i in indices]``, using the block cache."""
    out: list[str] = []
    for i in indices:
        head, low = divmod(i, _PAIR_SPAN)
        start, tails = _block(prefix, head, wrap)
        out.append(start + tails[low])
    return out
