"""All configuration, validated at start: environment variables, a TOML file, defaults.

Each component owns its config model (next to its code, Vector-style); this module composes them.
Precedence: explicit values (command-line flags) > environment (``AUDIT_INGEST_<SECTION>__<KEY>``,
e.g. ``AUDIT_INGEST_REDIS__URL``) > the ``--config`` TOML file > defaults. Unknown keys are
errors that name the key and the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ingest.deadletter import DeadLetterConfig
from ingest.detect import DetectionConfig
from ingest.enrich.geoip import GeoIpConfig
from ingest.enrich.keys import KeyOwnerConfig
from ingest.errors import ConfigError
from ingest.metrics import MetricsConfig
from ingest.notify import NotifyConfig
from ingest.route import RoutingConfig
from ingest.sessions import SessionConfig
from ingest.setup.config import SetupConfig
from ingest.sinks.elasticsearch import ElasticsearchConfig
from ingest.sources.redis_list import RedisSourceConfig
from ingest.timestamps import zone
from ingest.worker import WorkerConfig

ENV_PREFIX = "AUDIT_INGEST_"
#: Variables with our prefix that are not settings: the patterns folder (ingest/grok.py), and two
#: names docker-compose.yml reads from .env (the worker image, the writer's password).
NON_SETTING_ENV = frozenset({"AUDIT_INGEST_PATTERNS_DIR", "AUDIT_INGEST_IMAGE", "AUDIT_INGEST_ES_PASSWORD"})


def check_index_prefix(prefix: str) -> str:
    """``prefix`` if an index name may start with it (Elasticsearch's rules), else ValueError."""
    if not prefix or prefix != prefix.lower() or any(c in prefix for c in '\\/*?"<>| ,#:') \
            or prefix[:1] in ("_", "-", "+"):
        raise ValueError(f"{prefix!r} cannot start an index name (lowercase, no \\/*?\"<>| ,#:, "
                         "not starting with _ - +)")
    return prefix


class ParseConfig(BaseModel):
    """How lines become documents."""

    model_config = ConfigDict(extra="forbid")

    patterns_dir: list[Path] | None = Field(
        None, description="Folders with *.grok pattern files and <kind>.rules.toml rule files "
                          "(default: $AUDIT_INGEST_PATTERNS_DIR, the repository's patterns/, the installed copy).")
    timezone: str = Field("UTC", description="Zone of syslog timestamps that carry none (IANA name or +HH:MM).")
    host_timezones: dict[str, str] = Field(default_factory=dict,
                                           description="Per-host zone overriding `timezone`, by host name.")
    future_tolerance: timedelta = Field(timedelta(minutes=15),
                                        description="How far ahead of the read time a classic syslog timestamp "
                                                    "may be (clock skew) before it is taken as last year's.")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone(value)
        return value

    @field_validator("host_timezones")
    @classmethod
    def _zones(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value.values():
            zone(name)
        return value


class IndexConfig(BaseModel):
    """Where documents go."""

    model_config = ConfigDict(extra="forbid")

    prefix: str = Field("audit-", description="Daily indices are <prefix>YYYY.MM.DD (UTC date of @timestamp); "
                                              "alerts go to <prefix>alerts-YYYY.MM.DD.")
    retention_days: int | None = Field(None, gt=0, description="If set, `setup` installs an ILM policy "
                                                               "deleting indices this many days old (existing "
                                                               "indices included).")
    replicas: int | None = Field(None, ge=0, description="index.number_of_replicas of the indices (new ones by "
                                                         "the template, existing ones at `setup`); unset: the "
                                                         "cluster's default (1). A single node holds no "
                                                         "replica: 0 keeps its indices green.")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        return check_index_prefix(prefix)


class KibanaConfig(BaseModel):
    """Where `audit-ingest setup` imports the saved objects of kibana/."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, description="Kibana base URL, e.g. http://localhost:5601; unset: no import.")
    username: str | None = Field(None, description="Basic-auth user (e.g. elastic).")
    password: SecretStr | None = Field(None, description="Basic-auth password.")
    api_key: SecretStr | None = Field(None, description="API key (base64 id:key) instead of a user.")
    ca_certs: Path | None = Field(None, description="CA certificate for an https URL.")
    verify_certs: bool = Field(True, description="Verify Kibana's TLS certificate.")
    space: str | None = Field(None, description="Kibana space to import into (default space if unset).")
    objects_dir: Path | None = Field(None, description="Folder of your own *.ndjson saved objects, imported "
                                                      "with the generated ones (which they may reference).")
    ready_timeout: timedelta = Field(timedelta(minutes=2), description="How long to wait for Kibana to start.")


class Settings(BaseSettings):
    """The whole configuration of `audit-ingest run`, `parse` and `setup`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid",
                                      env_ignore_empty=True,
                                      case_sensitive=False)

    parse: ParseConfig = Field(default_factory=ParseConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    geoip: GeoIpConfig = Field(default_factory=GeoIpConfig)
    keys: KeyOwnerConfig = Field(default_factory=KeyOwnerConfig)
    sessions: SessionConfig = Field(default_factory=SessionConfig)
    detect: DetectionConfig = Field(default_factory=DetectionConfig)
    redis: RedisSourceConfig = Field(default_factory=RedisSourceConfig)
    deadletter: DeadLetterConfig = Field(default_factory=DeadLetterConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    elasticsearch: ElasticsearchConfig = Field(default_factory=ElasticsearchConfig)
    kibana: KibanaConfig = Field(default_factory=KibanaConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    setup: SetupConfig = Field(default_factory=SetupConfig)

    @model_validator(mode="before")
    @classmethod
    def _redis_password(cls, data: Any) -> Any:
        """``redis.password`` goes into ``redis.url`` percent-encoded.

        A password with ``@:/%`` cannot be written into a URL as it is, and docker compose cannot
        encode it: the compose file passes it on its own and this puts it where the client reads it.
        """
        if not isinstance(data, dict) or not isinstance(data.get("redis"), Mapping) or "password" not in data["redis"]:
            return data
        redis = dict(data["redis"])
        password = redis.pop("password")
        if isinstance(password, SecretStr):
            password = password.get_secret_value()
        if password is not None:
            url = str(redis.get("url") or RedisSourceConfig.model_fields["url"].default)
            redis["url"] = url_with_password(url, str(password))
        return {**data, "redis": redis}

    @model_validator(mode="after")
    def _alert_prefix(self) -> Settings:
        """Alerts follow ``index.prefix`` (the template, the writer role and the data views cover them)."""
        detect = self.detect
        if "index_prefix" not in detect.model_fields_set:
            detect.index_prefix = f"{self.index.prefix}alerts-"
            return self
        try:
            check_index_prefix(detect.index_prefix)
        except ValueError as e:
            raise ValueError(f"detect.index_prefix: {e}") from None
        if not detect.index_prefix.startswith(self.index.prefix) or detect.index_prefix == self.index.prefix:
            raise ValueError(f"detect.index_prefix {detect.index_prefix!r} must start with index.prefix "
                             f"{self.index.prefix!r} and be longer (the template, the writer role and the "
                             f"Kibana data views cover <index.prefix>*)")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _CONFIG_FILE is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=_CONFIG_FILE))
        return tuple(sources)


_CONFIG_FILE: Path | None = None


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def url_with_password(url: str, password: str) -> str:
    """``url`` with ``password`` (percent-encoded) in place of any password it had; the user is kept."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = quote(unquote(parts.username), safe="") if parts.username else ""
    return urlunsplit((parts.scheme, f"{user}:{quote(password, safe='')}@{host}", parts.path, parts.query,
                       parts.fragment))


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Refuse ``AUDIT_INGEST_*`` variables that name no settings section.

    pydantic-settings reports an unknown key of a known section (``AUDIT_INGEST_REDIS__URLL``), but
    a variable whose section is misspelled (``AUDIT_INGEST_ELASTICSEARH__HOSTS``) matches no field
    and would be ignored: the setting the user meant silently keeps its default.
    """
    sections = set(Settings.model_fields)
    for name in sorted(os.environ if environ is None else environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in NON_SETTING_ENV:
            continue
        section = upper[len(ENV_PREFIX):].split("__", 1)[0].lower()
        if section not in sections:
            raise ConfigError(f"environment variable {name} names no settings section {section!r} "
                              f"(sections: {', '.join(sorted(sections))}; form {ENV_PREFIX}<SECTION>__<KEY>)",
                              key=name)


def load_settings(config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build and validate the settings; a problem raises :class:`ConfigError` naming key and file."""
    global _CONFIG_FILE
    if config_file is not None and not Path(config_file).is_file():
        raise ConfigError("config file not found", path=str(config_file))
    check_environment()
    _CONFIG_FILE = Path(config_file) if config_file is not None else None
    try:
        try:
            return Settings(**(overrides or {}))
        except ValidationError as e:
            err = e.errors()[0]
            key = ".".join(str(p) for p in err["loc"]) or None
            raise ConfigError(f"invalid setting: {err['msg']}", key=key, path=str(config_file) if config_file else None
                              ) from e
        except ValueError as e:  # TOML syntax errors and the like
            raise ConfigError(f"cannot read configuration: {e}", path=str(config_file) if config_file else None
                              ) from e
    finally:
        _CONFIG_FILE = None


def merge_overrides(*parts: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge override dicts (command-line flags) into one."""
    out: dict[str, Any] = {}
    for part in parts:
        out = _merge(out, part)
    return out
