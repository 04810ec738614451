"""``pulseboard bench pipeline --distributed``: a tiny run of both phases against one
``serve --role api`` and two ``serve --role processor`` on the fixtures' throwaway Redis and
PostgreSQL. The report must be complete and consistent, and nothing may be left behind: no
key under the run's prefix, no database, no process."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import psycopg
import pytest
import redis

from pulseboard.benchmarks import pipeline


def _commands_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


def test_tiny_distributed_run_reports_redis_work_and_cleans_up(
    redis_url: str, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the run's workdir, found below
    out = io.StringIO()
    code = pipeline.run_pipeline_bench(
        20_000,
        True,
        out,
        producers=2,
        freshness_rate=5_000,
        freshness_s=2.0,
        distributed=pipeline.Distributed(2, redis_url, postgres_url),
    )
    assert code == 0
    report = json.loads(out.getvalue())

    assert report["mode"] == "distributed"
    assert report["processors"] == 2
    # every accepted event counted by the API's /metrics, summed over both processors
    assert report["events"] == report["events_processed"] == 20_000
    assert 0 < report["events_per_s"] <= report["ingest_events_per_s"]
    cpu = report["cpu_s"]
    assert cpu["processor"] == pytest.approx(cpu["processor_1"] + cpu["processor_2"], abs=0.02)
    assert cpu["api"] > 0 and cpu["processor"] > 0

    for phase in (report, report["freshness"]):
        usage = phase["redis"]
        assert usage["stats_reset"] is False
        # the commit and append scripts run, and Redis counts the commands they run too
        assert usage["script_calls"] > 0
        assert usage["calls"] > usage["script_calls"]
        assert "evalsha" in usage["commands"]
        assert usage["cpu_s"] > 0
        assert usage["calls_per_1000_events"] == pytest.approx(
            usage["calls"] * 1000 / phase["events"], abs=0.01
        )
        assert set(phase["cpu_us_per_event"]) >= {"api", "processor", "producers", "redis"}
    assert report["freshness"]["events"] == report["freshness"]["events_processed"] == 10_000
    assert report["freshness"]["unseen_batches"] == 0
    fresh = report["freshness_ms"]
    assert fresh["count"] == 10
    assert 0 < fresh["p50"] <= fresh["p99"] <= fresh["max"]
    assert report["machine"]["cpus"] >= 1 and report["stores"]["redis_version"]

    # nothing left: keys under any bench prefix, the database, the processes, the workdir
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match="bench-*")) == []
    finally:
        client.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'pbbench_%'")
        assert rows.fetchall() == []
    assert _commands_mentioning(str(tmp_path)) == []
    assert list(tmp_path.iterdir()) == []
