"""Edge inputs a Filebeat or a host can send: absurd read times, times no index can hold, numbers
beyond what the mapping stores, numbers beyond a double, 1,000-deep fields."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from elasticsearch import Elasticsearch

from ingest.document import format_timestamp
from ingest.numbers import OUT_OF_RANGE_TAG, fit_numbers
from ingest.pipeline import READ_TIME_TAG, Pipeline
from ingest.route import Router
from ingest.settings import load_settings
from tests.es_double import ESDouble, es_double  # noqa: F401  (fixture)
from tests.redis_server import RedisServer
from tests.test_worker import Running, running, wait_for  # noqa: F401
from tests.worker_proc import lists_empty_but_dead, make_worker, redis_url

NOW = datetime(2024, 5, 17, 16, 5, tzinfo=UTC)
LINE = "May 17 15:26:00 a3 sshd[123]: Accepted password for bob from 10.0.0.1 port 22 ssh2"


def pipeline() -> Pipeline:
    settings = load_settings(overrides={"sessions": {"enabled": False}, "detect": {"enabled": False}})
    return Pipeline.from_settings(settings, clock=lambda: NOW)


def event(message: str = LINE, read_at: str | None = "2024-05-17T16:02:03.500Z", offset: Any = 7,
          **fields: Any) -> bytes:
    ev: dict[str, Any] = {"message": message, "log": {"file": {"path": "/var/log/auth.log"}, "offset": offset},
                          "host": {"name": "edge"}, "fields": {"log_type": "auth", **fields}}
    if read_at is not None:
        ev["@timestamp"] = read_at
    return orjson.dumps(ev)


def one_doc(raw: bytes) -> dict[str, Any]:
    result = pipeline().process([raw])
    assert result.dead == [], result.dead
    assert len(result.actions) == 1
    doc: dict[str, Any] = result.actions[0].doc
    return doc


@pytest.mark.parametrize("read_at", ["9999-12-31T23:59:59.999Z", "0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z",
                                     "2024-05-19T00:00:00Z"])
def test_an_absurd_read_time_is_ignored_with_a_tag_and_the_line_parsed(read_at: str) -> None:
    doc = one_doc(event(read_at=read_at))
    assert doc["@timestamp"] == "2024-05-17T15:26:00.000000Z"  # the year from the worker's clock
    assert doc["event"]["action"] == "ssh_login" and doc["process"]["pid"] == 123
    assert READ_TIME_TAG in doc["tags"]
    assert "created" not in doc["event"]  # not the bogus read time


def test_a_sane_read_time_is_kept() -> None:
    doc = one_doc(event(read_at="2024-05-17T16:02:03.500Z"))
    assert doc["event"]["created"] == "2024-05-17T16:02:03.500Z" and READ_TIME_TAG not in doc.get("tags", [])


@pytest.mark.parametrize("stamp", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00",
                                   "1969-12-31T23:59:59Z", "0001-01-01T00:00:00Z"])
def test_a_line_time_no_index_can_hold_is_a_date_parse_failure(stamp: str) -> None:
    doc = one_doc(event(message=f"{stamp} a3 sshd[9]: Accepted password for bob from 10.0.0.1 port 22 ssh2"))
    assert "_dateparsefailure" in doc["tags"]
    assert doc["@timestamp"] == "2024-05-17T16:02:03.500000Z"  # when it was read
    assert doc["event"]["action"] == "ssh_login"


def test_format_timestamp_refuses_what_it_cannot_write_with_four_digits() -> None:
    assert format_timestamp(datetime(1970, 1, 1, tzinfo=UTC)) == "1970-01-01T00:00:00.000000Z"
    for ts in (datetime(1, 1, 1, tzinfo=UTC), datetime(1969, 12, 31, 23, 59, tzinfo=UTC),
               datetime.fromisoformat("9999-12-31T23:30:00-01:00")):
        with pytest.raises(ValueError):
            format_timestamp(ts)


def test_numbers_beyond_a_double_are_read_not_invalid_json() -> None:
    raw = b'{"message": "x", "fields": {"log_type": "auth", "n": ' + b"9" * 5000 + b', "f": 1e400, "m": -1e400}}'
    routed = Router().route(raw)
    assert not hasattr(routed, "error_code"), routed
    doc = {"fields": routed.event["fields"]}  # type: ignore[union-attr]
    assert sorted(fit_numbers(doc)) == ["fields.f", "fields.m", "fields.n"]
    assert doc == {"fields": {"log_type": "auth"}, "tags": [OUT_OF_RANGE_TAG]}
    bad = Router().route(b'{"message": "x", "n": ' + b"9" * 5000 + b", }")  # still not JSON: said so
    assert getattr(bad, "error_code", None) == "invalid_json"
    assert getattr(Router().route(b'{"message": "x", "n": 1e400, "c": NaN}'), "error_code", None) == "invalid_json"


def test_fit_numbers_follows_the_template_types() -> None:
    doc: dict[str, Any] = {"log": {"offset": 2**63}, "process": {"pid": 2**63 - 1, "name": "x"},
                           "session": {"duration_s": 1e300}, "host": {"name": 10**30},
                           "teleport": {"labels": {"n": 10**30}}, "fields": {"list": [1, 2**64, "s", 3.5e38]},
                           "flag": True}
    assert sorted(fit_numbers(doc)) == ["fields.list", "log.offset"]
    assert doc["log"] == {} and doc["process"]["pid"] == 2**63 - 1
    assert doc["session"]["duration_s"] == 1e300  # a double holds it
    assert doc["host"]["name"] == 10**30 and doc["teleport"]["labels"]["n"] == 10**30  # keyword, flattened
    assert doc["fields"]["list"] == [1, "s"] and doc["flag"] is True
    assert doc["tags"] == [OUT_OF_RANGE_TAG]


def test_out_of_range_numbers_are_dropped_with_a_tag_not_rejected_by_the_cluster(
        redis_server: RedisServer, redis_client: redis.Redis, es_double: ESDouble,  # noqa: F811
        running: Running) -> None:  # noqa: F811
    from ingest.setup.template import build_index_template

    es = Elasticsearch(es_double.url)
    es.indices.put_index_template(name="audit-ingest", **build_index_template())
    es.close()
    raws = [
        event(offset=1),  # a good one
        b'{"message": "' + LINE.encode() + b'", "@timestamp": "2024-05-17T16:02:03.500Z", "host": {"name": "e"},'
        b' "log": {"file": {"path": "/var/log/auth.log"}, "offset": 1234567890123456789012345678901234567890},'
        b' "fields": {"log_type": "auth"}}',  # 40 digits: orjson reads a float
        event(offset=18446744073709551615),  # fits a u64, not a long
        event(message=LINE.replace("sshd[123]", "sshd[99999999999999999999999]"), offset=3),
        event(offset=4, n=18446744073709551615, ok=12),
        b'{"message": "' + LINE.encode() + b'", "@timestamp": "2024-05-17T16:02:03.500Z", "host": {"name": "e"},'
        b' "log": {"file": {"path": "/var/log/auth.log"}, "offset": 5}, "fields": {"log_type": "auth", "big": '
        + b"7" * 5000 + b"}}",
    ]
    redis_client.rpush("filebeat", *raws)
    running.start(make_worker(redis_url(redis_server.port), es_double.url, "n1", batch_size=10))
    wait_for(lambda: not lists_empty_but_dead(redis_client) and len(es_double.docs()) == len(raws), 20,
             "every event indexed")
    running.stop()
    assert redis_client.llen("filebeat:dead") == 0
    docs = sorted((d["_source"] for d in es_double.docs()), key=lambda d: str(d.get("log", {}).get("offset")))
    tagged = [d for d in docs if OUT_OF_RANGE_TAG in d.get("tags", [])]
    assert len(tagged) == 5
    assert all(isinstance(d.get("log", {}).get("offset", 0), int) and d.get("log", {}).get("offset", 0) < 2**63
               for d in docs)
    assert all(d["process"].get("pid", 0) < 2**63 for d in docs)
    assert [d["fields"] for d in docs if "ok" in d["fields"]] == [{"log_type": "auth", "ok": 12}]


def test_parse_dead_letters_a_document_too_deep_to_encode(tmp_path: Path,
                                                          capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    from ingest.cli import main

    deep = "1"
    for _ in range(1000):
        deep = '{"a": ' + deep + "}"
    path = tmp_path / "deep.ndjson"
    path.write_text('{"message": "' + LINE + '", "fields": {"log_type": "auth", "d": ' + deep + "}}\n"
                    + event().decode() + "\n")
    assert main(["parse", "--no-sessions", str(path)]) == 0
    lines = [orjson.loads(x) for x in capsysbinary.readouterr().out.splitlines()]
    errors = [x["error"] for x in lines if "error" in x]
    assert len(errors) == 1 and errors[0]["code"] == "serialization_error" and "Recursion" in errors[0]["reason"]
    assert [x["event"]["action"] for x in lines if "error" not in x] == ["ssh_login"]
