"""Where the detection rules keep their state: Redis (shared by every worker) or memory.

Both stores implement :meth:`DetectionStore.evaluate` with the same semantics: one call per batch,
which for Redis is ONE round trip (a non-transactional pipeline of two ``EVALSHA``; each script
runs atomically, so several workers on one Redis count together and never both fire the same
alert).

Redis layout, under ``key_prefix`` (default ``audit-ingest:detect:``)::

    <prefix>bf:<ip>              zset   failure member -> event time (ms). A member is the JSON
                                        ``[event key, host.hostname, user.name]``, so a redelivered
                                        event (same stable key) is not counted twice (ZADD NX); a
                                        document counted N times (``log.syslog.repeated``) adds N
                                        members, the 2nd..Nth with their index appended.
                                        Trimmed to 2 windows behind the newest event it got;
                                        PX = 2 windows + 1 h (processing time) after its last write.
    <prefix>bf:<ip>|<origin>|<log> zset  the same members, per host (``origin``) and log
                                        (``log``: ``auth`` or ``audit``) for failures both logs
                                        of a host report (sshd/PAM in auth.log and audit.log):
                                        see "One attempt, counted once" below. Same trim and PX.
    <prefix>bf:<ip>:<w>          string JSON of the alert fired for window number ``w``
                                 (``floor(ts_ms / window_ms)``), SET NX: at most one alert per IP
                                 per aligned window; same PX as the zset.
    <prefix>nc:<subject>         hash   ``c:<country>`` -> last successful login from there (event
                                        time, ms); ``a:<country>`` -> event key of the login that
                                        raised the new_country alert for it. PX = lookback.

Counting: sliding window. A failure at ``t`` counts the failures of its IP in ``(t - window, t]``
(ZCOUNT) right after it is added; above the threshold it fires unless the aligned window of ``t``
has fired already. So a burst that straddles an aligned boundary still fires (epoch-aligned
counting alone would split it into two halves below the threshold), while de-duplication stays
aligned (one alert per IP per window, deterministic id). A failure arriving late (older than ones
already counted) is evaluated on the window ending at it only.

What the alert lists (``count``, hosts, users, event keys): the failures in the window ending at
the trigger plus those the same batch added after it up to the end of the trigger's aligned
window, i.e. the count when the batch that fired it was done (``bruteforce.log``: fires on the
11th failure, reports all 12 of the batch). Later batches do not update an alert already fired.

One attempt, counted once: a failed SSH password is written to auth.log by sshd and to audit.log
by PAM (USER_AUTH res=failed). A failure that has an ``origin`` and a ``log`` is first added to
its host-and-log zset; it counts (is added to ``bf:<ip>``) only if that log now reports more
failures of the IP on that host than the host's other log does, both counted over the window
ending at the failure widened by ``SAME_ATTEMPT_MS`` on both sides (the two logs stamp one attempt
up to a second apart). So per host the count is the larger of the two logs' counts: a site
shipping both logs counts each attempt once, one shipping either log counts it from that log, in
any order and across workers.

Redelivery: an already-counted member is not counted again; if it is the member that fired an
alert, that same alert is returned again (same ``_id``: the ``create`` op answers 409), so a batch
whose alerts were lost before indexing gets them back on retry. Same for new_country.
"""

from __future__ import annotations

import bisect
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from ingest.errors import SourceUnavailable

#: State keys outlive their logical period by this much (processing time), for late events.
GRACE_MS = 3_600_000
#: the two logs that report the same authentication attempts of a host
OTHER_LOG = {"auth": "audit", "audit": "auth"}
#: how far apart the two logs' times of one attempt may be (auth.log's classic stamps drop the
#: fraction of a second; PAM's audit record is written just before or after sshd's line)
SAME_ATTEMPT_MS = 2000


class DetectionStoreUnavailable(SourceUnavailable):
    """The detection store (Redis) cannot be reached now: retry the batch."""


