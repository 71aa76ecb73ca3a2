"""`audit-ingest setup` as the compose services run it: users, template, retention, replicas, Kibana.

The environment is the one docker-compose.yml gives the `setup` and `kibana-setup` containers
(tests.compose_model), secrets with ``@:/%"'\\`` included; Elasticsearch and Kibana are the doubles.
"""

from __future__ import annotations

from typing import Any

import pytest

from ingest.cli import main
from ingest.errors import IngestError
from ingest.settings import load_settings
from ingest.setup.steps import setup_elasticsearch, wait_for_cluster
from ingest.sinks.elasticsearch import build_client
from tests.compose_model import SPECIAL, container_env, dotenv, load
from tests.es_double import ESDouble, es_double  # noqa: F401  (fixture)
from tests.kibana_double import KibanaDouble


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return load()["services"]


def use_compose_env(monkeypatch: pytest.MonkeyPatch, services: dict[str, Any], name: str, es_url: str,
                    kibana_url: str | None = None, **dotenv_values: str) -> dict[str, str]:
    """The service's container environment, pointed at the doubles (they speak http, no CA)."""
    env = container_env(services[name], dotenv(**dotenv_values))
    env["AUDIT_INGEST_ELASTICSEARCH__HOSTS"] = f'["{es_url}"]'
    env.pop("AUDIT_INGEST_ELASTICSEARCH__CA_CERTS")
    if kibana_url is not None:
        env["AUDIT_INGEST_KIBANA__URL"] = kibana_url
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_setup_service_creates_users_with_special_passwords(monkeypatch: pytest.MonkeyPatch,
                                                            services: dict[str, Any]) -> None:
    dot = dotenv()
    with ESDouble(auth=("elastic", dot["ELASTIC_PASSWORD"])) as es:
        env = use_compose_env(monkeypatch, services, "setup", es.url)
        es.cluster.create_index("audit-2024.05.16")  # made before this setup: gets replicas and retention too
        assert main(services["setup"]["command"]) == 0
        users, roles = es.cluster.users, es.cluster.roles
        assert users["kibana_system"]["password"] == dot["KIBANA_PASSWORD"]
        assert users["audit_ingest"]["password"] == dot["AUDIT_INGEST_ES_PASSWORD"]
        assert dot["KIBANA_PASSWORD"].startswith(SPECIAL) and dot["AUDIT_INGEST_ES_PASSWORD"].startswith(SPECIAL)
        assert users["audit_ingest"]["roles"] == ["audit_ingest_writer"]
        role = roles["audit_ingest_writer"]
        assert role["indices"] == [{"names": ["audit-*"], "privileges": [
            "create_doc", "create_index", "auto_configure", "view_index_metadata"]},
            {"names": ["audit-sessions-*"], "privileges": ["index"]}]  # overwrite: session corrections only
        assert role["cluster"] == ["monitor"]
        template = es.cluster.templates["audit-ingest"]["body"]["template"]["settings"]
        assert template["index.number_of_replicas"] == 0  # single node: green, not yellow
        assert template["index.lifecycle.name"] == "audit-retention"
        assert es.cluster.indices["audit-2024.05.16"].settings == {
            "index.number_of_replicas": 0, "index.lifecycle.name": "audit-retention"}
        assert es.cluster.policies["audit-retention"]["policy"]["phases"]["delete"]["min_age"] == "90d"
        assert env["AUDIT_INGEST_INDEX__REPLICAS"] == "0"
        assert not any(r.path.startswith("/api") for r in es.requests)  # no Kibana call from this service


def test_the_worker_logs_in_as_the_user_setup_made(monkeypatch: pytest.MonkeyPatch, services: dict[str, Any]) -> None:
    dot = dotenv()
    with ESDouble(auth=("audit_ingest", dot["AUDIT_INGEST_ES_PASSWORD"])) as es:
        use_compose_env(monkeypatch, services, "worker", es.url)
        settings = load_settings()
        client = build_client(settings.elasticsearch)
        assert client.info()["cluster_name"]
        client.close()
        import redis

        assert redis.connection.parse_url(settings.redis.url)["password"] == dot["REDIS_PASSWORD"]


