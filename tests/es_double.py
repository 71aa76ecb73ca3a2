"""An in-memory HTTP double of the Elasticsearch 8.x REST API, for tests and benchmarks.

The official ``elasticsearch`` client talks to it for real over HTTP/1.1 keep-alive. It follows the
documented contract where our code depends on it:

* every answer carries ``X-Elastic-Product: Elasticsearch`` (the 8.x client refuses a server
  without it) and is JSON in the content type the client asked for (``compatible-with=8``);
* ``_bulk`` parses NDJSON (``create``, ``index``, ``delete``), answers ``took``/``errors``/``items``
  in request order, ``create`` of an existing ``_id`` is item status 409
  ``version_conflict_engine_exception``; malformed bodies fail the whole request with 400;
  external versioning (``version`` + ``version_type`` ``external``/``external_gt``/``external_gte``
  on ``index``): stored with the given version only if it is above the stored one (``external_gte``:
  not below), else item 409 ``version_conflict_engine_exception``; ``create`` with an external
  version, or a ``version`` with internal versioning, fails the request with 400, as in 8.x;
* composable index templates (``_index_template``, with ``composed_of`` component templates) are
  applied when an index is auto-created, and their ``mappings`` reject documents whose values
  cannot be coerced (``long``, ``ip``, ``date``, ``boolean``, ``geo_point``, objects vs values,
  ``alias`` fields that cannot be written, ``dynamic: strict``); unmapped fields are mapped
  dynamically from their first value, as Elasticsearch does (``dynamic_templates`` by
  ``match_mapping_type`` / ``match`` / ``path_match``, ``date_detection``; strings without a
  template become ``text`` with a ``keyword`` sub-field);
* ``index.mapping.total_fields.limit`` (default 1000) from the template's settings: a document
  whose new fields would take the index past it is rejected (400 ``illegal_argument_exception``
  "Limit of total fields [N] has been exceeded while adding new fields [n]"); fields, objects,
  aliases and multi-fields count, as in Elasticsearch;
* ``_count``/``_search`` see documents after a refresh (``_refresh`` or ``?refresh=true``);
* ``filter_path`` (response filtering, e.g. ``errors,items.*.status,items.*.error``) on every
  answer, as Elasticsearch applies it: only the matching paths are kept, ``*`` matches any key.

Benchmark mode (``check_mappings = False``, ``parse_sources = False``): documents are neither
checked against mappings nor decoded when they arrive; a source line only has to look like a
JSON object (``{...}``), is stored as bytes and decoded when read back (``docs``, ``get``,
search) or when a rule has to see it. Everything else (per-item statuses, 409 on ``create`` of an
existing ``_id``, faults, recorded writes) behaves the same.

Faults can be switched on while it runs: per-item statuses (:meth:`ESDouble.fail_items`),
whole-request statuses (:meth:`ESDouble.fail_requests`), dropped connections before or after the
write was applied (:meth:`ESDouble.drop_connections`), slow answers (:meth:`ESDouble.delay`),
ad-hoc document rules (:meth:`ESDouble.add_rule`) and the server going away and coming back on
the same port (:meth:`ESDouble.down` / :meth:`ESDouble.up`).

Every request is recorded (:attr:`ESDouble.requests`) and every applied write too
(:attr:`ESDouble.writes`); :meth:`ESDouble.docs`, :meth:`ESDouble.count_by_id` and
:meth:`ESDouble.assert_exactly_once` read the result back.

Security: with ``auth``/``api_key`` set, that user or key may do anything; users made through
``_security/user`` (with roles from ``_security/role``) may log in too, and their bulk items are
authorized by their roles' index privileges (item 403 ``security_exception`` otherwise).

Not modelled: shards/replicas, refresh intervals (only explicit refreshes), ``update`` actions,
queries other than ``match_all``/``term``/``ids``, data streams, cluster privileges, privileges
of requests other than bulk items.
"""

from __future__ import annotations

import base64
import fnmatch
import gzip
import http.client
import ipaddress
import random
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson
import pytest

VERSION = "8.15.0"
CLUSTER_NAME = "es-double"
_COMPAT_JSON = b"application/vnd.elasticsearch+json;compatible-with=8"
_ACCEPTED_CONTENT_TYPES = ("application/json", "application/x-ndjson",
                           "application/vnd.elasticsearch+json", "application/vnd.elasticsearch+x-ndjson")

# Reasons as Elasticsearch words them (shortened where the real text names internals).
_ITEM_ERRORS: dict[int, tuple[str, str]] = {
    429: ("es_rejected_execution_exception",
          "rejected execution of coordinating operation [shard_detailed_coordinating_and_primary_bytes=0, "
          "write_bytes=0] on EsThreadPoolExecutor[name = es-double/write, queue capacity = 10000]"),
    500: ("exception", "Elasticsearch exception [type=illegal_state_exception, reason=injected by the double]"),
    502: ("exception", "bad gateway (injected by the double)"),
    503: ("unavailable_shards_exception", "[{index}][0] primary shard is not active Timeout: [1m]"),
    504: ("exception", "gateway timeout (injected by the double)"),
    400: ("document_parsing_exception", "[1:1] failed to parse (injected by the double)"),
    403: ("cluster_block_exception", "index [{index}] blocked by: [FORBIDDEN/8/index write (api)];"),
    404: ("index_not_found_exception", "no such index [{index}]"),
}
_REQUEST_ERRORS: dict[int, tuple[str, str]] = {
    429: ("es_rejected_execution_exception",
          "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, "
          "max_coordinating_and_primary_bytes=0]"),
    500: ("exception", "injected by the double"),
    502: ("exception", "bad gateway (injected by the double)"),
    503: ("master_not_discovered_exception", "no master node (injected by the double)"),
    504: ("exception", "gateway timeout (injected by the double)"),
    401: ("security_exception", "unable to authenticate user [elastic] for REST request [/_bulk]"),
    403: ("security_exception", "action [indices:data/write/bulk] is unauthorized"),
    413: ("request_entity_too_large", "content length exceeds http.max_content_length (injected)"),
}


# ---------------------------------------------------------------------------------------------
# Errors and small value types
# ---------------------------------------------------------------------------------------------


class EsError(Exception):
    """An error answer: ``status`` plus the ``error`` object Elasticsearch puts in the body."""

    def __init__(self, status: int, type_: str, reason: str, **extra: Any) -> None:
        super().__init__(f"{status} {type_}: {reason}")
        self.status = status
        self.type = type_
        self.reason = reason
        self.extra = extra

    def error_object(self) -> dict[str, Any]:
        return {"type": self.type, "reason": self.reason, **self.extra}

    def body(self) -> dict[str, Any]:
        root = {"type": self.type, "reason": self.reason}
        return {"error": {"root_cause": [root], **self.error_object()}, "status": self.status}


@dataclass(slots=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes | None
    status: int | None = None  # None: no answer was sent (dropped connection)


@dataclass(slots=True)
class Write:
    """One write the double applied (whatever the client saw afterwards)."""

    op: str
    index: str
    id: str
    version: int


class StoredDoc:
    """A stored document; ``raw`` (the source line's bytes) is decoded on first read of ``source``."""

    __slots__ = ("_source", "raw", "version", "seq_no")

    def __init__(self, source: dict[str, Any] | None, version: int, seq_no: int, raw: bytes | None = None) -> None:
        self._source = source
        self.raw = raw
        self.version = version
        self.seq_no = seq_no

    @property
    def source(self) -> dict[str, Any]:
        if self._source is None:
            self._source = orjson.loads(self.raw or b"{}")
        return self._source


@dataclass
class Index:
    name: str
    uuid: str
    mappings: dict[str, Any]
    field_limit: int = 1000  # index.mapping.total_fields.limit
    docs: dict[str, StoredDoc] = field(default_factory=dict)
    seq_no: int = -1
    visible: set[str] = field(default_factory=set)  # ids a search can see (refreshed)
    created: float = field(default_factory=time.time)
    settings: dict[str, Any] = field(default_factory=dict)  # what PUT <index>/_settings set (flat keys)


# ---------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------


@dataclass
class ItemFault:
    """Fail matching bulk items with ``status`` instead of applying them."""

    status: int
    every: int | None = None
    share: float | None = None
    ids: frozenset[str] | None = None
    times: int | None = None
    error_type: str | None = None
    reason: str | None = None
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    seen: int = 0
    fired: int = 0

    def fires(self, doc_id: str) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.ids is not None and doc_id not in self.ids:
            return False
        self.seen += 1
        if self.every is not None and self.seen % self.every != 0:
            return False
        if self.share is not None and self.rng.random() >= self.share:
            return False
        self.fired += 1
        return True


@dataclass
class RequestFault:
    """A fault for whole requests whose path matches ``paths`` (fnmatch patterns)."""

    kind: str  # "status", "drop", "delay"
    paths: tuple[str, ...]
    times: int | None
    status: int = 503
    when: str = "after_apply"  # drop: before_apply | after_apply | mid_response; delay: before/after
    seconds: float = 0.0
    fired: int = 0

    def matches(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, p) for p in self.paths)

    def take(self) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        self.fired += 1
        return True


