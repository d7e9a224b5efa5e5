"""Real loopback servers for tests: an SFTP server (asyncssh) and Samba's smbd.

Both are plain context managers so any test module can use them, either
directly or wrapped in a pytest fixture of the scope it needs:

    with sftp_server(root_dir) as srv:   # srv.host, srv.port, srv.username, ...
        ...
    with smb_server(share_dir) as srv:   # srv.host, srv.port, srv.share, ...
        ...

They listen on 127.0.0.1 only, on free ports, with random passwords, and are
stopped (and their temporary state removed) when the ``with`` block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

LOOPBACK = "127.0.0.1"

# The Unix account smbd maps the test's SMB user to. Samba's passdb only
# accepts users that exist in /etc/passwd; file access itself happens as root
# (``force user = root``), so this account needs no home and no shell.
SMB_UNIX_USER = "casemis_smbtest"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Needed for servers that cannot bind port 0 and report back (smbd); there is
    a small race between closing this socket and the server binding the port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until ``host:port`` accepts TCP connections, or raise after ``timeout`` seconds.

    When ``proc`` is given and exits early, fail at once instead of waiting out the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited early with code {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f}s") from None
            time.sleep(0.05)


# --------------------------------------------------------------------------- SFTP


class _DropControl:
    """Thread-safe, one-shot instruction to cut the connection during a file read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._after_bytes: int | None = None
        self.drops = 0

    def arm(self, after_bytes: int) -> None:
        """Drop the connection the next time a read reaches beyond ``after_bytes``."""
        with self._lock:
            self._after_bytes = after_bytes

    def should_drop(self, read_end: int) -> bool:
        """Return True (once) if a read ending at ``read_end`` crosses the armed limit."""
        with self._lock:
            if self._after_bytes is None or read_end <= self._after_bytes:
                return False
            self._after_bytes = None
            self.drops += 1
            return True


class _PasswordServer(asyncssh.SSHServer):
    """asyncssh server policy: password authentication for exactly one user."""

    def __init__(self, username: str, password: str) -> None:
        self._username = username
        self._password = password

    def begin_auth(self, username: str) -> bool:
        """Always require authentication."""
        return True

    def password_auth_supported(self) -> bool:
        """Offer password authentication (the only method)."""
        return True

    def validate_password(self, username: str, password: str) -> bool:
        """Accept only the configured user and password (constant-time compare)."""
        return username == self._username and hmac.compare_digest(password, self._password)


class _ChrootSftp(asyncssh.SFTPServer):
    """SFTP subsystem jailed in the test's root folder, able to drop a transfer on request."""

    def __init__(self, chan: asyncssh.SSHServerChannel, root: Path, control: _DropControl) -> None:
        super().__init__(chan, chroot=str(root).encode())
        self._control = control

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        """Serve a read, or abort the whole SSH connection when a drop is armed.

        ``abort()`` closes the TCP socket without an SSH disconnect message,
        which is what a client sees when a network link or NAT entry dies.
        """
        if self._control.should_drop(offset + size):
            self.connection.abort()
            raise asyncssh.SFTPFailure("connection dropped by test server")
        return super().read(file_obj, offset, size)  # type: ignore[return-value]


@dataclass
class SftpServer:
    """Handle of a running test SFTP server: where it is and how to log in."""

    host: str
    port: int
    username: str
    password: str
    host_key_public: str  # "ssh-ed25519 AAAA...", as the connection's host_key extra wants it
    root: Path
    _control: _DropControl = field(repr=False)

    def drop_next_transfer(self, after_bytes: int) -> None:
        """Make the server cut the connection once, when a read passes ``after_bytes``."""
        self._control.arm(after_bytes)

    @property
    def drops(self) -> int:
        """How many connections the server has cut on purpose so far."""
        return self._control.drops


def public_key_line(key: asyncssh.SSHKey) -> str:
    """Return ``"<type> <base64>"`` for a key, without the comment, as OpenSSH writes it."""
    fields = key.export_public_key("openssh").decode().split()
    return " ".join(fields[:2])


