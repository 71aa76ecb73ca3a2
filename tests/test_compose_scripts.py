"""The scripts docker-compose.yml runs, run here with the environment Compose would give them.

Values go through :func:`tests.compose_model.interpolate` from .env.example with every secret set
to a value holding ``@:/%"'\\``: es-init (the .env check and the certificates), Redis's start
command and the health checks of Redis, Elasticsearch, Kibana and the worker (against a real
redis-server, the Elasticsearch and Kibana doubles and the worker's metrics server).
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.compose_model import ROOT, SPECIAL, container_env, dotenv, interpolate, load
from tests.redis_server import _binary, free_port

ES_INIT = ROOT / "deploy" / "compose" / "es-init.sh"

CERTUTIL = '''#!{python}
import sys, zipfile, os
args = sys.argv[1:]
open(os.environ["CERTUTIL_LOG"], "a").write(" ".join(args) + "\\n")
out = args[args.index("--out") + 1]
names = ["ca/ca.crt", "ca/ca.key"] if args[0] == "ca" else ["es01/es01.crt", "es01/es01.key"]
with zipfile.ZipFile(out, "w") as z:
    for n in names:
        z.writestr(n, "-----BEGIN " + n + "-----\\n")
'''


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return load()["services"]


# --- es-init ------------------------------------------------------------------------------------------------
@pytest.fixture
def es_home(tmp_path: Path) -> Path:
    home = tmp_path / "es"
    (home / "bin").mkdir(parents=True)
    (home / "config" / "certs").mkdir(parents=True)
    tool = home / "bin" / "elasticsearch-certutil"
    tool.write_text(CERTUTIL.format(python=sys.executable))
    tool.chmod(0o755)
    return home


def run_es_init(services: dict[str, Any], es_home: Path, map_count: int = 262144,
                **env: str) -> subprocess.CompletedProcess[str]:
    svc = services["es-init"]
    assert svc["command"] == ["bash", "/usr/local/bin/es-init.sh"]
    assert "./deploy/compose/es-init.sh:/usr/local/bin/es-init.sh:ro" in svc["volumes"]
    (es_home / "max_map_count").write_text(f"{map_count}\n")
    environ = {"PATH": os.environ["PATH"], "ES_HOME": str(es_home), "CERTUTIL_LOG": str(es_home / "calls"),
               "MAX_MAP_COUNT_FILE": str(es_home / "max_map_count"), **container_env(svc, dotenv(**env))}
    return subprocess.run(["bash", str(ES_INIT)], env=environ, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("unzip") is None, reason="unzip not installed (the Elasticsearch image has it)")
def test_es_init_accepts_special_characters_and_makes_certificates_once(services: dict[str, Any],
                                                                       es_home: Path) -> None:
    done = run_es_init(services, es_home)
    assert done.returncode == 0, done.stderr
    certs = es_home / "config" / "certs"
    assert (certs / "ca" / "ca.crt").is_file() and (certs / "es01" / "es01.key").is_file()
    assert stat.S_IMODE((certs / "ca" / "ca.crt").stat().st_mode) == 0o644  # the worker (uid 10001) reads it
    assert stat.S_IMODE((certs / "es01" / "es01.key").stat().st_mode) == 0o640
    assert stat.S_IMODE((certs / "ca" / "ca.key").stat().st_mode) == 0o640
    again = run_es_init(services, es_home)  # every `up` runs it again: certificates are kept
    assert again.returncode == 0, again.stderr
    assert len((es_home / "calls").read_text().splitlines()) == 2  # ca + cert, once


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("ELASTIC_PASSWORD", "", "ELASTIC_PASSWORD is empty"),
    ("KIBANA_PASSWORD", "abc", "at least 6"),
    ("AUDIT_INGEST_ES_PASSWORD", "short", "at least 6"),
    ("REDIS_PASSWORD", "two\nlines", "control character"),
    ("KIBANA_ENCRYPTION_KEY", "0123456789abcdef0123456789abcde", "at least 32"),
    ("KIBANA_ENCRYPTION_KEY", "0123456789abcdef 0123456789abcdef", "blank"),
    ("KIBANA_PASSWORD", "12345678901234567890", "JSON"),
    ("KIBANA_PASSWORD", '"quoted-password"', "JSON"),
    ("KIBANA_PUBLIC_URL", "http://kibana.example.com/kibana", "KIBANA_PUBLIC_URL"),
    ("KIBANA_PUBLIC_URL", "kibana.example.com", "KIBANA_PUBLIC_URL"),
    ("LICENSE", "platinum", "basic or trial"),
    ("INDEX_PREFIX", "Audit-", "INDEX_PREFIX"),
    ("INDEX_PREFIX", "audit*", "INDEX_PREFIX"),
    ("RETENTION_DAYS", "0", "RETENTION_DAYS"),
    ("CLUSTER_NAME", "a:b", "CLUSTER_NAME"),
    ("ELASTIC_PASSWORD", "-nenene", "option of echo"),
    ("REDIS_APPENDFSYNC", "sometimes", "always, everysec or no"),
])
def test_es_init_refuses_what_elasticsearch_or_kibana_would(services: dict[str, Any], es_home: Path,
                                                            variable: str, value: str, message: str) -> None:
    done = run_es_init(services, es_home, **{variable: value})
    assert done.returncode == 1 and message in done.stderr and variable in done.stderr, done.stderr
    assert not (es_home / "calls").exists(), "no certificate is made while .env is wrong"


def test_es_init_names_every_problem_at_once(services: dict[str, Any], es_home: Path) -> None:
    done = run_es_init(services, es_home, KIBANA_ENCRYPTION_KEY="short", LICENSE="gold")
    assert done.returncode == 1
    assert "KIBANA_ENCRYPTION_KEY has 5 characters" in done.stderr and "LICENSE=gold" in done.stderr


def test_es_init_checks_vm_max_map_count(services: dict[str, Any], es_home: Path) -> None:
    done = run_es_init(services, es_home, map_count=65530)
    assert done.returncode == 1
    assert "vm.max_map_count is 65530" in done.stderr and "sysctl -w vm.max_map_count=262144" in done.stderr


# --- Redis ----------------------------------------------------------------------------------------------------
def _redis_cli() -> str | None:
    found = shutil.which("redis-cli")
    if found:
        return found
    cli = Path(_binary()).with_name("redis-cli")
    return str(cli) if cli.exists() else None


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def compose_redis(services: dict[str, Any], tmp_path: Path):
    """Redis started by the compose service's own command, with a special-character password."""
    svc = services["redis"]
    env = container_env(svc, dotenv())
    script = interpolate(svc["command"][2], {}).replace("/tmp/redis.conf", str(tmp_path / "redis.conf"))
    assert svc["command"][:2] == ["sh", "-c"]
    port = free_port()
    shims = tmp_path / "bin"
    shims.mkdir()
    # the same binaries, on a free port and in a scratch folder (the image listens on 6379 in /data)
    (shims / "redis-server").write_text(f'#!/bin/sh\nexec {_binary()} "$@" --port {port} --dir {tmp_path}\n')
    cli = _redis_cli()
    if cli:
        (shims / "redis-cli").write_text(f'#!/bin/sh\nexec {cli} -p {port} "$@"\n')
    for shim in shims.iterdir():
        shim.chmod(0o755)
    path = f"{shims}:{os.environ['PATH']}"
    proc = subprocess.Popen(["sh", "-c", script], env={**env, "PATH": path}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        _wait_port(port)
        yield port, env, path
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_fsyncs_as_env_says_default_always(compose_redis: tuple[int, dict[str, str], str]) -> None:
    port, env, _ = compose_redis
    assert env["REDIS_APPENDFSYNC"] == "always"  # .env.example's value, and the default without it
    client = redis.Redis(port=port, password=env["REDIS_PASSWORD"])
    assert client.config_get("appendfsync") == {"appendfsync": "always"}
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    client.close()


@pytest.mark.parametrize("value, started", [("everysec", True), ("sometimes", False)])
def test_redis_command_checks_appendfsync(services: dict[str, Any], tmp_path: Path, value: str,
                                          started: bool) -> None:
    svc = services["redis"]
    env = container_env(svc, dotenv(REDIS_APPENDFSYNC=value))
    script = interpolate(svc["command"][2], {}).replace("/tmp/redis.conf", str(tmp_path / "redis.conf"))
    port = free_port()
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "redis-server").write_text(f'#!/bin/sh\nexec {_binary()} "$@" --port {port} --dir {tmp_path}\n')
    (shims / "redis-server").chmod(0o755)
    proc = subprocess.Popen(["sh", "-c", script], env={**env, "PATH": f"{shims}:{os.environ['PATH']}"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if not started:
            assert proc.wait(10) == 1
            assert proc.stderr is not None and b"always, everysec or no" in proc.stderr.read()
            return
        _wait_port(port)
        client = redis.Redis(port=port, password=env["REDIS_PASSWORD"])
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        client.close()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


def test_redis_takes_a_password_with_special_characters(compose_redis: tuple[int, dict[str, str], str]) -> None:
    port, env, _ = compose_redis
    assert env["REDIS_PASSWORD"].startswith(SPECIAL)
    good = redis.Redis(port=port, password=env["REDIS_PASSWORD"])
    assert good.ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port, password=SPECIAL).ping()
    with pytest.raises((redis.AuthenticationError, redis.ResponseError)):  # NOAUTH
        redis.Redis(port=port).ping()
    good.close()


@pytest.mark.skipif(_redis_cli() is None, reason="no redis-cli")
def test_redis_health_check_and_readme_pipeline(services: dict[str, Any],
                                                compose_redis: tuple[int, dict[str, str], str]) -> None:
    port, env, path = compose_redis
    kind, command = services["redis"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    shell_env = {**env, "PATH": path}
    assert subprocess.run(["sh", "-c", command], env=shell_env, timeout=10).returncode == 0
    assert subprocess.run(["sh", "-c", command], env={**shell_env, "REDISCLI_AUTH": "wrong"},
                          timeout=10).returncode != 0
    # README: what Filebeat queued, read with the password from the environment, parsed
    event = (ROOT / "tests" / "data" / "samples" / "filebeat-events.ndjson").read_text().splitlines()[0]
    client = redis.Redis(port=port, password=env["REDIS_PASSWORD"], db=1)
    client.rpush("filebeat", event)
    exe = Path(sys.executable).with_name("audit-ingest")
    readme = (f"redis-cli -n 1 --raw lrange filebeat 0 99 | {exe} parse --input filebeat -")
    assert "REDISCLI_AUTH" in (ROOT / "README.md").read_text()
    done = subprocess.run(["sh", "-c", readme], env={**shell_env, "REDISCLI_AUTH": env["REDIS_PASSWORD"]},
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0 and '"event"' in done.stdout, done.stderr[-500:]
    client.close()


# --- health checks of Elasticsearch, Kibana and the worker ------------------------------------------------------
def _shell_check(services: dict[str, Any], name: str, env: dict[str, str], replace: tuple[str, str]) -> int:
    kind, command = interpolate(services[name]["healthcheck"]["test"], {})
    assert kind == "CMD-SHELL" and replace[0] in command
    command = command.replace(*replace)
    return subprocess.run(["sh", "-c", command], env={"PATH": os.environ["PATH"], **env}, timeout=30).returncode


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl (the Elasticsearch and Kibana images have it)")
def test_elasticsearch_health_check_logs_in_with_a_special_password(services: dict[str, Any]) -> None:
    from tests.es_double import ESDouble

    env = container_env(services["es01"], dotenv())
    assert env["ELASTIC_PASSWORD"].startswith(SPECIAL)
    with ESDouble(auth=("elastic", env["ELASTIC_PASSWORD"])) as es:
        # the double speaks http: the check's URL points at it, the rest of the command is as compose runs it
        assert _shell_check(services, "es01", env, ("https://localhost:9200", es.url)) == 0
        assert _shell_check(services, "es01", {**env, "ELASTIC_PASSWORD": SPECIAL},
                            ("https://localhost:9200", es.url)) != 0


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl")
def test_kibana_health_check(services: dict[str, Any]) -> None:
    from tests.kibana_double import KibanaDouble

    with KibanaDouble(username="elastic", password=SPECIAL) as kibana:
        kibana.starting = True
        assert _shell_check(services, "kibana", {}, ("http://localhost:5601", kibana.url)) != 0
        kibana.starting = False
        assert _shell_check(services, "kibana", {}, ("http://localhost:5601", kibana.url)) == 0


def test_worker_health_check_asks_healthz(services: dict[str, Any]) -> None:
    """Item 10: the container is unhealthy when the loop is stuck, though /metrics still answers."""
    from ingest.metrics import Metrics, MetricsServer

    kind, *command = services["worker"]["healthcheck"]["test"]
    assert kind == "CMD" and command[0] == "python"
    metrics = Metrics(stale_after=60)
    port = free_port()
    server = MetricsServer(metrics, bind="127.0.0.1", port=port).start()
    try:
        check = [sys.executable, *[c.replace("127.0.0.1:9108", f"127.0.0.1:{port}") for c in command[1:]]]
        metrics.loop_ran()
        assert subprocess.run(check, capture_output=True, timeout=30).returncode == 0
        metrics.stale_after = -1.0  # the loop has not completed an iteration within stale_after
        assert subprocess.run(check, capture_output=True, timeout=30).returncode != 0
    finally:
        server.close()
