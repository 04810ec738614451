"""Operator commands: reconcile, dead letters, API keys, on the stores a config names.

``operator_stores`` picks the stores by the config's ``storage:`` (``server.check_storage``),
so every command works on both modes through one interface, ``OperatorStores``:

- **embedded** (``EmbeddedStores``): the SQLite files of a data directory.
- **distributed** (``DistributedStores``): API keys in PostgreSQL (``storage.history``), where
  the API processes look them up; dead letters on the Redis stream the API processes append
  rejected events to (``storage.log``); reconciliation by a ``DistributedProcessor`` built for
  one run, under the same lease in Redis as the running processors take, so it is safe while
  they run.

Each store is opened by the command that needs it and closed after; one that cannot be reached
raises ``StoreUnavailable`` naming it (the CLI prints it and exits 1).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

import httpx

from pulseboard.adapters.sqlite import (
    LOG_FILE,
    META_FILE,
    STATE_FILE,
    KeyRecord,
    SqliteKeys,
    SqliteState,
    now_ms,
)
from pulseboard.adapters.sqlite_log import DeadLetter, SqliteDeadLetters, SqliteLogReader
from pulseboard.auth import KeyStore, create_key
from pulseboard.config import Config, StorageSpec, load_config
from pulseboard.errors import PulseboardError
from pulseboard.reconcile import reconcile

if TYPE_CHECKING:
    from pulseboard.adapters.redis_dlq import RedisDeadLetters

REPLAY_BATCH = 500


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


# --- the stores ------------------------------------------------------------------------------


class KeyAdmin(KeyStore, Protocol):
    """API keys as the ``keys`` commands use them (``SqliteKeys``, ``PostgresKeys``)."""

    def all(self) -> list[KeyRecord]:
        """Every key, revoked ones included, oldest first."""
        ...

    def revoke(self, key_id: str) -> bool:
        """Revoke an active key; False when there is no active key ``key_id``."""
        ...


class DeadLetterAdmin(Protocol):
    """Dead letters as the ``dlq`` commands use them (``SqliteDeadLetters``, and
    ``RedisDeadLetters`` through ``_RedisLetters``)."""

    def count(self) -> int:
        """Dead letters not yet replayed."""
        ...

    def mark_replayed(self, ids: Sequence[int]) -> None:
        """Mark dead letters (``DeadLetter.id``) replayed now."""
        ...

    def list(self, *, limit: int, include_replayed: bool = False) -> list[DeadLetter]:
        """The oldest dead letters first, up to ``limit``, without the replayed ones unless
        ``include_replayed``."""
        ...


class OperatorStores(Protocol):
    """The stores behind the operator commands. ``keys`` and ``dead_letters`` open their
    store and close it when the ``with`` block ends; every method raises ``StoreUnavailable``
    naming a store it cannot reach."""

    def keys(self, *, create: bool = False) -> contextlib.AbstractContextManager[KeyAdmin]:
        """The API keys; ``create``: the store may be made if it does not exist yet (so a key
        can be made before the first start)."""
        ...

    def dead_letters(self) -> contextlib.AbstractContextManager[DeadLetterAdmin]:
        """The dead letters (rejected events with their reason)."""
        ...

    def reconcile(self) -> str:
        """Apply the pending late events to history now; returns what was done, one line
        for the operator."""
        ...


def operator_stores(config_path: str | None, data_dir: str | None) -> OperatorStores:
    """The stores of the config at ``config_path`` (its ``storage:``, embedded or
    distributed), ``data_dir`` replacing its ``storage.data_dir``; without a config, the data
    directory ``data_dir`` (default ``./pulseboard-data``). ``ConfigError`` for a config that
    cannot be read or store settings that cannot be served; ``PulseboardError`` for a
    ``data_dir`` beside a distributed config, which has none."""
    if config_path is None:
        return EmbeddedStores(Path(StorageSpec().data_dir if data_dir is None else data_dir))
    from pulseboard.server import DISTRIBUTED, check_storage, with_data_dir

    config = with_data_dir(load_config(config_path), data_dir)
    if check_storage(config) == DISTRIBUTED:
        return DistributedStores(config)
    return EmbeddedStores(Path(config.storage.data_dir), config)


class EmbeddedStores:
    """The SQLite files of the data directory ``data_dir``; ``config`` is needed only to
    reconcile (its metrics say what to recompute)."""

    def __init__(self, data_dir: Path, config: Config | None = None) -> None:
        self.data_dir = data_dir
        self.config = config

    def _existing(self) -> Path:
        if not self.data_dir.is_dir():
            raise PulseboardError(
                f"no data directory at {self.data_dir}; name a server's with --data-dir or --config"
            )
        return self.data_dir

    @contextlib.contextmanager
    def keys(self, *, create: bool = False) -> Iterator[KeyAdmin]:
        """``meta.db``; only with ``create`` may the directory not exist yet."""
        data_dir = self.data_dir if create else self._existing()
        keys = SqliteKeys(data_dir / META_FILE)
        try:
            yield keys
        finally:
            keys.close()

    @contextlib.contextmanager
    def dead_letters(self) -> Iterator[DeadLetterAdmin]:
        """The dead letters in ``log.db``."""
        store = SqliteDeadLetters(self._existing() / LOG_FILE)
        try:
            yield store
        finally:
            store.close()

    def reconcile(self) -> str:
        """Reconcile through the position the processor has processed (its ``state.db``)."""
        if self.config is None:
            raise PulseboardError("reconcile needs the config (--config): its metrics")
        state = SqliteState(self.data_dir / STATE_FILE)
        log_reader = SqliteLogReader(self.data_dir / LOG_FILE)
        try:
            progress = state.progress()
            if progress is None:
                return f"nothing has been processed in {self.data_dir} yet"
            pos, stream_time_ms, _ = progress
            result = reconcile(
                self.config,
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
        return "; ".join(notes)


class DistributedStores:
    """The Redis and PostgreSQL of a distributed deployment (``config.storage``)."""

    def __init__(self, config: Config) -> None:
        self.config = config

    @contextlib.contextmanager
    def keys(self, *, create: bool = False) -> Iterator[KeyAdmin]:
        """The keys in PostgreSQL, where every API process looks them up (opening migrates
        an empty database, whatever ``create``)."""
        from pulseboard.adapters.postgres_meta import PostgresMeta

        meta = PostgresMeta(self.config.storage.history, pool_max=1)
        try:
            yield meta.keys
        finally:
            meta.close()

    @contextlib.contextmanager
    def dead_letters(self) -> Iterator[DeadLetterAdmin]:
        """The dead letters the API processes append to Redis with each ingest request."""
        from pulseboard.adapters.redis_conn import RedisSettings
        from pulseboard.adapters.redis_dlq import RedisDeadLetters

        store = RedisDeadLetters(RedisSettings.from_url(self.config.storage.log))
        try:
            yield _RedisLetters(store)
        finally:
            store.close()

    def reconcile(self) -> str:
        """One ``DistributedProcessor.reconcile``, built as ``dist_run`` builds a processor
        (but not run). The lease is taken here first, so that "another processor is
        reconciling" is told apart from "nothing to do"; the processor's own acquire then
        extends it (same owner) and releases it."""
        from pulseboard.adapters.postgres import PostgresHistory
        from pulseboard.adapters.redis_conn import RedisSettings
        from pulseboard.adapters.redis_hot import RedisHotStore
        from pulseboard.adapters.redis_log import RedisEventLog
        from pulseboard.dist_processor import (
            LATE_BATCH,
            RECONCILE_LEASE_MS,
            DistributedProcessor,
        )
        from pulseboard.dist_run import consumer_name

        config = self.config
        settings = RedisSettings.from_url(config.storage.log)
        consumer = f"reconcile@{consumer_name()}"
        with contextlib.ExitStack() as stack:
            log_store = RedisEventLog(settings)
            stack.callback(log_store.close)
            hot = RedisHotStore(settings, config, client=log_store.client)
            if not hot.acquire_lease(consumer, RECONCILE_LEASE_MS):
                return (
                    "another processor holds the reconciliation lease in Redis (it applies "
                    "late events itself, every pipeline.reconcile_every); nothing was done here"
                )
            stack.callback(hot.release_lease, consumer)
            history = PostgresHistory(config.storage.history, pool_max=1)
            stack.callback(history.close)
            processor = DistributedProcessor(config, log_store, hot, history, consumer)
            applied = processor.reconcile()
            pending = len(hot.late_entries(LATE_BATCH))
        notes = [f"reconciled {applied} late events"]
        if pending:
            notes.append(
                f"{pending} still pending (they wait for sliding windows still open, "
                "or for the next run)"
            )
        return "; ".join(notes)


class _RedisLetters:
    """``RedisDeadLetters`` as a ``DeadLetterAdmin``: marked replayed at the wall clock."""

    def __init__(self, store: RedisDeadLetters) -> None:
        self._store = store

    def count(self) -> int:
        return self._store.count()

    def mark_replayed(self, ids: Sequence[int]) -> None:
        self._store.mark_replayed(ids, now_ms=now_ms())

    def list(self, *, limit: int, include_replayed: bool = False) -> list[DeadLetter]:
        return self._store.list(limit=limit, include_replayed=include_replayed)


# --- the commands ----------------------------------------------------------------------------


def run_reconcile(stores: OperatorStores, out: TextIO) -> int:
    """Apply pending late events now (the processors also do it every reconcile_every)."""
    out.write(stores.reconcile() + "\n")
    return 0


def run_dlq_list(stores: OperatorStores, *, limit: int, as_json: bool, out: TextIO) -> int:
    """Print dead letters, oldest first."""
    with stores.dead_letters() as store:
        letters = store.list(limit=limit)
        total = store.count()
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
    stores: OperatorStores,
    *,
    url: str,
    api_key: str | None,
    limit: int,
    out: TextIO,
    err: TextIO,
) -> int:
    """Re-submit dead letters to a running server (after its config was fixed).

    Each dead letter sent in a request that got 202 is marked replayed; events rejected again
    become new dead letters with the new reason."""
    headers = {"Content-Type": "application/x-ndjson"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    accepted = rejected = 0
    with stores.dead_letters() as store:
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
    out.write(f"replayed {accepted + rejected} dead letters: {accepted} accepted, ")
    out.write(f"{rejected} rejected again (kept as new dead letters)\n")
    return 0


def run_keys_create(stores: OperatorStores, scopes: list[str], name: str, out: TextIO) -> int:
    """Create a key and print it (only its hash is stored)."""
    with stores.keys(create=True) as keys:
        token = create_key(keys, scopes, name)
    out.write(token + "\n")
    return 0


def run_keys_list(stores: OperatorStores, out: TextIO) -> int:
    """Print every key: id, scopes, state, creation time, name (never a secret)."""
    with stores.keys() as keys:
        for k in keys.all():
            state = f"revoked {_iso(k.revoked_ms)}" if k.revoked_ms else "active"
            scopes = ",".join(sorted(k.scopes))
            out.write(f"{k.key_id} {scopes} {state} created {_iso(k.created_ms)} {k.name}\n")
    return 0


def run_keys_revoke(stores: OperatorStores, key_id: str, out: TextIO, err: TextIO) -> int:
    """Revoke a key; running servers refuse it within the 5 s their lookups are cached."""
    with stores.keys() as keys:
        done = keys.revoke(key_id)
    if not done:
        err.write(f"no active key {key_id!r}\n")
        return 1
    out.write(f"revoked {key_id}\n")
    return 0
