"""Routing Filebeat events to a kind, on the envelope shapes Filebeat 6.x-8.x send and odd ones."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ingest.model import DeadLetter
from ingest.route import Routed, Router


def route(event: dict[str, Any]) -> Routed | DeadLetter:
    return Router().route(orjson.dumps(event))


@pytest.mark.parametrize(("event", "kind"), [
    ({"message": "x", "fields": {"log_type": "commands"}, "log": {"file": {"path": "/var/log/auth.log"}}},
     "commands"),  # the explicit field wins over the path
    ({"message": "x", "fields": {"log_type": {"not": "a string"}}, "source": "/var/log/secure"}, "auth"),
    ({"message": "x", "fields": {"log_type": ["auth"]}, "source": "/var/log/commands.log"}, "commands"),
    ({"message": "x", "fields": {"log_type": "nginx"}, "source": "/var/log/openvpn.log"}, "openvpn"),
    ({"message": "x", "event": {"module": "auditd"}, "log": {"file": {"path": "/elsewhere.log"}}}, "auditd"),
    ({"message": "x", "event": {"module": ""}, "fileset": {"module": "auditd"}, "source": "/x.log"}, "auditd"),
    ({"message": "x", "event": "not an object", "fileset": {"module": "auditd"}}, "auditd"),
    ({"message": "x", "event": {"module": "system"}, "fileset": {"module": "auditd"},
      "source": "/var/log/auth.log"}, "auth"),  # a module other than auditd: the path decides
])
def test_kind(event: dict[str, Any], kind: str) -> None:
    routed = route(event)
    assert isinstance(routed, Routed)
    assert routed.kind == kind


def test_no_route_is_a_dead_letter_naming_the_path() -> None:
    dead = route({"message": "x", "log": {"file": {"path": "/var/log/nginx/access.log"}}})
    assert isinstance(dead, DeadLetter)
    assert (dead.stage, dead.error_code) == ("route", "no_route")
    assert "/var/log/nginx/access.log" in dead.reason


@pytest.mark.parametrize(("event", "host"), [
    ({"host": {"name": "web-1"}}, "web-1"),                        # 7.x/8.x
    ({"host": "web-2"}, "web-2"),                                  # some shippers
    ({"host": {"id": "x"}, "agent": {"hostname": "web-3"}}, "web-3"),
    ({"beat": {"hostname": "web-4"}}, "web-4"),                    # 6.x
    ({"host": ["no"]}, None),
])
def test_host(event: dict[str, Any], host: str | None) -> None:
    routed = route({"message": "x", "source": "/var/log/auth.log", **event})
    assert isinstance(routed, Routed)
    assert routed.host == host


@pytest.mark.parametrize(("raw", "doc_id"), [
    (b'{"@timestamp":"2024-05-17T00:00:00.538Z","host":{"name":"web-2"},"log":{"file":{"path":"/var/log/auth.log"},'
     b'"offset":171},"message":"May 17 00:00:00 web-2 sshd[10411]: Accepted publickey for sybil from '
     b'89.160.20.176 port 50617 ssh2"}', "9c8787cd815922d80844d177eb351a3b"),
    (b'{"source":"/var/log/commands.log","offset":0,"beat":{"hostname":"db-1"},'
     b'"message":"caf\\u00e9 \\u65e5\\u672c \\ud83d\\ude00 [0]"}', "a81ddd76583c0cfea241ea48e104a6fd"),
    (b'{"message":"no offset: the raw event is hashed","fields":{"log_type":"auth"}}',
     "c33f1158eb16cb6e6d8e4cb28b65f5e8"),
])
def test_document_ids_never_change(raw: bytes, doc_id: str) -> None:
    """Ids of events indexed by earlier versions: a redelivered event must get the same id (409)
    after an upgrade too, or it is stored twice."""
    routed = Router().route(raw)
    assert isinstance(routed, Routed)
    assert routed.document_id() == doc_id
