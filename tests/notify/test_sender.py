"""The sender against a real HTTP receiver and a real Redis: sent once, retried from Redis, dead-lettered,
rate-limited with a summary, shared by competing senders, secrets kept out of logs."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
import redis

from ingest.deadletter import DeadLetterStore
from ingest.metrics import Metrics
from ingest.notify.config import NotifyConfig
from ingest.notify.message import Alert, Links
from ingest.notify.metrics import NotifyMetrics
from ingest.notify.outputs import build_channel
from ingest.notify.queue import NotifyQueue
from ingest.notify.sender import NotificationSender, OutputSender
from tests.notify.conftest import sample_alerts
from tests.notify.receivers import HttpReceiver, down_url
from tests.test_worker import wait_for

P = "audit-ingest:notify:"
TOKEN = "T0KEN-in-the-url-4242"


def config(url: str, kind: str = "slack", **kw: Any) -> NotifyConfig:
    output: dict[str, Any] = {"type": kind, "url": url, "timeout": 0.5, "rate_limit": 0}
    output.update(kw.pop("output", {}))
    base: dict[str, Any] = {"outputs": {"ops": output}, "lease": 2, "backoff_initial": 0.2, "backoff_max": 1,
                            "max_attempts": 3, "poll_interval": 0.05}
    base.update(kw)
    return NotifyConfig.model_validate(base)


def make_sender(client: redis.Redis, cfg: NotifyConfig, metrics: NotifyMetrics | None = None,
                stop: threading.Event | None = None) -> OutputSender:
    queue = NotifyQueue(client, P, dead_key="filebeat:dead", worker="w1")
    channel = build_channel("ops", cfg.outputs["ops"], Links.build("https://kibana.example.org"))
    return OutputSender(channel, cfg.outputs["ops"], queue, cfg, metrics, stop or threading.Event())


def alert(n: int = 0) -> Alert:
    base = sample_alerts()[0]
    return Alert(f"brute_force-{n:024x}", base.index, dict(base.doc))


def enqueue(client: redis.Redis, alerts: list[Alert]) -> None:
    NotifyQueue(client, P, dead_key="filebeat:dead").enqueue([(a, ["ops"]) for a in alerts])


def dead(client: redis.Redis) -> list[dict[str, Any]]:
    return DeadLetterStore(client, "filebeat:dead").list(1000)


def left(client: redis.Redis) -> list[str]:
    return sorted(k.decode() for k in client.scan_iter(match=f"{P}*") if not k.startswith(f"{P}seen:".encode())
                  and not k.startswith(f"{P}rate:".encode()))


def test_one_alert_one_message_then_nothing_left(redis_client: redis.Redis, receiver: HttpReceiver) -> None:
    metrics = NotifyMetrics(Metrics().registry)
    s = make_sender(redis_client, config(receiver.url), metrics)
    enqueue(redis_client, [alert()])
    assert s.step() is True
    [request] = receiver.requests
    assert request.json()["blocks"][0]["text"]["text"] == "Alert: brute_force (severity 73)"
    assert s.step() is False
    assert left(redis_client) == [] and dead(redis_client) == []
    assert metrics.sent.labels("ops", "sent")._value.get() == 1


def test_failures_back_off_from_redis_and_continue_in_another_sender(redis_client: redis.Redis,
                                                                     receiver: HttpReceiver) -> None:
    cfg = config(receiver.url, backoff_initial=0.3, max_attempts=4)
    receiver.answer(500, b"boom", times=3)
    a = alert()
    enqueue(redis_client, [a])
    s = make_sender(redis_client, cfg)
    s.step()
    job = redis_client.hgetall(f"{P}job:ops:{a.id}")
    assert job[b"tries"] == b"1" and job[b"error"].startswith(b"http_500: HTTP 500")
    assert s.step() is False  # waiting 0.3 s, as Redis says
    time.sleep(0.35)
    s.step()  # second failure: the wait doubles
    due = redis_client.zscore(f"{P}queue:ops", a.id)
    now_s, now_us = redis_client.time()
    assert due is not None and 500 < due - (now_s * 1000 + now_us // 1000) <= 600
    # a new process (no memory of the failures) goes on from what Redis holds
    other = make_sender(redis_client, cfg)
    assert other.step() is False
    time.sleep(0.65)
    other.step()  # third failure, try 3 of 4
    assert redis_client.hget(f"{P}job:ops:{a.id}", "tries") == b"3"
    time.sleep(1.25)
    assert other.step() is True  # fourth try: 200
    assert len(receiver.requests) == 4 and left(redis_client) == [] and dead(redis_client) == []


def test_after_max_attempts_the_alert_is_dead_lettered_with_the_reason(redis_client: redis.Redis,
                                                                       receiver: HttpReceiver) -> None:
    receiver.answer(503, b"maintenance", times=10)
    a = alert()
    enqueue(redis_client, [a])
    s = make_sender(redis_client, config(receiver.url, backoff_initial=0.1, backoff_max=0.1))
    wait_for(lambda: (s.step(), bool(dead(redis_client)))[1], 10, "dead letter")
    [entry] = dead(redis_client)
    assert entry["stage"] == "notify" and entry["error_code"] == "notify_http_503"
    assert entry["reason"] == ("slack output ops: HTTP 503 Service Unavailable: maintenance (after 3 tries)")
    assert entry["output"] == "ops" and entry["alert_id"] == a.id and Alert.decode(entry["raw"]) == a
    assert len(receiver.requests) == 3 and left(redis_client) == []


def test_a_permanent_refusal_is_dead_lettered_at_once(redis_client: redis.Redis, receiver: HttpReceiver) -> None:
    receiver.answer(403, b"invalid_token")
    enqueue(redis_client, [alert()])
    make_sender(redis_client, config(receiver.url)).step()
    [entry] = dead(redis_client)
    assert entry["error_code"] == "notify_http_403"
    assert entry["reason"] == "slack output ops: HTTP 403 Forbidden: invalid_token (permanent: not retried)"
    assert len(receiver.requests) == 1


def test_receiver_down_retried_then_dead_lettered(redis_client: redis.Redis) -> None:
    enqueue(redis_client, [alert()])
    s = make_sender(redis_client, config(down_url(), backoff_initial=0.05, backoff_max=0.05))
    wait_for(lambda: (s.step(), bool(dead(redis_client)))[1], 10, "dead letter")
    [entry] = dead(redis_client)
    assert entry["error_code"] == "notify_connection" and "(after 3 tries)" in entry["reason"]


def test_slow_receiver_times_out_and_is_retried(redis_client: redis.Redis, receiver: HttpReceiver) -> None:
    receiver.delay = 1.5
    a = alert()
    enqueue(redis_client, [a])
    s = make_sender(redis_client, config(receiver.url, output={"timeout": 0.3}, lease=1))
    started = time.monotonic()
    s.step()
    assert time.monotonic() - started < 1.2
    assert redis_client.hget(f"{P}job:ops:{a.id}", "error").startswith(b"timeout: no answer within 0.3 s")


def test_rate_limit_sends_at_most_n_then_one_summary(redis_client: redis.Redis, receiver: HttpReceiver) -> None:
    cfg = config(receiver.url, output={"rate_limit": 3}, rate_window=1)
    alerts = [alert(i) for i in range(10)]
    enqueue(redis_client, alerts)
    s = make_sender(redis_client, cfg)
    now_s, now_us = redis_client.time()
    time.sleep(1 - now_us / 1e6 + 0.02)  # start at the beginning of a window
    t = threading.Thread(target=s.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: len(receiver.requests) >= 4, 10, "three alerts and a summary")
        time.sleep(0.3)
    finally:
        s.stop.set()
        t.join(5)
    assert len(receiver.requests) == 4
    single = [r.json() for r in receiver.requests[:3]]
    assert all(p["blocks"][0]["text"]["text"] == "Alert: brute_force (severity 73)" for p in single)
    summary = receiver.requests[3].json()
    assert summary["blocks"][0]["text"]["text"] == "7 more alerts (rate limit)"
    assert summary["text"].startswith("[audit] 7 more alerts (brute_force ×7): rate limit of 3 messages per 1 s")
    assert "<https://kibana.example.org/app/discover#/view/audit-search-alerts?_g=(time:" in str(summary["blocks"])
    assert left(redis_client) == [] and dead(redis_client) == []


def test_summary_failing_for_good_dead_letters_each_alert(redis_client: redis.Redis, receiver: HttpReceiver) -> None:
    cfg = config(receiver.url, output={"rate_limit": 1}, rate_window=0.5)
    enqueue(redis_client, [alert(i) for i in range(3)])
    s = make_sender(redis_client, cfg)
    assert s.step() and s.step() and s.step()  # one sent, two held
    assert len(receiver.requests) == 1 and redis_client.zcard(f"{P}held:ops") == 2
    receiver.answer(404, b"channel_not_found")
    wait_for(lambda: (s.step(), len(receiver.requests) == 2)[1], 5, "the summary sent")
    entries = dead(redis_client)
    assert sorted(e["alert_id"] for e in entries) == [alert(1).id, alert(2).id]
    assert entries[0]["reason"] == ("slack output ops: rate-limit summary: HTTP 404 Not Found: channel_not_found "
                                    "(permanent: not retried)")
    assert left(redis_client) == []


def test_two_senders_send_each_alert_once(redis_client: redis.Redis, redis_server: Any,
                                          receiver: HttpReceiver) -> None:
    alerts = [alert(i) for i in range(30)]
    enqueue(redis_client, alerts)
    receiver.delay = 0.01
    cfg = config(receiver.url)
    stop = threading.Event()
    clients = [redis_server.client(db=1) for _ in range(2)]
    senders = [make_sender(c, cfg, stop=stop) for c in clients]
    threads = [threading.Thread(target=s.run, daemon=True) for s in senders]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(receiver.requests) >= 30 and not left(redis_client), 20, "all sent")
        time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        for c in clients:
            c.close()
    ids = [r.json()["blocks"][-1]["elements"][0]["text"].split("`")[1] for r in receiver.requests]
    assert sorted(ids) == sorted(a.id for a in alerts)  # each exactly once


def test_stop_finishes_the_message_being_sent(redis_client: redis.Redis, receiver: HttpReceiver) -> None:
    receiver.delay = 0.3
    enqueue(redis_client, [alert()])
    cfg = config(receiver.url, output={"timeout": 2}, lease=5)
    queue = NotifyQueue(redis_client, P, dead_key="filebeat:dead")
    sender = NotificationSender(queue, cfg, {"ops": build_channel("ops", cfg.outputs["ops"], Links(None))}).start()
    receiver.wait_for(1)
    sender.stop()
    assert left(redis_client) == []  # recorded as sent before the thread ended


def test_secrets_stay_out_of_logs_and_dead_letters(redis_client: redis.Redis, receiver: HttpReceiver,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.answer(500, f"bad {TOKEN}".encode(), times=2)
    receiver.answer(401, f"token {TOKEN} and Bearer hdr-secret-777 refused".encode())
    cfg = config(f"{receiver.url}/hook/{TOKEN}", kind="webhook", backoff_initial=0.05, backoff_max=0.05,
                 max_attempts=5, output={"headers": {"Authorization": "Bearer hdr-secret-777"}})
    enqueue(redis_client, [alert(1)])
    s = make_sender(redis_client, cfg)
    wait_for(lambda: (s.step(), bool(dead(redis_client)))[1], 10, "dead letter")
    assert s.output.target() == f"http://127.0.0.1:{receiver.port}/…"  # what the start-up line names
    text = caplog.text + str(dead(redis_client)) + str(redis_client.hgetall(f"{P}job:ops:{alert(1).id}"))
    assert "HTTP 401 Unauthorized: token *** and *** refused" in str(dead(redis_client))
    assert TOKEN not in text and "hdr-secret-777" not in text
    assert "webhook output ops" in caplog.text


def test_a_redis_blip_after_sending_costs_no_duplicate(redis_client: redis.Redis, receiver: HttpReceiver,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    enqueue(redis_client, [alert()])
    s = make_sender(redis_client, config(receiver.url))
    real = s.queue.done
    calls: list[int] = []

    def flaky(output: str, alert_id: str) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise redis.ConnectionError("connection reset")
        real(output, alert_id)

    monkeypatch.setattr(s.queue, "done", flaky)
    assert s.step()
    assert len(calls) == 3 and len(receiver.requests) == 1 and left(redis_client) == []


def test_notifications_waiting_for_an_output_no_longer_configured_are_reported(
        redis_client: redis.Redis, receiver: HttpReceiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    NotifyQueue(redis_client, P).enqueue([(alert(), ["old-pager"])])
    cfg = config(receiver.url)
    queue = NotifyQueue(redis_client, P, dead_key="filebeat:dead")
    sender = NotificationSender(queue, cfg, {"ops": build_channel("ops", cfg.outputs["ops"], Links(None))}).start()
    wait_for(lambda: "old-pager" in caplog.text, 5, "the warning")
    sender.stop()
    assert "1 waiting in audit-ingest:notify:queue:old-pager for output 'old-pager'" in caplog.text
    assert redis_client.zcard(f"{P}queue:old-pager") == 1  # kept for when it is configured again
