"""Checking a parsed query against the schema, and evaluating its WHERE clause.

``bind`` resolves a query's object and fields and raises Salesforce's errors (INVALID_TYPE,
INVALID_FIELD, INVALID_TYPE_FOR_OPERATION, MALFORMED_QUERY) with their messages (§2.3).
``compile_condition`` turns a WHERE clause into a predicate over one row, with SOQL's
semantics: text compares case-insensitively (Ids exactly), ``=``/``!=``/``IN`` treat null
as a value, ordering comparisons and LIKE are false on null.
"""

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .org import Org
from .schema import NUMERIC_TYPES, FieldSpec, FieldType, ObjectSpec
from .soql import (
    Aggregate,
    BoolOp,
    Compare,
    Condition,
    InList,
    Kind,
    Like,
    Literal,
    Name,
    Not,
    Query,
    SoqlError,
    located,
)

type Getter = Callable[[FieldSpec], object]  # a row, as the value of each field
type Predicate = Callable[[Getter], bool]
# Ordering comparisons between a row's value and a literal of the same type (bind checked).
COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}

NO_SUCH_COLUMN = (
    "No such column '{field}' on entity '{object}'. If you are attempting to use a custom "
    "field, be sure to append the '__c' after the custom field name. Please reference your "
    "WSDL or the describe call for the appropriate names."
)
NO_SUCH_OBJECT = (
    "sObject type '{object}' is not supported. If you are attempting to use a custom object, "
    "be sure to append the '__c' after the entity name. Please reference your WSDL or the "
    "describe call for the appropriate names."
)
_LITERAL_KIND = {
    FieldType.DATETIME: Kind.DATETIME,
    FieldType.DATE: Kind.DATE,
    FieldType.BOOLEAN: Kind.BOOLEAN,
    **{t: Kind.NUMBER for t in NUMERIC_TYPES},
}
_TYPE_WORD = {
    FieldType.INT: "integer",
    FieldType.DOUBLE: "double",
    FieldType.CURRENCY: "double",
    FieldType.PERCENT: "double",
    FieldType.DATETIME: "dateTime",
}
_CASE_SENSITIVE = frozenset({FieldType.ID, FieldType.REFERENCE})


@dataclass(frozen=True)
class Bound:
    """A query checked against the schema: its object and selected fields (SELECT order)."""

    query: Query
    spec: ObjectSpec
    fields: tuple[FieldSpec, ...]

    def field(self, name: Name) -> FieldSpec:
        f = self.spec.field(name.text)
        assert f is not None
        return f


def bind(org: Org, query: Query) -> Bound:
    """Resolve ``query``'s object and fields, raising ``SoqlError`` as Salesforce would."""
    text = query.text
    try:
        spec = org.spec(query.object.text)
    except KeyError:
        reason = NO_SUCH_OBJECT.format(object=query.object.text)
        raise SoqlError("INVALID_TYPE", located(text, query.object.pos, reason)) from None
    if not spec.queryable:
        raise SoqlError("INVALID_TYPE_FOR_OPERATION", f"entity type {spec.name} does not support query")

    def resolve(name: Name, need: str = "") -> FieldSpec:
        f = spec.field(name.text)
        if f is None:
            reason = NO_SUCH_COLUMN.format(field=name.text, object=spec.name)
            raise SoqlError("INVALID_FIELD", located(text, name.pos, reason))
        if (need == "filtered" and not f.filterable) or (need == "sorted" and not f.sortable):
            reason = f"field '{f.name}' can not be {need} in a query call"
            raise SoqlError("INVALID_FIELD", located(text, name.pos, reason))
        return f

    fields: list[FieldSpec] = []
    for name in query.fields:
        f = resolve(name)
        if f in fields:
            reason = f"duplicate field selected: {f.name}"
            raise SoqlError("MALFORMED_QUERY", located(text, name.pos, reason))
        fields.append(f)
    for item in query.select:
        if isinstance(item, Aggregate) and item.argument is not None:
            resolve(item.argument)
    for name in query.group_by:
        resolve(name)
    for order in query.order_by:
        resolve(order.field, "sorted")
    if query.where is not None:
        _check_condition(query.where, lambda name: resolve(name, "filtered"), text)
    return Bound(query, spec, tuple(fields))


def _check_condition(cond: Condition, resolve: Callable[[Name], FieldSpec], text: str) -> None:
    match cond:
        case BoolOp(parts=parts):
            for part in parts:
                _check_condition(part, resolve, text)
        case Not(part=part):
            _check_condition(part, resolve, text)
        case Compare(field=name, value=value) | Like(field=name, pattern=value):
            _check_literal(resolve(name), value, text)
        case InList(field=name, values=values):
            f = resolve(name)
            for value in values:
                _check_literal(f, value, text)


def _check_literal(f: FieldSpec, value: Literal, text: str) -> None:
    """A literal must match its field's type: e.g. a dateTime field takes an unquoted
    dateTime literal, not a date and not a string (§6.1)."""
    expected = _LITERAL_KIND.get(f.type, Kind.STRING)
    if value.kind in (expected, Kind.NULL):
        return
    word = _TYPE_WORD.get(f.type, f.type.value if expected != Kind.STRING else "string")
    quoting = (
        "should be enclosed in quotes" if expected == Kind.STRING else "should not be enclosed in quotes"
    )
    reason = f"value of filter criterion for field '{f.name}' must be of type {word} and {quoting}"
    raise SoqlError("INVALID_FIELD", located(text, value.pos, reason))


def fold(f: FieldSpec, value: object) -> object:
    """SOQL compares text case-insensitively, Ids exactly."""
    if isinstance(value, str) and f.type not in _CASE_SENSITIVE:
        return value.casefold()
    return value


def compile_condition(bound: Bound, cond: Condition) -> Predicate:
    """A predicate over a row getter. Nulls: ``=``/``!=``/``IN`` treat null as a value,
    ordering comparisons and LIKE are false on null."""
    match cond:
        case BoolOp(op="AND", parts=parts):
            preds = [compile_condition(bound, p) for p in parts]
            return lambda get: all(p(get) for p in preds)
        case BoolOp(parts=parts):
            preds = [compile_condition(bound, p) for p in parts]
            return lambda get: any(p(get) for p in preds)
        case Not(part=part):
            inner = compile_condition(bound, part)
            return lambda get: not inner(get)
        case InList(field=name, values=values, negated=negated):
            f = bound.field(name)
            members = {fold(f, v.value) for v in values}
            return lambda get: (fold(f, get(f)) in members) != negated
        case Like(field=name, pattern=pattern):
            f = bound.field(name)
            regex = re.compile(
                "".join(
                    ".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in str(pattern.value)
                ),
                re.IGNORECASE | re.DOTALL,
            )
            return lambda get: isinstance(v := get(f), str) and regex.fullmatch(v) is not None
        case Compare(field=name, op=op, value=literal):
            f = bound.field(name)
            target = fold(f, literal.value)
            if op == "=":
                return lambda get: fold(f, get(f)) == target
            if op == "!=":
                return lambda get: fold(f, get(f)) != target
            if target is None:
                return lambda get: False
            compare: Callable[[Any, Any], bool] = COMPARE[op]
            return lambda get: (v := fold(f, get(f))) is not None and compare(v, target)
    raise AssertionError(cond)
