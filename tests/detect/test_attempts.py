"""One failed login, counted once for brute force, whatever mix of logs a site ships.

A wrong SSH password makes sshd write ``Failed password ...`` to auth.log and PAM write
``USER_AUTH ... res=failed`` to audit.log (README "Detections"). Per host, the store counts the
attempts of an IP from the log that reports more of them in the window, never from both; on a
real Redis (several workers) and in memory alike.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from ingest.detect import (
    DetectionConfig,
    DetectionStage,
    DetectionStore,
    MemoryDetectionStore,
    RedisDetectionStore,
)
from ingest.parsers.auditd import AuditdParser
from ingest.parsers.base import LineContext
from ingest.parsers.resources import ParserResources
from ingest.parsers.syslog_rules import AuthParser
from ingest.parsers.teleport import TeleportParser

T0 = datetime(2024, 12, 9, 10, 0, 0, tzinfo=UTC)  # aligned on 60 s
NOW = lambda: datetime(2024, 12, 10, tzinfo=UTC)  # noqa: E731
IP = "203.0.113.9"
RESOURCES = ParserResources()
AUTH = AuthParser(RESOURCES)
AUDIT = AuditdParser(RESOURCES)
TELEPORT = TeleportParser(RESOURCES)
CTX = LineContext(now=NOW())


def stage(make_store: Callable[[], DetectionStore]) -> DetectionStage:
    return DetectionStage(make_store(), DetectionConfig(), NOW)


def shipped(doc: dict[str, Any], host: str) -> dict[str, Any]:
    """What the pipeline adds from Filebeat's event: host.name (and host.hostname if none)."""
    doc.setdefault("host", {})["name"] = host
    doc["host"].setdefault("hostname", host)
    return doc


def auth_failure(i: int, host: str = "web-1", ip: str = IP) -> dict[str, Any]:
    t = T0 + timedelta(seconds=2 * i)
    line = f"{t:%b} {t.day:2d} {t:%H:%M:%S} {host} sshd[{3000 + i}]: Failed password for root from {ip} port {50000 + i} ssh2"
    doc = shipped(AUTH.parse(line, CTX), f"{host}.example.com")
    assert doc["event"]["action"] == "ssh_login" and doc["event"]["outcome"] == "failure", line
    return doc


def audit_record(i: int, host: str = "web-1", ip: str = IP, record: str = "USER_AUTH",
                 op: str = "PAM:authentication grantors=?", node: str | None = None) -> dict[str, Any]:
    epoch = (T0 + timedelta(seconds=2 * i, milliseconds=310)).timestamp()
    head = f"node={node} " if node else ""
    line = (f"{head}type={record} msg=audit({epoch:.3f}:{5000 + i}): pid={3000 + i} uid=0 auid=4294967295 "
            f"ses=4294967295 msg='op={op} acct=\"root\" exe=\"/usr/sbin/sshd\" hostname={ip} addr={ip} "
            "terminal=ssh res=failed'")
    doc = shipped(AUDIT.parse(line, CTX), "central-audit" if node else host)
    assert doc["event"]["outcome"] == "failure" and doc["source"]["ip"] == ip, line
    return doc


def ids(docs: list[dict[str, Any]], tag: str) -> list[str]:
    return [f"{tag}-{i}" for i in range(len(docs))]


def alerts(actions: list[Any]) -> list[tuple[str, int]]:
    return [(a.doc["rule"]["name"], a.doc["alert"]["count"]) for a in actions]


def test_both_logs_of_one_host_count_each_attempt_once(make_store: Callable[[], DetectionStore]) -> None:
    auth = [auth_failure(i) for i in range(11)]
    audit = [audit_record(i) for i in range(11)]
    s = stage(make_store)
    assert s.process_batch(auth[:10] + audit[:10], ids(auth[:10], "a") + ids(audit[:10], "u")) == []  # 10 attempts
    out = s.process_batch([audit[10], auth[10]], ["u-10", "a-10"])
    assert alerts(out) == [("brute_force", 11)]
    assert out[0].doc["alert"]["hosts"] == ["web-1"]


@pytest.mark.parametrize("order", ["audit first", "auth first", "interleaved"])
def test_any_order_and_batches(make_store: Callable[[], DetectionStore], order: str) -> None:
    auth = list(zip(ids(list(range(11)), "a"), (auth_failure(i) for i in range(11)), strict=True))
    audit = list(zip(ids(list(range(11)), "u"), (audit_record(i) for i in range(11)), strict=True))
    if order == "audit first":
        batches = [audit, auth]
    elif order == "auth first":
        batches = [auth, audit]
    else:
        mixed = [x for pair in zip(audit, auth, strict=True) for x in pair]
        batches = [mixed[:7], mixed[7:15], mixed[15:]]
    s = stage(make_store)
    out = []
    for batch in batches:
        out += s.process_batch([d for _, d in batch], [k for k, _ in batch])
    assert alerts(out) == [("brute_force", 11)]


