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

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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


@dataclass(slots=True)
class TypeBatch:
    """The accepted events of one type, as columns in request order.

    ``index`` holds each event's position in the request, ``time_ms`` its event time.
    ``rows`` are the decoded ``data`` structs; columns are built from them on first use.
    """

    event: EventSpec
    index: npt.NDArray[np.int64]
    ids: list[str]
    time_ms: npt.NDArray[np.int64]
    rows: list[Any]
    _values: dict[str, list[Any]] = field(default_factory=dict)
    _numbers: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def concat(cls, parts: Sequence[TypeBatch], offsets: Sequence[int]) -> TypeBatch:
        """Type batches of one event type joined, each ``index`` shifted by its offset."""
        first = parts[0]
        if len(parts) == 1 and offsets[0] == 0:
            return first
        index = np.concatenate([p.index + o for p, o in zip(parts, offsets, strict=True)])
        ids = [i for p in parts for i in p.ids]
        times = np.concatenate([p.time_ms for p in parts])
        if all(p.rows for p in parts):
            return cls(first.event, index, ids, times, [r for p in parts for r in p.rows])
        names = [f.name for f in first.event.fields]
        columns = {n: [v for p in parts for v in p.values(n)] for n in names}
        return cls(first.event, index, ids, times, [], columns)

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


