"""A batch that makes the pipeline or the sink raise (a bug, not a fault of Redis or
Elasticsearch) is split in halves until the events or documents that raise are isolated: those
are dead-lettered, the rest of the batch goes on. One error line per batch that raised."""

from __future__ import annotations

import logging
from typing import Any

from ingest.errors import SinkUnavailable, SourceUnavailable
from ingest.metrics import Metrics
from ingest.model import BatchResult, DeadLetter, IndexAction, Rejected
from ingest.route import quote

log = logging.getLogger("ingest.worker")


def process_isolating(pipeline: Any, raws: list[bytes], metrics: Metrics, depth: int = 0) -> BatchResult:
    """``pipeline.process(raws)``; if it raises, the halves, down to the single events that raise
    (dead-lettered, stage ``parse``). SourceUnavailable (Redis down in a store) propagates: the
    batch is retried later, it is not the events' fault."""
    try:
        return pipeline.process(raws)  # type: ignore[no-any-return]
    except SourceUnavailable:
        raise
    except Exception as e:
        if depth == 0:
            metrics.pipeline_errors.inc()
            log.error("pipeline raised on a batch of %d (%s: %s); splitting it to isolate the event",
                      len(raws), type(e).__name__, quote(str(e)), exc_info=log.isEnabledFor(logging.DEBUG))
        if len(raws) == 1:
            return BatchResult(dead=[DeadLetter(raws[0], "parse", "pipeline_error",
                                                f"pipeline raised {type(e).__name__}: {quote(str(e))}")])
    mid = len(raws) // 2
    left = process_isolating(pipeline, raws[:mid], metrics, depth + 1)
    right = process_isolating(pipeline, raws[mid:], metrics, depth + 1)
    return BatchResult(actions=left.actions + right.actions, dead=left.dead + right.dead)


def write_isolating(sink: Any, actions: list[IndexAction], depth: int = 0) -> list[Rejected]:
    """``sink.write_batch(actions)``; an unexpected exception halves the actions until the failing
    ones are isolated and rejected (``sink_error``). SinkUnavailable propagates."""
    if not actions:
        return []
    try:
        return list(sink.write_batch(actions))
    except SinkUnavailable:
        raise
    except Exception as e:
        if depth == 0:
            log.error("sink raised on a batch of %d (%s: %s); splitting it to isolate the document",
                      len(actions), type(e).__name__, quote(str(e)), exc_info=log.isEnabledFor(logging.DEBUG))
        if len(actions) == 1:
            return [Rejected(actions[0], 0, "sink_error", f"sink raised {type(e).__name__}: {quote(str(e))}")]
    mid = len(actions) // 2
    return write_isolating(sink, actions[:mid], depth + 1) + write_isolating(sink, actions[mid:], depth + 1)