def test_audit_log_alone_counts(make_store: Callable[[], DetectionStore]) -> None:
    audit = [audit_record(i) for i in range(11)]
    assert alerts(stage(make_store).process_batch(audit, ids(audit, "u"))) == [("brute_force", 11)]
    assert stage(make_store).process_batch([audit_record(i, ip="198.51.100.7") for i in range(10)]) == []


def test_hosts_shipping_different_logs_add_up(make_store: Callable[[], DetectionStore]) -> None:
    """web-1 ships only auth.log, db-1 only audit.log: their attempts are different ones."""
    docs = [auth_failure(i, host="web-1") for i in range(6)] + [audit_record(i, host="db-1") for i in range(6)]
    [alert] = stage(make_store).process_batch(docs, [f"d-{i}" for i in range(12)])
    assert alert.doc["alert"]["count"] == 12 and alert.doc["alert"]["hosts"] == ["db-1", "web-1"]


def test_audisp_remote_node_is_the_host(make_store: Callable[[], DetectionStore]) -> None:
    """Records forwarded to a central auditd carry node=: that, not the central server, is the host."""
    auth = [auth_failure(i) for i in range(11)]
    audit = [audit_record(i, node="web-1.example.com") for i in range(11)]
    out = stage(make_store).process_batch(audit + auth, ids(audit, "u") + ids(auth, "a"))
    assert alerts(out) == [("brute_force", 11)]


def test_sshd_user_login_records_are_not_attempts(make_store: Callable[[], DetectionStore]) -> None:
    """sshd's USER_LOGIN res=failed comes for every failed method, the "none" probe of every client
    and each refused key included: counting it would flag a busy legitimate key user."""
    logins = [audit_record(i, record="USER_LOGIN", op="login") for i in range(30)]
    assert all(d["event"]["action"] == "user_login" for d in logins)
    assert stage(make_store).process_batch(logins, ids(logins, "l")) == []


def test_redelivery_counts_nothing_again(make_store: Callable[[], DetectionStore]) -> None:
    auth = [auth_failure(i) for i in range(11)]
    audit = [audit_record(i) for i in range(11)]
    docs, keys = audit + auth, ids(audit, "u") + ids(auth, "a")
    first = stage(make_store).process_batch(docs, keys)
    again = stage(make_store).process_batch(docs, keys)
    assert alerts(first) == [("brute_force", 11)]
    assert [a.id for a in again] == [first[0].id]  # the same alert (create -> 409), not a second count


def test_two_workers_on_one_redis(redis_client: redis.Redis) -> None:
    a = DetectionStage(RedisDetectionStore(redis_client), DetectionConfig(), NOW)
    b = DetectionStage(RedisDetectionStore(redis_client), DetectionConfig(), NOW)
    auth = [auth_failure(i) for i in range(11)]
    audit = [audit_record(i) for i in range(11)]
    out = a.process_batch(auth[:6], ids(auth, "a")[:6]) + b.process_batch(audit, ids(audit, "u"))
    out += a.process_batch(auth[6:], ids(auth, "a")[6:])
    assert alerts(out) == [("brute_force", 11)]


def test_teleport_login_failures_count(make_store: Callable[[], DetectionStore]) -> None:
    docs = []
    for i in range(11):
        t = T0 + timedelta(seconds=i)
        docs.append(TELEPORT.parse(
            f'{{"event":"user.login","code":"T1000W","time":"{t:%Y-%m-%dT%H:%M:%S}.000Z","user":"u{i}",'
            f'"success":false,"error":"invalid username, password or second factor","method":"local",'
            f'"addr.remote":"{IP}:{40000 + i}"}}', CTX))
    assert alerts(stage(make_store).process_batch(docs, ids(docs, "t"))) == [("brute_force", 11)]


