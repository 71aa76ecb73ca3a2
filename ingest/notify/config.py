"""Configuration of notifications (``notify:`` in the config file, ``AUDIT_INGEST_NOTIFY__*``).

Outputs are named: ``[notify.outputs.<name>]`` in TOML, ``AUDIT_INGEST_NOTIFY__OUTPUTS__<NAME>__<KEY>``
in the environment (so the secret of an output defined in the file can come from the environment).
An output named ``webhook``, ``slack`` or ``email`` may leave out ``type``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import NoDecode

TYPES = ("webhook", "slack", "email")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def _list_of_strings(value: Any) -> Any:
    """A list from TOML, or from the environment as JSON (``'["a","b"]'``) or comma-separated text
    (``NoDecode``: the environment's text reaches this validator as it is)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return orjson.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class OutputBase(BaseModel):
    """What every output has: which alerts it takes, how many messages a minute, how long a send may take."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Send to this output (false: keep it configured, send nothing).")
    rules: Annotated[list[str] | None, NoDecode] = Field(None, description="rule.name values this output takes (unset or empty: all "
                                                      "rules); from the environment as JSON or a,b,c.")
    min_severity: int = Field(0, ge=0, le=100, description="Only alerts whose event.severity is at least this "
                                                            "(rules: unmapped_key 47, new_country 47, "
                                                            "brute_force 73, outside_allowed_networks 73).")
    rate_limit: NonNegativeInt = Field(20, description="At most this many messages a minute; the alerts over it are "
                                                       "held and sent as one summary message the next minute "
                                                       "(0: no limit).")
    timeout: timedelta = Field(timedelta(seconds=10), description="Time allowed to connect and for each answer.")
    ca_certs: Path | None = Field(None, description="PEM file of the CA of the receiver's TLS certificate "
                                                    "(default: the system's CAs).")
    verify_certs: bool = Field(True, description="Verify the receiver's TLS certificate.")

    @field_validator("rules", mode="before")
    @classmethod
    def _rules(cls, value: Any) -> Any:
        return _list_of_strings(value)

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration")
        return value

    def takes(self, rule: object, severity: object) -> bool:
        """Does an alert of ``rule`` with ``severity`` go to this output?"""
        if not self.enabled:
            return False
        if self.rules and rule not in self.rules:
            return False
        if self.min_severity:
            return isinstance(severity, int | float) and not isinstance(severity, bool) and severity >= self.min_severity
        return True

    def target(self) -> str:
        """Where it sends, for logs: never a secret."""
        raise NotImplementedError


def _http_url(value: SecretStr) -> SecretStr:
    parts = urlsplit(value.get_secret_value())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return value


def _masked(url: SecretStr) -> str:
    """``scheme://host[:port]/…``: the path and query of a webhook URL often are its secret."""
    parts = urlsplit(url.get_secret_value())
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}/…"


class WebhookOutput(OutputBase):
    """POST of each alert document as JSON."""

    type: Literal["webhook"] = "webhook"
    url: SecretStr = Field(description="http:// or https:// URL the alert is POSTed to; only scheme and host are "
                                       "ever logged.")
    headers: dict[str, SecretStr] = Field(default_factory=dict,
                                          description="Extra request headers, e.g. Authorization = \"Bearer …\" "
                                                      "(values never logged).")

    _url = field_validator("url")(_http_url)

    def target(self) -> str:
        return _masked(self.url)


class SlackOutput(OutputBase):
    """A Slack (or Slack-compatible: Mattermost, Rocket.Chat) incoming-webhook message."""

    type: Literal["slack"] = "slack"
    url: SecretStr = Field(description="The incoming-webhook URL (https://hooks.slack.com/services/…): it is the "
                                       "secret; only scheme and host are ever logged.")

    _url = field_validator("url")(_http_url)

    def target(self) -> str:
        return _masked(self.url)


