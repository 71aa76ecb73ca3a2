"""What every output is: something that sends one alert, or one summary, and says how it went.

A send either returns a short description of the receiver's answer (``"HTTP 200"``, ``"250 OK"``)
or raises :class:`SendError`, which says whether trying again can help (``permanent``): a refused
connection, a timeout, HTTP 429/5xx or an SMTP 4xx can; HTTP 4xx and SMTP 5xx (a bad URL, a
revoked token, a refused password or address) cannot, and go to the dead-letter list at once.
Every text a send returns or raises has the output's secrets replaced by ``***``.
"""

from __future__ import annotations

import ssl
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path

from ingest.notify.message import Alert, Facts, Links, Summary


class SendError(Exception):
    """A send that did not work: a stable ``code`` (metrics, dead letters) and one-sentence ``reason``."""

    def __init__(self, code: str, reason: str, *, permanent: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.permanent = permanent
        self.retry_after = retry_after


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (longest first) replaced by ``***``."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _secretish(part: str) -> bool:
    return len(part) >= 20 or (len(part) >= 8 and any(c.isdigit() for c in part))


def url_secrets(url: str) -> list[str]:
    """The parts of a webhook URL that may be its secret: the URL, its path and query, and each
    path segment or query value that looks like a token (8+ characters with a digit, or 20+)."""
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(url)
    out = [url, parts.path.lstrip("/"), parts.query]
    out += [seg for seg in parts.path.split("/") if _secretish(seg)]
    out += [v for _, v in parse_qsl(parts.query) if _secretish(v)]
    if parts.password:
        out.append(parts.password)
    return out


def header_secrets(value: str) -> list[str]:
    """A header value, and its last word (the token of ``Bearer <token>``)."""
    words = value.split()
    return [value] + ([words[-1]] if len(words) > 1 and len(words[-1]) >= 8 else [])


def ssl_context(ca_certs: Path | None, verify: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_certs) if ca_certs else None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Channel(ABC):
    """One configured output."""

    kind = ""

    def __init__(self, name: str, links: Links) -> None:
        self.name = name
        self.links = links

    @property
    @abstractmethod
    def secrets(self) -> list[str]:
        """Every secret of this output, to keep out of texts."""

    @abstractmethod
    def send(self, alert: Alert, facts: Facts) -> str:
        """Send one alert; the receiver's answer in a few words, or :class:`SendError`."""

    @abstractmethod
    def send_summary(self, summary: Summary) -> str:
        """Send one message telling the alerts a rate limit held back."""

    def describe(self) -> str:
        return f"{self.kind} output {self.name}"

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)
