"""Settings of ``audit-ingest setup`` beyond the template: the Elasticsearch users a stack needs.

On the docker-compose stack ``setup`` (as ``elastic``) gives Elasticsearch's built-in
``kibana_system`` user the password Kibana logs in with, and creates the least-privilege role and
user the worker writes with. Each step runs only when its password is set, so a site with its own
cluster and its own users leaves them unset.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class SetupConfig(BaseModel):
    """Section ``setup``: users and roles ``audit-ingest setup`` creates, and how long it waits."""

    model_config = ConfigDict(extra="forbid")

    writer_username: str = Field("audit_ingest", min_length=1,
                                 description="The user the worker writes with (created or updated when "
                                             "`writer_password` is set).")
    writer_password: SecretStr | None = Field(None, description="If set, setup creates or updates the writer "
                                                                "role and user with this password.")
    writer_role: str = Field("audit_ingest_writer", min_length=1,
                             description="Role of the writer: create documents and indices on <index.prefix>* "
                                         "(alerts included), nothing else.")
    kibana_system_password: SecretStr | None = Field(None, description="If set, setup sets the password of the "
                                                                       "built-in kibana_system user to it.")
    wait_timeout: timedelta = Field(timedelta(minutes=5), description="How long setup waits for Elasticsearch "
                                                                      "to answer (cluster health yellow).")
