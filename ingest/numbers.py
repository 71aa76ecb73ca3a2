"""Numbers that fit the fields Elasticsearch stores them in, checked before the bulk.

Elasticsearch rejects a whole document (400 ``document_parsing_exception``) when one number does
not fit its field: a ``long`` beyond -2^63..2^63-1 (a 40-digit ``log.offset``, a 20-digit pid),
a ``float`` beyond ±3.4e38. Such a number comes from the event (Filebeat's ``fields``, a JSON
number orjson read as a float) or from a line (digits a parser turned into an ``int``); the line
itself is still worth indexing. So a number that does not fit is dropped from the document,
which is tagged :data:`OUT_OF_RANGE_TAG`; the event's ``message`` still holds the line.

The field types come from the index template (:mod:`ingest.setup.template`); a field it does not
name is mapped dynamically, integers as ``long`` and fractions as ``float`` (its dynamic
templates). ``keyword``, ``date``, ``flattened`` and other fields take any number as it is.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

OUT_OF_RANGE_TAG = "_number_out_of_range"
#: what :mod:`ingest.route` reads a number beyond a double as (``1e400``, 5,000 digits): too large
#: for any field, so it is dropped here like any other
TOO_LARGE = 2**64

_dumps = orjson.dumps
_STRICT = orjson.OPT_STRICT_INTEGER

_INTS: dict[str, tuple[int, int]] = {
    "long": (-(2**63), 2**63 - 1), "integer": (-(2**31), 2**31 - 1), "short": (-(2**15), 2**15 - 1),
    "byte": (-128, 127), "unsigned_long": (0, 2**64 - 1)}
_FLOATS: dict[str, float] = {"double": 1.7976931348623157e308, "float": 3.4028234663852886e38,
                             "half_float": 65504.0, "scaled_float": 1.7976931348623157e308}
#: a field not in the template: integers dynamically ``long``, fractions ``float``
_DYNAMIC: tuple[tuple[int, int], float] = (_INTS["long"], _FLOATS["float"])
_ANY = None  # a field that takes any number (keyword, date, flattened...): nothing below is checked

#: one level of the mapping: name -> (limits of a numeric field, or None for any number; children)
Node = dict[str, tuple[tuple[tuple[int, int], float] | None, "Node | None"]]


def compile_limits(properties: dict[str, Any]) -> Node:
    """The limits tree of a mapping's ``properties`` (the template's, nested)."""
    node: Node = {}
    for name, spec in properties.items():
        if "properties" in spec:
            node[name] = (_DYNAMIC, compile_limits(spec["properties"]))
            continue
        ftype = spec.get("type", "object")
        if ftype in _INTS:
            lo_hi = _INTS[ftype]
            node[name] = ((lo_hi, float(lo_hi[1])), {})
        elif ftype in _FLOATS:
            node[name] = (((-(2**63), 2**63 - 1), _FLOATS[ftype]), {})
        elif ftype == "object":
            node[name] = (_DYNAMIC, {})
        else:
            node[name] = (_ANY, None)
    return node


def default_limits() -> Node:
    from ingest.setup.template import mappings

    return compile_limits(mappings()["properties"])


def _fits(value: Any, limits: tuple[tuple[int, int], float]) -> bool:
    if type(value) is int:
        lo, hi = limits[0]
        return lo <= value <= hi
    return math.isfinite(value) and abs(value) <= limits[1]


def fit_numbers(doc: dict[str, Any], node: Node | None = None) -> list[str]:
    """Drop the numbers of ``doc`` that do not fit their fields; their dotted paths (tagged if any)."""
    dropped = _walk(doc, node if node is not None else _default(), "", 0)
    if dropped:
        tags = doc.setdefault("tags", [])
        if OUT_OF_RANGE_TAG not in tags:
            tags.append(OUT_OF_RANGE_TAG)
    return dropped


def dumps_document(doc: dict[str, Any]) -> bytes:
    """``doc`` as JSON for the bulk (and ``parse``), with the numbers that do not fit dropped.

    Runs for every document: orjson (in C) checks in strict mode that no integer is beyond 2^53;
    only a document with one (or that orjson cannot encode at all) is walked in Python by
    :func:`fit_numbers`, then encoded as it is (raises ``orjson.JSONEncodeError`` if it still
    cannot be). Not checked: a finite float beyond a ``float`` field's 3.4e38 (rare: Elasticsearch
    rejects the document and it is dead-lettered with that reason).
    """
    try:
        return _dumps(doc, None, _STRICT)  # positional: cheaper than the keyword, per document
    except orjson.JSONEncodeError:
        fit_numbers(doc)
        return _dumps(doc)


_LIMITS: list[Node] = []


def _default() -> Node:
    if not _LIMITS:
        _LIMITS.append(default_limits())
    return _LIMITS[0]


#: deeper than orjson encodes (255): such a document is dead-lettered by the sink as it is
MAX_DEPTH = 256


def _walk(obj: dict[str, Any], node: Node | None, prefix: str, depth: int) -> list[str]:
    dropped: list[str] = []
    if depth > MAX_DEPTH:
        return dropped
    bad: list[str] | None = None
    for key, value in obj.items():
        t = type(value)
        if t is str:
            continue
        entry = node.get(key) if node is not None else None
        limits, child = entry if entry is not None else (_DYNAMIC, None)
        if limits is None:  # keyword, date, flattened...: any number, anything below
            continue
        if t is dict:
            dropped += _walk(value, child, f"{prefix}{key}.", depth + 1)
        elif t is int or t is float:
            if not _fits(value, limits):
                bad = bad or []
                bad.append(key)
        elif t is list:
            kept = [v for v in value if not ((type(v) is int or type(v) is float) and not _fits(v, limits))]
            if len(kept) != len(value):
                dropped.append(prefix + key)
                value[:] = kept
            for v in kept:
                if type(v) is dict:
                    dropped += _walk(v, child, f"{prefix}{key}.", depth + 1)
    if bad:
        for key in bad:
            del obj[key]
            dropped.append(prefix + key)
    return dropped
