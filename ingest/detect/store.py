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
    <prefix>bf:<ip>|<host>/<service>/<pid>|<class> zset  the same members, per origin (one
                                        connection: host, service, sshd pid) and evidence class (``sshd``, ``conn``, ``pam``,
                                        ``audit``: rules.failure_origin) for failures several
                                        lines report (class ``conn``: one member per
                                        connection): see "One attempt, counted once" below.
                                        Same trim and PX.
    <prefix>bf:<ip>:<w>          string JSON of the alert fired for window number ``w``
                                 (``floor(ts_ms / window_ms)``), SET NX: at most one alert per IP
                                 per aligned window; same PX as the zset. ``{"trigger": member,
                                 "ts", "count", "w", "members"}``, the trigger first (a prefix
                                 check recognises it without decoding a long member list).
    <prefix>nc:<subject>         hash   ``c:<country>`` -> last successful login from there (event
                                        time, ms); ``a:<country>`` -> event key of the login that
                                        raised the new_country alert for it. PX = lookback.

Counting: sliding window, aligned de-duplication. The aligned window ``w`` of an IP fires when
some failure ``t`` in it has more than ``threshold`` failures of the IP in ``(t - window, t]``: a
burst that straddles an aligned boundary still fires (epoch-aligned counting alone would split it
into two halves below the threshold), and there is one alert per IP per aligned window
(deterministic id). That is a property of the set of failures, so the order they are processed in
does not change which windows fire: a failure at ``t`` counts the window ending at it (ZCOUNT)
right after it is added, and, when it came late, also the windows ending at the failures counted
before it within ``(t, t + window)``, which may fire ``w`` or ``w + 1`` (at most threshold + 1 of
them are looked at: past that many, one of them is over the threshold already). Exact while no
failure comes more than one window behind the newest failure of its IP already counted (the zset
keeps two windows behind the newest) and before the state expires (PX).

What the alert lists (``count``, hosts, users, event keys): the failures in the window ending at
the trigger plus those the same batch added after it up to the end of the trigger's aligned
window, i.e. the count when the batch that fired it was done (``bruteforce.log``: fires on the
11th failure, reports all 12 of the batch). Later batches do not update an alert already fired.

