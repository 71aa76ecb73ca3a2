"""The notification queue in Redis: queued with the batch's ack, claimed with a lease, done after.

Key layout (``{p}`` is ``notify.key_prefix``, ``audit-ingest:notify:``; ``{o}`` an output name,
``{id}`` an alert ``_id``)::

    {p}seen:{id}        string  the alert was queued (SET NX): the same alert raised again by another
                                worker or a redelivered batch queues nothing. PX notify.dedup_ttl (7 d).
    {p}queue:{o}        zset    alert id -> when it may be claimed (ms, Redis server time): now when
                                queued, now + lease while claimed, the retry time after a failure.
    {p}job:{o}:{id}     hash    doc (the alert as an Elasticsearch hit, JSON), tries, token (of the
                                current claim), error (the last one), queued (ms). Deleted when the
                                message is sent, summarized or dead-lettered.
    {p}held:{o}         zset    alert id -> when the rate limit held it back (ms), for the summary.
    {p}rate:{o}         hash    window -> the current window number (notify.rate_window, a minute),
                                used -> messages sent in it. PX 3 windows.
    {p}summary:{o}      string  lease of the summary being sent, or the wait after a failed one (PX).
    {p}summary_tries:{o} string failed tries of the current summary (PX 1 d).

Bounds: queue + held of one output hold at most ``notify.max_queued`` alerts (past it the alert is
dead-lettered, code ``notify_queue_full``), each with one job hash; seen keys expire; the rest are
one key per output.

Delivery: a sender claims one alert (its score moves to now + lease, ``tries`` + 1, a new token),
sends, then deletes the job. A sender that dies mid-send leaves the score at now + lease: when the
lease ends, another sender claims it and sends again. So an alert is sent at least once, and twice
only when a sender died (or stalled past the lease) between sending and recording. A failure
reschedules the job (only by the sender holding the current claim) after a backoff, stored in
Redis; after ``max_attempts`` tries, or at once on a permanent refusal, the job moves to the
dead-letter list in the same script. All times are Redis's ``TIME``, so workers' clocks may differ.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from ingest.deadletter import encode as encode_dead
from ingest.model import DeadLetter
from ingest.notify.message import Alert

log = logging.getLogger(__name__)

_NOW = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# Queued in the same MULTI/EXEC as the batch's ack script, *before* it (so the guard sees the batch).
# KEYS: guard (the batch's processing list), dead list, then per alert: its seen key, then per output
#       it goes to: that output's queue, held and job keys.
# ARGV: use_guard (1/0), seen_ttl_ms, max_queued, dead_max (0: unbounded), worker, time (ISO),
#       then per alert: id, encoded alert, number of outputs, the output names.
# Returns {queued, already seen, dead-lettered because full}, or -1 when the guard list is gone (the
# batch was acked before, or recovered by another worker, which queues the alerts itself).
ENQUEUE_LUA = _NOW + """
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local now = now_ms()
local ttl, cap, dead_max = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local k, a = 3, 7
local queued, seen, full = 0, 0, 0
while a <= #ARGV do
  local id, doc, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  local fresh = redis.call('SET', KEYS[k], '1', 'NX', 'PX', ttl)
  k = k + 1
  if not fresh then seen = seen + 1 end
  for j = 1, n do
    local output = ARGV[a]
    local q, h, job = KEYS[k], KEYS[k + 1], KEYS[k + 2]
    a, k = a + 1, k + 3
    if fresh then
      if redis.call('ZCARD', q) + redis.call('ZCARD', h) >= cap then
        local entry = cjson.encode({raw = doc, stage = 'notify', error_code = 'notify_queue_full',
          reason = 'notification queue of output ' .. output .. ' full (notify.max_queued ' .. ARGV[3] ..
                   ' waiting): not sent', status = cjson.null, time = ARGV[6], worker = ARGV[5],
          output = output, alert_id = id})
        local len = redis.call('RPUSH', KEYS[2], entry)
        if dead_max > 0 and len > dead_max then redis.call('LTRIM', KEYS[2], -dead_max, -1) end
        full = full + 1
      else
        redis.call('HSET', job, 'doc', doc, 'tries', 0, 'queued', now)
        redis.call('ZADD', q, 'NX', now, id)
        queued = queued + 1
      end
    end
  end
end
return {queued, seen, full}
"""

# KEYS: queue   -> the first alert id due now (or nothing)
PEEK_LUA = _NOW + """
return redis.call('ZRANGE', KEYS[1], '-inf', now_ms(), 'BYSCORE', 'LIMIT', 0, 1)
"""

# The rate check shared by CLAIM_LUA and the summary claim: one message more in this window (of
# window_ms, a minute by default, aligned on Redis's clock), or false.
_RATE = """
local function take_slot(rate, limit, now, window_ms)
  if limit <= 0 then return true end
  local window = math.floor(now / window_ms)
  local cur = tonumber(redis.call('HGET', rate, 'window') or '-1')
  if cur ~= window then
    redis.call('HSET', rate, 'window', window, 'used', 0)
    redis.call('PEXPIRE', rate, 3 * window_ms)
  end
  if tonumber(redis.call('HGET', rate, 'used')) >= limit then return false end
  redis.call('HINCRBY', rate, 'used', 1)
  return true
