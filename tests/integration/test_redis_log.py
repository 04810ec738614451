"""The event log on Redis Streams, its key names and its connection settings, against a real
``redis-server`` (the fixtures in ``conftest.py``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from pulseboard.adapters.base import StoreUnavailable
from pulseboard.adapters.redis_conn import RedisSettings, RedisUrlError, parse_id
from pulseboard.adapters.redis_dlq import (
    RedisDeadLetters,
    dead_letter_number,
    dead_letter_stream_id,
)
from pulseboard.adapters.redis_keys import RedisKeys, check_prefix
from pulseboard.adapters.redis_log import Backlog, RedisEventLog, StreamEntry
from pulseboard.adapters.sqlite_log import Append, DeadLetter

from .conftest import RedisServer, free_port

DEADLINE_S = 10.0


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds, failing after ``DEADLINE_S``."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def batch(n: int, events: int = 10, *, dead: tuple[DeadLetter, ...] = ()) -> Append:
    payload = b'[{"id":"e%d","n":%d}]' % (n, events)
    return Append(1_000 + n, events, 10 * n, 10 * n + 5, payload, dead)


@pytest.fixture
def settings(clean_redis_url: str) -> RedisSettings:
    return RedisSettings.from_url(clean_redis_url)


@pytest.fixture
def event_log(settings: RedisSettings) -> Iterator[RedisEventLog]:
    store = RedisEventLog(settings)
    store.ensure_group()
    yield store
    store.close()


def drain(store: RedisEventLog, consumer: str, max_events: int = 1_000) -> list[StreamEntry]:
    out: list[StreamEntry] = []
    while got := store.read(consumer, max_events):
        out.extend(got)
    return out


# --- appending and reading -----------------------------------------------------------------


def test_append_and_read_keep_every_field_byte_exact(
    event_log: RedisEventLog, settings: RedisSettings
) -> None:
    payload = bytes(range(256)) * 3 + '{"é":"✓"}'.encode()
    dead = (
        DeadLetter(1_700_000_000_123, 4, None, "missing field 'amount'", b"\x00\xff{raw"),
        DeadLetter(1_700_000_000_124, 7, "", "ünïcode reason", b""),
        DeadLetter(1_700_000_000_125, 9, "ev-9", "late", b'{"id":"ev-9"}'),
    )
    item = Append(1_700_000_000_123, 3, -5, 2**53, payload, dead)
    stream_id = event_log.append(item)
    assert stream_id is not None

    (entry,) = event_log.read("p1", 100)
    assert entry == StreamEntry(stream_id, item.received_ms, 3, -5, 2**53, payload, 1, 3)
    assert entry.to_log_entry().payload == payload
    letters = RedisDeadLetters(settings)
    try:
        got = letters.list(limit=10)
    finally:
        letters.close()
    assert [(d.received_ms, d.event_index, d.event_id, d.error, d.raw) for d in got] == [
        (d.received_ms, d.event_index, d.event_id, d.error, d.raw) for d in dead
    ]


def test_a_request_of_dead_letters_only_appends_no_entry(
    event_log: RedisEventLog, settings: RedisSettings
) -> None:
    dead = (DeadLetter(5, 0, "x", "bad", b"{}"),)
    assert event_log.append(Append(5, 0, 0, 0, None, dead)) is None
    assert event_log.length() == 0
    letters = RedisDeadLetters(settings)
    try:
        assert letters.count() == 1
    finally:
        letters.close()


def test_append_many_returns_ids_in_order_and_numbers_entries(event_log: RedisEventLog) -> None:
    ids = event_log.append_many([batch(i, events=i + 1) for i in range(20)])
    assert all(i is not None for i in ids)
    assert ids == sorted(ids, key=lambda i: parse_id(i or "0"))
    entries = drain(event_log, "p1")
    assert [e.id for e in entries] == ids
    assert [e.seq for e in entries] == list(range(1, 21))
    assert [e.events_total for e in entries] == [sum(range(1, k + 2)) for k in range(20)]


def test_append_survives_a_flushed_script_cache(event_log: RedisEventLog) -> None:
    event_log.client.script_flush()
    assert event_log.append_many([batch(1), batch(2)])[1] is not None
    assert event_log.length() == 2


def test_a_read_holds_about_max_events_and_never_splits_an_entry(
    event_log: RedisEventLog,
) -> None:
    event_log.append_many([batch(i, events=10) for i in range(10)] + [batch(10, events=500)])
    sizes = []
    while got := event_log.read("p1", 25):
        sizes.append([e.events for e in got])
    assert sizes[:5] == [[10, 10]] * 5
    assert sizes[5:] == [[500]]  # bigger than max_events: alone, but returned


def test_a_blocking_read_returns_an_entry_appended_while_it_waits(
    event_log: RedisEventLog, settings: RedisSettings
) -> None:
    writer = RedisEventLog(settings)

    def append_once_blocked() -> None:
        wait_for(
            lambda: int(writer.client.info("clients")["blocked_clients"]) > 0,
            "the reader to block",
        )
        writer.append(batch(1))

    thread = threading.Thread(target=append_once_blocked)
    thread.start()
    try:
        got = event_log.read("p1", 100, block_ms=event_log.max_block_ms)
    finally:
        thread.join()
        writer.close()
    assert [e.seq for e in got] == [1]
    with pytest.raises(ValueError, match="block_ms"):
        event_log.read("p1", 100, block_ms=event_log.max_block_ms + 1)


# --- the consumer group --------------------------------------------------------------------


def test_ensure_group_is_idempotent_and_delivers_what_came_before_it(
    settings: RedisSettings,
) -> None:
    store = RedisEventLog(settings)
    try:
        store.append(batch(1))  # before any processor
        assert store.ensure_group() is True
        assert store.ensure_group() is False
        store.append(batch(2))
        assert [e.seq for e in drain(store, "p1")] == [1, 2]
    finally:
        store.close()


def test_two_consumers_get_disjoint_entries_and_together_all(event_log: RedisEventLog) -> None:
    ids = event_log.append_many([batch(i) for i in range(40)])
    seen: dict[str, list[str]] = {"p1": [], "p2": []}
    while True:
        got = {name: event_log.read(name, 30) for name in seen}
        if not any(got.values()):
            break
        for name, entries in got.items():
            seen[name].extend(e.id for e in entries)
            event_log.ack([e.id for e in entries])
    assert seen["p1"] and seen["p2"]
    assert not set(seen["p1"]) & set(seen["p2"])
    assert sorted(seen["p1"] + seen["p2"], key=parse_id) == ids
    assert event_log.backlog() == Backlog(0, 0, 0, 0)


def test_an_unacknowledged_entry_is_read_again_by_its_consumer_after_a_restart(
    event_log: RedisEventLog, settings: RedisSettings
) -> None:
    event_log.append_many([batch(i) for i in range(3)])
    first = event_log.read("p1", 20)
    assert [e.seq for e in first] == [1, 2]
    assert [e.seq for e in event_log.read("p1", 20)] == [3]  # no redelivery in one run
    assert event_log.read("p2", 20) == []  # pending with p1, not another's

    restarted = RedisEventLog(settings)  # a new process: new client, new state
    try:
        assert [e.seq for e in restarted.read("p1", 20)] == [1, 2]
        assert [e.seq for e in restarted.read("p1", 20)] == [3]
        assert restarted.read("p1", 20) == []
        restarted.rewind("p1")  # after a failed commit: from the first pending again
        assert [e.seq for e in restarted.read("p1", 1_000)] == [1, 2, 3]
    finally:
        restarted.close()


def test_a_dead_consumers_entries_are_claimed_by_another_after_min_idle(
    event_log: RedisEventLog, settings: RedisSettings
) -> None:
    event_log.append_many([batch(i) for i in range(4)])
    dying = RedisEventLog(settings)
    taken = [e.id for e in dying.read("p1", 20)]
    assert len(taken) == 2
    dying.close()  # p1 dies holding two entries

    assert event_log.claim_idle("p2", min_idle_ms=60_000, count=10) == 0  # not idle long yet
    wait_for(lambda: event_log.claim_idle("p2", 100, 10) == 2, "p1's entries to be claimed")
    got = event_log.read("p2", 1_000)
    assert [e.id for e in got[:2]] == taken  # the claimed ones first
    assert [e.seq for e in got] == [1, 2, 3, 4]
    assert event_log.ack([e.id for e in got]) == 4
    assert event_log.consumers()["p1"][0] == 0
    assert event_log.backlog() == Backlog(0, 0, 0, 0)


def test_claim_acknowledges_deleted_entries_away(event_log: RedisEventLog) -> None:
    event_log.append_many([batch(i) for i in range(3)])
    got = event_log.read("p1", 1_000)
    event_log.client.xdel(event_log.keys.log, got[1].id)
    assert event_log.claim_idle("p2", 0, 10) == 2
    assert event_log.client.xpending(event_log.keys.log, event_log.keys.log_group)["pending"] == 2
    assert [e.seq for e in event_log.read("p2", 1_000)] == [1, 3]


def test_acknowledged_entries_are_never_delivered_again(
    event_log: RedisEventLog, settings: RedisSettings
) -> None:
    event_log.append_many([batch(i) for i in range(3)])
    got = event_log.read("p1", 1_000)
    assert event_log.ack([e.id for e in got]) == 3
    assert event_log.ack([e.id for e in got]) == 0  # again: nothing was pending

    restarted = RedisEventLog(settings)
    try:
        assert restarted.read("p1", 1_000) == []
        assert restarted.claim_idle("p2", 0, 100) == 0
        assert restarted.read("p2", 1_000) == []
        restarted.append(batch(9))
        assert [e.seq for e in restarted.read("p1", 1_000)] == [4]
    finally:
        restarted.close()


def test_ack_command_runs_inside_a_transaction(event_log: RedisEventLog) -> None:
    event_log.append_many([batch(i) for i in range(2)])
    ids = [e.id for e in event_log.read("p1", 1_000)]
    pipe = event_log.client.pipeline(transaction=True)
    pipe.set("pulseboard:probe", b"committed")  # stands for the hot store's commit
    pipe.execute_command(*event_log.ack_command(ids))
    assert pipe.execute() == [True, 2]
    assert event_log.backlog().entries == 0


# --- backlog and retention -----------------------------------------------------------------


def test_backlog_counts_undelivered_and_pending_entries_and_events(
    event_log: RedisEventLog,
) -> None:
    assert event_log.backlog() == Backlog(0, 0, 0, 0)
    event_log.append_many([batch(i, events=i + 1) for i in range(6)])  # 1..6 events
    assert event_log.backlog() == Backlog(6, 21, 0, 0)
    got = event_log.read("p1", 6)  # 1 + 2 + 3
    assert [e.events for e in got] == [1, 2, 3]
    assert event_log.backlog() == Backlog(3, 15, 3, 6)
    event_log.ack([got[0].id])
    assert event_log.backlog() == Backlog(3, 15, 2, 5)  # contiguous: exact
    event_log.ack([e.id for e in got])
    assert event_log.backlog() == Backlog(3, 15, 0, 0)


def wait_for_next_ms(store: RedisEventLog, after_ms: int) -> None:
    """Poll Redis's clock until it is past ``after_ms``, so the next id has a later time."""

    def later() -> bool:
        seconds, micros = store.client.time()
        return bool(seconds * 1_000 + micros // 1_000 > after_ms)

    wait_for(later, "Redis's clock to move on")


def test_trim_drops_by_age_but_never_an_unacknowledged_entry(settings: RedisSettings) -> None:
    store = RedisEventLog(settings)
    try:
        first = store.append(batch(0))
        assert first is not None
        assert store.trim(2**62) == 0  # no group yet: nobody has read anything
        wait_for_next_ms(store, parse_id(first)[0])  # batch 0 alone is older than batch 1
        store.ensure_group()
        ids: list[str] = []
        for i in range(4):
            stream_id = store.append(batch(i + 1))
            assert stream_id is not None
            ids.append(stream_id)
            wait_for_next_ms(store, parse_id(stream_id)[0])
        got = store.read("p1", 30)  # batches 0, 1, 2 delivered
        store.ack([got[0].id, got[2].id])  # 1 stays pending; 3 and 4 undelivered

        assert store.trim(parse_id(ids[0])[0]) == 1  # by age: only batch 0 is older
        assert store.trim(2**62) == 0  # the pending batch 1 holds everything after it
        store.ack([got[1].id])
        assert store.trim(2**62) == 2  # 1 and 2; 3 and 4 were never delivered
        assert [e.seq for e in drain(store, "p1")] == [4, 5]
        assert store.backlog().entries == 2
    finally:
        store.close()


def test_idle_consumers_are_forgotten_only_with_nothing_pending(
    event_log: RedisEventLog,
) -> None:
    event_log.append_many([batch(i) for i in range(2)])
    holding = drain(event_log, "holding")  # both entries, left pending
    assert event_log.read("empty", 10) == []  # a consumer that got nothing
    event_log.append(batch(2))
    done = drain(event_log, "done")
    assert len(holding) == 2 and len(done) == 1
    event_log.ack([e.id for e in done])
    assert {n: p for n, (p, _) in event_log.consumers().items()} == {
        "holding": 2,
        "empty": 0,
        "done": 0,
    }

    wait_for(lambda: event_log.consumers()["done"][1] >= 50, "50 ms of idleness")
    assert event_log.forget_idle_consumers(60_000) == []  # nobody idle for a minute
    assert event_log.forget_idle_consumers(50, keep={"empty"}) == ["done"]
    assert event_log.forget_idle_consumers(50) == ["empty"]
    assert set(event_log.consumers()) == {"holding"}  # its pending entries keep it
    event_log.ack([e.id for e in holding])
    assert event_log.forget_idle_consumers(0) == ["holding"]
    assert event_log.consumers() == {}


# --- crash safety --------------------------------------------------------------------------


def pending_of(store: RedisEventLog, consumer: str) -> list[str]:
    rows = store.client.xpending_range(store.keys.log, store.keys.log_group, "-", "+", 1_000)
    return [r["message_id"].decode() for r in rows if r["consumer"] == consumer.encode()]


def test_every_appended_entry_and_the_pending_list_survive_a_kill_9(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory(appendonly=True)  # appendfsync always
    settings = RedisSettings.from_url(server.url)
    before = RedisEventLog(settings)
    try:
        before.ensure_group()
        ids = [before.append(batch(i)) for i in range(10)]
        ids += before.append_many([batch(i) for i in range(10, 50)])
        held = before.read("p1", 35)
        before.ack([e.id for e in held[:2]])
        delivered = pending_of(before, "p1")
        assert delivered == [e.id for e in held[2:]]
        server.kill()
    finally:
        before.close()
    server.start()
    reread = RedisEventLog(settings)
    try:
        assert pending_of(reread, "p1") == delivered
        undelivered = 50 - len(held)
        assert reread.backlog() == Backlog(undelivered, 10 * undelivered, len(held) - 2, 10)
        again = drain(reread, "p1", 10_000)
        assert [e.id for e in again] == [e.id for e in held[2:]] + ids[len(held) :]
        rows = reread.client.xrange(reread.keys.log)
        assert [r[0].decode() for r in rows] == ids
        assert [r[1][b"payload"] for r in rows] == [batch(i).payload for i in range(50)]
        assert reread.ensure_group() is False
    finally:
        reread.close()
        server.stop()


# --- errors --------------------------------------------------------------------------------


def test_unreachable_redis_is_store_unavailable_with_the_password_masked() -> None:
    url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0?socket_connect_timeout=2"
    store = RedisEventLog(RedisSettings.from_url(url))
    try:
        with pytest.raises(StoreUnavailable) as caught:
            store.append(batch(1))
    finally:
        store.close()
    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert "redis://:***@127.0.0.1" in message
    assert "check that Redis is running and reachable" in message
    assert isinstance(caught.value.__cause__, redis.ConnectionError)


def test_a_refused_password_is_store_unavailable_naming_the_masked_url(
    clean_redis_url: str,
) -> None:
    url = clean_redis_url.replace("redis://", "redis://pulse:s3cret-pw@")
    store = RedisEventLog(RedisSettings.from_url(url))
    try:
        with pytest.raises(StoreUnavailable) as caught:
            store.backlog()
    finally:
        store.close()
    message = str(caught.value)
    assert "s3cret-pw" not in message and "redis://pulse:***@" in message
    assert "check the user and password" in message


def test_a_missing_group_says_so(event_log: RedisEventLog) -> None:
    event_log.client.delete(event_log.keys.log)
    with pytest.raises(StoreUnavailable, match="consumer group is missing"):
        event_log.read("p1", 10)


def test_a_foreign_entry_is_refused_with_its_id(event_log: RedisEventLog) -> None:
    stream_id = event_log.client.xadd(event_log.keys.log, {"hello": "world"}).decode()
    with pytest.raises(StoreUnavailable, match=f"entry {stream_id} .* not a Pulseboard log"):
        event_log.read("p1", 10)


# --- dead letters --------------------------------------------------------------------------


def test_dead_letters_list_count_mark_replayed_and_trim(
    event_log: RedisEventLog, settings: RedisSettings
) -> None:
    letters = RedisDeadLetters(settings)
    try:
        for i in range(5):
            event_log.append(batch(i, dead=(DeadLetter(i, i, f"e{i}", f"bad {i}", b"{}"),)))
            stream_id = event_log.client.xrevrange(event_log.keys.dead_letters, count=1)[0][0]
            wait_for_next_ms(event_log, parse_id(stream_id)[0])  # one millisecond each
        listed = letters.list(limit=3)
        assert [d.error for d in listed] == ["bad 0", "bad 1", "bad 2"]
        assert letters.count() == 5
        assert letters.mark_replayed([listed[0].id, listed[1].id], now_ms=77) == 2
        assert letters.mark_replayed([listed[0].id], now_ms=78) == 0
        assert letters.mark_replayed([dead_letter_number("1-0")], now_ms=79) == 0  # not stored
        assert letters.count() == 3
        assert [d.error for d in letters.list(limit=10)] == ["bad 2", "bad 3", "bad 4"]
        every = letters.list(limit=10, include_replayed=True)
        assert [d.replayed_ms for d in every] == [77, 77, None, None, None]

        cutoff = parse_id(dead_letter_stream_id(every[3].id))[0]
        assert letters.trim(cutoff) == 3
        assert letters.count() == 2
        assert event_log.client.hlen(event_log.keys.dead_letters_replayed) == 0
        assert letters.trim(2**62) == 2
        assert letters.count() == 0
    finally:
        letters.close()


def test_dead_letter_numbers_round_trip() -> None:
    assert dead_letter_number("1718000000000-42") == 1_718_000_000_000_000_042
    assert dead_letter_stream_id(1_718_000_000_000_000_042) == "1718000000000-42"
    with pytest.raises(ValueError):
        dead_letter_number("1-1000000")


# --- key names and settings ----------------------------------------------------------------


def test_every_key_is_under_the_prefix() -> None:
    keys = RedisKeys("shop:")
    names = [
        keys.log,
        keys.log_counters,
        keys.dead_letters,
        keys.dead_letters_replayed,
        keys.windows("orders_per_min"),
        keys.applied,
        keys.dedupe(1_700_000_000_000),
        keys.stream_time,
        keys.late,
        keys.ticks,
        keys.current,
        keys.reconcile_lease,
        keys.processors,
    ]
    assert all(n.startswith("shop:") for n in names)
    assert len(set(names)) == len(names)
    assert RedisKeys().log == "pulseboard:log"
    assert keys.log_group == "processors"


@pytest.mark.parametrize("prefix", ["", "has space", "tab\t", "x" * 65, "nl\n"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="printable"):
        check_prefix(prefix)


@pytest.mark.parametrize("name", ["Orders", "a:b", "", "x*", "1abc"])
def test_key_names_take_only_metric_names(name: str) -> None:
    with pytest.raises(ValueError, match="not a metric name"):
        RedisKeys().windows(name)
    with pytest.raises(ValueError):
        RedisKeys().dedupe(-1)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost", dict(host="localhost", port=6379, db=0, tls=False)),
        ("redis://10.0.0.5:6380/3", dict(host="10.0.0.5", port=6380, db=3)),
        ("rediss://cache.example:6380", dict(tls=True, ssl_cert_reqs="required")),
        ("redis://:p%40ss@h", dict(username=None, password="p@ss")),
        ("redis://alice:pw@h/2", dict(username="alice", password="pw", db=2)),
        ("redis://h?prefix=shop-prod:", dict(prefix="shop-prod:")),
        ("redis://h", dict(prefix="pulseboard:")),
        ("redis://h?socket_timeout=2.5&health_check_interval=0", dict(socket_timeout_s=2.5)),
        (
            "rediss://h?ssl_cert_reqs=none&ssl_ca_certs=/ca.pem&ssl_check_hostname=false",
            dict(ssl_cert_reqs="none", ssl_ca_certs="/ca.pem", ssl_check_hostname=False),
        ),
    ],
)
def test_settings_from_url(url: str, expected: dict[str, object]) -> None:
    settings = RedisSettings.from_url(url)
    assert {k: getattr(settings, k) for k in expected} == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h:6379", "scheme 'http'"),
        ("unix:///tmp/redis.sock", "scheme 'unix'"),
        ("localhost:6379", "expected redis://"),
        ("redis://h:port", "the port is not a number"),
        ("redis://h:70000", "port out of range"),
        ("redis://h:0", "port 0"),
        ("redis://:pw@", "no host"),
        ("redis://h/zero", "database 'zero'"),
        ("redis://h?prefix=a%20b", "prefix"),
        ("redis://h?timeout=3", "unknown option 'timeout'"),
        ("redis://h?ssl_cert_reqs=none", "needs TLS"),
        ("rediss://h?ssl_cert_reqs=maybe", "none or optional or required"),
        ("redis://h?socket_timeout=-1", "greater than 0"),
        ("redis://h?password=pw", "goes in the userinfo"),
        ("redis://alice@h", "without a password"),
    ],
)
def test_bad_urls_say_what_was_expected(url: str, message: str) -> None:
    with pytest.raises(RedisUrlError, match=message) as caught:
        RedisSettings.from_url(url)
    assert "pw" not in str(caught.value).replace("password", "")


def test_masked_and_repr_hide_the_password() -> None:
    settings = RedisSettings.from_url("redis://alice:s3cret@h:1/0")
    assert settings.masked() == "redis://alice:***@h:1/0"
    assert "s3cret" not in repr(settings)


def test_the_client_does_not_retry_and_uses_the_timeouts(clean_redis_url: str) -> None:
    settings = RedisSettings.from_url(clean_redis_url + "?socket_timeout=3")
    client = settings.client(name="probe")
    try:
        assert client.ping()
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 3.0
        assert kwargs["retry"].get_retries() == 0
        assert client.client_getname() in ("probe", b"probe")
    finally:
        client.close()
