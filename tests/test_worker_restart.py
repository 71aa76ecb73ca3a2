"""A worker restarted under the same id (a container restart: same hostname, pid 1) recovers
its own processing lists at once instead of waiting for the old heartbeats to expire."""

from __future__ import annotations

import time

import redis

from tests.es_double import ESDouble, es_double  # noqa: F401  (fixture)
from tests.redis_server import RedisServer
from tests.test_worker import Expected, Running, check_end_state, finished, running, wait_for  # noqa: F401
from tests.worker_proc import make_worker, redis_url, sample_events

TTL = 30.0  # the default heartbeat TTL: the old code waited up to 2 x TTL before taking work


def crashed_process_left(client: redis.Redis, worker_id: str, raws: list[bytes]) -> None:
    """What a SIGKILLed process with ``worker_id`` leaves: two processing lists, live-looking heartbeats."""
    client.rpush(f"filebeat:processing:{worker_id}", *raws[:50])
    client.rpush(f"filebeat:processing:{worker_id}#2", *raws[50:100])
    client.rpush("filebeat", *raws[100:])
    for wid in (worker_id, worker_id + "#2"):
        client.set(f"filebeat:heartbeat:{wid}", "token-of-the-dead-process", px=int(TTL * 1000))
        client.sadd("filebeat:workers", wid)


def test_restart_with_the_same_id_recovers_its_lists_at_once(redis_server: RedisServer, redis_client: redis.Redis,
                                                             es_double: ESDouble, running: Running) -> None:  # noqa: F811
    raws = sample_events(300, host="restart")
    expected = Expected(raws)
    crashed_process_left(redis_client, "c1", raws)
    t0 = time.monotonic()
    running.start(make_worker(redis_url(redis_server.port), es_double.url, "c1", batch_size=50, ttl=TTL))
    wait_for(lambda: finished(redis_client, es_double, expected), TTL / 2, "all indexed well before the old TTL")
    assert time.monotonic() - t0 < TTL
    running.stop()
    check_end_state(redis_client, es_double, expected)


def test_restart_without_overlap_also_recovers_the_second_slot(redis_server: RedisServer,
                                                               redis_client: redis.Redis,
                                                               es_double: ESDouble,  # noqa: F811
                                                               running: Running) -> None:  # noqa: F811
    raws = sample_events(200, host="restart-no-overlap")
    expected = Expected(raws)
    crashed_process_left(redis_client, "c2", raws)
    running.start(make_worker(redis_url(redis_server.port), es_double.url, "c2", batch_size=50, ttl=TTL,
                              overlap=False))
    wait_for(lambda: finished(redis_client, es_double, expected), TTL / 2, "all indexed well before the old TTL")
    running.stop()
    check_end_state(redis_client, es_double, expected)
    assert not redis_client.exists("filebeat:heartbeat:c2#2", "filebeat:heartbeat:c2")
    assert not redis_client.smembers("filebeat:workers")
