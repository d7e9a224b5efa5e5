"""Tests for casemis.notify: real sends through SmtpHook to a loopback aiosmtpd server."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pandas as pd
import pytest

from casemis.notify import ReportSendError, build_message, parse_recipients, send_report
from casemis.report import (
    SERVICES_ERRORS,
    STUDENTS_DUPLICATES,
    STUDENTS_ERRORS,
    STUDENTS_IMPORTED,
    ReportFiles,
    subject,
    write_report,
)
from tests.smtp_server import SmtpSink, free_port, smtp_sink
from tests.test_report import make_summary

CONN_ID = "smtp_test"
CONN_ENV = "AIRFLOW_CONN_SMTP_TEST"
LOGIN = "casemis-mailer"
PASSWORD = "Pw-9f3kQ-never-in-mail"
RECIPIENTS = ["sped.office@district.example.org", "Data.Team@district.example.org"]
STUDENT_NAME = "Ximena"


@pytest.fixture(autouse=True)
def airflow_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep Airflow's home (logs, config) in a temporary folder, away from ~/airflow."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow_home")))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


@pytest.fixture
def report_files(tmp_path: Path) -> ReportFiles:
    """A real report folder with data rows, an empty CSV and a neutralised formula."""
    attachments = {
        STUDENTS_IMPORTED: pd.DataFrame(
            {
                "OriginalLineNumber": [2],
                "SSID": ["1234567890"],
                "FirstName": [STUDENT_NAME],
                "LastName": ["Núñez"],
                "Birthdate": ["2012-03-04"],
                "Grade": ["05"],
                "StudentID": [1001],
            }
        ),
        STUDENTS_DUPLICATES: pd.DataFrame(columns=["OriginalLineNumber", "SSID"]),
        STUDENTS_ERRORS: pd.DataFrame(
            {"OriginalLineNumber": [9], "Column": ["GRADE"], "Value": ["=2+2"], "Message": ["bad grade"]}
        ),
        SERVICES_ERRORS: pd.DataFrame(columns=["OriginalLineNumber", "Column", "Value", "Message"]),
    }
    return write_report(tmp_path / "report", make_summary(), attachments)


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpSink]:
    """A running SMTP server requiring LOGIN/PASSWORD, wired in as connection smtp_test."""
    with smtp_sink(login=LOGIN, password=PASSWORD) as server:
        monkeypatch.setenv(CONN_ENV, server.airflow_conn_json(from_email="casemis@district.example.org"))
        yield server


def _parts(message: EmailMessage) -> tuple[str, str, dict[str, bytes], dict[str, str]]:
    """Text body, HTML body, attachment bytes by filename and attachment content types."""
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    data = {part.get_filename(): part.get_payload(decode=True) for part in message.iter_attachments()}
    types = {part.get_filename(): part.get_content_type() for part in message.iter_attachments()}
    return text, html, data, types


def test_send_report_delivers_one_message_with_both_bodies_and_csvs(
    sink: SmtpSink, report_files: ReportFiles
) -> None:
    """One real SMTP delivery to two recipients, authenticated, with text, HTML and all CSVs."""
    sent = send_report(make_summary(), report_files, recipients=RECIPIENTS, smtp_conn_id=CONN_ID)

    assert sent == RECIPIENTS
    assert len(sink.messages) == 1
    assert sink.envelope_recipients == [RECIPIENTS]
    assert sink.auth_attempts == [(LOGIN, True)], "the hook logged in with the connection's login"
    message = sink.messages[0]
    assert message["Subject"] == subject(make_summary())
    assert message["From"] == "casemis@district.example.org"
    assert message["To"] == ", ".join(RECIPIENTS)
    assert message.get_content_type() == "multipart/mixed"
    text, html, data, types = _parts(message)
    # SMTP carries text with CRLF line ends; compare the content, not the line-end style.
    assert text.replace("\r\n", "\n") == report_files.text_path.read_text(encoding="utf-8")
    assert html.replace("\r\n", "\n") == report_files.html_path.read_text(encoding="utf-8")
    assert data == {path.name: path.read_bytes() for path in report_files.attachment_paths}
    assert set(types.values()) == {"text/csv"}
    assert b"'=2+2" in data[STUDENTS_ERRORS], "the mailed CSV is the neutralised file"


def test_password_appears_nowhere_in_the_received_message(sink: SmtpSink, report_files: ReportFiles) -> None:
    """Neither the raw message nor any decoded part contains the connection password."""
    send_report(make_summary(), report_files, recipients=RECIPIENTS[:1], smtp_conn_id=CONN_ID)

    received = sink.received[0]
    assert PASSWORD.encode() not in received.raw
    assert LOGIN.encode() not in received.raw
    for part in received.message.walk():
        payload = part.get_payload(decode=True)
        if payload is not None:
            assert PASSWORD.encode() not in payload
    assert all(PASSWORD not in str(value) for value in received.message.values())


def test_sender_defaults_to_airflow_localhost(
    monkeypatch: pytest.MonkeyPatch, report_files: ReportFiles
) -> None:
    """Without a from_email extra the message comes from airflow@localhost."""
    with smtp_sink() as server:
        monkeypatch.setenv(CONN_ENV, server.airflow_conn_json(from_email=None))
        send_report(make_summary(), report_files, recipients=RECIPIENTS[:1], smtp_conn_id=CONN_ID)
        assert server.messages[0]["From"] == "airflow@localhost"
        assert server.received[0].mail_from == "airflow@localhost"


def test_refused_recipient_is_left_out_of_the_result(
    monkeypatch: pytest.MonkeyPatch, report_files: ReportFiles
) -> None:
    """When the server refuses one mailbox the others still get the report, and only they are returned."""
    with smtp_sink(refuse={RECIPIENTS[1]}) as server:
        monkeypatch.setenv(CONN_ENV, server.airflow_conn_json())
        sent = send_report(make_summary(), report_files, recipients=RECIPIENTS, smtp_conn_id=CONN_ID)
        assert sent == RECIPIENTS[:1]
        assert server.envelope_recipients == [RECIPIENTS[:1]]


def test_unreachable_server_raises_clear_error_without_password(
    monkeypatch: pytest.MonkeyPatch, report_files: ReportFiles
) -> None:
    """Nothing listens on the port: the error names conn id and host:port, never the password."""
    port = free_port()
    monkeypatch.setenv(
        CONN_ENV,
        json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": port,
                "login": LOGIN,
                "password": PASSWORD,
                "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 5},
            }
        ),
    )
    with pytest.raises(ReportSendError) as caught:
        send_report(make_summary(), report_files, recipients=RECIPIENTS, smtp_conn_id=CONN_ID)

    message = str(caught.value)
    assert f"'{CONN_ID}'" in message
    assert f"127.0.0.1:{port}" in message
    assert "ConnectionRefusedError" in message
    assert PASSWORD not in "".join(traceback.format_exception(caught.value))


def test_wrong_password_raises_clear_error_without_password(
    monkeypatch: pytest.MonkeyPatch, report_files: ReportFiles
) -> None:
    """The server rejects the login: clear error naming the connection, the password redacted."""
    wrong = "Wrong-Pw-7731-secret"
    with smtp_sink(login=LOGIN, password=PASSWORD) as server:
        monkeypatch.setenv(CONN_ENV, server.airflow_conn_json().replace(PASSWORD, wrong))
        with pytest.raises(ReportSendError, match="SMTPAuthenticationError") as caught:
            send_report(make_summary(), report_files, recipients=RECIPIENTS, smtp_conn_id=CONN_ID)
        assert server.auth_attempts, "the server saw the login attempt"
        assert all(attempt == (LOGIN, False) for attempt in server.auth_attempts)
        assert server.messages == []
    text = "".join(traceback.format_exception(caught.value))
    assert wrong not in text
    assert PASSWORD not in text
    assert f"127.0.0.1:{server.port}" in text


def test_missing_connection_is_named(monkeypatch: pytest.MonkeyPatch, report_files: ReportFiles) -> None:
    """An undefined connection id gives an error naming it."""
    monkeypatch.delenv("AIRFLOW_CONN_SMTP_MISSING_XYZ", raising=False)
    with pytest.raises(ReportSendError, match="'smtp_missing_xyz' is not defined"):
        send_report(make_summary(), report_files, recipients=RECIPIENTS, smtp_conn_id="smtp_missing_xyz")


def test_send_without_recipients_is_refused(sink: SmtpSink, report_files: ReportFiles) -> None:
    """No recipients after cleaning means no send at all."""
    with pytest.raises(ValueError, match="No recipients"):
        send_report(make_summary(), report_files, recipients=[" ", ";"], smtp_conn_id=CONN_ID)
    assert sink.messages == []


def test_log_lines_hold_counts_not_people(
    sink: SmtpSink, report_files: ReportFiles, caplog: pytest.LogCaptureFixture
) -> None:
    """The send is logged with counts only: no addresses, no student names."""
    with caplog.at_level(logging.INFO, logger="casemis"):
        send_report(make_summary(), report_files, recipients=RECIPIENTS, smtp_conn_id=CONN_ID)
    logged = "\n".join(record.getMessage() for record in caplog.records if record.name.startswith("casemis"))
    assert "to 2 recipients" in logged
    assert "4 attachments" in logged
    for secret in (*RECIPIENTS, STUDENT_NAME, "1234567890", PASSWORD):
        assert secret not in logged


def test_build_message_structure(report_files: ReportFiles) -> None:
    """multipart/mixed: a text/html alternative first, then one text/csv part per CSV."""
    message = build_message(
        make_summary(dry_run=True), report_files, sender="casemis@district.example.org", recipients=RECIPIENTS
    )
    parts = list(message.iter_parts())
    assert parts[0].get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parts[0].iter_parts()] == ["text/plain", "text/html"]
    assert [p.get_filename() for p in parts[1:]] == [p.name for p in report_files.attachment_paths]
    assert message["Subject"].startswith("[DRY RUN] ")
    assert message["Auto-Submitted"] == "auto-generated"


@pytest.mark.parametrize("sender", ["", "two@x.org, three@x.org", "evil@x.org\r\nBcc: a@b.org", "no-at-sign"])
def test_build_message_rejects_bad_sender(report_files: ReportFiles, sender: str) -> None:
    """A sender that is not one plain address (or tries header injection) is refused."""
    with pytest.raises(ValueError, match="sender"):
        build_message(make_summary(), report_files, sender=sender, recipients=RECIPIENTS)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a@x.org", ["a@x.org"]),
        (" a@x.org ;b@x.org,, ; A@X.ORG ", ["a@x.org", "b@x.org"]),
        (["a@x.org; c@y.example.org", "B@x.org", "b@X.org"], ["a@x.org", "c@y.example.org", "B@x.org"]),
        ("", []),
        ([" ", ";,"], []),
        ("first.last+tag@sub.district.k12.ca.us", ["first.last+tag@sub.district.k12.ca.us"]),
    ],
)
def test_parse_recipients(value: str | list[str], expected: list[str]) -> None:
    """Splits on , and ;, trims, drops empties and case-insensitive duplicates, keeps order."""
    assert parse_recipients(value) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "not-an-address",
        "a@localhost",
        "two words@x.org",
        "a@@x.org",
        "a@x..org",
        "Jane <jane@x.org>",
        "a@x.org\nBcc: evil@x.org",
        "a@-x.org",
    ],
)
def test_parse_recipients_rejects_bad_entries(bad: str) -> None:
    """The ValueError names the offending entry so the office can fix its configuration."""
    with pytest.raises(ValueError, match="Not a valid email address") as caught:
        parse_recipients(f"ok@x.org; {bad}")
    assert repr(bad) in str(caught.value)
