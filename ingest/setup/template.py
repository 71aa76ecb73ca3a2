"""The index template and retention policy for the daily ``audit-YYYY.MM.DD`` indices.

One composable index template (``PUT _index_template/<name>``) covers ``<prefix>*``: the daily
event indices and the alert indices (``<prefix>alerts-*``, ``detect.index_prefix``) a detection
stage writes, since both hold the same ECS fields. Field names follow ECS and Filebeat's ``system/auth`` and ``auditd`` modules;
the names the replaced Logstash config produced stay searchable as ``alias`` fields (see
:data:`LEGACY_ALIASES`), so old saved searches keep working without storing values twice.

Everything here is plain data: :func:`build_setup` returns the bodies, :func:`install` sends them
with the official client. The field inventory (:func:`mapped_fields`) is what the Kibana saved
objects are checked against in the tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_PREFIX = "audit-"
#: Higher than Elastic's built-in templates (``logs-*-*`` etc. use 100), in case a user widens the pattern.
TEMPLATE_PRIORITY = 200
#: Strings longer than this are stored but not indexed as keywords (Elastic's own default is 1024).
KEYWORD_IGNORE_ABOVE = 1024
#: Commands and sudo command lines can be long; keep them searchable up to this length.
COMMAND_IGNORE_ABOVE = 8191

_KEYWORD: dict[str, Any] = {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}
_COMMAND: dict[str, Any] = {
    "type": "keyword",
    "ignore_above": COMMAND_IGNORE_ABOVE,
    "fields": {"text": {"type": "match_only_text"}},
}

#: Every field the pipeline writes on purpose, by dotted path. Anything else gets a dynamic mapping
#: (strings -> keyword, integers -> long, fractions -> float), see :func:`dynamic_templates`.
FIELDS: dict[str, dict[str, Any]] = {
    # --- base -------------------------------------------------------------------------------------
    "@timestamp": {"type": "date"},
    "message": {"type": "match_only_text"},
    "type": _KEYWORD,  # the seed's kind: auth, commands, auditd, openvpn, teleport, shell, session, alert
    "tags": _KEYWORD,
    "labels": {"type": "object"},
    "ecs.version": _KEYWORD,
    "error.message": {"type": "match_only_text"},
    "error.type": _KEYWORD,
    # --- event ------------------------------------------------------------------------------------
    "event.kind": _KEYWORD,
    "event.category": _KEYWORD,
    "event.type": _KEYWORD,
    "event.action": _KEYWORD,
    "event.outcome": _KEYWORD,
    "event.dataset": _KEYWORD,
    "event.module": _KEYWORD,
    "event.reason": _KEYWORD,
    "event.severity": {"type": "long"},
    "event.created": {"type": "date"},
    "event.ingested": {"type": "date"},
    "event.start": {"type": "date"},
    "event.end": {"type": "date"},
    "event.duration": {"type": "long"},  # nanoseconds, as ECS
    "event.sequence": {"type": "long"},
    "event.timezone": _KEYWORD,
    # --- what Filebeat adds -----------------------------------------------------------------------
    "log.file.path": _KEYWORD,
    "log.offset": {"type": "long"},
    "log.syslog.priority": {"type": "long"},
    "log.syslog.facility.code": {"type": "long"},
    "log.syslog.severity.code": {"type": "long"},
    "log.syslog.facility.name": _KEYWORD,
    "log.syslog.severity.name": _KEYWORD,
    "log.syslog.version": {"type": "long"},
    "log.syslog.msgid": _KEYWORD,
    "log.syslog.procid": _KEYWORD,
    "log.syslog.structured_data": {"type": "flattened"},  # RFC 5424 SD-ID -> PARAM -> value, as ECS
    "log.syslog.repeated": {"type": "long"},  # rsyslog's "message repeated N times": the document stands for N
    "input.type": _KEYWORD,
    "fields.log_type": _KEYWORD,
    "fileset.name": _KEYWORD,
    "service.type": _KEYWORD,
    "agent.name": _KEYWORD,
    "agent.type": _KEYWORD,
    "agent.version": _KEYWORD,
    "agent.id": _KEYWORD,
    "agent.ephemeral_id": _KEYWORD,
    # --- host (an object since Filebeat 7) --------------------------------------------------------
    "host.hostname": _KEYWORD,
    "host.name": _KEYWORD,
    "host.id": _KEYWORD,
    "host.ip": {"type": "ip"},
    "host.mac": _KEYWORD,
    "host.architecture": _KEYWORD,
    "host.os.name": _KEYWORD,
    "host.os.family": _KEYWORD,
    "host.os.version": _KEYWORD,
    "host.os.kernel": _KEYWORD,
    "host.os.platform": _KEYWORD,
    "host.os.type": _KEYWORD,
    # --- process ----------------------------------------------------------------------------------
    "process.name": _KEYWORD,
    "process.pid": {"type": "long"},
    "process.ppid": {"type": "long"},
    "process.command_line": _COMMAND,
    "process.exit_code": {"type": "long"},
    "process.executable": _KEYWORD,
    "process.args": _KEYWORD,
    "process.args_count": {"type": "long"},
    "process.title": _KEYWORD,
    "process.working_directory": _KEYWORD,
    # --- user and group ---------------------------------------------------------------------------
    "user.name": _KEYWORD,
    "user.id": _KEYWORD,
    "user.target.name": _KEYWORD,
    "user.target.id": _KEYWORD,
    "user.effective.name": _KEYWORD,
    "user.effective.id": _KEYWORD,
    "user.audit.id": _KEYWORD,
    "user.audit.name": _KEYWORD,
    "group.name": _KEYWORD,
    "group.id": _KEYWORD,
    # --- network ----------------------------------------------------------------------------------
    "source.ip": {"type": "ip"},
    "source.port": {"type": "long"},
    "source.address": _KEYWORD,
    "source.domain": _KEYWORD,
    "source.geo.continent_name": _KEYWORD,
    "source.geo.country_iso_code": _KEYWORD,
    "source.geo.country_name": _KEYWORD,
    "source.geo.region_iso_code": _KEYWORD,
    "source.geo.region_name": _KEYWORD,
    "source.geo.city_name": _KEYWORD,
    "source.geo.postal_code": _KEYWORD,
    "source.geo.timezone": _KEYWORD,
    "source.geo.location": {"type": "geo_point"},
    "source.as.number": {"type": "long"},
    "source.as.organization.name": _KEYWORD,
    "destination.ip": {"type": "ip"},
    "destination.port": {"type": "long"},
    "destination.address": _KEYWORD,
    "related.ip": {"type": "ip"},
    "related.user": _KEYWORD,
    "related.hosts": _KEYWORD,
    # --- system/auth (Filebeat's module names) ----------------------------------------------------
    "system.auth.ssh.event": _KEYWORD,
    "system.auth.ssh.method": _KEYWORD,
    "system.auth.ssh.signature": _KEYWORD,
    "system.auth.ssh.dropped_ip": {"type": "ip"},
    "system.auth.ssh.invalid_user": _KEYWORD,
    "system.auth.ssh.key.type": _KEYWORD,
    "system.auth.ssh.key.fingerprint": _KEYWORD,
    "system.auth.ssh.key.owner": _KEYWORD,  # key owner, or the literal "SSH Key Not Mapped"
    "system.auth.ssh.authorized_keys_command": _KEYWORD,
    "system.auth.ssh.authorized_keys_command_status": {"type": "long"},
    "system.auth.sudo.user": _KEYWORD,
    "system.auth.sudo.group": _KEYWORD,
    "system.auth.sudo.command": _COMMAND,
    "system.auth.sudo.pwd": _KEYWORD,
    "system.auth.sudo.tty": _KEYWORD,
    "system.auth.sudo.error": _KEYWORD,
    "system.auth.sudo.env": _KEYWORD,
    "system.auth.su.tty": _KEYWORD,
    "system.auth.pam.service": _KEYWORD,
    "system.auth.pam.type": _KEYWORD,
    "system.auth.useradd.home": _KEYWORD,
    "system.auth.useradd.shell": _KEYWORD,
    # --- auditd (Filebeat's module names; other auditd.log.* keys map dynamically) ----------------
    "auditd.log.record_type": _KEYWORD,
    "auditd.log.sequence": {"type": "long"},
    "auditd.log.key": _KEYWORD,
    "auditd.log.res": _KEYWORD,
    "auditd.log.op": _KEYWORD,
    "auditd.log.acct": _KEYWORD,
    "auditd.log.ses": _KEYWORD,
    "auditd.log.terminal": _KEYWORD,
    "auditd.log.syscall": _KEYWORD,
    "auditd.log.arch": _KEYWORD,
    "auditd.log.success": _KEYWORD,
    "auditd.log.exit": _KEYWORD,
    "auditd.log.tty": _KEYWORD,
    "auditd.log.addr": _KEYWORD,
    "auditd.log.items": _KEYWORD,
    # --- OpenVPN and Teleport ---------------------------------------------------------------------
    "openvpn.virtual_ip": {"type": "ip"},
    "openvpn.virtual_ipv6": {"type": "ip"},
    "tls.version": _KEYWORD,
    "tls.version_protocol": _KEYWORD,
    "tls.cipher": _KEYWORD,
    "tls.client.x509.subject.distinguished_name": _KEYWORD,
    "tls.client.x509.serial_number": _KEYWORD,
    "service.version": _KEYWORD,
    "teleport.sid": _KEYWORD,
    "teleport.login": _KEYWORD,
    "teleport.server_id": _KEYWORD,
    "teleport.event": _KEYWORD,
    # fields whose value type differs between Teleport events or versions (scp's action "upload",
    # sftp's action 1; exitCode "0" or 0): a dynamic mapping would take the first one seen that day
    # and reject the others
    "teleport.action": _KEYWORD,
    "teleport.exitCode": _KEYWORD,
    "teleport.size": _KEYWORD,
    "teleport.version": _KEYWORD,
    "teleport.operation": _KEYWORD,
    "teleport.db_query": _COMMAND,
    "teleport.db_query_parameters": _KEYWORD,
    # maps whose keys are chosen by users (labels, traits, IdP attributes): one field each, not
    # one field per key (the index's field limit)
    "teleport.attributes": {"type": "flattened"},
    "teleport.annotations": {"type": "flattened"},
    "teleport.labels": {"type": "flattened"},
    "teleport.server_labels": {"type": "flattened"},
    "teleport.app_labels": {"type": "flattened"},
    "teleport.db_labels": {"type": "flattened"},
    "teleport.desktop_labels": {"type": "flattened"},
    "teleport.kubernetes_labels": {"type": "flattened"},
    "teleport.user_traits": {"type": "flattened"},
    "teleport.identity.traits": {"type": "flattened"},
    # --- session documents (type: session) --------------------------------------------------------
    "session.id": _KEYWORD,
    "session.kind": _KEYWORD,  # ssh, openvpn, teleport
    "session.end_reason": _KEYWORD,  # logout, timeout, ...
    "session.corrected_from": _KEYWORD,  # timeout or replaced: the end reason before the real logout came
    "session.duration_s": {"type": "double"},
    "session.duration_min": {"type": "double"},
    # --- alerts (type: alert, <prefix>alerts-* indices) ------------------------------------------
    "rule.name": _KEYWORD,
    "rule.id": _KEYWORD,
    "rule.description": _KEYWORD,
    "alert.count": {"type": "long"},
    "alert.window.start": {"type": "date"},  # brute force: the epoch-aligned counting window
    "alert.window.end": {"type": "date"},
}

#: The field names of the replaced Logstash config (seed 002) and its geoip filter, as aliases of
#: the fields that hold the values now. Left out, because an alias cannot share its name with an
#: object that holds fields: ``user`` (the seed's user name; ``user`` is the ECS object ``user.*``)
#: and ``group`` (the seed's misnamed second capture of commands.log; ``group`` is ``group.*``).
LEGACY_ALIASES: dict[str, str] = {
    # auth.log (system.auth.* of the seed)
    "system.auth.timestamp": "@timestamp",
    "system.auth.hostname": "host.hostname",
    "system.auth.pid": "process.pid",
    "system.auth.program": "process.name",
    "system.auth.user": "user.name",
    "system.auth.ssh.ip": "source.ip",
    "system.auth.ssh.port": "source.port",
    "system.auth.groupadd.name": "group.name",
    "system.auth.groupadd.gid": "group.id",
    # commands.log
    "syslog_timestamp": "@timestamp",
    "syslog_hostname": "host.hostname",
    "pid": "process.pid",
    "command": "process.command_line",
    "command_exit_code": "process.exit_code",
    # OpenVPN
    "vpnuser": "user.name",
    "vpnhost": "source.ip",
    "vpnport": "source.port",
    # key owner (seed 000)
    "key_name": "system.auth.ssh.key.owner",
    # Logstash geoip filter
    "geoip.ip": "source.ip",
    "geoip.location": "source.geo.location",
    "geoip.country_name": "source.geo.country_name",
    "geoip.country_code2": "source.geo.country_iso_code",
    "geoip.city_name": "source.geo.city_name",
    "geoip.region_name": "source.geo.region_name",
    "geoip.continent_name": "source.geo.continent_name",
    "geoip.asn": "source.as.number",
    "geoip.as_org": "source.as.organization.name",
}


def dynamic_templates() -> list[dict[str, Any]]:
    """Mappings for fields not in :data:`FIELDS`: strings are keywords, numbers long/float."""
    return [
        {"strings_as_keyword": {"match_mapping_type": "string", "mapping": dict(_KEYWORD)}},
        {"integers_as_long": {"match_mapping_type": "long", "mapping": {"type": "long"}}},
        {"fractions_as_float": {"match_mapping_type": "double", "mapping": {"type": "float"}}},
    ]


def _nest(fields: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """``{"a.b": m}`` -> ``{"a": {"properties": {"b": m}}}``; objects on the way get ``type: object``."""
    root: dict[str, Any] = {}
    for path, mapping in fields.items():
        parts = path.split(".")
        props = root
        for i, part in enumerate(parts[:-1]):
            node = props.setdefault(part, {"properties": {}})
            if "type" in node and node["type"] != "object":
                where = ".".join(parts[: i + 1])
                raise ValueError(f"{path}: {where} is a {node['type']} field, not an object")
            node.setdefault("properties", {})
            props = node["properties"]
        leaf = parts[-1]
        if leaf in props and "properties" in props[leaf] and mapping.get("type") != "object":
            raise ValueError(f"{path}: is an object holding fields, cannot be a {mapping.get('type')}")
        if mapping.get("type") == "object":
            props.setdefault(leaf, {"properties": {}}).update({k: v for k, v in mapping.items() if k != "type"})
        else:
            props[leaf] = dict(mapping)
    return root


def mappings() -> dict[str, Any]:
    """The ``mappings`` of the template: explicit fields, legacy aliases, dynamic templates."""
    for alias, target in LEGACY_ALIASES.items():
        if target not in FIELDS or FIELDS[target].get("type") in ("object", "alias"):
            raise ValueError(f"alias {alias} -> {target}: the target must be a concrete field")
    fields: dict[str, dict[str, Any]] = dict(FIELDS)
    fields.update({alias: {"type": "alias", "path": target} for alias, target in LEGACY_ALIASES.items()})
    return {
        "dynamic": True,
        "date_detection": False,
        "numeric_detection": False,
        "dynamic_templates": dynamic_templates(),
        "properties": _nest(fields),
    }


def mapped_fields(mapping: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Every leaf field of ``mapping`` (default: ours) by dotted path -> type (``alias`` for aliases).

    Multi-fields are included (``process.command_line.text``); object paths are not.
    """
    mapping = mapping if mapping is not None else mappings()
    out: dict[str, str] = {}

    def walk(props: Mapping[str, Any], prefix: str) -> None:
        for name, spec in props.items():
            path = f"{prefix}{name}"
            if "properties" in spec:
                walk(spec["properties"], path + ".")
                continue
            out[path] = spec.get("type", "object")
            for sub, sub_spec in spec.get("fields", {}).items():
                out[f"{path}.{sub}"] = sub_spec.get("type", "keyword")

    walk(mapping.get("properties", {}), "")
    return out


