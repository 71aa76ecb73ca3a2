"""Where a worker's CPU goes, step by step: ``python benchmarks/worker_profile.py``.

The issue's question is what the worker spends *besides* the pipeline (take, sink encoding and
HTTP, answers, acks, session and detection store round trips, metrics, heartbeats). This harness
starts a real ``redis-server`` and the Elasticsearch double (``es_server.py``, its own process),
preloads ``--events`` corpus events (the end-to-end seed) and runs the worker *in a child process*
(``build_worker`` as ``audit-ingest run`` does it, ``tune_gc`` after start-up) until the list and
its processing lists are empty. Each step of the worker is wrapped (bound methods replaced on the
instances, nothing in ``ingest/`` changes) by a meter that charges the time between two step
boundaries to the step that was running, per thread:

take (take/fill scripts), process (``Pipeline.process`` minus its store calls), session store
(``transact``/``due``/``oldest`` round trips, minus the pairing callback), detect store
(``evaluate``), encode (``write_batch`` minus the request: the bulk lines), send (the client's
``bulk``: request, HTTP, reading the answer), answer (JSON decode of the answer, the body join and
the item checks in ``_send``), ack (``Worker._ack``), metrics (``_acknowledge`` minus the ack,
``loop_ran``, gauges), heartbeat (the heartbeat threads' scripts), gc (collector callbacks), loop
(the rest of the main thread: the loop, futures, the sender hand-off), sender (the rest of the
sender thread).

Measurements (``--measure``, several allowed):

* ``cpu``: each step's thread CPU time (``time.thread_time``) per event, the worker with and
  without overlap, and ``pipeline``: ``Pipeline.process`` + the sink's encoding with in-memory
  stores on the same events in one process (what the parse figure measures). CPU time, not wall
  time: proportions hold on a loaded machine, absolute figures less so.
* ``callgrind``: the same split in instructions (load independent): the child runs under
  ``valgrind --tool=callgrind`` and the meter asks callgrind to dump its counters at every step
  boundary (``CALLGRIND_DUMP_STATS_AT``, a 10-line C helper compiled with ``cc`` at run time);
  the dumps are summed per step. Overlap is off here (callgrind runs one thread at a time and a
  dump counts every thread's instructions since the last one); ``--overlap`` compares totals only.
* ``pyspy``: ``py-spy record --format raw`` of the child (``--native`` with ``--native``), each
  sample assigned to the innermost step function on its stack: a sampling view that needs no
  wrapping.

Example (what RESULTS.md's "Worker profile" ran)::

    python benchmarks/worker_profile.py --events 20000 --measure cpu callgrind
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import corpus  # noqa: E402
import run  # noqa: E402

STEPS = ("take", "process", "session store", "detect store", "encode", "send", "answer", "ack", "metrics",
         "heartbeat", "gc", "loop", "sender", "startup")


# ------------------------------------------------------------------------------------------------
# The meter: time (or instructions) between step boundaries, charged to the running step
# ------------------------------------------------------------------------------------------------

_CG_SOURCE = r"""
#include <valgrind/callgrind.h>
void cg_dump(const char *s) { CALLGRIND_DUMP_STATS_AT(s); }
"""


def callgrind_dumper() -> Callable[[str], None]:
    """A function that makes callgrind dump its counters (no-op outside valgrind)."""
    out = Path(tempfile.mkdtemp(prefix="cgdump-"))
    (out / "cg.c").write_text(_CG_SOURCE)
    subprocess.run(["cc", "-O1", "-shared", "-fPIC", "-o", str(out / "cg.so"), str(out / "cg.c")], check=True)
    lib = ctypes.CDLL(str(out / "cg.so"))
    lib.cg_dump.argtypes = [ctypes.c_char_p]
    names: dict[str, bytes] = {}

    def dump(step: str) -> None:
        b = names.get(step)
        if b is None:
            b = names[step] = step.encode()
        lib.cg_dump(b)

    return dump


class Meter:
    """Per thread, a stack of step names; at each boundary the time since the last boundary of
    that thread goes to the step on top (or, with ``dump``, callgrind is told to dump)."""

    def __init__(self, dump: Callable[[str], None] | None = None) -> None:
        self.spent: defaultdict[str, int] = defaultdict(int)
        self.local = threading.local()
        self.dump = dump
        self.events = 0

    def _state(self) -> tuple[list[str], list[int]]:
        st = getattr(self.local, "st", None)
        if st is None:
            name = threading.current_thread().name
            base = "startup" if name in ("MainThread", "bench") else "sender" if name.startswith("sender") else "other"
            st = self.local.st = ([base], [time.thread_time_ns()])
        return st

    def start(self) -> None:
        """End of start-up (what ran so far is charged to it): the main thread's base step is now the loop."""
        self._boundary()[0] = "loop"

    def stop(self) -> None:
        """The rest (shutdown) goes to start-up too."""
        self._boundary()[0] = "startup"

    def _boundary(self) -> list[str]:
        stack, last = self._state()
        if self.dump is not None:
            # a dump counts every thread's instructions since the last one: only the main thread
            # dumps (the heartbeat threads' few instructions go to the main thread's step)
            if threading.current_thread() is threading.main_thread():
                self.dump(stack[-1])
        else:
            now = time.thread_time_ns()
            self.spent[stack[-1]] += now - last[0]
            last[0] = now
        return stack

    def enter(self, step: str) -> None:
        self._boundary().append(step)

    def exit(self) -> None:
        self._boundary().pop()

    def wrap(self, obj: Any, attr: str, step: str) -> None:
        fn = getattr(obj, attr)
        enter, exit_ = self.enter, self.exit

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            enter(step)
            try:
                return fn(*args, **kwargs)
            finally:
                exit_()

        setattr(obj, attr, wrapped)

    def gc_callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.enter("gc")
        else:
            self.exit()