@contextlib.contextmanager
def sftp_server(root_dir: Path, username: str = "vendor") -> Iterator[SftpServer]:
    """Run an asyncssh SFTP server on 127.0.0.1 (free port) serving ``root_dir``.

    Password authentication with a random password; a fresh ed25519 host key.
    The server runs on its own event loop in a daemon thread, so blocking
    clients (paramiko, used by Airflow's SFTPHook) can talk to it from the test.
    """
    root = Path(root_dir)
    password = secrets.token_urlsafe(16)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    control = _DropControl()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-sftp-server", daemon=True)
    thread.start()
    try:

        async def listen() -> asyncssh.SSHAcceptor:
            return await asyncssh.listen(
                LOOPBACK,
                0,
                server_factory=lambda: _PasswordServer(username, password),
                server_host_keys=[host_key],
                sftp_factory=lambda chan: _ChrootSftp(chan, root, control),
                allow_scp=False,
            )

        acceptor = asyncio.run_coroutine_threadsafe(listen(), loop).result(timeout=10)
        try:
            yield SftpServer(
                host=LOOPBACK,
                port=acceptor.get_port(),
                username=username,
                password=password,
                host_key_public=public_key_line(host_key),
                root=root,
                _control=control,
            )
        finally:
            acceptor.close()
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(acceptor.wait_closed(), loop).result(timeout=5)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


# --------------------------------------------------------------------------- SMB


@dataclass
class SmbServer:
    """Handle of a running test smbd: where it is and how to log in."""

    host: str
    port: int
    share: str
    username: str
    password: str
    share_dir: Path
    pid: int

    def child_pids(self) -> set[int]:
        """Process ids of this smbd's children: helpers plus one process per client connection."""
        return child_pids(self.pid)

    def drop_connections(self, pids: set[int]) -> None:
        """Kill the given smbd children (taken from :meth:`child_pids`), cutting those clients off.

        smbd serves each client connection in its own forked child, so killing
        that child is a real dropped connection: the client's socket is reset
        mid-transfer while the listening parent keeps accepting new clients.
        """
        own = self.child_pids()
        for pid in pids & own:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def child_pids(parent: int) -> set[int]:
    """Ids of the live processes whose parent is ``parent`` (read from /proc)."""
    found: set[int] = set()
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat_file.read_text()
        except OSError:
            continue  # the process exited meanwhile
        # Format: "pid (comm) state ppid ..."; comm may contain spaces, so split after ")".
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[1]) == parent:
            found.add(int(stat_file.parent.name))
    return found


def ensure_unix_user(name: str) -> None:
    """Create a system account ``name`` (no home, no shell) unless it exists already.

    smbpasswd refuses users unknown to /etc/passwd. Needs root, which the
    project's machines and CI have.
    """
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    if os.geteuid() != 0:
        raise RuntimeError(f"the Unix user {name!r} is missing and only root can create it (useradd)")
    result = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    # Exit code 9 = "username already in use": another test process won the race.
    if result.returncode not in (0, 9):
        raise RuntimeError(f"useradd {name} failed: {result.stderr.strip()}")


