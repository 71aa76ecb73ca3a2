"""Detection rules on a real Redis (and the memory store, which must agree)."""

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
    RedisDetectionStore,
)
from ingest.detect.rules import MAX_REPEATED
from ingest.document import format_timestamp
from ingest.parsers.base import LineContext
from ingest.parsers.resources import ParserResources
from ingest.parsers.syslog_rules import AuthParser
from tests.conftest import DATA

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)  # epoch-aligned on 60 s
NOW = lambda: datetime(2024, 3, 2, tzinfo=UTC)  # noqa: E731


def stage(make_store: Callable[[], DetectionStore], **cfg: Any) -> DetectionStage:
    return DetectionStage(make_store(), DetectionConfig(**cfg), NOW)


def failure(i: int, ts: datetime, ip: str = "203.0.113.9", host: str = "h1", **extra: Any) -> dict[str, Any]:
    doc = {"@timestamp": format_timestamp(ts), "type": "auth", "message": f"failure {i} {ts}",
           "event": {"action": "ssh_login", "outcome": "failure"}, "host": {"hostname": host, "name": host},
           "user": {"name": f"u{i}"}, "source": {"ip": ip}}
    doc.update(extra)
    return doc


def burst(n: int, start: datetime = T0, step: float = 1.0, **kw: Any) -> list[dict[str, Any]]:
    return [failure(i, start + timedelta(seconds=i * step), **kw) for i in range(n)]


def rules(actions: list[Any]) -> list[str]:
    return [a.doc["rule"]["name"] for a in actions]


# brute force ---------------------------------------------------------------------------------------

def test_ten_failures_do_not_fire_eleven_do(make_store: Callable[[], DetectionStore]) -> None:
    s = stage(make_store)
    docs = burst(11)
    assert s.process_batch(docs[:10]) == []
    [alert] = s.process_batch(docs[10:])
    assert alert.doc["rule"]["name"] == "brute_force"
    assert alert.doc["alert"]["count"] == 11
    assert alert.doc["source"]["ip"] == "203.0.113.9"
    assert alert.doc["@timestamp"] == docs[10]["@timestamp"]
    assert alert.doc["type"] == "alert" and alert.doc["event"]["kind"] == "alert"
    assert alert.doc["event"]["severity"] == 73 and alert.doc["event"]["reason"]
    assert alert.index == "audit-alerts-2024.03.01"
    assert alert.doc["alert"]["users"] == sorted(f"u{i}" for i in range(11))


def test_twenty_five_in_one_window_fire_once_next_window_again(make_store: Callable[[], DetectionStore]) -> None:
    s = stage(make_store)
    first = s.process_batch(burst(25, step=2.0))  # 0..48 s: one aligned window
    assert rules(first) == ["brute_force"]
    assert first[0].doc["alert"]["count"] == 25
    assert s.process_batch(burst(5, start=T0 + timedelta(seconds=50), step=1.0, message_tag="more")) == []
    nxt = s.process_batch(burst(25, start=T0 + timedelta(seconds=120), step=2.0))
    assert rules(nxt) == ["brute_force"]
    assert nxt[0].id != first[0].id


def test_other_outcomes_and_ips_do_not_count(make_store: Callable[[], DetectionStore]) -> None:
    s = stage(make_store)
    docs = [failure(i, T0 + timedelta(seconds=i), ip=f"198.51.100.{i}") for i in range(20)]
    docs += [dict(failure(100 + i, T0), event={"action": "ssh_login", "outcome": "success"}) for i in range(20)]
    docs += [dict(failure(200 + i, T0), event={"action": "sudo", "outcome": "failure"}) for i in range(20)]
    docs += [{k: v for k, v in failure(300 + i, T0).items() if k != "source"} for i in range(20)]
    assert s.process_batch(docs) == []