def _stem(prefix: str) -> str:
    stem = prefix.rstrip("-_.")
    if not stem:
        raise ValueError(f"index prefix {prefix!r} has no name part")
    return stem


def policy_name(prefix: str = DEFAULT_PREFIX) -> str:
    """The ILM policy's name for ``prefix``: ``audit-`` -> ``audit-retention``."""
    return f"{_stem(prefix)}-retention"


def template_name(prefix: str = DEFAULT_PREFIX) -> str:
    """The index template's name for ``prefix``: ``audit-`` -> ``audit-ingest``."""
    return f"{_stem(prefix)}-ingest"


def build_ilm_policy(retention_days: int) -> dict[str, Any]:
    """An ILM policy that deletes an index ``retention_days`` after it was created.

    The daily indices are not rollover aliases, so the delete phase's ``min_age`` counts from index
    creation: an ``audit-2024.05.17`` index goes about ``retention_days`` after that day.
    """
    if retention_days < 1:
        raise ValueError(f"retention_days must be at least 1, got {retention_days}")
    return {
        "policy": {
            "_meta": {"managed_by": "audit-ingest", "description": f"delete after {retention_days} days"},
            "phases": {
                "hot": {"min_age": "0ms", "actions": {}},
                "delete": {"min_age": f"{retention_days}d", "actions": {"delete": {}}},
            },
        }
    }


