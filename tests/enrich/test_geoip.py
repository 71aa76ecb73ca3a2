"""GeoIP enricher against MaxMind's test databases (answers: tests/data/geoip/README.md)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import geoip2.database
import pytest
from pydantic import ValidationError

from ingest.enrich.base import REGISTRY
from ingest.enrich.geoip import NON_PUBLIC_TAG, GeoIpConfig, GeoIpEnricher

DATA = Path(__file__).parent.parent / "data" / "geoip"
CITY = DATA / "GeoIP2-City-Test.mmdb"
ASN = DATA / "GeoLite2-ASN-Test.mmdb"

LINKOPING_GEO = {
    "continent_name": "Europe",
    "country_iso_code": "SE",
    "country_name": "Sweden",
    "region_iso_code": "SE-E",
    "region_name": "Östergötland County",
    "city_name": "Linköping",
    "location": {"lat": 58.4167, "lon": 15.6167},
}


class Counting:
    """A reader wrapper that counts lookups."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.calls = 0
        self.asked: list[str] = []

    def city(self, ip: str) -> Any:
        self.calls += 1
        self.asked.append(ip)
        return self.reader.city(ip)

    def asn(self, ip: str) -> Any:
        self.calls += 1
        self.asked.append(ip)
        return self.reader.asn(ip)


@pytest.fixture(scope="module")
def readers() -> Any:
    city, asn = geoip2.database.Reader(str(CITY)), geoip2.database.Reader(str(ASN))
    yield city, asn
    city.close()
    asn.close()


@pytest.fixture
def enricher() -> Any:
    e = GeoIpEnricher.from_config(GeoIpConfig(city_database=CITY, asn_database=ASN))
    yield e
    e.close()


def doc(ip: Any) -> dict[str, Any]:
    return {"type": "auth", "source": {"ip": ip, "port": 51836}}


def enriched(enricher: GeoIpEnricher, ip: Any) -> dict[str, Any]:
    d = doc(ip)
    enricher.enrich_batch([d])
    return d


# --- known answers ------------------------------------------------------------------------------


def test_london_city_without_asn(enricher: GeoIpEnricher) -> None:
    assert enriched(enricher, "81.2.69.160") == {
        "type": "auth",
        "source": {
            "ip": "81.2.69.160",
            "port": 51836,
            "geo": {
                "continent_name": "Europe",
                "country_iso_code": "GB",
                "country_name": "United Kingdom",
                "region_iso_code": "GB-ENG",
                "region_name": "England",
                "city_name": "London",
                "location": {"lat": 51.5142, "lon": -0.0931},
            },
        },
    }


def test_milton_with_asn_without_organization(enricher: GeoIpEnricher) -> None:
    src = enriched(enricher, "216.160.83.56")["source"]
    assert (src["geo"]["country_iso_code"], src["geo"]["city_name"]) == ("US", "Milton")
    assert src["geo"]["region_iso_code"] == "US-WA"
    assert src["as"] == {"number": 209}


def test_linkoping_with_asn_and_organization(enricher: GeoIpEnricher) -> None:
    src = enriched(enricher, "89.160.20.112")["source"]
    assert src["geo"] == LINKOPING_GEO
    assert src["as"] == {"number": 29518, "organization": {"name": "Bredband2 AB"}}


def test_country_only_and_ipv6(enricher: GeoIpEnricher) -> None:
    src = enriched(enricher, "2001:218::1")["source"]
    assert src["geo"] == {
        "continent_name": "Asia",
        "country_iso_code": "JP",
        "country_name": "Japan",
        "location": {"lat": 35.68536, "lon": 139.75309},
    }
    assert "as" not in src


def test_asn_only_address(enricher: GeoIpEnricher) -> None:
    src = enriched(enricher, "1.128.0.0")["source"]
    assert "geo" not in src
    assert src["as"] == {"number": 1221, "organization": {"name": "Telstra Pty Ltd"}}


