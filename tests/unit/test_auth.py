"""API keys: hashed storage, scopes, revocation."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pulseboard.adapters.sqlite import SqliteKeys
from pulseboard.auth import AuthError, Authorizer, create_key


def test_keys_grant_their_scopes_only_and_are_stored_hashed(tmp_path: Path) -> None:
    keys = SqliteKeys(tmp_path / "meta.db")
    reader = create_key(keys, ["read"], "dashboards")
    admin = create_key(keys, ["admin"])
    auth = Authorizer(keys, required=True)
    auth.check(f"Bearer {reader}", "read")
    auth.check(f"Bearer {admin}", "ingest")  # admin implies every scope
    with pytest.raises(AuthError, match=r"has scopes \['read'\]; this needs 'ingest'") as denied:
        auth.check(f"Bearer {reader}", "ingest")
    assert denied.value.status == 403
    with pytest.raises(AuthError, match="an API key is required") as missing:
        auth.check(None, "read")
    assert missing.value.status == 401
    with pytest.raises(AuthError, match="unknown or revoked"):
        auth.check(f"Bearer {reader[:-2]}xx", "read")
    with pytest.raises(AuthError, match="malformed"):
        auth.check("Bearer nonsense", "read")
    secret = reader.split("_", 2)[2]
    stored = sqlite3.connect(tmp_path / "meta.db").execute("SELECT * FROM api_keys").fetchall()
    assert stored and not any(secret in str(row) for row in stored)
    keys.revoke(reader.split("_")[1])
    with pytest.raises(AuthError, match="unknown or revoked"):
        Authorizer(keys, required=True).check(f"Bearer {reader}", "read")
    Authorizer(keys, required=False).check(None, "admin")  # open on loopback by default
    with pytest.raises(ValueError, match="unknown scope"):
        create_key(keys, ["write"])
    keys.close()
