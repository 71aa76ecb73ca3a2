"""Import saved objects into Kibana (the generated ones of :mod:`ingest.setup.kibana_objects`, and files).

``POST /api/saved_objects/_import?overwrite=true`` with a ``kbn-xsrf`` header and the objects as
a multipart/form-data upload (one part named ``file``), authenticated with basic auth or an API
key, as Kibana's saved objects API documents. Standard library only (``urllib``).

All files are sent in one upload, so references between objects of different files resolve in the
same import. Kibana answers 200 even when some objects fail; :func:`import_saved_objects` raises
:class:`KibanaImportError` then (or returns the result with ``strict=False``).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.errors import ConfigError, IngestError

log = logging.getLogger(__name__)

IMPORT_PATH = "/api/saved_objects/_import"
UPLOAD_NAME = "audit-ingest.ndjson"
#: Answers that mean "Kibana is not ready yet" (starting, or behind a proxy that is): retried.
RETRY_STATUS = frozenset({502, 503, 504})


class KibanaImportError(IngestError):
    """The import was refused (HTTP error) or some objects failed; ``status`` is the HTTP status."""

    def __init__(self, message: str, *, status: int | None = None, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors or []


@dataclass(frozen=True, slots=True)
class ImportResult:
    """Kibana's answer: ``success`` is false when any object failed (see ``errors``)."""

    success: bool
    success_count: int
    success_results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_response(cls, body: dict[str, Any]) -> ImportResult:
        return cls(
            success=bool(body.get("success")),
            success_count=int(body.get("successCount", 0)),
            success_results=list(body.get("successResults", [])),
            errors=list(body.get("errors", [])),
        )


def ndjson_files(directory: str | Path) -> list[Path]:
    """The ``*.ndjson`` files of ``directory``, sorted; a missing or empty directory is a config error."""
    path = Path(directory)
    files = sorted(path.glob("*.ndjson")) if path.is_dir() else []
    if not files:
        raise ConfigError("no saved objects (*.ndjson) to import", path=str(path))
    return files


def read_objects(paths: Iterable[str | Path], objects: Sequence[dict[str, Any]] = ()) -> bytes:
    """The NDJSON upload: ``objects``, then every non-empty line of ``paths``, each checked to be a JSON object."""
    lines: list[bytes] = [json.dumps(o, sort_keys=True, separators=(",", ":")).encode("utf-8") for o in objects]
    for p in paths:
        path = Path(p)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read saved objects: {e.strerror}", path=str(path)) from e
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"line {n} is not JSON: {e.msg}", path=str(path)) from e
            if not isinstance(obj, dict) or "type" not in obj or "id" not in obj:
                raise ConfigError(f"line {n} is not a saved object (needs type and id)", path=str(path))
            lines.append(line.strip().encode("utf-8"))
    if not lines:
        raise ConfigError("the saved object files hold no objects", path=", ".join(str(p) for p in paths))
    return b"\n".join(lines) + b"\n"


def multipart(filename: str, content: bytes, *, boundary: str | None = None) -> tuple[str, bytes]:
    """``(content_type, body)`` of a multipart/form-data upload with one ``file`` part."""
    boundary = boundary or f"audit-ingest-{secrets.token_hex(12)}"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/ndjson\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", head + content + tail


def auth_header(
    *, username: str | None = None, password: str | None = None, api_key: str | tuple[str, str] | None = None
) -> str | None:
    """``Authorization`` value: ``ApiKey <base64(id:key)>`` or ``Basic <base64(user:pass)>``, or None."""
    if api_key is not None:
        if isinstance(api_key, tuple):
            api_key = base64.b64encode(f"{api_key[0]}:{api_key[1]}".encode()).decode()
        return f"ApiKey {api_key}"
    if username is not None:
        token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
        return f"Basic {token}"
    return None