@dataclass(frozen=True, slots=True)
class Failure:
    """One authentication failure to count.

    A document that stands for several failures (rsyslog's "message repeated N times: [...]") is
    counted as N of these, ``repeat`` 0..N-1: each is its own zset member, so the count, the trimming
    and the redelivery check work unchanged, and a redelivered document adds nothing.
    """

    ip: str
    ts_ms: int
    key: str  # stable event key (redelivery de-duplication)
    host: str | None = None
    user: str | None = None
    #: the host and the log ("auth" / "audit") of a failure both logs of a host report; None: always counted
    origin: str | None = None
    log: str | None = None
    repeat: int = 0  # which of the document's repeated failures (0: the first, or the only one)

    def member(self) -> str:
        if self.repeat:
            return orjson.dumps([self.key, self.host, self.user, self.repeat]).decode()
        return orjson.dumps([self.key, self.host, self.user]).decode()


@dataclass(frozen=True, slots=True)
class Login:
    """One successful login with a country, for new_country."""

    subject: str
    country: str
    ts_ms: int
    key: str


@dataclass(slots=True)
class BruteForceHit:
    """An IP that went above the threshold: the failures in the window ending at the trigger."""

    ip: str
    window: int  # floor(ts_ms / window_ms) of the trigger
    ts_ms: int  # event time of the failure that fired
    count: int
    keys: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    trigger: str = ""  # event key of the failure that fired


@dataclass(slots=True)
class NewCountryHit:
    login: Login
    known: list[str]  # the countries seen within the lookback (other than this one)


def _hit(ip: str, window: int, payload: bytes | str) -> BruteForceHit:
    data = orjson.loads(payload)
    members = [orjson.loads(m) for m in data["members"]]
    return BruteForceHit(
        ip=ip, window=window, ts_ms=int(data["ts"]), count=int(data["count"]),
        keys=list(dict.fromkeys(m[0] for m in members)),  # a repeated document's members share its key
        hosts=sorted({m[1] for m in members if m[1]}),
        users=sorted({m[2] for m in members if m[2]}),
        trigger=orjson.loads(data["trigger"])[0],
    )


class DetectionStore(ABC):
    @abstractmethod
    def evaluate(self, failures: list[Failure], logins: list[Login], *, window_ms: int, threshold: int,
                 lookback_ms: int) -> tuple[list[BruteForceHit], list[NewCountryHit]]:
        """Count ``failures`` and learn ``logins`` (in order), atomically per item; return what fires."""


