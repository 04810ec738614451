"""Shared fixtures and helpers of the test suite."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from pulseboard.config import Config, parse_config

SHOP_YAML = """
pipeline: {lateness: 30s, max_future: 5m}
events:
  order:
    fields:
      amount: {type: float, required: true}
      region: {type: string, enum: [eu, us, apac]}
      items: {type: int}
      user: {type: string}
  page_view:
    fields:
      path: {type: string, required: true}
      user: {type: string, required: true}
      latency_ms: {type: float}
      mobile: {type: bool}
metrics:
  - {name: orders, event: order, agg: count, window: 1m, group_by: [region]}
  - {name: revenue, event: order, agg: sum, field: amount, window: 1m}
  - {name: orders_last_5m, event: order, agg: count, window: 5m, every: 1m}
  - {name: big_orders, event: order, agg: count, window: 1m, where: "amount >= 100"}
  - {name: visitors, event: page_view, agg: distinct, field: user, window: 1m}
  - {name: latency_p95, event: page_view, agg: p95, field: latency_ms, window: 1m}
"""


def make_config(text: str) -> Config:
    """A config from YAML text (dedented)."""
    return parse_config(yaml.safe_load(textwrap.dedent(text)), "<test>")


@pytest.fixture
def shop_config() -> Config:
    """A small shop config with every kind of window and filter."""
    return make_config(SHOP_YAML)
