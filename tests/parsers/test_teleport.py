"""The Teleport parser: addresses (only valid IPs in ``*.ip``), the event table, odd lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from ingest.errors import PatternError
from ingest.parsers.addresses import endpoint
from ingest.parsers.base import PARSE_FAILURE_TAG, LineContext
from ingest.parsers.resources import ParserResources
from ingest.parsers.teleport import TeleportParser
from ingest.parsers.teleport_events import load_table
from ingest.setup.template import build_setup, install
from tests.es_double import ESDouble

PARSER = TeleportParser()
CTX = LineContext()
PATTERNS = Path(__file__).parent.parent.parent / "patterns"


def parse(event: dict[str, Any]) -> dict[str, Any]:
    return PARSER.parse(json.dumps(event), CTX)


@pytest.mark.parametrize(
    ("value", "fields"),
    [
        ("81.2.69.160:53412", {"address": "81.2.69.160", "ip": "81.2.69.160", "port": 53412}),
        ("[2001:db8::5]:55000", {"address": "2001:db8::5", "ip": "2001:db8::5", "port": 55000}),
        ("[::1]:37718", {"address": "::1", "ip": "::1", "port": 37718}),
        ("10.0.5.1", {"address": "10.0.5.1", "ip": "10.0.5.1"}),
        ("2001:db8::1", {"address": "2001:db8::1", "ip": "2001:db8::1"}),
        ("::ffff:10.0.0.1", {"address": "::ffff:10.0.0.1", "ip": str(ip_address("::ffff:10.0.0.1"))}),
        ("[fe80::1%eth0]:22", {"address": "fe80::1%eth0", "ip": "fe80::1", "port": 22}),
        ("@local-node", {"address": "@local-node"}),
        ("node-1.example.com:3022", {"address": "node-1.example.com", "domain": "node-1.example.com", "port": 3022}),
        ("localhost:8080", {"address": "localhost", "domain": "localhost", "port": 8080}),
        ("host:99999", {"address": "host:99999"}),
        ("host:abc", {"address": "host:abc"}),
        ("/var/run/teleport.sock", {"address": "/var/run/teleport.sock"}),
        ("999.1.1.1:22", {"address": "999.1.1.1", "port": 22}),
        ("[2001:db8::1", {"address": "[2001:db8::1"}),
        ("", None),
        (":22", None),
    ],
)
def test_endpoints(value: str, fields: dict[str, Any] | None) -> None:
    assert endpoint(value) == fields


def test_addresses_that_are_not_ips_stay_out_of_ip_fields() -> None:
    doc = parse({"event": "session.start", "time": "2024-12-09T10:00:00Z", "user": "a", "login": "root",
                 "sid": "s1", "addr.local": "@local-node", "addr.remote": "laptop.example.org:50022",
                 "server_addr": "node-1:3022"})
    assert doc["destination"] == {"address": "@local-node"}
    assert doc["source"] == {"address": "laptop.example.org", "domain": "laptop.example.org", "port": 50022}
    assert "ip" not in doc.get("host", {}) and "ip" not in doc.get("related", {})
    assert doc["teleport"]["addr_local"] == "@local-node"


@pytest.fixture
def es() -> Iterator[ESDouble]:
    with ESDouble() as double:
        yield double
    assert not double.internal_errors


def test_such_documents_are_indexed(es: ESDouble) -> None:
    """The issue's documents: Elasticsearch rejected them whole when '@local-node' went into an ip field."""
    c = Elasticsearch(es.url, max_retries=0, retry_on_timeout=False, request_timeout=30)
    install(c, build_setup())
    events = [
        {"event": "session.start", "time": "2024-12-09T10:00:00Z", "sid": "s1", "addr.local": "@local-node",
         "addr.remote": "203.0.113.9:1", "server_addr": "@local-node"},
        {"event": "session.start", "time": "2024-12-09T10:00:01Z", "sid": "s2", "addr.local": "node-1:3022",
         "addr.remote": "laptop:50022", "server_addr": "node-1:3022"},
        {"event": "port", "time": "2024-12-09T10:00:02Z", "addr": "localhost:5432", "addr.remote": "[::1]:2"},
    ]
    operations: list[Any] = []
    for i, event in enumerate(events):
        operations += [{"create": {"_index": "audit-2024.12.09", "_id": str(i)}}, parse(event)]
    items = [item["create"] for item in c.bulk(operations=operations)["items"]]
    assert [item["status"] for item in items] == [201, 201, 201], items


def test_event_table_override_from_a_later_folder(tmp_path: Path) -> None:
    (tmp_path / "teleport.events.toml").write_text(
        '[prefix."widget."]\ncategory = ["host"]\ntype = ["info"]\n[event."widget.break"]\ntype = ["change"]\n',
        encoding="utf-8")
    parser = TeleportParser(ParserResources([PATTERNS, tmp_path]))
    doc = parser.parse('{"event":"widget.break","code":"TW001I","time":"2024-12-09T10:00:00Z"}', CTX)
    assert doc["event"]["category"] == ["host"] and doc["event"]["type"] == ["change"]
    assert doc["event"]["outcome"] == "success"
    other = parser.parse('{"event":"session.start","time":"2024-12-09T10:00:00Z"}', CTX)
    assert "category" not in other["event"]  # the later folder's file replaces the shipped one


@pytest.mark.parametrize("text", ['[event.x]\ncolour = ["red"]\n', '[event.x]\ntype = "start"\n', "[event"])
def test_bad_event_table_stops_the_start(tmp_path: Path, text: str) -> None:
    path = tmp_path / "teleport.events.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PatternError, match="Teleport event table") as failure:
        load_table(path)
    assert str(path) in str(failure.value)


@pytest.mark.parametrize(
    ("event", "outcome"),
    [
        ({"event": "user.login", "success": False, "code": "T1000I"}, "failure"),  # success wins
        ({"event": "exec", "code": "T3002E"}, "failure"),
        ({"event": "session.rejected", "code": "T1006W"}, "failure"),
        ({"event": "exec", "code": "T3002I"}, "success"),
        ({"event": "session.start"}, "success"),  # no code (Teleport before 4.x): a start is a success
        ({"event": "session.end", "code": "T2004I"}, None),
        ({"event": "session.upload", "code": "T2005I"}, None),
    ],
)
def test_outcome(event: dict[str, Any], outcome: str | None) -> None:
    doc = parse({**event, "time": "2024-12-09T10:00:00Z"})
    assert doc["event"].get("outcome") == outcome


@pytest.mark.parametrize(
    "line",
    ["", "not json", "[1, 2]", '{"no": "event"}', '{"event": 42}', "2016-04-25 22:37:29 +0000 UTC,x,{oops",
     "2016-04-25 22:37:29 +0000 UTC,x,[1]"],
)
def test_not_an_event_is_tagged_and_kept(line: str) -> None:
    doc = PARSER.parse(line, CTX)
    assert doc["message"] == line and doc["tags"] == [PARSE_FAILURE_TAG] and "@timestamp" in doc


def test_nanosecond_times_and_bad_times() -> None:
    doc = parse({"event": "session.end", "time": "2024-12-09T10:24:43.004113562Z"})
    assert doc["@timestamp"] == "2024-12-09T10:24:43.004113Z"
    bad = parse({"event": "session.end", "time": "yesterday"})
    assert bad["tags"] == ["_dateparsefailure"]
