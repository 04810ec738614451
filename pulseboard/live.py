"""Live push: subscribers of metrics get each tick's changed values, encoded once for all.

A subscriber is a bounded queue of encoded messages drained by its own sender task. Publishing
never waits: when a subscriber's queue is full it is marked slow and dropped, so one slow
client cannot stall the others or grow memory without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)

QUEUE_MESSAGES = 256
"""Messages a subscriber may have waiting before it counts as too slow and is dropped."""


class Subscriber:
    """One live client: the metrics it wants and the messages waiting to be sent to it.

    States: subscribed (messages flow) → closed (dropped as slow, or gone); once closed, the
    sender sees ``None`` and ends the connection.
    """

    def __init__(self) -> None:
        self.metrics: set[str] = set()
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(QUEUE_MESSAGES)
        self.closed = False
        self.slow = False

    def offer(self, message: str) -> None:
        """Queue ``message`` without waiting; a full queue drops the subscriber."""
        if self.closed:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.slow = True
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # make room so the sender wakes up and sees the end
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class Hub:
    """Who is subscribed to what; fans encoded messages out to them."""

    def __init__(self) -> None:
        self._by_metric: dict[str, set[Subscriber]] = {}
        self.subscribers: set[Subscriber] = set()
        self.dropped_slow = 0

    def add(self) -> Subscriber:
        subscriber = Subscriber()
        self.subscribers.add(subscriber)
        return subscriber

    def subscribe(self, subscriber: Subscriber, metrics: Iterable[str]) -> None:
        for name in metrics:
            subscriber.metrics.add(name)
            self._by_metric.setdefault(name, set()).add(subscriber)

    def remove(self, subscriber: Subscriber) -> None:
        subscriber.close()
        self.subscribers.discard(subscriber)
        for name in subscriber.metrics:
            self._by_metric.get(name, set()).discard(subscriber)

    def publish(self, metric: str, message: str) -> None:
        """Send one encoded message to every subscriber of ``metric``."""
        for subscriber in list(self._by_metric.get(metric, ())):
            subscriber.offer(message)
            if subscriber.slow:
                self.dropped_slow += 1
                log.info("dropped a live client that fell %d messages behind", QUEUE_MESSAGES)
                self.remove(subscriber)

    def broadcast(self, message: str) -> None:
        """Send one encoded message (a heartbeat) to every subscriber."""
        for subscriber in list(self.subscribers):
            subscriber.offer(message)
            if subscriber.slow:
                self.dropped_slow += 1
                self.remove(subscriber)

    def close_all(self) -> None:
        for subscriber in list(self.subscribers):
            self.remove(subscriber)
