"""Item 6: a configured key file the worker cannot read stops `run` and `parse` at start.

The container runs as uid 10001. A copied authorized_keys is mode 0600 and owned by its user: the
check runs in a child process that switched to uid 10001 (the tests run as root; without root the
file is made unreadable for the current user instead).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.cli import main
from ingest.enrich.key_files import check_key_files
from ingest.enrich.keys import KeyOwnerConfig
from ingest.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
KEYS = ROOT / "tests" / "data" / "keys" / "authorized_keys"
WORKER_UID = 10001  # the Dockerfile's USER


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder every user may enter (pytest's tmp_path is 0700, root's)."""
    path = Path(tempfile.mkdtemp(prefix="keys-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def check_as(uid: int, path: Path) -> str:
    """check_key_files for ``path`` run as ``uid``: "ok" or the error message."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to the container's uid")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to uid, check, report, exit
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                check_key_files(KeyOwnerConfig(authorized_keys=[path]))
                message = "ok"
            except ConfigError as e:
                message = str(e)
            os.write(w, message.encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def test_a_copied_authorized_keys_is_unreadable_for_the_worker(folder: Path) -> None:
    copy = folder / "authorized_keys"
    shutil.copy(KEYS, copy)
    os.chown(copy, 1000, 1000)
    copy.chmod(0o600)  # as ~/.ssh/authorized_keys is
    message = check_as(WORKER_UID, copy)
    assert f"{copy} cannot be read by uid {WORKER_UID} (owner uid 1000, mode 0600)" in message
    assert "SSH Key Not Mapped" in message and "install -o 10001 -g 10001 -m 0400" in message


def test_the_ownership_readme_gives_works(folder: Path) -> None:
    """README: `install -o 10001 -g 10001 -m 0400 ~/.ssh/authorized_keys keys/authorized_keys`."""
    target = folder / "authorized_keys"
    if os.geteuid() != 0:
        pytest.skip("install -o needs root")
    subprocess.run(["install", "-o", "10001", "-g", "10001", "-m", "0400", str(KEYS), str(target)], check=True)
    assert check_as(WORKER_UID, target) == "ok"
    assert check_as(1000, target) != "ok"  # and nobody else reads it


def test_missing_file_and_directory(folder: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        check_key_files(KeyOwnerConfig(authorized_keys=[folder / "nope"]))
    with pytest.raises(ConfigError, match="is a directory"):
        check_key_files(KeyOwnerConfig(users_files=[folder]))
    check_key_files(KeyOwnerConfig(authorized_keys=[KEYS]))
    check_key_files(KeyOwnerConfig())  # none configured: the step is off, nothing to check


def test_run_and_parse_refuse_to_start(folder: Path, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    built = []
    monkeypatch.setattr("ingest.worker.build_worker", lambda s: built.append(s))
    monkeypatch.setenv("AUDIT_INGEST_KEYS__AUTHORIZED_KEYS", f'["{folder / "authorized_keys"}"]')
    assert main(["run", "--skip-template-check"]) == 2
    assert built == [] and "authorized_keys does not exist" in caplog.text
    assert main(["parse", str(ROOT / "examples" / "logs" / "auth.log")]) == 2
