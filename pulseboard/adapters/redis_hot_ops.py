"""The pure half of the Redis hot store: engine states to Redis ops and Redis fields back to
engine states, a batch's deltas computed by the engine itself, and windows built from buckets.
No I/O: ``redis_hot.py`` sends what this module builds.

Exactness rests on three facts, each tested against the embedded engine:

- **The deltas are the engine's.** ``prepare`` runs a throwaway ``Engine`` restored (through its
  own snapshot format) at the shared stream time, with the ids Redis reported as already
  counted marked seen, feeds it the batch and reads its buckets back from ``snapshot()``. So
  lateness (against the running maximum of event time), dedupe within the batch, ``where``,
  labels and ``reduce_groups`` are the engine's code, not a copy of it.
- **Every kind is stored so that applying deltas in any order gives one state**: counts add
  (HINCRBY), exact sums are floating-point expansions merged by error-free two-sums in Lua (the
  stored components always add up exactly to the true sum, whatever their number), min / max are
  compared and set, DDSketch bins add and are collapsed (the engine's span cap) on read, where the
  cut depends only on the extreme key, and distinct is the exact hash set until it exceeds the
  threshold, then the HyperLogLog registers of that set: both the engine's state as a function of
  the set of hashes seen.
- **Reading rebuilds the engine's state type** (``state_from_fields``), canonicalised by the
  engine's own constructors (``exact_partials``, ``ddsketch_from_lists``, ``readonly`` registers),
  so ``agg.result`` and ``agg.dumps`` are those of the engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from pulseboard.adapters.base import LateRow
from pulseboard.aggregates import Aggregator
from pulseboard.config import Config, MetricSpec
from pulseboard.engine import SNAPSHOT_VERSION, Engine, WindowValue, aggregator_for
from pulseboard.events import Batch
from pulseboard.sketches import (
    DDSKETCH_MAX_BINS,
    HLL_REGISTERS,
    ddsketch_from_lists,
    exact_partials,
    readonly,
)

KIND_CODES = {"count": "c", "sum": "s", "avg": "a", "min": "m", "max": "M", "distinct": "d"}
"""The op code the Lua script applies per aggregate kind (quantiles are ``q``)."""

_NO_TIME = -(2**62)  # the engine's "no stream time yet"


def kind_code(agg: str) -> str:
    """The Lua op code of aggregate ``agg`` (``p50`` .. ``p99`` share ``q``)."""
    return KIND_CODES.get(agg, "q")


def labels_json(group_by: tuple[str, ...], key: Iterable[Any]) -> str:
    """The canonical label JSON of a label set (as ``reconcile.labels_key``: ``group_by``
    order), used as the label's name in Redis."""
    return msgspec.json.encode(dict(zip(group_by, key, strict=True))).decode()


