"""Notifications from the worker: real Redis, real pipeline with the detection rules, the Elasticsearch
double, a real HTTP receiver. The alerts of a batch are queued with its ack and sent once; two
workers raising the same alert send one message; a notification outage never holds ingestion."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from ingest.model import IndexAction, Rejected
from ingest.notify.config import NotifyConfig
from ingest.notify.hook import Notifier
from ingest.notify.queue import NotifyQueue
from tests.es_double import ESDouble, es_double  # noqa: F401  (fixture)
from tests.notify.receivers import HttpReceiver
from tests.redis_server import RedisServer
from tests.test_worker import Running, running, wait_for  # noqa: F401  (fixture)
from tests.worker_proc import (
    detecting_pipeline,
    file_events,
    lists_empty_but_dead,
    make_worker,
    notifications,
    redis_url,
)

P = "audit-ingest:notify:"
ALERT_ID = "brute_force-900f02a6d9317b23b8039eed"  # bruteforce.log's one alert (tests/notify/test_outputs.py)


def filler(n: int, start: int = 0) -> list[bytes]:
    """``n`` events that raise no alert (commands.log and audit.log lines, distinct offsets)."""
    out: list[bytes] = []
    while len(out) < n:
        k = start + len(out)
        out += file_events("commands.log", start=k) + file_events("audit.log", start=k + 100_000)
    return out[:n]


def notify_settings(url: str, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"outputs": {"ops": {"type": "slack", "url": url, "timeout": 2}}, "lease": 5,
                           "backoff_initial": 0.2, "backoff_max": 1, "poll_interval": 0.05}
    out.update(kw)
    return out


@pytest.fixture
def started() -> Iterator[list[Any]]:
    """The notification senders a test started, closed at the end whatever happened."""
    out: list[Any] = []
    yield out
    for n in out:
        n.close()


def start(running: Running, started: list[Any], url: str, es_url: str, worker_id: str,  # noqa: F811
          notify: dict[str, Any], batch_size: int = 50) -> Any:
    n = notifications(url, notify, worker_id)
    started.append(n)
    worker = make_worker(url, es_url, worker_id, batch_size=batch_size, proc=detecting_pipeline(url),
                         notifier=n.notifier)
    n.start()
    running.start(worker)
    return n


def alert_creates(es: ESDouble, alert_id: str) -> int:
    """How many bulk ``create`` actions named the alert (created, or answered 409)."""
    return sum((r.body or b"").count(f'"_id":"{alert_id}"'.encode()) for r in es.bulk_requests())


def alert_ids(receiver: HttpReceiver) -> list[str]:
    return [r.json()["blocks"][-1]["elements"][0]["text"].split("`")[1] for r in receiver.requests]


def notify_keys(client: redis.Redis) -> list[str]:
    return sorted(k.decode() for k in client.scan_iter(match=f"{P}*")
                  if not k.decode().startswith((f"{P}seen:", f"{P}rate:")))


def test_an_alert_indexed_by_the_worker_is_sent_once(redis_server: RedisServer, redis_client: redis.Redis,
                                                     es_double: ESDouble, running: Running,  # noqa: F811
                                                     receiver: HttpReceiver, started: list[Any]) -> None:
    url = redis_url(redis_server.port)
    start(running, started, url, es_double.url, "w1", notify_settings(receiver.url))
    redis_client.rpush("filebeat", *filler(200), *file_events("bruteforce.log"), *filler(100, 50_000))
    wait_for(lambda: len(receiver.requests) >= 1 and not lists_empty_but_dead(redis_client), 30, "the alert sent")
    wait_for(lambda: not notify_keys(redis_client), 10, "recorded as sent")
    running.stop()
    assert alert_ids(receiver) == [ALERT_ID]
    assert es_double.get("audit-alerts-2024.05.17", ALERT_ID) is not None
    payload = receiver.requests[0].json()
    assert payload["blocks"][0]["text"]["text"] == "Alert: brute_force (severity 73)"
    assert redis_client.exists(f"{P}seen:{ALERT_ID}")


def test_two_workers_raising_the_same_alert_send_one_message(redis_server: RedisServer, redis_client: redis.Redis,
                                                             es_double: ESDouble, running: Running,  # noqa: F811
                                                             receiver: HttpReceiver, started: list[Any]) -> None:
    url = redis_url(redis_server.port)
    events = file_events("bruteforce.log")
    start(running, started, url, es_double.url, "w1", notify_settings(receiver.url))
    redis_client.rpush("filebeat", *events)
    wait_for(lambda: len(receiver.requests) == 1 and not notify_keys(redis_client), 30, "w1's alert sent")
    running.stop()  # w1 is done; w2 gets the same events again (Filebeat resending after a restart)
    start(running, started, url, es_double.url, "w2", notify_settings(receiver.url))
    redis_client.rpush("filebeat", *events)
    wait_for(lambda: alert_creates(es_double, ALERT_ID) == 2 and not lists_empty_but_dead(redis_client), 30,
             "w2 raised the alert too")
    threading.Event().wait(1.0)  # time for a second message, were one queued
    running.stop()
    assert es_double.count_writes_by_id()[ALERT_ID] == 1  # created by w1, answered 409 to w2
    assert alert_ids(receiver) == [ALERT_ID]
    assert not notify_keys(redis_client)


def test_two_workers_at_once_with_the_same_alert_send_one_message(
        redis_server: RedisServer, redis_client: redis.Redis, es_double: ESDouble, running: Running,  # noqa: F811
        receiver: HttpReceiver, started: list[Any]) -> None:
    url = redis_url(redis_server.port)
    events = file_events("bruteforce.log")
    for w in ("w1", "w2"):
        start(running, started, url, es_double.url, w, notify_settings(receiver.url), batch_size=len(events))
    redis_client.rpush("filebeat", *events, *events)  # one copy each, most likely at the same moment
    wait_for(lambda: alert_creates(es_double, ALERT_ID) == 2 and not lists_empty_but_dead(redis_client), 30,
             "both copies processed")
    wait_for(lambda: len(receiver.requests) >= 1 and not notify_keys(redis_client), 10, "the alert sent")
    threading.Event().wait(1.0)
    running.stop()
    assert alert_ids(receiver) == [ALERT_ID]


def test_a_notification_outage_never_holds_ingestion(redis_server: RedisServer, redis_client: redis.Redis,
                                                     es_double: ESDouble, running: Running,  # noqa: F811
                                                     receiver: HttpReceiver, started: list[Any]) -> None:
    url = redis_url(redis_server.port)
    receiver.hold.clear()  # the receiver takes requests and answers none (a hung Slack)
    start(running, started, url, es_double.url, "w1", notify_settings(receiver.url, lease=20,
                                                                 outputs={"ops": {"type": "slack", "url": receiver.url,
                                                                                  "timeout": 10}}))
    raws = filler(600) + file_events("bruteforce.log", start=10_000) + filler(600, start=20_000)
    redis_client.rpush("filebeat", *raws)
    wait_for(lambda: not lists_empty_but_dead(redis_client) and len(es_double.docs()) >= 1200, 60, "all indexed")
    assert len(receiver.requests) == 1  # the message is stuck in the receiver ...
    assert receiver.hold.is_set() is False  # ... which has answered nothing while every event was indexed
    receiver.hold.set()
    wait_for(lambda: not notify_keys(redis_client), 10, "sent once the receiver answers")
    running.stop()
    assert alert_ids(receiver) == [ALERT_ID]


def test_notifier_takes_indexed_alerts_by_rule_and_severity(redis_client: redis.Redis) -> None:
    cfg = NotifyConfig.model_validate({"outputs": {
        "all": {"type": "webhook", "url": "http://127.0.0.1:1/"},
        "severe": {"type": "webhook", "url": "http://127.0.0.1:1/", "min_severity": 73},
        "bf": {"type": "slack", "url": "http://127.0.0.1:1/", "rules": "brute_force"},
        "off": {"type": "slack", "url": "http://127.0.0.1:1/", "enabled": False}}})
    notifier = Notifier(NotifyQueue(redis_client), cfg)

    def action(i: int, rule: str, severity: Any) -> IndexAction:
        return IndexAction("audit-alerts-2024.05.17", f"{rule}-{i}", {"type": "alert", "rule": {"name": rule},
                                                                       "event": {"severity": severity}})

    event = IndexAction("audit-2024.05.17", "e1", {"type": "auth", "event": {"severity": 99}})
    bf, nc, odd, refused = (action(1, "brute_force", 73), action(2, "new_country", 47),
                            action(3, "new_country", "high"), action(4, "brute_force", 73))
    pending = notifier.pending([event, bf, nc, odd, refused], [Rejected(refused, 400, "x", "y")])
    assert [(a.id, outputs) for a, outputs in pending] == [
        ("brute_force-1", ["all", "severe", "bf"]), ("new_country-2", ["all"]), ("new_country-3", ["all"])]


def test_a_long_trigger_list_is_cut_in_the_queued_copy(redis_client: redis.Redis) -> None:
    cfg = NotifyConfig.model_validate({"outputs": {"ops": {"type": "webhook", "url": "http://127.0.0.1:1/"}}})
    doc = {"type": "alert", "rule": {"name": "brute_force"}, "alert": {"count": 5000,
                                                                      "trigger_ids": [f"e{i}" for i in range(5000)]}}
    [(alert, _)] = Notifier(NotifyQueue(redis_client), cfg).pending([IndexAction("i", "brute_force-1", doc)])
    assert alert.doc["alert"]["trigger_ids"] == [f"e{i}" for i in range(100)]
    assert alert.doc["alert"]["trigger_ids_total"] == 5000 and alert.doc["alert"]["count"] == 5000
    assert len(doc["alert"]["trigger_ids"]) == 5000  # the indexed document is left whole
    assert len(alert.encode()) < 2000
