"""docker-compose.yml as Docker Compose reads it, for tests without a Docker engine.

* :func:`interpolate`: Compose's interpolation of what this project uses (``${VAR}`` and ``$$``
  for a literal ``$``, compose-spec "Interpolation"); any other ``$`` raises, because Compose
  before 2.12 rejects it and later ones would substitute a variable.
* :func:`dotenv`: ``.env.example`` with every secret set to a value holding ``@:/%"'\\``.
* :class:`Up`: one ``docker compose up -d`` over the services' ``depends_on`` conditions, as
  ``pkg/compose/convergence.go`` (docker/compose) waits for them: ``service_started`` is only an
  order; ``service_healthy`` fails at once with ``container X exited (N)`` when the dependency's
  container has exited (``isServiceHealthy``) and with ``is unhealthy`` when its check failed;
  ``service_completed_successfully`` needs the container exited with 0 (``isServiceCompleted``).
  ``up`` starts every container that is not running (``startService``: ``toStart =
  containers.filter(isNotRunning)``), so an exited one-shot runs again on every ``up``. A failed
  wait stops ``up``: services after it are left unstarted. A one-shot here exits as soon as it
  starts (the case of a stack that is already set up: es-init finds its certificates).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

#: A value with every character the issue names, valid for every secret (no blank, not JSON).
SPECIAL = 'p@ss:w/rd%"x\'y\\z'
SECRETS = ("ELASTIC_PASSWORD", "KIBANA_PASSWORD", "AUDIT_INGEST_ES_PASSWORD", "REDIS_PASSWORD",
           "KIBANA_ENCRYPTION_KEY")

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?)([-?+])([^}$]*))?\}")  # ${X}, ${X:-d}, ${X-d}, ${X:?e}, ${X:+v}


def _substitute(m: re.Match[str], env: dict[str, str]) -> str:
    """One ``${...}`` as compose-go substitutes it (``:`` makes an empty value count as unset)."""
    name, colon, op, arg = m.group(1), m.group(2), m.group(3), m.group(4)
    value = env.get(name)
    unset = value is None or (colon == ":" and value == "")
    if op == "-":
        return arg if unset else value  # type: ignore[return-value]
    if op == "?":
        if unset:
            raise ValueError(f"required variable {name} is missing: {arg}")
        return value  # type: ignore[return-value]
    if op == "+":
        return "" if unset else arg
    return value or ""


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation of ``value`` (strings in lists and mappings too)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if value[i] == "$":
            m = _REF.match(value, i)
            if m is None:
                raise ValueError(f"bare $ at {value[i:i + 20]!r}: write $$ for the container's shell")
            out.append(_substitute(m, env))
            i = m.end()
            continue
        out.append(value[i])
        i += 1
    return "".join(out)


def load(text: str | None = None) -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text() if text is None else text)


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def dotenv(**overrides: str) -> dict[str, str]:
    """.env.example with every secret set (special characters included) and ``overrides``."""
    env = env_example()
    for n, name in enumerate(SECRETS):
        env[name] = f"{SPECIAL}{n}" + ("-key-0123456789abcdef0123456789" if "KEY" in name else "")
    env.update(overrides)
    return env


def container_env(service: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    """The environment the service's container gets (``<<`` merges already applied by YAML)."""
    return {k: str(v) for k, v in interpolate(service.get("environment", {}), env).items()}


def one_shot(service: dict[str, Any]) -> bool:
    return service.get("restart", "no") in ("no", "on-failure")


class ComposeError(Exception):
    pass


@dataclass
class Up:
    """Container states after ``up``: ``exited:N``, ``healthy``, ``unhealthy``, ``running``."""

    services: dict[str, Any]
    state: dict[str, str] = field(default_factory=dict)
    fails: set[str] = field(default_factory=set)  # services whose container never becomes healthy / exits 1

    def order(self) -> list[str]:
        pending = {n: set(s.get("depends_on", {})) for n, s in self.services.items()}
        out: list[str] = []
        while pending:
            ready = sorted(n for n, deps in pending.items() if not deps & set(pending))
            if not ready:
                raise ComposeError(f"dependency cycle among {sorted(pending)}")
            out += ready
            for n in ready:
                del pending[n]
        return out

    def _wait(self, name: str, dep: str, condition: str) -> None:
        state = self.state.get(dep)
        if condition == "service_started":
            return
        if condition == "service_healthy":
            if "healthcheck" not in self.services[dep]:
                raise ComposeError(f"{name}: container {dep} has no healthcheck configured")
            if state is not None and state.startswith("exited"):
                raise ComposeError(f"{name}: dependency failed to start: container {dep} exited "
                                   f"({state.split(':')[1]})")
            if state != "healthy":
                raise ComposeError(f"{name}: dependency failed to start: container {dep} is unhealthy")
            return
        if condition == "service_completed_successfully":
            if state != "exited:0":
                raise ComposeError(f"{name}: service {dep!r} didn't complete successfully: {state}")
            return
        raise ComposeError(f"{name}: unsupported depends_on condition {condition}")

    def _start(self, name: str) -> str:
        svc = self.services[name]
        if one_shot(svc):
            return "exited:1" if name in self.fails else "exited:0"
        if "healthcheck" not in svc:
            return "running"
        return "unhealthy" if name in self.fails else "healthy"

    def run(self, recreate: tuple[str, ...] = ()) -> list[str]:
        """One ``docker compose up -d``; ``recreate``: containers replaced (new image); returns the
        services started. Raises ComposeError as ``up`` would fail (the state shows what ran)."""
        for name in recreate:
            self.state.pop(name, None)
        started = []
        for name in self.order():
            for dep, spec in self.services[name].get("depends_on", {}).items():
                self._wait(name, dep, spec["condition"])
            if self.state.get(name) not in ("healthy", "running", "unhealthy"):
                self.state[name] = self._start(name)
                started.append(name)
        return started
