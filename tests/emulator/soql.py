"""A parser for the subset of SOQL a capture connector sends (salesforce-api.md §6).

    SELECT f1, f2, ... FROM Object
      [WHERE condition]            -- AND / OR / NOT / parentheses;
                                   -- = != <> < <= > >= on a field and a literal,
                                   -- [NOT] IN (literal, ...), LIKE 'pattern'
      [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], ...]
      [LIMIT n] [OFFSET n]

Literals: 'quoted strings' (backslash escapes), dateTimes ``2024-01-01T00:00:00Z`` (also
with fractional seconds or a ``+hh:mm``/``+hhmm`` offset; unquoted), dates ``2024-01-01``,
numbers, TRUE / FALSE / NULL.

Constructs the Bulk API rejects are *parsed* so that the Bulk endpoint can reject them
with Salesforce's errors: aggregates (``COUNT()``, ``SUM(x)``...), ``GROUP BY``,
``OFFSET``, ``TYPEOF``, parent-to-child subqueries and ``FIELDS(...)``. Anything else
(relationship paths, relative date literals, semi-joins, HAVING, ...) is outside the
emulator and fails with ``MALFORMED_QUERY`` and a message starting "The emulator does not
implement", so an unexpected connector query is loud, never silently mis-served.

Syntax errors carry Salesforce's message shape: the query, a caret under the offending
token, ``ERROR at Row:r:Column:c`` and the reason (§2.3).
"""

import re
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

AGGREGATES = frozenset({"COUNT", "COUNT_DISTINCT", "SUM", "AVG", "MIN", "MAX"})
KEYWORDS = frozenset(
    {
        "SELECT",
        "FROM",
        "WHERE",
        "AND",
        "OR",
        "NOT",
        "ORDER",
        "BY",
        "ASC",
        "DESC",
        "NULLS",
        "FIRST",
        "LAST",
        "LIMIT",
        "OFFSET",
        "GROUP",
        "HAVING",
        "TYPEOF",
        "END",
        "IN",
        "LIKE",
        "TRUE",
        "FALSE",
        "NULL",
        "WITH",
        "FOR",
        "USING",
    }
)
COMPARISONS = frozenset({"=", "!=", "<>", "<", "<=", ">", ">="})
UNSUPPORTED_PREFIX = "The emulator does not implement"

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<punct>[(),:])
""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}


