"""Stable hashing, HyperLogLog, DDSketch and exact partial sums (pulseboard.sketches)."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pulseboard.sketches import (
    DDSKETCH_ALPHA,
    DDSKETCH_GAMMA,
    DDSKETCH_KEY_LIMIT,
    DDSKETCH_MAX_BINS,
    HLL_MAX_RANK,
    HLL_REGISTERS,
    DDSketchState,
    ddsketch_count,
    ddsketch_empty,
    ddsketch_from_lists,
    ddsketch_from_values,
    ddsketch_merge,
    ddsketch_quantile,
    exact_partials,
    exact_partials_grouped,
    hll_estimate,
    hll_merge,
    hll_registers,
    partials_scaled,
    stable_hash64,
)

SETTINGS = settings(max_examples=150, deadline=None)
REL_TOL = DDSKETCH_ALPHA * (1 + 1e-9)  # the bound, plus room for rounding at bin edges

# ---------------------------------------------------------------------------------------------
# stable_hash64
# ---------------------------------------------------------------------------------------------

# Pinned so that a change of algorithm (which would orphan every stored distinct state) fails.
GOLDEN = [
    ("", 16294208416658607535),
    ("a", 15806077188435238497),
    ("user-42", 11707880981678514289),
    ("é日本\U0001f600", 16950217709278248244),
    (1, 5869971390869050403),
    (-7, 2429766889798045820),
    (1.5, 15803350896205242480),
    (True, 8903658304283575749),
    (False, 409995925677510099),
    (2**70, 14714404009166167507),
]


def test_hash_golden_values() -> None:
    values = [v for v, _ in GOLDEN]
    hashes = stable_hash64(values)
    assert hashes.dtype == np.uint64
    assert hashes.tolist() == [h for _, h in GOLDEN]


def test_hash_is_the_same_in_another_process_with_another_hash_seed() -> None:
    code = (
        "from pulseboard.sketches import stable_hash64;"
        f"print(stable_hash64({[v for v, _ in GOLDEN]!r}).tolist())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str([h for _, h in GOLDEN])


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, "1"),
        (True, 1),
        (True, "true"),
        (False, 0),
        ("a", "a\x00"),
        ("a\x00b", "ab\x00"),
        ("ab\x00\x00cd", "abcd\x00\x00"),
        ("", "\x00"),
        ("ab", "ba"),
        (1.5, "1.5"),
        (2**53 + 1, float(2**53)),
        ("abcd" * 30, "abcd" * 30 + "e"),
    ],
)
def test_hash_distinguishes(a: object, b: object) -> None:
    ha, hb = stable_hash64([a, b]).tolist()
    assert ha != hb


@pytest.mark.parametrize(
    ("a", "b"),
    [(1, 1.0), (0, -0.0), (2**60, 2.0**60), (np.int64(5), 5), (np.float32(0.5), 0.5)],
)
def test_hash_equal_numbers_hash_alike(a: object, b: object) -> None:
    ha, hb = stable_hash64([a, b]).tolist()
    assert ha == hb


def test_hash_does_not_depend_on_the_batch() -> None:
    # Short, medium, long and very long strings land in different width classes.
    values = ["x", "", "é" * 40, "y" * 65, "z" * 700, "user-1", "\U0001f600" * 3, "q" * 5000]
    together = stable_hash64(values).tolist()
    alone = [int(stable_hash64([v])[0]) for v in values]
    assert together == alone


def test_hash_array_inputs_match_lists() -> None:
    strings = ["a", "bb", "", "ccc"]
    assert stable_hash64(np.array(strings)).tolist() == stable_hash64(strings).tolist()
    ints = [0, -3, 2**40, 7]
    assert stable_hash64(np.array(ints)).tolist() == stable_hash64(ints).tolist()
    mixed = ["a", 1, 2.5, True]
    as_objects = np.array(mixed, dtype=object)
    assert stable_hash64(as_objects).tolist() == stable_hash64(mixed).tolist()
    big = np.array([2**64 - 1, 2**53 + 1, 5], dtype=np.uint64)  # beyond int64 and 2**53
    assert stable_hash64(big).tolist() == stable_hash64([2**64 - 1, 2**53 + 1, 5]).tolist()
    assert (
        stable_hash64(np.array([[1, 2], [3, 4]])).tolist() == stable_hash64([1, 2, 3, 4]).tolist()
    )
    assert stable_hash64([]).size == 0


def test_hash_handles_huge_and_odd_numbers() -> None:
    hashes = stable_hash64([10**400, -(10**400), math.inf, -math.inf, math.nan, 1e300]).tolist()
    assert len(set(hashes)) == 6


@pytest.mark.parametrize("bad", [None, b"bytes", [1], {"a": 1}])
def test_hash_rejects_other_types(bad: object) -> None:
    with pytest.raises(TypeError, match="expected str, int, float or bool"):
        stable_hash64(["ok", bad])


def test_hash_has_no_collisions_and_balanced_bits() -> None:
    values = [f"user-{i}" for i in range(200_000)]
    hashes = stable_hash64(values)
    assert np.unique(hashes).size == len(values)
    bits = (hashes[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    share = bits.mean(axis=0)
    assert np.all(np.abs(share - 0.5) < 0.01), share


@SETTINGS
@given(
    st.lists(
        st.one_of(st.text(max_size=80), st.integers(), st.floats(), st.booleans()),
        max_size=30,
    )
)
def test_hash_batch_independent_and_equal_iff_equal(values: list[object]) -> None:
    hashes = stable_hash64(values).tolist()
    assert hashes == [int(stable_hash64([v])[0]) for v in values]

    def key(v: object) -> object:
        if isinstance(v, bool):
            return ("b", v)
        if isinstance(v, float) and math.isnan(v):
            return ("nan",)
        return ("s", v) if isinstance(v, str) else ("n", v)

    for i, a in enumerate(values):
        for j, b in enumerate(values):
            assert (hashes[i] == hashes[j]) == (key(a) == key(b))


# ---------------------------------------------------------------------------------------------
# HyperLogLog
# ---------------------------------------------------------------------------------------------


def test_hll_register_index_and_rank() -> None:
    h = [
        (5 << 50) | (1 << 49),  # register 5, first tail bit set: rank 1
        (7 << 50) | 1,  # register 7, 49 leading zeros: rank 50
        9 << 50,  # register 9, zero tail: rank 51
        (9 << 50) | (1 << 47),  # register 9 again, rank 3, lower than 51
    ]
    registers = hll_registers(np.array(h, dtype=np.uint64))
    assert registers.dtype == np.uint8 and registers.size == HLL_REGISTERS
    assert registers[5] == 1 and registers[7] == 50 and registers[9] == HLL_MAX_RANK
    assert int(np.count_nonzero(registers)) == 3


def test_hll_empty_is_zero() -> None:
    assert hll_estimate(hll_registers(np.zeros(0, dtype=np.uint64))) == 0.0


@pytest.mark.parametrize("n", [1_000, 5_000, 30_000, 100_000, 1_000_000, 10_000_000])
def test_hll_within_two_percent(n: int) -> None:
    hashes = np.random.default_rng(n).integers(0, 2**64, size=n, dtype=np.uint64)
    estimate = hll_estimate(hll_registers(hashes))
    assert abs(estimate / n - 1) <= 0.02, estimate


def test_hll_on_stable_hashes_of_sequential_strings() -> None:
    n = 60_000
    estimate = hll_estimate(hll_registers(stable_hash64([f"order-{i}" for i in range(n)])))
    assert abs(estimate / n - 1) <= 0.02, estimate


def test_hll_duplicates_and_merge() -> None:
    rng = np.random.default_rng(7)
    a = rng.integers(0, 2**64, size=20_000, dtype=np.uint64)
    b = rng.integers(0, 2**64, size=20_000, dtype=np.uint64)
    ra, rb = hll_registers(a), hll_registers(b)
    before = ra.copy()
    merged = hll_merge(ra, rb)
    assert np.array_equal(ra, before)
    assert np.array_equal(merged, hll_registers(np.concatenate((a, b))))
    assert np.array_equal(hll_registers(np.concatenate((a, a))), ra)
    assert abs(hll_estimate(merged) / 40_000 - 1) <= 0.02


def test_hll_estimate_rejects_bad_registers() -> None:
    with pytest.raises(ValueError, match="HyperLogLog"):
        hll_estimate(np.full(HLL_REGISTERS, 60, dtype=np.uint8))


# ---------------------------------------------------------------------------------------------
# DDSketch
# ---------------------------------------------------------------------------------------------


def exact_quantile(values: np.ndarray, q: float) -> float:
    ordered = np.sort(values)
    return float(ordered[math.floor(q * (len(ordered) - 1))])


def assert_close(got: float | None, want: float) -> None:
    assert got is not None
    if want == 0.0:
        assert got == 0.0
    else:
        assert abs(got - want) <= REL_TOL * abs(want), (got, want)


QUANTILES = [0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0]


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: rng.lognormal(3.0, 2.0, 50_000),
        lambda rng: rng.uniform(0.0, 1000.0, 50_000),
        lambda rng: rng.normal(0.0, 100.0, 50_000),
        lambda rng: np.round(rng.normal(0.0, 3.0, 20_000)),  # many zeros and repeats
        lambda rng: -rng.pareto(1.5, 20_000),
    ],
    ids=["lognormal", "uniform", "normal", "integers", "negative-pareto"],
)
def test_ddsketch_quantiles_within_one_percent(
    make: Callable[[np.random.Generator], np.ndarray],
) -> None:
    values = make(np.random.default_rng(11))
    sketch = ddsketch_from_values(values)
    assert ddsketch_count(sketch) == len(values)
    for q in QUANTILES:
        assert_close(ddsketch_quantile(sketch, q), exact_quantile(values, q))


def test_ddsketch_rank_definition_is_lower() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0])
    sketch = ddsketch_from_values(values)
    # floor(0.5 * 3) = 1 -> the second smallest value (numpy method="lower"), not 2.5
    assert_close(ddsketch_quantile(sketch, 0.5), 2.0)
    assert_close(ddsketch_quantile(sketch, 0.99), 3.0)
    assert_close(ddsketch_quantile(sketch, 1.0), 4.0)


def test_ddsketch_signs_and_zero() -> None:
    sketch = ddsketch_from_values(np.array([-5.0, -1.0, 0.0, -0.0, 1.0, 5.0]))
    assert sketch.zero_count == 2
    assert_close(ddsketch_quantile(sketch, 0.0), -5.0)
    assert_close(ddsketch_quantile(sketch, 0.2), -1.0)
    assert ddsketch_quantile(sketch, 0.5) == 0.0
    assert_close(ddsketch_quantile(sketch, 1.0), 5.0)


def test_ddsketch_empty_and_bad_q() -> None:
    assert ddsketch_quantile(ddsketch_empty(), 0.5) is None
    assert ddsketch_quantile(ddsketch_from_values(np.array([])), 0.5) is None
    with pytest.raises(ValueError, match="quantile"):
        ddsketch_quantile(ddsketch_from_values(np.array([1.0])), 1.5)


def test_ddsketch_non_finite() -> None:
    sketch = ddsketch_from_values(np.array([1.0, math.nan, math.inf]))
    assert ddsketch_count(sketch) == 2  # nan has no rank and is skipped
    top = ddsketch_quantile(sketch, 1.0)
    assert top is not None and top > 1e307


def test_ddsketch_merge_equals_sketch_of_union_and_keeps_inputs() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 50, 3000), rng.lognormal(0, 3, 2000)
    sa, sb = ddsketch_from_values(a), ddsketch_from_values(b)
    counts_before = sa.pos_counts.copy()
    merged = ddsketch_merge(sa, sb)
    whole = ddsketch_from_values(np.concatenate((a, b)))
    for field in DDSKETCH_FIELDS:
        assert np.array_equal(getattr(merged, field), getattr(whole, field))
    assert np.array_equal(sa.pos_counts, counts_before)
    assert not sa.pos_counts.flags.writeable and not merged.neg_counts.flags.writeable


DDSKETCH_FIELDS = ("pos_offset", "pos_counts", "neg_offset", "neg_counts")


def test_ddsketch_collapses_lowest_bins_and_keeps_upper_quantiles() -> None:
    values = np.geomspace(1e-250, 1e250, 20_001)
    sketch = ddsketch_from_values(np.concatenate((values, -values)))
    assert sketch.pos_counts.size == sketch.neg_counts.size == DDSKETCH_MAX_BINS
    assert sketch.pos_counts[0] > 0 and sketch.neg_counts[-1] > 0  # where the rest was folded
    assert ddsketch_count(sketch) == 40_002
    positives = ddsketch_from_values(values)
    # the kept span gamma**2048 ~ 6e17 reaches down to ~1.7e232, i.e. the top ~3.6% of values
    for q in (0.97, 0.99, 1.0):
        assert_close(ddsketch_quantile(positives, q), exact_quantile(values, q))
    for q in (0.0, 0.5):
        collapsed = ddsketch_quantile(positives, q)
        assert collapsed is not None and 1e232 < collapsed < 2e232  # no guarantee down here
    negatives = ddsketch_from_values(-values)
    assert_close(ddsketch_quantile(negatives, 1.0), -1e-250)  # near zero: kept exactly


@SETTINGS
@given(
    st.lists(st.floats(-1e300, 1e300, allow_nan=False), max_size=40),
    st.lists(st.floats(-1e300, 1e300, allow_nan=False), max_size=40),
    st.lists(st.floats(-1e300, 1e300, allow_nan=False), max_size=40),
)
def test_ddsketch_merge_associative_commutative_with_collapsing(
    a: list[float], b: list[float], c: list[float]
) -> None:
    sa, sb, sc = (ddsketch_from_values(np.array(v, dtype=np.float64)) for v in (a, b, c))
    left = ddsketch_merge(ddsketch_merge(sa, sb), sc)
    right = ddsketch_merge(sa, ddsketch_merge(sc, sb))
    whole = ddsketch_from_values(np.array(a + b + c, dtype=np.float64))
    for state in (right, whole):
        assert state.zero_count == left.zero_count
        for field in DDSKETCH_FIELDS:
            assert np.array_equal(getattr(state, field), getattr(left, field))


def test_ddsketch_bin_edges() -> None:
    edges = DDSKETCH_GAMMA ** np.arange(-50, 50, dtype=np.float64)
    sketch = ddsketch_from_values(edges)
    for q in (0.0, 0.3, 0.7, 1.0):
        assert_close(ddsketch_quantile(sketch, q), exact_quantile(edges, q))


# ---------------------------------------------------------------------------------------------
# exact partials
# ---------------------------------------------------------------------------------------------


def exact(values: list[float]) -> Fraction:
    return sum((Fraction(v) for v in values), Fraction(0))


def assert_canonical(partials: tuple[float, ...], values: list[float]) -> None:
    assert exact(list(partials)) == exact(values)
    if values:
        assert (partials[0] if partials else 0.0) == math.fsum(values)
    for hi, lo in itertools.pairwise(partials):
        assert lo != 0.0 and abs(lo) <= math.ulp(hi) / 2


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300)
money = st.integers(-(10**9), 10**9).map(lambda cents: cents / 100)


@SETTINGS
@given(st.lists(st.one_of(finite, money, st.floats(-1e-300, 1e-300)), max_size=60))
def test_partials_are_exact_and_canonical(values: list[float]) -> None:
    partials = exact_partials(values)
    assert_canonical(partials, values)
    assert exact_partials(values[::-1]) == partials
    assert exact_partials(np.array(values, dtype=np.float64)) == partials
    # the fsum route (few values) and the integer route (many) agree
    grouped = exact_partials_grouped(np.array(values), np.zeros(len(values), np.int64), 1)
    assert grouped == [partials]
    assert partials_scaled(partials) == exact(values) * 2**1126


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(0, 6), st.one_of(finite, money)), max_size=80),
)
def test_partials_grouped_match_per_group(pairs: list[tuple[int, float]]) -> None:
    codes = np.array([c for c, _ in pairs], dtype=np.int64)
    values = np.array([v for _, v in pairs], dtype=np.float64)
    grouped = exact_partials_grouped(values, codes, 7)
    for g in range(7):
        assert grouped[g] == exact_partials([v for c, v in pairs if c == g])


def test_partials_examples() -> None:
    assert exact_partials([]) == ()
    assert exact_partials([0.0, -0.0]) == ()
    assert exact_partials([1.5, -1.5]) == ()
    assert exact_partials([0.1] * 10) == (1.0, 5.551115123125783e-17)
    assert exact_partials([1e308, 1e308, -1e308]) == (1e308,)  # math.fsum would overflow
    assert exact_partials([2.0**1000, 1.0, 2.0**-1000, 5e-324]) == (
        2.0**1000,
        1.0,
        2.0**-1000,
        5e-324,
    )
    many = [0.1] * 1000 + [1e20, -1e20]
    assert_canonical(exact_partials(many), many)


def test_partials_many_groups_sparse_path() -> None:
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 1_000_000, 50).astype(np.int64)
    values = rng.lognormal(0, 30, 50) * rng.choice([-1, 1], 50)
    grouped = exact_partials_grouped(values, codes, 1_000_000)
    for g in set(codes.tolist()):
        assert grouped[g] == exact_partials(values[codes == g].tolist())
    assert sum(1 for p in grouped if p) == len(set(codes.tolist()))


@pytest.mark.parametrize(
    ("values", "want"),
    [
        ([math.inf, 1.0], math.inf),
        ([-math.inf, 1.0] * 20, -math.inf),
        ([math.inf, -math.inf], math.nan),
        ([math.nan, 1.0], math.nan),
        ([1e308] * 2, math.inf),
        ([-1e308] * 40, -math.inf),
    ],
)
def test_partials_non_finite(values: list[float], want: float) -> None:
    (got,) = exact_partials(values)
    assert got == want or (math.isnan(got) and math.isnan(want))
    (merged,) = exact_partials([got, 1.0, -2.0])
    assert merged == want or (math.isnan(merged) and math.isnan(want))


def test_partials_non_finite_in_one_group_only() -> None:
    values = np.array([1.0, math.inf, 2.5, 0.25] * 10)
    codes = np.array([0, 1, 2, 2] * 10, dtype=np.int64)
    assert exact_partials_grouped(values, codes, 4) == [(10.0,), (math.inf,), (27.5,), ()]


def as_lists(state: DDSketchState) -> tuple[int, int, list[int], int, list[int]]:
    pos, neg = state.pos_counts.tolist(), state.neg_counts.tolist()
    return (state.zero_count, state.pos_offset, pos, state.neg_offset, neg)


def test_ddsketch_from_lists_round_trips_and_checks_invariants() -> None:
    values = np.concatenate((np.geomspace(1e-250, 1e250, 5000), [0.0, -1.0, -1e-300, -1e300]))
    for state in (ddsketch_empty(), ddsketch_from_values(values)):
        rebuilt = ddsketch_from_lists(*as_lists(state))
        assert rebuilt is not None and as_lists(rebuilt) == as_lists(state)
        assert not rebuilt.pos_counts.flags.writeable and not rebuilt.neg_counts.flags.writeable
    limit = DDSKETCH_KEY_LIMIT
    for bad in (
        (-1, 0, [], 0, []),  # negative zero count
        (0, 3, [], 0, []),  # an empty side has offset 0
        (0, 0, [0, 2], 0, []),  # first and last counts are nonzero
        (0, 0, [2, -1, 2], 0, []),
        (0, 0, [1] * (DDSKETCH_MAX_BINS + 1), 0, []),
        (0, limit - 1, [1, 1], 0, []),  # the last key reaches the limit
        (0, 0, [], -limit, [1]),
        (0, 0, [2**63], 0, []),  # beyond int64
    ):
        assert ddsketch_from_lists(*bad) is None, bad
    assert ddsketch_from_lists(0, limit - 2, [1, 1], 1 - limit, [1]) is not None
