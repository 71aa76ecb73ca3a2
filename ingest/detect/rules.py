"""Which documents each rule looks at (pure functions of one document; state lives in the store)."""

from __future__ import annotations

import hashlib
from fnmatch import fnmatchcase
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any

import orjson

from ingest.document import get_path

UNMAPPED = "SSH Key Not Mapped"
#: actions whose ``event.outcome: failure`` counts toward brute force. ``ssh_connection_closed`` is a
#: failure only when a pre-auth connection that had named a user ends ("Connection closed by
#: authenticating user root ... [preauth]"): key-guessing bots log nothing else at LogLevel INFO.
FAILURE_ACTIONS = frozenset({"ssh_login", "authentication_failure", "vpn_auth_failed", "ssh_connection_closed"})
#: at most this many failures are counted for one document (``log.syslog.repeated``); rsyslog's
#: repeat counts stay far below it in practice (sshd repeats a line at most MaxAuthTries times)
MAX_REPEATED = 1000
#: Teleport's failed node authentications and cluster logins (web UI, tsh)
TELEPORT_FAILURE_ACTIONS = frozenset({"auth", "user.login"})
#: auditd's USER_AUTH: libpam's record of one pam_authenticate (a failed one is a wrong password)
AUDIT_FAILURE_ACTION = "user_auth"
#: every ``event.action`` some rule looks at (failures, SSH/VPN/Teleport logins): others are dismissed
RULE_ACTIONS = FAILURE_ACTIONS | TELEPORT_FAILURE_ACTIONS | {"vpn_connect", AUDIT_FAILURE_ACTION}
#: the evidence classes of one host's authentication attempts (see :func:`failure_origin`), by action
EVIDENCE_OF = {"ssh_login": "sshd", "ssh_connection_closed": "conn", "authentication_failure": "pam",
               AUDIT_FAILURE_ACTION: "audit"}
#: every evidence class, in the order the store compares them
EVIDENCE = ("sshd", "conn", "pam", "audit")

Network = IPv4Network | IPv6Network


def event_key(doc: dict[str, Any]) -> str:
    """A stable key of one event when the caller has no id: host, file, offset, time and message."""
    parts = [get_path(doc, "host.name") or get_path(doc, "host.hostname"), get_path(doc, "log.file.path"),
             get_path(doc, "log.offset"), doc.get("@timestamp"), doc.get("message")]
    return hashlib.sha1(orjson.dumps(parts)).hexdigest()[:24]


def field(doc: dict[str, Any], parent: str, key: str) -> Any:
    """``doc[parent][key]`` or None: the two-level fields the rules read, without a path walk."""
    holder = doc.get(parent)
    return holder.get(key) if type(holder) is dict else None


def is_unmapped_key_login(doc: dict[str, Any]) -> bool:
    return is_ssh_success(doc) and get_path(doc, "system.auth.ssh.key.owner") == UNMAPPED


def is_failure(doc: dict[str, Any]) -> bool:
    if field(doc, "event", "outcome") != "failure":
        return False
    action = field(doc, "event", "action")
    doc_type = doc.get("type")
    if doc_type == "auditd":  # USER_AUTH res=failed; USER_LOGIN res=failed is not an attempt count (README)
        return action == AUDIT_FAILURE_ACTION and get_path(doc, "auditd.log.record_type") == "USER_AUTH"
    return action in FAILURE_ACTIONS or (doc_type == "teleport" and action in TELEPORT_FAILURE_ACTIONS)


