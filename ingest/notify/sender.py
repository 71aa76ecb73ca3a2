"""The sender: one thread per output, beside the worker loop, that claims and sends notifications.

Each thread loops on its own output's queue with its own Redis connection, so a receiver that is
down, slow or refusing costs the worker loop nothing: the loop only queues alerts (in its ack), and
an output's failures delay only that output's messages. Per step: the rate-limit summary if one is
due, else the next alert due (one at a time, so a lease never runs out while the message waits
behind others), sent, then recorded (done, retry after a backoff, or dead letter).

Logging: one line per message sent or dead-lettered; failures once when a streak of them starts
(then at most once a minute), one line when the output works again. Secrets never appear: reasons
are redacted by the outputs, outputs are named by name and host only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

import redis

from ingest.logsafe import escape
from ingest.notify.config import EmailOutput, NotifyConfig, SlackOutput, WebhookOutput
from ingest.notify.message import Facts, Summary
from ingest.notify.metrics import NotifyMetrics
from ingest.notify.outputs import Channel, SendError
from ingest.notify.queue import Claim, NotifyQueue
from ingest.notify.ratelimit import Summaries, SummaryClaim

log = logging.getLogger(__name__)

REDIS_BACKOFF_MAX = 10.0
REPEAT_WARNING = 60.0
GAUGE_INTERVAL = 5.0


class OutputSender:
    """The loop of one output."""

    def __init__(self, channel: Channel, output: WebhookOutput | SlackOutput | EmailOutput, queue: NotifyQueue,
                 config: NotifyConfig, metrics: NotifyMetrics | None, stop: threading.Event) -> None:
        self.channel = channel
        self.output = output
        self.queue = queue
        self.summaries = Summaries(queue)
        self.config = config
        self.metrics = metrics
        self.stop = stop
        self.name = channel.name
        self._lease_ms = int(config.lease.total_seconds() * 1000)
        self._window_ms = int(config.rate_window.total_seconds() * 1000)
        self._failing_since: float | None = None
        self._last_warning = 0.0
        self._redis_down = False
        self._last_gauge = 0.0

    def run(self) -> None:
        log.info("notifications: %s to %s", self.channel.describe(), self.output.target())
        wait = self.config.poll_interval.total_seconds()
        backoff = wait
        while not self.stop.is_set():
            try:
                busy = self.step()
                self._gauges()
                if self._redis_down:
                    log.info("notifications (%s): Redis reachable again", self.name)
                    self._redis_down = False
                backoff = wait
            except redis.RedisError as e:
                if not self._redis_down:
                    log.warning("notifications (%s): Redis unavailable (%s: %s); retrying", self.name,
                                type(e).__name__, e)
                    self._redis_down = True
                busy = False
                self.stop.wait(backoff)
                backoff = min(backoff * 2, REDIS_BACKOFF_MAX)
                continue
            if not busy:
                self.stop.wait(wait)

    def step(self) -> bool:
        """One summary or one alert handled; False when there was nothing to do."""
        limit = self.output.rate_limit
        summary = (self.summaries.claim(self.name, rate_limit=limit, lease_ms=self._lease_ms, window_ms=self._window_ms)
                   if limit else None)
        if summary is not None:
            self._send_summary(summary)
            return True
        claim = self.queue.claim(self.name, lease_ms=self._lease_ms, rate_limit=limit, window_ms=self._window_ms)
        if claim is None:
            return False
        if isinstance(claim, str):
            if claim == "held" and self.metrics is not None:
                self.metrics.sent.labels(self.name, "held").inc()
            return True
        if self.stop.is_set():
            self.queue.release(claim)
            return False
        self._send(claim)
        return True

    # -- one alert -------------------------------------------------------------------------

    def _send(self, claim: Claim) -> None:
        cfg = self.config
        if claim.tries > cfg.max_attempts:  # every earlier claim ended without a record (crashes)
            self._dead(claim, "notify_unconfirmed", f"not confirmed after {claim.tries - 1} tries (the sender "
                                                    f"stopped mid-send each time; last error: "
                                                    f"{claim.last_error or 'none'})")
            return
        started = time.monotonic()
        try:
            answer = self.channel.send(claim.alert, Facts.of(claim.alert, self.channel.links))
        except SendError as e:
            self._failed(claim, e)
            return
        except Exception as e:  # a bug in building the message: retried, then dead-lettered like a failure
            log.exception("notifications (%s): could not build or send alert %s", self.name, claim.alert.id)
            self._failed(claim, SendError("internal_error", f"{type(e).__name__}: {self.channel.redact(str(e))}",
                                          permanent=False))
            return
        self._record(lambda: self.queue.done(self.name, claim.alert.id), started)
        self._recovered()
        if self.metrics is not None:
            self.metrics.sent.labels(self.name, "sent").inc()
            self.metrics.send_seconds.labels(self.name).observe(time.monotonic() - started)
        log.info("notified %s: %s %s (%s)", self.channel.describe(), claim.alert.doc.get("rule", {}).get("name")
                 if isinstance(claim.alert.doc.get("rule"), dict) else "alert", claim.alert.id, answer)

    def _record(self, fn: Callable[[], None], claimed: float) -> None:
        """Record a message sent; while Redis is unreachable, try again until the lease would end
        (after that another sender sends it again anyway), so a Redis blip costs no duplicate."""
        deadline = claimed + self._lease_ms / 1000 * 0.9
        wait = 0.1
        while True:
            try:
                fn()
                return
            except redis.RedisError:
                if time.monotonic() + wait > deadline:
                    raise
                time.sleep(wait)
                wait = min(wait * 2, 2.0)

    def _failed(self, claim: Claim, e: SendError) -> None:
        cfg = self.config
        if e.permanent or claim.tries >= cfg.max_attempts:
            why = "permanent: not retried" if e.permanent else f"after {claim.tries} tries"
            self._dead(claim, f"notify_{e.code}", f"{self.channel.describe()}: {e.reason} ({why})")
            return
        delay = self.delay(claim.tries, e.retry_after)
        self._warn(f"{self.channel.describe()} failed: {e.reason}; alert {claim.alert.id} retried in {delay:g} s "
                   f"(try {claim.tries} of {cfg.max_attempts})")
        self.queue.retry(claim, int(delay * 1000), f"{e.code}: {e.reason}")
        if self.metrics is not None:
            self.metrics.sent.labels(self.name, "retried").inc()

    def _dead(self, claim: Claim, code: str, reason: str) -> None:
        if self.queue.dead(claim, code, reason):
            log.warning("notification dead-lettered to %r: alert %s, %s", self.queue.dead_key, claim.alert.id,
                        escape(reason))
            if self.metrics is not None:
                self.metrics.sent.labels(self.name, "dead_lettered").inc()

    def delay(self, tries: int, retry_after: float | None = None) -> float:
        """Seconds before try ``tries + 1``: doubling from backoff_initial up to backoff_max, at least
        what the receiver asked for (Retry-After, up to an hour)."""
        cfg = self.config
        delay = min(cfg.backoff_initial.total_seconds() * 2 ** max(0, tries - 1), cfg.backoff_max.total_seconds())
        if retry_after is not None:
            delay = max(delay, min(retry_after, 3600.0))
        return round(delay, 3)

    # -- a summary -------------------------------------------------------------------------

    def _send_summary(self, claim: SummaryClaim) -> None:
        if not claim.alerts:
            self.summaries.done(claim)
            return
        summary = Summary.of(self.name, self.output.rate_limit, claim.alerts, self.channel.links,
                             self.config.rate_window)
        started = time.monotonic()
        try:
            answer = self.channel.send_summary(summary)
        except SendError as e:
            self._summary_failed(claim, e)
            return
        except Exception as e:
            log.exception("notifications (%s): could not build or send a summary", self.name)
            self._summary_failed(claim, SendError("internal_error", f"{type(e).__name__}: {e}", permanent=False))
            return
        self._record(lambda: self.summaries.done(claim), started)
        self._recovered()
        if self.metrics is not None:
            self.metrics.sent.labels(self.name, "summarized").inc(len(claim.alerts))
        log.info("notified %s: summary of %d rate-limited alerts (%s)", self.channel.describe(), len(claim.alerts),
                 answer)

    def _summary_failed(self, claim: SummaryClaim, e: SendError) -> None:
        cfg = self.config
        retry_after = min(e.retry_after, 3600.0) if e.retry_after is not None else 0.0
        tries, delay_ms = self.summaries.failed(claim, initial_ms=int(cfg.backoff_initial.total_seconds() * 1000),
                                                max_ms=int(cfg.backoff_max.total_seconds() * 1000),
                                                retry_after_ms=int(retry_after * 1000))
        if tries == 0:
            return  # our lease had expired: another sender has it
        if e.permanent or tries >= cfg.max_attempts:
            why = "permanent: not retried" if e.permanent else f"after {tries} tries"
            n = self.summaries.give_up(claim, f"notify_{e.code}",
                                       f"{self.channel.describe()}: rate-limit summary: {e.reason} ({why})")
            log.warning("notification summary dead-lettered to %r: %d alerts, %s", self.queue.dead_key, n,
                        escape(e.reason))
            if self.metrics is not None:
                self.metrics.sent.labels(self.name, "dead_lettered").inc(n)
            return
        self._warn(f"{self.channel.describe()} failed: {e.reason}; summary of {len(claim.alerts)} alerts retried in "
                   f"{delay_ms / 1000:g} s (try {tries} of {cfg.max_attempts})")

    # -- logging, gauges -------------------------------------------------------------------

    def _warn(self, text: str) -> None:
        now = time.monotonic()
        if self._failing_since is None or now - self._last_warning >= REPEAT_WARNING:
            log.warning("notifications: %s", escape(text))  # a server's answer may echo the alert
            self._last_warning = now
        if self._failing_since is None:
            self._failing_since = now

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.info("notifications: %s works again after %.0f s", self.channel.describe(),
                     time.monotonic() - self._failing_since)
            self._failing_since = None

    def _gauges(self) -> None:
        if self.metrics is None or time.monotonic() - self._last_gauge < GAUGE_INTERVAL:
            return
        self._last_gauge = time.monotonic()
        queued, held = self.queue.lengths(self.name)
        self.metrics.waiting.labels(self.name, "queued").set(queued)
        self.metrics.waiting.labels(self.name, "held").set(held)


class NotificationSender:
    """Every output's thread; :meth:`start` after the worker starts, :meth:`stop` when it ends."""

    def __init__(self, queue: NotifyQueue, config: NotifyConfig, channels: Mapping[str, Channel],
                 metrics: NotifyMetrics | None = None) -> None:
        self.queue = queue
        self.config = config
        self.stop_event = threading.Event()
        outputs = config.active()
        self.senders = [OutputSender(channels[name], outputs[name], queue, config, metrics, self.stop_event)
                        for name in channels]
        self._threads: list[threading.Thread] = []

    def start(self) -> NotificationSender:
        for i, sender in enumerate(self.senders):
            target = sender.run if i else self._first(sender)
            t = threading.Thread(target=target, name=f"notify-{sender.name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _first(self, sender: OutputSender) -> Callable[[], None]:
        def run() -> None:  # the start-up check on a sender thread: Redis may be slow or down at start
            self._check_orphans()
            sender.run()
        return run

    def stop(self, timeout: float | None = None) -> None:
        """Let each thread finish the message it is sending (bounded by its timeout), then return."""
        self.stop_event.set()
        if timeout is None:
            timeout = max((s.output.timeout.total_seconds() for s in self.senders), default=0) + 1
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]
        if self._threads:
            log.warning("notifications: %d sender(s) still busy at stop; their messages are sent again once the "
                        "lease ends", len(self._threads))

    def _check_orphans(self) -> None:
        """Warn about notifications waiting for outputs that are not configured (or disabled) any more."""
        try:
            waiting = self.queue.outputs_waiting()
        except redis.RedisError:
            return
        names = {s.name for s in self.senders}
        for name, n in sorted(waiting.items()):
            if n and name not in names:
                log.warning("notifications: %d waiting in %s for output %r, which is not configured or not "
                            "enabled: they are sent once it is", n, self.queue.queue_key(name), name)
