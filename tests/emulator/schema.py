"""Object and field definitions, and their describe payloads (salesforce-api.md §3).

A ``FieldSpec`` is what describe says about a field plus, for stored fields, the generator
of its seeded values. An ``ObjectSpec`` is what describe-global and describe say about an
object plus the few facts the emulator needs to serve it (is it Bulk-exportable, which
datetime field grows with the row index).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .generators import Gen


class FieldType(StrEnum):
    """Describe's ``type`` values used by the seeded org (§3.3)."""

    ID = "id"
    STRING = "string"
    BOOLEAN = "boolean"
    INT = "int"
    DOUBLE = "double"
    CURRENCY = "currency"
    PERCENT = "percent"
    DATE = "date"
    DATETIME = "datetime"
    REFERENCE = "reference"
    PICKLIST = "picklist"
    TEXTAREA = "textarea"
    PHONE = "phone"
    EMAIL = "email"
    URL = "url"
    BASE64 = "base64"
    ADDRESS = "address"
    ANYTYPE = "anyType"


SOAP_TYPES: dict[FieldType, str] = {
    FieldType.ID: "tns:ID",
    FieldType.REFERENCE: "tns:ID",
    FieldType.BOOLEAN: "xsd:boolean",
    FieldType.INT: "xsd:int",
    FieldType.DOUBLE: "xsd:double",
    FieldType.CURRENCY: "xsd:double",
    FieldType.PERCENT: "xsd:double",
    FieldType.DATE: "xsd:date",
    FieldType.DATETIME: "xsd:dateTime",
    FieldType.BASE64: "xsd:base64Binary",
    FieldType.ADDRESS: "urn:address",
    FieldType.ANYTYPE: "xsd:anyType",
}
NUMERIC_TYPES = frozenset({FieldType.INT, FieldType.DOUBLE, FieldType.CURRENCY, FieldType.PERCENT})
# Text longer than this is a "long text area": neither filterable nor sortable (§3.2).
LONG_TEXT = 255


@dataclass(frozen=True, slots=True)
class Formula:
    """A formula (``calculated``) field: its text for describe, and how its value is
    computed at read time from other fields of the same row and the object's *formula
    epoch*. Tests bump the epoch to model an input on another record changing: the value
    changes while the row's SystemModstamp does not (§6.2)."""

    text: str
    inputs: tuple[str, ...]
    compute: Callable[[tuple[object, ...], int], object]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: FieldType
    label: str
    # Seeded values; None for fields derived from others (formula and compound fields).
    gen: "Gen | None" = None
    nillable: bool = True
    length: int = 0
    precision: int = 0
    scale: int = 0
    digits: int = 0
    picklist: tuple[str, ...] = ()
    reference_to: tuple[str, ...] = ()
    relationship_name: str | None = None
    # Set on the components of a compound field, e.g. BillingCity -> "BillingAddress".
    compound_field_name: str | None = None
    # On a compound field: (key in its JSON value, component field name) pairs.
    components: tuple[tuple[str, str], ...] = ()
    formula: Formula | None = None
    # Audit and system fields (Id, IsDeleted, CreatedDate, ...): never createable.
    system: bool = False
    name_field: bool = False

    @property
    def custom(self) -> bool:
        return self.name.endswith("__c")

    @property
    def calculated(self) -> bool:
        return self.formula is not None

    @property
    def compound(self) -> bool:
        return self.type is FieldType.ADDRESS

    @property
    def soap_type(self) -> str:
        return SOAP_TYPES.get(self.type, "xsd:string")

    @property
    def filterable(self) -> bool:
        long_text = self.type is FieldType.TEXTAREA and self.length > LONG_TEXT
        return not (long_text or self.compound or self.type is FieldType.BASE64)

    @property
    def sortable(self) -> bool:
        return self.filterable

    @property
    def groupable(self) -> bool:
        return self.filterable and self.type not in (
            FieldType.DATETIME,
            FieldType.DOUBLE,
            FieldType.CURRENCY,
            FieldType.PERCENT,
        )


@dataclass(frozen=True)
class ObjectSpec:
    name: str
    label: str
    label_plural: str
    key_prefix: str  # "" when describe reports a null keyPrefix
    fields: tuple[FieldSpec, ...]
    queryable: bool = True
    retrieveable: bool = True
    replicateable: bool = True
    # False for objects that are queryable through REST but that the Bulk API rejects
    # with INVALIDENTITY (§3.4).
    bulk_supported: bool = True
    # Metadata-like objects (statuses, roles) are read-only through the API.
    writable: bool = True
    # The datetime field whose seeded values never decrease as the row index grows
    # (SystemModstamp, or CreatedDate for append-only history objects); None when the
    # object has no timestamp. Range conditions on it are served by a bisect.
    timeline_field: str | None = None
    _by_name: dict[str, FieldSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {f.name.lower(): f for f in self.fields})

    @property
    def custom(self) -> bool:
        return self.name.endswith("__c")

    def field(self, name: str) -> FieldSpec | None:
        """The field called ``name``; SOQL names are case-insensitive."""
        return self._by_name.get(name.lower())


