"""Reading files for ``audit-ingest parse``: plain log files or Filebeat event dumps, as raw events.

A plain log line is wrapped as the Filebeat event that would carry it (path, byte offset and, when
known, ``fields.log_type``), so ``parse`` runs exactly the worker's pipeline. Invalid UTF-8 is
replaced with U+FFFD, as Filebeat's reader does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import BinaryIO

from ingest.pipeline import wrap_line
from ingest.route import Router


def guess_kind(path: str, first_line: str, router: Router) -> str | None:
    """The kind of a plain log file: by its path (the routing globs), else by its first line."""
    kind = router.kind_for_path(os.path.abspath(path)) if path != "-" else None
    if kind is not None:
        return kind
    line = first_line.lstrip()
    if line.startswith("type=") and "msg=audit(" in line:
        return "auditd"
    if line.startswith("{") and '"event"' in line:
        return "teleport"
    if " openvpn[" in line or " ovpn-" in line:
        return "openvpn"
    if "]: " in line and line.rstrip().endswith("]") and " [" in line:
        return "commands"
    return "auth" if line else None


def is_event_dump(path: str, first_line: str) -> bool:
    """Filebeat events (NDJSON as they sit in Redis) rather than a plain log."""
    if path.endswith((".ndjson", ".json")):
        return True
    return first_line.startswith("{") and ('"message"' in first_line and
                                          ('"log"' in first_line or '"source"' in first_line))


def _open(path: str) -> BinaryIO:
    return sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115


def read_events(path: str, *, kind: str | None, router: Router, read_at: datetime | None,
                mode: str = "auto") -> Iterator[bytes]:
    """Raw events of one input file, in order."""
    stream = _open(path)
    try:
        first = stream.readline()
        first_text = first.decode("utf-8", "replace")
        dump = mode == "filebeat" or (mode == "auto" and kind is None and is_event_dump(path, first_text))
        if dump:
            line = first
            while line:
                stripped = line.rstrip(b"\r\n")
                if stripped.strip():
                    yield stripped
                line = stream.readline()
            return
        file_kind = kind or guess_kind(path, first_text, router)
        source = os.path.abspath(path) if path != "-" else "-"
        offset = 0
        line = first
        while line:
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            yield wrap_line(text, path=source, offset=offset, kind=file_kind, read_at=read_at)
            offset += len(line)
            line = stream.readline()
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
