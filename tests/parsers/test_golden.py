"""Every golden line parses to its expected document, field by field."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from ingest.document import flatten
from ingest.parsers.base import PARSE_FAILURE_TAG
from ingest.parsers.resources import ParserResources
from tests.parsers.golden import cases, parse_file


@pytest.fixture(scope="module")
def resources() -> ParserResources:
    return ParserResources()


@pytest.mark.parametrize("path", cases(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_golden(path: Path, resources: ParserResources) -> None:
    expected = [orjson.loads(line) for line in path.with_suffix(".expected.ndjson").read_bytes().splitlines()]
    got = parse_file(path, resources)
    assert len(got) == len(expected)
    for number, (ours, theirs) in enumerate(zip(got, expected, strict=True), start=1):
        assert flatten(ours) == flatten(theirs), f"{path.name}:{number}"


@pytest.mark.parametrize("path", [p for p in cases() if p.name != "more.log" or p.parent.name != "teleport"],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_golden_lines_all_parse(path: Path, resources: ParserResources) -> None:
    for number, doc in enumerate(parse_file(path, resources), start=1):
        assert PARSE_FAILURE_TAG not in doc.get("tags", []), f"{path.name}:{number}: {doc['message']}"
