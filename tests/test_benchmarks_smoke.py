"""The benchmark's corpus and baseline: deterministic, the documented mix, one document per event.

No timing here: ``make bench-smoke`` measures, this only checks that what is measured is right.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import corpus  # noqa: E402
from baseline import Baseline  # noqa: E402

N = 1000


@pytest.fixture(scope="module")
def events() -> list[bytes]:
    return corpus.generate(N)


def test_corpus_is_deterministic(events: list[bytes]) -> None:
    assert corpus.generate(N) == events
    assert corpus.generate(N, seed=corpus.SEED + 1) != events


def test_corpus_has_the_documented_mix(events: list[bytes]) -> None:
    mix = corpus.mix(corpus.generate(4000))
    for kind, share in corpus.MIX.items():
        assert abs(mix[kind] - share) < 0.03, (kind, mix[kind])


def test_corpus_envelopes_and_offsets(events: list[bytes]) -> None:
    decoded = [orjson.loads(e) for e in events]
    assert any("source" in d and "beat" in d for d in decoded)  # Filebeat 6.x
    assert any(isinstance(d.get("log"), dict) and isinstance(d.get("host"), dict) for d in decoded)  # 7.x/8.x
    assert any(d.get("event", {}).get("module") == "auditd" for d in decoded)
    messages = [d["message"] for d in decoded]
    assert any(m[:3] in ("May",) for m in messages) and any(m[:4] == "2024" for m in messages)
    last: dict[tuple[str, str], int] = {}
    for d in decoded:
        host = d["host"]["name"]
        path, offset = (d["source"], d["offset"]) if "source" in d else (d["log"]["file"]["path"], d["log"]["offset"])
        assert offset > last.get((host, path), -1)
        last[(host, path)] = offset


def test_baseline_one_document_per_event(events: list[bytes]) -> None:
    lines = Baseline(BENCH.parent / "tests/data/geoip/GeoIP2-City-Test.mmdb").process(events[:300])
    assert len(lines) == 300
    docs = [orjson.loads(line.split(b"\n")[1]) for line in lines]
    assert {d["type"] for d in docs} == {"auth", "commands", "auditd", "openvpn"}
    assert any("system" in d for d in docs) and any("auditd" in d for d in docs)


def test_pipeline_one_document_per_event(events: list[bytes]) -> None:
    from ingest.pipeline import Pipeline
    from ingest.settings import load_settings

    pipeline = Pipeline.from_settings(load_settings(overrides={"sessions": {"enabled": False}}))
    result = pipeline.process(events[:300])
    assert not result.dead
    from_events = [a for a in result.actions if a.raw is not None]  # not sessions or alerts
    assert len(from_events) == 300
    assert len({a.id for a in from_events}) == 300


def test_stage_by_stage_run_makes_what_the_pipeline_makes(events: list[bytes]) -> None:
    """benchmarks/stages.py times the pipeline's steps one by one: it must be the same work."""
    import run
    import stages

    expected = []
    pipeline = run.new_pipeline()
    for i in range(0, 600, 200):
        expected += pipeline.process(events[i:i + 200]).actions
    split = stages.run_steps(run.new_pipeline(), events[:600], batch=200)

    def made(actions: list) -> list:  # alerts carry the wall-clock time they were made at
        for a in actions:
            if a.doc["type"] == "alert":
                a.doc["event"].pop("created")
        return [(a.index, a.id, a.doc) for a in actions]

    assert made(split) == made(expected)
    assert {"session", "alert"} <= {a.doc["type"] for a in split}  # sessions and detections took part
    assert len(stages.run_steps(run.new_pipeline(), events[:50], stop_after="parse")) == 0
