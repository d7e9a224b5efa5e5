"""Mail the CASEMIS completion report through the Airflow smtp provider.

Aeries mails the special-education office after every import; this module does the same
with the report written by :func:`casemis.report.write_report`: a text and an HTML
alternative body (the on-disk report.txt and report.html) plus every CSV attachment.

The smtp provider's ``send_email_smtp`` only sends an HTML body, so the message is built
here as an :class:`email.message.EmailMessage` and handed to the SMTP client the
``SmtpHook`` has connected and logged in (TLS/SSL, credentials and timeouts all come from
the Airflow connection). Airflow is imported only inside :func:`send_report`, so building
and testing messages needs no Airflow.

Log lines carry counts only (attachments, recipients), never student data or addresses.
"""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
from collections.abc import Iterable, Mapping
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from casemis.report import ReportFiles, subject

log = logging.getLogger(__name__)

DEFAULT_SENDER = "airflow@localhost"

_SEPARATORS = re.compile(r"[,;]")
# Deliberately basic: one @, no spaces/quotes/brackets, a dotted domain of plain labels.
_ADDRESS = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


class ReportSendError(RuntimeError):
    """The report could not be sent; the message names the connection, never its password."""


def parse_recipients(value: str | Iterable[str]) -> list[str]:
    """Turn "a@x.org; b@x.org, ..." (or a list of such strings) into a clean address list.

    Entries are split on commas and semicolons, trimmed, empty ones dropped and duplicates
    removed case-insensitively (the first spelling wins, order is kept). Raises ValueError
    naming the first entry that is not a basic ``local@domain.tld`` address.
    """
    chunks = [value] if isinstance(value, str) else list(value)
    seen: set[str] = set()
    result: list[str] = []
    for chunk in chunks:
        if not isinstance(chunk, str):
            raise ValueError(f"Recipient {chunk!r} is not a string")
        for entry in _SEPARATORS.split(chunk):
            address = entry.strip()
            if not address:
                continue
            if not _ADDRESS.match(address) or ".." in address:
                raise ValueError(f"Not a valid email address: {address!r}")
            key = address.lower()
            if key not in seen:
                seen.add(key)
                result.append(address)
    return result


def build_message(
    summary: Mapping[str, Any], files: ReportFiles, *, sender: str, recipients: list[str]
) -> EmailMessage:
    """Build the report email: text + HTML alternatives and every CSV as text/csv attachment.

    The bodies are the report.txt and report.html written with the report, so the email and
    the archived report always say the same thing. Attachments are the CSV files' bytes
    unchanged (base64 encoded), named as on disk.
    """
    addresses = parse_recipients(recipients)
    if not addresses:
        raise ValueError("The report email needs at least one recipient")
    from_address = _check_sender(sender)
    message = EmailMessage()
    message["Subject"] = subject(summary)
    message["From"] = from_address
    message["To"] = ", ".join(addresses)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=from_address.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies
    message.set_content(Path(files.text_path).read_text(encoding="utf-8"))
    message.add_alternative(Path(files.html_path).read_text(encoding="utf-8"), subtype="html")
    for path in files.attachment_paths:
        path = Path(path)
        message.add_attachment(path.read_bytes(), maintype="text", subtype="csv", filename=path.name)
    return message


def send_report(
    summary: Mapping[str, Any], files: ReportFiles, *, recipients: list[str], smtp_conn_id: str
) -> list[str]:
    """Send the report through the Airflow SMTP connection smtp_conn_id; return who got it.

    The sender is the connection's ``from_email`` extra, else ``airflow@localhost``.
    Recipients the server refuses are left out of the returned list (and counted in the
    log); if sending fails altogether a ReportSendError names the connection and its
    host:port, with the password removed from any server text.
    """
    from airflow.providers.common.compat.sdk import AirflowNotFoundException
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    addresses = parse_recipients(recipients)
    if not addresses:
        raise ValueError("No recipients for the CASEMIS report email")
    try:
        connection = SmtpHook.get_connection(smtp_conn_id)
    except AirflowNotFoundException:
        raise ReportSendError(
            f"SMTP connection {smtp_conn_id!r} is not defined (add it in Airflow Connections)"
        ) from None

    sender = str(connection.extra_dejson.get("from_email") or DEFAULT_SENDER)
    message = build_message(summary, files, sender=sender, recipients=addresses)
    where = f"{connection.host or 'localhost'}:{connection.port or 'default port'}"
    try:
        with SmtpHook(smtp_conn_id=smtp_conn_id) as hook:
            # The hook has no public "send this MIME message" call (send_email_smtp builds
            # an HTML-only message), so use the client it connected and authenticated.
            client = hook._smtp_client
            refused = client.send_message(message, from_addr=message["From"], to_addrs=addresses)
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.quit()  # polite close; the message is already delivered
    except Exception as exc:
        detail = _redact(f"{type(exc).__name__}: {exc}", connection.password)
        raise ReportSendError(
            f"Could not send the CASEMIS report through SMTP connection {smtp_conn_id!r} at {where}: {detail}"
        ) from None

    sent = [address for address in addresses if address not in (refused or {})]
    if refused:
        log.warning("SMTP server refused %d of %d report recipients", len(refused), len(addresses))
    log.info(
        "Sent CASEMIS report with %d attachments to %d recipients",
        len(files.attachment_paths),
        len(sent),
    )
    return sent


def _check_sender(sender: str) -> str:
    """Return the trimmed sender address, or raise ValueError if it is not one plain address.

    Looser than recipients: a host-only domain such as the default airflow@localhost is fine.
    """
    address = sender.strip()
    local, at, domain = address.partition("@")
    if not (at and local and domain) or re.search(r"[\s,;<>\"@]", local + domain):
        raise ValueError(f"Not a valid sender address: {sender!r}")
    return address


def _redact(text: str, secret: str | None) -> str:
    """Replace the secret wherever it appears in text (server replies may echo input)."""
    if secret:
        text = text.replace(secret, "***")
    return text
