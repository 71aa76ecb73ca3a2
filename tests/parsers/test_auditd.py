"""The auditd parser: golden files, field-by-field cases, and lines it must survive."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from ingest.document import flatten, get_path
from ingest.parsers.auditd import AuditdParser
from ingest.parsers.base import PARSE_FAILURE_TAG, REGISTRY, LineContext

DATA = Path(__file__).parent.parent / "data" / "auditd"
GOLDEN = sorted(p.stem for p in DATA.glob("*.log"))
PARSER = AuditdParser()
CTX = LineContext()
NOT_UTF8 = b"ls\x00caf\xe9"
TRAILING_NUL = b"vim\x00a b\x00"


def parse(line: str) -> dict[str, Any]:
    return PARSER.parse(line, CTX)


def hexed(text: str | bytes) -> str:
    return (text.encode() if isinstance(text, str) else text).hex().upper()


def test_registered() -> None:
    assert REGISTRY["auditd"] is AuditdParser
    assert AuditdParser.dataset == "auditd.log"


# --- golden files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GOLDEN)
def test_golden(name: str) -> None:
    lines = (DATA / f"{name}.log").read_text(encoding="utf-8").splitlines()
    expected = [
        json.loads(x) for x in (DATA / f"{name}.expected.ndjson").read_text(encoding="utf-8").splitlines()
    ]
    assert len(lines) == len(expected)
    for number, (line, want) in enumerate(zip(lines, expected, strict=True), start=1):
        got = parse(line)
        assert flatten(got) == flatten(want), f"{name}.log line {number}"
        assert got == want, f"{name}.log line {number}"


def test_golden_files_cover_the_samples() -> None:
    assert "samples" in GOLDEN and "records" in GOLDEN
    sample = Path(__file__).parent.parent / "data" / "samples" / "audit.log"
    assert (DATA / "samples.log").read_text() == sample.read_text()


# --- the sample log (tests/data/samples/audit.log, see its README) -----------------------------


def sample_docs() -> list[dict[str, Any]]:
    return [parse(x) for x in (DATA / "samples.log").read_text().splitlines()]


def test_sample_ssh_login() -> None:
    auth, user_login, login = sample_docs()[:3]
    assert auth["@timestamp"] == "2020-05-17T13:46:00.123000Z"
    assert auth["event"] == {
        "kind": "event",
        "dataset": "auditd.log",
        "action": "user_auth",
        "outcome": "success",
        "category": ["authentication"],
        "type": ["info"],
    }
    assert auth["auditd"]["log"]["record_type"] == "USER_AUTH"
    assert auth["auditd"]["log"]["sequence"] == 4211
    assert auth["user"]["name"] == "civis-ec2"
    assert auth["source"] == {"address": "81.2.69.160", "ip": "81.2.69.160"}
    assert auth["process"] == {"pid": 11748, "executable": "/usr/sbin/sshd"}
    # auid/ses 4294967295: not logged in yet (unset), kept as written as Filebeat does, and flagged
    assert auth["user"]["audit"] == {"id": "4294967295"}
    assert auth["auditd"]["log"]["auid"] == 4294967295 and auth["auditd"]["log"]["ses"] == 4294967295
    assert auth["auditd"]["log"]["auid_unset"] is True and auth["auditd"]["log"]["ses_unset"] is True
    assert "auid_unset" not in user_login["auditd"]["log"]
    assert user_login["user"]["audit"]["id"] == "1000"
    assert user_login["auditd"]["log"]["ses"] == 12
    assert login["auditd"]["log"]["new_auid"] == 1000 and login["auditd"]["log"]["new_ses"] == 12
    assert login["user"]["audit"]["id"] == "1000"


def test_sample_root_command() -> None:
    syscall, execve, proctitle = sample_docs()[3:6]
    for doc in (syscall, execve, proctitle):
        assert doc["auditd"]["log"]["sequence"] == 4230
        assert doc["@timestamp"] == "2020-05-17T13:46:41.500000Z"
    assert syscall["user"]["id"] == "0" and syscall["user"]["audit"]["id"] == "1000"
    assert syscall["user"]["effective"]["id"] == "0"
    assert syscall["process"] == {
        "pid": 11790,
        "ppid": 11760,
        "name": "systemctl",
        "executable": "/usr/bin/systemctl",
    }
    assert syscall["host"]["architecture"] == "x86_64"
    assert syscall["event"]["outcome"] == "success"
    assert syscall["auditd"]["log"]["key"] == "rootcmd"
    assert syscall["auditd"]["log"]["a0"] == "55d5e1c0"  # a syscall argument, not hex text
    assert execve["process"]["args"] == ["systemctl", "restart", "nginx"]
    assert execve["process"]["args_count"] == 3
    assert proctitle["process"]["title"] == "systemctl restart nginx"
    assert proctitle["process"]["args"] == ["systemctl", "restart", "nginx"]
    assert proctitle["auditd"]["log"]["proctitle"] == "systemctl restart nginx"


def test_sample_session_end() -> None:
    end = sample_docs()[6]
    assert end["event"]["action"] == "user_end"
    assert end["user"]["audit"]["id"] == "1000"
    assert end["auditd"]["log"]["auid"] == 1000 and end["auditd"]["log"]["ses"] == 12
    assert end["auditd"]["log"]["op"] == "PAM:session_close"
    assert end["auditd"]["log"]["grantors"] == "pam_selinux,pam_loginuid,pam_keyinit,pam_unix"


def test_seed_logstash_fields_present() -> None:
    """The fields the replaced Logstash config's grok patterns wrote (seed 002)."""
    flat: dict[str, Any] = {}
    for doc in sample_docs():
        flat.update(flatten(doc))
    for name in (
        "record_type",
        "sequence",
        "pid",
        "res",
        "acct",
        "addr",
        "a0",
        "items",
        "ppid",
        "comm",
        "key",
    ):
        assert f"auditd.log.{name}" in flat, name
    old_login = parse(
        "type=LOGIN msg=audit(1489636960.072:19623791): pid=28281 uid=0 old auid=700 new auid=701 old ses=6793 new ses=12286"
    )
    log = old_login["auditd"]["log"]
    assert (log["old_auid"], log["new_auid"], log["old_ses"], log["new_ses"]) == (700, 701, 6793, 12286)
    assert log["pid"] == 28281
    path = parse('type=PATH msg=audit(1481077231.371:479): item=0 name="/sbin/auditctl" inode=17367907')
    assert path["auditd"]["log"]["item"] == 0


