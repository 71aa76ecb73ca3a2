"""``notify.*`` settings from TOML and the environment, their checks, and ``audit-ingest notify-test``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ingest.cli import main
from ingest.errors import ConfigError
from ingest.notify.config import EmailOutput, SlackOutput, WebhookOutput
from ingest.settings import load_settings
from tests.notify.receivers import HttpReceiver, SmtpReceiver

HOOK = "https://hooks.slack.com/services/T000/B000/XXXXsecretXXXX1234"


def test_outputs_from_toml_with_the_secret_from_the_environment(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "audit.toml"
    config.write_text('''
[notify]
kibana_url = "https://kibana.example.org"

[notify.outputs.oncall]
type = "email"
host = "smtp.example.org"
username = "alerts"
from_address = "audit@example.org"
to = ["oncall@example.org"]
min_severity = 73

[notify.outputs.siem]
type = "webhook"
url = "https://siem.example.org/ingest"
rules = ["brute_force", "outside_allowed_networks"]
headers = { "X-Source" = "audit-ingest" }
''')
    monkeypatch.setenv("AUDIT_INGEST_NOTIFY__OUTPUTS__ONCALL__PASSWORD", "pw-from-env-123")
    monkeypatch.setenv("AUDIT_INGEST_NOTIFY__OUTPUTS__SIEM__HEADERS__AUTHORIZATION", "Bearer tok-from-env-456")
    n = load_settings(config).notify
    oncall, siem = n.outputs["oncall"], n.outputs["siem"]
    assert isinstance(oncall, EmailOutput) and isinstance(siem, WebhookOutput)
    assert oncall.password is not None and oncall.password.get_secret_value() == "pw-from-env-123"
    assert oncall.smtp_port() == 587 and oncall.security == "starttls" and oncall.min_severity == 73
    assert {k: v.get_secret_value() for k, v in siem.headers.items()} == {"X-Source": "audit-ingest",
                                                                          "authorization": "Bearer tok-from-env-456"}
    assert siem.rules == ["brute_force", "outside_allowed_networks"]
    assert "pw-from-env-123" not in repr(n) and "tok-from-env-456" not in repr(n)


def test_an_output_from_the_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_INGEST_NOTIFY__OUTPUTS__SLACK__URL", HOOK)  # named slack: type slack
    monkeypatch.setenv("AUDIT_INGEST_NOTIFY__OUTPUTS__SLACK__RULES", "brute_force,new_country")
    monkeypatch.setenv("AUDIT_INGEST_NOTIFY__OUTPUTS__SLACK__MIN_SEVERITY", "47")
    monkeypatch.setenv("AUDIT_INGEST_NOTIFY__OUTPUTS__EMAIL__HOST", "")  # empty (compose default): ignored
    slack = load_settings().notify.outputs
    assert list(slack) == ["slack"]
    out = slack["slack"]
    assert isinstance(out, SlackOutput) and out.rules == ["brute_force", "new_country"] and out.min_severity == 47
    assert out.target() == "https://hooks.slack.com/…"


@pytest.mark.parametrize(("notify", "key", "message"), [
    ({"outputs": {"ops": {"type": "slack"}}}, "notify.outputs.ops.slack.url", "Field required"),
    ({"outputs": {"ops": {"type": "slack", "url": HOOK, "colour": "red"}}}, "notify.outputs.ops.slack.colour",
     "Extra inputs"),
    ({"outputs": {"ops": {"type": "pager", "url": HOOK}}}, "notify.outputs.ops", "does not match any of the expected"),
    ({"outputs": {"ops": {"type": "slack", "url": "ftp://x/y"}}}, "notify.outputs.ops.slack.url", "http:// or https://"),
    ({"outputs": {"Ops Team": {"type": "slack", "url": HOOK}}}, "notify.outputs", "lowercase letters"),
    ({"outputs": {"ops": {"type": "slack", "url": HOOK, "timeout": 40}}}, "notify", "at least twice the timeout"),
    ({"outputs": {"m": {"type": "email", "host": "h", "security": "none", "username": "u", "password": "p",
                        "from_address": "a@b.c", "to": ["d@e.f"]}}}, "notify.outputs.m.email", "never sent without TLS"),
    ({"outputs": {"m": {"type": "email", "host": "h", "from_address": "a@b.c", "to": ["d@e.f, g@h.i"]}}},
     "notify.outputs.m.email.to", "not one e-mail address"),
    ({"outputs": {"ops": {"type": "slack", "url": HOOK, "min_severity": 101}}}, "notify.outputs.ops.slack.min_severity",
     "less than or equal to 100"),
])
def test_bad_settings_name_the_key(notify: dict[str, object], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"notify": notify})
    assert f"key {key}" in str(info.value) and message in str(info.value)


def test_takes_by_rule_and_severity() -> None:
    out = SlackOutput(url=HOOK, rules=["brute_force"], min_severity=50)  # type: ignore[arg-type]
    assert out.takes("brute_force", 73) and not out.takes("brute_force", 47) and not out.takes("new_country", 99)
    assert not out.takes("brute_force", None) and not out.takes("brute_force", True)
    assert SlackOutput(url=HOOK).takes("anything", None)  # type: ignore[arg-type]


# -- notify-test -----------------------------------------------------------------------------------

def test_notify_test_sends_a_sample_to_each_output(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                   receiver: HttpReceiver, smtp_servers: list[SmtpReceiver]) -> None:
    smtp = SmtpReceiver().start()
    smtp_servers.append(smtp)
    token = "tok3n-in-path-0042"
    monkeypatch.setenv("AUDIT_INGEST_NOTIFY__OUTPUTS__SLACK__URL", f"{receiver.url}/services/{token}")
    monkeypatch.setenv("AUDIT_INGEST_NOTIFY__OUTPUTS__MAIL__TYPE", "email")
    monkeypatch.setenv("AUDIT_INGEST_NOTIFY__OUTPUTS__MAIL__HOST", "127.0.0.1")
    monkeypatch.setenv("AUDIT_INGEST_NOTIFY__OUTPUTS__MAIL__PORT", str(smtp.port))
    monkeypatch.setenv("AUDIT_INGEST_NOTIFY__OUTPUTS__MAIL__SECURITY", "none")
    monkeypatch.setenv("AUDIT_INGEST_NOTIFY__OUTPUTS__MAIL__FROM_ADDRESS", "audit@example.org")
    monkeypatch.setenv("AUDIT_INGEST_NOTIFY__OUTPUTS__MAIL__TO", "oncall@example.org")
    monkeypatch.setenv("AUDIT_INGEST_KIBANA__URL", "https://kibana.example.org")
    assert main(["notify-test"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"ok     slack (slack http://127.0.0.1:{receiver.port}/…): HTTP 200 ok in ")
    assert out[1].startswith(f"ok     mail (email smtp://127.0.0.1:{smtp.port} (none)): 250 sent to 1 recipient(s) in ")
    payload = receiver.requests[0].json()
    assert payload["blocks"][0]["text"]["text"] == "Alert: brute_force (severity 73)"
    assert payload["blocks"][1]["text"]["text"].startswith("TEST from audit-ingest notify-test")
    [mail] = smtp.mails
    assert mail.message["Subject"].startswith("[audit] brute_force from 192.0.2.10 (SE)")
    assert "https://kibana.example.org/app/discover#/doc/audit-ingest-alerts/audit-alerts-" in mail.message.get_content()
    assert token not in "\n".join(out)


def test_notify_test_says_what_failed(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                      receiver: HttpReceiver) -> None:
    token = "tok3n-in-path-0042"
    receiver.answer(403, f"invalid_token {token}".encode())
    monkeypatch.setenv("AUDIT_INGEST_NOTIFY__OUTPUTS__SLACK__URL", f"{receiver.url}/services/{token}")
    assert main(["notify-test", "--output", "slack"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"FAILED slack (slack http://127.0.0.1:{receiver.port}/…): HTTP 403 Forbidden: "
                          "invalid_token *** [http_403, permanent] in ")
    assert token not in out


def test_notify_test_without_outputs_is_a_config_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    assert main(["notify-test"]) == 2
    assert "no enabled notify output" in caplog.text
    assert main(["notify-test", "--output", "nope"]) == 2


# -- docker-compose --------------------------------------------------------------------------------

def compose_worker_env(values: dict[str, str]) -> dict[str, str]:
    """The worker's AUDIT_INGEST_NOTIFY__* environment as docker compose would pass it."""
    import re

    import yaml

    from tests.test_compose import COMPOSE, env_example, service_env

    env = {**env_example(), **values}
    worker = service_env(yaml.safe_load(COMPOSE.read_text())["services"]["worker"])

    def fill(text: str) -> str:
        return re.sub(r"\$\{([A-Z_0-9]+)(?::-)?\}", lambda m: env.get(m[1], ""), text)

    return {k: fill(v) for k, v in worker.items() if k.startswith("AUDIT_INGEST_NOTIFY__")}


