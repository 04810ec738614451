"""The ``where`` expression language: parsing, semantics, errors, and mask == evaluate."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pulseboard.errors import ExprError
from pulseboard.expr import MAX_DEPTH, MAX_LENGTH, Expr, parse

ROW: dict[str, Any] = {
    "amount": 150,
    "price": 9.5,
    "min_amount": 100.0,
    "region": "eu",
    "is_mobile": True,
    "is_new": False,
    "nothing": None,
    "nan": math.nan,
    "tags": ["a"],
    "quote": 'it\'s \\ "x"',
}

EVALUATE_CASES = [
    # comparisons, both numeric kinds, names on either side, two names
    ("amount >= 100", True),
    ("amount > 150", False),
    ("amount == 150.0", True),
    ("100 < amount", True),
    ("150 >= amount", True),
    ("amount > min_amount", True),
    ("min_amount >= amount", False),
    ("price < 1e1", True),
    ("price == 9.5", True),
    ("price != -3", True),
    ("1 == 1", True),
    ("1 < 'a'", False),
    ("region == 'eu'", True),
    ('region == "eu"', True),
    ("region < 'f'", True),
    ("region >= 'eu0'", False),
    # precedence: not > and > or
    ("amount < 0 and region == 'eu' or is_mobile", True),
    ("amount < 0 and (region == 'eu' or is_mobile)", False),
    ("is_mobile or amount < 0 and is_new", True),
    ("(is_mobile or amount < 0) and is_new", False),
    ("not is_new and is_mobile", True),
    ("not (is_new or is_mobile)", False),
    ("not not is_mobile", True),
    # bare names and boolean literals
    ("is_mobile", True),
    ("is_new", False),
    ("amount", False),
    ("missing", False),
    ("true", True),
    ("false or is_mobile", True),
    ("is_mobile == true", True),
    ("is_new < true", True),
    # in / not in, with parentheses or brackets
    ("region in ('eu', 'us')", True),
    ("region in ['us', 'apac']", False),
    ("region not in ('us', 'apac')", True),
    ("region not in ('eu',)", False),
    ("amount in (1, 150.0)", True),
    ("amount not in (1, 2.5)", True),
    ("region not in (1, 2)", False),
    ("region not in ('us', 1)", False),
    ("missing in ('eu', null)", True),
    ("region in ('us', null)", False),
    ("missing not in ('eu')", False),
    ("not (missing in ('eu'))", True),
    ("missing not in (null)", False),
    ("region not in (null)", True),
    # null semantics: comparisons with null are false, == null / != null are the tests
    ("missing == null", True),
    ("nothing == null", True),
    ("nan == null", True),
    ("null == missing", True),
    ("amount == null", False),
    ("amount != null", True),
    ("missing != null", False),
    ("tags != null", True),
    ("null == null", True),
    ("missing != 'eu'", False),
    ("missing == 'eu'", False),
    ("missing > 1", False),
    ("not (missing > 1)", True),
    ("nan < 1 or nan >= 1", False),
    ("missing == missing", False),
    # incompatible types are false, for != too
    ("region > 1", False),
    ("region != 1", False),
    ("amount == '150'", False),
    ("is_mobile == 1", False),
    ("true == 1", False),
    ("is_new != 0", False),
    ("tags == tags", False),
    ("tags != 'a'", False),
    # escapes
    ("quote == 'it\\'s \\\\ \"x\"'", True),
    ('quote == "it\'s \\\\ \\"x\\""', True),
]


@pytest.mark.parametrize(("text", "expected"), EVALUATE_CASES)
def test_evaluate(text: str, expected: bool) -> None:
    expr = parse(text)
    assert expr.evaluate(ROW) is expected
    columns = {name: [value] for name, value in ROW.items()}
    assert expr.mask(columns, 1).tolist() == [expected]


@pytest.mark.parametrize(
    ("text", "row", "expected"),
    [
        ("n < 9007199254740993", {"n": 2**53}, True),  # ints compare exactly
        ("n < 9007199254740993.0", {"n": 2**53}, False),  # with a float, as float64
        ("n > 9223372036854775806", {"n": 2**63 - 1}, True),  # int64: exact
        ("n == 9223372036854775807", {"n": 2**63}, True),  # beyond int64: floats, both 2.0**63
        ("n == 1e400", {"n": 10**400}, True),  # both overflow to inf
        ("n == 0", {"n": -0.0}, True),
        ("n == 1", {"n": np.int64(1)}, True),
        ("n == 'a'", {"n": np.str_("a")}, True),
        ("n", {"n": np.bool_(True)}, True),
        ("n == null", {"n": np.float32("nan")}, True),
    ],
)
def test_evaluate_numeric_edges(text: str, row: dict[str, Any], expected: bool) -> None:
    assert parse(text).evaluate(row) is expected


ERROR_CASES = [
    ("", 1, "expected a condition, found end of expression"),
    ("   ", 4, "expected a condition, found end of expression"),
    ("amount >=", 10, "expected a value after '>=', found end of expression"),
    ("amount >= and", 11, "expected a value after '>=', found 'and'"),
    ("amount = 1", 8, "unknown operator '=' (did you mean '=='?)"),
    ("amount === 1", 8, "unknown operator '===' (did you mean '=='?)"),
    ("amount => 1", 8, "unknown operator '=>' (did you mean '>='?)"),
    ("amount <> 1", 8, "unknown operator '<>' (did you mean '!='?)"),
    ("a && b", 3, "unknown operator '&&' (did you mean 'and'?)"),
    ("a || b", 3, "unknown operator '||' (did you mean 'or'?)"),
    ("!a", 1, "unknown operator '!' (did you mean '!=' or 'not'?)"),
    ("region == 'eu", 11, "unterminated string"),
    ('region == "eu\\"', 11, "unterminated string"),
    ("region == 'e\\nu'", 13, "invalid escape '\\n' in string"),
    ("Amount > 1", 1, "invalid name 'Amount'"),
    ("a AND b", 3, "unknown word 'AND' (keywords are lowercase: 'and')"),
    ("a == True", 6, "unknown word 'True'"),
    ("a > 1 b", 7, "expected 'and', 'or' or end of expression after '1', found 'b'"),
    ("(a > 1", 7, "expected ')' to close '(' at column 1, found end of expression"),
    ("a > 1)", 6, "found ')'"),
    ("a > 1 and", 10, "expected a condition after 'and', found end of expression"),
    ("a < null", 5, "null can only be compared with '==' or '!=', not '<'"),
    ("null >= a", 1, "null can only be compared with '==' or '!=', not '>='"),
    ("5 and a", 3, "expected a comparison operator after '5', found 'and'"),
    ("'x'", 4, "expected a comparison operator after ''x'', found end of expression"),
    ("a in b", 6, "expected '(' or '[' after 'in', found 'b'"),
    ("a in ()", 7, "expected a literal after '(', found ')'"),
    ("a in (1, b)", 10, "expected a literal in the list, found name 'b'"),
    ("a in (1 2)", 9, "expected ',' or ')' after '1', found '2'"),
    ("a in [1)", 8, "expected ',' or ']' after '1', found ')'"),
    ("a not b", 7, "expected 'in' after 'not', found 'b'"),
    ("a > 1.2.3", 5, "invalid number '1.2.3'"),
    ("a > 12abc", 5, "invalid number '12abc'"),
    ("a > b - 1", 7, "unexpected character '-' (arithmetic is not supported)"),
    ("a > $b", 5, "unexpected character '$'"),
    ("a >= 1 and (b or", 17, "expected a condition after 'or', found end of expression"),
    ("not", 4, "expected a condition after 'not', found end of expression"),
    ("a == b == c", 8, "expected 'and', 'or' or end of expression after 'b', found '=='"),
]


@pytest.mark.parametrize(("text", "column", "message"), ERROR_CASES)
def test_syntax_errors(text: str, column: int, message: str) -> None:
    with pytest.raises(ExprError) as caught:
        parse(text)
    assert message in caught.value.message
    assert caught.value.column == column


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        (
            "1 < items < 5",
            11,
            "expected 'and', 'or' or end of expression after 'items', found '<' "
            "(comparisons do not chain; write '1 < items and items < 5')",
        ),
        (
            "a == b != null",
            8,
            "expected 'and', 'or' or end of expression after 'b', found '!=' "
            "(comparisons do not chain; write 'a == b and b != null')",
        ),
        (
            "x >= 1 and 1 < x <",
            18,
            "expected 'and', 'or' or end of expression after 'x', found '<' "
            "(comparisons do not chain; join two comparisons with 'and')",
        ),
    ],
)
def test_chained_comparisons_say_how_to_write_them(text: str, column: int, message: str) -> None:
    with pytest.raises(ExprError) as caught:
        parse(text)
    assert caught.value.message == message
    assert caught.value.column == column


@pytest.mark.parametrize(
    ("text", "bare"),
    [
        ("paid", {"paid"}),
        ("paid == true", set()),
        ("not paid and (vip or amount > 1)", {"paid", "vip"}),
        ("true or x in (1)", set()),
    ],
)
def test_bare_names(text: str, bare: set[str]) -> None:
    assert parse(text).bare_names() == frozenset(bare)


def test_limits() -> None:
    deep = "(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH
    assert parse(deep).evaluate({"a": True})
    with pytest.raises(ExprError, match="nested too deeply") as caught:
        parse("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1))
    assert caught.value.column == MAX_DEPTH + 1
    with pytest.raises(ExprError, match="nested too deeply"):
        parse("not " * (MAX_DEPTH + 1) + "a")
    with pytest.raises(ExprError, match=f"longer than {MAX_LENGTH}") as caught:
        parse("a" * (MAX_LENGTH + 1))
    assert caught.value.column == MAX_LENGTH + 1
    # A long flat chain is fine: it does not nest.
    chain = parse(" and ".join(["a"] * 800)[:MAX_LENGTH].rsplit(" and", 1)[0])
    assert chain.evaluate({"a": True})
    assert chain.mask({"a": np.array([True, False])}, 2).tolist() == [True, False]


@pytest.mark.parametrize(
    ("text", "names", "comparisons"),
    [
        ("amount >= 100", {"amount"}, [("amount", 100)]),
        ("100 <= amount", {"amount"}, [("amount", 100)]),
        ("amount > min_amount", {"amount", "min_amount"}, []),
        ("region in ('eu', \"us\")", {"region"}, [("region", "eu"), ("region", "us")]),
        ("region not in [1.5, null]", {"region"}, [("region", 1.5), ("region", None)]),
        ("x == null or null != y", {"x", "y"}, [("x", None), ("y", None)]),
        ("is_mobile and not (n < -2)", {"is_mobile", "n"}, [("is_mobile", True), ("n", -2)]),
        ("true or 1 < 2", set(), []),
        ("x == 1e3", {"x"}, [("x", 1000.0)]),
    ],
)
def test_names_and_comparisons(
    text: str, names: set[str], comparisons: list[tuple[str, object]]
) -> None:
    expr = parse(text)
    assert expr.names() == frozenset(names)
    assert expr.comparisons() == comparisons
    assert [type(v) for _, v in expr.comparisons()] == [type(v) for _, v in comparisons]


def test_value_semantics() -> None:
    a, b = parse("x > 1 and y in ('a')"), parse("x > 1 and y in ('a')")
    assert a == b and hash(a) == hash(b)
    assert a != parse("x > 1  and y in ('a')")
    assert str(a) == "x > 1 and y in ('a')"
    assert repr(a) == "Expr(\"x > 1 and y in ('a')\")"
    assert isinstance(a, Expr)
    with pytest.raises(AttributeError):
        a.text = "x"  # type: ignore[misc]
    copy = pickle.loads(pickle.dumps(a))
    assert copy == a and copy.evaluate({"x": 2, "y": "a"})


def test_mask_representations() -> None:
    expr = parse("amount >= 100 and region in ('eu', 'us') and not is_test")
    rows: list[dict[str, Any]] = [
        {"amount": 150, "region": "eu", "is_test": False},
        {"amount": 150.5, "region": "apac", "is_test": False},
        {"amount": None, "region": "us"},
        {"amount": 100, "region": None, "is_test": True},
        {"amount": 101, "region": "us", "is_test": None},
    ]
    expected = [True, False, False, False, True]
    assert [expr.evaluate(row) for row in rows] == expected
    variants: list[dict[str, Any]] = [
        {
            "amount": np.array([150, 150.5, np.nan, 100, 101]),
            "region": np.array(["eu", "apac", None, None, "us"], dtype=object),
            "is_test": [False, False, None, True, None],
        },
        {
            "amount": np.array([150, 150.5, None, 100, 101], dtype=object),
            "region": ["eu", "apac", None, None, "us"],
            "is_test": np.array([False, False, None, True, None], dtype=object),
        },
    ]
    for columns in variants:
        assert expr.mask(columns, 5).tolist() == expected
    typed = {"amount": np.array([150, 99, 100]), "region": np.array(["eu", "us", "x"])}
    assert expr.mask(typed, 3).tolist() == [True, False, False]
    assert parse("flag").mask({"flag": np.array([True, False])}, 2).tolist() == [True, False]
    assert parse("gone == null").mask({}, 3).tolist() == [True, True, True]
    assert parse("true").mask({}, 2).tolist() == [True, True]
    huge = np.array([2**64 - 1, 5], dtype=np.uint64)
    assert parse("n > 9223372036854775807").mask({"n": huge}, 2).tolist() == [True, False]
    with pytest.raises(ValueError, match="expected \\(3,\\)"):
        expr.mask({"amount": [1, 2]}, 3)


def test_mask_returns_a_new_writable_array() -> None:
    # Literals and absent fields share constant 0-d masks; a result must never alias them.
    for text in ("true", "gone == null", "1 in (1, 2)"):
        first = parse(text).mask({}, 2)
        first[:] = False
        assert parse(text).mask({}, 2).tolist() == [True, True], text


# --- property: mask() agrees with evaluate() in every column representation ---------------

OPS_LIST = ["==", "!=", "<", "<=", ">", ">="]

# Small pools, shared by data and literals, so that equal values meet often; they include
# the edges of int64 and float64 and where ints stop being exact floats.
INTS = st.sampled_from(
    [0, 1, 2, 2**53, 2**53 + 1, 2**63 - 2, 2**63 - 1, 2**63, 2**64 + 7, -(10**400)]
)
FLOATS = st.sampled_from([-1.0, -0.0, 0.5, 1.0, 2.0, 2.0**53, 1e300, math.inf, -math.inf, math.nan])
STRINGS = st.sampled_from(["", "a", "b", "eu", "a\x00", "'", '"', "\\", "é"])
ANY = st.one_of(INTS, FLOATS, STRINGS, st.booleans(), st.just([1]), st.just({"k": 1}))
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "i": INTS,
    "f": FLOATS,
    "s": STRINGS,
    "b": st.booleans(),
    "o": ANY,
}
NAMES = st.sampled_from([*FIELDS, "m"])


def _literal(value: Any, quote: str = "'") -> str:
    """The literal text for a data value; values without a literal (NaN, lists) give null."""
    if isinstance(value, str):
        return quote + value.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isnan(value):
        return repr(value) if math.isfinite(value) else "1e400" if value > 0 else "-1e400"
    return str(value) if isinstance(value, int) else "null"


LITERALS = st.builds(_literal, ANY | st.none(), st.sampled_from("'\""))


def _literals_for(name: str) -> st.SearchStrategy[str]:
    """Mostly literals of the field's own pool, so that comparisons are often true."""
    own = (INTS | FLOATS) if name in ("i", "f") else FIELDS.get(name, ANY)
    return own.map(_literal) | LITERALS