# --- field by field ----------------------------------------------------------------------------


def test_login_new_form_with_hyphens() -> None:
    doc = parse(
        "type=LOGIN msg=audit(1481077043.057:414): pid=1298 uid=0 subj=system_u:system_r:sshd_t:s0 "
        "old-auid=1001 auid=1000 tty=(none) old-ses=3 ses=4 res=1"
    )
    log = doc["auditd"]["log"]
    assert (log["old_auid"], log["auid"], log["new_auid"]) == (1001, 1000, 1000)
    assert (log["old_ses"], log["ses"], log["new_ses"]) == (3, 4, 4)
    assert "old-auid" not in log and "old-ses" not in log
    assert log["tty"] == "(none)"
    assert doc["event"]["outcome"] == "success"


def test_login_old_form_sets_audit_id_from_new_auid() -> None:
    doc = parse(
        "type=LOGIN msg=audit(1489636960.072:1): login pid=1 uid=0 old auid=4294967295 new auid=0 old ses=4294967295 new ses=1"
    )
    log = doc["auditd"]["log"]
    assert log["old_auid_unset"] is True and log["old_auid"] == 4294967295
    assert log["old_ses_unset"] is True and log["old_ses"] == 4294967295
    assert "new_auid_unset" not in log
    assert log["new_auid"] == 0 and log["auid"] == 0 and log["new_ses"] == 1
    assert doc["user"]["audit"]["id"] == "0"


def test_user_cmd_hex_cmd() -> None:
    doc = parse(
        "type=USER_CMD msg=audit(1489519256.192:19600329): user pid=4151 uid=497 auid=700 ses=11988 "
        f"msg='cwd=\"/\" cmd={hexed('/usr/lib64/nagios/plugins/check_sip -p 202')} terminal=? res=success'"
    )
    assert doc["auditd"]["log"]["cmd"] == "/usr/lib64/nagios/plugins/check_sip -p 202"
    assert doc["process"]["args"] == ["/usr/lib64/nagios/plugins/check_sip", "-p", "202"]
    assert doc["process"]["args_count"] == 3
    assert doc["process"]["command_line"] == "/usr/lib64/nagios/plugins/check_sip -p 202"
    assert doc["process"]["working_directory"] == "/"
    assert "terminal" not in doc["auditd"]["log"]  # "?" is dropped, as Filebeat does
    assert doc["user"] == {"id": "497", "audit": {"id": "700"}}


