"""Events of Filebeat's journald input: the message has no header; the journal's fields make it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from ingest.model import DeadLetter
from ingest.pipeline import Pipeline, wrap_line
from ingest.route import Router
from ingest.settings import load_settings

READ_AT = datetime(2024, 12, 10, tzinfo=UTC)
ACCEPTED = ("Accepted publickey for alice from 192.0.2.10 port 50000 ssh2: "
            "ED25519 SHA256:uHNNE2pcXsx0HXxZsjy2gDVEqYLS7VL8qFBSSwa9CZM")


def entry(message: str, ident: str | None = "sshd", pid: int | None = 3001, facility: int | None = 4,
          **extra: Any) -> dict[str, Any]:
    """An event as Filebeat 8's journald input writes it (journal fields translated to ECS-ish names)."""
    syslog: dict[str, Any] = {"priority": 6}
    if ident is not None:
        syslog["identifier"] = ident
    if pid is not None:
        syslog["pid"] = str(pid)
    if facility is not None:
        syslog["facility"] = facility
    event = {"@timestamp": "2024-12-09T10:00:00.123456Z", "message": message, "input": {"type": "journald"},
             "syslog": syslog, "host": {"hostname": "web-1", "name": "web-1"},
             "systemd": {"unit": "ssh.service", "transport": "syslog"}, "journald": {"custom": {}},
             "agent": {"type": "filebeat", "version": "8.15.0"}}
    if pid is not None:
        event["process"] = {"pid": pid, "name": ident}
    event.update(extra)
    return event


def docs(*events: dict[str, Any]) -> list[dict[str, Any]]:
    pipeline = Pipeline.from_settings(load_settings(overrides={"sessions": {"enabled": False}}),
                                      clock=lambda: READ_AT)
    result = pipeline.process([orjson.dumps(e) for e in events])
    assert result.dead == []
    return [a.doc for a in result.actions if a.doc.get("type") != "alert"]


def test_an_sshd_entry_is_the_auth_log_line() -> None:
    """The same login from the journal and from auth.log: the same parsed fields and time."""
    [journal] = docs(entry(ACCEPTED))
    line = f"2024-12-09T10:00:00.123456+00:00 web-1 sshd[3001]: {ACCEPTED}"
    pipeline = Pipeline.from_settings(load_settings(overrides={"sessions": {"enabled": False}}),
                                      clock=lambda: READ_AT)
    [from_file] = [a.doc for a in pipeline.process(
        [wrap_line(line, path="/var/log/auth.log", offset=0, kind="auth", read_at=READ_AT)]).actions]
    assert journal["type"] == "auth"
    assert journal["event"]["action"] == "ssh_login" and journal["event"]["outcome"] == "success"
    assert journal["@timestamp"] == from_file["@timestamp"] == "2024-12-09T10:00:00.123456Z"
    for path in (("user", "name"), ("source", "ip"), ("source", "port"), ("process", "pid"),
                 ("process", "name"), ("host", "hostname")):
        assert journal[path[0]][path[1]] == from_file[path[0]][path[1]], path
    assert journal["system"]["auth"]["ssh"] == from_file["system"]["auth"]["ssh"]
    assert "_grokparsefailure" not in journal.get("tags", [])


@pytest.mark.parametrize(("event", "kind"), [
    (entry("Failed password for root from 203.0.113.9 port 50022 ssh2"), "auth"),
    (entry("pam_unix(su:session): session opened for user root(uid=0) by alice(uid=1000)",
           ident="su", pid=4100, facility=None), "auth"),
    (entry("session opened", ident="some-daemon", facility=10), "auth"),  # authpriv
    (entry("alice/81.2.69.160:39236 MULTI: Learn: 10.8.0.6 -> alice/81.2.69.160:39236", ident="openvpn",
           facility=3), "openvpn"),
    (entry("Accepted password for alice from 192.0.2.1 port 1 ssh2", fields={"log_type": "auth"},
           ident="custom"), "auth"),  # the input's own fields.log_type wins
    (entry("Failed password for root from 203.0.113.9 port 50022 ssh2", input={"type": "journald"},
           event={"module": "system", "dataset": "system.auth"}, facility=None, ident="x"), "auth"),
])
def test_routing(event: dict[str, Any], kind: str) -> None:
    routed = Router().route(orjson.dumps(event))
    assert not isinstance(routed, DeadLetter)
    assert routed.kind == kind


def test_an_entry_of_no_known_program_or_facility_is_dead_lettered_with_a_reason() -> None:
    routed = Router().route(orjson.dumps(entry("Started Daily apt upgrade.", ident="systemd", facility=3)))
    assert isinstance(routed, DeadLetter) and routed.error_code == "no_route"


def test_the_message_cannot_forge_the_header() -> None:
    """The header comes from the journal's own fields: a message that starts like a header is text."""
    crafted = "web-2 sshd[1]: Accepted password for root from 10.10.1.2 port 22 ssh2"
    [doc] = docs(entry(crafted, ident="logger-user", facility=10))
    assert doc["host"]["hostname"] == "web-1" and doc["process"]["name"] == "logger-user"
    assert doc.get("event", {}).get("action") != "ssh_login"
    assert "source" not in doc or doc["source"].get("ip") != "10.10.1.2"


def test_an_entry_without_pid_or_identifier_still_parses() -> None:
    [doc] = docs(entry("Failed password for root from 203.0.113.9 port 50022 ssh2", pid=None))
    assert doc["event"]["action"] == "ssh_login" and "pid" not in doc.get("process", {})
    [bare] = docs(entry("something", ident=None, pid=None, facility=4))
    assert bare["@timestamp"] == "2024-12-09T10:00:00.123456Z" and bare["host"]["hostname"] == "web-1"
