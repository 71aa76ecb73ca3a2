"""``audit-ingest run --processes N``: the supervisor, its children, one metrics port.

Real processes (``python -m ingest.cli run``) on the test redis-server, writing to the
Elasticsearch double of this process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from ingest.procmetrics import Aggregator, write_json
from ingest.supervisor import BACKOFF_MAX, backoff
from tests.es_double import ESDouble, es_double  # noqa: F401  (fixture)
from tests.redis_server import RedisServer, free_port
from tests.test_worker import Expected, check_end_state, finished, wait_for
from tests.worker_proc import redis_url, sample_events

ROOT = Path(__file__).parent.parent
#: the counter of documents Elasticsearch accepted (rename here if ingest/metrics.py renames it)
INDEXED = "audit_ingest_events_total"  # outcome indexed (no event of these tests is dead-lettered)


class Supervised:
    """One ``run --processes N`` process and what it serves."""

    def __init__(self, tmp: Path, redis_port: int, es_url: str, n: int, *, ttl: str = "PT1S") -> None:
        self.port = free_port()
        self.log_path = tmp / "supervisor.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "AUDIT_INGEST_REDIS__URL": redis_url(redis_port), "AUDIT_INGEST_REDIS__BATCH_SIZE": "50",
               "AUDIT_INGEST_REDIS__BATCH_WAIT": "PT0.02S", "AUDIT_INGEST_REDIS__BLOCK_TIMEOUT": "PT0.2S",
               "AUDIT_INGEST_REDIS__HEARTBEAT_TTL": ttl,
               "AUDIT_INGEST_ELASTICSEARCH__HOSTS": json.dumps([es_url]),
               "AUDIT_INGEST_ELASTICSEARCH__BACKOFF_INITIAL": "PT0.02S",
               "AUDIT_INGEST_ELASTICSEARCH__BACKOFF_MAX": "PT0.3S",
               "AUDIT_INGEST_SESSIONS__ENABLED": "false", "AUDIT_INGEST_DETECT__ENABLED": "false",
               "AUDIT_INGEST_METRICS__BIND": "127.0.0.1", "AUDIT_INGEST_METRICS__PORT": str(self.port),
               "AUDIT_INGEST_WORKER__ID": "sup", "AUDIT_INGEST_WORKER__SHUTDOWN_TIMEOUT": "PT5S"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "ingest.cli", "run", "--skip-template-check",
                                          "--processes", str(n)], cwd=ROOT, env=env, stdout=log,
                                         stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def children(self) -> list[int]:
        """Pids of the supervisor's child processes."""
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for fam in text_string_to_metric_families(self.get("/metrics")[1]):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@pytest.fixture
def supervised(tmp_path: Path, redis_server: RedisServer, es_double: ESDouble) -> Iterator[Any]:  # noqa: F811
    made: list[Supervised] = []

    def start(n: int, **kw: Any) -> Supervised:
        s = Supervised(tmp_path, redis_server.port, es_double.url, n, **kw)
        made.append(s)
        return s

    yield start
    for s in made:
        kids = s.children()
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def started(client: redis.Redis, *ids: str) -> bool:
    return all(client.exists(f"filebeat:heartbeat:{w}") for w in ids)


def test_two_processes_drain_the_list_and_stop_on_sigterm(supervised: Any, redis_client: redis.Redis,
                                                          es_double: ESDouble) -> None:  # noqa: F811
    raws = sample_events(3000, host="procs")
    expected = Expected(raws)
    sup = supervised(2)
    wait_for(lambda: started(redis_client, "sup-1", "sup-2"), 30, "both children started")
    assert len(sup.children()) == 2
    for i in range(0, len(raws), 500):
        redis_client.rpush("filebeat", *raws[i:i + 500])
    wait_for(lambda: finished(redis_client, es_double, expected), 60, "all events indexed")
    # every child took a share, and /metrics sums them on the one port
    wait_for(lambda: sup.metric(INDEXED, outcome="indexed") == 3000, 10, "the children's counts on /metrics")
    assert sup.metric("audit_ingest_last_loop_timestamp_seconds", process="1") > 0
    assert sup.metric("audit_ingest_last_loop_timestamp_seconds", process="2") > 0
    assert sup.metric("audit_ingest_processes", state="running") == 2
    shares = [_counter(_status_dir(sup) / f"{k}.json", INDEXED) for k in (1, 2)]
    assert sum(shares) == 3000 and all(shares), shares  # both children took a share
    status, text = sup.get("/healthz")
    assert status == 200 and "process 1 (sup-1): ok" in text and "process 2 (sup-2): ok" in text, text
    assert sup.stop() == 0, sup.log()[-3000:]
    assert sup.children() == []
    check_end_state(redis_client, es_double, expected)
    assert not redis_client.smembers("filebeat:workers")
    assert not list(redis_client.scan_iter(match="filebeat:heartbeat:*"))
    log = sup.log()
    assert "[sup-1]" in log and "[sup-2]" in log and "all 2 worker processes stopped" in log


