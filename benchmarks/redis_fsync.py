"""What ``appendfsync always`` costs against ``everysec``: Filebeat's RPUSHes and the worker's scripts.

``python benchmarks/redis_fsync.py [--seconds 5] [--dir PATH]`` starts two redis-servers with
``appendonly yes`` (one ``appendfsync always``, one ``everysec``; AOF in ``--dir``, default a
temporary folder: put it on the disk Redis's volume is on) and, on each, interleaved:

- ``rpush``: what one Filebeat output worker does, an ``RPUSH`` of 2,048 events of ~500 bytes
  (Filebeat's ``bulk_max_size`` for Redis is 2,048) and waits for the answer;
- ``take+ack``: what one audit-ingest worker does per batch, the ``take`` script of 500 events
  (into its processing list) then the ``ack`` script (delete it, no dead letters), through
  :class:`ingest.sources.redis_list.RedisListSource` itself.

Prints per operation the median and 90th percentile latency and the throughput one client gets
(events per second), for each setting, with the load average and the AOF's file system. The
figure that matters is the difference ``always`` makes: with ``always`` Redis fsyncs the AOF
before answering each write command (group commit: the writes of one event-loop pass share one
fsync), so it measures the disk's fsync latency much more than the CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import orjson  # noqa: E402
import redis  # noqa: E402

from ingest.sources.redis_list import RedisListSource, RedisSourceConfig  # noqa: E402
from tests.redis_server import _binary, free_port  # noqa: E402

PUSH = 2048  #: events per RPUSH (Filebeat's bulk_max_size for the Redis output)
TAKE = 500  #: events per worker batch (redis.batch_size)


def event(i: int) -> bytes:
    """A Filebeat 8.x event of about 500 bytes."""
    return orjson.dumps({
        "@timestamp": "2024-05-17T16:02:03.500Z",
        "message": f"May 17 16:02:03 web-1 sshd[{10000 + i % 50000}]: Accepted publickey for deploy from "
                   f"203.0.113.{i % 250} port {40000 + i % 20000} ssh2: ED25519 SHA256:abcdefghijklmnopqrstuvwxyz0123",
        "log": {"file": {"path": "/var/log/auth.log"}, "offset": i * 200},
        "host": {"name": "web-1"}, "agent": {"type": "filebeat", "version": "8.15.0", "hostname": "web-1",
                                            "id": "2f9c3b0e-7d1a-4c55-9f0e-0b1c2d3e4f50"},
        "ecs": {"version": "8.0.0"}, "input": {"type": "filestream"}, "fields": {"log_type": "auth"}})


class Server:
    def __init__(self, fsync: str, root: Path) -> None:
        self.fsync = fsync
        self.dir = root / fsync
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
             "--appendonly", "yes", "--appendfsync", fsync, "--protected-mode", "no",
             "--logfile", str(self.dir / "redis.log")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(port=self.port, db=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        cfg = RedisSourceConfig.model_validate({"url": f"redis://127.0.0.1:{self.port}/1", "batch_size": TAKE,
                                                "batch_wait": "PT0S"})
        self.source = RedisListSource(self.client, cfg, "bench")
        self.source.claim()

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(10)


def rpush(server: Server, batch: list[bytes]) -> float:
    t0 = time.perf_counter()
    server.client.rpush("filebeat", *batch)
    return time.perf_counter() - t0


def take_ack(server: Server) -> float:
    t0 = time.perf_counter()
    got = server.source.fill(TAKE)
    server.source.ack()
    elapsed = time.perf_counter() - t0
    if len(got) < TAKE:  # keep the main list full enough
        server.client.rpush("filebeat", *[event(i) for i in range(PUSH)])
    return elapsed


def filesystem(path: Path) -> str:
    try:
        out = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True, timeout=10).stdout
        return " ".join(out.splitlines()[-1].split()[:2])
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def summary(times: list[float], events: int) -> dict[str, Any]:
    ms = sorted(t * 1000 for t in times)
    return {"n": len(ms), "p50_ms": statistics.median(ms), "p90_ms": ms[int(len(ms) * 0.9)],
            "events_per_s": events * len(ms) / sum(times)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="time per setting and operation (default 5)")
    ap.add_argument("--dir", type=Path, help="where the AOF files go (default a temporary folder)")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="redis-fsync-", dir=args.dir))
    batch = [event(i) for i in range(PUSH)]
    print(f"AOF on {filesystem(root)}; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{os.cpu_count()} CPUs; event {len(batch[0])} bytes")
    servers = [Server("always", root), Server("everysec", root)]
    results: dict[tuple[str, str], list[float]] = {(s.fsync, op): [] for s in servers for op in ("rpush", "take+ack")}
    try:
        for s in servers:
            s.client.rpush("filebeat", *batch)
        deadline = time.monotonic() + 2 * args.seconds
        while time.monotonic() < deadline:  # interleaved: a busy machine slows both alike
            for s in servers:
                for _ in range(5):
                    results[(s.fsync, "rpush")].append(rpush(s, batch))
                for _ in range(5):
                    results[(s.fsync, "take+ack")].append(take_ack(s))
                s.client.ltrim("filebeat", -50_000, -1)  # bounded memory
    finally:
        for s in servers:
            s.close()
        shutil.rmtree(root, ignore_errors=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| operation | appendfsync | calls | p50 ms | p90 ms | events/s (one client) |")
    print("|---|---|---:|---:|---:|---:|")
    for (fsync, op), times in results.items():
        r = summary(times, PUSH if op == "rpush" else TAKE)
        print(f"| {op} | {fsync} | {r['n']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['events_per_s']:,.0f} |")
    for op in ("rpush", "take+ack"):
        a = statistics.median(results[("always", op)])
        e = statistics.median(results[("everysec", op)])
        print(f"{op}: always costs {(a - e) * 1000:+.2f} ms per call ({a / e:.2f}x everysec)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