One attempt, counted once: a failed SSH password is written by sshd (``Failed password``), by
pam_unix (``authentication failure``), by sshd again when the client gives up (pre-auth
``Connection closed by``) and by PAM to audit.log (USER_AUTH res=failed). A failure that has an
``origin`` and a class (``Failure.log``) is first added to its origin-and-class zset; it counts (is
added to ``bf:<ip>``) only if that class now holds more of the origin's failures than each other
class does. The origin names one connection (host, service, sshd pid), so the whole zsets are
compared, not a window (a connection's lines may come in any order, minutes apart). So per
connection the count is the largest class's count: each attempt is counted once, whichever of the
lines and logs a site ships, in any order and across workers.

Redelivery: an already-counted member is not counted again; if it is the member that fired an
alert, that same alert is returned again (same ``_id``: the ``create`` op answers 409), so a batch
whose alerts were lost before indexing gets them back on retry; also when newer failures trimmed
the member meanwhile (it is counted again, finds the flag set and that it is the flag's trigger).
Same for new_country. Beyond that, every alert is pending (ingest.pending) from its firing until
a batch that carried it is acknowledged.
"""

from __future__ import annotations

import bisect
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from ingest.detect.rules import EVIDENCE
from ingest.detect.scripts import BRUTE_FORCE_LUA, NEW_COUNTRY_LUA
from ingest.errors import SourceUnavailable

#: State keys outlive their logical period by this much (processing time), for late events.
GRACE_MS = 3_600_000
#: per evidence class, the other classes that report the same attempts of a host and service
OTHERS = {e: tuple(o for o in EVIDENCE if o != e) for e in EVIDENCE}
#: each evidence class's place (1-based) among the four class zsets of an origin in BRUTE_FORCE_LUA
CLASS = {e: i + 1 for i, e in enumerate(EVIDENCE)}


class DetectionStoreUnavailable(SourceUnavailable):
    """The detection store (Redis) cannot be reached now: retry the batch."""


#: not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__,
#: several times slower, and one is made per event that counts; hashable all the same, never changed
@dataclass(slots=True, unsafe_hash=True)
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
    #: host/service and evidence class of a failure other lines report too (rules.failure_origin);
    #: None: always counted
    origin: str | None = None
    log: str | None = None
    repeat: int = 0  # which of the document's repeated failures (0: the first, or the only one)

    def class_member(self, member: str | None = None) -> str:
        """Its member in its origin-and-class zset: the connection's lines of class ``conn`` share
        one (a connection is one of them however many such lines it logs), others their own
        (``member``: :meth:`member`, if the caller has it already)."""
        return "conn" if self.log == "conn" else (member or self.member())

    def member(self) -> str:
        if self.repeat:
            return orjson.dumps([self.key, self.host, self.user, self.repeat]).decode()
        return orjson.dumps([self.key, self.host, self.user]).decode()


#: not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__,
#: several times slower, and one is made per event that counts; hashable all the same, never changed
@dataclass(slots=True, unsafe_hash=True)
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
    """The hit a fired-flag payload describes (``window``: the trigger's own, if the payload
    predates the ``w`` it now carries)."""
    data = orjson.loads(payload)
    members = [orjson.loads(m) for m in data["members"]]
    return BruteForceHit(
        ip=ip, window=int(data.get("w", window)), ts_ms=int(data["ts"]), count=int(data["count"]),
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
        #: the trigger member of each fired flag: a redelivery check without decoding the payload
        #: (BRUTE_FORCE_LUA compares a prefix for the same reason)
        self._triggers: dict[tuple[str, int], str] = {}
        self._countries: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def evaluate(self, failures: list[Failure], logins: list[Login], *, window_ms: int, threshold: int,
                 lookback_ms: int) -> tuple[list[BruteForceHit], list[NewCountryHit]]:
        hits: list[BruteForceHit] = []
        new: list[NewCountryHit] = []
        with self._lock:
            fired: list[tuple[Failure, str, int, int, int, bytes]] = []  # failure, member, window, crossing end, count
            for f in failures:
                zset = self._failures.setdefault(f.ip, ([], set()))
                member = f.member()
                w = f.ts_ms // window_ms
                fresh, counts = True, True
                if f.origin is not None and f.log is not None:
                    mine = self._by_log.get((f.ip, f.origin, f.log))
                    if mine is None:
                        mine = self._by_log[(f.ip, f.origin, f.log)] = ([], set())
                    cmember = f.class_member(member)
                    if cmember in mine[1]:
                        fresh = False
                    else:
                        bisect.insort(mine[0], (f.ts_ms, cmember))
                        mine[1].add(cmember)
                        own = len(mine[0])  # counts if it now holds more than each other class
                        for o in OTHERS.get(f.log, ()):
                            other = self._by_log.get((f.ip, f.origin, o))
                            if other is not None and len(other[0]) >= own:
                                counts = False
                                break
                    if mine[0][0][0] < f.ts_ms - 2 * window_ms:
                        self._trim(mine, f.ts_ms - 2 * window_ms)
                if fresh and not counts:
                    pass  # another class of lines of this host already reported this attempt
                elif fresh and member not in zset[1]:
                    bisect.insort(zset[0], (f.ts_ms, member))
                    zset[1].add(member)
                    fire: tuple[int, int] | None = None  # (window, end of the crossing window): BRUTE_FORCE_LUA
                    end = (w + 1) * window_ms
                    if (f.ip, w) not in self._fired:
                        if self._count(zset, f.ts_ms - window_ms, f.ts_ms + 1) > threshold:
                            fire = (w, f.ts_ms)
                        else:
                            t = self._crossing(zset, f.ts_ms, end, window_ms, threshold)
                            fire = (w, t) if t is not None else None
                    if fire is None and (f.ip, w + 1) not in self._fired:
                        t = self._crossing(zset, end - 1, f.ts_ms + window_ms, window_ms, threshold)
                        fire = (w + 1, t) if t is not None else None
                    if fire is not None:
                        inside = self._range(zset, fire[1] - window_ms, fire[1] + 1)
                        payload = _payload(member, fire[1], inside, fire[0])
                        self._fired[(f.ip, fire[0])] = payload
                        self._triggers[(f.ip, fire[0])] = member
                        fired.append((f, member, fire[0], fire[1], len(inside), payload))
                    else:  # counted again after it was trimmed (redelivered behind newer failures)
                        hits += self._refired(f.ip, w, member)
                else:
                    hits += self._refired(f.ip, w, member)
                if zset[0] and zset[0][0][0] < f.ts_ms - 2 * window_ms:
                    self._trim(zset, f.ts_ms - 2 * window_ms)
            for f, member, w, t, count, payload in fired:
                inside = self._range(self._failures[f.ip], t - window_ms, (w + 1) * window_ms)
                if len(inside) >= count:
                    payload = _payload(member, t, inside, w)
                    self._fired[(f.ip, w)] = payload
                hits.append(_hit(f.ip, w, payload))
            for login in logins:
                h = self._countries.setdefault(login.subject, {})
                raised, known = _new_country_step(h, login, lookback_ms)
                if raised:
                    new.append(NewCountryHit(login, known))
        return hits, new

    def _refired(self, ip: str, w: int, member: str) -> list[BruteForceHit]:
        """The alert ``member`` triggered in window ``w`` or ``w + 1``, again (a redelivery)."""
        triggers = self._triggers
        for window in (w, w + 1):
            if triggers.get((ip, window)) == member:
                return [_hit(ip, window, self._fired[(ip, window)])]
        return []

    @classmethod
    def _crossing(cls, zset: tuple[list[tuple[int, str]], set[str]], lo: int, hi: int, window_ms: int,
                  threshold: int) -> int | None:
        """The first failure time t, lo < t < hi, with more than ``threshold`` in (t - window, t]
        (at most threshold + 1 looked at, as in BRUTE_FORCE_LUA)."""
        entries = zset[0]
        if not entries or entries[-1][0] <= lo:
            return None  # nothing after lo (failures that come in order): no bisection
        start = bisect.bisect_left(entries, (lo + 1, ""))
        stop = min(bisect.bisect_left(entries, (hi, "")), start + threshold + 1)
        for t, _ in entries[start:stop]:
            if cls._count(zset, t - window_ms, t + 1) > threshold:
                return t
        return None

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


def _payload(member: str, ts_ms: int, members: list[str], window: int) -> bytes:
    return orjson.dumps({"trigger": member, "ts": str(ts_ms), "count": len(members), "w": window,
                         "members": members})


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
            keys, args = self._brute_force_arguments(failures, window_ms, threshold)
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
                hits.append(_hit(f.ip, f.ts_ms // window_ms, payload))  # the window: from the payload
            pos += 1
        if logins:
            for row in replies[pos]:
                new.append(NewCountryHit(logins[int(row[0]) - 1], sorted(_s(c) for c in row[1:])))
        return hits, new

    def _brute_force_arguments(self, failures: list[Failure], window_ms: int,
                               threshold: int) -> tuple[list[str], list[Any]]:
        """BRUTE_FORCE_LUA's KEYS and ARGV: each key once (a burst is one IP, one or two windows,
        a few connections), five arguments per failure."""
        p = self.prefix
        keys: list[str] = []
        args: list[Any] = [threshold, 2 * window_ms + GRACE_MS, len(failures), window_ms]
        windows: dict[tuple[str, int], int] = {}  # (ip, w) -> where its three keys start (1-based)
        origins: dict[tuple[str, str], int] = {}  # (ip, origin) -> where its class zsets start
        for f in failures:
            w = f.ts_ms // window_ms
            k = windows.get((f.ip, w))
            if k is None:
                k = windows[(f.ip, w)] = len(keys) + 1
                zkey = f"{p}bf:{f.ip}"
                keys += [zkey, f"{zkey}:{w}", f"{zkey}:{w + 1}"]
            c = cls = 0
            if f.origin is not None and f.log in CLASS:
                cls = CLASS[f.log]
                c = origins.get((f.ip, f.origin), 0)
                if not c:
                    c = origins[(f.ip, f.origin)] = len(keys) + 1
                    keys += [f"{p}bf:{f.ip}|{f.origin}|{e}" for e in EVIDENCE]
            args += [f.member(), f.ts_ms, k, c, cls]
        return keys, args

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
