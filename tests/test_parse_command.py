"""`audit-ingest parse` on the sample logs: every line a document, the owners, places and sessions
the samples' README lists, and bad events as error documents."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from ingest.cli import main
from ingest.document import get_path

SAMPLES = Path(__file__).parent / "data" / "samples"
DATA = Path(__file__).parent / "data"
LOGS = sorted(SAMPLES.glob("*.log"))


def run(capsysbinary: pytest.CaptureFixture[bytes], *args: str) -> list[dict]:
    code = main(["parse", "--geoip-city", str(DATA / "geoip" / "GeoIP2-City-Test.mmdb"),
                 "--geoip-asn", str(DATA / "geoip" / "GeoLite2-ASN-Test.mmdb"),
                 "--authorized-keys", str(DATA / "keys" / "authorized_keys"),
                 "--reference-time", "2020-12-31T00:00:00Z", *args])
    assert code == 0
    return [orjson.loads(line) for line in capsysbinary.readouterr().out.splitlines()]


@pytest.fixture(scope="module")
def sample_docs() -> list[dict]:
    """One run over every sample log (module-scoped: capsys is per test, so stdout is swapped here)."""
    import io
    import sys

    buf = io.BytesIO()

    class Out:
        buffer = buf

    old = sys.stdout
    sys.stdout = Out()  # type: ignore[assignment]
    try:
        assert main(["parse", "--geoip-city", str(DATA / "geoip" / "GeoIP2-City-Test.mmdb"),
                     "--geoip-asn", str(DATA / "geoip" / "GeoLite2-ASN-Test.mmdb"),
                     "--authorized-keys", str(DATA / "keys" / "authorized_keys"),
                     "--reference-time", "2020-12-31T00:00:00Z", *map(str, LOGS)]) == 0
    finally:
        sys.stdout = old
    return [orjson.loads(line) for line in buf.getvalue().splitlines()]


def test_a_document_for_every_line_and_no_parse_failure(sample_docs: list[dict]) -> None:
    events = [d for d in sample_docs if d["type"] not in ("session", "alert")]
    assert len(events) == sum(len(p.read_text().splitlines()) for p in LOGS)
    assert [d for d in events if "_grokparsefailure" in d.get("tags", [])] == []
    assert all(isinstance(d["@timestamp"], str) and d["@timestamp"].endswith("Z") for d in sample_docs)
    assert {d["type"] for d in events} == {"auth", "commands", "auditd", "openvpn", "teleport", "shell"}


def _login(docs: list[dict], host: str, pid: int) -> dict:
    (doc,) = [d for d in docs if d["type"] == "auth" and get_path(d, "event.action") == "ssh_login"
              and get_path(d, "host.hostname") == host and get_path(d, "process.pid") == pid]
    return doc


@pytest.mark.parametrize(("host", "pid", "owner", "country", "city", "asn"), [
    ("a3", 11741, "john-civis", "GB", "London", None),
    ("a3", 11902, "jhollandcivis", "US", "Milton", 209),
    ("a3", 11950, "SSH Key Not Mapped", "SE", "Linköping", 29518),
    ("web-2", 2219, "civis-pete", "GB", "London", None),
    ("a3", 11748, "SSH Key Not Mapped", None, None, None),
])
def test_key_owners_and_places(sample_docs: list[dict], host: str, pid: int, owner: str, country: str | None,
                               city: str | None, asn: int | None) -> None:
    doc = _login(sample_docs, host, pid)
    assert get_path(doc, "system.auth.ssh.key.owner") == owner
    assert get_path(doc, "source.geo.country_iso_code") == country
    assert get_path(doc, "source.geo.city_name") == city
    assert get_path(doc, "source.as.number") == asn


def test_seed_000_line_has_user_port_fingerprint_and_no_ip(sample_docs: list[dict]) -> None:
    doc = _login(sample_docs, "a3", 11748)
    assert doc["user"]["name"] == "civis-ec2"
    assert doc["source"] == {"port": 51836}
    assert doc["system"]["auth"]["ssh"]["key"]["fingerprint"] == "22:f6:fc:22:40:10:e2:af:1d:19:3d:59:88:74:4a:1b"


def test_documentation_and_unknown_addresses(sample_docs: list[dict]) -> None:
    deploy = _login(sample_docs, "web-2", 2301)
    assert "geo" not in deploy["source"] and "_geoip_non_public_ip" in deploy["tags"]
    unknown = [d for d in sample_docs if get_path(d, "source.ip") == "202.109.143.106"]
    assert unknown and all("geo" not in d["source"] for d in unknown)


def _session(docs: list[dict], **where: object) -> dict:
    found = [d for d in docs if d["type"] == "session" and all(get_path(d, k) == v for k, v in where.items())]
    assert len(found) == 1, (where, found)
    return found[0]


def test_sessions_the_samples_readme_lists(sample_docs: list[dict]) -> None:
    s = _session(sample_docs, **{"host.hostname": "a3", "process.pid": 11741})
    assert s["session"]["duration_s"] == 122 and s["system"]["auth"]["ssh"]["key"]["owner"] == "john-civis"
    assert s["event"]["start"] == "2020-05-17T15:26:00.000000Z" and s["event"]["end"] == "2020-05-17T15:28:02.000000Z"
    s = _session(sample_docs, **{"host.hostname": "a3", "process.pid": 11902})
    assert s["session"]["duration_s"] == 589 and s["source"]["as"]["number"] == 209
    s = _session(sample_docs, **{"host.hostname": "web-2", "process.pid": 2219})
    assert s["session"]["duration_s"] == pytest.approx(457.591842, abs=1e-6)
    assert s["system"]["auth"]["ssh"]["key"]["owner"] == "civis-pete"
    s = _session(sample_docs, **{"session.kind": "openvpn"})
    assert s["user"]["name"] == "alice" and s["session"]["duration_s"] == 5918
    assert s["openvpn"]["virtual_ip"] == "10.8.0.6"
    s = _session(sample_docs, **{"session.kind": "teleport"})
    assert s["user"]["name"] == "alice" and s["session"]["duration_s"] == 881
    assert not [d for d in sample_docs if d["type"] == "session" and get_path(d, "process.pid") in (11950, 11748)]
    assert len([d for d in sample_docs if d["type"] == "session"]) == 5


def test_filebeat_events_and_dead_letters(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    docs = run(capsysbinary, str(SAMPLES / "filebeat-events.ndjson"))
    errors = [d for d in docs if "error" in d]
    assert [e["error"]["code"] for e in errors] == ["invalid_json", "no_message"]
    assert errors[0]["raw"] == "not json at all {"
    kinds = [d["type"] for d in docs if "error" not in d]
    assert kinds == ["auth", "commands", "auth", "auditd", "openvpn", "shell"]
    sixx = docs[0]
    assert sixx["host"]["name"] == "a3" and sixx["log"] == {"file": {"path": "/var/log/auth.log"}, "offset": 1024}
    assert sixx["system"]["auth"]["ssh"]["key"]["owner"] == "john-civis"
    assert docs[4]["user"]["name"] == "alice" and docs[4]["fields"] == {"log_type": "openvpn"}
    assert docs[5]["user"]["name"] == "deploy"


def test_stdin_and_kind_flag(monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    import io
    import sys

    line = b"May 17 15:26:30 a3 civis-ec2: civis-ec2 [11760]: sudo systemctl restart nginx [0]\n\xff\xfe broken\n"
    monkeypatch.setattr(sys, "stdin", type("S", (), {"buffer": io.BytesIO(line)})())
    docs = run(capsysbinary, "--kind", "commands", "-")
    assert docs[0]["process"]["command_line"] == "sudo systemctl restart nginx"
    assert docs[1]["message"] == "\ufffd\ufffd broken" and "_grokparsefailure" in docs[1]["tags"]


def test_bad_config_names_the_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[parse]\ntimezone = 'Mars/Olympus'\n")
    assert main(["parse", "--config", str(cfg), str(LOGS[0])]) == 2
    assert "parse.timezone" in caplog.text and str(cfg) in caplog.text
    cfg.write_text("[parse]\nno_such_key = 1\n")
    assert main(["parse", "--config", str(cfg), str(LOGS[0])]) == 2
    assert "parse.no_such_key" in caplog.text


def test_alerts_the_samples_trigger(sample_docs: list[dict]) -> None:
    alerts = [d for d in sample_docs if d["type"] == "alert"]
    brute = [a for a in alerts if a["rule"]["name"] == "brute_force"]
    assert len(brute) == 1
    assert brute[0]["source"]["ip"] == "89.160.20.128"
    assert sorted(brute[0]["alert"]["hosts"]) == ["a3", "web-2"] and brute[0]["alert"]["count"] == 12
    assert brute[0]["event"]["kind"] == "alert"
    unmapped = sorted(get_path(a, "source.ip") or "-" for a in alerts if a["rule"]["name"] == "unmapped_key")
    assert unmapped == ["-", "89.160.20.112"]  # mallory's key, and seed 000's anonymised login
    assert {a["rule"]["name"] for a in alerts} == {"brute_force", "unmapped_key"}  # first sightings only learn
    assert len(alerts) == 3


def test_alert_thresholds_are_settings(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    cfg = tmp_path / "strict.toml"
    cfg.write_text("[detect.brute_force]\nthreshold = 12\n")
    docs = run(capsysbinary, "--config", str(cfg), str(SAMPLES / "bruteforce.log"))
    assert [d for d in docs if d["type"] == "alert"] == []  # 12 failures are not more than 12
