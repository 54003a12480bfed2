"""How big the seeded org is, and the helpers that turn a seed into field generators.

Every generated value is a pure function of (seed, object, field, row index): each field
draws its value pool from its own ``random.Random`` stream named after it, so adding a
field never changes the values of another.
"""

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from .generators import Constant, Gen, Numbered, Pool, RecordIds, Stamp, Timeline
from .ids import record_id
from .schema import FieldSpec, FieldType

T = FieldType
TIMELINE_START = datetime(2019, 1, 1, tzinfo=UTC)
TIMELINE_END = datetime(2025, 6, 30, 23, 59, 59, tzinfo=UTC)
LARGE_OBJECTS = ("Account", "Contact", "Opportunity", "BenchRecord__c")
SMALL_OBJECT_ROWS = {
    "Invoice__c": 250,
    "AccountHistory": 500,
    "UserRole": 12,
    "CaseStatus": 6,
    "Attachment": 40,
    "ActivityHistory": 0,
}
# A prime pool size: column values repeat with this period, Names and Ids never do.
POOL_SIZE = 1009
# Owners and editors: users of the org (User itself is not among the seeded objects).
USER_IDS = tuple(record_id("005", k) for k in range(1, 26))


@dataclass(frozen=True)
class OrgConfig:
    """How big the seeded org is. Rows are a pure function of (object, seed, index)."""

    seed: int = 0
    rows: int = 1000  # rows of each large object (LARGE_OBJECTS)
    object_rows: Mapping[str, int] = field(default_factory=dict)  # per-object overrides
    shared_modstamp_rows: int = 5  # rows sharing one SystemModstamp, mid-table
    # Objects seeded only when named here (catalog.OPTIONAL_BUILDERS), each a large object.
    optional_objects: tuple[str, ...] = ()

    def rows_of(self, name: str) -> int:
        if name in self.object_rows:
            return self.object_rows[name]
        if name in LARGE_OBJECTS or name in self.optional_objects:
            return self.rows
        return SMALL_OBJECT_ROWS[name]


