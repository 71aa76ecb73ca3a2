"""The worker process's settings (``[worker]``, environment prefix ``AUDIT_INGEST_WORKER__``):
kept apart from the loop so that settings and the supervisor can read them without the worker."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from ingest.sources.redis_list import default_worker_id


class WorkerConfig(BaseModel):
    """The worker process."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, description="Worker id, unique among the workers on one list "
                                             "(default <hostname>:<pid>).")
    shutdown_timeout: timedelta = Field(timedelta(seconds=8),
                                        description="On SIGTERM, how long the current batch may take to finish "
                                                    "before it is given back to Redis; keep it below the "
                                                    "orchestrator's grace period (docker stop: 10 s).")
    log_interval: timedelta = Field(timedelta(seconds=10),
                                    description="At most one 'indexed N events' info line per interval.")
    backoff_initial: timedelta = Field(timedelta(milliseconds=100),
                                       description="First wait before retrying Redis.")
    backoff_max: timedelta = Field(timedelta(seconds=10), description="Longest wait between Redis retries.")
    overlap: bool = Field(True, description="Index a batch (sender thread) while the next one is taken and "
                                            "processed: a second processing list, <worker-id>#2, holds it. "
                                            "At most two batches are held; the second only while "
                                            "Elasticsearch answers without failures.")
    derived_lease: timedelta = Field(timedelta(seconds=60),
                                     description="A session document or alert made by a batch that was not "
                                                 "acknowledged (worker killed, batch given back) is carried by the "
                                                 "next batch of any worker once this long has passed "
                                                 "(ingest.pending).")

    processes: int | None = Field(None, ge=1, description="Worker processes `run` starts (its own worker id "
                                                          "each, <id>-<k>, restarted if one dies; metrics of all "
                                                          "on one port); default: the number of CPUs; 1: one "
                                                          "process, no supervisor (ingest/supervisor.py).")

    def worker_id(self) -> str:
        return self.id or default_worker_id()
