"""Notifications from the composed settings: the worker's hook, the sender, ``notify-test``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from ingest.document import format_timestamp
from ingest.notify.hook import Notifier
from ingest.notify.message import Facts, Links, sample_alert
from ingest.notify.metrics import NotifyMetrics
from ingest.notify.outputs import Channel, SendError, build_channel
from ingest.notify.queue import NotifyQueue
from ingest.notify.sender import NotificationSender


def links_for(settings: Any) -> Links:
    """Kibana links from ``notify.kibana_url`` (else ``kibana.url``) and ``kibana.space``."""
    return Links.build(settings.notify.kibana_url or settings.kibana.url, settings.kibana.space)


def build_channels(settings: Any, only: list[str] | None = None) -> dict[str, Channel]:
    links = links_for(settings)
    return {name: build_channel(name, output, links) for name, output in settings.notify.active().items()
            if not only or name in only}


def build_queue(settings: Any, client: redis.Redis, worker: str) -> NotifyQueue:
    rcfg, dcfg = settings.redis, settings.deadletter
    return NotifyQueue(client, settings.notify.key_prefix, dead_key=dcfg.key_for(rcfg.key), dead_max=dcfg.max_length,
                       worker=worker)


@dataclass
class Notifications:
    """What ``build_worker`` wires in: the hook for the ack and the sender threads."""

    notifier: Notifier
    sender: NotificationSender
    client: redis.Redis  # the sender's own connection

    def start(self) -> None:
        self.sender.start()

    def close(self) -> None:
        self.sender.stop()
        self.client.close()


def build_notifications(settings: Any, client: redis.Redis, registry: Any, worker: str) -> Notifications | None:
    """None when no output is configured (or none enabled): the worker then runs as without notify."""
    if not settings.notify.active():
        return None
    metrics = NotifyMetrics(registry) if registry is not None else None
    notifier = Notifier(build_queue(settings, client, worker), settings.notify, metrics)
    sender_client = settings.redis.client()
    sender = NotificationSender(build_queue(settings, sender_client, worker), settings.notify,
                                build_channels(settings), metrics)
    return Notifications(notifier, sender, sender_client)


@dataclass
class TestResult:
    output: str
    target: str
    ok: bool
    text: str
    seconds: float


def notify_test(settings: Any, only: list[str] | None = None) -> list[TestResult]:
    """Send a sample alert to each configured output now (no queue, no rate limit); what happened."""
    now = format_timestamp(datetime.now(UTC))
    alert = sample_alert(now, settings.detect.index_prefix)
    results = []
    outputs = settings.notify.active()
    for name, channel in build_channels(settings, only).items():
        started = time.monotonic()
        try:
            text, ok = channel.send(alert, Facts.of(alert, channel.links)), True
        except SendError as e:
            text, ok = f"{e.reason} [{e.code}, {'permanent' if e.permanent else 'would be retried'}]", False
        except Exception as e:  # noqa: BLE001 - a test command reports everything
            text, ok = channel.redact(f"{type(e).__name__}: {e}"), False
        results.append(TestResult(name, f"{channel.kind} {outputs[name].target()}", ok, text,
                                  time.monotonic() - started))
    return results
