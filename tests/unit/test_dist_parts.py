"""The distributed API process's parts without servers: the storage modes ``serve`` accepts,
the log writer's group commit and failure answers, and lazily opened stores."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any, cast

import pytest

from pulseboard.adapters.base import StoreUnavailable
from pulseboard.adapters.redis_log import RedisEventLog
from pulseboard.adapters.sqlite_log import Append
from pulseboard.dist_parts import Lazy, RedisLogWriter
from pulseboard.errors import ConfigError
from pulseboard.server import DISTRIBUTED, EMBEDDED, check_storage
from tests.conftest import make_config

EVENTS = """
events: {e: {fields: {n: {type: int}}}}
metrics: [{name: m, event: e, agg: count, window: 1m}]
"""
REDIS = "redis://:pw@r:6379/0"
PG = "postgresql://pb@db/pb"


def storage(**stores: str) -> str:
    return "storage: {" + ", ".join(f"{k}: '{v}'" for k, v in stores.items()) + "}\n" + EVENTS


def test_embedded_and_distributed_stores_are_served() -> None:
    assert check_storage(make_config(EVENTS)) == EMBEDDED
    assert check_storage(make_config(storage(log=REDIS, hot=REDIS, history=PG))) == DISTRIBUTED


@pytest.mark.parametrize(
    ("stores", "message"),
    [
        (dict(log=REDIS, hot="memory", history=PG), "storage.hot: 'memory': the distributed"),
        (dict(log="sqlite", hot=REDIS, history=PG), "storage.log: 'sqlite': the distributed"),
        (dict(log=REDIS, hot=REDIS, history="sqlite"), "storage.history: 'sqlite': the distr"),
        (
            dict(log=REDIS, hot="redis://r:6379/1", history=PG),
            "storage.hot: 'redis://r:6379/1' differs from storage.log 'redis://:***@r:6379/0'",
        ),
        (dict(history="memory"), "storage.history: 'memory' cannot be served"),
    ],
)
def test_mixed_stores_are_refused_naming_what_to_change(
    stores: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        check_storage(make_config(storage(**stores)))
    assert any(p.startswith(message) for p in caught.value.problems), caught.value.problems
    assert "pw" not in str(caught.value)


class FakeLog:
    """``append_many`` that waits for ``release`` and records each call's requests."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.release = threading.Event()
        self.fail = False

    def append_many(self, items: Sequence[Append]) -> list[str | None]:
        self.release.wait(10)
        self.calls.append(len(items))
        if self.fail:
            raise StoreUnavailable("cannot append to the Redis event log: refused")
        return [f"{i}-0" for i in range(len(items))]


def item(events: int = 1) -> Append:
    return Append(0, events, 0, 0, b"[]", [])


def test_waiting_requests_share_one_append_and_are_answered_after_it() -> None:
    fake = FakeLog()
    writer = RedisLogWriter(cast(RedisEventLog, fake))

    async def main() -> None:
        first = asyncio.create_task(writer.append(item()))
        await asyncio.sleep(0.05)  # the writer thread holds `first`, waiting on the release
        others = [asyncio.create_task(writer.append(item(2))) for _ in range(5)]
        await asyncio.sleep(0.05)
        assert not first.done() and not any(t.done() for t in others)  # not before the XADD
        fake.release.set()
        await asyncio.gather(first, *others)

    asyncio.run(main())
    writer.close()
    assert fake.calls == [1, 5]
    assert writer.appended_events == 11 and writer.error is None


def test_a_failed_append_fails_every_request_of_it_and_refuses_for_a_moment() -> None:
    fake = FakeLog()
    fake.release.set()
    fake.fail = True
    writer = RedisLogWriter(cast(RedisEventLog, fake))

    async def main() -> list[Any]:
        tasks = [writer.append(item()) for _ in range(3)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    writer.close()
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert writer.refusing() and "refused" in (writer.error or "")
    assert writer.appended_events == 0


def test_a_lazy_store_opens_on_use_and_retries_only_after_a_pause() -> None:
    attempts: list[int] = []

    def opener() -> str:
        attempts.append(1)
        if len(attempts) < 2:
            raise StoreUnavailable("down")
        return "store"

    lazy = Lazy(opener, retry_s=3600)
    assert lazy.peek() is None
    for _ in range(3):
        with pytest.raises(StoreUnavailable, match="down"):
            lazy.get()
    assert len(attempts) == 1  # the failure is repeated, not retried, within retry_s
    now = Lazy(opener, retry_s=0)
    assert now.get() == "store" and now.peek() == "store"
