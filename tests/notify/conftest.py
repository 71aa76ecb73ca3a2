"""Fixtures of the notification tests: receivers on loopback ports, real alerts from the samples."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.notify.message import Alert
from tests.conftest import DATA
from tests.notify.receivers import HttpReceiver, SmtpReceiver, make_certificate

READ_AT = datetime(2024, 5, 17, 16, 5, tzinfo=UTC)
GEOIP = {"city_database": str(DATA / "geoip" / "GeoLite2-City-Test.mmdb"),
         "asn_database": str(DATA / "geoip" / "GeoLite2-ASN-Test.mmdb")}


def sample_alerts(name: str = "bruteforce.log") -> list[Alert]:
    """The alerts the real pipeline (memory stores, the GeoIP test databases) raises on a sample file
    (fresh copies each call)."""
    return [Alert.decode(raw) for raw in _sample_alerts(name)]


@functools.cache
def _sample_alerts(name: str) -> tuple[bytes, ...]:
    from ingest.pipeline import Pipeline, wrap_line
    from ingest.settings import load_settings

    settings = load_settings(overrides={"geoip": GEOIP, "sessions": {"enabled": False}})
    pipeline = Pipeline.from_settings(settings, None, clock=lambda: READ_AT)
    lines = (DATA / "samples" / name).read_text().splitlines()
    raws = [wrap_line(line, path=f"/var/log/{name}", offset=i * 200, kind="auth", read_at=READ_AT)
            for i, line in enumerate(lines) if line.strip()]
    result = pipeline.process(raws)
    return tuple(Alert(a.id, a.index, a.doc).encode() for a in result.actions if a.doc.get("type") == "alert")


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    r = HttpReceiver().start()
    yield r
    r.close()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def smtp_servers() -> Iterator[list[SmtpReceiver]]:
    """Started SMTP receivers, stopped at the end (the test appends them)."""
    servers: list[SmtpReceiver] = []
    yield servers
    for s in servers:
        s.close()
