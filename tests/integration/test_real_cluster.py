"""The same scenarios against a real Elasticsearch (and Kibana) when ``ES_URL`` (``KIBANA_URL``) is
set, e.g. the docker-compose stack:

    ES_URL=https://elastic:PASSWORD@localhost:9200 ES_CA_CERTS=certs/ca/ca.crt \\
    KIBANA_URL=http://elastic:PASSWORD@localhost:5601 make test

Skipped otherwise (no Elasticsearch can run on the CI machines). Everything is written under a
unique index prefix and removed afterwards.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from ingest.model import IndexAction
from ingest.settings import Settings, load_settings
from tests.redis_server import RedisServer

ES_URL = os.environ.get("ES_URL")
KIBANA_URL = os.environ.get("KIBANA_URL")
pytestmark = [pytest.mark.es_integration,
              pytest.mark.skipif(not ES_URL, reason="ES_URL not set: no real Elasticsearch to test against")]
SAMPLES = Path(__file__).parent.parent / "data" / "samples"


def _split(url: str) -> tuple[str, str | None, str | None]:
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")), parts.username, parts.password


@pytest.fixture
def settings(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    assert ES_URL
    url, user, password = _split(ES_URL)
    prefix = f"audit-it-{uuid.uuid4().hex[:8]}-"
    es: dict[str, object] = {"hosts": [url]}
    if user:
        es.update(username=user, password=password)
    if os.environ.get("ES_CA_CERTS"):
        es["ca_certs"] = os.environ["ES_CA_CERTS"]
    kibana: dict[str, object] = {}
    if KIBANA_URL:
        k_url, k_user, k_password = _split(KIBANA_URL)
        kibana = {"url": k_url, "username": k_user or user, "password": k_password or password}
    s = load_settings(overrides={
        "elasticsearch": es, "kibana": kibana, "index": {"prefix": prefix},
        "redis": {"url": f"redis://127.0.0.1:{redis_server.port}/5", "batch_size": 50},
        "metrics": {"enabled": False},
        "geoip": {"city_database": "tests/data/geoip/GeoIP2-City-Test.mmdb",
                  "asn_database": "tests/data/geoip/GeoLite2-ASN-Test.mmdb"},
        "keys": {"authorized_keys": ["tests/data/keys/authorized_keys"]},
    })
    redis.Redis(port=redis_server.port, db=5).flushdb()
    yield s
    from ingest.setup.template import template_name
    from ingest.sinks.elasticsearch import build_client

    client = build_client(s.elasticsearch)
    client.options(ignore_status=404).indices.delete(index=f"{prefix}*")
    client.options(ignore_status=404).indices.delete_index_template(name=template_name(prefix))
    client.close()


def _setup(s: Settings) -> None:
    from ingest.setup.template import build_setup, install
    from ingest.sinks.elasticsearch import build_client

    client = build_client(s.elasticsearch)
    install(client, build_setup(s.index.prefix, None))
    client.close()


def _drain(s: Settings, timeout: float = 60) -> None:
    from ingest.worker import build_worker

    r = redis.Redis.from_url(s.redis.url)
    worker, close = build_worker(s)
    thread = threading.Thread(target=worker.run)
    thread.start()
    deadline = time.monotonic() + timeout
    while r.llen(s.redis.key) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    worker.stop()
    thread.join(60)
    close()
    r.close()


def _count(s: Settings) -> int:
    from ingest.sinks.elasticsearch import build_client

    client = build_client(s.elasticsearch)
    client.indices.refresh(index=f"{s.index.prefix}*")
    n = int(client.count(index=f"{s.index.prefix}*")["count"])
    client.close()
    return n


def test_events_indexed_exactly_once_even_when_redelivered(settings: Settings) -> None:
    _setup(settings)
    events = [e for e in (SAMPLES / "filebeat-events.ndjson").read_bytes().splitlines() if e.startswith(b"{")]
    r = redis.Redis.from_url(settings.redis.url)
    r.rpush(settings.redis.key, *events)
    _drain(settings)
    first = _count(settings)
    assert first == len(events) - 1  # the event without `message` is a dead letter
    r.rpush(settings.redis.key, *events)  # redelivery: every create answers 409
    _drain(settings)
    assert _count(settings) == first
    assert r.llen(f"{settings.redis.key}:dead") == 2


def test_mapping_errors_are_rejected_not_retried(settings: Settings) -> None:
    from ingest.sinks.elasticsearch import ElasticsearchSink, build_client

    _setup(settings)
    client = build_client(settings.elasticsearch)
    sink = ElasticsearchSink(client, settings.elasticsearch)
    good = IndexAction(f"{settings.index.prefix}2024.05.17", "ok-1",
                       {"@timestamp": "2024-05-17T00:00:00Z", "message": "x", "source": {"ip": "81.2.69.160"}})
    bad = IndexAction(f"{settings.index.prefix}2024.05.17", "bad-1",
                      {"@timestamp": "2024-05-17T00:00:00Z", "message": "x", "source": {"ip": "not an ip"}})
    rejected = sink.write_batch([good, bad])
    client.close()
    assert [r.action.id for r in rejected] == ["bad-1"] and rejected[0].status == 400


@pytest.mark.skipif(not KIBANA_URL, reason="KIBANA_URL not set")
def test_kibana_objects_import(settings: Settings) -> None:
    from ingest.setup.kibana import import_saved_objects
    from ingest.setup.kibana_objects import build_saved_objects

    k = settings.kibana
    assert k.url
    # the objects generated for this run's prefix (their ids carry it, so they sit beside the real ones)
    result = import_saved_objects(k.url, [], objects=build_saved_objects(settings.index.prefix),
                                  username=k.username,
                                  password=k.password.get_secret_value() if k.password else None,
                                  verify=False)
    assert result.success and result.success_count > 10
