"""Dead letters: events that cannot be indexed, kept in a Redis list with the reason.

Each entry is one JSON object::

    {"raw": "<the event as UTF-8 text>", "reason": "...", "error_code": "invalid_json",
     "stage": "decode", "status": null, "time": "2024-05-17T16:02:03.412Z", "worker": "host:123"}

``raw`` is base64 with ``"raw_encoding": "base64"`` when the event is not valid UTF-8. The worker
writes a batch's dead letters in the same Lua script that acknowledges the batch
(:meth:`ingest.sources.redis_list.RedisListSource.ack`), so a crash can neither ack a batch and
lose its dead letters nor write them twice. ``replay`` moves entries back to the main list, one
atomic script per entry, for another try after a fix; a notification that could not be sent
(stage ``notify``, see :mod:`ingest.notify`) goes back to its output's queue instead.
"""

from __future__ import annotations

import base64
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from ingest.model import DeadLetter

log = logging.getLogger(__name__)


class DeadLetterConfig(BaseModel):
    """Where dead letters go."""

    model_config = ConfigDict(extra="forbid")

    key: str | None = Field(None, description="Redis list of dead letters (default `<redis.key>:dead`).")
    max_length: PositiveInt | None = Field(
        None, description="If set, only the newest this many dead letters are kept (older ones are dropped, "
                          "counted in audit_ingest_dead_letters_trimmed_total). Unbounded by default.")

    def key_for(self, main_key: str) -> str:
        return self.key or f"{main_key}:dead"


# KEYS: dead, main   ARGV: the entry expected at the head, the raw event to push
_REPLAY_ONE = """
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[1] then return 0 end
redis.call('LPOP', KEYS[1])
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
"""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode(dead: DeadLetter, worker: str, time: str | None = None) -> bytes:
    """One dead letter as the JSON entry stored in Redis."""
    entry: dict[str, Any] = {}
    try:
        entry["raw"] = dead.raw.decode("utf-8")
    except UnicodeDecodeError:
        entry["raw"] = base64.b64encode(dead.raw).decode("ascii")
        entry["raw_encoding"] = "base64"
    entry.update(reason=dead.reason, error_code=dead.error_code, stage=dead.stage, status=dead.status,
                 time=time or now_iso(), worker=worker)
    return orjson.dumps(entry)


def decode_raw(entry: dict[str, Any]) -> bytes:
    """The original event bytes of a stored entry."""
    raw = entry.get("raw", "")
    if entry.get("raw_encoding") == "base64":
        return base64.b64decode(raw)
    return str(raw).encode("utf-8")


class DeadLetterStore:
    def __init__(self, client: redis.Redis, key: str, *, main_key: str | None = None, worker: str = "",
                 max_length: int | None = None) -> None:
        self.redis = client
        self.key = key
        self.main_key = main_key or (key[: -len(":dead")] if key.endswith(":dead") else "filebeat")
        self.worker = worker
        self.max_length = max_length
        self._replay_one = client.register_script(_REPLAY_ONE)
        #: puts a notification dead letter (stage ``notify``) back on its output's queue instead of
        #: the main list (:meth:`ingest.notify.queue.NotifyQueue.requeue_dead`); unset: left in place
        self.requeue_notification: Callable[[bytes, dict[str, Any]], bool] | None = None

    def entries(self, dead: Iterable[DeadLetter]) -> list[bytes]:
        """Encoded entries, for :meth:`RedisListSource.ack` to write with the acknowledgement."""
        when = now_iso()
        return [encode(d, self.worker, when) for d in dead]

    def put(self, dead: list[DeadLetter]) -> int:
        """Append dead letters on their own (outside a batch acknowledgement); how many."""
        if not dead:
            return 0
        pipe = self.redis.pipeline(transaction=True)
        pipe.rpush(self.key, *self.entries(dead))
        if self.max_length:
            pipe.ltrim(self.key, -self.max_length, -1)
        pipe.execute()
        return len(dead)

    def count(self) -> int:
        return int(self.redis.llen(self.key))

    def list(self, limit: int = 100, start: int = 0) -> list[dict[str, Any]]:
        """Up to ``limit`` entries, oldest first."""
        if limit <= 0:
            return []
        return [orjson.loads(e) for e in self.redis.lrange(self.key, start, start + limit - 1)]

    def summary(self) -> dict[str, Any]:
        """``{"count": n, "by_code": {...}, "by_stage": {...}, "by_reason": {...}}`` over the whole list.

        ``by_reason`` counts the first 80 characters of each reason (reasons quote the value).
        """
        by_code: Counter[str] = Counter()
        by_stage: Counter[str] = Counter()
        by_reason: Counter[str] = Counter()
        total = 0
        start = 0
        while True:
            chunk = self.redis.lrange(self.key, start, start + 999)
            if not chunk:
                break
            for raw in chunk:
                total += 1
                try:
                    entry = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    by_code["unreadable_entry"] += 1
                    continue
                by_code[str(entry.get("error_code"))] += 1
                by_stage[str(entry.get("stage"))] += 1
                by_reason[str(entry.get("reason"))[:80]] += 1
            start += len(chunk)
        return {"count": total, "by_code": dict(by_code.most_common()), "by_stage": dict(by_stage.most_common()),
                "by_reason": dict(by_reason.most_common(20))}

    def replay(self, n: int | None = None, target: str | None = None) -> int:
        """Move up to ``n`` entries (all present now, by default) back to the main list; how many moved.

        Each entry is removed and its raw event RPUSHed in one script, so two replays at once,
        or a crash, never move an entry twice or lose it. Entries that fail again come back at
        the end of the dead list and are not replayed again by this call.
        """
        dest = target or self.main_key
        limit = self.count() if n is None else min(n, self.count())
        moved = 0
        while moved < limit:
            head: bytes | None = self.redis.lindex(self.key, 0)  # type: ignore[assignment]
            if head is None:
                break
            try:
                entry = orjson.loads(head)
                raw = decode_raw(entry)
            except (orjson.JSONDecodeError, ValueError, AttributeError):
                log.warning("dead letter entry is not a valid entry; replaying it as is")
                entry, raw = None, head
            if isinstance(entry, dict) and entry.get("stage") == "notify":
                # an alert whose message was not sent: back to its output's queue, not to the main list
                if self.requeue_notification is None or not (entry.get("output") and entry.get("alert_id")):
                    log.warning("a notification dead letter without its output is at the head of %s, or no "
                                "notification queue was given: replay stops there", self.key)
                    break
                if self.requeue_notification(head, entry):
                    moved += 1
                continue
            if self._replay_one(keys=[self.key, dest], args=[head, raw]):
                moved += 1
        if moved:
            log.info("replayed %d dead letters from %s to %s", moved, self.key, dest)
        return moved