def test_a_long_burst_counts_as_one_log_would(make_store: Callable[[], DetectionStore]) -> None:
    """60 attempts 4 s apart (4 minutes, both logs, batches of 7): the alerts the same batches
    without their audit.log records give, and no alert lists both records of one attempt."""
    n = 60
    auth = [auth_failure(2 * i) for i in range(n)]
    audit = [audit_record(2 * i) for i in range(n)]
    mixed = [x for pair in zip(zip(ids(audit, "u"), audit, strict=True), zip(ids(auth, "a"), auth, strict=True),
                               strict=True) for x in pair]
    both = stage(make_store)
    got = []
    for i in range(0, len(mixed), 7):
        batch = mixed[i:i + 7]
        got += both.process_batch([d for _, d in batch], [k for k, _ in batch])
    alone = DetectionStage(MemoryDetectionStore(), DetectionConfig(), NOW)
    want = []
    for i in range(0, len(mixed), 7):  # the same batches, without their audit.log half
        batch = [(k, d) for k, d in mixed[i:i + 7] if d["type"] == "auth"]
        want += alone.process_batch([d for _, d in batch], [k for k, _ in batch])
    assert [a.id for a in got] == [a.id for a in want] and len(got) == 4
    for alert in got:  # never both records of one attempt ("a-7" and "u-7")
        attempts = [key.partition("-")[2] for key in alert.doc["alert"]["trigger_ids"]]
        assert len(attempts) == len(set(attempts)) == alert.doc["alert"]["count"]


def test_attempts_only_one_log_sees_still_count(make_store: Callable[[], DetectionStore]) -> None:
    """auth.log also has the invalid-user probes PAM never saw: the host's count is auth.log's."""
    probes = []
    for i in range(6):
        t = T0 + timedelta(seconds=2 * i + 1)
        line = f"{t:%b} {t.day:2d} {t:%H:%M:%S} web-1 sshd[{4000 + i}]: Invalid user test{i} from {IP} port {51000 + i}"
        probes.append(shipped(AUTH.parse(line, CTX), "web-1"))
    assert all(p["event"]["outcome"] == "failure" for p in probes)
    passwords = [auth_failure(i) for i in range(6)]
    audit = [audit_record(i) for i in range(6)]
    docs = audit + passwords + probes
    [alert] = stage(make_store).process_batch(docs, [f"d-{i}" for i in range(len(docs))])
    assert alert.doc["alert"]["count"] == 12


# One connection's lines: sshd, pam_unix, the pre-auth close and auditd, all from its privileged
# sshd process (one pid). Each attempt must count once, whichever of them a site ships.

def _at(c: int, k: int) -> datetime:
    return T0 + timedelta(seconds=20 * c + 2 * k)


def _syslog(c: int, k: int, text: str, host: str = "web-1", program: str = "sshd") -> dict[str, Any]:
    t = _at(c, k)
    line = f"{t:%b} {t.day:2d} {t:%H:%M:%S} {host} {program}[{6000 + c}]: {text}"
    return shipped(AUTH.parse(line, CTX), host)


def connection(c: int, attempts: int, *, ip: str = IP, user: str = "root", invalid: bool = False,
               pam: bool = True, audit: bool = False, close: bool = True, repeats: bool = False,
               program: str = "sshd") -> list[dict[str, Any]]:
    """The lines one connection that tries ``attempts`` passwords leaves, in the order sshd writes them."""
    who = f"invalid user {user}" if invalid else user
    docs = [_syslog(c, 0, f"Invalid user {user} from {ip} port {40000 + c}", program=program)] if invalid else []
    for k in range(attempts):
        if pam and k == 0:
            docs.append(_syslog(c, k, "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh "
                                      f"ruser= rhost={ip}" + ("" if invalid else f"  user={user}"), program=program))
        if audit:
            epoch = (_at(c, k) + timedelta(milliseconds=310)).timestamp()
            docs.append(shipped(AUDIT.parse(
                f"type=USER_AUTH msg=audit({epoch:.3f}:{7000 + 10 * c + k}): pid={6000 + c} uid=0 auid=4294967295 "
                f"ses=4294967295 msg='op=PAM:authentication grantors=? acct=\"{user}\" exe=\"/usr/sbin/sshd\" "
                f"hostname={ip} addr={ip} terminal=ssh res=failed'", CTX), "web-1"))
        if not (repeats and k > 0):
            docs.append(_syslog(c, k, f"Failed password for {who} from {ip} port {40000 + c} ssh2", program=program))
    if repeats and attempts > 1:
        docs.append(_syslog(c, attempts, f"message repeated {attempts - 1} times: [ Failed password for {who} "
                                         f"from {ip} port {40000 + c} ssh2]", program=program))
    if pam and attempts > 1:
        docs.append(_syslog(c, attempts, f"PAM {attempts - 1} more authentication failures; logname= uid=0 euid=0 "
                                         f"tty=ssh ruser= rhost={ip}" + ("" if invalid else f"  user={user}"),
                            program=program))
    if close:
        docs.append(_syslog(c, attempts, f"Connection closed by {'invalid user ' if invalid else 'authenticating user '}"
                                         f"{user} {ip} port {40000 + c} [preauth]", program=program))
    return docs


