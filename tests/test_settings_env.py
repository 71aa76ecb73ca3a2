"""Settings from the environment: misspelled sections stop the start, redis.password, replicas."""

from __future__ import annotations

import pytest
import redis

from ingest.cli import main
from ingest.errors import ConfigError
from ingest.settings import check_environment, load_settings, url_with_password
from tests.compose_model import SPECIAL


def test_a_misspelled_section_stops_the_start(monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("AUDIT_INGEST_ELASTICSEARH__HOSTS", '["https://es01:9200"]')
    with pytest.raises(ConfigError, match="AUDIT_INGEST_ELASTICSEARH__HOSTS names no settings section 'elasticsearh'"):
        load_settings()
    assert main(["parse", "-"]) == 2
    assert "AUDIT_INGEST_ELASTICSEARH__HOSTS" in caplog.text


def test_a_misspelled_key_stops_it_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_INGEST_ELASTICSEARCH__HOST", '["x"]')
    with pytest.raises(ConfigError, match="elasticsearch.host"):
        load_settings()


def test_known_names_pass() -> None:
    check_environment({"AUDIT_INGEST_PATTERNS_DIR": "/app/patterns", "AUDIT_INGEST_IMAGE": "x",
                       "AUDIT_INGEST_ES_PASSWORD": "x", "AUDIT_INGEST_REDIS__URL": "redis://x",
                       "audit_ingest_geoip__city_database": "x", "AUDIT_INGEST_KIBANA": "{}", "OTHER": "x"})
    with pytest.raises(ConfigError):
        check_environment({"AUDIT_INGEST_KEY__AUTHORIZED_KEYS": "[]"})


def test_redis_password_goes_into_the_url_encoded() -> None:
    settings = load_settings(overrides={"redis": {"url": "redis://redis:6379/1", "password": SPECIAL}})
    parsed = redis.connection.parse_url(settings.redis.url)
    assert parsed == {"password": SPECIAL, "host": "redis", "port": 6379, "db": 1}
    assert SPECIAL not in settings.redis.url  # encoded: '@' '/' ':' cannot break the URL
    assert url_with_password("rediss://worker:old@h:6380/2", "n@w") == "rediss://worker:n%40w@h:6380/2"
    plain = load_settings(overrides={"redis": {"url": "redis://:pw@h:6379/1"}})
    assert plain.redis.url == "redis://:pw@h:6379/1"


def test_replicas_is_a_setting() -> None:
    assert load_settings().index.replicas is None
    assert load_settings(overrides={"index": {"replicas": 0}}).index.replicas == 0
    with pytest.raises(ConfigError, match="index.replicas"):
        load_settings(overrides={"index": {"replicas": -1}})