def test_alerts_follow_the_index_prefix(monkeypatch: pytest.MonkeyPatch, services: dict[str, Any]) -> None:
    """Item 3: with another prefix, role, template and data views cover the alert indices."""
    dot = dotenv(INDEX_PREFIX="corp-")
    with ESDouble(auth=("elastic", dot["ELASTIC_PASSWORD"])) as es:
        use_compose_env(monkeypatch, services, "setup", es.url, INDEX_PREFIX="corp-")
        settings = load_settings()
        assert settings.detect.index_prefix == "corp-alerts-"
        assert main(["setup", "--no-kibana"]) == 0
        import fnmatch

        alert_index = "corp-alerts-2024.05.17"
        names, overwrite = [i["names"] for i in es.cluster.roles["audit_ingest_writer"]["indices"]]
        assert any(fnmatch.fnmatchcase(alert_index, p) for p in names)
        assert overwrite == ["corp-sessions-*"]  # the sessions follow the prefix too
        template = es.cluster.template_for(alert_index)
        assert template is not None and template["body"]["index_patterns"] == ["corp-*"]


def test_setup_waits_for_elasticsearch_and_gives_up() -> None:
    class Client:
        def __init__(self, answers: list[Any]) -> None:
            self.answers = answers

        def options(self, **_: Any) -> Client:
            return self

        @property
        def cluster(self) -> Client:
            return self

        def health(self, **_: Any) -> dict[str, Any]:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    wait_for_cluster(Client([ConnectionError("refused"), {"status": "red", "timed_out": True},
                             {"status": "yellow", "timed_out": False}]), 60, sleep=sleep, clock=lambda: now[0])
    assert now[0] == 3.0  # 1 s, then 2 s
    with pytest.raises(IngestError, match="not ready after 10s"):
        wait_for_cluster(Client([ConnectionError("refused")] * 20), 10, sleep=sleep, clock=lambda: now[0])
    unauthorized = ConnectionError("401")
    unauthorized.status_code = 401  # type: ignore[attr-defined]
    with pytest.raises(IngestError, match="refused the setup user"):
        wait_for_cluster(Client([unauthorized]), 60, sleep=sleep, clock=lambda: now[0])


def test_wrong_elastic_password_fails_setup(monkeypatch: pytest.MonkeyPatch, services: dict[str, Any]) -> None:
    with ESDouble(auth=("elastic", "another-password")) as es:
        use_compose_env(monkeypatch, services, "setup", es.url)
        assert main(["setup", "--no-kibana"]) == 1


def test_kibana_setup_service_imports_the_generated_objects(monkeypatch: pytest.MonkeyPatch,
                                                            services: dict[str, Any]) -> None:
    """The Kibana import: generated for the configured prefix, with the special elastic password,
    retried while Kibana starts; without Kibana the Elasticsearch part does not need it."""
    from ingest.setup.kibana_objects import build_saved_objects

    dot = dotenv(INDEX_PREFIX="corp-")
    with ESDouble() as es, KibanaDouble(username="elastic", password=dot["ELASTIC_PASSWORD"]) as kibana:
        use_compose_env(monkeypatch, services, "kibana-setup", es.url, kibana.url, INDEX_PREFIX="corp-")
        kibana.fail_next(503, times=2)
        assert main(services["kibana-setup"]["command"]) == 0
        expected = {(o["type"], o["id"]) for o in build_saved_objects("corp-")}
        assert set(kibana.objects()) == expected and len(kibana.requests) == 3
        views = {o["attributes"]["title"] for (kind, _), o in kibana.objects().items() if kind == "index-pattern"}
        assert views == {"corp-*,-corp-alerts-*", "corp-alerts-*"}
        assert es.requests == []  # --kibana-only touches no Elasticsearch API


def test_kibana_only_needs_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUDIT_INGEST_KIBANA__URL", raising=False)
    assert main(["setup", "--kibana-only"]) == 2


def test_setup_runs_standalone_without_users(es_double: ESDouble) -> None:  # noqa: F811
    """A site with its own cluster and users: no setup.* password, no user is touched."""
    settings = load_settings(overrides={"elasticsearch": {"hosts": [es_double.url]}})
    setup_elasticsearch(build_client(settings.elasticsearch), settings)
    assert es_double.cluster.users == {} and es_double.cluster.roles == {}
    assert "audit-ingest" in es_double.cluster.templates
