"""The notification queue on a real Redis: queued with the ack, claimed with a lease, retried, dead-lettered."""

from __future__ import annotations

import time
from datetime import timedelta

import orjson
import pytest
import redis

from ingest.deadletter import DeadLetterStore
from ingest.notify.message import Alert
from ingest.notify.queue import Claim, NotifyQueue
from ingest.notify.ratelimit import Summaries
from ingest.sources.redis_list import RedisListSource, RedisSourceConfig
from tests.notify.conftest import sample_alerts

P = "audit-ingest:notify:"


@pytest.fixture
def queue(redis_client: redis.Redis) -> NotifyQueue:
    return NotifyQueue(redis_client, P, dead_key="filebeat:dead", worker="w1")


def alert(n: int = 0) -> Alert:
    base = sample_alerts()[0]
    return Alert(f"brute_force-{n:024x}", base.index, dict(base.doc))


def server_ms(client: redis.Redis) -> int:
    s, us = client.time()
    return int(s) * 1000 + int(us) // 1000


def claimed(result: object) -> Claim:
    assert isinstance(result, Claim), result
    return result


def test_enqueue_then_the_same_alert_again_queues_nothing(queue: NotifyQueue, redis_client: redis.Redis) -> None:
    a = alert()
    done = queue.parse_enqueued(queue.enqueue([(a, ["ops", "mail"])], seen_ttl_ms=60_000))
    assert (done.queued, done.seen, done.full) == (2, 0, 0)
    for output in ("ops", "mail"):
        assert redis_client.zrange(f"{P}queue:{output}", 0, -1) == [a.id.encode()]
        job = redis_client.hgetall(f"{P}job:{output}:{a.id}")
        assert Alert.decode(job[b"doc"]) == a and job[b"tries"] == b"0"
    assert 59_000 < redis_client.pttl(f"{P}seen:{a.id}") <= 60_000
    again = queue.parse_enqueued(queue.enqueue([(a, ["ops", "mail"])], seen_ttl_ms=60_000))
    assert (again.queued, again.seen) == (0, 1)
    assert redis_client.zcard(f"{P}queue:ops") == 1


def test_guard_missing_queues_nothing(queue: NotifyQueue, redis_client: redis.Redis) -> None:
    done = queue.parse_enqueued(queue.enqueue([(alert(), ["ops"])], guard="filebeat:processing:gone"))
    assert done.skipped
    assert not redis_client.exists(f"{P}queue:ops", f"{P}seen:{alert().id}")


def source(client: redis.Redis, worker: str = "w1") -> RedisListSource:
    cfg = RedisSourceConfig.model_validate({"heartbeat_ttl": timedelta(seconds=5)})
    return RedisListSource(client, cfg, worker)


def test_queued_in_the_same_transaction_as_the_ack(queue: NotifyQueue, redis_client: redis.Redis) -> None:
    src = source(redis_client)
    redis_client.rpush("filebeat", b"e1", b"e2")
    assert src.fill(10) == [b"e1", b"e2"]
    a = alert()

    def before(pipe: object) -> None:
        queue.enqueue([(a, ["ops"])], guard=src.processing_key, client=pipe)

    assert src.ack([b"dead-1"], "filebeat:dead", before=before)
    assert not redis_client.exists(src.processing_key)
    assert redis_client.lrange("filebeat:dead", 0, -1) == [b"dead-1"]
    assert queue.parse_enqueued(src.last_before[0]).queued == 1
    assert redis_client.zcard(f"{P}queue:ops") == 1
    # the ack repeated (its reply was lost): the batch is gone, nothing is queued twice
    assert not src.ack([], "filebeat:dead", before=before)
    assert queue.parse_enqueued(src.last_before[0]).skipped
    assert redis_client.zcard(f"{P}queue:ops") == 1 and redis_client.llen("filebeat:dead") == 1


