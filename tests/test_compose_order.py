"""What `docker compose up` does with docker-compose.yml: start order, restarts, outages.

No Docker engine here: :class:`tests.compose_model.Up` applies Compose's own waiting rules
(docker/compose pkg/compose/convergence.go, quoted in that module) to the parsed file.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.compose_model import COMPOSE, ComposeError, Up, interpolate, load, one_shot


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return load()["services"]


def test_the_model_reproduces_the_failure_compose_reports() -> None:
    """A dependant waiting for a one-shot to be *healthy* fails once that one-shot has exited."""
    services = {"init": {"image": "x", "healthcheck": {"test": ["CMD", "true"]}},
                "db": {"image": "x", "restart": "always", "healthcheck": {"test": ["CMD", "true"]},
                       "depends_on": {"init": {"condition": "service_healthy"}}}}
    with pytest.raises(ComposeError, match=r"dependency failed to start: container init exited \(0\)"):
        Up(services).run()


def test_one_shots_are_waited_for_by_completion_only(services: dict[str, Any]) -> None:
    """Item 1: nothing waits for a one-shot to be healthy; a one-shot has no health check."""
    shots = {n for n, s in services.items() if one_shot(s)}
    assert shots == {"es-init", "setup", "kibana-setup"}
    for name, svc in services.items():
        assert "healthcheck" not in svc or name not in shots, f"{name} exits: a health check on it means nothing"
        for dep, spec in svc.get("depends_on", {}).items():
            if dep in shots:
                assert spec["condition"] == "service_completed_successfully", f"{name} -> {dep}: {spec}"


def test_second_up_on_a_running_stack(services: dict[str, Any]) -> None:
    """Item 1: `docker compose up -d` again (and with --scale, which is the same walk) succeeds."""
    up = Up(services)
    first = up.run()
    assert set(first) == set(services)
    assert all(up.state[n] in ("healthy", "exited:0") for n in services), up.state
    again = up.run()  # the one-shots run again (they had exited), the rest keeps running
    assert set(again) == {"es-init", "setup", "kibana-setup"}
    assert up.state["worker"] == "healthy"


def test_upgrade_recreates_the_worker_and_starts_it(services: dict[str, Any]) -> None:
    """Item 1: after `docker compose build`, `up -d` recreates setup and the worker: the worker runs."""
    up = Up(services)
    up.run()
    started = up.run(recreate=("setup", "kibana-setup", "worker"))
    assert "worker" in started and up.state["worker"] == "healthy"


def test_ingestion_runs_while_kibana_is_down(services: dict[str, Any]) -> None:
    """Item 2: Kibana never healthy (say, a bad encryption key) and the import failing: the worker
    still starts, `up` itself does not fail, and nothing waits for the Kibana import."""
    up = Up(services, fails={"kibana", "kibana-setup"})
    up.run()
    assert up.state["worker"] == "healthy" and up.state["kibana"] == "unhealthy"
    assert up.state["kibana-setup"] == "exited:1"
    assert services["kibana-setup"]["restart"] == "on-failure"  # Docker runs it again until it succeeds
    waits_for_kibana = [n for n, s in services.items()
                        if s.get("depends_on", {}).get("kibana", {}).get("condition", "service_started")
                        != "service_started"]
    assert waits_for_kibana == []
    for dep in ("kibana", "kibana-setup"):
        assert dep not in services["worker"].get("depends_on", {})


def test_worker_waits_for_elasticsearch_redis_and_its_user(services: dict[str, Any]) -> None:
    """Item 2: ready means Redis and Elasticsearch healthy and setup done (template, writer user)."""
    deps = {d: s["condition"] for d, s in services["worker"]["depends_on"].items()}
    assert deps == {"redis": "service_healthy", "es01": "service_healthy",
                    "setup": "service_completed_successfully"}
    for broken in ("es01", "redis", "setup", "es-init"):
        up = Up(services, fails={broken})
        with pytest.raises(ComposeError):
            up.run()
        assert "worker" not in up.state, f"worker started although {broken} failed"


def test_a_dollar_is_always_escaped_or_a_variable() -> None:
    """A bare `$` (e.g. `$'` in a grep pattern) needs Compose >= 2.12; `$$` works everywhere."""
    text = COMPOSE.read_text()
    variable = r"\$\{[A-Za-z_][A-Za-z0-9_]*(?:(?::?[-?+])[^}$]*)?\}"  # ${X}, ${X:-default}, ${X:?error}
    rest = re.sub(variable, "", text.replace("$$", ""))
    assert "$" not in rest, [line for line in text.splitlines() if "$" in re.sub(variable, "", line.replace("$$", ""))]
    compose = load()
    interpolate(compose, {})  # raises on a bare $
    with pytest.raises(ValueError, match="bare"):
        interpolate("grep -Eq '^(200|401)$'", {})
    kibana = interpolate(compose["services"]["kibana"]["healthcheck"]["test"], {})
    assert kibana[1].endswith("grep -Eq '^(200|401)$'")  # what the container's shell gets
