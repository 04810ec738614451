"""API keys: ``pb_<id>_<secret>``, stored as the SHA-256 of the secret, with scopes.

Scopes: ``ingest`` (post events), ``read`` (metrics, series, live, dashboards), ``admin``
(everything). Secrets are 32 random bytes, so a plain hash is enough: there is nothing to
guess that a slow hash would protect.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Protocol

from pulseboard.adapters.sqlite import KeyRecord, now_ms
from pulseboard.errors import PulseboardError

SCOPES = ("ingest", "read", "dashboards", "admin")
_CACHE_S = 5.0


class AuthError(PulseboardError):
    """A request without a valid key (401) or with a key lacking the scope (403)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class KeyStore(Protocol):
    """Where keys are kept (``SqliteKeys``; ``PostgresKeys`` for the distributed mode)."""

    def add(self, record: KeyRecord) -> None: ...

    def get(self, key_id: str) -> KeyRecord | None: ...


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(keys: KeyStore, scopes: list[str], name: str = "") -> str:
    """Store a new key with ``scopes`` and return it; it is shown once, only its hash is kept."""
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"unknown scope {unknown or scopes!r}; expected some of {SCOPES}")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    keys.add(KeyRecord(key_id, _hash(secret), frozenset(scopes), name, now_ms(), None))
    return f"pb_{key_id}_{secret}"


@dataclass(slots=True)
class Authorizer:
    """Checks bearer tokens against the key store, caching lookups for a few seconds."""

    keys: KeyStore
    required: bool
    _cache: dict[str, tuple[float, KeyRecord | None]] | None = None

    def check(self, header: str | None, scope: str) -> None:
        """Raise ``AuthError`` unless the ``Authorization`` header grants ``scope``."""
        if not self.required:
            return
        if not header or not header.startswith("Bearer "):
            raise AuthError(
                "an API key is required: send 'Authorization: Bearer <key>' "
                "(create one with 'pulseboard keys create --scope ...')",
                401,
            )
        token = header[len("Bearer ") :].strip()
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != "pb":
            raise AuthError("the API key is malformed; expected pb_<id>_<secret>", 401)
        record = self._lookup(parts[1])
        if (
            record is None
            or record.revoked_ms is not None
            or not hmac.compare_digest(record.secret_hash, _hash(parts[2]))
        ):
            raise AuthError("the API key is unknown or revoked", 401)
        if scope not in record.scopes and "admin" not in record.scopes:
            raise AuthError(
                f"the API key has scopes {sorted(record.scopes)}; this needs {scope!r}", 403
            )

    def _lookup(self, key_id: str) -> KeyRecord | None:
        if self._cache is None:
            self._cache = {}
        hit = self._cache.get(key_id)
        now = time.monotonic()
        if hit is not None and now - hit[0] < _CACHE_S:
            return hit[1]
        record = self.keys.get(key_id)
        self._cache[key_id] = (now, record)
        return record
