"""Event envelopes: decoding a request body, validating each event, and the columnar batch.

An event is ``{"id", "type", "time", "data"}`` (``source`` and ``specversion`` are accepted too).
``time`` is RFC 3339 with an offset, or integer epoch milliseconds. ``type`` must be registered in
the config and ``data`` must match that type's fields; fields the config does not know are
accepted and ignored by metrics.

Decoding is done by msgspec against structs generated from the config, one decoder reused for
every request. A body whose events are all valid is decoded in one pass; when any event is bad,
each event is decoded on its own so that the good ones survive and every bad one gets an error
naming its index, id and the problem.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import compress
from operator import attrgetter
from typing import Annotated, Any, Literal, Union

import msgspec
import numpy as np
import numpy.typing as npt

from pulseboard.config import Config, EventSpec, FieldSpec
from pulseboard.durations import format_duration_ms
from pulseboard.errors import DecodeError

MAX_ID_LENGTH = 256
_PYTHON_TYPES: dict[str, type] = {"int": int, "float": float, "string": str, "bool": bool}
_ID, _TIME, _DATA = attrgetter("id"), attrgetter("time"), attrgetter("data")
_MSGSPEC_PATH = re.compile(r" - at `\$(.*)`$")

_INT64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
EventTime = (
    Annotated[int, msgspec.Meta(ge=0, le=MAX_TIME_MS)] | Annotated[datetime, msgspec.Meta(tz=True)]
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


class _IdOnly(msgspec.Struct):
    """Just enough of an envelope to name a bad event in its error."""

    id: Any = None
    type: Any = None


@dataclass(frozen=True, slots=True)
class EventError:
    """Why the event at ``index`` (0-based, in request order) was rejected."""

    index: int
    id: str | None
    error: str
    raw: bytes = field(default=b"", repr=False, compare=False)
    """The event as it arrived (JSON), for the dead-letter store."""
    type: str | None = field(default=None, compare=False)
    """The event type it claimed, when the config has that type (else None)."""


@dataclass(slots=True)
class TypeBatch:
    """The accepted events of one type, as columns in request order.

    ``index`` holds each event's position in the request, ``time_ms`` its event time, and
    ``rows`` its decoded ``data`` struct; field columns are built from ``rows`` on first use.
    """

    event: EventSpec
    index: npt.NDArray[np.int64]
    ids: list[str]
    time_ms: npt.NDArray[np.int64]
    rows: list[Any]
    _values: dict[str, list[Any]] = field(default_factory=dict)
    _numbers: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    _groups: dict[tuple[str, ...], tuple[npt.NDArray[np.int64], list[tuple[Any, ...]]]] = field(
        default_factory=dict
    )

    def __len__(self) -> int:
        return len(self.ids)

    def group_codes(
        self, names: tuple[str, ...]
    ) -> tuple[npt.NDArray[np.int64], list[tuple[Any, ...]]]:
        """The events grouped by the values of ``names``: a code per event, and for each code
        the tuple of values (None where absent). Cached, as several metrics share it."""
        cached = self._groups.get(names)
        if cached is not None:
            return cached
        codes, keys = _factorize(self.values(names[0]))
        groups = [(k,) for k in keys]
        for name in names[1:]:
            more, more_keys = _factorize(self.values(name))
            pairs, codes = np.unique(codes * len(more_keys) + more, return_inverse=True)
            width = len(more_keys)
            groups = [(*groups[p // width], more_keys[p % width]) for p in pairs.tolist()]
        self._groups[names] = (codes, groups)
        return codes, groups

    @classmethod
    def concat(cls, parts: Sequence[TypeBatch], offsets: Sequence[int]) -> TypeBatch:
        """Type batches of one event type joined, each ``index`` shifted by its offset."""
        first = parts[0]
        if len(parts) == 1 and offsets[0] == 0:
            return first
        index = np.concatenate([p.index + o for p, o in zip(parts, offsets, strict=True)])
        ids = [i for p in parts for i in p.ids]
        times = np.concatenate([p.time_ms for p in parts])
        return cls(first.event, index, ids, times, [r for p in parts for r in p.rows])

    def values(self, name: str) -> list[Any]:
        """The field ``name`` of every event, None where it is absent."""
        column = self._values.get(name)
        if column is None:
            if self.rows and name in self.rows[0].__struct_fields__:
                column = list(map(attrgetter(name), self.rows))
            else:
                column = [None] * len(self.ids)
            self._values[name] = column
        return column

    def numbers(self, name: str) -> npt.NDArray[np.float64]:
        """The numeric field ``name`` as float64, NaN where it is absent."""
        column = self._numbers.get(name)
        if column is None:
            column = np.array(self.values(name), dtype=np.float64)
            self._numbers[name] = column
        return column


def _factorize(values: list[Any]) -> tuple[npt.NDArray[np.int64], list[Any]]:
    distinct = list(dict.fromkeys(values))
    code = {v: i for i, v in enumerate(distinct)}
    return np.fromiter(map(code.__getitem__, values), np.int64, len(values)), distinct


@dataclass(slots=True)
class Batch:
    """The result of decoding one request body: accepted events by type, and the rejected ones.

    ``received`` counts every event of the request, accepted or not; ``TypeBatch.index``
    values are positions below it.
    """

    types: dict[str, TypeBatch]
    errors: list[EventError]
    received: int

    @property
    def accepted(self) -> int:
        """How many events were accepted."""
        return sum(len(t) for t in self.types.values())

    @classmethod
    def concat(cls, batches: Sequence[Batch]) -> Batch:
        """One batch holding the given ones in order, as if they had been one request."""
        if len(batches) == 1:
            return batches[0]
        parts: dict[str, list[TypeBatch]] = {}
        offsets: dict[str, list[int]] = {}
        offset = 0
        errors: list[EventError] = []
        for batch in batches:
            for name, tb in batch.types.items():
                parts.setdefault(name, []).append(tb)
                offsets.setdefault(name, []).append(offset)
            errors.extend(replace(e, index=e.index + offset) for e in batch.errors)
            offset += batch.received
        types = {name: TypeBatch.concat(tbs, offsets[name]) for name, tbs in parts.items()}
        return Batch(types, errors, offset)


def _data_struct(spec: EventSpec) -> type[msgspec.Struct]:
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for f in sorted(spec.fields, key=lambda f: not f.required):
        annotation = _field_annotation(f)
        if f.required:
            fields.append((f.name, annotation))
        else:
            fields.append((f.name, annotation | None, None))
    return msgspec.defstruct(f"{spec.name}_data", fields, gc=False)


def _field_annotation(f: FieldSpec) -> Any:
    if f.enum is not None:
        return Literal[tuple(f.enum)]
    if f.type == "int":
        return _INT64
    return _PYTHON_TYPES[f.type]


def _envelope_struct(spec: EventSpec) -> type[msgspec.Struct]:
    return msgspec.defstruct(
        f"{spec.name}_event",
        [
            ("id", EventId),
            ("time", EventTime),
            ("data", _data_struct(spec)),
            ("source", str | None, None),
            ("specversion", str | None, None),
        ],
        tag_field="type",
        tag=spec.name,
        gc=False,
    )


class EventDecoder:
    """Decodes request bodies into validated, columnar batches; build one per config, reuse it."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._envelopes = {name: _envelope_struct(spec) for name, spec in config.events.items()}
        self._spec_of = {cls: config.events[name] for name, cls in self._envelopes.items()}
        union: Any = Union[tuple(self._envelopes.values())]  # noqa: UP007 - built at run time
        self._many = msgspec.json.Decoder(list[union])
        self._one = msgspec.json.Decoder(union)
        self._raw_list = msgspec.json.Decoder(list[msgspec.Raw])
        self._max_future_ms = config.pipeline.max_future_ms

    def decode(self, body: bytes, now_ms: int) -> Batch:
        """Decode a JSON array of events, validating each against the config.

        Events whose ``time`` is more than ``max_future`` ahead of ``now_ms`` are rejected.
        Raises ``DecodeError`` (with the byte position) only when the body is not a JSON array.
        """
        try:
            events = self._many.decode(body)
        except msgspec.ValidationError:
            return self._decode_one_by_one(self._split(body), now_ms)
        except msgspec.DecodeError as exc:
            raise DecodeError(_describe_decode_error(exc, body)) from exc
        return self._columns(events, None, [], len(events), now_ms)

    def check(self, body: bytes, now_ms: int, *, lines: bool = False) -> Checked:
        """Validate a JSON array (or NDJSON with ``lines``) like ``decode``, without building
        columns: the accepted events come back as one JSON array, the body itself when every
        event is good. ``decode(payload, now_ms)`` of that array accepts every event again, so
        the log can keep it and the processor build the columns."""
        if lines:
            return self._check_raws(_lines(body), now_ms)
        try:
            events = self._many.decode(body)
        except msgspec.ValidationError:
            return self._check_raws(self._split(body), now_ms)
        except msgspec.DecodeError as exc:
            raise DecodeError(_describe_decode_error(exc, body)) from exc
        if not events:
            return Checked(None, {}, [], 0, 0, 0)
        times = _times(events)
        if bool(self._outside(times, now_ms).any()):
            return self._check_raws(self._split(body), now_ms)
        counts = Counter(self._spec_of[cls].name for cls in map(type, events))
        return Checked(body, dict(counts), [], len(events), int(times.min()), int(times.max()))

    def _check_raws(self, raws: Sequence[msgspec.Raw], now_ms: int) -> Checked:
        good: list[bytes] = []
        counts: Counter[str] = Counter()
        errors: list[EventError] = []
        low, high = MAX_TIME_MS, 0
        for index, raw in enumerate(raws):
            try:
                event = self._one.decode(raw)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                errors.append(self._event_error(index, raw, exc))
                continue
            time_ms = _to_ms(event.time)
            if self._outside(np.int64(time_ms), now_ms):
                errors.append(self._time_error(event, index, time_ms, now_ms, bytes(raw)))
                continue
            good.append(bytes(raw))
            counts[self._spec_of[type(event)].name] += 1
            low, high = min(low, time_ms), max(high, time_ms)
        if not good:
            return Checked(None, {}, errors, len(raws), 0, 0)
        return Checked(b"[" + b",".join(good) + b"]", dict(counts), errors, len(raws), low, high)

    def decode_lines(self, body: bytes, now_ms: int) -> Batch:
        """Decode NDJSON (one event per line; blank lines are skipped)."""
        return self._decode_one_by_one(_lines(body), now_ms)

    def _split(self, body: bytes) -> list[msgspec.Raw]:
        try:
            return self._raw_list.decode(body)
        except msgspec.ValidationError as exc:
            raise DecodeError(f"expected a JSON array of event objects: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise DecodeError(_describe_decode_error(exc, body)) from exc

    def _decode_one_by_one(self, raws: Sequence[msgspec.Raw], now_ms: int) -> Batch:
        good: list[Any] = []
        positions: list[int] = []
        errors: list[EventError] = []
        for index, raw in enumerate(raws):
            try:
                good.append(self._one.decode(raw))
                positions.append(index)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                errors.append(self._event_error(index, raw, exc))
        return self._columns(good, positions, errors, len(raws), now_ms)

    def _event_error(self, index: int, raw: msgspec.Raw, exc: Exception) -> EventError:
        try:
            head = msgspec.json.decode(raw, type=_IdOnly)
        except (msgspec.ValidationError, msgspec.DecodeError):
            head = _IdOnly()
        event_id = head.id if isinstance(head.id, str) else None
        message = self._describe(index, head.type, exc)
        claimed = (
            head.type if isinstance(head.type, str) and head.type in self._config.events else None
        )
        return EventError(index, event_id, message, bytes(raw), claimed)

    def _describe(self, index: int, event_type: Any, exc: Exception) -> str:
        message = str(exc)
        match = _MSGSPEC_PATH.search(message)
        where = f"events[{index}]" + (match.group(1) if match else "")
        if match:
            message = message[: match.start()]
        if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
            return f"{where}: not valid JSON ({message})"
        if where == f"events[{index}].type" or (match is None and "`type`" in message):
            known = ", ".join(sorted(self._config.events))
            if isinstance(event_type, str):
                return f"{where}: unknown event type {event_type!r} (registered: {known})"
            return f"{where}: expected 'type' to be one of the registered types ({known})"
        message = message.replace("`", "")
        message = f"{message[:1].lower()}{message[1:]}"
        if where.endswith("].time"):
            return f"{where}: {message}; expected RFC 3339 with an offset or epoch milliseconds"
        return f"{where}: {message}{self._expected_values(event_type, where)}"

    def _expected_values(self, event_type: Any, where: str) -> str:
        """For an enum field, the values it accepts, as the end of an error message."""
        spec = self._config.events.get(event_type) if isinstance(event_type, str) else None
        name = where.rpartition(".data.")[2] if ".data." in where else None
        field = spec.field(name) if spec is not None and name is not None else None
        if field is None or field.enum is None:
            return ""
        return " (expected one of: " + ", ".join(json.dumps(v) for v in field.enum) + ")"

    def _columns(
        self,
        events: list[Any],
        positions: list[int] | None,
        errors: list[EventError],
        received: int,
        now_ms: int,
    ) -> Batch:
        """Split decoded events by type into columns; ``positions`` None means 0, 1, 2, ..."""
        n = len(events)
        if n == 0:
            return Batch({}, errors, received)
        index = np.arange(n, dtype=np.int64) if positions is None else np.array(positions, np.int64)
        time_ms = _times(events)
        outside = self._outside(time_ms, now_ms)
        if outside.any():
            errors.extend(
                self._time_error(events[i], int(index[i]), int(time_ms[i]), now_ms)
                for i in np.flatnonzero(outside).tolist()
            )
            keep = ~outside
            events = list(compress(events, keep.tolist()))
            index, time_ms = index[keep], time_ms[keep]
            n = len(events)
        errors.sort(key=lambda e: e.index)
        if n == 0:
            return Batch({}, errors, received)
        types: dict[str, TypeBatch] = {}
        classes = list(map(type, events))
        kinds = list(dict.fromkeys(classes))
        if len(kinds) == 1:
            groups = [(kinds[0], events, index, time_ms)]
        else:
            code = {cls: i for i, cls in enumerate(kinds)}
            codes = np.fromiter(map(code.__getitem__, classes), np.int64, n)
            order = np.argsort(codes, kind="stable")
            ends = np.cumsum(np.bincount(codes, minlength=len(kinds))).tolist()
            groups = []
            for cls, low, high in zip(kinds, [0, *ends[:-1]], ends, strict=True):
                members = order[low:high]
                chosen = [events[i] for i in members.tolist()]
                groups.append((cls, chosen, index[members], time_ms[members]))
        for cls, chosen, where, times in groups:
            spec = self._spec_of[cls]
            ids = list(map(_ID, chosen))
            types[spec.name] = TypeBatch(spec, where, ids, times, list(map(_DATA, chosen)))
        return Batch(types, errors, received)

    def _outside(self, times: Any, now_ms: int) -> Any:
        """Where ``times`` (epoch ms, an array or one value) may not be accepted: before 1970,
        or more than ``max_future`` ahead of ``now_ms``."""
        return (times > now_ms + self._max_future_ms) | (times < 0)

    def _time_error(
        self, event: Any, index: int, time_ms: int, now_ms: int, raw: bytes = b""
    ) -> EventError:
        if time_ms < 0:
            message = "before 1970-01-01T00:00:00Z; expected a time from 1970 on"
        else:
            ahead = format_duration_ms(-((now_ms - time_ms) // 1000) * 1000)  # whole seconds
            limit = format_duration_ms(self._max_future_ms)
            message = f"{ahead} ahead of the server clock; at most {limit} is accepted (max_future)"
        # without the bytes as sent (``decode`` does not keep them), the event re-encoded
        raw = raw or msgspec.json.encode(event)
        claimed = self._spec_of[type(event)].name
        return EventError(index, event.id, f"events[{index}].time: {message}", raw, claimed)


@dataclass(frozen=True, slots=True)
class Checked:
    """What ``EventDecoder.check`` found in a request body."""

    payload: bytes | None
    """The accepted events as a JSON array, in request order (None when there are none)."""
    counts: dict[str, int]
    """Accepted events by type."""
    errors: list[EventError]
    """The rejected events, by index."""
    received: int
    """Every event of the request, accepted or not."""
    min_time_ms: int
    """The earliest event time accepted (0 when none is)."""
    max_time_ms: int
    """The latest event time accepted (0 when none is)."""

    @property
    def accepted(self) -> int:
        """How many events were accepted."""
        return sum(self.counts.values())


def _lines(body: bytes) -> list[msgspec.Raw]:
    return [msgspec.Raw(line) for line in body.split(b"\n") if line.strip()]


def _times(events: list[Any]) -> npt.NDArray[np.int64]:
    try:
        return np.fromiter(map(_TIME, events), np.int64, len(events))
    except TypeError:  # some times are RFC 3339 strings
        return np.array([_to_ms(t) for t in map(_TIME, events)], dtype=np.int64)


def _to_ms(value: int | datetime) -> int:
    if isinstance(value, datetime):
        return (value - _EPOCH) // _ONE_MS
    return value


def _describe_decode_error(exc: msgspec.DecodeError, body: bytes) -> str:
    message = str(exc)
    if "truncated" in message:
        message = f"{message} (the body ends at byte {len(body)} before the JSON is complete)"
    return f"request body is not valid JSON: {message}"
