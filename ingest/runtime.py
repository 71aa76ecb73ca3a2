"""Interpreter settings for a process that turns batches of events into documents.

Documents are trees of dicts and lists that reference counting frees when their batch is done;
they hold no cycles. CPython's cyclic collector still runs every 700 container allocations, and its
older generations then walk everything the process keeps: compiled patterns, settings, GeoIP
readers, caches. So, once start-up is done, :func:`tune_gc` moves what exists to the permanent
generation (``gc.freeze``: never scanned again) and collects young objects every
:data:`GEN0_THRESHOLD` allocations instead of 700. Measured on the benchmark corpus (one process,
interleaved runs): 13,800 -> 16,300 events/s; either half alone gains less than 2 %.
"""

from __future__ import annotations

import gc

#: allocations between two young-generation collections (CPython's default is 700)
GEN0_THRESHOLD = 50_000


def tune_gc(gen0_threshold: int = GEN0_THRESHOLD) -> None:
    """Freeze what start-up made and collect young objects less often. Call once, after start-up."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
