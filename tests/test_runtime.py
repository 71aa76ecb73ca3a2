"""Interpreter tuning: what ``tune_gc`` changes, and that the commands that process events call it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest import cli
from ingest.runtime import GEN0_THRESHOLD, tune_gc

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_tune_gc_freezes_start_up_objects_and_raises_the_young_threshold(restore_gc: None) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    start_up = [{"pattern": i} for i in range(1000)]  # objects alive at start-up
    _, gen1, gen2 = gc.get_threshold()
    tune_gc()
    assert gc.get_freeze_count() >= len(start_up)
    assert gc.get_threshold() == (GEN0_THRESHOLD, gen1, gen2)


def test_parse_command_tunes_the_collector_after_start_up(restore_gc: None, monkeypatch: pytest.MonkeyPatch,
                                                          capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    calls: list[str] = []
    monkeypatch.setattr(cli, "tune_gc", lambda: calls.append("tuned"))
    assert cli.main(["parse", "--config", str(ROOT / "examples/demo.toml"), "--reference-time",
                     "2020-12-31T00:00:00Z", str(ROOT / "examples/logs/commands.log")]) == 0
    assert calls == ["tuned"]
    assert b'"type":"commands"' in capsysbinary.readouterr().out
