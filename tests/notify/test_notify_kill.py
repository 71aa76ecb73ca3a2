"""Worker processes killed mid-way: an alert is never lost, and sent twice at most.

Each worker is a real process (``python -m tests.worker_proc --detect --notify ...``) on the test
Redis, the Elasticsearch double and a real HTTP receiver of this process.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from ingest.deadletter import DeadLetterStore
from tests.es_double import ESDouble, es_double  # noqa: F401  (fixture)
from tests.notify.receivers import HttpReceiver
from tests.redis_server import RedisServer
from tests.test_worker import wait_for
from tests.worker_proc import WorkerProcs, file_events, lists_empty_but_dead

ROOT = Path(__file__).resolve().parent.parent.parent
P = "audit-ingest:notify:"
ALERT_ID = "brute_force-900f02a6d9317b23b8039eed"


class Workers(WorkerProcs):
    def start_notifying(self, worker_id: str, notify: dict[str, Any]) -> subprocess.Popen[bytes]:
        return self.start(worker_id, "--detect", "--notify", orjson.dumps(notify).decode())


@pytest.fixture
def workers(tmp_path: Path, redis_server: RedisServer, es_double: ESDouble) -> Iterator[Workers]:  # noqa: F811
    w = Workers(tmp_path, redis_server.port, es_double.url)
    yield w
    w.kill_all()


def notify(url: str, *, lease: float, timeout: float) -> dict[str, Any]:
    return {"outputs": {"ops": {"type": "slack", "url": url, "timeout": timeout}}, "lease": lease,
            "backoff_initial": 0.2, "backoff_max": 1, "poll_interval": 0.05}


def alert_ids(receiver: HttpReceiver) -> list[str]:
    return [r.json()["blocks"][-1]["elements"][0]["text"].split("`")[1] for r in receiver.requests]


def notify_keys(client: redis.Redis) -> list[str]:
    return sorted(k.decode() for k in client.scan_iter(match=f"{P}*")
                  if not k.decode().startswith((f"{P}seen:", f"{P}rate:")))


def wait_started(client: redis.Redis, worker_id: str) -> None:
    wait_for(lambda: bool(client.exists(f"filebeat:heartbeat:{worker_id}")), 30, f"{worker_id} started")


@pytest.mark.slow
def test_killed_between_sending_and_recording_sends_one_duplicate_at_most(
        workers: Workers, redis_client: redis.Redis, es_double: ESDouble, receiver: HttpReceiver) -> None:  # noqa: F811
    settings = notify(receiver.url, lease=4, timeout=2)
    receiver.hold.clear()  # the message arrives; the answer waits
    workers.start_notifying("a", settings)
    wait_started(redis_client, "a")
    redis_client.rpush("filebeat", *file_events("bruteforce.log"))
    receiver.wait_for(1, 30)
    workers.kill("a")  # sent, not recorded: the claim's lease still runs
    receiver.hold.set()
    assert redis_client.zcard(f"{P}queue:ops") == 1  # the alert is still queued, claimed by the dead sender
    workers.start_notifying("b", settings)
    wait_for(lambda: len(receiver.requests) == 2 and not notify_keys(redis_client), 30,
             "sent again once the lease ended")
    time.sleep(1.0)  # time for a third message, were one coming
    assert workers.terminate("b") == 0, workers.log("b")[-3000:]
    assert alert_ids(receiver) == [ALERT_ID, ALERT_ID]  # one duplicate, never none
    assert es_double.count_by_id()[ALERT_ID] == 1
    assert DeadLetterStore(redis_client, "filebeat:dead").count() == 0
    assert lists_empty_but_dead(redis_client) == [] and notify_keys(redis_client) == []


@pytest.mark.slow
def test_killed_before_the_ack_the_alert_is_raised_again_and_sent_once(
        workers: Workers, redis_client: redis.Redis, es_double: ESDouble, receiver: HttpReceiver) -> None:  # noqa: F811
    settings = notify(receiver.url, lease=4, timeout=2)
    es_double.delay(3.0, times=1)  # the batch's bulk is applied, then answered late: the kill lands before the ack
    workers.start_notifying("a", settings)
    wait_started(redis_client, "a")
    redis_client.rpush("filebeat", *file_events("bruteforce.log"))
    wait_for(lambda: len(es_double.bulk_requests()) >= 1, 30, "a's bulk request")
    assert redis_client.llen("filebeat:processing:a") == 15
    workers.kill("a")
    assert not redis_client.exists(f"{P}queue:ops", f"{P}seen:{ALERT_ID}")  # not acked: nothing queued
    workers.start_notifying("b", settings)  # recovers a's batch once its heartbeat expires, raises the alert again
    wait_for(lambda: len(receiver.requests) >= 1 and not notify_keys(redis_client)
             and not lists_empty_but_dead(redis_client), 30, "the alert sent by b")
    time.sleep(1.0)  # time for a second message, were one coming
    assert workers.terminate("b") == 0, workers.log("b")[-3000:]
    assert alert_ids(receiver) == [ALERT_ID]
    assert es_double.count_by_id()[ALERT_ID] == 1
    assert "recovered 15 events from dead worker a" in workers.log("b")
