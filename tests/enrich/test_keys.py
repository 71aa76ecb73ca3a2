"""Key-owner enricher: fingerprints, owners, file formats, reload, and what is left alone."""

from __future__ import annotations

import logging
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ingest.document import get_path
from ingest.enrich.base import REGISTRY
from ingest.enrich.keys import (
    NOT_MAPPED,
    KeyLineError,
    KeyOwnerConfig,
    KeyOwnerEnricher,
    normalize_fingerprint,
    parse_key_line,
)

DATA = Path(__file__).parent.parent / "data" / "keys"
SAMPLE = DATA / "authorized_keys"
ALL_TYPES = DATA / "authorized_keys.all_types"
USERS = DATA / "users.yml"
OWNER = "system.auth.ssh.key.owner"

# /work/shared/samples/keys/README.md
SAMPLE_OWNERS = {
    "0c:b4:eb:4c:91:1f:df:7d:76:ba:d4:3e:7b:72:67:87": "john-civis",
    "SHA256:u1WrzJipWy9/NQPUj52Y6ou/M98avgO6t8s4J5OrkSk": "john-civis",
    "cf:fc:b6:db:5e:2a:ba:3b:bc:0f:a5:dd:48:a5:bf:1d": "jhollandcivis",
    "SHA256:KkqlMYfYp35C+bsww+oN2Q6DjLrLHcnsKOb642or3nc": "jhollandcivis",
    "d6:47:3c:fd:fc:b3:73:ef:24:bb:43:2e:ba:ec:01:a4": "jane-civis@laptop",
    "SHA256:0OdNELNHTEUS5rHCf6UAb5LijS7wD6ZJMyVNccTxJBQ": "jane-civis@laptop",
    "30:99:0b:82:6e:d2:10:19:66:c3:4c:89:31:cf:26:00": "civis-pete",
    "SHA256:GgiRNfjcY6sNcfF7+WVOQw4UQtG3YSdB1BpctLYIz1M": "civis-pete",
}
MALLORY = "SHA256:XbpvflSTKcbnGluOXofx2xNHIGHnswc59oihW90FncU"
JOHN_LINE = SAMPLE.read_text().splitlines()[1]
PETE_LINE = SAMPLE.read_text().splitlines()[-1]


def login(fingerprint: Any, key_type: str = "RSA") -> dict[str, Any]:
    """A document as the auth parser makes it for a publickey login."""
    key: dict[str, Any] = {"type": key_type}
    if fingerprint is not None:
        key["fingerprint"] = fingerprint
    return {
        "type": "auth",
        "event": {"action": "ssh_login", "outcome": "success"},
        "user": {"name": "civis-ec2"},
        "system": {"auth": {"ssh": {"method": "publickey", "event": "Accepted", "key": key}}},
    }


def owner_of(enricher: KeyOwnerEnricher, fingerprint: str) -> Any:
    doc = login(fingerprint)
    enricher.enrich_batch([doc])
    return get_path(doc, OWNER)


def ssh_keygen_answers() -> dict[str, str]:
    """fingerprint -> comment, from the committed `ssh-keygen -l` output for ALL_TYPES."""
    out = {}
    for line in (DATA / "authorized_keys.all_types.ssh-keygen-l").read_text().splitlines():
        m = re.fullmatch(r"\d+ (\S+) (.+) \((\S+)\)", line)
        assert m, line
        fp, comment = m.group(1), m.group(2)
        out[fp.removeprefix("MD5:")] = comment
    return out


# --- the right answers --------------------------------------------------------------------------


def test_sample_keys_map_to_their_owners_by_md5_and_sha256() -> None:
    enricher = KeyOwnerEnricher([SAMPLE])
    docs = [login(fp) for fp in SAMPLE_OWNERS]
    enricher.enrich_batch(docs)
    assert [get_path(d, OWNER) for d in docs] == list(SAMPLE_OWNERS.values())


def test_unknown_key_is_not_mapped() -> None:
    enricher = KeyOwnerEnricher([SAMPLE])
    assert owner_of(enricher, MALLORY) == "SSH Key Not Mapped" == NOT_MAPPED
    # seed 000's own fingerprint is not one of the sample keys either
    assert owner_of(enricher, "22:f6:fc:22:40:10:e2:af:1d:19:3d:59:88:74:4a:1b") == NOT_MAPPED


