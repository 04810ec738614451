"""Operator commands against a real server: dead letters listed and replayed after a fix."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

import httpx

from tests.e2e.conftest import Server

CONFIG = """
pipeline: {tick: 200ms, lateness: 1s}
events:
  order:
    fields:
      amount: {type: float, required: true}
      region: {type: string, enum: [%s]}
metrics:
  - {name: orders, event: order, agg: count, window: 1h, group_by: [region]}
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pulseboard.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def counts(server: Server) -> dict[str, int]:
    body = httpx.get(f"{server.url}/v1/metrics/orders").json()
    return {v["labels"]["region"]: v["value"] for v in body["values"]}


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_dead_letters_are_listed_and_replayed_after_the_config_is_fixed(
    serve: Callable[..., Server],
) -> None:
    server = serve(CONFIG % "eu, us")
    now = int(time.time() * 1000)
    events = [
        {"id": "ok-1", "type": "order", "time": now, "data": {"amount": 5, "region": "eu"}},
        {"id": "apac-1", "type": "order", "time": now, "data": {"amount": 7, "region": "apac"}},
        {"id": "apac-2", "type": "order", "time": now, "data": {"amount": 9, "region": "apac"}},
    ]
    answer = httpx.post(f"{server.url}/v1/events", json=events).json()
    assert (answer["accepted"], answer["rejected"]) == (1, 2)

    listed = cli("dlq", "list", "--data-dir", str(server.data_dir), "--json")
    assert listed.returncode == 0, listed.stderr
    letters = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [d["event_id"] for d in letters] == ["apac-1", "apac-2"]
    assert letters[0]["error"] == (
        'events[1].data.region: invalid enum value \'apac\' (expected one of: "eu", "us")'
    )
    assert json.loads(letters[0]["raw"])["data"]["region"] == "apac"

    # the operator adds the region and restarts; the replay is then accepted and counted
    server.stop()
    server.config_path.write_text(CONFIG % "eu, us, apac")
    server.start()
    replay = cli("dlq", "replay", "--data-dir", str(server.data_dir), "--url", server.url)
    assert replay.returncode == 0, replay.stderr
    assert "replayed 2 dead letters: 2 accepted, 0 rejected again" in replay.stdout
    wait_until(lambda: counts(server) == {"eu": 1, "apac": 2}, "the replayed orders")
    again = cli("dlq", "list", "--data-dir", str(server.data_dir))
    assert again.stdout.strip().endswith("0 shown, 0 not replayed")
    # replaying again sends nothing; the ids would be deduplicated anyway
    assert (
        "replayed 0 dead letters"
        in cli("dlq", "replay", "--data-dir", str(server.data_dir), "--url", server.url).stdout
    )


def test_keys_created_by_the_cli_open_a_server_that_requires_them(
    serve: Callable[..., Server],
) -> None:
    server = serve(CONFIG % "eu, us", "--require-keys")
    created = cli("keys", "create", "--data-dir", str(server.data_dir), "--scope", "read")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("pb_")
    url = f"{server.url}/v1/metrics/orders"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    posted = httpx.post(
        f"{server.url}/v1/events", json=[], headers={"Authorization": f"Bearer {key}"}
    )
    assert posted.status_code == 403
    # the simulator without a key stops at once instead of failing for its whole duration
    refused = cli("simulate", "--url", server.url, "--rate", "50", "--duration", "600")
    assert refused.returncode == 1
    assert "stopped early, nothing was accepted" in refused.stdout
    assert "401" in refused.stdout and "check the api key" in refused.stdout
    key_id = key.split("_")[1]
    assert key_id in cli("keys", "list", "--data-dir", str(server.data_dir)).stdout
    assert cli("keys", "revoke", "--data-dir", str(server.data_dir), key_id).returncode == 0
    wait_until(
        lambda: httpx.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 401,
        "the revoked key to be refused",
    )
