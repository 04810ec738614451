"""The windowed aggregation engine: batches in, open and final window values out. No I/O.

Semantics (docs/ARCHITECTURE.md and docs/CONFIG.md, "Window semantics"):

- **Stream time** is the largest event time seen. When input goes idle, ``advance(now_ms)`` moves
  it on with the wall clock: after an advance that saw no new events, stream time is at least the
  largest event time plus the wall time elapsed since the last advance that did see events.
- **Lateness** is decided event by event, in arrival order: an event is late for a metric when
  the bucket it falls in is already final given the events that arrived before it (in earlier
  batches or earlier in the same batch), so splitting a stream into batches never changes it.
  Late events count in no window of that metric and come out of ``advance`` on the late channel.
- **Duplicates**: an event id counts once for as long as it is remembered: until stream time
  passes its event time by the dedupe horizon, the largest bucket (a tumbling window, or the
  ``every`` of a sliding one) plus the lateness. A copy arriving later than that is late for
  every metric anyway, so it can only reach the late channel (reconciliation dedupes there).
- **Labels**: each metric keeps at most ``max_label_sets`` distinct ``group_by`` label sets; events
  of further label sets are counted under one set whose every label is ``__other__``, and
  ``overflow_events`` counts them.
- ``snapshot()`` and ``Engine.restore()`` capture everything above, so a restored engine fed the
  rest of the stream gives exactly what one uninterrupted run gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain, compress
from typing import Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from pulseboard.aggregates import Aggregator, get_aggregator, make_distinct
from pulseboard.config import Config, MetricSpec
from pulseboard.errors import StateError
from pulseboard.events import Batch, TypeBatch
from pulseboard.expr import Expr
from pulseboard.windows import bucket_start_ms

OTHER = "__other__"
SNAPSHOT_VERSION = 1
Value = int | float | None
Status = Literal["open", "final"]
_NO_TIME = -(2**62)


@dataclass(frozen=True, slots=True)
class WindowValue:
    """The aggregate of one metric, for one label set, over ``[window_start_ms, window_end_ms)``."""

    metric: str
    labels: dict[str, Any]
    window_start_ms: int
    window_end_ms: int
    value: Value
    status: Status
    state: Any = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class LateEvent:
    """An event that arrived after its bucket of ``metric`` became final.

    ``window_start_ms``/``window_end_ms`` bound that bucket: the window of a tumbling metric, the
    ``every`` step of a sliding one (which then lies in ``window / every`` final windows).
    ``value`` is the field the metric aggregates (None for a plain count). ``labels`` are the
    event's, or all ``__other__`` when its label set is beyond the metric's cap. Applying the
    value to that bucket and label set is what reconciliation does.
    """

    metric: str
    labels: dict[str, Any]
    window_start_ms: int
    window_end_ms: int
    event_id: str
    time_ms: int
    value: Any


@dataclass(slots=True)
class Tick:
    """What one ``advance`` produced."""

    stream_time_ms: int
    final: list[WindowValue]
    late: list[LateEvent]
    updates: dict[str, list[WindowValue]]
    """Provisional values (``current``) of every metric whose open windows changed since the
    previous advance."""


class _Metric:
    """The open buckets of one metric and its label sets."""

    def __init__(self, spec: MetricSpec, agg: Aggregator, lateness_ms: int) -> None:
        self.spec = spec
        self.agg = agg
        self.bucket_ms = spec.bucket_ms
        self.lateness_ms = lateness_ms
        self.labels: list[tuple[Any, ...]] = []
        self.label_ids: dict[tuple[Any, ...], int] = {}
        self.other_id: int | None = None
        self.overflow_events = 0
        self.buckets: dict[int, dict[int, Any]] = {}
        self.final_through_ms = _NO_TIME  # every window ending at or before this was emitted final

    def signature(self) -> list[Any]:
        s = self.spec
        where = s.where.text if s.where is not None else None
        return [s.event, s.agg, s.field, s.window_ms, s.every_ms, list(s.group_by), where]

    def label_dict(self, label_id: int) -> dict[str, Any]:
        return dict(zip(self.spec.group_by, self.labels[label_id], strict=True))

    def label_codes(
        self, tb: TypeBatch, idx: npt.NDArray[np.int64] | None
    ) -> npt.NDArray[np.int64]:
        """Label ids of the events at ``idx`` (all if None), admitting new label sets in the
        order they first appear, up to the cap; the rest get the ``__other__`` label set."""
        ids = self.label_ids
        group_by = self.spec.group_by
        if not group_by:
            if not ids:
                ids[()] = 0
                self.labels.append(())
            return np.zeros(len(tb) if idx is None else len(idx), dtype=np.int64)
        local, keys = tb.group_codes(group_by)
        if idx is not None:
            local = local[idx]
        present, first = np.unique(local, return_index=True)
        lookup = np.zeros(len(keys), dtype=np.int64)
        for code in present[np.argsort(first)].tolist():
            label = ids.get(keys[code])
            if label is None:
                label = self._admit(keys[code])
            lookup[code] = label
        codes = lookup[local]
        if self.other_id is not None:
            self.overflow_events += int(np.count_nonzero(codes == self.other_id))
        return codes

    def _admit(self, key: tuple[Any, ...]) -> int:
        if len(self.label_ids) < self.spec.max_label_sets:
            self.label_ids[key] = len(self.labels)
            self.labels.append(key)
            return self.label_ids[key]
        if self.other_id is None:
            self.other_id = len(self.labels)
            self.labels.append((OTHER,) * len(self.spec.group_by))
        return self.other_id

    def restore_labels(self, labels: list[tuple[Any, ...]], other_id: int | None) -> None:
        self.labels = labels
        self.other_id = other_id
        self.label_ids = {k: i for i, k in enumerate(labels) if i != other_id}

    def add_states(
        self, buckets: npt.NDArray[np.int64], codes: npt.NDArray[np.int64], values: Any
    ) -> None:
        """Aggregate events (bucket index, label id, value) into the open buckets."""
        width = len(self.labels)
        low = int(buckets.min())
        keys, inverse = _factorize((buckets - low) * width + codes)
        states = self.agg.reduce_groups(inverse, len(keys), values)
        merge = self.agg.merge
        for key, state in zip(keys.tolist(), states, strict=True):
            bucket, label = divmod(key, width)
            slots = self.buckets.setdefault(low + bucket, {})
            old = slots.get(label)
            slots[label] = state if old is None else merge(old, state)

    def finalize(self, stream_time_ms: int) -> list[WindowValue]:
        """Emit every window that became final and drop buckets no open window needs."""
        if not self.buckets:
            self.final_through_ms = max(self.final_through_ms, stream_time_ms - self.lateness_ms)
            return []
        out: list[WindowValue] = []
        step = self.bucket_ms
        window = self.spec.window_ms
        per_window = window // step
        # window ends, in steps, that are final now and were not yet emitted
        first = self.final_through_ms // step + 1
        last = (stream_time_ms - self.lateness_ms) // step
        # only ends of windows that hold a bucket: bucket b is in the windows ending at
        # b + 1 .. b + per_window; runs of them are merged so each end is visited once
        run: list[int] = []
        for bucket in sorted(self.buckets):
            low, high = max(bucket + 1, first), min(bucket + per_window, last)
            if low > high:
                continue
            if run and low <= run[1] + 1:
                run[1] = max(run[1], high)
                continue
            out.extend(self._windows_ending(run, step))
            run = [low, high]
        out.extend(self._windows_ending(run, step))
        self.final_through_ms = max(self.final_through_ms, stream_time_ms - self.lateness_ms)
        # a bucket is needed until the last window that holds it is final
        horizon = (self.final_through_ms - window + step) // step
        for bucket in [b for b in self.buckets if b < horizon]:
            del self.buckets[bucket]
        return out

    def _windows_ending(self, run: list[int], step: int) -> list[WindowValue]:
        """Final values of the windows ending at steps ``run[0]`` to ``run[1]`` (inclusive)."""
        if not run:
            return []
        out: list[WindowValue] = []
        for end in range(run[0] * step, (run[1] + 1) * step, step):
            out.extend(self._window(end - self.spec.window_ms, end, "final"))
        return out

    def _window(self, start_ms: int, end_ms: int, status: Status) -> list[WindowValue]:
        step = self.bucket_ms
        merged: dict[int, Any] = {}
        merge = self.agg.merge
        for bucket in range(start_ms // step, end_ms // step):
            for label, state in self.buckets.get(bucket, {}).items():
                old = merged.get(label)
                merged[label] = state if old is None else merge(old, state)
        result = self.agg.result
        name = self.spec.name
        return [
            WindowValue(name, self.label_dict(label), start_ms, end_ms, result(s), status, s)
            for label, s in sorted(merged.items())
        ]

    def open_windows(self) -> list[WindowValue]:
        """Values of the windows ``[k * window, (k + 1) * window)`` that hold open buckets and
        are not final yet: the points a series shows before history has them."""
        window = self.spec.window_ms
        starts = {b * self.bucket_ms // window * window for b in self.buckets}
        out: list[WindowValue] = []
        for start in sorted(starts):
            if start + window > self.final_through_ms:
                out.extend(self._window(start, start + window, "open"))
        return out

    def current(self, stream_time_ms: int) -> list[WindowValue]:
        """The open window that holds stream time (a sliding window ending with its bucket)."""
        step = self.bucket_ms
        end = stream_time_ms - stream_time_ms % step + step
        return self._window(end - self.spec.window_ms, end, "open")


class Engine:
    """Aggregates validated event batches into windows for every metric of a config."""

    def __init__(self, config: Config) -> None:
        self._config = config
        lateness = config.pipeline.lateness_ms
        self._metrics: dict[str, _Metric] = {}
        for spec in config.metrics:
            self._metrics[spec.name] = _Metric(spec, aggregator_for(config, spec), lateness)
        self._by_event: dict[str, list[_Metric]] = {}
        for metric in self._metrics.values():
            self._by_event.setdefault(metric.spec.event, []).append(metric)
        self._lateness_ms = lateness
        # once an event's bucket is final, a copy of it is late for that metric anyway
        horizon = max((m.bucket_ms for m in config.metrics), default=0) + lateness
        self._dedupe_bucket_ms = max(1_000, horizon // 8)
        self._dedupe_horizon_ms = horizon
        self._seen: set[str] = set()
        self._seen_by_bucket: dict[int, list[str]] = {}
        self._max_event_ms = _NO_TIME
        self._stream_ms = _NO_TIME
        self._anchor: tuple[int, int] | None = None  # (wall ms, event ms) of the last busy advance
        self._busy = False
        self._late: list[LateEvent] = []
        self._changed: set[str] = set()
        self.duplicates = 0
        """Events dropped because their id was already counted."""
        self.state_bytes: dict[str, int] = {}
        """Per metric, the encoded size of its open buckets' states at the last snapshot."""

    @property
    def stream_time_ms(self) -> int | None:
        """Stream time, or None before the first event."""
        return None if self._stream_ms == _NO_TIME else self._stream_ms

    def overflow_events(self, metric: str) -> int:
        """Events of ``metric`` counted under ``__other__`` because of the label set cap."""
        return self._metrics[metric].overflow_events

    def process(self, batch: Batch) -> None:
        """Add a decoded batch. Its events are taken to arrive in request order.

        Events of a type no metric reads still move stream time on, but are not deduplicated
        or kept."""
        parts = [t for t in batch.types.values() if len(t)]
        if not parts:
            return
        times = _joined([t.time_ms for t in parts])
        before = self._stream_time_before(times, _joined([t.index for t in parts]), batch.received)
        self._max_event_ms = max(self._max_event_ms, int(times.max()))
        self._stream_ms = max(self._stream_ms, self._max_event_ms)
        self._busy = True
        bounds = np.cumsum([0, *map(len, parts)]).tolist()
        counted = [i for i, t in enumerate(parts) if t.event.name in self._by_event]
        if not counted:
            return
        fresh = self._dedupe(
            list(chain.from_iterable(parts[i].ids for i in counted)),
            _joined([parts[i].time_ms for i in counted]),
            _joined([parts[i].index for i in counted]),
        )
        low = 0
        for i in counted:
            tb = parts[i]
            high = low + len(tb)
            for metric in self._by_event[tb.event.name]:
                self._apply(metric, tb, fresh[low:high], before[bounds[i] : bounds[i + 1]])
            low = high

    def _stream_time_before(
        self, times: npt.NDArray[np.int64], positions: npt.NDArray[np.int64], received: int
    ) -> npt.NDArray[np.int64]:
        """Stream time just before each event arrived: the running maximum in request order."""
        by_position = np.full(received + 1, self._stream_ms, dtype=np.int64)
        by_position[positions + 1] = times
        np.maximum.accumulate(by_position, out=by_position)
        return by_position[positions]

    def _dedupe(
        self, ids: list[str], times: npt.NDArray[np.int64], positions: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        """Mark the first arrival of each id not seen before, and remember the ids.

        Ids are compared through Python's string hashes, vectorised, and confirmed by comparing
        the ids themselves wherever two hashes are equal, so the result is exact."""
        seen = self._seen
        n = len(ids)
        distinct = set(ids)
        common = seen.intersection(distinct)
        if len(distinct) == n and not common:
            fresh = np.ones(n, dtype=bool)
            kept = ids
        else:
            hashes = np.fromiter(map(hash, ids), np.int64, n)
            fresh = np.ones(n, dtype=bool)
            if len(distinct) < n:
                fresh = _first_arrivals(ids, hashes, positions, len(distinct))
            if common:
                candidates = np.isin(hashes, np.fromiter(map(hash, common), np.int64, len(common)))
                for i in np.flatnonzero(candidates).tolist():
                    if ids[i] in common:
                        fresh[i] = False
            kept = list(compress(ids, fresh.tolist()))
            self.duplicates += n - len(kept)
            times = times[fresh]
        seen |= distinct
        if kept:
            self._remember(kept, times // self._dedupe_bucket_ms)
        return fresh

    def _remember(self, ids: list[str], buckets: npt.NDArray[np.int64]) -> None:
        low, high = int(buckets.min()), int(buckets.max())
        if low == high:
            self._seen_by_bucket.setdefault(low, []).extend(ids)
            return
        order = np.argsort(buckets, kind="stable")
        values, starts = np.unique(buckets[order], return_index=True)
        ordered = [ids[i] for i in order.tolist()]
        ends = [*starts.tolist()[1:], len(ordered)]
        for bucket, lo, hi in zip(values.tolist(), starts.tolist(), ends, strict=True):
            self._seen_by_bucket.setdefault(bucket, []).extend(ordered[lo:hi])

    def _apply(
        self,
        metric: _Metric,
        tb: TypeBatch,
        fresh: npt.NDArray[np.bool_],
        before: npt.NDArray[np.int64],
    ) -> None:
        spec = metric.spec
        selected = fresh
        if spec.where is not None:
            selected = selected & _where_mask(spec.where, tb)
        values: Any = None
        if spec.field is not None:
            if metric.agg.numeric:
                values = tb.numbers(spec.field)
                missing = np.isnan(values)
                if missing.any():
                    selected = selected & ~missing
            else:
                values = tb.values(spec.field)
                if None in values:
                    selected = selected & np.array([v is not None for v in values], dtype=bool)
        # idx: positions of the events that count, or None while that is all of them
        idx = None if bool(selected.all()) else np.flatnonzero(selected)
        if idx is not None and len(idx) == 0:
            return
        times = tb.time_ms if idx is None else tb.time_ms[idx]
        buckets = times // metric.bucket_ms
        late = (buckets + 1) * metric.bucket_ms + metric.lateness_ms <= (
            before if idx is None else before[idx]
        )
        if late.any():
            if idx is None:
                idx = np.arange(len(tb))
            self._emit_late(metric, tb, idx[late], values)
            idx, buckets = idx[~late], buckets[~late]
            if len(idx) == 0:
                return
        codes = metric.label_codes(tb, idx)
        if values is not None and idx is not None:
            values = (
                values[idx] if isinstance(values, np.ndarray) else [values[i] for i in idx.tolist()]
            )
        metric.add_states(buckets, codes, values)
        self._changed.add(spec.name)

    def _emit_late(
        self, metric: _Metric, tb: TypeBatch, idx: npt.NDArray[np.int64], values: Any
    ) -> None:
        spec = metric.spec
        step = metric.bucket_ms
        columns = [tb.values(name) for name in spec.group_by]
        full = len(metric.label_ids) >= spec.max_label_sets
        for i in idx.tolist():
            key = tuple(column[i] for column in columns)
            if full and key not in metric.label_ids:
                key = (OTHER,) * len(key)
            labels = dict(zip(spec.group_by, key, strict=True))
            time_ms = int(tb.time_ms[i])
            start = bucket_start_ms(time_ms, step)
            value = None if values is None else values[i]
            if isinstance(value, np.floating):
                value = float(value)
            self._late.append(
                LateEvent(spec.name, labels, start, start + step, tb.ids[i], time_ms, value)
            )

    def advance(self, now_ms: int | None = None) -> Tick:
        """Finalize what stream time allows and hand out final windows and late events.

        With ``now_ms`` (wall clock, epoch ms), an engine that saw no event since the previous
        advance moves stream time on by the wall time elapsed since the last advance that did.
        """
        if now_ms is not None:
            if self._busy or self._anchor is None:
                if self._max_event_ms != _NO_TIME:
                    self._anchor = (now_ms, self._max_event_ms)
            else:
                wall, event = self._anchor
                self._stream_ms = max(self._stream_ms, event + max(0, now_ms - wall))
        self._busy = False
        final: list[WindowValue] = []
        if self._stream_ms != _NO_TIME:
            for metric in self._metrics.values():
                final.extend(metric.finalize(self._stream_ms))
            self._expire_seen()
        late, self._late = self._late, []
        changed, self._changed = self._changed, set()
        updates = {name: self.current(name) for name in sorted(changed)}
        return Tick(self._stream_ms, final, late, updates)

    def _expire_seen(self) -> None:
        limit = (self._stream_ms - self._dedupe_horizon_ms) // self._dedupe_bucket_ms
        for bucket in [b for b in self._seen_by_bucket if b < limit]:
            self._seen.difference_update(self._seen_by_bucket.pop(bucket))

    def current(self, metric: str) -> list[WindowValue]:
        """Open values of ``metric``: the tumbling window holding stream time, or for a sliding
        metric the window that ends with the bucket holding stream time."""
        if self._stream_ms == _NO_TIME:
            return []
        return self._metrics[metric].current(self._stream_ms)

    def open_windows(self, metric: str) -> list[WindowValue]:
        """Every not yet final window of ``metric`` aligned to its window length, in order."""
        return self._metrics[metric].open_windows()

    def window(self, metric: str, start_ms: int, end_ms: int) -> list[WindowValue]:
        """The values of ``metric`` over ``[start_ms, end_ms)`` from the buckets still held,
        one per label set, marked final (used to recompute closed windows)."""
        return self._metrics[metric]._window(start_ms, end_ms, "final")

    def aggregator(self, metric: str) -> Aggregator:
        """The aggregator of ``metric`` (to encode and merge its states)."""
        return self._metrics[metric].agg

    def label_sets(self, metric: str) -> int:
        """How many label sets ``metric`` has admitted (``__other__`` included)."""
        return len(self._metrics[metric].labels)

    def snapshot(self) -> bytes:
        """Everything needed to continue exactly where this engine is, as versioned bytes."""
        metrics = {}
        for name, m in self._metrics.items():
            dumps = m.agg.dumps
            buckets: list[list[Any]] = []
            size = 0
            for b, slots in m.buckets.items():
                encoded = [(label, dumps(s)) for label, s in slots.items()]
                size += sum(len(state) for _, state in encoded)
                buckets.append([b, encoded])  # msgpack writes tuples as arrays
            self.state_bytes[name] = size
            metrics[name] = {
                "signature": m.signature(),
                "labels": [list(k) for k in m.labels],
                "other_id": m.other_id,
                "overflow": m.overflow_events,
                "final_through": m.final_through_ms,
                "buckets": buckets,
            }
        payload = {
            "version": SNAPSHOT_VERSION,
            "max_event": self._max_event_ms,
            "stream": self._stream_ms,
            "duplicates": self.duplicates,
            "seen_bucket_ms": self._dedupe_bucket_ms,
            "seen": [[b, ids] for b, ids in self._seen_by_bucket.items()],
            "late": self._late,
            "metrics": metrics,
        }
        return msgspec.msgpack.encode(payload)

    @classmethod
    def restore(cls, config: Config, data: bytes) -> Engine:
        """An engine for ``config`` continuing from ``snapshot()`` bytes.

        A metric whose definition changed since the snapshot starts empty; one that is new
        starts empty; one that is gone is dropped.
        """
        try:
            payload = msgspec.msgpack.decode(data)
            if not isinstance(payload, dict) or payload.get("version") != SNAPSHOT_VERSION:
                raise StateError(
                    f"engine snapshot has version {_version_of(payload)}, "
                    f"expected {SNAPSHOT_VERSION}"
                )
            engine = cls(config)
            engine._load(payload)
        except (msgspec.DecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
            raise StateError(f"engine snapshot is unreadable: {exc}") from exc
        return engine

    def _load(self, payload: dict[str, Any]) -> None:
        self._max_event_ms = payload["max_event"]
        self._stream_ms = payload["stream"]
        self.duplicates = payload["duplicates"]
        width = payload["seen_bucket_ms"]
        for bucket, ids in payload["seen"]:
            # the config may have changed the bucket width: file ids by their bucket's start
            self._seen_by_bucket.setdefault(bucket * width // self._dedupe_bucket_ms, []).extend(
                ids
            )
            self._seen.update(ids)
        self._late = [LateEvent(**record) for record in payload["late"]]
        for name, saved in payload["metrics"].items():
            metric = self._metrics.get(name)
            if metric is None or saved["signature"] != metric.signature():
                continue
            metric.restore_labels([tuple(k) for k in saved["labels"]], saved["other_id"])
            metric.overflow_events = saved["overflow"]
            metric.final_through_ms = saved["final_through"]
            loads = metric.agg.loads
            metric.buckets = {
                b: {label: loads(s) for label, s in slots} for b, slots in saved["buckets"]
            }


def aggregator_for(config: Config, spec: MetricSpec) -> Aggregator:
    """The aggregator of ``spec`` (``distinct`` with the config's exact threshold)."""
    if spec.agg == "distinct":
        return make_distinct(config.pipeline.distinct_exact_threshold)
    return get_aggregator(spec.agg)


def _joined(arrays: list[npt.NDArray[np.int64]]) -> npt.NDArray[np.int64]:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _first_arrivals(
    ids: list[str],
    hashes: npt.NDArray[np.int64],
    positions: npt.NDArray[np.int64],
    distinct: int,
) -> npt.NDArray[np.bool_]:
    """True for the first arrival (lowest position) of each id, given ``distinct`` ids in all.

    Equal hashes are taken as equal ids only when there are as many distinct hashes as
    distinct ids; otherwise two ids share a hash and the ids themselves are compared."""
    n = len(ids)
    order = np.argsort(positions, kind="stable")
    _, first = np.unique(hashes[order], return_index=True)
    fresh = np.zeros(n, dtype=bool)
    if len(first) == distinct:
        fresh[order[first]] = True
        return fresh
    arrival = order[::-1].tolist()
    earliest = dict(zip([ids[i] for i in arrival], arrival, strict=True))
    fresh[list(earliest.values())] = True
    return fresh


def _where_mask(where: Expr, tb: TypeBatch) -> npt.NDArray[np.bool_]:
    """``where`` over a batch. Over fields without floats that take few distinct values (paths,
    regions, codes), it is evaluated once per distinct combination, not once per event."""
    names = tuple(sorted(where.names()))
    if names and all(_is_discrete(tb, n) for n in names):
        codes, keys = tb.group_codes(names)
        if len(keys) * 16 <= len(tb):
            verdicts = [where.evaluate(dict(zip(names, key, strict=True))) for key in keys]
            return np.array(verdicts, dtype=bool)[codes]
    return where.mask({n: _column(tb, n) for n in names}, len(tb))


def _is_discrete(tb: TypeBatch, name: str) -> bool:
    spec = tb.event.field(name)
    return spec is not None and spec.type != "float"


def _column(tb: TypeBatch, name: str) -> npt.NDArray[np.float64] | list[Any]:
    """A field for ``where``: float fields as float64 with NaN for null, others exactly."""
    spec = tb.event.field(name)
    if spec is not None and spec.type == "float":
        return tb.numbers(name)
    return tb.values(name)


def _version_of(payload: object) -> object:
    return payload.get("version") if isinstance(payload, dict) else "?"


def _factorize(keys: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The sorted distinct non-negative ``keys`` and each key's position among them."""
    top = int(keys.max())
    if top > 4 * len(keys) + 65_536:  # sparse: sorting is cheaper than a table
        distinct, inverse = np.unique(keys, return_inverse=True)
        return distinct, inverse.astype(np.int64)
    present = np.zeros(top + 1, dtype=bool)
    present[keys] = True
    rank = np.cumsum(present, dtype=np.int64) - 1
    return np.flatnonzero(present), rank[keys]
