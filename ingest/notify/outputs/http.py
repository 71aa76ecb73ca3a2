"""One JSON POST with the standard library: a timeout, TLS settings, no redirects, errors classified.

Redirects are not followed (a POST turned into a GET by a 302 would lose the message silently);
a 3xx is a permanent failure that names the status, so the URL can be corrected. Proxies come from
the usual ``HTTPS_PROXY``/``NO_PROXY`` environment variables.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.request
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from ingest.notify.outputs.base import SendError

USER_AGENT = "audit-ingest"
#: statuses after which the same request may work later
RETRYABLE = frozenset({408, 425, 429})
BODY_LIMIT = 200


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None  # the 3xx then surfaces as an HTTPError


def opener(context: ssl.SSLContext) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirect())


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def post_json(open_: urllib.request.OpenerDirector, url: str, body: bytes, headers: dict[str, str],
              timeout: float) -> tuple[int, str]:
    """POST ``body``; (status, start of the answer) for a 2xx, else :class:`SendError`."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": USER_AGENT,
                                              **headers})
    try:
        with open_.open(request, timeout=timeout) as response:
            answer = response.read(BODY_LIMIT).decode("utf-8", "replace")
            return int(response.status), answer
    except urllib.error.HTTPError as e:
        status = int(e.code)
        try:
            text = e.read(BODY_LIMIT).decode("utf-8", "replace").strip()
        except (OSError, http.client.HTTPException):
            text = ""
        reason = f"HTTP {status} {e.reason}" + (f": {text}" if text else "")
        if 300 <= status < 400:
            reason += " (redirects are not followed: configure the final URL)"
        permanent = not (status in RETRYABLE or status >= 500)
        raise SendError(f"http_{status}", reason, permanent=permanent,
                        retry_after=retry_after(e.headers.get("Retry-After") if e.headers else None)) from None
    except TimeoutError as e:
        raise SendError("timeout", f"no answer within {timeout:g} s ({e or 'timed out'})", permanent=False) from None
    except urllib.error.URLError as e:
        cause = e.reason
        if isinstance(cause, TimeoutError):
            raise SendError("timeout", f"no answer within {timeout:g} s", permanent=False) from None
        if isinstance(cause, ssl.SSLError):
            raise SendError("tls", f"TLS failed: {cause}", permanent=False) from None
        raise SendError("connection", f"cannot connect: {cause}", permanent=False) from None
    except (http.client.HTTPException, ConnectionError, OSError) as e:
        raise SendError("connection", f"connection failed: {type(e).__name__}: {e}", permanent=False) from None
