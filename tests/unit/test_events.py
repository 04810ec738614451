import json

import numpy as np
import pytest

from pulseboard.config import Config
from pulseboard.errors import DecodeError
from pulseboard.events import Batch, EventDecoder, decode_batch, encode_batch
from tests.conftest import make_config

NOW_MS = 1_767_225_600_000


def body(*events: object) -> bytes:
    return json.dumps(list(events)).encode()


def order(i: int, **data: object) -> dict[str, object]:
    return {
        "id": f"o{i}",
        "type": "order",
        "time": NOW_MS - 1_000,
        "data": {"amount": 10.0, **data},
    }


def test_valid_batch_becomes_columns(shop_config: Config) -> None:
    decoder = EventDecoder(shop_config)
    batch = decoder.decode(
        body(
            order(1, region="eu"),
            {
                "id": "p1",
                "type": "page_view",
                "time": "2026-01-01T00:00:01.250Z",
                "data": {"path": "/", "user": "ann"},
            },
            order(2, amount=3, extra={"kept": True}),
        ),
        NOW_MS,
    )
    assert batch.errors == []
    assert batch.accepted == 3
    orders = batch.types["order"]
    assert orders.ids == ["o1", "o2"]
    assert orders.index.tolist() == [0, 2]
    assert orders.values("region") == ["eu", None]
    assert orders.numbers("amount").tolist() == [10.0, 3.0]
    assert np.isnan(orders.numbers("items")).all()
    views = batch.types["page_view"]
    assert views.time_ms.tolist() == [1_767_225_601_250]
    assert views.index.tolist() == [1]


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (
            {"id": "x", "type": "order", "time": NOW_MS, "data": {"amount": "12"}},
            "events[1].data.amount: expected float, got str",
        ),
        (
            {"id": "x", "type": "order", "time": NOW_MS, "data": {}},
            "events[1].data: object missing required field amount",
        ),
        (
            {"id": "x", "type": "order", "time": NOW_MS, "data": {"amount": 1, "region": "mars"}},
            "events[1].data.region: invalid enum value 'mars'",
        ),
        (
            {"id": "x", "type": "refund", "time": NOW_MS, "data": {}},
            "events[1].type: unknown event type 'refund' (registered: order, page_view)",
        ),
        (
            {"id": "x", "type": "order", "time": "yesterday", "data": {"amount": 1}},
            "events[1].time: invalid RFC3339 encoded datetime; expected RFC 3339 with an offset",
        ),
        (
            {"id": "x", "type": "order", "time": "2026-01-01T00:00:00", "data": {"amount": 1}},
            "events[1].time: expected datetime with a timezone component; expected RFC 3339",
        ),
        (
            {"id": "", "type": "order", "time": NOW_MS, "data": {"amount": 1}},
            "events[1].id: expected str of length >= 1",
        ),
        (
            {"type": "order", "time": NOW_MS, "data": {"amount": 1}},
            "events[1]: object missing required field id",
        ),
        (
            {"id": "x", "type": "order", "time": NOW_MS + 301_000, "data": {"amount": 1}},
            "events[1].time: 301s ahead of the server clock; at most 5m is accepted (max_future)",
        ),
        (
            {"id": "x", "type": "order", "time": -5, "data": {"amount": 1}},
            "events[1].time: expected int >= 0",
        ),
        ("not an object", "events[1]: expected object, got str"),
        (
            {"id": "x", "type": "order", "time": NOW_MS, "data": {"amount": 1, "items": 2**63}},
            "events[1].data.items: expected int <= 9223372036854775807",
        ),
        (
            {"id": "x", "type": "order", "time": "1969-12-31T23:59:59Z", "data": {"amount": 1}},
            "events[1].time: before 1970-01-01T00:00:00Z; expected a time from 1970 on",
        ),
        (
            {"id": "x", "type": "order", "time": NOW_MS, "data": {"amount": 1, "region": "mars"}},
            "events[1].data.region: invalid enum value 'mars' "
            '(expected one of: "eu", "us", "apac")',
        ),
    ],
)
def test_bad_event_is_rejected_and_neighbours_survive(
    shop_config: Config, event: object, error: str
) -> None:
    batch = EventDecoder(shop_config).decode(body(order(0), event, order(2)), NOW_MS)
    assert batch.types["order"].ids == ["o0", "o2"]
    assert batch.received == 3
    assert len(batch.errors) == 1
    (problem,) = batch.errors
    assert problem.index == 1
    assert problem.error.startswith(error), problem.error
    expected_id = event.get("id") if isinstance(event, dict) else None
    assert problem.id == (expected_id if isinstance(expected_id, str) else None)


