"""``serve --role processor``: one processor of the distributed mode in this process, until
SIGTERM or SIGINT; and ``processor_child``, the same as the child of ``serve --role all``.

The consumer name is ``host:pid``, unique among living processors. At start it writes the
windows finalised but not yet in history (``flush_pending``), then runs
``DistributedProcessor.run`` in the main thread; a reporter thread writes its stats to Redis
every tick while it works (``redis_reports``), which is how the API processes know it is
alive. PostgreSQL or Redis down at start or later pauses it, never ends it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import socket
import sys
import threading

from pulseboard.adapters.base import StoreUnavailable, now_ms
from pulseboard.adapters.postgres import PostgresHistory
from pulseboard.adapters.redis_conn import RedisSettings
from pulseboard.adapters.redis_hot import RedisHotStore
from pulseboard.adapters.redis_log import RedisEventLog
from pulseboard.adapters.redis_reports import RedisProcessorReports
from pulseboard.config import Config, mask_url
from pulseboard.dist_processor import DistributedProcessor

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0
HISTORY_WAIT_S = 1.0
"""How long a history write waits for a pooled connection: while PostgreSQL is down, a tick
holds up event processing and live values this long at most (then retries later)."""


def consumer_name() -> str:
    """``host:pid``: unique among the living processors."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _open_history(url: str, stop: threading.Event) -> PostgresHistory | None:
    """Open history, retrying with a capped backoff while PostgreSQL is down; None if
    ``stop`` was set first."""
    backoff = 0.2
    logged = False
    while not stop.is_set():
        try:
            return PostgresHistory(url, wait_s=HISTORY_WAIT_S)
        except StoreUnavailable as exc:
            if not logged:
                log.error("cannot open history; retrying until it can: %s", exc)
                logged = True
            stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
    return None


def _report_loop(
    processor: DistributedProcessor,
    reports: RedisProcessorReports,
    stop: threading.Event,
    tick_s: float,
) -> None:
    """Every tick while the processor is up: its stats (and peak memory) into Redis."""
    while not stop.wait(tick_s):
        if not processor.health().up:
            continue
        stats = processor.stats_dict()
        stats["rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        with contextlib.suppress(StoreUnavailable):  # the processor logs outages
            reports.report(processor.consumer, now_ms(), stats)


def run_processor(config: Config, stop: threading.Event) -> int:
    """Process until ``stop`` is set; returns the exit code (0)."""
    settings = RedisSettings.from_url(config.storage.log)
    log_store = RedisEventLog(settings)
    hot = RedisHotStore(settings, config, client=log_store.client)
    reports = RedisProcessorReports(settings, client=log_store.client)
    consumer = consumer_name()
    log.info(
        "processor %s: log and hot store %s, history %s",
        consumer,
        settings.masked(),
        mask_url(config.storage.history),
    )
    history = _open_history(config.storage.history, stop)
    if history is None:
        log_store.close()
        return 0
    processor = DistributedProcessor(
        config,
        log_store,
        hot,
        history,
        consumer,
        claim_idle_ms=config.pipeline.takeover_after_ms,
        reports=reports,
    )
    try:
        flushed = hot.flush_pending(history)
        if flushed:
            log.info("wrote %d pending windows to history", flushed)
    except StoreUnavailable as exc:  # the ticks write them once the stores are back
        log.warning("cannot write pending windows yet: %s", exc)
    reporter = threading.Thread(
        target=_report_loop,
        args=(processor, reports, stop, config.pipeline.tick_ms / 1000),
        name="pulseboard-report",
        daemon=True,
    )
    reporter.start()
    try:
        processor.run(stop)
    finally:
        stop.set()
        reporter.join()
        with contextlib.suppress(StoreUnavailable):
            reports.drop(consumer)
        history.close()
        log_store.close()
    log.info("processor %s stopped", consumer)
    return 0


def run_processor_until_signal(config: Config) -> int:
    """``run_processor`` until SIGTERM or SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return run_processor(config, stop)


def processor_child(config: Config, verbose: bool) -> None:
    """The processor child of ``serve --role all`` (a spawned process)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s[processor]: %(message)s",
    )
    # as cli.main: the pool would warn at every reconnection attempt during an outage
    logging.getLogger("psycopg.pool").setLevel(logging.DEBUG if verbose else logging.ERROR)
    sys.exit(run_processor_until_signal(config))
