"""The bulk sink against the Elasticsearch double, through the official client.

Every scenario ends with the same check: the double holds exactly one document per action that
was not rejected, each written once, and nothing else.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from ingest.errors import SinkUnavailable
from ingest.model import IndexAction
from ingest.sinks.base import Sink
from ingest.sinks.elasticsearch import (
    ElasticsearchConfig,
    ElasticsearchSink,
    build_client,
    index_for,
    parse_index_day,
)
from tests.es_double import ESDouble

INDEX = "audit-2024.05.17"


@pytest.fixture
def es() -> Iterator[ESDouble]:
    with ESDouble() as double:
        yield double
    assert not double.internal_errors


class Harness:
    """A sink on the double whose waits are recorded instead of slept."""

    def __init__(self, double: ESDouble, *, stop: threading.Event | None = None,
                 on_sleep: Callable[[int], None] | None = None, **cfg: Any) -> None:
        cfg.setdefault("request_timeout", timedelta(seconds=10))
        self.cfg = ElasticsearchConfig(hosts=[double.url], **cfg)
        self.client = build_client(self.cfg, sink=True)
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep
        self.sink = ElasticsearchSink(self.client, self.cfg, stop=stop, sleep=self._sleep, rng=random.Random(1))

    def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep(len(self.sleeps))


def actions(n: int, index: str = INDEX, **extra: Any) -> list[IndexAction]:
    return [IndexAction(index=index, id=f"id-{i}", doc={"@timestamp": "2024-05-17T10:00:00Z", "n": i, **extra},
                        raw=b"raw-%d" % i) for i in range(n)]


def expect_once(double: ESDouble, acts: list[IndexAction], *, except_ids: set[str] = frozenset()) -> None:
    double.assert_exactly_once([(a.index, a.id) for a in acts if a.id not in except_ids])
    for a in acts:
        if a.id not in except_ids:
            assert double.get(a.index, a.id) == a.doc


def bulk_ids(double: ESDouble) -> list[list[str]]:
    """The ``_id`` of every action line of every bulk request, in order."""
    out = []
    for req in double.bulk_requests():
        assert req.body is not None
        lines = req.body.split(b"\n")
        out.append([orjson.loads(line)["create"]["_id"] for line in lines[0:-1:2]])
    return out


def test_sink_is_a_sink(es: ESDouble) -> None:
    assert isinstance(Harness(es).sink, Sink)


def test_all_created_in_one_request(es: ESDouble) -> None:
    h = Harness(es)
    acts = actions(50)
    assert h.sink.write_batch(acts) == []
    (req,) = es.bulk_requests()
    first = orjson.loads(req.body.split(b"\n")[0])  # type: ignore[union-attr]
    assert first == {"create": {"_index": INDEX, "_id": "id-0"}}
    assert h.sink.stats.items_indexed == 50 and h.sink.stats.requests == 1 and h.sleeps == []
    expect_once(es, acts)


def test_an_answer_without_failures_is_not_decoded(es: ESDouble) -> None:
    """The sink's client counts the items of an all-created bulk answer instead of decoding them;
    an answer with a failure is decoded in full (the per-item statuses are read)."""
    client = build_client(ElasticsearchConfig(hosts=[es.url]), sink=True)
    json = client.transport.serializers.get_serializer("application/json")
    ok = b'{"errors":false,"items":[{"create":{"status":201}},{"create":{"status":201}}]}'
    assert json.loads(ok) == {"errors": False, "items": [None, None]}
    failed = b'{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":429}}]}'
    assert json.loads(failed)["items"][1] == {"create": {"status": 429}}
    plain = build_client(ElasticsearchConfig(hosts=[es.url]))
    assert plain.transport.serializers.get_serializer("application/json").loads(ok)["items"][0] == {
        "create": {"status": 201}}


def test_empty_batch_sends_nothing(es: ESDouble) -> None:
    assert Harness(es).sink.write_batch([]) == []
    assert es.bulk_requests() == []


def test_409_on_redelivery_counts_as_done(es: ESDouble) -> None:
    h = Harness(es)
    acts = actions(10)
    h.sink.write_batch(acts[:4])
    redelivered = [IndexAction(a.index, a.id, {**a.doc, "changed": True}) if i < 4 else a for i, a in enumerate(acts)]
    assert h.sink.write_batch(redelivered) == []
    assert h.sink.stats.items_conflict == 4 and h.sink.stats.items_indexed == 10
    assert h.sleeps == []
    expect_once(es, acts)  # the first write wins: create never overwrites


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_item_level_transient_statuses_retry_only_those_items(es: ESDouble, status: int) -> None:
    es.fail_items(status, every=3, times=3)
    h = Harness(es)
    acts = actions(9)
    assert h.sink.write_batch(acts) == []
    sent = bulk_ids(es)
    assert len(sent) == 2 and sent[1] == ["id-2", "id-5", "id-8"]
    assert len(h.sleeps) == 1
    assert h.sink.stats.items_retried == 3 and h.sink.stats.failures_by_kind[f"item_{status}"] == 3
    expect_once(es, acts)


def test_item_retries_continue_until_success(es: ESDouble) -> None:
    es.fail_items(429, ids={"id-1"}, times=6)
    h = Harness(es)
    acts = actions(3)
    assert h.sink.write_batch(acts) == []
    assert len(h.sleeps) == 6 and bulk_ids(es)[1:] == [["id-1"]] * 6
    expect_once(es, acts)


@pytest.mark.parametrize("rule, status, error_type", [
    (lambda i, d, s: None, 400, "document_parsing_exception"),  # the template below refuses "n": "x"
    (lambda i, d, s: (404, "index_not_found_exception", "no such index") if d == "id-1" else None, 404,
     "index_not_found_exception"),
    (lambda i, d, s: (403, "cluster_block_exception", "blocked") if d == "id-1" else None, 403,
     "cluster_block_exception"),
])
def test_permanent_item_errors_are_rejected_with_reason(es: ESDouble, rule: Any, status: int, error_type: str) -> None:
    h = Harness(es)
    h.client.indices.put_index_template(name="audit", index_patterns=["audit-*"],
                                        template={"mappings": {"properties": {"n": {"type": "long"}}}})
    es.add_rule(rule)
    acts = actions(3)
    if status == 400:
        acts[1] = IndexAction(INDEX, "id-1", {"n": "x"}, raw=b"raw-1")
    rejected = h.sink.write_batch(acts)
    assert [(r.action.id, r.status, r.error_type) for r in rejected] == [("id-1", status, error_type)]
    assert rejected[0].action.raw == b"raw-1" and rejected[0].reason
    assert h.sink.stats.items_rejected == 1 and h.sleeps == [] and len(es.bulk_requests()) == 1
    expect_once(es, acts, except_ids={"id-1"})
    assert es.get(INDEX, "id-1") is None


def test_mapping_reason_names_the_field(es: ESDouble) -> None:
    h = Harness(es)
    h.client.indices.put_index_template(name="audit", index_patterns=["audit-*"],
                                        template={"mappings": {"properties": {"source": {"properties": {
                                            "ip": {"type": "ip"}}}}}})
    acts = [IndexAction(INDEX, "a", {"source": {"ip": "not-an-ip"}}), IndexAction(INDEX, "b", {"source": {"ip": "::1"}})]
    (rejected,) = h.sink.write_batch(acts)
    assert rejected.status == 400 and "[source.ip]" in rejected.reason
    expect_once(es, acts, except_ids={"a"})


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_whole_request_failures_are_retried(es: ESDouble, status: int) -> None:
    es.fail_requests(status, times=3)
    h = Harness(es)
    acts = actions(20)
    assert h.sink.write_batch(acts) == []
    assert len(h.sleeps) == 3 and h.sink.stats.request_failures == 3
    assert h.sink.stats.failures_by_kind[f"http_{status}"] == 3
    expect_once(es, acts)


@pytest.mark.parametrize("when, conflicts", [("before_apply", 0), ("after_apply", 20), ("mid_response", 20)])
def test_dropped_connection_neither_loses_nor_duplicates(es: ESDouble, when: str, conflicts: int) -> None:
    es.drop_connections(when, times=1)
    h = Harness(es)
    acts = actions(20)
    assert h.sink.write_batch(acts) == []
    assert h.sink.stats.failures_by_kind["connection"] == 1 and len(h.sleeps) == 1
    assert h.sink.stats.items_conflict == conflicts
    expect_once(es, acts)


def test_timeout_after_the_write_was_applied(es: ESDouble) -> None:
    es.delay(1.5, times=1)
    h = Harness(es, request_timeout=timedelta(milliseconds=200))
    acts = actions(5)
    assert h.sink.write_batch(acts) == []
    assert h.sink.stats.failures_by_kind["timeout"] == 1 and h.sink.stats.items_conflict == 5
    expect_once(es, acts)


def test_down_then_up(es: ESDouble) -> None:
    h = Harness(es, on_sleep=lambda n: es.up() if n == 4 else None)
    h.sink.write_batch(actions(1, index="audit-2024.05.16"))  # a keep-alive connection is open
    es.down()
    acts = actions(30)
    assert h.sink.write_batch(acts) == []
    assert len(h.sleeps) == 4 and h.sink.stats.failures_by_kind["connection"] == 4
    es.assert_exactly_once([(a.index, a.id) for a in acts] + [("audit-2024.05.16", "id-0")])


def test_mixed_faults_end_exactly_once(es: ESDouble) -> None:
    es.fail_items(429, share=0.3, seed=5, times=40)
    es.fail_items(503, every=7, times=10)
    es.fail_requests(503, times=2)
    es.drop_connections("after_apply", times=2)
    h = Harness(es)
    acts = actions(200)
    assert h.sink.write_batch(acts) == []
    s = h.sink.stats
    assert s.items_indexed + s.items_conflict == 200  # each action confirmed exactly once
    assert s.items_conflict > 0 and s.request_failures == 4
    expect_once(es, acts)


def test_stop_during_outage_raises_and_loses_nothing(es: ESDouble) -> None:
    stop = threading.Event()
    es.down()
    h = Harness(es, stop=stop, on_sleep=lambda n: stop.set() if n == 2 else None)
    acts = actions(10)
    with pytest.raises(SinkUnavailable, match="10 of 10"):
        h.sink.write_batch(acts)
    assert es.docs() == []
    es.up()
    again = Harness(es)
    assert again.sink.write_batch(acts) == []  # the worker redelivers the batch it gave back
    expect_once(es, acts)


def test_stop_during_item_retries_then_redelivery(es: ESDouble) -> None:
    stop = threading.Event()
    es.fail_items(429, ids={"id-3"})
    h = Harness(es, stop=stop, on_sleep=lambda n: stop.set())
    acts = actions(6)
    with pytest.raises(SinkUnavailable, match="1 of 6"):
        h.sink.write_batch(acts)
    es.clear_faults()
    assert Harness(es).sink.write_batch(acts) == []
    assert es.count_by_id()["id-3"] == 1
    expect_once(es, acts)


def test_stop_already_set_still_tries_once(es: ESDouble) -> None:
    stop = threading.Event()
    stop.set()
    h = Harness(es, stop=stop)
    acts = actions(3)
    assert h.sink.write_batch(acts) == []
    expect_once(es, acts)


def test_stop_cuts_a_real_backoff_short(es: ESDouble) -> None:
    stop = threading.Event()
    es.down()
    cfg = ElasticsearchConfig(hosts=[es.url], backoff_initial=timedelta(seconds=300),
                              backoff_max=timedelta(seconds=300))
    sink = ElasticsearchSink(build_client(cfg), cfg, stop=stop, rng=random.Random(3))  # default sleep: stop.wait
    threading.Timer(0.2, stop.set).start()
    with pytest.raises(SinkUnavailable):
        sink.write_batch(actions(2))


def test_max_retries_gives_the_batch_back(es: ESDouble) -> None:
    es.fail_requests(503)
    h = Harness(es, max_retries=3)
    with pytest.raises(SinkUnavailable, match="after 3 retries"):
        h.sink.write_batch(actions(4))
    assert len(h.sleeps) == 3 and es.docs() == []


def test_backoff_is_capped_exponential_with_full_jitter(es: ESDouble) -> None:
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            assert a == 0
            return b

    es.fail_requests(503, times=8)
    cfg = ElasticsearchConfig(hosts=[es.url], backoff_initial=timedelta(milliseconds=100),
                              backoff_max=timedelta(seconds=2))
    sleeps: list[float] = []
    sink = ElasticsearchSink(build_client(cfg), cfg, sleep=sleeps.append, rng=Top())
    acts = actions(2)
    sink.write_batch(acts)
    assert sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])
    es.fail_requests(503, times=50)
    jittered: list[float] = []
    ElasticsearchSink(build_client(cfg), cfg, sleep=jittered.append, rng=random.Random(9)).write_batch(actions(3))
    assert all(0 <= s <= 2.0 for s in jittered) and len(set(jittered)) > 40
    expect_once(es, actions(3))


def test_backoff_starts_over_once_elasticsearch_takes_documents_again(es: ESDouble) -> None:
    """After an outage the delay grew; once a request is answered and takes some of the batch, the
    items still retried wait the initial delay again, not the outage's."""
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    es.fail_requests(503, times=5)  # down
    es.fail_items(429, ids={"id-0"}, times=2)  # back: one item still refused twice
    cfg = ElasticsearchConfig(hosts=[es.url], backoff_initial=timedelta(milliseconds=100),
                              backoff_max=timedelta(seconds=2))
    sleeps: list[float] = []
    acts = actions(3)
    assert ElasticsearchSink(build_client(cfg), cfg, sleep=sleeps.append, rng=Top()).write_batch(acts) == []
    assert sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 0.1, 0.2])
    expect_once(es, acts)