def _comparison(left: str, op: str, right: str) -> str:
    if "null" in (left, right) and op not in ("==", "!="):
        op = "=="
    return f"{left} {op} {right}"


@st.composite
def comparisons(draw: Callable[..., Any]) -> str:
    name = draw(NAMES)
    other = draw(_literals_for(name) | NAMES)
    left, right = (name, other) if draw(st.booleans()) else (other, name)
    return _comparison(left, draw(OPS), right)


@st.composite
def in_lists(draw: Callable[..., Any]) -> str:
    name = draw(NAMES | LITERALS)
    body = ", ".join(draw(st.lists(_literals_for(name), min_size=1, max_size=4)))
    negate = draw(st.booleans())
    body = f"[{body}]" if draw(st.booleans()) else f"({body})"
    return f"{name} {'not in' if negate else 'in'} {body}"


OPS = st.sampled_from(OPS_LIST)
CONDITIONS = st.one_of(
    comparisons(),
    in_lists(),
    st.builds(_comparison, LITERALS, OPS, LITERALS),
    NAMES,
    st.sampled_from(["true", "false"]),
)
EXPRESSIONS = st.recursive(
    CONDITIONS,
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"{a} and {b}", inner, inner),
        st.builds(lambda a, b: f"({a}) or {b}", inner, inner),
        st.builds(lambda a, b: f"{a} or ({b})", inner, inner),
        inner.map(lambda a: f"not ({a})"),
    ),
    max_leaves=6,
)