def test_compose_with_env_example_as_it_is_has_no_output(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in compose_worker_env({}).items():
        monkeypatch.setenv(key, value)
    n = load_settings().notify
    assert n.outputs == {} and n.kibana_url == "http://localhost:5601"


def test_compose_outputs_from_env_values(monkeypatch: pytest.MonkeyPatch) -> None:
    env = compose_worker_env({
        "NOTIFY_SLACK_WEBHOOK_URL": HOOK, "NOTIFY_SLACK_RULES": "brute_force,new_country",
        "NOTIFY_WEBHOOK_URL": "https://siem.example.org/in", "NOTIFY_WEBHOOK_AUTHORIZATION": "Bearer abc12345678",
        "NOTIFY_SMTP_HOST": "smtp.example.org", "NOTIFY_SMTP_USERNAME": "alerts", "NOTIFY_SMTP_PASSWORD": "pw123456789",
        "NOTIFY_EMAIL_FROM": "audit@example.org", "NOTIFY_EMAIL_TO": "a@example.org,b@example.org",
        "NOTIFY_EMAIL_MIN_SEVERITY": "73"})
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    outputs = load_settings().notify.outputs
    slack, webhook, mail = outputs["slack"], outputs["webhook"], outputs["email"]
    assert isinstance(slack, SlackOutput) and slack.rules == ["brute_force", "new_country"]
    assert isinstance(webhook, WebhookOutput) and webhook.headers["authorization"].get_secret_value() == "Bearer abc12345678"
    assert isinstance(mail, EmailOutput) and mail.to == ["a@example.org", "b@example.org"] and mail.min_severity == 73
    assert mail.security == "starttls" and mail.smtp_port() == 587
