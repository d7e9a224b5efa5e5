"""A real SMTP server on loopback for tests: aiosmtpd's Controller collecting messages.

Usage::

    with smtp_sink(login="mailer", password="s3cret-pw") as sink:
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_TEST", sink.airflow_conn_json())
        ...  # send through SmtpHook(smtp_conn_id="smtp_test")
        assert sink.messages[0]["Subject"] == ...

The server listens on 127.0.0.1 on a free port, speaks plain SMTP (no TLS, so the
connection sets disable_ssl/disable_tls) and, when login/password are given, offers AUTH
(PLAIN, LOGIN) without TLS and accepts only those credentials.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    """One message as the server got it: parsed message, raw bytes and envelope."""

    message: EmailMessage
    raw: bytes
    mail_from: str
    rcpt_tos: list[str]


@dataclass
class SmtpSink:
    """The running server: where it listens and what it received."""

    host: str
    port: int
    login: str | None = None
    password: str | None = None
    received: list[Received] = field(default_factory=list)
    auth_attempts: list[tuple[str, bool]] = field(default_factory=list)  # (login, accepted)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def messages(self) -> list[EmailMessage]:
        """The received messages, parsed with the modern email policy."""
        with self._lock:
            return [item.message for item in self.received]

    @property
    def envelope_recipients(self) -> list[list[str]]:
        """The RCPT TO addresses of each received message."""
        with self._lock:
            return [list(item.rcpt_tos) for item in self.received]

    def airflow_conn_json(self, from_email: str | None = "casemis@example.org", **extra: Any) -> str:
        """JSON for an AIRFLOW_CONN_<ID> env var pointing at this server (plain SMTP).

        Includes the sink's login/password when it has them; from_email=None leaves the
        extra out; extra overrides/extends the connection extras (timeout and retry_limit
        are kept small so failures are fast).
        """
        extras: dict[str, Any] = {"disable_ssl": True, "disable_tls": True, "timeout": 10, "retry_limit": 0}
        if from_email is not None:
            extras["from_email"] = from_email
        conn: dict[str, Any] = {
            "conn_type": "smtp",
            "host": self.host,
            "port": self.port,
            "extra": {**extras, **extra},
        }
        if self.login is not None:
            conn["login"] = self.login
        if self.password is not None:
            conn["password"] = self.password
        return json.dumps(conn)


class _Handler:
    """aiosmtpd handler storing every DATA command's message in the sink."""

    def __init__(self, sink: SmtpSink, refuse: frozenset[str]) -> None:
        self.sink = sink
        self.refuse = refuse

    async def handle_RCPT(  # noqa: N802 - aiosmtpd API
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        """Refuse the addresses listed in refuse (like an unknown mailbox), accept the rest."""
        if address.lower() in self.refuse:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
        raw = bytes(envelope.original_content or envelope.content)
        parsed = BytesParser(policy=policy.default).parsebytes(raw)
        with self.sink._lock:
            self.sink.received.append(
                Received(parsed, raw, str(envelope.mail_from), [str(r) for r in envelope.rcpt_tos])
            )
        return "250 OK"


def _free_port(host: str) -> int:
    """A port the OS just reported free on host (closed again before the server binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port(host: str = "127.0.0.1") -> int:
    """A free TCP port on host where nothing listens (for "connection refused" tests)."""
    return _free_port(host)


@contextmanager
def smtp_sink(
    host: str = "127.0.0.1",
    *,
    login: str | None = None,
    password: str | None = None,
    refuse: frozenset[str] | set[str] = frozenset(),
) -> Iterator[SmtpSink]:
    """Start an aiosmtpd server on host and a free port, yield the sink, stop it afterwards.

    With login/password the server requires those credentials (AUTH without TLS);
    recipients in refuse (case-insensitive) get "550 No such user".
    """
    refused = frozenset(address.lower() for address in refuse)
    sink = SmtpSink(host=host, port=0, login=login, password=password)

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        """Accept only the sink's own credentials (and record every attempt)."""
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode("utf-8", "replace")
        ok = (user, auth_data.password.decode("utf-8", "replace")) == (login, password)
        with sink._lock:
            sink.auth_attempts.append((user, ok))
        return AuthResult(success=ok, handled=False)  # aiosmtpd then answers 235 or 535

    auth_kwargs: dict[str, Any] = {}
    if login is not None:
        auth_kwargs = {"authenticator": authenticate, "auth_require_tls": False}

    last_error: OSError | None = None
    for _ in range(5):  # another process may grab the port between probing and binding
        sink.port = _free_port(host)
        controller = Controller(_Handler(sink, refused), hostname=host, port=sink.port, **auth_kwargs)
        try:
            controller.start()
        except OSError as exc:  # pragma: no cover - only on a port race
            last_error = exc
            continue
        break
    else:  # pragma: no cover - only on repeated port races
        raise RuntimeError(f"could not start the SMTP sink: {last_error}")
    try:
        yield sink
    finally:
        controller.stop()
