"""Soak runs of ``audit-ingest run`` (``make soak``; not in CI): memory flat, nothing lost under faults.

A real redis-server, the Elasticsearch double in its own process (``benchmarks/es_server.py
--soak``, which counts every created event document by its number) and the workers as one
``audit-ingest run --processes 2`` (the supervisor and its two children, ``soak-1``/``soak-2``).
Events are the benchmark corpus (``benchmarks/corpus.py``), cycled; each pushed event gets a
number (``fields.soak_seq``) and its own ``log.offset``, so each has its own document id.

- ``--mode rss`` (issue 14): ``--events`` (5M) pushed as fast as the workers take them (the
  main list kept under 20,000), RSS of each worker sampled every ``--sample`` seconds (10) and
  printed as a table; asserts every event stored once and each worker's RSS flat after warm-up
  (the first ``--warmup`` share of the events, 20 %): the last three samples at most 5 % (and at
  least 5 MB) above the first three after warm-up.
- ``--mode faults`` (issue 15 item 10): ``--rate`` (2,000) events/s offered for ``--minutes``
  (30); every ``--fault-every`` seconds (60) either a SIGKILL of worker ``soak-2`` (the
  supervisor restarts it) or an Elasticsearch fault (every bulk answered 503 for
  ``--fault-seconds``, 5), in turn. At the end, once drained: 0 lost and 0 duplicated (by the
  events' numbers in the double against the events pushed; dead letters counted apart), the
  supervisor exits 0 on SIGTERM with every list empty, the RSS of ``soak-1`` (never killed) flat,
  session keys within ``sessions.max_open + max_orphans + max_closed``, every detection key with
  an expiry, the dead-letter list within ``deadletter.max_length``.

Exit status 0 when every assertion held. Timing figures from a loaded machine mean little; the
assertions do not depend on speed.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import corpus  # noqa: E402
from run import AUTHORIZED_KEYS, GEOIP_ASN, GEOIP_CITY, KEY, EsServer, audit_ingest, machine  # noqa: E402

BACKLOG = 20_000  # rss mode: the main list is topped up to this
DEAD_MAX = 10_000


class SoakDouble(EsServer):
    """The double with ``--soak`` (counts documents by ``fields.soak_seq``)."""

    def __init__(self) -> None:
        super().__init__(False, "--soak")


def config(workdir: Path, redis_url: str, es_url: str) -> Path:
    path = workdir / "soak.toml"
    path.write_text(f'[geoip]\ncity_database = "{GEOIP_CITY}"\nasn_database = "{GEOIP_ASN}"\n\n'
                    f'[keys]\nauthorized_keys = ["{AUTHORIZED_KEYS}"]\n\n'
                    f'[redis]\nurl = "{redis_url}"\nheartbeat_ttl = "PT10S"\n\n'
                    f'[elasticsearch]\nhosts = ["{es_url}"]\nbackoff_max = "PT2S"\n\n'
                    f'[deadletter]\nmax_length = {DEAD_MAX}\n\n'
                    '[metrics]\nenabled = false\n\n[worker]\nid = "soak"\n')
    return path


class Events:
    """Corpus events, cycled, each with its number and its own offset."""

    def __init__(self, pool: int) -> None:
        self.pool = corpus.generate(pool)
        self.next = 0

    def take(self, n: int) -> list[bytes]:
        out = []
        for _ in range(n):
            seq = self.next
            self.next += 1
            event = orjson.loads(self.pool[seq % len(self.pool)])
            log = event.get("log")
            if isinstance(log, dict) and "offset" in log:
                log["offset"] = seq
            elif "offset" in event:
                event["offset"] = seq
            fields = event.get("fields")
            if not isinstance(fields, dict):
                fields = event["fields"] = {}
            fields["soak_seq"] = seq
            out.append(orjson.dumps(event))
        return out


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Supervised:
    """``audit-ingest run --processes 2`` and its children, by worker id."""

    def __init__(self, cfg: Path, workdir: Path) -> None:
        self.log = open(workdir / "run.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([audit_ingest(), "run", "--processes", "2", "--config", str(cfg),
                                      "--skip-template-check", "--log-level", "WARNING"],
                                     stdout=self.log, stderr=self.log, cwd=ROOT)

    def children(self) -> dict[str, int]:
        try:
            pids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return {}
        out = {}
        for pid in map(int, pids):
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"--child-id" in args:
                out[args[args.index(b"--child-id") + 1].decode()] = pid
        return out

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        return code


def pending(client: Any) -> int:
    n = int(client.llen(KEY))
    for key in client.scan_iter(match=f"{KEY}:processing:*", count=1000):
        n += int(client.llen(key))
    return n


def redis_keys(client: Any, settings: Any) -> dict[str, Any]:
    """Keys by owner; detection keys without an expiry; the dead list's length."""
    sessions = detect = no_ttl = other = 0
    sp, dp = settings.sessions.key_prefix.encode(), settings.detect.key_prefix.encode()
    for key in client.scan_iter(count=5000):
        if key.startswith(sp):
            sessions += 1
        elif key.startswith(dp):
            detect += 1
            if client.pttl(key) < 0:
                no_ttl += 1
        else:
            other += 1
    return {"sessions": sessions, "detect": detect, "detect_no_ttl": no_ttl, "other": other,
            "dead": int(client.llen(f"{KEY}:dead")),
            "derived_pending": int(client.hlen(f"{KEY}:pending:docs"))}  # ingest.pending: 0 once drained