@pytest.mark.parametrize(
    "logged",
    [
        "MD5:0c:b4:eb:4c:91:1f:df:7d:76:ba:d4:3e:7b:72:67:87",
        "md5:0C:B4:EB:4C:91:1F:DF:7D:76:BA:D4:3E:7B:72:67:87",
        "0cb4eb4c911fdf7d76bad43e7b726787",
        " 0c:b4:eb:4c:91:1f:df:7d:76:ba:d4:3e:7b:72:67:87 ",
    ],
)
def test_md5_forms_are_normalised(logged: str) -> None:
    assert owner_of(KeyOwnerEnricher([SAMPLE]), logged) == "john-civis"


def test_sha256_with_padding_is_normalised_but_case_matters() -> None:
    enricher = KeyOwnerEnricher([SAMPLE])
    assert owner_of(enricher, "SHA256:GgiRNfjcY6sNcfF7+WVOQw4UQtG3YSdB1BpctLYIz1M=") == "civis-pete"
    assert owner_of(enricher, "SHA256:ggiRNfjcY6sNcfF7+WVOQw4UQtG3YSdB1BpctLYIz1M") == NOT_MAPPED


@pytest.mark.parametrize(
    "value", ["22:f6", "RSA", "SHA256:", "zz:b4:eb:4c:91:1f:df:7d:76:ba:d4:3e:7b:72:67:87"]
)
def test_unreadable_fingerprint_is_not_mapped(value: str) -> None:
    assert normalize_fingerprint(value) is None
    assert owner_of(KeyOwnerEnricher([SAMPLE]), value) == NOT_MAPPED


def test_every_key_type_matches_ssh_keygen() -> None:
    answers = ssh_keygen_answers()
    assert len(answers) == 14  # 7 keys x (MD5, SHA256)
    enricher = KeyOwnerEnricher([ALL_TYPES])
    for fp, comment in answers.items():
        assert owner_of(enricher, fp) == comment, fp
    # the whole comment is the owner, spaces included
    assert "frank@build host" in answers.values()


# --- what is left alone -------------------------------------------------------------------------


def test_login_without_fingerprint_gets_no_owner() -> None:
    enricher = KeyOwnerEnricher([SAMPLE])
    no_fp, empty_fp, not_str = login(None), login(""), login(1234)
    password = {"type": "auth", "system": {"auth": {"ssh": {"method": "password", "event": "Accepted"}}}}
    other = {"type": "commands", "message": "ls"}
    docs = [no_fp, empty_fp, not_str, password, other]
    enricher.enrich_batch(docs)
    assert all(get_path(d, OWNER) is None for d in docs)
    assert other == {"type": "commands", "message": "ls"}


def test_no_key_files_configured_means_nothing_is_touched() -> None:
    enricher = KeyOwnerEnricher.from_config(KeyOwnerConfig())
    assert not enricher.enabled
    doc = login(MALLORY)
    enricher.enrich_batch([doc])
    assert get_path(doc, OWNER) is None


def test_a_bad_document_does_not_stop_the_batch(caplog: pytest.LogCaptureFixture) -> None:
    enricher = KeyOwnerEnricher([SAMPLE], owner_field="x.owner")
    bad = login(MALLORY)
    bad["x"] = "a scalar where the owner's parent object should be"
    good = login(MALLORY)
    enricher.enrich_batch([bad, good])
    assert bad["x"] == "a scalar where the owner's parent object should be"
    assert good["x"] == {"owner": NOT_MAPPED}


# --- authorized_keys format ---------------------------------------------------------------------


def test_options_with_quoted_spaces_commas_and_escaped_quotes() -> None:
    key = parse_key_line('from="10.0.0.0/8,1.2.3.4",command="echo \\"hi, there\\" now",no-pty ' + JOHN_LINE)
    assert key is not None
    assert (key.key_type, key.md5, key.comment) == (
        "ssh-rsa",
        "0c:b4:eb:4c:91:1f:df:7d:76:ba:d4:3e:7b:72:67:87",
        "john-civis",
    )


@pytest.mark.parametrize("line", ["", "   ", "# ssh-rsa AAAA comment", "   # indented comment"])
def test_blank_and_comment_lines_are_no_keys(line: str) -> None:
    assert parse_key_line(line) is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('command="never closed ' + JOHN_LINE, "unterminated quote"),
        ("ssh-foo AAAAB3NzaC1yc2EAAAADAQABAAAB owner", "no known key type"),
        ("no-pty,restrict", "no known key type"),
        ("ssh-rsa", "without key data"),
        ("ssh-rsa AAAA!!!notbase64 owner", "not base64"),
        ("ssh-ed25519 " + JOHN_LINE.split()[1] + " owner", "not a ssh-ed25519 key"),
        ("ssh-rsa AAAA owner", "not a ssh-rsa key"),
    ],
)
def test_malformed_key_lines(line: str, reason: str) -> None:
    with pytest.raises(KeyLineError, match=reason):
        parse_key_line(line)


