"""The deployment files, checked without a Docker engine or a Filebeat binary.

docker-compose.yml against the Compose Specification's JSON schema (tests/data/compose-spec.json),
then what the schema cannot know: services, health checks, start order, variables documented in
.env.example, a worker that scales. The Dockerfile's essentials. deploy/filebeat/filebeat.yml
ships every log kind with fields.log_type to the Redis list the worker reads. The bash snippet
really produces the commands.log line the parser expects.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ingest.route import DEFAULT_PATH_ROUTES, KINDS

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
FILEBEAT = ROOT / "deploy" / "filebeat" / "filebeat.yml"
BASH_SNIPPET = ROOT / "deploy" / "bash" / "audit-commands.sh"
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"

PROMPT_COMMAND = (
    "export PROMPT_COMMAND='RETRN_VAL=$?;logger -p local6.debug \"$(whoami) [$$]: "
    "$(history 1 | sed \"s/^[ ]*[0-9]\\+[ ]*//\" ) [$RETRN_VAL]\"'"
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def env_example() -> dict[str, str]:
    out = {}
    for n, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f".env.example:{n}: {line!r}"
        out[key] = value
    return out


_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(?::?[-?+])[^}]*)?\}|([A-Za-z_][A-Za-z0-9_]*))")


def compose_variables(text: str) -> set[str]:
    """Variables docker compose interpolates; ``$$`` is a literal ``$`` for the container's shell."""
    return {a or b for a, b in _VAR.findall(text.replace("$$", ""))}


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


# --- schema -----------------------------------------------------------------------------------------
def test_compose_file_matches_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))  # its "$schema" names draft 7
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_schema_check_can_fail() -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    bad = {"services": {"worker": {"image": "x", "depends_on": {"redis": {"condition": "service_ready"}}}}}
    assert not validator.is_valid(bad)
    assert not validator.is_valid({"services": {"worker": {"image": "x", "helthcheck": {}}}})
    assert validator.is_valid({"services": {"worker": {"image": "x", "healthcheck": {"test": ["CMD", "true"]}}}})


# --- variables --------------------------------------------------------------------------------------
def test_variable_extraction() -> None:
    text = 'a: ${A}\nb: "${B:-x}" ${C:?err} $D\nc: "$${NOT_ME} $$ALSO_NOT"'
    assert compose_variables(text) == {"A", "B", "C", "D"}


def test_every_variable_is_in_env_example() -> None:
    used = compose_variables(COMPOSE.read_text())
    documented = set(env_example())
    assert used - documented == set(), f"used in docker-compose.yml, missing in .env.example: {used - documented}"
    assert documented - used == set(), f"in .env.example but unused: {documented - used}"


def test_env_example_holds_no_secrets() -> None:
    env = env_example()
    secrets = {k: v for k, v in env.items() if ("PASSWORD" in k or "ENCRYPTION_KEY" in k) and v}
    assert not secrets, f"set these in .env, not in the example: {sorted(secrets)}"
    assert {"ELASTIC_PASSWORD", "KIBANA_PASSWORD", "REDIS_PASSWORD", "AUDIT_INGEST_ES_PASSWORD"} <= set(env)


def test_stack_version_is_one_pinned_8x_matching_the_client() -> None:
    version = env_example()["STACK_VERSION"]
    assert re.fullmatch(r"8\.\d+\.\d+", version), version
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(d for d in deps if d.startswith("elasticsearch"))
    assert "<9" in pin.replace(" ", ""), pin
    import elasticsearch

    assert elasticsearch.__versionstr__.split(".")[0] == version.split(".")[0]


def test_elasticsearch_and_kibana_share_the_version(services: dict[str, Any]) -> None:
    for name in ("es-init", "es01", "kibana"):
        assert services[name]["image"].endswith(":${STACK_VERSION}"), name


# --- services, health, order ------------------------------------------------------------------------
#: Services whose command ends (the rest runs until stopped).
ONE_SHOT = {"es-init", "setup", "kibana-setup"}


def test_the_services(services: dict[str, Any]) -> None:
    assert set(services) == {"es-init", "es01", "kibana", "redis", "setup", "kibana-setup", "worker"}
    assert services["setup"]["command"] == ["setup", "--no-kibana"]
    assert services["kibana-setup"]["command"] == ["setup", "--kibana-only"]
    assert services["worker"]["command"] == ["run"]
    for name in ("setup", "kibana-setup", "worker"):
        assert services[name]["build"]["context"] == "."