def instrument_worker(worker: Any, meter: Meter) -> None:
    """Wrap every step of ``worker`` (see the module docstring)."""
    for slot in worker.slots:
        meter.wrap(slot, "take", "take")
        meter.wrap(slot, "fill", "take")
        meter.wrap(slot, "_beat", "heartbeat")
    pipeline = worker.pipeline
    process = pipeline.process

    def counted(raws: list[bytes]) -> Any:
        meter.events += len(raws)
        return process(raws)

    pipeline.process = counted
    meter.wrap(pipeline, "process", "process")
    if pipeline.pairer is not None:
        store = pipeline.pairer.store
        transact = store.transact

        def metered_transact(keys: Any, fn: Callable[[Any], Any], now: int, after: Any = None) -> Any:
            def inner(states: Any) -> Any:
                meter.enter("process")
                try:
                    return fn(states)
                finally:
                    meter.exit()
            return transact(keys, inner, now, after)  # after: the pending session documents' writes

        store.transact = metered_transact
        meter.wrap(store, "transact", "session store")
        meter.wrap(store, "due", "session store")
        meter.wrap(store, "oldest", "session store")
    for stage in pipeline.post:
        meter.wrap(stage.store, "evaluate", "detect store")
    sink = worker.sink
    meter.wrap(sink, "write_batch", "encode")
    meter.wrap(sink, "_send", "answer")
    client = sink._client
    meter.wrap(client, "bulk", "send")
    meter.wrap(client.transport.serializers.get_serializer("application/json"), "loads", "answer")
    meter.wrap(worker, "_ack", "ack")
    meter.wrap(worker, "_acknowledge", "metrics")
    meter.wrap(worker.metrics, "loop_ran", "metrics")
    meter.wrap(worker, "_update_gauges", "metrics")
    gc.callbacks.append(meter.gc_callback)


# ------------------------------------------------------------------------------------------------
# The child: one measured run
# ------------------------------------------------------------------------------------------------


def child(args: argparse.Namespace) -> int:
    run.quiet()
    dump = callgrind_dumper() if args.clock == "callgrind" else None
    meter = Meter(dump) if args.clock != "none" else None
    if args.mode == "pipeline":
        return child_pipeline(args, meter)
    from ingest.runtime import tune_gc
    from ingest.settings import load_settings
    from ingest.worker import build_worker

    settings = load_settings(Path(args.config), overrides={"worker": {"overlap": args.overlap, "id": "profile"}})
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    worker, close = build_worker(settings)
    tune_gc()
    if meter is not None:
        instrument_worker(worker, meter)
        meter.start()

    acknowledge = worker._acknowledge
    acked = 0

    def counted_ack(batch: Any, rejected: Any) -> None:  # stop once every event is acknowledged
        nonlocal acked
        acknowledge(batch, rejected)
        acked += len(batch.raws)
        if acked >= args.events:
            worker.stop()

    worker._acknowledge = counted_ack
    cpu = time.process_time()
    times = os.times()
    try:
        worker.run()
    finally:
        close()
    cpu = time.process_time() - cpu
    args.sys_seconds = os.times().system - times.system
    if meter is not None:
        meter.stop()
    write_result(args, meter, cpu, meter.events if meter else args.events)
    return 0


