"""Document helpers: the generated ``related.*`` writer agrees with ``add_related`` one by one."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ingest.document import add_related, related_writer

PATHS = {"user": (("user", "name"), ("user", "target", "name")), "ip": (("source", "ip"),),
         "hosts": (("host", "hostname"),)}


def by_hand(doc: dict[str, Any]) -> None:
    for kind, paths in PATHS.items():
        for path in paths:
            cur: Any = doc
            for part in path:
                cur = cur.get(part) if isinstance(cur, dict) else None
            add_related(doc, kind, cur)


@pytest.mark.parametrize("doc", [
    {},
    {"user": {"name": "root", "target": {"name": "root"}}, "source": {"ip": "10.0.0.1"}},
    {"user": {"name": "", "target": {"name": "bob"}}, "host": {"hostname": "a3"}},
    {"user": "not an object", "source": {"ip": None}, "host": {}},
    {"user": {"name": "alice"}, "related": {"user": ["carol", "alice"], "ip": []}},
    {"user": {"target": "scalar"}, "related": {"hosts": ["x"]}, "host": {"hostname": "x"}},
])
def test_related_writer_matches_add_related(doc: dict[str, Any]) -> None:
    expected = copy.deepcopy(doc)
    by_hand(expected)
    related_writer(PATHS)(doc)
    assert doc == expected


def test_related_writer_without_values_adds_nothing() -> None:
    doc: dict[str, Any] = {"message": "x"}
    related_writer(PATHS)(doc)
    assert doc == {"message": "x"}
