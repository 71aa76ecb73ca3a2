"""The detection stage: ``Pipeline.post`` calls ``process_batch(docs)`` after enrichment and pairing.

Rules (``rule.name``):

* ``unmapped_key`` (severity 47): successful ``ssh_login`` with key owner "SSH Key Not Mapped".
* ``brute_force`` (73): more than ``threshold`` failures from one ``source.ip`` within ``window``
  of event time, across every host. A document with ``log.syslog.repeated: N`` (rsyslog's
  "message repeated N times: [...]") is N failures. Sliding count, aligned de-duplication: see
  :mod:`ingest.detect.store` (an epoch-aligned window alone can split a burst across a boundary;
  counting the window that ends at each failure avoids that, one alert per IP per aligned window,
  the same windows whatever the processing order).
* ``new_country`` (47): successful SSH/VPN login from a ``source.geo.country_iso_code`` the
  subject (see :func:`ingest.detect.rules.country_subject`) has not used within ``lookback_days``
  while having logged in from elsewhere in that period; a first sighting only learns.
* ``outside_allowed_networks`` (73): successful login whose ``source.ip`` is outside the CIDRs of
  the globs matching ``host.hostname``.

Alert ``_id``s are deterministic (rule + IP + window, or rule + triggering event key), so
reprocessing the same events never indexes an alert twice (``create`` answers 409).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.detect.config import DetectionConfig
from ingest.detect.rules import (
    AUDIT_FAILURE_ACTION,
    FAILURE_ACTIONS,
    RULE_ACTIONS,
    TELEPORT_FAILURE_ACTIONS,
    UNMAPPED,
    allowed_for,
    country_subject,
    event_key,
    failure_origin,
    field,
    is_failure,
    outside,
    repeated,
)
from ingest.detect.store import BruteForceHit, DetectionStore, Failure, Login, NewCountryHit
from ingest.document import format_timestamp, get_path, parse_timestamp
from ingest.model import IndexAction
from ingest.sinks.elasticsearch import index_for

Clock = Callable[[], datetime]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)

SEVERITY = {"unmapped_key": 47, "brute_force": 73, "new_country": 47, "outside_allowed_networks": 73}


def _ms(doc: dict[str, Any]) -> int | None:
    ts = doc.get("@timestamp")
    if not isinstance(ts, str):
        return None
    try:
        return (parse_timestamp(ts) - EPOCH) // MS
    except ValueError:
        return None


def alert_id(rule: str, *parts: object) -> str:
    digest = hashlib.sha1("|".join(str(p) for p in (rule, *parts)).encode()).hexdigest()[:24]
    return f"{rule}-{digest}"


class DetectionStage:
    def __init__(self, store: DetectionStore, config: DetectionConfig | None = None,
                 clock: Clock = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.config = config or DetectionConfig()
        self.clock = clock

    def process_batch(self, docs: Sequence[dict[str, Any]], ids: Sequence[str] | None = None) -> list[IndexAction]:
        """Alerts raised by ``docs`` (``ids``: their document ids, parallel; else a key is derived)."""
        cfg = self.config
        keys = list(ids) if ids is not None else [event_key(d) for d in docs]
        if len(keys) != len(docs):
            raise ValueError("ids must be parallel to docs")
        created = format_timestamp(self.clock())
        out: list[IndexAction] = []
        failures: list[Failure] = []
        logins: list[Login] = []
        by_key: dict[str, dict[str, Any]] = {}
        bf_enabled, nc_enabled = cfg.brute_force.enabled, cfg.new_country.enabled
        for doc, key in zip(docs, keys, strict=True):
            event = doc.get("event")
            # most documents (commands, auditd, PAM, sudo...) play no part in any rule: dismiss them
            # before any other lookup
            if type(event) is not dict:
                continue
            action = event.get("action")
            if action not in RULE_ACTIONS:
                continue
            outcome = event.get("outcome")
            doc_type = doc.get("type")
            if doc_type == "alert" or (action == AUDIT_FAILURE_ACTION and outcome != "failure"):
                continue  # auditd's USER_AUTH plays a part only as a failure (every login writes one)
            # the rules' predicates (rules.is_ssh_success, is_vpn_success, is_login_success,
            # is_failure) on the action and outcome read once
            ssh_ok = action == "ssh_login" and outcome == "success"
            login_ok = ssh_ok or (action == "vpn_connect" and outcome in (None, "success"))
            if ssh_ok and cfg.unmapped_key.enabled and get_path(doc, "system.auth.ssh.key.owner") == UNMAPPED:
                out.append(self._alert("unmapped_key", doc, key, created,
                                       "Successful SSH login with a public key that is not mapped to an owner."))
            source = doc.get("source")
            ip: Any = source.get("ip") if type(source) is dict else None
            if cfg.allowed_networks and isinstance(ip, str) and (login_ok or (
                    doc_type == "teleport" and action in TELEPORT_FAILURE_ACTIONS and outcome == "success")):
                host = field(doc, "host", "hostname")
                cidrs = allowed_for(host, cfg.allowed_networks) if isinstance(host, str) else None
                if cidrs is not None and outside(ip, cidrs):
                    out.append(self._alert("outside_allowed_networks", doc, key, created,
                                           f"Successful login on {host} from {ip}, outside its allowed networks."))
            counted = bf_enabled and isinstance(ip, str) and ip and outcome == "failure" and (
                is_failure(doc) if doc_type == "auditd" or doc_type == "teleport" else action in FAILURE_ACTIONS)
            learned = nc_enabled and login_ok
            if not counted and not learned:
                continue  # no rule below needs its time
            ts = _ms(doc)
            if ts is None:
                continue
            if counted:
                user = doc.get("user")
                user = user.get("name") if type(user) is dict else None
                host = doc.get("host")
                host = host.get("hostname") if type(host) is dict else None
                host = host if isinstance(host, str) else None
                user = user if isinstance(user, str) else None
                origin, log = failure_origin(doc) or (None, None)
                n = repeated(doc)
                if n == 1:
                    failures.append(Failure(ip, ts, key, host, user, origin, log, 0))
                else:
                    failures.extend(Failure(ip, ts, key, host, user, origin, log, i) for i in range(n))
                by_key[key] = doc
            country = get_path(doc, "source.geo.country_iso_code") if learned else None
            if isinstance(country, str):
                subject = country_subject(doc)
                if subject is not None:
                    logins.append(Login(subject, country, ts, key))
                    by_key[key] = doc
        if failures or logins:
            window_ms = cfg.brute_force.window // MS
            hits, new = self.store.evaluate(failures, logins, window_ms=window_ms,
                                            threshold=cfg.brute_force.threshold,
                                            lookback_ms=timedelta(days=cfg.new_country.lookback_days) // MS)
            out += [self._brute_force(hit, by_key[hit.trigger], created, window_ms) for hit in hits]
            out += [self._new_country(hit, by_key[hit.login.key], created) for hit in new]
        return out

    def _base(self, rule: str, doc: dict[str, Any], created: str, reason: str) -> dict[str, Any]:
        alert: dict[str, Any] = {
            "@timestamp": doc["@timestamp"] if isinstance(doc.get("@timestamp"), str) else created,
            "type": "alert",
            "event": {"kind": "alert", "severity": SEVERITY[rule], "reason": reason, "created": created},
            "rule": {"name": rule},
            "alert": {},
        }
        ip = get_path(doc, "source.ip")
        if ip is not None:
            alert["source"] = {"ip": ip}
            geo = get_path(doc, "source.geo")
            if geo is not None:
                alert["source"]["geo"] = geo
        host = get_path(doc, "host.hostname")
        if host is not None:
            alert["host"] = {"hostname": host}
        return alert

    def _alert(self, rule: str, doc: dict[str, Any], key: str, created: str, reason: str) -> IndexAction:
        alert = self._base(rule, doc, created, reason)
        user = get_path(doc, "user.name")
        if user is not None:
            alert["user"] = {"name": user}
        owner = get_path(doc, "system.auth.ssh.key.owner")
        if owner is not None:
            alert["system"] = {"auth": {"ssh": {"key": {"owner": owner}}}}
        alert["alert"]["trigger_ids"] = [key]
        return self._action(alert_id(rule, key), alert)

    def _brute_force(self, hit: BruteForceHit, doc: dict[str, Any], created: str, window_ms: int) -> IndexAction:
        cfg = self.config.brute_force
        reason = (f"{hit.count} authentication failures from {hit.ip} within {cfg.window.total_seconds():g} s "
                  f"on {len(hit.hosts)} host(s), more than the threshold of {cfg.threshold}.")
        alert = self._base("brute_force", doc, created, reason)
        alert["alert"].update({
            "trigger_ids": hit.keys, "hosts": hit.hosts, "users": hit.users, "count": hit.count,
            "window": {"start": format_timestamp(EPOCH + hit.window * window_ms * MS),
                       "end": format_timestamp(EPOCH + (hit.window + 1) * window_ms * MS)},
        })
        alert.pop("host", None)  # several hosts: alert.hosts
        return self._action(alert_id("brute_force", hit.ip, window_ms, hit.window), alert)

    def _new_country(self, hit: NewCountryHit, doc: dict[str, Any], created: str) -> IndexAction:
        login = hit.login
        reason = (f"Successful login of {login.subject} from {login.country}, a country not seen for them in "
                  f"the last {self.config.new_country.lookback_days} days (seen: {', '.join(hit.known) or '-'}).")
        action = self._alert("new_country", doc, login.key, created, reason)
        action.doc["alert"]["subject"] = login.subject
        action.doc["alert"]["known_countries"] = hit.known
        return action

    def _action(self, doc_id: str, alert: dict[str, Any]) -> IndexAction:
        return IndexAction(index_for(alert["@timestamp"], self.config.index_prefix), doc_id, alert, None)