def test_crypto_session_pairs_inside_msg() -> None:
    doc = parse(
        "type=CRYPTO_SESSION msg=audit(1481077041.515:406): pid=1298 uid=0 auid=4294967295 ses=4294967295 "
        "subj=system_u:system_r:sshd_t:s0-s0:c0.c1023 msg='op=start direction=from-server "
        "cipher=chacha20-poly1305@openssh.com ksize=512 mac= pfs=curve25519-sha256@libssh.org spid=1299 "
        'suid=74 rport=63927 laddr=10.142.0.2 lport=22  exe="/usr/sbin/sshd" hostname=? '
        "addr=96.241.146.97 terminal=? res=success'"
    )
    log = doc["auditd"]["log"]
    assert log["op"] == "start" and log["direction"] == "from-server" and log["ksize"] == "512"
    assert log["cipher"] == "chacha20-poly1305@openssh.com" and log["lport"] == "22"
    assert "mac" not in log and "hostname" not in log and "msg" not in log
    assert doc["user"]["saved"]["id"] == "74"
    assert doc["source"]["ip"] == "96.241.146.97"
    assert doc["related"]["ip"] == ["96.241.146.97"]


def test_execve_hex_quoted_empty_and_chunked_args() -> None:
    arg = 'echo \\"hi\\" x'
    doc = parse(f'type=EXECVE msg=audit(1669615313.901:5538): argc=4 a0="sh" a1="-c" a2={hexed(arg)} a3=""')
    assert doc["process"]["args"] == ["sh", "-c", 'echo \\"hi\\" x', ""]
    assert doc["process"]["args_count"] == 4
    assert doc["process"]["command_line"] == 'sh -c echo \\"hi\\" x '
    assert doc["auditd"]["log"] == {"record_type": "EXECVE", "sequence": 5538, "argc": 4}  # no field per argument
    chunked = parse(
        f'type=EXECVE msg=audit(1669615313.901:5539): argc=3 a0="cat" a1_len=9 a1[0]={hexed("a b")} '
        f'a1[1]={hexed("c d e")} a2="-"'
    )
    assert chunked["process"]["args"] == ["cat", "a bc d e", "-"]
    assert set(chunked["auditd"]["log"]) == {"record_type", "sequence", "argc"}
    # a continuation record of a long command line (the kernel splits one event's arguments)
    more = parse('type=EXECVE msg=audit(1.0:7): a3="x" a4=' + hexed("y z"))
    assert more["process"]["args"] == ["[... 3 truncated arguments ...]", "x", "y z"]


def test_avc() -> None:
    doc = parse(
        'type=AVC msg=audit(1226874073.147:96): avc:  denied  { getattr } for  pid=2465 comm="httpd" '
        'path="/var/www/html/file1" dev=dm-0 ino=284133 scontext=unconfined_u:system_r:httpd_t:s0 '
        "tcontext=unconfined_u:object_r:samba_share_t:s0 tclass=file"
    )
    log = doc["auditd"]["log"]
    assert log["seresult"] == "denied" and log["seperms"] == ["getattr"]
    assert log["path"] == "/var/www/html/file1" and log["tclass"] == "file" and log["ino"] == "284133"
    assert doc["process"] == {"pid": 2465, "name": "httpd"}


def test_cwd_path_sockaddr() -> None:
    cwd = parse(f"type=CWD msg=audit(1481077231.371:479): cwd={hexed('/home/a b')}")
    assert cwd["auditd"]["log"]["cwd"] == "/home/a b"
    assert cwd["process"]["working_directory"] == "/home/a b"
    path = parse(
        f"type=PATH msg=audit(1481077231.371:479): item=1 name={hexed('/tmp/x y')} inode=17 dev=08:01 "
        "mode=0100750 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL"
    )
    assert path["auditd"]["log"]["name"] == "/tmp/x y"
    assert path["auditd"]["log"]["item"] == 1 and path["auditd"]["log"]["mode"] == "0100750"
    sock = parse("type=SOCKADDR msg=audit(1481078424.953:688): saddr=02000050A9FEA9FE0000000000000000")
    assert sock["auditd"]["log"]["saddr"] == "02000050A9FEA9FE0000000000000000"