@pytest.mark.parametrize(
    "payload",
    [
        b"[]",
        json.dumps([{"id": "1"}]).encode(),
        json.dumps([order(1) | {"time": NOW_MS + 10**9}]).encode(),
    ],
)
def test_batch_with_nothing_accepted(shop_config: Config, payload: bytes) -> None:
    batch = EventDecoder(shop_config).decode(payload, NOW_MS)
    assert batch.types == {}
    assert batch.accepted == 0
    assert len(batch.errors) == batch.received == len(json.loads(payload))
    assert EventDecoder(shop_config).decode_lines(b"", NOW_MS).received == 0


def test_a_data_field_named_type_is_not_the_event_type() -> None:
    config = make_config(
        """
        events: {order: {fields: {type: {type: string, enum: [a, b]}}}}
        metrics: [{name: n, event: order, agg: count, window: 1m}]
        """
    )
    event = {"id": "1", "type": "order", "time": NOW_MS, "data": {"type": "c"}}
    (problem,) = EventDecoder(config).decode(body(event), NOW_MS).errors
    assert problem.error == (
        'events[0].data.type: invalid enum value \'c\' (expected one of: "a", "b")'
    )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'[{"id": 1', "request body is not valid JSON"),
        (b'{"id": "x"}', "expected a JSON array of event objects"),
        (b"", "request body is not valid JSON"),
    ],
)
def test_body_that_does_not_parse(shop_config: Config, payload: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        EventDecoder(shop_config).decode(payload, NOW_MS)


def test_ndjson_lines(shop_config: Config) -> None:
    lines = b"\n".join(json.dumps(e).encode() for e in (order(1), order(2, amount="x"))) + b"\n\n"
    batch = EventDecoder(shop_config).decode_lines(lines, NOW_MS)
    assert batch.types["order"].ids == ["o1"]
    assert [(e.index, e.id) for e in batch.errors] == [(1, "o2")]


def test_concat_shifts_positions_and_keeps_columns(shop_config: Config) -> None:
    decoder = EventDecoder(shop_config)
    first = decoder.decode(body(order(1, region="eu"), order(2, amount="bad")), NOW_MS)
    second = decoder.decode(body(order(3, region="us")), NOW_MS)
    wire = decode_batch(encode_batch(second), shop_config)
    joined = Batch.concat([first, wire])
    assert joined.received == 3
    assert [(e.index, e.id) for e in joined.errors] == [(1, "o2")]
    orders = joined.types["order"]
    assert orders.ids == ["o1", "o3"]
    assert orders.index.tolist() == [0, 2]
    assert orders.values("region") == ["eu", "us"]
    assert orders.numbers("amount").tolist() == [10.0, 10.0]


def test_columnar_wire_format_round_trips(shop_config: Config) -> None:
    decoder = EventDecoder(shop_config)
    original = decoder.decode(body(order(1, region="us", items=3), order(2, amount="bad")), NOW_MS)
    copy = decode_batch(encode_batch(original), shop_config)
    assert copy.received == 2
    orders = copy.types["order"]
    assert orders.ids == ["o1"]
    assert orders.index.tolist() == [0]
    assert orders.values("region") == ["us"]
    assert orders.values("items") == [3]
    assert orders.numbers("amount").tolist() == [10.0]


def test_wire_format_rejects_garbage(shop_config: Config) -> None:
    with pytest.raises(DecodeError, match="unreadable"):
        decode_batch(b"\x01\x02", shop_config)
    good = encode_batch(EventDecoder(shop_config).decode(body(order(1)), NOW_MS))
    corrupt = decode_batch(good.replace(b"amount", b"amounX"), shop_config)
    assert corrupt.types["order"].values("amount") == [None]  # an unknown column is ignored
    truncated = good[: good.index(b"region") + 7]
    with pytest.raises(DecodeError):
        decode_batch(truncated, shop_config)
