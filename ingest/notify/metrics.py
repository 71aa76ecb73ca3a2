"""The notification counters, on the worker's own Prometheus registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ingest.metrics import PREFIX


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.queued = Counter(f"{PREFIX}_notifications_queued", "What queueing the alerts of acknowledged batches "
                              "did: queued (one per alert and output), already_queued (alerts raised before), "
                              "queue_full (dead-lettered), error.", ["outcome"], registry=registry)
        self.sent = Counter(f"{PREFIX}_notifications", "Notifications by what became of them: sent, retried, held "
                            "(rate limit), summarized, dead_lettered.", ["output", "outcome"], registry=registry)
        self.send_seconds = Histogram(f"{PREFIX}_notification_send_seconds", "Time one notification took to send.",
                                      ["output"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=registry)
        self.waiting = Gauge(f"{PREFIX}_notifications_waiting", "Notifications waiting in Redis per output: queued "
                             "(or retrying), held (for a rate-limit summary).", ["output", "state"], registry=registry)