def dedupe_geometry(config: Config) -> tuple[int, int]:
    """(horizon, bucket width) of id dedupe, in ms, as the engine computes them: the largest
    bucket plus the lateness, remembered in groups of an eighth of it (at least 1 s)."""
    horizon = max((m.bucket_ms for m in config.metrics), default=0) + config.pipeline.lateness_ms
    return horizon, max(1_000, horizon // 8)


# --- one batch's deltas ---------------------------------------------------------------------


@dataclass(slots=True)
class HotDelta:
    """What one commit applies: the engine's partial states of a batch, by metric, bucket
    start and label JSON; the ids it counted by dedupe bucket start; its late events; the
    largest event time it holds (None if it held no event)."""

    entry_ids: list[str]
    states: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    ids: dict[int, list[str]] = field(default_factory=dict)
    late: list[LateRow] = field(default_factory=list)
    max_event_ms: int | None = None

    @property
    def events_counted(self) -> int:
        """How many distinct event ids this delta marks as seen."""
        return sum(len(v) for v in self.ids.values())


def prepare(
    config: Config,
    batch: Batch,
    entry_ids: list[str],
    stream_time_ms: int | None,
    seen: Iterable[str] = (),
) -> HotDelta:
    """The engine's deltas for ``batch`` at shared stream time ``stream_time_ms``, leaving out
    the ids in ``seen`` (those the store reported as counted by another commit: the engine
    drops them as duplicates, so they are neither counted nor late)."""
    _, width = dedupe_geometry(config)
    start = _NO_TIME if stream_time_ms is None else stream_time_ms
    engine = Engine.restore(config, _snapshot_at(start, width, list(seen)))
    engine.process(batch)
    saved = msgspec.msgpack.decode(engine.snapshot())
    delta = HotDelta(list(entry_ids))
    if batch.accepted:
        delta.max_event_ms = max(int(t.time_ms.max()) for t in batch.types.values() if len(t))
    seen_set = set(seen)
    for bucket, ids in saved["seen"]:
        fresh = [i for i in ids if i not in seen_set]
        if fresh:
            delta.ids.setdefault(bucket * saved["seen_bucket_ms"], []).extend(fresh)
    specs = {m.name: m for m in config.metrics}
    for name, metric in saved["metrics"].items():
        spec = specs[name]
        agg = engine.aggregator(name)
        labels = [labels_json(spec.group_by, k) for k in metric["labels"]]
        out = delta.states.setdefault(name, {})
        for bucket, slots in metric["buckets"]:
            target = out.setdefault(bucket * spec.bucket_ms, {})
            for label, state in slots:
                target[labels[label]] = agg.loads(state)
        if not out:
            del delta.states[name]
    for late in saved["late"]:
        value = late["value"]
        delta.late.append(
            LateRow(
                late["metric"],
                late["event_id"],
                late["window_start_ms"],
                late["window_end_ms"],
                msgspec.json.encode(late["labels"]).decode(),
                late["time_ms"],
                value,
            )
        )
    return delta


def _snapshot_at(stream_ms: int, width: int, seen: list[str]) -> bytes:
    """An engine snapshot with no state but stream time (so lateness is judged against the
    shared stream time) and ``seen`` ids remembered (one dedupe group: only membership
    matters for a throwaway engine)."""
    payload = {
        "version": SNAPSHOT_VERSION,
        "max_event": stream_ms,
        "stream": stream_ms,
        "duplicates": 0,
        "seen_bucket_ms": width,
        "seen": [[0, seen]] if seen else [],
        "late": [],
        "metrics": {},
    }
    return msgspec.msgpack.encode(payload)


# --- states to ops ----------------------------------------------------------------------------


def _float(x: float) -> str:
    # repr is the shortest text that reads back as the same double (in Lua's strtod too)
    return repr(float(x))


def state_ops(agg: str, state: Any) -> list[str | int]:
    """The tokens the Lua script reads for one label's delta of aggregate ``agg``."""
    code = kind_code(agg)
    if code == "c":
        return [state]
    if code == "s":
        return _sum_ops(state)
    if code == "a":
        return [state[0], *_sum_ops(state[1])]
    if code in "mM":
        return [_float(state)]
    if code == "d":
        if isinstance(state, frozenset):
            return ["s", len(state), *(f"{h:016x}" for h in state)]
        nonzero = np.flatnonzero(state)
        pairs: list[str | int] = []
        for reg, rank in zip(nonzero.tolist(), state[nonzero].tolist(), strict=True):
            pairs += [reg, rank]
        return ["r", len(nonzero), *pairs]
    sketch, low, high = state
    out: list[str | int] = [sketch.zero_count, _float(low), _float(high)]
    for offset, counts in (
        (sketch.pos_offset, sketch.pos_counts),
        (sketch.neg_offset, sketch.neg_counts),
    ):
        nonzero = np.flatnonzero(counts)
        out.append(len(nonzero))
        for i, n in zip(nonzero.tolist(), counts[nonzero].tolist(), strict=True):
            out += [offset + i, n]
    return out


def _sum_ops(partials: tuple[float, ...]) -> list[str | int]:
    # the engine's partials come largest first; the Lua expansion keeps increasing magnitude
    return [len(partials), *(_float(p) for p in reversed(partials))]


# --- fields to states -------------------------------------------------------------------------


def _expansion(text: bytes | None) -> tuple[float, ...]:
    if not text:
        return ()
    return exact_partials([float(x) for x in text.split()])


def state_from_fields(
    agg: Aggregator, fields: dict[str, bytes], extra: dict[str, Any] | None
) -> Any:
    """The engine state of one label in one bucket from its hash fields (``fields``: component
    name -> value, ``""`` for the single-component kinds) and, for distinct, ``extra``: the
    hash set or the registers read from the label's own key."""
    code = kind_code(agg.name)
    if code == "c":
        return int(fields[""])
    if code == "s":
        return _expansion(fields.get(""))
    if code == "a":
        return (int(fields["n"]), _expansion(fields.get("s")))
    if code in "mM":
        return float(fields[""]) + 0.0
    if code == "d":
        assert extra is not None
        if fields[""] == b"s":
            return frozenset(int(h, 16) for h in extra)
        registers = np.zeros(HLL_REGISTERS, dtype=np.uint8)
        for reg, rank in extra.items():
            registers[int(reg)] = int(rank)
        return readonly(registers)
    return _quantile_state(fields)


def _quantile_state(fields: dict[str, bytes]) -> Any:
    pos: dict[int, int] = {}
    neg: dict[int, int] = {}
    for name, value in fields.items():
        if name[:2] in ("p:", "n:"):
            (pos if name[0] == "p" else neg)[int(name[2:])] = int(value)
    pos_offset, pos_counts = _dense(pos, positive=True)
    neg_offset, neg_counts = _dense(neg, positive=False)
    sketch = ddsketch_from_lists(
        int(fields.get("z", b"0")), pos_offset, pos_counts, neg_offset, neg_counts
    )
    if sketch is None:
        raise ValueError("the stored DDSketch bins break the sketch's invariants")
    return (sketch, float(fields["lo"]) + 0.0, float(fields["hi"]) + 0.0)


def _dense(bins: dict[int, int], *, positive: bool) -> tuple[int, list[int]]:
    """Bins as (offset, dense counts), collapsed past the span cap as the engine collapses:
    every count ends in max(its key, the final cut), which is what repeated collapsing with
    cuts that only move one way gives."""
    bins = {k: n for k, n in bins.items() if n}
    if not bins:
        return 0, []
    lo, hi = min(bins), max(bins)
    if hi - lo >= DDSKETCH_MAX_BINS:
        if positive:
            lo = hi - DDSKETCH_MAX_BINS + 1
            folded = {k: n for k, n in bins.items() if k >= lo}
            folded[lo] = folded.get(lo, 0) + sum(n for k, n in bins.items() if k < lo)
        else:
            hi = lo + DDSKETCH_MAX_BINS - 1
            folded = {k: n for k, n in bins.items() if k <= hi}
            folded[hi] = folded.get(hi, 0) + sum(n for k, n in bins.items() if k > hi)
        bins = folded
    dense = [0] * (hi - lo + 1)
    for k, n in bins.items():
        dense[k - lo] = n
    return lo, dense


# --- windows from buckets -------------------------------------------------------------------

Buckets = dict[int, dict[str, Any]]
"""Bucket start -> label JSON -> engine state, for one metric."""


def merged_window(
    spec: MetricSpec, agg: Aggregator, buckets: Buckets, start: int, end: int, status: str
) -> list[WindowValue]:
    """The engine's ``_window``: one value per label set present in ``[start, end)``, in the
    order of the labels' JSON (the engine sorts by its label ids; callers compare by labels)."""
    merged: dict[str, Any] = {}
    for bucket in range(start, end, spec.bucket_ms):
        for label, state in buckets.get(bucket, {}).items():
            old = merged.get(label)
            merged[label] = state if old is None else agg.merge(old, state)
    return [
        WindowValue(
            spec.name,
            msgspec.json.decode(label),
            start,
            end,
            agg.result(s),
            "final" if status == "final" else "open",
            s,
        )
        for label, s in sorted(merged.items())
    ]


def final_windows(
    spec: MetricSpec, agg: Aggregator, buckets: Buckets, low: int, high: int
) -> list[WindowValue]:
    """The windows the engine emits final when its final-through time moves from ``low`` to
    ``high``: every window ending on a multiple of the bucket width in ``(low, high]`` that
    holds a bucket (for a sliding metric, one per ``every``, as the engine emits them)."""
    step, window = spec.bucket_ms, spec.window_ms
    ends = sorted(
        {
            end
            for b in buckets
            for end in range(b + step, b + window + step, step)
            if low < end <= high
        }
    )
    out: list[WindowValue] = []
    for end in ends:
        out.extend(merged_window(spec, agg, buckets, end - window, end, "final"))
    return out


def open_windows(
    spec: MetricSpec, agg: Aggregator, buckets: Buckets, final_through: int | None
) -> list[WindowValue]:
    """The engine's ``open_windows``: windows aligned to the window length that hold a bucket
    and are not final yet."""
    window = spec.window_ms
    through = _NO_TIME if final_through is None else final_through
    out: list[WindowValue] = []
    for start in sorted({b // window * window for b in buckets}):
        if start + window > through:
            out.extend(merged_window(spec, agg, buckets, start, start + window, "open"))
    return out


def current_window(
    spec: MetricSpec, agg: Aggregator, buckets: Buckets, stream_time_ms: int | None
) -> list[WindowValue]:
    """The engine's ``current``: the window ending with the bucket that holds stream time."""
    if stream_time_ms is None:
        return []
    step = spec.bucket_ms
    end = stream_time_ms - stream_time_ms % step + step
    return merged_window(spec, agg, buckets, end - spec.window_ms, end, "open")


def aggregators(config: Config) -> dict[str, Aggregator]:
    """Every metric's aggregator, as the engine makes it."""
    return {m.name: aggregator_for(config, m) for m in config.metrics}