def test_ipv4_mapped_ipv6_is_looked_up_as_ipv4(readers: Any) -> None:
    city, asn = Counting(readers[0]), Counting(readers[1])
    d = enriched(GeoIpEnricher(city, asn), "::ffff:89.160.20.112")
    assert city.asked == asn.asked == ["89.160.20.112"]
    assert d["source"]["geo"] == LINKOPING_GEO
    assert d["source"]["ip"] == "::ffff:89.160.20.112"  # the value itself is not rewritten
    assert "tags" not in d


def test_address_not_in_database_gets_nothing(enricher: GeoIpEnricher) -> None:
    assert enriched(enricher, "202.109.143.106") == doc("202.109.143.106")


# --- what is not looked up ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "ip",
    [
        "10.0.0.1",  # private
        "172.16.5.4",
        "192.168.1.1",
        "127.0.0.1",  # loopback
        "169.254.10.1",  # link-local
        "192.0.2.1",  # documentation
        "198.51.100.7",
        "203.0.113.9",
        "100.64.0.1",  # CGNAT
        "224.0.0.1",  # multicast
        "240.0.0.1",  # reserved
        "255.255.255.255",
        "0.0.0.0",
        "::1",
        "::",
        "fe80::1",
        "fe80::1%eth0",
        "fc00::1",  # unique local
        "2001:db8::1",  # documentation
        "ff02::1",  # multicast
        "::ffff:10.0.0.1",  # mapped private
    ],
)
def test_non_public_addresses_are_tagged_not_looked_up(readers: Any, ip: str) -> None:
    city, asn = Counting(readers[0]), Counting(readers[1])
    d = enriched(GeoIpEnricher(city, asn), ip)
    assert d["tags"] == [NON_PUBLIC_TAG] == ["_geoip_non_public_ip"]
    assert "geo" not in d["source"] and "as" not in d["source"]
    assert city.calls == asn.calls == 0


