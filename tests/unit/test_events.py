import json

import numpy as np
import pytest

from pulseboard.config import Config
from pulseboard.errors import DecodeError
from pulseboard.events import Batch, EventDecoder
from tests.conftest import make_config

NOW_MS = 1_767_225_600_000
FUTURE = NOW_MS + 301_000  # beyond max_future (5m)


def body(*events: object) -> bytes:
    return json.dumps(list(events)).encode()


def order(i: int, **data: object) -> dict[str, object]:
    return {
        "id": f"o{i}",
        "type": "order",
        "time": NOW_MS - 1_000,
        "data": {"amount": 10.0, **data},
    }


def view(i: int, time: object = NOW_MS - 2_000) -> dict[str, object]:
    return {
        "id": f"p{i}",
        "type": "page_view",
        "time": time,
        "data": {"path": f"/p{i}", "user": "u"},
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
    second = decoder.decode(body(view(1), order(3, region="us", items=2)), NOW_MS)
    joined = Batch.concat([first, second])
    assert joined.received == 4
    assert [(e.index, e.id) for e in joined.errors] == [(1, "o2")]
    orders = joined.types["order"]
    assert orders.ids == ["o1", "o3"]
    assert orders.index.tolist() == [0, 3]
    assert orders.values("region") == ["eu", "us"]
    assert orders.values("items") == [None, 2]
    assert orders.numbers("amount").tolist() == [10.0, 10.0]
    assert joined.types["page_view"].index.tolist() == [2]
    assert joined.types["page_view"].values("path") == ["/p1"]


# --- check: what ingest validates and logs ------------------------------------------------


def accepted(batch: Batch) -> list[tuple[str, str, int, dict[str, object]]]:
    """Every accepted event as (type, id, time_ms, fields present), in request order."""
    rows = []
    for name, tb in batch.types.items():
        names = [f.name for f in tb.event.fields]
        columns = [tb.values(n) for n in names]
        for k, (index, event_id, time_ms) in enumerate(
            zip(tb.index.tolist(), tb.ids, tb.time_ms.tolist(), strict=True)
        ):
            fields = {n: c[k] for n, c in zip(names, columns, strict=True) if c[k] is not None}
            rows.append((index, (name, event_id, time_ms, fields)))
    return [row for _, row in sorted(rows, key=lambda r: r[0])]


def test_check_payload_holds_exactly_the_good_events(shop_config: Config) -> None:
    decoder = EventDecoder(shop_config)
    events = [
        order(1, region="eu", items=2),
        order(2, amount="12"),  # bad: a string amount
        view(1, time="2026-01-01T00:00:01.250+01:00"),
        {"id": "r1", "type": "refund", "time": NOW_MS, "data": {}},  # bad: unknown type
        order(3, amount=3, extra={"kept": True}) | {"time": NOW_MS - 50},
        order(4) | {"time": FUTURE},  # bad: too far ahead
        "not an object",  # bad
        order(5, user='ann\u00e9 "q"') | {"time": NOW_MS + 300_000},  # at max_future: good
    ]
    payload = body(*events)
    checked = decoder.check(payload, NOW_MS)
    assert checked.payload is not None
    assert checked.payload != payload
    again = decoder.decode(checked.payload, NOW_MS)
    assert again.errors == []
    assert again.received == checked.accepted == 4
    assert accepted(again) == [
        ("order", "o1", NOW_MS - 1_000, {"amount": 10.0, "region": "eu", "items": 2}),
        ("page_view", "p1", 1_767_222_001_250, {"path": "/p1", "user": "u"}),
        ("order", "o3", NOW_MS - 50, {"amount": 3.0}),
        ("order", "o5", NOW_MS + 300_000, {"amount": 10.0, "user": 'ann\u00e9 "q"'}),
    ]
    # the same errors, with the same indices and messages, as decode finds in the request
    direct = decoder.decode(payload, NOW_MS)
    assert accepted(direct) == accepted(again)
    assert [(e.index, e.id, e.error) for e in checked.errors] == [
        (e.index, e.id, e.error) for e in direct.errors
    ]
    assert [(e.index, e.id) for e in checked.errors] == [(1, "o2"), (3, "r1"), (5, "o4"), (6, None)]
    assert checked.received == 8
    assert checked.counts == {"order": 3, "page_view": 1}
    assert (checked.min_time_ms, checked.max_time_ms) == (1_767_222_001_250, NOW_MS + 300_000)


def test_check_gives_back_a_good_body_unchanged(shop_config: Config) -> None:
    payload = body(view(1, time=NOW_MS - 7_000), order(1), order(2) | {"time": NOW_MS + 5})
    checked = EventDecoder(shop_config).check(payload, NOW_MS)
    assert checked.payload == payload
    assert checked.errors == []
    assert checked.received == 3
    assert checked.counts == {"page_view": 1, "order": 2}
    assert (checked.min_time_ms, checked.max_time_ms) == (NOW_MS - 7_000, NOW_MS + 5)


def test_check_ndjson_lines(shop_config: Config) -> None:
    decoder = EventDecoder(shop_config)
    events = (order(1), order(2, amount="x"), view(1), order(3) | {"time": FUTURE})
    lines = b"\n".join(json.dumps(e).encode() for e in events) + b"\n\n"
    checked = decoder.check(lines, NOW_MS, lines=True)
    assert checked.payload is not None
    assert accepted(decoder.decode(checked.payload, NOW_MS)) == [
        ("order", "o1", NOW_MS - 1_000, {"amount": 10.0}),
        ("page_view", "p1", NOW_MS - 2_000, {"path": "/p1", "user": "u"}),
    ]
    direct = decoder.decode_lines(lines, NOW_MS)
    assert [(e.index, e.id, e.error) for e in checked.errors] == [
        (e.index, e.id, e.error) for e in direct.errors
    ]
    assert [(e.index, e.id) for e in checked.errors] == [(1, "o2"), (3, "o3")]
    assert checked.received == 4
    assert checked.counts == {"order": 1, "page_view": 1}
    assert (checked.min_time_ms, checked.max_time_ms) == (NOW_MS - 2_000, NOW_MS - 1_000)


@pytest.mark.parametrize("lines", [False, True])
@pytest.mark.parametrize("time", [FUTURE, "2026-01-01T00:05:01Z"])
def test_check_rejects_the_future_as_decode_does(
    shop_config: Config, lines: bool, time: object
) -> None:
    decoder = EventDecoder(shop_config)
    events = (order(1), order(2) | {"time": time})
    payload = "\n".join(map(json.dumps, events)).encode() if lines else body(*events)
    checked = decoder.check(payload, NOW_MS, lines=lines)
    direct = (decoder.decode_lines if lines else decoder.decode)(payload, NOW_MS)
    message = "events[1].time: 301s ahead of the server clock; at most 5m is accepted (max_future)"
    (problem,) = checked.errors
    assert problem.error == direct.errors[0].error == message
    assert (problem.index, problem.id) == (1, "o2")
    assert json.loads(problem.raw)["id"] == "o2"
    assert checked.counts == {"order": 1}
    assert checked.payload is not None
    assert accepted(decoder.decode(checked.payload, NOW_MS)) == accepted(direct)


@pytest.mark.parametrize(
    ("payload", "lines", "received"),
    [
        (b"[]", False, 0),
        (b"", True, 0),
        (b"\n \n", True, 0),
        (body(order(1, amount="x"), order(2) | {"time": FUTURE}), False, 2),
    ],
)
def test_check_with_nothing_accepted(
    shop_config: Config, payload: bytes, lines: bool, received: int
) -> None:
    checked = EventDecoder(shop_config).check(payload, NOW_MS, lines=lines)
    assert checked.payload is None
    assert checked.counts == {}
    assert checked.accepted == 0
    assert len(checked.errors) == checked.received == received
    assert (checked.min_time_ms, checked.max_time_ms) == (0, 0)


def test_check_body_that_does_not_parse(shop_config: Config) -> None:
    decoder = EventDecoder(shop_config)
    with pytest.raises(DecodeError, match="request body is not valid JSON"):
        decoder.check(b'[{"id": 1', NOW_MS)
    with pytest.raises(DecodeError, match="expected a JSON array of event objects"):
        decoder.check(b'{"id": "x"}', NOW_MS)
