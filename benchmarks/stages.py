"""Where the parse figure's time goes, stage by stage: ``python benchmarks/stages.py``.

Runs the steps of ``Pipeline.process`` one at a time over each batch of the benchmark corpus
(in-memory session and detection stores, the worker's collector settings) and prints each step's
CPU time per event, the minimum over ``--runs``. The steps are the pipeline's own calls, in its
order; ``tests/test_benchmarks_smoke.py`` checks that they make exactly what ``Pipeline.process``
makes.

``--stop-after STEP`` runs the steps up to that one and nothing else, once, for instruction counts
that do not depend on what else the machine runs (RESULTS.md's stage table)::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/stages.py --events 2000 --stop-after detect
    # minus the same with --events 0, divided by 2000: instructions per event up to detect
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import corpus  # noqa: E402
import run  # noqa: E402

STEPS = ("route", "parse", "envelope", "geoip", "keys", "ids", "index", "sessions", "detect", "encode")


def run_steps(pipeline: Any, events: list[bytes], *, stop_after: str = "encode", batch: int = 500,
              clock: Callable[[], float] | None = None, spent: dict[str, float] | None = None) -> list[Any]:
    """``Pipeline.process`` (plus the sink's encoding) split into its steps; the index actions made.

    With ``clock``, the time of each step is added to ``spent``.
    """
    from ingest.model import IndexAction
    from ingest.parsers.base import LineContext
    from ingest.sessions.doc import index_prefix as session_index_prefix
    from ingest.sessions.doc import version as session_version
    from ingest.sinks.elasticsearch import index_for

    last = STEPS.index(stop_after)
    encode = run.encoder()
    made: list[Any] = []
    tick = clock or (lambda: 0.0)
    spent = spent if spent is not None else {}

    def done(step: str, started: float) -> bool:
        spent[step] = spent.get(step, 0.0) + tick() - started
        return STEPS.index(step) >= last

    for i in range(0, len(events), batch):
        raws = events[i:i + batch]
        now = pipeline.clock()
        t = tick()
        routed = [pipeline.router.route(raw) for raw in raws]
        routed = [r for r in routed if not hasattr(r, "error_code")]  # dead letters stop here
        if done("route", t):
            continue
        t = tick()
        ctx = LineContext(now=now)
        docs = []
        for r in routed:
            ctx.now, ctx.path, ctx.host = r.read_at or now, r.path, r.host
            doc = pipeline.parsers[r.kind].parse(r.message, ctx)
            if "@timestamp" not in doc:
                from ingest.document import format_timestamp

                doc["@timestamp"] = format_timestamp(ctx.now)
            docs.append(doc)
        if done("parse", t):
            continue
        t = tick()
        for doc, r in zip(docs, routed, strict=True):
            pipeline._envelope(doc, r)
        if done("envelope", t):
            continue
        stop = False
        for step, enricher in zip(("geoip", "keys"), pipeline.enrichers, strict=True):
            t = tick()
            enricher.enrich_batch(docs)
            stop = stop or done(step, t)
        if stop:
            continue
        t = tick()
        ids = [r.document_id() for r in routed]
        if done("ids", t):
            continue
        t = tick()
        actions = [IndexAction(index_for(doc.get("@timestamp"), pipeline.index_prefix), doc_id, doc, r.raw)
                   for doc, doc_id, r in zip(docs, ids, routed, strict=True)]
        if done("index", t):
            continue
        t = tick()
        sessions = session_index_prefix(pipeline.index_prefix)
        for doc_id, doc in pipeline.pairer.process_batch(docs):
            actions.append(IndexAction(index_for(doc.get("@timestamp"), sessions), doc_id, doc, None,
                                       session_version(doc)))
        if done("sessions", t):
            continue
        t = tick()
        for stage in pipeline.post:
            actions.extend(stage.process_batch(docs, ids))
        if done("detect", t):
            continue
        t = tick()
        for action in actions:
            encode(action)
        done("encode", t)
        made += actions
    return made


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000, help="corpus events (default 20,000)")
    ap.add_argument("--runs", type=int, default=3, help="runs; each step's minimum is printed")
    ap.add_argument("--stop-after", choices=STEPS, help="run the steps up to this one once, print nothing")
    args = ap.parse_args(argv)
    run.quiet()
    events = corpus.generate(args.events)
    if args.stop_after:
        pipeline = run.new_pipeline()
        with run.worker_gc():
            run_steps(pipeline, events, stop_after=args.stop_after)
        return 0
    best: dict[str, float] = {}
    for _ in range(args.runs):
        pipeline = run.new_pipeline()
        spent: dict[str, float] = {}
        with run.worker_gc():
            run_steps(pipeline, events, clock=time.process_time, spent=spent)
        gc.collect()
        for step, seconds in spent.items():
            best[step] = min(best.get(step, seconds), seconds)
    n = max(args.events, 1)
    for step in STEPS:
        print(f"{step:10s} {best.get(step, 0.0) / n * 1e6:7.1f} µs/event")
    total = sum(best.values())
    print(f"{'sum':10s} {total / n * 1e6:7.1f} µs/event (sum of minima: a little under one run's total)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
