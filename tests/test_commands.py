"""`audit-ingest setup`, `run` and `dlq` as a user runs them, against the Elasticsearch and Kibana
doubles and a real Redis."""

from __future__ import annotations

import threading
import time

import orjson
import pytest
import redis

from ingest.cli import main
from tests.es_double import ESDouble, es_double  # noqa: F401  (fixture)
from tests.kibana_double import KibanaDouble
from tests.redis_server import RedisServer

SAMPLES = "tests/data/samples"


def test_setup_installs_template_policy_and_kibana_objects(es_double: ESDouble,  # noqa: F811
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with KibanaDouble(username="elastic", password="s3cret") as kibana:
        monkeypatch.setenv("AUDIT_INGEST_ELASTICSEARCH__HOSTS", f'["{es_double.url}"]')
        monkeypatch.setenv("AUDIT_INGEST_INDEX__RETENTION_DAYS", "400")
        monkeypatch.setenv("AUDIT_INGEST_KIBANA__URL", kibana.url)
        monkeypatch.setenv("AUDIT_INGEST_KIBANA__USERNAME", "elastic")
        monkeypatch.setenv("AUDIT_INGEST_KIBANA__PASSWORD", "s3cret")
        assert main(["setup"]) == 0
        objects = kibana.objects()
    from ingest.setup.template import policy_name, template_name

    template = es_double.cluster.templates[template_name("audit-")]["body"]
    assert template["index_patterns"] == ["audit-*"]
    assert template["template"]["settings"]["index.lifecycle.name"] == policy_name("audit-")
    assert policy_name("audit-") in es_double.cluster.policies
    types = {t for t, _ in objects}
    assert {"dashboard", "index-pattern", "search"} <= types


def test_run_refuses_to_start_without_the_template(es_double: ESDouble, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("AUDIT_INGEST_ELASTICSEARCH__HOSTS", f'["{es_double.url}"]')
    monkeypatch.setenv("AUDIT_INGEST_METRICS__ENABLED", "false")
    assert main(["run"]) == 2
    assert "audit-ingest setup" in caplog.text


def test_run_indexes_filebeat_events_and_dlq_replays(es_double: ESDouble, redis_server: RedisServer,  # noqa: F811
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/3"
    client = redis.Redis.from_url(url)
    client.flushdb()
    monkeypatch.setenv("AUDIT_INGEST_REDIS__URL", url)
    monkeypatch.setenv("AUDIT_INGEST_ELASTICSEARCH__HOSTS", f'["{es_double.url}"]')
    monkeypatch.setenv("AUDIT_INGEST_METRICS__ENABLED", "false")
    monkeypatch.setenv("AUDIT_INGEST_GEOIP__CITY_DATABASE", "tests/data/geoip/GeoIP2-City-Test.mmdb")
    monkeypatch.setenv("AUDIT_INGEST_GEOIP__ASN_DATABASE", "tests/data/geoip/GeoLite2-ASN-Test.mmdb")
    monkeypatch.setenv("AUDIT_INGEST_KEYS__AUTHORIZED_KEYS", '["tests/data/keys/authorized_keys"]')
    assert main(["setup", "--no-kibana"]) == 0
    events = open(f"{SAMPLES}/filebeat-events.ndjson", "rb").read().splitlines()
    client.rpush("filebeat", *events)

    from ingest.settings import load_settings
    from ingest.worker import build_worker

    worker, close = build_worker(load_settings())
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while (client.llen("filebeat") or client.llen("filebeat:dead") < 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        worker.stop()
        thread.join(30)
        close()
    docs = [d["_source"] for d in es_double.docs("audit-*")]
    assert len(docs) == len(events) - 2
    assert es_double.count_by_id().most_common(1)[0][1] == 1
    owners = {d.get("system", {}).get("auth", {}).get("ssh", {}).get("key", {}).get("owner") for d in docs}
    assert {"john-civis", "civis-pete"} <= owners
    assert {i["_index"] for i in es_double.docs("audit-*")} == {
        "audit-2020.05.17", "audit-2020.08.21", "audit-2024.05.17"}

    assert main(["dlq"]) == 0
    summary = orjson.loads(capsys.readouterr().out)
    assert summary["count"] == 2
    assert main(["dlq", "--list", "5"]) == 0
    listed = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(e["error_code"] for e in listed) == ["invalid_json", "no_message"]
    assert main(["dlq", "--replay"]) == 0
    assert client.llen("filebeat") == 2 and client.llen("filebeat:dead") == 0
    client.close()


def test_index_prefix_is_validated_once_in_settings() -> None:
    from ingest.errors import ConfigError
    from ingest.settings import load_settings

    for bad in ("Audit-", "audit*", "_audit-"):
        with pytest.raises(ConfigError) as e:
            load_settings(overrides={"index": {"prefix": bad}})
        assert e.value.key == "index.prefix"
    assert load_settings(overrides={"index": {"prefix": "logs-audit-"}}).index.prefix == "logs-audit-"


def test_worker_counts_sessions_alerts_and_trimmed_dead_letters(es_double: ESDouble,  # noqa: F811
                                                                redis_server: RedisServer) -> None:
    from datetime import UTC, datetime

    from ingest.pipeline import wrap_line
    from ingest.settings import load_settings
    from ingest.worker import build_worker

    url = f"redis://127.0.0.1:{redis_server.port}/4"
    client = redis.Redis.from_url(url)
    client.flushdb()
    read_at = datetime(2020, 12, 31, tzinfo=UTC)
    events = [wrap_line(line, path=f"/var/log/{name}", offset=n, kind="auth", read_at=read_at)
              for name in ("auth.log", "bruteforce.log")
              for n, line in enumerate(open(f"{SAMPLES}/{name}").read().splitlines())]
    client.rpush("filebeat", *events, b"not json", b"[1]", b'{"no": "message"}')
    settings = load_settings(overrides={
        "redis": {"url": url, "batch_size": 500, "batch_wait": "PT0.2S"},
        "elasticsearch": {"hosts": [es_double.url]}, "metrics": {"enabled": False},
        "keys": {"authorized_keys": ["tests/data/keys/authorized_keys"]},
        "deadletter": {"max_length": 1}})
    worker, close = build_worker(settings)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while (client.llen("filebeat") or not client.llen("filebeat:dead")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        worker.stop()
        thread.join(30)
        close()
    sample = worker.metrics.registry.get_sample_value
    assert sample("audit_ingest_documents_total", {"type": "session"}) == 3  # a3/11741, a3/11902, web-2/2219
    assert sample("audit_ingest_documents_total", {"type": "alert"}) == 3  # one brute force, two unmapped keys
    # sessions and alerts are documents, not input events: each line counted once, by outcome
    assert sample("audit_ingest_events_total", {"outcome": "indexed"}) == len(events)
    assert sample("audit_ingest_documents_total", {"type": "event"}) == len(events)
    assert sample("audit_ingest_events_total", {"outcome": "dead_lettered"}) == 3
    assert client.llen("filebeat:dead") == 1
    assert sample("audit_ingest_dead_letters_trimmed_total") == 2
    client.close()


def test_run_starts_when_elasticsearch_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The template cannot be checked: the worker starts anyway and waits for Elasticsearch."""
    from ingest.cli import _template_present
    from ingest.settings import load_settings
    from tests.redis_server import free_port

    settings = load_settings(overrides={"elasticsearch": {"hosts": [f"http://127.0.0.1:{free_port()}"],
                                                          "request_timeout": 2}})
    assert _template_present(settings) is None
    started = []
    monkeypatch.setattr("ingest.worker.build_worker", lambda s: (type("W", (), {
        "install_signal_handlers": lambda self: None, "run": lambda self: started.append(1) or 0})(), lambda: None))
    monkeypatch.setenv("AUDIT_INGEST_ELASTICSEARCH__HOSTS", f'["http://127.0.0.1:{free_port()}"]')
    assert main(["run", "--processes", "1"]) == 0 and started == [1]