def test_a_batch_recovered_by_another_worker_is_not_queued_by_the_late_one(queue: NotifyQueue,
                                                                           redis_client: redis.Redis) -> None:
    late = source(redis_client, "late")
    redis_client.rpush("filebeat", b"e1")
    late.fill(10)
    redis_client.delete(late.processing_key)  # what recover() does once its heartbeat expired
    assert not late.ack([], before=lambda pipe: queue.enqueue([(alert(), ["ops"])], guard=late.processing_key,
                                                              client=pipe))
    assert not redis_client.exists(f"{P}queue:ops", f"{P}seen:{alert().id}")


def test_claim_moves_the_score_to_the_lease_and_an_expired_lease_is_claimed_again(
        queue: NotifyQueue, redis_client: redis.Redis) -> None:
    a = alert()
    queue.enqueue([(a, ["ops"])])
    first = claimed(queue.claim("ops", lease_ms=400, rate_limit=0))
    assert (first.alert, first.tries, first.output) == (a, 1, "ops")
    lease_end = redis_client.zscore(f"{P}queue:ops", a.id)
    assert lease_end is not None and 0 < lease_end - server_ms(redis_client) <= 400
    assert queue.claim("ops", lease_ms=400, rate_limit=0) is None  # leased: nobody else takes it
    time.sleep(0.45)  # the sender died mid-send: the lease runs out
    second = claimed(queue.claim("ops", lease_ms=400, rate_limit=0))
    assert second.tries == 2 and second.token != first.token
    # the first sender, had it only stalled, cannot reschedule a claim that is not its own any more
    assert not queue.retry(first, 10_000, "late")
    queue.done("ops", a.id)
    assert not redis_client.exists(f"{P}queue:ops", f"{P}job:ops:{a.id}")


def test_retry_keeps_the_wait_and_the_error_in_redis(queue: NotifyQueue, redis_client: redis.Redis) -> None:
    a = alert()
    queue.enqueue([(a, ["ops"])])
    c = claimed(queue.claim("ops", lease_ms=5000, rate_limit=0))
    before = server_ms(redis_client)
    assert queue.retry(c, 2000, "http_500: HTTP 500")
    due = redis_client.zscore(f"{P}queue:ops", a.id)
    assert due is not None and before + 2000 <= due <= server_ms(redis_client) + 2000
    job = redis_client.hgetall(f"{P}job:ops:{a.id}")
    assert job[b"error"] == b"http_500: HTTP 500" and job[b"tries"] == b"1" and b"token" not in job
    assert queue.claim("ops", lease_ms=5000, rate_limit=0) is None  # not due yet, for any sender


def test_dead_letter_with_the_reason_and_replay_puts_it_back_on_its_queue(queue: NotifyQueue,
                                                                         redis_client: redis.Redis) -> None:
    a = alert()
    queue.enqueue([(a, ["ops"])])
    c = claimed(queue.claim("ops", lease_ms=5000, rate_limit=0))
    assert queue.dead(c, "notify_http_404", "slack output ops: HTTP 404 Not Found (permanent: not retried)")
    assert not redis_client.exists(f"{P}queue:ops", f"{P}job:ops:{a.id}")
    redis_client.rpush("filebeat:dead", orjson.dumps({"raw": "an event", "reason": "r", "error_code": "no_route",
                                                      "stage": "route"}))
    store = DeadLetterStore(redis_client, "filebeat:dead")
    [entry, other] = store.list(10)
    assert entry["stage"] == "notify" and entry["error_code"] == "notify_http_404"
    assert entry["reason"] == "slack output ops: HTTP 404 Not Found (permanent: not retried)"
    assert entry["output"] == "ops" and entry["alert_id"] == a.id and entry["worker"] == "w1"
    assert Alert.decode(entry["raw"]) == a
    store.requeue_notification = queue.requeue_dead
    assert store.replay() == 2
    assert redis_client.lrange("filebeat", 0, -1) == [b"an event"]  # the event to the main list
    assert redis_client.zrange(f"{P}queue:ops", 0, -1) == [a.id.encode()]  # the alert to its output
    assert redis_client.hget(f"{P}job:ops:{a.id}", "tries") == b"0"
    assert redis_client.llen("filebeat:dead") == 0


