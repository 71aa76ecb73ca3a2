"""Metrics and health of ``run --processes N`` on one port: children report, the supervisor serves.

Each child (an ``audit-ingest run`` worker started by :mod:`ingest.supervisor`) writes a status
file every second (:class:`StatusWriter`): its pid and worker id, its health
(:meth:`Metrics.health`), the heartbeat tokens of its processing slots (so that the supervisor
can release the heartbeats of a child it saw die, and the restarted child take its lists back at
once) and every metric family of its registry as JSON. Files, not pipes or sockets: a child that
is SIGKILLed leaves its last counts behind, and nothing in the child waits on the supervisor.

The supervisor's :class:`Aggregator` answers ``/metrics`` and ``/healthz``:

- counters and histograms are summed over the children, plus what children that exited had
  counted (``retire`` folds a reaped child's last file in), so a restart does not make a total go
  down; a child killed with SIGKILL loses at most the last second of counts;
- gauges are per child, with a ``process`` label (a sum of list lengths or loop times means
  nothing);
- ``/healthz`` is 200 only when every child is running, wrote its status within
  ``STATUS_STALE`` seconds and reports itself healthy; else 503 with one line per child.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ingest.metrics import PREFIX, MetricsServer

log = logging.getLogger(__name__)

#: seconds between two status files of a child
STATUS_INTERVAL = 1.0
#: a status file older than this makes the child unhealthy (a wedged process writes none)
STATUS_STALE = 10.0
SUMMED = ("counter", "histogram", "summary")

SampleKey = tuple[str, str, tuple[tuple[str, str], ...]]  # family, sample name, labels


# -- the child's side --------------------------------------------------------------------------


def families(registry: CollectorRegistry) -> list[dict[str, Any]]:
    """A registry's metric families as JSON-able dicts (``*_created`` samples left out)."""
    out = []
    for metric in registry.collect():
        samples = [[s.name, s.labels, s.value] for s in metric.samples if not s.name.endswith("_created")]
        out.append({"name": metric.name, "type": metric.type, "help": metric.documentation, "samples": samples})
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(json.dumps(data).encode())
    os.replace(tmp, path)


