from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from ingest.document import parse_timestamp
from ingest.sessions import SessionConfig
from ingest.sessions.events import from_micros, mark_of, to_micros
from tests.sessions.conftest import ssh_login, vpn


def test_defaults() -> None:
    c = SessionConfig()
    assert (c.enabled, c.timeout, c.key_prefix) == (True, timedelta(hours=24), "audit-ingest:sessions:")
    assert c.orphan_logout_ttl < c.timeout < c.tombstone_ttl


def test_durations_from_config_text() -> None:
    c = SessionConfig.model_validate({"timeout": "PT12H", "orphan_logout_ttl": 600, "tombstone_ttl": "P3D"})
    assert (c.timeout, c.orphan_logout_ttl, c.tombstone_ttl) == (timedelta(hours=12), timedelta(minutes=10), timedelta(days=3))


@pytest.mark.parametrize("bad", [{"timout": "PT1H"}, {"timeout": 0}, {"tombstone_ttl": "-PT1H"}, {"max_open": 0},
                                 {"key_prefix": ""}])
def test_rejects(bad: dict) -> None:
    with pytest.raises(ValidationError):
        SessionConfig.model_validate(bad)


def test_every_field_is_described() -> None:
    assert all(f.description for f in SessionConfig.model_fields.values())


def test_microsecond_timestamps_are_exact() -> None:
    ts = parse_timestamp("2024-05-17T16:09:41.004113Z")
    assert to_micros(ts) == 1715962181004113
    assert from_micros(to_micros(ts)) == ts


def test_marks() -> None:
    m = mark_of(ssh_login("2020-05-17T15:26:00.000000Z", 11741))
    assert m is not None and (m.kind, m.key, m.role) == ("ssh", "ssh|a3|11741", "login")
    assert m.fields["system"]["auth"]["ssh"]["key"]["owner"] == "john-civis"
    assert "message" not in m.fields and "event" not in m.fields
    m = mark_of(vpn("2020-08-21T15:01:32Z", "vpn_disconnect", event={"action": "vpn_disconnect", "reason": "exit"}))
    assert m is not None and (m.key, m.role, m.fields["event"]) == ("openvpn|vpn1|alice|81.2.69.160|39236", "logout",
                                                                   {"reason": "exit"})
    assert mark_of(ssh_login("not a time", 1)) is None
    assert mark_of(vpn("2020-08-21T15:01:32Z", "vpn_connect", source={"ip": "1.2.3.4"})) is None  # no port
