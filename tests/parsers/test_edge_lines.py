"""Lines no parser expects: each still becomes a document (kept, tagged), never an exception."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingest.parsers import auditd as _auditd  # noqa: F401
from ingest.parsers import syslog_rules as _rules  # noqa: F401
from ingest.parsers import teleport as _teleport  # noqa: F401
from ingest.parsers.base import PARSE_FAILURE_TAG, REGISTRY, LineContext
from ingest.parsers.resources import ParserResources

CTX = LineContext(now=datetime(2020, 12, 31, tzinfo=UTC), path="/var/log/x.log")
KINDS = sorted(REGISTRY)

EDGE = {
    "empty": "",
    "whitespace": "   \t  ",
    "control": "May 17 15:26:00 a3 sshd[1]: \x00\x01\x1b[31m Accepted\x7f",
    "replacement": "May 17 15:26:00 a3 sshd[1]: caf\ufffd \ufffd\ufffd",
    "huge": "May 17 15:26:00 a3 sshd[1]: Failed password for " + "x" * 1_000_000,
    "wrong_kind_auditd": "type=SYSCALL msg=audit(1589723201.500:4230): arch=c000003e syscall=59",
    "wrong_kind_json": '{"event":"session.start","sid":"x"}',
    "wrong_kind_syslog": "May 17 15:26:00 a3 sshd[11741]: Accepted publickey for civis-ec2 from 81.2.69.160 port 1 ssh2",
}


@pytest.fixture(scope="module")
def parsers() -> dict:
    resources = ParserResources()
    return {kind: REGISTRY[kind](resources) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(EDGE))
def test_edge_line_is_kept(parsers: dict, kind: str, name: str) -> None:
    line = EDGE[name]
    doc = parsers[kind].parse(line, CTX)
    assert doc["message"] == line
    assert doc["type"] == kind


@pytest.mark.parametrize("kind", KINDS)
def test_blank_lines_are_parse_failures(parsers: dict, kind: str) -> None:
    for line in ("", "   "):
        assert PARSE_FAILURE_TAG in parsers[kind].parse(line, CTX).get("tags", []), kind


def test_seed_000_line_without_ip(parsers: dict) -> None:
    line = ("May 17 15:26:00 a3 sshd[11748]: Accepted publickey for civis-ec2 from  port 51836 ssh2: "
            "RSA 22:f6:fc:22:40:10:e2:af:1d:19:3d:59:88:74:4a:1b")
    doc = parsers["auth"].parse(line, CTX)
    assert doc["user"]["name"] == "civis-ec2"
    assert doc["source"] == {"port": 51836}
    assert doc["system"]["auth"]["ssh"]["key"] == {"type": "RSA", "fingerprint": "22:f6:fc:22:40:10:e2:af:1d:19:3d:59:88:74:4a:1b"}
    assert doc["event"]["outcome"] == "success"
    assert doc["process"]["pid"] == 11748
    assert PARSE_FAILURE_TAG not in doc.get("tags", [])


def test_md5_prefix_is_normalised(parsers: dict) -> None:
    line = "May 17 15:26:00 a3 sshd[1]: Accepted publickey for x from 10.0.0.1 port 2 ssh2: ECDSA MD5:d6:47:3c:fd"
    assert parsers["auth"].parse(line, CTX)["system"]["auth"]["ssh"]["key"]["fingerprint"] == "d6:47:3c:fd"


def test_host_name_goes_to_domain_not_ip(parsers: dict) -> None:
    line = "May 17 15:26:00 a3 sshd[1]: Failed password for root from scanner.example.net port 2 ssh2"
    doc = parsers["auth"].parse(line, CTX)
    assert doc["source"] == {"domain": "scanner.example.net", "port": 2}


def test_missing_hostname_and_pri_openvpn_seed_003(parsers: dict) -> None:
    line = "<29>Aug 21 15:01:32     openvpn[9739]: 1.2.3.4:39236 [name.surname] Peer Connection Initiated with [AF_INET]1.2.3.4:39236"
    doc = parsers["openvpn"].parse(line, CTX)
    assert "host" not in doc
    assert doc["log"]["syslog"]["priority"] == 29
    assert doc["user"]["name"] == "name.surname"
    assert doc["source"] == {"ip": "1.2.3.4", "port": 39236}
    assert doc["event"]["action"] == "vpn_connect"
    assert doc["@timestamp"] == "2020-08-21T15:01:32.000000Z"


def test_shell_user_comes_from_file_name(parsers: dict) -> None:
    ctx = LineContext(now=CTX.now, path="/var/log/python_shell/shell_deploy.log")
    doc = parsers["shell"].parse("In [2]: os.listdir('/etc')", ctx)
    assert doc["user"]["name"] == "deploy"
    assert doc["process"]["command_line"] == "os.listdir('/etc')"


def test_ipv6_zone_id_is_kept_out_of_ip_fields(parsers: dict) -> None:
    """Elasticsearch's ip type rejects "fe80::1%eth0": the address goes to *.ip, the text to *.address."""
    line = "May 17 15:26:00 a3 sshd[1]: Connection from fe80::1%eth0 port 50000 on fe80::2%eth0 port 22"
    doc = parsers["auth"].parse(line, CTX)
    assert doc["source"] == {"ip": "fe80::1", "address": "fe80::1%eth0", "port": 50000}
    assert doc["destination"] == {"ip": "fe80::2", "address": "fe80::2%eth0", "port": 22}
    assert doc["related"]["ip"] == ["fe80::1"]


def test_ipv6_zone_id_of_a_dropped_connection(parsers: dict) -> None:
    line = "May 17 15:26:00 a3 sshd[1]: Did not receive identification string from fe80::1%ens3 port 2"
    doc = parsers["auth"].parse(line, CTX)
    assert doc["system"]["auth"]["ssh"]["dropped_ip"] == "fe80::1"
    assert doc["source"] == {"ip": "fe80::1", "address": "fe80::1%ens3", "port": 2}


def test_ipv6_looking_text_that_is_no_address_is_not_an_ip(parsers: dict) -> None:
    line = "May 17 15:26:00 a3 sshd[1]: Failed password for root from ::1::2 port 2 ssh2"
    doc = parsers["auth"].parse(line, CTX)
    assert doc["source"] == {"address": "::1::2", "port": 2}
    assert "ip" not in doc.get("related", {})
    assert doc["event"]["outcome"] == "failure"
