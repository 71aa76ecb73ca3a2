"""``benchmarks/es_server.py --soak``: the soak run's verdict (nothing lost, nothing duplicated)
is only as good as this counting, so it is checked on bulks whose outcome is known."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
from elasticsearch import Elasticsearch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import run  # noqa: E402


def event(seq: int) -> dict[str, object]:
    return {"message": f"line {seq}", "fields": {"soak_seq": seq}}


def test_soak_counts_stored_missing_redelivered_duplicated_and_derived() -> None:
    es = run.EsServer(False, "--soak")
    try:
        client = Elasticsearch(es.url)
        lines: list[bytes] = []
        for seq, doc_id in ((0, "a"), (1, "b"), (3, "d")):
            lines += [orjson.dumps({"create": {"_index": "audit-2024.05.17", "_id": doc_id}}), orjson.dumps(event(seq))]
        # a session document: an index action with an external version (no fields: counted apart)
        lines += [orjson.dumps({"index": {"_index": "audit-sessions-2024.05.17", "_id": "s", "version": 2,
                                          "version_type": "external"}}),
                  orjson.dumps({"type": "session", "session": {"id": "s"}})]
        answer = client.bulk(operations=b"\n".join(lines) + b"\n")
        assert not answer["errors"], answer
        again = [orjson.dumps({"create": {"_index": "audit-2024.05.17", "_id": "b2"}}), orjson.dumps(event(1)),
                 orjson.dumps({"create": {"_index": "audit-2024.05.18", "_id": "a"}}), orjson.dumps(event(0))]
        client.bulk(operations=b"\n".join(again) + b"\n")  # event 1 under another id; event 0 under its own
        report = es.ask("soak 4")
        assert report["stored"] == 3 and report["missing"] == 1 and report["missing_first"] == [2]
        assert report["duplicated"] == 1  # event 1 stored twice, under two ids
        assert report["redelivered"] == 1  # event 0 again under the same id (another daily index)
        assert report["derived"] == 1 and report["beyond"] == 0
        client.close()
    finally:
        es.close()
