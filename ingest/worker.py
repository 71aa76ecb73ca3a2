"""The worker loop: take a batch from Redis, process it, index it, dead-letter what failed, ack.

One batch at a time, on one thread (plus the source's heartbeat thread and the metrics server):

1. ``source.take`` moves up to ``batch_size`` events into this worker's processing list;
2. ``pipeline.process`` turns them into index actions and dead letters (an exception here splits
   the batch in halves until the one event that raises is found and dead-lettered, stage ``parse``);
3. ``sink.write_batch`` indexes the actions; it retries by itself until Elasticsearch took every
   item, so while it retries nothing more is taken from Redis (back-pressure: events wait in
   Redis, not in memory); it returns the permanent rejections (400/404), which become dead letters;
4. ``source.ack`` removes the batch and writes its dead letters in one Redis script.

Stopping (SIGTERM/SIGINT, or :meth:`Worker.stop`): no new batch is taken; the current one gets
``shutdown_timeout`` to finish, after which the sink's stop event is set, the sink raises
:class:`SinkUnavailable` and the batch is given back to the head of the main list.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from types import FrameType
from typing import Any, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field

from ingest.deadletter import DeadLetterStore
from ingest.errors import ConfigError, SinkUnavailable, SourceUnavailable
from ingest.metrics import Metrics
from ingest.model import BatchResult, DeadLetter, IndexAction, Rejected
from ingest.route import quote
from ingest.sources.redis_list import RedisListSource, default_worker_id, mask_url

log = logging.getLogger(__name__)


class WorkerConfig(BaseModel):
    """The worker process."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, description="Worker id, unique among the workers on one list "
                                             "(default <hostname>:<pid>).")
    shutdown_timeout: timedelta = Field(timedelta(seconds=8),
                                        description="On SIGTERM, how long the current batch may take to finish "
                                                    "before it is given back to Redis; keep it below the "
                                                    "orchestrator's grace period (docker stop: 10 s).")
    log_interval: timedelta = Field(timedelta(seconds=10),
                                    description="At most one 'indexed N events' info line per interval.")
    backoff_initial: timedelta = Field(timedelta(milliseconds=100),
                                       description="First wait before retrying Redis.")
    backoff_max: timedelta = Field(timedelta(seconds=10), description="Longest wait between Redis retries.")

    def worker_id(self) -> str:
        return self.id or default_worker_id()


class PipelineLike(Protocol):
    def process(self, raws: list[bytes]) -> BatchResult: ...


class SinkLike(Protocol):
    def write_batch(self, actions: list[IndexAction]) -> list[Rejected]: ...


