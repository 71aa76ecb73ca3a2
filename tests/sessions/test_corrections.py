"""A session first indexed as ``timeout`` (or ``replaced``) and then ended by its real logout: the
same session id is indexed again with a higher external version and overwrites the first document;
the first one, re-emitted late (pending, redelivered), never overwrites the correction.

The real pipeline (sessions in Redis, pending documents) and the real sink on the Elasticsearch
double, which enforces external versioning as Elasticsearch documents it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import orjson
import pytest
import redis
from elasticsearch import Elasticsearch

from ingest.model import IndexAction
from ingest.pending import carried
from ingest.pipeline import Pipeline
from ingest.sessions.doc import index_prefix as session_index_prefix
from ingest.settings import load_settings
from ingest.setup.config import SetupConfig
from ingest.setup.security import index_patterns, install_security
from ingest.sinks.elasticsearch import ElasticsearchConfig, ElasticsearchSink, build_client
from tests.es_double import ESDouble
from tests.sessions.conftest import FakeClock
from tests.worker_proc import make_sink, redis_url

LOGIN = "May 17 15:26:00 a3 sshd[11741]: Accepted publickey for civis-ec2 from 81.2.69.160 port 51836 ssh2: RSA 0c:b4"
LOGOUT = "May 17 18:26:00 a3 sshd[11741]: pam_unix(sshd:session): session closed for user civis-ec2"
OTHER = "May 17 15:40:00 a3 systemd[1]: Started Session 7 of user civis-ec2."


@pytest.fixture
def es() -> Iterator[ESDouble]:
    with ESDouble() as double:
        yield double
    assert not double.internal_errors


def event(line: str, offset: int) -> bytes:
    return orjson.dumps({"@timestamp": "2024-05-17T19:00:00.000Z", "message": line,
                         "log": {"file": {"path": "/var/log/auth.log"}, "offset": offset},
                         "host": {"name": "collector"}, "fields": {"log_type": "auth"}})


def make_pipeline(client: redis.Redis, clock: FakeClock) -> Pipeline:
    settings = load_settings(overrides={"sessions": {"timeout": timedelta(hours=1)}, "detect": {"enabled": False},
                                        "redis": {"url": redis_url(client.connection_pool.connection_kwargs["port"])}})
    pipeline = Pipeline.from_settings(settings, client, clock=clock)
    pipeline._last_expire = float("-inf")
    return pipeline


def sessions(actions: list[IndexAction]) -> list[IndexAction]:
    return [a for a in actions if a.doc.get("type") == "session"]


def test_timeout_then_real_logout_overwrites_with_a_higher_version(redis_client: redis.Redis, es: ESDouble) -> None:
    clock = FakeClock()
    pipeline = make_pipeline(redis_client, clock)
    sink = make_sink(es.url, threading.Event())
    assert sink.write_batch(pipeline.process([event(LOGIN, 0)]).actions) == []
    clock.advance(hours=2)
    pipeline._last_expire = float("-inf")
    timed_out = pipeline.process([event(OTHER, 100)]).actions
    (provisional,) = sessions(timed_out)
    assert provisional.version == 1 and provisional.doc["session"]["end_reason"] == "timeout"
    assert sink.write_batch(timed_out) == []  # indexed; the batch is never acknowledged: still pending
    assert redis_client.hkeys("filebeat:pending:docs") == [f"{provisional.id}@1".encode()]

    corrected_batch = pipeline.process([event(LOGOUT, 200)]).actions
    (corrected,) = sessions(corrected_batch)
    assert (corrected.id, corrected.version, corrected.index) == (provisional.id, 2, provisional.index)
    assert corrected.doc["session"]["end_reason"] == "logout"
    assert corrected.doc["session"]["corrected_from"] == "timeout"
    assert corrected.doc["session"]["duration_s"] == 3 * 3600.0
    # the correction replaces the provisional pending entry, in the transaction that made it
    assert redis_client.hkeys("filebeat:pending:docs") == [f"{provisional.id}@2".encode()]
    assert carried(corrected_batch) == [f"{provisional.id}@2"]
    assert sink.write_batch(corrected_batch) == []
    stored = es.get(provisional.index, provisional.id)
    assert stored == corrected.doc
    # the provisional document re-emitted late (another worker's pending copy, a redelivery): refused
    assert sink.write_batch([provisional]) == []
    assert es.get(provisional.index, provisional.id) == corrected.doc
    assert [(d["_id"], d["_version"]) for d in es.docs() if d["_source"]["type"] == "session"] == [
        (provisional.id, 2)]
    assert sink.stats.items_conflict == 1 and sink.stats.items_rejected == 0


def test_the_writer_may_correct_sessions_and_never_overwrite_events(redis_client: redis.Redis) -> None:
    """The role `audit-ingest setup` makes: a session corrected in place (its own indices carry the
    `index` privilege), an event never overwritten (create_doc only), as Elasticsearch enforces it."""
    with ESDouble(auth=("elastic", "elastic-pass")) as es:
        admin = Elasticsearch(es.url, basic_auth=("elastic", "elastic-pass"))
        cfg = SetupConfig.model_validate({"writer_password": "writer-pass"})
        install_security(admin, cfg, index_patterns("audit-", "audit-alerts-"), [f"{session_index_prefix('audit-')}*"])
        admin.close()
        esc = ElasticsearchConfig.model_validate({"hosts": [es.url], "username": "audit_ingest",
                                                  "password": "writer-pass", "max_retries": 0})
        sink = ElasticsearchSink(build_client(esc), esc, sleep=lambda _: None)
        clock = FakeClock()
        pipeline = make_pipeline(redis_client, clock)
        assert sink.write_batch(pipeline.process([event(LOGIN, 0)]).actions) == []
        clock.advance(hours=2)
        pipeline._last_expire = float("-inf")
        assert sink.write_batch(pipeline.process([event(OTHER, 100)]).actions) == []
        corrected = pipeline.process([event(LOGOUT, 200)]).actions
        assert sink.write_batch(corrected) == []
        (session,) = sessions(corrected)
        assert session.index.startswith("audit-sessions-") and es.get(session.index, session.id) == session.doc
        # the same correction in an events index (where sessions used to be) is refused: create_doc only
        (refused,) = sink.write_batch([IndexAction("audit-2024.05.17", session.id, session.doc, None, 2)])
        assert (refused.status, refused.error_type) == (403, "security_exception")
        assert "granted by the index privileges [index,write,all]" in refused.reason