def import_url(base_url: str, *, space: str | None = None, overwrite: bool = True) -> str:
    """``<kibana>[/s/<space>]/api/saved_objects/_import?overwrite=true``."""
    base = base_url.rstrip("/")
    if space and space != "default":
        base += f"/s/{urllib.parse.quote(space, safe='')}"
    query = "?overwrite=true" if overwrite else ""
    return f"{base}{IMPORT_PATH}{query}"


def _ssl_context(url: str, ca_certs: str | Path | None, verify: bool) -> ssl.SSLContext | None:
    if not url.lower().startswith("https:"):
        return None
    ctx = ssl.create_default_context(cafile=str(ca_certs) if ca_certs else None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _error_message(status: int, raw: bytes) -> str:
    try:
        body = json.loads(raw)
        msg = body.get("message") or body.get("error") or raw[:200].decode("utf-8", "replace")
    except (ValueError, AttributeError):
        msg = raw[:200].decode("utf-8", "replace")
    return f"Kibana answered {status}: {msg}"


def _describe(errors: Sequence[dict[str, Any]], limit: int = 5) -> str:
    parts = []
    for e in errors[:limit]:
        err = e.get("error", {})
        detail = err.get("type", "error")
        if err.get("references"):
            detail += " " + ", ".join(f"{r.get('type')}/{r.get('id')}" for r in err["references"])
        parts.append(f"{e.get('type')}/{e.get('id')}: {detail}")
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more


def import_saved_objects(
    url: str,
    ndjson_paths: Iterable[str | Path],
    *,
    objects: Sequence[dict[str, Any]] = (),
    username: str | None = None,
    password: str | None = None,
    api_key: str | tuple[str, str] | None = None,
    space: str | None = None,
    overwrite: bool = True,
    ca_certs: str | Path | None = None,
    verify: bool = True,
    timeout: float = 30.0,
    ready_timeout: float = 60.0,
    strict: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ImportResult:
    """Import ``objects`` and the saved objects of ``ndjson_paths`` into the Kibana at ``url``, in one upload.

    Connection failures and 502/503/504 (Kibana still starting) are retried with backoff until
    ``ready_timeout`` seconds have passed. Other HTTP errors (401, 400, ...) raise
    :class:`KibanaImportError` at once. With ``strict`` (default) an import in which any object
    failed raises too, naming the objects; otherwise the result is returned as Kibana gave it.
    """
    payload = read_objects(list(ndjson_paths), objects)
    content_type, body = multipart(UPLOAD_NAME, payload)
    target = import_url(url, space=space, overwrite=overwrite)
    headers = {"kbn-xsrf": "true", "Content-Type": content_type, "Accept": "application/json"}
    authorization = auth_header(username=username, password=password, api_key=api_key)
    if authorization:
        headers["Authorization"] = authorization
    context = _ssl_context(target, ca_certs, verify)

    deadline = clock() + ready_timeout
    delay = 0.5
    while True:
        request = urllib.request.Request(target, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                raw = response.read()
            break
        except urllib.error.HTTPError as e:
            raw = e.read()
            if e.code not in RETRY_STATUS or clock() + delay > deadline:
                raise KibanaImportError(_error_message(e.code, raw), status=e.code) from e
            log.info("Kibana not ready (%s), retrying in %.1fs", e.code, delay)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            if clock() + delay > deadline:
                reason = getattr(e, "reason", e)
                raise KibanaImportError(f"cannot reach Kibana at {url}: {reason}") from e
            log.info("Kibana not reachable (%s), retrying in %.1fs", getattr(e, "reason", e), delay)
        sleep(delay)
        delay = min(delay * 2, 10.0)

    try:
        result = ImportResult.from_response(json.loads(raw))
    except (ValueError, AttributeError, TypeError) as e:
        raise KibanaImportError(f"Kibana's answer is not an import result: {raw[:120]!r}") from e
    if strict and (not result.success or result.errors):
        raise KibanaImportError(
            f"{len(result.errors)} saved object(s) failed to import: {_describe(result.errors)}",
            status=200,
            errors=result.errors,
        )
    log.info("imported %d saved objects into Kibana", result.success_count)
    return result