def build_index_template(
    prefix: str = DEFAULT_PREFIX,
    retention_days: int | None = None,
    *,
    shards: int = 1,
    replicas: int | None = None,
) -> dict[str, Any]:
    """The composable index template body for ``<prefix>*``.

    With ``retention_days`` the indices get ``index.lifecycle.name`` (the policy of
    :func:`build_ilm_policy`, installed under :func:`policy_name`). ``replicas`` is left to the
    cluster default unless given (0 suits a single-node cluster).
    """
    settings: dict[str, Any] = {
        "index.number_of_shards": shards,
        "index.mapping.total_fields.limit": 2000,
        "index.refresh_interval": "5s",
    }
    if replicas is not None:
        settings["index.number_of_replicas"] = replicas
    if retention_days is not None:
        if retention_days < 1:
            raise ValueError(f"retention_days must be at least 1, got {retention_days}")
        settings["index.lifecycle.name"] = policy_name(prefix)
    return {
        "index_patterns": [f"{prefix}*"],
        "priority": TEMPLATE_PRIORITY,
        "_meta": {
            "managed_by": "audit-ingest",
            "description": "Server access audit events: ECS fields, legacy Logstash names as aliases",
        },
        "template": {"settings": settings, "mappings": mappings()},
    }


@dataclass(frozen=True, slots=True)
class SetupBodies:
    """What ``audit-ingest setup`` installs in Elasticsearch: names and request bodies."""

    template_name: str
    template: dict[str, Any]
    policy_name: str | None = None
    policy: dict[str, Any] | None = None


def build_setup(
    prefix: str = DEFAULT_PREFIX,
    retention_days: int | None = None,
    *,
    shards: int = 1,
    replicas: int | None = None,
) -> SetupBodies:
    """Template and (with ``retention_days``) ILM policy for ``prefix``."""
    template = build_index_template(prefix, retention_days, shards=shards, replicas=replicas)
    if retention_days is None:
        return SetupBodies(template_name(prefix), template)
    return SetupBodies(template_name(prefix), template, policy_name(prefix), build_ilm_policy(retention_days))


def install(client: Any, bodies: SetupBodies) -> None:
    """Put the ILM policy (first: the template names it) and the template with an ``Elasticsearch`` client.

    Both calls are idempotent (PUT replaces). Existing indices keep their mapping; the template
    applies from the next daily index on.
    """
    if bodies.policy is not None and bodies.policy_name is not None:
        client.ilm.put_lifecycle(name=bodies.policy_name, body=bodies.policy)
    client.indices.put_index_template(name=bodies.template_name, body=bodies.template)
