"""``pulseboard bench pipeline``: the bodies it sends, how it matches pushes to batches, and a
tiny run against a real server whose report must be complete and self-consistent."""

from __future__ import annotations

import io
import json
import tempfile
import time
from pathlib import Path

import pytest

from pulseboard.benchmarks import pipeline
from pulseboard.config import load_config
from pulseboard.events import EventDecoder


def test_bodies_are_valid_unique_and_stamped() -> None:
    config = load_config(pipeline.CONFIG_PATH)
    templates = pipeline.make_templates("t3", 2, seed=1)
    now = time.time_ns() // 1_000_000
    bodies = [pipeline.stamp(pipeline.batch_body(templates[k % 2], k), now) for k in (1, 2, 3)]
    ids: list[str] = []
    for k, body in enumerate(bodies, start=1):
        batch = EventDecoder(config).decode(body, now)
        assert batch.errors == []
        assert batch.accepted == pipeline.BATCH_EVENTS
        assert {int(t) for tb in batch.types.values() for t in tb.time_ms} == {now}
        probe = batch.types["probe"]
        assert probe.values("seq") == [k]
        assert probe.values("producer") == ["t3"]
        ids.extend(i for tb in batch.types.values() for i in tb.ids)
    assert len(set(ids)) == 3 * pipeline.BATCH_EVENTS
    assert all(i.startswith("t3-") for i in ids)


@pytest.mark.parametrize(
    ("acks", "seen", "expected"),
    [
        # each push reaches the batches up to its value
        ([(1, 0.0), (2, 0.1), (3, 0.2)], [(0.5, 2.0), (0.9, 3.0)], [0.5, 0.5, 0.9]),
        # a push that jumps past several batches makes them all visible at once
        ([(1, 0.0), (2, 0.1)], [(0.4, 0.0), (1.0, 5.0)], [1.0, 1.0]),
        # a batch never reached stays unseen
        ([(1, 0.0), (2, 0.1)], [(0.3, 1.0)], [0.3, None]),
        # nothing pushed at all
        ([(1, 0.0)], [], [None]),
        # a later push with a lower value (another window) does not hide what was seen
        ([(1, 0.0), (2, 0.1), (3, 0.2)], [(0.5, 2.0), (0.6, 1.0), (0.8, 3.0)], [0.5, 0.5, 0.8]),
    ],
)
def test_visible_at(
    acks: list[tuple[int, float]], seen: list[tuple[float, float]], expected: list[float | None]
) -> None:
    assert pipeline.visible_at(acks, seen) == expected


def test_tiny_run_reports_a_consistent_result() -> None:
    before = set(Path(tempfile.gettempdir()).glob("pulseboard-bench-*"))
    out = io.StringIO()
    code = pipeline.run_pipeline_bench(
        20_000, True, out, producers=2, freshness_rate=5_000, freshness_s=2.0
    )
    assert code == 0
    text = out.getvalue()
    assert text.count("\n") == 1  # --json: one line
    report = json.loads(text)

    assert report["name"] == "pipeline"
    assert report["events"] == 20_000
    assert report["events_processed"] == 20_000
    assert report["producers"] == 2
    assert report["responses_503"] == 0
    assert 0 < report["events_per_s"] <= report["ingest_events_per_s"]
    assert report["seconds"] >= report["ingest_seconds"] > 0
    assert report["events_per_s"] == pytest.approx(20_000 / report["seconds"], rel=0.01)
    assert report["post_ms"]["count"] == 20
    baseline = report["baseline"]["events_per_s"]
    assert baseline == max(report["baseline"]["before_after"]) > 0
    assert report["ratio"] == pytest.approx(report["events_per_s"] / baseline, abs=0.001)
    assert report["cpu_s"]["api"] > 0 and report["cpu_s"]["processor"] > 0

    fresh = report["freshness_ms"]
    phase = report["freshness"]
    assert phase["batches"] == 10
    assert phase["events"] == phase["events_processed"] == 10_000
    assert phase["unseen_batches"] == 0
    assert fresh["count"] == 10
    assert fresh["min"] <= fresh["p50"] <= fresh["p90"] <= fresh["p99"] <= fresh["max"]
    assert fresh["p50"] > 0
    assert phase["live_messages"] >= 1
    assert report["met"]["freshness_p99_ms"] is False  # 5,000 events/s is not the target rate
    assert set(report["targets"]) == {
        "events_per_s",
        "freshness_p99_ms",
        "freshness_at_events_per_s",
    }
    assert set(Path(tempfile.gettempdir()).glob("pulseboard-bench-*")) == before
