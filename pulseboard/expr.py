"""The ``where`` expression language: a small, safe filter over an event's ``data``.

A metric's ``where: "amount >= 100 and region in ('eu', 'us')"`` is parsed once, when the
config is loaded, by a hand-written tokenizer and recursive-descent parser; the text never
reaches ``eval``, ``exec`` or ``compile``.

Syntax (precedence ``not`` > ``and`` > ``or``; keywords are lowercase)::

    expr       := term ('or' term)*
    term       := condition ('and' condition)*
    condition  := 'not' condition | '(' expr ')' | comparison | name | 'true' | 'false'
    comparison := operand ('==' | '!=' | '<' | '<=' | '>' | '>=') operand
                | operand ['not'] 'in' ( '(' literal (',' literal)* ')' | '[' ... ']' )
    operand    := name | literal

Names are ``[a-z_][a-z0-9_]*`` and refer to fields of the event's ``data``. Literals are
integers (``-3``), decimals (``1.5``, ``1e3``), strings in single or double quotes (the only
escapes are ``\\\\``, ``\\'`` and ``\\"``), ``true``, ``false`` and ``null``.

Semantics (a missing field, ``None`` and a float NaN are all *null*):

- A comparison is true only when both sides are non-null and of the same family, and the
  relation holds. Families: numbers (int and float compare numerically), strings (ordered by
  code point), booleans (``false < true``). Anything else -- a null side, a string against a
  number, ``true == 1``, a list or object value -- is false for every operator, ``!=``
  included: ``region != 'eu'`` is false when ``region`` is missing. Nothing ever raises.
- ``x == null`` is true when ``x`` is null; ``x != null`` when it is not. Ordering against
  the literal ``null`` (``x < null``) is a syntax error.
- ``x in (a, b)`` means ``x == a or x == b``; ``x not in (a, b)`` means ``x != a and x != b``.
  So both are false for a null ``x`` unless the list holds ``null``, and ``not in`` is false
  when ``x`` is of another family than a list item.
- ``not`` negates the result: ``not (amount > 10)`` is true when ``amount`` is missing, and
  ``not (x in (...))`` differs from ``x not in (...)`` exactly when ``x`` is null.
- A bare name means ``name == true``: true only for a boolean field that is true.
- Two ints compare exactly; when a float is involved both sides compare as 64-bit floats.
  Integers outside the signed 64-bit range count as floats.

Errors are :class:`~pulseboard.errors.ExprError` with the 1-based column (counted from the
start of the text) and what was expected and found. Texts are limited to
:data:`MAX_LENGTH` characters and :data:`MAX_DEPTH` levels of parentheses and ``not``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from pulseboard.errors import ExprError
from pulseboard.expr_columns import (
    BOOL,
    FLOAT,
    INT,
    NULL,
    OPS,
    STR,
    BoolArray,
    Column,
    Columns,
    Value,
    compare_columns,
    isin_column,
    literal_column,
    normalise,
)

__all__ = ["MAX_DEPTH", "MAX_LENGTH", "Expr", "parse"]

MAX_LENGTH: Final = 4096
"""Longest accepted expression text, in characters."""
MAX_DEPTH: Final = 64
"""Deepest accepted nesting of parentheses and ``not``."""

_NUMBER: Final = (INT, FLOAT)
_FLIPPED: Final = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _compare(op: str, left: Value, right: Value) -> bool:
    (lkind, lvalue), (rkind, rvalue) = left, right
    fn = OPS[op]
    if lkind == INT and rkind == INT:
        return bool(fn(lvalue, rvalue))
    if lkind in _NUMBER and rkind in _NUMBER:
        return bool(fn(float(lvalue), float(rvalue)))
    if lkind == rkind and lkind in (STR, BOOL):
        return bool(fn(lvalue, rvalue))
    return False


def _matches(op: str, value: Value, item: _Lit) -> bool:
    """``value op item`` for ``==``/``!=``, where a null item is the explicit null test."""
    if item.kind == NULL:
        return (value[0] == NULL) == (op == "==")
    return _compare(op, value, (item.kind, item.value))


# --- syntax tree --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Name:
    name: str


@dataclass(frozen=True, slots=True)
class _Lit:
    kind: int
    value: Any


_Operand = _Name | _Lit


def _value(operand: _Operand, row: Mapping[str, Any]) -> Value:
    if isinstance(operand, _Name):
        return normalise(row.get(operand.name))
    return operand.kind, operand.value


def _column(operand: _Operand, columns: Columns) -> Column:
    if isinstance(operand, _Name):
        return columns.get(operand.name)
    return literal_column(operand.kind, operand.value)


class _Node:
    __slots__ = ()

    def evaluate(self, row: Mapping[str, Any]) -> bool:
        raise NotImplementedError

    def mask(self, columns: Columns) -> BoolArray:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class _Compare(_Node):
    op: str
    left: _Operand
    right: _Operand
    bare: bool = False  # written as a bare name or boolean, meaning `left == true`

    def evaluate(self, row: Mapping[str, Any]) -> bool:
        return _compare(self.op, _value(self.left, row), _value(self.right, row))

    def mask(self, columns: Columns) -> BoolArray:
        return compare_columns(self.op, _column(self.left, columns), _column(self.right, columns))


@dataclass(frozen=True, slots=True)
class _In(_Node):
    """``x in (...)``, and the null tests: ``x == null`` is ``x in (null)``."""

    operand: _Operand
    items: tuple[_Lit, ...]
    negate: bool

    def evaluate(self, row: Mapping[str, Any]) -> bool:
        value = _value(self.operand, row)
        if self.negate:
            return all(_matches("!=", value, item) for item in self.items)
        return any(_matches("==", value, item) for item in self.items)

    def mask(self, columns: Columns) -> BoolArray:
        items = [(item.kind, item.value) for item in self.items]
        return isin_column(_column(self.operand, columns), items, self.negate)


@dataclass(frozen=True, slots=True)
class _Not(_Node):
    child: _Node

    def evaluate(self, row: Mapping[str, Any]) -> bool:
        return not self.child.evaluate(row)

    def mask(self, columns: Columns) -> BoolArray:
        return ~self.child.mask(columns)


@dataclass(frozen=True, slots=True)
class _Junction(_Node):
    """``and`` (``conjunction``) or ``or`` over two or more items, flat to keep trees shallow."""

    conjunction: bool
    items: tuple[_Node, ...]

    def evaluate(self, row: Mapping[str, Any]) -> bool:
        results = (item.evaluate(row) for item in self.items)
        return all(results) if self.conjunction else any(results)

    def mask(self, columns: Columns) -> BoolArray:
        combine = operator.and_ if self.conjunction else operator.or_
        out = self.items[0].mask(columns)
        for item in self.items[1:]:
            out = combine(out, item.mask(columns))
        return out


def _walk(node: _Node) -> Iterator[_Node]:
    yield node
    if isinstance(node, _Not):
        yield from _walk(node.child)
    elif isinstance(node, _Junction):
        for item in node.items:
            yield from _walk(item)


def _operands(node: _Node) -> tuple[_Operand, ...]:
    if isinstance(node, _Compare):
        return node.left, node.right
    return (node.operand,) if isinstance(node, _In) else ()


@dataclass(frozen=True, slots=True)
class Expr:
    """A parsed ``where`` expression; build it with :func:`parse`.

    Immutable; equal (and hashing equal) to any other ``Expr`` parsed from the same text.
    ``str()`` gives the text back. The semantics are those of the module docstring.
    """

    text: str
    _root: _Node = field(compare=False, repr=False)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Expr({self.text!r})"

    def names(self) -> frozenset[str]:
        """The field names the expression refers to."""
        operands = (_operands(node) for node in _walk(self._root))
        return frozenset(o.name for group in operands for o in group if isinstance(o, _Name))

    def comparisons(self) -> list[tuple[str, object]]:
        """``(field, literal)`` pairs in source order, for type-checking against a schema.

        One pair per field-vs-literal comparison (whichever side the field is on), one per
        item of an ``in`` list; ``x == null`` gives ``(x, None)``, and a bare name ``x``, which
        means ``x == true``, gives ``(x, True)``. Field-vs-field comparisons give none.
        """
        pairs: list[tuple[str, object]] = []
        for node in _walk(self._root):
            if isinstance(node, _Compare):
                if isinstance(node.left, _Name) and isinstance(node.right, _Lit):
                    pairs.append((node.left.name, node.right.value))
            elif isinstance(node, _In) and isinstance(node.operand, _Name):
                pairs.extend((node.operand.name, item.value) for item in node.items)
        return pairs

    def bare_names(self) -> frozenset[str]:
        """The field names used as a bare condition (``paid``, meaning ``paid == true``)."""
        return frozenset(
            node.left.name
            for node in _walk(self._root)
            if isinstance(node, _Compare) and node.bare and isinstance(node.left, _Name)
        )

    def evaluate(self, row: Mapping[str, Any]) -> bool:
        """Whether one event's ``data`` passes the filter; a missing key is null."""
        return self._root.evaluate(row)

    def mask(self, columns: Mapping[str, Sequence[Any] | npt.NDArray[Any]], n: int) -> BoolArray:
        """Vectorised :meth:`evaluate` over n events: a new bool array of length n.

        ``columns[name]`` holds the field for the n events: a numeric or bool numpy array
        (NaN is null), a numpy str array, or an object array or list (``None`` is null).
        A name absent from ``columns`` is null in every row. Raises ValueError when a column
        does not have n values. Agrees exactly with ``evaluate`` on each row.
        """
        result = self._root.mask(Columns(columns, n))
        return np.array(np.broadcast_to(result, (n,)), dtype=np.bool_)