def _typed(values: list[Any]) -> np.ndarray[Any, Any] | None:
    """The numpy array an engine would build for these values, if there is one."""
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {bool} and None not in values:
        return np.array(values, dtype=np.bool_)
    if kinds <= {str} and None not in values:
        return np.array(values, dtype=np.str_)
    if kinds <= {int} and None not in values and all(-(2**63) <= v < 2**63 for v in values):
        return np.array(values, dtype=np.int64)
    if kinds <= {int} and None not in values and all(0 <= v < 2**64 for v in values):
        return np.array(values, dtype=np.uint64)
    if kinds <= {int, float} and all(v is None or abs(v) < 1e308 for v in values):
        return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    return None


def _as_column(values: list[Any], form: str) -> Any:
    if form == "typed" and (array := _typed(values)) is not None:
        return array
    if form == "list":
        return values
    return np.fromiter(values, dtype=object, count=len(values))


@st.composite
def tables(draw: Callable[..., Any]) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    n = draw(st.integers(0, 10))
    columns: dict[str, Any] = {}
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    for name, values in FIELDS.items():
        form = draw(st.sampled_from(["typed", "list", "object", "missing"]))
        if form == "missing":
            continue
        drawn = (st.none() | values) if draw(st.booleans()) else values
        raw = draw(st.lists(drawn, min_size=n, max_size=n))
        column = columns[name] = _as_column(raw, form)
        scalars = draw(st.booleans())  # numpy scalars, or .tolist() Python values
        cells = list(column) if scalars or isinstance(column, list) else column.tolist()
        for row, cell in zip(rows, cells, strict=True):
            row[name] = cell
    return columns, rows, n


