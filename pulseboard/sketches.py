"""Mergeable building blocks for aggregate states: stable hashes, HyperLogLog, DDSketch, exact sums.

Everything here is pure, vectorised with numpy where it matters, and deterministic: the same
input gives bit-identical output in any process, so states built by different processors,
batches or machines can be merged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

_U64 = npt.NDArray[np.uint64]
_I64 = npt.NDArray[np.int64]
_U8 = npt.NDArray[np.uint8]
_F64 = npt.NDArray[np.float64]

# --- Stable 64-bit hashing -----------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S27, _S30, _S31 = np.uint64(27), np.uint64(30), np.uint64(31)

_TAG_STR, _TAG_NUMBER, _TAG_BOOL = 1, 2, 3  # value kinds, mixed into the hash

# Below 2**53 every integer is a float too, so integers print as digits there and equal floats
# print the same way; beyond it a float prints as its repr, which never looks like an integer.
_EXACT_INT = 2**53

# A batch is hashed as one fixed-width unicode array; past this width, rows are split into
# classes of similar length so that one long string cannot blow up the whole array.
_SINGLE_WIDTH_MAX = 64


def _fmix64(x: _U64) -> _U64:
    """splitmix64's finaliser, in place on ``x`` (a bijection of uint64 that maps 0 to 0)."""
    tmp = np.empty_like(x)
    np.right_shift(x, _S30, out=tmp)
    x ^= tmp
    x *= _MIX1
    np.right_shift(x, _S27, out=tmp)
    x ^= tmp
    x *= _MIX2
    np.right_shift(x, _S31, out=tmp)
    x ^= tmp
    return x


def _position_keys(n_words: int) -> _U64:
    # Odd multipliers, one per word position, so that equal words at different positions differ.
    return _fmix64(np.arange(1, n_words + 1, dtype=np.uint64) * _GOLDEN) | np.uint64(1)


