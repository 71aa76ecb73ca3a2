"""Brute force: the alerts raised do not depend on the order the failures are processed in, nor on
a redelivery behind newer failures (ingest.detect.scripts, BRUTE_FORCE_LUA)."""

from __future__ import annotations

import random
from collections.abc import Callable

from ingest.detect.store import DetectionStore, Failure, MemoryDetectionStore

WINDOW = 60_000
THRESHOLD = 10
T0 = 1_715_961_600_000  # 2024-05-17T16:00:00Z, on a window boundary


def evaluate(store: DetectionStore, batch: list[Failure]) -> set[tuple[str, int]]:
    hits, _ = store.evaluate(batch, [], window_ms=WINDOW, threshold=THRESHOLD, lookback_ms=1)
    return {(h.ip, h.window) for h in hits}


def bursts(rng: random.Random, n: int) -> list[Failure]:
    """Failures of many IPs in bursts of random size and spread, many near the threshold and
    across aligned window boundaries, in time order."""
    out: list[Failure] = []
    t = T0
    ip = 0
    while len(out) < n:
        ip += 1
        size = rng.randint(6, 24)
        spread = rng.randint(20_000, 150_000)
        start = t + rng.randint(-30_000, 30_000)
        out += [Failure(f"198.51.{ip // 250}.{ip % 250}", start + rng.randint(0, spread), f"e{ip}-{i}")
                for i in range(size)]
        t += rng.randint(500, 2_000)
    # the dense part only: a batch of 50 spans seconds, so processing out of order is late by less than a window
    return sorted((f for f in out if T0 + 150_000 <= f.ts_ms < t), key=lambda f: f.ts_ms)


def test_alert_windows_do_not_depend_on_processing_order(make_store: Callable[[], DetectionStore]) -> None:
    """Two workers take alternate batches of a stream that is time-ordered only roughly (each batch
    shuffled, neighbouring batches processed the other way round): the same (ip, window) alerts
    as one in-order pass."""
    rng = random.Random(15)
    failures = bursts(rng, 8000)
    batches = [failures[i:i + 50] for i in range(0, len(failures), 50)]
    assert max(b[-1].ts_ms - b[0].ts_ms for b in batches) * 2 < WINDOW  # late by less than a window

    in_order = MemoryDetectionStore()
    expected: set[tuple[str, int]] = set()
    for batch in batches:
        expected |= evaluate(in_order, batch)
    assert len(expected) > 50

    workers = [make_store(), make_store()]
    got: set[tuple[str, int]] = set()
    swapped = [batches[i + 1 - 2 * (i % 2)] if i + 1 - 2 * (i % 2) < len(batches) else batches[i]
               for i in range(len(batches))]
    for i, batch in enumerate(swapped):
        shuffled = batch[:]
        rng.shuffle(shuffled)
        got |= evaluate(workers[i % 2], shuffled)
    assert got == expected, (sorted(got - expected)[:5], sorted(expected - got)[:5])


def test_a_late_failure_fires_the_window_of_a_later_one(make_store: Callable[[], DetectionStore]) -> None:
    """10 failures counted, then the one that came first in time: the window ending at the last of
    them now holds 11 (the window of the late one alone would hold 1)."""
    store = make_store()
    later = [Failure("203.0.113.9", T0 + 55_000 + i * 1000, f"k{i}") for i in range(THRESHOLD)]  # 55..64 s
    assert evaluate(store, later) == set()
    late = Failure("203.0.113.9", T0 + 54_500, "k-late")
    assert evaluate(store, [late]) == {("203.0.113.9", T0 // WINDOW + 1)}  # the window of the later ones
    assert evaluate(store, [late]) == {("203.0.113.9", T0 // WINDOW + 1)}  # redelivered: the same alert


def test_redelivered_trigger_behind_newer_failures_fires_again(make_store: Callable[[], DetectionStore]) -> None:
    """The batch that fired is redelivered after a newer failure of the IP trimmed it: the trigger
    is counted again, the flag is set, and the same alert comes back (was: nothing)."""
    store = make_store()
    burst = [Failure("192.0.2.77", T0 + i * 1000, f"b{i}") for i in range(THRESHOLD + 2)]
    first = evaluate(store, burst)
    assert first == {("192.0.2.77", T0 // WINDOW)}
    assert evaluate(make_store(), [Failure("192.0.2.77", T0 + 3_600_000, "newer")]) == set()
    assert evaluate(make_store(), burst) == first