def failure_origin(doc: dict[str, Any]) -> tuple[str, str] | None:
    """(origin, evidence class) of a failure that other lines may report again, so the store
    counts each attempt once (README "One attempt, counted once"); None for the others (OpenVPN,
    Teleport: always counted).

    One wrong SSH password is written up to four times, all by the connection's privileged sshd
    process (its pid in the syslog header, and in auditd's ``pid=``): sshd's ``Failed password``
    (class ``sshd``: one per attempt), pam_unix's ``authentication failure`` then ``PAM N more
    authentication failures`` (``pam``: one per attempt, the second line counted N times), the
    pre-auth ``Connection closed by authenticating user ...`` when the client gives up and the
    ``Invalid user X from ...`` before the first attempt (``conn``: one per connection however many
    such lines, and the only line a key-guessing bot leaves), and PAM's ``USER_AUTH
    res=failed`` in audit.log (``audit``). The store counts, per origin, the largest class.

    The origin is host, service and pid. The host is auditd's ``node=`` (audisp-remote), else the
    syslog header's host, else Filebeat's host name, cut to its first label and lower-cased
    (``web-1.example.com`` and ``web-1`` agree); the service is the PAM service, else the program
    (auditd: the executable's name), ``sshd-session`` and ``sshd-auth`` being ``sshd``. A line
    without a pid names no connection: it is always counted.
    """
    event = doc.get("event")
    evidence = EVIDENCE_OF.get(event.get("action")) if type(event) is dict else None  # type: ignore[arg-type]
    if evidence is None:
        return None
    system = doc.get("system")
    auth = system.get("auth") if type(system) is dict else None
    if type(auth) is not dict:
        auth = _EMPTY
    if evidence == "sshd" and _obj(auth, "ssh").get("event") == "Invalid":
        evidence = "conn"  # "Invalid user X from ...": once per connection, before its attempts
    doc_type = doc.get("type")
    process = doc.get("process")
    if type(process) is not dict:
        process = _EMPTY
    if doc_type == "auditd":
        if evidence != "audit":
            return None
        host = _obj(_obj(doc, "auditd"), "log").get("node")
        exe = process.get("executable")
        service = exe.rpartition("/")[2] if isinstance(exe, str) else process.get("name")
    elif doc_type == "auth" and evidence != "audit":
        host = None
        service = _obj(auth, "pam").get("service") if evidence == "pam" else None
        if not isinstance(service, str) or not service:
            service = process.get("name")
    else:
        return None
    if not isinstance(host, str) or not host:
        holder = doc.get("host")
        host = (holder.get("hostname") or holder.get("name")) if type(holder) is dict else None
    if not isinstance(host, str) or not host:
        return None
    if not isinstance(service, str) or not service:
        service = "-"
    elif service.startswith("sshd"):  # sshd, sshd-session, sshd-auth (OpenSSH 9.8+), sshd.exe ...
        service = "sshd"
    pid = process.get("pid")
    if type(pid) is not int:
        return None
    return f"{host.partition('.')[0].lower()}/{service.lower()}/{pid}", evidence


_EMPTY: dict[str, Any] = {}


def _obj(holder: dict[str, Any], key: str) -> dict[str, Any]:
    """``holder[key]`` if it is an object, else an empty one (read-only: never write to it)."""
    value = holder.get(key)
    return value if type(value) is dict else _EMPTY


def repeated(doc: dict[str, Any]) -> int:
    """How many failures ``doc`` stands for: ``log.syslog.repeated`` (rsyslog's "message repeated
    N times: [...]", parsed into its body) times pam_unix's ``N more authentication failures``
    (``system.auth.pam.failures``), each 1 when absent; at least 1, at most :data:`MAX_REPEATED`."""
    log = doc.get("log")
    syslog = log.get("syslog") if type(log) is dict else None
    n = syslog.get("repeated") if type(syslog) is dict else None
    if type(n) is not int or n < 1:
        n = 1
    more = _obj(_obj(_obj(doc, "system"), "auth"), "pam").get("failures") if "system" in doc else None
    if type(more) is int and more > 1:
        n *= more
    return min(n, MAX_REPEATED)


def is_ssh_success(doc: dict[str, Any]) -> bool:
    return field(doc, "event", "action") == "ssh_login" and field(doc, "event", "outcome") == "success"


def is_vpn_success(doc: dict[str, Any]) -> bool:
    return field(doc, "event", "action") == "vpn_connect" and field(doc, "event", "outcome") in (None, "success")


def is_login_success(doc: dict[str, Any]) -> bool:
    """Logins checked against allowed networks: SSH, VPN, and Teleport ``auth`` / ``user.login`` successes."""
    return (is_ssh_success(doc) or is_vpn_success(doc)
            or (doc.get("type") == "teleport" and field(doc, "event", "action") in TELEPORT_FAILURE_ACTIONS
                and field(doc, "event", "outcome") == "success"))


def country_subject(doc: dict[str, Any]) -> str | None:
    """Whose countries a login is compared with: ``user.name``, or for SSH with a mapped key owner
    ``user.name/owner`` (root logged in with alice's key is not root with bob's key).

    VPN logins (and SSH without a known owner) use the bare ``user.name``.
    """
    user = field(doc, "user", "name")
    if not isinstance(user, str) or not user:
        return None
    if is_ssh_success(doc):
        owner = get_path(doc, "system.auth.ssh.key.owner")
        if isinstance(owner, str) and owner and owner != UNMAPPED:
            return f"{user}/{owner}"
    return user


def allowed_for(host: str, networks: dict[str, list[Network]]) -> list[Network] | None:
    """The union of the CIDRs of every glob matching ``host``; None if no glob matches (not checked)."""
    found: list[Network] | None = None
    for glob, cidrs in networks.items():
        if fnmatchcase(host, glob):
            found = (found or []) + list(cidrs)
    return found


def outside(ip: str, cidrs: list[Network]) -> bool:
    """True when ``ip`` is in none of ``cidrs`` (an unreadable address counts as outside)."""
    try:
        addr = ip_address(ip)
    except ValueError:
        return True
    return not any(addr.version == net.version and addr in net for net in cidrs)
