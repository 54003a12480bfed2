"""A bounded digest of a set of Salesforce Ids that can name the Ids two digests differ by.

Salesforce keeps its deletion log (getDeleted) for 15 days; a capture paused longer cannot learn
from it which rows were hard-deleted. Instead the connector keeps, per object, an `IdDigest` of
every live Id from an Id-only export; after a missed window it exports the Ids again and
subtracts the digests: the Ids only in the old set are the rows deleted since.

The digest is an invertible Bloom lookup table (Goodrich & Mitzenmacher, 2011; "What's the
difference?", Eppstein et al., 2011): `CELLS` cells, each holding a count, the XOR of its Ids and
the XOR of their checksums; every Id is added to `HASHES` cells. Its size does not depend on how
many Ids it holds. Subtracting two digests cancels every Id they share, whatever their sizes, and
leaves cells holding only the difference; a cell holding exactly one Id ("pure": count ±1 and a
checksum that matches its Id) names that Id, and removing it from its other cells uncovers more
pure cells ("peeling").

Contract:
- `difference()` answers all or nothing: either every Id of the difference, on its side, or None
  when the cells cannot be peeled to empty (more differences than the digest holds: up to 1,000
  peel with high probability, see CELLS). A wrong or partial answer is never
  returned as complete; a false "pure" cell needs a 64-bit checksum collision, its Id decoding to
  a valid Id that hashes into that very cell, and the rest peeling to exactly empty.
- An Id is 1 to `MAX_ID_LENGTH` ASCII characters without NUL, taken exactly as given: no case
  folding, and the 15- and 18-character forms of one record are different Ids (callers use the
  18-character form the API returns). Anything else raises `InvalidIdError`.
- The digest is a multiset: an Id added twice counts twice. A digest holding an Id twice minus one
  holding it once names it (the extra copy) in `only_here`; but two copies of one Id cancel in the
  XORs, so a difference holding the same Id twice cannot be named and gives None. The connector
  adds each Id of an export once.
- Hashing is blake2b, not Python's salted `hash()`, so a digest means the same in every process and
  in the text `to_text` writes (versioned by `FORMAT_VERSION`).
"""

import base64
import hashlib
import json
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

# Salesforce Ids are 15 or 18 characters; the emulator's and the API's are 18. Each cell stores the
# XOR of its Ids in this many bytes, so the limit is part of the checkpoint's size and format.
MAX_ID_LENGTH = 18

# Four cells per Id. An IBLT with k hashes peels a difference of d Ids with high probability while
# d < CELLS / c_k, and c_3 ≈ 1.22 is the lowest (c_4 ≈ 1.30, c_5 ≈ 1.43), so 3 is the usual choice.
# But below that limit k = 3 still fails whenever two Ids share all their cells, with probability
# ≈ C(d, 2) / _PARTITION^k. Simulated at 1,500 cells, 2,000 trials a point: k = 3 failed 0.05% of
# the time at 500 differences and 0.4% at 1,000 to 1,150; k = 4 never failed up to 1,000 (0.1% at
# 1,100). The price: a lower cliff (~1,150 instead of ~1,200) and one more cell update per Id (add
# runs ~12% slower: seconds a week on a 50M-row object). A failure leaves the connector unable to
# name deletions it could have named, so 4. `add` and _HASH_LAYOUT are written out for this value.
HASHES = 4

# 1,500 cells: a fully loaded digest is 51-52 KB of checkpoint text (1M to 50M Ids; 8-byte count
# and 26-byte XOR per cell, zlib, base64), within a checkpoint's comfortable size. Measured over
# 200 seeds a point (`python -m tests.bench_id_digest`): differences of up to 1,100 Ids were all
# named, 1,150 in 44% of trials, 1,200 never (asymptotically CELLS / 1.30 ≈ 1,150). So it names up
# to ~1,000 deletions with high probability. Capacity grows linearly with CELLS, and so does the
# text. Must be a multiple of HASHES (see _PARTITION).
CELLS = 1500

# A serialized digest's layout version; bump it when the cell layout or the hashing changes.
FORMAT_VERSION = 1

# Every Id gets one cell in each of HASHES equal partitions, so its cells are always distinct: an
# Id put twice into one cell would cancel itself out of the XOR and could never be peeled.
_PARTITION = CELLS // HASHES

