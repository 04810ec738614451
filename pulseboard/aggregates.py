"""Aggregators: mergeable states for count, sum, avg, min, max, distinct and quantiles.

Every aggregator is ``initial() / add(state, value) / merge(a, b) / result(state)`` over plain,
immutable state values, plus ``reduce_groups`` (the engine's vectorised hot path, one state per
group code) and versioned ``dumps`` / ``loads``. ``merge`` is exactly associative and
commutative, so any split of the input into batches, buckets or processors, merged in any order,
gives a bit-identical state.

State representations:

- count: ``int``.
- sum: ``tuple[float, ...]``, the canonical exact partials of :func:`exact_partials`.
- avg: ``(count, partials)``.
- min / max: ``float`` (never ``-0.0``) or ``None`` when empty.
- distinct: ``frozenset[int]`` of :func:`stable_hash64` hashes while there are at most
  ``threshold`` of them, else read-only HyperLogLog registers (``uint8[16384]``).
- p50 / p90 / p95 / p99: ``(sketch, min, max)``: one :class:`DDSketchState` and min / max states.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

from pulseboard.errors import StateError
from pulseboard.sketches import (
    DDSKETCH_MAX_BINS,
    HLL_MAX_RANK,
    HLL_REGISTERS,
    PARTIALS_SCALE_BITS,
    DDSketchState,
    ddsketch_count,
    ddsketch_empty,
    ddsketch_from_lists,
    ddsketch_from_values,
    ddsketch_grouped,
    ddsketch_merge,
    ddsketch_quantile,
    exact_partials,
    exact_partials_grouped,
    hll_estimate,
    hll_merge,
    hll_registers,
    partials_scaled,
    readonly,
    stable_hash64,
)

FORMAT_VERSION = 1
"""First byte of every serialised state; bump it when a wire format changes."""

DEFAULT_DISTINCT_THRESHOLD = 1000
"""``distinct`` stays exact up to and including this many distinct values."""

_Values = npt.NDArray[Any] | Sequence[Any] | None
_Codes = npt.NDArray[np.integer[Any]]
_S = TypeVar("_S")
_F64 = npt.NDArray[np.float64]
_U8 = npt.NDArray[np.uint8]
_Partials = tuple[float, ...]
_AvgState = tuple[int, _Partials]
_DistinctState = frozenset[int] | _U8
_QuantileState = tuple[DDSketchState, float | None, float | None]
_QuantileWire = tuple[float | None, float | None, int, int, list[int], int, list[int]]

_ENCODER = msgspec.msgpack.Encoder()
_KIND_NAMES = {1: "count", 2: "sum", 3: "avg", 4: "min", 5: "max", 6: "distinct", 7: "quantile"}


class Aggregator(Protocol):
    """What the engine needs from an aggregate function; states are opaque, immutable values."""

    @property
    def name(self) -> str:
        """The config's ``agg`` name (``count``, ``sum``, ``p95``...)."""
        ...

    @property
    def needs_field(self) -> bool:
        """False only for ``count``, which aggregates events rather than a field."""
        ...

    @property
    def numeric(self) -> bool:
        """True if the field must be an int or float column (sum, avg, min, max, pXX)."""
        ...

    def initial(self) -> Any:
        """The state of no values."""
        ...

    def add(self, state: Any, value: Any) -> Any:
        """``state`` with one more value, as a new state (``state`` is not changed)."""
        ...

    def reduce_groups(self, codes: _Codes, n_groups: int, values: _Values) -> list[Any]:
        """One state per group: group ``g`` holds the values whose code is ``g``."""
        ...

    def merge(self, a: Any, b: Any) -> Any:
        """The state of both inputs' values; exactly associative and commutative."""
        ...

    def result(self, state: Any) -> int | float | None:
        """The number a dashboard shows for ``state``."""
        ...

    def dumps(self, state: Any) -> bytes:
        """Versioned, compact bytes for ``state``."""
        ...

    def loads(self, data: bytes) -> Any:
        """The state ``dumps`` wrote; raises ``StateError`` for anything else."""
        ...


