"""Every cache of the pipeline has a bound, whatever the input (ingest/caches.py lists them)."""

from __future__ import annotations

from datetime import UTC, datetime

from ingest.caches import cache_entries, caches
from ingest.parsers.base import LineContext
from ingest.pipeline import Pipeline
from ingest.route import PATH_CACHE_LIMIT, Router
from ingest.settings import load_settings
from ingest.timestamps import CACHE_LIMIT, SyslogClock


def test_every_listed_cache_is_found_on_a_pipeline() -> None:
    pipeline = Pipeline.from_settings(load_settings())
    assert set(cache_entries(pipeline)) == {c.name for c in caches()}
    assert all(c.entries > 0 and c.what for c in caches())


def test_rule_candidates_do_not_grow_with_program_names() -> None:
    """One cache entry per program name seen in lines was unbounded (container ids, garbled headers)."""
    pipeline = Pipeline.from_settings(load_settings())
    parser = pipeline.parsers["auth"]
    ctx = LineContext(now=datetime(2024, 5, 17, tzinfo=UTC))
    for i in range(3000):
        parser.parse(f"May 17 10:00:00 host prog{i}[1]: something happened {i}", ctx)
    rules = parser.rules  # type: ignore[attr-defined]
    named = {p for r in rules.rules if r.programs is not None for p in r.programs}
    assert len(rules._by_program) <= len(named)
    sshd = rules.candidates("sshd")
    assert sshd == [r for r in rules.rules if r.programs is None or "sshd" in r.programs]
    assert rules.candidates("prog1") == [r for r in rules.rules if r.programs is None]


def test_timestamp_and_route_caches_stay_within_their_bounds() -> None:
    clock = SyslogClock()
    for i in range(CACHE_LIMIT + 500):
        clock.parse_iso(f"2024-05-17T10:00:00.{i:06d}Z", UTC)
    assert 0 < len(clock._iso) <= CACHE_LIMIT + 1
    router = Router()
    for i in range(PATH_CACHE_LIMIT + 500):
        router.kind_for_path(f"/var/log/app{i}.log")
    assert 0 < len(router._path_cache) <= PATH_CACHE_LIMIT + 1