def test_a_long_wait_after_an_outage_ends_once_elasticsearch_answers(es: ESDouble) -> None:
    """Delays grown during an outage are slept in one-second steps with a ping after each: once
    Elasticsearch is back the batch is resent within a second, not after the rest of the delay."""
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    cfg = ElasticsearchConfig(hosts=[es.url], backoff_initial=timedelta(seconds=2),
                              backoff_max=timedelta(seconds=30), request_timeout=timedelta(seconds=5))
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:  # two seconds into the 4 s delay
            es.up()

    sink = ElasticsearchSink(build_client(cfg), cfg, sleep=sleep, rng=Top())
    es.down()
    acts = actions(3)
    assert sink.write_batch(acts) == []
    assert sleeps == [2.0, 1.0, 1.0]  # 2 s (short: not probed), then 4 s probed each second, cut at the 2nd
    expect_once(es, acts)


def test_request_too_large_is_split(es: ESDouble) -> None:
    es.fail_requests(413, times=2)
    h = Harness(es)
    acts = actions(8)
    assert h.sink.write_batch(acts) == []
    assert [len(ids) for ids in bulk_ids(es)] == [8, 4, 4, 2, 2]  # 2nd 413 hits the first half only
    assert h.sleeps == []
    expect_once(es, acts)


