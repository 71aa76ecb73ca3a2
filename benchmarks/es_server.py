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
* ``quit``.

Benchmark mode: mapping checks off and sources kept as bytes (``parse_sources``; see the double's
docstring) unless ``--check-mappings`` is given; latency is read from the bulk bodies with a
regular expression, so no document is decoded. Unless ``--no-forget`` is given, stored sources are dropped every second so that a million
documents do not hold gigabytes: ``create`` conflicts (409) are then only detected within that
second, which a benchmark without redeliveries does not need.
"""

from __future__ import annotations

import argparse
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-forget", dest="forget", action="store_false")
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
