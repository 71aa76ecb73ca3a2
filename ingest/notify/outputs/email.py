"""email: a plain-text message over SMTP (STARTTLS or TLS from the first byte, optional AUTH).

The body gives the same facts as the Slack message, one per line, and the Kibana links. The
Message-ID is built from the alert id and the output, so the one duplicate a crashed sender may
cause carries the same id (many mail clients show it once).

SMTP answers: 4xx (and a dropped connection, a timeout) mean try again later; 5xx (authentication
refused, sender or recipients refused) are permanent. A message that some recipients took and
others refused counts as sent (sending it again would repeat it to those who took it); the refused
addresses are in the answer, which the sender logs.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ingest.notify.config import EmailOutput
from ingest.notify.message import Alert, Facts, Links, Summary, clean
from ingest.notify.outputs.base import Channel, SendError, ssl_context

_ID_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def alert_text(facts: Facts) -> str:
    lines = [f"{facts.rule} alert" + (f" (severity {facts.severity})" if facts.severity else ""), ""]
    if facts.reason:
        lines += [facts.reason, ""]
    width = max((len(label) for label, _ in facts.rows()), default=0) + 2
    lines += [f"{label + ':':<{width}}{value}" for label, value in facts.rows()]
    lines.append(f"{'Alert id:':<{width}}{facts.id}")
    if facts.link:
        lines += ["", f"In Kibana:   {facts.link}"]
    if facts.alerts_link:
        lines.append(f"All alerts:  {facts.alerts_link}")
    lines += ["", "-- ", "audit-ingest"]
    return "\n".join(lines) + "\n"


def summary_text(summary: Summary) -> str:
    lines = [f"Output {summary.output} sends at most {summary.limit} messages {summary.per}; these "
             f"{len(summary.alerts)} alerts from {summary.start} to {summary.end} were held back.", ""]
    lines += [f"  {rule}: {n}" for rule, n in summary.by_rule]
    lines.append("")
    for f in summary.facts[:100]:
        parts = [f.time, f.rule, f.source(), ", ".join(f.users[:3]), ", ".join(f.hosts[:3])]
        lines.append("  " + "  ".join(p for p in parts if p))
    if len(summary.facts) > 100:
        lines.append(f"  … and {len(summary.facts) - 100} more")
    if summary.link:
        lines += ["", f"In Kibana:  {summary.link}"]
    lines += ["", "-- ", "audit-ingest"]
    return "\n".join(lines) + "\n"


class EmailChannel(Channel):
    kind = "email"

    def __init__(self, name: str, config: EmailOutput, links: Links) -> None:
        super().__init__(name, links)
        self.config = config
        self._context = ssl_context(config.ca_certs, config.verify_certs)

    @property
    def secrets(self) -> list[str]:
        return [self.config.password.get_secret_value()] if self.config.password else []

    def message(self, subject: str, body: str, message_key: str) -> EmailMessage:
        c = self.config
        msg = EmailMessage()
        msg["Subject"] = clean(f"{c.subject_prefix} {subject}".strip(), 200)
        msg["From"] = c.from_address
        msg["To"] = ", ".join(c.to)
        msg["Date"] = formatdate(usegmt=True)
        domain = c.from_address.rpartition("@")[2] or "audit-ingest"
        msg["Message-ID"] = (f"<{_ID_SAFE.sub('-', message_key)}.{self.name}@{_ID_SAFE.sub('-', domain)}>"
                             if message_key else make_msgid(domain=domain))
        msg["X-Audit-Ingest-Alert-Id"] = clean(message_key, 200)
        msg.set_content(body)
        return msg

    def send(self, alert: Alert, facts: Facts) -> str:
        return self._deliver(self.message(facts.headline(), alert_text(facts), alert.id))

    def send_summary(self, summary: Summary) -> str:
        key = "summary-" + (summary.alerts[0].id if summary.alerts else "")
        return self._deliver(self.message(summary.headline(), summary_text(summary), key))

    def _deliver(self, msg: EmailMessage) -> str:
        try:
            return self._smtp(msg)
        except SendError as e:
            e.reason = self.redact(e.reason)
            raise
        except smtplib.SMTPAuthenticationError as e:
            raise self._answer("smtp_auth", "authentication refused", e.smtp_code, e.smtp_error) from None
        except smtplib.SMTPNotSupportedError as e:
            raise SendError("smtp_unsupported", self.redact(f"the server does not offer it: {e}"),
                            permanent=True) from None
        except smtplib.SMTPRecipientsRefused as e:
            codes = [code for code, _ in e.recipients.values()]
            first_code, first_text = next(iter(e.recipients.values()))
            what = "every recipient refused: " + ", ".join(f"{a} ({c})" for a, (c, _) in e.recipients.items())
            err = self._answer("smtp_recipients", what, first_code, first_text)
            err.permanent = all(c >= 500 for c in codes)
            raise err from None
        except smtplib.SMTPSenderRefused as e:
            raise self._answer("smtp_sender", f"sender {e.sender} refused", e.smtp_code, e.smtp_error) from None
        except smtplib.SMTPResponseException as e:
            raise self._answer("smtp_error", "refused", e.smtp_code, e.smtp_error) from None
        except smtplib.SMTPServerDisconnected as e:
            raise SendError("connection", self.redact(f"the server closed the connection: {e}"),
                            permanent=False) from None
        except TimeoutError:
            raise SendError("timeout", f"no answer within {self.config.timeout.total_seconds():g} s",
                            permanent=False) from None
        except ssl.SSLError as e:
            raise SendError("tls", self.redact(f"TLS failed: {e}"), permanent=False) from None
        except (smtplib.SMTPException, OSError) as e:
            raise SendError("connection", self.redact(f"cannot talk to {self.config.host}: {type(e).__name__}: {e}"),
                            permanent=False) from None

    def _answer(self, code: str, what: str, smtp_code: int, smtp_text: bytes | str) -> SendError:
        text = smtp_text.decode("utf-8", "replace") if isinstance(smtp_text, bytes) else str(smtp_text)
        return SendError(f"{code}_{smtp_code}", self.redact(f"SMTP {what}: {smtp_code} {clean(text, 200)}"),
                         permanent=smtp_code >= 500)

    def _smtp(self, msg: EmailMessage) -> str:
        c = self.config
        timeout = c.timeout.total_seconds()
        smtp: smtplib.SMTP
        if c.security == "tls":
            smtp = smtplib.SMTP_SSL(c.host, c.smtp_port(), timeout=timeout, context=self._context)
        else:
            smtp = smtplib.SMTP(c.host, c.smtp_port(), timeout=timeout)
        with smtp:
            smtp.ehlo()
            if c.security == "starttls":
                smtp.starttls(context=self._context)
                smtp.ehlo()
            if c.username and c.password:
                smtp.login(c.username, c.password.get_secret_value())
            refused = smtp.send_message(msg)
        if refused:
            return "250 sent, refused by " + ", ".join(f"{a} ({code})" for a, (code, _) in refused.items())
        return f"250 sent to {len(c.to)} recipient(s)"