class MemoryDetectionStore(DetectionStore):
    """One process's state (``audit-ingest parse``, tests). No TTLs: the process is short-lived."""

    def __init__(self) -> None:
        # ip -> (failures sorted by (ts, member), the members): a sorted list keeps window queries and
        # pruning logarithmic, as Redis's sorted set does for the Redis store
        self._failures: dict[str, tuple[list[tuple[int, str]], set[str]]] = {}
        self._by_log: dict[tuple[str, str, str], tuple[list[tuple[int, str]], set[str]]] = {}  # (ip, origin, log)
        self._fired: dict[tuple[str, int], bytes] = {}
        self._countries: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def evaluate(self, failures: list[Failure], logins: list[Login], *, window_ms: int, threshold: int,
                 lookback_ms: int) -> tuple[list[BruteForceHit], list[NewCountryHit]]:
        hits: list[BruteForceHit] = []
        new: list[NewCountryHit] = []
        with self._lock:
            fired: list[tuple[Failure, int, bytes]] = []
            for f in failures:
                zset = self._failures.setdefault(f.ip, ([], set()))
                member = f.member()
                w = f.ts_ms // window_ms
                fresh, counts = True, True
                if f.origin is not None and f.log is not None:
                    mine = self._by_log.get((f.ip, f.origin, f.log))
                    if mine is None:
                        mine = self._by_log[(f.ip, f.origin, f.log)] = ([], set())
                    if member in mine[1]:
                        fresh = False
                    else:
                        bisect.insort(mine[0], (f.ts_ms, member))
                        mine[1].add(member)
                        other = self._by_log.get((f.ip, f.origin, OTHER_LOG.get(f.log, "")))
                        if other is not None:
                            lo, hi = f.ts_ms - window_ms - SAME_ATTEMPT_MS, f.ts_ms + SAME_ATTEMPT_MS + 1
                            counts = self._count(mine, lo, hi) > self._count(other, lo, hi)
                    if mine[0][0][0] < f.ts_ms - 2 * window_ms:
                        self._trim(mine, f.ts_ms - 2 * window_ms)
                if fresh and not counts:
                    pass  # the other log of this host already reported this attempt
                elif fresh and member not in zset[1]:
                    bisect.insort(zset[0], (f.ts_ms, member))
                    zset[1].add(member)
                    if self._count(zset, f.ts_ms - window_ms, f.ts_ms + 1) > threshold and (f.ip, w) not in self._fired:
                        inside = self._range(zset, f.ts_ms - window_ms, f.ts_ms + 1)
                        payload = _payload(f, inside)
                        self._fired[(f.ip, w)] = payload
                        fired.append((f, len(inside), payload))
                else:
                    payload_ = self._fired.get((f.ip, w))
                    if payload_ is not None and orjson.loads(payload_)["trigger"] == member:
                        hits.append(_hit(f.ip, w, payload_))
                if zset[0] and zset[0][0][0] < f.ts_ms - 2 * window_ms:
                    self._trim(zset, f.ts_ms - 2 * window_ms)
            for f, count, payload in fired:
                w = f.ts_ms // window_ms
                inside = self._range(self._failures[f.ip], f.ts_ms - window_ms, (w + 1) * window_ms)
                if len(inside) >= count:
                    payload = _payload(f, inside)
                    self._fired[(f.ip, w)] = payload
                hits.append(_hit(f.ip, w, payload))
            for login in logins:
                h = self._countries.setdefault(login.subject, {})
                raised, known = _new_country_step(h, login, lookback_ms)
                if raised:
                    new.append(NewCountryHit(login, known))
        return hits, new

    @staticmethod
    def _trim(zset: tuple[list[tuple[int, str]], set[str]], cut_ms: int) -> None:
        """Drop members older than ``cut_ms`` (ZREMRANGEBYSCORE -inf (cut)."""
        cut = bisect.bisect_left(zset[0], (cut_ms, ""))
        for _, m in zset[0][:cut]:
            zset[1].discard(m)
        del zset[0][:cut]

    @staticmethod
    def _count(zset: tuple[list[tuple[int, str]], set[str]], lo: int, hi: int) -> int:
        """How many members :meth:`_range` would return, without building the list (a burst is long)."""
        entries = zset[0]
        return bisect.bisect_left(entries, (hi, "")) - bisect.bisect_left(entries, (lo + 1, ""))

    @staticmethod
    def _range(zset: tuple[list[tuple[int, str]], set[str]], lo: int, hi: int) -> list[str]:
        """Members with lo < ts < hi, by (ts, member) like a Redis zset."""
        entries = zset[0]
        return [m for _, m in entries[bisect.bisect_left(entries, (lo + 1, "")):bisect.bisect_left(entries, (hi, ""))]]


def _payload(f: Failure, members: list[str]) -> bytes:
    return orjson.dumps({"ts": str(f.ts_ms), "count": len(members), "trigger": f.member(), "members": members})


def _new_country_step(h: dict[str, str], login: Login, lookback_ms: int) -> tuple[bool, list[str]]:
    """The memory twin of NEW_COUNTRY_LUA's loop body, on one subject's hash."""
    cutoff = login.ts_ms - lookback_ms
    known_any = False
    this_seen = False
    known: list[str] = []
    for name, value in h.items():
        if name.startswith("c:") and int(value) >= cutoff:
            known_any = True
            if name[2:] == login.country:
                this_seen = True
            else:
                known.append(name[2:])
    fired = False
    if known_any and not this_seen:
        h["a:" + login.country] = login.key
        fired = True
    elif this_seen and h.get("a:" + login.country) == login.key:
        fired = True  # redelivered: the same alert again
    old = h.get("c:" + login.country)
    if old is None or int(old) < login.ts_ms:
        h["c:" + login.country] = str(login.ts_ms)
    return fired, sorted(known)


