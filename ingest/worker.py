"""The worker loop: take a batch from Redis, process it, index it, dead-letter what failed, ack.

Per batch:

1. ``source.take`` moves up to ``batch_size`` events into a processing list of this worker;
2. ``pipeline.process`` turns them into index actions and dead letters (an exception here splits
   the batch in halves until the one event that raises is found and dead-lettered, stage ``parse``);
3. ``sink.write_batch`` indexes the actions; it retries by itself until Elasticsearch took every
   item, so while it retries nothing more is taken from Redis (back-pressure: events wait in
   Redis, not in memory); it returns the permanent rejections (400/404), which become dead letters;
4. ``source.ack`` removes the batch and writes its dead letters in one Redis script.

Overlap (``worker.overlap``, on by default): step 3 of batch N runs on a sender thread while the
main thread takes and processes batch N+1. Batch N+1 is taken into a *second* processing list,
that of the slot id ``<worker-id>#2``, which has its own heartbeat and is a worker id like any
other for recovery; so every batch still sits in exactly one processing list from take to ack,
and take/ack/give back/recover are the same whole-list scripts as without overlap. All Redis
calls of the queue stay on the main thread; batches are acknowledged in the order they were
taken, each only after the sink confirmed it. At most two batches are held. The second one is
taken only while Elasticsearch answers without failures (not at start, not while the sink
retries); should the sink start failing while the second is held, that one is given back to the
head of the main list at once, so while Elasticsearch is down the worker holds one batch, as
without overlap.

Stopping (SIGTERM/SIGINT, or :meth:`Worker.stop`): no new batch is taken; the batches held (in
flight, or processed and waiting for the sender) get ``shutdown_timeout`` to finish, after which
the sink's stop event is set, the sink raises :class:`SinkUnavailable` and what is not confirmed
is given back to the head of the main list, oldest batch first.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from ingest.deadletter import DeadLetterStore
from ingest.errors import ConfigError, SinkUnavailable, SourceUnavailable
from ingest.isolate import process_isolating, write_isolating
from ingest.logsafe import escape, label
from ingest.metrics import Metrics
from ingest.model import BatchResult, DeadLetter, IndexAction, Rejected
from ingest.pending import carried
from ingest.redis_backoff import RedisBackoff
from ingest.sources.redis_list import RedisListSource, mask_url
from ingest.worker_accounting import BatchAccounting
from ingest.worker_config import WorkerConfig

__all__ = ["SLOT_SUFFIX", "Worker", "WorkerConfig", "build_worker"]

if TYPE_CHECKING:
    from ingest.notify.hook import Notifier, Pending

log = logging.getLogger(__name__)


class PipelineLike(Protocol):
    def process(self, raws: list[bytes]) -> BatchResult: ...


class SinkLike(Protocol):
    def write_batch(self, actions: list[IndexAction]) -> list[Rejected]: ...


SLOT_SUFFIX = "#2"  #: the second processing slot of a worker is the worker id ``<id>#2``


@dataclass
class _Batch:
    """A processed batch on its way to the sink: the slot holding it and what came of it."""

    source: RedisListSource
    raws: list[bytes]
    result: BatchResult
    started: float
    future: Future[list[Rejected]] | None = None
    sink_marks: int = 0  # the sink's failure counters when it was submitted


class Worker:
    def __init__(self, source: RedisListSource, pipeline: PipelineLike, sink: SinkLike,
                 deadletters: DeadLetterStore, metrics: Metrics | None = None, config: WorkerConfig | None = None,
                 *, sink_stop: threading.Event | None = None, notifier: Notifier | None = None) -> None:
        self.source = source
        self.pipeline = pipeline
        self.sink = sink
        self.deadletters = deadletters
        #: queues the notifications of a batch's alerts with its ack (None: no notify outputs)
        self.notifier = notifier
        #: derived documents pending until a batch carrying them is acknowledged (ingest.pending)
        self.pending = getattr(pipeline, "pending", None)
        self.metrics = metrics or Metrics()
        self.config = config or WorkerConfig.model_validate({})
        #: set as soon as a stop is asked for: no new batch is taken
        self.stopping = threading.Event()
        #: the event the sink watches; set ``shutdown_timeout`` after ``stopping``
        self.sink_stop = sink_stop or threading.Event()
        self._timer: threading.Timer | None = None
        self.backoff = RedisBackoff(self.metrics, self.config.backoff_initial.total_seconds(),
                                    self.config.backoff_max.total_seconds(), self.stopping, self.sink_stop)
        self.accounting = BatchAccounting(self.metrics, self.config.log_interval.total_seconds(), deadletters.key)
        self._last_recover = 0.0
        self._last_gauges = 0.0
        self._recover_every = (source.config.recover_interval or source.config.heartbeat_ttl).total_seconds()
        self.source._on_lost_owner = self.stop_now
        #: the processing slots: this worker's own id, and with overlap ``<id>#2``
        self.slots = [source]
        if self.config.overlap:
            second = RedisListSource(source.redis, source.config, source.worker_id + SLOT_SUFFIX,
                                     on_lost_owner=self.stop_now)
            self.slots.append(second)
        self._inflight: _Batch | None = None  # submitted to the sender, not acknowledged yet
        self._sender: ThreadPoolExecutor | None = None
        self._sink_healthy = False  # the last batch went through without a failed request or retry
        stats = getattr(sink, "stats", None)
        if stats is not None and hasattr(stats, "listener"):
            stats.listener = self.accounting.sink_stat

    # -- control ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Take nothing more; let the batches held finish within ``shutdown_timeout``."""
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
        """Run until stopped; 0 when it stopped cleanly (batches finished or given back)."""
        log.info("worker %s reading %s list %r", self.source.worker_id, mask_url(self.source.config.url),
                 self.source.main_key)
        self._sender = ThreadPoolExecutor(1, thread_name_prefix=f"sender-{self.source.worker_id}")
        try:
            self._start()
            while not self.stopping.is_set():
                self.run_once()
        finally:
            self._finish()
        return 0

    def _start(self) -> None:
        while not self.stopping.is_set():
            try:
                # the id is ours: an earlier process with it (a restart) left its lists, taken over
                # at once; this worker's own list is simply taken again by the first take
                for slot in self.slots:
                    slot.claim()
                    slot.start_heartbeat()
                recovered = self.source.recover() + self.source.recover_orphans()
                for slot in self.slots[1:]:  # a second slot left over by a crash: back to the head
                    recovered += slot.give_back()
                if len(self.slots) == 1:  # overlap off now, maybe not before the restart
                    recovered += self._recover_second_slot()
                self.metrics.recovered.inc(recovered)
                self._last_recover = time.monotonic()
                self._redis_ok()
                return
            except SourceUnavailable as e:
                self._redis_failed(e)

    def _recover_second_slot(self) -> int:
        """The ``<id>#2`` list of an earlier process with this id, back to the head of the main list."""
        second = RedisListSource(self.source.redis, self.source.config, self.source.worker_id + SLOT_SUFFIX)
        second.claim()
        n = second.give_back()
        second.release()
        return n

    def _finish(self) -> None:
        try:
            while self._inflight is not None:
                try:
                    self._complete()
                except Exception:  # an ack that cannot be done stays in Redis (recovered later)
                    log.exception("could not finish the batch in flight; it stays in %s",
                                  self._inflight.source.processing_key)
                    self._inflight = None
        finally:
            if self._sender is not None:
                self._sender.shutdown(wait=True)
                self._sender = None
            if self._timer is not None:
                self._timer.cancel()
            for slot in reversed(self.slots):  # newest first: the oldest ends up at the head
                if slot.in_flight:
                    try:
                        n = slot.give_back()
                        log.info("gave %d events back to %r", n, slot.main_key)
                    except SourceUnavailable as e:
                        log.warning("could not give the batch back (%s); it stays in %s for recovery",
                                    e, slot.processing_key)
            for slot in self.slots:
                try:
                    slot.release()
                except SourceUnavailable:
                    slot.stop_heartbeat()
            self.accounting.progress(force=True)
            log.info("worker %s stopped", self.source.worker_id)

    def run_once(self) -> None:
        """One iteration. Never raises: an unexpected error is logged and the iteration retried
        after a backoff (the batch, if one was taken, is still in its processing list and is
        taken again by the next ``take`` of that slot)."""
        try:
            self._iteration()
        except (SinkUnavailable, ConfigError):
            raise
        except Exception as e:
            log.exception("unexpected error in the worker loop (%s); retrying", type(e).__name__)
            self.metrics.retries.labels("worker").inc()
            self.stopping.wait(self.backoff.next_wait())

    def _may_overlap(self) -> bool:
        """Take the next batch while the one in flight is being indexed? Only with a second slot,
        and only while Elasticsearch answers without failures (no failed request, no retry, in the
        last batch nor so far in this one)."""
        inflight = self._inflight
        return (inflight is not None and len(self.slots) > 1 and self._sink_healthy
                and self._sink_marks() == inflight.sink_marks)

    def _sink_marks(self) -> int:
        stats = getattr(self.sink, "stats", None)
        if stats is None:
            return 0
        return (int(getattr(stats, "request_failures", 0)) + int(getattr(stats, "retries", 0))
                + int(getattr(stats, "items_retried", 0)))

    def _iteration(self) -> None:
        self.metrics.loop_ran("taking")
        inflight = self._inflight
        if inflight is not None and (inflight.future is None or inflight.future.done() or not self._may_overlap()):
            self._complete()  # done, or no overlap now: acknowledge it before taking more
            return
        slot = self.slots[0] if inflight is None or inflight.source is not self.slots[0] else self.slots[1]
        try:
            if time.monotonic() - self._last_recover >= self._recover_every:
                self._last_recover = time.monotonic()
                self.metrics.recovered.inc(self.source.recover())
            if time.monotonic() - self._last_gauges >= 1.0:
                self._last_gauges = time.monotonic()
                self._update_gauges()
            if inflight is None:
                raws = slot.take(stop=self.stopping)
            else:  # no waiting for a full batch: the batch in flight is what we wait for
                raws = slot.fill(slot.config.batch_size)
            self._redis_ok()
        except SourceUnavailable as e:
            self._redis_failed(e)
            return
        if not raws:
            if inflight is not None:
                self._complete()
            elif self.pending is not None:  # idle: pending derived documents do not wait for events
                self._carry_pending()
            self.metrics.loop_ran("idle")
            return
        try:
            self.handle(raws, slot)
        except SourceUnavailable as e:
            # Redis failed inside the pipeline (session store): the batch is still in the
            # processing list and the next take of this slot returns it, after a backoff
            self._redis_failed(e)
            return
        self.metrics.loop_ran("running")

    def handle(self, raws: list[bytes], slot: RedisListSource | None = None) -> None:
        """Process one batch held in ``slot`` and hand it to the sender (after the batch in
        flight, if any, was acknowledged); without overlap, wait for it and acknowledge it."""
        started = time.monotonic()
        result = self._process(raws)
        if self.pending is not None:  # derived documents of unacknowledged batches, lease over
            result.actions += self.pending.reclaim(result.actions)
        self.metrics.loop_ran("indexing")
        if self._inflight is not None:
            self._wait_holding(slot or self.source)
            self._complete()
            if not (slot or self.source).in_flight:  # given back (sink failing, or with the one in flight)
                return
        batch = _Batch(slot or self.source, raws, result, started)
        batch.sink_marks = self._sink_marks()
        if self._sender is None or len(self.slots) == 1:
            done: Future[list[Rejected]] = Future()
            try:
                done.set_result(self._write(result.actions))
            except SinkUnavailable as e:
                done.set_exception(e)
            batch.future = done
            self._inflight = batch
            self._complete()
        else:
            batch.future = self._sender.submit(self._write, result.actions)
            self._inflight = batch

    def _complete(self) -> None:
        """Wait for the batch in flight; acknowledge it, or on SinkUnavailable give back every
        batch held (newest first, so that the oldest is at the head of the main list)."""
        batch = self._inflight
        if batch is None:
            return
        assert batch.future is not None
        try:
            rejected = batch.future.result()
        except SinkUnavailable as e:
            held = sum(s.in_flight for s in self.slots)
            log.warning("Elasticsearch did not take the batch before shutdown (%s); giving %d events back",
                        e, held)
            self._sink_healthy = False
            for slot in reversed(self._order(batch.source)):
                if slot.in_flight:
                    self._retry_redis("give back", slot.give_back)
            self._inflight = None
            self.metrics.batches.labels("given_back").inc()
            return
        self._sink_healthy = self._sink_marks() == batch.sink_marks
        self._acknowledge(batch, rejected)
        self._inflight = None

    def _wait_holding(self, newer: RedisListSource) -> None:
        """Wait for the batch in flight while ``newer`` holds the next one; should the sink start
        failing meanwhile (Elasticsearch down), give the newer batch back to the head of the main
        list at once: while Elasticsearch is down the worker holds one batch, not two."""
        batch = self._inflight
        if batch is None or batch.future is None:
            return
        while not batch.future.done():
            wait([batch.future], timeout=0.05)
            if newer.in_flight and not batch.future.done() and self._sink_marks() != batch.sink_marks:
                n = newer.in_flight
                self._sink_healthy = False
                self._retry_redis("give back", newer.give_back)
                if not newer.in_flight:
                    log.info("Elasticsearch is failing: gave the next batch (%d events) back; holding one batch", n)
                    self.metrics.batches.labels("given_back").inc()
                return

    def _order(self, oldest: RedisListSource) -> list[RedisListSource]:
        """The slots, oldest batch first."""
        return [oldest] + [s for s in self.slots if s is not oldest]

    def _acknowledge(self, batch: _Batch, rejected: list[Rejected]) -> None:
        result = batch.result
        dead = list(result.dead) + [self._rejected_letter(r) for r in rejected]
        pending = self.notifier.pending(result.actions, rejected) if self.notifier is not None else None
        self._ack(dead, batch.source, pending, carried(result.actions) if self.pending is not None else ())
        self.accounting.acked(len(batch.raws), result, rejected, dead, batch.started)

    # -- steps -----------------------------------------------------------------------------

    def _process(self, raws: list[bytes]) -> BatchResult:
        return process_isolating(self.pipeline, raws, self.metrics)  # ingest.isolate

    def _write(self, actions: list[IndexAction]) -> list[Rejected]:
        return write_isolating(self.sink, actions)

    @staticmethod
    def _rejected_letter(r: Rejected) -> DeadLetter:
        raw = r.action.raw if r.action.raw is not None else orjson.dumps(r.action.doc, default=str)
        # Elasticsearch's reason quotes the field's value (the event's text): escaped for the log
        return DeadLetter(raw, "index", label(r.error_type or "rejected"), escape(r.reason), r.status or None)

    def _ack(self, dead: list[DeadLetter], slot: RedisListSource | None = None, pending: Pending | None = None,
             derived: Sequence[str] = ()) -> None:
        source = slot or self.source
        entries = self.deadletters.entries(dead)
        notifier = self.notifier if pending else None
        if notifier is None and not derived:
            self._retry_redis("ack", lambda: source.ack(entries, self.deadletters.key, self.deadletters.max_length))
        else:  # in the ack's own transaction: the alerts' notifications (ingest.notify.hook), then the
            # derived documents the batch carried leave the pending set (ingest.pending)
            def before(pipe: Any) -> None:
                if notifier is not None and pending:
                    notifier.queue_in(pipe, source.processing_key, pending)
                if self.pending is not None:
                    self.pending.queue_done(pipe, derived)
            self._retry_redis("ack", lambda: source.ack(entries, self.deadletters.key, self.deadletters.max_length,
                                                        before=before))
            if notifier is not None and pending and source.last_before:
                notifier.record(source.last_before[0], pending)
        if source.last_trimmed:
            self.metrics.dead_trimmed.inc(source.last_trimmed)

    def _carry_pending(self) -> None:
        assert self.pending is not None
        try:
            self.pending.carry(self._write, lambda rs: self.deadletters.entries([self._rejected_letter(r) for r in rs]),
                               self.deadletters.key, self.deadletters.max_length)
        except SinkUnavailable as e:
            log.warning("pending session/alert documents not indexed (%s); they stay pending", e)
        except SourceUnavailable as e:
            self._redis_failed(e)

    def _retry_redis(self, what: str, fn: Callable[[], Any]) -> None:
        self.backoff.retry(what, fn, self.source.processing_key)

    def _redis_failed(self, e: Exception) -> None:
        self.backoff.failed(e)

    def _redis_ok(self) -> None:
        self.backoff.ok()

    def _update_gauges(self) -> None:
        try:
            lengths = self.source.lengths(self.deadletters.key)
        except SourceUnavailable:
            return
        for name, n in lengths.items():
            self.metrics.list_length.labels(name).set(n)


def build_worker(settings: Any) -> tuple[Worker, Callable[[], None]]:
    """A worker from the composed settings, and a function that closes what it opened
    (:func:`ingest.worker_build.build`)."""
    from ingest.worker_build import build

    return build(settings)
