"""What notifications cost the worker loop: the time of one batch's acknowledgement, with and without.

``python benchmarks/notify_ack.py [--rounds 10 --batches 50]`` starts its own redis-server (no AOF, so the
figure is the worker's side: Python, one round trip, the scripts) and times
``Worker._acknowledge`` of a batch of 500 documents, the way the loop calls it, in these cases:

- ``off``: no notify output configured (the path of a worker without notifications);
- ``on, 0 alerts``: outputs configured, a batch with no alert (the common case: a scan of the
  batch for alerts, then the same single ack script as ``off``);
- ``on, 1 alert`` / ``on, 10 alerts``: the ack and the queueing in one MULTI/EXEC;
- ``on, 1 alert, receiver hung``: the same while the sender threads of this process are stuck on
  a receiver that never answers (a notification outage): the loop must not notice.

The cases run interleaved (a round of each, then again), so a busy machine slows them alike.
Prints the median and 90th percentile per case, in microseconds.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ingest.deadletter import DeadLetterStore  # noqa: E402
from ingest.metrics import Metrics  # noqa: E402
from ingest.model import BatchResult, IndexAction  # noqa: E402
from ingest.notify.build import build_notifications  # noqa: E402
from ingest.settings import load_settings  # noqa: E402
from ingest.sources.redis_list import RedisListSource  # noqa: E402
from ingest.worker import Worker, WorkerConfig, _Batch  # noqa: E402
from tests.notify.receivers import HttpReceiver  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

BATCH = 500


def documents(batch: int, alerts: int) -> tuple[list[bytes], list[IndexAction]]:
    raws = [b'{"message":"x%d"}' % i for i in range(BATCH)]
    actions = [IndexAction("audit-2024.05.17", f"{batch}-{i}", {"type": "auth", "event": {"action": "ssh_login"},
                                                                 "message": "x"}, raws[i]) for i in range(BATCH)]
    for i in range(alerts):
        actions.append(IndexAction("audit-alerts-2024.05.17", f"brute_force-{batch:012d}{i:012d}", {
            "@timestamp": "2024-05-17T16:00:40.000000Z", "type": "alert", "rule": {"name": "brute_force"},
            "event": {"kind": "alert", "severity": 73, "reason": "12 authentication failures"},
            "source": {"ip": "89.160.20.128"}, "alert": {"count": 12, "hosts": ["a3", "web-2"]}}))
    return raws, actions


class Noop:
    def process(self, raws: list[bytes]) -> BatchResult:
        return BatchResult()

    def write_batch(self, actions: list[IndexAction]) -> list[Any]:
        return []


class Case:
    """One worker (own id and processing list) set up for one case."""

    def __init__(self, url: str, notify: dict[str, Any] | None, alerts: int, tag: str, hung: bool) -> None:
        settings = load_settings(overrides={"redis": {"url": url}, "notify": notify or {}})
        self.client = settings.redis.client()
        self.source = RedisListSource(self.client, settings.redis, f"bench-{tag}")
        metrics = Metrics()
        self.notify = build_notifications(settings, self.client, metrics.registry, f"bench-{tag}") if notify else None
        self.worker = Worker(self.source, Noop(), Noop(), DeadLetterStore(self.client, "filebeat:dead"), metrics,
                             WorkerConfig.model_validate({"overlap": False}),
                             notifier=self.notify.notifier if self.notify else None)
        self.alerts = alerts
        self.hung = hung
        self.times: list[float] = []
        self.batches = 0
        if self.notify is not None and hung:
            self.notify.start()

    def run(self, batches: int, keep: bool = True) -> None:
        for _ in range(batches):
            self.batches += 1
            raws, actions = documents(self.batches, self.alerts)
            self.client.rpush(f"filebeat-{id(self)}", *raws)
            self.source.main_key = f"filebeat-{id(self)}"
            self.source.fill(BATCH)
            batch = _Batch(self.source, raws, BatchResult(actions=actions), time.monotonic())
            t0 = time.perf_counter()
            self.worker._acknowledge(batch, [])
            if keep:
                self.times.append((time.perf_counter() - t0) * 1e6)

    def close(self) -> None:
        if self.notify is not None and self.hung:
            self.notify.sender.stop(0.1)
        self.client.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, default=50, help="batches per case and round")
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    logging.getLogger("ingest.notify").setLevel(logging.ERROR)  # the hung sender's warnings
    redis_server = RedisServer(persist=False)
    redis_server.start()
    receiver = HttpReceiver().start()
    receiver.hold.clear()
    try:
        url = f"redis://127.0.0.1:{redis_server.port}/1"
        out = {"type": "slack", "url": receiver.url, "timeout": 30}
        on = {"outputs": {"ops": out}, "lease": 120}
        cases = [("off", None, 0), ("on, 0 alerts", on, 0), ("on, 1 alert", on, 1), ("on, 10 alerts", on, 10),
                 ("on, 1 alert, receiver hung", {**on, "poll_interval": 0.01}, 1)]
        print(f"ack of a batch of {BATCH} documents; {args.rounds} rounds of {args.batches} batches per case, "
              "cases interleaved; redis-server without AOF")
        print(f"{'case':<30} {'median us':>10} {'p90 us':>10}")
        built = [(name, Case(url, notify, alerts, str(i), "hung" in name)) for i, (name, notify, alerts) in
                 enumerate(cases)]
        for _, case in built:
            case.run(20, keep=False)  # warm-up: scripts loaded, connections open
        for _ in range(args.rounds):
            for _, case in built:
                case.run(args.batches)
        for name, case in built:
            p90 = statistics.quantiles(case.times, n=10)[-1]
            print(f"{name:<30} {statistics.median(case.times):>10.0f} {p90:>10.0f}")
            case.close()
        if receiver.requests:
            print(f"(the hung receiver took {len(receiver.requests)} request(s) and answered none)")
    finally:
        receiver.hold.set()
        receiver.close()
        redis_server.close()
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
