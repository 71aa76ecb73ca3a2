"""The dead-letter store against a real redis-server."""

from __future__ import annotations

import base64
import threading

import orjson
import redis

from ingest.deadletter import DeadLetterConfig, DeadLetterStore, decode_raw, encode
from ingest.model import DeadLetter


def test_config_defaults() -> None:
    c = DeadLetterConfig()
    assert c.key is None and c.max_length is None and c.key_for("filebeat") == "filebeat:dead"
    assert DeadLetterConfig(key="x").key_for("filebeat") == "x"


def test_encode_text_and_binary() -> None:
    text = orjson.loads(encode(DeadLetter(b"not json", "decode", "invalid_json", "bad"), "w1"))
    assert text["raw"] == "not json" and "raw_encoding" not in text
    assert text["stage"] == "decode" and text["error_code"] == "invalid_json" and text["reason"] == "bad"
    assert text["status"] is None and text["worker"] == "w1" and text["time"].endswith("Z")
    garbage = b"\xff\xfe\x00binary"
    binary = orjson.loads(encode(DeadLetter(garbage, "decode", "invalid_utf8", "bad", 400), "w1"))
    assert binary["raw_encoding"] == "base64" and base64.b64decode(binary["raw"]) == garbage
    assert binary["status"] == 400
    assert decode_raw(binary) == garbage and decode_raw(text) == b"not json"


def test_put_list_summary_replay(redis_client: redis.Redis) -> None:
    store = DeadLetterStore(redis_client, "filebeat:dead", worker="w1")
    assert store.main_key == "filebeat"
    dead = [DeadLetter(b"a", "decode", "invalid_json", "not JSON: a"),
            DeadLetter(b"\xff", "decode", "invalid_utf8", "not UTF-8"),
            DeadLetter(b'{"message":"x"}', "index", "document_parsing_exception", "bad ip", 400)]
    assert store.put(dead) == 3
    assert store.count() == 3
    listed = store.list(2)
    assert [e["error_code"] for e in listed] == ["invalid_json", "invalid_utf8"]
    s = store.summary()
    assert s["count"] == 3 and s["by_code"]["invalid_json"] == 1 and s["by_stage"] == {"decode": 2, "index": 1}
    redis_client.rpush("filebeat", b"existing")
    assert store.replay(1) == 1
    assert redis_client.lrange("filebeat", 0, -1) == [b"existing", b"a"]
    assert store.replay() == 2
    assert redis_client.lrange("filebeat", 0, -1) == [b"existing", b"a", b"\xff", b'{"message":"x"}']
    assert store.count() == 0 and store.replay() == 0


def test_max_length_keeps_newest(redis_client: redis.Redis) -> None:
    store = DeadLetterStore(redis_client, "k:dead", max_length=2)
    store.put([DeadLetter(b"%d" % i, "decode", "c", "r") for i in range(5)])
    assert [e["raw"] for e in store.list(10)] == ["3", "4"]


def test_concurrent_replays_move_each_entry_once(redis_client: redis.Redis) -> None:
    store = DeadLetterStore(redis_client, "filebeat:dead")
    store.put([DeadLetter(b"%d" % i, "decode", "c", "r") for i in range(300)])
    counts: list[int] = []
    threads = [threading.Thread(target=lambda: counts.append(DeadLetterStore(redis_client, "filebeat:dead")
                                                             .replay())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 300
    assert sorted(redis_client.lrange("filebeat", 0, -1), key=int) == [b"%d" % i for i in range(300)]