def test_key_null_and_quoted_key() -> None:
    line = 'type=SYSCALL msg=audit(1.0:1): arch=c000003e syscall=44 success=yes exit=184 pid=1 uid=0 comm="x" key='
    assert "key" not in parse(line + "(null)")["auditd"]["log"]
    assert parse(line + '"rootcmd"')["auditd"]["log"]["key"] == "rootcmd"


def test_msg_without_res_or_pairs() -> None:
    doc = parse(
        "type=USYS_CONFIG msg=audit(1481076993.000:402): pid=1232 uid=0 auid=0 ses=1 "
        "msg='changing system time exe=\"/usr/sbin/hwclock\" hostname=? addr=? terminal=?'"
    )
    assert "outcome" not in doc["event"]
    assert doc["process"]["executable"] == "/usr/sbin/hwclock"
    assert "source" not in doc
    plain = parse("type=USER_ERR msg=audit(1.5:2): pid=1 uid=0 auid=0 ses=1 msg='Unknown user'")
    assert plain["auditd"]["log"]["msg"] == "Unknown user"


def test_op_with_spaces_and_group_id() -> None:
    doc = parse(
        "type=ADD_GROUP msg=audit(1610903553.686:584): pid=2940 uid=0 auid=1000 ses=14 msg='op=adding group "
        'to /etc/group id=1004 exe="/usr/sbin/groupadd" hostname=ubuntu-bionic addr=127.0.0.1 terminal=pts/2 res=success\''
    )
    assert doc["auditd"]["log"]["op"] == "adding group to /etc/group"
    assert doc["group"] == {"id": "1004"}
    user = parse(
        "type=ADD_USER msg=audit(1.0:591): pid=2945 uid=0 auid=1000 ses=14 msg='op=adding user id=1004 res=success'"
    )
    assert user["user"]["target"] == {"id": "1004"}


def test_repeated_key_becomes_list_and_ecs_takes_first() -> None:
    doc = parse(
        "type=USER_ACCT msg=audit(1.0:593): pid=2948 uid=0 auid=1000 ses=14 msg='pam_tally2 uid=1004 reset=0 res=success'"
    )
    assert doc["auditd"]["log"]["uid"] == [0, 1004]
    assert doc["user"]["id"] == "0"


@pytest.mark.parametrize(
    ("tail", "outcome"),
    [
        ("res=success", "success"),
        ("res=1", "success"),
        ("res=failed", "failure"),
        ("res=0", "failure"),
        ("success=yes", "success"),
        ("success=no", "failure"),
        ("res=weird", None),
        ("pid=1", None),
    ],
)
def test_outcome(tail: str, outcome: str | None) -> None:
    doc = parse(f"type=X msg=audit(1.0:1): {tail}")
    assert doc["event"].get("outcome") == outcome


@pytest.mark.parametrize("unset", ["4294967295", "-1"])
def test_unset_ids(unset: str) -> None:
    doc = parse(
        f"type=USER_LOGIN msg=audit(1.0:1): pid=1 uid={unset} auid={unset} ses={unset} msg='op=login res=failed'"
    )
    log = doc["auditd"]["log"]
    for key in ("uid", "auid", "ses"):
        assert log[key] == int(unset) and log[f"{key}_unset"] is True
    assert doc["user"] == {"id": unset, "audit": {"id": unset}}  # as written, as Filebeat does
    assert doc["auditd"]["log"]["pid"] == 1
    assert "pid_unset" not in log


def test_numbers_and_strings() -> None:
    doc = parse(
        "type=SYSCALL msg=audit(1.0:77): arch=c00000b7 syscall=221 exit=-2 items=2 ppid=5 pid=6 auid=7 uid=8 gid=9 ses=10"
    )
    log = doc["auditd"]["log"]
    assert (log["sequence"], log["items"], log["ppid"], log["pid"], log["auid"], log["uid"], log["ses"]) == (
        77,
        2,
        5,
        6,
        7,
        8,
        10,
    )
    assert log["syscall"] == "221" and log["exit"] == "-2"
    assert (
        doc["user"]["id"] == "8" and doc["user"]["audit"]["id"] == "7" and doc["user"]["group"]["id"] == "9"
    )
    assert doc["host"]["architecture"] == "aarch64"
    assert parse("type=SYSCALL msg=audit(1.0:1): arch=deadbeef")["host"]["architecture"] == "deadbeef"