def test_all_failure_kinds_count_across_hosts(make_store: Callable[[], DetectionStore]) -> None:
    s = stage(make_store)
    kinds = [({"action": "ssh_login", "outcome": "failure"}, "auth"),
             ({"action": "authentication_failure", "outcome": "failure"}, "auth"),
             ({"action": "vpn_auth_failed", "outcome": "failure"}, "openvpn"),
             ({"action": "auth", "outcome": "failure"}, "teleport")]
    docs = [failure(i, T0 + timedelta(seconds=i), host=f"h{i % 3}", event=kinds[i % 4][0], type=kinds[i % 4][1])
            for i in range(11)]
    [alert] = s.process_batch(docs)
    assert alert.doc["alert"]["hosts"] == ["h0", "h1", "h2"]
    assert alert.doc["alert"]["count"] == 11


def test_two_stages_on_one_redis_count_together(redis_client: redis.Redis) -> None:
    a = DetectionStage(RedisDetectionStore(redis_client), DetectionConfig(), NOW)
    b = DetectionStage(RedisDetectionStore(redis_client), DetectionConfig(), NOW)
    docs = burst(12)
    out = a.process_batch(docs[0::2]) + b.process_batch(docs[1::2])
    out += a.process_batch(burst(3, start=T0 + timedelta(seconds=20)))  # still the same window: no second alert
    assert rules(out) == ["brute_force"]


def test_a_batch_is_one_round_trip_and_survives_a_script_flush(redis_client: redis.Redis) -> None:
    """Both scripts go by EVALSHA in one pipeline, without a SCRIPT EXISTS first; scripts Redis lost
    (restart, SCRIPT FLUSH) are loaded again and the batch still counts."""
    s = DetectionStage(RedisDetectionStore(redis_client), DetectionConfig(), NOW)
    login = {"@timestamp": format_timestamp(T0), "type": "auth", "event": {"action": "ssh_login", "outcome": "success"},
             "host": {"hostname": "h1"}, "user": {"name": "u1"},
             "source": {"ip": "81.2.69.160", "geo": {"country_iso_code": "GB"}}}
    s.process_batch(burst(5) + [login])
    redis_client.script_flush()
    redis_client.config_resetstat()
    assert rules(s.process_batch(burst(11)[5:] + [login])) == ["brute_force"]
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in redis_client.info("commandstats").items()}
    assert "script|exists" not in calls and calls["script|load"] == 2
    redis_client.config_resetstat()
    s.process_batch(burst(3, start=T0 + timedelta(minutes=5)) + [login])
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in redis_client.info("commandstats").items()}
    assert calls["evalsha"] == 2 and "script|exists" not in calls and "script|load" not in calls


def test_restart_mid_window_keeps_counting(make_store: Callable[[], DetectionStore]) -> None:
    docs = burst(11)
    assert stage(make_store).process_batch(docs[:6]) == []
    assert rules(stage(make_store).process_batch(docs[6:])) == ["brute_force"]


def test_redelivery_neither_double_counts_nor_duplicates(make_store: Callable[[], DetectionStore]) -> None:
    s = stage(make_store)
    docs = burst(6)
    assert s.process_batch(docs) == []
    assert s.process_batch(docs) == []  # 12 deliveries, 6 events: no alert
    more = burst(11)[6:]
    first = s.process_batch(more)
    assert rules(first) == ["brute_force"]
    again = s.process_batch(more)  # redelivered batch: the same alert (same _id, create -> 409), not a new one
    assert [(a.id, a.doc["alert"]["count"]) for a in again] == [(first[0].id, 11)]
    assert s.process_batch(docs) == []


def test_burst_across_aligned_boundary_fires(make_store: Callable[[], DetectionStore]) -> None:
    s = stage(make_store)
    docs = burst(12, start=T0 + timedelta(seconds=54), step=1.0)  # 6 before the boundary, 6 after
    assert rules(s.process_batch(docs)) == ["brute_force"]


def test_spread_out_failures_do_not_fire(make_store: Callable[[], DetectionStore]) -> None:
    s = stage(make_store)
    assert s.process_batch(burst(30, step=7.0)) == []  # never more than 9 within 60 s


def test_ids_are_used_as_trigger_ids(make_store: Callable[[], DetectionStore]) -> None:
    s = stage(make_store)
    docs = burst(11)
    [alert] = s.process_batch(docs, ids=[f"id-{i}" for i in range(11)])
    assert sorted(alert.doc["alert"]["trigger_ids"]) == sorted(f"id-{i}" for i in range(11))