# --- Grouping helpers ----------------------------------------------------------------------------


def _check_codes(codes: _Codes, n_groups: int, n_values: int | None) -> npt.NDArray[np.int64]:
    arr = np.asarray(codes)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ValueError(f"codes must be a 1-d integer array, got {arr.dtype} of shape {arr.shape}")
    if n_values is not None and n_values != arr.size:
        raise ValueError(f"codes and values differ in length: {arr.size} codes, {n_values} values")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= n_groups):
        raise ValueError(
            f"codes must lie in [0, {n_groups}), got values from {arr.min()} to {arr.max()}"
        )
    return arr.astype(np.int64, copy=False)


def _sort_by_group(
    codes: npt.NDArray[np.int64], n_groups: int
) -> tuple[npt.NDArray[np.intp] | None, list[int]]:
    """A permutation that sorts by code (None if already trivially sorted) and group bounds."""
    bounds = [0, *np.cumsum(np.bincount(codes, minlength=n_groups)).tolist()]
    if n_groups <= 1:
        return None, bounds
    # numpy radix-sorts 16-bit keys for kind="stable", several times faster than int64.
    narrow = codes.astype(np.int16) if n_groups <= np.iinfo(np.int16).max else codes
    return np.argsort(narrow, kind="stable"), bounds


def _numeric_column(values: _Values, n: int) -> _F64:
    if values is None:
        raise ValueError("this aggregator needs a values column, got None")
    column = np.ascontiguousarray(values, dtype=np.float64)
    if column.ndim != 1 or column.size != n:
        raise ValueError(f"values must be a 1-d column of {n} numbers, got shape {column.shape}")
    return column


def _checked_column(
    codes: _Codes, n_groups: int, values: _Values
) -> tuple[_F64, npt.NDArray[np.int64]]:
    column = _numeric_column(values, np.asarray(codes).size)
    return column, _check_codes(codes, n_groups, column.size)


# --- Shared machinery ----------------------------------------------------------------------------


class _Base(Generic[_S]):
    """Serialisation framing shared by all aggregators: ``[version, kind] + msgpack payload``."""

    kind: ClassVar[int]
    _decoder: ClassVar[msgspec.msgpack.Decoder[Any]]

    def __init__(self, name: str, *, needs_field: bool = True, numeric: bool = True) -> None:
        self.name = name
        self.needs_field = needs_field
        self.numeric = numeric

    def __repr__(self) -> str:
        return f"<aggregator {self.name}>"

    def _to_wire(self, state: _S) -> Any:
        return state

    def _from_wire(self, payload: Any) -> _S:
        raise NotImplementedError

    def dumps(self, state: _S) -> bytes:
        """``bytes([FORMAT_VERSION, kind])`` followed by the state's msgpack payload."""
        return bytes((FORMAT_VERSION, self.kind)) + _ENCODER.encode(self._to_wire(state))

    def loads(self, data: bytes) -> _S:
        """Read a state written by ``dumps`` of an aggregator of the same kind.

        Raises ``StateError`` naming the problem for short or corrupt data, another format
        version, or a state of another kind (p50..p99 share one kind: any of them may load
        another's sketch).
        """
        where = f"cannot load a {self.name!r} state"
        if not isinstance(data, bytes | bytearray | memoryview):
            raise StateError(f"{where}: expected bytes, got {type(data).__name__}")
        view = memoryview(data)
        if len(view) < 3:
            raise StateError(f"{where}: {len(view)} bytes is too short for a state")
        if view[0] != FORMAT_VERSION:
            raise StateError(
                f"{where}: format version {view[0]}, this build reads version {FORMAT_VERSION}"
            )
        if view[1] != self.kind:
            found = _KIND_NAMES.get(view[1], f"unknown kind {view[1]}")
            raise StateError(f"{where}: the data holds a {found} state")
        try:
            payload = self._decoder.decode(view[2:])
        except msgspec.DecodeError as exc:
            raise StateError(f"{where}: corrupt payload ({exc})") from exc
        return self._from_wire(payload)

    def _corrupt(self, what: str) -> StateError:
        return StateError(f"cannot load a {self.name!r} state: {what}")