def flat(values: list[float], slack: float = 0.05, floor: float = 5.0) -> tuple[bool, str]:
    """Last three samples against the first three (the samples given are those after warm-up)."""
    if len(values) < 6:
        return True, f"too few samples after warm-up ({len(values)}) to judge"
    start, end = sum(values[:3]) / 3, sum(values[-3:]) / 3
    limit = start + max(floor, start * slack)
    return end <= limit, f"{start:.1f} MB -> {end:.1f} MB (limit {limit:.1f})"


class Table:
    def __init__(self, columns: list[str]) -> None:
        self.columns = columns
        print(" | ".join(columns), flush=True)

    def row(self, values: list[Any]) -> None:
        print(" | ".join(f"{v:>{len(c)}}" if not isinstance(v, float) else f"{v:>{len(c)}.1f}"
                         for c, v in zip(self.columns, values, strict=True)), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=["rss", "faults"], required=True)
    ap.add_argument("--events", type=int, default=5_000_000, help="rss mode: events to push")
    ap.add_argument("--minutes", type=float, default=30.0, help="faults mode: how long to offer events")
    ap.add_argument("--rate", type=int, default=2000, help="faults mode: events/s offered")
    ap.add_argument("--fault-every", type=float, default=60.0, help="faults mode: seconds between faults")
    ap.add_argument("--fault-seconds", type=float, default=5.0, help="faults mode: length of an ES fault")
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=0.2, help="share of the run before RSS must be flat")
    ap.add_argument("--pool", type=int, default=100_000, help="distinct corpus events cycled")
    args = ap.parse_args(argv)

    from ingest.settings import load_settings
    from tests.redis_server import RedisServer

    print(f"soak {args.mode} on {machine()}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="audit-ingest-soak-"))
    server = RedisServer()
    server.start()
    double = SoakDouble()
    client = server.client(db=1)
    redis_url = f"redis://127.0.0.1:{server.port}/1"
    cfg = config(workdir, redis_url, double.url)
    settings = load_settings(cfg)
    events = Events(args.pool)
    failures: list[str] = []
    sup: Supervised | None = None
    try:
        sup = Supervised(cfg, workdir)
        deadline = time.monotonic() + 120
        while len(sup.children()) < 2:
            if time.monotonic() > deadline or sup.proc.poll() is not None:
                raise RuntimeError(f"the workers did not start (see {workdir / 'run.log'})")
            time.sleep(0.2)
        if args.mode == "rss":
            samples = soak_rss(args, client, sup, double, events, settings)
            watched = ["soak-1", "soak-2"]
        else:
            samples = soak_faults(args, client, sup, double, events, settings, failures)
            watched = ["soak-1"]
        code = sup.stop()
        if code != 0:
            failures.append(f"run exited {code} on SIGTERM")
        left = pending(client)
        if left:
            failures.append(f"{left} events left in Redis lists after the stop")
        report = double.ask(f"soak {events.next}")
        dead = client.llen(f"{KEY}:dead")
        print(f"\npushed {events.next}, stored {report['stored']}, missing {report['missing']} "
              f"(first: {report['missing_first']}), dead-lettered {dead}, duplicated {report['duplicated']}, "
              f"redelivered (same id again) {report['redelivered']}, session/alert documents {report['derived']}")
        if report["missing"] > dead:
            failures.append(f"{report['missing'] - dead} events lost")
        if report["duplicated"]:
            failures.append(f"{report['duplicated']} events stored under a second id")
        warm = int(len(samples) * args.warmup)
        for wid in watched:
            values = [s["rss"][wid] for s in samples[warm:] if s["rss"].get(wid) is not None]
            ok, text = flat(values)
            print(f"RSS {wid} after warm-up: {text}: {'flat' if ok else 'GROWING'}")
            if not ok:
                failures.append(f"RSS of {wid} grew: {text}")
        keys = redis_keys(client, settings)
        s = settings.sessions
        bound = s.max_open + s.max_orphans + s.max_closed + 8
        print(f"Redis keys at the end: {keys} (session bound {bound}, dead bound {DEAD_MAX})")
        if keys["sessions"] > bound:
            failures.append(f"{keys['sessions']} session keys, above the bound {bound}")
        if keys["detect_no_ttl"]:
            failures.append(f"{keys['detect_no_ttl']} detection keys without an expiry")
        if keys["dead"] > DEAD_MAX:
            failures.append(f"dead list {keys['dead']} above max_length {DEAD_MAX}")
    finally:
        if sup is not None and sup.proc.poll() is None:
            sup.stop()
        double.close()
        client.close()
        server.close()
    print("\nPASS" if not failures else "\nFAIL:\n  " + "\n  ".join(failures))
    print(f"(logs in {workdir})")
    return 0 if not failures else 1


def sample_row(t0: float, client: Any, sup: Supervised, double: EsServer, events: Events, extra: str = ""
               ) -> dict[str, Any]:
    kids = sup.children()
    return {"t": time.monotonic() - t0, "pushed": events.next, "docs": double.ask("count")["count"],
            "main": int(client.llen(KEY)), "rss": {w: rss_mb(pid) for w, pid in kids.items()}, "note": extra}


def show(table: Table, s: dict[str, Any]) -> None:
    table.row([f"{s['t']:.0f}", s["pushed"], s["docs"], s["main"],
               s["rss"].get("soak-1") or 0.0, s["rss"].get("soak-2") or 0.0, s["note"]])


COLUMNS = ["   t s", "   pushed", " documents", "   main", "soak-1 MB", "soak-2 MB", "event"]


def soak_rss(args: Any, client: Any, sup: Supervised, double: EsServer, events: Events, settings: Any
             ) -> list[dict[str, Any]]:
    table = Table(COLUMNS)
    samples: list[dict[str, Any]] = []
    t0 = next_sample = time.monotonic()
    while True:
        if events.next < args.events:
            room = BACKLOG - int(client.llen(KEY))
            if room > 0:
                client.rpush(KEY, *events.take(min(room, 5000, args.events - events.next)))
        elif pending(client) == 0:
            break
        if time.monotonic() >= next_sample:
            next_sample += args.sample
            samples.append(sample_row(t0, client, sup, double, events))
            show(table, samples[-1])
        if sup.proc.poll() is not None:
            raise RuntimeError("the supervisor exited")
        time.sleep(0.05)
    samples.append(sample_row(t0, client, sup, double, events, "drained"))
    show(table, samples[-1])
    return samples


def soak_faults(args: Any, client: Any, sup: Supervised, double: EsServer, events: Events, settings: Any,
                failures: list[str]) -> list[dict[str, Any]]:
    table = Table(COLUMNS)
    samples: list[dict[str, Any]] = []
    stop = threading.Event()
    rng = random.Random(15)

    def offer() -> None:  # the offered load, in 10 ms ticks
        tick, per_tick, started, i = 0.01, max(1, round(args.rate * 0.01)), time.monotonic(), 0
        while not stop.is_set():
            client_p.rpush(KEY, *events.take(per_tick))
            i += 1
            wait = started + i * tick - time.monotonic()
            if wait > 0:
                time.sleep(wait)

    client_p = type(client)(connection_pool=client.connection_pool)
    pusher = threading.Thread(target=offer, daemon=True)
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    next_sample, next_fault, kills, faults = t0, t0 + args.fault_every, 0, 0
    pusher.start()
    try:
        while time.monotonic() < end:
            now = time.monotonic()
            note = ""
            if now >= next_fault:
                next_fault += args.fault_every
                if (kills + faults) % 2 == 0:
                    pid = sup.children().get("soak-2")
                    if pid is not None:
                        time.sleep(rng.uniform(0, 0.5))
                        os.kill(pid, signal.SIGKILL)
                        kills += 1
                        note = f"SIGKILL soak-2 (pid {pid})"
                else:
                    double.ask(f"fail {args.fault_seconds}")
                    faults += 1
                    note = f"ES 503 for {args.fault_seconds:.0f}s"
            if now >= next_sample or note:
                if now >= next_sample:
                    next_sample += args.sample
                samples.append(sample_row(t0, client, sup, double, events, note))
                show(table, samples[-1])
            if sup.proc.poll() is not None:
                raise RuntimeError("the supervisor exited")
            time.sleep(0.05)
    finally:
        stop.set()
        pusher.join()
    drain_deadline = time.monotonic() + 300
    while pending(client) > 0:
        if time.monotonic() > drain_deadline:
            failures.append(f"not drained 5 min after the load stopped ({pending(client)} left)")
            break
        time.sleep(0.5)
    samples.append(sample_row(t0, client, sup, double, events, f"drained ({kills} kills, {faults} ES faults)"))
    show(table, samples[-1])
    lease_over = time.monotonic() + settings.worker.derived_lease.total_seconds() + 30
    while client.hlen(f"{KEY}:pending:docs") and time.monotonic() < lease_over:
        time.sleep(0.5)  # derived documents of killed batches: carried once their lease is over
    drained = redis_keys(client, settings)
    print(f"Redis keys once drained: {drained}")
    if drained["derived_pending"]:
        failures.append(f"{drained['derived_pending']} session/alert documents still pending after their lease")
    if kills == 0 and args.minutes * 60 >= args.fault_every:
        failures.append("no kill happened")
    return [s for s in samples if not s["note"].startswith("SIGKILL")]


if __name__ == "__main__":
    sys.exit(main())