def test_malformed_lines_are_reported_with_file_and_line_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "authorized_keys"
    path.write_text(
        "# team keys\n"
        + JOHN_LINE
        + "\n"
        + "ssh-rsa AAAA!!!garbage mallory\n"
        + "\n"
        + JOHN_LINE.rsplit(" ", 1)[0].replace(JOHN_LINE.split()[1], PETE_LINE.split()[1])
        + "\n"  # pete's key, no comment
        + 'command="unterminated ssh-rsa AAAA x\n'
        + PETE_LINE
        + "\n"
    )
    with caplog.at_level(logging.WARNING, logger="ingest.enrich.keys"):
        enricher = KeyOwnerEnricher([path])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3, warnings
    assert f"{path}:3: malformed key line" in warnings[0]
    assert f"{path}:5:" in warnings[1] and "no comment" in warnings[1]
    assert f"{path}:6: malformed key line" in warnings[2] and "unterminated quote" in warnings[2]
    assert owner_of(enricher, "SHA256:u1WrzJipWy9/NQPUj52Y6ou/M98avgO6t8s4J5OrkSk") == "john-civis"
    # the uncommented copy of pete's key was skipped; the commented one on line 7 counts
    assert owner_of(enricher, "SHA256:GgiRNfjcY6sNcfF7+WVOQw4UQtG3YSdB1BpctLYIz1M") == "civis-pete"


def test_missing_file_is_a_warning_and_the_others_still_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "nope"
    with caplog.at_level(logging.WARNING, logger="ingest.enrich.keys"):
        enricher = KeyOwnerEnricher([missing, SAMPLE])
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"key file {missing} is missing: its keys are not mapped"
    ]
    assert owner_of(enricher, "SHA256:KkqlMYfYp35C+bsww+oN2Q6DjLrLHcnsKOb642or3nc") == "jhollandcivis"


def test_only_missing_files_map_every_fingerprint_to_not_mapped(tmp_path: Path) -> None:
    enricher = KeyOwnerEnricher([tmp_path / "nope"])
    assert enricher.enabled
    assert owner_of(enricher, "SHA256:KkqlMYfYp35C+bsww+oN2Q6DjLrLHcnsKOb642or3nc") == NOT_MAPPED


def test_same_key_two_owners_first_wins_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = tmp_path / "authorized_keys"
    other.write_text(JOHN_LINE.replace("john-civis", "johnny") + "\n")
    with caplog.at_level(logging.WARNING, logger="ingest.enrich.keys"):
        enricher = KeyOwnerEnricher([SAMPLE, other])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'johnny' ignored" in warnings[0] and f"{other}:1" in warnings[0]
    assert owner_of(enricher, "0c:b4:eb:4c:91:1f:df:7d:76:ba:d4:3e:7b:72:67:87") == "john-civis"


# --- users file ---------------------------------------------------------------------------------


