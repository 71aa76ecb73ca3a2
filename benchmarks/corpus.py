"""A deterministic corpus of Filebeat events, as they sit in the Redis ``filebeat`` list.

``generate(n, seed)`` returns ``n`` JSON events (bytes). The mix (by event, not by scenario):

* ~60 % auth.log: sshd ``Accepted publickey`` with the MD5 or SHA256 fingerprint of one of the
  four sample keys (``tests/data/keys/authorized_keys``) or of an unknown key, followed by the PAM
  ``session opened`` line and, later, ``session closed`` / ``Disconnected from user`` with the same
  sshd pid (so sessions pair); brute-force bursts of ``Failed password`` / ``Invalid user`` /
  ``pam_unix(sshd:auth): authentication failure`` from a few repeating IPs; sudo with its PAM
  session lines; su; cron sessions; useradd/groupadd; ``Did not receive identification string``;
* ~15 % commands.log: ``host user: user [pid]: command [exit]`` (rsyslog's local6 of seed 002);
* ~20 % auditd (``event.module: auditd``): SYSCALL + EXECVE + PROCTITLE sharing one sequence,
  USER_AUTH, USER_ACCT, CRED_ACQ, LOGIN, USER_START, USER_LOGIN, USER_END, CRED_DISP;
* ~5 % OpenVPN: ``Peer Connection Initiated``, ``MULTI_sva``, ``MULTI: Learn``, and later
  ``client-instance exiting``.

Envelopes: Filebeat 8.x and 7.x (``log.file.path``, ``log.offset``, ``host.name`` object,
``agent``, ``ecs``, ``input``) and 6.x (``source``, ``offset``, ``beat.hostname``,
``prospector``); the offset grows per (host, file) by the line length + 1. Each host writes
either classic (``May 17 15:26:00``) or RFC 3339 (``2024-05-17T16:02:03.412271+00:00``) syslog
timestamps. Public addresses come from networks present in the GeoIP test databases
(``tests/data/geoip``), mixed with private ones. Hosts, users, pids, ports and commands vary so
caches are not unrealistically perfect; brute-force bursts repeat a few source addresses.

Run as a script to write a corpus as NDJSON: ``python benchmarks/corpus.py 10000 > events.ndjson``.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import random
import sys
import zlib
from collections import Counter, deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

SEED = 20240517
START = datetime(2024, 5, 17, 0, 0, 0, tzinfo=UTC)

#: share of events per kind (the documented mix)
MIX: dict[str, float] = {"auth": 0.60, "commands": 0.15, "auditd": 0.20, "openvpn": 0.05}

PATHS = {"auth": "/var/log/auth.log", "commands": "/var/log/commands.log",
         "auditd": "/var/log/audit/audit.log", "openvpn": "/var/log/openvpn.log"}

# Fingerprints of tests/data/keys/authorized_keys (MD5, SHA256) as sshd logs them, by key type.
KNOWN_KEYS: list[tuple[str, str, str]] = [
    ("RSA", "0c:b4:eb:4c:91:1f:df:7d:76:ba:d4:3e:7b:72:67:87", "SHA256:u1WrzJipWy9/NQPUj52Y6ou/M98avgO6t8s4J5OrkSk"),
    ("ED25519", "cf:fc:b6:db:5e:2a:ba:3b:bc:0f:a5:dd:48:a5:bf:1d", "SHA256:KkqlMYfYp35C+bsww+oN2Q6DjLrLHcnsKOb642or3nc"),
    ("ECDSA", "d6:47:3c:fd:fc:b3:73:ef:24:bb:43:2e:ba:ec:01:a4", "SHA256:0OdNELNHTEUS5rHCf6UAb5LijS7wD6ZJMyVNccTxJBQ"),
    ("RSA", "30:99:0b:82:6e:d2:10:19:66:c3:4c:89:31:cf:26:00", "SHA256:GgiRNfjcY6sNcfF7+WVOQw4UQtG3YSdB1BpctLYIz1M"),
]

# (first address as int-able dotted quad, size) of networks in the GeoIP City/ASN test databases.
PUBLIC_NETS: list[tuple[str, int]] = [
    ("81.2.69.142", 2), ("81.2.69.144", 16), ("81.2.69.160", 32), ("81.2.69.192", 16),
    ("216.160.83.56", 8), ("89.160.20.112", 16), ("89.160.20.128", 128), ("175.16.199.0", 256),
    ("2.125.160.216", 8), ("67.43.156.0", 256), ("149.101.100.0", 16), ("202.196.224.0", 4096),
]
PRIVATE_NETS: list[tuple[str, int]] = [("10.0.0.0", 65536), ("192.168.1.0", 256), ("172.16.5.0", 256)]
#: the few addresses brute-force bursts come from (repeating: the GeoIP cache should hit)
BRUTE_FORCE_IPS = ["89.160.20.128", "89.160.20.130", "175.16.199.3", "2.125.160.217", "67.43.156.14",
                   "202.196.224.77"]

STAFF = ["civis-ec2", "ubuntu", "deploy", "alice", "bob", "carol", "dave", "erin", "frank", "grace",
         "heidi", "ivan", "judy", "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent",
         "victor", "walter", "yusuf", "zoe", "ops", "jenkins", "ansible", "backup", "postgres", "www-data"]
GUESSES = ["root", "admin", "test", "oracle", "ubuntu", "pi", "git", "postgres", "user", "deploy", "guest",
           "ftpuser", "support", "nagios", "hadoop", "minecraft", "mysql", "tomcat", "user1", "debian"]
COMMANDS = [
    "ls -la", "cd /var/www", "sudo systemctl restart nginx", "tail -n 50 /var/log/nginx/error.log",
    "git pull origin main", "docker ps -a", "docker logs -f --tail 100 api", "vim /etc/ssh/sshd_config",
    "cat /etc/nginx/sites-enabled/default | grep -n \"server_name\"", "top", "htop", "df -h", "free -m",
    "kubectl get pods -n prod", "journalctl -u ssh --since today", "ps aux | grep python",
    "python3 manage.py migrate", "pip install -r requirements.txt", "exit", "history | tail",
    "scp backup.tar.gz db-1:/srv/backups/", "curl -s http://localhost:8080/health", "crontab -l",
    "echo \"weird [brackets] in a command [0]\"", "chmod 600 ~/.ssh/authorized_keys", "uptime",
    "rsync -av /srv/data/ backup-1:/srv/data/", "mysql -u app -p", "redis-cli info memory", "whoami",
]
SUDO_COMMANDS = ["/usr/bin/systemctl restart nginx", "/usr/bin/apt-get update", "/usr/bin/tail -f /var/log/syslog",
                 "/usr/bin/docker restart api", "/bin/cat /etc/shadow", "/usr/sbin/useradd -m newbie",
                 "/usr/bin/journalctl -xe", "/bin/bash", "/usr/bin/vim /etc/hosts"]
EXES = [("systemctl", "/usr/bin/systemctl", ["systemctl", "restart", "nginx"]),
        ("cat", "/usr/bin/cat", ["cat", "/etc/passwd"]),
        ("bash", "/usr/bin/bash", ["bash", "-c", "id"]),
        ("curl", "/usr/bin/curl", ["curl", "-s", "http://10.0.0.5/"]),
        ("sudo", "/usr/bin/sudo", ["sudo", "-i"]),
        ("python3", "/usr/bin/python3.11", ["python3", "manage.py", "shell"]),
        ("docker", "/usr/bin/docker", ["docker", "exec", "-it", "api", "sh"]),
        ("useradd", "/usr/sbin/useradd", ["useradd", "-m", "tmpuser"])]
AUDIT_KEYS = ["rootcmd", "exec", "identity", "sshd_config", "(null)"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _addr(rng: random.Random, nets: list[tuple[str, int]]) -> str:
    base, size = rng.choice(nets)
    a, b, c, d = (int(x) for x in base.split("."))
    n = ((a << 24) | (b << 16) | (c << 8) | d) + rng.randrange(size)
    return f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


class _Host:
    def __init__(self, rng: random.Random, name: str, beat: str, rfc3339: bool) -> None:
        self.name = name
        self.beat = beat  # "8", "7" or "6"
        self.rfc3339 = rfc3339
        self.offsets: dict[str, int] = {}
        self.pid = rng.randrange(1000, 30000)
        self.audit_seq = rng.randrange(1000, 100000)
        self.ses = rng.randrange(1, 500)

    def next_pid(self, rng: random.Random) -> int:
        self.pid += rng.randrange(1, 40)
        if self.pid > 4_000_000:
            self.pid = 1000
        return self.pid


class CorpusGenerator:
    """Interleaves per-kind scenario streams so the event mix follows :data:`MIX`."""

    def __init__(self, seed: int = SEED, *, n_hosts: int = 40) -> None:
        self.rng = rng = random.Random(seed)
        names = ([f"web-{i}" for i in range(1, 13)] + [f"db-{i}" for i in range(1, 7)]
                 + [f"app-{i:02d}" for i in range(1, 13)] + ["a3", "bastion-1", "bastion-2", "ci-1", "ci-2",
                                                             "backup-1", "mon-1", "k8s-node-1"])
        self.hosts = [_Host(rng, names[i % len(names)] + ("" if i < len(names) else f"-{i}"),
                            rng.choices(["8", "7", "6"], [0.6, 0.25, 0.15])[0], rng.random() < 0.35)
                      for i in range(n_hosts)]
        self.vpn_hosts = [_Host(rng, f"vpn{i}", "8", False) for i in (1, 2)]
        self.now = START
        self.unknown_fps = ["SHA256:" + base64.b64encode(rng.randbytes(32)).decode().rstrip("=")
                            for _ in range(40)]
        self.queues: dict[str, deque[tuple[_Host, str, str]]] = {k: deque() for k in MIX}
        #: lines a scenario emits later (logouts): a heap of (due event number, order, kind, host, text)
        self.later: list[tuple[int, int, str, _Host, str]] = []
        self.count = 0
        self._order = itertools.count()
        self.kinds = list(MIX)
        self.weights = [MIX[k] for k in self.kinds]
        self.makers = {"auth": self._auth, "commands": self._commands, "auditd": self._auditd,
                       "openvpn": self._openvpn}

    # -- timestamps ------------------------------------------------------------------------------
    def _syslog_time(self, host: _Host) -> str:
        t = self.now
        if host.rfc3339:
            return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}+00:00"
        return f"{MONTHS[t.month - 1]} {t.day:>2} {t:%H:%M:%S}"

    def _line(self, host: _Host, program: str, pid: int | None, text: str) -> str:
        proc = f"{program}[{pid}]" if pid is not None else program
        return f"{self._syslog_time(host)} {host.name} {proc}: {text}"

    def _later(self, kind: str, host: _Host, text: str, delay: int) -> None:
        heapq.heappush(self.later, (self.count + delay, next(self._order), kind, host, text))

    # -- scenarios (each pushes lines onto its kind's queue) --------------------------------------
    def _auth(self) -> None:
        rng, q = self.rng, self.queues["auth"]
        host = rng.choice(self.hosts)
        r = rng.random()
        if r < 0.30:  # publickey login, PAM session, logout later (same sshd pid)
            pid = host.next_pid(rng)
            user = rng.choice(STAFF)
            ip = _addr(rng, PUBLIC_NETS if rng.random() < 0.7 else PRIVATE_NETS)
            port = rng.randrange(32768, 61000)
            if rng.random() < 0.75:
                ktype, md5, sha = rng.choice(KNOWN_KEYS)
                fp = md5 if rng.random() < 0.3 else sha
            else:
                ktype, fp = rng.choice(["RSA", "ED25519", "ECDSA"]), rng.choice(self.unknown_fps)
            q.append((host, "sshd", self._line(host, "sshd", pid,
                      f"Accepted publickey for {user} from {ip} port {port} ssh2: {ktype} {fp}")))
            q.append((host, "sshd", self._line(host, "sshd", pid,
                      f"pam_unix(sshd:session): session opened for user {user} by (uid=0)")))
            delay = rng.randrange(50, 5000)
            self._later("auth", host, f"sshd[{pid}]: Received disconnect from {ip} port {port}:11: disconnected by user",
                        delay)
            self._later("auth", host, f"sshd[{pid}]: Disconnected from user {user} {ip} port {port}", delay)
            self._later("auth", host, f"sshd[{pid}]: pam_unix(sshd:session): session closed for user {user}", delay + 1)
        elif r < 0.62:  # brute-force burst from a repeating address
            ip = rng.choice(BRUTE_FORCE_IPS)
            for _ in range(rng.randrange(4, 16)):
                pid = host.next_pid(rng)
                port = rng.randrange(30000, 65000)
                guess = rng.choice(GUESSES)
                s = rng.random()
                if s < 0.45:
                    inv = "" if guess in ("root", "postgres", "ubuntu") else "invalid user "
                    text = f"Failed password for {inv}{guess} from {ip} port {port} ssh2"
                elif s < 0.65:
                    text = f"Invalid user {guess} from {ip} port {port}"
                elif s < 0.85:
                    text = (f"pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh "
                            f"ruser= rhost={ip}  user={guess}")
                else:
                    text = f"Connection closed by authenticating user {guess} {ip} port {port} [preauth]"
                q.append((host, "sshd", self._line(host, "sshd", pid, text)))
        elif r < 0.78:  # sudo + its PAM session
            user = rng.choice(STAFF)
            cmd = rng.choice(SUDO_COMMANDS)
            q.append((host, "sudo", self._line(host, "sudo", None,
                      f"{user} : TTY=pts/{rng.randrange(0, 8)} ; PWD=/home/{user} ; USER=root ; COMMAND={cmd}")))
            q.append((host, "sudo", self._line(host, "sudo", None,
                      f"pam_unix(sudo:session): session opened for user root by {user}(uid={rng.randrange(1000, 1100)})")))
            q.append((host, "sudo", self._line(host, "sudo", None, "pam_unix(sudo:session): session closed for user root")))
        elif r < 0.86:  # cron session
            pid = host.next_pid(rng)
            user = rng.choice(["root", "backup", "www-data"])
            q.append((host, "CRON", self._line(host, "CRON", pid,
                      f"pam_unix(cron:session): session opened for user {user} by (uid=0)")))
            q.append((host, "CRON", self._line(host, "CRON", pid, f"pam_unix(cron:session): session closed for user {user}")))
        elif r < 0.92:  # su
            pid = host.next_pid(rng)
            user = rng.choice(STAFF)
            q.append((host, "su", self._line(host, "su", pid, f"(to root) {user} on pts/{rng.randrange(0, 8)}")))
            q.append((host, "su", self._line(host, "su", pid,
                      f"pam_unix(su:session): session opened for user root by {user}(uid={rng.randrange(1000, 1100)})")))
        elif r < 0.96:  # useradd / groupadd
            pid = host.next_pid(rng)
            name = rng.choice(STAFF) + str(rng.randrange(1, 99))
            gid = rng.randrange(1001, 3000)
            q.append((host, "groupadd", self._line(host, "groupadd", pid, f"new group: name={name}, GID={gid}")))
            q.append((host, "useradd", self._line(host, "useradd", pid,
                      f"new user: name={name}, UID={gid}, GID={gid}, home=/home/{name}, shell=/bin/bash")))
        else:  # scanner
            pid = host.next_pid(rng)
            ip = _addr(rng, PUBLIC_NETS)
            q.append((host, "sshd", self._line(host, "sshd", pid,
                      f"Did not receive identification string from {ip} port {rng.randrange(30000, 65000)}")))

    def _commands(self) -> None:
        rng, q = self.rng, self.queues["commands"]
        host = rng.choice(self.hosts)
        user = rng.choice(STAFF)
        pid = host.next_pid(rng)
        for _ in range(rng.randrange(1, 6)):
            cmd = rng.choice(COMMANDS)
            code = 0 if rng.random() < 0.85 else rng.choice([1, 2, 127, 130])
            q.append((host, user, f"{self._syslog_time(host)} {host.name} {user}: {user} [{pid}]: {cmd} [{code}]"))

    def _auditd(self) -> None:
        rng, q = self.rng, self.queues["auditd"]
        host = rng.choice(self.hosts)
        t = self.now.timestamp()

        def stamp() -> str:
            host.audit_seq += 1
            return f"audit({t:.3f}:{host.audit_seq})"

        r = rng.random()
        pid = host.next_pid(rng)
        auid = rng.randrange(1000, 1100)
        if r < 0.55:  # SYSCALL + EXECVE + PROCTITLE with one sequence
            comm, exe, argv = rng.choice(EXES)
            st = stamp()
            q.append((host, "", f"type=SYSCALL msg={st}: arch=c000003e syscall=59 success=yes exit=0 "
                                f"a0={rng.randrange(1 << 40):x} a1={rng.randrange(1 << 40):x} a2={rng.randrange(1 << 40):x} "
                                f"a3=0 items=2 ppid={pid - 1} pid={pid} auid={auid} uid=0 gid=0 euid=0 suid=0 fsuid=0 "
                                f"egid=0 sgid=0 fsgid=0 tty=pts{rng.randrange(0, 8)} ses={host.ses} comm=\"{comm}\" "
                                f"exe=\"{exe}\" key=\"{rng.choice(AUDIT_KEYS)}\""))
            args = " ".join(f'a{i}="{a}"' for i, a in enumerate(argv))
            q.append((host, "", f"type=EXECVE msg={st}: argc={len(argv)} {args}"))
            q.append((host, "", f"type=PROCTITLE msg={st}: proctitle={'00'.join(a.encode().hex().upper() for a in argv)}"))
        else:  # an sshd login as auditd records it
            user = rng.choice(STAFF)
            ip = _addr(rng, PUBLIC_NETS if rng.random() < 0.7 else PRIVATE_NETS)
            host.ses += 1
            common = f'exe="/usr/sbin/sshd" hostname={ip} addr={ip} terminal=ssh res=success'
            q.append((host, "", f"type=USER_AUTH msg={stamp()}: pid={pid} uid=0 auid=4294967295 ses=4294967295 "
                                f"msg='op=pubkey acct=\"{user}\" {common}'"))
            q.append((host, "", f"type=USER_ACCT msg={stamp()}: pid={pid} uid=0 auid=4294967295 ses=4294967295 "
                                f"msg='op=PAM:accounting grantors=pam_unix acct=\"{user}\" {common}'"))
            q.append((host, "", f"type=CRED_ACQ msg={stamp()}: pid={pid} uid=0 auid=4294967295 ses=4294967295 "
                                f"msg='op=PAM:setcred grantors=pam_unix acct=\"{user}\" {common}'"))
            q.append((host, "", f"type=LOGIN msg={stamp()}: pid={pid} uid=0 old-auid=4294967295 auid={auid} "
                                f"tty=(none) old-ses=4294967295 ses={host.ses} res=1"))
            q.append((host, "", f"type=USER_START msg={stamp()}: pid={pid} uid=0 auid={auid} ses={host.ses} "
                                f"msg='op=PAM:session_open grantors=pam_loginuid,pam_unix acct=\"{user}\" {common}'"))
            q.append((host, "", f"type=USER_LOGIN msg={stamp()}: pid={pid} uid=0 auid={auid} ses={host.ses} "
                                f"msg='op=login id={auid} exe=\"/usr/sbin/sshd\" hostname=? addr={ip} "
                                f"terminal=/dev/pts/{rng.randrange(0, 8)} res=success'"))
            q.append((host, "", f"type=USER_END msg={stamp()}: pid={pid} uid=0 auid={auid} ses={host.ses} "
                                f"msg='op=PAM:session_close grantors=pam_loginuid,pam_unix acct=\"{user}\" {common}'"))
            q.append((host, "", f"type=CRED_DISP msg={stamp()}: pid={pid} uid=0 auid={auid} ses={host.ses} "
                                f"msg='op=PAM:setcred grantors=pam_unix acct=\"{user}\" {common}'"))

    def _openvpn(self) -> None:
        rng, q = self.rng, self.queues["openvpn"]
        host = rng.choice(self.vpn_hosts)
        pid = 9739 if host.name == "vpn1" else 4411
        user = rng.choice(STAFF)
        ip = _addr(rng, PUBLIC_NETS)
        port = rng.randrange(1024, 65000)
        pool = f"10.8.{rng.randrange(0, 4)}.{rng.randrange(2, 250)}"
        q.append((host, "openvpn", self._line(host, "openvpn", pid,
                  f"{ip}:{port} [{user}] Peer Connection Initiated with [AF_INET]{ip}:{port}")))
        q.append((host, "openvpn", self._line(host, "openvpn", pid,
                  f"{user}/{ip}:{port} MULTI_sva: pool returned IPv4={pool}, IPv6=(Not enabled)")))
        q.append((host, "openvpn", self._line(host, "openvpn", pid,
                  f"{user}/{ip}:{port} MULTI: Learn: {pool} -> {user}/{ip}:{port}")))
        self._later("openvpn", host, f"openvpn[{pid}]: {user}/{ip}:{port} SIGTERM[soft,remote-exit] received, "
                                     "client-instance exiting", rng.randrange(200, 20000))

    # -- envelope ---------------------------------------------------------------------------------
    def _envelope(self, kind: str, host: _Host, line: str) -> bytes:
        path = PATHS[kind]
        offset = host.offsets.get(path, 0)
        host.offsets[path] = offset + len(line.encode()) + 1
        read = self.now + timedelta(milliseconds=self.rng.randrange(5, 900))
        ts = read.strftime("%Y-%m-%dT%H:%M:%S.") + f"{read.microsecond // 1000:03d}Z"
        event: dict[str, Any]
        if host.beat == "6":
            event = {"@timestamp": ts, "beat": {"hostname": host.name, "name": host.name, "version": "6.8.23"},
                     "host": {"name": host.name}, "source": path, "offset": offset, "message": line,
                     "prospector": {"type": "log"}, "input": {"type": "log"}}
            if kind == "auditd":
                event["fileset"] = {"module": "auditd", "name": "log"}
        else:
            version = "8.15.0" if host.beat == "8" else "7.17.22"
            event = {"@timestamp": ts,
                     "@metadata": {"beat": "filebeat", "type": "_doc", "version": version},
                     "agent": {"type": "filebeat", "version": version, "hostname": host.name, "name": host.name,
                               "id": f"{zlib.crc32(host.name.encode()):08x}-0000-4000-8000-000000000000"},
                     "host": {"name": host.name, "hostname": host.name},
                     "log": {"file": {"path": path}, "offset": offset},
                     "input": {"type": "filestream" if host.beat == "8" else "log"},
                     "ecs": {"version": "8.0.0" if host.beat == "8" else "1.12.0"},
                     "message": line}
            if kind == "auditd":
                event["event"] = {"module": "auditd", "dataset": "auditd.log"}
                event["fileset"] = {"name": "log"}
                event["service"] = {"type": "auditd"}
        return orjson.dumps(event)

    def events(self, n: int) -> Iterator[bytes]:
        """The next ``n`` events; delayed lines join their kind's queue when due, so the mix holds."""
        rng = self.rng
        end = self.count + n
        while self.count < end:
            self.now += timedelta(microseconds=rng.randrange(100, 20000))
            while self.later and self.later[0][0] <= self.count:
                _, _, kind_, host_, text = heapq.heappop(self.later)
                self.queues[kind_].append((host_, "", f"{self._syslog_time(host_)} {host_.name} {text}"))
            kind = rng.choices(self.kinds, self.weights)[0]
            if not self.queues[kind]:
                self.makers[kind]()
            host, _prog, line = self.queues[kind].popleft()
            self.count += 1
            yield self._envelope(kind, host, line)


def generate(n: int, seed: int = SEED) -> list[bytes]:
    """``n`` Filebeat events (JSON bytes), the same for the same ``(n, seed)``."""
    return list(CorpusGenerator(seed).events(n))


def kind_of(raw: bytes) -> str:
    """The kind an event of this corpus was generated as (from its file path)."""
    event = orjson.loads(raw)
    path = event.get("source") or event["log"]["file"]["path"]
    return next(k for k, p in PATHS.items() if p == path)


def mix(events: list[bytes]) -> dict[str, float]:
    counts = Counter(kind_of(e) for e in events)
    return {k: counts[k] / len(events) for k in MIX}


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    out = sys.stdout.buffer
    for ev in CorpusGenerator(int(sys.argv[2]) if len(sys.argv) > 2 else SEED).events(count):
        out.write(ev + b"\n")
