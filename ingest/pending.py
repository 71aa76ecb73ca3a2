"""Derived documents (sessions, alerts) pending until a batch that carried them is acknowledged.

A session document or an alert is made from Redis state (a session closed by ``expire()``, an
alert whose "fired" flag is set), not from the events of the batch alone; a redelivered batch may
not make it again (the state already says "closed" / "fired"). So each derived document is written
here by the step that makes it (for sessions in the same MULTI/EXEC that closes them, for alerts
right after the script that fires them) and deleted only in the MULTI/EXEC of the ack of a batch
that carried it, i.e. after Elasticsearch confirmed it. A batch that is given back, or a worker that
dies, leaves it here; once its lease is over, the next batch of any worker carries it again
(:meth:`PendingDocs.reclaim`), or, while the queue is empty, a worker indexes it by itself
(:meth:`PendingDocs.carry`). Ids are deterministic and sessions carry an external version, so a
document carried twice is stored once (``create`` or a version not above the stored one: 409, done).

Redis layout, under ``<main list>:pending:`` (``filebeat:pending:``)::

    docs    hash  entry id (``<_id>`` or ``<_id>@<version>``) -> JSON {"i": index, "id", "d": doc, "v"}
    lease   zset  entry id -> wall-clock ms after which any worker may carry it again

Bound: the derived documents of the batches not yet acknowledged (an Elasticsearch outage holds
them all; nothing else grows it). Deleted by the ack that carried them, or replaced by a newer
version of the same session (its older entry is deleted in the same transaction).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
import redis

from ingest.errors import SourceUnavailable
from ingest.model import IndexAction, Rejected
from ingest.sinks.elasticsearch import index_for

#: how long a derived document is left to the batch that made it before another batch carries it
DEFAULT_LEASE_MS = 60_000
#: most pending documents one batch carries again
RECLAIM_LIMIT = 200
#: seconds between two looks for pending documents whose lease is over (one command each)
CHECK_INTERVAL = 1.0

# KEYS: lease, docs   ARGV: now_ms, new deadline_ms, limit
# -> the entries whose lease is over (their lease moved to the new deadline: this batch carries them)
_RECLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local entry = redis.call('HGET', KEYS[2], id)
  if entry then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id)
    out[#out + 1] = entry
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""


def entry_id(action: IndexAction) -> str:
    return action.id if action.version is None else f"{action.id}@{action.version}"


def carried(actions: Iterable[IndexAction]) -> list[str]:
    """Entry ids of the derived documents among ``actions`` (those not made from an input event)."""
    return [entry_id(a) for a in actions if a.raw is None]


class PendingDocs:
    """The pending derived documents of one queue (see the module doc)."""

    def __init__(self, client: redis.Redis, prefix: str, *, session_index_prefix: str = "audit-sessions-",
                 lease_ms: int = DEFAULT_LEASE_MS, check_interval: float = CHECK_INTERVAL,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.docs_key = prefix + "docs"
        self.lease_key = prefix + "lease"
        self.session_index_prefix = session_index_prefix
        self.lease_ms = lease_ms
        self.check_interval = check_interval
        self.clock = clock
        self._reclaim = client.register_script(_RECLAIM)
        self._last_check = float("-inf")

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def session_action(self, doc_id: str, doc: dict[str, Any], version: int) -> IndexAction:
        """The index action of a session document (daily session index of its ``@timestamp``)."""
        return IndexAction(index_for(doc.get("@timestamp"), self.session_index_prefix), doc_id, doc, None, version)

    # -- written with the state that made them -----------------------------------------------

    def queue_add(self, pipe: Any, actions: Sequence[IndexAction], drop: Sequence[str] = ()) -> None:
        """Queue in ``pipe`` (a MULTI) the writing of ``actions`` as pending, and the deletion of
        the entries ``drop`` (older versions they replace)."""
        if not actions and not drop:
            return
        if actions:
            deadline = self._now_ms() + self.lease_ms
            pipe.hset(self.docs_key, mapping={entry_id(a): _encode(a) for a in actions})
            pipe.zadd(self.lease_key, {entry_id(a): deadline for a in actions})
        if drop:
            pipe.hdel(self.docs_key, *drop)
            pipe.zrem(self.lease_key, *drop)

    def add(self, actions: Sequence[IndexAction]) -> None:
        """Write ``actions`` as pending in a transaction of their own (alerts)."""
        if not actions:
            return
        try:
            with self.client.pipeline(transaction=True) as pipe:
                self.queue_add(pipe, actions)
                pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise SourceUnavailable(f"pending documents: Redis unreachable: {e}") from e

    # -- carried by a batch ------------------------------------------------------------------

    def reclaim(self, present: Iterable[IndexAction] = ()) -> list[IndexAction]:
        """The pending documents whose lease is over, for this batch to carry (their lease is
        renewed); those already among ``present`` are left out. At most one command per
        ``check_interval``."""
        now = time.monotonic()
        if now - self._last_check < self.check_interval:
            return []
        self._last_check = now
        now_ms = self._now_ms()
        try:
            raws: list[bytes] = self._reclaim(keys=[self.lease_key, self.docs_key],
                                              args=[now_ms, now_ms + self.lease_ms, RECLAIM_LIMIT])
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise SourceUnavailable(f"pending documents: Redis unreachable: {e}") from e
        if not raws:
            return []
        have = {entry_id(a) for a in present if a.raw is None}
        out = []
        for raw in raws:
            action = _decode(raw)
            if entry_id(action) not in have:
                have.add(entry_id(action))
                out.append(action)
        return out

    def queue_done(self, pipe: Any, ids: Sequence[str]) -> None:
        """Queue in ``pipe`` (the ack's MULTI) the deletion of the entries a confirmed batch carried."""
        if ids:
            pipe.hdel(self.docs_key, *ids)
            pipe.zrem(self.lease_key, *ids)

    def carry(self, write: Callable[[list[IndexAction]], list[Rejected]],
              dead_entries: Callable[[list[Rejected]], list[bytes]], dead_key: str, dead_max: int | None) -> int:
        """With no batch to carry them (an idle queue): index the pending documents whose lease is
        over by themselves, then delete them, and dead-letter what Elasticsearch refused, in one
        transaction. ``write`` raises SinkUnavailable when Elasticsearch does not take them: they
        stay pending. How many were carried."""
        actions = self.reclaim()
        if not actions:
            return 0
        rejected = write(actions)
        entries = dead_entries(rejected) if rejected else []
        try:
            with self.client.pipeline(transaction=True) as pipe:
                if entries:
                    pipe.rpush(dead_key, *entries)
                    if dead_max:
                        pipe.ltrim(dead_key, -dead_max, -1)
                self.queue_done(pipe, carried(actions))
                pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise SourceUnavailable(f"pending documents: Redis unreachable: {e}") from e
        return len(actions)

    def count(self) -> int:
        return int(self.client.hlen(self.docs_key))  # type: ignore[arg-type]


def _encode(action: IndexAction) -> bytes:
    return orjson.dumps({"i": action.index, "id": action.id, "d": action.doc, "v": action.version})


def _decode(raw: bytes) -> IndexAction:
    data = orjson.loads(raw)
    return IndexAction(data["i"], data["id"], data["d"], None, data.get("v"))