@pytest.mark.parametrize("name", ["es01", "kibana", "redis", "worker"])
def test_health_checks(services: dict[str, Any], name: str) -> None:
    hc = services[name]["healthcheck"]
    assert hc["test"][0] in ("CMD", "CMD-SHELL") and len(hc["test"]) >= 2
    assert int(hc["retries"]) >= 3


def test_depends_on_conditions_hold(services: dict[str, Any]) -> None:
    one_shot = {n for n, s in services.items() if s.get("restart", "no") in ("no", "on-failure")}
    assert one_shot == ONE_SHOT
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} -> {dep}"
            cond = spec["condition"]
            if cond == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy, it has no healthcheck"
            if cond == "service_completed_successfully":
                assert dep in one_shot, f"{name} waits for {dep} to finish, but {dep} runs until stopped"


def test_start_order(services: dict[str, Any]) -> None:
    def cond(svc: str, dep: str) -> str | None:
        return services[svc].get("depends_on", {}).get(dep, {}).get("condition")

    assert cond("es01", "es-init") == "service_completed_successfully"
    assert cond("setup", "es01") == "service_healthy"
    assert cond("kibana", "es01") == "service_healthy"
    assert cond("kibana", "setup") == "service_completed_successfully"  # kibana_system's password
    assert cond("kibana-setup", "kibana") == "service_started"
    assert cond("worker", "redis") == "service_healthy"
    assert cond("worker", "es01") == "service_healthy"
    assert cond("worker", "setup") == "service_completed_successfully"
    # no cycles: a topological order exists
    pending = {n: set(s.get("depends_on", {})) for n, s in services.items()}
    while pending:
        ready = [n for n, d in pending.items() if not d & set(pending)]
        assert ready, f"dependency cycle among {sorted(pending)}"
        for n in ready:
            del pending[n]


def test_worker_scales(services: dict[str, Any]) -> None:
    worker = services["worker"]
    for key in ("container_name", "ports", "hostname"):
        assert key not in worker, f"worker has {key}: `--scale worker=N` would clash"


def test_security_and_persistence(compose: dict[str, Any], services: dict[str, Any]) -> None:
    es = service_env(services["es01"])
    assert es["xpack.security.enabled"] == "true"
    assert es["xpack.security.http.ssl.enabled"] == "true"
    assert es["ELASTIC_PASSWORD"] == "${ELASTIC_PASSWORD}"
    kb = service_env(services["kibana"])
    assert kb["ELASTICSEARCH_USERNAME"] == "kibana_system"
    assert kb["ELASTICSEARCH_HOSTS"].startswith("https://")
    setup = service_env(services["setup"])
    assert setup["AUDIT_INGEST_SETUP__KIBANA_SYSTEM_PASSWORD"] == "${KIBANA_PASSWORD}"
    assert setup["AUDIT_INGEST_SETUP__WRITER_PASSWORD"] == "${AUDIT_INGEST_ES_PASSWORD}"
    redis = services["redis"]
    script = "\n".join(redis["command"])
    assert "requirepass" in script and "--appendonly yes" in script
    assert '--appendfsync "$$REDIS_APPENDFSYNC"' in script  # .env decides, validated first
    assert service_env(redis)["REDIS_APPENDFSYNC"] == "${REDIS_APPENDFSYNC:-always}"
    assert service_env(services["es-init"])["REDIS_APPENDFSYNC"] == "${REDIS_APPENDFSYNC:-always}"
    assert "redisdata:/data" in redis["volumes"]
    assert any(p.endswith(":6379") for p in redis["ports"]), "Filebeat on the servers must reach Redis"
    for vol in ("certs", "esdata01", "kibanadata", "redisdata"):
        assert vol in compose["volumes"]