# A cell's XOR holds the Id's bytes (big-endian, as an integer) above a 64-bit checksum, so `add`
# does one XOR per cell instead of two. A false pure cell needs a 64-bit checksum collision.
_CHECKSUM_BITS = 64
_CHECKSUM_MASK = (1 << _CHECKSUM_BITS) - 1
_SUM_BYTES = MAX_ID_LENGTH + _CHECKSUM_BITS // 8

# One blake2b digest of the Id gives the checksum (8 bytes) and one 32-bit word per partition
# (the modulo's bias, below _PARTITION / 2^32, is negligible). blake2b with its default 64-byte digest
# is the fastest hashlib call for 18 bytes here, and unlike a CRC it is not linear: with a linear
# checksum the XOR of three Ids' checksums would match the checksum of their XOR, making
# count +2 -1 cells look pure.
_HASH_LAYOUT = struct.Struct("<QIIII")


class InvalidIdError(ValueError):
    """An Id that is not 1 to MAX_ID_LENGTH ASCII characters without NUL."""

    def __init__(self, record_id: object) -> None:
        super().__init__(f"not a Salesforce Id: {record_id!r} (expected 1 to {MAX_ID_LENGTH} ASCII characters, no NUL)")
        self.id = record_id


@dataclass(frozen=True)
class Difference:
    """The Ids two digests differ by: `only_here` were added to the digest that was subtracted from
    (`a` in `a.minus(b)`), `only_there` to the one subtracted (`b`)."""

    only_here: frozenset[str]
    only_there: frozenset[str]