def test_disabled_and_threshold(make_store: Callable[[], DetectionStore]) -> None:
    assert stage(make_store, brute_force={"enabled": False}).process_batch(burst(30)) == []
    assert rules(stage(make_store, brute_force={"threshold": 2}).process_batch(
        burst(3, ip="192.0.2.77"))) == ["brute_force"]


def test_sample_bruteforce_log(make_store: Callable[[], DetectionStore]) -> None:
    parser = AuthParser(ParserResources())
    ctx = LineContext(now=datetime(2020, 12, 31, tzinfo=UTC))
    docs = [parser.parse(line.rstrip("\n"), ctx)
            for line in (DATA / "samples" / "bruteforce.log").read_text().splitlines()]
    s = stage(make_store, brute_force={"threshold": 10, "window": 60})
    [alert] = s.process_batch(docs)
    assert alert.doc["rule"]["name"] == "brute_force"
    assert alert.doc["source"]["ip"] == "89.160.20.128"
    assert alert.doc["alert"]["hosts"] == ["a3", "web-2"]
    assert alert.doc["alert"]["count"] == 12
    assert len(alert.doc["alert"]["users"]) == 12
    assert alert.index == "audit-alerts-2020.05.17"
    assert s.process_batch(docs) == [alert] or [a.id for a in s.process_batch(docs)] == [alert.id]


def test_preauth_closes_that_named_a_user_count(make_store: Callable[[], DetectionStore]) -> None:
    """Key-guessing bots leave only 'Connection closed by authenticating user X ... [preauth]' at
    LogLevel INFO: those count; a close before any user name (a port scan) does not."""
    parser = AuthParser(ParserResources())
    ctx = LineContext(now=datetime(2024, 3, 2, tzinfo=UTC))
    tried = [f"Mar  1 12:00:{i:02d} h1 sshd[{100 + i}]: Connection closed by authenticating user root "
             f"203.0.113.50 port {40000 + i} [preauth]" for i in range(6)]
    tried += [f"Mar  1 12:00:{10 + i:02d} h2 sshd-session[{200 + i}]: Disconnected from invalid user u{i} "
              f"203.0.113.50 port {41000 + i} [preauth]" for i in range(5)]
    scans = [f"Mar  1 12:00:{20 + i:02d} h1 sshd[{300 + i}]: Connection closed by 203.0.113.50 port {42000 + i} "
             f"[preauth]" for i in range(20)]
    docs = [parser.parse(line, ctx) for line in tried + scans]
    assert {d["event"]["outcome"] for d in docs[:11]} == {"failure"} and "outcome" not in docs[11]["event"]
    [alert] = stage(make_store).process_batch(docs)
    assert alert.doc["alert"]["count"] == 11
    assert alert.doc["alert"]["hosts"] == ["h1", "h2"]
    assert alert.doc["alert"]["users"] == ["root", "u0", "u1", "u2", "u3", "u4"]


def test_preauth_closes_without_the_eleventh_do_not_fire(make_store: Callable[[], DetectionStore]) -> None:
    parser = AuthParser(ParserResources())
    ctx = LineContext(now=datetime(2024, 3, 2, tzinfo=UTC))
    lines = [f"Mar  1 12:00:{i:02d} h1 sshd[{100 + i}]: Connection closed by authenticating user root "
             f"203.0.113.51 port {40000 + i} [preauth]" for i in range(10)]
    lines += [f"Mar  1 12:00:{20 + i:02d} h1 sshd[{300 + i}]: Connection closed by 203.0.113.51 port {42000 + i} "
              f"[preauth]" for i in range(20)]
    assert stage(make_store).process_batch([parser.parse(line, ctx) for line in lines]) == []


def repeated_failure(i: int, ts: datetime, n: Any, **kw: Any) -> dict[str, Any]:
    doc = failure(i, ts, **kw)
    doc["log"] = {"syslog": {"repeated": n}}
    return doc


