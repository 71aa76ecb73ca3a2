"""Redis specifics: several workers on one Redis, restarts, key layout, TTLs, bounds."""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import timedelta

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ingest.sessions import (
    MemorySessionStore,
    RedisSessionStore,
    SessionConfig,
    SessionPairer,
    SessionStoreUnavailable,
)
from ingest.sessions.store import GRACE_MS
from tests.redis_server import RedisServer
from tests.sessions.conftest import FakeClock, ssh_login, ssh_logout, teleport, vpn, z

D = "2020-05-17"


def worker(server: RedisServer, clock: FakeClock, **config: object) -> SessionPairer:
    """A pairer with its own connection, as in another process."""
    return SessionPairer(RedisSessionStore(server.client(db=1), SessionConfig(**config)), clock=clock)  # type: ignore[arg-type]


def session_events(n: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    events = []
    for i in range(n):
        start = rnd.randrange(0, 3000)
        events.append(ssh_login(f"2020-05-17T10:{start // 60:02d}:{start % 60:02d}.000000Z", 20000 + i))
        end = start + rnd.randrange(0, 600)
        events.append(ssh_logout(f"2020-05-17T{10 + end // 3600:02d}:{end // 60 % 60:02d}:{end % 60:02d}.000000Z", 20000 + i))
        if rnd.random() < 0.3:  # sshd's second logout line
            events.append(ssh_logout(events[-1]["@timestamp"], 20000 + i, action="ssh_disconnect"))
    rnd.shuffle(events)
    return events


def test_two_workers_interleaved_batches_make_each_session_once(redis_client: redis.Redis,
                                                                redis_server: RedisServer) -> None:
    clock = FakeClock()
    a, b = worker(redis_server, clock), worker(redis_server, clock)
    events = session_events(300, seed=1)
    rnd = random.Random(2)
    emitted: Counter[str] = Counter()
    for k in range(0, len(events), 25):
        chunk = events[k:k + 25]
        for doc_id, _ in (a if rnd.random() < 0.5 else b).process_batch(chunk):
            emitted[doc_id] += 1
    assert len(emitted) == 300
    assert set(emitted.values()) == {1}
    assert a.store.oldest("open", 10) == [] and a.store.oldest("orph", 10) == []


def test_two_threads_racing_login_against_logout(redis_client: redis.Redis, redis_server: RedisServer) -> None:
    """Each round, one worker gets the logins and the other the logouts of the same sessions, at once."""
    clock = FakeClock()
    a, b = worker(redis_server, clock), worker(redis_server, clock)
    rounds, per_round = 40, 30
    barrier = threading.Barrier(2)
    results: dict[str, list[str]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def run(name: str, pairer: SessionPairer, role: str) -> None:
        try:
            for r in range(rounds):
                pids = range(r * per_round, (r + 1) * per_round)
                if role == "login":
                    batch = [ssh_login(z(D, "10:00:00"), pid) for pid in pids]
                else:
                    batch = [ssh_logout(z(D, "10:01:00"), pid) for pid in pids]
                barrier.wait(timeout=30)
                results[name] += [doc_id for doc_id, _ in pairer.process_batch(batch)]
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=run, args=("a", a, "login")),
               threading.Thread(target=run, args=("b", b, "logout"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    emitted = Counter(results["a"] + results["b"])
    assert len(emitted) == rounds * per_round
    assert set(emitted.values()) == {1}
    assert a.counts["opened"] + b.counts["orphaned"] == rounds * per_round  # every one met exactly one way
    assert a.store.oldest("open", 10) == [] and a.store.oldest("orph", 10) == []
    print("optimistic-lock conflicts:", a.store.conflicts + b.store.conflicts)  # type: ignore[attr-defined]


def test_concurrent_expire_emits_a_timeout_once(redis_client: redis.Redis, redis_server: RedisServer) -> None:
    clock = FakeClock()
    workers = [worker(redis_server, clock, timeout=timedelta(hours=1)) for _ in range(4)]
    workers[0].process_batch([ssh_login(z(D, "10:00:00"), pid) for pid in range(200)])
    clock.advance(hours=2)
    barrier = threading.Barrier(len(workers))
    out: list[str] = []
    lock = threading.Lock()

    def run(p: SessionPairer) -> None:
        barrier.wait(timeout=30)
        ids = [doc_id for doc_id, _ in p.expire()]
        with lock:
            out.extend(ids)

    threads = [threading.Thread(target=run, args=(p,)) for p in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(out) == len(set(out)) == 200


def test_new_worker_closes_a_session_opened_before_a_restart(redis_client: redis.Redis,
                                                            redis_server: RedisServer) -> None:
    clock = FakeClock()
    first = worker(redis_server, clock)
    first.process_batch([ssh_login(z(D, "15:26:00"), 11741), vpn("2020-08-21T15:01:32.000000Z", "vpn_connect"),
                         teleport("2016-12-31T03:10:02.000000Z", "session.start")])
    first.store.client.close()  # type: ignore[attr-defined]
    second = worker(redis_server, clock)
    docs = second.process_batch([ssh_logout(z(D, "15:28:02"), 11741), vpn("2020-08-21T16:40:10.000000Z", "vpn_disconnect"),
                                 teleport("2016-12-31T03:24:43.000000Z", "session.end")])
    assert sorted((d["session"]["kind"], d["session"]["duration_s"]) for _, d in docs) == [
        ("openvpn", 5918.0), ("ssh", 122.0), ("teleport", 881.0)]


def test_state_survives_a_redis_server_restart(redis_client: redis.Redis, redis_server: RedisServer) -> None:
    clock = FakeClock()
    p = worker(redis_server, clock)
    p.process_batch([ssh_login(z(D, "15:26:00"), 11741), ssh_logout(z(D, "15:28:02"), 11902)])
    redis_server.restart()  # appendonly, fsync always
    docs = worker(redis_server, clock).process_batch([ssh_logout(z(D, "15:28:02"), 11741),
                                                      ssh_login(z(D, "15:28:00"), 11902)])
    assert sorted(d["session"]["duration_s"] for _, d in docs) == [2.0, 122.0]
    # The first worker's connections died with the server: its next batch either works after a
    # reconnect or fails with SessionStoreUnavailable (the pipeline retries the batch). Either
    # way the redelivered logout re-emits the same document, nothing new.
    redelivered = [ssh_logout(z(D, "15:28:02"), 11741)]
    try:
        again = p.process_batch(redelivered)
    except SessionStoreUnavailable:
        again = p.process_batch(redelivered)
    assert again == [d for d in docs if d[1]["session"]["duration_s"] == 122.0]


def test_unreachable_redis_raises_the_store_error(clock: FakeClock) -> None:
    from tests.redis_server import free_port

    client = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    p = SessionPairer(RedisSessionStore(client), clock=clock)
    with pytest.raises(SessionStoreUnavailable):
        p.process_batch([ssh_login(z(D, "15:26:00"), 1)])
    with pytest.raises(SessionStoreUnavailable):
        p.expire()


def test_key_layout_prefix_and_ttls(redis_client: redis.Redis, redis_server: RedisServer) -> None:
    clock = FakeClock()
    p = worker(redis_server, clock, key_prefix="t:s:", timeout=timedelta(hours=24),
               orphan_logout_ttl=timedelta(hours=1), tombstone_ttl=timedelta(hours=48))
    p.process_batch([ssh_login(z(D, "15:26:00"), 1), ssh_logout(z(D, "15:28:02"), 2)])
    keys = sorted(k.decode() if isinstance(k, bytes) else k for k in redis_client.keys("*"))
    assert keys == ["t:s:due", "t:s:k:ssh|a3|1", "t:s:k:ssh|a3|2", "t:s:open", "t:s:orph"]
    day, hour = 24 * 3600 * 1000, 3600 * 1000
    assert day < redis_client.pttl("t:s:k:ssh|a3|1") <= day + GRACE_MS
    assert hour < redis_client.pttl("t:s:k:ssh|a3|2") <= hour + GRACE_MS
    p.process_batch([ssh_logout(z(D, "15:28:02"), 1)])
    assert 47 * hour < redis_client.pttl("t:s:k:ssh|a3|1") <= 2 * day + GRACE_MS  # tombstone keeps it
    assert redis_client.zrange("t:s:tomb", 0, -1) == [b"ssh|a3|1"]
    assert redis_client.zrange("t:s:open", 0, -1) == []


def test_flood_keeps_redis_bounded(redis_client: redis.Redis, redis_server: RedisServer) -> None:
    clock = FakeClock()
    p = worker(redis_server, clock, max_open=100, max_orphans=100, max_closed=100)
    for b in range(20):
        p.process_batch([ssh_login(z(D, "10:00:00"), b * 1000 + i) for i in range(200)])
        p.process_batch([ssh_logout(z(D, "09:00:00"), 900_000 + b * 1000 + i) for i in range(200)])
    assert redis_client.zcard(f"{p.config.key_prefix}open") == 100
    assert redis_client.zcard(f"{p.config.key_prefix}orph") == 100
    assert redis_client.dbsize() <= 200 + 5
    assert p.counts["evicted_open"] == 3900 and p.counts["evicted_orphans"] == 3900


def test_a_key_expired_by_redis_is_cleaned_from_the_indexes(redis_client: redis.Redis,
                                                            redis_server: RedisServer) -> None:
    clock = FakeClock()
    p = worker(redis_server, clock, timeout=timedelta(hours=1))
    p.process_batch([ssh_login(z(D, "10:00:00"), 5)])
    redis_client.delete(f"{p.config.key_prefix}k:ssh|a3|5")  # as if its TTL had run out
    clock.advance(hours=2)
    assert p.expire() == []
    assert redis_client.keys("*") == []


def test_memory_and_redis_stores_agree(redis_client: redis.Redis, redis_server: RedisServer) -> None:
    events = session_events(150, seed=7)
    events += [vpn("2020-08-21T15:01:32.000000Z", "vpn_connect"), vpn("2020-08-21T16:40:10.000000Z", "vpn_disconnect"),
               teleport("2016-12-31T03:10:02.000000Z", "session.start"), ssh_login(z(D, "23:00:00"), 1)]
    config = {"timeout": timedelta(hours=3), "max_open": 40, "max_orphans": 40}
    outputs = []
    for store in (MemorySessionStore(SessionConfig(**config)),  # type: ignore[arg-type]
                  RedisSessionStore(redis_client, SessionConfig(**config))):  # type: ignore[arg-type]
        clock = FakeClock()
        p = SessionPairer(store, clock=clock)
        out = []
        for k in range(0, len(events), 17):
            out += p.process_batch(events[k:k + 17])
            clock.advance(minutes=10)
            out += p.expire()
        clock.advance(hours=5)
        out += p.expire()
        outputs.append((out, +p.counts))
    assert outputs[0] == outputs[1]
    assert len(outputs[0][0]) > 100


def test_a_key_changed_between_read_and_write_reruns_the_batch(redis_client: redis.Redis,
                                                               redis_server: RedisServer) -> None:
    """The write checks every key still holds what was read: a change in between (another worker)
    reruns the transition on the fresh state instead of overwriting it."""
    store = RedisSessionStore(redis_server.client(db=1))
    other = redis_server.client(db=1)
    name = f"{store.prefix}k:ssh|a3|7"
    calls = []

    def transition(states: dict) -> str:
        calls.append(dict(states["ssh|a3|7"]))
        if len(calls) == 1:  # another worker writes the key after our read
            other.set(name, b'{"marker":1}')
        states["ssh|a3|7"]["seen"] = len(calls)
        return "done"

    result, _ = store.transact(["ssh|a3|7"], transition, now=0)
    assert result == "done" and len(calls) == 2 and store.conflicts == 1
    assert calls[1] == {"marker": 1}  # the rerun saw the other worker's state, not its own first read
