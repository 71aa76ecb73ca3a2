"""Rate limit per output: at most ``rate_limit`` messages a minute, the rest told in one summary.

The count is per output and per window of ``notify.rate_window`` (a minute) on Redis's clock
(``{p}rate:{o}``, shared by every worker): a claim that finds the window's messages used up moves
the alert to ``{p}held:{o}`` instead of sending it (:data:`ingest.notify.queue.CLAIM_LUA`). Once
the window an alert was held in is over, one sender claims the summary (a lease,
``{p}summary:{o}``, and one message of the new window's budget) and sends one message listing
every alert held before the current window (at most
:data:`SUMMARY_MAX`; the rest go in the next one). Sent: the held alerts are done. Failed: the
summary waits a backoff (the same key, with a PX) and is tried again with whatever is held then;
after ``max_attempts`` failures, or a permanent refusal, each alert it held goes to the
dead-letter list with the reason. A storm thus gives each output at most ``rate_limit`` messages
a minute: the first ones alone, then one summary per minute of the overflow.

Held alerts keep their job hash (and so their document) until the summary that tells them is sent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import orjson
import redis

from ingest.notify.message import Alert
from ingest.notify.queue import _NOW, _RATE, NotifyQueue, _s

#: alerts one summary message lists at most
SUMMARY_MAX = 500

# KEYS: held, rate, summary lease   ARGV: rate_limit, token, lease_ms, max, rate window (ms)
# -> nil (nothing to summarize yet, another sender has it, waiting after a failure, or no budget),
#    else the held ids to summarize (held before the current window, oldest first)
SUMMARY_CLAIM_LUA = _NOW + _RATE + """
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then return nil end
local now = now_ms()
local window_ms = tonumber(ARGV[5])
local window_start = math.floor(now / window_ms) * window_ms
if tonumber(first[2]) >= window_start then return nil end
if not redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[3]) then return nil end
if not take_slot(KEYS[2], tonumber(ARGV[1]), now, window_ms) then
  redis.call('DEL', KEYS[3])
  return nil
end
return redis.call('ZRANGE', KEYS[1], '-inf', '(' .. window_start, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[4]))
"""

# KEYS: held, summary lease, summary tries, then the job key of each id   ARGV: token, ids...
SUMMARY_DONE_LUA = """
for i = 2, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('DEL', KEYS[2 + i])
end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('DEL', KEYS[3])
return #ARGV - 1
"""

# KEYS: summary lease, summary tries   ARGV: token, backoff_initial_ms, backoff_max_ms, retry_after_ms
# -> {failed tries so far, wait before the next (ms)}, or {0, 0} when the lease was not ours any more
SUMMARY_FAILED_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0, 0} end
local tries = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], 86400000)
local delay = math.min(tonumber(ARGV[2]) * 2 ^ (tries - 1), tonumber(ARGV[3]))
delay = math.max(1, math.floor(math.max(delay, tonumber(ARGV[4]))))
redis.call('SET', KEYS[1], 'wait', 'PX', delay)
return {tries, delay}
"""


@dataclass(slots=True)
class SummaryClaim:
    output: str
    token: str
    ids: list[str]
    alerts: list[Alert]


class Summaries:
    """The summary messages of rate-limited outputs (Redis side)."""

    def __init__(self, queue: NotifyQueue) -> None:
        self.queue = queue
        client: redis.Redis = queue.redis
        self._claim = client.register_script(SUMMARY_CLAIM_LUA)
        self._done = client.register_script(SUMMARY_DONE_LUA)
        self._failed = client.register_script(SUMMARY_FAILED_LUA)

    def lease_key(self, output: str) -> str:
        return f"{self.queue.prefix}summary:{output}"

    def tries_key(self, output: str) -> str:
        return f"{self.queue.prefix}summary_tries:{output}"

    def claim(self, output: str, *, rate_limit: int, lease_ms: int, window_ms: int = 60_000) -> SummaryClaim | None:
        """The summary due for ``output`` now, claimed (with one message of this window's budget)."""
        if rate_limit <= 0:
            return None
        q = self.queue
        token = uuid.uuid4().hex
        ids = self._claim(keys=[q.held_key(output), q.rate_key(output), self.lease_key(output)],
                          args=[rate_limit, token, lease_ms, SUMMARY_MAX, window_ms])
        if not ids:
            return None
        names = [_s(i) for i in ids]
        with q.redis.pipeline(transaction=False) as pipe:
            for alert_id in names:
                pipe.hget(q.job_key(output, alert_id), "doc")
            docs = pipe.execute()
        alerts = []
        for alert_id, doc in zip(names, docs, strict=True):
            if doc is None:
                continue  # its job is gone (dead-lettered meanwhile): the done script drops the id
            try:
                alerts.append(Alert.decode(doc))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                alerts.append(Alert(alert_id, "", {"unreadable": _s(doc)[:2000]}))
        return SummaryClaim(output, token, names, alerts)

    def done(self, claim: SummaryClaim) -> None:
        q = self.queue
        keys = [q.held_key(claim.output), self.lease_key(claim.output), self.tries_key(claim.output)]
        keys += [q.job_key(claim.output, i) for i in claim.ids]
        self._done(keys=keys, args=[claim.token, *claim.ids])

    def failed(self, claim: SummaryClaim, *, initial_ms: int, max_ms: int, retry_after_ms: int = 0
               ) -> tuple[int, int]:
        """Count the failure and wait before the next try (doubling from ``initial_ms`` up to
        ``max_ms``, at least ``retry_after_ms``): (failed tries so far, the wait in ms); (0, 0) when
        the lease had expired (another sender has the summary now)."""
        tries, delay = self._failed(keys=[self.lease_key(claim.output), self.tries_key(claim.output)],
                                    args=[claim.token, initial_ms, max_ms, retry_after_ms])
        return int(tries), int(delay)

    def give_up(self, claim: SummaryClaim, code: str, reason: str) -> int:
        """Dead-letter every alert of the summary with the reason; how many."""
        n = sum(self.queue.dead_held(claim.output, a, code, reason) for a in claim.alerts)
        q = self.queue
        with q.redis.pipeline(transaction=True) as pipe:
            if claim.ids:
                pipe.zrem(q.held_key(claim.output), *claim.ids)
            pipe.delete(self.lease_key(claim.output), self.tries_key(claim.output))
            pipe.execute()
        return n