class Seeder:
    """Makes the fields of one object, each with its own seeded generator."""

    def __init__(self, config: OrgConfig, name: str) -> None:
        self.config = config
        self.name = name
        self.rows = config.rows_of(name)
        self.timeline = Timeline(self.rows, TIMELINE_START, TIMELINE_END, config.shared_modstamp_rows)

    # -- generators -------------------------------------------------------------------

    def _rng(self, stream: str) -> random.Random:
        return random.Random(f"{self.config.seed}/{self.name}/{stream}")

    def pool(self, field_name: str, make: Callable[[random.Random], object], nulls: float = 0.0) -> Pool:
        """A pool of ``make(rng)`` values, a ``nulls`` fraction of them None, drawn lazily."""
        salt = self._rng(field_name + "/salt").randrange(POOL_SIZE)

        def draw() -> list[object]:
            # A fresh stream per draw: two threads drawing at once get the same values.
            rng = self._rng(field_name)
            return [None if rng.random() < nulls else make(rng) for _ in range(POOL_SIZE)]

        return Pool(draw, salt, POOL_SIZE)

    def choice(self, field_name: str, options: tuple[object, ...], nulls: float = 0.0) -> Pool:
        return self.pool(field_name, lambda rng: rng.choice(options), nulls)

    def refs(self, field_name: str, target: str, prefix: str, nulls: float = 0.0) -> Pool:
        """Ids of seeded rows of ``target``, so that references resolve."""
        count = self.config.rows_of(target)
        if count == 0:
            return Pool([None], 0)
        return self.pool(field_name, lambda rng: record_id(prefix, rng.randrange(count)), nulls)

    # -- fields -----------------------------------------------------------------------

    def audit(self, prefix: str, deletable: bool = True) -> list[FieldSpec]:
        """Id, IsDeleted and the audit fields, with
        ``CreatedDate <= LastModifiedDate <= SystemModstamp`` on every seeded row."""
        edit_lag = self.choice("LastModifiedDate", (0, 0, 0, 0, 0, 60, 3600, 86400))
        age = self.pool("CreatedDate", lambda rng: rng.randrange(86400, 400 * 86400))
        return [
            self.record_id(prefix),
            *([self.is_deleted()] if deletable else []),
            self.stamp("CreatedDate", "Created Date", age),
            self.user_ref("CreatedById", "Created By ID", system=True),
            self.stamp("LastModifiedDate", "Last Modified Date", edit_lag),
            self.user_ref("LastModifiedById", "Last Modified By ID", system=True),
            self.stamp("SystemModstamp", "System Modstamp"),
        ]

    def record_id(self, prefix: str) -> FieldSpec:
        return FieldSpec("Id", T.ID, "Record ID", RecordIds(prefix), nillable=False, length=18, system=True)

    def is_deleted(self) -> FieldSpec:
        return FieldSpec("IsDeleted", T.BOOLEAN, "Deleted", Constant(False), nillable=False, system=True)

    def stamp(self, name: str, label: str, lag: Pool | None = None) -> FieldSpec:
        """A system timestamp: the object's timeline, minus ``lag`` seconds per row."""
        return FieldSpec(name, T.DATETIME, label, Stamp(self.timeline, lag), nillable=False, system=True)

    def named(self, name: str, label: str, template: str, length: int = 80) -> FieldSpec:
        """A required text field unique per row, e.g. ``"Acme %07d"``."""
        return FieldSpec(
            name,
            T.STRING,
            label,
            Numbered(template),
            nillable=False,
            length=length,
            name_field=name == "Name",
        )

    def lookup(
        self, name: str, label: str, target: str, prefix: str, relationship: str | None, nulls: float = 0.0
    ) -> FieldSpec:
        """A reference to seeded rows of ``target``."""
        return FieldSpec(
            name,
            T.REFERENCE,
            label,
            self.refs(name, target, prefix, nulls),
            nillable=nulls > 0,
            length=18,
            reference_to=(target,),
            relationship_name=relationship,
        )

    def user_ref(self, name: str, label: str, system: bool = False) -> FieldSpec:
        return FieldSpec(
            name,
            T.REFERENCE,
            label,
            self.choice(name, USER_IDS),
            nillable=False,
            length=18,
            reference_to=("User",),
            system=system,
            relationship_name=name.removesuffix("Id"),
        )

    def text(
        self,
        name: str,
        label: str,
        options: tuple[str, ...],
        length: int = 255,
        nulls: float = 0.1,
        kind: FieldType = T.STRING,
    ) -> FieldSpec:
        return FieldSpec(name, kind, label, self.choice(name, options, nulls), length=length)

    def picklist(
        self, name: str, label: str, options: tuple[str, ...], nulls: float = 0.1, nillable: bool = True
    ) -> FieldSpec:
        gen = self.choice(name, options, nulls if nillable else 0.0)
        return FieldSpec(name, T.PICKLIST, label, gen, nillable=nillable, length=255, picklist=options)

    def number(
        self,
        name: str,
        label: str,
        kind: FieldType,
        low: float,
        high: float,
        scale: int = 0,
        nulls: float = 0.1,
    ) -> FieldSpec:
        if kind is T.INT:
            gen: Gen = self.pool(name, lambda rng: rng.randint(int(low), int(high)), nulls)
            return FieldSpec(name, kind, label, gen, digits=9)
        gen = self.pool(name, lambda rng: round(rng.uniform(low, high), scale), nulls)
        return FieldSpec(name, kind, label, gen, precision=18, scale=scale)

    def day(self, name: str, label: str, nulls: float = 0.1) -> FieldSpec:
        gen = self.pool(name, lambda rng: date(2018, 1, 1) + timedelta(rng.randrange(3000)), nulls)
        return FieldSpec(name, T.DATE, label, gen, nillable=nulls > 0)

    def moment(self, name: str, label: str, nulls: float = 0.1) -> FieldSpec:
        """A user-entered datetime (not on the timeline)."""
        gen = self.pool(
            name, lambda rng: TIMELINE_START + timedelta(seconds=rng.randrange(200_000_000)), nulls
        )
        return FieldSpec(name, T.DATETIME, label, gen)

    def flag(self, name: str, label: str, chance: float = 0.5) -> FieldSpec:
        gen = self.pool(name, lambda rng: rng.random() < chance)
        return FieldSpec(name, T.BOOLEAN, label, gen, nillable=False)

    def fixed(self, name: str, kind: FieldType, label: str, values: tuple[object, ...]) -> FieldSpec:
        """Row ``i`` takes ``values[i % len(values)]``: for small reference tables."""
        return FieldSpec(
            name, kind, label, Pool(values, 0), nillable=False, length=255 if kind is T.STRING else 0
        )