Rule = Callable[[str, str, dict[str, Any]], "None | str | tuple[int, str, str]"]


# ---------------------------------------------------------------------------------------------
# Mappings: what a template declares, what a document may contain
# ---------------------------------------------------------------------------------------------

_KNOWN_TYPES = {
    "text", "keyword", "constant_keyword", "wildcard", "match_only_text", "long", "integer", "short",
    "byte", "double", "float", "half_float", "scaled_float", "unsigned_long", "boolean", "date",
    "date_nanos", "ip", "geo_point", "object", "nested", "flattened", "alias", "binary", "version",
    "token_count",
}
_INT_RANGES = {"long": (-(2**63), 2**63 - 1), "integer": (-(2**31), 2**31 - 1),
               "short": (-(2**15), 2**15 - 1), "byte": (-128, 127), "unsigned_long": (0, 2**64 - 1)}
_FLOATS = {"double", "float", "half_float", "scaled_float"}
#: beyond these a float field's value is infinite (Elasticsearch: "supports only finite values")
_FLOAT_MAX = {"double": 1.7976931348623157e308, "float": 3.4028234663852886e38, "half_float": 65504.0}
_DATE_DETECT = re.compile(r"^\d{4}[-/]\d{2}[-/]\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")


def _flatten_mapping(props: dict[str, Any], prefix: str, out: dict[str, dict[str, Any]]) -> None:
    for name, spec in props.items():
        path = f"{prefix}{name}"
        ftype = spec.get("type", "object" if "properties" in spec else None)
        if ftype is None:
            raise EsError(400, "mapper_parsing_exception", f"No type specified for field [{name}]")
        if ftype not in _KNOWN_TYPES:
            raise EsError(400, "mapper_parsing_exception", f"No handler for type [{ftype}] declared on field [{name}]")
        out[path] = spec | {"type": ftype}
        if "properties" in spec:
            _flatten_mapping(spec["properties"], path + ".", out)


def compile_mappings(mappings: dict[str, Any]) -> dict[str, Any]:
    """``{"fields": {path: spec}, "dynamic": {path_or_"": value}}``; validates types and aliases."""
    fields: dict[str, dict[str, Any]] = {}
    _flatten_mapping(mappings.get("properties", {}), "", fields)
    for path, spec in fields.items():
        if spec["type"] == "alias":
            target = spec.get("path")
            if target not in fields or fields[target]["type"] in ("alias", "object", "nested"):
                raise EsError(400, "mapper_parsing_exception",
                              f"Invalid [path] value [{target}] for field alias [{path}]: an alias must refer "
                              "to an existing field in the mappings.")
    dynamic = {"": str(mappings.get("dynamic", "true")).lower()}
    for path, spec in fields.items():
        if "dynamic" in spec:
            dynamic[path] = str(spec["dynamic"]).lower()
    templates = [next(iter(t.items())) for t in mappings.get("dynamic_templates", []) if isinstance(t, dict) and t]
    return {"fields": fields, "dynamic": dynamic, "source": mappings, "templates": templates,
            "date_detection": str(mappings.get("date_detection", "true")).lower() != "false"}


def _flat_settings(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"index": {"mapping": {...}}}`` and ``{"index.mapping...": ...}`` alike, as dotted keys."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(_flat_settings(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _field_limit(settings: dict[str, Any]) -> int:
    flat = _flat_settings(settings)
    value = flat.get("index.mapping.total_fields.limit", flat.get("mapping.total_fields.limit", 1000))
    return int(value)


def field_count(fields: dict[str, dict[str, Any]]) -> int:
    """Mapped fields as ``index.mapping.total_fields.limit`` counts them: leaves, objects, aliases
    and multi-fields (fields that dynamic: false left unmapped do not count)."""
    return sum(1 + len(spec.get("fields", {})) for spec in fields.values() if spec["type"] != "_unmapped")


_MAPPING_TYPES = {"text": "string", "long": "long", "float": "double", "boolean": "boolean", "object": "object",
                  "date": "date"}


def _dynamic_mapping(templates: list[tuple[str, dict[str, Any]]], path: str, ftype: str) -> dict[str, Any]:
    """The mapping Elasticsearch gives a new field of detected ``ftype`` at ``path``."""
    name = path.rpartition(".")[2]
    kind = _MAPPING_TYPES.get(ftype, ftype)
    for _, rule in templates:
        wanted = rule.get("match_mapping_type", "*")
        if wanted != "*" and kind not in (wanted if isinstance(wanted, list) else [wanted]):
            continue
        regex = rule.get("match_pattern") == "regex"

        def hit(pattern: Any, value: str, *, regex: bool = regex) -> bool:
            patterns = pattern if isinstance(pattern, list) else [pattern]
            return any(re.search(p, value) if regex else fnmatch.fnmatchcase(value, p) for p in patterns)

        if "match" in rule and not hit(rule["match"], name):
            continue
        if "unmatch" in rule and hit(rule["unmatch"], name):
            continue
        if "path_match" in rule and not hit(rule["path_match"], path, regex=False):
            continue
        if "path_unmatch" in rule and hit(rule["path_unmatch"], path, regex=False):
            continue
        mapping = dict(rule.get("mapping", {}))
        mapping["type"] = str(mapping.get("type", ftype)).replace("{dynamic_type}", kind)
        return mapping
    if ftype == "text":
        return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
    return {"type": ftype}


