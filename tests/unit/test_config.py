"""The config: parsing the YAML model, and reporting every problem with its location."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pulseboard import config as config_module
from pulseboard.config import (
    Config,
    DashboardSpec,
    EventSpec,
    FieldSpec,
    MetricSpec,
    PanelSpec,
    PipelineSpec,
    RetentionSpec,
    StorageSpec,
    load_config,
    mask_url,
    parse_config,
    run_check,
    summarize,
)
from pulseboard.errors import ConfigError
from pulseboard.events import EventDecoder
from pulseboard.expr import parse

DEMO = Path(config_module.__file__).with_name("demo.yaml")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

EXAMPLE = """
storage: {data_dir: ./pulseboard-data, log: sqlite, hot: memory, history: sqlite}
pipeline: {tick: 1s, lateness: 30s, max_future: 5m, reconcile_every: 1m, takeover_after: 45s,
           distinct_exact_threshold: 1000, retention: {hot: 1h, history: 90d, log: 24h}}
events:
  order:
    fields:
      amount: {type: float, required: true}
      region: {type: string, enum: [eu, us, apac]}
metrics:
  - {name: orders, event: order, agg: count, window: 1m, group_by: [region]}
  - {name: revenue, event: order, agg: sum, field: amount, window: 1m}
  - {name: orders_last_5m, event: order, agg: count, window: 5m, every: 1s}
  - {name: big_orders, event: order, agg: count, window: 1m, where: "amount >= 100",
     max_label_sets: 1000}
dashboards:
  - {id: operations, title: Operations,
     panels: [{metric: orders, kind: timeseries}, {metric: revenue, kind: stat, title: Revenue}]}
"""

ORDER = EventSpec(
    "order",
    (
        FieldSpec("amount", "float", required=True),
        FieldSpec("region", "string", enum=("eu", "us", "apac")),
    ),
)


def problems_of(data: object) -> list[str]:
    """The problems parse_config reports for ``data``; fails the test if it accepts it."""
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.problems


def write(tmp_path: Path, text: str, name: str = "pulseboard.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- valid configs --------------------------------------------------------------------------


def test_example_parses_into_the_expected_objects() -> None:
    config = parse_config(yaml.safe_load(EXAMPLE))

    assert config == Config(
        events={"order": ORDER},
        metrics=(
            MetricSpec("orders", "order", "count", window_ms=60_000, group_by=("region",)),
            MetricSpec("revenue", "order", "sum", window_ms=60_000, field="amount"),
            MetricSpec("orders_last_5m", "order", "count", window_ms=300_000, every_ms=1_000),
            MetricSpec(
                "big_orders", "order", "count", window_ms=60_000, where=parse("amount >= 100")
            ),
        ),
        storage=StorageSpec(),
        pipeline=PipelineSpec(
            tick_ms=1_000,
            lateness_ms=30_000,
            max_future_ms=300_000,
            reconcile_every_ms=60_000,
            takeover_after_ms=45_000,
            retention=RetentionSpec(hot_ms=3_600_000, history_ms=7_776_000_000, log_ms=86_400_000),
            distinct_exact_threshold=1000,
        ),
        dashboards=(
            DashboardSpec(
                "operations",
                "Operations",
                (PanelSpec("orders", "timeseries"), PanelSpec("revenue", "stat", "Revenue")),
            ),
        ),
    )
    assert config.metrics[2].bucket_ms == 1_000
    big_orders = config.metric("big_orders")
    assert big_orders is not None and big_orders.where is not None
    assert big_orders.where.evaluate({"amount": 100.0}) is True
    assert big_orders.where.evaluate({"amount": 99.5}) is False


def test_only_events_and_metrics_are_required_the_rest_takes_defaults() -> None:
    config = parse_config(
        {
            "events": {"ping": {}},
            "metrics": [{"name": "pings", "event": "ping", "agg": "count", "window": "10s"}],
        }
    )

    assert config == Config(
        events={"ping": EventSpec("ping", ())},
        metrics=(MetricSpec("pings", "ping", "count", window_ms=10_000),),
    )
    assert config.storage == StorageSpec("./pulseboard-data", "sqlite", "memory", "sqlite")
    assert config.pipeline.lateness_ms == 30_000
    assert config.dashboards == ()


def test_values_are_parsed_not_just_accepted() -> None:
    data = {
        "storage": {
            "data_dir": "/var/lib/pb",
            "log": "redis://localhost:6379/0",
            "hot": "rediss://cache:6380/1",
            "history": "postgresql://pb@db:5432/pb",
        },
        "pipeline": {"tick": "500ms", "lateness": "2m", "retention": {"hot": "3h"}},
        "events": {
            "e": {
                "fields": {
                    "n": {"type": "int", "enum": [1, 2, 3]},
                    "x": {"type": "float", "required": True},
                    "b": {"type": "bool", "required": False, "enum": [True]},
                }
            }
        },
        "metrics": [
            {
                "name": "m",
                "event": "e",
                "agg": "p99",
                "field": "n",
                "window": "2h",
                "every": "2h",
                "group_by": ["b", "n"],
                "max_label_sets": 7,
            }
        ],
    }

    config = parse_config(data)

    assert config.storage == StorageSpec(
        "/var/lib/pb",
        "redis://localhost:6379/0",
        "rediss://cache:6380/1",
        "postgresql://pb@db:5432/pb",
    )
    assert (config.pipeline.tick_ms, config.pipeline.lateness_ms) == (500, 120_000)
    assert config.pipeline.retention == RetentionSpec(hot_ms=10_800_000)
    assert config.events["e"].fields == (
        FieldSpec("n", "int", enum=(1, 2, 3)),
        FieldSpec("x", "float", required=True),
        FieldSpec("b", "bool", enum=(True,)),
    )
    # every equal to the window is a tumbling window
    assert config.metrics == (
        MetricSpec("m", "e", "p99", 7_200_000, field="n", group_by=("b", "n"), max_label_sets=7),
    )


def test_count_accepts_a_field_of_any_type_and_distinct_any_field() -> None:
    data = yaml.safe_load(EXAMPLE)
    del data["dashboards"]
    data["metrics"] = [
        {"name": "a", "event": "order", "agg": "count", "field": "region", "window": "1m"},
        {"name": "b", "event": "order", "agg": "distinct", "field": "region", "window": "1m"},
        {"name": "c", "event": "order", "agg": "distinct", "field": "amount", "window": "1m"},
    ]

    config = parse_config(data)

    assert [(m.agg, m.field) for m in config.metrics] == [
        ("count", "region"),
        ("distinct", "region"),
        ("distinct", "amount"),
    ]


@pytest.mark.parametrize(
    ("ftype", "enum", "inside", "outside"),
    [
        pytest.param("string", ["eu", "us"], "us", "apac", id="string"),
        pytest.param("int", [1, 2], 2, 3, id="int"),
        pytest.param("bool", [True], True, False, id="bool"),
    ],
)
def test_an_enum_the_check_accepts_is_enforced_by_the_event_decoder(
    ftype: str, enum: list[object], inside: object, outside: object
) -> None:
    config = parse_config(
        {
            "events": {"e": {"fields": {"f": {"type": ftype, "enum": enum}}}},
            "metrics": [{"name": "m", "event": "e", "agg": "count", "window": "1m"}],
        }
    )
    events = [
        {"id": "in", "type": "e", "time": 0, "data": {"f": inside}},
        {"id": "out", "type": "e", "time": 0, "data": {"f": outside}},
    ]

    batch = EventDecoder(config).decode(json.dumps(events).encode(), 1_000)

    assert batch.accepted == 1
    assert batch.types["e"].ids == ["in"]
    assert len(batch.errors) == 1


def test_demo_config_is_valid_and_complete() -> None:
    config = load_config(DEMO)

    assert list(config.events) == ["page_view", "add_to_cart", "order", "signup", "error"]
    assert len(config.metrics) == 19
    assert [d.id for d in config.dashboards] == ["operations", "management", "engineering"]
    assert all(3 <= len(d.panels) <= 6 for d in config.dashboards)
    p95 = config.metric("checkout_p95")
    assert p95 is not None and p95.where is not None
    assert (p95.event, p95.agg, p95.field, p95.window_ms) == (
        "page_view",
        "p95",
        "latency_ms",
        60_000,
    )
    assert p95.where.evaluate({"path": "/checkout"}) is True
    active = config.metric("active_users")
    assert active is not None
    assert (active.agg, active.field, active.window_ms, active.every_ms) == (
        "distinct",
        "user",
        300_000,
        10_000,
    )
    order = config.events["order"]
    assert order.field("region") == FieldSpec("region", "string", True, ("eu", "us", "apac"))


def test_shop_example_is_the_demo_config() -> None:
    assert load_config(EXAMPLES / "shop.yaml") == load_config(DEMO)


# --- one problem each -----------------------------------------------------------------------

BASE = """
events:
  order:
    fields:
      amount: {type: float, required: true}
      region: {type: string, enum: [eu, us, apac]}
      items: {type: int}
      paid: {type: bool}
