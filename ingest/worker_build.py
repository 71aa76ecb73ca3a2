"""Wiring a worker from the composed settings: the Redis client and list source, the dead-letter
store, the metrics server, the Elasticsearch client and sink, the pipeline and the notifications
(what ``audit-ingest run`` starts in each worker process)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ingest.deadletter import DeadLetterStore
from ingest.errors import ConfigError
from ingest.metrics import Metrics
from ingest.sources.redis_list import RedisListSource
from ingest.worker import Worker
from ingest.worker_config import WorkerConfig


def build(settings: Any) -> tuple[Worker, Callable[[], None]]:
    """A worker from the composed settings (``settings.redis``, ``.deadletter``, ``.worker``,
    ``.metrics``, ``.elasticsearch``, ``.notify``); returns it and a function that closes what it opened."""
    from ingest.metrics import MetricsServer
    from ingest.notify.build import build_notifications
    from ingest.pipeline import Pipeline
    from ingest.sinks.elasticsearch import ElasticsearchSink, build_client

    wcfg: WorkerConfig = settings.worker
    rcfg = settings.redis
    client = rcfg.client()
    worker_id = wcfg.worker_id()
    source = RedisListSource(client, rcfg, worker_id)
    dcfg = settings.deadletter
    deadletters = DeadLetterStore(client, dcfg.key_for(rcfg.key), main_key=rcfg.key, worker=worker_id,
                                  max_length=dcfg.max_length)
    mcfg = settings.metrics
    metrics = Metrics(stale_after=mcfg.stale_after.total_seconds())
    sink_stop = threading.Event()
    es = build_client(settings.elasticsearch, sink=True)
    sink = ElasticsearchSink(es, settings.elasticsearch, stop=sink_stop)
    pipeline = Pipeline.from_settings(settings, client)
    notify = build_notifications(settings, client, metrics.registry, worker_id)
    worker = Worker(source, pipeline, sink, deadletters, metrics, wcfg, sink_stop=sink_stop,
                    notifier=notify.notifier if notify is not None else None)
    server = None
    if mcfg.enabled:
        try:
            server = MetricsServer(metrics, mcfg.bind, mcfg.port).start()
        except OSError as e:
            raise ConfigError(f"cannot listen on {mcfg.bind}:{mcfg.port}: {e}", key="metrics.port") from e
    if notify is not None:
        notify.start()  # the sender threads, beside the worker loop (ingest.notify.sender)

    def close() -> None:
        if notify is not None:
            notify.close()
        if server is not None:
            server.close()
        es.close()
        client.close()

    return worker, close