def test_hex_only_where_auditd_encodes() -> None:
    config = parse("type=CONFIG_CHANGE msg=audit(1.0:4): audit_backlog_limit=8192 old=64 auid=0 ses=1 res=1")
    assert config["auditd"]["log"]["old"] == "64"  # a number that looks like hex
    quoted = parse('type=SYSCALL msg=audit(1.0:5): comm="ABCD" exe="/bin/ABCD" pid=1')
    assert quoted["process"]["name"] == "ABCD"  # quoted values are never hex
    plain = parse("type=PATH msg=audit(1.0:6): item=0 name=6162")
    assert plain["auditd"]["log"]["name"] == "6162"  # "ab": auditd would have quoted it, not encoded it
    comm = parse(
        f"type=SYSCALL msg=audit(1.0:7): comm={hexed('my prog')} exe={hexed('/opt/my prog')} acct={hexed('a b')}"
    )
    assert comm["process"] == {"name": "my prog", "executable": "/opt/my prog"}
    assert comm["user"]["name"] == "a b"
    odd = parse("type=SYSCALL msg=audit(1.0:8): exe=ABC")
    assert odd["process"]["executable"] == "ABC"  # odd length: not hex


def test_hex_not_utf8_is_kept_escaped() -> None:
    doc = parse(f"type=PROCTITLE msg=audit(1.0:9): proctitle={hexed(NOT_UTF8)}")
    assert doc["process"]["args"] == ["ls", "caf\\xe9"]
    assert doc["process"]["title"] == "ls caf\\xe9"


def test_proctitle_trailing_nul_and_single_quoted_arg() -> None:
    doc = parse(f"type=PROCTITLE msg=audit(1.0:9): proctitle={hexed(TRAILING_NUL)}")
    assert doc["process"]["args"] == ["vim", "a b"]
    assert doc["process"]["args_count"] == 2
    assert parse('type=PROCTITLE msg=audit(1.0:9): proctitle="bash"')["process"]["title"] == "bash"


def test_node_and_enriched_fields() -> None:
    doc = parse(
        "node=web-2 type=SYSCALL msg=audit(1.0:1): arch=c000003e syscall=59 pid=3 auid=1000 uid=0 euid=0 "
        'gid=0 comm="id" exe="/usr/bin/id"\x1dARCH=x86_64 SYSCALL=execve AUID="alice" UID="root" GID="root" EUID="root"'
    )
    assert doc["auditd"]["log"]["node"] == "web-2"
    assert doc["auditd"]["log"]["SYSCALL"] == "execve"
    assert doc["auditd"]["log"]["exe"] == "/usr/bin/id"
    assert doc["user"]["audit"] == {"id": "1000", "name": "alice"}
    assert doc["user"]["name"] == "root" and doc["user"]["effective"]["name"] == "root"
    assert doc["user"]["group"] == {"id": "0", "name": "root"}


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("msg=audit(1589723160.123:4211):", "2020-05-17T13:46:00.123000Z"),
        ("msg=audit(1589723160.5:1):", "2020-05-17T13:46:00.500000Z"),
        ("msg=audit(1589723160:1):", "2020-05-17T13:46:00.000000Z"),
        ("msg=audit(0.000:1):", "1970-01-01T00:00:00.000000Z"),
    ],
)
def test_timestamp(header: str, expected: str) -> None:
    assert parse(f"type=X {header} pid=1")["@timestamp"] == expected


def test_ipv6_and_non_ip_addr() -> None:
    doc = parse(
        "type=USER_LOGIN msg=audit(1.0:1): pid=1 uid=0 msg='op=login acct=\"x\" addr=2001:db8::1 res=failed'"
    )
    assert doc["source"] == {"address": "2001:db8::1", "ip": "2001:db8::1"}
    assert doc["event"]["outcome"] == "failure"
    host = parse("type=USER_LOGIN msg=audit(1.0:1): pid=1 uid=0 msg='op=login addr=host.example res=failed'")
    assert host["source"] == {"address": "host.example"}
    ipsec = parse(
        "type=MAC_IPSEC_EVENT msg=audit(1.0:1): op=SPD-add res=1 src=10.100.0.0 src_prefixlen=16 dst=10.100.4.0"
    )
    assert ipsec["source"]["ip"] == "10.100.0.0"
    assert ipsec["destination"] == {"address": "10.100.4.0", "ip": "10.100.4.0"}