def test_users_file_owner_is_the_name(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ingest.enrich.keys"):
        enricher = KeyOwnerEnricher(users_files=[USERS])
    by_comment = {}
    for fp, comment in ssh_keygen_answers().items():
        by_comment.setdefault(comment, []).append(fp)
    for fp in by_comment["judy"]:  # the RSA key
        assert owner_of(enricher, fp) == "prathmesh"
    for fp in by_comment["dave-dsa"] + by_comment["grace"]:  # DSA and ED25519, one multi-line key
        assert owner_of(enricher, fp) == "dave"
    for fp in by_comment["erin ecdsa-384"]:  # the entry without a name
        assert owner_of(enricher, fp) == NOT_MAPPED
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    # the line of the user's entry
    assert warnings[0].startswith(f"{USERS}:11: malformed key line skipped: key data is not base64")
    assert warnings[1] == f"{USERS}:13: user entry without name and key skipped"


def test_users_file_and_authorized_keys_together(tmp_path: Path) -> None:
    enricher = KeyOwnerEnricher.from_config(KeyOwnerConfig(authorized_keys=[SAMPLE], users_files=[USERS]))
    assert owner_of(enricher, "SHA256:GgiRNfjcY6sNcfF7+WVOQw4UQtG3YSdB1BpctLYIz1M") == "civis-pete"
    assert owner_of(enricher, "SHA256:rf6Uv7DKaul4tFrX57wFV4qGzP9EJeROoJWGnYRXVLo") == "prathmesh"


@pytest.mark.parametrize(
    "text",
    ["users: [unclosed", "just a string\n", "users: {name: x}\n", "- name: a\n  key: 5\n"],
)
def test_bad_users_files_are_warnings(tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "users.yml"
    path.write_text(text)
    with caplog.at_level(logging.WARNING, logger="ingest.enrich.keys"):
        enricher = KeyOwnerEnricher(users_files=[path])
    assert any(str(path) in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert owner_of(enricher, MALLORY) == NOT_MAPPED


def test_users_file_may_be_a_bare_list_with_a_list_of_keys(tmp_path: Path) -> None:
    path = tmp_path / "users.yml"
    path.write_text(f"- name: pete\n  key:\n    - {PETE_LINE}\n    - {JOHN_LINE}\n")
    enricher = KeyOwnerEnricher(users_files=[path])
    assert owner_of(enricher, "SHA256:GgiRNfjcY6sNcfF7+WVOQw4UQtG3YSdB1BpctLYIz1M") == "pete"
    assert owner_of(enricher, "SHA256:u1WrzJipWy9/NQPUj52Y6ou/M98avgO6t8s4J5OrkSk") == "pete"


# --- reload -------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_reload_when_the_file_changes_after_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "authorized_keys"
    path.write_text(JOHN_LINE + "\n")
    clock = Clock()
    enricher = KeyOwnerEnricher([path], reload_interval=timedelta(seconds=30), clock=clock)
    pete = "SHA256:GgiRNfjcY6sNcfF7+WVOQw4UQtG3YSdB1BpctLYIz1M"
    assert owner_of(enricher, pete) == NOT_MAPPED

    path.write_text(JOHN_LINE + "\n" + PETE_LINE + "\n")  # in place: same inode, new size
    clock.now += 10
    assert owner_of(enricher, pete) == NOT_MAPPED  # not checked yet
    clock.now += 25
    assert owner_of(enricher, pete) == "civis-pete"
    assert enricher.reloads == 1

    clock.now += 60  # checked, unchanged: no reload
    assert owner_of(enricher, pete) == "civis-pete"
    assert enricher.reloads == 1


def test_reload_on_atomic_replace_delete_and_recreate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "authorized_keys"
    path.write_text(PETE_LINE + "\n")
    enricher = KeyOwnerEnricher([path], reload_interval=timedelta(0))
    pete = "SHA256:GgiRNfjcY6sNcfF7+WVOQw4UQtG3YSdB1BpctLYIz1M"
    assert owner_of(enricher, pete) == "civis-pete"

    new = tmp_path / "authorized_keys.new"  # same size, new inode: the way config tools write
    new.write_text(PETE_LINE.replace("civis-pete", "peter-cv") + "\n")
    os.replace(new, path)
    assert owner_of(enricher, pete) == "peter-cv"

    path.unlink()
    with caplog.at_level(logging.WARNING, logger="ingest.enrich.keys"):
        assert owner_of(enricher, pete) == NOT_MAPPED
        assert owner_of(enricher, pete) == NOT_MAPPED
    missing = [r for r in caplog.records if "missing" in r.getMessage()]
    assert len(missing) == 1  # once when it went away, not at every check

    path.write_text(PETE_LINE + "\n")
    assert owner_of(enricher, pete) == "civis-pete"
    assert enricher.reloads == 3


# --- config and registry ------------------------------------------------------------------------


def test_config_defaults_and_validation() -> None:
    cfg = KeyOwnerConfig()
    assert cfg.authorized_keys == [] and cfg.users_files == []
    assert cfg.reload_interval == timedelta(seconds=30)
    assert cfg.owner_field == OWNER and cfg.not_mapped == NOT_MAPPED
    assert KeyOwnerConfig(reload_interval="PT5S").reload_interval == timedelta(seconds=5)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        KeyOwnerConfig(authorized_key=["/x"])  # type: ignore[call-arg]
    for name, field in KeyOwnerConfig.model_fields.items():
        assert field.description, name


def test_registered() -> None:
    assert REGISTRY["key_owner"] is KeyOwnerEnricher