def _smbd_binary() -> str:
    """Locate smbd (Debian puts it in /usr/sbin, which may not be on PATH)."""
    found = shutil.which("smbd") or shutil.which("smbd", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise RuntimeError("smbd not found: run `bash scripts/install-system-deps.sh` (Debian package samba)")
    return found


def _smbpasswd_binary() -> str:
    """Locate smbpasswd (Debian package samba-common-bin, pulled in by samba)."""
    found = shutil.which("smbpasswd") or shutil.which("smbpasswd", path="/usr/bin:/usr/sbin")
    if not found:
        raise RuntimeError("smbpasswd not found: run `bash scripts/install-system-deps.sh`")
    return found


def write_smb_conf(state: Path, port: int, share: str, share_dir: Path, username: str) -> Path:
    """Write a self-contained smb.conf that keeps every Samba state file under ``state``.

    Quirks found with Debian's Samba 4.17:
    - every *dir/*directory option must point into the temp folder, or smbd
      writes to (and locks) the system's /var/lib/samba and /run/samba;
    - ``passdb backend`` must be set explicitly too, otherwise smbpasswd and
      smbd would share the system's passdb.tdb;
    - ``disable netbios`` stops nmbd-related work; printing options stop smbd
      from probing CUPS; ``usershare path =`` (empty) disables usershares;
    - pytest's tmp folders are mode 0700, so the share uses ``force user = root``
      to read them; ``valid users`` still limits logins to the test user.
    """
    run = state / "run"
    for sub in ("private", "lock", "state", "cache", "pid", "ncalrpc", "binddns", "log"):
        (run / sub).mkdir(parents=True, exist_ok=True)
    conf = state / "smb.conf"
    conf.write_text(
        textwrap.dedent(
            f"""\
            [global]
              server role = standalone server
              smb ports = {port}
              interfaces = lo
              bind interfaces only = yes
              server min protocol = SMB2_10
              disable netbios = yes
              map to guest = never
              private dir = {run}/private
              lock directory = {run}/lock
              state directory = {run}/state
              cache directory = {run}/cache
              pid directory = {run}/pid
              ncalrpc dir = {run}/ncalrpc
              binddns dir = {run}/binddns
              log file = {run}/log/log.%m
              passdb backend = tdbsam:{run}/private/passdb.tdb
              load printers = no
              printing = bsd
              printcap name = /dev/null
              disable spoolss = yes
              usershare path =

            [{share}]
              path = {share_dir}
              read only = no
              force user = root
              valid users = {username}
            """
        )
    )
    return conf


@contextlib.contextmanager
def smb_server(share_dir: Path, share: str = "district") -> Iterator[SmbServer]:
    """Run Samba's smbd on 127.0.0.1 (free port) exporting ``share_dir`` as ``share``.

    Creates the Unix user if needed, registers it in a private passdb with a
    random password, starts ``smbd -F`` in its own session and stops it (and its
    forked helpers and client children) afterwards.
    """
    ensure_unix_user(SMB_UNIX_USER)
    password = secrets.token_urlsafe(16)
    state = Path(tempfile.mkdtemp(prefix="casemis-smbd-"))
    try:
        port = free_port()
        conf = write_smb_conf(state, port, share, Path(share_dir), SMB_UNIX_USER)
        subprocess.run(
            [_smbpasswd_binary(), "-c", str(conf), "-s", "-a", SMB_UNIX_USER],
            input=f"{password}\n{password}\n",
            capture_output=True,
            text=True,
            check=True,
        )
        log_path = state / "smbd.out"
        with log_path.open("wb") as log:
            # -F: stay in the foreground so we own the process; --no-process-group:
            # don't make a new group itself; start_new_session gives it one of its own,
            # away from pytest's terminal signals, for the hung-smbd fallback in
            # _stop_process_group (smbd forks a child per client connection).
            proc = subprocess.Popen(
                [_smbd_binary(), "-s", str(conf), "-F", "--no-process-group", "--debug-stdout", "-d", "1"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            try:
                wait_for_port(LOOPBACK, port, timeout=15, proc=proc)
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(
                    f"smbd did not start: {exc}\n{log_path.read_text(errors='replace')}"
                ) from exc
            yield SmbServer(
                host=LOOPBACK,
                port=port,
                share=share,
                username=SMB_UNIX_USER,
                password=password,
                share_dir=Path(share_dir),
                pid=proc.pid,
            )
        finally:
            _stop_process_group(proc)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def _stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the smbd we started (and, if it hangs, its whole process group), and reap it.

    The parent gets SIGTERM first and time to stop and reap its own helpers
    (notifyd, cleanupd, client children); signalling the whole group at once
    lets the parent exit first and leaves the helpers as orphans, which a
    container's init may never reap (defunct processes).
    """
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
