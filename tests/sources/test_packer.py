"""The worker's Redis command packer packs what redis-py's own packer packs, without its per-argument loop."""

from __future__ import annotations

import pytest
import redis
from redis.connection import HiredisRespSerializer

from ingest.sources.packer import FastPacker
from ingest.sources.redis_list import RedisSourceConfig

COMMANDS = [
    ("SET", "k", b"v", "PX", 30000),
    ("EVALSHA", "abc", 2, "k1", b"k2", 500, 0, -3, 2.5, "é", b"\x00\xff"),
    ("SCRIPT LOAD", "return 1"),
    (b"CLIENT SETNAME", b"w"),
    ("BLMOVE", "a", "b", 0.8, "LEFT", "RIGHT"),
    ("RPUSH", "k", bytearray(b"from a bytearray"), memoryview(b"and a view")),
]


def test_same_bytes_as_redis_py() -> None:
    ours, theirs = FastPacker(), HiredisRespSerializer()
    for command in COMMANDS:
        assert b"".join(ours.pack(*command)) == b"".join(theirs.pack(*command)), command


def test_the_worker_client_uses_it(redis_server) -> None:  # type: ignore[no-untyped-def]
    client = RedisSourceConfig(url=f"redis://127.0.0.1:{redis_server.port}/1").client()
    try:
        assert client.set("packer-test", b"x\x00y", px=10_000)
        assert client.get("packer-test") == b"x\x00y"
        assert client.script_load("return 1")
        connection = client.connection_pool.get_connection()
        assert isinstance(connection._command_packer, FastPacker)
        client.connection_pool.release(connection)
    finally:
        client.delete("packer-test")
        client.close()


def test_a_bad_argument_is_still_a_data_error() -> None:
    with pytest.raises(redis.DataError):
        FastPacker().pack("SET", "k", object())