@pytest.mark.parametrize(
    "value", ["example.com", "", "81.2.69.160:22", "999.1.1.1", 1234, None, ["81.2.69.160"]]
)
def test_values_that_are_not_ip_addresses_are_skipped(
    enricher: GeoIpEnricher, value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        assert enriched(enricher, value) == doc(value)
    assert caplog.records == []  # skipped on purpose, not by an error caught on the way


def test_documents_without_the_field_or_with_odd_shapes_are_left_alone(enricher: GeoIpEnricher) -> None:
    docs: list[Any] = [
        {"message": "no source"},
        {"source": "81.2.69.160"},
        {"source": None},
        {"source": {"ip": {"nested": "81.2.69.160"}}},
    ]
    before = copy.deepcopy(docs)
    enricher.enrich_batch(docs)
    assert docs == before


def test_target_in_the_way_does_not_stop_the_batch(readers: Any, caplog: pytest.LogCaptureFixture) -> None:
    e = GeoIpEnricher(readers[0], readers[1], fields=[("source.ip", "client")])
    blocked = {"source": {"ip": "89.160.20.112"}, "client": "a scalar"}
    free = {"source": {"ip": "89.160.20.112"}}
    with caplog.at_level(logging.DEBUG):
        e.enrich_batch([blocked, free])
    assert caplog.records == []
    assert blocked["client"] == "a scalar"
    assert free["client"]["geo"] == LINKOPING_GEO  # type: ignore[index]


# --- configuration ------------------------------------------------------------------------------


def test_several_fields_and_targets(readers: Any) -> None:
    e = GeoIpEnricher(
        readers[0], readers[1], fields=[("source.ip", "source"), ("destination.ip", "destination")]
    )
    d: dict[str, Any] = {"source": {"ip": "81.2.69.160"}, "destination": {"ip": "89.160.20.112"}}
    e.enrich_batch([d])
    assert d["source"]["geo"]["city_name"] == "London"
    assert d["destination"]["geo"] == LINKOPING_GEO
    assert d["destination"]["as"]["number"] == 29518


def test_config_defaults_and_validation() -> None:
    cfg = GeoIpConfig()
    assert cfg.fields == [("source.ip", "source")]
    assert cfg.cache_size == 10_000
    assert cfg.city_database == Path("/usr/share/GeoIP/GeoLite2-City.mmdb")
    assert cfg.asn_database == Path("/usr/share/GeoIP/GeoLite2-ASN.mmdb")
    assert GeoIpConfig(fields=[["client.ip", "client"]]).fields == [("client.ip", "client")]  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        GeoIpConfig(city_db="/x")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        GeoIpConfig(cache_size=-1)
    for name, field in GeoIpConfig.model_fields.items():
        assert field.description, name


def test_registered() -> None:
    assert REGISTRY["geoip"] is GeoIpEnricher


# --- missing and wrong databases ----------------------------------------------------------------


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_missing_databases_turn_the_step_off_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        e = GeoIpEnricher.from_config(
            GeoIpConfig(city_database=tmp_path / "City.mmdb", asn_database=tmp_path / "ASN.mmdb")
        )
        d = doc("89.160.20.112")
        e.enrich_batch([d, doc("10.0.0.1")])
        e.enrich_batch([doc("81.2.69.160")])
    assert not e.enabled
    assert d == doc("89.160.20.112")
    (warning,) = warnings_of(caplog)
    assert warning.startswith("GeoIP enrichment off:")
    assert str(tmp_path / "City.mmdb") in warning and str(tmp_path / "ASN.mmdb") in warning


def test_missing_asn_database_keeps_geo(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        e = GeoIpEnricher.from_config(GeoIpConfig(city_database=CITY, asn_database=tmp_path / "ASN.mmdb"))
        src = enriched(e, "89.160.20.112")["source"]
    assert src["geo"] == LINKOPING_GEO and "as" not in src
    (warning,) = warnings_of(caplog)
    assert "partly off" in warning and "ASN database" in warning


def test_missing_city_database_keeps_asn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        e = GeoIpEnricher.from_config(GeoIpConfig(city_database=tmp_path / "nope", asn_database=ASN))
        src = enriched(e, "89.160.20.112")["source"]
    assert src["as"]["number"] == 29518 and "geo" not in src
    assert len(warnings_of(caplog)) == 1


@pytest.mark.parametrize("kind", ["directory", "garbage", "wrong type"])
def test_unreadable_database_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    path = {"directory": tmp_path, "garbage": tmp_path / "x.mmdb", "wrong type": ASN}[kind]
    if kind == "garbage":
        path.write_bytes(b"not a maxmind database\n" * 10)
    with caplog.at_level(logging.WARNING):
        e = GeoIpEnricher.from_config(GeoIpConfig(city_database=path, asn_database=None))
    assert not e.enabled
    (warning,) = warnings_of(caplog)
    assert str(path) in warning


def test_databases_set_to_none_are_off_without_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        e = GeoIpEnricher.from_config(GeoIpConfig(city_database=None, asn_database=None))
    assert not e.enabled
    assert warnings_of(caplog) == []


def test_a_failing_reader_is_logged_once_and_the_batch_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def city(self, ip: str) -> Any:
            raise OSError("database went away")

    e = GeoIpEnricher(Broken(), None)
    docs = [doc("89.160.20.112"), doc("81.2.69.160"), doc("10.0.0.1")]
    with caplog.at_level(logging.WARNING):
        e.enrich_batch(docs)
    assert docs[:2] == [doc("89.160.20.112"), doc("81.2.69.160")]
    assert docs[2]["tags"] == [NON_PUBLIC_TAG]
    assert len(warnings_of(caplog)) == 1


# --- cache --------------------------------------------------------------------------------------


def test_repeated_address_is_looked_up_once(readers: Any) -> None:
    city, asn = Counting(readers[0]), Counting(readers[1])
    e = GeoIpEnricher(city, asn, cache_size=100)
    docs = [doc("89.160.20.112") for _ in range(1000)] + [doc("10.0.0.1") for _ in range(50)]
    e.enrich_batch(docs)
    assert (city.calls, asn.calls) == (1, 1)
    assert all(d["source"]["geo"] == LINKOPING_GEO for d in docs[:1000])
    info = e.cache_info()
    assert (info.hits, info.misses) == (1048, 2)


def test_documents_do_not_share_cached_objects(enricher: GeoIpEnricher) -> None:
    a, b = doc("89.160.20.112"), doc("89.160.20.112")
    enricher.enrich_batch([a, b])
    a["source"]["geo"]["location"]["lat"] = 0.0
    a["source"]["geo"]["city_name"] = "changed"
    a["source"]["as"]["organization"]["name"] = "changed"
    c = enriched(enricher, "89.160.20.112")
    for d in (b, c):
        assert d["source"]["geo"] == LINKOPING_GEO
        assert d["source"]["as"]["organization"]["name"] == "Bredband2 AB"


def test_lru_evicts_the_least_recently_used(readers: Any) -> None:
    city = Counting(readers[0])
    e = GeoIpEnricher(city, None, cache_size=2)
    for ip in ["81.2.69.160", "89.160.20.112", "81.2.69.160", "216.160.83.56", "81.2.69.160"]:
        e.enrich_batch([doc(ip)])
    assert city.calls == 3  # 89.160.20.112 was evicted, 81.2.69.160 never
    e.enrich_batch([doc("89.160.20.112")])
    assert city.calls == 4


def test_cache_size_zero_looks_up_every_time(readers: Any) -> None:
    city = Counting(readers[0])
    e = GeoIpEnricher(city, None, cache_size=0)
    e.enrich_batch([doc("81.2.69.160") for _ in range(5)])
    assert city.calls == 5
    assert e.cache_info() is None


def _first_addresses(name: str) -> list[str]:
    """The first address of every network in one of MaxMind's test databases (their JSON source)."""
    import ipaddress
    import json

    networks = [next(iter(entry)) for entry in json.loads((DATA / name).read_text(encoding="utf-8"))]
    return [str(ipaddress.ip_network(n, strict=False).network_address) for n in networks]


@pytest.mark.parametrize("city_db", ["GeoIP2-City-Test", "GeoLite2-City-Test"])
def test_raw_records_give_what_the_geoip2_models_give(city_db: str) -> None:
    """Real readers are read through their raw records (fast); the answers are those of geoip2's
    model objects, for every network of the test databases, IPv4 and IPv6."""
    city = geoip2.database.Reader(str(DATA / f"{city_db}.mmdb"))
    asn = geoip2.database.Reader(str(ASN))
    try:
        fast = GeoIpEnricher(city, asn, cache_size=0)
        models = GeoIpEnricher(Counting(city), Counting(asn), cache_size=0)
        assert fast._city_records is not None and fast._asn_records is not None  # the fast path is on
        assert models._city_records is None
        addresses = _first_addresses(f"{city_db}.json") + _first_addresses("GeoLite2-ASN-Test.json")
        found = 0
        for address in addresses:
            answer = fast._lookup(address)
            assert answer == models._lookup(address), address
            found += answer[1] is not None or answer[2] is not None
        assert found > 200  # the comparison covered real answers, not only misses
    finally:
        city.close()
        asn.close()


@pytest.mark.parametrize("value", [
    "81.2.69.160", "0.0.0.0", "255.255.255.255", "10.0.3.7", "1.2.3.256", "010.1.1.1", "1.2.3", "1.2.3.4.5",
    "1..2.3", "1.2.3.", "+1.2.3.4", "1.2.3.4 ", "\u0661.2.3.4", "2001:db8::1", "::ffff:81.2.69.160", "", "host.example",
])
def test_address_fast_path_agrees_with_ipaddress(value: str) -> None:
    import ipaddress

    from ingest.enrich.geoip import _ip_address

    try:
        expected: Any = ipaddress.ip_address(value)
    except ValueError:
        with pytest.raises(ValueError):
            _ip_address(value)
    else:
        assert _ip_address(value) == expected