class StatusWriter:
    """In a child: the status file every ``interval``; stops the worker if the supervisor is gone.

    ``worker`` is an :class:`ingest.worker.Worker` (its metrics, its slots' heartbeat tokens and
    :meth:`stop`). The parent pid is watched because a supervisor killed with SIGKILL cannot
    forward a stop: its children then stop by themselves, gracefully, within a second.
    """

    def __init__(self, path: Path, worker: Any, *, interval: float = STATUS_INTERVAL,
                 parent: int | None = None) -> None:
        self.path = Path(path)
        self.worker = worker
        self.interval = interval
        self.parent = parent if parent is not None else os.getppid()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="status-writer", daemon=True)

    def start(self) -> StatusWriter:
        self.write()
        self._thread.start()
        return self

    def status(self) -> dict[str, Any]:
        w = self.worker
        ok, text = w.metrics.health()
        return {"pid": os.getpid(), "id": w.source.worker_id, "time": time.time(), "health": [ok, text],
                "heartbeats": [[s.heartbeat_key, s.token] for s in w.slots],
                "families": families(w.metrics.registry)}

    def write(self) -> None:
        try:
            write_json(self.path, self.status())
        except OSError as e:
            log.warning("cannot write the status file %s: %s", self.path, e)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if os.getppid() != self.parent:
                log.error("the supervisor (pid %d) is gone; stopping", self.parent)
                self.worker.stop()
                self.parent = os.getppid()
            self.write()

    def close(self) -> None:
        """Stop the thread and write the final counts."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.write()


# -- the supervisor's side ---------------------------------------------------------------------


def read_status(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _key(family: str, sample: str, labels: dict[str, str]) -> SampleKey:
    return family, sample, tuple(sorted(labels.items()))


class Aggregator(Collector):
    """The children's metrics as one registry, and their health as one answer.

    ``children()`` returns, for each child slot, ``(name, status file, running, started)``:
    ``running`` whether its process is alive now, ``started`` the ``time.time()`` it was started
    (a child that has written no status yet is healthy for ``grace`` seconds).
    """

    def __init__(self, children: Callable[[], list[tuple[str, Path, bool, float]]], *, grace: float = 60.0,
                 stale: float = STATUS_STALE, extra: Callable[[], Iterable[Metric]] | None = None) -> None:
        self.children = children
        self.grace = grace
        self.stale = stale
        self.extra = extra
        self.lock = threading.Lock()  # held while files are read, and while a reaped child is folded in
        self._retired: dict[SampleKey, float] = {}
        self._meta: dict[str, tuple[str, str]] = {}  # family -> (type, help)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def retire(self, path: Path) -> dict[str, Any] | None:
        """Fold the last counts of a child that exited into the totals; delete its file; its status."""
        with self.lock:
            status = read_status(path)
            if status is not None:
                for fam in status.get("families", []):
                    if fam["type"] not in SUMMED:
                        continue
                    self._meta.setdefault(fam["name"], (fam["type"], fam["help"]))
                    for name, labels, value in fam["samples"]:
                        k = _key(fam["name"], name, labels)
                        self._retired[k] = self._retired.get(k, 0.0) + value
            path.unlink(missing_ok=True)
        return status

    def collect(self) -> Iterable[Metric]:
        with self.lock:
            sums = dict(self._retired)
            meta = dict(self._meta)
            gauges: dict[SampleKey, float] = {}
            for name, path, _running, _started in self.children():
                status = read_status(path)
                if status is None:
                    continue
                for fam in status.get("families", []):
                    meta.setdefault(fam["name"], (fam["type"], fam["help"]))
                    summed = fam["type"] in SUMMED
                    for sample, labels, value in fam["samples"]:
                        if summed:
                            k = _key(fam["name"], sample, labels)
                            sums[k] = sums.get(k, 0.0) + value
                        else:
                            gauges[_key(fam["name"], sample, {**labels, "process": name})] = value
        built: dict[str, Metric] = {}
        for (family, sample, labels), value in sorted(sums.items()) + sorted(gauges.items()):
            metric = built.get(family)
            if metric is None:
                typ, text = meta[family]
                metric = built[family] = Metric(family, text, typ)
            metric.add_sample(sample, dict(labels), value)
        yield from built.values()
        if self.extra is not None:
            yield from self.extra()

    scope = " of all processes"

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def health(self) -> tuple[bool, str]:
        now = time.time()
        lines, healthy = [], True
        for name, path, running, started in self.children():
            if not running:
                healthy = False
                lines.append(f"process {name}: not running")
                continue
            status = read_status(path)
            if status is None:
                ok = now - started <= self.grace
                healthy &= ok
                lines.append(f"process {name}: {'starting' if ok else 'no status'} ({now - started:.0f}s)")
                continue
            age = now - float(status.get("time", 0))
            ok, text = status.get("health", [False, "no health"])
            if age > self.stale:
                healthy = False
                lines.append(f"process {name} ({status.get('id')}): no status for {age:.0f}s (limit {self.stale:.0f}s)")
            else:
                healthy &= bool(ok)
                lines.append(f"process {name} ({status.get('id')}): {text}")
        return healthy, ("ok" if healthy else "unhealthy") + f": {len(lines)} processes\n" + "\n".join(lines)


def supervisor_metrics(configured: int, running: Callable[[], int], restarts: Callable[[], dict[str, int]]
                       ) -> Callable[[], Iterable[Metric]]:
    """The supervisor's own families: processes configured and running, restarts per process."""
    def collect() -> Iterable[Metric]:
        m = Metric(f"{PREFIX}_processes", "Worker processes of this `run`, configured and running.", "gauge")
        m.add_sample(f"{PREFIX}_processes", {"state": "configured"}, configured)
        m.add_sample(f"{PREFIX}_processes", {"state": "running"}, running())
        yield m
        r = Metric(f"{PREFIX}_process_restarts", "Worker processes restarted after they exited.", "counter")
        for name, n in sorted(restarts().items()):
            r.add_sample(f"{PREFIX}_process_restarts_total", {"process": name}, n)
        yield r
    return collect


class AggregateServer(MetricsServer):
    """``/metrics`` and ``/healthz`` of all the children, on a background thread."""

    def __init__(self, aggregator: Aggregator, bind: str, port: int) -> None:
        super().__init__(aggregator, bind, port)
