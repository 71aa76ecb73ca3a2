"""Helpers for the worker tests, and a worker process for the crash/SIGTERM tests.

``python -m tests.worker_proc --redis URL --es URL --id ID [...]`` runs a real :class:`Worker`
(real pipeline, the Elasticsearch sink, the Redis list source) until SIGTERM; with ``--detect``
the detection rules, with ``--notify JSON`` the notifications (queued with the ack, the sender
threads beside the loop).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import redis

from ingest.deadletter import DeadLetterStore
from ingest.logsafe import install
from ingest.metrics import Metrics
from ingest.sources.redis_list import RedisListSource, RedisSourceConfig
from ingest.worker import Worker, WorkerConfig

ROOT = Path(__file__).parent.parent
SAMPLES = Path(__file__).parent / "data" / "samples"
KINDS = {"auth.log": "auth", "bruteforce.log": "auth", "commands.log": "commands", "audit.log": "auditd",
         "openvpn.log": "openvpn", "shell_deploy.log": "shell", "teleport.log": "teleport"}
PATHS = {"auth.log": "/var/log/auth.log", "bruteforce.log": "/var/log/secure", "commands.log": "/var/log/commands.log",
         "audit.log": "/var/log/audit/audit.log", "openvpn.log": "/var/log/openvpn.log",
         "shell_deploy.log": "/var/log/shell_deploy.log", "teleport.log": "/var/log/teleport/events.log"}


def sample_events(n: int, *, host: str = "h1", start: int = 0) -> list[bytes]:
    """``n`` Filebeat 8.x events made of the sample lines, each with a distinct offset."""
    lines: list[tuple[str, str]] = []
    for path in sorted(SAMPLES.glob("*.log")):
        lines += [(path.name, line) for line in path.read_text().splitlines() if line.strip()]
    out = []
    for i in range(start, start + n):
        name, line = lines[i % len(lines)]
        out.append(orjson.dumps({
            "@timestamp": "2024-05-17T16:02:03.500Z", "message": line,
            "log": {"file": {"path": PATHS[name]}, "offset": i * 100},
            "host": {"name": host}, "agent": {"type": "filebeat", "version": "8.15.0"},
            "fields": {"log_type": KINDS[name]}}))
    return out


def file_events(name: str, *, host: str | None = None, start: int = 0) -> list[bytes]:
    """The lines of one sample file as Filebeat events (offsets from ``start``)."""
    lines = [line for line in (SAMPLES / name).read_text().splitlines() if line.strip()]
    return [orjson.dumps({
        "@timestamp": "2024-05-17T16:05:00.000Z", "message": line,
        "log": {"file": {"path": PATHS[name]}, "offset": (start + i) * 100},
        "host": {"name": host or "collector"}, "agent": {"type": "filebeat", "version": "8.15.0"},
        "fields": {"log_type": KINDS[name]}}) for i, line in enumerate(lines)]


def detecting_pipeline(redis_url: str, *, sessions_timeout: float | None = None, detect: bool = True,
                       derived_lease: float = 60.0) -> Any:
    """The real pipeline with the detection rules on Redis (shared by every worker), no sessions
    (or session pairing in Redis with ``sessions_timeout`` seconds); derived documents pending
    for ``derived_lease`` seconds (ingest.pending)."""
    from ingest.pipeline import Pipeline
    from ingest.settings import load_settings

    logging.getLogger("ingest.enrich.geoip").setLevel(logging.ERROR)
    sessions: dict[str, Any] = ({"enabled": False} if sessions_timeout is None
                                else {"timeout": timedelta(seconds=sessions_timeout)})
    settings = load_settings(overrides={"sessions": sessions, "detect": {"enabled": detect},
                                        "redis": {"url": redis_url},
                                        "worker": {"derived_lease": timedelta(seconds=derived_lease)}})
    return Pipeline.from_settings(settings, settings.redis.client())


def notifications(redis_url: str, notify: dict[str, Any], worker_id: str) -> Any:
    """The notify hook and sender of ``notify`` settings (ingest.notify.build), not started."""
    from ingest.notify.build import build_notifications
    from ingest.settings import load_settings

    settings = load_settings(overrides={"redis": {"url": redis_url}, "notify": notify})
    client = settings.redis.client()
    return build_notifications(settings, client, Metrics().registry, worker_id)


def pipeline() -> Any:
    """The real pipeline from default settings, without session documents (one document per event)."""
    from ingest.pipeline import Pipeline
    from ingest.settings import load_settings

    logging.getLogger("ingest.enrich.geoip").setLevel(logging.ERROR)
    return Pipeline.from_settings(load_settings(overrides={"sessions": {"enabled": False}, "detect": {"enabled": False}}), None)


def make_sink(es_url: str, stop: threading.Event) -> Any:
    """The project's Elasticsearch sink on the double, with short backoffs."""
    from ingest.sinks.elasticsearch import ElasticsearchConfig, ElasticsearchSink, build_client

    cfg = ElasticsearchConfig.model_validate({"hosts": [es_url], "backoff_initial": timedelta(milliseconds=20),
                                              "backoff_max": timedelta(milliseconds=300),
                                              "request_timeout": timedelta(seconds=5)})
    return ElasticsearchSink(build_client(cfg), cfg, stop=stop)