metrics:
  - {name: orders, event: order, agg: count, window: 1m}
"""

DROP = object()
RATIO_METRICS = (
    "[{name: orders, event: order, agg: count, window: 1m, group_by: [region]},"
    " {name: revenue, event: order, agg: sum, field: amount, window: 1m},"
    " {name: orders_last_5m, event: order, agg: count, window: 5m, every: 1s}]"
)

CASES: list[Any] = [
    # top level
    pytest.param(
        {"verbose": "true"},
        "verbose: unknown key (expected one of: "
        "storage, pipeline, limits, events, metrics, dashboards)",
        id="unknown-top-level-key",
    ),
    pytest.param(
        {"metrics": DROP, "metric": "[{name: m, event: order, agg: count, window: 1m}]"},
        "metric: unknown key (did you mean 'metrics'?)",
        id="misspelt-required-key-is-not-also-missing",
    ),
    pytest.param({"events": DROP}, "<config>: missing required key 'events'", id="no-events"),
    # storage
    pytest.param(
        {"storage": "[sqlite]"},
        "storage: expected a mapping of data_dir, log, hot and history, got a list",
        id="storage-not-a-mapping",
    ),
    pytest.param(
        {"storage": "{log: kafka}"},
        "storage.log: 'kafka' is not accepted for the log store; "
        "expected one of: sqlite, memory, redis://..., rediss://...",
        id="unknown-store",
    ),
    pytest.param(
        {"storage": "{log: sqllite}"},
        "storage.log: 'sqllite' is not accepted for the log store (did you mean 'sqlite'?); "
        "expected one of: sqlite, memory, redis://..., rediss://...",
        id="misspelt-store",
    ),
    pytest.param(
        {"storage": "{hot: sqlite}"},
        "storage.hot: 'sqlite' is not accepted for the hot store; "
        "expected one of: memory, redis://..., rediss://...",
        id="store-of-another-role",
    ),
    pytest.param(
        {"storage": "{history: 'postgres://pb:hunter2@db/pb'}"},
        "storage.history: 'postgres://pb:***@db/pb' is not accepted for the history store "
        "(did you mean postgresql://?); expected one of: sqlite, memory, postgresql://...",
        id="postgres-scheme-and-masked-password",
    ),
    pytest.param(
        {"storage": "{hot: redis}"},
        "storage.hot: 'redis' needs a server URL, e.g. redis://localhost:6379/0",
        id="redis-without-url",
    ),
    pytest.param(
        {"storage": "{log: 'redis://:pw@localhost:99999/0'}"},
        "storage.log: 'redis://:***@localhost:99999/0' is not a valid URL: "
        "Port out of range 0-65535",
        id="bad-port",
    ),
    pytest.param(
        {"storage": "{log: 'redis:///0'}"},
        "storage.log: 'redis:///0' has no host, expected e.g. redis://localhost",
        id="url-without-host",
    ),
    pytest.param(
        {"storage": "{data_dir: ''}"},
        "storage.data_dir: expected a directory path, got an empty string",
        id="empty-data-dir",
    ),
    # pipeline
    pytest.param(
        {"pipeline": "{tick: 0s}"}, "pipeline.tick: '0s' is not a positive duration", id="zero-tick"
    ),
    pytest.param(
        {"pipeline": "{lateness: 30}"},
        "pipeline.lateness: expected a duration such as 30s or 1m, got an integer (30); add a unit",
        id="duration-without-unit",
    ),
    pytest.param(
        {"pipeline": "{max_future: 5 minutes}"},
        "pipeline.max_future: '5 minutes' is not a duration; expected a whole number and a unit, "
        "e.g. 500ms, 30s, 1m, 2h, 90d",
        id="bad-duration",
    ),
    pytest.param(
        {"pipeline": "{retention: {hot: 1h, histroy: 90d}}"},
        "pipeline.retention.histroy: unknown key (did you mean 'history'?)",
        id="misspelt-retention-key",
    ),
    pytest.param(
        {"pipeline": "{distinct_exact_threshold: -5}"},
        "pipeline.distinct_exact_threshold: expected a positive whole number, got an integer (-5)",
        id="negative-threshold",
    ),
    pytest.param(
        {"pipeline": "{retention: {history: 999999999999999d}}"},
        "pipeline.retention.history: '999999999999999d' is longer than the maximum duration, "
        "36500d (100 years)",
        id="absurd-duration",
    ),
    pytest.param(
        {"pipeline": "{retention: {history: 36501d}}"},
        "pipeline.retention.history: '36501d' is longer than the maximum duration, "
        "36500d (100 years)",
        id="duration-just-over-the-maximum",
    ),
    pytest.param(
        {"metrics": f"[{{name: m, event: order, agg: count, window: 1m, every: {'9' * 5000}s}}]"},
        f"metrics[0].every: '{'9' * 5000}s' is longer than the maximum duration, "
        "36500d (100 years)",
        id="duration-of-thousands-of-digits",
    ),
    # events and fields
    pytest.param(
        {"events": "{Order: {}}", "metrics": "[{name: m, event: Order, agg: count, window: 1m}]"},
        "events.Order: invalid event name 'Order': use 1 to 63 lowercase letters, digits and _, "
        "starting with a letter (e.g. 'order')",
        id="invalid-event-name",
    ),
    pytest.param(
        {"events": "{order: {fields: {total-amount: {type: float}}}}"},
        "events.order.fields.total-amount: invalid field name 'total-amount': use 1 to 63 "
        "lowercase letters, digits and _, starting with a letter (e.g. 'total_amount')",
        id="invalid-field-name",
    ),
    pytest.param(
        {"events": "{order: {fields: {amount: float}}}"},
        "events.order.fields.amount: expected a mapping like {type: string}, "
        "got a string ('float')",
        id="field-spec-not-a-mapping",
    ),
    pytest.param(
        {"events": "{order: {fields: {amount: {type: integer}}}}"},
        "events.order.fields.amount.type: unknown type 'integer' (did you mean 'int'?)",
        id="type-alias-integer",
    ),
    pytest.param(
        {"events": "{order: {fields: {amount: {type: str}}}}"},
        "events.order.fields.amount.type: unknown type 'str' (did you mean 'string'?)",
        id="type-alias-str",
    ),
    pytest.param(
        {"events": "{order: {fields: {amount: {type: flaot}}}}"},
        "events.order.fields.amount.type: unknown type 'flaot' (did you mean 'float'?)",
        id="misspelt-type",
    ),
    pytest.param(
        {"events": "{order: {fields: {amount: {required: true}}}}"},
        "events.order.fields.amount: missing required key 'type'",
        id="field-without-type",
    ),
    pytest.param(
        {"events": "{order: {fields: {amount: {type: float, requried: true}}}}"},
        "events.order.fields.amount.requried: unknown key (did you mean 'required'?)",
        id="misspelt-field-key",
    ),
    pytest.param(
        {"events": "{order: {fields: {amount: {type: float, required: 'yes'}}}}"},
        "events.order.fields.amount.required: expected true or false, got a string ('yes')",
        id="required-not-a-boolean",
    ),
    pytest.param(
        {"events": "{order: {fields: {n: {type: int, enum: [1, two]}}}}"},
        "events.order.fields.n.enum[1]: expected an integer, got a string ('two')",
        id="enum-value-of-wrong-type",
    ),
    pytest.param(
        {"events": "{order: {fields: {n: {type: int, enum: [1, true]}}}}"},
        "events.order.fields.n.enum[1]: expected an integer, got a boolean (true)",
        id="enum-bool-is-not-int",
    ),
    pytest.param(
        {"events": "{order: {fields: {country: {type: string, enum: [se, no]}}}}"},
        "events.order.fields.country.enum[1]: expected a string, got a boolean (false); quote it, "
        "as YAML reads yes/no/on/off/true/false unquoted as booleans",
        id="enum-norway-problem",
    ),
    pytest.param(
        {"events": "{order: {fields: {region: {type: string, enum: [eu, eu]}}}}"},
        "events.order.fields.region.enum[1]: 'eu' is listed twice",
        id="enum-duplicate",
    ),
    pytest.param(
        {"events": "{order: {fields: {region: {type: string, enum: []}}}}"},
        "events.order.fields.region.enum: an enum needs at least one value",
        id="enum-empty",
    ),
    pytest.param(
        {"events": "{order: {fields: {region: {type: string, enum: eu}}}}"},
        "events.order.fields.region.enum: expected a list of allowed values, got a string ('eu')",
        id="enum-not-a-list",
    ),
    pytest.param(
        {"events": "{order: {fields: {amount: {type: float, enum: [9.99, 19.99]}}}}"},
        "events.order.fields.amount.enum: enum is not supported on a float field; enum works on "
        "string, int and bool fields (use type int for whole numbers, or remove the enum)",
        id="enum-on-float",
    ),
    pytest.param(
        {"events": "{order: {fields: {amount: {type: float, enum: [1, 2]}}}}"},
        "events.order.fields.amount.enum: enum is not supported on a float field; enum works on "
        "string, int and bool fields (use type int for whole numbers, or remove the enum)",
        id="enum-of-whole-numbers-on-float",
    ),
    pytest.param(
        {"events": "{order: {feilds: {}}}"},
        "events.order.feilds: unknown key (did you mean 'fields'?)",
        id="misspelt-fields",
    ),
    pytest.param(
        {"events": "{order: }", "metrics": "[{name: m, event: order, agg: sum, window: 1m}]"},
        "metrics[0]: agg 'sum' needs a 'field', an int or float one; "
        "event 'order' has no int or float field",
        id="event-with-a-null-body-has-no-fields",
    ),
    pytest.param(
        {"events": "[order]"},
        "events: expected a mapping of event type names to {fields: ...}, got a list",
        id="events-is-a-list-and-metrics-do-not-cascade",
    ),
    pytest.param(
        {"events": "{}"},
        "events: no event types defined; add at least one",
        id="no-event-types",
    ),
    # metrics
    pytest.param(
        {"metrics": "[]"},
        "metrics: no metrics defined: nothing to compute; add at least one",
        id="no-metrics",
    ),
    pytest.param(
        {"metrics": "{orders: {event: order}}"},
        "metrics: expected a list of metrics, got a mapping",
        id="metrics-is-a-mapping",
    ),
    pytest.param(
        {"metrics": "[orders]"},
        "metrics[0]: expected a mapping like {name: ..., event: ..., agg: ...}, "
        "got a string ('orders')",
        id="metric-not-a-mapping",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, windw: 1m}]"},
        "metrics[0].windw: unknown key (did you mean 'window'?)",
        id="misspelt-window",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count}]"},
        "metrics[0]: missing required key 'window'",
        id="missing-window",
    ),
    pytest.param(
        {"metrics": "[{name: Orders-Total, event: order, agg: count, window: 1m}]"},
        "metrics[0].name: invalid metric name 'Orders-Total': use 1 to 63 lowercase letters, "
        "digits and _, starting with a letter (e.g. 'orders_total')",
        id="invalid-metric-name",
    ),
    pytest.param(
        {
            "metrics": "[{name: m, event: order, agg: count, window: 1m}, "
            "{name: m, event: order, agg: count, window: 5m}]"
        },
        "metrics[1].name: duplicate metric name 'm' (first at metrics[0])",
        id="duplicate-metric",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: ordr, agg: count, window: 1m}]"},
        "metrics[0].event: unknown event type 'ordr' (did you mean 'order'?)",
        id="unknown-event",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: sum, field: amout, window: 1m}]"},
        "metrics[0].field: event 'order' has no field 'amout' (did you mean 'amount'?)",
        id="unknown-field",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: summ, field: amount, window: 1m}]"},
        "metrics[0].agg: unknown aggregation 'summ' (did you mean 'sum'?)",
        id="misspelt-agg",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: mean, field: amount, window: 1m}]"},
        "metrics[0].agg: unknown aggregation 'mean' (did you mean 'avg'?)",
        id="agg-alias",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: stddev, field: amount, window: 1m}]"},
        "metrics[0].agg: unknown aggregation 'stddev' (expected one of: count, sum, avg, min, "
        "max, distinct, p50, p90, p95, p99)",
        id="unknown-agg",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: avg, window: 1m}]"},
        "metrics[0]: agg 'avg' needs a 'field', an int or float one, e.g. amount, items",
        id="numeric-agg-without-field",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: distinct, window: 1m}]"},
        "metrics[0]: agg 'distinct' needs a 'field' whose distinct values to count",
        id="distinct-without-field",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: p95, field: region, window: 1m}]"},
        "metrics[0].field: agg 'p95' needs an int or float field; 'region' is a string field",
        id="quantile-of-a-string",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: max, field: paid, window: 1m}]"},
        "metrics[0].field: agg 'max' needs an int or float field; 'paid' is a bool field",
        id="max-of-a-bool",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, window: 1m, every: 2m}]"},
        "metrics[0].every: 2m is longer than the window (1m)",
        id="every-longer-than-window",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, window: 1m, every: 7s}]"},
        "metrics[0].every: 7s does not divide the window (1m) evenly; e.g. every: 5s",
        id="every-does-not-divide",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, window: 1m, every: 7ms}]"},
        "metrics[0].every: 7ms does not divide the window (1m) evenly; e.g. every: 6ms",
        id="every-below-a-second-gets-the-nearest-divisor",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, window: 1m, every: 59999ms}]"},
        "metrics[0].every: 59999ms does not divide the window (1m) evenly; e.g. every: 30s",
        id="every-gets-a-round-divisor-when-one-fits",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, window: 7700ms, every: 3s}]"},
        "metrics[0].every: 3s does not divide the window (7700ms) evenly; e.g. every: 3850ms",
        id="every-gets-the-nearest-divisor-of-an-odd-window",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, window: 2h}]"},
        "metrics[0].window: 2h is longer than pipeline.retention.hot (1h), so the hot store "
        "cannot hold one window; raise pipeline.retention.hot or shorten the window",
        id="window-longer-than-hot-retention",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, window: 1m, group_by: [amount]}]"},
        "metrics[0].group_by[0]: cannot group by 'amount', a float field: every distinct number "
        "would become its own label set; group by a string, int or bool field",
        id="group-by-float",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, window: 1m, group_by: [regoin]}]"},
        "metrics[0].group_by[0]: event 'order' has no field 'regoin' (did you mean 'region'?)",
        id="group-by-unknown-field",
    ),
    pytest.param(
        {
            "metrics": "[{name: m, event: order, agg: count, window: 1m, "
            "group_by: [region, items, region]}]"
        },
        "metrics[0].group_by[2]: 'region' is listed twice",
        id="group-by-duplicate",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, window: 1m, group_by: region}]"},
        "metrics[0].group_by: expected a list of field names like [region], "
        "got a string ('region')",
        id="group-by-not-a-list",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, window: 1m, max_label_sets: 0}]"},
        "metrics[0].max_label_sets: expected a positive whole number, got an integer (0)",
        id="zero-max-label-sets",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, window: 1m, max_label_sets: true}]"},
        "metrics[0].max_label_sets: expected a positive whole number, got a boolean (true)",
        id="bool-max-label-sets",
    ),
    # where
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, window: 1m, where: 'amount >='}]"},
        "metrics[0].where: expected a value after '>=', found end of expression (column 10)",
        id="where-syntax-error",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, window: 1m, where: 'amout > 5'}]"},
        "metrics[0].where: event 'order' has no field 'amout' (did you mean 'amount'?)",
        id="where-unknown-field",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, window: 1m, where: \"amount > 'x'\"}]"},
        "metrics[0].where: field 'amount' is float but is compared with a string ('x'); "
        "expected a number",
        id="where-wrong-literal-type",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, window: 1m, where: 'items == 2.5'}]"},
        None,
        id="where-int-field-against-a-decimal-is-fine",
    ),
    pytest.param(
        {
            "metrics": "[{name: m, event: order, agg: count, window: 1m, "
            "where: \"region == 'mars'\"}]"
        },
        "metrics[0].where: 'mars' is not a value of field 'region' (expected one of: eu, us, apac)",
        id="where-value-not-in-enum",
    ),
    pytest.param(
        {
            "metrics": "[{name: m, event: order, agg: count, window: 1m, "
            "where: \"region in ('eu', 'apak')\"}]"
        },
        "metrics[0].where: 'apak' is not a value of field 'region' (did you mean 'apac'?)",
        id="where-in-list-value-not-in-enum",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, window: 1m, where: 'region'}]"},
        "metrics[0].where: a bare name is a test of a bool field; 'region' is a string field "
        "\N{EM DASH} compare it, e.g. region == 'eu'",
        id="where-bare-name-of-a-string",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, window: 1m, where: 'amount'}]"},
        "metrics[0].where: a bare name is a test of a bool field; 'amount' is a float field "
        "\N{EM DASH} compare it, e.g. amount > 0",
        id="where-bare-name-of-a-float",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, window: 1m, where: 'paid or items'}]"},
        "metrics[0].where: a bare name is a test of a bool field; 'items' is an int field "
        "\N{EM DASH} compare it, e.g. items > 0",
        id="where-bare-name-of-an-int-beside-a-bool",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, window: 1m, where: 'not paid'}]"},
        None,
        id="where-bare-name-of-a-bool-is-fine",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, window: 1m, where: '1 < items < 5'}]"},
        "metrics[0].where: expected 'and', 'or' or end of expression after 'items', found '<' "
        "(comparisons do not chain; write '1 < items and items < 5') (column 11)",
        id="where-chained-comparison",
    ),
    pytest.param(
        {"metrics": "[{name: m, event: order, agg: count, window: 1m, where: 100}]"},
        'metrics[0].where: expected an expression such as "amount >= 100", got an integer (100)',
        id="where-not-a-string",
    ),
    # dashboards
    pytest.param(
        {"dashboards": "{operations: {}}"},
        "dashboards: expected a list of dashboards, got a mapping",
        id="dashboards-not-a-list",
    ),
    pytest.param(
        {"dashboards": "[{id: ops, title: Ops, panels: [{metric: order}]}]"},
        "dashboards[0].panels[0].metric: unknown metric 'order' (did you mean 'orders'?)",
        id="panel-unknown-metric",
    ),
    pytest.param(
        {"dashboards": "[{id: ops, title: Ops, panels: [{metric: orders, kind: pie}]}]"},
        "dashboards[0].panels[0].kind: unknown panel kind 'pie' "
        "(expected one of: stat, timeseries, bars, table)",
        id="panel-unknown-kind",
    ),
    pytest.param(
        {"dashboards": "[{id: ops, title: Ops, panels: [{metric: orders, kind: stats}]}]"},
        "dashboards[0].panels[0].kind: unknown panel kind 'stats' (did you mean 'stat'?)",
        id="panel-misspelt-kind",
    ),
    pytest.param(
        {"dashboards": "[{id: ops, title: Ops, panels: []}]"},
        "dashboards[0].panels: a dashboard needs at least one panel",
        id="dashboard-without-panels",
    ),
    pytest.param(
        {"dashboards": "[{id: ops, panels: [{metric: orders}]}]"},
        "dashboards[0]: missing required key 'title'",
        id="dashboard-without-title",
    ),
    pytest.param(
        {
            "metrics": RATIO_METRICS,
            "dashboards": "[{id: ops, title: Ops, panels: [{metric: revenue, divide_by: orders}]}]",
        },
        "dashboards[0].panels[0].divide_by: 'orders' is grouped by region and 'revenue' is not; "
        "divide by a metric without group_by or with the same group_by",
        id="ratio-groups-differ",
    ),
    pytest.param(
        {
            "metrics": RATIO_METRICS,
            "dashboards": "[{id: ops, title: Ops, panels: "
            "[{metric: orders_last_5m, divide_by: revenue}]}]",
        },
        "dashboards[0].panels[0].divide_by: a ratio needs windows that match: 'orders_last_5m' "
        "has 5m every 1s, 'revenue' has 1m",
        id="ratio-windows-differ",
    ),
    pytest.param(
        {
            "metrics": RATIO_METRICS,
            "dashboards": "[{id: ops, title: Ops, panels: [{metric: orders, divide_by: revenue}]}]",
        },
        None,
        id="ratio-by-an-ungrouped-metric",
    ),
    pytest.param(
        {"dashboards": "[{id: ops, title: '', panels: [{metric: orders}]}]"},
        "dashboards[0].title: expected a non-blank string, got an empty string",
        id="empty-title",
    ),
    pytest.param(
        {"dashboards": "[{id: ops, title: '  ', panels: [{metric: orders}]}]"},
        "dashboards[0].title: expected a non-blank string, got a blank string ('  ')",
        id="blank-title",
    ),
    pytest.param(
        {"dashboards": "[{id: ops, title: 7, panels: [{metric: orders}]}]"},
        "dashboards[0].title: expected a non-blank string, got an integer (7)",
        id="title-not-a-string",
    ),
    pytest.param(
        {"dashboards": "[{id: ops, title: Ops, panels: [{metric: ''}]}]"},
        "dashboards[0].panels[0].metric: expected a metric name, got an empty string",
        id="empty-panel-metric",
    ),
    pytest.param(
        {"dashboards": "[{id: Ops View, title: Ops, panels: [{metric: orders}]}]"},
        "dashboards[0].id: invalid dashboard name 'Ops View': use 1 to 63 lowercase letters, "
        "digits and _, starting with a letter (e.g. 'ops_view')",
        id="invalid-dashboard-id",
    ),
    pytest.param(
        {
            "dashboards": "[{id: ops, title: A, panels: [{metric: orders}]}, "
            "{id: ops, title: B, panels: [{metric: orders}]}]"
        },
        "dashboards[1].id: duplicate dashboard id 'ops' (first at dashboards[0])",
        id="duplicate-dashboard",
    ),
    pytest.param(
        {"dashboards": "[{id: ops, title: Ops, panels: [orders]}]"},
        "dashboards[0].panels[0]: expected a mapping like {metric: ..., kind: timeseries}, "
        "got a string ('orders')",
        id="panel-not-a-mapping",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), CASES)
def test_each_problem_is_reported_with_its_location(
    changes: dict[str, object], expected: str | None
) -> None:
    data = yaml.safe_load(BASE)
    for key, text in changes.items():
        if text is DROP:
            del data[key]
        else:
            data[key] = yaml.safe_load(str(text))

    if expected is None:
        parse_config(data)
    else:
        assert problems_of(data) == [expected]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            ["events", "metrics"],
            "<config>: expected a mapping with at least 'events' and 'metrics' at the top level, "
            "got a list",
            id="list",
        ),
        pytest.param(
            "events",
            "<config>: expected a mapping with at least 'events' and 'metrics' at the top level, "
            "got a string ('events')",
            id="string",
        ),
        pytest.param(
            None,
            "<config>: the document is empty; expected a mapping with at least 'events' and "
            "'metrics'",
            id="empty",
        ),
    ],
)
def test_a_top_level_that_is_not_a_mapping_is_one_problem(data: object, expected: str) -> None:
    assert problems_of(data) == [expected]


def test_source_names_whole_document_problems() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"events": {"e": {}}}, source="shop.yaml")

    assert caught.value.problems == ["shop.yaml: missing required key 'metrics'"]


# --- many problems at once ------------------------------------------------------------------

INVALID_EXAMPLE_PROBLEMS = [
    "storage.history: 'postgres://pulseboard:***@db:5432/pulseboard' is not accepted for the "
    "history store (did you mean postgresql://?); expected one of: sqlite, memory, postgresql://...",
    "pipeline.lateness: expected a duration such as 30s or 1m, got an integer (30); add a unit",
    "pipeline.retention.histroy: unknown key (did you mean 'history'?)",
    "events.order.fields.items.type: unknown type 'integer' (did you mean 'int'?)",
    "events.Signup: invalid event name 'Signup': use 1 to 63 lowercase letters, digits and _, "
    "starting with a letter (e.g. 'signup')",
    "events.Signup.fields.plan.enum[2]: expected a string, got a boolean (false); quote it, as "
    "YAML reads yes/no/on/off/true/false unquoted as booleans",
    "metrics[1].field: event 'order' has no field 'amout' (did you mean 'amount'?)",
    "metrics[2].every: 7s does not divide the window (5m) evenly; e.g. every: 5s",
    "metrics[3].where: expected a value after '>=', found end of expression (column 10)",
    "metrics[4].where: 'mars' is not a value of field 'region' (expected one of: eu, us, apac)",
    "metrics[5].agg: unknown aggregation 'median' (did you mean 'p50'?)",
    "metrics[6].windw: unknown key (did you mean 'window'?)",
    "metrics[6].event: unknown event type 'ordr' (did you mean 'order'?)",
    "metrics[6].name: duplicate metric name 'orders' (first at metrics[0])",
    "metrics[7].field: agg 'sum' needs an int or float field; 'region' is a string field",
    "metrics[7].group_by[0]: cannot group by 'amount', a float field: every distinct number "
    "would become its own label set; group by a string, int or bool field",
    "dashboards[0].panels[1].metric: unknown metric 'revenu' (did you mean 'revenue'?)",
    "dashboards[0].panels[2].kind: unknown panel kind 'pie' (expected one of: stat, timeseries, "
    "bars, table)",
]


def test_every_mistake_in_a_file_is_reported_in_one_run() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLES / "invalid.yaml")

    assert caught.value.problems == INVALID_EXAMPLE_PROBLEMS
    assert "hunter2" not in str(caught.value)


def test_a_problem_in_one_section_does_not_hide_the_others() -> None:
    data = yaml.safe_load(BASE)
    data["pipeline"] = {"tick": "fast"}
    data["events"]["order"]["fields"]["amount"]["type"] = "double"
    data["metrics"].append({"name": "m2", "event": "order", "agg": "sum", "window": "1m"})
    data["dashboards"] = [{"id": "d", "title": "D", "panels": [{"metric": "nope"}]}]

    assert problems_of(data) == [
        "pipeline.tick: 'fast' is not a duration; expected a whole number and a unit, "
        "e.g. 500ms, 30s, 1m, 2h, 90d",
        "events.order.fields.amount.type: unknown type 'double' (did you mean 'float'?)",
        "metrics[1]: agg 'sum' needs a 'field', an int or float one, e.g. items",
        "dashboards[0].panels[0].metric: unknown metric 'nope' (expected one of: m2, orders)",
    ]


# --- files ----------------------------------------------------------------------------------


def test_yaml_syntax_error_reports_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "events:\n  order:\n    fields: {amount: {type: float}\nmetrics: []\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.problems == [
        f"{path}:4:1: YAML syntax error: expected ',' or '}}', but got '<scalar>' "
        "(while parsing a flow mapping started at line 3, column 13)"
    ]


def test_bad_indentation_reports_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "events: {}\nmetrics: []\n  oops: 1\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.problems == [
        f"{path}:3:3: YAML syntax error: expected <block end>, but found "
        "'<block mapping start>' (while parsing a block mapping started at line 1, column 1)"
    ]


def test_duplicate_keys_are_reported_with_the_other_problems(tmp_path: Path) -> None:
    text = (
        "events:\n"
        "  order: {fields: {amount: {type: float}}}\n"
        "metrics:\n"
        "  - {name: m, event: order, agg: count, window: 1m, window: 5m}\n"
        "  - {name: n, event: order, agg: sum, window: 1m}\n"
        "events:\n"
        "  order: {fields: {amount: {type: float}}}\n"
    )
    path = write(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.problems == [
        f"{path}:4:53: duplicate key 'window' (first at line 4); YAML would keep only the last",
        f"{path}:6:1: duplicate key 'events' (first at line 1); YAML would keep only the last",
        "metrics[1]: agg 'sum' needs a 'field', an int or float one, e.g. amount",
    ]


def test_duplicate_keys_alone_make_a_file_invalid(tmp_path: Path) -> None:
    metrics = "metrics: [{name: m, event: e, agg: count, window: 1m}]\n"
    path = write(tmp_path, "events: {e: {}}\n" + metrics + metrics)
    assert parse_config(yaml.safe_load(path.read_text()))  # fine, but for the duplicate

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.problems == [
        f"{path}:3:1: duplicate key 'metrics' (first at line 2); YAML would keep only the last"
    ]


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    text = (
        "common: &common {event: e, agg: count}\n"
        "events: {e: {}}\n"
        "metrics:\n"
        "  - {<<: *common, name: m, window: 1m}\n"
    )
    path = write(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.problems == [
        "common: unknown key (expected one of: "
        "storage, pipeline, limits, events, metrics, dashboards)"
    ]


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"events: \xff\n")

    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert caught.value.problems == [f"{missing}: no such file"]
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert caught.value.problems == [f"{tmp_path}: is a directory, expected a YAML file"]
    with pytest.raises(ConfigError) as caught:
        load_config(binary)
    assert caught.value.problems == [f"{binary}: not UTF-8 text (byte 8)"]


# --- check and summary ----------------------------------------------------------------------


def test_run_check_on_a_valid_file_prints_the_summary_and_exits_0() -> None:
    out, err = io.StringIO(), io.StringIO()

    code = run_check(str(DEMO), out, err)

    assert code == 0
    assert err.getvalue() == ""
    lines = out.getvalue().splitlines()
    assert lines[0] == f"{DEMO}: OK"
    assert lines[1] == "5 event types, 19 metrics, 3 dashboards (16 panels)"
    assert "  big_orders: count of order per 1m window, where amount >= 100" in lines
    assert "  active_users: distinct(user) of page_view per 5m window sliding every 10s" in lines


def test_run_check_on_an_invalid_file_lists_every_problem_and_exits_1() -> None:
    out, err = io.StringIO(), io.StringIO()
    path = str(EXAMPLES / "invalid.yaml")

    code = run_check(path, out, err)

    assert code == 1
    assert out.getvalue() == ""
    assert err.getvalue().splitlines() == [
        f"{path}: invalid configuration, 18 problems:",
        *(f"  {problem}" for problem in INVALID_EXAMPLE_PROBLEMS),
    ]


def test_run_check_on_a_missing_file_exits_1(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    path = str(tmp_path / "nope.yaml")

    assert run_check(path, out, err) == 1
    assert err.getvalue() == f"{path}: invalid configuration, 1 problem:\n  {path}: no such file\n"
    assert out.getvalue() == ""


def test_summarize_lists_counts_events_metrics_and_dashboards() -> None:
    config = parse_config(yaml.safe_load(EXAMPLE))

    assert summarize(config) == "\n".join(
        [
            "1 event type, 4 metrics, 1 dashboard (2 panels)",
            "storage: data_dir ./pulseboard-data, log sqlite, hot memory, history sqlite",
            "pipeline: tick 1s, lateness 30s, max_future 5m, reconcile_every 1m, "
            "takeover_after 45s, distinct_exact_threshold 1000; "
            "retention hot 1h, history 90d, log 1d",
            "event types:",
            "  order: amount (float, required), region (string: eu|us|apac)",
            "metrics:",
            "  orders: count of order per 1m window, by region (at most 1000 label sets)",
            "  revenue: sum(amount) of order per 1m window",
            "  orders_last_5m: count of order per 5m window sliding every 1s",
            "  big_orders: count of order per 1m window, where amount >= 100",
            "dashboards:",
            "  operations ('Operations'): orders, revenue",
        ]
    )


def test_summarize_and_repr_mask_passwords() -> None:
    data = yaml.safe_load(EXAMPLE)
    data["storage"] = {
        "log": "redis://:s3cret@localhost:6379/0",
        "hot": "rediss://default:t0ken@cache:6380/0",
        "history": "postgresql://pb:hunter2@db:5432/pb?password=hunter3&sslmode=require",
    }
    config = parse_config(data)

    summary = summarize(config)

    assert (
        "log redis://:***@localhost:6379/0, hot rediss://default:***@cache:6380/0, "
        "history postgresql://pb:***@db:5432/pb?password=***&sslmode=require"
    ) in summary
    for secret in ("s3cret", "t0ken", "hunter2", "hunter3"):
        assert secret not in summary
        assert secret not in repr(config)
    assert config.storage.log == "redis://:s3cret@localhost:6379/0"  # the value itself is intact


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("sqlite", "sqlite"),
        ("memory", "memory"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:pw@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("postgresql://user:p%40ss@db/x", "postgresql://user:***@db/x"),
        ("postgresql://user@db/x?PASSWORD=pw", "postgresql://user@db/x?PASSWORD=***"),
        ("redis://:pw@[::1", "redis://***"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_an_unknown_pipeline_key_keeps_the_retention_check() -> None:
    data = yaml.safe_load(BASE)
    data["pipeline"] = {"retension": {"hot": "3h"}}
    data["metrics"][0]["window"] = "2h"

    assert problems_of(data) == [
        "pipeline.retension: unknown key (did you mean 'retention'?)",
        "metrics[0].window: 2h is longer than pipeline.retention.hot (1h), so the hot store "
        "cannot hold one window; raise pipeline.retention.hot or shorten the window",
    ]


def test_36500d_is_the_longest_duration_accepted() -> None:
    data = yaml.safe_load(BASE)
    data["pipeline"] = {"retention": {"history": "36500d", "log": " 876000 h "}}

    retention = parse_config(data).pipeline.retention

    assert retention.history_ms == retention.log_ms == 36_500 * 86_400_000


@pytest.mark.parametrize("body", [None, {}, {"fields": None}, {"fields": {}}])
def test_an_event_type_with_a_null_or_empty_body_declares_no_fields(body: object) -> None:
    data = yaml.safe_load(BASE)
    data["events"]["ping"] = body
    data["metrics"].append({"name": "pings", "event": "ping", "agg": "count", "window": "1m"})

    assert parse_config(data).events["ping"] == EventSpec("ping", ())

    data["metrics"].append(
        {"name": "m", "event": "ping", "agg": "count", "window": "1m", "group_by": ["region"]}
    )
    assert problems_of(data) == [
        "metrics[2].group_by[0]: event 'ping' has no fields, so no field 'region'"
    ]


CROSS_CHECKS: list[Any] = [
    pytest.param(
        {"pipeline": {"tick": "0s", "retention": {"hot": "30m"}}},
        {"window": "1h"},
        [
            "pipeline.tick: '0s' is not a positive duration",
            "metrics[0].window: 1h is longer than pipeline.retention.hot (30m), so the hot "
            "store cannot hold one window; raise pipeline.retention.hot or shorten the window",
        ],
        id="invalid-tick-keeps-the-hot-retention-check",
    ),
    pytest.param(
        {"pipeline": {"retention": {"hot": "30m", "history": "forever"}}},
        {"window": "1h"},
        [
            "pipeline.retention.history: 'forever' is not a duration; expected a whole number "
            "and a unit, e.g. 500ms, 30s, 1m, 2h, 90d",
            "metrics[0].window: 1h is longer than pipeline.retention.hot (30m), so the hot "
            "store cannot hold one window; raise pipeline.retention.hot or shorten the window",
        ],
        id="invalid-history-retention-keeps-the-hot-retention-check",
    ),
    pytest.param(
        {"pipeline": {"retention": {"hot": "0s"}}},
        {"window": "2h"},
        ["pipeline.retention.hot: '0s' is not a positive duration"],
        id="unreadable-hot-retention-is-not-checked-against",
    ),
    pytest.param(
        {"events": {"order": {"fields": {"express": {"type": "bool", "requird": True}}}}},
        {"where": "express == 'yes'"},
        [
            "events.order.fields.express.requird: unknown key (did you mean 'required'?)",
            "metrics[0].where: field 'express' is bool but is compared with a string ('yes'); "
            "expected true or false",
        ],
        id="misspelt-field-key-keeps-the-where-type-check",
    ),
    pytest.param(
        {"events": {"order": {"fields": {"n": {"type": "int", "required": "yes"}}}}},
        {"where": "n > 'x'"},
        [
            "events.order.fields.n.required: expected true or false, got a string ('yes')",
            "metrics[0].where: field 'n' is int but is compared with a string ('x'); "
            "expected an integer",
        ],
        id="invalid-required-keeps-the-where-type-check",
    ),
    pytest.param(
        {"events": {"order": {"fields": {"plan": {"type": "string", "enum": ["pro", False]}}}}},
        {"where": "plan == 'no'"},
        [
            "events.order.fields.plan.enum[1]: expected a string, got a boolean (false); quote "
            "it, as YAML reads yes/no/on/off/true/false unquoted as booleans",
        ],
        id="an-invalid-enum-is-not-checked-against",
    ),
    pytest.param(
        {"events": {"order": {"fields": {"Bad-Name": {"type": "int"}, "region": {"type": "int"}}}}},
        {"where": "bad_name > 1"},
        [
            "events.order.fields.Bad-Name: invalid field name 'Bad-Name': use 1 to 63 lowercase "
            "letters, digits and _, starting with a letter (e.g. 'bad_name')",
            "metrics[0].where: event 'order' has no field 'bad_name' (expected one of: region)",
        ],
        id="invalid-field-names-are-not-suggested",
    ),
    pytest.param(
        {"events": {"order-v2": {}, "refund": {}}},
        {"event": "order_v2"},
        [
            "events.order-v2: invalid event name 'order-v2': use 1 to 63 lowercase letters, "
            "digits and _, starting with a letter (e.g. 'order_v2')",
            "metrics[0].event: unknown event type 'order_v2' (expected one of: refund)",
        ],
        id="invalid-event-names-are-not-suggested",
    ),
]


@pytest.mark.parametrize(("top", "metric", "expected"), CROSS_CHECKS)
def test_cross_checks_use_whatever_parts_are_readable(
    top: dict[str, object], metric: dict[str, object], expected: list[str]
) -> None:
    data = yaml.safe_load(BASE)
    data.update(top)
    data["metrics"][0].update(metric)

    assert problems_of(data) == expected


def test_invalid_metric_names_are_not_suggested_for_panels() -> None:
    data = yaml.safe_load(BASE)
    data["metrics"].append({"name": "Orders", "event": "order", "agg": "count", "window": "1m"})
    data["dashboards"] = [{"id": "d", "title": "D", "panels": [{"metric": "Order"}]}]

    assert problems_of(data) == [
        "metrics[1].name: invalid metric name 'Orders': use 1 to 63 lowercase letters, digits "
        "and _, starting with a letter (e.g. 'orders')",
        "dashboards[0].panels[0].metric: unknown metric 'Order' (did you mean 'orders'?)",
    ]