# --- parser -------------------------------------------------------------------------------

_NUMBER_TEXT: Final = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_TOKEN_RE: Final = re.compile(
    rf"(?P<space>\s+)|(?P<number>{_NUMBER_TEXT})(?![\w.])|(?P<bad_number>{_NUMBER_TEXT}[\w.]+)"
    r"|(?P<word>[A-Za-z_]\w*)|(?P<op>===|==|!=|<=|>=|<>|=>|=<|&&|\|\||[<>=!&|])"
    r"|(?P<punct>[()\[\],])|(?P<string>['\"])",
    re.ASCII,
)
_SUGGESTIONS: Final = {
    **dict.fromkeys(("=", "==="), "'=='"),
    **{"<>": "'!='", "=>": "'>='", "=<": "'<='", "!": "'!=' or 'not'"},
    **dict.fromkeys(("&", "&&"), "'and'"),
    **dict.fromkeys(("|", "||"), "'or'"),
}
_KEYWORDS: Final = frozenset({"and", "or", "not", "in", "true", "false", "null"})
_NAME_RE: Final = re.compile(r"[a-z_][a-z0-9_]*")
_LITERAL_KEYWORDS: Final = {"true": (BOOL, True), "false": (BOOL, False), "null": (NULL, None)}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # space, number, word, op, punct, string, end
    text: str  # as written
    column: int  # 1-based
    value: Value | None = None  # for literals

    def describe(self) -> str:
        if self.kind == "end":
            return "end of expression"
        return f"string {self.text}" if self.kind == "string" else f"'{self.text}'"


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote, i, chars = text[start], start + 1, list[str]()
    while i < len(text):
        char = text[i]
        if char == quote:
            return "".join(chars), i + 1
        if char == "\\":
            escaped = text[i + 1 : i + 2]
            if escaped and escaped not in "\\'\"":
                message = (
                    f"invalid escape '\\{escaped}' in string (only \\\\, \\' and \\\" are allowed)"
                )
                raise ExprError(message, i + 1)
            char, i = escaped, i + 1
        chars.append(char)
        i += 1
    raise ExprError("unterminated string", start + 1)


