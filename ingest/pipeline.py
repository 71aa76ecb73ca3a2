"""The worker's processing, minus Redis and Elasticsearch: route -> parse -> enrich -> pair.

``Pipeline.process`` takes one batch of raw Filebeat events and returns the documents to index
(with deterministic ids and daily index names) and the dead letters of what could not be read.
``audit-ingest run`` and ``audit-ingest parse`` both use it, so what ``parse`` prints is what the
worker indexes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ingest.document import add_tag, format_timestamp
from ingest.enrich.base import Enricher
from ingest.model import BatchResult, DeadLetter, IndexAction
from ingest.numbers import OUT_OF_RANGE_TAG
from ingest.parsers import auditd as _auditd  # noqa: F401  (registers the parser)
from ingest.parsers import syslog_rules as _rules  # noqa: F401
from ingest.parsers import teleport as _teleport  # noqa: F401
from ingest.parsers.base import REGISTRY, LineContext, Parser
from ingest.parsers.resources import ParserResources
from ingest.pending import PendingDocs
from ingest.route import Routed, Router, quote
from ingest.sessions import SessionPairer
from ingest.sessions.doc import index_prefix as session_index_prefix
from ingest.sessions.doc import version as session_version
from ingest.sinks.elasticsearch import index_for

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Seconds between two scans for timed-out sessions (each scan is a Redis round trip).
EXPIRE_INTERVAL = 1.0

#: Filebeat's read time (``@timestamp``) is used (year inference, ``event.created``) only between
#: these: an earlier one is a host clock that was never set (1970, Filebeat's zero time
#: 0001-01-01), a later one than a day after the worker's clock is wrong (9999-12-31). Outside, the
#: worker's clock stands in and the document is tagged :data:`READ_TIME_TAG`.
READ_TIME_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
READ_TIME_AHEAD = timedelta(days=1)
READ_TIME_TAG = "_read_time_ignored"


class Pipeline:
    def __init__(self, *, router: Router, parsers: dict[str, Parser], enrichers: list[Enricher],
                 pairer: SessionPairer | None = None, index_prefix: str = "audit-",
                 clock: Clock = lambda: datetime.now(UTC), post: list[Any] | None = None,
                 pending: PendingDocs | None = None) -> None:
        self.router = router
        self.parsers = parsers
        self.enrichers = enrichers
        self.pairer = pairer
        self.index_prefix = index_prefix
        self.clock = clock
        self._last_expire = float("-inf")
        #: seconds between two scans for timed-out sessions; 0: after every batch (``parse``: its
        #: output then does not depend on how fast it ran)
        self.expire_interval = EXPIRE_INTERVAL
        #: later stages that see the finished documents (and their ids) and may add their own (detections)
        self.post = post or []
        #: derived documents (sessions, alerts) pending until their batch is acknowledged (Redis only)
        self.pending = pending

    @classmethod
    def from_settings(cls, settings: Any, redis_client: Any = None, *, clock: Clock | None = None) -> Pipeline:
        """Everything the settings describe; session state in Redis if a client is given, else in memory."""
        from ingest.detect import DetectionStage, MemoryDetectionStore, RedisDetectionStore
        from ingest.enrich.geoip import GeoIpEnricher
        from ingest.enrich.keys import KeyOwnerEnricher
        from ingest.sessions import MemorySessionStore, RedisSessionStore
        from ingest.timestamps import zone

        p = settings.parse
        resources = ParserResources(p.patterns_dir, timezone=zone(p.timezone),
                                    host_timezones={h: zone(z) for h, z in p.host_timezones.items()},
                                    future_tolerance=p.future_tolerance)
        parsers = {kind: cls_(resources) for kind, cls_ in REGISTRY.items()}
        enrichers: list[Enricher] = [GeoIpEnricher.from_config(settings.geoip),
                                     KeyOwnerEnricher.from_config(settings.keys)]
        pending = None
        if redis_client is not None:
            pending = PendingDocs(redis_client, f"{settings.redis.key}:pending:",
                                  session_index_prefix=session_index_prefix(settings.index.prefix), lease_ms=int(settings.worker.derived_lease.total_seconds() * 1000))
        pairer = None
        if settings.sessions.enabled:
            store = (RedisSessionStore(redis_client, settings.sessions) if redis_client is not None
                     else MemorySessionStore(settings.sessions))
            pairer = SessionPairer(store, clock=clock, pending=pending) if clock else SessionPairer(store, pending=pending)
        d = settings.detect
        post = []
        if d.enabled:
            detect_store = (RedisDetectionStore(redis_client, d.key_prefix) if redis_client is not None
                            else MemoryDetectionStore())
            post.append(DetectionStage(detect_store, d, clock) if clock else DetectionStage(detect_store, d))
        pipeline = cls(router=Router(settings.routing), parsers=parsers, enrichers=enrichers, pairer=pairer,
                       index_prefix=settings.index.prefix, post=post, pending=pending)
        if clock is not None:
            pipeline.clock = clock
        return pipeline

    def process(self, raws: list[bytes]) -> BatchResult:
        return self.finish_batch(*self.parse_batch(raws))

    def parse_batch(self, raws: list[bytes]) -> tuple[BatchResult, list[dict[str, Any]], list[str]]:
        """Decode, route, parse, enrich: the part of :meth:`process` that needs no state shared
        between batches (``parse --jobs N`` runs it in other processes); the result's actions
        hold the documents of ``docs``, whose ids are ``ids``."""
        result = BatchResult()
        docs: list[dict[str, Any]] = []
        kept: list[Routed] = []
        now = self.clock()
        latest_read = now + READ_TIME_AHEAD
        route, parsers, envelope = self.router.route, self.parsers, self._envelope
        ctx = LineContext(now=now)  # one per batch, refilled per event: parsers do not keep it
        for raw in raws:
            routed = route(raw)
            if isinstance(routed, DeadLetter):
                result.dead.append(routed)
                continue
            read_at = routed.read_at
            read_ignored = read_at is not None and not READ_TIME_EARLIEST <= read_at <= latest_read
            if read_ignored:
                routed.read_at = read_at = None
            ctx.now = read_at or now
            ctx.path = routed.path
            ctx.host = routed.host
            try:
                doc = parsers[routed.kind].parse(routed.message, ctx)
            except Exception as e:  # a parser bug must not stop the batch: keep the event
                # the message and traceback may quote the event: escaped, traceback only at DEBUG
                log.error("parser %s failed on an event (%s: %s)", routed.kind, type(e).__name__, quote(str(e)),
                          exc_info=log.isEnabledFor(logging.DEBUG))
                result.dead.append(DeadLetter(raw, "parse", "parser_error",
                                              f"{routed.kind} parser raised {type(e).__name__}: {quote(str(e))}"))
                continue
            if "@timestamp" not in doc:  # a line with no readable time: when it was read
                doc["@timestamp"] = format_timestamp(ctx.now)
            envelope(doc, routed)
            if read_ignored:
                add_tag(doc, READ_TIME_TAG)
            docs.append(doc)
            kept.append(routed)
        for enricher in self.enrichers:
            enricher.enrich_batch(docs)
        prefix = self.index_prefix
        ids = [r.document_id() for r in kept]
        result.actions = [IndexAction(index_for(doc.get("@timestamp"), prefix), doc_id, doc, r.raw)
                          for doc, doc_id, r in zip(docs, ids, kept, strict=True)]
        return result, docs, ids

    def finish_batch(self, result: BatchResult, docs: list[dict[str, Any]], ids: list[str]) -> BatchResult:
        """Pair sessions and detect on a parsed batch, in order: the stateful part of :meth:`process`."""
        prefix = self.index_prefix
        if self.pairer is not None:
            closed = self.pairer.process_batch(docs)
            tick = time.monotonic()
            if tick - self._last_expire >= self.expire_interval:  # timeouts are hours: no need to scan every batch
                self._last_expire = tick
                closed += self.pairer.expire()
            sessions = session_index_prefix(prefix)
            for doc_id, doc in closed:
                result.actions.append(IndexAction(index_for(doc.get("@timestamp"), sessions), doc_id, doc, None,
                                                  session_version(doc)))
        for stage in self.post:  # detections: they see the batch's documents and their ids
            derived = stage.process_batch(docs, ids)
            if derived and self.pending is not None:
                self.pending.add(derived)  # pending until the batch is acknowledged (ingest.pending)
            result.actions.extend(derived)
        return result

    @staticmethod
    def _envelope(doc: dict[str, Any], routed: Routed) -> None:
        """Fields from the Filebeat event itself: where and when the line was read.

        Runs for every document: each field of ``routed`` and of the event is read once, and a
        missing object is created only when it is needed (the fields are set in the same order,
        so the document's keys keep their order)."""
        event = routed.event
        host_name, path, offset = routed.host, routed.path, routed.offset
        if host_name is not None:
            host = doc.get("host")
            if host is None:
                doc["host"] = {"name": host_name, "hostname": host_name}
            else:
                host["name"] = host_name
                if "hostname" not in host:
                    host["hostname"] = host_name
        if offset is None and _has_number_offset(event):  # beyond a long: dropped (ingest.numbers)
            add_tag(doc, OUT_OF_RANGE_TAG)
        if path is not None or offset is not None:
            log_ = doc.get("log")
            if log_ is None:
                log_ = doc["log"] = {}
            if path is not None:
                log_["file"] = {"path": path}
            if offset is not None:
                log_["offset"] = offset
        found = event.get("event")
        if routed.read_at is not None:
            # already ISO 8601 with a zone (read_at parsed it): kept as sent
            doc["event"]["created"] = event["@timestamp"]
        if type(found) is dict:
            module = found.get("module")
            if type(module) is str:
                doc["event"]["module"] = module
        fields = event.get("fields")
        if type(fields) is dict and fields:
            doc["fields"] = fields
        tags = event.get("tags")
        if type(tags) is list:
            for tag in tags:
                if type(tag) is str:
                    add_tag(doc, tag)


def _has_number_offset(event: dict[str, Any]) -> bool:
    log_ = event.get("log")
    offset = log_.get("offset") if type(log_) is dict else event.get("offset")
    return type(offset) is int or type(offset) is float


def wrap_line(line: str, *, path: str, offset: int, kind: str | None, read_at: datetime | None) -> bytes:
    """A raw log line as the Filebeat event that would carry it (for ``parse`` on plain files)."""
    event: dict[str, Any] = {"message": line, "log": {"file": {"path": path}, "offset": offset}}
    if kind is not None:
        event["fields"] = {"log_type": kind}
    if read_at is not None:
        event["@timestamp"] = format_timestamp(read_at)
    return orjson.dumps(event)