def test_repeated_message_counts_as_n_failures(make_store: Callable[[], DetectionStore]) -> None:
    """rsyslog's "message repeated 11 times: [ Failed password ... ]" is one document, 11 failures."""
    s = stage(make_store)
    doc = repeated_failure(0, T0, 11)
    [alert] = s.process_batch([doc], ids=["rep"])
    assert alert.doc["alert"]["count"] == 11
    assert alert.doc["alert"]["trigger_ids"] == ["rep"]
    assert alert.doc["alert"]["users"] == ["u0"]
    again = s.process_batch([doc], ids=["rep"])  # redelivered: the same alert, nothing counted twice
    assert [(a.id, a.doc["alert"]["count"]) for a in again] == [(alert.id, 11)]
    assert s.process_batch([failure(1, T0 + timedelta(seconds=1))], ids=["one"]) == []  # same window: no new alert


def test_repeated_message_adds_to_single_failures(make_store: Callable[[], DetectionStore]) -> None:
    s = stage(make_store)
    singles = burst(5)
    rep = repeated_failure(99, T0 + timedelta(seconds=6), 5)
    assert s.process_batch([*singles, rep]) == []  # 10 failures: not more than the threshold
    assert s.process_batch([*singles, rep]) == []  # redelivered: still 10
    [alert] = s.process_batch([failure(100, T0 + timedelta(seconds=7))])
    assert alert.doc["alert"]["count"] == 11
    assert len(alert.doc["alert"]["trigger_ids"]) == 7  # 5 singles, the repeated document once, the 11th


def test_repeated_parsed_line(make_store: Callable[[], DetectionStore]) -> None:
    parser = AuthParser(ParserResources())
    ctx = LineContext(now=datetime(2024, 3, 2, tzinfo=UTC))

    def repeated_line(ip: str, n: int) -> dict[str, Any]:
        doc = parser.parse(f"Mar  1 12:00:00 h1 sshd[100]: Failed password for root from {ip} port 40000 ssh2", ctx)
        doc.setdefault("log", {})["syslog"] = {"repeated": n}  # the field the header parser writes
        return doc

    s = stage(make_store)
    assert s.process_batch([repeated_line("203.0.113.52", 10)]) == []
    [alert] = s.process_batch([repeated_line("203.0.113.53", 11)])
    assert alert.doc["alert"]["count"] == 11 and alert.doc["source"]["ip"] == "203.0.113.53"


@pytest.mark.parametrize("bad", [0, -3, True, "11", 2.5, None, [11]])
def test_repeated_that_is_no_count_counts_once(make_store: Callable[[], DetectionStore], bad: Any) -> None:
    docs = [repeated_failure(i, T0 + timedelta(seconds=i), bad) for i in range(10)]
    assert stage(make_store).process_batch(docs) == []


def test_repeated_is_capped(make_store: Callable[[], DetectionStore]) -> None:
    [alert] = stage(make_store).process_batch([repeated_failure(0, T0, 10**9)])
    assert alert.doc["alert"]["count"] == MAX_REPEATED


# unmapped key --------------------------------------------------------------------------------------

def login(user: str, ts: datetime, *, country: str | None = None, ip: str = "192.0.2.10", host: str = "h1",
          owner: str | None = None, action: str = "ssh_login", n: int = 0) -> dict[str, Any]:
    doc: dict[str, Any] = {"@timestamp": format_timestamp(ts), "type": "auth", "message": f"login {user} {n} {ts}",
                           "event": {"action": action, "outcome": "success"}, "host": {"hostname": host},
                           "user": {"name": user}, "source": {"ip": ip}}
    if country:
        doc["source"]["geo"] = {"country_iso_code": country}
    if owner:
        doc["system"] = {"auth": {"ssh": {"key": {"owner": owner}}}}
    return doc