# --- count, sum, avg -----------------------------------------------------------------------------


class _Count(_Base[int]):
    kind = 1
    _decoder = msgspec.msgpack.Decoder(int)

    def initial(self) -> int:
        """Zero events."""
        return 0

    def add(self, state: int, value: Any = None) -> int:
        """One more event; ``value`` is ignored."""
        return state + 1

    def reduce_groups(self, codes: _Codes, n_groups: int, values: _Values = None) -> list[int]:
        """Events per group code (``values`` is ignored and may be None)."""
        checked = _check_codes(codes, n_groups, None if values is None else len(values))
        return list(np.bincount(checked, minlength=n_groups).tolist())

    def merge(self, a: int, b: int) -> int:
        """Counts add."""
        return a + b

    def result(self, state: int) -> int:
        """The number of events."""
        return state

    def _from_wire(self, payload: int) -> int:
        if payload < 0:
            raise self._corrupt(f"negative count {payload}")
        return payload


class _Sum(_Base[_Partials]):
    kind = 2
    _decoder = msgspec.msgpack.Decoder(_Partials)

    def initial(self) -> _Partials:
        """The exact sum zero: no partials."""
        return ()

    def add(self, state: _Partials, value: float) -> _Partials:
        """Add ``float(value)`` exactly."""
        return exact_partials([*state, float(value)])

    def reduce_groups(self, codes: _Codes, n_groups: int, values: _Values) -> list[_Partials]:
        """Exact per-group sums of a float64 column."""
        column, checked = _checked_column(codes, n_groups, values)
        return exact_partials_grouped(column, checked, n_groups)

    def merge(self, a: _Partials, b: _Partials) -> _Partials:
        """The exact sum of both, canonical, so merging is exactly associative."""
        return (a or b) if not (a and b) else exact_partials([*a, *b])  # () is the identity

    def result(self, state: _Partials) -> float:
        """The correctly rounded exact sum; 0.0 when empty."""
        return state[0] if state else 0.0

    def _from_wire(self, payload: _Partials) -> _Partials:
        return exact_partials(list(payload))  # re-canonicalise whatever arrived


class _Avg(_Base[_AvgState]):
    kind = 3
    _decoder = msgspec.msgpack.Decoder(_AvgState)

    def initial(self) -> _AvgState:
        """No values: count 0 and an empty sum."""
        return (0, ())

    def add(self, state: _AvgState, value: float) -> _AvgState:
        """Count ``value`` and add ``float(value)`` to the exact sum."""
        return (state[0] + 1, exact_partials([*state[1], float(value)]))

    def reduce_groups(self, codes: _Codes, n_groups: int, values: _Values) -> list[_AvgState]:
        """Per-group counts and exact sums of a float64 column."""
        column, checked = _checked_column(codes, n_groups, values)
        sums = exact_partials_grouped(column, checked, n_groups)
        counts = np.bincount(checked, minlength=n_groups).tolist()
        return list(zip(counts, sums, strict=True))

    def merge(self, a: _AvgState, b: _AvgState) -> _AvgState:
        """Counts add, sums add exactly."""
        return (a[0] + b[0], _SUM.merge(a[1], b[1]))

    def result(self, state: _AvgState) -> float | None:
        """The exact mean, correctly rounded; None when there are no values."""
        count, partials = state
        if not count or (partials and not math.isfinite(partials[0])):
            return partials[0] if count else None
        # int / int is correctly rounded, so this is the exact mean rounded once.
        return partials_scaled(partials) / (count << PARTIALS_SCALE_BITS)

    def _from_wire(self, payload: _AvgState) -> _AvgState:
        count, partials = payload[0], exact_partials(list(payload[1]))
        if count < 0 or (count == 0 and partials):
            raise self._corrupt(f"count {count} does not fit a sum of {partials}")
        return (count, partials)


# --- min, max ------------------------------------------------------------------------------------