def _check_agreement(text: str, table: tuple[dict[str, Any], list[dict[str, Any]], int]) -> None:
    columns, rows, n = table
    expr = parse(text)
    result = expr.mask(columns, n)
    assert result.dtype == np.bool_ and result.shape == (n,)
    assert result.tolist() == [expr.evaluate(row) for row in rows]


SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings(SETTINGS, max_examples=600)
@given(texts=st.lists(CONDITIONS, min_size=1, max_size=12), table=tables())
def test_mask_agrees_with_evaluate_on_conditions(
    texts: list[str], table: tuple[dict[str, Any], list[dict[str, Any]], int]
) -> None:
    for text in texts:
        _check_agreement(text, table)


@settings(SETTINGS, max_examples=300)
@given(text=EXPRESSIONS, table=tables())
def test_mask_agrees_with_evaluate_on_expressions(
    text: str, table: tuple[dict[str, Any], list[dict[str, Any]], int]
) -> None:
    _check_agreement(text, table)


@settings(SETTINGS, max_examples=300)
@given(value=st.one_of(st.none(), ANY), items=st.lists(LITERALS, min_size=1, max_size=4))
def test_in_is_a_chain_of_equalities(value: Any, items: list[str]) -> None:
    row = {"x": value}
    body = ", ".join(items)
    assert parse(f"x in ({body})").evaluate(row) == any(
        parse(f"x == {item}").evaluate(row) for item in items
    )
    assert parse(f"x not in ({body})").evaluate(row) == all(
        parse(f"x != {item}").evaluate(row) for item in items
    )