def _check_word(word: str, column: int) -> None:
    if word not in _KEYWORDS and not _NAME_RE.fullmatch(word):
        if word.lower() in _KEYWORDS:
            message = f"unknown word '{word}' (keywords are lowercase: '{word.lower()}')"
        else:
            message = f"invalid name '{word}' (names use lowercase letters, digits and '_')"
        raise ExprError(message, column)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        match, column = _TOKEN_RE.match(text, i), i + 1
        if match is None:
            hint = " (arithmetic is not supported)" if text[i] == "-" else ""
            raise ExprError(f"unexpected character {text[i]!r}{hint}", column)
        kind, spelled, i = match.lastgroup or "", match.group(), match.end()
        value: Value | None = None
        if kind == "string":
            string, i = _read_string(text, i - 1)
            spelled, value = text[column - 1 : i], (STR, string)
        elif kind == "number":
            value = normalise(float(spelled) if any(c in ".eE" for c in spelled) else int(spelled))
        elif kind == "word":
            _check_word(spelled, column)
            kind = "keyword" if spelled in _KEYWORDS else "name"
            value = _LITERAL_KEYWORDS.get(spelled)
        elif kind == "bad_number":
            raise ExprError(f"invalid number '{spelled}'", column)
        elif spelled in _SUGGESTIONS:
            message = f"unknown operator '{spelled}' (did you mean {_SUGGESTIONS[spelled]}?)"
            raise ExprError(message, column)
        if kind != "space":
            tokens.append(_Token(kind, spelled, column, value))
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