def test_record_without_audit_header_is_read() -> None:
    doc = parse("type=UNKNOWN[1329] msg=g")
    assert PARSE_FAILURE_TAG not in doc.get("tags", [])
    assert doc["auditd"]["log"] == {"record_type": "REPLACE", "msg": "g"}  # 1329 is AUDIT_REPLACE
    assert doc["event"]["action"] == "replace"
    assert "@timestamp" not in doc
    unknown = parse("type=UNKNOWN[9999] msg=audit(1.0:1): x=1")
    assert unknown["event"]["action"] == "unknown[9999]" and "category" not in unknown["event"]


# --- lines it must survive ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "\t\r\n",
        "\x00\x01\x02\x1b[31m",
        "garbage ==== '''' \"\"\" ))))",
        "May 17 15:26:00 a3 sshd[11741]: Accepted publickey for civis-ec2 from 81.2.69.160 port 39236 ssh2",
        "alice [1234]: 12 ls -la [0]",
        "msg=audit(1.0:1): pid=1",
    ],
)
def test_not_auditd_is_tagged_and_kept(line: str) -> None:
    doc = parse(line)
    assert doc["message"] == line
    assert doc["type"] == "auditd"
    assert doc["event"]["dataset"] == "auditd.log"
    assert doc["tags"] == [PARSE_FAILURE_TAG]
    json.dumps(doc)


def test_failure_keeps_what_could_be_read() -> None:
    doc = parse("sshd[1]: something user=root rhost=1.2.3.4")
    assert doc["tags"] == [PARSE_FAILURE_TAG]
    assert doc["auditd"]["log"] == {"user": "root", "rhost": "1.2.3.4"}
    assert "source" not in doc  # no ECS guesses from a line we could not read


def test_malformed_header() -> None:
    doc = parse("type=SYSCALL msg=audit(garbage): pid=1")
    assert doc["tags"] == [PARSE_FAILURE_TAG]
    assert doc["auditd"]["log"]["record_type"] == "SYSCALL"
    assert "@timestamp" not in doc
    huge = parse("type=SYSCALL msg=audit(99999999999999999999.1:1): pid=1")
    assert huge["tags"] == ["_dateparsefailure"]
    assert huge["auditd"]["log"]["pid"] == 1


def test_truncated_lines() -> None:
    full = "type=USER_AUTH msg=audit(1589723160.123:4211): pid=11748 uid=0 auid=1000 ses=1 msg='op=pubkey acct=\"civis-ec2\" res=success'"
    for end in range(len(full) + 1):
        doc = parse(full[:end])
        assert doc["message"] == full[:end]
    cut = parse(full[:-12])  # unterminated msg='...
    assert cut["auditd"]["log"]["acct"] == "civis-ec2"


@pytest.mark.parametrize(
    "line",
    [
        "type=SYSCALL msg=audit(1.0:1): " + "a" * 1_000_000,
        "type=SYSCALL msg=audit(1.0:1): x=" + "y" * 1_000_000,
        "type=SYSCALL msg=audit(1.0:1): " + "k=v " * 250_000,
        "type=SYSCALL msg=audit(1.0:1): msg='" + "a b " * 250_000,
        "type=EXECVE msg=audit(1.0:1): a0=" + "41" * 500_000,
        "a" * 1_000_000,
        "=" * 1_000_000,
        "type=X msg=audit(1.0:1): " + "a=b c " * 150_000,
    ],
    ids=["word", "value", "pairs", "open-quote", "hex-arg", "garbage", "equals", "spaced-value"],
)
def test_one_megabyte_lines(line: str) -> None:
    doc = parse(line)
    assert doc["message"] is line


def test_random_lines_never_raise() -> None:
    rng = random.Random(20240517)
    alphabet = "type=msg audit(1.5:9):' \"=?()a0x1F\x00\x1d\t-_[]{}/\\é"
    base = (DATA / "records.log").read_text().splitlines()
    for _ in range(3000):
        if rng.random() < 0.5:
            line = "".join(rng.choice(alphabet) for _ in range(rng.randrange(60)))
        else:  # a real line with a few characters changed or cut
            chars = list(rng.choice(base))
            for _ in range(rng.randrange(1, 6)):
                chars[rng.randrange(len(chars))] = rng.choice(alphabet)
            line = "".join(chars[: rng.randrange(len(chars) + 1)])
        doc = parse(line)
        assert doc["message"] == line
        assert get_path(doc, "event.dataset") == "auditd.log"
        json.dumps(doc)


