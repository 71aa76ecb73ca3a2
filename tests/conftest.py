"""Shared fixtures: a real redis-server per test session, paths to test data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.redis_server import RedisServer

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the whole test session, on a free port."""
    server = RedisServer(persist=True)
    server.start()
    yield server
    server.close()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client on db 1 (the seed's db), emptied before each test."""
    if redis_server.proc is None:
        redis_server.start()
    client = redis_server.client(db=1)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def data_dir() -> Path:
    return DATA
