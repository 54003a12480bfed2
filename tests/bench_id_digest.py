"""How fast an IdDigest takes Ids, how large its checkpoint text is, and how large a difference it
names: figures for id_digest.py's constants, not a test (nothing here asserts a speed).

    tools/poetry run python -m tests.bench_id_digest            # 1M Ids, 200 seeds a point, ~1 min
    tools/poetry run python -m tests.bench_id_digest --quick    # 100k Ids, 50 seeds

Ids are synthetic 18-character Ids ("001" and 15 random base-62 characters). The add rate is the
best of three runs over the same Ids, in process CPU time (the machine is shared). Each peel trial
builds two digests that share 2,000 Ids and differ by `d` (three quarters deleted, one quarter
inserted, so cells of both signs meet), subtracts them and peels; every answer given is checked
against the truth, and a wrong one is reported (there must be none).
"""

import argparse
import random
import string
import time

from source_bulk_export.id_digest import CELLS, HASHES, IdDigest

_ALPHABET = string.ascii_letters + string.digits
DIFFERENCES = (100, 500, 800, 1000, 1100, 1150, 1200)
SHARED = 2000


def synthetic_ids(rng: random.Random, n: int) -> list[str]:
    return ["001" + "".join(rng.choices(_ALPHABET, k=15)) for _ in range(n)]


def add_rate(ids: list[str]) -> float:
    """Ids per CPU second for one `add` over `ids`, best of three."""
    best = float("inf")
    for _ in range(3):
        digest = IdDigest()
        start = time.process_time()
        digest.add(ids)
        best = min(best, time.process_time() - start)
    return len(ids) / best


def peel_trial(seed: int, d: int) -> tuple[bool, bool]:
    """(named, wrong) for one pair of digests differing by `d` Ids."""
    rng = random.Random(seed)
    ids = synthetic_ids(rng, SHARED + d)
    shared, deleted, inserted = ids[:SHARED], ids[SHARED : SHARED + d * 3 // 4], ids[SHARED + d * 3 // 4 :]
    old, new = IdDigest(), IdDigest()
    old.add(shared + deleted)
    new.add(shared + inserted)
    difference = old.minus(new).difference()
    if difference is None:
        return False, False
    wrong = difference.only_here != frozenset(deleted) or difference.only_there != frozenset(inserted)
    return True, wrong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100k Ids and 50 seeds a point")
    args = parser.parse_args()
    count, seeds = (100_000, 50) if args.quick else (1_000_000, 200)

    ids = synthetic_ids(random.Random(1), count)
    print(f"IdDigest: {CELLS} cells, {HASHES} hashes")
    print(f"add: {add_rate(ids):,.0f} Ids per CPU second over {count:,} Ids")
    full = IdDigest()
    full.add(ids)
    print(f"to_text: {len(IdDigest().to_text()):,} bytes empty, {len(full.to_text()):,} bytes holding {count:,} Ids")

    print(f"peel success over {seeds} seeds (d differences, 3/4 deleted, 1/4 inserted):")
    for d in DIFFERENCES:
        results = [peel_trial(seed * 1_000_003 + d, d) for seed in range(seeds)]
        named = sum(ok for ok, _ in results)
        wrong = sum(bad for _, bad in results)
        print(f"  d={d:5}: {named:4}/{seeds} named ({named / seeds:6.1%}), {wrong} wrong")


if __name__ == "__main__":
    main()
