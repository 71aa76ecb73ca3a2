"""Redis list source: Filebeat's ``RPUSH`` list consumed as a reliable queue.

Key layout (``{key}`` is the main list, ``filebeat`` by default; ``{worker}`` the worker id):

- ``{key}``                      the main list Filebeat pushes to (oldest event at the head)
- ``{key}:processing:{worker}``  the batch this worker holds; removed only by :meth:`ack`
- ``{key}:heartbeat:{worker}``   a string with a TTL, refreshed by a background thread
- ``{key}:workers``              a set of worker ids that may hold a processing list
- ``{key}:dead``                 dead letters (see :mod:`ingest.deadletter`)

Every state change is one Lua script, so Redis applies it whole or not at all, and every script is
idempotent: a command whose reply was lost (Redis restarted, connection cut) can be repeated.

- ``take`` first refreshes the heartbeat, then tops the processing list up to ``n`` items from the
  head of the main list and returns the *whole* processing list. A batch whose ``take`` reply was
  lost, or that a crashed process with the same id left behind, is therefore simply taken again.
- ``ack`` deletes the processing list and, in the same script, appends the batch's dead letters;
  it does nothing if the list is gone (already acked, or recovered by another worker after this
  worker's heartbeat expired: then the other worker handles the events again, at least once).
- ``give_back`` puts the batch back at the head of the main list, in order.
- ``recover`` moves the processing list of a worker whose heartbeat expired back to the head of
  the main list; the heartbeat check and the move are one script, so exactly one worker does it.

The heartbeat holds a token drawn by each process. A process starting under an id takes the id
over at once (:meth:`RedisListSource.claim`): the heartbeat it finds is that of an earlier process
with the same id (a container restarted: same hostname, pid 1), whose lists it recovers at once
instead of waiting for the heartbeat to expire. Should a *second live* worker run with the same id
(a misconfiguration), it is not stolen from silently: both log it, and every write of the one
taken over (``take``, ``ack``, ``give_back``, heartbeat, ``release``) checks the token in its
script and is refused, so it cannot delete or move the new owner's batch; it stops at its next
heartbeat, and what it held was given back by the new owner (delivered again, at least once).

The guarantee holds only as far as Redis keeps its data: run it with AOF (``appendonly yes``)
or RDB snapshots; a Redis that restarts empty loses what it held, in the main list as much as in
processing lists. A crash of the host loses nothing acknowledged with ``appendfsync always`` (the
compose default), the last second with ``everysec`` (README, ``REDIS_APPENDFSYNC``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

from ingest.errors import ConfigError, SourceUnavailable

log = logging.getLogger(__name__)

#: errors that mean "Redis cannot serve us now" (down, restarting, loading its AOF, read-only replica)
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError,
              redis.exceptions.ReadOnlyError, redis.exceptions.TryAgainError)


#: errors that mean "Redis refuses our credentials": a wrong password or user (WRONGPASS, NOAUTH),
#: or an ACL user without the rights the scripts need (NOPERM)
REDIS_AUTH = (redis.AuthenticationError, redis.exceptions.AuthenticationWrongNumberOfArgsError,
              redis.exceptions.NoPermissionError)


class RedisAuthFailed(SourceUnavailable):
    """Redis refused the credentials. Not "Redis down": said so, and ``/healthz`` fails at once;
    still retried with backoff, since the fix may be on the Redis side (a password or ACL changed
    and Redis restarted) rather than in the worker's settings."""


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def mask_url(url: str) -> str:
    """The URL with its password (and user, if it has no password) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***" if parts.password is not None and parts.username else "***"
    return urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, parts.fragment))


class RedisSourceConfig(BaseModel):
    """Where Filebeat's events are read from and how the reliable queue is named."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field("redis://127.0.0.1:6379/1",
                     description="redis:// or rediss:// (TLS) URL with optional user:password and db number; "
                                 "the password is never logged.")
    key: str = Field("filebeat", min_length=1, description="The list Filebeat RPUSHes to.")
    batch_size: PositiveInt = Field(500, description="Most events taken (and bulk-indexed) at once.")
    batch_wait: timedelta = Field(timedelta(milliseconds=200),
                                  description="How long to wait for a partly filled batch to fill up.")
    block_timeout: timedelta = Field(timedelta(seconds=1),
                                     description="How long one blocking wait on an empty list lasts (BLMOVE); "
                                                 "kept below socket_timeout.")
    processing_key: str = Field("{key}:processing:{worker}",
                                description="Name of a worker's processing list ({key}, {worker} substituted).")
    heartbeat_key: str = Field("{key}:heartbeat:{worker}",
                               description="Name of a worker's heartbeat key ({key}, {worker} substituted).")
    workers_key: str = Field("{key}:workers", description="Set of worker ids that may hold a processing list.")
    heartbeat_ttl: timedelta = Field(timedelta(seconds=30),
                                     description="A worker silent this long is dead: its batch goes back to the list.")
    heartbeat_interval: timedelta | None = Field(None, description="How often the heartbeat is refreshed "
                                                                   "(default a third of heartbeat_ttl).")
    recover_interval: timedelta | None = Field(None, description="How often to look for dead workers' batches "
                                                                 "(default heartbeat_ttl).")
    socket_timeout: timedelta = Field(timedelta(seconds=5), description="Redis socket read/write timeout.")
    socket_connect_timeout: timedelta = Field(timedelta(seconds=5), description="Redis connect timeout.")
    retry_backoff_max: timedelta = Field(timedelta(seconds=10),
                                         description="Longest wait between reconnection attempts.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"Redis URL scheme must be redis://, rediss:// or unix://, not {scheme!r}")
        return value

    @field_validator("heartbeat_ttl")
    @classmethod
    def _ttl(cls, value: timedelta) -> timedelta:
        if value < timedelta(milliseconds=300):
            raise ValueError("heartbeat_ttl must be at least 0.3 s")
        return value

    def names(self, worker: str) -> dict[str, str]:
        fmt = {"key": self.key, "worker": worker}
        return {"processing": self.processing_key.format(**fmt), "heartbeat": self.heartbeat_key.format(**fmt),
                "workers": self.workers_key.format(**fmt)}

    def client(self) -> redis.Redis:
        """A client for this URL (TLS for rediss://) with the configured timeouts."""
        from ingest.sources.packer import FastPacker

        try:
            return redis.Redis.from_url(
                self.url, socket_timeout=self.socket_timeout.total_seconds(),
                socket_connect_timeout=self.socket_connect_timeout.total_seconds(),
                health_check_interval=30, command_packer=FastPacker())
        except ValueError as e:
            raise ConfigError(f"invalid Redis URL {mask_url(self.url)}: {e}", key="redis.url") from e


# Lua helpers shared by the scripts: move a list to the head of another, order kept.
_MOVE_BACK = """
local function move_back(src, dst)
  local items = redis.call('LRANGE', src, 0, -1)
  local n = #items
  local i = n
  while i >= 1 do
    local chunk = {}
    local j = i
    while j >= 1 and j > i - 1000 do
      chunk[#chunk + 1] = items[j]
      j = j - 1
    end
    redis.call('LPUSH', dst, unpack(chunk))
    i = j
  end
  redis.call('DEL', src)
  return n
end
"""

# KEYS: main, processing, heartbeat, workers   ARGV: n, ttl_ms, worker, token
# Moves, and returns how many events the processing list holds: the list itself is read by an
# LRANGE in the same MULTI/EXEC (RedisListSource.fill). Returned from the script, 500 events of a
# kilobyte went through Lua strings once more: ~1.3 ms of Redis time per batch the worker waits for.
_TAKE = """
local hb = redis.call('GET', KEYS[3])
if hb and hb ~= ARGV[4] then
  return redis.error_reply('OWNED worker id ' .. ARGV[3] .. ' is held by another process')
end
redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[2])
redis.call('SADD', KEYS[4], ARGV[3])
local room = tonumber(ARGV[1]) - redis.call('LLEN', KEYS[2])
if room > 0 then
  local items = redis.call('LRANGE', KEYS[1], 0, room - 1)
  if #items > 0 then
    redis.call('LTRIM', KEYS[1], #items, -1)
    for i = 1, #items, 1000 do
      redis.call('RPUSH', KEYS[2], unpack(items, i, math.min(i + 999, #items)))
    end
  end
end
return 1
"""

# KEYS: processing, dead, heartbeat   ARGV: max_dead (0 = unbounded), token, entries...
# Returns -1 if the batch was gone, -2 if the worker id was taken over by another process (its
# heartbeat holds another token), else how many old dead letters the cap trimmed.
_ACK = """
local hb = redis.call('GET', KEYS[3])
if hb and hb ~= ARGV[2] then return -2 end
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local n = #ARGV - 2
local trimmed = 0
if n > 0 then
  local len = 0
  for i = 3, #ARGV, 1000 do
    len = redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
  end
  local cap = tonumber(ARGV[1])
  if cap > 0 and len > cap then
    redis.call('LTRIM', KEYS[2], -cap, -1)
    trimmed = len - cap
  end
end
redis.call('DEL', KEYS[1])
return trimmed
"""

# KEYS: processing, main, heartbeat   ARGV: token   -> events moved, -2 if the id was taken over
_GIVE_BACK = _MOVE_BACK + """
local hb = redis.call('GET', KEYS[3])
if hb and hb ~= ARGV[1] then return -2 end
return move_back(KEYS[1], KEYS[2])
"""

# KEYS: heartbeat, workers   ARGV: token, ttl_ms, id   -> the token found (false if none)
_CLAIM = """
local hb = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return hb
"""

# KEYS: heartbeat of the other worker, its processing list, main, workers   ARGV: its id
_RECOVER = _MOVE_BACK + """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local n = move_back(KEYS[2], KEYS[3])
redis.call('SREM', KEYS[4], ARGV[1])
return n
"""

# KEYS: heartbeat   ARGV: token, ttl_ms   -> 1 refreshed, 0 held by another process
_BEAT = """
local hb = redis.call('GET', KEYS[1])
if hb and hb ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: heartbeat, workers   ARGV: token, id
_RELEASE = """
local hb = redis.call('GET', KEYS[1])
if hb and hb ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
return 1
"""


def _error_reply(e: redis.ResponseError) -> str:
    """Redis's error text: redis-py prefixes the error of a command refused inside a MULTI with
    ``Command # 1 (...) of pipeline caused error: ``."""
    text = str(e)
    _, sep, reply = text.partition(" of pipeline caused error: ")
    return reply if sep else text


class RedisListSource:
    """One worker's view of the queue. Not thread-safe except for the heartbeat thread it runs itself.

    Redis failures raise :class:`SourceUnavailable`; every method can be called again after one.
    """

    def __init__(self, client: redis.Redis, config: RedisSourceConfig, worker_id: str | None = None,
                 *, on_lost_owner: Callable[[], None] | None = None) -> None:
        self.redis = client
        self.config = config
        self.worker_id = worker_id or default_worker_id()
        self.token = uuid.uuid4().hex
        names = config.names(self.worker_id)
        self.main_key = config.key
        self.processing_key = names["processing"]
        self.heartbeat_key = names["heartbeat"]
        self.workers_key = names["workers"]
        self._ttl_ms = int(config.heartbeat_ttl.total_seconds() * 1000)
        self._take = client.register_script(_TAKE)
        self._ack = client.register_script(_ACK)
        self._give_back = client.register_script(_GIVE_BACK)
        self._recover = client.register_script(_RECOVER)
        self._beat = client.register_script(_BEAT)
        self._release = client.register_script(_RELEASE)
        self._claim = client.register_script(_CLAIM)
        self._hb_stop = threading.Event()
        self._hb_thread: threading.Thread | None = None
        self._hb_ok = True
        self._on_lost_owner = on_lost_owner
        self.in_flight = 0
        self.last_trimmed = 0
        #: replies of the commands ``ack(before=...)`` added to the last ack's transaction
        self.last_before: list[Any] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def claim(self) -> bool:
        """Take the worker id at once (see the module doc); True if another process's heartbeat
        was there (an earlier process with this id, or a live duplicate, which then stops)."""
        found = self._call(lambda: self._claim(keys=[self.heartbeat_key, self.workers_key],
                                               args=[self.token, self._ttl_ms, self.worker_id]))
        if isinstance(found, bytes):
            found = found.decode()
        if found and found != self.token:
            log.warning("worker id %s had the heartbeat of another process: taken over at once (this worker "
                        "restarted; were another worker running with this id, it stops at its next heartbeat: "
                        "give each worker its own id)", self.worker_id)
            return True
        return False

    def start_heartbeat(self) -> None:
        if self._hb_thread is not None:
            return
        self._hb_stop.clear()
        self._hb_thread = threading.Thread(target=self._heartbeat_loop, name=f"heartbeat-{self.worker_id}",
                                           daemon=True)
        self._hb_thread.start()

    def stop_heartbeat(self) -> None:
        self._hb_stop.set()
        if self._hb_thread is not None:
            self._hb_thread.join(5)
            self._hb_thread = None

    def release(self) -> None:
        """Delete the heartbeat and leave the workers set (after the batch is acked or given back)."""
        self.stop_heartbeat()
        self._call(lambda: self._release(keys=[self.heartbeat_key, self.workers_key],
                                         args=[self.token, self.worker_id]))

    def _heartbeat_loop(self) -> None:
        interval = (self.config.heartbeat_interval.total_seconds() if self.config.heartbeat_interval
                    else self._ttl_ms / 3000)
        while not self._hb_stop.wait(interval):
            try:
                ok = self._beat(keys=[self.heartbeat_key], args=[self.token, self._ttl_ms])
            except REDIS_DOWN as e:
                if self._hb_ok:
                    log.warning("heartbeat: Redis unavailable (%s); retrying", type(e).__name__)
                self._hb_ok = False
                continue
            except redis.RedisError:
                log.exception("heartbeat failed")
                continue
            if not self._hb_ok:
                log.info("heartbeat: Redis reachable again")
                self._hb_ok = True
            if not ok:
                log.error("worker id %s was taken over by another process (a second worker with this id?); "
                          "stopping", self.worker_id)
                if self._on_lost_owner is not None:
                    self._on_lost_owner()
                return

    # -- the queue ---------------------------------------------------------------------------

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except REDIS_AUTH as e:  # before REDIS_DOWN: AuthenticationError is a ConnectionError
            raise RedisAuthFailed(f"Redis {mask_url(self.config.url)} refused authentication ({type(e).__name__}: "
                                  f"{e}): check the password and user in redis.url / redis.password") from e
        except REDIS_DOWN as e:
            raise SourceUnavailable(f"Redis {mask_url(self.config.url)} unavailable: {type(e).__name__}: {e}"
                                    ) from e
        except redis.ResponseError as e:
            reply = _error_reply(e)
            if reply.startswith("OWNED"):
                raise ConfigError(reply, key="worker.id") from e
            if isinstance(e, redis.exceptions.OutOfMemoryError):  # redis-py drops the OOM code from the text
                raise SourceUnavailable(f"Redis refuses writes: OOM {reply}") from e
            if reply.startswith(("OOM", "MISCONF", "NOREPLICAS")):
                raise SourceUnavailable(f"Redis refuses writes: {reply}") from e
            raise

    def fill(self, n: int) -> list[bytes]:
        """Top the processing list up to ``n`` from the main list; the whole processing list (no wait)."""
        items: list[bytes] = self._call(lambda: self._fill_and_read(n))
        self.in_flight = len(items)
        return items

    def _fill_and_read(self, n: int) -> list[bytes]:
        """The take script and an LRANGE of the processing list in one MULTI/EXEC (one round trip,
        atomic: no other client runs in between). By EVALSHA: a pipeline given the ``Script`` would
        ask ``SCRIPT EXISTS`` first, every time; a script Redis does not have (restarted, ``SCRIPT
        FLUSH``) is loaded and the transaction sent again (the NOSCRIPT answer moved nothing)."""
        keys = (self.main_key, self.processing_key, self.heartbeat_key, self.workers_key)
        for attempt in range(2):
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.evalsha(self._take.sha, len(keys), *keys, n, self._ttl_ms, self.worker_id, self.token)
                pipe.lrange(self.processing_key, 0, -1)
                moved, items = pipe.execute(raise_on_error=False)
            if isinstance(moved, redis.exceptions.NoScriptError) and attempt == 0:
                self._take.sha = self.redis.script_load(self._take.script)
                continue
            if isinstance(moved, Exception):
                raise moved  # OWNED (taken over), OOM...: as from the script alone
            if isinstance(items, Exception):
                raise items
            return items  # type: ignore[no-any-return]
        raise redis.exceptions.NoScriptError("the take script could not be loaded")

    def take(self, n: int | None = None, stop: threading.Event | None = None) -> list[bytes]:
        """Up to ``n`` events, waiting at most ``block_timeout`` for the first and ``batch_wait`` to fill.

        Returns the batch this worker already holds, if any, before taking anything new. Returns
        ``[]`` if nothing came within ``block_timeout``.
        """
        n = n or self.config.batch_size
        items = self.fill(n)
        if not items:
            timeout = min(self.config.block_timeout.total_seconds(),
                          self.config.socket_timeout.total_seconds() * 0.8)
            moved = self._call(lambda: self.redis.blmove(self.main_key, self.processing_key,
                                                         timeout, "LEFT", "RIGHT"))  # type: ignore[arg-type]
            if moved is None:
                return []
            items = self.fill(n)
        if 0 < len(items) < n and self.config.batch_wait.total_seconds() > 0:
            if stop is None:
                time.sleep(self.config.batch_wait.total_seconds())
            elif stop.wait(self.config.batch_wait.total_seconds()):
                return items
            items = self.fill(n)
        return items

    def ack(self, dead_entries: Sequence[bytes] = (), dead_key: str | None = None, dead_max: int | None = None,
            *, before: Callable[[Any], None] | None = None) -> bool:
        """Remove the batch for good and append its dead letters, in one script.

        False if this worker no longer held a batch (already acked, or recovered by another worker
        after this worker's heartbeat expired: the dead letters are then that worker's to write).

        ``before(pipe)``, if given, queues more commands (the notifications of the batch's alerts,
        :mod:`ingest.notify.hook`) into a MULTI/EXEC transaction that ends with the ack script, so
        they are applied with the ack, all or nothing, and see the processing list still there;
        their replies (an exception object for one that failed) are left in :attr:`last_before`.
        """
        dkey = dead_key or f"{self.main_key}:dead"
        keys = [self.processing_key, dkey, self.heartbeat_key]
        args: list[Any] = [dead_max or 0, self.token, *dead_entries]
        self.last_before = []
        if before is None:
            done = self._call(lambda: self._ack(keys=keys, args=args))
        else:
            def transaction() -> Any:
                with self.redis.pipeline(transaction=True) as pipe:
                    before(pipe)
                    self._ack(keys=keys, args=args, client=pipe)
                    replies = pipe.execute(raise_on_error=False)
                if isinstance(replies[-1], Exception):
                    raise replies[-1]
                self.last_before = replies[:-1]
                return replies[-1]
            done = self._call(transaction)
        self.in_flight = 0
        if done == -2:
            self.last_trimmed = 0
            self._lost_owner("ack")
            return False
        if done == -1:
            self.last_trimmed = 0
            log.warning("batch already gone from %s at ack (recovered by another worker?)", self.processing_key)
            return False
        #: old dead letters dropped by the last ack because the dead list reached its max_length
        self.last_trimmed = int(done)
        return True

    def give_back(self) -> int:
        """Put the batch back at the head of the main list, in order; how many events went back."""
        n = int(self._call(lambda: self._give_back(keys=[self.processing_key, self.main_key, self.heartbeat_key],
                                                   args=[self.token])))
        self.in_flight = 0
        if n == -2:
            self._lost_owner("give back")
            return 0
        return n

    def _lost_owner(self, what: str) -> None:
        """Another process took this worker id over (and gave back what this one held): stop."""
        log.error("cannot %s: worker id %s was taken over by another process; its batch is that "
                  "process's now; stopping", what, self.worker_id)
        if self._on_lost_owner is not None:
            self._on_lost_owner()

    def recover(self) -> int:
        """Give back the batches of workers whose heartbeat expired; how many events went back."""
        total = 0
        ids = {m.decode() if isinstance(m, bytes) else m
               for m in self._call(lambda: self.redis.smembers(self.workers_key))}
        for other in sorted(ids):
            if other == self.worker_id:
                continue
            total += self._recover_one(other)
        return total

    def recover_orphans(self) -> int:
        """Also look (SCAN) for processing lists of workers missing from the workers set."""
        prefix, _, suffix = self.config.processing_key.format(key=self.main_key, worker="\0").partition("\0")
        if suffix:
            return 0
        total = 0
        for raw in self._call(lambda: list(self.redis.scan_iter(match=_glob_escape(prefix) + "*", count=1000))):
            name = raw.decode() if isinstance(raw, bytes) else raw
            other = name[len(prefix):]
            if other and other != self.worker_id:
                total += self._recover_one(other)
        return total

    def _recover_one(self, other: str) -> int:
        names = self.config.names(other)
        n = int(self._call(lambda: self._recover(
            keys=[names["heartbeat"], names["processing"], self.main_key, self.workers_key], args=[other])))
        if n > 0:
            log.warning("recovered %d events from dead worker %s (heartbeat expired)", n, other)
        return max(n, 0)

    def lengths(self, dead_key: str | None = None) -> dict[str, int]:
        """Lengths of the main list, this worker's processing list and the dead list."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.main_key)
        pipe.llen(self.processing_key)
        pipe.llen(dead_key or f"{self.main_key}:dead")
        main, proc, dead = self._call(pipe.execute)
        return {"main": int(main), "processing": int(proc), "dead": int(dead)}


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