def test_a_child_killed_is_restarted_under_its_id_and_takes_its_batch_back(
        supervised: Any, redis_client: redis.Redis, es_double: ESDouble) -> None:  # noqa: F811
    raws = sample_events(3000, host="procs-kill")
    expected = Expected(raws)
    es_double.delay(0.1, times=None)  # a few seconds of work: the kill lands mid-batch
    sup = supervised(2, ttl="PT30S")  # recovery by heartbeat expiry would take 30 s: too late for this test
    wait_for(lambda: started(redis_client, "sup-1", "sup-2"), 30, "both children started")
    redis_client.rpush("filebeat", *raws)
    wait_for(lambda: redis_client.llen("filebeat:processing:sup-1") > 0, 20, "sup-1 holds a batch")
    victim = int(json.loads(Path(_status_dir(sup), "1.json").read_text())["pid"])
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in sup.children() and len(sup.children()) == 2, 20, "sup-1 restarted")
    es_double.clear_faults()
    wait_for(lambda: finished(redis_client, es_double, expected), 25, "all events indexed after the kill")
    log = sup.log()
    assert "worker sup-1 killed by SIGKILL" in log and "restarting in" in log
    assert "has a live heartbeat" not in log  # its heartbeat was released: no wait for the TTL
    wait_for(lambda: sup.metric("audit_ingest_process_restarts_total", process="1") == 1, 10, "restart counted")
    assert sup.stop() == 0, sup.log()[-3000:]
    check_end_state(redis_client, es_double, expected)  # nothing lost, nothing stored twice


def test_healthz_fails_while_a_child_is_stuck(supervised: Any, redis_client: redis.Redis) -> None:
    sup = supervised(2)
    wait_for(lambda: started(redis_client, "sup-1", "sup-2"), 30, "both children started")
    wait_for(lambda: sup.get("/healthz")[0] == 200, 20, "healthy")
    stuck = int(json.loads(Path(_status_dir(sup), "2.json").read_text())["pid"])
    os.kill(stuck, signal.SIGSTOP)  # writes no status any more
    try:
        wait_for(lambda: sup.get("/healthz")[0] == 503, 30, "unhealthy")
        assert "process 2 (sup-2): no status for" in sup.get("/healthz")[1]
    finally:
        os.kill(stuck, signal.SIGCONT)
    wait_for(lambda: sup.get("/healthz")[0] == 200, 20, "healthy again")
    assert sup.stop() == 0, sup.log()[-3000:]


def test_one_process_runs_without_a_supervisor(supervised: Any, redis_client: redis.Redis) -> None:
    sup = supervised(1)
    wait_for(lambda: started(redis_client, "sup"), 30, "the worker started under its own id")
    assert sup.children() == []
    assert sup.get("/healthz")[0] == 200
    assert sup.stop() == 0
    assert "supervisor" not in sup.log()


def _status_dir(sup: Supervised) -> Path:
    """The supervisor's temporary folder of status files (its children's --status-file)."""
    for pid in sup.children():
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"--status-file" in args:
            return Path(args[args.index(b"--status-file") + 1].decode()).parent
    raise AssertionError("no child with a status file")


def _counter(path: Path, sample: str) -> float:
    status = json.loads(path.read_text())
    return sum(v for fam in status["families"] for name, _, v in fam["samples"] if name == sample)


# -- the pieces, in this process -------------------------------------------------------------


def _status(path: Path, *, indexed: float, pid: int = 1, ok: bool = True, age: float = 0.0) -> None:
    write_json(path, {"pid": pid, "id": f"w-{path.stem}", "time": time.time() - age, "health": [ok, "ok: running"],
                      "heartbeats": [],
                      "families": [{"name": "audit_ingest_x", "type": "counter", "help": "X.",
                                    "samples": [["audit_ingest_x_total", {}, indexed]]},
                                   {"name": "audit_ingest_g", "type": "gauge", "help": "G.",
                                    "samples": [["audit_ingest_g", {"list": "main"}, indexed]]}]})


def test_aggregator_sums_counters_keeps_them_across_restarts_and_labels_gauges(tmp_path: Path) -> None:
    views = [("1", tmp_path / "1.json", True, time.time()), ("2", tmp_path / "2.json", True, time.time())]
    agg = Aggregator(lambda: views)
    _status(tmp_path / "1.json", indexed=10)
    _status(tmp_path / "2.json", indexed=5)
    text = agg.render().decode()
    assert "audit_ingest_x_total 15.0" in text
    assert 'audit_ingest_g{list="main",process="1"} 10.0' in text
    agg.retire(tmp_path / "1.json")  # child 1 died after counting 10; its successor starts at 0
    assert not (tmp_path / "1.json").exists()
    _status(tmp_path / "1.json", indexed=2, pid=2)
    assert "audit_ingest_x_total 17.0" in agg.render().decode()
    assert agg.health()[0]