def _merge_mappings(parts: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key == "properties":
                merged["properties"] = _merge_props(merged.get("properties", {}), value)
            else:
                merged[key] = value
    return merged


def _merge_props(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for name, spec in b.items():
        if name in out and "properties" in out[name] and "properties" in spec:
            out[name] = {**out[name], **spec, "properties": _merge_props(out[name]["properties"], spec["properties"])}
        else:
            out[name] = spec
    return out


def _preview(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text[:20] + "..." if len(text) > 20 else text


class _Mapper:
    """Checks one document against an index's mapping, adding dynamic fields as it goes."""

    def __init__(self, index: Index, doc_id: str, error_type: str) -> None:
        self.fields: dict[str, dict[str, Any]] = index.mappings["fields"]
        self.dynamic: dict[str, str] = index.mappings["dynamic"]
        self.templates: list[tuple[str, dict[str, Any]]] = index.mappings.get("templates", [])
        self.date_detection: bool = index.mappings.get("date_detection", True)
        self.doc_id = doc_id
        self.error_type = error_type
        self.new: dict[str, dict[str, Any]] = {}

    def fail(self, path: str, ftype: str, value: Any, cause: str | None = None) -> EsError:
        reason = (f"[1:1] failed to parse field [{path}] of type [{ftype}] in document with id "
                  f"'{self.doc_id}'. Preview of field's value: '{_preview(value)}'")
        extra = {"caused_by": {"type": "illegal_argument_exception", "reason": cause}} if cause else {}
        return EsError(400, self.error_type, reason, **extra)

    def spec(self, path: str) -> dict[str, Any] | None:
        return self.fields.get(path) or self.new.get(path)

    def dynamic_for(self, parent: str) -> str:
        while True:
            if parent in self.dynamic:
                return self.dynamic[parent]
            if not parent:
                return "true"
            parent = parent.rpartition(".")[0]

    def walk(self, obj: dict[str, Any], prefix: str) -> None:
        for key, value in obj.items():
            if not key or key.startswith(".") or key.endswith(".") or ".." in key:
                raise EsError(400, self.error_type, f"[1:1] field name cannot contain only dots or be empty: [{key}]")
            path = f"{prefix}{key}"
            if "." in key:  # {"a.b": 1} is {"a": {"b": 1}}
                head, _, rest = key.partition(".")
                self.object_at(f"{prefix}{head}", {})
                self.walk({rest: value}, f"{prefix}{head}.")
                continue
            self.value(path, value, prefix[:-1])

    def object_at(self, path: str, value: Any) -> None:
        spec = self.spec(path)
        if spec is None:
            self.add(path, "object", value, path.rpartition(".")[0])
        elif spec["type"] not in ("object", "nested", "flattened"):
            raise EsError(400, self.error_type,
                          f"[1:1] Could not dynamically add mapping for field [{path}]. Existing mapping for "
                          f"[{path}] must be of type object but found [{spec['type']}].")

    def add(self, path: str, ftype: str, value: Any, parent: str) -> None:
        mode = self.dynamic_for(parent)
        if mode == "strict":
            raise EsError(400, "strict_dynamic_mapping_exception",
                          f"[1:1] mapping set to strict, dynamic introduction of [{path.rpartition('.')[2]}] "
                          f"within [{parent or '_doc'}] is not allowed")
        if mode in ("false", "runtime"):
            self.new[path] = {"type": "_unmapped"}
            return
        self.new[path] = _dynamic_mapping(self.templates, path, ftype) if ftype != "object" else {"type": "object"}

    def value(self, path: str, value: Any, parent: str) -> None:
        if value is None:
            return
        if isinstance(value, list):
            for element in value:
                self.value(path, element, parent)
            return
        spec = self.spec(path)
        if spec is None:
            ftype = _dynamic_type(value)
            if ftype == "date" and not self.date_detection:
                ftype = "text"
            self.add(path, ftype, value, parent)
            if ftype == "object":
                self.walk(value, path + ".")
                return
            spec = self.new[path]  # the new field's first value must fit the type it was mapped to
            problem = _coerce_problem(spec["type"], value, spec) if spec["type"] != "_unmapped" else None
            if problem is not None:
                raise self.fail(path, spec["type"], value, problem)
            return
        ftype = spec["type"]
        if ftype == "_unmapped":
            return
        if ftype == "alias":
            raise EsError(400, self.error_type, f"[1:1] Cannot write to a field alias [{path}].")
        if ftype in ("object", "nested"):
            if not isinstance(value, dict):
                raise EsError(400, self.error_type,
                              f"[1:1] object mapping for [{path}] tried to parse field [{path}] as object, "
                              "but found a concrete value")
            self.walk(value, path + ".")
            return
        if ftype == "flattened":
            return
        if isinstance(value, dict) and ftype != "geo_point":
            raise EsError(400, self.error_type,
                          f"[1:1] failed to parse field [{path}] of type [{ftype}] in document with id "
                          f"'{self.doc_id}'. Preview of field's value: '{_preview(value)}'",
                          caused_by={"type": "illegal_state_exception",
                                     "reason": "Can't get text on a START_OBJECT at 1:1"})
        if spec.get("ignore_malformed"):
            return
        problem = _coerce_problem(ftype, value, spec)
        if problem is not None:
            raise self.fail(path, ftype, value, problem)


def _dynamic_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str) and _DATE_DETECT.match(value) and _parse_date(value):
        return "date"
    return "text"


def _parse_date(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("/", "-"))
        return True
    except ValueError:
        return False


def _coerce_problem(ftype: str, value: Any, spec: dict[str, Any]) -> str | None:
    """Why ``value`` cannot be stored in a field of ``ftype`` (None if it can), with coerce=true."""
    if ftype in _INT_RANGES:
        if isinstance(value, bool):
            return "Current token (VALUE_TRUE) not numeric, can not use numeric value accessors"
        if isinstance(value, str):
            try:
                number = float(value.strip()) if value.strip() else None
            except ValueError:
                return f'For input string: "{value[:60]}"'
            if number is None:
                return "empty string is not a number"
            value = number
        if isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                return "Value is not a number"
            value = int(value)
        lo, hi = _INT_RANGES[ftype]
        if not lo <= value <= hi:
            return f"Value [{value}] is out of range for a {ftype}"
        return None
    if ftype in _FLOATS:
        if isinstance(value, bool):
            return "Current token (VALUE_TRUE) not numeric"
        try:
            number = float(value)
        except ValueError:
            return f'For input string: "{str(value)[:60]}"'
        except OverflowError:  # an integer beyond a double
            number = float("inf")
        if abs(number) > _FLOAT_MAX.get(ftype, _FLOAT_MAX["double"]) or number != number:
            return f"[{ftype}] supports only finite values, but got [{'Infinity' if number > 0 else '-Infinity'}]"
        return None
    if ftype == "boolean":
        if isinstance(value, bool) or value in ("true", "false", ""):
            return None
        return f"Failed to parse value [{_preview(value)}] as only [true] or [false] are allowed."
    if ftype == "ip":
        if not isinstance(value, str):
            return f"'{value}' is not an IP string literal."
        try:
            ipaddress.ip_address(value.split("%", 1)[0])
        except ValueError:
            return f"'{value[:60]}' is not an IP string literal."
        return None
    if ftype in ("date", "date_nanos"):
        formats = str(spec.get("format", "strict_date_optional_time||epoch_millis"))
        if isinstance(value, bool):
            return "failed to parse date field [true]"
        if isinstance(value, int | float):
            return None if ("epoch_millis" in formats or "epoch_second" in formats) else \
                f"failed to parse date field [{value}] with format [{formats}]"
        if isinstance(value, str):  # any ISO 8601 form passes, whatever the declared format
            if _parse_date(value):
                return None
            if value.isdigit() and "epoch" in formats:
                return None
        return f"failed to parse date field [{_preview(value)}] with format [{formats}]"
    if ftype == "geo_point":
        return _geo_problem(value)
    return None  # keyword, text and friends take any concrete value


def _geo_problem(value: Any) -> str | None:
    try:
        if isinstance(value, dict):
            lat, lon = float(value["lat"]), float(value["lon"])
        elif isinstance(value, str) and "," in value:
            lat, lon = (float(p) for p in value.split(",", 1))
        elif isinstance(value, str):
            return None  # a geohash
        else:
            return "geo_point expected"
    except (KeyError, ValueError, TypeError):
        return f"failed to parse geo_point [{_preview(value)}]"
    if not -90 <= lat <= 90 or not -180 <= lon <= 180:
        return f"illegal latitude value [{lat}] or longitude [{lon}]"
    return None


def _bad_index_name(name: str) -> str | None:
    if not name:
        return "must not be empty"
    if name != name.lower():
        return "must be lowercase"
    if name[0] in "_-+":
        return "must not start with '_', '-', or '+'"
    if any(c in name for c in '\\/*?"<>| ,#:'):
        return 'must not contain the following characters [ , ", *, \\, <, |, ,, >, /, ?]'
    if name in (".", ".."):
        return "must not be '.' or '..'"
    return None


# ---------------------------------------------------------------------------------------------
# The cluster state: indices, templates, policies
# ---------------------------------------------------------------------------------------------


class Cluster:
    """Everything the double stores; survives :meth:`ESDouble.down` / :meth:`ESDouble.up`."""

    def __init__(self, parsing_error_type: str) -> None:
        self.lock = threading.RLock()
        self.indices: dict[str, Index] = {}
        self.templates: dict[str, dict[str, Any]] = {}
        self.component_templates: dict[str, dict[str, Any]] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        #: native realm: users (with their password, as sent), roles, built-in users' changed passwords
        self.users: dict[str, dict[str, Any]] = {}
        self.roles: dict[str, dict[str, Any]] = {}
        self.rules: list[Rule] = []
        self.parsing_error_type = parsing_error_type

    def template_for(self, name: str) -> dict[str, Any] | None:
        matching = [t for t in self.templates.values()
                    if any(fnmatch.fnmatchcase(name, p) for p in t["body"]["index_patterns"])]
        if not matching:
            return None
        return max(matching, key=lambda t: t["body"].get("priority", 0))

    def settings_for_template(self, body: dict[str, Any]) -> dict[str, Any]:
        """The template's settings over its component templates' (flat dotted keys)."""
        merged: dict[str, Any] = {}
        for comp in body.get("composed_of", []):
            if comp in self.component_templates:
                merged.update(_flat_settings(self.component_templates[comp].get("template", {}).get("settings", {})))
        merged.update(_flat_settings(body.get("template", {}).get("settings", {})))
        return merged

    def mappings_for_template(self, body: dict[str, Any]) -> dict[str, Any]:
        parts = []
        for comp in body.get("composed_of", []):
            if comp in self.component_templates:
                parts.append(self.component_templates[comp].get("template", {}).get("mappings", {}))
        parts.append(body.get("template", {}).get("mappings", {}))
        return _merge_mappings(parts)

    def create_index(self, name: str, mappings: dict[str, Any] | None = None,
                     settings: dict[str, Any] | None = None) -> Index:
        problem = _bad_index_name(name)
        if problem:
            raise EsError(400, "invalid_index_name_exception", f"Invalid index name [{name}], {problem}",
                          index=name, index_uuid="_na_")
        if mappings is None:
            template = self.template_for(name)
            mappings = self.mappings_for_template(template["body"]) if template else {}
            if settings is None and template:
                settings = self.settings_for_template(template["body"])
        index = Index(name=name, uuid=uuid.uuid4().hex[:22], mappings=compile_mappings(mappings),
                      field_limit=_field_limit(settings or {}))
        self.indices[name] = index
        return index

    def resolve(self, expression: str, *, must_exist: bool = True) -> list[Index]:
        found: list[Index] = []
        for part in expression.split(","):
            if part in ("_all", "*"):
                found.extend(self.indices.values())
            elif any(c in part for c in "*?"):
                found.extend(i for n, i in self.indices.items() if fnmatch.fnmatchcase(n, part))
            elif part in self.indices:
                found.append(self.indices[part])
            elif must_exist:
                raise EsError(404, "index_not_found_exception", f"no such index [{part}]",
                              **{"resource.type": "index_or_alias", "resource.id": part, "index": part,
                                 "index_uuid": "_na_"})
        return list({i.name: i for i in found}.values())


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


class _Dropped(Exception):
    """Close the connection without answering."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "es-double"
    sys_version = ""
    double: ESDouble  # set on the per-double subclass

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.double._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        self.double._track(self.connection, add=False)

    def do_GET(self) -> None:
        self._handle()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(chunks)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
        if body and self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        return body or None

    def _handle(self) -> None:
        double = self.double
        body = self._read_body()
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        record = RecordedRequest(self.command, path, query, {k.lower(): v for k, v in self.headers.items()},
                                 body if double.record_bodies else None)
        double._record(record)
        try:
            status, payload = double._dispatch(self, path, query, body)
        except _Dropped:
            self._drop()
            return
        filter_path = query.get("filter_path")
        if filter_path and payload is not None:
            payload = filter_response(payload, filter_path)
        data = b"" if payload is None else orjson.dumps(payload)
        self._answer(status, data, path, record)

    def _answer(self, status: int, data: bytes, path: str, record: RecordedRequest) -> None:
        """Write the answer unless a fault says otherwise (``record.status`` stays None then)."""
        double = self.double
        delay = double._take_fault("delay", path)
        # "after_apply" means a write happened: such drops wait for a request that was answered 2xx
        drop = double._take_fault("drop", path, when=("after_apply", "mid_response")) if status < 300 else None
        if delay is not None and double._stopping.wait(delay.seconds):
            self._drop()  # the double went down while this answer was delayed
            return
        if drop is not None:
            if drop.when == "mid_response":
                try:
                    self.wfile.write(self._head(status, len(data)) + data[: max(1, len(data) // 2)])
                    self.wfile.flush()
                except OSError:
                    pass
            self._drop()
            return
        record.status = status  # before writing: the client may look as soon as the answer is out
        try:
            self.wfile.write(self._head(status, len(data)) + (b"" if self.command == "HEAD" else data))
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _head(self, status: int, length: int) -> bytes:
        accept = self.headers.get("Accept", "")
        ctype = _COMPAT_JSON if "vnd.elasticsearch" in accept else b"application/json"
        reason = http.client.responses.get(status, "Unknown").encode()
        lines = [b"HTTP/1.1 %d %s" % (status, reason), b"X-Elastic-Product: Elasticsearch",
                 b"Content-Type: " + ctype, b"Content-Length: %d" % length]
        if status == 401:
            lines.append(b'WWW-Authenticate: Basic realm="security" charset="UTF-8"')
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


# ---------------------------------------------------------------------------------------------
# The double
# ---------------------------------------------------------------------------------------------


class ESDouble:
    """A fake Elasticsearch node on 127.0.0.1. Use as a context manager or via the fixture.

    ``auth``: ``("user", "password")`` and/or ``api_key="id:key"`` to require credentials (401
    otherwise). ``parsing_error_type``: ``document_parsing_exception`` (8.x) or the 7.x
    ``mapper_parsing_exception``. ``record_bodies=False`` keeps memory flat in benchmarks.
    """

    def __init__(self, *, port: int = 0, auth: tuple[str, str] | None = None, api_key: str | None = None,
                 parsing_error_type: str = "document_parsing_exception", record_bodies: bool = True) -> None:
        self.cluster = Cluster(parsing_error_type)
        self.requests: list[RecordedRequest] = []
        self.writes: list[Write] = []
        self.record_bodies = record_bodies
        self.internal_errors: list[Exception] = []
        #: False skips mapping checks and dynamic mapping (benchmarks: measure the sink, not the double)
        self.check_mappings = True
        #: False keeps source lines as bytes, decoded only when read back or seen by a rule (benchmarks)
        self.parse_sources = True
        #: called with the body of every ``_bulk`` request before it is applied (benchmarks: latency)
        self.bulk_observer: Callable[[bytes], None] | None = None
        self._port = port
        self._auth = auth
        self._api_key = api_key
        self._local = threading.local()  # the user of the request this handler thread serves
        self._faults_lock = threading.Lock()
        self._item_faults: list[ItemFault] = []
        self._request_faults: list[RequestFault] = []
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._handler = type("Handler", (_Handler,), {"double": self})

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def start(self) -> ESDouble:
        return self.up()

    def up(self) -> ESDouble:
        """Listen (again) on the same port; stored data is kept."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(("127.0.0.1", self._port), self._handler)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"es-double-{self._port}", daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        """Stop listening and cut every open connection: clients get ``connection refused``."""
        server = self._server
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server = None
        if self._thread is not None:
            self._thread.join(5)

    def close(self) -> None:
        self.down()

    def __enter__(self) -> ESDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._conn_lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def _record(self, record: RecordedRequest) -> None:
        self.requests.append(record)  # list.append is atomic under the GIL

    # -- fault knobs ------------------------------------------------------------------------

    def fail_items(self, status: int = 429, *, every: int | None = None, share: float | None = None,
                   seed: int = 0, ids: set[str] | frozenset[str] | None = None, times: int | None = None,
                   error_type: str | None = None, reason: str | None = None) -> ItemFault:
        """Answer matching bulk items with ``status`` (not applied). With neither ``every``,
        ``share`` nor ``ids`` every item matches; ``times`` caps how many items fail in total."""
        fault = ItemFault(status, every, share, frozenset(ids) if ids is not None else None, times,
                          error_type, reason, random.Random(seed))
        with self._faults_lock:
            self._item_faults.append(fault)
        return fault

    def fail_requests(self, status: int = 503, *, times: int | None = None,
                      paths: tuple[str, ...] = ("*/_bulk",)) -> RequestFault:
        """Answer whole requests on ``paths`` (fnmatch on the path) with an error ``status``."""
        return self._add(RequestFault("status", paths, times, status=status))

    def drop_connections(self, when: str = "after_apply", *, times: int | None = 1,
                         paths: tuple[str, ...] = ("*/_bulk",)) -> RequestFault:
        """Close the connection instead of answering. ``before_apply``: the request is read and
        ignored; ``after_apply``: it is applied, then no answer; ``mid_response``: applied, and half
        of the answer is written before the connection is cut."""
        if when not in ("before_apply", "after_apply", "mid_response"):
            raise ValueError(when)
        return self._add(RequestFault("drop", paths, times, when=when))

    def delay(self, seconds: float, *, times: int | None = 1, paths: tuple[str, ...] = ("*/_bulk",)) -> RequestFault:
        """Wait ``seconds`` before answering (the write is applied first, as a slow node would)."""
        return self._add(RequestFault("delay", paths, times, seconds=seconds))

    def add_rule(self, rule: Rule) -> None:
        """``rule(index, id, source)`` -> None (accept), a reason (400 document parsing error) or
        ``(status, error_type, reason)``; checked for every ``create``/``index`` item."""
        with self.cluster.lock:
            self.cluster.rules.append(rule)

    def clear_faults(self) -> None:
        with self._faults_lock:
            self._item_faults.clear()
            self._request_faults.clear()
        with self.cluster.lock:
            self.cluster.rules.clear()

    def _add(self, fault: RequestFault) -> RequestFault:
        with self._faults_lock:
            self._request_faults.append(fault)
        return fault

    def _take_fault(self, kind: str, path: str, when: tuple[str, ...] | None = None) -> RequestFault | None:
        with self._faults_lock:
            for fault in self._request_faults:
                if (fault.kind == kind and (when is None or fault.when in when) and fault.matches(path)
                        and fault.take()):
                    return fault
        return None

    def _item_fault(self, doc_id: str) -> ItemFault | None:
        if not self._item_faults:
            return None
        with self._faults_lock:
            for fault in self._item_faults:
                if fault.fires(doc_id):
                    return fault
        return None

    # -- reading back -----------------------------------------------------------------------

    def docs(self, index: str = "*") -> list[dict[str, Any]]:
        """Every stored document as ``{"_index", "_id", "_version", "_source"}``."""
        with self.cluster.lock:
            return [{"_index": i.name, "_id": doc_id, "_version": d.version, "_source": d.source}
                    for i in self.cluster.resolve(index, must_exist=False) for doc_id, d in i.docs.items()]

    def get(self, index: str, doc_id: str) -> dict[str, Any] | None:
        with self.cluster.lock:
            idx = self.cluster.indices.get(index)
            stored = idx.docs.get(doc_id) if idx else None
            return stored.source if stored else None

    def count_by_id(self) -> Counter[str]:
        """How many stored documents carry each ``_id``, across all indices (>1: a duplicate)."""
        return Counter(d["_id"] for d in self.docs())

    def count_writes_by_id(self) -> Counter[str]:
        """How many times each ``_id`` was written (created or overwritten) since the start."""
        return Counter(w.id for w in self.writes if w.op in ("create", "index"))

    def bulk_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/_bulk")]

    def assert_exactly_once(self, expected: dict[str, str] | list[tuple[str, str]]) -> None:
        """Each expected ``(index, id)`` is stored once, written once, and nothing else is stored."""
        pairs = list(expected.items()) if isinstance(expected, dict) else list(expected)
        stored = {(d["_index"], d["_id"]): d for d in self.docs()}
        missing = [p for p in pairs if p not in stored]
        extra = sorted(set(stored) - set(pairs))
        written = Counter((w.index, w.id) for w in self.writes if w.op in ("create", "index"))
        twice = {p: n for p, n in written.items() if n > 1}
        assert not missing and not extra and not twice, (
            f"missing={missing[:10]} extra={extra[:10]} written more than once={dict(list(twice.items())[:10])}")

    def refresh(self) -> None:
        with self.cluster.lock:
            for index in self.cluster.indices.values():
                index.visible = set(index.docs)

    def reset(self) -> None:
        """Forget documents, templates, policies, records and faults (keeps listening)."""
        self.clear_faults()
        with self.cluster.lock:
            self.cluster.indices.clear()
            self.cluster.templates.clear()
            self.cluster.component_templates.clear()
            self.cluster.policies.clear()
        self.requests.clear()
        self.writes.clear()

    # -- dispatch ---------------------------------------------------------------------------

    def _check_auth(self, handler: _Handler) -> str | None:
        """Who is asking: None for no security, the configured user or API key (superuser), else
        the name of a user made through ``_security/user`` (whose roles then authorize writes)."""
        if self._auth is None and self._api_key is None:
            return None
        header = handler.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme == "Basic":
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except ValueError:
                user = password = ""
            if self._auth is not None and (user, password) == self._auth:
                return None
            with self.cluster.lock:
                made = self.cluster.users.get(user)
            if made is not None and made.get("password") == password and password:
                return user
        if self._api_key is not None and scheme == "ApiKey":
            if value in (self._api_key, base64.b64encode(self._api_key.encode()).decode()):
                return None
        raise EsError(401, "security_exception", "missing authentication credentials for REST request",
                      header={"WWW-Authenticate": ['Basic realm="security" charset="UTF-8"', "ApiKey"]})

    def _dispatch(self, handler: _Handler, path: str, query: dict[str, str],
                  body: bytes | None) -> tuple[int, Any]:
        try:
            self._local.user = self._check_auth(handler)
            if body is not None:
                ctype = handler.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if ctype not in _ACCEPTED_CONTENT_TYPES:
                    raise EsError(406, "media_type_header_exception",
                                  f"Content-Type header [{handler.headers.get('Content-Type')}] is not supported")
            fault = self._take_fault("status", path)
            if fault is not None:
                type_, reason = _REQUEST_ERRORS.get(fault.status, ("exception", "injected by the double"))
                raise EsError(fault.status, type_, reason)
            if self._take_fault("drop", path, when=("before_apply",)) is not None:
                raise _Dropped
            return self._route(handler.command, path, query, body)
        except EsError as e:
            return e.status, e.body()
        except _Dropped:
            raise
        except orjson.JSONDecodeError as e:
            return 400, EsError(400, "x_content_parse_exception", f"[1:1] {e}").body()
        except Exception as e:  # a bug in the double: answer 500 and keep it for the fixture to report
            self.internal_errors.append(e)
            return 500, EsError(500, "exception", f"es-double internal error: {e!r}").body()

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes | None) -> tuple[int, Any]:
        segs = [s for s in path.split("/") if s]
        cluster = self.cluster
        if not segs:
            if method in ("GET", "HEAD"):
                return 200, self._info()
        elif segs[-1] == "_bulk" and len(segs) <= 2 and method in ("POST", "PUT"):
            return 200, self._bulk(body or b"", segs[0] if len(segs) == 2 else None, query)
        elif segs[0] == "_index_template" and len(segs) <= 2:
            return self._index_template(method, segs[1] if len(segs) == 2 else None, body)
        elif segs[0] == "_component_template" and len(segs) == 2 and method == "PUT":
            doc = orjson.loads(body or b"{}")
            compile_mappings(doc.get("template", {}).get("mappings", {}))
            with cluster.lock:
                cluster.component_templates[segs[1]] = doc
            return 200, {"acknowledged": True}
        elif segs[:2] == ["_ilm", "policy"] and len(segs) == 3:
            return self._ilm(method, segs[2], body)
        elif segs == ["_cluster", "health"] and method in ("GET", "HEAD"):
            return 200, {"cluster_name": CLUSTER_NAME, "status": "green", "timed_out": False,
                         "number_of_nodes": 1, "number_of_data_nodes": 1}
        elif segs[0] == "_security" and len(segs) in (3, 4):
            return self._security(method, segs[1:], body)
        elif len(segs) == 2 and segs[1] == "_settings" and method == "PUT":
            return self._put_settings(segs[0], query, body)
        elif segs[-1] == "_refresh" and len(segs) <= 2 and method in ("POST", "GET"):
            with cluster.lock:
                found = cluster.resolve(segs[0] if len(segs) == 2 else "_all")
                for index in found:
                    index.visible = set(index.docs)
            n = len(found)
            return 200, {"_shards": {"total": n * 2, "successful": n, "failed": 0}}
        elif segs[-1] in ("_count", "_search") and len(segs) <= 2 and method in ("GET", "POST"):
            return 200, self._search(segs[0] if len(segs) == 2 else "_all", segs[-1], query, body)
        elif segs[:2] == ["_cat", "indices"]:
            with cluster.lock:
                rows = [{"health": "yellow", "status": "open", "index": i.name, "uuid": i.uuid, "pri": "1",
                         "rep": "1", "docs.count": str(len(i.docs)), "docs.deleted": "0"}
                        for i in sorted(cluster.indices.values(), key=lambda i: i.name)]
            return 200, rows
        elif len(segs) == 1 and not segs[0].startswith("_"):
            return self._index_api(method, segs[0], body)
        raise EsError(404, "resource_not_found_exception",
                      f"no handler found for uri [{path}] and method [{method}] (es-double)")

    def _security(self, method: str, segs: list[str], body: bytes | None) -> tuple[int, Any]:
        """``PUT _security/role/<name>``, ``PUT _security/user/<name>``, ``POST _security/user/<name>/_password``."""
        doc = orjson.loads(body or b"{}")
        with self.cluster.lock:
            if segs[0] == "role" and len(segs) == 2 and method in ("PUT", "POST"):
                created = segs[1] not in self.cluster.roles
                self.cluster.roles[segs[1]] = doc
                return 200, {"role": {"created": created}}
            if segs[0] == "user" and len(segs) == 2 and method in ("PUT", "POST"):
                if len(doc.get("password", "")) < 6:
                    raise EsError(400, "action_request_validation_exception",
                                  "Validation Failed: 1: passwords must be at least [6] characters long;")
                created = segs[1] not in self.cluster.users
                self.cluster.users[segs[1]] = doc
                return 200, {"created": created}
            if segs[0] == "user" and len(segs) == 3 and segs[2] == "_password" and method in ("PUT", "POST"):
                self.cluster.users.setdefault(segs[1], {})["password"] = doc["password"]
                return 200, {}
        raise EsError(404, "resource_not_found_exception", f"no handler for _security/{'/'.join(segs)} (es-double)")

    def _put_settings(self, target: str, query: dict[str, str], body: bytes | None) -> tuple[int, Any]:
        doc = orjson.loads(body or b"{}")
        flat: dict[str, Any] = {}

        def walk(obj: dict[str, Any], prefix: str) -> None:
            for k, v in obj.items():
                if isinstance(v, dict):
                    walk(v, f"{prefix}{k}.")
                else:
                    flat[f"{prefix}{k}" if f"{prefix}{k}".startswith("index.") else f"index.{prefix}{k}"] = v

        walk(doc, "")
        with self.cluster.lock:
            allow_none = query.get("allow_no_indices", "true") == "true"
            for index in self.cluster.resolve(target, must_exist=not allow_none):
                index.settings.update(flat)
        return 200, {"acknowledged": True}

    def _info(self) -> dict[str, Any]:
        return {"name": "es-double", "cluster_name": CLUSTER_NAME, "cluster_uuid": "es-double-cluster-uuid",
                "version": {"number": VERSION, "build_flavor": "default", "build_type": "docker",
                            "build_hash": "0" * 40, "build_date": "2024-08-05T10:05:34.233336849Z",
                            "build_snapshot": False, "lucene_version": "9.11.1",
                            "minimum_wire_compatibility_version": "7.17.0",
                            "minimum_index_compatibility_version": "7.0.0"},
                "tagline": "You Know, for Search"}

    def _index_template(self, method: str, name: str | None, body: bytes | None) -> tuple[int, Any]:
        cluster = self.cluster
        with cluster.lock:
            if method == "PUT" and name:
                doc = orjson.loads(body or b"{}")
                allowed = {"index_patterns", "template", "composed_of", "priority", "version", "_meta",
                           "data_stream", "allow_auto_create", "ignore_missing_component_templates", "deprecated"}
                unknown = sorted(set(doc) - allowed)
                if unknown:
                    raise EsError(400, "x_content_parse_exception", f"[1:2] [index_template] unknown field [{unknown[0]}]")
                if not doc.get("index_patterns"):
                    raise EsError(400, "action_request_validation_exception",
                                  "Validation Failed: 1: index patterns are missing;")
                if isinstance(doc["index_patterns"], str):
                    doc["index_patterns"] = [doc["index_patterns"]]
                for comp in doc.get("composed_of", []):
                    if comp not in cluster.component_templates and comp not in doc.get(
                            "ignore_missing_component_templates", []):
                        raise EsError(400, "invalid_index_template_exception",
                                      f"index_template [{name}] invalid, cause [index template [{name}] specifies "
                                      f"component templates [{comp}] that do not exist]")
                compile_mappings(cluster.mappings_for_template(doc))
                cluster.templates[name] = {"name": name, "body": doc}
                return 200, {"acknowledged": True}
            if method in ("GET", "HEAD"):
                found = [t for n, t in sorted(cluster.templates.items()) if name is None or fnmatch.fnmatchcase(n, name)]
                if not found and name is not None and not any(c in name for c in "*?"):
                    raise EsError(404, "resource_not_found_exception", f"index template matching [{name}] not found")
                return 200, {"index_templates": [{"name": t["name"], "index_template": t["body"]} for t in found]}
            if method == "DELETE" and name:
                if name not in cluster.templates:
                    raise EsError(404, "resource_not_found_exception", f"index_template [{name}] missing")
                del cluster.templates[name]
                return 200, {"acknowledged": True}
        raise EsError(405, "illegal_argument_exception", f"method [{method}] not allowed on _index_template")

    def _ilm(self, method: str, name: str, body: bytes | None) -> tuple[int, Any]:
        cluster = self.cluster
        with cluster.lock:
            if method == "PUT":
                doc = orjson.loads(body or b"{}")
                policy = doc.get("policy")
                if not isinstance(policy, dict) or set(doc) - {"policy"}:
                    raise EsError(400, "x_content_parse_exception", "[1:2] [put_lifecycle_request] expected one field [policy]")
                if set(policy.get("phases", {})) - {"hot", "warm", "cold", "frozen", "delete"}:
                    raise EsError(400, "illegal_argument_exception", "Timeseries lifecycle does not support phase "
                                  f"{sorted(set(policy['phases']) - {'hot', 'warm', 'cold', 'frozen', 'delete'})}")
                old = cluster.policies.get(name)
                cluster.policies[name] = {"version": (old["version"] + 1) if old else 1,
                                          "modified_date": datetime.now(UTC).isoformat(timespec="milliseconds"),
                                          "policy": policy,
                                          "in_use_by": {"indices": [], "data_streams": [], "composable_templates": []}}
                return 200, {"acknowledged": True}
            if method == "GET":
                if name not in cluster.policies:
                    raise EsError(404, "resource_not_found_exception", f"Lifecycle policy not found: {name}")
                return 200, {name: cluster.policies[name]}
            if method == "DELETE" and name in cluster.policies:
                del cluster.policies[name]
                return 200, {"acknowledged": True}
        raise EsError(404, "resource_not_found_exception", f"Lifecycle policy not found: {name}")

    def _index_api(self, method: str, name: str, body: bytes | None) -> tuple[int, Any]:
        cluster = self.cluster
        with cluster.lock:
            if method == "PUT":
                if name in cluster.indices:
                    raise EsError(400, "resource_already_exists_exception", f"index [{name}/x] already exists",
                                  index=name)
                doc = orjson.loads(body) if body else {}
                mappings = doc.get("mappings") if "mappings" in doc else None
                cluster.create_index(name, mappings, _flat_settings(doc.get("settings", {})) if "settings" in doc else None)
                return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}
            if method == "DELETE":
                for index in cluster.resolve(name):
                    del cluster.indices[index.name]
                return 200, {"acknowledged": True}
            if method in ("GET", "HEAD"):
                found = cluster.resolve(name)
                return 200, {i.name: {"aliases": {}, "mappings": i.mappings["source"], "settings": {}} for i in found}
        raise EsError(405, "illegal_argument_exception", f"method [{method}] not allowed on [{name}]")

    def _search(self, target: str, kind: str, query: dict[str, str], body: bytes | None) -> dict[str, Any]:
        request = orjson.loads(body) if body else {}
        q = request.get("query", {"match_all": {}})
        size = int(query.get("size", request.get("size", 10)))
        with self.cluster.lock:
            hits = [(i.name, doc_id, i.docs[doc_id].source)
                    for i in self.cluster.resolve(target, must_exist=not any(c in target for c in "*?"))
                    for doc_id in sorted(i.visible) if doc_id in i.docs]
        hits = [h for h in hits if _matches(q, h[1], h[2])]
        if kind == "_count":
            return {"count": len(hits), "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0}}
        return {"took": 1, "timed_out": False, "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                "hits": {"total": {"value": len(hits), "relation": "eq"}, "max_score": 1.0 if hits else None,
                         "hits": [{"_index": n, "_id": i, "_score": 1.0, "_source": s} for n, i, s in hits[:size]]}}

    # -- bulk -------------------------------------------------------------------------------

    def _bulk(self, body: bytes, default_index: str | None, query: dict[str, str]) -> dict[str, Any]:
        started = time.perf_counter()
        if not body:
            raise EsError(400, "action_request_validation_exception", "Validation Failed: 1: no requests added;")
        if not body.endswith(b"\n"):
            raise EsError(400, "illegal_argument_exception", "The bulk request must be terminated by a newline [\\n]")
        if self.bulk_observer is not None:
            self.bulk_observer(body)
        lines = body.split(b"\n")
        lines.pop()  # the empty string after the final newline
        parse_sources = self.parse_sources
        ops: list[tuple[str, str, str | None, Any, tuple[int, str] | None]] = []
        i = 0
        loads = orjson.loads
        while i < len(lines):
            line = lines[i]
            if not line.strip():
                i += 1
                continue
            try:
                meta = loads(line)
            except orjson.JSONDecodeError as e:
                raise EsError(400, "x_content_parse_exception", f"[1:1] Malformed action/metadata line [{i + 1}]: {e}") from e
            if not isinstance(meta, dict) or len(meta) != 1:
                raise EsError(400, "illegal_argument_exception",
                              f"Malformed action/metadata line [{i + 1}], expected START_OBJECT or END_OBJECT")
            (op, params), = meta.items()
            if op not in ("create", "index", "delete"):
                raise EsError(400, "illegal_argument_exception",
                              f"Malformed action/metadata line [{i + 1}], expected field [create], [delete], [index] "
                              f"or [update] but found [{op}]")
            index = params.get("_index", default_index)
            if index is None:
                raise EsError(400, "action_request_validation_exception", "Validation Failed: 1: index is missing;")
            doc_id = params.get("_id")
            source = None
            if op != "delete":
                i += 1
                if i >= len(lines):
                    raise EsError(400, "illegal_argument_exception", f"Malformed action/metadata line [{i}], "
                                  "expected a source line")
                if parse_sources:
                    try:
                        source = loads(lines[i])
                    except orjson.JSONDecodeError:
                        source = _MALFORMED
                else:  # kept as bytes: it only has to look like a JSON object
                    raw = lines[i].strip()
                    source = _Raw(raw) if raw[:1] == b"{" and raw[-1:] == b"}" else _MALFORMED
            elif doc_id is None:
                raise EsError(400, "action_request_validation_exception", "Validation Failed: 1: id is missing;")
            ops.append((op, index, None if doc_id is None else str(doc_id), source, _versioning(op, params)))
            i += 1
        if not ops:
            raise EsError(400, "action_request_validation_exception", "Validation Failed: 1: no requests added;")
        items = []
        errors = False
        refresh = query.get("refresh") in ("", "true", "wait_for")
        with self.cluster.lock:
            for op, index, doc_id, source, versioning in ops:
                item = self._apply(op, index, doc_id, source, versioning)
                if "error" in item:
                    errors = True
                items.append({op: item})
            if refresh:
                for index in self.cluster.indices.values():
                    index.visible = set(index.docs)
        return {"errors": errors, "took": int((time.perf_counter() - started) * 1000), "items": items}

    def _apply(self, op: str, index_name: str, doc_id: str | None, source: Any,
               versioning: tuple[int, str] | None = None) -> dict[str, Any]:
        cluster = self.cluster
        if doc_id is None:
            doc_id = base64.urlsafe_b64encode(uuid.uuid4().bytes[:15]).decode()
        fault = self._item_fault(doc_id)
        if fault is not None:
            type_, reason = _ITEM_ERRORS.get(fault.status, ("exception", "injected by the double"))
            return _item_error(index_name, doc_id, fault.status, fault.error_type or type_,
                               (fault.reason or reason).format(index=index_name))
        index = cluster.indices.get(index_name)
        denied = self._unauthorized(op, index_name, creating=index is None and op != "delete")
        if denied is not None:
            return _item_error(index_name, doc_id, 403, "security_exception", denied)
        if index is None:
            if op == "delete":
                return {"_index": index_name, "_id": doc_id, "status": 404, "error": {
                    "type": "index_not_found_exception", "reason": f"no such index [{index_name}]",
                    "index": index_name, "index_uuid": "_na_"}}
            try:
                index = cluster.create_index(index_name)
            except EsError as e:
                return {"_index": index_name, "_id": doc_id, "status": e.status, "error": e.error_object()}
        existing = index.docs.get(doc_id)
        if op == "delete":
            if existing is None:
                index.seq_no += 1
                return _item_ok(index, doc_id, 1, "not_found", 404)
            del index.docs[doc_id]
            index.visible.discard(doc_id)
            index.seq_no += 1
            self.writes.append(Write("delete", index.name, doc_id, existing.version + 1))
            return _item_ok(index, doc_id, existing.version + 1, "deleted", 200)
        raw = None
        if isinstance(source, _Raw):
            raw = source.data
            source = None
            if cluster.rules or self.check_mappings:
                try:
                    source = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    source = _MALFORMED
                if not isinstance(source, dict):
                    source = _MALFORMED
        elif not isinstance(source, dict):
            source = _MALFORMED
        if source is _MALFORMED:
            return _item_error(index.name, doc_id, 400, cluster.parsing_error_type,
                               "[1:1] failed to parse: source is not a JSON object")
        if op == "create" and existing is not None:
            return _item_error(index.name, doc_id, 409, "version_conflict_engine_exception",
                               f"[{doc_id}]: version conflict, document already exists (current version "
                               f"[{existing.version}])", index_uuid=index.uuid, shard="0", index=index.name)
        if versioning is not None and existing is not None:
            given, vtype = versioning
            if given < existing.version or (given == existing.version and vtype != "external_gte"):
                relation = "higher than" if vtype == "external_gte" else "higher or equal to"
                return _item_error(index.name, doc_id, 409, "version_conflict_engine_exception",
                                   f"[{doc_id}]: version conflict, current version [{existing.version}] is "
                                   f"{relation} the one provided [{given}]", index_uuid=index.uuid, shard="0",
                                   index=index.name)
        if self.check_mappings or cluster.rules:
            mapper = _Mapper(index, doc_id, cluster.parsing_error_type)
            try:
                if self.check_mappings:
                    mapper.walk(source, "")
                for rule in cluster.rules:
                    verdict = rule(index.name, doc_id, source)
                    if isinstance(verdict, str):
                        raise EsError(400, cluster.parsing_error_type, verdict)
                    if verdict is not None:
                        raise EsError(*verdict)
            except EsError as e:
                return _item_error(index.name, doc_id, e.status, e.type, e.reason, **e.extra)
            if mapper.new:
                added = field_count(mapper.new)
                total = field_count(index.mappings["fields"])
                if added and total + added > index.field_limit:
                    return _item_error(index.name, doc_id, 400, "illegal_argument_exception",
                                       f"Limit of total fields [{index.field_limit}] has been exceeded while "
                                       f"adding new fields [{added}]")
                index.mappings["fields"].update(mapper.new)
        index.seq_no += 1
        version = versioning[0] if versioning is not None else (existing.version + 1 if existing else 1)
        index.docs[doc_id] = StoredDoc(source, version, index.seq_no, raw)
        self.writes.append(Write(op, index.name, doc_id, version))
        return _item_ok(index, doc_id, version, "updated" if existing else "created", 200 if existing else 201)

    def _unauthorized(self, op: str, index_name: str, *, creating: bool) -> str | None:
        """Why a user made through ``_security`` may not do ``op`` on ``index_name`` (None: it may),
        from the index privileges of its roles, as Elasticsearch grants them: ``create`` needs
        ``create_doc``/``create``/``index``/``write``/``all``, ``index`` (which may overwrite)
        ``index``/``write``/``all``, ``delete`` ``delete``/``write``/``all``, and auto-creating the
        index ``create_index``/``auto_configure``/``manage``/``all``."""
        user = getattr(self._local, "user", None)
        if user is None:
            return None
        cluster = self.cluster
        roles = list(cluster.users.get(user, {}).get("roles", []))
        held: set[str] = set()
        for role in roles:
            for entry in cluster.roles.get(role, {}).get("indices", []):
                if any(fnmatch.fnmatchcase(index_name, n) for n in entry.get("names", [])):
                    held.update(entry.get("privileges", []))
        for needed, action in ((_WRITE_PRIVILEGES[op], f"indices:data/write/{op}"),
                               (_AUTO_CREATE_PRIVILEGES if creating else None, "indices:admin/auto_create")):
            if needed is not None and not held & set(needed):
                return (f"action [{action}] is unauthorized for user [{user}] with effective roles "
                        f"[{','.join(roles)}] on indices [{index_name}], this action is granted by the index "
                        f"privileges [{','.join(needed)}]")
        return None

    # -- capacity ---------------------------------------------------------------------------

    def ceiling(self, *, docs: int = 20_000, batch: int = 1_000, doc: dict[str, Any] | None = None) -> float:
        """Documents per second this double indexes through plain HTTP bulk (no client library),
        into a scratch index that is deleted afterwards: compare a benchmark's rate with it."""
        sample = orjson.dumps(doc or {"@timestamp": "2024-05-17T16:02:03Z", "message": "x" * 200,
                                      "host": {"hostname": "h"}, "source": {"ip": "192.0.2.1"}})
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=60)
        headers = {"Content-Type": "application/x-ndjson"}
        if self._auth:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(self._auth).encode()).decode()
        started = time.perf_counter()
        sent = 0
        try:
            while sent < docs:
                n = min(batch, docs - sent)
                body = b"".join(b'{"create":{"_index":"es-double-ceiling","_id":"%d"}}\n%s\n' % (sent + k, sample)
                                for k in range(n))
                conn.request("POST", "/_bulk", body=body, headers=headers)
                conn.getresponse().read()
                sent += n
        finally:
            conn.close()
        elapsed = time.perf_counter() - started
        with self.cluster.lock:
            self.cluster.indices.pop("es-double-ceiling", None)
        self.writes[:] = [w for w in self.writes if w.index != "es-double-ceiling"]
        self.requests[:] = [r for r in self.requests if b"es-double-ceiling" not in (r.body or b"")]
        return sent / elapsed if elapsed > 0 else float("inf")


