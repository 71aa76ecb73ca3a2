"""An HTTP double of Kibana's saved objects import endpoint.

It answers ``POST [/s/<space>]/api/saved_objects/_import`` the way Kibana 8.x does and refuses
what Kibana refuses:

* another method or path: 404 ``Not Found``;
* no ``kbn-xsrf`` header: 400 ``Request must contain a kbn-xsrf header.``;
* missing or wrong ``Authorization`` (basic or ``ApiKey``): 401 ``Unauthorized``;
* not ``multipart/form-data``: 415; no ``file`` part, or a file not named ``*.ndjson``: 400;
* ``overwrite`` missing while ``require_overwrite`` (our client always sends it): 400.

Per object it answers like Kibana: an object whose references are neither in the upload nor
already stored fails with ``missing_references``; without ``overwrite`` an existing object fails
with ``conflict``; the rest succeed and are stored. ``{"success": ..., "successCount": N,
"successResults": [...], "errors": [...]}``.

Faults: ``fail_next(status, times)`` answers the next requests with that status (503 while
Kibana starts, 500, ...). Every request is recorded in ``requests``.

``GET /api/status`` (what the compose health check asks): 503 while ``starting`` is true, then
401 without credentials (``status.allowAnonymous`` is off by default) and 200 with them.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

IMPORT_PATH = "/api/saved_objects/_import"
ICONS = {"index-pattern": "indexPatternApp", "search": "discoverApp", "dashboard": "dashboardApp",
         "lens": "lensApp", "map": "gisApp", "visualization": "visualizeApp"}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    filename: str | None = None
    objects: list[dict[str, Any]] = field(default_factory=list)


class KibanaDouble:
    """Start with ``with KibanaDouble(username=..., password=...) as kb:``; ``kb.url`` is its base URL."""

    def __init__(
        self,
        *,
        username: str | None = "elastic",
        password: str | None = "changeme",
        api_key: str | None = None,
        require_overwrite: bool = True,
    ) -> None:
        self.username = username
        self.password = password
        self.api_key = api_key
        self.require_overwrite = require_overwrite
        self.starting = False
        self.stored: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}  # space -> objects
        self.requests: list[RecordedRequest] = []
        self._faults: list[int] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- control ------------------------------------------------------------------------------------
    def fail_next(self, status: int, times: int = 1) -> None:
        with self._lock:
            self._faults.extend([status] * times)

    def objects(self, space: str = "default") -> dict[tuple[str, str], dict[str, Any]]:
        return self.stored.get(space, {})

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> KibanaDouble:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence
                pass

            def do_POST(self) -> None:
                double._handle(self)

            def do_GET(self) -> None:
                double._handle(self)

            def do_PUT(self) -> None:
                double._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server = self._server
        self._thread = threading.Thread(target=lambda: server.serve_forever(poll_interval=0.05), daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> KibanaDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the endpoint -------------------------------------------------------------------------------
    def _expected_auth(self) -> set[str]:
        ok = set()
        if self.username is not None:
            ok.add("Basic " + base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode())
        if self.api_key is not None:
            ok.add(f"ApiKey {self.api_key}")
        return ok

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        parts = urlsplit(h.path)
        rec = RecordedRequest(h.command, parts.path, parse_qs(parts.query), {k.lower(): v for k, v in h.headers.items()}, body)
        with self._lock:
            self.requests.append(rec)
            fault = self._faults.pop(0) if self._faults else None
        if fault is not None:
            return self._send(h, fault, _error(fault, "Injected fault"))

        if parts.path == "/api/status" and h.command == "GET":
            if self.starting:
                return self._send(h, 503, _error(503, "Kibana server is not ready yet"))
            if self._expected_auth() and rec.headers.get("authorization") not in self._expected_auth():
                return self._send(h, 401, _error(401, "Unauthorized"))
            return self._send(h, 200, {"status": {"overall": {"level": "available"}}})
        space = "default"
        path = parts.path
        if path.startswith("/s/"):
            _, _, space, rest = path.split("/", 3)
            path = "/" + rest
        if path != IMPORT_PATH or h.command != "POST":
            return self._send(h, 404, _error(404, "Not Found"))
        if "kbn-xsrf" not in rec.headers:
            return self._send(h, 400, _error(400, "Request must contain a kbn-xsrf header."))
        expected = self._expected_auth()
        if expected and rec.headers.get("authorization") not in expected:
            return self._send(h, 401, _error(401, "Unauthorized"))
        overwrite = rec.query.get("overwrite", ["false"])[-1].lower() == "true"
        if self.require_overwrite and not overwrite:
            return self._send(h, 400, _error(400, "[request query.overwrite]: expected true (double's rule)"))
        ctype = rec.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            return self._send(h, 415, _error(415, "Unsupported Media Type"))
        filename, content = _file_part(ctype, body)
        if filename is None or content is None:
            return self._send(h, 400, _error(400, "[request body.file]: expected value of type [Stream] but got [undefined]"))
        rec.filename = filename
        if not filename.endswith(".ndjson"):
            ext = "." + filename.rsplit(".", 1)[-1] if "." in filename else ""
            return self._send(h, 400, _error(400, f"Invalid file extension {ext}"))
        objects = []
        for line in content.decode("utf-8").splitlines():
            if line.strip():
                try:
                    objects.append(json.loads(line))
                except json.JSONDecodeError:
                    return self._send(h, 400, _error(400, f"Unexpected token in JSON: {line[:40]}"))
        rec.objects = objects
        return self._send(h, 200, self._import(space, objects, overwrite))

    def _import(self, space: str, objects: list[dict[str, Any]], overwrite: bool) -> dict[str, Any]:
        with self._lock:
            store = self.stored.setdefault(space, {})
            upload = {(o.get("type"), o.get("id")) for o in objects}
            results, errors = [], []
            for o in objects:
                key = (o.get("type"), o.get("id"))
                title = (o.get("attributes") or {}).get("title")
                base = {"id": o.get("id"), "type": o.get("type"), "meta": {"title": title, "icon": ICONS.get(str(o.get("type")), "")}}
                missing = [
                    {"type": r["type"], "id": r["id"]}
                    for r in o.get("references", [])
                    if (r.get("type"), r.get("id")) not in upload and (r.get("type"), r.get("id")) not in store
                ]
                if missing:
                    errors.append({**base, "title": title, "error": {"type": "missing_references", "references": missing}})
                    continue
                if key in store and not overwrite:
                    errors.append({**base, "title": title, "error": {"type": "conflict"}})
                    continue
                existed = key in store
                store[key] = o  # type: ignore[index]
                results.append({**base, **({"overwrite": True} if existed else {})})
        answer: dict[str, Any] = {"success": not errors, "successCount": len(results), "successResults": results}
        if errors:
            answer["errors"] = errors
        return answer

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        raw = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        h.wfile.write(raw)


_REASONS = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 415: "Unsupported Media Type",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


def _error(status: int, message: str) -> dict[str, Any]:
    return {"statusCode": status, "error": _REASONS.get(status, "Error"), "message": message}


def _file_part(content_type: str, body: bytes) -> tuple[str | None, bytes | None]:
    """The filename and content of the multipart part named ``file``."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode() + body
    )
    if not msg.is_multipart():
        return None, None
    for part in msg.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            payload = part.get_payload(decode=True)
            return part.get_filename(), payload if isinstance(payload, bytes) else None
    return None, None
