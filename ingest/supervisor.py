"""``audit-ingest run --processes N``: N worker processes from one command, one metrics port.

Python runs one core per process; Logstash's ``pipeline.workers`` defaults to the core count, and
so does ``worker.processes``. The supervisor starts each child as ``python -m ingest.cli run``
(``--processes 1``: the single-process worker of today, unchanged) with the worker id
``<worker.id>-<k>`` (``<hostname>:<pid of the supervisor>-<k>`` by default): the id of slot
``k`` is the same every time that child is restarted, so the processing lists a dead child left
(``<id>`` and ``<id>#2``) are taken again by its restarted self.

- A child that exits is restarted, after a backoff that doubles with each exit that came less
  than ``QUICK_EXIT`` seconds after its start (1 s, 2 s ... ``BACKOFF_MAX``); three such exits in
  a row are logged as a crash loop, with the exit code. Before the restart, the heartbeats the
  dead child held are deleted if they still carry its token (it wrote them in its status file,
  :mod:`ingest.procmetrics`): the new child claims the id at once instead of waiting for the TTL.
  A child killed with SIGKILL is therefore recovered at once by its restarted self, and if the
  whole supervisor is gone, by heartbeat expiry like any dead worker.
- SIGTERM/SIGINT: forwarded (SIGTERM) to every child, which finishes or gives back its batches
  exactly as a single worker does (``worker.shutdown_timeout``); a second signal is forwarded
  too (the children then give back at once). The supervisor exits 0 when every child exited 0.
  Children run in their own process group, so a Ctrl-C in a terminal reaches them once, through
  the supervisor; a child whose supervisor disappeared (SIGKILL) stops by itself.
- ``/metrics`` and ``/healthz`` of every child on ``metrics.port``, served here
  (:class:`ingest.procmetrics.Aggregator`).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import redis

from ingest.errors import ConfigError
from ingest.procmetrics import AggregateServer, Aggregator, supervisor_metrics
from ingest.sources.redis_list import default_worker_id

log = logging.getLogger("ingest.supervisor")

QUICK_EXIT = 30.0  #: a child that exits sooner than this after its start counts towards a crash loop
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 30.0
CRASH_LOOP = 3  #: quick exits in a row logged as a crash loop
POLL = 0.2

# KEYS: heartbeat   ARGV: token of the dead child: delete it only if nobody else took the id since
_RELEASE_DEAD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def cpu_count() -> int:
    """The CPUs this process may run on (affinity, e.g. ``taskset``), else all of them."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def backoff(quick_exits: int) -> float:
    """Seconds before a restart after ``quick_exits`` quick exits in a row (0: it ran a while)."""
    if quick_exits <= 0:
        return 0.0
    return float(min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** (quick_exits - 1)))


@dataclass
class Child:
    """One worker slot: its id is stable, its process changes with restarts."""

    slot: int
    worker_id: str
    status: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0  # time.time() of the last start
    started_mono: float = 0.0
    restart_at: float | None = None  # monotonic time of the next start, while it is down
    quick_exits: int = 0
    restarts: int = 0
    codes: list[int] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


STATUS_PREFIX = "audit-ingest-procs-"  #: the children's status files: <tmp>/audit-ingest-procs-<pid>-<random>/


