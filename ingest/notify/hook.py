"""Where notifications meet the worker: the alerts of an acknowledged batch, queued inside its ack.

:meth:`Notifier.pending` picks the alert documents of a batch that Elasticsearch took (created, or
409 already there: an alert indexed by an earlier try whose notification may not have been queued)
and the outputs each goes to (rules, minimum severity). :meth:`Notifier.queue_in` adds the queueing
script to the transaction that carries the ack script, *before* it: guarded by the batch's
processing list, so the alerts are queued exactly when the batch is acknowledged, by the worker
that acknowledges it. A batch recovered by another worker is queued by that one; a batch whose
ack reply was lost and is acked again finds its alerts already seen (``{p}seen:<id>``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ingest.deadletter import now_iso
from ingest.model import IndexAction, Rejected
from ingest.notify.config import NotifyConfig
from ingest.notify.message import Alert
from ingest.notify.metrics import NotifyMetrics
from ingest.notify.queue import NotifyQueue

log = logging.getLogger(__name__)

Pending = list[tuple[Alert, list[str]]]

#: ``alert.trigger_ids`` kept in a queued notification (a brute-force storm lists thousands; the
#: indexed alert keeps them all): bounds what one message holds in Redis
TRIGGER_IDS_KEPT = 100


def _trimmed(doc: dict[str, Any]) -> dict[str, Any]:
    """The alert document as queued: ``alert.trigger_ids`` cut to its first TRIGGER_IDS_KEPT
    (with ``alert.trigger_ids_total``), else the document itself."""
    alert = doc.get("alert")
    if not isinstance(alert, dict):
        return doc
    ids = alert.get("trigger_ids")
    if not isinstance(ids, list) or len(ids) <= TRIGGER_IDS_KEPT:
        return doc
    return {**doc, "alert": {**alert, "trigger_ids": ids[:TRIGGER_IDS_KEPT], "trigger_ids_total": len(ids)}}


class Notifier:
    def __init__(self, queue: NotifyQueue, config: NotifyConfig, metrics: NotifyMetrics | None = None) -> None:
        self.queue = queue
        self.config = config
        self.outputs = config.active()
        self.metrics = metrics
        self._seen_ttl_ms = int(config.dedup_ttl.total_seconds() * 1000)

    def pending(self, actions: Sequence[IndexAction], rejected: Sequence[Rejected] = ()) -> Pending:
        """The alerts among ``actions`` (less the ``rejected``) with the outputs each goes to."""
        out: Pending = []
        refused: set[int] | None = None
        for action in actions:
            doc = action.doc
            if doc.get("type") != "alert":
                continue
            if rejected:
                if refused is None:
                    refused = {id(r.action) for r in rejected}
                if id(action) in refused:
                    continue
            rule = doc.get("rule")
            event = doc.get("event")
            name = rule.get("name") if isinstance(rule, dict) else None
            severity = event.get("severity") if isinstance(event, dict) else None
            outputs = [n for n, o in self.outputs.items() if o.takes(name, severity)]
            if outputs:
                out.append((Alert(action.id, action.index, _trimmed(doc)), outputs))
        return out

    def queue_in(self, pipe: Any, guard: str | None, pending: Pending) -> None:
        """Add the queueing of ``pending`` to the transaction ``pipe`` (before the ack script)."""
        self.queue.enqueue(pending, guard=guard, seen_ttl_ms=self._seen_ttl_ms, max_queued=self.config.max_queued,
                           time=now_iso(), client=pipe)

    def record(self, reply: Any, pending: Pending) -> None:
        """What the queueing did, from its reply in the transaction (counters; errors logged loudly:
        the batch is acknowledged all the same, so ingestion never waits for notifications)."""
        if isinstance(reply, Exception):
            log.error("could not queue the notifications of %d alerts (%s); they are indexed but no message is "
                      "sent: %s", len(pending), reply, ", ".join(a.id for a, _ in pending[:20]))
            if self.metrics is not None:
                self.metrics.queued.labels("error").inc(sum(len(o) for _, o in pending))
            return
        done = self.queue.parse_enqueued(reply)
        if self.metrics is not None and not done.skipped:
            self.metrics.queued.labels("queued").inc(done.queued)
            self.metrics.queued.labels("already_queued").inc(done.seen)
            self.metrics.queued.labels("queue_full").inc(done.full)
        if done.full:
            log.warning("notification queue full: %d notifications dead-lettered to %r (notify.max_queued %d)",
                        done.full, self.queue.dead_key, self.config.max_queued)