def test_aggregator_health_needs_every_child(tmp_path: Path) -> None:
    now = time.time()
    _status(tmp_path / "1.json", indexed=1)
    assert Aggregator(lambda: [("1", tmp_path / "1.json", True, now)]).health()[0]
    assert not Aggregator(lambda: [("1", tmp_path / "1.json", False, now)]).health()[0]  # not running
    _status(tmp_path / "2.json", indexed=1, ok=False)
    assert not Aggregator(lambda: [("2", tmp_path / "2.json", True, now)]).health()[0]  # unhealthy itself
    _status(tmp_path / "3.json", indexed=1, age=60)
    ok, text = Aggregator(lambda: [("3", tmp_path / "3.json", True, now)]).health()
    assert not ok and "no status for 60s" in text  # stale
    missing = tmp_path / "4.json"
    assert Aggregator(lambda: [("4", missing, True, now)], grace=60).health()[0]  # starting
    assert not Aggregator(lambda: [("4", missing, True, now - 120)], grace=60).health()[0]


def test_restart_backoff_doubles_on_quick_exits_and_is_capped() -> None:
    assert backoff(0) == 0
    assert [backoff(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff(20) == BACKOFF_MAX


def test_children_stop_by_themselves_when_the_supervisor_is_killed(supervised: Any, redis_client: redis.Redis,
                                                                   es_double: ESDouble) -> None:  # noqa: F811
    raws = sample_events(1000, host="procs-orphans")
    sup = supervised(2)
    wait_for(lambda: started(redis_client, "sup-1", "sup-2"), 30, "both children started")
    redis_client.rpush("filebeat", *raws)
    kids = sup.children()
    sup.proc.kill()
    sup.proc.wait()

    def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) for pid in kids)

    wait_for(gone, 30, "the children stopped")
    assert not list(redis_client.scan_iter(match="filebeat:heartbeat:*"))  # stopped cleanly: ids released
    assert not list(redis_client.scan_iter(match="filebeat:processing:*"))  # batches acked or given back
    assert len(es_double.docs()) + redis_client.llen("filebeat") == 1000


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


def test_a_child_that_keeps_failing_is_logged_as_a_crash_loop(supervised: Any, redis_client: redis.Redis) -> None:
    """sup-2 cannot start (its heartbeat key holds a list: Redis answers WRONGTYPE to its claim, a
    fault the worker does not retry); each start fails at once and restarts back off. (A live
    heartbeat of another process no longer makes a start fail: a worker takes its id over.)"""
    redis_client.rpush("filebeat:heartbeat:sup-2", "not a heartbeat")
    sup = supervised(2)
    wait_for(lambda: "is crash looping" in sup.log(), 90, "the crash loop logged")
    log = sup.log()
    assert "worker sup-2 exited with code" in log and "restarting in 1.0s" in log and "restarting in 2.0s" in log
    assert "worker sup-2 is crash looping: exited with code" in log
    assert redis_client.type("filebeat:heartbeat:sup-2") == b"list"  # nothing replaced it
    assert started(redis_client, "sup-1")  # the other child works on
    sup.stop()


def test_a_child_that_cannot_be_started_is_tried_again_later(monkeypatch: pytest.MonkeyPatch) -> None:
    """fork failing (no memory, no more processes) must not end the supervisor and its other children."""
    from ingest.settings import load_settings
    from ingest.supervisor import Supervisor

    sup = Supervisor(2, "w", [], load_settings(overrides={"metrics": {"enabled": False}}))

    def refuse(*args: Any, **kw: Any) -> Any:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr("ingest.supervisor.subprocess.Popen", refuse)
    try:
        sup._start(sup.children[0])
        child = sup.children[0]
        assert child.proc is None and child.restart_at is not None and child.quick_exits == 1
    finally:
        sup._close()


def test_status_directories_of_killed_supervisors_are_removed(tmp_path: Path) -> None:
    from ingest.supervisor import STATUS_PREFIX, status_dir

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{STATUS_PREFIX}{dead.pid}-abc"  # a supervisor killed with SIGKILL left it
    stale.mkdir()
    (stale / "1.json").write_text("{}")
    running = tmp_path / f"{STATUS_PREFIX}{os.getppid()}-def"  # a supervisor that still runs
    running.mkdir()
    other = tmp_path / "audit-ingest-procs-notapid-x"
    other.mkdir()
    made = status_dir(str(tmp_path))
    assert made.name.startswith(f"{STATUS_PREFIX}{os.getpid()}-") and made.is_dir()
    assert not stale.exists()
    assert running.exists() and other.exists()
