"""Where open sessions, orphan logouts and tombstones live: Redis (shared by workers) or memory.

Both stores run the same pure transitions (:mod:`ingest.sessions.state`) inside
:meth:`SessionStore.transact`: load the states of a batch's keys, let the caller change them, then
write them back atomically. Redis does it with optimistic locking: ``MGET`` the keys, then one
script (:data:`_WRITE`) that checks every key still holds what was read and only then writes the
new states and the index changes and returns the index sizes (rerun on conflict): two round trips
and two commands per batch whatever its size, and two workers that touch the same key in the same
instant are serialised, so a login and its logout handled by two workers at once still make
exactly one session. (It was ``WATCH``/``MGET``/``MULTI`` with one command per key: three round
trips and ~50 commands per batch of the benchmark corpus, 16,000 instructions per event.)

Redis layout, under ``key_prefix`` (default ``audit-ingest:sessions:``)::

    <prefix>k:<pairing key>   string, JSON state of the key, PX = its last deadline + grace
    <prefix>open              zset  pairing key -> login time (µs) of its open session
    <prefix>orph              zset  pairing key -> processing time (µs) of its oldest orphan logout
    <prefix>tomb              zset  pairing key -> processing time (µs) of its newest closure
    <prefix>due               zset  pairing key -> processing time (µs) when expire() has work there

Pairing keys: ``ssh|<host>|<pid>``, ``openvpn|<host>|<user>|<ip>|<port>``, ``teleport|<sid>``.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import redis

from ingest.errors import SourceUnavailable
from ingest.sessions.config import SessionConfig
from ingest.sessions.state import IndexEntry, State, Ttl, empty, index_of, new_state

T = TypeVar("T")

#: Redis keys live this long past their last logical deadline, in case no worker runs expire().
GRACE_MS = 3_600_000
#: Optimistic-lock retries before a batch gives up (conflicts need two workers on one key).
MAX_ATTEMPTS = 64

INDEXES = ("open", "orph", "tomb", "due")

# Compare-and-set of a batch's states. KEYS: the n state keys, then the indexes (open, orph, tomb,
# due). ARGV[1] = n; per key: the value read ("" = none), the new value ("" = delete; equal to the
# value read = unchanged), PX; then per index: number of adds, (score, member)..., number of
# removes, member... Returns {0} if a key no longer holds what was read (nothing written), else
# {1, ZCARD open, ZCARD orph, ZCARD tomb}.
_WRITE = """
local n = tonumber(ARGV[1])
for i = 1, n do
  local cur = redis.call('GET', KEYS[i]) or ''
  if cur ~= ARGV[3 * i - 1] then return {0} end
end
for i = 1, n do
  local old, new = ARGV[3 * i - 1], ARGV[3 * i]
  if new ~= old then
    if new == '' then redis.call('DEL', KEYS[i]) else redis.call('SET', KEYS[i], new, 'PX', ARGV[3 * i + 1]) end
  end
end
local a = 3 * n + 2
for x = 1, 4 do
  local index = KEYS[n + x]
  local adds = tonumber(ARGV[a])
  for j = 1, adds do redis.call('ZADD', index, ARGV[a + 2 * j - 1], ARGV[a + 2 * j]) end
  a = a + 2 * adds + 1
  local removes = tonumber(ARGV[a])
  for j = 1, removes do redis.call('ZREM', index, ARGV[a + j]) end
  a = a + removes + 1
end
return {1, redis.call('ZCARD', KEYS[n + 1]), redis.call('ZCARD', KEYS[n + 2]), redis.call('ZCARD', KEYS[n + 3])}
"""


class SessionStoreUnavailable(SourceUnavailable):
    """The session store (Redis) cannot be reached now, or stays contended: retry the batch.

    A SourceUnavailable: the same Redis as the source in practice, handled the same way.
    """


@dataclass(frozen=True, slots=True)
class Sizes:
    """How many keys each bounded index holds after a write."""

    open: int
    orph: int
    tomb: int


def encode(state: State) -> bytes:
    return orjson.dumps(state, option=orjson.OPT_SORT_KEYS)


def decode(raw: bytes | None) -> State:
    if raw is None:
        return new_state()
    state: State = orjson.loads(raw)
    return state


class SessionStore(ABC):
    """The state of every pairing key. Same semantics in every implementation."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.ttl = Ttl.of(config)

    @abstractmethod
    def transact(self, keys: Collection[str], fn: Callable[[dict[str, State]], T], now: int) -> tuple[T, Sizes]:
        """Run ``fn`` on the states of ``keys`` (missing ones empty) and store what it leaves, atomically.

        ``fn`` changes the states in place and must be free of other side effects: it may run
        again on fresh states after a conflict. ``now`` (µs) is only used for key TTLs.
        """

    @abstractmethod
    def due(self, now: int, limit: int) -> list[str]:
        """Keys on which expire() at processing time ``now`` (µs) has work, earliest first."""

    @abstractmethod
    def oldest(self, index: str, count: int) -> list[str]:
        """The ``count`` lowest-ranked keys of index ``open``, ``orph`` or ``tomb``."""

    def _entry(self, state: State) -> IndexEntry | None:
        return None if empty(state) else index_of(state, self.ttl)


