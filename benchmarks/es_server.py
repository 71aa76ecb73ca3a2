"""The Elasticsearch HTTP double (``tests/es_double.py``) in its own process, for the benchmarks.

Its own process so that its HTTP threads do not share a GIL with the runner or the workers.
Prints ``{"url": ...}`` on stdout when listening, then answers one JSON line per command line read
on stdin:

* ``count``: documents written since start (kept even when stored sources are forgotten);
* ``pid``: this process's id (the runner reads its CPU time from ``/proc``);
* ``latency on`` / ``latency off``: record, for each document received, now minus its
  ``fields.bench_pushed`` (the Unix time the runner RPUSHed the event; the pipeline copies
  Filebeat's ``fields`` into the document);
* ``latency``: ``{"n", "p50", "p99", "max"}`` of what was recorded, in seconds;
* ``ceiling <docs> <batch> <doc JSON>``: docs/s from a plain HTTP bulk loop run *inside* this
  process (client and server share one GIL: a lower bound; the runner measures from outside);
* ``delay <seconds>``: every bulk answer from now on waits that long (0: off), as a remote
  cluster's round trip would;
* ``fail <seconds>``: every bulk request is answered 503 for that long (an Elasticsearch fault);
* ``soak <pushed>`` (with ``--soak``): what became of events ``0 .. pushed-1``, see below;
* ``quit``.

``--soak`` (benchmarks/soak.py): each event document carries ``fields.soak_seq``, its number;
every document the double creates (201) is counted by that number, with a hash of its ``_id``:
the same number again under the same id is a redelivery (a real cluster answers 409 once it
has the document; this double forgets sources to stay small, so it may answer 201), under
another id a duplicate (the event stored twice). Session and alert documents (they carry no
``fields``) are counted apart.
A few bytes per event: 5M events hold ~45 MB.

Benchmark mode: mapping checks off and sources kept as bytes (``parse_sources``; see the double's
docstring) unless ``--check-mappings`` is given; latency is read from the bulk bodies with a
regular expression, so no document is decoded. Unless ``--no-forget`` is given, stored sources are dropped every second so that a million
documents do not hold gigabytes: ``create`` conflicts (409) are then only detected within that
second, which a benchmark without redeliveries does not need.
"""

from __future__ import annotations

import argparse
import array
import hashlib
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.es_double import ESDouble  # noqa: E402


class SoakTracker:
    """Created event documents counted by ``fields.soak_seq`` (see the module doc)."""

    seq_re = re.compile(rb'"soak_seq":(\d+)')

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts = bytearray()
        self.ids = array.array("Q")
        self.redelivered = 0
        self.duplicated = 0
        self.derived = 0

    def install(self, double: ESDouble) -> None:
        apply = double._apply

        def tracked(op: str, index: str, doc_id: str | None, source: Any, *rest: Any) -> dict[str, Any]:
            item = apply(op, index, doc_id, source, *rest)  # rest: the double's versioning of sessions
            if item.get("status") == 201:
                self.saw(getattr(source, "data", b""), str(item.get("_id")))
            return item

        double._apply = tracked  # type: ignore[method-assign]

    def saw(self, raw: bytes, doc_id: str) -> None:
        found = self.seq_re.search(raw)
        if found is None:  # session and alert documents do not copy the event's fields
            self.derived += 1
            return
        seq = int(found.group(1))
        h = int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big") or 1
        with self.lock:
            if seq >= len(self.counts):
                grow = max(seq + 1 - len(self.counts), 1 << 20)
                self.counts.extend(bytes(grow))
                self.ids.extend([0] * grow)
            if self.counts[seq] == 0:
                self.counts[seq] = 1
                self.ids[seq] = h
            elif self.ids[seq] == h:
                self.redelivered += 1
            else:
                self.duplicated += 1
                self.counts[seq] = min(255, self.counts[seq] + 1)

    def report(self, pushed: int) -> dict[str, Any]:
        with self.lock:
            counts = bytes(self.counts[:pushed]).ljust(pushed, b"\0")
            missing = [i for i, c in enumerate(counts) if c == 0]
            return {"stored": pushed - len(missing), "missing": len(missing), "missing_first": missing[:20],
                    "redelivered": self.redelivered, "duplicated": self.duplicated, "derived": self.derived,
                    "beyond": sum(1 for c in self.counts[pushed:] if c)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-forget", dest="forget", action="store_false")
    ap.add_argument("--soak", action="store_true", help="count the created event documents by fields.soak_seq")
    ap.add_argument("--check-mappings", action="store_true",
                    help="check documents against the template's mappings (slow: off by default, so that the "
                         "benchmark measures the worker, not the double)")
    args = ap.parse_args()
    double = ESDouble(record_bodies=False)
    double.check_mappings = args.check_mappings
    double.parse_sources = args.check_mappings
    double.start()
    lock = threading.Lock()
    forgotten = 0
    latencies: list[float] = []
    recording = False

    pushed_re = re.compile(rb'"bench_pushed":(\d+\.\d+)')

    def observe(body: bytes) -> None:
        if recording:
            now = time.time()
            latencies.extend(now - float(m) for m in pushed_re.findall(body))

    double.bulk_observer = observe

    def forget() -> None:
        nonlocal forgotten
        while True:
            time.sleep(1.0)
            with double.cluster.lock:
                for index in double.cluster.indices.values():
                    index.docs.clear()
                    index.visible.clear()
                n = len(double.writes)
                del double.writes[:n]
                double.requests.clear()
                with lock:
                    forgotten += n

    if args.forget:
        threading.Thread(target=forget, daemon=True).start()
    tracker = SoakTracker() if args.soak else None
    if tracker is not None:
        tracker.install(double)
    out = sys.stdout
    out.write(orjson.dumps({"url": double.url}).decode() + "\n")
    out.flush()
    for line in sys.stdin:
        cmd, _, rest = line.strip().partition(" ")
        answer: Any
        if cmd == "count":
            with double.cluster.lock, lock:
                answer = {"count": forgotten + len(double.writes)}
        elif cmd == "delay":
            double.clear_faults()
            if float(rest) > 0:
                double.delay(float(rest), times=None)
            answer = {"ok": True}
        elif cmd == "pid":
            answer = {"pid": os.getpid()}
        elif cmd == "latency" and rest == "on":
            latencies.clear()
            recording = True
            answer = {"ok": True}
        elif cmd == "latency" and rest == "off":
            recording = False
            answer = {"ok": True}
        elif cmd == "latency":
            values = sorted(latencies)
            n = len(values)
            answer = {"n": n, "p50": values[n // 2] if n else None,
                      "p99": values[min(n - 1, int(n * 0.99))] if n else None, "max": values[-1] if n else None}
        elif cmd == "ceiling":
            docs, batch, doc = rest.split(" ", 2)
            answer = {"docs_per_s": double.ceiling(docs=int(docs), batch=int(batch), doc=orjson.loads(doc))}
        elif cmd == "fail":
            double.clear_faults()
            double.fail_requests(503, times=None)
            threading.Timer(float(rest), double.clear_faults).start()
            answer = {"ok": True}
        elif cmd == "soak" and tracker is not None:
            answer = tracker.report(int(rest))
        elif cmd == "quit":
            break
        else:
            answer = {"error": f"unknown command {cmd!r}"}
        out.write(orjson.dumps(answer).decode() + "\n")
        out.flush()
    double.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
