"""The worker end to end in this process: real Redis, real pipeline, the Elasticsearch double.

Every scenario ends with: each event's document stored exactly once (none lost, none written
twice), the dead list holding exactly the events that cannot be indexed, every other list empty.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import redis

from ingest.deadletter import DeadLetterStore
from ingest.metrics import Metrics, MetricsServer
from ingest.model import BatchResult, DeadLetter, IndexAction
from ingest.worker import Worker
from tests.es_double import ESDouble, es_double  # noqa: F401  (fixture)
from tests.redis_server import RedisServer
from tests.worker_proc import lists_empty_but_dead, make_worker, pipeline, redis_url, sample_events


def wait_for(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Expected:
    """What the pipeline makes of the events: the (index, id) to store and the raws to dead-letter."""

    def __init__(self, raws: list[bytes]) -> None:
        result = pipeline().process(raws)
        self.pairs = [(a.index, a.id) for a in result.actions]
        assert len(set(self.pairs)) == len(self.pairs)
        self.dead_raws = sorted(d.raw for d in result.dead)

    def indexed(self, es: ESDouble) -> int:
        return len(es.docs())


class Running:
    """Workers on threads, stopped and joined at the end."""

    def __init__(self) -> None:
        self.threads: list[tuple[Worker, threading.Thread, list[Any]]] = []

    def start(self, worker: Worker) -> Worker:
        out: list[Any] = []

        def run() -> None:
            try:
                out.append(worker.run())
            except BaseException as e:  # noqa: BLE001
                out.append(e)
                raise

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append((worker, t, out))
        return worker

    def stop(self, timeout: float = 15.0) -> None:
        for worker, _, _ in self.threads:
            worker.stop()
        for worker, t, out in self.threads:
            t.join(timeout)
            assert not t.is_alive(), f"worker {worker.source.worker_id} did not stop"
            assert out == [0], f"worker {worker.source.worker_id} ended with {out}"
        self.threads.clear()


@pytest.fixture
def running() -> Iterator[Running]:
    r = Running()
    yield r
    for worker, _, _ in r.threads:
        worker.stop_now()
    for _, t, _ in r.threads:
        t.join(10)


def finished(client: redis.Redis, es: ESDouble, expected: Expected) -> bool:
    return (not lists_empty_but_dead(client) and len(es.docs()) >= len(expected.pairs)
            and client.llen("filebeat:dead") >= len(expected.dead_raws))


def check_end_state(client: redis.Redis, es: ESDouble, expected: Expected) -> None:
    es.assert_exactly_once(expected.pairs)
    assert lists_empty_but_dead(client) == []
    dead = DeadLetterStore(client, "filebeat:dead").list(100_000)
    from ingest.deadletter import decode_raw

    assert sorted(decode_raw(e) for e in dead) == expected.dead_raws
    assert all(e["reason"] and e["error_code"] and e["stage"] for e in dead)


def test_two_workers_thousands_of_events(redis_server: RedisServer, redis_client: redis.Redis,
                                         es_double: ESDouble, running: Running) -> None:  # noqa: F811
    raws = sample_events(3000)
    expected = Expected(raws)
    assert len(expected.pairs) == 3000
    url = redis_url(redis_server.port)
    for w in ("w1", "w2"):
        running.start(make_worker(url, es_double.url, w, batch_size=100))
    for i in range(0, len(raws), 500):  # Filebeat keeps pushing while the workers read
        redis_client.rpush("filebeat", *raws[i:i + 500])
    wait_for(lambda: finished(redis_client, es_double, expected), 60, "all events indexed")
    running.stop()
    check_end_state(redis_client, es_double, expected)
    assert not redis_client.exists("filebeat:heartbeat:w1", "filebeat:heartbeat:w2")


def test_item_429_request_503_and_dropped_connections(redis_server: RedisServer, redis_client: redis.Redis,
                                                      es_double: ESDouble, running: Running) -> None:  # noqa: F811
    raws = sample_events(1200, host="faults")
    expected = Expected(raws)
    es_double.fail_items(429, share=0.2, seed=7, times=300)
    es_double.fail_requests(503, times=5)
    es_double.drop_connections("mid_response", times=3)
    es_double.drop_connections("after_apply", times=2)
    es_double.drop_connections("before_apply", times=2)
    redis_client.rpush("filebeat", *raws)
    running.start(make_worker(redis_url(redis_server.port), es_double.url, "w1", batch_size=100))
    wait_for(lambda: finished(redis_client, es_double, expected), 60, "all events indexed")
    running.stop()
    check_end_state(redis_client, es_double, expected)


def test_elasticsearch_down_events_wait_in_redis(redis_server: RedisServer, redis_client: redis.Redis,
                                                 es_double: ESDouble, running: Running) -> None:  # noqa: F811
    raws = sample_events(600, host="down")
    expected = Expected(raws)
    es_double.down()
    redis_client.rpush("filebeat", *raws)
    worker = running.start(make_worker(redis_url(redis_server.port), es_double.url, "w1", batch_size=50))
    wait_for(lambda: redis_client.llen("filebeat:processing:w1") == 50, 10, "first batch taken")
    time.sleep(1.0)  # while ES is down: one batch in flight, the rest still in the main list
    assert redis_client.llen("filebeat") == 550
    assert redis_client.llen("filebeat:processing:w1") == 50
    assert worker.metrics.events.labels("indexed")._value.get() == 0  # counted when done, not when taken
    es_double.up()
    wait_for(lambda: finished(redis_client, es_double, expected), 30, "all events indexed after ES is back")
    running.stop()
    check_end_state(redis_client, es_double, expected)


def test_redis_restarted_mid_run(redis_server: RedisServer, redis_client: redis.Redis,
                                 es_double: ESDouble, running: Running) -> None:  # noqa: F811
    raws = sample_events(1500, host="redis-restart")
    expected = Expected(raws)
    redis_client.rpush("filebeat", *raws)
    es_double.delay(0.05, times=None)  # slow the worker so the restart lands mid-run
    running.start(make_worker(redis_url(redis_server.port), es_double.url, "w1", batch_size=50))
    wait_for(lambda: len(es_double.docs()) > 200, 30, "some events indexed")
    redis_server.restart()
    time.sleep(0.3)
    redis_server.restart()
    client = redis_server.client(db=1)
    es_double.clear_faults()
    wait_for(lambda: finished(client, es_double, expected), 60, "all events indexed after the restarts")
    running.stop()
    check_end_state(client, es_double, expected)
    client.close()


def poisoned_events() -> tuple[list[bytes], dict[str, int]]:
    good = sample_events(300, host="poison")
    bad = [b"{not json", b"\xff\xfe\x00\x01garbage\x80", b'{"message": 12}', b'{"no_message": true}',
           b"[1,2,3]", orjson.dumps({"message": "x" * (2 * 1024 * 1024), "log": {"offset": 1}})]
    rejected = [orjson.dumps({"message": "May 17 15:26:00 a3 sshd[1]: reject me", "log": {
        "file": {"path": "/var/log/auth.log"}, "offset": 10_000 + i}, "host": {"name": "poison"},
        "fields": {"log_type": "auth"}, "@timestamp": "2024-05-17T16:02:03.500Z"}) for i in range(5)]
    raws = []
    for i, ev in enumerate(good):
        raws.append(ev)
        if i % 40 == 0 and bad:
            raws.append(bad.pop())
        if i % 50 == 7 and rejected:
            raws.append(rejected.pop())
    raws += bad + rejected
    return raws, {"decode": 6, "index": 5}


def test_poisoned_stream_dead_letters_and_replay(redis_server: RedisServer, redis_client: redis.Redis,
                                                 es_double: ESDouble, running: Running) -> None:  # noqa: F811
    raws, _ = poisoned_events()
    es_double.add_rule(lambda index, doc_id, source: "rejected by test rule"
                       if "reject me" in str(source.get("message")) else None)
    result = pipeline().process(raws)
    reject_ids = {a.id for a in result.actions if "reject me" in a.doc["message"]}
    assert len(reject_ids) == 5 and len(result.dead) == 6
    to_store = [(a.index, a.id) for a in result.actions if a.id not in reject_ids]
    redis_client.rpush("filebeat", *raws)
    worker = running.start(make_worker(redis_url(redis_server.port), es_double.url, "w1", batch_size=40))
    wait_for(lambda: not lists_empty_but_dead(redis_client) and redis_client.llen("filebeat:dead") == 11, 30,
             "poisoned stream handled")
    running.stop()
    es_double.assert_exactly_once(to_store)
    store = DeadLetterStore(redis_client, "filebeat:dead")
    summary = store.summary()
    assert summary["count"] == 11
    assert summary["by_stage"] == {"decode": 6, "index": 5}
    assert {"invalid_json", "invalid_utf8", "too_large", "no_message", "message_not_string", "not_an_object",
            } <= set(summary["by_code"])
    entries = store.list(100)
    index_entries = [e for e in entries if e["stage"] == "index"]
    assert all(e["status"] == 400 and "rejected by test rule" in e["reason"] for e in index_entries)
    binary = [e for e in entries if e.get("raw_encoding") == "base64"]
    assert len(binary) == 1
    assert worker.metrics.dead_lettered.labels("decode", "invalid_json")._value.get() == 1
    # the operator fixes the mapping problem and replays: the rejected ones are indexed now,
    # the undecodable ones come back to the dead list (once each)
    es_double.clear_faults()
    assert store.replay() == 11
    assert redis_client.llen("filebeat:dead") == 0 and redis_client.llen("filebeat") == 11
    running.start(make_worker(redis_url(redis_server.port), es_double.url, "w2", batch_size=40))
    wait_for(lambda: not lists_empty_but_dead(redis_client) and redis_client.llen("filebeat:dead") == 6, 30,
             "replay handled")
    running.stop()
    es_double.assert_exactly_once([(a.index, a.id) for a in result.actions])
    assert store.summary()["by_stage"] == {"decode": 6}


class ExplodingPipeline:
    """Raises on any batch containing an event with ``boom`` in it."""

    def __init__(self) -> None:
        self.inner = pipeline()

    def process(self, raws: list[bytes]) -> BatchResult:
        if any(b"boom" in r for r in raws):
            raise RuntimeError("parser bug triggered by boom")
        result: BatchResult = self.inner.process(raws)
        return result


def test_pipeline_exception_isolates_the_event(redis_server: RedisServer, redis_client: redis.Redis,
                                               es_double: ESDouble, running: Running) -> None:  # noqa: F811
    good = sample_events(200, host="bisect")
    booms = [orjson.dumps({"message": f"boom {i}"}) for i in range(3)]
    raws = good[:50] + booms[:1] + good[50:120] + booms[1:] + good[120:]
    expected = Expected(good)
    redis_client.rpush("filebeat", *raws)
    worker = running.start(make_worker(redis_url(redis_server.port), es_double.url, "w1", batch_size=64,
                                       proc=ExplodingPipeline()))
    wait_for(lambda: not lists_empty_but_dead(redis_client) and redis_client.llen("filebeat:dead") == 3, 30,
             "batches with a bad event handled")
    running.stop()
    es_double.assert_exactly_once(expected.pairs)
    entries = DeadLetterStore(redis_client, "filebeat:dead").list(10)
    assert sorted(e["raw"] for e in entries) == sorted(b.decode() for b in booms)
    assert {e["stage"] for e in entries} == {"parse"} and {e["error_code"] for e in entries} == {"pipeline_error"}
    assert all("parser bug triggered by boom" in e["reason"] for e in entries)
    assert worker.metrics.pipeline_errors._value.get() >= 1


class DocOnlySink:
    """Rejects every document; proves documents without ``raw`` are dead-lettered as the document."""

    def write_batch(self, actions: list[IndexAction]) -> list[Any]:
        from ingest.model import Rejected

        return [Rejected(a, 400, "mapper_parsing_exception", "nope") for a in actions]


class SessionLikePipeline:
    def process(self, raws: list[bytes]) -> BatchResult:
        return BatchResult(actions=[IndexAction("audit-x", str(i), {"type": "session", "n": i}, None)
                                    for i in range(len(raws))], dead=[DeadLetter(raws[0], "decode", "x", "y")])


def test_rejected_documents_without_raw_keep_the_document(redis_server: RedisServer, redis_client: redis.Redis,
                                                          running: Running) -> None:
    redis_client.rpush("filebeat", b"a", b"b")
    worker = running.start(make_worker(redis_url(redis_server.port), "http://unused", "w1", batch_size=10,
                                       proc=SessionLikePipeline(), sink=DocOnlySink()))
    wait_for(lambda: redis_client.llen("filebeat:dead") == 3, 10, "dead letters")
    running.stop()
    m = worker.metrics
    assert m.documents_rejected.labels("400", "session")._value.get() == 2
    assert m.documents.labels("session")._value.get() == 0 and m.documents.labels("event")._value.get() == 0
    assert m.events.labels("dead_lettered")._value.get() == 1  # "a"; "b" made no document of its own
    assert m.events.labels("indexed")._value.get() == 1
    entries = DeadLetterStore(redis_client, "filebeat:dead").list(10)
    assert entries[0]["raw"] == "a" and entries[0]["stage"] == "decode"
    assert [orjson.loads(e["raw"]) for e in entries[1:]] == [{"type": "session", "n": 0}, {"type": "session", "n": 1}]
    assert all(e["status"] == 400 and e["error_code"] == "mapper_parsing_exception" for e in entries[1:])


def test_metrics_and_healthz(redis_server: RedisServer, redis_client: redis.Redis, es_double: ESDouble,  # noqa: F811
                             running: Running) -> None:
    redis_client.rpush("filebeat", *sample_events(120, host="metrics"))
    worker = make_worker(redis_url(redis_server.port), es_double.url, "w1", batch_size=50)
    worker.metrics.stale_after = 1.0
    server = MetricsServer(worker.metrics, "127.0.0.1", 0).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        with pytest.raises(urllib.error.HTTPError) as info:  # not started: never ran
            worker.metrics._beat -= 5
            urllib.request.urlopen(base + "/healthz", timeout=5)
        assert info.value.code == 503
        running.start(worker)
        wait_for(lambda: worker.metrics.events.labels("indexed")._value.get() == 120, 30, "indexed and acked")
        assert urllib.request.urlopen(base + "/healthz", timeout=5).status == 200
        text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert 'audit_ingest_events_total{outcome="indexed"} 120.0' in text
        assert 'audit_ingest_events_total{outcome="dead_lettered"} 0.0' in text
        assert 'audit_ingest_documents_total{type="event"} 120.0' in text
        assert 'audit_ingest_documents_total{type="session"} 0.0' in text
        assert "audit_ingest_batch_seconds_count" in text
        assert 'audit_ingest_redis_list_length{list="main"}' in text
        running.stop()
    finally:
        server.close()
    # two workers' metrics never clash
    assert Metrics().registry is not Metrics().registry


def test_build_worker_from_settings(redis_server: RedisServer, redis_client: redis.Redis, es_double: ESDouble,  # noqa: F811
                                    running: Running, caplog: pytest.LogCaptureFixture) -> None:
    """The factory ``audit-ingest run`` uses, with every section from the composed settings."""
    from ingest.settings import load_settings
    from ingest.worker import build_worker

    settings = load_settings(overrides={
        "redis": {"url": f"redis://:s3cret-pw@127.0.0.1:{redis_server.port}/1", "batch_size": 25,
                  "batch_wait": "PT0.01S", "block_timeout": "PT0.2S", "heartbeat_ttl": "PT1S"},
        "elasticsearch": {"hosts": [es_double.url]},
        "metrics": {"port": 0, "bind": "127.0.0.1"},
        "worker": {"id": "from-settings", "shutdown_timeout": "PT2S"},
        "deadletter": {"key": "dlq"}})
    caplog.set_level(logging.DEBUG)
    redis_client.config_set("requirepass", "s3cret-pw")
    try:
        raws = sample_events(100, host="settings") + [b"not json"]
        authed = redis.Redis(port=redis_server.port, db=1, password="s3cret-pw")
        authed.rpush("filebeat", *raws)
        worker, close = build_worker(settings)
        try:
            running.start(worker)
            wait_for(lambda: authed.llen("filebeat") == 0 and authed.llen("dlq") == 1
                     and not authed.exists("filebeat:processing:from-settings"), 20,
                     f"drained ({authed.llen('filebeat')}, {authed.llen('dlq')}, {authed.keys('filebeat*')})")
            running.stop()
        finally:
            close()
        assert worker.metrics.events.labels("indexed")._value.get() == 100
        assert worker.metrics.events.labels("dead_lettered")._value.get() == 1
        assert len({d["_source"]["log"]["offset"] for d in es_double.docs() if "log" in d["_source"]}) == 100
        assert orjson.loads(authed.lindex("dlq", 0))["worker"] == "from-settings"
        authed.close()
    finally:
        redis.Redis(port=redis_server.port, password="s3cret-pw").config_set("requirepass", "")
    assert "redis://***@127.0.0.1" in caplog.text and "s3cret" not in caplog.text


class RedisDownOncePipeline:
    """Raises SourceUnavailable (as the Redis session store does) for its first half second."""

    def __init__(self) -> None:
        self.inner = pipeline()
        self.until: float | None = None
        self.failures = 0

    def process(self, raws: list[bytes]) -> BatchResult:
        from ingest.errors import SourceUnavailable

        if self.until is None:
            self.until = time.monotonic() + 0.5
        if time.monotonic() < self.until:
            self.failures += 1
            raise SourceUnavailable("session store: Redis unavailable")
        result: BatchResult = self.inner.process(raws)
        return result


def test_redis_error_inside_the_pipeline_retries_the_batch(redis_server: RedisServer, redis_client: redis.Redis,
                                                           es_double: ESDouble,  # noqa: F811
                                                           running: Running) -> None:
    raws = sample_events(80, host="store-down")
    expected = Expected(raws)
    redis_client.rpush("filebeat", *raws)
    proc = RedisDownOncePipeline()
    worker = running.start(make_worker(redis_url(redis_server.port), es_double.url, "w1", batch_size=30, proc=proc))
    wait_for(lambda: finished(redis_client, es_double, expected), 20, "indexed after the store came back")
    running.stop()
    check_end_state(redis_client, es_double, expected)  # nothing dead-lettered for Redis trouble
    assert proc.failures >= 2
    # each event counted once, though its batch was taken again after each failure
    assert worker.metrics.events.labels("indexed")._value.get() == 80
    assert worker.metrics.documents.labels("event")._value.get() == 80
