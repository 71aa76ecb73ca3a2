"""Worker processes killed, stopped and restarted: nothing lost, nothing indexed twice.

Each worker is a real process (``python -m tests.worker_proc``) reading the test Redis and
writing to the Elasticsearch double that runs in this process.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.es_double import ESDouble, es_double  # noqa: F401  (fixture)
from tests.redis_server import RedisServer
from tests.test_worker import Expected, check_end_state, finished, wait_for
from tests.worker_proc import WorkerProcs, lists_empty_but_dead, sample_events

ROOT = Path(__file__).parent.parent


Procs = WorkerProcs


@pytest.fixture
def procs(tmp_path: Path, redis_server: RedisServer, es_double: ESDouble) -> Iterator[Procs]:  # noqa: F811
    p = Procs(tmp_path, redis_server.port, es_double.url)
    yield p
    p.kill_all()


def wait_started(client: redis.Redis, worker_id: str, timeout: float = 60.0) -> None:
    wait_for(lambda: bool(client.exists(f"filebeat:heartbeat:{worker_id}")), timeout, f"{worker_id} started")


@pytest.mark.slow
def test_sigkill_at_random_moments_then_restart(procs: Procs, redis_client: redis.Redis,
                                                es_double: ESDouble) -> None:  # noqa: F811
    raws = sample_events(5000, host="sigkill")
    expected = Expected(raws)
    # every bulk answer slow until the kills are over: the two workers drain at most ~250 events/s,
    # 20 s or more for 5,000, however slowly the restarted processes start on a busy machine
    es_double.delay(0.4, times=None)
    redis_client.rpush("filebeat", *raws)
    rng = random.Random(2024)
    alive = ["a0", "b0"]
    for wid in alive:
        procs.start(wid)
    for wid in alive:
        wait_started(redis_client, wid)
    kills = mid_batch = 0
    for round_ in range(1, 4):
        for wid in alive:
            wait_started(redis_client, wid)
        time.sleep(rng.uniform(0.1, 0.8))
        victim = alive.pop(rng.randrange(len(alive)))
        held = redis_client.llen(f"filebeat:processing:{victim}")
        procs.procs[victim].kill()
        procs.procs[victim].wait()
        kills += 1
        mid_batch += held > 0
        new = f"{victim[0]}{round_}"
        procs.start(new)  # restarted at once under a new id (a new pid)
        alive.append(new)
    assert redis_client.llen("filebeat") > 0, "the run ended before the last kill: make it longer"
    assert mid_batch >= 2, "the kills should land while a batch is in flight"
    es_double.clear_faults()
    for wid in alive:
        wait_started(redis_client, wid)  # signal handlers installed before the SIGTERM below
    wait_for(lambda: finished(redis_client, es_double, expected), 60, "all events indexed after the kills")
    codes = procs.terminate_all()
    assert all(code == -signal.SIGKILL for wid, code in codes.items() if wid not in alive)
    assert all(codes[wid] == 0 for wid in alive), {w: procs.log(w)[-2000:] for w in alive}
    check_end_state(redis_client, es_double, expected)
    logs = "".join(procs.log(w) for w in procs.procs)
    assert "recovered" in logs and kills == 3
    assert not redis_client.smembers("filebeat:workers")


def test_sigterm_finishes_the_batch_and_exits_0(procs: Procs, redis_client: redis.Redis,
                                                es_double: ESDouble) -> None:  # noqa: F811
    raws = sample_events(600, host="sigterm")
    expected = Expected(raws)
    es_double.delay(0.3, times=None)  # every bulk request takes a while: SIGTERM lands mid-batch
    redis_client.rpush("filebeat", *raws)
    proc = procs.start("t1", shutdown_timeout=5)
    wait_for(lambda: redis_client.llen("filebeat:processing:t1") > 0 and len(es_double.bulk_requests()) > 1, 20,
             "worker busy")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0, procs.log("t1")[-3000:]
    assert time.monotonic() - t0 < 10
    assert not redis_client.exists("filebeat:processing:t1")  # the batch was finished (acked)
    assert "given back" not in procs.log("t1") and "gave" not in procs.log("t1")
    left = redis_client.llen("filebeat")
    assert 0 < left < 600
    assert len(es_double.docs()) == 600 - left  # exactly what was taken was indexed
    es_double.clear_faults()
    procs.start("t2")
    wait_for(lambda: finished(redis_client, es_double, expected), 30, "the rest indexed")
    assert procs.terminate_all()["t2"] == 0
    check_end_state(redis_client, es_double, expected)


def test_sigterm_while_elasticsearch_is_down_gives_the_batch_back(procs: Procs, redis_client: redis.Redis,
                                                                  es_double: ESDouble) -> None:  # noqa: F811
    raws = sample_events(300, host="sigterm-down")
    expected = Expected(raws)
    es_double.down()
    redis_client.rpush("filebeat", *raws)
    proc = procs.start("d1", shutdown_timeout=1)
    wait_for(lambda: redis_client.llen("filebeat:processing:d1") == 50, 20, "first batch taken")
    assert redis_client.llen("filebeat") == 250  # back-pressure: nothing more taken while ES is down
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0, procs.log("d1")[-3000:]
    assert time.monotonic() - t0 < 8
    assert redis_client.lrange("filebeat", 0, -1) == raws  # given back at the head, in order
    assert lists_empty_but_dead(redis_client) == ["filebeat"]
    es_double.up()
    procs.start("d2")
    wait_for(lambda: finished(redis_client, es_double, expected), 30, "indexed once ES is back")
    assert procs.terminate_all()["d2"] == 0
    check_end_state(redis_client, es_double, expected)


def test_second_sigterm_gives_the_batch_back_at_once(procs: Procs, redis_client: redis.Redis,
                                                     es_double: ESDouble) -> None:  # noqa: F811
    raws = sample_events(100, host="sigterm-twice")
    es_double.down()
    redis_client.rpush("filebeat", *raws)
    proc = procs.start("t1", shutdown_timeout=60)  # the first signal alone would wait a minute
    wait_for(lambda: redis_client.llen("filebeat:processing:t1") == 50, 20, "first batch taken")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert proc.poll() is None  # still waiting for Elasticsearch within the shutdown timeout
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0, procs.log("t1")[-3000:]
    assert time.monotonic() - t0 < 10
    assert redis_client.lrange("filebeat", 0, -1) == raws  # given back at the head, in order
    assert lists_empty_but_dead(redis_client) == ["filebeat"]
