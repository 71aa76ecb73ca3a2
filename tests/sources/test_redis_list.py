"""The reliable-queue source against a real redis-server."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import redis

from ingest.errors import ConfigError, SourceUnavailable
from ingest.sources.redis_list import RedisListSource, RedisSourceConfig, mask_url
from tests.redis_server import RedisServer


def cfg(server: RedisServer, **kw: object) -> RedisSourceConfig:
    base: dict[str, object] = {"url": f"redis://127.0.0.1:{server.port}/1", "batch_wait": timedelta(0),
                               "block_timeout": timedelta(milliseconds=100),
                               "heartbeat_ttl": timedelta(seconds=1)}
    base.update(kw)
    return RedisSourceConfig.model_validate(base)


def events(n: int, start: int = 0) -> list[bytes]:
    return [b"e%d" % i for i in range(start, start + n)]


@pytest.fixture
def config(redis_server: RedisServer, redis_client: redis.Redis) -> RedisSourceConfig:
    return cfg(redis_server)


def test_defaults() -> None:
    c = RedisSourceConfig()
    assert c.url == "redis://127.0.0.1:6379/1" and c.key == "filebeat" and c.batch_size == 500
    assert c.names("h:1") == {"processing": "filebeat:processing:h:1", "heartbeat": "filebeat:heartbeat:h:1",
                              "workers": "filebeat:workers"}
    with pytest.raises(ValueError):
        RedisSourceConfig(url="http://x")  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        RedisSourceConfig(bogus=1)  # type: ignore[call-arg]


def test_mask_url() -> None:
    assert mask_url("rediss://:s3cret@redis.example:6380/1") == "rediss://***@redis.example:6380/1"
    assert mask_url("redis://user:s3cret@h/0") == "redis://user:***@h/0"
    assert mask_url("redis://h:6379/1") == "redis://h:6379/1"
    assert "s3cret" not in mask_url("redis://user:s3cret@h/0")


def test_take_moves_to_processing_in_order(config: RedisSourceConfig, redis_client: redis.Redis) -> None:
    redis_client.rpush("filebeat", *events(10))
    src = RedisListSource(redis_client, config, "w1")
    got = src.take(4)
    assert got == events(4)
    assert redis_client.lrange("filebeat:processing:w1", 0, -1) == events(4)
    assert redis_client.llen("filebeat") == 6
    assert redis_client.pttl("filebeat:heartbeat:w1") > 0
    assert redis_client.smembers("filebeat:workers") == {b"w1"}
    # a second take before ack returns the same batch (lost reply, restart with the same id)
    assert src.take(4) == events(4)
    assert src.ack()
    assert not redis_client.exists("filebeat:processing:w1")
    assert src.take(100) == events(6, 4)
    assert src.ack() and not src.ack()  # second ack: nothing held
    assert src.take(5) == []


def test_take_tops_up_a_partial_batch(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    config = cfg(redis_server, batch_wait=timedelta(milliseconds=300))
    redis_client.rpush("filebeat", *events(2))
    src = RedisListSource(redis_client, config, "w1")
    threading.Timer(0.05, lambda: redis_client.rpush("filebeat", *events(3, 2))).start()
    assert src.take(5) == events(5)


def test_take_blocks_then_returns_first_event(config: RedisSourceConfig, redis_client: redis.Redis) -> None:
    src = RedisListSource(redis_client, config.model_copy(update={"block_timeout": timedelta(seconds=2)}), "w1")
    threading.Timer(0.1, lambda: redis_client.rpush("filebeat", b"late")).start()
    assert src.take(10) == [b"late"]


def test_ack_writes_dead_letters_atomically(config: RedisSourceConfig, redis_client: redis.Redis) -> None:
    redis_client.rpush("filebeat", *events(3))
    src = RedisListSource(redis_client, config, "w1")
    src.take(3)
    assert src.ack([b"d1", b"d2"], "filebeat:dead", 3)
    assert redis_client.lrange("filebeat:dead", 0, -1) == [b"d1", b"d2"]
    src.take(3)  # nothing held, nothing to take
    assert not src.ack([b"d3"], "filebeat:dead")  # no batch held: dead letters are not written
    assert redis_client.llen("filebeat:dead") == 2
    redis_client.rpush("filebeat", b"x")
    src.take(3)
    src.ack([b"d3", b"d4"], "filebeat:dead", 3)  # capped: oldest dropped
    assert redis_client.lrange("filebeat:dead", 0, -1) == [b"d2", b"d3", b"d4"]


def test_give_back_restores_head_in_order(config: RedisSourceConfig, redis_client: redis.Redis) -> None:
    redis_client.rpush("filebeat", *events(2500))
    src = RedisListSource(redis_client, config, "w1")
    assert src.take(2200) == events(2200)
    redis_client.rpush("filebeat", b"new")
    assert src.give_back() == 2200
    assert redis_client.lrange("filebeat", 0, -1) == events(2500) + [b"new"]
    assert src.give_back() == 0


def test_recover_only_dead_workers(config: RedisSourceConfig, redis_client: redis.Redis) -> None:
    redis_client.rpush("filebeat", *events(6))
    dead = RedisListSource(redis_client, config, "dead")
    alive = RedisListSource(redis_client, config, "alive")
    me = RedisListSource(redis_client, config, "me")
    assert dead.take(2) == events(2)
    assert alive.take(2) == events(2, 2)
    alive.start_heartbeat()
    try:
        assert me.recover() == 0  # both heartbeats live
        deadline = time.monotonic() + 5
        while redis_client.exists("filebeat:heartbeat:dead"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # several recoverers at once: exactly one moves the batch
        others = [RedisListSource(redis_client, config, f"r{i}") for i in range(4)]
        results: list[int] = []
        threads = [threading.Thread(target=lambda o=o: results.append(o.recover())) for o in others]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [0, 0, 0, 2]
        assert redis_client.lrange("filebeat", 0, -1) == events(2) + events(2, 4)
        assert redis_client.lrange("filebeat:processing:alive", 0, -1) == events(2, 2)
        assert b"dead" not in redis_client.smembers("filebeat:workers")
        # the dead worker comes back late: its ack finds nothing and writes nothing
        assert not dead.ack([b"x"], "filebeat:dead")
        assert redis_client.llen("filebeat:dead") == 0
    finally:
        alive.stop_heartbeat()


def test_recover_orphans_by_scan(config: RedisSourceConfig, redis_client: redis.Redis) -> None:
    redis_client.rpush("filebeat:processing:ghost", b"a", b"b")
    me = RedisListSource(redis_client, config, "me")
    assert me.recover() == 0
    assert me.recover_orphans() == 2
    assert redis_client.lrange("filebeat", 0, -1) == [b"a", b"b"]


def test_claim_takes_the_id_over_at_once_and_the_old_owner_is_refused(config: RedisSourceConfig,
                                                                      redis_client: redis.Redis) -> None:
    """A restart under the same id does not wait for the old heartbeat; a live duplicate that was
    taken over can neither take, ack nor give back (it would delete or move the new owner's batch),
    and its heartbeat tells it to stop."""
    redis_client.rpush("filebeat", *events(4))
    first = RedisListSource(redis_client, config, "same")
    first.claim()
    assert first.take(2) == events(2)
    stopped = threading.Event()
    first._on_lost_owner = stopped.set
    second = RedisListSource(redis_client, config, "same")
    t0 = time.monotonic()
    assert second.claim() is True  # another process's heartbeat was there: taken over
    assert time.monotonic() - t0 < 0.5  # at once, not after the TTL (1 s here, 30 s by default)
    assert second.take(3) == events(3)  # the old owner's batch, then topped up: it is this worker's now
    assert not first.ack([b"dead"], "filebeat:dead")  # refused: the list is the new owner's
    assert stopped.is_set()
    assert redis_client.lrange("filebeat:processing:same", 0, -1) == events(3)
    assert redis_client.llen("filebeat:dead") == 0
    assert first.give_back() == 0
    assert redis_client.llen("filebeat:processing:same") == 3
    with pytest.raises(ConfigError):
        first.take(1)
    first.release()  # leaves the new owner's heartbeat and membership alone
    assert redis_client.get("filebeat:heartbeat:same") == second.token.encode()
    assert b"same" in redis_client.smembers("filebeat:workers")
    stopped.clear()
    first.start_heartbeat()  # its heartbeat finds the other token: it stops itself
    try:
        deadline = time.monotonic() + 5
        while not stopped.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stopped.is_set()
    finally:
        first.stop_heartbeat()
    assert second.ack()
    assert second.claim() is False  # its own heartbeat: nothing taken over


def test_heartbeat_thread_keeps_batch_owned(config: RedisSourceConfig, redis_client: redis.Redis) -> None:
    redis_client.rpush("filebeat", *events(3))
    src = RedisListSource(redis_client, config, "busy")
    src.claim()
    src.take(3)
    src.start_heartbeat()
    try:
        time.sleep(1.6)  # longer than the TTL: only the heartbeat thread keeps it alive
        assert RedisListSource(redis_client, config, "other").recover() == 0
        assert redis_client.llen("filebeat:processing:busy") == 3
    finally:
        src.release()
    assert not redis_client.exists("filebeat:heartbeat:busy")


def test_redis_down_raises_source_unavailable_and_batch_survives_restart(
        redis_server: RedisServer, redis_client: redis.Redis) -> None:
    config = cfg(redis_server, socket_timeout=timedelta(seconds=1), socket_connect_timeout=timedelta(seconds=1))
    client = config.client()
    redis_client.rpush("filebeat", *events(5))
    src = RedisListSource(client, config, "w1")
    assert src.take(3) == events(3)
    redis_server.stop()
    try:
        with pytest.raises(SourceUnavailable) as info:
            src.ack()
        assert "redis://127.0.0.1" in str(info.value)
    finally:
        redis_server.start()
    assert src.take(3) == events(3)  # still held after the restart (AOF)
    assert src.ack()
    assert src.take(3) == events(2, 3)
    client.close()


def test_take_after_script_flush_loads_the_script_again(config: RedisSourceConfig, redis_client: redis.Redis) -> None:
    """The take script runs by EVALSHA inside a MULTI with the LRANGE: a Redis that lost its
    scripts (restart, SCRIPT FLUSH) answers NOSCRIPT, which moved nothing; the script is loaded and
    the take sent again, so nothing is taken twice or skipped."""
    redis_client.rpush("filebeat", *events(5))
    source = RedisListSource(redis_client, config, "w1")
    source.claim()
    assert source.take(2) == events(2)
    redis_client.script_flush()
    assert source.fill(4) == events(4)  # the two held, topped up with the next two
    assert redis_client.lrange("filebeat", 0, -1) == events(1, start=4)


def test_take_refused_by_a_full_redis_is_source_unavailable(config: RedisSourceConfig,
                                                           redis_client: redis.Redis) -> None:
    """Redis at ``maxmemory`` with ``noeviction`` refuses the take's script inside the MULTI
    (EXECABORT): the worker backs off as for any outage instead of treating it as a bug."""
    redis_client.rpush("filebeat", *events(3))
    source = RedisListSource(redis_client, config, "w1")
    source.claim()
    old = redis_client.config_get("maxmemory")["maxmemory"]
    redis_client.config_set("maxmemory-policy", "noeviction")
    redis_client.config_set("maxmemory", 1)
    try:
        with pytest.raises(SourceUnavailable, match="refuses writes: OOM"):
            source.take(2)
    finally:
        redis_client.config_set("maxmemory", old)
    assert source.take(2) == events(2)
