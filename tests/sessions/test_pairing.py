"""The pairing rules, each on both stores (memory and real Redis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ingest.document import flatten
from ingest.parsers.base import LineContext
from ingest.parsers.resources import ParserResources
from ingest.parsers.syslog_rules import AuthParser
from ingest.sessions import SESSION_ACTION, session_id
from ingest.sessions.doc import version
from tests.sessions.conftest import Factory, FakeClock, ssh_login, ssh_logout, teleport, vpn, z

D = "2020-05-17"


def only(docs: list[tuple[str, dict]]) -> tuple[str, dict]:
    assert len(docs) == 1, docs
    return docs[0]


def test_login_logout_makes_one_session_with_exact_duration(new_pairer: Factory) -> None:
    p = new_pairer()
    assert p.process_batch([ssh_login(z(D, "15:26:00"), 11741)]) == []
    doc_id, doc = only(p.process_batch([ssh_logout(z(D, "15:28:02"), 11741)]))
    assert doc_id == session_id("ssh", "ssh|a3|11741", 1589729160 * 1_000_000)
    assert flatten(doc) == {
        "@timestamp": "2020-05-17T15:26:00.000000Z",
        "type": "session",
        "message": "ssh session of civis-ec2 (key john-civis) on a3 from 81.2.69.160: 122.0 s, logout",
        "event.kind": "event",
        "event.category": ["session"],
        "event.type": ["end"],
        "event.action": SESSION_ACTION,
        "event.dataset": "session",
        "event.outcome": "success",
        "event.start": "2020-05-17T15:26:00.000000Z",
        "event.end": "2020-05-17T15:28:02.000000Z",
        "event.duration": 122_000_000_000,
        "session.id": doc_id,
        "session.kind": "ssh",
        "session.end_reason": "logout",
        "session.duration_s": 122.0,
        "session.duration_min": 2.033333,
        "session.login.action": "ssh_login",
        "session.logout.action": "session_closed",
        "user.name": "civis-ec2",
        "source.ip": "81.2.69.160",
        "source.port": 51836,
        "source.geo.country_iso_code": "GB",
        "source.geo.city_name": "London",
        "source.as.number": 209,
        "host.hostname": "a3",
        "process.name": "sshd",
        "process.pid": 11741,
        "system.auth.ssh.method": "publickey",
        "system.auth.ssh.key.fingerprint": "0c:b4:eb:4c",
        "system.auth.ssh.key.owner": "john-civis",
        "related.user": ["civis-ec2"],
        "related.ip": ["81.2.69.160"],
        "related.hosts": ["a3"],
    }


def test_microsecond_duration(new_pairer: Factory) -> None:
    p = new_pairer()
    docs = p.process_batch([
        ssh_login("2024-05-17T16:02:03.412271Z", 2219, host="web-2", user="ubuntu", owner="civis-pete"),
        ssh_logout("2024-05-17T16:09:41.004113Z", 2219, host="web-2", user="ubuntu"),
    ])
    _, doc = only(docs)
    assert doc["session"]["duration_s"] == 457.591842
    assert doc["event"]["duration"] == 457_591_842_000
    assert doc["session"]["duration_min"] == 7.626531
    assert doc["event"]["end"] == "2024-05-17T16:09:41.004113Z"


def test_login_without_source_ip_and_host_name_fallback(new_pairer: Factory) -> None:
    p = new_pairer()
    login = ssh_login(z(D, "15:26:00"), 11748, ip=None, owner="SSH Key Not Mapped")
    login["host"] = {"name": "a3"}
    logout = ssh_logout(z(D, "15:27:00"), 11748)
    logout["host"] = {"name": "a3"}
    _, doc = only(p.process_batch([login, logout]))
    assert "source" not in doc
    assert doc["host"] == {"name": "a3", "hostname": "a3"}
    assert doc["system"]["auth"]["ssh"]["key"]["owner"] == "SSH Key Not Mapped"


def test_logout_before_login_pairs_when_the_login_arrives(new_pairer: Factory) -> None:
    p = new_pairer()
    assert p.process_batch([ssh_logout(z(D, "15:28:02"), 11741)]) == []
    assert p.counts["orphaned"] == 1
    _, doc = only(p.process_batch([ssh_login(z(D, "15:26:00"), 11741)]))
    assert doc["session"]["duration_s"] == 122.0
    assert p.counts["paired_orphan"] == 1
    # Same inside one batch in the wrong order.
    _, doc = only(p.process_batch([ssh_logout(z(D, "16:00:05"), 500), ssh_login(z(D, "16:00:00"), 500)]))
    assert doc["session"]["duration_s"] == 5.0


def test_orphan_logout_pairs_only_with_an_earlier_login(new_pairer: Factory) -> None:
    p = new_pairer()
    p.process_batch([ssh_logout(z(D, "15:00:00"), 77)])
    assert p.process_batch([ssh_login(z(D, "15:10:00"), 77)]) == []  # after the logout: a new session
    _, doc = only(p.process_batch([ssh_login(z(D, "14:00:00"), 77)]))  # the orphan's own login
    assert (doc["event"]["start"], doc["event"]["end"]) == ("2020-05-17T14:00:00.000000Z", "2020-05-17T15:00:00.000000Z")
    _, doc = only(p.process_batch([ssh_logout(z(D, "15:20:00"), 77)]))
    assert doc["event"]["start"] == "2020-05-17T15:10:00.000000Z"


def test_two_logout_lines_close_once_and_leave_no_orphan(new_pairer: Factory) -> None:
    p = new_pairer()
    login = ssh_login(z(D, "15:30:11"), 11902, ip="216.160.83.56", owner="jhollandcivis")
    disconnect = ssh_logout(z(D, "15:40:00"), 11902, action="ssh_disconnect")
    closed = ssh_logout(z(D, "15:40:00"), 11902)
    _, doc = only(p.process_batch([login, disconnect, closed]))
    assert doc["session"]["duration_s"] == 589.0
    assert doc["session"]["end_reason"] == "disconnect"
    assert p.counts["extra_logout"] == 1
    # The PID comes back later: the leftover logout line must not close the new session.
    assert p.process_batch([ssh_login(z(D, "18:00:00"), 11902)]) == []
    _, doc = only(p.process_batch([ssh_logout(z(D, "18:00:30"), 11902)]))
    assert doc["session"]["duration_s"] == 30.0


def test_two_logout_lines_before_the_login_leave_no_orphan(new_pairer: Factory) -> None:
    p = new_pairer()
    assert p.process_batch([ssh_logout(z(D, "15:40:00"), 11902),
                            ssh_logout(z(D, "15:40:00"), 11902, action="ssh_disconnect")]) == []
    _, doc = only(p.process_batch([ssh_login(z(D, "15:30:11"), 11902)]))
    assert doc["session"]["end_reason"] == "logout"
    assert p.store.oldest("orph", 10) == []
    assert p.counts["extra_logout"] == 1


def test_second_logout_line_in_a_later_batch_is_absorbed(new_pairer: Factory) -> None:
    p = new_pairer()
    only(p.process_batch([ssh_login(z(D, "15:30:11"), 11902), ssh_logout(z(D, "15:40:00"), 11902, action="ssh_disconnect")]))
    assert p.process_batch([ssh_logout(z(D, "15:40:00"), 11902)]) == []
    assert p.counts["orphaned"] == 0


def test_preauth_disconnect_failed_login_and_other_docs_are_not_session_events(new_pairer: Factory) -> None:
    p = new_pairer()
    preauth = ssh_logout(z(D, "15:41:16"), 12001, action="ssh_disconnect")
    del preauth["user"]
    failed = ssh_login(z(D, "15:41:13"), 12001)
    failed["event"]["outcome"] = "failure"
    no_host = ssh_login(z(D, "15:41:13"), 12002)
    del no_host["host"]
    sudo = {"type": "auth", "@timestamp": z(D, "15:26:41"), "process": {"name": "sudo"},
            "event": {"action": "session_closed"}, "host": {"hostname": "a3"}}
    assert p.process_batch([preauth, failed, no_host, sudo, {"type": "commands", "message": "ls"}]) == []
    assert sum(p.counts.values()) == 0


def test_redelivered_events_reemit_the_same_document_and_never_reopen(new_pairer: Factory, clock: FakeClock) -> None:
    p = new_pairer()
    batch = [ssh_login(z(D, "15:26:00"), 11741), ssh_logout(z(D, "15:28:02"), 11741)]
    first = p.process_batch(batch)
    # A crash before the acknowledgement: another worker gets the same batch.
    again = new_pairer().process_batch(batch)
    assert again == first
    # The logout alone, the login alone: same document or nothing, never a new open session.
    assert p.process_batch([batch[1]]) == first
    assert p.process_batch([batch[0]]) == first
    clock.advance(hours=25)
    assert p.expire() == []
    assert p.counts["opened"] == 1


def test_redelivered_orphan_pairing_reemits(new_pairer: Factory) -> None:
    p = new_pairer()
    p.process_batch([ssh_logout(z(D, "15:28:02"), 11741)])
    first = p.process_batch([ssh_login(z(D, "15:26:00"), 11741)])
    assert p.process_batch([ssh_logout(z(D, "15:28:02"), 11741)]) == first
    assert p.process_batch([ssh_login(z(D, "15:26:00"), 11741)]) == first


def test_pid_reuse_closes_the_old_session_as_replaced(new_pairer: Factory) -> None:
    p = new_pairer()
    p.process_batch([ssh_login(z(D, "10:00:00"), 900, user="old")])
    doc_id, doc = only(p.process_batch([ssh_login(z(D, "12:00:00"), 900, user="new")]))
    assert doc["user"]["name"] == "old"
    assert doc["session"]["end_reason"] == "replaced"
    assert doc["event"]["end"] == "2020-05-17T12:00:00.000000Z"  # at the latest
    assert "duration" not in doc["event"] and "duration_s" not in doc["session"]
    assert doc["event"]["outcome"] == "unknown"
    # The old session's own logout, late: it corrects the old session's document (same id, the
    # final version: it overwrites the "replaced" one), and does not touch the new session.
    fixed_id, fixed = only(p.process_batch([ssh_logout(z(D, "11:00:00"), 900, user="old")]))
    assert fixed_id == doc_id and version(fixed) == 2 and version(doc) == 1
    assert (fixed["session"]["end_reason"], fixed["session"]["corrected_from"]) == ("logout", "replaced")
    assert fixed["session"]["duration_s"] == 3600.0 and fixed["event"]["outcome"] == "success"
    assert p.counts["corrected_replaced"] == 1
    # redelivered: the same corrected document again; another logout line of it: nothing
    assert p.process_batch([ssh_logout(z(D, "11:00:00"), 900, user="old")]) == [(fixed_id, fixed)]
    _, doc = only(p.process_batch([ssh_logout(z(D, "12:30:00"), 900, user="new")]))
    assert doc["user"]["name"] == "new"
    assert doc["session"]["duration_s"] == 1800.0


def test_late_login_older_than_the_open_session(new_pairer: Factory) -> None:
    p = new_pairer()
    p.process_batch([ssh_login(z(D, "12:00:00"), 901, user="new")])
    _, doc = only(p.process_batch([ssh_login(z(D, "10:00:00"), 901, user="old")]))
    assert (doc["user"]["name"], doc["session"]["end_reason"]) == ("old", "replaced")
    _, doc = only(p.process_batch([ssh_logout(z(D, "12:00:10"), 901, user="new")]))
    assert doc["user"]["name"] == "new"


def test_same_pid_on_another_host_is_another_session(new_pairer: Factory) -> None:
    p = new_pairer()
    p.process_batch([ssh_login(z(D, "10:00:00"), 42, host="a3"), ssh_login(z(D, "10:00:01"), 42, host="web-2")])
    _, doc = only(p.process_batch([ssh_logout(z(D, "10:05:00"), 42, host="web-2")]))
    assert doc["host"]["hostname"] == "web-2"
    assert doc["session"]["duration_s"] == 299.0


def test_timeout_with_injected_clock(new_pairer: Factory, clock: FakeClock) -> None:
    p = new_pairer(timeout=timedelta(hours=24))
    p.process_batch([ssh_login(z(D, "15:31:05"), 11950)])
    clock.advance(hours=23, minutes=59)
    assert p.expire() == []
    clock.advance(minutes=1)
    doc_id, doc = only(new_pairer().expire())  # any worker can expire it
    assert doc_id == session_id("ssh", "ssh|a3|11950", 1589729465 * 1_000_000)
    assert doc["session"]["end_reason"] == "timeout"
    assert doc["event"]["outcome"] == "unknown"
    assert "end" not in doc["event"] and "duration_s" not in doc["session"]
    assert p.expire() == []
    # Its real logout, days late: the document again, corrected (same id, the final version)
    fixed_id, fixed = only(p.process_batch([ssh_logout("2020-05-19T09:00:00.000000Z", 11950)]))
    assert fixed_id == doc_id and (version(doc), version(fixed)) == (1, 2)
    assert (fixed["session"]["end_reason"], fixed["session"]["corrected_from"]) == ("logout", "timeout")
    assert fixed["event"]["end"] == "2020-05-19T09:00:00.000000Z" and fixed["event"]["outcome"] == "success"
    assert p.counts["corrected_timeout"] == 1
    # its second logout line (sshd writes two): nothing new, no orphan
    assert p.process_batch([ssh_logout("2020-05-19T09:00:00.000000Z", 11950, action="ssh_disconnect")]) == []
    assert p.counts["extra_logout"] == 1


def test_expire_takes_an_explicit_now(new_pairer: Factory, clock: FakeClock) -> None:
    p = new_pairer(timeout=timedelta(minutes=10))
    p.process_batch([ssh_login(z(D, "15:31:05"), 11950)])
    assert p.expire(clock.now + timedelta(minutes=9)) == []
    assert len(p.expire(clock.now + timedelta(minutes=10))) == 1


def test_orphan_logout_is_forgotten_after_its_ttl(new_pairer: Factory, clock: FakeClock) -> None:
    p = new_pairer(orphan_logout_ttl=timedelta(minutes=30))
    p.process_batch([ssh_logout(z(D, "15:28:02"), 11741)])
    clock.advance(minutes=31)
    assert p.expire() == []
    assert p.counts["orphan_expired"] == 1
    assert p.process_batch([ssh_login(z(D, "15:26:00"), 11741)]) == []  # opens, does not pair


def test_tombstone_is_forgotten_after_its_ttl(new_pairer: Factory, clock: FakeClock) -> None:
    p = new_pairer(tombstone_ttl=timedelta(hours=2))
    batch = [ssh_login(z(D, "15:26:00"), 11741), ssh_logout(z(D, "15:28:02"), 11741)]
    only(p.process_batch(batch))
    clock.advance(hours=1)
    p.expire()
    assert len(p.process_batch(batch)) == 1  # still remembered: re-emitted, not reopened
    clock.advance(hours=1, seconds=1)
    p.expire()
    assert p.store.due(10**18, 10) == []
    assert p.store.oldest("tomb", 10) == []


def test_flood_of_logins_is_bounded_oldest_evicted(new_pairer: Factory) -> None:
    p = new_pairer(max_open=50)
    for b in range(10):
        p.process_batch([ssh_login(f"2020-05-17T10:{b:02d}:{i % 60:02d}.{i:06d}Z", 1000 + b * 100 + i)
                         for i in range(100)])
    assert len(p.store.oldest("open", 10_000)) == 50
    assert p.counts["evicted_open"] == 950
    assert p.counts["opened"] == 1000
    # The newest survived, the oldest are gone (their logout becomes an orphan).
    assert len(p.process_batch([ssh_logout(z(D, "11:00:00"), 1999)])) == 1
    assert p.process_batch([ssh_logout(z(D, "11:00:00"), 1000)]) == []


def test_flood_of_orphans_and_closed_sessions_is_bounded(new_pairer: Factory) -> None:
    p = new_pairer(max_orphans=20, max_closed=30)
    p.process_batch([ssh_logout(f"2020-05-17T10:00:00.{i:06d}Z", i) for i in range(100)])
    assert len(p.store.oldest("orph", 1000)) == 20
    assert p.counts["evicted_orphans"] == 80
    p.process_batch([d for i in range(200, 300) for d in (ssh_login(z(D, "09:00:00"), i), ssh_logout(z(D, "09:01:00"), i))])
    assert len(p.store.oldest("tomb", 1000)) == 30
    assert p.counts["closed_logout"] == 100


def test_openvpn_session_with_virtual_ip_and_reason(new_pairer: Factory) -> None:
    p = new_pairer()
    assert p.process_batch([
        vpn("2020-08-21T15:01:32.000000Z", "vpn_connect"),
        vpn("2020-08-21T15:01:33.000000Z", "vpn_ip_assigned", openvpn={"virtual_ip": "10.8.0.6"}),
        vpn("2020-08-21T15:20:03.000000Z", "vpn_connect", user="bob", ip="175.16.199.5", port=51515,
            event={"action": "vpn_auth_failed", "outcome": "failure"}),
    ]) == []
    # carol's timeout has no connect: an orphan, no document.
    assert p.process_batch([vpn("2020-08-21T16:41:00.000000Z", "vpn_disconnect", user="carol", ip="216.160.83.56",
                                port=1194, event={"action": "vpn_disconnect", "reason": "timeout"})]) == []
    _, doc = only(p.process_batch([vpn("2020-08-21T16:40:10.000000Z", "vpn_disconnect",
                                       event={"action": "vpn_disconnect", "reason": "exit"})]))
    assert doc["session"]["kind"] == "openvpn"
    assert doc["session"]["duration_s"] == 5918.0
    assert doc["session"]["end_reason"] == "disconnect"
    assert doc["event"]["reason"] == "exit"
    assert doc["openvpn"]["virtual_ip"] == "10.8.0.6"
    assert doc["source"] == {"ip": "81.2.69.160", "port": 39236}
    assert doc["host"]["hostname"] == "vpn1"


def test_openvpn_pairs_on_the_real_address(new_pairer: Factory) -> None:
    p = new_pairer()
    p.process_batch([vpn("2020-08-21T15:00:00.000000Z", "vpn_connect", port=1),
                     vpn("2020-08-21T15:00:00.000000Z", "vpn_connect", port=2)])
    _, doc = only(p.process_batch([vpn("2020-08-21T15:00:09.000000Z", "vpn_disconnect", port=2)]))
    assert doc["source"]["port"] == 2
    assert doc["session"]["duration_s"] == 9.0


def test_teleport_session(new_pairer: Factory) -> None:
    p = new_pairer()
    start = teleport("2016-12-31T03:10:02.000000Z", "session.start", teleport={
        "sid": "9e47c67c-cf06-11e6-abba-507b9dd95841", "login": "root"}, source={"ip": "81.2.69.160"})
    other = teleport("2016-12-31T03:11:00.000000Z", "session.start", sid="ab5e4493-cf08-11e6-9fd8-507b9dd95841",
                     user="bob")
    end = teleport("2016-12-31T03:24:43.000000Z", "session.end")
    _, doc = only(p.process_batch([start, other, end]))
    assert doc["session"]["duration_s"] == 881.0
    assert doc["session"]["kind"] == "teleport"
    assert doc["teleport"] == {"sid": "9e47c67c-cf06-11e6-abba-507b9dd95841", "login": "root"}
    assert doc["user"]["name"] == "alice"
    assert doc["related"]["user"] == ["alice", "root"]


def test_disabled_pairs_nothing(new_pairer: Factory, clock: FakeClock) -> None:
    p = new_pairer(enabled=False)
    assert p.process_batch([ssh_login(z(D, "15:26:00"), 1), ssh_logout(z(D, "15:28:02"), 1)]) == []
    clock.advance(days=3)
    assert p.expire() == []


@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_many_sessions_in_any_order(new_pairer: Factory, order: str) -> None:
    p = new_pairer()
    events = [d for i in range(200) for d in (ssh_login(z(D, "10:00:00"), i), ssh_logout(f"2020-05-17T10:00:{i % 60:02d}.5Z", i))]
    if order == "reverse":
        events.reverse()
    docs = [d for k in range(0, len(events), 37) for d in p.process_batch(events[k:k + 37])]
    assert len({doc_id for doc_id, _ in docs}) == len(docs) == 200


def test_openssh_10_sshd_session_lines_pair(new_pairer: Factory) -> None:
    """OpenSSH 9.8+ logs a connection's login and its PAM session close as sshd-session[pid]."""
    parser = AuthParser(ParserResources())
    ctx = LineContext(now=datetime(2024, 12, 31, tzinfo=UTC))
    lines = ["Dec  2 10:00:00 web-1 sshd-session[2301]: Accepted publickey for ops from 81.2.69.160 port 50005 ssh2: "
             "ED25519 SHA256:KkqlMYfYp35C+bsww+oN2Q6DjLrLHcnsKOb642or3nc",
             "Dec  2 10:00:00 web-1 sshd-session[2301]: pam_unix(sshd:session): session opened for user ops(uid=1001) "
             "by ops(uid=0)",
             "Dec  2 10:05:30 web-1 sshd-session[2301]: pam_unix(sshd:session): session closed for user ops"]
    _, doc = only(new_pairer().process_batch([parser.parse(line, ctx) for line in lines]))
    assert doc["process"] == {"name": "sshd-session", "pid": 2301}
    assert doc["session"]["duration_s"] == 330.0
    assert doc["user"]["name"] == "ops"
