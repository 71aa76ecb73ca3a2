"""The Elasticsearch bulk sink: one ``_bulk`` request of ``create`` actions per batch, retried until
every item is stored or refused for good.

Why it is safe to resend: every action is a ``create`` with a deterministic ``_id``, so a document
that Elasticsearch already stored (the answer was lost, the connection dropped after the write)
comes back as item status 409, which counts as done. Session documents are ``index`` actions with
an external ``version`` (a session closed as ``timeout`` is version 1, its correction by the real
logout version 2): a resent or outdated version is refused with 409 ``version_conflict``, done
as well. So:

* per item: 2xx and 409 are done; 429 and 5xx are retried (only those items); any other status
  (400 mapping errors, 404, 403 ...) is returned as :class:`~ingest.model.Rejected` for the
  dead-letter store;
* per request: 429/5xx answers, timeouts, refused or dropped connections and unreadable answers
  mean "resend everything not yet confirmed", after a capped exponential backoff with full jitter,
  until it works, or until ``stop`` is set (or ``max_retries`` is used up): then
  :class:`~ingest.errors.SinkUnavailable` is raised and the caller gives the batch back unacked;
* 413 (request too large) halves the request until it fits; one document that alone is too large
  is rejected.

The official client's own retries are switched off (:func:`build_client`) so this loop owns them.
Logging: one warning when a kind of failure starts, one info line when it is over (no line per
attempt). Counters are in :attr:`ElasticsearchSink.stats` for the worker's metrics.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, NdjsonSerializer, TransportError
from elasticsearch import ApiError, Elasticsearch
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from ingest.errors import SinkUnavailable
from ingest.model import IndexAction, Rejected
from ingest.numbers import dumps_document
from ingest.sinks.base import Sink

log = logging.getLogger(__name__)

_REASON_LIMIT = 300  # characters of Elasticsearch's reason kept in a Rejected

#: the parts of a bulk answer the sink reads (Elasticsearch's response filtering): per item only its
#: status and error, instead of ~200 bytes of _index/_id/_version/_shards/_seq_no per document
BULK_FILTER_PATH = "errors,items.*.status,items.*.error"


class ElasticsearchConfig(BaseModel):
    """Where and how to write documents (environment prefix ``AUDIT_INGEST_ELASTICSEARCH__``)."""

    model_config = ConfigDict(extra="forbid")

    hosts: list[str] = Field(default_factory=lambda: ["http://localhost:9200"],
                             description="Elasticsearch URLs (http:// or https://), without credentials.")
    username: str | None = Field(default=None, description="User for basic authentication (with password).")
    password: SecretStr | None = Field(default=None, description="Password for basic authentication; never logged.")
    api_key: SecretStr | None = Field(default=None, description="API key ('id:key' or the encoded form) instead of a "
                                                        "user; never logged.")
    ca_certs: Path | None = Field(default=None, description="PEM file of the CA that signed the cluster's certificate.")
    verify_certs: bool = Field(default=True, description="Verify the cluster's TLS certificate (https hosts).")
    request_timeout: timedelta = Field(default=timedelta(seconds=30), description="Time allowed for one bulk request.")
    max_retries: int | None = Field(default=None, ge=0,
                                    description="Retries of one batch before it is given back to Redis "
                                                "(SinkUnavailable); unset: retry until it works or the worker stops.")
    backoff_initial: timedelta = Field(default=timedelta(milliseconds=500),
                                       description="Cap of the first wait before a retry (full jitter: a random "
                                                   "wait up to the cap, which doubles on every retry).")
    backoff_max: timedelta = Field(default=timedelta(seconds=30), description="Largest cap of the wait between retries.")
    http_compress: bool = Field(default=False, description="Gzip request bodies (less network, more CPU).")

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        if not hosts:
            raise ValueError("at least one host is needed")
        for host in hosts:
            if not host.startswith(("http://", "https://")):
                raise ValueError(f"{host!r}: a host is a URL starting with http:// or https://")
            if "@" in host.split("//", 1)[1].split("/", 1)[0]:
                raise ValueError("put credentials in username/password or api_key, not in the host URL")
        return hosts

    @model_validator(mode="after")
    def _credentials(self) -> ElasticsearchConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.api_key is not None and self.username is not None:
            raise ValueError("use either api_key or username/password, not both")
        if self.backoff_initial <= timedelta(0) or self.backoff_max < self.backoff_initial:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        return self


class _NdjsonBytes(NdjsonSerializer):
    """The bulk body as the sink built it (bytes ending in a newline) goes out as is; the client's
    own NDJSON serializer copies it twice into a bytearray and back."""

    def dumps(self, data: Any) -> bytes:
        if isinstance(data, bytes) and data.endswith(b"\n"):
            return data
        return super().dumps(data)


#: how a bulk answer filtered by BULK_FILTER_PATH starts when every item was created
_ALL_CREATED = b'{"errors":false,"items":['


def _bulk_answer_serializer() -> Any:
    """JSON answers as the client decodes them (orjson), except a bulk answer in which every item
    succeeded (``"errors": false``): nothing in it is read, so instead of decoding 500 item objects
    its items are counted in the bytes (one ``"status":`` each) and come back as ``None``s: the sink
    checks only their number and ``errors``. Anything else, an answer with failures included, is
    decoded in full."""
    from elasticsearch.serializer import OrjsonSerializer

    class BulkAnswers(OrjsonSerializer):  # type: ignore[misc]
        def loads(self, data: bytes) -> Any:
            if data.startswith(_ALL_CREATED) and data.endswith(b"]}"):
                return {"errors": False, "items": [None] * data.count(b'"status":')}
            return super().loads(data)

    return BulkAnswers()


def build_client(cfg: ElasticsearchConfig, *, sink: bool = False) -> Elasticsearch:
    """The official client for ``cfg``, with its own retries off (the sink retries). ``sink``: the
    sink's own client, whose bulk answers without failures are not decoded (:func:`_bulk_answer_serializer`).

    Also quiets the transport's per-request lines (INFO per request, WARNING per failed attempt
    from the node pool): the sink logs one line per kind of failure instead.
    """
    logging.getLogger("elastic_transport.transport").setLevel(logging.WARNING)
    logging.getLogger("elastic_transport.node_pool").setLevel(logging.ERROR)
    kwargs: dict[str, Any] = {
        "hosts": cfg.hosts,
        "request_timeout": cfg.request_timeout.total_seconds(),
        "max_retries": 0,
        "retry_on_timeout": False,
        "retry_on_status": (),
        "http_compress": cfg.http_compress,
    }
    try:  # answers parsed with orjson: the bulk answer has one object per document
        from elasticsearch.serializer import OrjsonSerializer

        json = _bulk_answer_serializer() if sink else OrjsonSerializer()
        kwargs["serializers"] = {"application/json": json, "application/x-ndjson": _NdjsonBytes()}
    except ImportError:  # pragma: no cover - orjson is a dependency
        pass
    if any(h.startswith("https://") for h in cfg.hosts):
        kwargs["verify_certs"] = cfg.verify_certs
        if cfg.ca_certs is not None:
            kwargs["ca_certs"] = str(cfg.ca_certs)
    if cfg.username is not None and cfg.password is not None:
        kwargs["basic_auth"] = (cfg.username, cfg.password.get_secret_value())
    if cfg.api_key is not None:
        kwargs["api_key"] = cfg.api_key.get_secret_value()
    return Elasticsearch(**kwargs)


# ---------------------------------------------------------------------------------------------
# Index names
# ---------------------------------------------------------------------------------------------

_DAYS: dict[tuple[int, int, int], str] = {}


def parse_index_day(timestamp: object) -> str | None:
    """``YYYY.MM.DD`` of the UTC date of an ISO 8601 ``@timestamp`` (a number is epoch
    milliseconds; no zone means UTC, as Logstash's ``@timestamp`` always is); None if unusable."""
    try:
        if isinstance(timestamp, str):
            dt = datetime.fromisoformat(timestamp)
            if dt.tzinfo is not None and dt.utcoffset():
                dt = dt.astimezone(UTC)
        elif isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
            dt = datetime.fromtimestamp(timestamp / 1000, UTC)
        else:
            return None
    except (ValueError, OverflowError, OSError):
        return None
    key = (dt.year, dt.month, dt.day)
    day = _DAYS.get(key)
    if day is None:
        if len(_DAYS) > 10_000:
            _DAYS.clear()
        day = _DAYS[key] = f"{dt.year:04d}.{dt.month:02d}.{dt.day:02d}"
    return day


#: prefix -> {"YYYY-MM-DDT": "<prefix>YYYY.MM.DD"}: the names of index_for's fast path, sliced once
#: per day and prefix instead of once per document
_NAMES: dict[str, dict[str, str]] = {}


def _sliced_name(prefix: str, timestamp: str) -> str:
    """``<prefix>YYYY.MM.DD`` of a ``YYYY-MM-DDT...Z`` timestamp, remembered in :data:`_NAMES`."""
    names = _NAMES.get(prefix)
    if names is None or len(names) > 10_000:
        if len(_NAMES) > 100:
            _NAMES.clear()
        names = _NAMES[prefix] = {}
    name = names[timestamp[:11]] = f"{prefix}{timestamp[0:4]}.{timestamp[5:7]}.{timestamp[8:10]}"
    return name


def index_for(timestamp: object, prefix: str = "audit-", *,
              now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> str:
    """``<prefix>YYYY.MM.DD`` for a document's ``@timestamp`` (UTC date, Logstash's semantics).

    A missing or unparsable timestamp gives today's (UTC) index: the document is still stored,
    where a search for "now" finds it. Callers that want to tag such documents check
    ``parse_index_day(ts) is None`` first.

    Fast path: ``@timestamp`` as the pipeline writes it (``YYYY-MM-DDT...Z``, already UTC) is sliced,
    not parsed: this runs for every document.
    """
    if isinstance(timestamp, str) and len(timestamp) >= 20 and timestamp[-1] == "Z":
        names = _NAMES.get(prefix)
        if names is not None:
            name = names.get(timestamp[:11])  # only "YYYY-MM-DDT" keys are kept: timestamp[10] is "T"
            if name is not None:
                return name
        if timestamp[10] == "T":
            return _sliced_name(prefix, timestamp)
    day = parse_index_day(timestamp)
    if day is None:
        today = now()
        day = f"{today.year:04d}.{today.month:02d}.{today.day:02d}"
    return prefix + day


# ---------------------------------------------------------------------------------------------
# The sink
# ---------------------------------------------------------------------------------------------


@dataclass
class SinkStats:
    """Counters since start; ``listener(name, n)`` (if set) sees every increment, for metrics."""

    requests: int = 0  # bulk requests sent
    request_failures: int = 0  # whole requests that failed (status, timeout, connection)
    retries: int = 0  # waits before resending
    items_indexed: int = 0  # created
    items_conflict: int = 0  # 409: already stored (a redelivered event)
    items_rejected: int = 0  # refused for good, returned as Rejected
    items_retried: int = 0  # item-level 429/5xx resent
    failures_by_kind: Counter[str] = field(default_factory=Counter)
    listener: Callable[[str, int], None] | None = None

    def add(self, name: str, n: int = 1) -> None:
        setattr(self, name, getattr(self, name) + n)
        if self.listener is not None:
            self.listener(name, n)


class ElasticsearchSink(Sink):
    """Bulk-indexes batches of :class:`IndexAction` with ``create``; see the module docstring.

    ``sleep`` defaults to waiting on ``stop`` (so a stop cuts a backoff short), ``rng`` draws the
    jitter; tests pass their own to avoid real waiting.
    """

    def __init__(self, client: Elasticsearch, cfg: ElasticsearchConfig | None = None, *,
                 stop: threading.Event | None = None, sleep: Callable[[float], object] | None = None,
                 rng: random.Random | None = None) -> None:
        self._client = client
        self._cfg = cfg or ElasticsearchConfig()
        self._stop = stop
        self._sleep = sleep or (stop.wait if stop is not None else time.sleep)
        self._rng = rng or random.Random()
        self._initial = self._cfg.backoff_initial.total_seconds()
        self._max = self._cfg.backoff_max.total_seconds()
        self._failing: Counter[str] = Counter()  # failure kinds logged and not yet over
        self.stats = SinkStats()

    # -- the hook ---------------------------------------------------------------------------

    def write_batch(self, actions: list[IndexAction]) -> list[Rejected]:
        rejected: dict[int, Rejected] = {}
        lines: list[bytes] = []
        pending: list[int] = []
        for i, action in enumerate(actions):
            try:
                lines.append(_encode(action))
                pending.append(i)
            except (orjson.JSONEncodeError, TypeError) as e:
                lines.append(b"")
                rejected[i] = Rejected(action, 0, "serialization_error", f"document cannot be encoded as JSON: {e}")
        chunk = max(1, len(pending))
        attempt = 0
        while pending:
            retry: list[int] = []
            must_wait = False  # False when the only problem was size: resend smaller at once
            unreachable = False  # no answer at all (connection refused or cut, timeout)
            for part in [pending[start:start + chunk] for start in range(0, len(pending), chunk)]:
                before = len(retry)
                outcome = self._send(part, lines, actions, retry, rejected)
                if outcome != "too_large":
                    must_wait = must_wait or len(retry) > before
                    unreachable = unreachable or outcome in ("connection", "timeout")
                elif len(part) == 1:
                    rejected[part[0]] = Rejected(actions[part[0]], 413, "request_entity_too_large",
                                                 "the document alone exceeds http.max_content_length")
                    self.stats.add("items_rejected")
                else:
                    chunk = max(1, min(chunk, len(part)) // 2)
                    retry.extend(part)
            if len(retry) < len(pending):  # Elasticsearch took some: the backoff starts over
                attempt = 0
            pending = sorted(retry)
            if pending and must_wait:
                attempt = self._wait(attempt, len(pending), len(actions), probe=unreachable)
        if self._failing:
            log.info("Elasticsearch bulk working again (after %s)",
                     ", ".join(f"{k} x{n}" for k, n in sorted(self._failing.items())))
            self._failing.clear()
        return [rejected[i] for i in sorted(rejected)]

    # -- one request ------------------------------------------------------------------------

    def _send(self, part: list[int], lines: list[bytes], actions: list[IndexAction],
              retry: list[int], rejected: dict[int, Rejected]) -> str:
        """One bulk request for ``part``; returns "" (answered), "too_large", or the failure kind
        of a whole-request failure (then all of ``part`` is in ``retry``)."""
        self.stats.add("requests")
        try:
            body = b"".join([lines[i] for i in part])  # the client sends bytes as they are
            answer = self._client.bulk(operations=body, filter_path=BULK_FILTER_PATH).body  # type: ignore[arg-type]
        except ApiError as e:
            code = e.meta.status
            if code == 413:
                return "too_large"
            return self._request_failed(part, retry, f"http_{code}", f"{code} {_error_type(e.body)}")
        except ConnectionTimeout as e:
            return self._request_failed(part, retry, "timeout", _short(e))
        except TransportConnectionError as e:
            return self._request_failed(part, retry, "connection", _short(e))
        except TransportError as e:  # e.g. an answer that is not JSON
            return self._request_failed(part, retry, "bad_answer", _short(e))
        items = answer.get("items") if isinstance(answer, dict) else None
        if not isinstance(items, list) or len(items) != len(part):
            got = len(items) if isinstance(items, list) else "no"
            return self._request_failed(part, retry, "bad_answer", f"{got} items for {len(part)} actions")
        if answer.get("errors") is False:
            self.stats.add("items_indexed", len(part))
            return ""
        item_failures: Counter[str] = Counter()
        first_reason: dict[str, str] = {}
        indexed = conflicts = 0
        for i, item in zip(part, items, strict=True):
            result: dict[str, Any] = next(iter(item.values()), {}) if isinstance(item, dict) else {}
            if not isinstance(result, dict):
                result = {}
            status = result.get("status")
            if not isinstance(status, int):
                retry.append(i)
                item_failures["item_bad_answer"] += 1
            elif 200 <= status < 300:
                indexed += 1
            elif status == 409:
                conflicts += 1
            elif status == 429 or status >= 500:
                retry.append(i)
                kind = f"item_{status}"
                item_failures[kind] += 1
                first_reason.setdefault(kind, _error_text(result.get("error")))
            else:
                error = result.get("error")
                if not isinstance(error, dict):
                    error = {}
                rejected[i] = Rejected(actions[i], status, str(error.get("type", "unknown")),
                                       str(error.get("reason", ""))[:_REASON_LIMIT])
                self.stats.add("items_rejected")
        self.stats.add("items_indexed", indexed)
        if conflicts:
            self.stats.add("items_conflict", conflicts)
        for kind, n in item_failures.items():
            self.stats.add("items_retried", n)
            self.stats.failures_by_kind[kind] += n
            self._note(kind, f"{n} of {len(part)} items: {first_reason.get(kind, '')}")
        return ""

    def _request_failed(self, part: list[int], retry: list[int], kind: str, detail: str) -> str:
        retry.extend(part)
        self.stats.add("request_failures")
        self.stats.failures_by_kind[kind] += 1
        self._note(kind, detail)
        return kind

    def _note(self, kind: str, detail: str) -> None:
        if kind not in self._failing:
            log.warning("Elasticsearch bulk: %s (%s); retrying with backoff, nothing is dropped", kind, detail)
        self._failing[kind] += 1

    # -- waiting ----------------------------------------------------------------------------

    def _wait(self, attempt: int, pending: int, total: int, *, probe: bool = False) -> int:
        """Back off before resending; raises SinkUnavailable if told to stop or out of retries.

        With ``probe`` (Elasticsearch did not answer at all), a wait longer than
        :data:`PROBE_ABOVE` is slept in steps of :data:`PROBE_STEP`, each followed by a ping, and
        cut short once Elasticsearch answers: after an outage the batch resends within a second
        instead of sleeping out a delay grown during the outage (a ping is no load on a cluster
        that is merely busy: a busy one answers, and its 429s are not probed)."""
        self._check_stop(pending, total)
        if self._cfg.max_retries is not None and attempt >= self._cfg.max_retries:
            raise SinkUnavailable(f"Elasticsearch did not confirm {pending} of {total} documents after "
                                  f"{attempt} retries ({self._failure_summary()})")
        cap = min(self._max, self._initial * (2 ** min(attempt, 62)))
        self.stats.add("retries")
        delay = self._rng.uniform(0, cap)
        if not probe or delay <= PROBE_ABOVE:
            self._sleep(delay)
        else:
            while delay > 0:
                step = min(delay, PROBE_STEP)
                self._sleep(step)
                delay -= step
                self._check_stop(pending, total)
                if delay > 0 and self._answers():
                    break
        self._check_stop(pending, total)
        return attempt + 1

    def _answers(self) -> bool:
        try:
            return bool(self._client.options(request_timeout=PROBE_STEP).ping())
        except Exception:  # noqa: BLE001 - a probe: any failure means "not yet"
            return False

    def _check_stop(self, pending: int, total: int) -> None:
        if self._stop is not None and self._stop.is_set():
            raise SinkUnavailable(f"stopping with {pending} of {total} documents not confirmed by Elasticsearch "
                                  f"({self._failure_summary()})")

    def _failure_summary(self) -> str:
        return ", ".join(f"{k} x{n}" for k, n in sorted(self._failing.items())) or "no answer"


#: a wait after a request that got no answer is cut into steps of PROBE_STEP seconds, with a ping
#: after each, when it is longer than PROBE_ABOVE seconds (see ElasticsearchSink._wait)
PROBE_ABOVE = 2.0
PROBE_STEP = 1.0

_ACTION_HEADS: dict[str, bytes] = {}
_dumps = orjson.dumps


def _encode(action: IndexAction) -> bytes:
    """The two NDJSON lines of one ``create`` action (the start of the action line is kept per index:
    a batch has one or two daily indices); with a version, an ``index`` action with external
    versioning (stored only if the version is above the stored one, else 409: done)."""
    if action.version is not None:
        meta = {"index": {"_index": action.index, "_id": action.id, "version": action.version,
                          "version_type": "external"}}
        return b"".join((orjson.dumps(meta), b"\n", orjson.dumps(action.doc), b"\n"))
    head = _ACTION_HEADS.get(action.index)
    if head is None:
        if len(_ACTION_HEADS) > 1000:
            _ACTION_HEADS.clear()
        head = _ACTION_HEADS[action.index] = b'{"create":{"_index":' + orjson.dumps(action.index) + b',"_id":'
    # dumps_document: numbers that do not fit their fields dropped (ingest.numbers), not rejected by the bulk
    return b"".join((head, _dumps(action.id), b"}}\n", dumps_document(action.doc), b"\n"))


def _error_type(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("type", ""))
    return str(body)[:80]


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('type', '')}: {str(error.get('reason', ''))[:120]}"
    return str(error)[:120]


def _short(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e)[:160]}"