# KEYS: per failure, the IP's zset and its fired-flag key; for a failure with an origin also its
#       host-and-log zset and the host's other log's zset.
# ARGV: threshold, ttl_ms, the number of failures, window_ms, SAME_ATTEMPT_MS, then per failure:
#       member, ts (ms), 1 if it has an origin (else 0). The script derives the bounds: the window
#       ending at ts "(" .. (ts - window), the cut (ts - 2 windows), the end of the aligned window of
#       ts "(" .. (floor(ts / window) + 1) * window, and for one with an origin the bounds the two
#       logs are compared over: "(" .. (ts - window - SAME_ATTEMPT_MS), ts + SAME_ATTEMPT_MS.
#       (Three arguments per failure instead of six or eight: each argument costs the worker
#       redis-py's packing; ms timestamps are exact in Lua's doubles and printed with %d.)
# Returns the fired (or re-emitted) payloads as {index of the failure (1-based), payload}.
BRUTE_FORCE_LUA = """
local threshold = tonumber(ARGV[1])
local ttl = ARGV[2]
local window = tonumber(ARGV[4])
local same = tonumber(ARGV[5])
local out = {}
local fired = {}
local k, a = 1, 6
for i = 1, tonumber(ARGV[3]) do
  local zkey, fkey = KEYS[k], KEYS[k + 1]
  local member, ts = ARGV[a], ARGV[a + 1]
  local t = tonumber(ts)
  local lo = '(' .. string.format('%d', t - window)
  local cut = string.format('%d', t - 2 * window)
  local hi = '(' .. string.format('%d', (math.floor(t / window) + 1) * window)
  local dedup = ARGV[a + 2] == '1'
  k, a = k + 2, a + 3
  local fresh, counts = true, true
  if dedup then
    local mine, other = KEYS[k], KEYS[k + 1]
    local slo, shi = '(' .. string.format('%d', t - window - same), string.format('%d', t + same)
    k = k + 2
    if redis.call('ZADD', mine, 'NX', ts, member) == 0 then
      fresh = false
    else
      if redis.call('EXISTS', other) == 1 then
        counts = redis.call('ZCOUNT', mine, slo, shi) > redis.call('ZCOUNT', other, slo, shi)
      end
      redis.call('ZREMRANGEBYSCORE', mine, '-inf', '(' .. cut)
      redis.call('PEXPIRE', mine, ttl)
    end
  end
  if fresh and not counts then
    -- the other log of this host already reported this attempt
  elseif fresh and redis.call('ZADD', zkey, 'NX', ts, member) == 1 then
    local count = redis.call('ZCOUNT', zkey, lo, ts)
    if count > threshold and redis.call('EXISTS', fkey) == 0 then
      local members = redis.call('ZRANGEBYSCORE', zkey, lo, ts)
      local payload = cjson.encode({ts = ts, count = count, trigger = member, members = members})
      if redis.call('SET', fkey, payload, 'NX', 'PX', ttl) then
        fired[#fired + 1] = {i, zkey, fkey, lo, hi, ts, member, count, payload}
      end
    end
  else
    local payload = redis.call('GET', fkey)
    if payload and cjson.decode(payload).trigger == member then
      out[#out + 1] = {i, payload}
    end
  end
  redis.call('ZREMRANGEBYSCORE', zkey, '-inf', '(' .. cut)
  redis.call('PEXPIRE', zkey, ttl)
end
-- what the batch added after the trigger, in the trigger's aligned window, belongs to its alert
for _, f in ipairs(fired) do
  local members = redis.call('ZRANGEBYSCORE', f[2], f[4], f[5])
  local payload = f[9]
  if #members >= f[8] then
    payload = cjson.encode({ts = f[6], count = #members, trigger = f[7], members = members})
    redis.call('SET', f[3], payload, 'XX', 'KEEPTTL')
  end
  out[#out + 1] = {f[1], payload}
end
return out
"""