def test_a_document_too_large_alone_is_rejected(es: ESDouble) -> None:
    es.fail_requests(413)
    rejected = Harness(es).sink.write_batch(actions(2))
    assert [(r.action.id, r.status) for r in rejected] == [("id-0", 413), ("id-1", 413)]
    assert es.docs() == []


def test_unencodable_document_is_rejected_not_raised(es: ESDouble) -> None:
    acts = actions(3)
    acts[1] = IndexAction(INDEX, "id-1", {"bad": {1, 2}})
    rejected = Harness(es).sink.write_batch(acts)
    assert [(r.action.id, r.status, r.error_type) for r in rejected] == [("id-1", 0, "serialization_error")]
    expect_once(es, acts, except_ids={"id-1"})


def test_one_log_line_per_failure_kind_and_one_on_recovery(es: ESDouble, caplog: pytest.LogCaptureFixture) -> None:
    es.fail_requests(503, times=5)
    es.fail_items(429, ids={"id-0"}, times=4)
    caplog.set_level(logging.INFO, logger="ingest.sinks.elasticsearch")
    acts = actions(3)
    Harness(es).sink.write_batch(acts)
    lines = [r.getMessage() for r in caplog.records if r.name == "ingest.sinks.elasticsearch"]
    assert len([m for m in lines if "http_503" in m and "retrying" in m]) == 1
    assert len([m for m in lines if "item_429" in m and "retrying" in m]) == 1
    assert len([m for m in lines if "working again" in m]) == 1 and len(lines) == 3
    expect_once(es, acts)


