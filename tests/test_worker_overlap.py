"""Overlap: batch N is indexed on the sender thread while batch N+1 is taken (into the second
processing list, ``<id>#2``) and processed. The guarantee must not change: nothing lost, nothing
indexed twice, through SIGKILL, SIGTERM and Elasticsearch going down."""

from __future__ import annotations

import signal
import time

import redis

from tests.es_double import ESDouble, es_double  # noqa: F401  (fixture)
from tests.redis_server import RedisServer
from tests.test_worker import Expected, Running, check_end_state, finished, running, wait_for  # noqa: F401
from tests.test_worker_faults import Procs, procs, wait_started  # noqa: F401
from tests.worker_proc import lists_empty_but_dead, make_worker, redis_url, sample_events


def both_slots_held(client: redis.Redis, wid: str) -> bool:
    return bool(client.llen(f"filebeat:processing:{wid}")) and bool(client.llen(f"filebeat:processing:{wid}#2"))


def test_overlap_holds_two_batches_and_stores_each_once(redis_server: RedisServer, redis_client: redis.Redis,
                                                        es_double: ESDouble, running: Running) -> None:  # noqa: F811
    raws = sample_events(1000, host="overlap")
    expected = Expected(raws)
    es_double.delay(0.1, times=None)  # indexing is the slow part: the next batch is taken meanwhile
    redis_client.rpush("filebeat", *raws)
    worker = running.start(make_worker(redis_url(redis_server.port), es_double.url, "w1", batch_size=50))
    wait_for(lambda: both_slots_held(redis_client, "w1"), 20, "two batches held at once")
    es_double.clear_faults()
    wait_for(lambda: finished(redis_client, es_double, expected), 60, "all events indexed")
    running.stop()
    check_end_state(redis_client, es_double, expected)
    assert worker.metrics.events.labels("indexed")._value.get() == 1000
    assert worker.metrics.documents.labels("event")._value.get() == 1000
    assert not redis_client.smembers("filebeat:workers")  # both slots released
    assert not redis_client.keys("filebeat:heartbeat:*")


def test_overlap_off_uses_one_processing_list(redis_server: RedisServer, redis_client: redis.Redis,
                                              es_double: ESDouble, running: Running) -> None:  # noqa: F811
    raws = sample_events(300, host="no-overlap")
    expected = Expected(raws)
    es_double.delay(0.05, times=None)
    redis_client.rpush("filebeat", *raws)
    running.start(make_worker(redis_url(redis_server.port), es_double.url, "w1", batch_size=50, overlap=False))
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while not finished(redis_client, es_double, expected) and time.monotonic() < deadline:
        seen.update(k.decode() for k in redis_client.keys("filebeat:processing:*"))
        time.sleep(0.01)
    running.stop()
    check_end_state(redis_client, es_double, expected)
    assert seen == {"filebeat:processing:w1"}


def test_elasticsearch_down_mid_run_stops_taking(redis_server: RedisServer, redis_client: redis.Redis,
                                                 es_double: ESDouble, running: Running) -> None:  # noqa: F811
    raws = sample_events(1000, host="down-mid")
    expected = Expected(raws)
    redis_client.rpush("filebeat", *raws)
    es_double.delay(0.1, times=None)
    running.start(make_worker(redis_url(redis_server.port), es_double.url, "w1", batch_size=50))
    wait_for(lambda: both_slots_held(redis_client, "w1"), 20, "overlapping")
    es_double.down()
    time.sleep(1.5)  # the sink retries: the newer batch was given back, one is held, nothing more taken
    left = redis_client.llen("filebeat")
    held = redis_client.llen("filebeat:processing:w1") + redis_client.llen("filebeat:processing:w1#2")
    assert 0 < held <= 50
    assert not both_slots_held(redis_client, "w1")
    time.sleep(1.0)
    assert redis_client.llen("filebeat") == left  # back-pressure while Elasticsearch is down
    es_double.clear_faults()
    es_double.up()
    wait_for(lambda: finished(redis_client, es_double, expected), 60, "all indexed once ES is back")
    running.stop()
    check_end_state(redis_client, es_double, expected)