# --- exhaustive: every value against every literal and operator, in every representation --

EDGE_VALUES: list[Any] = [
    *(None, math.nan, [1], {"k": 1}),
    *(0, 1, -1, 2**53, 2**53 + 1, 2**63 - 2, 2**63 - 1, 2**63, 2**64 - 1, 2**64 + 7, -(10**400)),
    *(-0.0, 0.5, 1.0, 2.0**53, 1e300, math.inf, -math.inf),
    *("", "a", "a\x00", "b", "é", "'\\\""),
    *(True, False),
    *(np.int64(2**53 + 1), np.uint64(2**64 - 1), np.float32(0.5), np.str_("a"), np.bool_(True)),
]
EDGE_COLUMNS: dict[str, Any] = {
    "list": EDGE_VALUES,
    "object": np.fromiter(EDGE_VALUES, dtype=object, count=len(EDGE_VALUES)),
    "int64": np.array([0, 1, -1, 2**53, 2**53 + 1, 2**63 - 2, 2**63 - 1], dtype=np.int64),
    "uint64": np.array([0, 1, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1], dtype=np.uint64),
    "int8": np.array([0, 1, -1], dtype=np.int8),
    "float64": np.array([math.nan, -0.0, 0.5, 1.0, 2.0**53, 2.0**63, math.inf, -math.inf]),
    "float32": np.array([math.nan, 0.5, 1.0], dtype=np.float32),
    "bool": np.array([True, False]),
    "str": np.array(["", "a", "b", "é"]),
}