def _grouped_extrema(
    column: _F64, codes: npt.NDArray[np.int64], n_groups: int, *reducers: np.ufunc
) -> list[list[float | None]]:
    """For each of ``reducers`` (np.minimum, np.maximum), one value per group (None if empty)."""
    order, bounds = _sort_by_group(codes, n_groups)
    sorted_values = column if order is None else column[order]
    filled = np.flatnonzero(np.diff(bounds))
    starts = np.asarray(bounds[:-1], dtype=np.int64)[filled]
    out: list[list[float | None]] = []
    for reducer in reducers:
        out.append([None] * n_groups)
        if filled.size:
            picked = reducer.reduceat(sorted_values, starts) + 0.0
            picked[np.isnan(picked)] = np.nan  # one canonical NaN
            for g, v in zip(filled.tolist(), picked.tolist(), strict=True):
                out[-1][g] = v
    return out


class _Extremum(_Base[float | None]):
    """min or max; ``-0.0`` is stored as ``0.0`` and NaN (never fed by the engine) propagates."""

    _decoder = msgspec.msgpack.Decoder(float | None)
    _reduce: ClassVar[np.ufunc]
    _better: ClassVar[Any]  # operator.le for min, operator.ge for max

    def _pick(self, a: float, b: float) -> float:
        if a != a or b != b:
            return math.nan
        return a if type(self)._better(a, b) else b

    def initial(self) -> float | None:
        """No value yet."""
        return None

    def add(self, state: float | None, value: float) -> float | None:
        """The extremum of ``state`` and ``float(value)``."""
        v = float(value) + 0.0  # turns -0.0 into 0.0 so that results are order-independent
        return v if state is None else self._pick(state, v)

    def reduce_groups(self, codes: _Codes, n_groups: int, values: _Values) -> list[float | None]:
        """Per-group extremum of a float64 column; None for groups without values."""
        column, checked = _checked_column(codes, n_groups, values)
        return _grouped_extrema(column, checked, n_groups, self._reduce)[0]

    def merge(self, a: float | None, b: float | None) -> float | None:
        """The extremum of both (None is the identity)."""
        if a is None:
            return b
        if b is None:
            return a
        return self._pick(a, b)

    def result(self, state: float | None) -> float | None:
        """The extremum, or None when there were no values."""
        return state

    def _from_wire(self, payload: float | None) -> float | None:
        return None if payload is None else payload + 0.0


class _Min(_Extremum):
    kind, _reduce, _better = 4, np.minimum, operator.le


class _Max(_Extremum):
    kind, _reduce, _better = 5, np.maximum, operator.ge


# --- distinct ------------------------------------------------------------------------------------


def _as_registers(state: _DistinctState) -> _U8:
    if isinstance(state, frozenset):
        return hll_registers(np.fromiter(state, np.uint64, len(state)))
    return state