class IdDigest:
    """A digest of a multiset of Ids, of fixed size (CELLS cells) whatever it holds."""

    def __init__(self) -> None:
        self._counts: list[int] = [0] * CELLS
        # Per cell, the XOR of (Id << 64 | checksum) over the Ids in it.
        self._sums: list[int] = [0] * CELLS

    @property
    def count(self) -> int:
        """The Ids added (minus those of the subtracted digest, for a `minus` result)."""
        return sum(self._counts) // HASHES  # every Id added 1 to exactly HASHES cells

    def add(self, ids: Iterable[str]) -> None:
        """Add every Id of `ids`. Raises InvalidIdError at the first malformed Id; the Ids before it
        are added (the caller abandons the digest: it no longer describes one export)."""
        # This runs over tens of millions of Ids, so _cells_of is inlined (a call per Id cost ~40%
        # of the rate) and every name is bound locally. `0 in raw` is a memchr; `b"\0" in raw` took
        # ten times as long, a third of the loop.
        counts, sums = self._counts, self._sums
        blake2b, from_bytes, unpack = hashlib.blake2b, int.from_bytes, _HASH_LAYOUT.unpack_from
        max_length, partition = MAX_ID_LENGTH, _PARTITION
        second, third, fourth = _PARTITION, 2 * _PARTITION, 3 * _PARTITION
        for record_id in ids:
            try:
                raw = record_id.encode("ascii")
            except (UnicodeEncodeError, AttributeError):
                raise InvalidIdError(record_id) from None
            if not 0 < len(raw) <= max_length or 0 in raw:
                raise InvalidIdError(record_id)
            checksum, h1, h2, h3, h4 = unpack(blake2b(raw).digest())
            value = (from_bytes(raw) << 64) | checksum
            cell = h1 % partition
            counts[cell] += 1
            sums[cell] ^= value
            cell = second + h2 % partition
            counts[cell] += 1
            sums[cell] ^= value
            cell = third + h3 % partition
            counts[cell] += 1
            sums[cell] ^= value
            cell = fourth + h4 % partition
            counts[cell] += 1
            sums[cell] ^= value

    def minus(self, other: "IdDigest") -> "IdDigest":
        """The digest of this multiset minus `other`'s: counts subtract, XORs cancel what both hold."""
        result = IdDigest()
        result._counts = [a - b for a, b in zip(self._counts, other._counts, strict=True)]
        result._sums = [a ^ b for a, b in zip(self._sums, other._sums, strict=True)]
        return result

    def difference(self) -> Difference | None:
        """Name the Ids this digest holds (for a `minus` result: the Ids the two digests differ by),
        or None when they cannot all be named. Ids with a positive count are `only_here`, negative
        `only_there`. An empty digest gives two empty sets."""
        counts, sums = list(self._counts), list(self._sums)
        found: dict[str, int] = {}  # Id -> +1 (only here) or -1 (only there)
        candidates = [cell for cell, count in enumerate(counts) if count in (1, -1)]
        while candidates:
            cell = candidates.pop()
            sign = counts[cell]
            if sign not in (1, -1):
                continue  # changed since it was queued
            pure = _pure_id(cell, sums[cell])
            if pure is None:
                continue  # count ±1 by accident: several Ids, not one
            record_id, its_cells = pure
            if record_id in found:
                return None  # peeled twice: only an inconsistent digest does that
            found[record_id] = sign
            value = sums[cell]
            for other in its_cells:
                counts[other] -= sign
                sums[other] ^= value
                if counts[other] in (1, -1):
                    candidates.append(other)
        if any(counts) or any(sums):
            return None  # what is left cannot be peeled: too many differences (or a multiset pair)
        return Difference(
            only_here=frozenset(record_id for record_id, sign in found.items() if sign == 1),
            only_there=frozenset(record_id for record_id, sign in found.items() if sign == -1),
        )

    def to_text(self) -> str:
        """The digest as a JSON string for the checkpoint.

        Counts (signed 8-byte little-endian) then XORs (big-endian, `_SUM_BYTES` each), zlib-compressed
        and base64-encoded. zlib saves ~20% on a full digest (counts' high bytes are zero, every XOR
        byte's top bit is too, since Ids are ASCII) and nearly everything on a sparse one.
        """
        cells = struct.pack(f"<{CELLS}q", *self._counts) + b"".join(s.to_bytes(_SUM_BYTES) for s in self._sums)
        data = base64.b64encode(zlib.compress(cells, 9)).decode("ascii")
        return json.dumps({"format": FORMAT_VERSION, "cells": CELLS, "data": data}, separators=(",", ":"))

    @classmethod
    def from_text(cls, text: str) -> "IdDigest":
        """The digest `to_text` wrote. ValueError when `text` is not one of this format and size (a
        digest written with another CELLS cannot be compared with this version's digests)."""
        try:
            fields = json.loads(text)
            if fields.get("format") != FORMAT_VERSION or fields.get("cells") != CELLS:
                raise ValueError(f"format {fields.get('format')} with {fields.get('cells')} cells")
            cells = zlib.decompress(base64.b64decode(fields["data"], validate=True))
            if len(cells) != CELLS * (8 + _SUM_BYTES):
                raise ValueError(f"{len(cells)} bytes of cells")
        except (ValueError, TypeError, KeyError, AttributeError, zlib.error) as err:
            raise ValueError(f"not an IdDigest of format {FORMAT_VERSION} with {CELLS} cells: {err}") from None
        digest = cls()
        digest._counts = list(struct.unpack_from(f"<{CELLS}q", cells))
        start = 8 * CELLS
        digest._sums = [int.from_bytes(cells[at : at + _SUM_BYTES]) for at in range(start, len(cells), _SUM_BYTES)]
        return digest

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdDigest) and self._counts == other._counts and self._sums == other._sums

    def __repr__(self) -> str:
        return f"IdDigest(count={self.count})"


def _cells_of(raw: bytes) -> tuple[int, tuple[int, ...]]:
    """An Id's checksum and its cells, one per partition (`add` inlines this)."""
    checksum, *words = _HASH_LAYOUT.unpack_from(hashlib.blake2b(raw).digest())
    return checksum, tuple(part * _PARTITION + word % _PARTITION for part, word in enumerate(words))


def _pure_id(cell: int, value: int) -> tuple[str, tuple[int, ...]] | None:
    """The Id a cell with count ±1 holds, and its cells, if the cell holds exactly one Id: its XOR
    must decode to a valid Id whose checksum matches and whose cells include this one. Else None."""
    number = value >> _CHECKSUM_BITS
    length = (number.bit_length() + 7) // 8
    if not 0 < length <= MAX_ID_LENGTH:
        return None
    raw = number.to_bytes(length)
    if not raw.isascii() or 0 in raw:
        return None
    checksum, cells = _cells_of(raw)
    if checksum != value & _CHECKSUM_MASK or cell not in cells:
        return None
    return raw.decode("ascii"), cells
