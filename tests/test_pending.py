"""ingest.pending: derived documents pending until a batch that carried them is acknowledged."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import redis
import redis.connection

from ingest.model import IndexAction
from ingest.pending import PendingDocs, carried, entry_id
from tests.redis_server import RedisServer
from tests.worker_proc import detecting_pipeline, file_events, make_worker, redis_url


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def alert(n: int) -> IndexAction:
    return IndexAction("audit-alerts-2024.05.17", f"brute_force-{n}", {"@timestamp": "2024-05-17T10:00:00Z",
                                                                       "type": "alert", "n": n})


def test_reclaim_after_the_lease_and_done_with_the_ack(redis_client: redis.Redis) -> None:
    clock = Clock()
    pending = PendingDocs(redis_client, "filebeat:pending:", lease_ms=5_000, check_interval=0, clock=clock)
    session = pending.session_action("s1", {"@timestamp": "2024-05-17T09:00:00.000000Z", "type": "session"}, 1)
    assert session.index == "audit-sessions-2024.05.17" and entry_id(session) == "s1@1"
    pending.add([alert(1), session])
    assert pending.reclaim() == []  # the batch that made them still has them
    clock.now += 5
    carried_again = pending.reclaim()
    assert sorted(a.id for a in carried_again) == ["brute_force-1", "s1"]
    assert [a.version for a in carried_again if a.id == "s1"] == [1]
    assert pending.reclaim() == []  # leased again to the batch that carries them now
    clock.now += 5
    assert [a.id for a in pending.reclaim([alert(1)])] == ["s1"]  # already in the batch: not twice
    with redis_client.pipeline(transaction=True) as pipe:
        pending.queue_done(pipe, carried([alert(1), session]))
        pipe.execute()
    assert pending.count() == 0 and redis_client.zcard("filebeat:pending:lease") == 0
    clock.now += 5
    assert pending.reclaim() == []


def test_events_are_not_carried() -> None:
    event = IndexAction("audit-2024.05.17", "e1", {}, b"raw")
    assert carried([event, alert(2)]) == ["brute_force-2"]


class Sent:
    """Counts the commands this process sends to Redis (pipelined ones each), not those run inside scripts."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        cls = redis.connection.AbstractConnection
        one, many = cls.send_command, cls.pack_commands

        def send_command(conn: Any, *args: Any, **kw: Any) -> Any:
            self.n += 1
            return one(conn, *args, **kw)

        def pack_commands(conn: Any, commands: Any) -> Any:
            commands = list(commands)
            self.n += len(commands)
            return many(conn, commands)

        monkeypatch.setattr(cls, "send_command", send_command)
        monkeypatch.setattr(cls, "pack_commands", pack_commands)


def test_a_batch_without_derived_documents_costs_at_most_one_more_command(
        redis_server: RedisServer, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hot path: with sessions and detections on and nothing pending, a batch costs at most one
    Redis command more than without the pending step (the look for expired leases)."""
    url = redis_url(redis_server.port)
    sent = Sent(monkeypatch)
    used = {}
    batches = 5
    for run, with_pending in enumerate((False, True, False, True)):  # the first two load the scripts
        proc = detecting_pipeline(url, sessions_timeout=3600)
        proc.pending.check_interval = 0  # look on every batch: the most it can cost
        if not with_pending:
            proc.pending = proc.pairer.pending = None
        worker = make_worker(url, "http://unused", f"w{run}", batch_size=100, ttl=60, proc=proc, overlap=False,
                             sink=NullSink())
        worker._start()
        before = sent.n
        for i in range(batches):
            redis_client.rpush("filebeat", *file_events("commands.log", start=i * 1000))
            worker.run_once()
        used[with_pending] = sent.n - before - batches  # less the test's own RPUSH
        assert not redis_client.llen("filebeat") and not redis_client.llen(f"filebeat:processing:w{run}")
        for slot in worker.slots:
            slot.release()
    assert used[True] - used[False] == batches, used


class NullSink:
    def __init__(self) -> None:
        self.seen: list[IndexAction] = []

    def write_batch(self, actions: list[IndexAction]) -> list[Any]:
        self.seen += actions
        return []


def test_an_alert_is_pending_from_its_firing_until_a_batch_carrying_it_is_acked(redis_server: RedisServer,
                                                                              redis_client: redis.Redis) -> None:
    """The brute-force alert of a batch that is never acknowledged is carried by the next batch
    (once the lease is over), whatever that batch holds; its ack deletes it."""
    clock = Clock()
    proc = detecting_pipeline(redis_url(redis_server.port))
    proc.pending.clock, proc.pending.check_interval = clock, 0
    fired = [a for a in proc.process(file_events("bruteforce.log")).actions if a.doc.get("type") == "alert"]
    assert [a.doc["rule"]["name"] for a in fired] == ["brute_force"]
    assert redis_client.hkeys("filebeat:pending:docs") == [fired[0].id.encode()]
    # that batch is lost (worker killed before Elasticsearch took it); an unrelated batch later:
    clock.now += 61
    worker = make_worker(redis_url(redis_server.port), "http://unused", "w1", batch_size=100, ttl=60, proc=proc,
                         overlap=False, sink=NullSink())
    worker._start()
    redis_client.rpush("filebeat", *file_events("commands.log", start=5000))
    worker.run_once()
    assert redis_client.hlen("filebeat:pending:docs") == 0  # carried, indexed, acknowledged
    assert [a.id for a in worker.sink.seen if a.raw is None] == [fired[0].id]  # type: ignore[attr-defined]
    for slot in worker.slots:
        slot.release()


def test_an_idle_worker_carries_pending_documents_by_themselves(redis_server: RedisServer,
                                                                redis_client: redis.Redis) -> None:
    """No events come: the pending documents of a lost batch do not wait for one."""
    proc = detecting_pipeline(redis_url(redis_server.port))
    proc.pending.check_interval = 0
    clock = Clock()
    proc.pending.clock = clock
    proc.pending.add([alert(7)])
    clock.now += 61
    sink = NullSink()
    worker = make_worker(redis_url(redis_server.port), "http://unused", "w1", ttl=60, proc=proc, overlap=False,
                         sink=sink)
    worker.source.config.block_timeout = timedelta(milliseconds=50)
    worker._start()
    worker.run_once()  # nothing to take
    assert [a.id for a in sink.seen] == ["brute_force-7"] and proc.pending.count() == 0
    for slot in worker.slots:
        slot.release()
