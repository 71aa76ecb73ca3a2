"""Where open sessions, orphan logouts and tombstones live: Redis (shared by workers) or memory.

Both stores run the same pure transitions (:mod:`ingest.sessions.state`) inside
:meth:`SessionStore.transact`: load the states of a batch's keys, let the caller change them, then
write them back atomically. Redis does it with optimistic locking (``WATCH`` the keys, ``MGET``,
``MULTI`` ... ``EXEC``, rerun on conflict; the writes inside are one ``EVAL`` of :data:`WRITE_LUA`,
not a command per key): three round trips per batch whatever its size, and two
workers that touch the same key in the same instant are serialised, so a login and its logout
handled by two workers at once still make exactly one session.

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
After = Callable[[Any, T], None]

#: Redis keys live this long past their last logical deadline, in case no worker runs expire().
GRACE_MS = 3_600_000
#: Optimistic-lock retries before a batch gives up (conflicts need two workers on one key).
MAX_ATTEMPTS = 64

INDEXES = ("open", "orph", "tomb", "due")


# The writes of one transaction, queued in its MULTI as one EVAL (the script's text, not its sha:
# a NOSCRIPT answered at EXEC would leave the other commands of the transaction applied).
# KEYS: the indexes (open, orph, tomb, due), then the state keys written. ARGV: their number, then
# per state key its JSON and PX in ms ("" and "": delete it); then per index the number of members
# added, (score, member) each, the number removed, the members. Returns the sizes of open, orph, tomb.
WRITE_LUA = """
local n = tonumber(ARGV[1])
local a = 2
for i = 1, n do
  if ARGV[a + 1] == '' then
    redis.call('DEL', KEYS[4 + i])
  else
    redis.call('SET', KEYS[4 + i], ARGV[a], 'PX', ARGV[a + 1])
  end
  a = a + 2
end
for x = 1, 4 do
  local adds = tonumber(ARGV[a])
  a = a + 1
  for j = 1, adds do
    redis.call('ZADD', KEYS[x], ARGV[a], ARGV[a + 1])
    a = a + 2
  end
  local removes = tonumber(ARGV[a])
  a = a + 1
  for j = 1, removes do
    redis.call('ZREM', KEYS[x], ARGV[a])
    a = a + 1
  end
end
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3])}
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
    def transact(self, keys: Collection[str], fn: Callable[[dict[str, State]], T], now: int,
                 after: After[T] | None = None) -> tuple[T, Sizes]:
        """Run ``fn`` on the states of ``keys`` (missing ones empty) and store what it leaves, atomically.

        ``fn`` changes the states in place and must be free of other side effects: it may run
        again on fresh states after a conflict. ``now`` (µs) is only used for key TTLs.
        ``after(pipe, result)`` queues more commands into the same MULTI/EXEC (the pending session
        documents, :mod:`ingest.pending`); the memory store calls it with ``pipe`` None.
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

    def transact(self, keys: Collection[str], fn: Callable[[dict[str, State]], T], now: int,
                 after: After[T] | None = None) -> tuple[T, Sizes]:
        with self._lock:
            keys = list(dict.fromkeys(keys))
            states = {k: decode(self._data.get(k)) for k in keys}
            result = fn(states)
            if after is not None:
                after(None, result)
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

    def _k(self, key: str) -> str:
        return f"{self.prefix}k:{key}"

    def _ix(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def transact(self, keys: Collection[str], fn: Callable[[dict[str, State]], T], now: int,
                 after: After[T] | None = None) -> tuple[T, Sizes]:
        keys = list(dict.fromkeys(keys))
        names = [self._k(k) for k in keys]
        try:
            for _ in range(MAX_ATTEMPTS):
                with self.client.pipeline(transaction=True) as pipe:
                    try:
                        if names:
                            pipe.watch(*names)
                            raws: list[bytes | None] = [
                                r.encode() if isinstance(r, str) else r for r in pipe.mget(names)
                            ]
                        else:
                            raws = []
                        states = {k: decode(raw) for k, raw in zip(keys, raws, strict=True)}
                        before = {k: self._entry(states[k]) for k in keys}
                        result = fn(states)
                        pipe.multi()
                        pipe.eval(WRITE_LUA, *self._write_arguments(keys, names, raws, before, states, now))
                        if after is not None:
                            after(pipe, result)
                        replies = pipe.execute()
                    except redis.WatchError:
                        self.conflicts += 1
                        continue
                return result, Sizes(*replies[0])
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise SessionStoreUnavailable(f"session store unreachable: {e}") from e
        raise SessionStoreUnavailable(f"session store contended: {MAX_ATTEMPTS} conflicting attempts")

    def _write_arguments(self, keys: list[str], names: list[str], raws: list[bytes | None],
                         before: dict[str, IndexEntry | None], states: dict[str, State], now: int) -> list[Any]:
        """WRITE_LUA's numkeys, KEYS and ARGV for the states left by a transaction: only what changed."""
        writes: list[str] = []
        values: list[Any] = []
        changes: dict[str, tuple[list[Any], list[str]]] = {index: ([], []) for index in INDEXES}
        for k, name, raw in zip(keys, names, raws, strict=True):
            state = states[k]
            entry = self._entry(state)
            if entry is None:
                if raw is not None:
                    writes.append(name)
                    values += ["", ""]  # deleted
            else:
                encoded = encode(state)
                if encoded != raw:
                    writes.append(name)
                    values += [encoded, max(1, (entry.last - now) // 1000) + GRACE_MS]
            old_entry = before[k]
            for index in INDEXES:
                score = getattr(entry, index) if entry is not None else None
                old = getattr(old_entry, index) if old_entry is not None else None
                if score is None:
                    if old is not None or raw is None:  # raw None: maybe a member whose key Redis expired
                        changes[index][1].append(k)
                elif score != old:
                    changes[index][0].extend((score, k))
        args: list[Any] = [len(writes), *values]
        for index in INDEXES:
            adds, removes = changes[index]
            args += [len(adds) // 2, *adds, len(removes), *removes]
        return [len(INDEXES) + len(writes), *(self._ix(index) for index in INDEXES), *writes, *args]

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