class MemorySessionStore(SessionStore):
    """One process's store (``audit-ingest parse``, tests). States are kept encoded, like Redis."""

    def __init__(self, config: SessionConfig | None = None) -> None:
        super().__init__(config or SessionConfig())
        self._data: dict[str, bytes] = {}
        self._index: dict[str, dict[str, int]] = {name: {} for name in INDEXES}
        self._lock = threading.Lock()

    def transact(self, keys: Collection[str], fn: Callable[[dict[str, State]], T], now: int) -> tuple[T, Sizes]:
        with self._lock:
            keys = list(dict.fromkeys(keys))
            states = {k: decode(self._data.get(k)) for k in keys}
            result = fn(states)
            for k in keys:
                entry = self._entry(states[k])
                if entry is None:
                    self._data.pop(k, None)
                else:
                    self._data[k] = encode(states[k])
                for name in INDEXES:
                    score = getattr(entry, name) if entry is not None else None
                    if score is None:
                        self._index[name].pop(k, None)
                    else:
                        self._index[name][k] = score
            return result, Sizes(len(self._index["open"]), len(self._index["orph"]), len(self._index["tomb"]))

    def due(self, now: int, limit: int) -> list[str]:
        with self._lock:
            found = sorted((s, k) for k, s in self._index["due"].items() if s <= now)
            return [k for _, k in found[:limit]]

    def oldest(self, index: str, count: int) -> list[str]:
        with self._lock:
            return [k for _, k in sorted((s, k) for k, s in self._index[index].items())[:count]]

    def __len__(self) -> int:
        return len(self._data)


class RedisSessionStore(SessionStore):
    """The store shared by every worker on one Redis (see the module doc for the key layout)."""

    def __init__(self, client: redis.Redis, config: SessionConfig | None = None) -> None:
        super().__init__(config or SessionConfig())
        self.client = client
        self.prefix = self.config.key_prefix
        #: Transactions rerun because another worker changed one of their keys meanwhile.
        self.conflicts = 0
        self._write = client.register_script(_WRITE)

    def _k(self, key: str) -> str:
        return f"{self.prefix}k:{key}"

    def _ix(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def transact(self, keys: Collection[str], fn: Callable[[dict[str, State]], T], now: int) -> tuple[T, Sizes]:
        keys = list(dict.fromkeys(keys))
        names = [self._k(k) for k in keys]
        script_keys = names + [self._ix(index) for index in INDEXES]
        try:
            for _ in range(MAX_ATTEMPTS):
                raws: list[bytes | None] = (
                    [r.encode() if isinstance(r, str) else r for r in self.client.mget(names)] if names else [])
                states = {k: decode(raw) for k, raw in zip(keys, raws, strict=True)}
                before = {k: self._entry(states[k]) for k in keys}
                result = fn(states)
                args: list[Any] = [len(keys)]
                adds: dict[str, dict[str, int]] = {index: {} for index in INDEXES}
                removes: dict[str, list[str]] = {index: [] for index in INDEXES}
                for k, raw in zip(keys, raws, strict=True):
                    self._write_args(args, k, raw, before[k], states[k], now, adds, removes)
                for index in INDEXES:
                    args.append(len(adds[index]))
                    for member, score in adds[index].items():
                        args += (score, member)
                    args.append(len(removes[index]))
                    args += removes[index]
                reply = self._write(keys=script_keys, args=args)
                if int(reply[0]) == 0:  # another worker changed one of the keys since the MGET
                    self.conflicts += 1
                    continue
                return result, Sizes(*(int(n) for n in reply[1:4]))
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise SessionStoreUnavailable(f"session store unreachable: {e}") from e
        raise SessionStoreUnavailable(f"session store contended: {MAX_ATTEMPTS} conflicting attempts")

    def _write_args(self, args: list[Any], key: str, raw: bytes | None, before: IndexEntry | None, state: State,
                    now: int, adds: dict[str, dict[str, int]], removes: dict[str, list[str]]) -> None:
        """The script's arguments for one key's state; its index changes into ``adds`` / ``removes``."""
        old = raw if raw is not None else b""
        entry = self._entry(state)
        if entry is None:
            args += (old, b"", 0)
        else:
            args += (old, encode(state), max(1, (entry.last - now) // 1000) + GRACE_MS)
        for index in INDEXES:
            score = getattr(entry, index) if entry is not None else None
            was = getattr(before, index) if before is not None else None
            if score is None:
                if was is not None or raw is None:  # raw None: maybe a member whose key Redis expired
                    removes[index].append(key)
            elif score != was:
                adds[index][key] = score

    def due(self, now: int, limit: int) -> list[str]:
        try:
            found: Any = self.client.zrangebyscore(self._ix("due"), "-inf", now, start=0, num=limit)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise SessionStoreUnavailable(f"session store unreachable: {e}") from e
        return [k.decode() if isinstance(k, bytes) else str(k) for k in found]

    def oldest(self, index: str, count: int) -> list[str]:
        try:
            found: Any = self.client.zrange(self._ix(index), 0, count - 1)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise SessionStoreUnavailable(f"session store unreachable: {e}") from e
        return [k.decode() if isinstance(k, bytes) else str(k) for k in found]