end
"""

# KEYS: queue, held, rate, job   ARGV: id, lease_ms, rate_limit (0: none), token, rate window (ms)
# -> nil (claimed by another sender meanwhile), {'held'} (rate limit: moved to held), or
#    {'send', doc, tries, last error}
CLAIM_LUA = _NOW + _RATE + """
local now = now_ms()
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > now then return nil end
local doc = redis.call('HGET', KEYS[4], 'doc')
if not doc then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return nil
end
if not take_slot(KEYS[3], tonumber(ARGV[3]), now, tonumber(ARGV[5])) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  redis.call('HDEL', KEYS[4], 'token')
  return {'held'}
end
local tries = redis.call('HINCRBY', KEYS[4], 'tries', 1)
redis.call('HSET', KEYS[4], 'token', ARGV[4])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return {'send', doc, tries, redis.call('HGET', KEYS[4], 'error') or ''}
"""

# KEYS: queue, job   ARGV: id, token, delay_ms, error   -> 1 rescheduled, 0 not ours any more
RETRY_LUA = _NOW + """
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now_ms() + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], 'error', ARGV[4])
redis.call('HDEL', KEYS[2], 'token')
return 1
"""

# KEYS: the zset holding the id (queue or held), job, dead   ARGV: id, token ('' : any), entry, dead_max
# -> 1 dead-lettered, 0 not ours any more (claimed again by another sender, or already gone)
DEAD_LUA = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[2], 'token') ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
local len = redis.call('RPUSH', KEYS[3], ARGV[3])
local cap = tonumber(ARGV[4])
if cap > 0 and len > cap then redis.call('LTRIM', KEYS[3], -cap, -1) end
return 1
"""

# KEYS: dead, queue, job   ARGV: the entry expected at the head of dead, id, encoded alert
REQUEUE_LUA = _NOW + """
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[1] then return 0 end
redis.call('LPOP', KEYS[1])
local now = now_ms()
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'doc', ARGV[3], 'tries', 0, 'queued', now)
redis.call('ZADD', KEYS[2], now, ARGV[2])
return 1
"""


@dataclass(slots=True)
class Claim:
    """One alert claimed for one output: send it, then :meth:`NotifyQueue.done` (or retry / dead)."""

    output: str
    alert: Alert
    tries: int
    token: str
    last_error: str = ""


@dataclass(slots=True)
class Queued:
    """What one enqueue did."""

    queued: int = 0
    seen: int = 0
    full: int = 0
    skipped: bool = False  # the guard list was gone: the batch was not ours to acknowledge


