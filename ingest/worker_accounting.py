"""What the worker counts and logs about the batches it acknowledged: the metrics (input events
by outcome, documents by type, rejections, dead letters) and the periodic progress line.

Counted per batch, one increment per counter and label, not per event (a batch is 500 events).
"""

from __future__ import annotations

import logging
import time

from ingest.logsafe import label
from ingest.metrics import Metrics
from ingest.model import BatchResult, DeadLetter, Rejected

log = logging.getLogger("ingest.worker")


class BatchAccounting:
    def __init__(self, metrics: Metrics, log_interval: float, deadletter_key: str) -> None:
        self.metrics = metrics
        self.log_interval = log_interval
        self.deadletter_key = deadletter_key
        self._last_info = 0.0
        self._since_info = {"batches": 0, "in": 0, "indexed": 0, "dead": 0}

    def sink_stat(self, name: str, n: int) -> None:
        """The sink's counters (retries, failed requests, 409s) into the metrics."""
        m = self.metrics
        if name == "retries":
            m.retries.labels("elasticsearch").inc(n)
        elif name == "request_failures":
            m.sink_request_failures.inc(n)
        elif name == "items_conflict":
            m.events_conflict.inc(n)
        elif name == "items_retried":
            m.events_retried.inc(n)

    def acked(self, n_raws: int, result: BatchResult, rejected: list[Rejected], dead: list[DeadLetter],
              started: float) -> None:
        """A batch of ``n_raws`` events was acknowledged: its counters, a warning if it had dead
        letters, and the progress line when it is due."""
        self.count(n_raws, result, rejected, dead)
        if dead:
            codes: dict[str, int] = {}
            for d in dead:
                codes[d.error_code] = codes.get(d.error_code, 0) + 1
            log.warning("dead-lettered %d of %d events to %r: %s (first: %s)", len(dead), n_raws,
                        self.deadletter_key, ", ".join(f"{c}={n}" for c, n in sorted(codes.items())),
                        dead[0].reason)
        self.metrics.batches.labels("acked").inc()
        self.metrics.batch_seconds.observe(time.monotonic() - started)
        indexed = len(result.actions) - len(rejected)
        s = self._since_info
        s["batches"] += 1
        s["in"] += n_raws
        s["indexed"] += indexed
        s["dead"] += len(dead)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("batch: %d events in, %d indexed, %d dead-lettered", n_raws, indexed, len(dead))
        self.progress()

    def count(self, n_raws: int, result: BatchResult, rejected: list[Rejected], dead: list[DeadLetter]) -> None:
        """Each input event once, by outcome; each accepted document once, by type (sessions and
        alerts are documents the pipeline made, not input events)."""
        m = self.metrics
        derived = {"session": 0, "alert": 0}
        for action in result.actions:
            if action.raw is None:  # made by the pipeline: a session or an alert
                kind = action.doc.get("type")
                derived[kind if kind == "alert" else "session"] += 1
        events = len(result.actions) - derived["session"] - derived["alert"]
        dead_events = len(result.dead)
        if rejected:
            refused: dict[tuple[str, str], int] = {}
            for r in rejected:
                if r.action.raw is not None:
                    kind = "event"
                    events -= 1
                    dead_events += 1
                else:
                    kind = "alert" if r.action.doc.get("type") == "alert" else "session"
                    derived[kind] -= 1
                key = (str(r.status), kind)
                refused[key] = refused.get(key, 0) + 1
            for (status, kind), n in refused.items():
                m.documents_rejected.labels(label(status), kind).inc(n)
        m.events.labels("indexed").inc(n_raws - dead_events)
        if dead_events:
            m.events.labels("dead_lettered").inc(dead_events)
        m.documents.labels("event").inc(events)
        for kind, n in derived.items():
            if n:
                m.documents.labels(kind).inc(n)
        if dead:
            by: dict[tuple[str, str], int] = {}
            for d in dead:
                by[(d.stage, d.error_code)] = by.get((d.stage, d.error_code), 0) + 1
            for (stage, code), n in by.items():
                m.dead_lettered.labels(label(stage), label(code)).inc(n)

    def progress(self, force: bool = False) -> None:
        """At most one 'indexed N events' info line per ``log_interval`` (``force``: now, if any)."""
        now = time.monotonic()
        s = self._since_info
        if s["batches"] and (force or now - self._last_info >= self.log_interval):
            log.info("indexed %d events in %d batches (%d in, %d dead-lettered) since last report",
                     s["indexed"], s["batches"], s["in"], s["dead"])
            self._since_info = {"batches": 0, "in": 0, "indexed": 0, "dead": 0}
            self._last_info = now
