"""Small things a user meets first: `parse` on a missing file, `--help`, `make demo`'s output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("target", ["missing.log", "folder"])
def test_parse_fails_on_a_missing_file_or_a_directory(tmp_path: Path, target: str,
                                                      capsysbinary: pytest.CaptureFixture[bytes],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "folder").mkdir()
    assert main(["parse", str(ROOT / "examples" / "logs" / "auth.log"), str(tmp_path / target)]) == 1
    assert capsysbinary.readouterr().out == b""  # nothing printed: not a dead letter, not half a run
    assert f"cannot read {tmp_path / target}" in caplog.text
    assert "dead letter" not in caplog.text


def test_help_is_plain_text() -> None:
    parser = build_parser()
    texts = [parser.format_help()]
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    texts += [p.format_help() for p in subs.choices.values()]  # type: ignore[attr-defined]
    for text in texts:
        assert "``" not in text, text[:200]
    assert "run (the worker)" in texts[0]


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_demo_prints_only_ndjson() -> None:
    """`make demo > out.ndjson` holds documents only: make echoes no command on stdout."""
    venv = Path(sys.prefix)
    done = subprocess.run(["make", "--no-print-directory", "demo", f"VENV={venv}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1000:]
    lines = done.stdout.splitlines()
    assert len(lines) > 50
    for line in lines:
        json.loads(line)