class NotifyQueue:
    """The Redis side of notifications. Redis errors propagate (``redis.RedisError``)."""

    def __init__(self, client: redis.Redis, prefix: str = "audit-ingest:notify:", *, dead_key: str = "filebeat:dead",
                 dead_max: int | None = None, worker: str = "") -> None:
        self.redis = client
        self.prefix = prefix
        self.dead_key = dead_key
        self.dead_max = dead_max or 0
        self.worker = worker
        self._enqueue = client.register_script(ENQUEUE_LUA)
        self._peek = client.register_script(PEEK_LUA)
        self._claim = client.register_script(CLAIM_LUA)
        self._retry = client.register_script(RETRY_LUA)
        self._dead = client.register_script(DEAD_LUA)
        self._requeue = client.register_script(REQUEUE_LUA)

    # -- key names -------------------------------------------------------------------------

    def seen_key(self, alert_id: str) -> str:
        return f"{self.prefix}seen:{alert_id}"

    def queue_key(self, output: str) -> str:
        return f"{self.prefix}queue:{output}"

    def held_key(self, output: str) -> str:
        return f"{self.prefix}held:{output}"

    def job_key(self, output: str, alert_id: str) -> str:
        return f"{self.prefix}job:{output}:{alert_id}"

    def rate_key(self, output: str) -> str:
        return f"{self.prefix}rate:{output}"

    # -- queueing (with the ack) -----------------------------------------------------------

    def enqueue_args(self, pending: Sequence[tuple[Alert, Sequence[str]]], *, guard: str | None, seen_ttl_ms: int,
                     max_queued: int, time: str) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of :data:`ENQUEUE_LUA` for ``pending`` (alerts with the outputs each goes to)."""
        keys: list[str] = [guard or self.dead_key, self.dead_key]
        args: list[Any] = [1 if guard else 0, seen_ttl_ms, max_queued, self.dead_max, self.worker, time]
        for alert, outputs in pending:
            keys.append(self.seen_key(alert.id))
            args += [alert.id, alert.encode(), len(outputs)]
            for output in outputs:
                keys += [self.queue_key(output), self.held_key(output), self.job_key(output, alert.id)]
                args.append(output)
        return keys, args

    def enqueue(self, pending: Sequence[tuple[Alert, Sequence[str]]], *, guard: str | None = None,
                seen_ttl_ms: int = 7 * 86_400_000, max_queued: int = 10_000, time: str = "",
                client: Any = None) -> Any:
        """Queue the alerts; with ``client`` a pipeline, only add the call to it (its reply is what
        :meth:`parse_enqueued` reads)."""
        keys, args = self.enqueue_args(pending, guard=guard, seen_ttl_ms=seen_ttl_ms, max_queued=max_queued,
                                       time=time)
        return self._enqueue(keys=keys, args=args, client=client or self.redis)

    @staticmethod
    def parse_enqueued(reply: Any) -> Queued:
        if reply == -1:
            return Queued(skipped=True)
        queued, seen, full = (int(x) for x in reply)
        return Queued(queued, seen, full)

    # -- sending ---------------------------------------------------------------------------

    def claim(self, output: str, *, lease_ms: int, rate_limit: int, window_ms: int = 60_000) -> Claim | str | None:
        """The next alert due for ``output``, claimed; ``"held"`` when the rate limit held it back
        for the summary; None when nothing is due."""
        due = self._peek(keys=[self.queue_key(output)])
        if not due:
            return None
        alert_id = _s(due[0])
        token = uuid.uuid4().hex
        reply = self._claim(keys=[self.queue_key(output), self.held_key(output), self.rate_key(output),
                                  self.job_key(output, alert_id)],
                            args=[alert_id, lease_ms, rate_limit, token, window_ms])
        if not reply:
            return "raced"
        if _s(reply[0]) == "held":
            return "held"
        try:
            alert = Alert.decode(reply[1])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            alert = Alert(alert_id, "", {"unreadable": _s(reply[1])[:2000]})
        return Claim(output, alert, int(reply[2]), token, _s(reply[3]))

    def done(self, output: str, alert_id: str) -> None:
        """Sent: forget the job (whoever holds the claim now: the message went out)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.queue_key(output), alert_id)
            pipe.delete(self.job_key(output, alert_id))
            pipe.execute()

    def retry(self, claim: Claim, delay_ms: int, error: str) -> bool:
        """Failed for now: try again in ``delay_ms`` (False: the claim was not ours any more)."""
        return bool(self._retry(keys=[self.queue_key(claim.output), self.job_key(claim.output, claim.alert.id)],
                                args=[claim.alert.id, claim.token, max(0, int(delay_ms)), error[:500]]))

    def dead_entry(self, output: str, alert: Alert, code: str, reason: str) -> bytes:
        entry = orjson.loads(encode_dead(DeadLetter(alert.encode(), "notify", code, reason), self.worker))
        entry.update(output=output, alert_id=alert.id)
        return orjson.dumps(entry)

    def dead(self, claim: Claim, code: str, reason: str) -> bool:
        """Give up on this message: into the dead-letter list with the reason, in one script."""
        entry = self.dead_entry(claim.output, claim.alert, code, reason)
        return bool(self._dead(keys=[self.queue_key(claim.output), self.job_key(claim.output, claim.alert.id),
                                     self.dead_key], args=[claim.alert.id, claim.token, entry, self.dead_max]))

    def dead_held(self, output: str, alert: Alert, code: str, reason: str) -> bool:
        entry = self.dead_entry(output, alert, code, reason)
        return bool(self._dead(keys=[self.held_key(output), self.job_key(output, alert.id), self.dead_key],
                               args=[alert.id, "", entry, self.dead_max]))

    def release(self, claim: Claim) -> None:
        """Not sent (stopping): make it due again at once, for any sender."""
        self.retry(claim, 0, claim.last_error)

    # -- dead letters back -----------------------------------------------------------------

    def requeue_dead(self, head: bytes, entry: dict[str, Any]) -> bool:
        """``dlq --replay`` of a notification dead letter: back on its output's queue (tries reset)."""
        output, alert_id, raw = entry.get("output"), entry.get("alert_id"), entry.get("raw")
        if not (isinstance(output, str) and isinstance(alert_id, str) and isinstance(raw, str)):
            return False
        return bool(self._requeue(keys=[self.dead_key, self.queue_key(output), self.job_key(output, alert_id)],
                                  args=[head, alert_id, raw]))

    # -- looking -------------------------------------------------------------------------

    def lengths(self, output: str) -> tuple[int, int]:
        """(queued or retrying, held for a summary) of one output."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.queue_key(output))
            pipe.zcard(self.held_key(output))
            queued, held = pipe.execute()
        return int(queued), int(held)

    def outputs_waiting(self) -> dict[str, int]:
        """Every output that has a queue in Redis, with its length (SCAN: for the start-up check)."""
        out: dict[str, int] = {}
        prefix = self.prefix + "queue:"
        for raw in self.redis.scan_iter(match=_glob_escape(prefix) + "*", count=1000):
            name = _s(raw)[len(prefix):]
            out[name] = int(self.redis.zcard(_s(raw)))
        return out


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)