def test_app_settings_are_audit_ingest_env_vars(services: dict[str, Any]) -> None:
    worker = service_env(services["worker"])
    setup = service_env(services["setup"])
    kibana_setup = service_env(services["kibana-setup"])
    for env in (worker, setup, kibana_setup):
        for key, value in env.items():
            assert key.startswith("AUDIT_INGEST_") and "__" in key, key
            if value.startswith("["):
                assert isinstance(json.loads(value), list), key
    assert worker["AUDIT_INGEST_REDIS__URL"] == "redis://redis:6379/1"  # the password never goes into a URL
    assert worker["AUDIT_INGEST_REDIS__PASSWORD"] == "${REDIS_PASSWORD}"
    assert json.loads(worker["AUDIT_INGEST_ELASTICSEARCH__HOSTS"]) == ["https://es01:9200"]
    assert worker["AUDIT_INGEST_ELASTICSEARCH__USERNAME"] == "audit_ingest"  # least privilege
    assert setup["AUDIT_INGEST_ELASTICSEARCH__USERNAME"] == "elastic"
    assert "AUDIT_INGEST_KIBANA__URL" not in setup and kibana_setup["AUDIT_INGEST_KIBANA__URL"] == "http://kibana:5601"
    assert "AUDIT_INGEST_GEOIP__CITY_DATABASE" in worker and "AUDIT_INGEST_KEYS__AUTHORIZED_KEYS" in worker
    mounts = services["worker"]["volumes"]
    assert "${GEOIP_DIR}:/usr/share/GeoIP:ro" in mounts and "certs:/certs:ro" in mounts


def _setting_exists(annotation: Any, parts: list[str]) -> bool:
    """Does the path ``parts`` (``outputs``, ``slack``, ``url``) name a setting under ``annotation``?
    Models by field, dicts by any key, unions if any member has it."""
    if not parts:
        return True
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_setting_exists(member, parts) for member in typing.get_args(annotation))
    if origin is dict:
        return _setting_exists(typing.get_args(annotation)[1], parts[1:])
    fields = getattr(annotation, "model_fields", None)
    if not fields or parts[0] not in fields:
        return False
    return _setting_exists(fields[parts[0]].annotation, parts[1:])


def test_env_names_match_the_settings_model(services: dict[str, Any]) -> None:
    """Every AUDIT_INGEST_* variable compose sets is a setting (redis.password: handled by Settings)."""
    from ingest.settings import Settings

    sections = Settings.model_fields
    wrong = []
    for svc in ("worker", "setup", "kibana-setup"):
        for key in service_env(services[svc]):
            section, _, field = key.removeprefix("AUDIT_INGEST_").lower().partition("__")
            if (section, field) == ("redis", "password"):
                continue
            if section not in sections or not _setting_exists(sections[section].annotation, field.split("__")):
                wrong.append(key)
    assert not wrong, f"no such setting: {wrong}"


# --- Dockerfile -------------------------------------------------------------------------------------
def test_dockerfile_essentials() -> None:
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
    images = [args.get(f.strip("${}"), f) for f in froms]
    assert images and all(i.startswith("python:3.11-slim") for i in images), images
    assert "pip install --no-deps ." in text
    assert re.search(r"^USER\s+(?!root|0\b)\S+", text, re.M), "runs as root"
    assert "AUDIT_INGEST_PATTERNS_DIR=/app/patterns" in text
    assert re.search(r"^COPY .*patterns /app/patterns", text, re.M)
    assert re.search(r'^ENTRYPOINT \["audit-ingest"\]', text, re.M)
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env"} <= set(ignore)


def test_dockerfile_installs_dependencies_before_copying_the_code() -> None:
    """Docker caches a layer until a file it copies changes: the dependency layer must not see the code."""
    build = DOCKERFILE.read_text().replace("\\\n", " ").split("\nFROM ")[1]  # instructions, continuations joined
    steps = [line for line in build.splitlines() if re.match(r"^(COPY|RUN)\b", line)]
    first_code = next(i for i, line in enumerate(steps) if re.match(r"^COPY .*\bingest\b", line))
    deps = next(i for i, line in enumerate(steps) if "pip install -r /tmp/requirements.txt" in line)
    assert deps < first_code, steps
    assert all(line == "COPY pyproject.toml ./" for line in steps[:deps] if line.startswith("COPY")), steps
    assert any("pip install --no-deps ." in line for line in steps[first_code:])


# --- Filebeat ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def filebeat() -> dict[str, Any]:
    return yaml.safe_load(FILEBEAT.read_text())


def _example_path(glob: str) -> str:
    return glob.replace("*", "x")


