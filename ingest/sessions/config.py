"""Configuration of session pairing (``sessions:`` in the config file)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator


class SessionConfig(BaseModel):
    """How logins and logouts are paired into ``type: session`` documents.

    Every duration is measured on the pairer's clock (processing time, like Vector's
    ``reduce.expire_after_ms``), not on the events' ``@timestamp``: a backlog replayed after an
    outage does not time out sessions whose logout is still waiting in the queue.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Pair logins with logouts and index session documents.")
    timeout: timedelta = Field(
        default=timedelta(hours=24),
        description="A session still open this long after its login was processed is closed by "
        "expire() with end_reason 'timeout' (no duration: the end was never seen).",
    )
    orphan_logout_ttl: timedelta = Field(
        default=timedelta(hours=1),
        description="How long a logout whose login has not been seen yet (another worker, "
        "reordering) waits for it.",
    )
    tombstone_ttl: timedelta = Field(
        default=timedelta(hours=48),
        description="How long a closed session is remembered, so that redelivered events re-emit "
        "the same document instead of reopening or duplicating it.",
    )
    max_open: PositiveInt = Field(
        default=100_000,
        description="Most open sessions kept; beyond it the oldest logins are dropped (counted as "
        "evicted_open, no document).",
    )
    max_orphans: PositiveInt = Field(
        default=100_000,
        description="Most orphan logouts kept; beyond it the oldest are dropped (counted as evicted_orphans).",
    )
    max_closed: PositiveInt = Field(
        default=100_000,
        description="Most keys with remembered closed sessions (tombstones); beyond it the oldest "
        "are forgotten early (counted as evicted_closed).",
    )
    key_prefix: str = Field(
        default="audit-ingest:sessions:",
        min_length=1,
        description="Prefix of every Redis key the session store writes.",
    )

    @field_validator("timeout", "orphan_logout_ttl", "tombstone_ttl")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration")
        return value