def child_pipeline(args: argparse.Namespace, meter: Meter | None) -> int:
    from ingest.runtime import tune_gc

    events = list(corpus.CorpusGenerator(corpus.SEED + 1).events(args.events))
    pipeline = run.new_pipeline()
    encode = run.encoder()
    tune_gc()
    if meter is not None:
        gc.callbacks.append(meter.gc_callback)
        meter.start()
    cpu = time.process_time()
    for i in range(0, len(events), run.BATCH):
        if meter is not None:
            meter.enter("process")
        result = pipeline.process(events[i:i + run.BATCH])
        if meter is not None:
            meter.exit()
            meter.enter("encode")
        for action in result.actions:
            encode(action)
        if meter is not None:
            meter.exit()
    cpu = time.process_time() - cpu
    if meter is not None:
        meter.stop()
    write_result(args, meter, cpu, len(events))
    return 0


def write_result(args: argparse.Namespace, meter: Meter | None, cpu: float, events: int) -> None:
    out = {"events": events, "cpu_seconds": cpu, "spent_ns": dict(meter.spent) if meter else {},
           "sys_seconds": getattr(args, "sys_seconds", 0.0)}
    Path(args.out).write_bytes(orjson.dumps(out))


# ------------------------------------------------------------------------------------------------
# The parent: Redis, the double, preloading, running children, tables
# ------------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, n: int, keep: bool = False) -> None:
        from tests.redis_server import RedisServer

        self.n = n
        self.keep = keep
        self.switch_interval: float | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="worker-profile-"))
        self.redis_server = RedisServer()
        self.redis_server.start()
        self.es = run.EsServer()
        self.redis_url = f"redis://127.0.0.1:{self.redis_server.port}/1"
        try:  # the in-process worker does not check the template: a setup that fails is only a warning
            run.setup_template(self.redis_url, self.es.url, self.workdir)
        except subprocess.SubprocessError as e:
            sys.stderr.write(f"audit-ingest setup did not finish ({e}); going on without the template\n")
        self.config = run.write_config(self.workdir, self.redis_url, self.es.url, "profile")
        self.events = list(corpus.CorpusGenerator(corpus.SEED + 1).events(n))

    def preload(self) -> None:
        client = self.redis_server.client(db=1)
        client.flushdb()
        run.push(client, self.events)
        client.close()

    def child_cmd(self, mode: str, clock: str, overlap: bool, out: Path) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "--child", "--mode", mode, "--clock", clock,
                "--config", str(self.config), "--events", str(self.n), "--out", str(out)] + (
                    ["--overlap"] if overlap else []) + (
                    ["--switch-interval", str(self.switch_interval)] if self.switch_interval else [])

    def run_child(self, mode: str, clock: str, overlap: bool, prefix: list[str] | None = None) -> dict[str, Any]:
        client = self.redis_server.client(db=1)
        if mode == "worker":
            self.preload()
        client.config_resetstat()
        out = self.workdir / f"{mode}-{clock}-{int(overlap)}.json"
        subprocess.run((prefix or []) + self.child_cmd(mode, clock, overlap, out), check=True, cwd=ROOT)
        result: dict[str, Any] = orjson.loads(out.read_bytes())
        result["redis_commands"] = redis_commands(client)
        client.close()
        return result

    def callgrind(self, mode: str, overlap: bool) -> dict[str, Any]:
        cg = self.workdir / f"cg-{mode}-{int(overlap)}"
        cg.mkdir()
        prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}/cg.out", "--dump-instr=no",
                  "--dump-line=no", "--compress-strings=no", "--combine-dumps=no"]
        result = self.run_child(mode, "callgrind", overlap, prefix)
        result["spent_ir"] = read_dumps(cg)
        return result

    def pyspy(self, overlap: bool, native: bool) -> dict[str, int]:
        self.preload()
        out = self.workdir / "pyspy.json"
        raw = self.workdir / "pyspy.txt"
        cmd = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "--rate", "250",
               "--threads", "-o", str(raw)] + (["--native"] if native else []) + ["--"]
        subprocess.run(cmd + self.child_cmd("worker", "none", overlap, out), check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
        return classify_pyspy(raw.read_text())

    def close(self) -> None:
        self.es.close()
        self.redis_server.close()
        if self.keep:
            sys.stderr.write(f"kept {self.workdir}\n")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def redis_commands(client: Any) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT (round trips and script calls)."""
    stats = client.info("commandstats")
    skip = ("cmdstat_config", "cmdstat_info", "cmdstat_flushdb", "cmdstat_rpush", "cmdstat_ping")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items() if not k.startswith(skip)}


def read_dumps(directory: Path) -> dict[str, int]:
    """Instructions per step from callgrind's dumps (one file per boundary, named by the step that ran)."""
    spent: Counter[str] = Counter()
    for path in directory.iterdir():
        if not path.name.startswith("cg.out"):
            continue
        step, total = "startup", 0
        with path.open(errors="replace") as f:
            for line in f:
                if line.startswith("desc: Trigger: Client Request: "):
                    step = line.split(": ", 3)[-1].strip()
                elif line.startswith(("summary:", "totals:")):
                    total = int(line.split()[1])
                    break
                elif line.startswith("desc: Trigger: Program termination"):
                    step = "startup"
        spent[step] += total
    return dict(spent)


#: innermost function on a py-spy stack -> step (checked from the leaf up: the first match wins)
PYSPY_STEPS: list[tuple[str, str]] = [
    ("gc_collect", "gc"), ("collect_with_callback", "gc"),
    ("_heartbeat_loop", "heartbeat"),
    ("loads (elastic_transport", "answer"), ("loads (elasticsearch", "answer"),
    ("_send (ingest/sinks", "answer"),
    ("bulk (elasticsearch", "send"),
    ("_encode (ingest/sinks", "encode"), ("write_batch (ingest/sinks", "encode"),
    ("evaluate (ingest/detect/store", "detect store"),
    ("inner (", "process"),
    ("transact (ingest/sessions/store", "session store"), ("due (ingest/sessions/store", "session store"),
    ("process (ingest/pipeline", "process"),
    ("fill (ingest/sources", "take"), ("take (ingest/sources", "take"),
    ("_ack (ingest/worker", "ack"),
    ("_acknowledge (ingest/worker", "metrics"), ("loop_ran (ingest/metrics", "metrics"),
    ("_update_gauges (ingest/worker", "metrics"),
    ("run (ingest/worker", "loop"), ("_finish (ingest/worker", "loop"),
    ("_worker (concurrent", "sender"),
]


#: frames that mean the sample is start-up, shutdown or waiting (not counted)
PYSPY_SKIP: list[tuple[str, str]] = [
    ("build_worker (", "startup"), ("load_settings (", "startup"), ("tune_gc (", "startup"),
    ("<module> (ingest", "startup"), ("_find_and_load (", "startup"), ("Worker._finish", "startup"), ("close (ingest/worker", "startup"),
    ("Condition.wait", "idle"), ("Event.wait", "idle"), ("wait (threading", "idle"), ("Timer.run", "idle"),
]


def classify_pyspy(text: str) -> dict[str, int]:
    """Samples per step from ``py-spy record --format raw`` (``frame;frame;... count`` lines, root first)."""
    found: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        skip = next((s for key, s in PYSPY_SKIP if key in stack), None)
        if skip is not None or len(frames) < 2:  # no Python frame under the thread's: nothing to assign
            continue
        step = "other"
        for frame in reversed(frames):
            hit = next((s for key, s in PYSPY_STEPS if key in frame), None)
            if hit is not None:
                step = hit
                break
        found[step] += int(count)
    return dict(found)


def table(columns: dict[str, dict[str, float]], unit: str) -> str:
    """A markdown table: one row per step, one column per run, values per event."""
    names = list(columns)
    lines = [f"| step ({unit} per event) | " + " | ".join(names) + " |",
             "|---|" + "---:|" * len(names)]
    steps = [s for s in STEPS if s != "startup" and any(c.get(s) for c in columns.values())]
    steps += sorted({s for c in columns.values() for s in c} - set(STEPS))
    for step in steps:
        lines.append(f"| {step} | " + " | ".join(fmt(columns[n].get(step, 0.0)) for n in names) + " |")
    lines.append("| **total** | " + " | ".join(
        fmt(sum(v for k, v in columns[n].items() if k != "startup")) for n in names) + " |")
    return "\n".join(lines)


def fmt(v: float) -> str:
    return f"{v:,.1f}" if v < 1000 else f"{v:,.0f}"


def per_event(spent: dict[str, int], events: int, scale: float) -> dict[str, float]:
    return {k: v * scale / max(events, 1) for k, v in spent.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--measure", nargs="+", choices=("cpu", "callgrind", "pyspy"), default=["cpu"])
    ap.add_argument("--native", action="store_true", help="py-spy --native")
    ap.add_argument("--switch-interval", type=float, help="sys.setswitchinterval in the worker (GIL hand-offs)")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (dumps, py-spy's raw file)")
    ap.add_argument("--worker-only", action="store_true", help="callgrind: only the worker (not the pipeline alone)")
    ap.add_argument("--overlap", action="store_true", help="child: overlap on; callgrind: also a total with it on")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=("worker", "pipeline"), default="worker", help=argparse.SUPPRESS)
    ap.add_argument("--clock", choices=("cpu", "callgrind", "none"), default="cpu", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    bench = Bench(args.events, args.keep)
    bench.switch_interval = args.switch_interval
    out = sys.stdout
    try:
        if "cpu" in args.measure:
            cols: dict[str, dict[str, float]] = {}
            totals = {}
            systime = {}
            for name, mode, overlap in (("pipeline alone", "pipeline", False), ("worker, overlap off", "worker", False),
                                        ("worker, overlap on", "worker", True)):
                r = bench.run_child(mode, "cpu", overlap)
                cols[name] = per_event(r["spent_ns"], r["events"], 1e-3)
                totals[name] = r["cpu_seconds"] / max(r["events"], 1) * 1e6
                systime[name] = r["sys_seconds"] / max(r["events"], 1) * 1e6
                if name == "worker, overlap off":
                    commands = r["redis_commands"]
            out.write(f"\nCPU (thread time), {args.events:,} events\n\n{table(cols, 'µs')}\n")
            out.write("| process CPU (all threads, from first to last batch) | "
                      + " | ".join(f"{v:.1f}" for v in totals.values()) + " |\n")
            out.write("| of which system time (syscalls) | "
                      + " | ".join(f"{v:.1f}" for v in systime.values()) + " |\n")
            batches = -(-args.events // run.BATCH)
            out.write(f"\nRedis commands per batch ({batches} batches, worker overlap off): "
                      + ", ".join(f"{k} {v / batches:.1f}" for k, v in sorted(commands.items())) + "\n")
        if "callgrind" in args.measure:
            cols = {}
            for name, mode, overlap in (("pipeline alone", "pipeline", False), ("worker", "worker", False)):
                if mode == "pipeline" and args.worker_only:
                    continue
                r = bench.callgrind(mode, overlap)
                cols[name] = per_event(r["spent_ir"], r["events"], 1.0)
            if args.overlap:
                r = bench.callgrind("worker", True)
                cols["worker, overlap on"] = per_event(r["spent_ir"], r["events"], 1.0)
            out.write(f"\ncallgrind instructions, {args.events:,} events\n\n{table(cols, 'instructions')}\n")
        if "pyspy" in args.measure:
            samples = bench.pyspy(args.overlap, args.native)
            total = sum(samples.values()) or 1
            out.write(f"\npy-spy samples, {args.events:,} events (overlap {'on' if args.overlap else 'off'})\n\n")
            for step, n in sorted(samples.items(), key=lambda kv: -kv[1]):
                out.write(f"| {step} | {n} | {n / total:.1%} |\n")
            out.write("(start-up, shutdown and waits left out)\n")
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    if "--child" not in sys.argv:
        threading.current_thread().name = "bench"
    sys.exit(main())