def _cells(column: Any) -> list[list[Any]]:
    """The rows evaluate() may see for a column: its numpy scalars, or its Python values."""
    if isinstance(column, list) or column.dtype == object:
        return [list(column)]
    return [list(column), column.tolist()]


def _assert_agree(text: str, columns: dict[str, Any], n: int, rows: list[dict[str, Any]]) -> None:
    expr = parse(text)
    assert expr.mask(columns, n).tolist() == [expr.evaluate(row) for row in rows], text


EDGE_LITERALS = [*sorted({_literal(value) for value in EDGE_VALUES} - {"null"}), "null"]


@pytest.mark.parametrize("form", EDGE_COLUMNS)
def test_edges_against_literals(form: str) -> None:
    column = EDGE_COLUMNS[form]
    for cells in _cells(column):
        rows = [{"x": cell} for cell in cells]
        for i, lit in enumerate(EDGE_LITERALS):
            for op in OPS_LIST:
                _assert_agree(_comparison("x", op, lit), {"x": column}, len(cells), rows)
                _assert_agree(_comparison(lit, op, "x"), {"x": column}, len(cells), rows)
            pair = f"{lit}, {EDGE_LITERALS[i - 1]}"
            for body in (lit, pair, ", ".join(EDGE_LITERALS[i : i + 5])):
                _assert_agree(f"x in ({body})", {"x": column}, len(cells), rows)
                _assert_agree(f"x not in [{body}]", {"x": column}, len(cells), rows)
        _assert_agree("x", {"x": column}, len(cells), rows)


@pytest.mark.parametrize("left", EDGE_COLUMNS)
def test_edges_between_fields(left: str) -> None:
    a = np.fromiter(EDGE_COLUMNS[left], dtype=object) if left == "list" else EDGE_COLUMNS[left]
    for right, b in EDGE_COLUMNS.items():
        b = np.fromiter(b, dtype=object) if right == "list" else b
        columns = {"x": np.repeat(a, len(b)), "y": np.tile(b, len(a))}
        n = len(a) * len(b)
        rows = [
            {"x": x, "y": y} for x, y in zip(list(columns["x"]), list(columns["y"]), strict=True)
        ]
        for op in OPS_LIST:
            _assert_agree(f"x {op} y", columns, n, rows)