def source_config(redis_url: str, *, batch_size: int = 50, ttl: float = 1.0, **kw: Any) -> RedisSourceConfig:
    base: dict[str, Any] = {"url": redis_url, "batch_size": batch_size, "batch_wait": timedelta(milliseconds=20),
                            "block_timeout": timedelta(milliseconds=200), "heartbeat_ttl": timedelta(seconds=ttl),
                            "socket_timeout": timedelta(seconds=2), "socket_connect_timeout": timedelta(seconds=1)}
    base.update(kw)
    return RedisSourceConfig.model_validate(base)


def make_worker(redis_url: str, es_url: str, worker_id: str, *, batch_size: int = 50, ttl: float = 1.0,
                shutdown_timeout: float = 5.0, proc: Any = None, sink: Any = None, overlap: bool = True,
                notifier: Any = None) -> Worker:
    scfg = source_config(redis_url, batch_size=batch_size, ttl=ttl)
    client = scfg.client()
    source = RedisListSource(client, scfg, worker_id)
    dead = DeadLetterStore(client, f"{scfg.key}:dead", main_key=scfg.key, worker=worker_id)
    wcfg = WorkerConfig.model_validate({"id": worker_id, "shutdown_timeout": timedelta(seconds=shutdown_timeout),
                                        "backoff_initial": timedelta(milliseconds=50),
                                        "backoff_max": timedelta(milliseconds=500), "overlap": overlap})
    sink_stop = threading.Event()
    return Worker(source, proc if proc is not None else pipeline(), sink or make_sink(es_url, sink_stop), dead,
                  Metrics(), wcfg, sink_stop=sink_stop, notifier=notifier)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis", required=True)
    ap.add_argument("--es", required=True)
    ap.add_argument("--id", required=True)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--ttl", type=float, default=1.0)
    ap.add_argument("--shutdown-timeout", type=float, default=5.0)
    ap.add_argument("--detect", action="store_true", help="the detection rules on (Redis state)")
    ap.add_argument("--notify", help="notify settings as JSON: alerts queued with the ack, the sender running")
    ap.add_argument("--sessions", type=float, help="session pairing in Redis, with this timeout (seconds)")
    ap.add_argument("--derived-lease", type=float, default=60.0, help="worker.derived_lease (seconds)")
    args = ap.parse_args(argv)
    install(f"%(asctime)s {args.id} %(levelname)s %(name)s: %(message)s")  # as audit-ingest does
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)
    notify = notifications(args.redis, orjson.loads(args.notify), args.id) if args.notify else None
    worker = make_worker(args.redis, args.es, args.id, batch_size=args.batch_size, ttl=args.ttl,
                         shutdown_timeout=args.shutdown_timeout,
                         proc=(detecting_pipeline(args.redis, sessions_timeout=args.sessions, detect=args.detect,
                                                  derived_lease=args.derived_lease)
                               if args.detect or args.sessions is not None else None),
                         notifier=notify.notifier if notify is not None else None)
    worker.install_signal_handlers()
    started = time.monotonic()
    if notify is not None:
        notify.start()
    try:
        code = worker.run()
    finally:
        if notify is not None:
            notify.close()
    logging.getLogger("worker_proc").info("exit %d after %.1fs", code, time.monotonic() - started)
    return code


def redis_url(port: int, db: int = 1) -> str:
    return f"redis://127.0.0.1:{port}/{db}"


def lists_empty_but_dead(client: redis.Redis, key: str = "filebeat") -> list[str]:
    """Names of the keys of the queue that still hold something (the dead list excepted)."""
    left = [key] if client.llen(key) else []
    left += [k.decode() for k in client.scan_iter(match=f"{key}:processing:*")]
    return left


class WorkerProcs:
    """The worker processes of one test (``python -m tests.worker_proc``), on the test's Redis and
    Elasticsearch double, each logging to ``<tmp>/<id>.log``; ``extra`` arguments go to every one."""

    def __init__(self, tmp: Path, redis_port: int, es_url: str, *extra: str, shutdown_timeout: float = 5.0) -> None:
        self.tmp = tmp
        self.redis = redis_url(redis_port)
        self.es = es_url
        self.extra = extra
        self.shutdown_timeout = shutdown_timeout
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, worker_id: str, *extra: str, ttl: float = 1.0, batch_size: int = 50,
              shutdown_timeout: float | None = None) -> subprocess.Popen[bytes]:
        timeout = self.shutdown_timeout if shutdown_timeout is None else shutdown_timeout
        log = open(self.tmp / f"{worker_id}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.worker_proc", "--redis", self.redis, "--es", self.es, "--id", worker_id,
             "--ttl", str(ttl), "--batch-size", str(batch_size), "--shutdown-timeout", str(timeout),
             *self.extra, *extra],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        self.procs[worker_id] = proc
        return proc

    def log(self, worker_id: str) -> str:
        return (self.tmp / f"{worker_id}.log").read_text(errors="replace")

    def kill(self, worker_id: str) -> None:
        self.procs[worker_id].kill()
        self.procs[worker_id].wait()

    def terminate(self, worker_id: str, timeout: float = 20.0) -> int:
        self.procs[worker_id].send_signal(signal.SIGTERM)
        return self.procs[worker_id].wait(timeout)

    def terminate_all(self, timeout: float = 20.0) -> dict[str, int]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        return {wid: proc.wait(timeout) for wid, proc in self.procs.items()}

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    sys.exit(main())
