"""Operator commands on a data directory: reconcile, dead letters, API keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import httpx

from pulseboard.adapters.sqlite import (
    LOG_FILE,
    META_FILE,
    STATE_FILE,
    SqliteKeys,
    SqliteState,
    now_ms,
)
from pulseboard.adapters.sqlite_log import SqliteDeadLetters, SqliteLogReader
from pulseboard.auth import create_key
from pulseboard.config import Config
from pulseboard.reconcile import reconcile

REPLAY_BATCH = 500


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def run_reconcile(config: Config, out: TextIO) -> int:
    """Apply pending late events now (the processor also does it every reconcile_every)."""
    data_dir = Path(config.storage.data_dir)
    state = SqliteState(data_dir / STATE_FILE)
    log_reader = SqliteLogReader(data_dir / LOG_FILE)
    try:
        progress = state.progress()
        if progress is None:
            out.write(f"nothing has been processed in {data_dir} yet\n")
            return 0
        pos, stream_time_ms, _ = progress
        result = reconcile(
            config,
            log_reader,
            state,
            through_pos=pos,
            stream_time_ms=stream_time_ms,
            now_ms=now_ms(),
        )
    finally:
        state.close()
        log_reader.close()
    notes = [f"reconciled {result.events} late events, recomputing {result.windows} windows"]
    if result.waiting:
        notes.append(f"{result.waiting} wait for sliding windows still open")
    if result.expired:
        notes.append(f"{result.expired} were too old to recompute from the log")
    out.write("; ".join(notes) + "\n")
    return 0


def run_dlq_list(data_dir: Path, *, limit: int, as_json: bool, out: TextIO) -> int:
    """Print dead letters, oldest first."""
    store = SqliteDeadLetters(data_dir / LOG_FILE)
    try:
        letters = store.list(limit=limit)
        total = store.count()
    finally:
        store.close()
    for d in letters:
        raw = d.raw.decode("utf-8", "replace")
        if as_json:
            record = {
                "id": d.id,
                "received": _iso(d.received_ms),
                "event_id": d.event_id,
                "error": d.error,
                "raw": raw,
            }
            out.write(json.dumps(record) + "\n")
        else:
            out.write(f"#{d.id} {_iso(d.received_ms)} id={d.event_id} {d.error}\n    {raw[:300]}\n")
    if not as_json:
        out.write(f"{len(letters)} shown, {total} not replayed\n")
    return 0


def run_dlq_replay(
    data_dir: Path, *, url: str, api_key: str | None, limit: int, out: TextIO, err: TextIO
) -> int:
    """Re-submit dead letters to a running server (after its config was fixed).

    Each dead letter sent in a request that got 202 is marked replayed; events rejected again
    become new dead letters with the new reason."""
    store = SqliteDeadLetters(data_dir / LOG_FILE)
    headers = {"Content-Type": "application/x-ndjson"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    accepted = rejected = 0
    try:
        letters = store.list(limit=limit)
        with httpx.Client(timeout=30.0) as client:
            for low in range(0, len(letters), REPLAY_BATCH):
                chunk = letters[low : low + REPLAY_BATCH]
                body = b"\n".join(d.raw.replace(b"\n", b" ") for d in chunk)
                try:
                    response = client.post(f"{url}/v1/events", content=body, headers=headers)
                except httpx.HTTPError as exc:
                    err.write(f"cannot reach {url}: {exc}\n")
                    return 1
                if response.status_code != 202:
                    err.write(f"{url} answered {response.status_code}: {response.text}\n")
                    return 1
                result = response.json()
                accepted += result["accepted"]
                rejected += result["rejected"]
                store.mark_replayed([d.id for d in chunk])
    finally:
        store.close()
    out.write(f"replayed {accepted + rejected} dead letters: {accepted} accepted, ")
    out.write(f"{rejected} rejected again (kept as new dead letters)\n")
    return 0


def run_keys_create(data_dir: Path, scopes: list[str], name: str, out: TextIO) -> int:
    """Create a key and print it (only its hash is stored)."""
    keys = SqliteKeys(data_dir / META_FILE)
    try:
        token = create_key(keys, scopes, name)
    finally:
        keys.close()
    out.write(token + "\n")
    return 0


def run_keys_list(data_dir: Path, out: TextIO) -> int:
    keys = SqliteKeys(data_dir / META_FILE)
    try:
        for k in keys.all():
            state = f"revoked {_iso(k.revoked_ms)}" if k.revoked_ms else "active"
            scopes = ",".join(sorted(k.scopes))
            out.write(f"{k.key_id} {scopes} {state} created {_iso(k.created_ms)} {k.name}\n")
    finally:
        keys.close()
    return 0


def run_keys_revoke(data_dir: Path, key_id: str, out: TextIO, err: TextIO) -> int:
    keys = SqliteKeys(data_dir / META_FILE)
    try:
        done = keys.revoke(key_id)
    finally:
        keys.close()
    if not done:
        err.write(f"no active key {key_id!r}\n")
        return 1
    out.write(f"revoked {key_id}\n")
    return 0