def test_credentials_are_used_and_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with ESDouble(auth=("ingest", "t0p-s3cret")) as double:
        cfg = ElasticsearchConfig(hosts=[double.url], username="ingest", password="t0p-s3cret", max_retries=1)
        assert "t0p-s3cret" not in repr(cfg) and "t0p-s3cret" not in str(cfg.model_dump())
        acts = actions(2)
        assert ElasticsearchSink(build_client(cfg), cfg, sleep=lambda s: None).write_batch(acts) == []
        expect_once(double, acts)
        wrong = cfg.model_copy(update={"password": cfg.password.__class__("wrong-s3cret")})
        with pytest.raises(SinkUnavailable, match="http_401"):
            ElasticsearchSink(build_client(wrong), wrong, sleep=lambda s: None).write_batch(actions(1))
    assert "s3cret" not in caplog.text


def test_stats_listener_sees_increments(es: ESDouble) -> None:
    h = Harness(es)
    seen: list[tuple[str, int]] = []
    h.sink.stats.listener = lambda name, n: seen.append((name, n))
    es.fail_items(503, ids={"id-1"}, times=1)
    h.sink.write_batch(actions(2))
    assert ("items_retried", 1) in seen and ("retries", 1) in seen and ("requests", 1) in seen


# -- configuration --------------------------------------------------------------------------------


