"""What ``audit-ingest setup`` does, in order.

Elasticsearch (:func:`setup_elasticsearch`): wait until the cluster answers, set the users the
stack needs (:mod:`ingest.setup.security`), install the retention policy and the index template,
then give the indices that already exist the same replica count and retention policy (the
template only reaches indices created after it). Every call is idempotent, so ``setup`` runs
again on every ``docker compose up``.

Kibana (:func:`setup_kibana`): import the generated saved objects (and the user's own from
``kibana.objects_dir``) once Kibana answers. On the compose stack it is a service of its own that
retries, so a Kibana that is down or will not start never holds back ingestion.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ingest.errors import IngestError
from ingest.sessions.doc import index_prefix as session_index_prefix
from ingest.setup.kibana import ImportResult, import_saved_objects, ndjson_files
from ingest.setup.kibana_objects import build_saved_objects
from ingest.setup.security import index_patterns, install_security
from ingest.setup.template import SetupBodies, build_setup, install

log = logging.getLogger(__name__)


def wait_for_cluster(client: Any, timeout: float, *, sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.monotonic) -> None:
    """Return once the cluster health is yellow or green; IngestError after ``timeout`` seconds.

    A refused login (401/403) fails at once: waiting would not fix a wrong password.
    """
    deadline = clock() + timeout
    delay = 1.0
    while True:
        try:
            health = client.options(ignore_status=408).cluster.health(wait_for_status="yellow", timeout="5s")
            if not health.get("timed_out") and health.get("status") in ("yellow", "green"):
                return
            reason = f"cluster health {health.get('status')}"
        except Exception as e:  # connection refused while it starts, 503...
            status = getattr(e, "status_code", None) or getattr(getattr(e, "meta", None), "status", None)
            if status in (401, 403):
                raise IngestError(f"Elasticsearch refused the setup user ({status}): check "
                                  "elasticsearch.username/password") from e
            reason = f"{type(e).__name__}: {str(e)[:120]}"
        if clock() + delay > deadline:
            raise IngestError(f"Elasticsearch is not ready after {timeout:.0f}s ({reason})")
        log.info("waiting for Elasticsearch (%s)", reason)
        sleep(delay)
        delay = min(delay * 2, 10.0)


def existing_index_settings(replicas: int | None, policy: str | None) -> dict[str, Any]:
    """What ``setup`` sets on indices that already exist (empty: nothing)."""
    changes: dict[str, Any] = {}
    if replicas is not None:
        changes["index.number_of_replicas"] = replicas
    if policy is not None:
        changes["index.lifecycle.name"] = policy
    return changes


def setup_elasticsearch(client: Any, settings: Any) -> SetupBodies:
    """Users, retention policy, template, existing indices; returns what was installed."""
    wait_for_cluster(client, settings.setup.wait_timeout.total_seconds())
    patterns = index_patterns(settings.index.prefix, settings.detect.index_prefix)
    install_security(client, settings.setup, patterns, [f"{session_index_prefix(settings.index.prefix)}*"])
    bodies = build_setup(settings.index.prefix, settings.index.retention_days, replicas=settings.index.replicas)
    install(client, bodies)
    changes = existing_index_settings(settings.index.replicas, bodies.policy_name)
    if changes:
        client.indices.put_settings(index=",".join(patterns), settings=changes, allow_no_indices=True,
                                    expand_wildcards="open")
        log.info("existing %s indices: %s", ", ".join(patterns), ", ".join(f"{k}={v}" for k, v in changes.items()))
    return bodies


def setup_kibana(settings: Any) -> ImportResult:
    """Import the generated saved objects (plus ``kibana.objects_dir``'s) into ``kibana.url``."""
    k = settings.kibana
    objects = build_saved_objects(settings.index.prefix, settings.detect.index_prefix)
    return import_saved_objects(
        k.url, ndjson_files(k.objects_dir) if k.objects_dir else [], objects=objects, username=k.username,
        password=k.password.get_secret_value() if k.password else None,
        api_key=k.api_key.get_secret_value() if k.api_key else None, space=k.space,
        ca_certs=k.ca_certs, verify=k.verify_certs, ready_timeout=k.ready_timeout.total_seconds())