def describe_field(f: FieldSpec) -> dict[str, object]:
    """One entry of ``fields[]`` in an sObject describe, with the keys listed in §3.2."""
    text_like = f.soap_type in ("xsd:string", "tns:ID") and f.type is not FieldType.ANYTYPE
    writable = not (f.system or f.calculated or f.compound or f.type is FieldType.ID)
    return {
        "aggregatable": f.groupable,
        "aiPredictionField": False,
        "autoNumber": False,
        "byteLength": f.length * 3 if text_like else 0,
        "calculated": f.calculated,
        "calculatedFormula": f.formula.text if f.formula else None,
        "cascadeDelete": False,
        "caseSensitive": False,
        "compoundFieldName": f.compound_field_name,
        "controllerName": None,
        "createable": writable,
        "custom": f.custom,
        "defaultValue": False if f.type is FieldType.BOOLEAN else None,
        "defaultValueFormula": None,
        "defaultedOnCreate": f.system or f.type is FieldType.BOOLEAN,
        "dependentPicklist": False,
        "deprecatedAndHidden": False,
        "digits": f.digits,
        "displayLocationInDecimal": False,
        "encrypted": False,
        "externalId": False,
        "extraTypeInfo": "plaintextarea" if f.type is FieldType.TEXTAREA else None,
        "filterable": f.filterable,
        "filteredLookupInfo": None,
        "formulaTreatNullNumberAsZero": False,
        "groupable": f.groupable,
        "highScaleNumber": False,
        "htmlFormatted": False,
        "idLookup": f.type is FieldType.ID,
        "inlineHelpText": None,
        "label": f.label,
        "length": f.length,
        "mask": None,
        "maskType": None,
        "name": f.name,
        "nameField": f.name_field,
        "namePointing": False,
        "nillable": f.nillable,
        "permissionable": f.custom and f.nillable and not f.calculated,
        "picklistValues": [
            {"active": True, "defaultValue": False, "label": v, "validFor": None, "value": v}
            for v in f.picklist
        ],
        "polymorphicForeignKey": False,
        "precision": f.precision,
        "queryByDistance": False,
        "referenceTargetField": None,
        "referenceTo": list(f.reference_to),
        "relationshipName": f.relationship_name,
        "relationshipOrder": None,
        "restrictedDelete": False,
        "restrictedPicklist": False,
        "scale": f.scale,
        "searchPrefilterable": False,
        "soapType": f.soap_type,
        "sortable": f.sortable,
        "type": f.type.value,
        "unique": False,
        "updateable": writable,
        "writeRequiresMasterRead": False,
    }


def _object_flags(obj: ObjectSpec, version: str) -> dict[str, object]:
    """The flags shared by describe-global entries and sObject describe (§3.1)."""
    base = f"/services/data/v{version}/sobjects/{obj.name}"
    return {
        "activateable": False,
        "associateEntityType": None,
        "associateParentEntity": None,
        "createable": obj.writable,
        "custom": obj.custom,
        "customSetting": False,
        "deepCloneable": False,
        "deletable": obj.writable,
        "deprecatedAndHidden": False,
        "feedEnabled": False,
        "hasSubtypes": False,
        "isInterface": False,
        "isSubtype": False,
        "keyPrefix": obj.key_prefix or None,
        "label": obj.label,
        "labelPlural": obj.label_plural,
        "layoutable": obj.writable,
        "mergeable": False,
        "mruEnabled": obj.writable,
        "name": obj.name,
        "queryable": obj.queryable,
        "replicateable": obj.replicateable,
        "retrieveable": obj.retrieveable,
        "searchable": obj.writable,
        "triggerable": obj.writable,
        "undeletable": obj.writable,
        "updateable": obj.writable,
        "urls": {
            "sobject": base,
            "describe": f"{base}/describe",
            "rowTemplate": f"{base}/{{ID}}",
        },
    }


def describe_global_entry(obj: ObjectSpec, version: str) -> dict[str, object]:
    """One element of describe-global's ``sobjects`` array."""
    return _object_flags(obj, version)


def describe_object(obj: ObjectSpec, version: str) -> dict[str, object]:
    """The body of ``GET /sobjects/{X}/describe`` (§3.2)."""
    return {
        **_object_flags(obj, version),
        "actionOverrides": [],
        "childRelationships": [],
        "compactLayoutable": obj.writable,
        "defaultImplementation": None,
        "extendedBy": None,
        "extendsInterfaces": None,
        "fields": [describe_field(f) for f in obj.fields],
        "implementedBy": None,
        "implementsInterfaces": None,
        "listviewable": None,
        "lookupLayoutable": None,
        "namedLayoutInfos": [],
        "networkScopeFieldName": None,
        "recordTypeInfos": [],
        "searchLayoutable": obj.writable,
        "sobjectDescribeOption": "FULL",
        "supportedScopes": [],
    }
