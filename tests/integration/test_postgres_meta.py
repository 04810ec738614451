"""API keys and dashboards on PostgreSQL (``postgres_meta``) behave as their SQLite
counterparts, shared between two stores on one database; processor reports in Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from pulseboard.adapters.base import StoreUnavailable
from pulseboard.adapters.postgres_meta import PostgresMeta
from pulseboard.adapters.redis_conn import RedisSettings
from pulseboard.adapters.redis_reports import RedisProcessorReports
from pulseboard.adapters.sqlite import KeyRecord, SqliteDashboards, SqliteKeys, StoredDashboard
from pulseboard.auth import AuthError, Authorizer, KeyStore, create_key
from pulseboard.service_port import DashboardStore


def dashboards_story(store: DashboardStore) -> list[object]:
    """What a sequence of saves answers, to compare the two adapters."""
    a1, a2 = StoredDashboard("a", b'{"v":1}', 1), StoredDashboard("a", b'{"v":2}', 2)
    return [
        store.put(a1),
        store.put(a2),
        store.put(StoredDashboard("a", b"{}", 3), create_only=True),
        store.put(StoredDashboard("b", b"{}", 4), create_only=True),
        store.get("a"),
        [d.id for d in store.all()],
        store.delete("a"),
        store.delete("a"),
        store.get("a"),
    ]


def test_dashboards_answer_as_sqlite_and_are_shared(pg_url: str, tmp_path: Path) -> None:
    one, two = PostgresMeta(pg_url), PostgresMeta(pg_url)
    sqlite = SqliteDashboards(tmp_path / "meta.db")
    try:
        assert dashboards_story(one.dashboards) == dashboards_story(sqlite)
        assert [d.id for d in two.dashboards.all()] == ["b"]
        one.ping()
    finally:
        one.close()
        two.close()
        sqlite.close()


def test_keys_answer_as_sqlite(pg_url: str, tmp_path: Path) -> None:
    meta = PostgresMeta(pg_url)
    sqlite = SqliteKeys(tmp_path / "meta.db")
    try:
        stores: list[KeyStore] = [meta.keys, sqlite]
        for store in stores:
            key = create_key(store, ["read"], "dash")
            auth = Authorizer(store, required=True)
            auth.check(f"Bearer {key}", "read")
            with pytest.raises(AuthError):
                auth.check(f"Bearer {key}", "ingest")
        record = KeyRecord("k1", "h", frozenset({"ingest", "read"}), "n", 5, None)
        meta.keys.add(record)
        assert meta.keys.get("k1") == record
        assert meta.keys.revoke("k1") and not meta.keys.revoke("k1")
        got = meta.keys.get("k1")
        assert got is not None and got.revoked_ms is not None
        assert [k.key_id for k in meta.keys.all()][:1] == ["k1"]  # by creation time
    finally:
        meta.close()
        sqlite.close()


def test_an_unreachable_server_is_store_unavailable_without_the_password() -> None:
    with pytest.raises(StoreUnavailable) as caught:
        PostgresMeta("postgresql://pb:s3cret@127.0.0.1:1/pb")
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)


def test_processor_reports_round_trip(clean_redis_url: str) -> None:
    reports = RedisProcessorReports(RedisSettings.from_url(clean_redis_url))
    try:
        reports.ping()
        reports.report("h:1", 10, {"events": 3})
        reports.report("h:2", 20, {"events": 4})
        reports.report("h:1", 30, {"events": 5})
        assert reports.all() == {"h:1": (30, {"events": 5}), "h:2": (20, {"events": 4})}
        reports.drop("h:1")
        assert list(reports.all()) == ["h:2"]
    finally:
        reports.close()
