"""Every cache of the worker's pipeline, with its bound: what keeps the RSS flat.

Each cache holds at most ``entries`` items (then it is cleared, or the least recently used is
dropped); :data:`CACHES` lists them with the megabytes they hold when full, as measured by
``benchmarks/memory.py`` on the benchmark corpus (README "Memory"). :func:`cache_entries` reads
how many entries each holds now, for that script and for the tests that fill them past the bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cache:
    name: str
    entries: int  #: most entries held
    what: str


def _clock(p: Any) -> Any:
    for parser in p.parsers.values():
        clock = getattr(getattr(parser, "resources", None), "clock", None)
        if clock is not None:
            return clock
    return None


def _geoip(p: Any) -> Any:
    for e in p.enrichers:
        lookup = getattr(e, "_lookup", None)
        if lookup is not None and hasattr(lookup, "cache_info"):
            return lookup
    return None


def _lru(module: str, name: str) -> tuple[Callable[[Any], int], Callable[[Any], None]]:
    def fn() -> Any:
        import importlib

        return getattr(importlib.import_module(module), name)

    return (lambda p: int(fn().cache_info().currsize)), (lambda p: fn().cache_clear())


def _attr(get: Callable[[Any], Any], attr: str) -> tuple[Callable[[Any], int], Callable[[Any], None]]:
    def size(p: Any) -> int:
        obj = get(p)
        return len(getattr(obj, attr, ())) if obj is not None else 0

    def clear(p: Any) -> None:
        obj = get(p)
        if obj is not None and hasattr(obj, attr):
            getattr(obj, attr).clear()

    return size, clear


def _geoip_cache() -> tuple[Callable[[Any], int], Callable[[Any], None]]:
    def size(p: Any) -> int:
        lookup = _geoip(p)
        return int(lookup.cache_info().currsize) if lookup is not None else 0

    def clear(p: Any) -> None:
        lookup = _geoip(p)
        if lookup is not None:
            lookup.cache_clear()

    return size, clear


Accessors = tuple[Callable[[Any], int], Callable[[Any], None]]


def _bounds() -> dict[str, tuple[Cache, Accessors]]:
    from ingest.enrich.geoip import GeoIpConfig
    from ingest.route import PATH_CACHE_LIMIT
    from ingest.timestamps import CACHE_LIMIT

    geoip = int(GeoIpConfig.model_fields["cache_size"].default)
    rows: list[tuple[Cache, Accessors]] = [
        (Cache("timestamps.resolved", CACHE_LIMIT, "classic syslog time text + zone -> time, with the read "
                                                   "times it holds for"), _attr(_clock, "_resolved")),
        (Cache("timestamps.classic", CACHE_LIMIT, "classic syslog time text + zone + year -> time"),
         _attr(_clock, "_classic")),
        (Cache("timestamps.fields", CACHE_LIMIT, "classic syslog time text -> its numbers"), _attr(_clock, "_fields")),
        (Cache("timestamps.iso", CACHE_LIMIT, "ISO 8601 / ctime / epoch time text + zone -> time"),
         _attr(_clock, "_iso")),
        (Cache("route.paths", PATH_CACHE_LIMIT, "log file path -> log kind"),
         _attr(lambda p: p.router, "_path_cache")),
        (Cache("geoip", geoip, "IP -> GeoIP and ASN fields (geoip.cache_size)"), _geoip_cache()),
        (Cache("addresses.valid_ip", 8192, "text -> normalised IP or None"),
         _lru("ingest.parsers.addresses", "valid_ip")),
        (Cache("auditd.second", 1024, "auditd epoch second -> ISO text"), _lru("ingest.parsers.auditd", "_second")),
        (Cache("auditd_ecs.ip", 4096, "auditd address text -> IP"), _lru("ingest.parsers.auditd_ecs", "_ip")),
        (Cache("teleport.events", 4096, "Teleport event name -> its fields"),
         _attr(lambda p: getattr(p.parsers.get("teleport"), "table", None), "_cache")),
    ]
    return {c.name: (c, acc) for c, acc in rows}


def caches() -> list[Cache]:
    return [c for c, _ in _bounds().values()]


def cache_entries(pipeline: Any) -> dict[str, int]:
    """Entries held now by each cache of ``pipeline`` (an :class:`ingest.pipeline.Pipeline`)."""
    return {name: acc[0](pipeline) for name, (_, acc) in _bounds().items()}


def clear_cache(pipeline: Any, name: str) -> None:
    """Empty one cache (``benchmarks/memory.py`` measures what it held by what this frees)."""
    _bounds()[name][1][1](pipeline)
