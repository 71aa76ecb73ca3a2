"""``audit-ingest``: ``run`` (the worker), ``parse`` (no servers), ``setup``, ``dlq``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from ingest.document import parse_timestamp
from ingest.errors import ConfigError, IngestError
from ingest.settings import ENV_PREFIX, Settings, load_settings, merge_overrides

log = logging.getLogger("audit-ingest")

PARSE_BATCH = 1000


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help=f"TOML config file (environment {ENV_PREFIX}<SECTION>__<KEY> wins over it)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR (default INFO)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audit-ingest", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("parse", help="parse (and enrich, pair) log files or Filebeat event dumps to NDJSON on stdout")
    _common(p)
    p.add_argument("files", nargs="+", help="log files, Filebeat NDJSON dumps, or - for stdin")
    p.add_argument("--kind", choices=["auth", "commands", "auditd", "openvpn", "teleport", "shell"],
                   help="log kind of plain files (default: from the file name, else from the first line)")
    p.add_argument("--input", choices=["auto", "lines", "filebeat"], default="auto",
                   help="plain log lines or Filebeat events (default: Filebeat events for .ndjson/.json)")
    p.add_argument("--authorized-keys", type=Path, action="append", default=[], metavar="PATH",
                   help="authorized_keys file mapping key fingerprints to owners (repeatable)")
    p.add_argument("--users-file", type=Path, action="append", default=[], metavar="PATH",
                   help="YAML users file (name + key) mapping keys to owners (repeatable)")
    p.add_argument("--geoip-city", type=Path, metavar="PATH", help="MaxMind City database (.mmdb)")
    p.add_argument("--geoip-asn", type=Path, metavar="PATH", help="MaxMind ASN database (.mmdb)")
    p.add_argument("--timezone", help="zone of syslog timestamps without one (default UTC)")
    p.add_argument("--reference-time", help="ISO time the lines were read at (year inference for classic syslog "
                                            "timestamps; default: now, or Filebeat's @timestamp)")
    p.add_argument("--no-sessions", action="store_true", help="do not pair logins and logouts")
    p.add_argument("--bulk", action="store_true", help="print Elasticsearch _bulk NDJSON (create action + document)")
    p.set_defaults(func=cmd_parse)
    return parser


def _parse_overrides(args: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {}
    if args.authorized_keys:
        o.setdefault("keys", {})["authorized_keys"] = args.authorized_keys
    if args.users_file:
        o.setdefault("keys", {})["users_files"] = args.users_file
    if args.geoip_city:
        o.setdefault("geoip", {})["city_database"] = args.geoip_city
    if args.geoip_asn:
        o.setdefault("geoip", {})["asn_database"] = args.geoip_asn
    if args.timezone:
        o.setdefault("parse", {})["timezone"] = args.timezone
    if args.no_sessions:
        o.setdefault("sessions", {})["enabled"] = False
    return o


def _batches(items: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def cmd_parse(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.inputs import read_events
    from ingest.pipeline import Pipeline

    read_at: datetime | None = None
    if args.reference_time:
        try:
            read_at = parse_timestamp(args.reference_time)
        except ValueError as e:
            raise ConfigError(f"--reference-time is not an ISO 8601 time: {args.reference_time!r}") from e
    clock = (lambda: read_at) if read_at is not None else None
    pipeline = Pipeline.from_settings(settings, clock=clock)
    out = sys.stdout.buffer
    counts = {"documents": 0, "sessions": 0, "dead": 0}

    def events() -> Iterator[bytes]:
        for path in args.files:
            try:
                yield from read_events(path, kind=args.kind, router=pipeline.router, read_at=read_at, mode=args.input)
            except OSError as e:
                log.error("cannot read %s: %s", path, e)
                counts["dead"] += 1

    for batch in _batches(events(), PARSE_BATCH):
        result = pipeline.process(batch)
        for action in result.actions:
            if args.bulk:
                out.write(orjson.dumps({"create": {"_index": action.index, "_id": action.id}}) + b"\n")
            out.write(orjson.dumps(action.doc) + b"\n")
            counts["sessions" if action.doc.get("type") == "session" else "documents"] += 1
        for dead in result.dead:
            counts["dead"] += 1
            error = {"error": {"stage": dead.stage, "code": dead.error_code, "reason": dead.reason},
                     "raw": dead.raw.decode("utf-8", "replace")}
            if not args.bulk:
                out.write(orjson.dumps(error) + b"\n")
            log.warning("dead letter (%s/%s): %s", dead.stage, dead.error_code, dead.reason)
    out.flush()
    log.info("%(documents)d documents, %(sessions)d sessions, %(dead)d dead letters", counts)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = _parse_overrides(args) if args.command == "parse" else {}
    try:
        settings = load_settings(args.config, merge_overrides(overrides))
        return int(args.func(args, settings))
    except ConfigError as e:
        log.error("configuration error: %s", e)
        return 2
    except IngestError as e:
        log.error("%s", e)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
