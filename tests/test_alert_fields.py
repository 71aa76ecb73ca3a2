"""Alerts as the worker writes them: their index follows index.prefix, their fields are mapped."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.document import flatten
from ingest.errors import ConfigError
from ingest.pipeline import Pipeline, wrap_line
from ingest.settings import load_settings
from ingest.setup.template import build_index_template, mapped_fields
from tests.es_double import ESDouble

ROOT = Path(__file__).resolve().parent.parent
BRUTEFORCE = ROOT / "examples" / "logs" / "bruteforce.log"
READ_AT = datetime(2020, 12, 31, tzinfo=UTC)


def alert_actions(prefix: str | None = None) -> list:
    overrides = {"index": {"prefix": prefix}} if prefix else {}
    settings = load_settings(overrides=overrides)
    pipeline = Pipeline.from_settings(settings, clock=lambda: READ_AT)
    raws = [wrap_line(line, path="/var/log/auth.log", offset=n, kind="auth", read_at=READ_AT)
            for n, line in enumerate(BRUTEFORCE.read_text().splitlines())]
    return [a for a in pipeline.process(raws).actions if a.doc.get("type") == "alert"]


def test_alert_index_follows_the_prefix() -> None:
    """Item 3: alerts go to <index.prefix>alerts-YYYY.MM.DD, inside what the template covers."""
    (default,) = alert_actions()
    assert default.index.startswith("audit-alerts-")
    (custom,) = alert_actions("corp-")
    assert custom.index.startswith("corp-alerts-")
    assert build_index_template("corp-")["index_patterns"] == ["corp-*"]


def test_an_explicit_alert_prefix_must_be_under_the_index_prefix() -> None:
    settings = load_settings(overrides={"index": {"prefix": "corp-"}, "detect": {"index_prefix": "corp-alarms-"}})
    assert settings.detect.index_prefix == "corp-alarms-"
    for bad in ("audit-alerts-", "corp-", "corp-Alerts-"):
        with pytest.raises(ConfigError, match="index_prefix"):
            load_settings(overrides={"index": {"prefix": "corp-"}, "detect": {"index_prefix": bad}})


def test_alert_fields_are_mapped_with_their_types() -> None:
    """alert.window.start/end are dates (a keyword cannot be searched by time); every alert.* field
    the template maps is one an alert writes (no stale mapping such as alert.window_s)."""
    docs = [a.doc for a in alert_actions()]
    written = {k for d in docs for k in flatten(d) if k.startswith("alert.")}
    mapped = {k: v for k, v in mapped_fields().items() if k.startswith("alert.")}
    assert mapped["alert.window.start"] == mapped["alert.window.end"] == "date"
    assert set(mapped) <= written, f"mapped but never written: {set(mapped) - written}"
    with ESDouble() as es:
        es.cluster.templates["t"] = {"body": build_index_template()}
        (action,) = alert_actions()
        index = es.cluster.create_index(action.index)
        assert index.mappings["fields"]["alert.window.start"]["type"] == "date"