class _Parser:
    """Recursive descent, one method per precedence level."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self, kind: str, *texts: str) -> _Token | None:
        """The next token if it is one of these, consumed; else None."""
        token = self.tokens[self.pos]
        if token.kind != kind or token.text not in texts:
            return None
        self.pos += 1
        return token

    def expected(self, what: str, after: bool = True) -> ExprError:
        found = self.peek()
        after_text = f" after '{self.tokens[self.pos - 1].text}'" if self.pos and after else ""
        return ExprError(f"expected {what}{after_text}, found {found.describe()}", found.column)

    def chained(self, first: _Token, op: _Token) -> ExprError:
        """The error for a second operator after a comparison (``1 < x < 5``), with a fix."""
        error = self.expected("'and', 'or' or end of expression")
        middle, op2, last = self.tokens[self.pos - 1], self.peek(), self.tokens[self.pos + 1]
        if last.kind == "name" or last.value is not None:
            fix = (
                f"write '{first.text} {op.text} {middle.text} "
                f"and {middle.text} {op2.text} {last.text}'"
            )
        else:
            fix = "join two comparisons with 'and'"
        return ExprError(f"{error.message} (comparisons do not chain; {fix})", error.column)

    def parse(self) -> _Node:
        node = self.junction("or")
        if self.peek().kind != "end":
            raise self.expected("'and', 'or' or end of expression")
        return node

    def junction(self, word: str) -> _Node:
        items = [self.junction("and") if word == "or" else self.negation()]
        while self.take("keyword", word):
            items.append(self.junction("and") if word == "or" else self.negation())
        return items[0] if len(items) == 1 else _Junction(word == "and", tuple(items))

    def negation(self) -> _Node:
        token = self.take("keyword", "not") or self.take("punct", "(")
        if token is None:
            return self.condition()
        self.depth += 1
        if self.depth > MAX_DEPTH:
            message = f"expression nested too deeply (more than {MAX_DEPTH} levels)"
            raise ExprError(message, token.column)
        if token.text == "not":
            node: _Node = _Not(self.negation())
        else:
            node = self.junction("or")
            if not self.take("punct", ")"):
                raise self.expected(f"')' to close '(' at column {token.column}", after=False)
        self.depth -= 1
        return node

    def operand(self, what: str) -> _Operand:
        token = self.peek()
        if token.kind != "name" and token.value is None:
            raise self.expected(what)
        self.pos += 1
        return _Lit(*token.value) if token.value is not None else _Name(token.text)

    def condition(self) -> _Node:
        left_token = self.peek()
        left = self.operand("a condition")
        op = self.take("op", *OPS)
        if op is not None:
            right_token = self.peek()
            right = self.operand("a value")
            null_token = left_token if isinstance(left, _Lit) and left.kind == NULL else right_token
            node = _comparison(op.text, left, right, null_token)
            if self.peek().kind == "op":
                raise self.chained(left_token, op)
            return node
        negate = self.take("keyword", "not") is not None
        if self.take("keyword", "in"):
            return _In(left, self.literal_list(), negate)
        if negate:
            raise self.expected("'in'")
        if isinstance(left, _Name) or left.kind == BOOL:  # a bare name or boolean: `== true`
            return _Compare("==", left, _Lit(BOOL, True), bare=True)
        raise self.expected("a comparison operator")

    def literal_list(self) -> tuple[_Lit, ...]:
        opening = self.take("punct", "(", "[")
        if opening is None:
            raise self.expected("'(' or '['")
        closing = ")" if opening.text == "(" else "]"
        items: list[_Lit] = []
        while True:
            token, item = self.peek(), self.operand("a literal")
            if isinstance(item, _Name):
                message = f"expected a literal in the list, found name '{item.name}'"
                raise ExprError(message, token.column)
            items.append(item)
            comma = self.take("punct", ",")
            if self.take("punct", closing):  # a trailing comma is fine
                return tuple(items)
            if comma is None:
                raise self.expected(f"',' or '{closing}'")


def _comparison(op: str, left: _Operand, right: _Operand, null_token: _Token) -> _Node:
    null_left = isinstance(left, _Lit) and left.kind == NULL
    if null_left or (isinstance(right, _Lit) and right.kind == NULL):
        if op not in ("==", "!="):
            message = f"null can only be compared with '==' or '!=', not '{op}'"
            raise ExprError(message, null_token.column)
        return _In(right if null_left else left, (_Lit(NULL, None),), negate=op == "!=")
    if isinstance(left, _Lit) and isinstance(right, _Name):
        left, right, op = right, left, _FLIPPED[op]
    return _Compare(op, left, right)


def parse(text: str) -> Expr:
    """Parse a ``where`` expression; raises ExprError (with a 1-based column) if invalid.

    Never evaluates the text as Python. See the module docstring for syntax and semantics.
    """
    if len(text) > MAX_LENGTH:
        raise ExprError(f"expression is longer than {MAX_LENGTH} characters", MAX_LENGTH + 1)
    return Expr(text, _Parser(text).parse())
