"""Builders of parsed documents (the parsers' field names) and pairers on both stores."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from ingest.sessions import MemorySessionStore, RedisSessionStore, SessionConfig, SessionPairer, SessionStore


class FakeClock:
    """The injected clock: tests move it, nothing sleeps."""

    def __init__(self, start: datetime = datetime(2024, 6, 1, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> datetime:
        self.now += timedelta(**kw)
        return self.now


def ssh_login(ts: str, pid: int, *, host: str = "a3", user: str = "civis-ec2", ip: str | None = "81.2.69.160",
              port: int = 51836, owner: str | None = "john-civis", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": "auth", "@timestamp": ts, "message": f"sshd[{pid}]: Accepted publickey for {user}",
        "host": {"hostname": host}, "process": {"name": "sshd", "pid": pid},
        "event": {"action": "ssh_login", "outcome": "success", "category": ["authentication"]},
        "user": {"name": user},
        "system": {"auth": {"ssh": {"method": "publickey", "key": {"fingerprint": "0c:b4:eb:4c"}}}},
    }
    if owner is not None:
        doc["system"]["auth"]["ssh"]["key"]["owner"] = owner
    if ip is not None:
        doc["source"] = {"ip": ip, "port": port, "geo": {"country_iso_code": "GB", "city_name": "London"},
                         "as": {"number": 209}}
    doc.update(extra)
    return doc


def ssh_logout(ts: str, pid: int, *, host: str = "a3", user: str = "civis-ec2",
               action: str = "session_closed") -> dict[str, Any]:
    return {
        "type": "auth", "@timestamp": ts, "message": f"sshd[{pid}]: {action} {user}",
        "host": {"hostname": host}, "process": {"name": "sshd", "pid": pid},
        "event": {"action": action, "outcome": "success"}, "user": {"name": user},
    }


def vpn(ts: str, action: str, *, user: str = "alice", ip: str = "81.2.69.160", port: int = 39236,
        host: str = "vpn1", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": "openvpn", "@timestamp": ts, "message": f"{user}/{ip}:{port} {action}",
        "host": {"hostname": host}, "event": {"action": action, "outcome": "success"},
        "user": {"name": user}, "source": {"ip": ip, "port": port},
    }
    doc.update(extra)
    return doc


def teleport(ts: str, action: str, *, sid: str = "9e47c67c-cf06-11e6-abba-507b9dd95841",
             user: str = "alice", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": "teleport", "@timestamp": ts, "message": "{}", "event": {"action": action},
        "user": {"name": user}, "teleport": {"sid": sid},
    }
    doc.update(extra)
    return doc


def z(day: str, clock: str) -> str:
    """``z("2020-05-17", "15:26:00")`` -> the parsers' ``@timestamp`` form."""
    return f"{day}T{clock}.000000Z"


Factory = Callable[..., SessionPairer]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "redis"])
def new_pairer(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Factory]:
    """``new_pairer(**config)``: a new pairer (a new worker) on the test's one store state.

    Memory: every pairer shares the store object. Redis: every pairer gets its own client and
    store object on the same Redis db, as separate worker processes would.
    """
    memory: dict[str, MemorySessionStore] = {}
    clients: list[redis.Redis] = []
    if request.param == "redis":
        base: redis.Redis = request.getfixturevalue("redis_client")

    def make(**config: Any) -> SessionPairer:
        cfg = SessionConfig(**config)
        store: SessionStore
        if request.param == "memory":
            store = memory.setdefault("store", MemorySessionStore(cfg))
        else:
            client = redis.Redis(connection_pool=redis.ConnectionPool(**base.connection_pool.connection_kwargs))
            clients.append(client)
            store = RedisSessionStore(client, cfg)
        return SessionPairer(store, clock=clock)

    yield make
    for c in clients:
        c.close()
