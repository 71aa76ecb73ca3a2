"""How the worker rides out Redis trouble: capped exponential backoff between retries, one
warning when Redis goes away and one info line when it is back (no line per attempt), and the
calls that must happen (ack, give back) retried until they succeed or a forced stop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ingest.errors import SourceUnavailable
from ingest.metrics import Metrics
from ingest.sources.redis_list import RedisAuthFailed

log = logging.getLogger("ingest.worker")


class RedisBackoff:
    def __init__(self, metrics: Metrics, initial: float, longest: float, stopping: threading.Event,
                 sink_stop: threading.Event) -> None:
        self.metrics = metrics
        self.initial = initial
        self.longest = longest
        self.stopping = stopping
        self.sink_stop = sink_stop
        self.wait_s = initial
        self._down_since: float | None = None

    def next_wait(self) -> float:
        """The wait before the next retry; doubles the one after it (up to ``longest``)."""
        wait = self.wait_s
        self.wait_s = min(self.wait_s * 2, self.longest)
        return wait

    def failed(self, e: Exception) -> None:
        """Redis failed (``e``): count it, log it once per outage, wait the backoff."""
        self.metrics.retries.labels("redis").inc()
        auth = isinstance(e, RedisAuthFailed)
        if self._down_since is None or (auth and self.metrics.failing is None):
            self._down_since = self._down_since or time.monotonic()
            if auth:  # not "down": a setting to fix; /healthz fails now, not after stale_after
                log.error("%s; retrying with backoff", e)
            else:
                log.warning("%s; retrying with backoff", e)
        self.metrics.failing = "Redis refused authentication" if auth else None
        self.metrics.state = "waiting for redis"
        # while stopping, keep backing off (an ack is still owed) until the forced stop
        (self.sink_stop if self.stopping.is_set() else self.stopping).wait(self.next_wait())

    def ok(self) -> None:
        """A Redis call worked: the backoff starts over, an outage is reported over."""
        self.metrics.failing = None
        if self._down_since is not None:
            log.info("Redis is back after %.1fs", time.monotonic() - self._down_since)
            self._down_since = None
        self.wait_s = self.initial

    def retry(self, what: str, fn: Callable[[], Any], holding: str) -> None:
        """``fn`` until it succeeds, or until a forced stop: the batch then stays in the processing
        list ``holding`` and is recovered later."""
        while True:
            try:
                fn()
                self.ok()
                return
            except SourceUnavailable as e:
                if self.sink_stop.is_set():
                    log.warning("cannot %s (%s) and stopping: batch stays in %s", what, e, holding)
                    return
                self.failed(e)