def test_filebeat_inputs_cover_every_kind(filebeat: dict[str, Any]) -> None:
    kinds: dict[str, list[str]] = {}
    ids = set()
    for inp in filebeat["filebeat.inputs"]:
        assert inp["type"] == "filestream"
        assert inp["id"] not in ids, f"duplicate filestream id {inp['id']}"
        ids.add(inp["id"])
        kind = inp["fields"]["log_type"]
        assert kind in KINDS, kind
        assert inp.get("fields_under_root", False) is False, "the worker reads fields.log_type"
        kinds.setdefault(kind, []).extend(inp["paths"])
    (auditd,) = [m for m in filebeat["filebeat.modules"] if m["module"] == "auditd"]
    assert auditd["log"]["enabled"] is True
    assert auditd["log"]["input"]["fields"]["log_type"] == "auditd"
    kinds.setdefault("auditd", []).extend(auditd["log"]["var.paths"])
    assert set(kinds) == set(KINDS)
    for inp in filebeat["filebeat.inputs"]:  # sites coming from `type: log` inputs keep their offsets
        assert inp.get("take_over") is True, f"{inp['id']}: without take_over every file is read again"
    for path in ("/var/log/auth.log", "/var/log/secure"):
        assert path in kinds["auth"]
    assert "/var/log/commands.log" in kinds["commands"]
    assert {"/var/log/openvpn.log", "/var/log/openvpn/*.log"} <= set(kinds["openvpn"])
    assert "/var/lib/teleport/log/*.log" in kinds["teleport"]
    assert all(Path(p).name.startswith("shell_") for p in kinds["shell"])
    # the worker's default path routes agree, so routing would work even without fields.log_type
    for kind, paths in kinds.items():
        for glob in paths:
            path = _example_path(glob)
            routed = next((k for g, k in DEFAULT_PATH_ROUTES if fnmatch.fnmatch(path, g)), None)
            assert routed == kind, f"{path}: worker routes it to {routed}, Filebeat labels it {kind}"


def test_filebeat_output_is_the_redis_list(filebeat: dict[str, Any]) -> None:
    outputs = [k for k in filebeat if k.startswith("output.")]
    assert outputs == ["output.redis"], "Filebeat allows exactly one output"
    out = filebeat["output.redis"]
    assert out["key"] == "filebeat" and out["db"] == 1
    assert out.get("datatype", "list") == "list"
    assert out["password"], "Redis requires a password"
    assert "codec" not in out, "the worker decodes Filebeat's default JSON"


# --- bash, rsyslog, logrotate -----------------------------------------------------------------------
def test_bash_snippet_is_the_corrected_one() -> None:
    text = BASH_SNIPPET.read_text()
    code = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert code == [PROMPT_COMMAND]
    assert "PROMPTCOMMAND" not in code[0] and "RETRNVAL" not in code[0]
    rsyslog = (ROOT / "deploy" / "rsyslog" / "30-commands.conf").read_text()
    assert re.search(r"^local6\.\*\s+/var/log/commands\.log$", rsyslog, re.M)
    assert "/var/log/commands.log" in (ROOT / "deploy" / "logrotate" / "commands").read_text()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_bash_snippet_produces_the_commands_line(tmp_path: Path) -> None:
    """Run the snippet in an interactive bash with `logger` stubbed to print what rsyslog would write."""
    stub = tmp_path / "stub.sh"
    stub.write_text(
        # rsyslog's traditional file format: "MMM dd HH:MM:SS host tag: message"; logger's tag is the user
        'logger() { shift 2; printf "May 17 15:26:30 a3 %s: %s\\n" "$(whoami)" "$1" >> "$LOG"; }\n'
        + BASH_SNIPPET.read_text()
    )
    log = tmp_path / "commands.log"
    script = f"source {stub}\ntrue && echo hi >/dev/null\nfalse\n"
    subprocess.run(
        ["bash", "--norc", "--noprofile", "-i"], input=script, text=True, capture_output=True, timeout=30,
        env={"LOG": str(log), "HISTFILE": "/dev/null", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    lines = log.read_text().splitlines()
    user = subprocess.run(["whoami"], capture_output=True, text=True).stdout.strip()
    line = re.compile(rf"^May 17 15:26:30 a3 {re.escape(user)}: {re.escape(user)} \[(\d+)\]: (.*) \[(\d+)\]$")
    parsed = [m.groups() for m in map(line.match, lines) if m]
    assert len(parsed) == len(lines) and lines, lines
    assert ("true && echo hi >/dev/null", "0") in [(c, rc) for _, c, rc in parsed]
    assert ("false", "1") in [(c, rc) for _, c, rc in parsed]
    assert len({pid for pid, _, _ in parsed}) == 1  # the shell's PID, the same for the session
