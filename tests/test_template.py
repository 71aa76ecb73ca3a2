"""The index template and ILM policy: types of the fields the pipeline writes, legacy aliases, retention."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ingest.setup import template as t


def _props_at(mapping: dict[str, Any], path: str) -> dict[str, Any]:
    node: dict[str, Any] = {"properties": mapping["properties"]}
    for part in path.split("."):
        node = node["properties"][part]
    return node


@pytest.fixture
def fields() -> dict[str, str]:
    return t.mapped_fields()


def test_template_covers_prefix_and_alerts() -> None:
    body = t.build_index_template()
    assert body["index_patterns"] == ["audit-*"]
    # audit-alerts-YYYY.MM.DD starts with the same prefix, so the one template covers alerts too
    assert any("audit-alerts-2024.05.17".startswith(p.rstrip("*")) for p in body["index_patterns"])
    assert body["priority"] > 100
    assert set(body) == {"index_patterns", "priority", "_meta", "template"}
    assert "lifecycle" not in json.dumps(body["template"]["settings"])


def test_custom_prefix_names_everything() -> None:
    bodies = t.build_setup("corp-audit-", retention_days=7)
    assert bodies.template["index_patterns"] == ["corp-audit-*"]
    assert bodies.template_name == "corp-audit-ingest"
    assert bodies.policy_name == "corp-audit-retention"
    assert bodies.template["template"]["settings"]["index.lifecycle.name"] == "corp-audit-retention"


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("@timestamp", "date"),
        ("event.start", "date"),
        ("event.end", "date"),
        ("event.duration", "long"),
        ("source.ip", "ip"),
        ("related.ip", "ip"),
        ("openvpn.virtual_ip", "ip"),
        ("system.auth.ssh.dropped_ip", "ip"),
        ("source.geo.location", "geo_point"),
        ("source.port", "long"),
        ("source.as.number", "long"),
        ("process.pid", "long"),
        ("process.exit_code", "long"),
        ("auditd.log.sequence", "long"),
        ("session.duration_s", "double"),  # float (32 bits) would turn 457.591842 into 457.59183
        ("session.duration_min", "double"),
        ("user.name", "keyword"),
        ("host.hostname", "keyword"),
        ("host.name", "keyword"),
        ("system.auth.ssh.key.owner", "keyword"),
        ("process.command_line", "keyword"),
        ("message", "match_only_text"),
        ("type", "keyword"),
        ("fields.log_type", "keyword"),
        ("rule.name", "keyword"),
        ("event.severity", "long"),
    ],
)
def test_field_types(fields: dict[str, str], path: str, kind: str) -> None:
    assert fields.get(path) == kind, f"{path}: {fields.get(path)}"


def test_host_is_an_object() -> None:
    host = _props_at(t.mappings(), "host")
    assert "type" not in host or host["type"] == "object"
    assert {"name", "hostname"} <= set(host["properties"])


def test_every_keyword_has_ignore_above() -> None:
    def walk(props: dict[str, Any], prefix: str) -> None:
        for name, spec in props.items():
            if "properties" in spec:
                walk(spec["properties"], f"{prefix}{name}.")
            elif spec.get("type") == "keyword":
                assert spec.get("ignore_above", 0) >= 256, f"{prefix}{name}"

    walk(t.mappings()["properties"], "")


@pytest.mark.parametrize(
    ("alias", "target"),
    [
        ("system.auth.user", "user.name"),
        ("system.auth.ssh.ip", "source.ip"),
        ("system.auth.ssh.port", "source.port"),
        ("system.auth.hostname", "host.hostname"),
        ("system.auth.pid", "process.pid"),
        ("system.auth.program", "process.name"),
        ("vpnuser", "user.name"),
        ("vpnhost", "source.ip"),
        ("vpnport", "source.port"),
        ("command", "process.command_line"),
        ("command_exit_code", "process.exit_code"),
        ("key_name", "system.auth.ssh.key.owner"),
        ("geoip.location", "source.geo.location"),
    ],
)
def test_legacy_names_are_aliases(alias: str, target: str) -> None:
    node = _props_at(t.mappings(), alias)
    assert node == {"type": "alias", "path": target}


def test_alias_rules_hold_for_every_alias(fields: dict[str, str]) -> None:
    """Elasticsearch's own rules: the target is a concrete field; an alias is a leaf, not an object path."""
    for alias, target in t.LEGACY_ALIASES.items():
        assert fields.get(alias) == "alias", alias
        assert fields.get(target) not in (None, "alias", "object"), f"{alias} -> {target}"
        assert not any(f.startswith(alias + ".") for f in fields), f"{alias} also holds fields"
    # `user` and `group` are ECS objects: the seed's top-level `user`/`group` cannot be aliases
    assert "user" not in fields and "group" not in fields


def test_alias_to_missing_target_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(t.LEGACY_ALIASES, "vpnbytes", "openvpn.bytes_received")
    with pytest.raises(ValueError, match="concrete field"):
        t.mappings()


def test_field_under_a_leaf_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(t.FIELDS, "source.ip.version", {"type": "keyword"})
    with pytest.raises(ValueError, match="not an object"):
        t.mappings()


def test_dynamic_strings_are_keywords() -> None:
    m = t.mappings()
    assert m["date_detection"] is False
    by_type = {next(iter(d.values()))["match_mapping_type"]: next(iter(d.values()))["mapping"] for d in m["dynamic_templates"]}
    assert by_type["string"]["type"] == "keyword" and by_type["string"]["ignore_above"] > 0
    assert by_type["long"] == {"type": "long"}
    assert by_type["double"] == {"type": "float"}


def test_retention_policy_and_setting() -> None:
    bodies = t.build_setup(retention_days=90)
    assert bodies.policy is not None
    phases = bodies.policy["policy"]["phases"]
    assert phases["delete"] == {"min_age": "90d", "actions": {"delete": {}}}
    assert bodies.template["template"]["settings"]["index.lifecycle.name"] == bodies.policy_name


def test_no_retention_no_policy() -> None:
    bodies = t.build_setup()
    assert bodies.policy is None and bodies.policy_name is None
    assert "index.lifecycle.name" not in bodies.template["template"]["settings"]


@pytest.mark.parametrize("days", [0, -3])
def test_bad_retention_refused(days: int) -> None:
    with pytest.raises(ValueError):
        t.build_setup(retention_days=days)


def test_replicas_only_when_asked() -> None:
    assert "index.number_of_replicas" not in t.build_index_template()["template"]["settings"]
    assert t.build_index_template(replicas=0)["template"]["settings"]["index.number_of_replicas"] == 0


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.ilm = self
        self.indices = self

    def put_lifecycle(self, **kw: Any) -> None:
        self.calls.append(("ilm", kw))

    def put_index_template(self, **kw: Any) -> None:
        self.calls.append(("template", kw))


def test_install_puts_policy_before_template() -> None:
    rec = _Recorder()
    t.install(rec, t.build_setup(retention_days=30))
    assert [c[0] for c in rec.calls] == ["ilm", "template"]
    assert rec.calls[0][1]["name"] == "audit-retention"
    assert rec.calls[1][1]["name"] == "audit-ingest"
    assert rec.calls[1][1]["body"]["index_patterns"] == ["audit-*"]


def test_install_without_retention_puts_only_template() -> None:
    rec = _Recorder()
    t.install(rec, t.build_setup())
    assert [c[0] for c in rec.calls] == ["template"]


def test_bodies_are_json() -> None:
    bodies = t.build_setup(retention_days=30)
    json.loads(json.dumps(bodies.template))
    json.loads(json.dumps(bodies.policy))
