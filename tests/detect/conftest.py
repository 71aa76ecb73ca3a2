"""The detection store every test here runs against twice: in Redis and in memory (the twin that
``parse`` uses), so that both answer alike."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from ingest.detect import DetectionStore, MemoryDetectionStore, RedisDetectionStore


@pytest.fixture(params=["redis", "memory"])
def make_store(request: pytest.FixtureRequest) -> Callable[[], DetectionStore]:
    """A factory of stores sharing one state (Redis: each call is a new instance on the same db,
    as two workers are)."""
    if request.param == "memory":
        shared = MemoryDetectionStore()
        return lambda: shared
    client: redis.Redis = request.getfixturevalue("redis_client")
    return lambda: RedisDetectionStore(client)