class EmailOutput(OutputBase):
    """A plain-text e-mail over SMTP."""

    type: Literal["email"] = "email"
    host: str = Field(min_length=1, description="SMTP server.")
    port: int | None = Field(None, ge=1, le=65535, description="Default: 587 for starttls, 465 for tls, 25 for none.")
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls (upgrade a plain connection, port 587), tls (TLS from the first byte, "
                                "port 465) or none (a local relay only: no password is sent without TLS).")
    username: str | None = Field(None, description="SMTP AUTH user (with password).")
    password: SecretStr | None = Field(None, description="SMTP AUTH password; never logged.")
    from_address: str = Field(min_length=3, description="From: address.")
    to: Annotated[list[str], NoDecode] = Field(min_length=1, description="Recipients; from the environment as JSON or a,b,c.")
    subject_prefix: str = Field("[audit]", description="Start of every subject line.")

    @field_validator("to", mode="before")
    @classmethod
    def _to(cls, value: Any) -> Any:
        return _list_of_strings(value)

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if "@" not in address or any(c in address for c in "\r\n,; "):
                raise ValueError(f"not one e-mail address: {address!r}")
        return value

    @model_validator(mode="after")
    def _auth(self) -> EmailOutput:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.password is not None and self.security == "none":
            raise ValueError("a password is never sent without TLS: set security to starttls or tls")
        return self

    def smtp_port(self) -> int:
        return self.port or {"starttls": 587, "tls": 465, "none": 25}[self.security]

    def target(self) -> str:
        return f"smtp://{self.host}:{self.smtp_port()} ({self.security})"


Output = Annotated[WebhookOutput | SlackOutput | EmailOutput, Field(discriminator="type")]


class NotifyConfig(BaseModel):
    """Alerts that reach a person: zero or more outputs and the queue that feeds them."""

    model_config = ConfigDict(extra="forbid")

    outputs: dict[str, Output] = Field(default_factory=dict,
                                       description="Named outputs (lowercase letters, digits, - and _).")
    kibana_url: str | None = Field(None, description="Kibana address people open, for the link in each message "
                                                     "(default: kibana.url).")
    key_prefix: str = Field("audit-ingest:notify:", min_length=1, description="Prefix of the Redis keys of the "
                                                                              "notification queue.")
    lease: timedelta = Field(timedelta(seconds=60),
                             description="A claimed notification not marked sent within this is sent again "
                                         "(the sender died mid-send): at most one duplicate, never none. "
                                         "Longer than twice every output's timeout.")
    max_attempts: PositiveInt = Field(15, description="Tries of one message before it goes to the dead-letter list "
                                                      "with the reason (a permanent refusal such as 4xx or SMTP "
                                                      "5xx goes there at once).")
    backoff_initial: timedelta = Field(timedelta(seconds=5), description="Wait after the first failed try; doubles.")
    backoff_max: timedelta = Field(timedelta(minutes=15), description="Longest wait between two tries.")
    poll_interval: timedelta = Field(timedelta(seconds=1), description="How often an idle sender looks for work.")
    rate_window: timedelta = Field(timedelta(minutes=1), description="The period each output's rate_limit counts "
                                                                    "messages in (aligned on Redis's clock).")
    dedup_ttl: timedelta = Field(timedelta(days=7), description="How long an alert id is remembered as queued, so "
                                                                "the same alert raised again (redelivery, another "
                                                                "worker) sends no second message.")
    max_queued: PositiveInt = Field(10_000, description="Most messages waiting per output (queued, retrying or held "
                                                        "for a summary); past it an alert goes to the dead-letter "
                                                        "list instead (code notify_queue_full).")

    @model_validator(mode="before")
    @classmethod
    def _types_from_names(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("outputs"), dict):
            outputs = {}
            for name, output in value["outputs"].items():
                if isinstance(output, dict) and "type" not in output and str(name).lower() in TYPES:
                    output = {**output, "type": str(name).lower()}
                outputs[name] = output
            value = {**value, "outputs": outputs}
        return value

    @field_validator("outputs")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not NAME.match(name):
                raise ValueError(f"output name {name!r}: lowercase letters, digits, - and _ only")
        return value

    @field_validator("kibana_url")
    @classmethod
    def _kibana(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _lease(self) -> NotifyConfig:
        for name, output in self.outputs.items():
            if self.lease < 2 * output.timeout:
                raise ValueError(f"lease ({self.lease.total_seconds():g} s) must be at least twice the timeout of "
                                 f"output {name} ({output.timeout.total_seconds():g} s): a send still running "
                                 "when its lease ends is sent again")
        if self.rate_window < timedelta(milliseconds=100):
            raise ValueError("rate_window must be at least 0.1 s")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must not be shorter than backoff_initial")
        return self

    def active(self) -> dict[str, WebhookOutput | SlackOutput | EmailOutput]:
        """The enabled outputs."""
        return {name: o for name, o in self.outputs.items() if o.enabled}
