"""Derived documents (sessions closed by a timeout, brute-force alerts) through killed and stopped
workers: each arrives in Elasticsearch exactly once (ingest.pending).

The workers are real processes (``python -m tests.worker_proc``) on the test Redis, writing to
the Elasticsearch double of this process.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from tests.es_double import ESDouble, es_double  # noqa: F401  (fixture)
from tests.redis_server import RedisServer
from tests.test_worker import wait_for
from tests.worker_proc import WorkerProcs, file_events, lists_empty_but_dead

ROOT = Path(__file__).parent.parent
PENDING = "filebeat:pending:docs"


Procs = WorkerProcs


@pytest.fixture
def procs(tmp_path: Path, redis_server: RedisServer, es_double: ESDouble) -> Iterator[Procs]:  # noqa: F811
    p = Procs(tmp_path, redis_server.port, es_double.url, "--derived-lease", "1", shutdown_timeout=1.0)
    yield p
    p.kill_all()


def auth_event(line: str, offset: int) -> bytes:
    return orjson.dumps({"@timestamp": "2024-05-17T16:05:00.000Z", "message": line,
                         "log": {"file": {"path": "/var/log/auth.log"}, "offset": offset},
                         "host": {"name": "collector"}, "fields": {"log_type": "auth"}})


def of_type(es: ESDouble, kind: str) -> list[dict[str, Any]]:
    return [d for d in es.docs() if d["_source"].get("type") == kind]


def writes(es: ESDouble, doc_id: str) -> int:
    return es.count_writes_by_id()[doc_id]


def lose_the_batch(proc: subprocess.Popen[bytes], how: str) -> None:
    """The worker dies (SIGKILL) or is stopped while Elasticsearch fails (SIGTERM: given back)."""
    if how == "sigkill":
        proc.kill()
        proc.wait()
    else:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_timed_out_session_survives_a_batch_that_is_never_acked(procs: Procs, redis_client: redis.Redis,
                                                                 es_double: ESDouble, how: str) -> None:  # noqa: F811
    login = auth_event("May 17 15:26:00 a3 sshd[11741]: Accepted publickey for civis-ec2 from 81.2.69.160 "
                       "port 51836 ssh2: RSA 0c:b4:eb:4c:91:1f:df:7d:76:ba:d4:3e:7b:72:67:87", 0)
    other = auth_event("May 17 15:40:00 a3 systemd[1]: Started Session 7 of user civis-ec2.", 100)
    redis_client.rpush("filebeat", login)
    first = procs.start("s1", "--sessions", "1")
    wait_for(lambda: len(es_double.docs()) == 1, 30, "the login indexed")
    es_double.fail_requests(503, times=None)
    time.sleep(1.2)  # the session times out (processing time) ...
    redis_client.rpush("filebeat", other)  # ... and the next batch's expire() closes it
    wait_for(lambda: redis_client.hlen(PENDING) == 1, 20, "the timed-out session pending")
    assert redis_client.llen("filebeat:processing:s1") == 1  # its batch not confirmed by Elasticsearch
    lose_the_batch(first, how)
    assert of_type(es_double, "session") == [] and redis_client.hlen(PENDING) == 1
    es_double.clear_faults()
    procs.start("s2", "--sessions", "1")  # recovers or takes the batch: its expire() has nothing to close
    wait_for(lambda: len(of_type(es_double, "session")) == 1 and redis_client.hlen(PENDING) == 0
             and not lists_empty_but_dead(redis_client), 30, "the session document carried by the next batch")
    (session,) = of_type(es_double, "session")
    assert session["_source"]["session"]["end_reason"] == "timeout" and session["_version"] == 1
    assert writes(es_double, session["_id"]) == 1
    assert len(es_double.docs()) == 3 and all(n == 1 for n in es_double.count_writes_by_id().values())
    assert not redis_client.zcard("filebeat:pending:lease")


def test_brute_force_alert_survives_a_kill_and_a_newer_failure_first(procs: Procs, redis_client: redis.Redis,
                                                                     es_double: ESDouble) -> None:  # noqa: F811
    """The alert fired in Redis by a worker killed before Elasticsearch took its batch; a newer
    failure of the IP, processed first by another worker, trims the old trigger; the batch
    redelivered after that fires nothing (the flag is set): the pending alert is carried instead."""
    burst = file_events("bruteforce.log")
    es_double.fail_requests(503, times=None)
    redis_client.rpush("filebeat", *burst)
    first = procs.start("b1", "--detect")
    wait_for(lambda: redis_client.hlen(PENDING) >= 1, 30, "the brute-force alert fired and pending")
    first.kill()
    first.wait()
    # the dead worker's heartbeat held up (as if it had just died) until the newer failure is in
    redis_client.set("filebeat:heartbeat:b1", "dead", px=60_000)
    newer = auth_event("May 17 18:00:00 a3 sshd[30001]: Failed password for root from 89.160.20.128 port 41000 ssh2",
                       10_000)
    redis_client.rpush("filebeat", newer)
    es_double.clear_faults()
    second = procs.start("b2", "--detect")
    wait_for(lambda: len(es_double.docs()) >= 1, 30, "the newer failure indexed first")
    # the pending alert is carried (with the next batch, or alone while the queue is idle) before,
    # and whether or not, the batch that fired it is ever redelivered
    wait_for(lambda: len(of_type(es_double, "alert")) == 1 and redis_client.hlen(PENDING) == 0, 20,
             "the pending alert carried and acknowledged")
    assert redis_client.llen("filebeat:processing:b1") == len(burst)  # not redelivered yet
    redis_client.delete("filebeat:heartbeat:b1")  # now it is recovered and redelivered
    wait_for(lambda: not lists_empty_but_dead(redis_client) and redis_client.hlen(PENDING) == 0
             and len([d for d in es_double.docs() if d["_source"].get("type") != "alert"]) == len(burst) + 1,
             40, "the dead worker's batch recovered and indexed")
    alerts = of_type(es_double, "alert")
    assert [a["_source"]["rule"]["name"] for a in alerts] == ["brute_force"], procs.log("b2")[-3000:]
    assert writes(es_double, alerts[0]["_id"]) == 1
    assert all(n == 1 for n in es_double.count_writes_by_id().values())
    second.send_signal(signal.SIGTERM)
    assert second.wait(15) == 0
