"""The operator commands on the distributed stores: ``pulseboard keys``, ``dlq`` and
``reconcile`` with a config whose ``storage:`` is Redis and PostgreSQL, run as an operator
would (``python -m pulseboard.cli``) beside served ``api`` and ``processor`` processes.

Every wait polls a condition against a deadline (never a bare sleep).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from pulseboard.adapters.redis_conn import RedisSettings
from pulseboard.adapters.redis_hot import RedisHotStore
from pulseboard.config import load_config

from .conftest import free_port
from .test_dist_serve import Start, now_ms, order, post, serving, wait_for, write_config

ROOT = Path(__file__).resolve().parents[2]

TEMPLATE = """
storage:
  log: {redis}
  hot: {redis}
  history: {pg}
pipeline: {{tick: 200ms, lateness: LATENESS, max_future: 5m, reconcile_every: 1h}}
events:
  order:
    fields:
      amount: {{type: float, required: true}}
      region: {{type: string, enum: [REGIONS]}}
metrics:
  - {{name: orders, event: order, agg: count, window: WINDOW, group_by: [region]}}
"""


def template(*, regions: str = "eu, us", lateness: str = "10m", window: str = "1m") -> str:
    """The config: a lateness of 10 minutes keeps every event of a test on time, unless a
    test makes late ones on purpose."""
    text = TEMPLATE.replace("REGIONS", regions).replace("LATENESS", lateness)
    return text.replace("WINDOW", window)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    with serving(tmp_path) as run:
        yield run


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``pulseboard ARGS`` in ``cwd`` (where an embedded data directory would appear)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pulseboard.cli", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        cwd=cwd,
        env=env,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    """The output of a command that must have succeeded."""
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def totals(url: str, start_ms: int, end_ms: int) -> dict[str, Any]:
    """Orders per region over every window of ``[start_ms, end_ms)``, open or final."""
    params = {"from": str(start_ms), "to": str(end_ms)}
    body = httpx.get(f"{url}/v1/metrics/orders/series", params=params, timeout=10).json()
    out: dict[str, Any] = {}
    for series in body["series"]:
        region = series["labels"]["region"]
        out[region] = out.get(region, 0) + sum(p["value"] or 0 for p in series["points"])
    return out


# --- keys -------------------------------------------------------------------------------------


def test_keys_made_by_the_cli_open_and_close_a_served_api(
    tmp_path: Path, redis_url: str, pg_url: str, start: Start
) -> None:
    config = write_config(tmp_path, redis_url, pg_url, template())
    # made before any server started: opening the key store creates its tables
    key = ok(cli("keys", "create", "--config", str(config), "--scope", "read", cwd=tmp_path))
    key = key.strip()
    assert key.startswith("pb_")
    writer = ok(
        cli(
            "keys",
            "create",
            "--config",
            str(config),
            "--scope",
            "ingest",
            "--name",
            "checkout",
            cwd=tmp_path,
        )
    ).strip()
    assert not (tmp_path / "pulseboard-data").exists(), "keys went to an embedded directory"
    api = start(config, "api", "--require-keys")
    url = f"{api.url}/v1/metrics/orders"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    event = [order(1, now_ms())]
    with_reader = httpx.post(
        f"{api.url}/v1/events", json=event, headers={"Authorization": f"Bearer {key}"}
    )
    assert with_reader.status_code == 403
    with_writer = httpx.post(
        f"{api.url}/v1/events", json=event, headers={"Authorization": f"Bearer {writer}"}
    )
    assert with_writer.status_code == 202, with_writer.text

    key_id, writer_id = key.split("_")[1], writer.split("_")[1]
    listed = ok(cli("keys", "list", "--config", str(config), cwd=tmp_path)).splitlines()
    assert [line.split()[:3] for line in listed] == [
        [key_id, "read", "active"],
        [writer_id, "ingest", "active"],
    ]
    assert listed[1].endswith(" checkout")

    revoked = ok(cli("keys", "revoke", "--config", str(config), key_id, cwd=tmp_path))
    assert revoked == f"revoked {key_id}\n"
    wait_for(  # the API caches a lookup for 5 s
        "the revoked key to be refused",
        lambda: httpx.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 401,
    )
    listed = ok(cli("keys", "list", "--config", str(config), cwd=tmp_path)).splitlines()
    assert listed[0].split()[:3] == [key_id, "read", "revoked"]
    again = cli("keys", "revoke", "--config", str(config), key_id, cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr == f"no active key {key_id!r}\n"
    with psycopg.connect(pg_url) as conn:
        stored = conn.execute("SELECT key_id, secret_hash FROM api_keys ORDER BY key_id").fetchall()
    assert sorted(k for k, _ in stored) == sorted([key_id, writer_id])
    assert all(key.split("_", 2)[2] not in secret for _, secret in stored)  # hashed only


# --- dead letters -------------------------------------------------------------------------------


def test_dead_letters_of_a_served_api_are_listed_and_replayed(
    tmp_path: Path, redis_url: str, pg_url: str, start: Start
) -> None:
    config = write_config(tmp_path, redis_url, pg_url, template())
    api = start(config, "api")
    t = now_ms()
    events = [
        order(1, t, region="eu"),
        order(2, t + 1, region="apac"),
        order(3, t + 2, region="apac"),
    ]
    answer = post(api.url, events)
    assert answer.status_code == 202
    assert (answer.json()["accepted"], answer.json()["rejected"]) == (1, 2)

    listed = ok(cli("dlq", "list", "--config", str(config), "--json", cwd=tmp_path))
    letters = [json.loads(line) for line in listed.splitlines()]
    assert [d["event_id"] for d in letters] == [events[1]["id"], events[2]["id"]]
    assert letters[0]["error"] == (
        'events[1].data.region: invalid enum value \'apac\' (expected one of: "eu", "us")'
    )
    assert json.loads(letters[0]["raw"])["data"]["region"] == "apac"
    text = ok(cli("dlq", "list", "--config", str(config), "--limit", "1", cwd=tmp_path))
    assert text.startswith(f"#{letters[0]['id']} ")
    assert text.endswith("1 shown, 2 not replayed\n")

    # replayed to the same API, still refusing them: new dead letters, the old ones marked
    replay = ["dlq", "replay", "--config", str(config), "--url", api.url]
    out = ok(cli(*replay, cwd=tmp_path))
    assert "replayed 2 dead letters: 0 accepted, 2 rejected again" in out
    listed = ok(cli("dlq", "list", "--config", str(config), "--json", cwd=tmp_path))
    again = [json.loads(line) for line in listed.splitlines()]
    assert [d["event_id"] for d in again] == [events[1]["id"], events[2]["id"]]
    assert {d["id"] for d in again}.isdisjoint(d["id"] for d in letters)

    # the operator adds the region and restarts; the replay is then accepted and counted
    assert api.stop() == 0
    config.write_text(config.read_text().replace("enum: [eu, us]", "enum: [eu, us, apac]"))
    api = start(config, "api")
    start(config, "processor")
    replay = ["dlq", "replay", "--config", str(config), "--url", api.url]
    out = ok(cli(*replay, cwd=tmp_path))
    assert "replayed 2 dead letters: 2 accepted, 0 rejected again" in out
    span = (t - 600_000, t + 600_000)
    wait_for("the replayed orders", lambda: totals(api.url, *span) == {"eu": 1, "apac": 2})
    assert ok(cli("dlq", "list", "--config", str(config), cwd=tmp_path)) == (
        "0 shown, 0 not replayed\n"
    )
    assert "replayed 0 dead letters" in ok(cli(*replay, cwd=tmp_path))


# --- reconcile ----------------------------------------------------------------------------------


def test_reconcile_applies_a_late_event_under_the_processors_lease(
    tmp_path: Path, redis_url: str, pg_url: str, start: Start
) -> None:
    config_path = write_config(tmp_path, redis_url, pg_url, template(lateness="200ms", window="1s"))
    config = load_config(config_path)
    hot = RedisHotStore(RedisSettings.from_url(config.storage.log), config)
    api = start(config_path, "api")
    start(config_path, "processor")
    try:
        t = now_ms()
        window = t - t % 1000
        assert post(api.url, [order(1, window + 10), order(2, window + 20)]).status_code == 202

        def final() -> list[tuple[int, str]]:
            params = {"from": str(window), "to": str(window + 1000)}
            got = httpx.get(f"{api.url}/v1/metrics/orders/series", params=params).json()
            points = [(p["value"], p["status"]) for s in got["series"] for p in s["points"]]
            return points if points and points[0][1] != "open" else []

        assert wait_for("the window to be final", final) == [(2, "final")]
        # stream time has passed the window: this event is late, kept for reconciliation
        assert post(api.url, [order(3, window + 30)]).status_code == 202
        wait_for("the late event", lambda: len(hot.late_rows()) == 1)

        # another processor reconciling now: nothing is done, and that is said
        holder = f"test-{uuid.uuid4().hex[:6]}"
        assert hot.acquire_lease(holder, 60_000)
        held = ok(cli("reconcile", "--config", str(config_path), cwd=tmp_path))
        assert "another processor holds the reconciliation lease" in held
        assert len(hot.late_rows()) == 1
        hot.release_lease(holder)

        def reconciled() -> str | None:
            # the running processor takes the lease now and then (retention): try again
            out = ok(cli("reconcile", "--config", str(config_path), cwd=tmp_path))
            return None if "holds the reconciliation lease" in out else out

        assert wait_for("a reconciliation", reconciled, 60) == "reconciled 1 late events\n"
        assert hot.late_rows() == []
        assert final() == [(3, "revised")]
        with psycopg.connect(pg_url) as conn:
            rows = conn.execute(
                "SELECT value_int, status FROM history WHERE metric = 'orders' "
                "AND window_start = %s",
                (window,),
            ).fetchall()
        assert rows == [(3, "revised")]
        assert wait_for("a second run", reconciled, 60) == "reconciled 0 late events\n"
        assert hot.acquire_lease(holder, 1_000), "the command left the lease taken"
    finally:
        hot.close()


# --- unreachable stores -------------------------------------------------------------------------


def test_unreachable_stores_are_named_with_exit_code_1(tmp_path: Path, redis_url: str) -> None:
    redis_port, pg_port = free_port(), free_port()  # nothing listens there
    secret = f"s{uuid.uuid4().hex[:10]}"
    nowhere = template().format(
        redis=f"'redis://:{secret}@127.0.0.1:{redis_port}/0'",
        pg=f"'postgresql://pb:{secret}@127.0.0.1:{pg_port}/pb'",
    )
    config = tmp_path / "nowhere.yaml"
    config.write_text(nowhere)
    expected = {
        ("keys", "list"): "cannot open the PostgreSQL store at postgresql://pb:***@",
        ("keys", "create", "--scope", "read"): "cannot open the PostgreSQL store",
        ("dlq", "list"): "cannot read from the Redis dead-letter store at redis://:***@",
        ("dlq", "replay"): "cannot read from the Redis dead-letter store",
        ("reconcile",): "cannot take the lease in the Redis hot store at redis://:***@",
    }
    for args, message in expected.items():
        done = cli(*args, "--config", str(config), cwd=tmp_path)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert done.stderr.startswith(f"pulseboard {args[0]}: {message}"), done.stderr
        assert "Traceback" not in done.stderr and secret not in done.stderr
        assert done.stdout == ""

    # Redis reachable, PostgreSQL not: the reconciliation fails on history, the lease is
    # given back
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    half = tmp_path / "half.yaml"
    half.write_text(
        template().format(
            redis=f"'{redis_url}?prefix={prefix}'",
            pg=f"'postgresql://pb:{secret}@127.0.0.1:{pg_port}/pb'",
        )
    )
    done = cli("reconcile", "--config", str(half), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("pulseboard reconcile: cannot open the PostgreSQL history store")
    assert "Traceback" not in done.stderr and secret not in done.stderr
    loaded = load_config(half)
    hot = RedisHotStore(RedisSettings.from_url(loaded.storage.log), loaded)
    try:
        assert hot.acquire_lease("after", 1_000), "the failed run kept the lease"
    finally:
        hot.close()

    # a data directory means nothing to a distributed config
    done = cli("reconcile", "--config", str(half), "--data-dir", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 1
    assert "--data-dir names an embedded data directory" in done.stderr
