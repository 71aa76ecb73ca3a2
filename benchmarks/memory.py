"""Where the worker's memory goes: tracemalloc snapshots over a run of the pipeline, and the caches.

``python benchmarks/memory.py --events 300000``: the worker's pipeline (session and detection
state in a real redis-server, as ``run`` has it; test GeoIP databases and keys, as ``make bench``)
on corpus events in batches of 500, each document encoded as the sink does. Prints, at each
checkpoint, the RSS, the memory tracemalloc sees and the entries of every cache, then the 15
source lines whose allocations grew most between the first checkpoint (warm-up) and the end.
``--no-trace`` measures RSS without tracemalloc (which slows the run and adds its own memory).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import corpus  # noqa: E402
from run import BATCH, bench_settings, encoder, quiet  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cache_sizes(pipeline: Any) -> dict[str, int]:
    """Entries held by each cache of the pipeline (the bounds are in ingest.caches)."""
    from ingest.caches import cache_entries

    return cache_entries(pipeline)


def print_cache_sizes(pipeline: Any) -> None:
    from ingest.caches import cache_entries, caches, clear_cache

    entries = cache_entries(pipeline)
    print(f"  {'cache':<22} {'entries':>7} {'MB now':>7} {'bytes/entry':>11} {'bound':>7} {'MB at bound':>11}")
    for cache in caches():
        n = entries[cache.name]
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        clear_cache(pipeline, cache.name)
        gc.collect()
        freed = max(0, before - tracemalloc.get_traced_memory()[0])
        per = freed / n if n else 0.0
        print(f"  {cache.name:<22} {n:>7} {freed / 2**20:>7.2f} {per:>11.0f} {cache.entries:>7} "
              f"{per * cache.entries / 2**20:>11.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--checkpoints", type=int, default=6)
    ap.add_argument("--no-trace", dest="trace", action="store_false")
    args = ap.parse_args(argv)
    from ingest.pipeline import Pipeline
    from ingest.runtime import tune_gc
    from tests.redis_server import RedisServer

    quiet()
    server = RedisServer()
    server.start()
    try:
        settings = bench_settings()
        settings.redis.url = f"redis://127.0.0.1:{server.port}/1"
        pipeline = Pipeline.from_settings(settings, settings.redis.client())
        encode = encoder()
        chunk = 50_000  # events generated per chunk: the corpus itself is not held whole
        tune_gc()
        every = max(BATCH, args.events // args.checkpoints // BATCH * BATCH)
        first: Any = None
        done = 0
        seed = corpus.SEED
        print(f"{'events':>9} {'RSS MB':>7} {'traced MB':>9}  cache entries")
        if args.trace:
            tracemalloc.start(1)
        started = time.monotonic()
        while done < args.events:
            events = corpus.generate(min(chunk, args.events - done), seed=seed)
            seed += 1
            for i in range(0, len(events), BATCH):
                result = pipeline.process(events[i:i + BATCH])
                for action in result.actions:
                    encode(action)
                done += min(BATCH, len(events) - i)
                if done % every == 0 or done >= args.events:
                    gc.collect()
                    traced = tracemalloc.get_traced_memory()[0] / 2**20 if args.trace else 0.0
                    sizes = ", ".join(f"{k} {v}" for k, v in cache_sizes(pipeline).items())
                    print(f"{done:>9} {rss_mb():>7.1f} {traced:>9.1f}  {sizes}", flush=True)
                    if args.trace:
                        snap = tracemalloc.take_snapshot().filter_traces(
                            [tracemalloc.Filter(False, tracemalloc.__file__)])
                        if first is None:
                            first = snap
                        last = snap
            del events
        print(f"{done} events in {time.monotonic() - started:.0f}s")
        if args.trace and first is not None:
            print("\ngrowth from the first checkpoint to the end, by source line:")
            for stat in last.compare_to(first, "lineno")[:15]:
                print(f"  {stat.size_diff / 2**20:+7.2f} MB {stat.count_diff:+8d} blocks  {stat.traceback[0]}")
            print("\nwhat each cache holds (memory freed by clearing it), and at its bound:")
            print_cache_sizes(pipeline)
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