class Worker:
    def __init__(self, source: RedisListSource, pipeline: PipelineLike, sink: SinkLike,
                 deadletters: DeadLetterStore, metrics: Metrics | None = None, config: WorkerConfig | None = None,
                 *, sink_stop: threading.Event | None = None) -> None:
        self.source = source
        self.pipeline = pipeline
        self.sink = sink
        self.deadletters = deadletters
        self.metrics = metrics or Metrics()
        self.config = config or WorkerConfig.model_validate({})
        #: set as soon as a stop is asked for: no new batch is taken
        self.stopping = threading.Event()
        #: the event the sink watches; set ``shutdown_timeout`` after ``stopping``
        self.sink_stop = sink_stop or threading.Event()
        self._timer: threading.Timer | None = None
        self._backoff = self.config.backoff_initial.total_seconds()
        self._redis_down_since: float | None = None
        self._last_recover = 0.0
        self._last_info = 0.0
        self._last_gauges = 0.0
        self._since_info = {"batches": 0, "in": 0, "indexed": 0, "dead": 0}
        self._recover_every = (source.config.recover_interval or source.config.heartbeat_ttl).total_seconds()
        self.source._on_lost_owner = self.stop_now
        stats = getattr(sink, "stats", None)
        if stats is not None and hasattr(stats, "listener"):
            stats.listener = self._sink_stat

    def _sink_stat(self, name: str, n: int) -> None:
        """The sink's counters (retries, failed requests, 409s) into the metrics."""
        if name == "retries":
            self.metrics.retries.labels("elasticsearch").inc(n)
        elif name == "request_failures":
            self.metrics.sink_request_failures.inc(n)
        elif name == "items_conflict":
            self.metrics.events_conflict.inc(n)
        elif name == "items_retried":
            self.metrics.events_retried.inc(n)

    # -- control ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Take nothing more; let the current batch finish within ``shutdown_timeout``."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        timeout = self.config.shutdown_timeout.total_seconds()
        log.info("stopping: finishing the current batch (up to %.0fs)", timeout)
        self._timer = threading.Timer(timeout, self.sink_stop.set)
        self._timer.daemon = True
        self._timer.start()

    def stop_now(self) -> None:
        self.stopping.set()
        self.sink_stop.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            if self.stopping.is_set():
                log.warning("second %s: giving the current batch back now", signal.Signals(signum).name)
                self.sink_stop.set()
            else:
                log.info("%s received", signal.Signals(signum).name)
                self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; 0 when it stopped cleanly (batch finished or given back)."""
        log.info("worker %s reading %s list %r", self.source.worker_id, mask_url(self.source.config.url),
                 self.source.main_key)
        self._start()
        try:
            while not self.stopping.is_set():
                self.run_once()
        finally:
            self._finish()
        return 0

    def _start(self) -> None:
        while not self.stopping.is_set():
            try:
                self.source.claim()
                self.source.start_heartbeat()
                recovered = self.source.recover() + self.source.recover_orphans()
                self.metrics.recovered.inc(recovered)
                self._last_recover = time.monotonic()
                self._redis_ok()
                return
            except SourceUnavailable as e:
                self._redis_failed(e)

    def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.source.in_flight:
            try:
                n = self.source.give_back()
                log.info("gave %d events back to %r", n, self.source.main_key)
            except SourceUnavailable as e:
                log.warning("could not give the batch back (%s); it stays in %s for recovery",
                            e, self.source.processing_key)
        try:
            self.source.release()
        except SourceUnavailable:
            self.source.stop_heartbeat()
        self._log_progress(force=True)
        log.info("worker %s stopped", self.source.worker_id)

    def run_once(self) -> None:
        """One iteration. Never raises: an unexpected error is logged and the iteration retried
        after a backoff (the batch, if one was taken, is still in the processing list and is
        taken again by the next ``take``)."""
        try:
            self._iteration()
        except (SinkUnavailable, ConfigError):
            raise
        except Exception as e:
            log.exception("unexpected error in the worker loop (%s); retrying", type(e).__name__)
            self.metrics.retries.labels("worker").inc()
            wait = self._backoff
            self._backoff = min(self._backoff * 2, self.config.backoff_max.total_seconds())
            self.stopping.wait(wait)

    def _iteration(self) -> None:
        self.metrics.loop_ran("taking")
        try:
            if time.monotonic() - self._last_recover >= self._recover_every:
                self._last_recover = time.monotonic()
                self.metrics.recovered.inc(self.source.recover())
            if time.monotonic() - self._last_gauges >= 1.0:
                self._last_gauges = time.monotonic()
                self._update_gauges()
            raws = self.source.take(stop=self.stopping)
            self._redis_ok()
        except SourceUnavailable as e:
            self._redis_failed(e)
            return
        if not raws:
            self.metrics.loop_ran("idle")
            return
        try:
            self.handle(raws)
        except SourceUnavailable as e:
            # Redis failed inside the pipeline (session store): the batch is still in the
            # processing list and the next take returns it, after a backoff
            self._redis_failed(e)
            return
        self.metrics.loop_ran("running")

    def handle(self, raws: list[bytes]) -> None:
        started = time.monotonic()
        self.metrics.events_in.inc(len(raws))
        result = self._process(raws)
        self.metrics.loop_ran("indexing")
        try:
            rejected = self._write(result.actions)
        except SinkUnavailable as e:
            log.warning("Elasticsearch did not take the batch before shutdown (%s); giving %d events back",
                        e, len(raws))
            self._give_back()
            self.metrics.batches.labels("given_back").inc()
            return
        dead = list(result.dead) + [self._rejected_letter(r) for r in rejected]
        indexed = len(result.actions) - len(rejected)
        self._ack(dead)
        self.metrics.events_indexed.inc(indexed)
        made = {"session": 0, "alert": 0}
        for action in result.actions:
            kind = action.doc.get("type")
            if kind in made:
                made[kind] += 1
        self.metrics.sessions.inc(made["session"])
        self.metrics.alerts.inc(made["alert"])
        for r in rejected:
            self.metrics.events_rejected.labels(str(r.status)).inc()
        for d in dead:
            self.metrics.dead_lettered.labels(d.stage, d.error_code).inc()
        if dead:
            codes: dict[str, int] = {}
            for d in dead:
                codes[d.error_code] = codes.get(d.error_code, 0) + 1
            log.warning("dead-lettered %d of %d events to %r: %s (first: %s)", len(dead), len(raws),
                        self.deadletters.key, ", ".join(f"{c}={n}" for c, n in sorted(codes.items())),
                        dead[0].reason)
        self.metrics.batches.labels("acked").inc()
        self.metrics.batch_seconds.observe(time.monotonic() - started)
        s = self._since_info
        s["batches"] += 1
        s["in"] += len(raws)
        s["indexed"] += indexed
        s["dead"] += len(dead)
        log.debug("batch: %d events in, %d indexed, %d dead-lettered", len(raws), indexed, len(dead))
        self._log_progress()

    # -- steps -----------------------------------------------------------------------------

    def _process(self, raws: list[bytes], depth: int = 0) -> BatchResult:
        """The pipeline on a batch; if it raises, halves until the events that raise are isolated
        (dead-lettered, stage ``parse``). One log line per batch that raised."""
        try:
            return self.pipeline.process(raws)
        except SourceUnavailable:
            raise  # Redis (session store) down: not the events' fault, retry the batch later
        except Exception as e:
            if depth == 0:
                self.metrics.pipeline_errors.inc()
                log.error("pipeline raised on a batch of %d (%s: %s); splitting it to isolate the event",
                          len(raws), type(e).__name__, quote(str(e)), exc_info=log.isEnabledFor(logging.DEBUG))
            if len(raws) == 1:
                return BatchResult(dead=[DeadLetter(raws[0], "parse", "pipeline_error",
                                                    f"pipeline raised {type(e).__name__}: {quote(str(e))}")])
        mid = len(raws) // 2
        left, right = self._process(raws[:mid], depth + 1), self._process(raws[mid:], depth + 1)
        return BatchResult(actions=left.actions + right.actions, dead=left.dead + right.dead)

    def _write(self, actions: list[IndexAction], depth: int = 0) -> list[Rejected]:
        """The sink on the actions; an unexpected exception (a bug) halves the actions until the
        failing ones are isolated and rejected. SinkUnavailable propagates."""
        if not actions:
            return []
        try:
            return list(self.sink.write_batch(actions))
        except SinkUnavailable:
            raise
        except Exception as e:
            if depth == 0:
                log.error("sink raised on a batch of %d (%s: %s); splitting it to isolate the document",
                          len(actions), type(e).__name__, quote(str(e)), exc_info=log.isEnabledFor(logging.DEBUG))
            if len(actions) == 1:
                return [Rejected(actions[0], 0, "sink_error", f"sink raised {type(e).__name__}: {quote(str(e))}")]
        mid = len(actions) // 2
        return self._write(actions[:mid], depth + 1) + self._write(actions[mid:], depth + 1)

    @staticmethod
    def _rejected_letter(r: Rejected) -> DeadLetter:
        raw = r.action.raw if r.action.raw is not None else orjson.dumps(r.action.doc, default=str)
        return DeadLetter(raw, "index", r.error_type or "rejected", r.reason, r.status or None)

    def _ack(self, dead: list[DeadLetter]) -> None:
        entries = self.deadletters.entries(dead)
        self._retry_redis("ack", lambda: self.source.ack(entries, self.deadletters.key,
                                                          self.deadletters.max_length))
        if self.source.last_trimmed:
            self.metrics.dead_trimmed.inc(self.source.last_trimmed)

    def _give_back(self) -> None:
        self._retry_redis("give back", self.source.give_back)

    def _retry_redis(self, what: str, fn: Callable[[], Any]) -> None:
        """Redis calls that must happen (ack, give back): retried until they succeed, or until a
        forced stop; the batch then stays in the processing list and is recovered later."""
        while True:
            try:
                fn()
                self._redis_ok()
                return
            except SourceUnavailable as e:
                if self.sink_stop.is_set():
                    log.warning("cannot %s (%s) and stopping: batch stays in %s", what, e,
                                self.source.processing_key)
                    return
                self._redis_failed(e)

    # -- Redis trouble, logging, gauges ----------------------------------------------------

    def _redis_failed(self, e: Exception) -> None:
        self.metrics.retries.labels("redis").inc()
        if self._redis_down_since is None:
            self._redis_down_since = time.monotonic()
            log.warning("%s; retrying with backoff", e)
        self.metrics.state = "waiting for redis"
        wait = self._backoff
        self._backoff = min(self._backoff * 2, self.config.backoff_max.total_seconds())
        # while stopping, keep backing off (an ack is still owed) until the forced stop
        (self.sink_stop if self.stopping.is_set() else self.stopping).wait(wait)

    def _redis_ok(self) -> None:
        if self._redis_down_since is not None:
            log.info("Redis is back after %.1fs", time.monotonic() - self._redis_down_since)
            self._redis_down_since = None
        self._backoff = self.config.backoff_initial.total_seconds()

    def _log_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        s = self._since_info
        if s["batches"] and (force or now - self._last_info >= self.config.log_interval.total_seconds()):
            log.info("indexed %d events in %d batches (%d in, %d dead-lettered) since last report",
                     s["indexed"], s["batches"], s["in"], s["dead"])
            self._since_info = {"batches": 0, "in": 0, "indexed": 0, "dead": 0}
            self._last_info = now

    def _update_gauges(self) -> None:
        try:
            lengths = self.source.lengths(self.deadletters.key)
        except SourceUnavailable:
            return
        for name, n in lengths.items():
            self.metrics.list_length.labels(name).set(n)


def build_worker(settings: Any) -> tuple[Worker, Callable[[], None]]:
    """A worker from the composed settings (``settings.redis``, ``.deadletter``, ``.worker``,
    ``.metrics``, ``.elasticsearch``); returns it and a function that closes what it opened."""
    from ingest.metrics import MetricsServer
    from ingest.pipeline import Pipeline
    from ingest.sinks.elasticsearch import ElasticsearchSink, build_client

    wcfg: WorkerConfig = settings.worker
    rcfg = settings.redis
    client = rcfg.client()
    worker_id = wcfg.worker_id()
    source = RedisListSource(client, rcfg, worker_id)
    dcfg = settings.deadletter
    deadletters = DeadLetterStore(client, dcfg.key_for(rcfg.key), main_key=rcfg.key, worker=worker_id,
                                  max_length=dcfg.max_length)
    mcfg = settings.metrics
    metrics = Metrics(stale_after=mcfg.stale_after.total_seconds())
    sink_stop = threading.Event()
    es = build_client(settings.elasticsearch)
    sink = ElasticsearchSink(es, settings.elasticsearch, stop=sink_stop)
    pipeline = Pipeline.from_settings(settings, client)
    worker = Worker(source, pipeline, sink, deadletters, metrics, wcfg, sink_stop=sink_stop)
    server = None
    if mcfg.enabled:
        try:
            server = MetricsServer(metrics, mcfg.bind, mcfg.port).start()
        except OSError as e:
            raise ConfigError(f"cannot listen on {mcfg.bind}:{mcfg.port}: {e}", key="metrics.port") from e

    def close() -> None:
        if server is not None:
            server.close()
        es.close()
        client.close()

    return worker, close