# KEYS: per login, the subject's hash. ARGV: lookback_ms, then per login: country, ts, cutoff, event key.
# Returns {index (1-based), known countries...} per login that fires (or re-fires on redelivery).
NEW_COUNTRY_LUA = """
local ttl = ARGV[1]
local out = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local base = 1 + (i - 1) * 4
  local country, ts, cutoff, ekey = ARGV[base + 1], ARGV[base + 2], tonumber(ARGV[base + 3]), ARGV[base + 4]
  local h = redis.call('HGETALL', key)
  local known_any, this_seen = false, false
  local known = {}
  local alerted = nil
  local old = nil
  for j = 1, #h, 2 do
    local name, value = h[j], h[j + 1]
    if string.sub(name, 1, 2) == 'c:' then
      local c = string.sub(name, 3)
      if c == country then old = value end
      if tonumber(value) >= cutoff then
        known_any = true
        if c == country then this_seen = true else known[#known + 1] = c end
      end
    elseif name == 'a:' .. country then
      alerted = value
    end
  end
  if known_any and not this_seen then
    redis.call('HSET', key, 'a:' .. country, ekey)
    table.insert(known, 1, i)
    out[#out + 1] = known
  elseif this_seen and alerted == ekey then
    table.insert(known, 1, i)
    out[#out + 1] = known
  end
  if old == nil or tonumber(old) < tonumber(ts) then
    redis.call('HSET', key, 'c:' .. country, ts)
  end
  redis.call('PEXPIRE', key, ttl)
end
return out
"""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisDetectionStore(DetectionStore):
    """The store shared by every worker on one Redis (see the module doc for the key layout)."""

    def __init__(self, client: redis.Redis, key_prefix: str = "audit-ingest:detect:") -> None:
        self.client = client
        self.prefix = key_prefix
        self._bf = client.register_script(BRUTE_FORCE_LUA)
        self._nc = client.register_script(NEW_COUNTRY_LUA)

    def evaluate(self, failures: list[Failure], logins: list[Login], *, window_ms: int, threshold: int,
                 lookback_ms: int) -> tuple[list[BruteForceHit], list[NewCountryHit]]:
        if not failures and not logins:
            return [], []
        p = self.prefix
        calls: list[tuple[Any, list[str], list[Any]]] = []  # (script, keys, args)
        if failures:
            keys: list[str] = []
            args: list[Any] = [threshold, 2 * window_ms + GRACE_MS, len(failures), window_ms, SAME_ATTEMPT_MS]
            for f in failures:
                zkey = f"{p}bf:{f.ip}"
                if f.origin is not None and f.log is not None:
                    keys += (zkey, f"{zkey}:{f.ts_ms // window_ms}", f"{zkey}|{f.origin}|{f.log}",
                             f"{zkey}|{f.origin}|{OTHER_LOG.get(f.log, '')}")
                    args += (f.member(), f.ts_ms, 1)
                else:
                    keys += (zkey, f"{zkey}:{f.ts_ms // window_ms}")
                    args += (f.member(), f.ts_ms, 0)
            calls.append((self._bf, keys, args))
        if logins:
            nkeys = [f"{p}nc:{login.subject}" for login in logins]
            nargs: list[Any] = [lookback_ms]
            for login in logins:
                nargs += [login.country, login.ts_ms, login.ts_ms - lookback_ms, login.key]
            calls.append((self._nc, nkeys, nargs))
        try:
            replies = self._run(calls)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise DetectionStoreUnavailable(f"detection store unreachable: {e}") from e
        hits: list[BruteForceHit] = []
        new: list[NewCountryHit] = []
        pos = 0
        if failures:
            for i, payload in replies[pos]:
                f = failures[int(i) - 1]
                hits.append(_hit(f.ip, f.ts_ms // window_ms, payload))
            pos += 1
        if logins:
            for row in replies[pos]:
                new.append(NewCountryHit(logins[int(row[0]) - 1], sorted(_s(c) for c in row[1:])))
        return hits, new

    def _run(self, calls: list[tuple[Any, list[str], list[Any]]]) -> list[Any]:
        """The scripts by ``EVALSHA`` in one pipelined round trip. (A pipeline given ``Script``
        objects asks ``SCRIPT EXISTS`` first, every time: a second round trip per batch.) A script
        Redis does not have (restarted, ``SCRIPT FLUSH``) is loaded and that call alone resent: one
        answered NOSCRIPT did not run."""
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            with self.client.pipeline(transaction=False) as pipe:
                for i in todo:
                    script, keys, args = calls[i]
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                answers = pipe.execute(raise_on_error=False)
            missing = []
            for i, answer in zip(todo, answers, strict=True):
                if isinstance(answer, redis.exceptions.NoScriptError) and attempt == 0:
                    missing.append(i)
                elif isinstance(answer, Exception):
                    raise answer
                else:
                    replies[i] = answer
            if not missing:
                break
            for i in missing:
                calls[i][0].sha = self.client.script_load(calls[i][0].script)
            todo = missing
        return replies