def status_dir(tmp: str | None = None) -> Path:
    """A new directory for the children's status files, named after this process; the directories
    of supervisors that no longer run (killed with SIGKILL: no clean-up ran) are removed first."""
    base = Path(tmp or tempfile.gettempdir())
    for old in base.glob(STATUS_PREFIX + "*-*"):
        pid = old.name[len(STATUS_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{STATUS_PREFIX}{os.getpid()}-", dir=base))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    return True


class Supervisor:
    def __init__(self, n: int, base_id: str, child_args: list[str], settings: Any, *,
                 env: dict[str, str] | None = None) -> None:
        self.n = n
        self.child_args = child_args
        self.settings = settings
        self.env = env
        self.dir = status_dir()
        self.children = [Child(k, f"{base_id}-{k}", self.dir / f"{k}.json") for k in range(1, n + 1)]
        self.stopping = threading.Event()
        self._signals = 0
        self._lock = threading.Lock()  # children's processes: the signal handler and the loop
        mcfg = settings.metrics
        self.aggregator = Aggregator(self._views, grace=mcfg.stale_after.total_seconds(),
                                     extra=supervisor_metrics(n, self._running,
                                                              lambda: {str(c.slot): c.restarts
                                                                       for c in self.children}))
        self.server: AggregateServer | None = None
        if mcfg.enabled:
            try:
                self.server = AggregateServer(self.aggregator, mcfg.bind, mcfg.port)
            except OSError as e:
                raise ConfigError(f"cannot listen on {mcfg.bind}:{mcfg.port}: {e}", key="metrics.port") from e
        self._redis: Any = None
        self._release: Any = None

    # -- views for the metrics -----------------------------------------------------------------

    def _views(self) -> list[tuple[str, Path, bool, float]]:
        return [(str(c.slot), c.status, c.running, c.started) for c in self.children]

    def _running(self) -> int:
        return sum(c.running for c in self.children)

    # -- children ------------------------------------------------------------------------------

    def _start(self, child: Child) -> None:
        cmd = [sys.executable, "-m", "ingest.cli", "run", *self.child_args, "--processes", "1",
               "--skip-template-check", "--child-id", child.worker_id, "--status-file", str(child.status)]
        with self._lock:
            if self.stopping.is_set():
                return
            try:
                child.proc = subprocess.Popen(cmd, env=self.env, process_group=0)
            except OSError as e:  # no memory, no more processes: try again later, keep the others running
                child.quick_exits += 1
                wait = backoff(child.quick_exits)
                log.error("cannot start worker %s (%s); trying again in %.0fs", child.worker_id, e, wait)
                child.restart_at = time.monotonic() + wait
                return
        child.started, child.started_mono, child.restart_at = time.time(), time.monotonic(), None
        log.info("started worker %s (pid %d)", child.worker_id, child.proc.pid)

    def _reap(self, child: Child) -> None:
        """A child exited: keep its counts, free its heartbeats, schedule its restart."""
        assert child.proc is not None
        code = child.proc.returncode
        lived = time.monotonic() - child.started_mono
        status = self.aggregator.retire(child.status)
        child.proc = None
        child.codes.append(code)
        if self.stopping.is_set():
            return
        self._release_heartbeats(child, status)
        child.quick_exits = child.quick_exits + 1 if lived < QUICK_EXIT else 0
        wait = backoff(child.quick_exits) if child.quick_exits else BACKOFF_INITIAL / 10
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        if child.quick_exits >= CRASH_LOOP:
            log.error("worker %s is crash looping: %s after %.1fs, %d times in a row within %.0fs of starting "
                      "(see its log lines above); restarting in %.0fs", child.worker_id, how, lived,
                      child.quick_exits, QUICK_EXIT, wait)
        else:
            log.warning("worker %s %s after %.1fs; restarting in %.1fs", child.worker_id, how, lived, wait)
        child.restarts += 1
        child.restart_at = time.monotonic() + wait

    def _release_heartbeats(self, child: Child, status: dict[str, Any] | None) -> None:
        """Delete the dead child's heartbeats (if still its own): its successor claims the id at once."""
        if not status or status.get("pid") is None:
            return
        beats = [b for b in status.get("heartbeats", []) if isinstance(b, list) and len(b) == 2]
        if not beats:
            return
        try:
            if self._redis is None:
                self._redis = self.settings.redis.client()
                self._release = self._redis.register_script(_RELEASE_DEAD)
            for key, token in beats:
                self._release(keys=[key], args=[token])
        except (redis.RedisError, ConfigError) as e:  # down, refused, bad URL: the TTL frees the id anyway
            log.warning("could not release the heartbeats of %s (%s): it takes its lists back once they expire",
                        child.worker_id, type(e).__name__)

    # -- the loop ------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self._signals += 1
            if self._signals == 1:
                log.info("%s received: stopping %d worker processes", signal.Signals(signum).name, self.n)
            else:
                log.warning("second %s: the workers give their batches back now", signal.Signals(signum).name)
            self.stopping.set()
            self._forward(signal.SIGTERM)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _forward(self, signum: int) -> None:
        with self._lock:
            for c in self.children:
                if c.running and c.proc is not None:
                    try:
                        c.proc.send_signal(signum)
                    except ProcessLookupError:
                        pass

    def run(self) -> int:
        log.info("supervisor: %d worker processes (%s)", self.n, ", ".join(c.worker_id for c in self.children))
        if self.server is not None:
            self.server.start()
        try:
            for c in self.children:
                self._start(c)
            while not self.stopping.is_set():
                now = time.monotonic()
                for c in self.children:
                    if c.proc is not None and c.proc.poll() is not None:
                        self._reap(c)
                    if c.proc is None and c.restart_at is not None and now >= c.restart_at:
                        self._start(c)
                self.stopping.wait(POLL)
            return self._wait_all()
        finally:
            self._close()

    def _wait_all(self) -> int:
        self._forward(signal.SIGTERM)  # a child started just before the signal
        codes = {}
        for c in self.children:
            if c.proc is not None:
                code = c.proc.wait()
                self._reap(c)
                codes[c.worker_id] = code
        bad = {w: code for w, code in codes.items() if code != 0}
        if bad:
            log.error("worker processes exited with %s", ", ".join(f"{w}: {code}" for w, code in bad.items()))
            return 1
        log.info("all %d worker processes stopped", len(codes))
        return 0

    def _close(self) -> None:
        with self._lock:
            self.stopping.set()
            for c in self.children:  # only on an error of our own: never leave children behind
                if c.running and c.proc is not None:
                    c.proc.send_signal(signal.SIGTERM)
        for c in self.children:
            if c.proc is not None:
                try:
                    c.proc.wait(60)
                except subprocess.TimeoutExpired:
                    c.proc.kill()
        if self.server is not None:
            self.server.close()
        if self._redis is not None:
            self._redis.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def child_args(args: Any) -> list[str]:
    """The options of this ``run`` that its children get too."""
    out = ["--log-level", str(args.log_level)]
    if args.config is not None:
        out += ["--config", str(args.config)]
    return out


def supervise(args: Any, settings: Any, n: int) -> int:
    """Run ``n`` worker processes until SIGTERM/SIGINT; 0 when all of them stopped cleanly."""
    base = settings.worker.id or default_worker_id()
    sup = Supervisor(n, base, child_args(args), settings)
    sup.install_signal_handlers()
    return sup.run()