class _Distinct(_Base[_DistinctState]):
    kind = 6
    _decoder = msgspec.msgpack.Decoder(tuple[int, bytes])
    _EXACT, _HLL = 0, 1

    def __init__(self, threshold: int) -> None:
        super().__init__("distinct", numeric=False)
        self.threshold = threshold

    def __repr__(self) -> str:
        return f"<aggregator distinct threshold={self.threshold}>"

    def _from_segment(self, hashes: npt.NDArray[np.uint64]) -> _DistinctState:
        if hashes.size > self.threshold:
            registers = hll_registers(hashes)
            # Each distinct hash sets at most one register: more set registers than the
            # threshold prove the count is above it, without building a large set first.
            if np.count_nonzero(registers) > self.threshold:
                return readonly(registers)
        # A hash set dedupes in linear time, cheaper than np.unique's sort.
        exact = frozenset(hashes.tolist())
        if len(exact) <= self.threshold:
            return exact
        return readonly(hll_registers(hashes))

    def initial(self) -> _DistinctState:
        """No values: the empty exact set."""
        return frozenset()

    def add(self, state: _DistinctState, value: Any) -> _DistinctState:
        """``state`` with ``value`` (str, int, float or bool; see ``stable_hash64``)."""
        return self.merge(state, frozenset((int(stable_hash64([value])[0]),)))

    def reduce_groups(self, codes: _Codes, n_groups: int, values: _Values) -> list[_DistinctState]:
        """Per-group distinct values of a column (a list or object array of scalars)."""
        if values is None:
            raise ValueError("distinct needs a values column, got None")
        checked = _check_codes(codes, n_groups, len(values))
        hashes = stable_hash64(values)
        order, bounds = _sort_by_group(checked, n_groups)
        if order is not None:
            hashes = hashes[order]
        return [self._from_segment(hashes[lo:hi]) for lo, hi in itertools.pairwise(bounds)]

    def merge(self, a: _DistinctState, b: _DistinctState) -> _DistinctState:
        """The union: exact while at most ``threshold`` values, else HyperLogLog registers."""
        if isinstance(a, frozenset) and isinstance(b, frozenset):
            union = (a | b) if (a and b) else (a or b)  # keep an input when the other is empty
            if len(union) <= self.threshold:
                return union
        # The registers of a union are the elementwise maximum of both sides' registers.
        return readonly(hll_merge(_as_registers(a), _as_registers(b)))

    def result(self, state: _DistinctState) -> int:
        """The exact count while exact, else the rounded HyperLogLog estimate (about 0.8% error)."""
        if isinstance(state, frozenset):
            return len(state)
        return round(hll_estimate(state))

    def _to_wire(self, state: _DistinctState) -> tuple[int, bytes]:
        if isinstance(state, frozenset):
            return (self._EXACT, np.array(sorted(state), dtype="<u8").tobytes())
        return (self._HLL, state.tobytes())

    def _from_wire(self, payload: tuple[int, bytes]) -> _DistinctState:
        mode, data = payload
        if mode == self._EXACT:
            if len(data) % 8:
                raise self._corrupt(f"{len(data)} bytes is not a whole number of hashes")
            hashes = np.frombuffer(data, dtype="<u8").astype(np.uint64)
            if hashes.size > 1 and not bool(np.all(hashes[1:] > hashes[:-1])):
                raise self._corrupt("hashes are not strictly increasing")
            return self._from_segment(hashes)
        if mode == self._HLL:
            registers = np.frombuffer(data, dtype=np.uint8).copy()
            if registers.size != HLL_REGISTERS or int(registers.max()) > HLL_MAX_RANK:
                raise self._corrupt(f"not {HLL_REGISTERS} registers in 0..{HLL_MAX_RANK}")
            return readonly(registers)
        raise self._corrupt(f"unknown distinct mode {mode}")


