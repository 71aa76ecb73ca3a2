"""GeoIP enrichment: where an address is and which network (AS) it belongs to.

For every configured ``(ip_field, target)`` pair (default ``("source.ip", "source")``) the value
at ``ip_field`` is looked up in a MaxMind City database and an ASN database (``geoip2`` readers)
and the answers are written as Filebeat / the Elasticsearch ``geoip`` processor write them::

    <target>.geo.continent_name      "Europe"
    <target>.geo.country_iso_code    "SE"
    <target>.geo.country_name        "Sweden"
    <target>.geo.region_iso_code     "SE-E"       (country code + "-" + subdivision code)
    <target>.geo.region_name         "Östergötland County"
    <target>.geo.city_name           "Linköping"
    <target>.geo.location            {"lat": 58.4167, "lon": 15.6167}
    <target>.as.number               29518
    <target>.as.organization.name    "Bredband2 AB"

Only values the database has are written (no ``None``s). Rules:

- A value that is not an IP address (a host name, garbage, a non-string) is skipped silently.
- An IPv4-mapped IPv6 address (``::ffff:81.2.69.160``) is looked up as its IPv4 address.
- An address that is not globally routable -- private, loopback, link-local, documentation,
  CGNAT (100.64/10), multicast, reserved, unspecified: anything where ``ipaddress`` says
  ``not is_global``, plus multicast -- is not looked up; the document gets the tag
  :data:`NON_PUBLIC_TAG` (``_geoip_non_public_ip``) instead.
- An address the database does not know gets no fields, no tag and no error.
- A database path that is missing, unreadable or of the wrong type turns that database off with
  one warning at start; with neither database usable the step does nothing. A path set to
  ``null`` turns that database off without a warning.

Lookups are cached in an LRU (``cache_size`` entries, keyed by the IP string as it appears in the
document) holding the finished sub-objects; each document gets its own copy. Behind it, the City
answers of IPv4 database networks are kept too (as many networks as ``cache_size``): a new address
in a network already looked up is not decoded again (the record is the network's).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

import geoip2.database
from geoip2.errors import AddressNotFoundError
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

from ingest.document import add_tag
from ingest.enrich.base import Enricher, register

logger = logging.getLogger(__name__)

#: Tag for documents with a non-public address in a GeoIP field (not looked up).
NON_PUBLIC_TAG = "_geoip_non_public_ip"

DEFAULT_CITY_DATABASE = Path("/usr/share/GeoIP/GeoLite2-City.mmdb")
DEFAULT_ASN_DATABASE = Path("/usr/share/GeoIP/GeoLite2-ASN.mmdb")


class GeoIpConfig(BaseModel):
    """Configuration of the GeoIP step."""

    model_config = ConfigDict(extra="forbid")

    city_database: Path | None = Field(
        default=DEFAULT_CITY_DATABASE,
        description="MaxMind City database (.mmdb: GeoLite2-City, GeoIP2-City). Missing or "
        "unreadable: geo fields off, one warning at start. null: off without a warning.",
    )
    asn_database: Path | None = Field(
        default=DEFAULT_ASN_DATABASE,
        description="MaxMind ASN database (.mmdb: GeoLite2-ASN). Missing or unreadable: AS "
        "fields off, one warning at start. null: off without a warning.",
    )
    fields: list[tuple[str, str]] = Field(
        default_factory=lambda: [("source.ip", "source")],
        description="Pairs (dotted IP field, dotted target prefix): the answers for the address "
        "at the IP field go to <target>.geo and <target>.as.",
    )
    cache_size: NonNegativeInt = Field(
        default=10_000,
        description="Entries in the LRU cache of finished lookups, keyed by IP string. 0: no cache.",
    )


class _CityReader(Protocol):
    def city(self, ip_address: str) -> Any: ...


class _AsnReader(Protocol):
    def asn(self, ip_address: str) -> Any: ...


# What the cache holds per IP string: (non_public, geo, as). geo / as are None when unknown.
_Answer = tuple[bool, dict[str, Any] | None, dict[str, Any] | None]
_SKIP: _Answer = (False, None, None)
_NOT_CACHED: Any = object()


def _geo_fields(resp: Any) -> dict[str, Any] | None:
    """The ``geo`` object for a ``geoip2`` City answer, ECS names, only known values."""
    geo: dict[str, Any] = {}
    if resp.continent.name:
        geo["continent_name"] = resp.continent.name
    country_iso = resp.country.iso_code
    if country_iso:
        geo["country_iso_code"] = country_iso
    if resp.country.name:
        geo["country_name"] = resp.country.name
    sub = resp.subdivisions.most_specific
    if country_iso and sub.iso_code:
        geo["region_iso_code"] = f"{country_iso}-{sub.iso_code}"
    if sub.name:
        geo["region_name"] = sub.name
    if resp.city.name:
        geo["city_name"] = resp.city.name
    lat, lon = resp.location.latitude, resp.location.longitude
    if lat is not None and lon is not None:
        geo["location"] = {"lat": lat, "lon": lon}
    return geo or None


def _name(record: dict[str, Any], key: str) -> Any:
    part = record.get(key)
    return part.get("names", {}).get("en") if part else None


def _geo_from_record(record: dict[str, Any]) -> dict[str, Any] | None:
    """:func:`_geo_fields` of the raw City record (maxminddb's dict; names in English, as the
    ``geoip2`` reader's default locale)."""
    geo: dict[str, Any] = {}
    value = _name(record, "continent")
    if value:
        geo["continent_name"] = value
    country = record.get("country") or {}
    country_iso = country.get("iso_code")
    if country_iso:
        geo["country_iso_code"] = country_iso
    value = _name(record, "country")
    if value:
        geo["country_name"] = value
    subdivisions = record.get("subdivisions")
    sub = subdivisions[-1] if subdivisions else {}  # geoip2's most_specific
    if country_iso and sub.get("iso_code"):
        geo["region_iso_code"] = f"{country_iso}-{sub['iso_code']}"
    value = sub.get("names", {}).get("en")
    if value:
        geo["region_name"] = value
    value = _name(record, "city")
    if value:
        geo["city_name"] = value
    location = record.get("location") or {}
    lat, lon = location.get("latitude"), location.get("longitude")
    if lat is not None and lon is not None:
        geo["location"] = {"lat": lat, "lon": lon}
    return geo or None


def _as_from_record(record: dict[str, Any]) -> dict[str, Any] | None:
    """:func:`_as_fields` of the raw ASN record."""
    number = record.get("autonomous_system_number")
    if number is None:
        return None
    out: dict[str, Any] = {"number": number}
    organization = record.get("autonomous_system_organization")
    if organization:
        out["organization"] = {"name": organization}
    return out


def _records(reader: Any, method: str = "get") -> Callable[[str], Any] | None:
    """The raw-record lookup (maxminddb's ``get``) behind a ``geoip2`` database reader, or None.

    ``geoip2`` builds a full model object tree per answer; the raw record is the same data as a
    dict: an uncached City + ASN lookup took 36 µs through the models and 16 µs this way (most of
    it maxminddb building the City record's names in every language). Other reader objects
    (tests' stand-ins) are asked through ``city()`` / ``asn()``.
    """
    if isinstance(reader, geoip2.database.Reader):
        get = getattr(getattr(reader, "_db_reader", None), method, None)
        if callable(get):
            return get  # type: ignore[no-any-return]
    return None


def _ip_address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``ipaddress.ip_address`` with a fast path for plain dotted quads (its own parser is slow)."""
    parts = value.split(".")
    if len(parts) == 4:
        number = 0
        for part in parts:
            if not (0 < len(part) <= 3 and part.isascii() and part.isdigit()) or (part[0] == "0" and len(part) > 1):
                return ipaddress.ip_address(value)  # let ipaddress decide (and say why not)
            octet = int(part)
            if octet > 255:
                return ipaddress.ip_address(value)
            number = number << 8 | octet
        return ipaddress.IPv4Address(number)
    return ipaddress.ip_address(value)


def _as_fields(resp: Any) -> dict[str, Any] | None:
    """The ``as`` object for a ``geoip2`` ASN answer."""
    if resp.autonomous_system_number is None:
        return None
    out: dict[str, Any] = {"number": resp.autonomous_system_number}
    if resp.autonomous_system_organization:
        out["organization"] = {"name": resp.autonomous_system_organization}
    return out


@register
class GeoIpEnricher(Enricher):
    """Adds ``<target>.geo`` and ``<target>.as`` for the addresses in the configured fields.

    ``city_reader`` / ``asn_reader`` are objects with ``city(ip)`` / ``asn(ip)`` (``geoip2``
    readers); either may be ``None``. :meth:`from_config` opens them from paths.
    """

    name: ClassVar[str] = "geoip"

    def __init__(
        self,
        city_reader: _CityReader | None,
        asn_reader: _AsnReader | None,
        fields: list[tuple[str, str]] | None = None,
        cache_size: int = 10_000,
    ) -> None:
        self._city = city_reader
        self._asn = asn_reader
        self._city_records = _records(city_reader)
        self._asn_records = _records(asn_reader)
        # City answers of IPv4 networks already looked up: {prefix length: {network: geo}}.
        self._city_with_prefix = _records(city_reader, "get_with_prefix_len") if cache_size > 0 else None
        self._city_networks: dict[int, dict[int, dict[str, Any] | None]] = {}
        self._network_cache_size = cache_size
        self._fields = [(src.split("."), dst.split(".")) for src, dst in (fields or [("source.ip", "source")])]
        self._lookup_error_logged = False
        lookup = self._lookup_uncached
        self._lookup = functools.lru_cache(maxsize=cache_size)(lookup) if cache_size > 0 else lookup

    @property
    def enabled(self) -> bool:
        """False when neither database is usable: :meth:`enrich_batch` then does nothing."""
        return self._city is not None or self._asn is not None

    def cache_info(self) -> Any:
        """``functools`` cache statistics (hits, misses, maxsize, currsize), or None without cache."""
        info = getattr(self._lookup, "cache_info", None)
        return info() if info else None

    @classmethod
    def from_config(cls, cfg: GeoIpConfig) -> GeoIpEnricher:
        """Open the configured databases; an unusable one is off, with one warning for all."""
        problems: list[str] = []
        city = _open_reader(cfg.city_database, "City", problems)
        asn = _open_reader(cfg.asn_database, "ASN", problems)
        if problems:
            if city is None and asn is None:
                logger.warning("GeoIP enrichment off: %s", "; ".join(problems))
            else:
                logger.warning("GeoIP enrichment partly off: %s", "; ".join(problems))
        return cls(city, asn, fields=list(cfg.fields), cache_size=cfg.cache_size)

    def close(self) -> None:
        for reader in (self._city, self._asn):
            close = getattr(reader, "close", None)
            if close is not None:
                close()
        self._city_networks.clear()
        cache_clear = getattr(self._lookup, "cache_clear", None)
        if cache_clear is not None:
            cache_clear()

    def enrich_batch(self, docs: list[dict[str, Any]]) -> None:
        if not self.enabled:
            return
        for src_parts, target_parts in self._fields:  # per document, the fields still go in order
            self._enrich_field(docs, src_parts, target_parts)

    def _enrich_field(self, docs: list[dict[str, Any]], src_parts: list[str], target_parts: list[str]) -> None:
        """One configured field of every document. Most documents have no address at all (a
        command, a SYSCALL record), so the first part of the path is tried before anything else."""
        lookup = self._lookup
        first, rest = src_parts[0], src_parts[1:]
        for doc in docs:
            value: Any = doc.get(first)
            if value is None:
                continue
            try:
                for part in rest:
                    value = value.get(part) if isinstance(value, dict) else None
                if not isinstance(value, str) or not value:
                    continue
                non_public, geo, as_ = lookup(value)
                if non_public:
                    add_tag(doc, NON_PUBLIC_TAG)
                    continue
                if geo is None and as_ is None:
                    continue
                parent = _target(doc, target_parts)
                if parent is None:
                    continue
                if geo is not None:
                    geo = geo.copy()  # each document its own copy (only `location` is nested)
                    location = geo.get("location")
                    if location is not None:
                        geo["location"] = location.copy()
                    parent["geo"] = geo
                if as_ is not None:
                    as_ = as_.copy()  # (only `organization` is nested)
                    organization = as_.get("organization")
                    if organization is not None:
                        as_["organization"] = organization.copy()
                    parent["as"] = as_
            except Exception:  # never fail a batch because of one document
                logger.exception("GeoIP enrichment of one document failed; document left as is")

    def _lookup_uncached(self, value: str) -> _Answer:
        try:
            ip = _ip_address(value.strip())
        except ValueError:
            return _SKIP
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not ip.is_global or ip.is_multicast:
            return (True, None, None)
        text = str(ip)
        geo = as_ = None
        try:
            if self._city_with_prefix is not None and ip.version == 4:
                geo = self._city_geo_v4(int(ip), text)
            elif self._city_records is not None:
                record = self._city_records(text)
                geo = _geo_from_record(record) if record else None
            elif self._city is not None:
                geo = _geo_fields(self._city.city(text))
        except Exception as exc:
            self._lookup_failed(exc)
        try:
            if self._asn_records is not None:
                record = self._asn_records(text)
                as_ = _as_from_record(record) if record else None
            elif self._asn is not None:
                as_ = _as_fields(self._asn.asn(text))
        except Exception as exc:
            self._lookup_failed(exc)
        return (False, geo, as_)

    def _city_geo_v4(self, number: int, text: str) -> dict[str, Any] | None:
        """The City answer for an IPv4 address, shared by every address of its database network.

        The database is a tree whose leaves are networks: every address of the network a lookup
        answers for (its prefix length) has that same record. Decoding the record (names in every
        language) is most of a lookup's cost, and the addresses of a brute-force campaign or of
        one provider's users come from few networks: the second address of a network costs a
        dict lookup per prefix length seen. Bounded like the address cache (emptied when full).
        """
        for prefix_len, networks in self._city_networks.items():
            geo = networks.get(number >> (32 - prefix_len), _NOT_CACHED)
            if geo is not _NOT_CACHED:
                return geo
        assert self._city_with_prefix is not None
        record, prefix_len = self._city_with_prefix(text)
        geo = _geo_from_record(record) if record else None
        if not 0 <= prefix_len <= 32:
            return geo
        if sum(len(n) for n in self._city_networks.values()) >= self._network_cache_size:
            self._city_networks.clear()
        self._city_networks.setdefault(prefix_len, {})[number >> (32 - prefix_len)] = geo
        return geo

    def _lookup_failed(self, exc: Exception) -> None:
        """Not found is normal; anything else (a corrupt database) is logged once, not per address."""
        if not isinstance(exc, AddressNotFoundError) and not self._lookup_error_logged:
            self._lookup_error_logged = True
            logger.warning("GeoIP lookup failed (logged once): %r", exc)


def _target(doc: dict[str, Any], path: list[str]) -> dict[str, Any] | None:
    """The object at ``path`` (a dotted path's parts), created if absent; None if a non-object is in the way."""
    cur = doc
    for part in path:
        nxt = cur.get(part)
        if nxt is None:
            nxt = cur[part] = {}
        elif not isinstance(nxt, dict):
            return None
        cur = nxt
    return cur


def _open_reader(path: Path | None, kind: str, problems: list[str]) -> Any:
    """A ``geoip2`` reader for ``path`` if it is a readable ``kind`` database, else None (the
    reason appended to ``problems``)."""
    if path is None:
        return None
    try:
        reader = geoip2.database.Reader(str(path))
    except Exception as exc:  # missing, unreadable, a directory, not an .mmdb
        problems.append(f"{kind} database {path}: {exc}")
        return None
    db_type = reader.metadata().database_type
    if kind not in db_type and not (kind == "City" and "Enterprise" in db_type):
        reader.close()
        problems.append(f"{kind} database {path}: is a {db_type} database")
        return None
    return reader
