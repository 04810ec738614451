"""Series request parsing: times, steps and their errors."""

from __future__ import annotations

import pytest

from pulseboard.config import Config
from pulseboard.series import QueryError, parse_time, request

NOW = 1_800_000_123_456


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1700000000000", 1_700_000_000_000),
        ("now", NOW),
        ("-1h", NOW - 3_600_000),
        ("now-15m", NOW - 900_000),
        ("now - 30s", NOW - 30_000),
        ("2026-11-27T10:00:00Z", 1_795_773_600_000),
        ("2026-11-27T11:00:00+01:00", 1_795_773_600_000),
    ],
)
def test_times(text: str, expected: int) -> None:
    assert parse_time(text, NOW, "from") == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", "from='yesterday' is not a time; expected epoch milliseconds"),
        ("2026-11-27T10:00:00", "from='2026-11-27T10:00:00' is not a time"),
        ("-1 fortnight", "from='-1 fortnight'"),
    ],
)
def test_bad_times_say_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(QueryError, match="^" + message.replace("(", r"\(")):
        parse_time(text, NOW, "from")


def test_request_aligns_from_to_the_step_and_checks_the_step(shop_config: Config) -> None:
    spec = shop_config.metric("orders")
    assert spec is not None  # window 1m
    req = request(spec, {"from": "-1h", "to": "now", "step": "5m"}, NOW)
    assert req.step_ms == 300_000
    assert req.from_ms % 300_000 == 0 and NOW - 3_600_000 - 300_000 < req.from_ms
    assert request(spec, {}, NOW).step_ms == 60_000
    with pytest.raises(QueryError, match=r"step='90s' is not a multiple of metric 'orders'"):
        request(spec, {"step": "90s"}, NOW)
    with pytest.raises(QueryError, match="must be before to"):
        request(spec, {"from": "now", "to": "-1h"}, NOW)
    with pytest.raises(QueryError, match="at most 20000 are served"):
        request(spec, {"from": "0", "to": str(NOW)}, NOW)
