"""Text quoted from events must not forge lines of the worker's own log, nor reach it or the
metric labels with control characters (newlines, CR, NUL, escape sequences, U+2028)."""

from __future__ import annotations

import io
import logging
import re

import orjson
import pytest
import redis

from ingest.deadletter import DeadLetterStore
from ingest.logsafe import SafeFormatter, escape, label
from ingest.route import Router, quote
from tests.es_double import ESDouble, es_double  # noqa: F401  (fixture)
from tests.redis_server import RedisServer
from tests.test_worker import Running, running, wait_for  # noqa: F401
from tests.worker_proc import lists_empty_but_dead, make_worker, pipeline, redis_url

FORGED = "\n2099-01-01 00:00:00 CRITICAL ingest.worker: forged\r\x00\x1b[31m\u2028end"
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def auth_event(message: str, offset: int, path: str = "/var/log/auth.log") -> bytes:
    return orjson.dumps({"message": message, "log": {"file": {"path": path}, "offset": offset},
                         "host": {"name": "inject"}, "@timestamp": "2024-05-17T16:02:03.500Z"})


def test_escape_and_quote() -> None:
    assert escape(FORGED) == ("\\n2099-01-01 00:00:00 CRITICAL ingest.worker: forged\\r\\x00\\x1b[31m\\u2028end")
    assert escape("plain text, ünïcode") == "plain text, ünïcode"
    assert escape("lone \udcff surrogate") == "lone \\udcff surrogate"
    assert UNSAFE.search(quote(FORGED)) is None and quote("a" * 100).endswith("...")
    assert label('mapper"parsing\nexception{x="1"}') == "mapper_parsing_exception_x__1__"
    assert len(label("x" * 500)) == 60


def test_safe_formatter_escapes_messages_and_indents_tracebacks() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("test.injection")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("dead letter: %s", FORGED)
        try:
            raise ValueError(FORGED)
        except ValueError:
            logger.exception("a parser bug%s", FORGED)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    lines = out.getvalue().splitlines()
    records = [line for line in lines if not line.startswith(" ")]
    assert len(records) == 2, lines  # one line per record; the traceback's lines are indented
    assert not any(line.startswith("2099") for line in lines)
    assert UNSAFE.search(out.getvalue().replace("\n", "")) is None


def test_event_text_reaches_the_log_and_labels_escaped(redis_server: RedisServer, redis_client: redis.Redis,
                                                       es_double: ESDouble, running: Running,  # noqa: F811
                                                       caplog: pytest.LogCaptureFixture) -> None:
    es_double.add_rule(lambda index, doc_id, source: (400, "mapper_parsing_exception\n" + FORGED,
                                                      "failed to parse [message]: " + str(source.get("message")))
                       if "reject" in str(source.get("message")) else None)
    raws = [
        b'{"message": "' + FORGED.encode() + b'"}',  # not JSON (raw control characters): invalid_json
        auth_event("x", 1, path="/nowhere" + FORGED),  # no route: the reason quotes the path
        auth_event("May 17 15:26:00 a3 sshd[1]: reject" + FORGED, 2),  # Elasticsearch quotes the value
        auth_event("May 17 15:26:00 a3 sshd[1]: fine", 3),
    ]
    redis_client.rpush("filebeat", *raws)
    caplog.set_level(logging.INFO)
    worker = running.start(make_worker(redis_url(redis_server.port), es_double.url, "inj", batch_size=10))
    wait_for(lambda: not lists_empty_but_dead(redis_client) and redis_client.llen("filebeat:dead") == 3, 20,
             "dead-lettered")
    running.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert any("2099-01-01 00:00:00 CRITICAL" in m for m in messages)  # quoted, on one line
    assert [m for m in messages if UNSAFE.search(m)] == []
    entries = DeadLetterStore(redis_client, "filebeat:dead").list(10)
    codes = {e["error_code"] for e in entries}
    assert codes == {"invalid_json", "no_route", "mapper_parsing_exception__2099-01-01_00:00:00_CRITICAL_inges"}
    assert all(UNSAFE.search(e["reason"]) is None and "2099" in e["reason"] for e in entries)
    text = worker.metrics.render().decode()
    assert 'code="mapper_parsing_exception__2099-01-01_00:00:00_CRITICAL_inges"' in text


def test_a_parser_error_quoting_the_event_is_escaped(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    p = pipeline()

    def boom(message: str, ctx: object) -> dict[str, object]:
        raise ValueError(message)

    monkeypatch.setattr(p.parsers["auth"], "parse", boom)
    caplog.set_level(logging.INFO)
    result = p.process([auth_event("May 17 15:26:00 a3 sshd[1]: x" + FORGED, 1)])
    assert result.dead[0].error_code == "parser_error" and UNSAFE.search(result.dead[0].reason) is None
    assert caplog.records and all(UNSAFE.search(r.getMessage()) is None and not r.exc_info
                                  for r in caplog.records)
    assert Router().route(b"\xff" + FORGED.encode()).reason.isascii()  # type: ignore[union-attr]
