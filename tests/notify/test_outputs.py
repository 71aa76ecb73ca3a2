"""Each output against a real receiver on loopback: payloads field by field, and the faults.

Webhook and Slack POST to :class:`HttpReceiver` (a real HTTP server); e-mail goes to aiosmtpd
(plain, STARTTLS with AUTH, implicit TLS, on a certificate openssl makes for the test).
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ingest.notify.config import EmailOutput, SlackOutput, WebhookOutput
from ingest.notify.message import Alert, Facts, Links
from ingest.notify.outputs import SendError
from ingest.notify.outputs.email import EmailChannel
from ingest.notify.outputs.slack import SlackChannel
from ingest.notify.outputs.webhook import WebhookChannel
from tests.notify.conftest import sample_alerts
from tests.notify.receivers import HttpReceiver, SmtpReceiver, down_url
from tests.redis_server import free_port

KIBANA = "https://kibana.example.org"
LINKS = Links.build(KIBANA)
TOKEN = "s3cret-token-0123456789"
PASSWORD = "smtp-pass-9876543210"


def brute_force() -> Alert:
    [alert] = sample_alerts()
    return alert


def facts(alert: Alert) -> Facts:
    return Facts.of(alert, LINKS)


def webhook(url: str, **kw: Any) -> WebhookChannel:
    return WebhookChannel("siem", WebhookOutput(url=url, headers={"Authorization": f"Bearer {TOKEN}"}, **kw), LINKS)


def slack(url: str, **kw: Any) -> SlackChannel:
    return SlackChannel("ops", SlackOutput(url=url, **kw), LINKS)


DOC_LINK = ("https://kibana.example.org/app/discover#/doc/audit-ingest-alerts/audit-alerts-2024.05.17"
            "?id=brute_force-900f02a6d9317b23b8039eed")
AROUND_LINK = ("https://kibana.example.org/app/discover#/view/audit-search-alerts"
               "?_g=(time:(from:'2024-05-17T15:00:40.000000Z',to:'2024-05-17T17:00:40.000000Z'))")


# -- webhook ---------------------------------------------------------------------------------------

def test_webhook_posts_the_alert_document(receiver: HttpReceiver) -> None:
    alert = brute_force()
    channel = webhook(receiver.url + f"/hooks/{TOKEN}")
    assert channel.send(alert, facts(alert)) == "HTTP 200"
    [request] = receiver.requests
    assert request.path == f"/hooks/{TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["idempotency-key"] == alert.id == "brute_force-900f02a6d9317b23b8039eed"
    assert request.headers["x-audit-ingest-alert-id"] == alert.id
    body = request.json()
    assert body["_id"] == alert.id
    assert body["_index"] == "audit-alerts-2024.05.17"
    assert body["_kibana_url"] == DOC_LINK
    assert body["rule"] == {"name": "brute_force"}
    assert body["event"]["severity"] == 73 and body["event"]["kind"] == "alert"
    assert body["event"]["reason"].startswith("12 authentication failures from 89.160.20.128")
    assert body["source"]["ip"] == "89.160.20.128" and body["source"]["geo"]["country_iso_code"] == "SE"
    assert body["alert"]["count"] == 12 and body["alert"]["hosts"] == ["a3", "web-2"]
    assert {k: v for k, v in body.items() if not k.startswith("_")} == alert.doc  # the document as indexed


def test_webhook_without_kibana_has_no_link(receiver: HttpReceiver) -> None:
    alert = brute_force()
    channel = WebhookChannel("siem", WebhookOutput(url=receiver.url), Links.build(None))
    channel.send(alert, Facts.of(alert, channel.links))
    assert "_kibana_url" not in receiver.requests[0].json()


# -- slack -----------------------------------------------------------------------------------------

def fields_of(block: dict[str, Any]) -> dict[str, str]:
    out = {}
    for f in block["fields"]:
        assert f["type"] == "mrkdwn"
        label, _, value = f["text"].partition("\n")
        out[label] = value
    return out


def test_slack_message_blocks_field_by_field(receiver: HttpReceiver) -> None:
    alert = brute_force()
    assert slack(receiver.url + "/services/T0/B0/x").send(alert, facts(alert)) == "HTTP 200 ok"
    payload = receiver.requests[0].json()
    assert set(payload) == {"text", "blocks"}
    assert payload["text"].startswith("[audit] brute_force (severity 73): 12 authentication failures from "
                                      "89.160.20.128 within 60 s on 2 host(s)")
    assert payload["text"].endswith(DOC_LINK)
    header, reason, facts_block, links, context = payload["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "Alert: brute_force (severity 73)",
                                                 "emoji": False}}
    assert reason["type"] == "section" and reason["text"]["type"] == "mrkdwn"
    assert reason["text"]["text"] == alert.doc["event"]["reason"]
    assert facts_block["type"] == "section"
    assert fields_of(facts_block) == {
        "*User*": "`admin, deploy, ftp, git, guest, oracle, pi, postgres, root, test and 2 more`",
        "*Source IP*": "`89.160.20.128`",
        "*Country*": "`Sweden (SE)`",
        "*Host*": "`a3, web-2`",
        "*Count*": "12",
        "*Time*": "2024-05-17T16:00:40.000000Z",
        "*Window*": "2024-05-17T16:00:00.000000Z – 2024-05-17T16:01:00.000000Z",
    }
    assert links == {"type": "section", "text": {"type": "mrkdwn", "text": f"<{DOC_LINK}|Open the alert in Kibana> · "
                                                                           f"<{AROUND_LINK}|Alerts around it>"}}
    assert context["type"] == "context"
    assert context["elements"] == [{"type": "mrkdwn", "text": "audit-ingest · alert `brute_force-900f02a6d9317b23b80"
                                                              "39eed` · 2024-05-17T16:00:40.000000Z"}]


def test_slack_new_country_has_user_and_single_host(receiver: HttpReceiver) -> None:
    alert = sample_alerts("auth.log")[0]
    slack(receiver.url).send(alert, facts(alert))
    fields = fields_of(receiver.requests[0].json()["blocks"][2])
    assert fields["*User*"] == "`civis-ec2`" and fields["*Host*"] == "`a3`"
    assert fields["*Country*"] == "`United States (US)`" and fields["*Source IP*"] == "`216.160.83.56`"
    assert "*Count*" not in fields


def test_slack_escapes_what_an_outsider_chose(receiver: HttpReceiver) -> None:
    alert = brute_force()
    alert.doc["alert"]["users"] = ["<!channel>", "a`b", "x&y", "<http://evil.example|click me>", "line\nbreak"]
    alert.doc["alert"]["hosts"] = ["<@U024BE7LH>"]
    slack(receiver.url).send(alert, facts(alert))
    body = receiver.requests[0].body.decode()
    for raw in ("<!channel>", "<@U024BE7LH>", "<http://evil.example"):
        assert raw not in body
    fields = fields_of(receiver.requests[0].json()["blocks"][2])
    assert fields["*User*"] == "`&lt;!channel&gt;, a'b, x&amp;y, &lt;http://evil.example|click me&gt;, line break`"
    assert fields["*Host*"] == "`&lt;@U024BE7LH&gt;`"


# -- faults (HTTP) ---------------------------------------------------------------------------------

def send_error(channel: Any, alert: Alert | None = None) -> SendError:
    alert = alert or brute_force()
    with pytest.raises(SendError) as info:
        channel.send(alert, facts(alert))
    return info.value


def test_receiver_down_is_retried_later() -> None:
    e = send_error(slack(down_url()))
    assert e.code == "connection" and not e.permanent
    assert "refused" in e.reason.lower()


def test_500_is_retried_and_the_answer_quoted_without_secrets(receiver: HttpReceiver) -> None:
    receiver.answer(500, f"internal error for token {TOKEN}".encode())
    e = send_error(webhook(receiver.url + f"/x/{TOKEN}"))
    assert e.code == "http_500" and not e.permanent
    assert e.reason == "HTTP 500 Internal Server Error: internal error for token ***"


def test_4xx_is_permanent(receiver: HttpReceiver) -> None:
    receiver.answer(404, b"no_service")
    e = send_error(slack(receiver.url))
    assert (e.code, e.permanent) == ("http_404", True)
    assert e.reason == "HTTP 404 Not Found: no_service"


def test_429_is_retried_after_what_the_receiver_asks(receiver: HttpReceiver) -> None:
    receiver.answer(429, b"rate_limited", headers={"Retry-After": "7"})
    e = send_error(slack(receiver.url))
    assert (e.code, e.permanent, e.retry_after) == ("http_429", False, 7.0)


def test_redirects_are_not_followed(receiver: HttpReceiver) -> None:
    receiver.answer(302, b"", headers={"Location": receiver.url + "/elsewhere"})
    e = send_error(webhook(receiver.url))
    assert e.code == "http_302" and e.permanent and "redirects are not followed" in e.reason
    assert len(receiver.requests) == 1


def test_slow_answer_times_out(receiver: HttpReceiver) -> None:
    receiver.delay = 3.0
    started = time.monotonic()
    e = send_error(slack(receiver.url, timeout=timedelta(milliseconds=400)))
    assert e.code == "timeout" and not e.permanent
    assert time.monotonic() - started < 2.5
    assert len(receiver.requests) == 1  # it did arrive: the answer was late


# -- e-mail ----------------------------------------------------------------------------------------

def email(server: SmtpReceiver, security: str, **kw: Any) -> EmailChannel:
    cfg: dict[str, Any] = {"host": "127.0.0.1", "port": server.port, "security": security,
                           "from_address": "audit@example.org", "to": ["oncall@example.org", "sec@example.org"]}
    cfg.update(kw)
    return EmailChannel("oncall", EmailOutput.model_validate(cfg), LINKS)


def body_facts(text: str) -> dict[str, str]:
    """The ``Label:   value`` lines of a mail body."""
    text = text.replace("\r\n", "\n")
    return {m[1]: m[2] for m in re.finditer(r"^([A-Z][A-Za-z ]{1,20}):\s+(\S.*)$", text, re.M)}


def test_email_starttls_auth_plain_text_with_the_same_facts(smtp_servers: list[SmtpReceiver],
                                                            certificate: tuple[Path, Path]) -> None:
    server = SmtpReceiver(tls="starttls", cert=certificate, user="alerts", password=PASSWORD).start()
    smtp_servers.append(server)
    alert = brute_force()
    channel = email(server, "starttls", username="alerts", password=PASSWORD, ca_certs=certificate[0])
    assert channel.send(alert, facts(alert)) == "250 sent to 2 recipient(s)"
    [mail] = server.mails
    assert server.auth_attempts == [("alerts", PASSWORD)]
    assert mail.mail_from == "audit@example.org" and mail.rcpt_tos == ["oncall@example.org", "sec@example.org"]
    msg = mail.message
    assert msg["Subject"].startswith("[audit] brute_force from 89.160.20.128 (SE) on a3, web-2 (users admin, ")
    assert msg["From"] == "audit@example.org" and msg["To"] == "oncall@example.org, sec@example.org"
    assert msg["Message-ID"] == "<brute_force-900f02a6d9317b23b8039eed.oncall@example.org>"
    assert msg["X-Audit-Ingest-Alert-Id"] == alert.id
    assert msg.get_content_type() == "text/plain"
    text = msg.get_content().replace("\r\n", "\n")
    assert text.startswith("brute_force alert (severity 73)\n\n12 authentication failures from 89.160.20.128")
    got = body_facts(text)
    f = facts(alert)
    assert got == {**dict(f.rows()), "Alert id": alert.id, "In Kibana": DOC_LINK, "All alerts": AROUND_LINK}
    assert got["Country"] == "Sweden (SE)" and got["Count"] == "12" and got["Host"] == "a3, web-2"
    assert PASSWORD not in mail.raw.decode()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # aiosmtpd does not see implicit TLS
def test_email_implicit_tls(smtp_servers: list[SmtpReceiver], certificate: tuple[Path, Path]) -> None:
    server = SmtpReceiver(tls="tls", cert=certificate, user="alerts", password=PASSWORD).start()
    smtp_servers.append(server)
    alert = sample_alerts("auth.log")[0]
    email(server, "tls", username="alerts", password=PASSWORD, ca_certs=certificate[0]).send(alert, facts(alert))
    [mail] = server.mails
    assert mail.message["Subject"] == "[audit] new_country from 216.160.83.56 (US) on a3 (user civis-ec2)"
    assert body_facts(mail.message.get_content())["User"] == "civis-ec2"


def test_email_plain_relay_without_auth(smtp_servers: list[SmtpReceiver]) -> None:
    server = SmtpReceiver().start()
    smtp_servers.append(server)
    alert = brute_force()
    email(server, "none").send(alert, facts(alert))
    assert len(server.mails) == 1


def test_smtp_auth_refused_is_permanent_and_keeps_the_password_out(smtp_servers: list[SmtpReceiver],
                                                                   certificate: tuple[Path, Path]) -> None:
    server = SmtpReceiver(tls="starttls", cert=certificate, user="alerts", password="the-right-one").start()
    smtp_servers.append(server)
    e = send_error(email(server, "starttls", username="alerts", password=PASSWORD, ca_certs=certificate[0]))
    assert (e.code, e.permanent) == ("smtp_auth_535", True)
    assert e.reason.startswith("SMTP authentication refused: 535")
    assert PASSWORD not in e.reason
    assert server.mails == []


def test_smtp_certificate_not_trusted_is_a_tls_failure(smtp_servers: list[SmtpReceiver],
                                                       certificate: tuple[Path, Path]) -> None:
    server = SmtpReceiver(tls="starttls", cert=certificate).start()
    smtp_servers.append(server)
    e = send_error(email(server, "starttls"))  # the system CAs do not know the test certificate
    assert e.code == "tls" and "certificate verify failed" in e.reason


def test_smtp_without_starttls_is_permanent(smtp_servers: list[SmtpReceiver]) -> None:
    server = SmtpReceiver().start()  # offers no STARTTLS
    smtp_servers.append(server)
    e = send_error(email(server, "starttls"))
    assert (e.code, e.permanent) == ("smtp_unsupported", True)


def test_smtp_server_down_is_retried_later() -> None:
    e = send_error(EmailChannel("oncall", EmailOutput(host="127.0.0.1", port=free_port(), security="none",
                                                      from_address="a@example.org", to=["b@example.org"]), LINKS))
    assert e.code == "connection" and not e.permanent
