"""The Elasticsearch double, driven by the official client: contract first, then each fault."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any

import elastic_transport
import orjson
import pytest
from elasticsearch import ApiError, Elasticsearch, NotFoundError

from tests.es_double import ESDouble

INDEX = "audit-2024.05.17"
TEMPLATE = {
    "index_patterns": ["audit-*"],
    "priority": 100,
    "template": {"mappings": {"properties": {
        "@timestamp": {"type": "date"},
        "n": {"type": "long"},
        "ok": {"type": "boolean"},
        "source": {"properties": {"ip": {"type": "ip"}, "geo": {"properties": {"location": {"type": "geo_point"}}}}},
        "host": {"properties": {"hostname": {"type": "keyword"}}},
        "user": {"properties": {"name": {"type": "keyword"}}},
        "vpnuser": {"type": "alias", "path": "user.name"},
    }}},
}


@pytest.fixture
def es() -> Iterator[ESDouble]:
    with ESDouble() as double:
        yield double
    assert not double.internal_errors


def client(double: ESDouble, **kw: Any) -> Elasticsearch:
    kw.setdefault("request_timeout", 10)
    return Elasticsearch(double.url, max_retries=0, retry_on_timeout=False, **kw)


def ops(*pairs: tuple[str, dict[str, Any]], op: str = "create", index: str = INDEX) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for doc_id, doc in pairs:
        out += [{op: {"_index": index, "_id": doc_id}}, doc]
    return out


def raw(double: ESDouble, method: str, path: str, body: bytes | None = None,
        ctype: str = "application/x-ndjson") -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", double.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": ctype} if body is not None else {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, orjson.loads(data) if data else None
    finally:
        conn.close()


# -- contract -------------------------------------------------------------------------------------


def test_info_ping_and_product_header(es: ESDouble) -> None:
    c = client(es)
    info = c.info()
    assert info["version"]["number"].startswith("8.")
    assert info.meta.headers["x-elastic-product"] == "Elasticsearch"
    assert "compatible-with=8" in info.meta.headers["content-type"]
    assert c.ping() is True
    status, headers, body = raw(es, "GET", "/_nothing_here")
    assert status == 404 and headers["x-elastic-product"] == "Elasticsearch"
    assert body["status"] == 404 and body["error"]["root_cause"][0]["type"] == body["error"]["type"]


def test_client_compat_headers_are_recorded(es: ESDouble) -> None:
    client(es).bulk(operations=ops(("a", {"n": 1})))
    (req,) = es.bulk_requests()
    assert req.method in ("PUT", "POST") and req.path == "/_bulk"
    assert req.headers["content-type"].startswith("application/vnd.elasticsearch+x-ndjson")
    assert "compatible-with=8" in req.headers["accept"]
    assert req.body is not None and req.body.endswith(b"\n") and req.status == 200


def test_unsupported_content_type_is_406(es: ESDouble) -> None:
    status, _, body = raw(es, "POST", "/_bulk", b'{"create":{"_index":"x","_id":"1"}}\n{}\n', ctype="text/plain")
    assert status == 406 and body["error"]["type"] == "media_type_header_exception"


def test_bulk_create_conflict_index_delete(es: ESDouble) -> None:
    c = client(es)
    first = c.bulk(operations=ops(("a", {"n": 1}), ("b", {"n": 2})))
    assert first["errors"] is False
    assert [i["create"]["status"] for i in first["items"]] == [201, 201]
    assert first["items"][0]["create"]["result"] == "created" and first["items"][0]["create"]["_version"] == 1
    assert {"_seq_no", "_primary_term", "_shards", "_index", "_id"} <= set(first["items"][1]["create"])
    again = c.bulk(operations=ops(("a", {"n": 9}), ("c", {"n": 3})))
    assert again["errors"] is True
    conflict = again["items"][0]["create"]
    assert conflict["status"] == 409 and conflict["error"]["type"] == "version_conflict_engine_exception"
    assert again["items"][1]["create"]["status"] == 201
    assert es.get(INDEX, "a") == {"n": 1}  # the conflicting create did not overwrite
    overwrite = c.bulk(operations=ops(("a", {"n": 5}), op="index"))
    assert overwrite["items"][0]["index"]["status"] == 200 and overwrite["items"][0]["index"]["_version"] == 2
    deleted = c.bulk(operations=[{"delete": {"_index": INDEX, "_id": "b"}}, {"delete": {"_index": INDEX, "_id": "zz"}}])
    assert [i["delete"]["result"] for i in deleted["items"]] == ["deleted", "not_found"]
    assert deleted["errors"] is False  # not_found is not an error
    assert sorted(es.count_by_id()) == ["a", "c"]
    assert es.count_writes_by_id()["a"] == 2


def test_bulk_with_index_in_path_and_auto_ids(es: ESDouble) -> None:
    resp = client(es).bulk(index=INDEX, operations=[{"create": {}}, {"n": 1}, {"index": {}}, {"n": 2}])
    ids = [i[k]["_id"] for i, k in zip(resp["items"], ("create", "index"), strict=True)]
    assert len(set(ids)) == 2 and all(ids)
    assert {d["_index"] for d in es.docs()} == {INDEX}


@pytest.mark.parametrize("body, fragment", [
    (b'{"create":{"_index":"x","_id":"1"}}\n{}', "terminated by a newline"),
    (b'{"update":{"_index":"x","_id":"1"}}\n{}\n', "expected field [create]"),
    (b'{"create":{"_id":"1"}}\n{}\n', "index is missing"),
    (b'not json\n{}\n', "Malformed action/metadata line [1]"),
    (b'\n', "no requests added"),
])
def test_malformed_bulk_is_a_whole_request_400(es: ESDouble, body: bytes, fragment: str) -> None:
    status, _, answer = raw(es, "POST", "/_bulk", body)
    assert status == 400, answer
    assert fragment in answer["error"]["reason"]
    assert es.docs() == []


def test_invalid_index_name_fails_the_item(es: ESDouble) -> None:
    resp = client(es).bulk(operations=ops(("a", {}), index="Audit-2024.05.17"))
    item = resp["items"][0]["create"]
    assert item["status"] == 400 and item["error"]["type"] == "invalid_index_name_exception"


def test_search_and_count_see_documents_after_refresh(es: ESDouble) -> None:
    c = client(es)
    c.bulk(operations=ops(("a", {"user": {"name": "root"}}), ("b", {"user": {"name": "bob"}})))
    assert c.count(index="audit-*")["count"] == 0
    c.indices.refresh(index="audit-*")
    assert c.count(index="audit-*")["count"] == 2
    hits = c.search(index="audit-*", query={"term": {"user.name": "bob"}}, size=10)["hits"]
    assert [h["_id"] for h in hits["hits"]] == ["b"] and hits["total"]["value"] == 1
    assert c.search(index=INDEX, query={"match_all": {}}, size=1)["hits"]["total"]["value"] == 2
    c.bulk(operations=ops(("c", {})), refresh=True)
    assert c.count(index=INDEX)["count"] == 3
    with pytest.raises(NotFoundError):
        c.count(index="audit-1999.01.01")
    cat = c.cat.indices(format="json")
    assert [(r["index"], r["docs.count"]) for r in cat] == [(INDEX, "3")]


# -- templates, ILM, mappings ---------------------------------------------------------------------


def test_index_template_put_get_exists(es: ESDouble) -> None:
    c = client(es)
    assert c.indices.exists_index_template(name="audit").body is False
    with pytest.raises(NotFoundError):
        c.indices.get_index_template(name="audit")
    assert c.indices.put_index_template(name="audit", **TEMPLATE)["acknowledged"] is True
    assert c.indices.exists_index_template(name="audit").body is True
    got = c.indices.get_index_template(name="audit")["index_templates"]
    assert got[0]["name"] == "audit" and got[0]["index_template"]["index_patterns"] == ["audit-*"]


@pytest.mark.parametrize("body, error_type", [
    ({"index_patterns": ["a-*"], "mappings": {"properties": {}}}, "x_content_parse_exception"),  # legacy shape
    ({"template": {}}, "action_request_validation_exception"),
    ({"index_patterns": ["a-*"], "template": {"mappings": {"properties": {"x": {"type": "nope"}}}}},
     "mapper_parsing_exception"),
    ({"index_patterns": ["a-*"], "template": {"mappings": {"properties": {"x": {"type": "alias", "path": "y"}}}}},
     "mapper_parsing_exception"),
    ({"index_patterns": ["a-*"], "composed_of": ["missing"]}, "invalid_index_template_exception"),
])
def test_index_template_validation(es: ESDouble, body: dict[str, Any], error_type: str) -> None:
    status, _, answer = raw(es, "PUT", "/_index_template/t", orjson.dumps(body), ctype="application/json")
    assert status == 400 and answer["error"]["type"] == error_type


def test_component_templates_are_composed(es: ESDouble) -> None:
    c = client(es)
    c.cluster.put_component_template(name="ips", template={"mappings": {"properties": {"ip": {"type": "ip"}}}})
    c.indices.put_index_template(name="t", index_patterns=["audit-*"], composed_of=["ips"])
    item = c.bulk(operations=ops(("a", {"ip": "not-an-ip"})))["items"][0]["create"]
    assert item["status"] == 400


def test_ilm_policy_put_get(es: ESDouble) -> None:
    c = client(es)
    with pytest.raises(NotFoundError):
        c.ilm.get_lifecycle(name="audit")
    policy = {"phases": {"delete": {"min_age": "90d", "actions": {"delete": {}}}}}
    assert c.ilm.put_lifecycle(name="audit", policy=policy)["acknowledged"] is True
    c.ilm.put_lifecycle(name="audit", policy=policy)
    got = c.ilm.get_lifecycle(name="audit")["audit"]
    assert got["policy"] == policy and got["version"] == 2


@pytest.mark.parametrize("doc, fragment", [
    ({"n": "twelve"}, "of type [long]"),
    ({"n": 2**70}, "out of range"),
    ({"n": True}, "of type [long]"),
    ({"source": {"ip": "300.1.1.1"}}, "of type [ip]"),
    ({"source.ip": "host.example"}, "of type [ip]"),
    ({"@timestamp": "May 17 16:02:03"}, "of type [date]"),
    ({"ok": "yes"}, "of type [boolean]"),
    ({"host": "web-1"}, "tried to parse field [host] as object"),
    ({"host": {"hostname": {"x": 1}}}, "of type [keyword]"),
    ({"vpnuser": "alice"}, "Cannot write to a field alias [vpnuser]"),
    ({"source": {"geo": {"location": {"lat": 99, "lon": 0}}}}, "of type [geo_point]"),
])
def test_template_mapping_rejects_uncoercible_values(es: ESDouble, doc: dict[str, Any], fragment: str) -> None:
    c = client(es)
    c.indices.put_index_template(name="audit", **TEMPLATE)
    item = c.bulk(operations=ops(("bad", doc)))["items"][0]["create"]
    assert item["status"] == 400, item
    assert item["error"]["type"] == "document_parsing_exception"
    assert fragment in item["error"]["reason"] + item["error"].get("caused_by", {}).get("reason", "")
    assert es.docs() == []


@pytest.mark.parametrize("doc", [
    {"n": "12", "ok": "false", "@timestamp": "2024-05-17T16:02:03.412271+00:00"},
    {"n": 12.0, "@timestamp": 1715961723000, "source": {"ip": "2001:db8::1"}},
    {"@timestamp": "2024-05-17T16:02:03Z", "source": {"geo": {"location": "48.1,11.5"}}},
    {"host": {"hostname": "web-1", "name": "web-1"}, "user": {"name": ["a", "b"]}, "n": None},
])
def test_template_mapping_accepts_coercible_values(es: ESDouble, doc: dict[str, Any]) -> None:
    c = client(es)
    c.indices.put_index_template(name="audit", **TEMPLATE)
    item = c.bulk(operations=ops(("good", doc)))["items"][0]["create"]
    assert item["status"] == 201, item


@pytest.mark.parametrize("doc, fragment", [
    ({"fresh": 2**63}, "out of range for a long"),  # a new field mapped long by its first value
    ({"fresh": 1e39}, "[float] supports only finite values"),  # fractions map to float
    ({"log": {"offset": 18446744073709551615}}, "out of range for a long"),  # the real template's long
])
def test_numbers_beyond_the_mapped_type_are_rejected(es: ESDouble, doc: dict[str, Any], fragment: str) -> None:
    from ingest.setup.template import build_index_template

    c = client(es)
    c.indices.put_index_template(name="audit-ingest", **build_index_template())
    item = c.bulk(operations=ops(("big", doc)))["items"][0]["create"]
    assert item["status"] == 400, item
    assert item["error"]["type"] == "document_parsing_exception"
    assert fragment in item["error"]["reason"] + item["error"].get("caused_by", {}).get("reason", "")
    assert c.bulk(operations=ops(("fits", {"fresh": 2**63 - 1})))["items"][0]["create"]["status"] == 201


def test_dynamic_mapping_conflicts_between_documents(es: ESDouble) -> None:
    resp = client(es).bulk(operations=ops(("a", {"host": "web-1", "count": 3}), ("b", {"host": {"name": "web-1"}}),
                                          ("c", {"count": "many"})))
    assert [i["create"]["status"] for i in resp["items"]] == [201, 400, 400]


def test_strict_dynamic_mapping_and_template_only_at_creation(es: ESDouble) -> None:
    c = client(es)
    c.bulk(operations=ops(("early", {"n": "text"})))  # index exists before the template: dynamic text
    c.indices.put_index_template(name="strict", index_patterns=["audit-*"],
                                 template={"mappings": {"dynamic": "strict", "properties": {"n": {"type": "long"}}}})
    assert c.bulk(operations=ops(("later", {"n": "more text"})))["items"][0]["create"]["status"] == 201
    item = c.bulk(operations=ops(("x", {"other": 1}), index="audit-2024.05.18"))["items"][0]["create"]
    assert item["status"] == 400 and item["error"]["type"] == "strict_dynamic_mapping_exception"


def test_legacy_parsing_error_type() -> None:
    with ESDouble(parsing_error_type="mapper_parsing_exception") as double:
        c = client(double)
        c.indices.put_index_template(name="audit", **TEMPLATE)
        item = c.bulk(operations=ops(("a", {"n": "x"})))["items"][0]["create"]
        assert item["error"]["type"] == "mapper_parsing_exception"


def test_rule_hook(es: ESDouble) -> None:
    es.add_rule(lambda index, doc_id, src: "no secrets please" if "password" in src else None)
    es.add_rule(lambda index, doc_id, src: (403, "cluster_block_exception", "read-only") if doc_id == "ro" else None)
    resp = client(es).bulk(operations=ops(("a", {"password": "x"}), ("ro", {}), ("ok", {})))
    got = [(i["create"]["status"], i["create"].get("error", {}).get("reason")) for i in resp["items"]]
    assert got == [(400, "no secrets please"), (403, "read-only"), (201, None)]


def test_authentication() -> None:
    with ESDouble(auth=("elastic", "s3cret"), api_key="id:key") as double:
        with pytest.raises(ApiError) as err:
            client(double).info()
        assert err.value.meta.status == 401
        assert client(double, basic_auth=("elastic", "s3cret")).info()["cluster_name"]
        assert client(double, api_key=("id", "key")).info()["cluster_name"]
        with pytest.raises(ApiError):
            client(double, basic_auth=("elastic", "wrong")).info()


# -- recording helpers ----------------------------------------------------------------------------


def test_assert_exactly_once_detects_missing_extra_and_rewrites(es: ESDouble) -> None:
    c = client(es)
    c.bulk(operations=ops(("a", {}), ("b", {})))
    es.assert_exactly_once([(INDEX, "a"), (INDEX, "b")])
    with pytest.raises(AssertionError, match="missing"):
        es.assert_exactly_once([(INDEX, "a"), (INDEX, "b"), (INDEX, "c")])
    with pytest.raises(AssertionError, match="extra"):
        es.assert_exactly_once([(INDEX, "a")])
    c.bulk(operations=ops(("a", {}), op="index"))
    with pytest.raises(AssertionError, match="more than once"):
        es.assert_exactly_once([(INDEX, "a"), (INDEX, "b")])


def test_ceiling_measures_and_leaves_no_trace(es: ESDouble) -> None:
    rate = es.ceiling(docs=2_000, batch=500)
    assert rate > 0
    assert es.docs() == [] and es.writes == [] and es.requests == []


# -- faults ---------------------------------------------------------------------------------------


def test_item_faults_every_nth(es: ESDouble) -> None:
    es.fail_items(429, every=3)
    resp = client(es).bulk(operations=ops(*[(str(i), {}) for i in range(9)]))
    statuses = [i["create"]["status"] for i in resp["items"]]
    assert statuses == [201, 201, 429] * 3
    assert resp["items"][2]["create"]["error"]["type"] == "es_rejected_execution_exception"
    assert resp["errors"] is True
    assert sorted(es.count_by_id()) == ["0", "1", "3", "4", "6", "7"]  # rejected items were not applied


def test_item_faults_share_is_seeded(es: ESDouble) -> None:
    def run(seed: int) -> list[int]:
        es.reset()
        es.fail_items(503, share=0.5, seed=seed)
        resp = client(es).bulk(operations=ops(*[(str(i), {}) for i in range(40)]))
        return [i["create"]["status"] for i in resp["items"]]

    first = run(7)
    assert first == run(7)
    assert set(first) == {201, 503} and 5 < first.count(503) < 35
    resp = client(es).bulk(operations=ops(("x", {})))  # still failing some: the fault stays on
    es.clear_faults()
    assert client(es).bulk(operations=ops(("y", {})))["items"][0]["create"]["status"] == 201
    assert resp["items"][0]["create"]["status"] in (201, 503)


def test_item_faults_by_id_and_times(es: ESDouble) -> None:
    es.fail_items(500, ids={"b"}, times=2)
    c = client(es)
    seen = [c.bulk(operations=ops(("a", {}), ("b", {})))["items"][1]["create"]["status"] for _ in range(3)]
    assert seen == [500, 500, 201]


def test_request_faults_429_and_503(es: ESDouble) -> None:
    es.fail_requests(429, times=1)
    es.fail_requests(503, times=1)
    c = client(es)
    for expected in (429, 503):
        with pytest.raises(ApiError) as err:
            c.bulk(operations=ops(("a", {})))
        assert err.value.meta.status == expected
    assert es.docs() == []
    assert c.bulk(operations=ops(("a", {})))["errors"] is False
    assert c.info()  # only bulk paths are affected by default


@pytest.mark.parametrize("when, applied", [("before_apply", False), ("after_apply", True), ("mid_response", True)])
def test_dropped_connection(es: ESDouble, when: str, applied: bool) -> None:
    es.drop_connections(when, times=1)
    c = client(es)
    with pytest.raises(elastic_transport.ConnectionError):
        c.bulk(operations=ops(("a", {"n": 1})))
    assert (es.get(INDEX, "a") is not None) is applied
    assert es.bulk_requests()[0].status is None
    retry = c.bulk(operations=ops(("a", {"n": 1})))  # same keep-alive pool, new connection
    assert retry["items"][0]["create"]["status"] == (409 if applied else 201)
    es.assert_exactly_once([(INDEX, "a")])


def test_slow_answer_times_out_after_applying(es: ESDouble) -> None:
    es.delay(2.0, times=1)
    c = client(es, request_timeout=0.2)
    with pytest.raises(elastic_transport.ConnectionTimeout):
        c.bulk(operations=ops(("a", {})))
    assert es.get(INDEX, "a") == {}
    assert client(es).bulk(operations=ops(("a", {})))["items"][0]["create"]["status"] == 409


def test_down_then_up_on_the_same_port(es: ESDouble) -> None:
    c = client(es)
    c.bulk(operations=ops(("a", {})))  # a keep-alive connection is now open
    port = es.port
    es.down()
    assert not es.is_up
    with pytest.raises(elastic_transport.ConnectionError):
        c.bulk(operations=ops(("b", {})))
    with pytest.raises(elastic_transport.ConnectionError):
        client(es).info()
    es.up()
    assert es.port == port
    assert c.bulk(operations=ops(("b", {})))["errors"] is False
    assert sorted(es.count_by_id()) == ["a", "b"]  # data survived the outage


def test_mapping_checks_can_be_switched_off_for_benchmarks(es: ESDouble) -> None:
    c = client(es)
    c.indices.put_index_template(name="audit", **TEMPLATE)
    es.check_mappings = False
    assert c.bulk(operations=ops(("a", {"n": "x"})))["items"][0]["create"]["status"] == 201
    es.check_mappings = True
    assert c.bulk(operations=ops(("b", {"n": "x"})))["items"][0]["create"]["status"] == 400


def test_filter_path_keeps_only_the_named_parts(es: ESDouble) -> None:
    c = client(es)
    c.bulk(operations=ops(("a", {"n": 1})))
    answer = c.bulk(operations=ops(("a", {"n": 2}), ("b", {"n": 3})), filter_path="errors,items.*.status,items.*.error")
    assert answer.body["errors"] is True
    assert [list(i) for i in answer.body["items"]] == [["create"], ["create"]]
    conflict, created = (i["create"] for i in answer.body["items"])
    assert set(conflict) == {"status", "error"} and conflict["status"] == 409
    assert conflict["error"]["type"] == "version_conflict_engine_exception"
    assert created == {"status": 201}
    assert set(c.bulk(operations=ops(("c", {"n": 4})), filter_path="took").body) == {"took"}
    assert c.bulk(operations=ops(("d", {"n": 5})), filter_path="nothing.here").body == {}
    assert c.info(filter_path="version.number").body == {"version": {"number": "8.15.0"}}


def test_unparsed_sources_behave_the_same_and_are_read_back(es: ESDouble) -> None:
    """Benchmark mode: sources stay bytes, yet statuses, conflicts, read-back and rules are the same."""
    c = client(es)
    es.check_mappings = False
    es.parse_sources = False
    first = c.bulk(operations=ops(("a", {"n": 1, "s": {"t": "x"}}), ("b", {"n": 2})))
    assert [i["create"]["status"] for i in first["items"]] == [201, 201]
    again = c.bulk(operations=ops(("a", {"n": 9})))
    assert again["items"][0]["create"]["status"] == 409
    assert es.get(INDEX, "a") == {"n": 1, "s": {"t": "x"}}
    assert sorted(d["_source"]["n"] for d in es.docs()) == [1, 2]
    status, _, answer = raw(es, "POST", "/_bulk", b'{"create":{"_index":"i","_id":"m"}}\n[1,2]\n'
                                                  b'{"create":{"_index":"i","_id":"n"}}\n{"ok":1}\n')
    assert status == 200 and [i["create"]["status"] for i in answer["items"]] == [400, 201]
    es.add_rule(lambda index, doc_id, source: "no" if source.get("n") == 7 else None)
    ruled = c.bulk(operations=ops(("r", {"n": 7}), ("s", {"n": 8})))
    assert [i["create"]["status"] for i in ruled["items"]] == [400, 201]
    status, _, answer = raw(es, "POST", "/_bulk", b'{"create":{"_index":"i","_id":"bad"}}\n{not json}\n')
    assert answer["items"][0]["create"]["status"] == 400  # with a rule the source is decoded


def test_bulk_observer_sees_every_body(es: ESDouble) -> None:
    seen: list[bytes] = []
    es.bulk_observer = seen.append
    client(es).bulk(operations=ops(("a", {"n": 1})))
    assert len(seen) == 1 and b'"n":1' in seen[0]


def test_bulk_external_versioning_only_moves_forward(es: ESDouble) -> None:
    c = client(es)

    def index(version: int, n: int, vtype: str = "external") -> dict[str, Any]:
        answer = c.bulk(operations=[{"index": {"_index": INDEX, "_id": "s", "version": version,
                                               "version_type": vtype}}, {"n": n}])
        item: dict[str, Any] = answer["items"][0]["index"]
        return item

    first = index(1, 1)
    assert (first["status"], first["result"], first["_version"]) == (201, "created", 1)
    again = index(1, 2)  # the same version again: refused, the stored document kept
    assert again["status"] == 409 and again["error"]["type"] == "version_conflict_engine_exception"
    assert "current version [1] is higher or equal to the one provided [1]" in again["error"]["reason"]
    forward = index(2, 3)
    assert (forward["status"], forward["result"], forward["_version"]) == (200, "updated", 2)
    back = index(1, 4)  # an older version arriving late never overwrites a newer one
    assert back["status"] == 409 and es.get(INDEX, "s") == {"n": 3}
    assert index(2, 5, "external_gte")["status"] == 200 and es.get(INDEX, "s") == {"n": 5}
    assert [d["_version"] for d in es.docs()] == [2]
    assert es.count_writes_by_id()["s"] == 3


@pytest.mark.parametrize(("meta", "fragment"), [
    ({"create": {"_index": INDEX, "_id": "x", "version": 3, "version_type": "external"}},
     "create operations only support internal versioning"),
    ({"index": {"_index": INDEX, "_id": "x", "version": 3}}, "internal versioning can not be used"),
    ({"index": {"_index": INDEX, "_id": "x", "version": -1, "version_type": "external"}}, "illegal version value"),
    ({"index": {"_index": INDEX, "_id": "x", "version": 3, "version_type": "sideways"}}, "No version type match"),
])
def test_bulk_versioning_errors_fail_the_request(es: ESDouble, meta: dict[str, Any], fragment: str) -> None:
    status, _, body = raw(es, "POST", "/_bulk", orjson.dumps(meta) + b"\n{}\n")
    assert status == 400 and fragment in body["error"]["reason"]
    assert es.docs() == []