def make_distinct(threshold: int = DEFAULT_DISTINCT_THRESHOLD) -> Aggregator:
    """A ``distinct`` aggregator exact up to and including ``threshold`` values (>= 0).

    Beyond the threshold its state becomes HyperLogLog registers (p=14, about 0.8% error).
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
        raise ValueError(f"distinct threshold must be a whole number >= 0, got {threshold!r}")
    return _Distinct(threshold)


# --- quantiles -----------------------------------------------------------------------------------


class _Quantile(_Base[_QuantileState]):
    """p50..p99: a DDSketch plus the exact min and max of the values, merged as min / max are.

    The q-quantile of ``n`` values is the value at 0-based rank ``floor(q * (n - 1))`` of the
    sorted values, i.e. ``numpy.quantile(values, q, method="lower")``. Ranks 0 and ``n - 1``
    are answered exactly by the min and max; any other rank gets the sketch's estimate (within
    1% relative error, see ``ddsketch_quantile``) clamped into ``[min, max]``. So every quantile
    of a single value is that value, and no quantile lies outside the data's range; clamping
    only moves an estimate towards the exact value, so the 1% guarantee holds as before.
    """

    kind = 7
    _decoder = msgspec.msgpack.Decoder(_QuantileWire)
    _OLD_HEADER = bytes((FORMAT_VERSION, kind, 0x95))  # a bare sketch: msgpack 5-array

    def __init__(self, name: str, q: float) -> None:
        super().__init__(name)
        self.q = q

    def initial(self) -> _QuantileState:
        """The empty sketch, no min or max."""
        return (ddsketch_empty(), None, None)

    def add(self, state: _QuantileState, value: float) -> _QuantileState:
        """``state`` with ``float(value)`` in its bin and in the min and max."""
        sketch = ddsketch_merge(state[0], ddsketch_from_values(np.array([float(value)])))
        return (sketch, _MIN.add(state[1], value), _MAX.add(state[2], value))

    def reduce_groups(self, codes: _Codes, n_groups: int, values: _Values) -> list[_QuantileState]:
        """Per-group sketches (one sort over (group, sign, bin) keys), mins and maxes."""
        x, checked = _checked_column(codes, n_groups, values)
        lows, highs = _grouped_extrema(x, checked, n_groups, np.minimum, np.maximum)
        return list(zip(ddsketch_grouped(x, checked, n_groups), lows, highs, strict=True))

    def merge(self, a: _QuantileState, b: _QuantileState) -> _QuantileState:
        """Bin counts add (collapsing the lowest bins past the span cap); min and max as such."""
        return (ddsketch_merge(a[0], b[0]), _MIN.merge(a[1], b[1]), _MAX.merge(a[2], b[2]))

    def result(self, state: _QuantileState) -> float | None:
        """The quantile (see the class docstring); None when empty."""
        sketch, low, high = state
        estimate = ddsketch_quantile(sketch, self.q)
        if estimate is None or low is None or high is None or low != low or high != high:
            return estimate  # NaN (never fed by the engine) has no rank: the sketch skips it
        n = ddsketch_count(sketch)
        rank = math.floor(self.q * (n - 1))
        return low if rank == 0 else high if rank == n - 1 else min(max(estimate, low), high)

    def loads(self, data: bytes) -> _QuantileState:
        """As for every aggregator; a bare sketch written by an older build is refused."""
        if isinstance(data, bytes | bytearray | memoryview) and data[:3] == self._OLD_HEADER:
            raise self._corrupt("a sketch without min and max from an older build; rebuild it")
        return super().loads(data)

    def _to_wire(self, state: _QuantileState) -> _QuantileWire:
        sketch, low, high = state
        pos, neg = sketch.pos_counts.tolist(), sketch.neg_counts.tolist()
        return (low, high, sketch.zero_count, sketch.pos_offset, pos, sketch.neg_offset, neg)

    def _from_wire(self, payload: _QuantileWire) -> _QuantileState:
        sketch = ddsketch_from_lists(*payload[2:])
        if sketch is None:
            raise self._corrupt(f"not a sketch of <= {DDSKETCH_MAX_BINS} bins per sign in bounds")
        low, high = _MIN._from_wire(payload[0]), _MAX._from_wire(payload[1])
        if ddsketch_count(sketch) == 0:  # NaN, which the sketch skips, sets min and max
            fits = low is high is None or (low != low and high != high)
        else:
            fits = low is not None and high is not None and not low > high
        if not fits:
            raise self._corrupt(f"min {low} and max {high} do not fit the sketch")
        return (sketch, low, high)


# --- registry ------------------------------------------------------------------------------------


_SUM, _MIN, _MAX = _Sum("sum"), _Min("min"), _Max("max")

AGGREGATORS: dict[str, Aggregator] = {
    "count": _Count("count", needs_field=False, numeric=False),
    "sum": _SUM,
    "avg": _Avg("avg"),
    "min": _MIN,
    "max": _MAX,
    "distinct": _Distinct(DEFAULT_DISTINCT_THRESHOLD),
    "p50": _Quantile("p50", 0.50),
    "p90": _Quantile("p90", 0.90),
    "p95": _Quantile("p95", 0.95),
    "p99": _Quantile("p99", 0.99),
}
"""Every aggregator by its config name; ``distinct`` uses the default threshold."""


def get_aggregator(name: str) -> Aggregator:
    """The aggregator called ``name``; ``KeyError`` listing the known names otherwise."""
    try:
        return AGGREGATORS[name]
    except KeyError:
        known = ", ".join(AGGREGATORS)
        raise KeyError(f"unknown aggregator {name!r}; expected one of: {known}") from None
