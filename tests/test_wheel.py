"""Item 9: a wheel install has what `setup`, `parse` and `run` need, outside the repository.

The wheel is built from this checkout (hatchling, no network), installed into a new virtualenv
(its dependencies come from the test run's own site-packages through PYTHONPATH), and run from a
folder that is not the repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.kibana_double import KibanaDouble

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("audit_ingest-*.whl")
    return built


def test_the_wheel_holds_patterns_and_kibana_objects(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    data = next(n.split("/data/")[0] for n in names if "/data/share/" in n) + "/data/share/audit-ingest/"
    assert data + "kibana/audit.ndjson" in names
    for rules in (ROOT / "patterns").iterdir():
        assert data + f"patterns/{rules.name}" in names
    for module in ("ingest/setup/kibana_objects.py", "ingest/setup/kibana_lens.py", "ingest/cli.py"):
        assert module in names
    shipped = zipfile.ZipFile(wheel).read(data + "kibana/audit.ndjson").decode()
    assert shipped == (ROOT / "kibana" / "audit.ndjson").read_text()


def test_an_installed_wheel_sets_up_kibana_and_parses(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = env_dir / "bin" / "pip"
    subprocess.run([str(pip), "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    exe = env_dir / "bin" / "audit-ingest"
    environ = {"PATH": "/usr/bin:/bin", "PYTHONPATH": sysconfig.get_paths()["purelib"], "HOME": str(tmp_path)}
    work = tmp_path / "elsewhere"
    work.mkdir()
    with KibanaDouble(username="elastic", password="pw") as kibana:
        done = subprocess.run([str(exe), "setup", "--kibana-only"], cwd=work, capture_output=True, text=True,
                              timeout=120, env={**environ, "AUDIT_INGEST_KIBANA__URL": kibana.url,
                                                "AUDIT_INGEST_KIBANA__USERNAME": "elastic",
                                                "AUDIT_INGEST_KIBANA__PASSWORD": "pw"})
        assert done.returncode == 0, done.stderr[-2000:]
        assert ("dashboard", "audit-dashboard-server-access") in kibana.objects()
    where = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import ingest; print(ingest.__file__)"],
                           cwd=work, capture_output=True, text=True, env=environ, check=True).stdout
    assert where.startswith(str(env_dir)), f"the repository's code was used: {where}"
    log = ROOT / "examples" / "logs" / "auth.log"
    parsed = subprocess.run([str(exe), "parse", str(log)], cwd=work, capture_output=True, text=True,
                            timeout=120, env=environ)
    assert parsed.returncode == 0, parsed.stderr[-2000:]
    docs = [json.loads(line) for line in parsed.stdout.splitlines()]
    assert docs and sum("_grokparsefailure" in d.get("tags", []) for d in docs) < len(docs) / 2
    assert any(d.get("event", {}).get("action") == "ssh_login" for d in docs)
    assert os.path.isdir(env_dir / "share" / "audit-ingest" / "patterns")
