"""The values of ``where`` expressions, one at a time and as whole columns.

Internal to :mod:`pulseboard.expr`, whose docstring states the semantics. :func:`normalise`
classifies a data value into a kind, and is the one definition of kinds that both
``Expr.evaluate`` (a row at a time) and ``Expr.mask`` (the columns here) follow; every
column function here agrees exactly with ``Expr.evaluate`` on each row.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "BOOL",
    "FLOAT",
    "INT",
    "NULL",
    "OPS",
    "OTHER",
    "STR",
    "BoolArray",
    "Column",
    "Columns",
    "Value",
    "compare_columns",
    "isin_column",
    "literal_column",
    "normalise",
]

BoolArray = npt.NDArray[np.bool_]
Value = tuple[int, Any]  # (kind, normalised Python value), as given by normalise()

NULL, BOOL, INT, FLOAT, STR, OTHER = range(6)  # the kinds of a value
OPS: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
"""The comparison operators, applied to two values of one family."""

_FAMILY: Final = {BOOL: BOOL, INT: FLOAT, FLOAT: FLOAT, STR: STR}
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_KIND_OF_TYPE: Final[dict[type, int]] = {
    type(None): NULL,
    bool: BOOL,
    np.bool_: BOOL,
    int: INT,
    float: FLOAT,
    str: STR,
    np.str_: STR,
    **dict.fromkeys(
        (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64), INT
    ),
    **dict.fromkeys((np.float16, np.float32, np.float64), FLOAT),
}
# 0-d masks that broadcast to every row; read-only, as columns share them.
_TRUE: Final = np.ones((), dtype=np.bool_)
_FALSE: Final = np.zeros((), dtype=np.bool_)
_TRUE.flags.writeable = _FALSE.flags.writeable = False


def _int_to_float(value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def normalise(value: Any) -> Value:
    """Classify a data value: numpy scalars become Python values, NaN becomes null, and
    integers outside the signed 64-bit range become floats (infinite beyond float64).

    Anything that is not null, a bool, a number or a string is of kind ``OTHER``.
    """
    kind = _KIND_OF_TYPE.get(type(value), OTHER)
    if kind == INT:
        number = int(value)
        if _INT64_MIN <= number <= _INT64_MAX:
            return INT, number
        return FLOAT, _int_to_float(number)
    if kind == FLOAT:
        real = float(value)
        return (NULL, None) if math.isnan(real) else (FLOAT, real)
    if kind == BOOL:
        return BOOL, bool(value)
    if kind == STR:
        return STR, str(value)
    return kind, None


@dataclass(slots=True)
class Column:
    """An operand over n rows, split by family. A mask of None means no row is of that kind.
    A literal holds 0-d masks and values, which broadcast to every row.

    Value arrays hold a harmless filler where their mask is false, so comparing never raises.
    """

    null: BoolArray | None = None
    is_int: BoolArray | None = None
    ints: Any = None  # int64 values
    is_num: BoolArray | None = None
    floats: Any = None  # float64 value of every number, ints included
    is_str: BoolArray | None = None
    strs: Any = None
    is_bool: BoolArray | None = None
    bools: Any = None


def _some(mask: BoolArray) -> BoolArray | None:
    return mask if mask.any() else None


def _both(a: BoolArray | None, b: BoolArray | None) -> BoolArray | None:
    return None if a is None or b is None else a & b


def literal_column(kind: int, scalar: Any) -> Column:
    """A normalised value, ``(kind, scalar)``, as the same value in every row."""
    if kind == NULL:
        return Column(null=_TRUE)
    if kind == INT:
        return Column(is_int=_TRUE, ints=np.int64(scalar), is_num=_TRUE, floats=float(scalar))
    if kind == FLOAT:
        return Column(is_num=_TRUE, floats=scalar)
    if kind == STR:
        # An object scalar: numpy would turn a plain str into its str type, which drops
        # trailing NUL characters.
        return Column(is_str=_TRUE, strs=np.array(scalar, dtype=object))
    return Column(is_bool=_TRUE, bools=scalar)


def _array_column(values: npt.NDArray[Any], n: int) -> Column:
    kind = values.dtype.kind
    if kind == "f":
        floats = values.astype(np.float64, copy=False)
        null = np.isnan(floats)
        return Column(null=_some(null), is_num=~null, floats=floats)
    if kind in "iu":
        every = np.ones(n, dtype=np.bool_)
        floats = values.astype(np.float64)
        if kind == "u" and n and int(values.max()) > _INT64_MAX:
            fits = values <= _INT64_MAX  # larger ones count as floats, as in normalise()
            ints = np.where(fits, values, 0).astype(np.int64)
            return Column(is_int=fits, ints=ints, is_num=every, floats=floats)
        ints = values.astype(np.int64, copy=False)
        return Column(is_int=every, ints=ints, is_num=every, floats=floats)
    if kind == "b":
        return Column(is_bool=np.ones(n, dtype=np.bool_), bools=values)
    if kind == "U":
        return Column(is_str=np.ones(n, dtype=np.bool_), strs=values)
    if kind == "O":
        return _object_column(values, n)
    return Column()  # other dtypes (bytes, datetimes) are never null and never compare true


def _object_column(values: npt.NDArray[Any], n: int) -> Column:
    # map() over builtins classifies in C, without a Python frame per row.
    kinds = np.fromiter(
        map(_KIND_OF_TYPE.get, map(type, values), repeat(OTHER)), dtype=np.int8, count=n
    )
    null, is_int, is_float = kinds == NULL, kinds == INT, kinds == FLOAT
    floats = np.zeros(n, dtype=np.float64)
    if is_float.any():
        floats = np.where(is_float, values, 0.0).astype(np.float64)
        nan = np.isnan(floats)
        null |= nan
        is_float &= ~nan
    ints: npt.NDArray[np.int64] | None = None
    if is_int.any():
        try:
            ints = np.where(is_int, values, 0).astype(np.int64)
        except OverflowError:
            # Rare: integers beyond int64 count as floats, as in normalise().
            for i in np.flatnonzero(is_int):
                kind, number = normalise(values[i])
                if kind == FLOAT:
                    is_int[i], is_float[i], floats[i] = False, True, number
            ints = np.where(is_int, values, 0).astype(np.int64)
        floats = np.where(is_int, ints.astype(np.float64), floats)
    column = Column(null=_some(null), is_num=_some(is_int | is_float), floats=floats)
    if ints is not None:
        column.is_int, column.ints = _some(is_int), ints
    if (is_str := _some(kinds == STR)) is not None:
        column.is_str, column.strs = is_str, np.where(is_str, values, "")
    if (is_bool := _some(kinds == BOOL)) is not None:
        column.is_bool = is_bool
        column.bools = np.where(is_bool, values, False).astype(np.bool_)
    return column


class Columns:
    """The fields of n events, each normalised into a :class:`Column` once, when first used.

    ``columns[name]`` is a numpy array or a sequence of n values (see ``Expr.mask``); a name
    absent from ``columns`` is null in every row.
    """

    __slots__ = ("_cache", "_columns", "n")

    def __init__(self, columns: Mapping[str, Sequence[Any] | npt.NDArray[Any]], n: int) -> None:
        self._columns = columns
        self._cache: dict[str, Column] = {}
        self.n = n

    def get(self, name: str) -> Column:
        """The column of a field; raises ValueError when it does not have n values."""
        column = self._cache.get(name)
        if column is None:
            column = self._cache[name] = self._load(name)
        return column

    def _load(self, name: str) -> Column:
        values = self._columns.get(name)
        if values is None:
            return Column(null=np.ones(self.n, dtype=np.bool_))
        if len(values) != self.n or (isinstance(values, np.ndarray) and values.ndim != 1):
            raise ValueError(f"column {name!r} has shape {np.shape(values)}, expected ({self.n},)")
        if not isinstance(values, np.ndarray):
            values = np.fromiter(values, dtype=object, count=self.n)
        return _array_column(values, self.n)


def compare_columns(op: str, a: Column, b: Column) -> BoolArray:
    """Rows where ``a op b`` holds: both sides non-null, of one family, and in relation.

    Two ints compare exactly, other pairs of numbers as float64.
    """
    fn = OPS[op]
    both_int = _both(a.is_int, b.is_int)
    numbers = _both(a.is_num, b.is_num)
    if numbers is not None and both_int is not None:
        numbers = numbers & ~both_int
    out = _FALSE
    for rows, left, right in (
        (both_int, a.ints, b.ints),
        (numbers, a.floats, b.floats),
        (_both(a.is_str, b.is_str), a.strs, b.strs),
        (_both(a.is_bool, b.is_bool), a.bools, b.bools),
    ):
        if rows is not None:
            out = out | (rows & fn(left, right))
    return out


def isin_column(column: Column, items: Sequence[Value], negate: bool) -> BoolArray:
    """Rows where ``x in items`` holds, or ``x not in items`` when negating.

    ``in`` is a chain of ``==`` and ``not in`` one of ``!=``, where a null item tests for
    null; so both are false for a null row unless the items hold null.
    """
    hits = _equal_to_any(column, items)
    null = _FALSE if column.null is None else column.null
    if not negate:
        return hits | null if any(kind == NULL for kind, _ in items) else hits
    # Every `x != item` holds: x is of the one family of the non-null items and hits none.
    families = {_FAMILY[kind] for kind, _ in items if kind != NULL}
    if not families:
        return ~null
    if len(families) > 1:
        return _FALSE
    member = {BOOL: column.is_bool, FLOAT: column.is_num, STR: column.is_str}
    family = member[families.pop()]
    return _FALSE if family is None else family & ~hits


def _equal_to_any(column: Column, items: Sequence[Value]) -> BoolArray:
    """Rows equal to a non-null item, with the numeric rules of compare_columns()."""
    by_kind: dict[int, list[Any]] = {NULL: [], BOOL: [], INT: [], FLOAT: [], STR: []}
    for kind, value in items:
        by_kind[kind].append(value)
    ints, floats, strs, bools = by_kind[INT], by_kind[FLOAT], by_kind[STR], by_kind[BOOL]
    out = _FALSE
    if column.is_int is not None and ints:
        out = out | (column.is_int & np.isin(column.ints, np.array(ints, dtype=np.int64)))
    if column.is_num is not None and floats:
        out = out | (column.is_num & np.isin(column.floats, floats))
    if column.is_num is not None and ints:
        rest = column.is_num if column.is_int is None else column.is_num & ~column.is_int
        out = out | (rest & np.isin(column.floats, [float(v) for v in ints]))
    if column.is_str is not None and strs:
        if column.strs.dtype.kind == "U":  # holds no trailing NULs, so such items never match
            wanted = np.array([s for s in strs if not s.endswith("\x00")], dtype=np.str_)
        else:  # object, as a numpy str array would drop the trailing NULs
            wanted = np.array(strs, dtype=object)
        out = out | (column.is_str & np.isin(column.strs, wanted))
    if column.is_bool is not None and bools:
        out = out | (column.is_bool & np.isin(column.bools, bools))
    return out