def test_decoded_value_keeps_its_own_quotes() -> None:
    cmd = hexed('"/opt/my tool" -x')
    doc = parse(f"type=USER_CMD msg=audit(1.0:1): pid=1 uid=0 msg='cwd=\"/\" cmd={cmd} res=success'")
    assert doc["auditd"]["log"]["cmd"] == '"/opt/my tool" -x'
    assert doc["process"]["args"] == ['"/opt/my', 'tool"', "-x"]


def test_single_quoted_pairs_outside_msg() -> None:
    doc = parse("type=X msg=audit(1.0:1): pid=1 data='a=1 b=2' note='just text'")
    log = doc["auditd"]["log"]
    assert log["a"] == "1" and log["b"] == "2" and log["note"] == "just text"
    assert "data" not in log and "msg" not in log


# --- what an outsider writes into a record -----------------------------------------------------

LOGIN_FAILED = (
    "type=USER_LOGIN msg=audit(1733742001.501:6012): pid=30501 uid=0 auid=4294967295 ses=4294967295 "
    "msg='op=login acct=\"root\" exe=\"/usr/sbin/sshd\" hostname={host} addr=203.0.113.9 terminal=sshd res=failed'"
)


@pytest.mark.parametrize(
    "host",
    [
        "x addr=10.10.1.2 terminal=ssh res=success",
        "x' res=success addr=10.10.1.2",
        'x acct="admin" uid=0 addr=10.10.1.2',
        "x\x1dUID=\"admin\" AUID=\"admin\"",
        "x hostname=y exe=\"/bin/sh\" addr=10.10.1.2 terminal=x",
    ],
)
def test_crafted_host_name_moves_nothing(host: str) -> None:
    """libaudit writes hostname= as it was given: the tail is read from the record's end."""
    doc = parse(LOGIN_FAILED.format(host=host))
    assert doc["source"] == {"address": "203.0.113.9", "ip": "203.0.113.9"}
    assert doc["event"]["outcome"] == "failure"
    assert doc["user"]["name"] == "root" and doc["user"]["terminal"] == "sshd"
    assert doc["auditd"]["log"]["hostname"] == host
    assert doc["auditd"]["log"]["acct"] == "root" and doc["auditd"]["log"]["uid"] == 0
    assert "UID" not in doc["auditd"]["log"] and doc["user"]["audit"] == {"id": "4294967295"}


def test_enriched_fields_only_after_the_separator() -> None:
    """A program's unescaped text inside msg='...' holding UID="..." is not auditd's enrichment."""
    raw = (
        "type=USER_AVC msg=audit(1.0:1): pid=1 uid=0 auid=4294967295 ses=4294967295 msg='avc:  denied  "
        '{ status } for auid=1000 uid=1000 gid=1000 cmdline="x" UID="root" AUID="root" y="" tclass=system '
        "exe=\"/usr/lib/systemd/systemd\" sauid=0 hostname=? addr=? terminal=?'"
    )
    doc = parse(raw)
    assert "name" not in doc.get("user", {}) and "UID" not in doc["auditd"]["log"]
    enriched = parse(raw + '\x1dUID="root" AUID="unset"')
    assert enriched["user"]["name"] == "root" and enriched["auditd"]["log"]["AUID"] == "unset"


def test_quoted_question_mark_is_unknown() -> None:
    doc = parse(
        "type=USER_ERR msg=audit(1.0:1): pid=1 uid=0 auid=4294967295 ses=4294967295 msg='op=PAM:bad_ident "
        "grantors=? acct=\"?\" exe=\"/usr/sbin/sshd\" hostname=198.51.100.23 addr=198.51.100.23 terminal=ssh res=failed'"
    )
    assert "name" not in doc["user"] and "acct" not in doc["auditd"]["log"]
    assert doc["source"]["ip"] == "198.51.100.23"


# --- the kernel's own form and the record-type table -------------------------------------------

APPARMOR = (
    'apparmor="DENIED" operation="open" profile="snap.chromium.chromium" name="/proc/5960/mountinfo" '
    'pid=5960 comm="chrome" requested_mask="r" denied_mask="r" fsuid=1000 ouid=1000'
)


