"""``GET /metrics``: the service's own numbers in the Prometheus text format."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pulseboard.service_port import ApiService


class _ServiceCollector(Collector):
    def __init__(self, service: ApiService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        s = self._service
        stats = s.stats
        ingested = CounterMetricFamily(
            "pulseboard_events_ingested",
            "Events received by ingest, by event type and status (accepted or rejected).",
            labels=["type", "status"],
        )
        for (event_type, status), count in sorted(s.counters.by_type.items()):
            ingested.add_metric([event_type, status], count)
        yield ingested
        yield CounterMetricFamily(
            "pulseboard_dead_letters",
            "Rejected events written to the dead-letter store since start.",
            value=s.counters.dead_letters,
        )
        yield CounterMetricFamily(
            "pulseboard_events_processed",
            "Events the processor aggregated since it started.",
            value=stats.get("events", 0),
        )
        yield CounterMetricFamily(
            "pulseboard_late_events",
            "Late events sent to the late channel since the processor started.",
            value=stats.get("late", 0),
        )
        yield CounterMetricFamily(
            "pulseboard_late_events_reconciled",
            "Late events applied to history by reconciliation since the processor started.",
            value=stats.get("reconciled", 0),
        )
        gauges = {
            "pulseboard_log_backlog_events": (
                "Accepted events not yet processed.",
                "backlog_events",
            ),
            "pulseboard_log_backlog_batches": ("Log entries not yet processed.", "backlog_entries"),
            "pulseboard_processing_lag_seconds": (
                "Age of the newest processed batch while a backlog remains (0 when caught up).",
                "lag_s",
            ),
            "pulseboard_processor_tick_milliseconds": ("Duration of the last tick.", "tick_ms"),
            "pulseboard_processor_memory_bytes": (
                "Peak resident memory of the processor.",
                "rss_bytes",
            ),
        }
        for name, (doc, key) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=stats.get(key, 0))
        series = GaugeMetricFamily(
            "pulseboard_metric_label_sets", "Label sets each metric holds.", labels=["metric"]
        )
        for metric, count in sorted(stats.get("label_sets", {}).items()):
            series.add_metric([metric], count)
        yield series
        yield GaugeMetricFamily(
            "pulseboard_live_clients", "Connected live clients.", value=len(s.hub.subscribers)
        )
        yield CounterMetricFamily(
            "pulseboard_live_clients_dropped_slow",
            "Live clients dropped because they fell behind.",
            value=s.hub.dropped_slow,
        )
        yield GaugeMetricFamily(
            "pulseboard_processor_up",
            "1 when the processor reported recently.",
            value=0 if s.stale() else 1,
        )


class Telemetry:
    """The registry of one service and the ingest request histogram."""

    def __init__(self, service: ApiService) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_ServiceCollector(service))
        self.ingest_seconds = Histogram(
            "pulseboard_ingest_request_seconds",
            "Duration of POST /v1/events, from the body read to the answer.",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
