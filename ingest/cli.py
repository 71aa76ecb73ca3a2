"""``audit-ingest``: ``run`` (the worker), ``parse`` (no servers), ``setup``, ``dlq``, ``notify-test``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from ingest.document import format_timestamp, parse_timestamp
from ingest.errors import ConfigError, IngestError
from ingest.logsafe import install
from ingest.runtime import tune_gc
from ingest.settings import ENV_PREFIX, Settings, load_settings, merge_overrides

log = logging.getLogger("audit-ingest")

PARSE_BATCH = 1000
#: What ``--help`` says first (plain text: argparse prints it as it is).
DESCRIPTION = ("Server access audit logs from Filebeat into Elasticsearch: run (the worker), parse (no servers), "
               "setup (template, retention, users, Kibana objects), dlq (dead letters).")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help=f"TOML config file (environment {ENV_PREFIX}<SECTION>__<KEY> wins over it)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR (default INFO)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audit-ingest", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("parse", help="parse, enrich, pair and detect on log files or Filebeat event dumps: "
                                     "NDJSON on stdout")
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
    p.add_argument("--jobs", type=_positive, default=1, metavar="N",
                   help="parse in N processes (pairing and detection stay in this one, in input order: the "
                        "output is the same as with 1, the default)")
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("run", help="the worker: Filebeat events from Redis into Elasticsearch (SIGTERM to stop)")
    _common(p)
    p.add_argument("--skip-template-check", action="store_true",
                   help="start even if the index template is missing (documents then get dynamic mappings)")
    p.add_argument("--processes", type=_positive, metavar="N",
                   help="worker processes (default: worker.processes, else the number of CPUs); 1: no supervisor")
    p.add_argument("--child-id", help=argparse.SUPPRESS)  # set by ingest.supervisor for its children
    p.add_argument("--status-file", type=Path, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("setup", help="install the index template, the retention policy, the users and the "
                                     "Kibana objects")
    _common(p)
    only = p.add_mutually_exclusive_group()
    only.add_argument("--no-kibana", action="store_true",
                      help="only Elasticsearch (users, retention policy, template, existing indices)")
    only.add_argument("--kibana-only", action="store_true", help="only the Kibana saved objects")
    only.add_argument("--print-kibana", action="store_true",
                      help="print the Kibana saved objects for the configured prefixes (NDJSON) and exit")
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("dlq", help="the dead-letter list: count and reasons, entries, or replay them")
    _common(p)
    p.add_argument("--list", type=int, metavar="N", help="print the first N entries (JSON lines)")
    p.add_argument("--replay", nargs="?", const=-1, type=int, metavar="N",
                   help="put entries (all, or the first N) back on the main list to be processed again")
    p.set_defaults(func=cmd_dlq)

    p = sub.add_parser("notify-test", help="send a sample alert to each configured notification output now "
                                           "and say what happened")
    _common(p)
    p.add_argument("--output", action="append", default=[], metavar="NAME",
                   help="only this output (repeatable; default: every enabled output)")
    p.set_defaults(func=cmd_notify_test)
    return parser


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


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


def _check_inputs(files: list[str]) -> None:
    """Every input must be readable before anything is printed: a typo is not a dead letter."""
    for path in files:
        if path == "-":
            continue
        try:
            with open(path, "rb") as f:
                f.read(0)
        except IsADirectoryError:
            raise IngestError(f"cannot read {path}: it is a directory") from None
        except OSError as e:
            raise IngestError(f"cannot read {path}: {e.strerror or e}") from None


def cmd_parse(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.enrich.key_files import check_key_files
    from ingest.inputs import read_events
    from ingest.model import DeadLetter
    from ingest.numbers import dumps_document
    from ingest.pipeline import Pipeline

    _check_inputs(args.files)
    check_key_files(settings.keys)

    read_at: datetime | None = None
    if args.reference_time:
        try:
            read_at = parse_timestamp(args.reference_time)
            format_timestamp(read_at)  # ValueError outside 1970..9999
        except ValueError as e:
            raise ConfigError(f"--reference-time is not an ISO 8601 time: {args.reference_time!r}") from e
    clock = (lambda: read_at) if read_at is not None else None
    pipeline = Pipeline.from_settings(settings, clock=clock)
    pipeline.expire_interval = 0  # timed-out sessions looked for after every batch: output independent of speed
    tune_gc()
    out = sys.stdout.buffer
    counts = {"documents": 0, "sessions": 0, "alerts": 0, "dead": 0}
    failed: list[str] = []

    def events() -> Iterator[bytes]:
        for path in args.files:
            try:
                yield from read_events(path, kind=args.kind, router=pipeline.router, read_at=read_at, mode=args.input)
            except OSError as e:  # a read error midway: the lines before it were printed, the run fails
                log.error("cannot read %s: %s", path, e.strerror or e)
                failed.append(path)

    from ingest.parse_jobs import process_parallel, rows

    if args.jobs > 1:
        results = process_parallel(pipeline, _batches(events(), PARSE_BATCH), args.jobs, settings, read_at)
    else:
        results = ((rows(r, r.dead), r.dead) for r in map(pipeline.process, _batches(events(), PARSE_BATCH)))
    for docs, deads in results:
        for index, doc_id, line, doc, kind in docs:
            if line is None:  # a document pairing or detection read (--jobs N): encoded here
                try:  # as the sink encodes it: numbers that do not fit their fields dropped (ingest.numbers)
                    line = dumps_document(doc or {})
                except (orjson.JSONEncodeError, TypeError) as e:  # 1,000-deep fields: as the worker does
                    deads.append(DeadLetter(b"", "index", "serialization_error",
                                            f"document cannot be encoded as JSON: {e}"))
                    continue
            if args.bulk:
                out.write(_bulk_action(index, doc_id, doc if kind == "session" else None) + b"\n")
            out.write(line + b"\n")
            counts["sessions" if kind == "session" else "alerts" if kind == "alert" else "documents"] += 1
        for dead in deads:
            counts["dead"] += 1
            error = {"error": {"stage": dead.stage, "code": dead.error_code, "reason": dead.reason},
                     "raw": dead.raw.decode("utf-8", "replace")}
            if not args.bulk:
                out.write(orjson.dumps(error) + b"\n")
            log.warning("dead letter (%s/%s): %s", dead.stage, dead.error_code, dead.reason)
    out.flush()
    log.info("%(documents)d documents, %(sessions)d sessions, %(alerts)d alerts, %(dead)d dead letters", counts)
    return 1 if failed else 0


def _bulk_action(index: str, doc_id: str, session: dict[str, Any] | None) -> bytes:
    """The action line the sink sends: ``create``, or for a session document ``index`` with its
    external version (ingest.sessions.doc.version)."""
    if session is None:
        return orjson.dumps({"create": {"_index": index, "_id": doc_id}})
    from ingest.sessions.doc import version

    return orjson.dumps({"index": {"_index": index, "_id": doc_id, "version": version(session),
                                   "version_type": "external"}})


def _template_present(settings: Settings) -> bool | None:
    """True/False if Elasticsearch answered, None if it could not be asked (it may still be starting)."""
    from ingest.setup.template import template_name
    from ingest.sinks.elasticsearch import build_client

    client = build_client(settings.elasticsearch)
    try:
        return bool(client.indices.exists_index_template(name=template_name(settings.index.prefix)))
    except Exception as e:  # connection refused, auth...: the worker waits for Elasticsearch anyway
        log.warning("could not check the index template (%s): %s", type(e).__name__, str(e)[:120])
        return None
    finally:
        client.close()


class _StopDuringStartUp(BaseException):
    """SIGTERM/SIGINT before anything was taken from Redis (not an Exception: nothing catches it)."""


def _stop_start_up(signum: int, frame: object) -> None:
    raise _StopDuringStartUp(signal.Signals(signum).name)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """The worker. A stop asked for during start-up (the template check may wait for an
    Elasticsearch that does not answer) ends it with 0, as a stop of the running worker does."""
    from ingest.enrich.key_files import check_key_files
    from ingest.worker import build_worker

    for signum in (signal.SIGTERM, signal.SIGINT):  # until the worker's own handlers take over
        signal.signal(signum, _stop_start_up)
    try:
        check_key_files(settings.keys)
        if not args.skip_template_check and _template_present(settings) is False:
            log.error("the index template for %s* is not installed: run `audit-ingest setup` first "
                      "(or start with --skip-template-check)", settings.index.prefix)
            return 2
    except _StopDuringStartUp as e:
        log.info("%s during start-up: stopped before taking anything", e)
        return 0
    processes = args.processes or settings.worker.processes
    if args.child_id is None and processes != 1:
        from ingest.supervisor import cpu_count, supervise

        for signum in (signal.SIGTERM, signal.SIGINT):  # the supervisor installs its own handlers
            signal.signal(signum, signal.SIG_DFL)
        return supervise(args, settings, processes or cpu_count())
    stop_asked: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):  # threads start now: no more raising
        signal.signal(signum, lambda n, f: stop_asked.append(n))
    writer = None
    if args.child_id is not None:  # a child of ingest.supervisor: its id, metrics through the status file
        settings.worker.id = args.child_id
        settings.metrics.enabled = False
    worker, close = build_worker(settings)
    if args.status_file is not None:
        from ingest.procmetrics import StatusWriter

        writer = StatusWriter(args.status_file, worker).start()
    tune_gc()
    try:
        worker.install_signal_handlers()
        if stop_asked:
            log.info("%s during start-up: stopping", signal.Signals(stop_asked[0]).name)
            worker.stop()
        return worker.run()
    finally:
        if writer is not None:
            writer.close()
        close()


def cmd_setup(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.setup.kibana_objects import build_saved_objects, render_ndjson
    from ingest.setup.steps import setup_elasticsearch, setup_kibana
    from ingest.sinks.elasticsearch import build_client

    if args.print_kibana:
        sys.stdout.write(render_ndjson(build_saved_objects(settings.index.prefix, settings.detect.index_prefix)))
        return 0
    if not args.kibana_only:
        client = build_client(settings.elasticsearch)
        try:
            bodies = setup_elasticsearch(client, settings)
        finally:
            client.close()
        log.info("index template %s installed%s", bodies.template_name,
                 f", retention policy {bodies.policy_name}" if bodies.policy_name else "")
    if args.no_kibana:
        return 0
    if not settings.kibana.url:
        if args.kibana_only:
            raise ConfigError("--kibana-only needs kibana.url", key="kibana.url")
        log.info("kibana.url not set: Kibana objects not imported")
        return 0
    result = setup_kibana(settings)
    log.info("Kibana: %d saved objects imported", result.success_count)
    return 0


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.deadletter import DeadLetterStore
    from ingest.notify.build import build_queue

    r = settings.redis
    client = r.client()
    store = DeadLetterStore(client, settings.deadletter.key_for(r.key), main_key=r.key, worker="cli")
    store.requeue_notification = build_queue(settings, client, "cli").requeue_dead
    try:
        if args.replay is not None:
            moved = store.replay(None if args.replay < 0 else args.replay)
            print(f"{moved} dead letters put back on {r.key} (notifications: on their output's queue)")
        elif args.list is not None:
            for entry in store.list(args.list):
                print(orjson.dumps(entry).decode())
        else:
            print(orjson.dumps(store.summary(), option=orjson.OPT_INDENT_2).decode())
    finally:
        client.close()
    return 0


def cmd_notify_test(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.notify.build import notify_test

    known = settings.notify.active()
    if not known:
        raise ConfigError("no enabled notify output: configure notify.outputs.<name> (see README, Notifications)",
                          key="notify.outputs")
    unknown = [name for name in args.output if name not in known]
    if unknown:
        raise ConfigError(f"no enabled output named {', '.join(unknown)} (configured: {', '.join(sorted(known))})",
                          key="notify.outputs")
    results = notify_test(settings, args.output or None)
    for r in results:
        print(f"{'ok    ' if r.ok else 'FAILED'} {r.output} ({r.target}): {r.text} in {r.seconds:.2f}s")
    return 0 if all(r.ok for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tag = f"[{args.child_id}] ".replace("%", "%%") if getattr(args, "child_id", None) else ""  # a child of `run --processes N`
    # every message escaped (ingest.logsafe): text quoted from events cannot forge a log line
    install(f"%(asctime)s {tag}%(levelname)s %(name)s: %(message)s",
            getattr(logging, str(args.log_level).upper(), logging.INFO))
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
