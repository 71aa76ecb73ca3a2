"""Start-up edges: a wrong Redis password is said to be one (and fails /healthz at once, while
still retried); SIGTERM before the worker loop runs exits 0."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.es_double import ESDouble, es_double  # noqa: F401  (fixture)
from tests.redis_server import RedisServer
from tests.test_worker import Running, running, wait_for  # noqa: F401
from tests.worker_proc import make_worker, sample_events

ROOT = Path(__file__).parent.parent


def test_wrong_redis_password_is_an_authentication_error_and_fails_healthz(
        redis_server: RedisServer, redis_client: redis.Redis, es_double: ESDouble,  # noqa: F811
        running: Running, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    redis_client.rpush("filebeat", *sample_events(20, host="auth"))
    redis_client.config_set("requirepass", "right-pw")
    authed = redis.Redis(port=redis_server.port, db=1, password="right-pw")
    try:
        caplog.set_level(logging.INFO)
        worker = running.start(make_worker(f"redis://:wrong-pw@127.0.0.1:{redis_server.port}/1", es_double.url,
                                           "a1", batch_size=50))
        wait_for(lambda: not worker.metrics.health()[0], 10, "/healthz failing")
        ok, text = worker.metrics.health()
        assert "authentication" in text
        assert "refused authentication" in caplog.text and "wrong-pw" not in caplog.text
        assert "unavailable" not in caplog.text  # not "Redis down"
        assert authed.llen("filebeat") == 20
        authed.config_set("requirepass", "wrong-pw")  # the operator fixes it on the Redis side
        wait_for(lambda: len(es_double.docs()) == 20, 20, "indexed once the password works")
        wait_for(lambda: worker.metrics.health()[0], 10, "/healthz ok again")
        running.stop()
    finally:
        for pw in ("wrong-pw", "right-pw"):
            try:
                redis.Redis(port=redis_server.port, password=pw).config_set("requirepass", "")
                break
            except redis.AuthenticationError:
                continue
        authed.close()


def test_sigterm_during_start_up_exits_0(tmp_path: Path, redis_server: RedisServer) -> None:
    """Stopped while it still checks the index template (an Elasticsearch that accepts the
    connection and never answers): exit 0, not -15."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    env = {**os.environ, "AUDIT_INGEST_REDIS__URL": f"redis://127.0.0.1:{redis_server.port}/1",
           "AUDIT_INGEST_ELASTICSEARCH__HOSTS": f'["http://127.0.0.1:{silent.getsockname()[1]}"]',
           "AUDIT_INGEST_ELASTICSEARCH__REQUEST_TIMEOUT": "PT60S", "AUDIT_INGEST_METRICS__ENABLED": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "ingest.cli", "run"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        silent.settimeout(60)
        conn, _ = silent.accept()  # it is asking Elasticsearch for the template now
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert proc.wait(20) == 0, proc.stdout.read().decode() if proc.stdout else ""
        assert time.monotonic() - t0 < 10  # it does not wait for the 60 s request timeout
        conn.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        silent.close()
