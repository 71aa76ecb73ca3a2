"""Golden files: ``tests/data/golden/<kind>/<name>.log`` and ``<name>.expected.ndjson``, one
expected document per line, compared field by field. ``python -m tests.parsers.golden`` rewrites
the expected files from the current parsers, and those of ``tests/data/auditd/`` (review the diff
before committing it)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ingest.parsers import auditd as _auditd  # noqa: F401
from ingest.parsers import syslog_rules as _rules  # noqa: F401
from ingest.parsers import teleport as _teleport  # noqa: F401
from ingest.parsers.base import REGISTRY, LineContext
from ingest.parsers.resources import ParserResources

GOLDEN = Path(__file__).parent.parent / "data" / "golden"
READ_AT = datetime(2020, 12, 31, tzinfo=UTC)  # the samples' classic timestamps are 2020's


def cases() -> list[Path]:
    return sorted(GOLDEN.glob("*/*.log"))


def parse_file(path: Path, resources: ParserResources) -> list[dict[str, Any]]:
    parser = REGISTRY[path.parent.name](resources)
    ctx = LineContext(now=READ_AT, path=f"/var/log/{path.name}")
    return [parser.parse(line, ctx) for line in path.read_text(encoding="utf-8").splitlines()]


#: the auditd parser's own golden files (tests/parsers/test_auditd.py), in json.dumps' layout
AUDITD = Path(__file__).parent.parent / "data" / "auditd"


def rewrite() -> None:
    resources = ParserResources()
    for path in cases():
        docs = parse_file(path, resources)
        lines = [orjson.dumps(d, option=orjson.OPT_SORT_KEYS) for d in docs]
        path.with_suffix(".expected.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    auditd = REGISTRY["auditd"](resources)
    for path in sorted(AUDITD.glob("*.log")):
        docs = [auditd.parse(line, LineContext()) for line in path.read_text(encoding="utf-8").splitlines()]
        text = "\n".join(json.dumps(d, sort_keys=True) for d in docs) + "\n"
        path.with_suffix(".expected.ndjson").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    rewrite()
