"""The Elasticsearch users of the docker-compose stack: kibana_system's password, the worker's writer.

Bodies go through the official client as JSON, so any password (``@:/%"'\\`` included) arrives as
it was set; nothing here is pasted into a URL or a shell line.
"""

from __future__ import annotations

import logging
from typing import Any

from ingest.setup.config import SetupConfig

log = logging.getLogger(__name__)

#: What the worker needs on its indices: create documents (never overwrite or delete: the sink uses
#: ``create``), auto-create the daily index from the template, and read index metadata.
WRITER_INDEX_PRIVILEGES = ("create_doc", "create_index", "auto_configure", "view_index_metadata")
#: ... and on the session indices only, overwrite: a session first indexed as ``timeout`` is
#: corrected in place by its real logout (``index`` with an external version, ingest.sessions.doc)
WRITER_OVERWRITE_PRIVILEGES = ("index",)
#: Cluster privilege: health and the index template check at start (GET _index_template needs monitor).
WRITER_CLUSTER_PRIVILEGES = ("monitor",)


def index_patterns(prefix: str, alert_prefix: str) -> list[str]:
    """The index patterns the worker writes to: events, and alerts unless the events pattern has them."""
    patterns = [f"{prefix}*"]
    if not alert_prefix.startswith(prefix):
        patterns.append(f"{alert_prefix}*")
    return patterns


def writer_role(patterns: list[str], overwrite: list[str] | None = None) -> dict[str, Any]:
    """The body of ``PUT _security/role/<writer_role>`` (``overwrite``: the session index patterns)."""
    indices = [{"names": list(patterns), "privileges": list(WRITER_INDEX_PRIVILEGES)}]
    if overwrite:
        indices.append({"names": list(overwrite), "privileges": list(WRITER_OVERWRITE_PRIVILEGES)})
    return {"cluster": list(WRITER_CLUSTER_PRIVILEGES), "indices": indices}


def install_security(client: Any, cfg: SetupConfig, patterns: list[str], overwrite: list[str] | None = None
                     ) -> list[str]:
    """Set what ``cfg`` asks for (each step only if its password is set); returns what was done."""
    done = []
    if cfg.kibana_system_password is not None:
        client.security.change_password(username="kibana_system",
                                        password=cfg.kibana_system_password.get_secret_value())
        done.append("kibana_system password")
    if cfg.writer_password is not None:
        role = writer_role(patterns, overwrite)
        client.security.put_role(name=cfg.writer_role, cluster=role["cluster"], indices=role["indices"])
        client.security.put_user(username=cfg.writer_username, password=cfg.writer_password.get_secret_value(),
                                 roles=[cfg.writer_role], full_name="audit-ingest worker")
        done.append(f"role {cfg.writer_role} on {', '.join(patterns)} and user {cfg.writer_username}")
    for step in done:
        log.info("Elasticsearch security: %s set", step)
    return done