def test_config_defaults_and_rejections() -> None:
    cfg = ElasticsearchConfig()
    assert cfg.hosts == ["http://localhost:9200"] and cfg.max_retries is None
    for bad in ({"hostz": ["http://x"]}, {"hosts": ["http://user:pw@es:9200"]}, {"hosts": ["es:9200"]},
                {"hosts": []}, {"username": "u"}, {"username": "u", "password": "p", "api_key": "k"},
                {"index_prefix": "audit-"}, {"backoff_initial": 0}, {"max_retries": -1},
                {"backoff_initial": 5, "backoff_max": 1}):
        with pytest.raises(ValidationError):
            ElasticsearchConfig.model_validate(bad)
    assert ElasticsearchConfig.model_validate({"request_timeout": 5}).request_timeout == timedelta(seconds=5)


# -- index names ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ts, day", [
    ("2024-05-17T16:02:03.412271+00:00", "2024.05.17"),
    ("2024-05-17T16:02:03Z", "2024.05.17"),
    ("2024-05-17T23:30:00-02:00", "2024.05.18"),  # UTC date, not the local one
    ("2024-05-17T01:30:00+03:00", "2024.05.16"),
    ("2024-12-31T23:59:59.999Z", "2024.12.31"),
    ("2024-05-17 16:02:03", "2024.05.17"),  # no zone: UTC
    (1715961723000, "2024.05.17"),  # epoch millis
    ("May 17 16:02:03", None),
    ("2024-13-01T00:00:00Z", None),
    ("", None),
    (None, None),
    (True, None),
])
def test_parse_index_day(ts: object, day: str | None) -> None:
    assert parse_index_day(ts) == day


def test_index_for_falls_back_to_today_utc() -> None:
    now = lambda: datetime(2025, 1, 2, 3, 4, tzinfo=UTC)  # noqa: E731
    assert index_for("2024-05-17T16:02:03Z", "audit-", now=now) == "audit-2024.05.17"
    assert index_for("garbage", "audit-", now=now) == "audit-2025.01.02"
    assert index_for(None, "logs-", now=now) == "logs-2025.01.02"
    assert index_for("2024-05-17T16:02:03Z") == "audit-2024.05.17"


def test_index_for_fast_path_agrees_with_parsing() -> None:
    for ts in ("2024-05-17T16:02:03.412271Z", "2020-12-31T23:59:59.999999Z", "2021-01-01T00:00:00.000000Z"):
        assert index_for(ts, "audit-") == "audit-" + parse_index_day(ts)  # type: ignore[operator]
    assert index_for("2024-05-17T23:30:00-02:00", "audit-") == "audit-2024.05.18"  # not sliced: converted


def test_bulk_asks_only_for_statuses_and_errors_and_sends_the_body_as_is(es: ESDouble) -> None:
    h = Harness(es)
    es.fail_items(400, ids={"id-1"})
    acts = actions(3)
    rejected = h.sink.write_batch(acts)
    assert [(r.action.id, r.status, r.error_type) for r in rejected] == [("id-1", 400, "document_parsing_exception")]
    (req,) = es.bulk_requests()
    assert req.query["filter_path"] == "errors,items.*.status,items.*.error"
    assert req.body is not None and req.body.count(b"\n") == 6 and req.body.endswith(b"}\n")
    expect_once(es, acts, except_ids={"id-1"})


def test_versioned_actions_are_index_with_external_version(es: ESDouble) -> None:
    """Session documents: a resent or older version is a 409 (done, not rejected); a higher one overwrites."""
    h = Harness(es)
    doc = {"@timestamp": "2024-05-17T10:00:00Z", "session": {"end_reason": "timeout"}}
    fixed = {"@timestamp": "2024-05-17T10:00:00Z", "session": {"end_reason": "logout"}}
    assert h.sink.write_batch([IndexAction(INDEX, "s1", doc, None, 1)]) == []
    (req,) = es.bulk_requests()
    assert orjson.loads(req.body.split(b"\n")[0]) == {  # type: ignore[union-attr]
        "index": {"_index": INDEX, "_id": "s1", "version": 1, "version_type": "external"}}
    assert h.sink.write_batch([IndexAction(INDEX, "s1", doc, None, 1)]) == []  # resent
    assert h.sink.write_batch([IndexAction(INDEX, "s1", fixed, None, 2)]) == []  # corrected
    assert h.sink.write_batch([IndexAction(INDEX, "s1", doc, None, 1)]) == []  # the old one, late
    assert h.sink.stats.items_conflict == 2 and h.sink.stats.items_rejected == 0
    assert es.get(INDEX, "s1") == fixed and [d["_version"] for d in es.docs()] == [2]
