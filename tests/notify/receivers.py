"""Real receivers on loopback ports the tests pick: an HTTP server (webhook, Slack) and an SMTP server.

:class:`HttpReceiver` records every request before it answers (so a request counts as received
even if the answer never reaches the client), and answers as told: a status for the next n
requests, a delay, or hold every answer until released (a sender killed between sending and
recording). :class:`SmtpReceiver` is aiosmtpd, with AUTH and STARTTLS or implicit TLS on a
certificate made by ``openssl`` for the test.
"""

from __future__ import annotations

import email
import email.policy
import shutil
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.redis_server import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)


class HttpReceiver:
    """A threaded HTTP server on 127.0.0.1 that records POSTs and answers as scripted."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._answers: list[Answer] = []
        self.default = Answer()
        self.delay = 0.0
        self.hold = threading.Event()
        self.hold.set()  # set: answer at once; cleared: wait until set again
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._arrived:
                    receiver.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                      body))
                    answer = receiver._answers.pop(0) if receiver._answers else receiver.default
                    receiver._arrived.notify_all()
                receiver.hold.wait(60)
                if receiver.delay:
                    time.sleep(receiver.delay)
                try:
                    self.send_response(answer.status)
                    for k, v in answer.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:
                    pass  # the client gave up (timeout) or died

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HttpReceiver:
        self._thread.start()
        return self

    def close(self) -> None:
        self.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, status: int, body: bytes = b"", *, times: int = 1, headers: dict[str, str] | None = None) -> None:
        """The next ``times`` requests get this answer (then the default again)."""
        with self._lock:
            self._answers += [Answer(status, body, headers or {}) for _ in range(times)]

    def wait_for(self, n: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.requests)} requests received, waited for {n}")
                self._arrived.wait(left)
            return list(self.requests)

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path == path]


def down_url() -> str:
    """An http:// URL nobody listens on (a receiver that is down)."""
    return f"http://127.0.0.1:{free_port()}/down"


# -- SMTP --------------------------------------------------------------------------------------

def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (openssl), as (cert, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is needed to make the test certificate (apt-get install openssl)")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes


class _Handler:
    def __init__(self, receiver: SmtpReceiver) -> None:
        self.receiver = receiver

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        with self.receiver.lock:
            self.receiver.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), msg, raw))  # type: ignore[arg-type]
        return "250 OK"


class SmtpReceiver:
    """aiosmtpd on 127.0.0.1: ``tls`` None (plain), ``"starttls"`` or ``"tls"`` (implicit)."""

    def __init__(self, *, tls: str | None = None, cert: tuple[Path, Path] | None = None,
                 user: str | None = None, password: str | None = None) -> None:
        self.mails: list[Mail] = []
        self.auth_attempts: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.port = free_port()
        self.user, self.password = user, password
        kwargs: dict[str, Any] = {}
        server_ctx = None
        if tls:
            assert cert is not None
            server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        if tls == "starttls":
            kwargs["tls_context"] = server_ctx
            kwargs["require_starttls"] = True
        if user is not None:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_required"] = True
            # aiosmtpd sees STARTTLS, not a TLS listener: AUTH is offered on an implicit-TLS connection
            # only with this off (the connection is TLS all the same)
            kwargs["auth_require_tls"] = tls != "tls"
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port,
                                     ssl_context=server_ctx if tls == "tls" else None, **kwargs)

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        with self.lock:
            self.auth_attempts.append((login, password))
        ok = login == self.user and password == self.password
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 235 or 535 itself

    def start(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def close(self) -> None:
        self.controller.stop()

    def wait_for(self, n: int, timeout: float = 20.0) -> list[Mail]:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if len(self.mails) >= n:
                    return list(self.mails)
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.mails)} mails received, waited for {n}")
            time.sleep(0.02)