def _hash_fixed_width(texts: Sequence[str], lens: _I64, tags: _U64) -> _U64:
    """Hash strings of similar length through one '<U' array viewed as little-endian words.

    Each pair of code points forms one uint64 word; the hash is the finalised sum over word
    positions of ``fmix(word * key[position])``. All-zero padding words contribute
    ``fmix(0) = 0``, so the result does not depend on the array width, i.e. on the batch.
    The length (which the array cannot keep for trailing NULs) and the kind tag are mixed in last.
    """
    width = max(2, int(lens.max()))
    width += width & 1
    arr = np.array(texts, dtype=f"<U{width}")
    words = arr.view("<u8").reshape(len(texts), width // 2).T.astype(np.uint64, order="C")
    words *= _position_keys(width // 2)[:, None]
    _fmix64(words)
    acc: _U64 = np.add.reduce(words, axis=0, dtype=np.uint64)
    acc += (lens.astype(np.uint64) * np.uint64(8) + tags) * _GOLDEN
    return _fmix64(acc)


def _hash_texts(texts: Sequence[str], tags: _U64) -> _U64:
    n = len(texts)
    out = np.empty(n, dtype=np.uint64)
    if n == 0:
        return out
    lens = np.fromiter(map(len, texts), dtype=np.int64, count=n)
    if int(lens.max()) <= _SINGLE_WIDTH_MAX:
        return _hash_fixed_width(texts, lens, tags)
    # Group rows by the power of two above their length: each class's array is at most twice
    # as wide as its shortest member needs, so memory stays within ~2x the text size.
    _, length_class = np.frexp(np.maximum(lens, _SINGLE_WIDTH_MAX).astype(np.float64))
    for cls in np.unique(length_class).tolist():
        rows = np.flatnonzero(length_class == cls)
        subset = [texts[i] for i in rows.tolist()]
        out[rows] = _hash_fixed_width(subset, lens[rows], tags[rows])
    return out


def _number_text(value: int | float) -> str:
    # Equal numbers get equal text whatever their Python type (1 == 1.0, 2**60 == 2.0**60).
    if isinstance(value, int):
        if -_EXACT_INT <= value <= _EXACT_INT:
            return str(value)
        try:
            as_float = float(value)
        except OverflowError:
            return str(value)
        return repr(as_float) if as_float == value else str(value)
    if value.is_integer() and -_EXACT_INT <= value <= _EXACT_INT:
        return str(int(value))
    return repr(value)  # also 'nan', 'inf', '-inf'


def _canonical(value: Any) -> tuple[int, str]:
    if isinstance(value, str):
        return _TAG_STR, value
    if isinstance(value, bool | np.bool_):
        return _TAG_BOOL, "true" if value else "false"
    if isinstance(value, int | np.integer):
        return _TAG_NUMBER, _number_text(int(value))
    if isinstance(value, float | np.floating):
        return _TAG_NUMBER, _number_text(float(value))
    raise TypeError(
        f"stable_hash64: cannot hash a {type(value).__name__} ({value!r}); "
        "expected str, int, float or bool"
    )


def _hash_small_ints(values: Sequence[Any] | npt.NDArray[Any]) -> _U64 | None:
    """Fast path for integers within +-2**53 (their canonical text is numpy's own formatting)."""
    arr = np.asarray(values)  # Python ints beyond int64 make an object array: not this path
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        return None
    if arr.size and (int(arr.min()) < -_EXACT_INT or int(arr.max()) > _EXACT_INT):
        return None
    texts = arr.astype("<U21")
    tags = np.full(arr.size, _TAG_NUMBER, dtype=np.uint64)
    return _hash_texts(texts.tolist(), tags)


def stable_hash64(values: Sequence[Any] | npt.NDArray[Any]) -> _U64:
    """Hash each value to a uint64 that is the same in every process, machine and Python run.

    Values may be ``str``, ``int``, ``float`` or ``bool`` (numpy scalars of those kinds too).
    A value is hashed by its kind and canonical text: strings, booleans and numbers are three
    kinds, so ``1`` and ``"1"`` and ``True`` all differ; ``int`` and ``float`` are one kind
    compared by value, so ``1`` and ``1.0`` hash alike (as ``1 == 1.0`` in Python), and
    ``-0.0`` hashes like ``0``. Empty strings and any Unicode (including lone surrogates) are
    fine. Raises ``TypeError`` for other types. An empty input gives an empty array.

    Strings and integers are the fast path (about 100-150 ns each); floats and mixed
    lists pay a Python-level conversion per value.
    """
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "iu" and (fast := _hash_small_ints(values)) is not None:
            return fast
        values = values.ravel().tolist()
    kinds = set(map(type, values))
    if kinds == {str}:
        return _hash_texts(values, np.full(len(values), _TAG_STR, dtype=np.uint64))
    if kinds == {int} and (fast := _hash_small_ints(values)) is not None:
        return fast
    pairs = [_canonical(v) for v in values]
    texts = [text for _, text in pairs]
    tag_arr = np.fromiter((tag for tag, _ in pairs), dtype=np.uint64, count=len(pairs))
    return _hash_texts(texts, tag_arr)


# --- HyperLogLog ---------------------------------------------------------------------------------

HLL_PRECISION = 14
"""Index bits: the sketch has ``2**14`` one-byte registers (standard error about 0.81%)."""
HLL_REGISTERS = 1 << HLL_PRECISION
"""Number of registers (16384), i.e. the length of every register array."""
HLL_MAX_RANK = 64 - HLL_PRECISION + 1
"""Largest register value: the 50 hash bits below the index are all zero."""

_HLL_TAIL_MASK = np.uint64((1 << (64 - HLL_PRECISION)) - 1)
_HLL_ALPHA_INF = 1.0 / (2.0 * math.log(2.0))


def hll_registers(hashes: npt.NDArray[np.uint64]) -> _U8:
    """Build HyperLogLog registers (uint8, length ``HLL_REGISTERS``) from uint64 hashes.

    The register index is the top ``HLL_PRECISION`` bits; the value is the number of leading
    zeros of the remaining 50 bits plus one (``HLL_MAX_RANK`` when they are all zero). Each
    register keeps its maximum, so duplicates change nothing. No hashes gives all zeros.
    """
    hashes = np.asarray(hashes, dtype=np.uint64).ravel()
    registers = np.zeros(HLL_REGISTERS, dtype=np.uint8)
    if hashes.size == 0:
        return registers
    index = (hashes >> np.uint64(64 - HLL_PRECISION)).astype(np.intp)
    # The tail has 50 bits, so it converts to float64 exactly and frexp's exponent is its
    # bit length (0 for a zero tail).
    _, bit_length = np.frexp((hashes & _HLL_TAIL_MASK).astype(np.float64))
    rank = (HLL_MAX_RANK - bit_length).astype(np.uint8)
    np.maximum.at(registers, index, rank)
    return registers


def hll_merge(a: _U8, b: _U8) -> _U8:
    """The registers of the union of two sketches: the elementwise maximum, as a new array."""
    return np.maximum(a, b)


def _hll_sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z, previous = 1.0, x, -1.0
    while z != previous:
        x *= x
        previous, z = z, z + x * y
        y += y
    return z


def _hll_tau(x: float) -> float:
    if x in (0.0, 1.0):
        return 0.0
    y, z, previous = 1.0, 1.0 - x, -1.0
    while z != previous:
        x = math.sqrt(x)
        y *= 0.5
        previous, z = z, z - (1.0 - x) ** 2 * y
    return z / 3.0


def hll_estimate(registers: _U8) -> float:
    """Estimated number of distinct hashes behind ``registers`` (0.0 for empty registers).

    Uses Ertl's improved raw estimator ("New cardinality estimation algorithms for
    HyperLogLog sketches", 2017), which needs no empirical bias tables: below about
    ``2.5 * 2**14`` it behaves like linear counting on the empty registers, above it like
    the classic harmonic-mean estimator, and it stays unbiased in between and up to 2**64.
    Relative standard error is about ``1.04 / sqrt(2**14)``, i.e. 0.81%.
    """
    m = HLL_REGISTERS
    q = 64 - HLL_PRECISION
    histogram = np.bincount(np.asarray(registers, dtype=np.uint8), minlength=q + 2)
    if histogram.size > q + 2 or registers.size != m:
        raise ValueError(f"not HyperLogLog registers: expected {m} values in 0..{q + 1}")
    counts = histogram.tolist()
    z = m * _hll_tau(1.0 - counts[q + 1] / m)
    for k in range(q, 0, -1):
        z = 0.5 * (z + counts[k])
    z += m * _hll_sigma(counts[0] / m)
    return _HLL_ALPHA_INF * m * m / z


# --- DDSketch (relative-error quantiles) ---------------------------------------------------------

DDSKETCH_ALPHA = 0.01
"""Relative accuracy: a returned quantile is within 1% of the exact one (see ddsketch_quantile)."""
DDSKETCH_GAMMA = (1.0 + DDSKETCH_ALPHA) / (1.0 - DDSKETCH_ALPHA)
"""Ratio between consecutive bin bounds, (1 + alpha) / (1 - alpha)."""
DDSKETCH_MAX_BINS = 2048
"""Most bins per sign; past that span the bins at the low end of the data are collapsed."""
DDSKETCH_KEY_LIMIT = 1 << 17
"""Every key of a finite double lies strictly within +-2**17 (they stay below 38000)."""

_LN_GAMMA = math.log(DDSKETCH_GAMMA)
# The value reported for bin k, 2 * gamma**k / (gamma + 1), as exp(k * ln(gamma) + this).
_LN_BIN_SCALE = math.log(2.0 / (DDSKETCH_GAMMA + 1.0))
_FLOAT_MAX = float(np.finfo(np.float64).max)


class DDSketchState(NamedTuple):
    """A DDSketch: an exact count of zeros plus dense logarithmic bins for each sign.

    A magnitude ``x > 0`` falls in bin ``k = ceil(log(x) / log(gamma))``, i.e. in
    ``(gamma**(k-1), gamma**k]``. ``pos_counts[i]`` counts positive values in bin
    ``pos_offset + i``; ``neg_*`` likewise for the magnitudes of negative values. Each counts
    array is empty (offset 0) or has nonzero first and last entries and at most
    ``DDSKETCH_MAX_BINS`` entries, so a state has one representation. Arrays are read-only.
    """

    zero_count: int
    pos_offset: int
    pos_counts: _I64
    neg_offset: int
    neg_counts: _I64


def readonly(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``arr``, marked read-only (states share arrays, so none may change)."""
    arr.flags.writeable = False
    return arr


_NO_BINS: _I64 = readonly(np.zeros(0, dtype=np.int64))


def ddsketch_empty() -> DDSketchState:
    """The sketch of no values."""
    return DDSketchState(0, 0, _NO_BINS, 0, _NO_BINS)


def ddsketch_keys(magnitudes: _F64) -> _I64:
    """Bin keys of positive magnitudes (``+inf`` is clamped to the largest float).

    Always goes through the same vectorised ``np.log`` on a contiguous array, so that adding
    one value and adding a batch put a value in the same bin.
    """
    clamped = np.minimum(np.ascontiguousarray(magnitudes, dtype=np.float64), _FLOAT_MAX)
    return np.ceil(np.log(clamped) / _LN_GAMMA).astype(np.int64)


def _dense_side(keys: _I64, counts: _I64, positive: bool) -> tuple[int, _I64]:
    """A capped dense side from sorted unique keys with positive counts."""
    if keys.size == 0:
        return 0, _NO_BINS
    lo, hi = int(keys[0]), int(keys[-1])
    folded = 0
    # Past the cap the lowest values' bins (smallest keys if positive, largest magnitudes if
    # negative) fold into the last kept bin, while still sparse. The cut depends only on the
    # extreme key, which merges can only extend, so collapsing stays associative and commutative.
    if hi - lo >= DDSKETCH_MAX_BINS:
        if positive:
            lo = hi - DDSKETCH_MAX_BINS + 1
            cut = int(np.searchsorted(keys, lo))
            folded, keys, counts = int(counts[:cut].sum()), keys[cut:], counts[cut:]
        else:
            hi = lo + DDSKETCH_MAX_BINS - 1
            cut = int(np.searchsorted(keys, hi, side="right"))
            folded, keys, counts = int(counts[cut:].sum()), keys[:cut], counts[:cut]
    dense = np.zeros(hi - lo + 1, dtype=np.int64)
    dense[keys - lo] = counts
    dense[0 if positive else -1] += folded
    return lo, readonly(dense)


_KEY_BITS = 18


def ddsketch_grouped(values: _F64, codes: _I64, n_groups: int) -> list[DDSketchState]:
    """``ddsketch_from_values`` of each group (codes in ``[0, n_groups)``, aligned with values).

    One ``np.unique`` over a combined (group, sign, bin) key does the work of every group.
    """
    x = np.asarray(values, dtype=np.float64)
    zeros = np.bincount(codes[x == 0.0], minlength=n_groups).tolist()
    pos, neg = x > 0.0, x < 0.0
    combined = np.concatenate(
        (
            ((codes[neg] * 2) << _KEY_BITS) | (ddsketch_keys(-x[neg]) + DDSKETCH_KEY_LIMIT),
            ((codes[pos] * 2 + 1) << _KEY_BITS) | (ddsketch_keys(x[pos]) + DDSKETCH_KEY_LIMIT),
        )
    )
    unique, counts = np.unique(combined, return_counts=True)
    keys = (unique & ((1 << _KEY_BITS) - 1)) - DDSKETCH_KEY_LIMIT
    counts = counts.astype(np.int64)
    # bounds[2g]..bounds[2g+1] are group g's negative bins, then up to bounds[2g+2] its positive.
    bounds = np.searchsorted(unique >> _KEY_BITS, np.arange(2 * n_groups + 1)).tolist()
    out: list[DDSketchState] = []
    for g in range(n_groups):
        n0, n1, p1 = bounds[2 * g], bounds[2 * g + 1], bounds[2 * g + 2]
        pos_side = _dense_side(keys[n1:p1], counts[n1:p1], positive=True)
        neg_side = _dense_side(keys[n0:n1], counts[n0:n1], positive=False)
        out.append(DDSketchState(zeros[g], *pos_side, *neg_side))
    return out


def ddsketch_from_values(values: npt.ArrayLike) -> DDSketchState:
    """The sketch of ``values`` (float64-convertible; NaN is ignored, ``±inf`` clamps to ±max).

    Zeros (``0.0`` and ``-0.0``) are counted exactly; an empty input gives the empty sketch.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    return ddsketch_grouped(x, np.zeros(x.size, dtype=np.int64), 1)[0]


def _merge_side(oa: int, ca: _I64, ob: int, cb: _I64, positive: bool) -> tuple[int, _I64]:
    if cb.size == 0:
        return oa, ca
    if ca.size == 0:
        return ob, cb
    lo = min(oa, ob)
    merged = np.zeros(max(oa + ca.size, ob + cb.size) - lo, dtype=np.int64)
    merged[oa - lo : oa - lo + ca.size] += ca
    merged[ob - lo : ob - lo + cb.size] += cb
    keys = np.flatnonzero(merged)
    return _dense_side(keys + lo, merged[keys], positive)


def ddsketch_merge(a: DDSketchState, b: DDSketchState) -> DDSketchState:
    """The sketch of both inputs' values: bin counts add. Exactly associative and commutative."""
    pos = _merge_side(a.pos_offset, a.pos_counts, b.pos_offset, b.pos_counts, positive=True)
    neg = _merge_side(a.neg_offset, a.neg_counts, b.neg_offset, b.neg_counts, positive=False)
    return DDSketchState(a.zero_count + b.zero_count, *pos, *neg)


_MAX_WIRE_COUNT = 1 << 48  # per bin; keeps every total far inside int64


def _side_from_lists(offset: int, counts: list[int]) -> tuple[int, _I64] | None:
    if not counts:
        return (0, _NO_BINS) if offset == 0 else None
    n = len(counts)
    fits = n <= DDSKETCH_MAX_BINS and -DDSKETCH_KEY_LIMIT < offset <= DDSKETCH_KEY_LIMIT - n
    if not fits or min(counts) < 0 or max(counts) > _MAX_WIRE_COUNT or not counts[0] * counts[-1]:
        return None
    return offset, readonly(np.array(counts, dtype=np.int64))


def ddsketch_from_lists(
    zero_count: int, pos_offset: int, pos_counts: list[int], neg_offset: int, neg_counts: list[int]
) -> DDSketchState | None:
    """The state with these fields (counts as lists), or None if they break its invariants."""
    pos, neg = _side_from_lists(pos_offset, pos_counts), _side_from_lists(neg_offset, neg_counts)
    if not 0 <= zero_count <= _MAX_WIRE_COUNT or pos is None or neg is None:
        return None
    return DDSketchState(zero_count, *pos, *neg)


def ddsketch_count(state: DDSketchState) -> int:
    """Number of values in the sketch."""
    return state.zero_count + int(state.pos_counts.sum()) + int(state.neg_counts.sum())


def _bin_value(key: int) -> float:
    try:
        return math.exp(key * _LN_GAMMA + _LN_BIN_SCALE)
    except OverflowError:
        return _FLOAT_MAX


def ddsketch_quantile(state: DDSketchState, q: float) -> float | None:
    """The ``q``-quantile (``0 <= q <= 1``) of the sketched values, or None when empty.

    Rank definition: the value at 0-based rank ``floor(q * (n - 1))`` of the sorted values,
    i.e. ``numpy.quantile(values, q, method="lower")``. The answer is within relative error
    ``DDSKETCH_ALPHA`` (1%) of that exact value for magnitudes in the normal float range
    (zero exactly), provided neither side's data spans more than ``gamma**2048`` (about
    6e17); beyond that the lowest values' bins are collapsed and only the quantiles above the
    collapsed region keep the guarantee.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q!r}")
    # In sorted order: negatives (largest magnitude first), zeros, positives.
    n_neg = state.neg_counts.size
    counts = np.concatenate((state.neg_counts[::-1], [state.zero_count], state.pos_counts))
    cumulative = np.cumsum(counts)
    if cumulative[-1] == 0:
        return None
    rank = math.floor(q * (int(cumulative[-1]) - 1))
    i = int(np.searchsorted(cumulative, rank, side="right"))
    if i < n_neg:
        return -_bin_value(state.neg_offset + n_neg - 1 - i)
    return 0.0 if i == n_neg else _bin_value(state.pos_offset + i - n_neg - 1)


# --- Exact sums ----------------------------------------------------------------------------------

# A nonzero double is m * 2**(e - 53) with an integer |m| < 2**53 and frexp exponent
# e >= -1073, so sum * 2**(1073 + 53) is an integer: the exact sum without any rounding.
_EXP_OFFSET = 1073
PARTIALS_SCALE_BITS = _EXP_OFFSET + 53
"""``partials_scaled(p)`` is the exact sum of ``p`` times ``2**PARTIALS_SCALE_BITS``."""
# Exponents are grouped in blocks of 2**_BLOCK_BITS binades; within a block a mantissa shifted
# by its binade is an integer below 2**85, cut into four 22-bit parts. bincount adds each part
# in float64, which stays exact while a sum is below 2**53, i.e. for up to 2**31 values.
_BLOCK_BITS = 5
_PART_BITS = 22
_CHUNK = 1 << 30
_SMALL = 16
# Each partial takes at least 53 bits off the remainder, and a finite sum spans fewer than
# 2200 bits, so far fewer partials than this ever occur.
_MAX_PARTIALS = 64


def _nonfinite_sum(values: Sequence[float]) -> float:
    """IEEE semantics for sums with inf or nan: nan if any nan or both infinities."""
    try:
        return math.fsum(v for v in values if not math.isfinite(v))
    except ValueError:  # inf + -inf
        return math.nan


def _add_scaled_sums(x: _F64, codes: _I64 | None, n_groups: int, totals: list[int]) -> None:
    """Add ``sum(x[codes == g]) * 2**PARTIALS_SCALE_BITS`` to ``totals[g]`` exactly (x finite)."""
    mantissa, exponent = np.frexp(x)
    nonzero = mantissa != 0.0
    if not nonzero.any():
        return
    low = int(exponent[nonzero].min())
    offset = np.where(nonzero, exponent - low, 0)  # zeros' exponent 0 must not widen the range
    block = offset >> _BLOCK_BITS
    n_blocks = int(block.max()) + 1
    magnitude = np.ldexp(np.abs(mantissa), (offset & ((1 << _BLOCK_BITS) - 1)) + 53)
    cell = block * 2 + (mantissa < 0.0)  # the sign is part of the cell: parts stay >= 0
    if codes is not None:
        cell += codes * (2 * n_blocks)
    n_cells = n_groups * 2 * n_blocks
    cells: list[int] | None = None
    if n_cells > max(4 * x.size, 1 << 16):
        unique, cell = np.unique(cell, return_inverse=True)
        cells, n_cells = unique.tolist(), unique.size
    part_sums: list[list[float]] = []
    total_weight = np.zeros(n_cells)
    for k in (3, 2, 1, 0):
        scale = 2.0 ** (_PART_BITS * k)
        part = np.floor(magnitude / scale)
        magnitude = magnitude - part * scale  # exact: the low bits of an exact integer
        sums = np.bincount(cell, weights=part, minlength=n_cells)
        total_weight += sums
        part_sums.append(sums.tolist())
    p3, p2, p1, p0 = part_sums
    for i in np.flatnonzero(total_weight).tolist():
        group_block, negative = divmod(i if cells is None else cells[i], 2)
        group, blk = divmod(group_block, n_blocks)
        value = (int(p3[i]) << 66) + (int(p2[i]) << 44) + (int(p1[i]) << 22) + int(p0[i])
        value <<= low + _EXP_OFFSET + (blk << _BLOCK_BITS)
        totals[group] += -value if negative else value


def _partials_from_scaled(total: int) -> tuple[float, ...]:
    partials: list[float] = []
    denominator = 1 << PARTIALS_SCALE_BITS
    while total:
        try:
            head = total / denominator  # int / int is correctly rounded (half to even)
        except OverflowError:
            return (math.inf if total > 0 else -math.inf,)
        partials.append(head)
        numerator, power = head.as_integer_ratio()
        total -= numerator << (PARTIALS_SCALE_BITS - power.bit_length() + 1)
        if len(partials) > _MAX_PARTIALS:  # pragma: no cover - impossible, see _MAX_PARTIALS
            raise AssertionError("exact_partials did not converge")
    return tuple(partials)


def partials_scaled(partials: Sequence[float]) -> int:
    """The exact sum of finite ``partials`` times ``2**PARTIALS_SCALE_BITS``, an integer."""
    total = 0
    for p in partials:
        numerator, power = p.as_integer_ratio()
        total += numerator << (PARTIALS_SCALE_BITS - power.bit_length() + 1)
    return total


def _partials_small(values: list[float]) -> tuple[float, ...]:
    # math.fsum is exact internally and correctly rounded, so each pass yields the next
    # partial of the canonical sequence; for a few values that beats the integer route.
    if not all(map(math.isfinite, values)):
        return (_nonfinite_sum(values),)
    partials: list[float] = []
    try:
        while (head := math.fsum(values + [-p for p in partials])) != 0.0:
            partials.append(head)
            if len(partials) > _MAX_PARTIALS:  # pragma: no cover - impossible, see above
                raise AssertionError("exact_partials did not converge")
    except OverflowError:  # an intermediate overflowed, though the exact sum may be finite
        return exact_partials_grouped(np.asarray(values), np.zeros(len(values), np.int64), 1)[0]
    return tuple(partials)


def exact_partials(values: Sequence[float] | npt.NDArray[np.float64]) -> tuple[float, ...]:
    """Non-overlapping floats whose exact sum is the exact sum of ``values``.

    The result is canonical: ``p[0]`` is the correctly rounded (half-to-even) sum, ``p[1]``
    the correctly rounded remainder, and so on until the remainder is zero, so equal exact
    sums give identical tuples. Hence ``exact_partials(a + b)`` merges two states exactly
    associatively and commutatively. An exactly zero sum (including no values) is ``()``.
    This terminates: each partial takes at least 53 bits off a remainder that is a multiple
    of 2**-1126 below 2**1055 (2**31 values under 2**1024), so there are at most 42 partials.

    Non-finite values do not occur in validated events; if they do, the result follows float
    addition: ``(nan,)`` if any nan or both infinities, else ``(inf,)`` or ``(-inf,)``, which
    then absorbs every later merge. An exact sum beyond the float range saturates the same way.
    """
    if not isinstance(values, np.ndarray) and len(values) <= _SMALL:
        return _partials_small([float(v) for v in values])
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size <= _SMALL:
        return _partials_small(x.tolist())
    return exact_partials_grouped(x, np.zeros(x.size, dtype=np.int64), 1)[0]


def exact_partials_grouped(
    values: npt.NDArray[np.float64], codes: npt.NDArray[np.int64], n_groups: int
) -> list[tuple[float, ...]]:
    """``exact_partials`` of each group: entry ``g`` sums the values whose code is ``g``.

    ``codes`` must lie in ``[0, n_groups)`` and align with ``values``; a group without values
    gets ``()``. Vectorised: a handful of numpy passes plus a little integer arithmetic per
    group and per block of 32 binades its values span.
    """
    all_x = np.ascontiguousarray(values, dtype=np.float64).ravel()
    all_codes = np.asarray(codes, dtype=np.int64).ravel()
    finite = np.isfinite(all_x)
    all_finite = bool(finite.all())
    x, codes = (all_x, all_codes) if all_finite else (all_x[finite], all_codes[finite])
    totals = [0] * n_groups
    for start in range(0, x.size, _CHUNK):
        chunk_codes = None if n_groups == 1 else codes[start : start + _CHUNK]
        _add_scaled_sums(x[start : start + _CHUNK], chunk_codes, n_groups, totals)
    out = [_partials_from_scaled(t) for t in totals]
    if not all_finite:
        for g in np.unique(all_codes[~finite]).tolist():
            out[g] = (_nonfinite_sum(all_x[all_codes == g].tolist()),)
    return out