_MALFORMED = object()


class _Raw:
    """A source line kept as bytes (``parse_sources`` off)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def compile_filter_path(filter_path: str) -> dict[str, Any]:
    """``"errors,items.*.status"`` as a tree ``{"errors": {}, "items": {"*": {"status": {}}}}``
    (an empty dict: keep everything below)."""
    tree: dict[str, Any] = {}
    for expr in filter_path.split(","):
        expr = expr.strip()
        if not expr:
            continue
        node = tree
        parts = expr.split(".")
        for k, part in enumerate(parts):
            if k == len(parts) - 1:
                node[part] = {}
            else:
                child = node.get(part)
                if child == {} and part in node:
                    break  # a shorter path already keeps everything below
                node = node.setdefault(part, {"\0": True})
    return tree


def _filter(value: Any, tree: dict[str, Any]) -> Any:
    """``value`` with only the paths of ``tree``; ``_MISSING`` when nothing matches."""
    if not tree or set(tree) == {"\0"}:
        return value
    if isinstance(value, list):
        kept = [v for v in (_filter(x, tree) for x in value) if v is not _MISSING]
        return kept if kept else _MISSING
    if not isinstance(value, dict):
        return _MISSING
    out = {}
    star = tree.get("*")
    if star is None:  # only named keys: look those up (an item has many keys, a filter few)
        for key, sub in tree.items():
            if key in value and key != "\0":
                kept = _filter(value[key], sub)
                if kept is not _MISSING:
                    out[key] = kept
        return out if out else _MISSING
    for key, v in value.items():
        sub = tree.get(key, star)
        kept = _filter(v, sub)
        if kept is not _MISSING:
            out[key] = kept
    return out if out else _MISSING


_MISSING = object()


def filter_response(payload: Any, filter_path: str) -> Any:
    """Elasticsearch's ``filter_path`` response filtering (``*`` for any one key; no ``**`` or
    ``-`` exclusions); an answer with nothing left is ``{}``."""
    kept = _filter(payload, compile_filter_path(filter_path))
    return {} if kept is _MISSING else kept


#: the index privileges that grant each bulk operation, and the auto-creation of an index
_WRITE_PRIVILEGES = {"create": ("create_doc", "create", "index", "write", "all"),
                     "index": ("index", "write", "all"), "delete": ("delete", "write", "all")}
_AUTO_CREATE_PRIVILEGES = ("create_index", "auto_configure", "manage", "all")

#: the largest external version Elasticsearch accepts (Long.MAX_VALUE - 1: MAX_VALUE is reserved)
MAX_EXTERNAL_VERSION = 2**63 - 2


def _versioning(op: str, params: dict[str, Any]) -> tuple[int, str] | None:
    """``(version, version_type)`` of a bulk action line that asks for external versioning, None for
    internal; what Elasticsearch 8 refuses in the metadata fails the request (400), as there."""
    vtype = params.get("version_type", "internal")
    version = params.get("version")
    if vtype not in ("internal", "external", "external_gt", "external_gte"):
        raise EsError(400, "illegal_argument_exception", f"No version type match [{vtype}]")
    if vtype == "internal":
        if version is not None:
            raise EsError(400, "action_request_validation_exception",
                          "Validation Failed: 1: internal versioning can not be used for optimistic concurrency "
                          "control. Please use `if_seq_no` and `if_primary_term` instead;")
        return None
    if op == "create":
        raise EsError(400, "action_request_validation_exception",
                      "Validation Failed: 1: create operations only support internal versioning. use index instead;")
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= MAX_EXTERNAL_VERSION:
        raise EsError(400, "action_request_validation_exception",
                      f"Validation Failed: 1: illegal version value [{version}] for version type [{vtype}];")
    return version, "external_gte" if vtype == "external_gte" else "external"


def _item_ok(index: Index, doc_id: str, version: int, result: str, status: int) -> dict[str, Any]:
    return {"_index": index.name, "_id": doc_id, "_version": version, "result": result,
            "_shards": {"total": 2, "successful": 1, "failed": 0}, "_seq_no": index.seq_no,
            "_primary_term": 1, "status": status}


def _item_error(index_name: str, doc_id: str, status: int, type_: str, reason: str, **extra: Any) -> dict[str, Any]:
    return {"_index": index_name, "_id": doc_id, "status": status, "error": {"type": type_, "reason": reason, **extra}}


def _matches(q: dict[str, Any], doc_id: str, source: dict[str, Any]) -> bool:
    if not q or "match_all" in q:
        return True
    if "ids" in q:
        return doc_id in q["ids"].get("values", [])
    if "term" in q:
        (path, want), = q["term"].items()
        if isinstance(want, dict):
            want = want.get("value")
        return want in _values_at(source, path)
    if "bool" in q:
        return all(_matches(c, doc_id, source) for c in q["bool"].get("filter", []) + q["bool"].get("must", []))
    raise EsError(400, "parsing_exception", f"unknown query [{next(iter(q))}] (es-double knows match_all, ids, term, bool)")


def _values_at(source: Any, path: str) -> list[Any]:
    if not path:
        return source if isinstance(source, list) else [source]
    if isinstance(source, list):
        return [v for s in source for v in _values_at(s, path)]
    if not isinstance(source, dict):
        return []
    if path in source:
        return _values_at(source[path], "")
    head, _, rest = path.partition(".")
    return _values_at(source.get(head), rest) if rest else []


@pytest.fixture
def es_double() -> Iterator[ESDouble]:
    """A running :class:`ESDouble` for one test."""
    with ESDouble() as double:
        yield double
    assert not double.internal_errors, f"es-double internal errors: {double.internal_errors!r}"
