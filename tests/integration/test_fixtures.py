"""The server fixtures themselves: each test gets what the fixtures promise."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import redis

from .conftest import RedisServer


def test_each_test_gets_a_fresh_empty_database(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()
        encoding = conn.execute("SHOW server_encoding").fetchone()
    assert name is not None and name[0].startswith("pbtest_")
    assert tables == (0,)
    assert encoding == ("UTF8",)


def test_redis_url_answers_on_an_emptied_database(clean_redis_url: str) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    try:
        assert client.dbsize() == 0
        client.set("pulseboard:probe", b"1")
        assert client.get("pulseboard:probe") == b"1"
    finally:
        client.close()


def test_an_appendonly_redis_keeps_acknowledged_writes_across_a_kill(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory(appendonly=True)
    client = redis.Redis.from_url(server.url)
    try:
        client.xadd("events", {"n": "1"})
        server.kill()
        server.start()
        assert client.xlen("events") == 1
    finally:
        client.close()
        server.stop()
