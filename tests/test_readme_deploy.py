"""README's "The central log server": every command it gives is exercised by a test, and every
`docker compose` command names services and options the parsed compose file has."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.compose_model import load

ROOT = Path(__file__).resolve().parent.parent

#: Commands of the section other than `docker compose`, and the test that runs each.
EXERCISED = {
    "cp .env.example .env": "tests/compose_model.py reads .env.example as the .env of every compose test",
    "mkdir -p geoip keys": "tests/test_key_files.py (a folder of mode 0755 holding the key file)",
    "install -o 10001 -g 10001 -m 0400 /path/to/authorized_keys keys/authorized_keys":
        "tests/test_key_files.py::test_the_ownership_readme_gives_works",
    "git pull": "git itself",
    "sysctl -w vm.max_map_count=262144": "tests/test_compose_scripts.py::test_es_init_checks_vm_max_map_count "
                                         "(es-init prints this line)",
    "touch keys/authorized_keys": "tests/test_key_files.py::test_missing_file_and_directory (an empty file is fine)",
}
COMPOSE_SUBCOMMANDS = {"up", "build", "ps", "logs", "run"}


def section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## The central log server")
    return text[start:text.index("\n## ", start + 10)]


def commands() -> list[str]:
    text = section()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines() if line.strip()]
    inline = re.findall(r"`((?:docker compose|sysctl|touch|chmod) [^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return lines + inline


def test_section_has_the_operator_topics() -> None:
    text = section()
    for topic in ("**Install.**", "**Upgrade.**", "**Scale-out.**", "**Key files**", "**Retention.**",
                  "**What was verified how.**"):
        assert topic in text, topic


@pytest.mark.parametrize("command", commands())
def test_every_command_is_exercised(command: str) -> None:
    services = load()["services"]
    if command.startswith("docker compose"):
        words = shlex.split(command)[2:]
        sub = words[0]
        assert sub in COMPOSE_SUBCOMMANDS, command
        for i, word in enumerate(words):
            if word == "--scale":
                name = words[i + 1].split("=")[0]
                assert name in services and "container_name" not in services[name] and "ports" not in services[name]
        if sub in ("logs", "run"):  # the first word that is not an option names the service
            service = next(w for w in words[1:] if not w.startswith("-"))
            assert service in services, f"{command}: no service {service}"
            if sub == "run":  # `run --rm worker dlq` replaces the service's command `run` by `dlq`
                assert services[service]["command"] == ["run"]
        return
    if command.startswith("chmod 0644"):
        return  # prose about the key file: as readable as 0400 for uid 10001 (test_key_files)
    assert command in EXERCISED, f"README command no test exercises: {command!r}"
