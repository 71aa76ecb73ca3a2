"""Prometheus metrics and a health endpoint for one worker.

Every worker has its own :class:`CollectorRegistry` (tests run several in one process). The HTTP
server answers ``/metrics`` (Prometheus text format) and ``/healthz``: 200 while the worker loop
completed an iteration within ``stale_after``, 503 otherwise (stuck, or waiting for
Elasticsearch or Redis that long), and 503 at once while Redis refuses the worker's credentials;
with a one-line reason.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

PREFIX = "audit_ingest"
#: the ``type`` label of ``audit_ingest_documents_total``: a document's ``type`` field, else ``event``
DOCUMENT_TYPES = ("event", "session", "alert")


class MetricsConfig(BaseModel):
    """The /metrics and /healthz endpoint."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Serve /metrics and /healthz.")
    bind: str = Field("0.0.0.0", description="Address to listen on.")
    port: int = Field(9108, ge=0, le=65535, description="Port to listen on (0: any free port).")
    stale_after: timedelta = Field(timedelta(seconds=60),
                                   description="/healthz answers 503 when the worker loop has not completed an "
                                               "iteration for this long.")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, stale_after: float = 60.0) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # Counted when a batch is acknowledged, once per batch: a batch retried after a Redis error
        # or given back and taken again is counted once, when it is done.
        self.events = Counter(f"{PREFIX}_events",
                              "Input events (Redis entries) done, by outcome: indexed (its document was "
                              "created, or 409 already there) or dead_lettered.", ["outcome"], registry=r)
        self.documents = Counter(f"{PREFIX}_documents",
                                 "Documents Elasticsearch accepted (created, or 409 already there), by type: "
                                 "event (one per indexed input event), session, alert.", ["type"], registry=r)
        self.documents_rejected = Counter(f"{PREFIX}_documents_rejected",
                                          "Documents Elasticsearch refused for good (400/404), dead-lettered; "
                                          "by status and type.", ["status", "type"], registry=r)
        for outcome in ("indexed", "dead_lettered"):
            self.events.labels(outcome)
        for kind in DOCUMENT_TYPES:
            self.documents.labels(kind)
        self.dead_lettered = Counter(f"{PREFIX}_dead_lettered", "Events written to the dead-letter list.",
                                     ["stage", "code"], registry=r)
        self.dead_trimmed = Counter(f"{PREFIX}_dead_letters_trimmed",
                                    "Dead letters dropped because the dead list reached max_length.", registry=r)
        self.events_conflict = Counter(f"{PREFIX}_events_conflict",
                                       "Documents Elasticsearch already had (409 on a redelivered event).",
                                       registry=r)
        self.events_retried = Counter(f"{PREFIX}_events_retried",
                                      "Bulk items resent after an item-level 429/5xx.", registry=r)
        self.sink_request_failures = Counter(f"{PREFIX}_sink_request_failures",
                                             "Whole bulk requests that failed (status, timeout, connection).",
                                             registry=r)
        self.retries = Counter(f"{PREFIX}_retries", "Retries after a failure.", ["component"], registry=r)
        self.batches = Counter(f"{PREFIX}_batches", "Batches handled.", ["outcome"], registry=r)
        self.recovered = Counter(f"{PREFIX}_events_recovered",
                                 "Events given back to the main list from dead workers' processing lists.",
                                 registry=r)
        self.pipeline_errors = Counter(f"{PREFIX}_pipeline_errors",
                                       "Batches on which the pipeline raised (then split to isolate the event).",
                                       registry=r)
        self.batch_seconds = Histogram(f"{PREFIX}_batch_seconds", "Time from take to ack of one batch.",
                                       buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
                                       registry=r)
        self.list_length = Gauge(f"{PREFIX}_redis_list_length", "Length of the Redis lists.", ["list"], registry=r)
        self.last_loop = Gauge(f"{PREFIX}_last_loop_timestamp_seconds",
                               "Unix time the worker loop last completed an iteration.", registry=r)
        self.stale_after = stale_after
        self._beat = time.monotonic()
        self.state = "starting"
        #: set while the worker cannot work for a reason that waiting will not cure by itself
        #: (Redis refused authentication): /healthz fails at once, saying so
        self.failing: str | None = None

    def loop_ran(self, state: str = "running") -> None:
        self._beat = time.monotonic()
        self.state = state
        self.last_loop.set_to_current_time()

    def health(self) -> tuple[bool, str]:
        age = time.monotonic() - self._beat
        failing = self.failing
        if failing is not None:
            return False, f"failing: {failing} ({self.state}, last loop {age:.1f}s ago)"
        if age <= self.stale_after:
            return True, f"ok: {self.state}, last loop {age:.1f}s ago"
        return False, f"stale: {self.state}, last loop {age:.1f}s ago (limit {self.stale_after:.0f}s)"

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """``/metrics`` and ``/healthz`` on a background thread, of one worker's :class:`Metrics` or of
    anything that renders and answers health the same way (the supervisor's aggregate)."""

    def __init__(self, metrics: Served, bind: str = "0.0.0.0", port: int = 9108) -> None:
        self.metrics = metrics
        handler = _handler(metrics)
        self.httpd = ThreadingHTTPServer((bind, port), handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics%s on http://%s:%d/metrics", getattr(self.metrics, "scope", ""),
                 self.httpd.server_address[0], self.port)
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Served(Protocol):
    def render(self) -> bytes: ...
    def health(self) -> tuple[bool, str]: ...


def _handler(metrics: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/health"):
                ok, text = metrics.health()
                self._send(200 if ok else 503, (text + "\n").encode(), "text/plain; charset=utf-8")
            else:
                self._send(404, b"not found\n", "text/plain; charset=utf-8")

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    return Handler