def test_unmapped_key(make_store: Callable[[], DetectionStore]) -> None:
    s = stage(make_store)
    hit = login("root", T0, owner="SSH Key Not Mapped")
    docs = [hit, login("root", T0, owner="alice"), login("root", T0),
            dict(login("root", T0, owner="SSH Key Not Mapped"), event={"action": "ssh_login", "outcome": "failure"})]
    [alert] = s.process_batch(docs, ids=["a", "b", "c", "d"])
    assert alert.doc["rule"]["name"] == "unmapped_key"
    assert alert.doc["alert"]["trigger_ids"] == ["a"]
    assert alert.doc["user"]["name"] == "root" and alert.doc["host"]["hostname"] == "h1"
    assert s.process_batch([hit], ids=["a"])[0].id == alert.id
    assert stage(make_store, unmapped_key={"enabled": False}).process_batch([hit]) == []


# new country ---------------------------------------------------------------------------------------

def test_new_country(make_store: Callable[[], DetectionStore]) -> None:
    s = stage(make_store)
    assert s.process_batch([login("bob", T0, country="SE")]) == []  # first sighting learns
    assert s.process_batch([login("bob", T0 + timedelta(days=1), country="SE")]) == []
    new = login("bob", T0 + timedelta(days=2), country="CN")
    [alert] = s.process_batch([new])
    assert alert.doc["rule"]["name"] == "new_country"
    assert alert.doc["source"]["geo"]["country_iso_code"] == "CN"
    assert alert.doc["alert"]["known_countries"] == ["SE"]
    assert [a.id for a in s.process_batch([new])] == [alert.id]  # redelivery: same alert
    assert s.process_batch([login("bob", T0 + timedelta(days=3), country="CN", n=1)]) == []  # now known
    vpn = login("bob", T0 + timedelta(days=4), country="FR", action="vpn_connect")
    assert rules(s.process_batch([vpn])) == ["new_country"]


def test_new_country_after_lookback_only_learns(make_store: Callable[[], DetectionStore]) -> None:
    s = stage(make_store, new_country={"lookback_days": 10})
    assert s.process_batch([login("eve", T0, country="SE")]) == []
    assert s.process_batch([login("eve", T0 + timedelta(days=11), country="CN")]) == []
    assert rules(s.process_batch([login("eve", T0 + timedelta(days=12), country="US")])) == ["new_country"]


def test_new_country_per_key_owner_and_ignores_failures(make_store: Callable[[], DetectionStore]) -> None:
    s = stage(make_store)
    assert s.process_batch([login("root", T0, country="SE", owner="alice")]) == []
    assert s.process_batch([login("root", T0 + timedelta(hours=1), country="CN", owner="bob")]) == []
    failed = login("root", T0 + timedelta(hours=2), country="US", owner="alice")
    failed["event"]["outcome"] = "failure"
    assert "new_country" not in rules(s.process_batch([failed]))
    assert rules(s.process_batch([login("root", T0 + timedelta(hours=3), country="CN", owner="alice")])) \
        == ["new_country"]


# allowed networks ----------------------------------------------------------------------------------

def test_outside_allowed_networks(make_store: Callable[[], DetectionStore]) -> None:
    s = stage(make_store, allowed_networks={"db-*": ["10.0.0.0/8"], "db-eu*": ["192.0.2.0/24"]},
              new_country={"enabled": False})
    docs = [login("a", T0, ip="10.1.2.3", host="db-1"),  # inside
            login("b", T0, ip="192.0.2.5", host="db-eu1"),  # inside the second glob
            login("c", T0, ip="198.51.100.7", host="web-1"),  # no glob: not checked
            login("d", T0, ip="198.51.100.7", host="db-2"),  # outside
            dict(login("e", T0, ip="198.51.100.7", host="db-3"), event={"action": "ssh_login", "outcome": "failure"})]
    [alert] = s.process_batch(docs, ids=["a", "b", "c", "d", "e"])
    assert alert.doc["rule"]["name"] == "outside_allowed_networks"
    assert alert.doc["alert"]["trigger_ids"] == ["d"]
    assert alert.doc["source"]["ip"] == "198.51.100.7"
    assert stage(make_store).process_batch(docs) == []  # empty config: off


def test_config_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError):
        DetectionConfig(brute_force={"treshold": 3})
    with pytest.raises(ValueError):
        DetectionConfig(allowed_networks={"*": ["not-a-cidr"]})
    assert DetectionConfig().brute_force.window == timedelta(seconds=60)
