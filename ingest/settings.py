"""All configuration, validated at start: environment variables, a TOML file, defaults.

Each component owns its config model (next to its code, Vector-style); this module composes them.
Precedence: explicit values (command-line flags) > environment (``AUDIT_INGEST_<SECTION>__<KEY>``,
e.g. ``AUDIT_INGEST_REDIS__URL``) > the ``--config`` TOML file > defaults. Unknown keys are
errors that name the key and the file.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
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
from ingest.sinks.elasticsearch import ElasticsearchConfig
from ingest.sources.redis_list import RedisSourceConfig
from ingest.timestamps import zone
from ingest.worker import WorkerConfig

ENV_PREFIX = "AUDIT_INGEST_"


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

    prefix: str = Field("audit-", description="Daily indices are <prefix>YYYY.MM.DD (UTC date of @timestamp).")
    retention_days: int | None = Field(None, gt=0, description="If set, `setup` installs an ILM policy "
                                                               "deleting indices this many days old.")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if prefix != prefix.lower() or any(c in prefix for c in '\\/*?"<>| ,#:') or prefix[:1] in ("_", "-", "+"):
            raise ValueError(f"{prefix!r} cannot start an index name (lowercase, no \\/*?\"<>| ,#:, "
                             "not starting with _ - +)")
        return prefix


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
    objects_dir: Path | None = Field(None, description="Folder of *.ndjson saved objects "
                                                      "(default: the repository's or installed kibana/).")
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


def load_settings(config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build and validate the settings; a problem raises :class:`ConfigError` naming key and file."""
    global _CONFIG_FILE
    if config_file is not None and not Path(config_file).is_file():
        raise ConfigError("config file not found", path=str(config_file))
    _CONFIG_FILE = Path(config_file) if config_file is not None else None
    try:
        try:
            return Settings(**(overrides or {}))
        except ValidationError as e:
            err = e.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
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