def fires(make_store: Callable[[], DetectionStore], docs: list[dict[str, Any]], threshold: int,
          batch: int = 7) -> bool:
    """Whether ``docs`` (in batches, on a fresh store) then one VPN failure 5 minutes later (always
    counted; its window holds them all, whatever order they came in) raise a brute-force alert at
    ``threshold``."""
    store = make_store()
    if isinstance(store, RedisDetectionStore):
        store.client.flushdb()
    else:
        store = MemoryDetectionStore()
    s = DetectionStage(store, DetectionConfig.model_validate(
        {"brute_force": {"threshold": threshold, "window": 600}}), NOW)
    t = T0 + timedelta(minutes=5)
    docs = docs + [{"@timestamp": f"{t:%Y-%m-%dT%H:%M:%S}.000Z", "type": "openvpn", "message": "sentinel",
                    "event": {"action": "vpn_auth_failed", "outcome": "failure"}, "source": {"ip": IP}}]
    keys = [f"k-{i}" for i in range(len(docs))]
    out = []
    for i in range(0, len(docs), batch):
        out += s.process_batch(docs[i:i + batch], keys[i:i + batch])
    return any(a.doc["rule"]["name"] == "brute_force" for a in out)


def counted(make_store: Callable[[], DetectionStore], docs: list[dict[str, Any]], n: int) -> bool:
    """True when the docs count exactly ``n`` failures: with the sentinel they fire above n and not above n + 1."""
    return fires(make_store, docs, n) and not fires(make_store, docs, n + 1)


@pytest.mark.parametrize("shape", ["pam", "audit", "invalid", "repeats", "sshd-session", "no close"])
@pytest.mark.parametrize("order", ["as written", "reversed", "shuffled"])
def test_each_password_of_a_connection_counts_once(make_store: Callable[[], DetectionStore], shape: str,
                                                   order: str) -> None:
    """Four connections of 3 passwords each: 12 attempts, whatever lines they leave and in any order."""
    kw: dict[str, Any] = {"audit": shape == "audit", "invalid": shape == "invalid", "repeats": shape == "repeats",
                          "close": shape != "no close", "program": "sshd-session" if shape == "sshd-session" else "sshd"}
    docs = [d for c in range(4) for d in connection(c, 3, **kw)]
    assert len(docs) >= 4 * 5  # several lines per attempt
    if order == "reversed":
        docs.reverse()
    elif order == "shuffled":
        import random
        random.Random(7).shuffle(docs)
    assert counted(make_store, docs, 12)


def test_eleven_attempts_fire_and_ten_do_not(make_store: Callable[[], DetectionStore]) -> None:
    """At the default threshold (more than 10 in 60 s): 10 attempts written 4 times each stay below it."""
    ten = [d for c in range(2) for d in connection(c, 5, audit=True)]
    assert stage(make_store).process_batch(ten, [f"t-{i}" for i in range(len(ten))]) == []
    more = connection(2, 1, audit=True)
    [alert] = stage(make_store).process_batch(more, [f"m-{i}" for i in range(len(more))])
    assert alert.doc["alert"]["count"] == 11


def test_key_guessing_connections_count_once_each(make_store: Callable[[], DetectionStore]) -> None:
    """A bot that only offers keys leaves the pre-auth close (and "Invalid user") per connection."""
    docs = [d for c in range(11) for d in connection(c, 0, invalid=c % 2 == 0, pam=False)]
    assert counted(make_store, docs, 11)


def test_other_services_and_connections_are_other_attempts(make_store: Callable[[], DetectionStore]) -> None:
    """An FTP daemon's PAM failure from the same address is its own attempt; so is each connection."""
    docs = connection(0, 2) + connection(1, 2)
    docs.append(_syslog(2, 0, f"pam_unix(vsftpd:auth): authentication failure; logname= uid=0 euid=0 tty=ftp "
                              f"ruser=root rhost={IP}  user=root", program="vsftpd"))
    assert counted(make_store, docs, 5)


def test_redelivered_connections_count_nothing_again(make_store: Callable[[], DetectionStore]) -> None:
    docs = [d for c in range(3) for d in connection(c, 4, audit=True, invalid=True)]  # 12 in 46 s
    keys = [f"r-{i}" for i in range(len(docs))]
    first = stage(make_store).process_batch(docs, keys)
    again = stage(make_store).process_batch(docs, keys)
    assert alerts(first) == [("brute_force", 12)]
    assert [a.id for a in again] == [first[0].id]