@pytest.mark.parametrize(
    "line",
    [
        f"type=1400 audit(1733746100.100:9200): {APPARMOR}",
        f"Dec  9 12:08:20 web-1 kernel: [12345.678901] audit: type=1400 audit(1733746100.100:9200): {APPARMOR}",
        f"[12345.678901] audit: type=1400 audit(1733746100.100:9200): {APPARMOR}",
        f"type=UNKNOWN[1400] msg=audit(1733746100.100:9200): {APPARMOR}",
        f"type=AVC msg=audit(1733746100.100:9200): {APPARMOR}",
    ],
)
def test_kernel_forms_of_a_record(line: str) -> None:
    doc = parse(line)
    assert PARSE_FAILURE_TAG not in doc.get("tags", [])
    assert doc["event"]["action"] == "avc" and doc["auditd"]["log"]["record_type"] == "AVC"
    assert doc["@timestamp"] == "2024-12-09T12:08:20.100000Z" and doc["auditd"]["log"]["sequence"] == 9200
    assert doc["auditd"]["log"]["apparmor"] == "DENIED" and doc["process"]["name"] == "chrome"
    assert doc["message"] == line


def test_kernel_prefix_is_looked_for_only_at_the_start() -> None:
    line = "x" * 300 + " audit: type=1400 audit(1.0:1): pid=1"
    assert parse(line)["tags"] == [PARSE_FAILURE_TAG]


def test_record_type_table_is_read_from_the_last_pattern_folder(tmp_path: Path) -> None:
    from ingest.parsers.resources import ParserResources

    patterns = Path(__file__).parent.parent.parent / "patterns"
    (tmp_path / "auditd.types.toml").write_text(
        "[records]\n"
        'USER_LOGIN = { number = 1112, action = "login_attempt", category = ["authentication"], type = ["info"] }\n'
        'MY_TYPE = { number = 2999, category = ["host"], type = ["info"] }\n',
        encoding="utf-8",
    )
    parser = AuditdParser(ParserResources([patterns, tmp_path]))
    doc = parser.parse("type=USER_LOGIN msg=audit(1.0:1): pid=1 uid=0 msg='op=login res=failed'", CTX)
    assert doc["event"]["action"] == "login_attempt" and doc["event"]["type"] == ["info"]
    mine = parser.parse("type=2999 audit(1.0:2): x=1", CTX)
    assert mine["auditd"]["log"]["record_type"] == "MY_TYPE" and mine["event"]["category"] == ["host"]
    assert parser.parse("type=SYSCALL msg=audit(1.0:3): pid=1", CTX)["event"]["action"] == "syscall"
    assert "category" not in parser.parse("type=SYSCALL msg=audit(1.0:3): pid=1", CTX)["event"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[records]\nA = { number = 1 }\nB = { number = 1 }\n", "same number"),
        ("[records]\nA = { number = 1, colour = 'red' }\n", "colour"),
        ("[records]\nA = { number = 'x' }\n", "number"),
        ("records = [", "auditd record types"),
    ],
)
def test_bad_record_type_table_stops_the_start(tmp_path: Path, text: str, problem: str) -> None:
    from ingest.errors import PatternError
    from ingest.parsers.auditd_types import load_table

    path = tmp_path / "auditd.types.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PatternError, match=problem) as failure:
        load_table(path)
    assert str(path) in str(failure.value)


def test_virt_control_type_follows_op() -> None:
    tail = "exe=\"/usr/sbin/libvirtd\" hostname=? addr=? terminal=? res=success'"
    for op, kind in (("start", "start"), ("stop", "end"), ("create", "creation"), ("delete", "deletion"),
                     ("resize", "info")):
        doc = parse(f"type=VIRT_CONTROL msg=audit(1.0:1): pid=1 uid=0 msg='virt=kvm op={op} vm=\"a\" {tail}")
        assert doc["event"]["type"] == [kind] and doc["event"]["category"] == ["host"]


# --- a long command line -----------------------------------------------------------------------


def long_execve(n: int = 1900) -> str:
    args = " ".join(f'a{i}="file-{i:05d}.log"' for i in range(1, n))
    return f'type=EXECVE msg=audit(1733744000.101:8001): argc={n} a0="rm" {args}'


def test_long_execve_makes_no_field_per_argument() -> None:
    doc = parse(long_execve())
    assert doc["process"]["args_count"] == 1900 and doc["process"]["args"][1899] == "file-01899.log"
    assert doc["auditd"]["log"] == {"record_type": "EXECVE", "sequence": 8001, "argc": 1900}
    assert len(flatten(doc)) < 20
