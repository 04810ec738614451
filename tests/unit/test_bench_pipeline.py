"""``pulseboard bench pipeline``: the bodies it sends, how it matches pushes to batches, what it
makes of Redis's ``INFO`` and of the store URLs (distributed), and a tiny run against a real
server whose report must be complete and self-consistent."""

from __future__ import annotations

import io
import json
import tempfile
import time
from pathlib import Path

import pytest

from pulseboard.benchmarks import pipeline, stores
from pulseboard.benchmarks.harness import BenchError, busy_seconds
from pulseboard.cli import main
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


def test_drain_stats_rate_and_cores() -> None:
    before = stores.RedisSample({}, 10.0, 9.0)
    after = stores.RedisSample({}, 13.0, 11.5)
    start = pipeline.Reading(100.0, 600_000.0, {"api": 5.0, "processor": 20.0}, before)
    end = pipeline.Reading(104.0, 1_000_000.0, {"api": 5.4, "processor": 26.0}, after)
    # 400,000 events left when the producers were done, all processed 3.2 s later
    drain = pipeline.drain_stats(start, end, 103.2, 1_000_000.0)
    assert drain["events"] == 400_000
    assert drain["seconds"] == 3.2
    assert drain["events_per_s"] == 125_000
    assert drain["cores"] == {"api": 0.1, "processor": 1.5, "redis": 0.75}


def test_cores_counts_what_other_tenants_took() -> None:
    cpu = {"api": 2.0, "processor": 6.0, "processor_1": 3.0, "processor_2": 3.0}
    cpu |= {"producers": 1.0, "redis": 2.0, "bench": 1.0, "machine": 16.0, "wall": 10.0}
    # ours: 2 + 6 (the per-processor lines are parts of it) + 1 + 2 + 1 = 12 of 16
    assert pipeline.cores(cpu) == {
        "api": 0.2,
        "processor": 0.6,
        "processor_1": 0.3,
        "processor_2": 0.3,
        "producers": 0.1,
        "redis": 0.2,
        "bench": 0.1,
        "machine": 1.6,
        "others": 0.4,
    }
    assert pipeline.cores({"api": 1.0, "wall": 0.0}) == {}


def test_busy_seconds_leaves_out_idle_and_iowait() -> None:
    stat = (
        "cpu  1000 20 300 5000 400 10 30 40 0 0\ncpu0 500 10 150 2500 200 5 15 20 0 0\nintr 12345\n"
    )
    # user + nice + system + irq + softirq + steal = 1,400 ticks at 100 a second
    assert busy_seconds(stat, 100) == 14.0
    with pytest.raises(ValueError, match="no 'cpu' line"):
        busy_seconds("intr 1\n", 100)


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
    assert report["cores"]["machine"] >= report["cores"]["api"] > 0

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


# --- distributed: Redis's INFO, store URLs, the config ----------------------------------------

INFO_TEXT = """# CPU\r
used_cpu_sys:1.500000\r
used_cpu_user:2.250000\r
used_cpu_sys_children:0.000000\r
used_cpu_user_children:0.000000\r
used_cpu_sys_main_thread:1.000000\r
used_cpu_user_main_thread:2.000000\r
\r
# Commandstats\r
cmdstat_evalsha:calls=10,usec=5000,usec_per_call=500.00,rejected_calls=0,failed_calls=0\r
cmdstat_sadd:calls=30,usec=900,usec_per_call=30.00,rejected_calls=0,failed_calls=0\r
cmdstat_config|get:calls=2,usec=8,usec_per_call=4.00,rejected_calls=0,failed_calls=0\r
cmdstat_info:calls=4,usec=100,usec_per_call=25.00,rejected_calls=0,failed_calls=0\r
"""


def test_parse_info_reads_commandstats_and_cpu() -> None:
    sample = stores.parse_info(INFO_TEXT)
    assert sample.commands == {
        "evalsha": (10, 5000),
        "sadd": (30, 900),
        "config|get": (2, 8),
        "info": (4, 100),
    }
    assert sample.cpu_s == pytest.approx(3.75)
    assert sample.main_thread_cpu_s == pytest.approx(3.0)


def test_parse_info_names_a_malformed_line() -> None:
    with pytest.raises(ValueError, match="cmdstat_get:calls=<n>,usec=<n>"):
        stores.parse_info("cmdstat_get:calls=x,usec=1")
    with pytest.raises(ValueError, match="used_cpu_sys:<seconds>"):
        stores.parse_info("used_cpu_sys:soon")


def _sample(commands: dict[str, tuple[int, int]], cpu: float = 0.0) -> stores.RedisSample:
    return stores.RedisSample(commands, cpu, cpu)