class SoqlError(Exception):
    """A query Salesforce refuses: ``error_code`` and a message in Salesforce's shape."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


def located(text: str, pos: int, reason: str) -> str:
    """``reason`` prefixed with the query line, a caret and ``ERROR at Row:r:Column:c``."""
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    line = text[start : end if end >= 0 else len(text)]
    column = pos - start + 1
    row = text.count("\n", 0, pos) + 1
    return f"\n{line}\n{' ' * (column - 1)}^\nERROR at Row:{row}:Column:{column}\n{reason}"


class Kind(StrEnum):
    STRING = "string"
    DATETIME = "dateTime"
    DATE = "date"
    NUMBER = "number"
    BOOLEAN = "boolean"
    NULL = "null"


@dataclass(frozen=True, slots=True)
class Name:
    text: str
    pos: int


@dataclass(frozen=True, slots=True)
class Literal:
    kind: Kind
    value: object
    pos: int


@dataclass(frozen=True, slots=True)
class Compare:
    field: Name
    op: str  # one of COMPARISONS, with <> normalised to !=
    value: Literal


@dataclass(frozen=True, slots=True)
class InList:
    field: Name
    values: tuple[Literal, ...]
    negated: bool


@dataclass(frozen=True, slots=True)
class Like:
    field: Name
    pattern: Literal


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # "AND" | "OR"
    parts: tuple["Condition", ...]


@dataclass(frozen=True, slots=True)
class Not:
    part: "Condition"


type Condition = Compare | InList | Like | BoolOp | Not


@dataclass(frozen=True, slots=True)
class Aggregate:
    function: str  # upper-case, one of AGGREGATES
    argument: Name | None
    pos: int


@dataclass(frozen=True, slots=True)
class Construct:
    """A select-list construct the Bulk API rejects: "TYPEOF", "subquery", "FIELDS()"."""

    name: str
    pos: int


type SelectItem = Name | Aggregate | Construct


@dataclass(frozen=True, slots=True)
class OrderItem:
    field: Name
    descending: bool
    nulls_last: bool


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    select: tuple[SelectItem, ...]
    object: Name
    where: Condition | None
    group_by: tuple[Name, ...]
    order_by: tuple[OrderItem, ...]
    limit: int | None
    offset: int | None

    @property
    def fields(self) -> tuple[Name, ...]:
        return tuple(item for item in self.select if isinstance(item, Name))

    @property
    def count_only(self) -> bool:
        """``SELECT COUNT() FROM ...``: answered with totalSize and no records."""
        (first, *rest) = self.select
        return (
            not rest and isinstance(first, Aggregate) and first.function == "COUNT" and first.argument is None
        )


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    pos: int

    @property
    def keyword(self) -> str | None:
        upper = self.text.upper()
        return upper if self.kind == "name" and upper in KEYWORDS else None


def _tokens(text: str) -> list[_Token]:
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            reason = "unterminated string" if text[pos] == "'" else f"unexpected token: '{text[pos]}'"
            raise SoqlError("MALFORMED_QUERY", located(text, pos, reason))
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append(_Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(_Token("eof", "<EOF>", len(text)))
    return tokens


def parse(text: str) -> Query:
    """Parse one SOQL statement; ``SoqlError`` (MALFORMED_QUERY) when it is not valid."""
    return _Parser(text).query()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0

    # -- token helpers ----------------------------------------------------------------

    @property
    def token(self) -> _Token:
        return self.tokens[self.at]

    def _advance(self) -> _Token:
        token = self.token
        self.at += 1
        return token

    def _accept(self, *keywords: str) -> bool:
        if self.token.keyword in keywords or (self.token.kind == "punct" and self.token.text in keywords):
            self.at += 1
            return True
        return False

    def _expect(self, keyword: str) -> None:
        if not self._accept(keyword):
            self._fail()

    def _fail(self, token: _Token | None = None) -> None:
        token = token or self.token
        raise SoqlError("MALFORMED_QUERY", located(self.text, token.pos, f"unexpected token: '{token.text}'"))

    def _unsupported(self, what: str, pos: int) -> None:
        raise SoqlError("MALFORMED_QUERY", located(self.text, pos, f"{UNSUPPORTED_PREFIX} {what}"))

    def _name(self) -> Name:
        token = self.token
        if token.kind != "name" or token.keyword:
            self._fail()
        self.at += 1
        return Name(token.text, token.pos)

    def _integer(self) -> int:
        token = self._advance()
        if token.kind != "number" or not token.text.isdigit():
            self._fail(token)
        return int(token.text)

    def _skip_parenthesised(self) -> None:
        """Skip from an opening parenthesis (already consumed) to its match."""
        depth = 1
        while depth:
            token = self._advance()
            if token.kind == "eof":
                self._fail(token)
            depth += {"(": 1, ")": -1}.get(token.text, 0) if token.kind == "punct" else 0

    # -- grammar ----------------------------------------------------------------------

    def query(self) -> Query:
        self._expect("SELECT")
        select = [self._select_item()]
        while self._accept(","):
            select.append(self._select_item())
        self._expect("FROM")
        obj = self._name()
        where = self._condition() if self._accept("WHERE") else None
        group_by: list[Name] = []
        if self._accept("GROUP"):
            self._expect("BY")
            group_by.append(self._name())
            while self._accept(","):
                group_by.append(self._name())
        order_by: list[OrderItem] = []
        if self._accept("ORDER"):
            self._expect("BY")
            order_by.append(self._order_item())
            while self._accept(","):
                order_by.append(self._order_item())
        limit = self._integer() if self._accept("LIMIT") else None
        offset = self._integer() if self._accept("OFFSET") else None
        if self.token.keyword in ("HAVING", "WITH", "FOR", "USING"):
            self._unsupported(self.token.text.upper(), self.token.pos)
        if self.token.kind != "eof":
            self._fail()
        return Query(self.text, tuple(select), obj, where, tuple(group_by), tuple(order_by), limit, offset)

    def _select_item(self) -> SelectItem:
        token = self.token
        if self._accept("("):
            self._skip_parenthesised()
            return Construct("subquery", token.pos)
        if self._accept("TYPEOF"):
            while not self._accept("END"):
                if self._advance().kind == "eof":
                    self._fail(self.tokens[-1])
            return Construct("TYPEOF", token.pos)
        name = self._name()
        if not self._accept("("):
            if "." in name.text:
                self._unsupported("relationship fields", name.pos)
            return name
        function = name.text.upper()
        if function == "FIELDS":
            self._skip_parenthesised()
            return Construct("FIELDS()", token.pos)
        if function not in AGGREGATES:
            self._unsupported(f"the function {name.text}()", name.pos)
        argument = None if self.token.text == ")" else self._name()
        self._expect(")")
        if self.token.kind == "name" and not self.token.keyword:
            self.at += 1  # an alias, e.g. COUNT(Id) total
        return Aggregate(function, argument, token.pos)

    def _order_item(self) -> OrderItem:
        field = self._name()
        descending = self._accept("DESC")
        if not descending:
            self._accept("ASC")
        nulls_last = descending  # Salesforce's default: nulls first ascending, last descending
        if self._accept("NULLS"):
            if self._accept("LAST"):
                nulls_last = True
            else:
                self._expect("FIRST")
                nulls_last = False
        return OrderItem(field, descending, nulls_last)

    def _condition(self) -> Condition:
        parts = [self._conjunction()]
        while self._accept("OR"):
            parts.append(self._conjunction())
        return parts[0] if len(parts) == 1 else BoolOp("OR", tuple(parts))

    def _conjunction(self) -> Condition:
        parts = [self._unary()]
        while self._accept("AND"):
            parts.append(self._unary())
        return parts[0] if len(parts) == 1 else BoolOp("AND", tuple(parts))

    def _unary(self) -> Condition:
        if self._accept("NOT"):
            return Not(self._unary())
        if self._accept("("):
            condition = self._condition()
            self._expect(")")
            return condition
        field = self._name()
        if "." in field.text:
            self._unsupported("relationship fields", field.pos)
        token = self.token
        if token.kind == "op":
            self.at += 1
            return Compare(field, "!=" if token.text == "<>" else token.text, self._literal())
        negated = self._accept("NOT")
        if self._accept("IN"):
            self._expect("(")
            if self.token.keyword == "SELECT":
                self._unsupported("semi-join subqueries", self.token.pos)
            values = [self._literal()]
            while self._accept(","):
                values.append(self._literal())
            self._expect(")")
            return InList(field, tuple(values), negated)
        if not negated and self._accept("LIKE"):
            return Like(field, self._literal())
        self._fail()
        raise AssertionError("unreachable")

    def _literal(self) -> Literal:
        token = self._advance()
        match token.kind, token.keyword:
            case "string", _:
                body = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[1]), token.text[1:-1])
                return Literal(Kind.STRING, body, token.pos)
            case "datetime", _:
                return Literal(Kind.DATETIME, datetime.fromisoformat(token.text), token.pos)
            case "date", _:
                return Literal(Kind.DATE, date.fromisoformat(token.text), token.pos)
            case "number", _:
                value = float(token.text) if "." in token.text else int(token.text)
                return Literal(Kind.NUMBER, value, token.pos)
            case "name", "TRUE" | "FALSE":
                return Literal(Kind.BOOLEAN, token.keyword == "TRUE", token.pos)
            case "name", "NULL":
                return Literal(Kind.NULL, None, token.pos)
            case "name", None:
                self._unsupported(f"date literals like {token.text}", token.pos)
        self._fail(token)
        raise AssertionError("unreachable")