@dataclass(slots=True)
class Batch:
    """The result of decoding one request body: accepted events by type, and the rejected ones.

    ``time_ms`` holds the event time of every accepted event in request order
    (indexed like ``TypeBatch.index`` after ranking), which the engine uses to advance
    stream time event by event.
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
        offsets: dict[int, int] = {}
        offset = 0
        errors: list[EventError] = []
        for batch in batches:
            for tb in batch.types.values():
                parts.setdefault(tb.event.name, []).append(tb)
                offsets[id(tb)] = offset
            errors.extend(EventError(e.index + offset, e.id, e.error) for e in batch.errors)
            offset += batch.received
        types = {
            name: TypeBatch.concat(tbs, [offsets[id(t)] for t in tbs])
            for name, tbs in parts.items()
        }
        return Batch(types, errors, offset)

    def arrival(self) -> tuple[list[str], npt.NDArray[np.int64]]:
        """Ids and times of all accepted events in request order."""
        if len(self.types) == 1:
            only = next(iter(self.types.values()))
            return only.ids, only.time_ms
        order = np.concatenate([t.index for t in self.types.values()])
        ids = [i for t in self.types.values() for i in t.ids]
        times = np.concatenate([t.time_ms for t in self.types.values()])
        rank = np.argsort(order, kind="stable")
        ids_array = np.array(ids, dtype=object)[rank]
        return ids_array.tolist(), times[rank]


_WIRE_VERSION = 1


def encode_batch(batch: Batch) -> bytes:
    """The accepted events of ``batch`` as compact columnar msgpack (rejected ones are left out).

    Every field the event type declares is kept; the inverse is ``decode_batch``.
    """
    types = []
    for tb in batch.types.values():
        columns = {f.name: tb.values(f.name) for f in tb.event.fields}
        types.append((tb.event.name, tb.index.tobytes(), tb.ids, tb.time_ms.tobytes(), columns))
    return msgspec.msgpack.encode((_WIRE_VERSION, batch.received, types))


def decode_batch(data: bytes, config: Config) -> Batch:
    """A batch from ``encode_batch`` bytes, checked against ``config``'s event types."""
    try:
        version, received, types = msgspec.msgpack.decode(data)
        if version != _WIRE_VERSION:
            raise DecodeError(f"batch has wire format version {version}, expected {_WIRE_VERSION}")
        out: dict[str, TypeBatch] = {}
        for name, index, ids, times, columns in types:
            spec = config.events.get(name)
            if spec is None:
                raise DecodeError(f"batch holds events of type {name!r}, which the config lacks")
            out[name] = TypeBatch(
                spec,
                np.frombuffer(index, dtype=np.int64),
                ids,
                np.frombuffer(times, dtype=np.int64),
                [],
                dict(columns),
            )
    except (msgspec.DecodeError, TypeError, ValueError) as exc:
        raise DecodeError(f"batch bytes are unreadable: {exc}") from exc
    return Batch(out, [], received)


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
            raise DecodeError(_describe_decode_error(exc)) from exc
        return self._columns(events, list(range(len(events))), [], len(events), now_ms)

    def decode_lines(self, body: bytes, now_ms: int) -> Batch:
        """Decode NDJSON (one event per line; blank lines are skipped)."""
        lines = [line for line in body.split(b"\n") if line.strip()]
        return self._decode_one_by_one([msgspec.Raw(line) for line in lines], now_ms)

    def _split(self, body: bytes) -> list[msgspec.Raw]:
        try:
            return self._raw_list.decode(body)
        except msgspec.ValidationError as exc:
            raise DecodeError(f"expected a JSON array of event objects: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise DecodeError(_describe_decode_error(exc)) from exc

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
        return EventError(index, event_id, self._describe(index, head.type, exc))

    def _describe(self, index: int, event_type: Any, exc: Exception) -> str:
        message = str(exc)
        match = _MSGSPEC_PATH.search(message)
        where = f"events[{index}]" + (match.group(1) if match else "")
        if match:
            message = message[: match.start()]
        if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
            return f"{where}: not valid JSON ({message})"
        if where.endswith(".type") or (match is None and "type" in message):
            known = ", ".join(sorted(self._config.events))
            if isinstance(event_type, str):
                return f"{where}: unknown event type {event_type!r} (registered: {known})"
            return f"{where}: expected 'type' to be one of the registered types ({known})"
        message = message.replace("`", "")
        message = f"{message[:1].lower()}{message[1:]}"
        if where.endswith("].time"):
            return f"{where}: {message}; expected RFC 3339 with an offset or epoch milliseconds"
        return f"{where}: {message}"

    def _columns(
        self,
        events: list[Any],
        positions: list[int],
        errors: list[EventError],
        received: int,
        now_ms: int,
    ) -> Batch:
        limit_ms = now_ms + self._max_future_ms
        types: dict[str, TypeBatch] = {}
        classes = list(map(type, events))
        kinds = set(classes)
        where = np.array(positions, dtype=np.int64)
        for cls in kinds:
            if len(kinds) == 1:
                chosen, index = events, where
            else:
                members = np.flatnonzero([c is cls for c in classes])
                chosen = [events[i] for i in members.tolist()]
                index = where[members]
            batch = self._type_batch(self._spec_of[cls], chosen, index, limit_ms, errors)
            if batch is not None:
                types[batch.event.name] = batch
        errors.sort(key=lambda e: e.index)
        return Batch(types, errors, received)

    def _type_batch(
        self,
        spec: EventSpec,
        events: list[Any],
        index: npt.NDArray[np.int64],
        limit_ms: int,
        errors: list[EventError],
    ) -> TypeBatch | None:
        times = list(map(_TIME, events))
        try:
            time_ms = np.array(times, dtype=np.int64)
        except (TypeError, OverflowError):
            time_ms = np.array([_to_ms(t) for t in times], dtype=np.int64)
        future = time_ms > limit_ms
        if future.any():
            for i in np.flatnonzero(future).tolist():
                ahead = format_duration_ms(int(time_ms[i]) - limit_ms + self._max_future_ms)
                errors.append(
                    EventError(
                        int(index[i]),
                        events[i].id,
                        f"events[{int(index[i])}].time: {ahead} ahead of the server clock; "
                        f"at most {format_duration_ms(self._max_future_ms)} is accepted "
                        "(max_future)",
                    )
                )
            keep = ~future
            events = [e for e, k in zip(events, keep.tolist(), strict=True) if k]
            index, time_ms = index[keep], time_ms[keep]
            if not events:
                return None
        ids = list(map(_ID, events))
        return TypeBatch(spec, index, ids, time_ms, list(map(_DATA, events)))


def _to_ms(value: int | datetime) -> int:
    if isinstance(value, datetime):
        return (value - _EPOCH) // _ONE_MS
    return value


def _describe_decode_error(exc: msgspec.DecodeError) -> str:
    message = str(exc)
    return f"request body is not valid JSON: {message}"
