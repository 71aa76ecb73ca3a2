"""The index's field limit (``index.mapping.total_fields.limit``, 2000 in our template) against what
the parsers write: a record with thousands of arguments, and one document of every catalogue line
in one daily index (issue 12, item 4: one EXECVE of ~1,900 arguments made ~2,100 fields)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from ingest.document import flatten
from ingest.parsers.auditd import AuditdParser
from ingest.parsers.base import LineContext
from ingest.setup.template import build_setup, install
from tests.es_double import ESDouble
from tests.parsers.catalogue import Parsers, load

INDEX = "audit-2024.12.09"


@pytest.fixture
def es() -> Iterator[ESDouble]:
    with ESDouble() as double:
        yield double
    assert not double.internal_errors


def client(double: ESDouble) -> Elasticsearch:
    return Elasticsearch(double.url, max_retries=0, retry_on_timeout=False, request_timeout=30)


def bulk(es_client: Elasticsearch, docs: list[dict[str, Any]], prefix: str = "d") -> list[dict[str, Any]]:
    operations: list[dict[str, Any]] = []
    for i, doc in enumerate(docs):
        operations += [{"create": {"_index": INDEX, "_id": f"{prefix}{i}"}}, doc]
    return [item["create"] for item in es_client.bulk(operations=operations)["items"]]


def long_execve(n: int) -> str:
    args = " ".join(f'a{i}="file-{i:05d}.log"' for i in range(1, n))
    return f'type=EXECVE msg=audit(1733744000.101:8001): argc={n} a0="rm" {args}'


def test_the_double_counts_fields_against_the_limit(es: ESDouble) -> None:
    c = client(es)
    c.indices.put_index_template(name="small", body={
        "index_patterns": ["audit-*"],
        "template": {"settings": {"index.mapping.total_fields.limit": 10},
                     "mappings": {"dynamic_templates": [{"s": {"match_mapping_type": "string",
                                                               "mapping": {"type": "keyword"}}}]}}})
    [ok] = bulk(c, [{"a": {f"k{i}": "v" for i in range(8)}}])  # a + 8 keywords = 9 fields
    assert ok["status"] == 201
    [over] = bulk(c, [{"a": {"k8": "v", "k9": "v"}}], prefix="e")
    assert over["status"] == 400 and over["error"]["type"] == "illegal_argument_exception"
    assert over["error"]["reason"] == "Limit of total fields [10] has been exceeded while adding new fields [2]"
    [known] = bulk(c, [{"a": {"k1": "w"}}], prefix="f")  # no new field: still fine
    assert known["status"] == 201


def test_default_string_mapping_counts_its_keyword_sub_field(es: ESDouble) -> None:
    c = client(es)
    c.indices.put_index_template(name="plain", body={
        "index_patterns": ["audit-*"], "template": {"settings": {"index": {"mapping": {"total_fields": {"limit": 3}}}}}})
    [ok] = bulk(c, [{"x": "text"}])  # x + x.keyword
    assert ok["status"] == 201
    [over] = bulk(c, [{"y": "text"}], prefix="e")
    assert over["status"] == 400 and "adding new fields [2]" in over["error"]["reason"]


def test_an_execve_of_1900_arguments_is_indexed(es: ESDouble) -> None:
    c = client(es)
    install(c, build_setup())
    parser, ctx = AuditdParser(), LineContext()
    doc = parser.parse(long_execve(1900), ctx)
    assert doc["process"]["args_count"] == 1900
    [item] = bulk(c, [doc])
    assert item["status"] == 201, item
    # what one field per argument would have done: rejected, like the documents
    shaped = dict(doc, auditd={"log": {**doc["auditd"]["log"], **{f"a{i}": "x" for i in range(1900)}}})
    [old] = bulk(c, [shaped], prefix="old")
    assert old["status"] == 400 and "Limit of total fields [2000]" in old["error"]["reason"]


@pytest.mark.parametrize("order", ["forward", "backward"])
def test_every_catalogue_line_fits_in_one_daily_index(es: ESDouble, order: str) -> None:
    """One document of each catalogue line (every kind) in one index, in both orders (a field's
    first value decides its dynamic mapping): none rejected (ip fields, types, the field limit),
    and the fields they make leave room under the limit."""
    c = client(es)
    install(c, build_setup())
    parsers = Parsers()
    entries = load() if order == "forward" else load()[::-1]
    docs = [parsers.parse(entry) for entry in entries]
    items = bulk(c, docs)
    rejected = [(entry.name, item["error"]) for entry, item in zip(entries, items, strict=True)
                if item["status"] != 201]
    assert rejected == []
    index = es.cluster.indices[INDEX]
    from tests.es_double import field_count

    used = field_count(index.mappings["fields"])
    assert used < index.field_limit * 0.75, used
    assert max(len(flatten(d)) for d in docs) < 120