def test_sigkill_with_two_batches_held_then_another_worker_recovers_both(
        procs: Procs, redis_client: redis.Redis, es_double: ESDouble) -> None:  # noqa: F811
    raws = sample_events(600, host="kill-overlap")
    expected = Expected(raws)
    es_double.delay(0.3, times=None)
    redis_client.rpush("filebeat", *raws)
    proc = procs.start("k1")
    wait_for(lambda: both_slots_held(redis_client, "k1"), 20, "two batches held at once")
    proc.kill()
    proc.wait()
    assert both_slots_held(redis_client, "k1")
    es_double.clear_faults()
    procs.start("k2")  # another id: it must recover both of k1's lists once their heartbeats expire
    wait_for(lambda: finished(redis_client, es_double, expected), 60, "all indexed after the kill")
    assert procs.terminate_all()["k2"] == 0
    check_end_state(redis_client, es_double, expected)
    assert "recovered" in procs.log("k2")
    assert not redis_client.smembers("filebeat:workers")


def test_sigkill_then_restart_with_the_same_id(procs: Procs, redis_client: redis.Redis,  # noqa: F811
                                               es_double: ESDouble) -> None:  # noqa: F811
    raws = sample_events(400, host="same-id")
    expected = Expected(raws)
    es_double.delay(0.3, times=None)
    redis_client.rpush("filebeat", *raws)
    proc = procs.start("s1")
    wait_for(lambda: both_slots_held(redis_client, "s1"), 20, "two batches held at once")
    proc.kill()
    proc.wait()
    es_double.clear_faults()
    procs.start("s1")  # same id: takes both lists over at once (the old heartbeats are not waited for)
    wait_for(lambda: finished(redis_client, es_double, expected), 60, "all indexed after the restart")
    assert procs.terminate_all()["s1"] == 0
    check_end_state(redis_client, es_double, expected)


def test_sigterm_with_two_batches_held_finishes_both(procs: Procs, redis_client: redis.Redis,  # noqa: F811
                                                     es_double: ESDouble) -> None:  # noqa: F811
    raws = sample_events(600, host="term-overlap")
    expected = Expected(raws)
    es_double.delay(0.3, times=None)
    redis_client.rpush("filebeat", *raws)
    proc = procs.start("t1", shutdown_timeout=5)
    wait_started(redis_client, "t1")
    wait_for(lambda: both_slots_held(redis_client, "t1"), 20, "two batches held at once")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0, procs.log("t1")[-3000:]
    assert lists_empty_but_dead(redis_client) == ["filebeat"]  # both acked, nothing left in processing
    assert "gave" not in procs.log("t1")
    left = redis_client.llen("filebeat")
    assert len(es_double.docs()) == 600 - left  # exactly what was taken was indexed
    es_double.clear_faults()
    procs.start("t2")
    wait_for(lambda: finished(redis_client, es_double, expected), 30, "the rest indexed")
    assert procs.terminate_all()["t2"] == 0
    check_end_state(redis_client, es_double, expected)


def test_sigterm_with_two_batches_held_and_elasticsearch_gone_gives_both_back_in_order(
        procs: Procs, redis_client: redis.Redis, es_double: ESDouble) -> None:  # noqa: F811
    raws = sample_events(300, host="term-down-overlap")
    expected = Expected(raws)
    es_double.delay(0.5, times=None)
    redis_client.rpush("filebeat", *raws)
    proc = procs.start("g1", shutdown_timeout=1)
    wait_started(redis_client, "g1")
    wait_for(lambda: both_slots_held(redis_client, "g1") and len(es_double.docs()) >= 50, 20,
             "two batches held at once")
    es_double.fail_requests(503)  # from now on nothing is confirmed
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0, procs.log("g1")[-3000:]
    assert lists_empty_but_dead(redis_client) == ["filebeat"]
    stored = {d["_source"]["log"]["offset"] for d in es_double.docs()}
    back = redis_client.lrange("filebeat", 0, -1)
    # what went back is everything not confirmed, oldest batch first, in the original order
    assert back == [r for r in raws if r in set(back)]
    assert len(back) + len(stored) >= 300
    es_double.clear_faults()
    procs.start("g2")
    wait_for(lambda: finished(redis_client, es_double, expected), 30, "indexed once ES answers again")
    assert procs.terminate_all()["g2"] == 0
    check_end_state(redis_client, es_double, expected)
