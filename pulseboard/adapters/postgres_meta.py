"""API keys and saved dashboards on PostgreSQL, shared by every API process of a distributed
deployment: the same methods as ``SqliteKeys`` and ``SqliteDashboards`` (``auth.KeyStore``,
``service_port.DashboardStore``), over the tables of migration ``0002_meta.sql``.

``PostgresMeta`` opens (and migrates, as ``PostgresHistory`` does) one small pool that both
share. Every driver error leaves as ``StoreUnavailable`` naming the URL with its password
masked. Thread-safe.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from pulseboard.adapters.base import now_ms
from pulseboard.adapters.postgres import open_migrated_pool, translate_errors
from pulseboard.adapters.sqlite import KeyRecord, StoredDashboard
from pulseboard.config import mask_url

_CONNECT_TIMEOUT_S = 5


class PostgresMeta:
    """The pool under ``keys`` and ``dashboards``; opening fails fast (``StoreUnavailable``)
    when the server cannot be reached."""

    def __init__(self, url: str, *, pool_max: int = 4, wait_s: float = 5.0) -> None:
        self._url = url
        self._where = f"PostgreSQL store at {mask_url(url)}"
        kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": _CONNECT_TIMEOUT_S}
        self.pool = open_migrated_pool(
            url, self._where, kwargs, name="pulseboard-meta", sizes=(1, pool_max), wait_s=wait_s
        )
        self.keys = PostgresKeys(self)
        self.dashboards = PostgresDashboards(self)

    def ping(self) -> None:
        """One round trip; ``StoreUnavailable`` when the server does not answer."""
        with self.translate("cannot reach"), self.pool.connection() as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        self.pool.close()

    def translate(self, doing: str) -> contextlib.AbstractContextManager[None]:
        """Driver and pool errors → ``StoreUnavailable``, the password scrubbed."""
        return translate_errors(self._url, self._where, doing)


_KEY_COLUMNS = "key_id, secret_hash, scopes, name, created_ms, revoked_ms"


def _key(row: Any) -> KeyRecord:
    return KeyRecord(row[0], row[1], frozenset(row[2].split(",")), row[3], row[4], row[5])


class PostgresKeys:
    """API keys (hashed), as ``SqliteKeys``."""

    def __init__(self, meta: PostgresMeta) -> None:
        self._meta = meta

    def add(self, record: KeyRecord) -> None:
        with self._meta.translate("cannot write to"), self._meta.pool.connection() as conn:
            conn.execute(
                f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES (%s, %s, %s, %s, %s, NULL)",
                (
                    record.key_id,
                    record.secret_hash,
                    ",".join(sorted(record.scopes)),
                    record.name,
                    record.created_ms,
                ),
            )

    def get(self, key_id: str) -> KeyRecord | None:
        with self._meta.translate("cannot read from"), self._meta.pool.connection() as conn:
            row = conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = %s", (key_id,)
            ).fetchone()
        return None if row is None else _key(row)

    def all(self) -> list[KeyRecord]:
        with self._meta.translate("cannot read from"), self._meta.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_ms, key_id"
            ).fetchall()
        return [_key(r) for r in rows]

    def revoke(self, key_id: str) -> bool:
        with self._meta.translate("cannot write to"), self._meta.pool.connection() as conn:
            cursor = conn.execute(
                "UPDATE api_keys SET revoked_ms = %s WHERE key_id = %s AND revoked_ms IS NULL",
                (now_ms(), key_id),
            )
            return cursor.rowcount > 0


class PostgresDashboards:
    """Dashboards saved through the API, as ``SqliteDashboards``."""

    def __init__(self, meta: PostgresMeta) -> None:
        self._meta = meta

    def all(self) -> list[StoredDashboard]:
        """Every saved dashboard, by id."""
        with self._meta.translate("cannot read from"), self._meta.pool.connection() as conn:
            rows = conn.execute("SELECT id, body, updated_ms FROM dashboards ORDER BY id")
            return [StoredDashboard(r[0], bytes(r[1]), r[2]) for r in rows.fetchall()]

    def get(self, ident: str) -> StoredDashboard | None:
        with self._meta.translate("cannot read from"), self._meta.pool.connection() as conn:
            row = conn.execute(
                "SELECT id, body, updated_ms FROM dashboards WHERE id = %s", (ident,)
            ).fetchone()
        return None if row is None else StoredDashboard(row[0], bytes(row[1]), row[2])

    def put(self, dashboard: StoredDashboard, *, create_only: bool = False) -> bool | None:
        """Save ``dashboard``, replacing one with its id; True if it is new. With
        ``create_only``, an existing one is left as it is and None is returned. One statement,
        so two API processes saving at once cannot both create it."""
        with self._meta.translate("cannot write to"), self._meta.pool.connection() as conn:
            if create_only:
                row = conn.execute(
                    "INSERT INTO dashboards (id, body, updated_ms) VALUES (%s, %s, %s) "
                    "ON CONFLICT (id) DO NOTHING RETURNING true",
                    (dashboard.id, dashboard.body, dashboard.updated_ms),
                ).fetchone()
                return None if row is None else True
            row = conn.execute(
                # xmax = 0 only for a row this statement inserted
                "INSERT INTO dashboards (id, body, updated_ms) VALUES (%s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET body = excluded.body, "
                "updated_ms = excluded.updated_ms RETURNING (xmax = 0)",
                (dashboard.id, dashboard.body, dashboard.updated_ms),
            ).fetchone()
        return bool(row[0]) if row is not None else False

    def delete(self, ident: str) -> bool:
        """Delete the dashboard ``ident``; False if there was none."""
        with self._meta.translate("cannot write to"), self._meta.pool.connection() as conn:
            return conn.execute("DELETE FROM dashboards WHERE id = %s", (ident,)).rowcount > 0


if TYPE_CHECKING:
    from pulseboard.auth import KeyStore
    from pulseboard.service_port import DashboardStore

    def _is_a_key_store(store: PostgresKeys) -> KeyStore:
        return store

    def _is_a_dashboard_store(store: PostgresDashboards) -> DashboardStore:
        return store