def test_redis_usage_counts_the_difference_per_1000_events() -> None:
    before = _sample({"evalsha": (10, 5000), "sadd": (30, 900), "info": (4, 100)}, cpu=1.0)
    after = _sample(
        {"evalsha": (14, 9000), "sadd": (90, 2700), "info": (5, 125), "xreadgroup": (6, 60)},
        cpu=1.5,
    )
    usage = stores.redis_usage(before, after, 2_000, own={"info": 1})
    # the sampler's own INFO is left out: 4 evalsha + 60 sadd + 6 xreadgroup
    assert usage["calls"] == 70
    assert usage["calls_per_1000_events"] == 35.0
    assert usage["script_calls"] == 4
    assert usage["script_calls_per_1000_events"] == 2.0
    assert usage["script_ms_per_1000_events"] == 2.0  # 4,000 us over 2,000 events
    assert usage["cpu_s"] == 0.5
    assert usage["cpu_ms_per_1000_events"] == 250.0
    assert list(usage["commands"]) == ["sadd", "xreadgroup", "evalsha"]  # most called first
    assert usage["commands"]["sadd"] == {
        "calls": 60,
        "per_1000_events": 30.0,
        "usec_per_1000_events": 900,
    }
    assert usage["stats_reset"] is False


def test_redis_usage_after_a_stats_reset_counts_from_zero() -> None:
    before = _sample({"evalsha": (100, 50_000)})
    after = _sample({"evalsha": (3, 300)})
    usage = stores.redis_usage(before, after, 1_000)
    assert usage["stats_reset"] is True
    assert usage["script_calls"] == 3
    assert usage["commands"]["evalsha"]["usec_per_1000_events"] == 300


def test_redis_usage_lists_only_the_most_called_commands() -> None:
    after = _sample({f"cmd{i:02d}": (i + 1, 0) for i in range(20)})
    usage = stores.redis_usage(_sample({}), after, 0)
    assert len(usage["commands"]) == stores.TOP_COMMANDS
    assert next(iter(usage["commands"])) == "cmd19"
    assert usage["calls"] == sum(range(1, 21))
    assert usage["calls_per_1000_events"] == 0.0  # no events: no rate, no division by zero


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.0.3", True),
        ("::1", True),
        ("localhost", True),
        ("LocalHost", True),
        ("10.0.0.5", False),
        ("db.example.com", False),
        (None, False),
        ("", False),
    ],
)
def test_is_loopback_host(host: str | None, loopback: bool) -> None:
    assert stores.is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0?prefix=bench-1:"),
        (
            "redis://:pw@127.0.0.1:6379/2?socket_timeout=5&prefix=old:",
            "redis://:pw@127.0.0.1:6379/2?socket_timeout=5&prefix=bench-1:",
        ),
    ],
)
def test_with_prefix_sets_the_prefix_option(url: str, expected: str) -> None:
    assert stores.with_prefix(url, "bench-1:") == expected


def test_with_database_replaces_the_database() -> None:
    url = "postgresql://postgres@127.0.0.1:5432/postgres?connect_timeout=3"
    assert stores.with_database(url, "pbbench_ab") == (
        "postgresql://postgres@127.0.0.1:5432/pbbench_ab?connect_timeout=3"
    )


def test_config_text_puts_the_workload_on_the_given_stores(tmp_path: Path) -> None:
    redis_url = "redis://127.0.0.1:6379/0?prefix=bench-1f:"
    history = "postgresql://postgres@127.0.0.1:5432/pbbench_1f"
    path = tmp_path / "pipeline.yaml"
    path.write_text(stores.config_text(redis_url, history, pipeline.CONFIG_PATH.read_text()))
    config = load_config(path)
    assert (config.storage.log, config.storage.hot, config.storage.history) == (
        redis_url,
        redis_url,
        history,
    )
    assert [m.name for m in config.metrics] == [
        m.name for m in load_config(pipeline.CONFIG_PATH).metrics
    ]


@pytest.mark.parametrize(
    ("redis_url", "postgres_url", "named"),
    [
        ("redis://10.1.2.3:6379/0", stores.DEFAULT_POSTGRES_URL, "--redis-url"),
        ("http://127.0.0.1:6379", stores.DEFAULT_POSTGRES_URL, "--redis-url"),
        (stores.DEFAULT_REDIS_URL, "postgresql://postgres@db.example.com/postgres", "--postgres"),
    ],
)
def test_stores_refuse_servers_off_this_machine(
    redis_url: str, postgres_url: str, named: str
) -> None:
    with pytest.raises(BenchError, match=named):
        stores.BenchStores(redis_url, postgres_url)


def test_cli_takes_store_options_only_with_distributed(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "pipeline", "--processors", "2", "--redis-url", "redis://127.0.0.1/1"]
    assert main(argv) == 1
    assert "--processors, --redis-url: only with --distributed" in capsys.readouterr().err
    assert main([*argv[:2], "--distributed", "--redis-url", "redis://10.0.0.1:6379/0"]) == 1
    err = capsys.readouterr().err
    assert "--redis-url redis://10.0.0.1:6379/0: expected a redis:// URL of a server on" in err
    assert "server log" not in err  # no server was started


def test_distributed_bench_needs_a_processor() -> None:
    with pytest.raises(BenchError, match="at least 1"):
        pipeline.run_pipeline_bench(
            1_000, True, io.StringIO(), distributed=pipeline.Distributed(processors=0)
        )
