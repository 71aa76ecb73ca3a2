"""``parse --jobs N``: decode, route, parse and enrich in N processes; pair and detect here, in order.

Sessions and detections are exact only if every document passes through one session pairer and
one detection stage in input order (a logout must meet its login, a brute-force window counts
failures in order). So the children run :meth:`Pipeline.parse_batch` (stateless between batches:
the caches of timestamps, GeoIP, routes are only caches) on whole batches, and this process runs
:meth:`Pipeline.finish_batch` on their results in the order the batches were read: the same
batches, in the same order, through the same stateful stages as with ``--jobs 1``, hence the same
output bytes (tests/test_parse_jobs.py). At most ``2 x N`` batches are in flight, so a large file
is not read into memory ahead of the output.

What crosses the process boundary is kept small: both stateful stages dismiss a document whose
``event.action`` they never read (:data:`STATEFUL_ACTIONS`) before any other lookup, so a child
sends those documents already encoded (the bytes ``--jobs 1`` would print) and only the others
as objects, which this process pairs and detects on and then encodes. Unpickling a whole
document costs about half of parsing it; this leaves the parent about a fifth of the work.
"""

from __future__ import annotations

import copy
import multiprocessing
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import datetime
from multiprocessing.pool import AsyncResult
from typing import Any

import orjson

from ingest.detect.rules import RULE_ACTIONS
from ingest.model import BatchResult, DeadLetter, IndexAction
from ingest.numbers import dumps_document
from ingest.pipeline import Pipeline
from ingest.sessions.events import SESSION_ACTIONS

#: the event.action values the session pairer or the detection stage read a document for
STATEFUL_ACTIONS = SESSION_ACTIONS | RULE_ACTIONS

#: one document to print: index, id, its encoded JSON (None: encode ``doc``), the document (None
#: when already encoded), its ``type``
Row = tuple[str, str, bytes | None, dict[str, Any] | None, Any]
Parsed = tuple[list[Row], list[DeadLetter]]
_Sent = tuple[list[Row], list[DeadLetter], list[dict[str, Any]], list[str]]

_child: Pipeline | None = None


def rows(result: BatchResult, dead: list[DeadLetter]) -> list[Row]:
    """The documents of a :meth:`Pipeline.process` result as rows, encoded as the sink encodes them
    (numbers that do not fit their fields dropped, ingest.numbers); a document that cannot be
    encoded (1,000-deep fields) is dead-lettered into ``dead``, as the worker does."""
    out: list[Row] = []
    for a in result.actions:
        line = encode(a, dead)
        if line is not None:
            out.append((a.index, a.id, line, a.doc, a.doc.get("type")))
    return out


def encode(action: IndexAction, dead: list[DeadLetter]) -> bytes | None:
    try:
        return dumps_document(action.doc)
    except (orjson.JSONEncodeError, TypeError) as e:
        dead.append(DeadLetter(action.raw or b"", "index", "serialization_error",
                               f"document cannot be encoded as JSON: {e}"))
        return None


def stateful(doc: dict[str, Any]) -> bool:
    event = doc.get("event")
    return type(event) is dict and event.get("action") in STATEFUL_ACTIONS


def _init(settings: Any, read_at: datetime | None, inherited: Pipeline | None) -> None:
    """In a child: the stateless stages only (no session pairer, no detection stage); with fork,
    those of the parent's pipeline (no second start-up: patterns compiled, databases open)."""
    global _child
    from ingest.runtime import tune_gc

    if inherited is not None:
        pipeline = copy.copy(inherited)
    else:
        clock = (lambda: read_at) if read_at is not None else None
        pipeline = Pipeline.from_settings(settings, clock=clock)
    pipeline.pairer = None
    pipeline.post = []
    _child = pipeline
    tune_gc()


def _parse(raws: list[bytes]) -> _Sent:
    assert _child is not None
    result, _, _ = _child.parse_batch(raws)
    out: list[Row] = []
    docs: list[dict[str, Any]] = []
    ids: list[str] = []
    for a in result.actions:
        doc = a.doc
        if stateful(doc):
            out.append((a.index, a.id, None, doc, doc.get("type")))
            docs.append(doc)
            ids.append(a.id)
        else:
            line = encode(a, result.dead)
            if line is not None:
                out.append((a.index, a.id, line, None, doc.get("type")))
    return out, result.dead, docs, ids


def _finish(pipeline: Pipeline, sent: _Sent) -> Parsed:
    out, dead, docs, ids = sent
    made = pipeline.finish_batch(BatchResult(), docs, ids)  # the sessions and alerts of the batch
    return out + rows(made, dead), dead


def _context() -> Any:
    """fork where there is one (children start at once), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods and sys.platform == "linux" else "spawn")


def process_parallel(pipeline: Pipeline, batches: Iterable[list[bytes]], jobs: int, settings: Any,
                     read_at: datetime | None) -> Iterator[Parsed]:
    """What ``pipeline.process`` makes of each batch, as rows, in order; the parsing in ``jobs`` processes."""
    ctx = _context()
    inherited = pipeline if ctx.get_start_method() == "fork" else None  # with fork, not pickled: copied
    with ctx.Pool(jobs, initializer=_init, initargs=(settings, read_at, inherited)) as pool:
        pending: deque[AsyncResult[_Sent]] = deque()
        for batch in batches:
            pending.append(pool.apply_async(_parse, (batch,)))
            if len(pending) >= 2 * jobs:
                yield _finish(pipeline, pending.popleft().get())
        while pending:
            yield _finish(pipeline, pending.popleft().get())
