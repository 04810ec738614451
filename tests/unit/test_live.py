"""The live hub: fan-out of one encoded message, slow subscribers dropped without waiting."""

from __future__ import annotations

import asyncio

from pulseboard.live import QUEUE_MESSAGES, Hub


def test_each_subscriber_gets_only_its_metrics_in_order() -> None:
    async def run() -> tuple[list[str | None], list[str | None]]:
        hub = Hub()
        a, b = hub.add(), hub.add()
        hub.subscribe(a, ["orders"])
        hub.subscribe(b, ["orders", "revenue"])
        hub.publish("orders", "o1")
        hub.publish("revenue", "r1")
        hub.publish("orders", "o2")
        got_a = [a.queue.get_nowait() for _ in range(a.queue.qsize())]
        got_b = [b.queue.get_nowait() for _ in range(b.queue.qsize())]
        return got_a, got_b

    assert asyncio.run(run()) == (["o1", "o2"], ["o1", "r1", "o2"])


def test_a_slow_subscriber_is_dropped_and_the_others_keep_receiving() -> None:
    async def run() -> None:
        hub = Hub()
        slow, fast = hub.add(), hub.add()
        hub.subscribe(slow, ["m"])
        hub.subscribe(fast, ["m"])
        for i in range(QUEUE_MESSAGES + 1):
            hub.publish("m", str(i))
            if fast.queue.qsize() > 10:
                while not fast.queue.empty():
                    fast.queue.get_nowait()
        assert slow.closed and slow.slow
        assert slow.queue.get_nowait() is None  # its sender sees the end at once
        assert hub.subscribers == {fast}
        assert hub.dropped_slow == 1
        hub.publish("m", "after")
        assert not fast.closed
        remaining = [fast.queue.get_nowait() for _ in range(fast.queue.qsize())]
        assert remaining[-1] == "after"

    asyncio.run(run())