def test_replay_without_a_notification_queue_stops_at_a_notification(queue: NotifyQueue,
                                                                     redis_client: redis.Redis) -> None:
    a = alert()
    queue.enqueue([(a, ["ops"])])
    queue.dead(claimed(queue.claim("ops", lease_ms=5000, rate_limit=0)), "notify_timeout", "r")
    assert DeadLetterStore(redis_client, "filebeat:dead").replay() == 0
    assert redis_client.llen("filebeat:dead") == 1 and not redis_client.exists("filebeat")


def test_a_full_queue_dead_letters_instead_of_growing(queue: NotifyQueue, redis_client: redis.Redis) -> None:
    done = queue.parse_enqueued(queue.enqueue([(alert(i), ["ops"]) for i in range(5)], max_queued=3,
                                              time="2024-05-17T16:00:00.000Z"))
    assert (done.queued, done.full) == (3, 2)
    assert redis_client.zcard(f"{P}queue:ops") == 3
    entries = DeadLetterStore(redis_client, "filebeat:dead").list(10)
    assert [e["alert_id"] for e in entries] == [alert(3).id, alert(4).id]
    assert {e["error_code"] for e in entries} == {"notify_queue_full"}
    assert entries[0]["stage"] == "notify" and entries[0]["output"] == "ops" and entries[0]["worker"] == "w1"
    assert "notify.max_queued 3" in entries[0]["reason"]
    assert Alert.decode(entries[0]["raw"]) == alert(3)


def test_rate_limit_holds_what_is_over_it_and_one_summary_tells_them(queue: NotifyQueue,
                                                                      redis_client: redis.Redis) -> None:
    queue.enqueue([(alert(i), ["ops"]) for i in range(5)])
    window = 600
    # start right after a window boundary, so the test does not straddle one
    time.sleep((window - server_ms(redis_client) % window) / 1000 + 0.01)
    got = [queue.claim("ops", lease_ms=5000, rate_limit=2, window_ms=window) for _ in range(5)]
    assert [type(g).__name__ if not isinstance(g, str) else g for g in got] == ["Claim", "Claim", "held", "held",
                                                                                "held"]
    assert redis_client.zcard(f"{P}held:ops") == 3 and redis_client.zcard(f"{P}queue:ops") == 2
    summaries = Summaries(queue)
    assert summaries.claim("ops", rate_limit=2, lease_ms=5000, window_ms=window) is None  # same window: wait
    time.sleep(window / 1000)
    s = summaries.claim("ops", rate_limit=2, lease_ms=5000, window_ms=window)
    assert s is not None and [a.id for a in s.alerts] == [alert(i).id for i in (2, 3, 4)]
    assert summaries.claim("ops", rate_limit=2, lease_ms=5000, window_ms=window) is None  # leased
    summaries.done(s)
    assert not redis_client.exists(f"{P}held:ops", f"{P}summary:ops", *(f"{P}job:ops:{alert(i).id}" for i in (2, 3, 4)))
    assert redis_client.hget(f"{P}rate:ops", "used") == b"1"  # the summary is one message of the new window


def test_dlq_replay_command_requeues_notifications(queue: NotifyQueue, redis_client: redis.Redis,
                                                   redis_server: object, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from ingest.cli import main

    a = alert()
    queue.enqueue([(a, ["ops"])])
    queue.dead(claimed(queue.claim("ops", lease_ms=5000, rate_limit=0)), "notify_timeout", "r")
    monkeypatch.setenv("AUDIT_INGEST_REDIS__URL", f"redis://127.0.0.1:{redis_server.port}/1")  # type: ignore[attr-defined]
    assert main(["dlq", "--replay"]) == 0
    assert "1 dead letters put back" in capsys.readouterr().out
    assert redis_client.zrange(f"{P}queue:ops", 0, -1) == [a.id.encode()] and not redis_client.exists("filebeat")
