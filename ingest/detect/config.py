"""Configuration of the detection rules (``detect:`` in the config file, once wired in)."""

from __future__ import annotations

from datetime import timedelta
from ipaddress import IPv4Network, IPv6Network, ip_network

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, field_validator


class UnmappedKeyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Alert on a successful SSH login with a key whose owner "
                          "is 'SSH Key Not Mapped'.")


class BruteForceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Alert on many authentication failures from one source IP, "
                          "counted across every host.")
    threshold: NonNegativeInt = Field(default=10, description="Alert when MORE than this many failures from one "
                                      "source.ip fall within `window` (event time).")
    window: timedelta = Field(default=timedelta(seconds=60), description="Length of the counting window, on the "
                              "events' @timestamp; also the granularity of alert de-duplication (one alert per "
                              "IP per epoch-aligned window).")

    @field_validator("window")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value < timedelta(milliseconds=1):
            raise ValueError("must be a positive duration (at least 1 ms)")
        return value


class NewCountryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Alert on a successful SSH/VPN login from a country the user "
                          "has not logged in from within `lookback_days`.")
    lookback_days: PositiveInt = Field(default=90, description="How far back (event time) a user's countries are "
                                       "remembered; a user with no login in this period only learns.")



class DetectionConfig(BaseModel):
    """Per-rule switches and thresholds of the detection stage."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Evaluate the detection rules at all (each rule also has "
                                                     "its own switch).")
    unmapped_key: UnmappedKeyConfig = Field(default_factory=UnmappedKeyConfig,
                                            description="Rule unmapped_key.")
    brute_force: BruteForceConfig = Field(default_factory=BruteForceConfig, description="Rule brute_force.")
    new_country: NewCountryConfig = Field(default_factory=NewCountryConfig, description="Rule new_country.")
    allowed_networks: dict[str, list[IPv4Network | IPv6Network]] = Field(
        default_factory=dict,
        description="Rule outside_allowed_networks: host.hostname glob (fnmatch, case-sensitive) -> CIDRs a "
        "successful login on a matching host may come from. A host matched by several globs may be reached "
        "from the union of their CIDRs; a host matched by none is not checked. Empty: rule off.",
    )
    key_prefix: str = Field(default="audit-ingest:detect:", min_length=1,
                            description="Prefix of every Redis key the detection store writes.")
    index_prefix: str = Field(default="audit-alerts-", min_length=1,
                              description="Alerts go to <index_prefix>YYYY.MM.DD (UTC date of the alert's @timestamp). "
                                          "In the settings it defaults to <index.prefix>alerts- and must start with "
                                          "index.prefix (the template, writer role and data views cover that).")

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if isinstance(value, dict):
            return {glob: [ip_network(str(c), strict=False) for c in cidrs] if isinstance(cidrs, list) else cidrs
                    for glob, cidrs in value.items()}
        return value
