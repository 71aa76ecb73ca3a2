"""Every OpenVPN connect / disconnect shape the rules give pairs into a session: the connect's
``[CN]`` and real address meet the ``CN/ADDR`` prefix of the lines that end it, in each of the three
forms (own log file, syslog, Access Server), for IPv4 and IPv6 clients; the own log file, which has
no host in the line, pairs on the host Filebeat read it on."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from ingest.parsers import syslog_rules as _rules  # noqa: F401
from ingest.parsers.base import REGISTRY, LineContext
from ingest.parsers.resources import ParserResources
from ingest.sessions.events import mark_of

CTX = LineContext(now=datetime(2024, 12, 31, tzinfo=UTC))

#: (time prefix, prefix of the line before the client's message): the forms a server writes
FORMS = {
    "syslog": ("Dec 15 14:11:{s} vpn1 openvpn[9739]: ", ""),
    "syslog daemon name": ("Dec 15 14:11:{s} vpn1 ovpn-server[310]: ", ""),
    "rfc3339 syslog": ("2024-12-15T14:11:{s}.000000+00:00 vpn1 openvpn[9739]: ", ""),
    "own log 2.5+": ("2024-12-15 14:11:{s} ", ""),
    "own log 2.4": ("Sun Dec 15 14:11:{s} 2024 ", ""),
    "own log verb 4": ("2024-12-15 14:11:{s} us=1234 ", ""),
    "machine readable": ("17342718{s}.000001 1 ", ""),
    "access server file": ("2024-12-15T14:11:{s}+0000 [stdout#info] [OVPN 0] OUT: '", "'"),
    "access server syslog": ("Dec 15 14:11:{s} vpn1 openvpnas: [-] [OVPN 0] OUT: '2024-12-15 14:11:{s} ", "'"),
}
CONNECT = "{addr} [{cn}] Peer Connection Initiated with [AF_INET{fam}]{sock}"
ENDS = [
    "{cn}/{addr} SIGTERM[soft,remote-exit] received, client-instance exiting",
    "{cn}/{addr} SIGUSR1[soft,ping-restart] received, client-instance restarting",
    "{cn}/{addr} [{cn}] Inactivity timeout (--ping-restart), restarting",
    "{cn}/{addr} [{cn}] Inactivity timeout (--ping-exit), exiting",
    "{cn}/{addr} Inactivity timeout (--inactive), exiting",
    "{cn}/{addr} Session timeout, exiting",
    "{cn}/{addr} Connection reset, restarting [0]",
]
ASSIGN = "{cn}/{addr} MULTI_sva: pool returned IPv4=10.8.0.6, IPv6=(Not enabled)"
CLIENTS = {
    "ipv4": {"addr": "81.2.69.160:39236", "sock": "81.2.69.160:39236", "fam": ""},
    "ipv6": {"addr": "2001:db8::7", "sock": "2001:db8::7:51234", "fam": "6"},
}


@pytest.fixture(scope="module")
def parser() -> object:
    return REGISTRY["openvpn"](ParserResources())


def _line(form: str, seconds: int, message: str) -> str:
    head, tail = FORMS[form]
    return head.replace("{s}", f"{seconds:02d}") + message + tail


@pytest.mark.parametrize("client", sorted(CLIENTS))
@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("cn", ["alice", "Alice Smith (laptop)", "x/10.10.1.2:55555 y"])
def test_connect_and_every_end_share_the_key(parser: object, form: str, client: str, cn: str) -> None:
    values = dict(CLIENTS[client], cn=cn)
    connect = parser.parse(_line(form, 10, CONNECT.format(**values)), CTX)  # type: ignore[attr-defined]
    login = mark_of(connect)
    assert login is not None and login.role == "login", connect
    assign = mark_of(parser.parse(_line(form, 11, ASSIGN.format(**values)), CTX))  # type: ignore[attr-defined]
    assert assign is not None and (assign.role, assign.key) == ("attr", login.key)
    assert assign.fields["openvpn"]["virtual_ip"] == "10.8.0.6"
    for end in ENDS:
        doc = parser.parse(_line(form, 20, end.format(**values)), CTX)  # type: ignore[attr-defined]
        logout = mark_of(doc)
        assert logout is not None and (logout.role, logout.key) == ("logout", login.key), (end, doc)
        assert logout.ts > login.ts


def test_a_failed_attempt_does_not_end_someone_elses_session(parser: object) -> None:
    """The exit of an instance that never authenticated has no common name: it pairs with nothing."""
    doc = parser.parse("2024-12-15 14:11:20 81.2.69.160:39236 SIGTERM[soft,auth-failure] received, "  # type: ignore[attr-defined]
                       "client-instance exiting", CTX)
    assert doc["event"]["action"] == "vpn_disconnect" and mark_of(doc) is None


def test_own_log_file_pairs_on_the_filebeat_host() -> None:
    """No host in OpenVPN's own log lines: the session is the Filebeat host's, and two servers'
    clients with the same name and address do not close each other's sessions."""
    from ingest.pipeline import Pipeline
    from ingest.settings import load_settings

    pipeline = Pipeline.from_settings(load_settings(overrides={"detect": {"enabled": False}}))

    def event(host: str, offset: int, ts: str, line: str) -> bytes:
        return orjson.dumps({"@timestamp": "2024-12-15T15:00:00.000Z", "host": {"name": host},
                             "log": {"file": {"path": "/var/log/openvpn/openvpn.log"}, "offset": offset},
                             "message": f"2024-12-15 {ts} {line}"})

    raws = [
        event("vpn-a", 0, "14:11:10", "81.2.69.160:39236 [alice] Peer Connection Initiated with [AF_INET]81.2.69.160:39236"),
        event("vpn-b", 0, "14:11:12", "81.2.69.160:39236 [alice] Peer Connection Initiated with [AF_INET]81.2.69.160:39236"),
        event("vpn-a", 100, "14:11:11", "alice/81.2.69.160:39236 MULTI_sva: pool returned IPv4=10.8.0.6, IPv6=(Not enabled)"),
        event("vpn-a", 200, "14:41:10", "alice/81.2.69.160:39236 SIGTERM[soft,remote-exit] received, client-instance exiting"),
    ]
    result = pipeline.process(raws)
    assert not result.dead
    events = [a.doc for a in result.actions if a.doc.get("type") == "openvpn"]
    assert [d["host"]["hostname"] for d in events] == ["vpn-a", "vpn-b", "vpn-a", "vpn-a"]
    assert all("process" not in d for d in events)
    sessions = [a.doc for a in result.actions if a.doc.get("type") == "session"]
    assert len(sessions) == 1
    (s,) = sessions
    assert s["host"]["hostname"] == "vpn-a" and s["user"]["name"] == "alice"
    assert s["session"]["duration_s"] == 1800 and s["openvpn"]["virtual_ip"] == "10.8.0.6"
