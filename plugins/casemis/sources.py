"""Where the vendor's CSV files are picked up: a local folder, an SMB share or an SFTP site.

The three locations are interchangeable behind one small interface,
:class:`Source`: ``describe()`` for humans, ``stat(name)`` to see a file's size
and modification time, ``fetch(name, dest)`` to copy it. Everything above this
module (the DAG, the CLI) asks :func:`make_source` for a source built from the
configuration and never talks to a protocol directly.

Why it is shaped like this:

* Credentials live only in Airflow connections. SMB goes through the samba
  provider's ``SambaHook`` and SFTP through the sftp provider's ``SFTPHook``;
  this module never sees a password except as the hooks read it, and no
  message or log line it writes contains one.
* A copy is all-or-nothing and verifiable: bytes go to ``<dest>.part``, are
  hashed (sha256) on the way, fsynced, checked against the size the server
  reported, then atomically renamed. A partial file never sits at ``dest``.
* Dropped connections are normal on district networks, so
  :func:`fetch_with_retry` retries transport failures, but never a wrong
  password or a wrong host key, which would only lock the account or hide an
  attack.
* The vendor may still be writing when we look. A file counts as stable when
  two observations some seconds apart agree on size and mtime;
  :func:`check_stable` does one observation per call so an Airflow sensor can
  poke without blocking, and :func:`wait_until_stable` loops for plain scripts.

Airflow providers are imported inside the functions that need them, so the
local-folder path (and ``import casemis.sources``) stays light.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import stat as stat_mod
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from airflow.providers.samba.hooks.samba import SambaHook
    from airflow.providers.sftp.hooks.sftp import SFTPHook
    from paramiko import SFTPClient

log = logging.getLogger(__name__)

DEFAULT_SMB_CONN_ID = "casemis_smb"
DEFAULT_SFTP_CONN_ID = "casemis_sftp"
LOCATION_TYPES = ("local", "smb", "sftp")

# Copy buffer; the files are a few MB at most.
CHUNK_SIZE = 1024 * 1024
# Seconds to wait for a TCP connect / an SFTP reply before treating the link as dead.
NETWORK_TIMEOUT = 30
PART_SUFFIX = ".part"


# --------------------------------------------------------------------------- errors


class SourceError(Exception):
    """A file location could not be used; the message says why and what to do."""


class SourceConfigError(SourceError):
    """The configuration or the Airflow connection is unusable (not retried)."""


class SourceAuthError(SourceError):
    """The server rejected the connection's credentials (not retried)."""


class SourceHostKeyError(SourceError):
    """The SFTP server's host key is unknown or differs from the connection's (not retried)."""


class SourceFileMissingError(SourceError):
    """A file asked for with ``fetch`` does not exist at the location (not retried)."""


class SourceConnectionError(SourceError):
    """The server could not be reached or the link broke (retried by ``fetch_with_retry``)."""


class SourceIntegrityError(SourceError):
    """The copied byte count differs from the server's size (retried: the file may have changed)."""


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class FileInfo:
    """What a location says about one file: bare name, size in bytes, mtime in epoch seconds.

    ``mtime`` is the server's ``st_mtime`` number, so it is time-zone free; the
    SFTP protocol (v3) only has whole seconds, SMB and local folders have fractions.
    """

    name: str
    size: int
    mtime: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (for XCom, sensors, fingerprints)."""
        return {"name": self.name, "size": self.size, "mtime": self.mtime}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileInfo:
        """Rebuild a FileInfo from :meth:`to_dict` output."""
        return cls(name=str(data["name"]), size=int(data["size"]), mtime=float(data["mtime"]))


class Source(Protocol):
    """A place the vendor's files can be read from."""

    def describe(self) -> str:
        """Human description for logs and reports, without secrets."""
        ...

    def stat(self, name: str) -> FileInfo | None:
        """Size and mtime of file ``name``, or None if it does not exist."""
        ...

    def stat_many(self, names: Iterable[str]) -> dict[str, FileInfo | None]:
        """Like :meth:`stat` for several files, over one connection."""
        ...

    def fetch(self, name: str, dest: Path) -> str:
        """Copy file ``name`` to ``dest`` atomically and return its sha256 hex digest."""
        ...


# --------------------------------------------------------------------------- helpers


def check_name(name: str) -> str:
    """Return ``name`` if it is a bare file name; refuse paths so nothing escapes the folder."""
    if not name or name in (".", "..") or any(ch in name for ch in "/\\\x00"):
        raise SourceConfigError(f"file name {name!r} must be a bare file name, not a path")
    return name


def parse_unc(path: str) -> tuple[str, str, str]:
    r"""Split a UNC path into ``(server, share, directory)``.

    Accepts ``\\server\share\dir\sub`` and ``//server/share/dir/sub`` (mixed
    separators too). The directory comes back with ``/`` separators, ``""`` for
    the share's root.
    """
    text = path.strip()
    if not (text.startswith("\\\\") or text.startswith("//")):
        raise SourceConfigError(
            rf"{path!r} is not a UNC path like \\server\share\folder or //server/share/folder"
        )
    parts = [part for part in re.split(r"[\\/]+", text[2:]) if part]
    if len(parts) < 2:
        raise SourceConfigError(rf"UNC path {path!r} needs at least a server and a share (\\server\share)")
    server, share, *rest = parts
    if any(part in (".", "..") for part in rest):
        raise SourceConfigError(f"UNC path {path!r} must not contain '.' or '..'")
    return server, share, "/".join(rest)


def _join(directory: str, name: str) -> str:
    """Join a remote directory (may be empty) and a file name with ``/``."""
    return f"{directory.rstrip('/')}/{name}" if directory else name


class _HashingWriter:
    """File-like wrapper that hashes and counts every byte written through it."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        """Write ``data`` to the wrapped file, updating the digest and byte count."""
        self._out.write(data)
        self._sha.update(data)
        self.size += len(data)
        return len(data)

    def hexdigest(self) -> str:
        """The sha256 of everything written so far."""
        return self._sha.hexdigest()


def _fsync_dir(folder: Path) -> None:
    """Flush a directory entry (the rename) to disk, where the OS allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_download(dest: Path, expected_size: int, copy: Callable[[IO[bytes]], None]) -> str:
    """Run ``copy(out)`` into ``<dest>.part``, verify, then rename onto ``dest``; return sha256 hex.

    The part file is hashed while written, fsynced, and its byte count compared
    with ``expected_size`` (the size the server reported) before ``os.replace``.
    On any failure the part file is removed and ``dest`` is left as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + PART_SUFFIX)
    try:
        with part.open("wb") as fh:
            writer = _HashingWriter(fh)
            copy(writer)  # type: ignore[arg-type]
            fh.flush()
            os.fsync(fh.fileno())
        if writer.size != expected_size:
            raise SourceIntegrityError(
                f"copied {writer.size} bytes of {dest.name} but the server reported {expected_size}; "
                "the file may have changed during the copy"
            )
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)
    return writer.hexdigest()


# --------------------------------------------------------------------------- sessions


class _Session(Protocol):
    """One open connection to a location (internal)."""

    def stat(self, name: str) -> FileInfo | None:
        """Size/mtime of ``name`` or None when missing."""
        ...

    def copy_to(self, name: str, out: IO[bytes]) -> None:
        """Stream the bytes of ``name`` into ``out``."""
        ...


class _SessionSource:
    """Shared ``stat``/``stat_many``/``fetch`` on top of a subclass's ``_session()``."""

    def describe(self) -> str:
        """Human description; subclasses override."""
        raise NotImplementedError

    def _session(self) -> contextlib.AbstractContextManager[_Session]:
        """Open a connection; subclasses override."""
        raise NotImplementedError

    def stat(self, name: str) -> FileInfo | None:
        """Size and mtime of file ``name``, or None if it does not exist."""
        return self.stat_many([name])[name]

    def stat_many(self, names: Iterable[str]) -> dict[str, FileInfo | None]:
        """Stat several files over one connection; missing files map to None."""
        wanted = [check_name(name) for name in names]
        with self._session() as session:
            return {name: session.stat(name) for name in wanted}

    def fetch(self, name: str, dest: Path) -> str:
        """Copy ``name`` to ``dest`` atomically, verified against the server's size; return sha256."""
        check_name(name)
        with self._session() as session:
            info = session.stat(name)
            if info is None:
                raise SourceFileMissingError(f"{name} does not exist in {self.describe()}")
            return atomic_download(Path(dest), info.size, lambda out: session.copy_to(name, out))


def _info_from_stat(name: str, st: Any, where: str) -> FileInfo:
    """Build a FileInfo from an ``os.stat``-like result; refuse directories and specials."""
    mode = getattr(st, "st_mode", None)
    if mode is not None and stat_mod.S_IFMT(mode) and not stat_mod.S_ISREG(mode):
        raise SourceError(f"{name} in {where} is not a regular file")
    if st.st_size is None:
        raise SourceError(f"{where} did not report the size of {name}")
    # An SFTP server may omit times; stability then rests on the size alone.
    mtime = float(st.st_mtime) if st.st_mtime is not None else 0.0
    return FileInfo(name=name, size=int(st.st_size), mtime=mtime)


# --------------------------------------------------------------------------- local folder


class _LocalSession:
    """Access to a local or mounted folder."""

    def __init__(self, folder: Path, where: str) -> None:
        self._folder = folder
        self._where = where

    def stat(self, name: str) -> FileInfo | None:
        """``os.stat`` of the file; None when missing."""
        try:
            st = os.stat(self._folder / name)
        except FileNotFoundError:
            return None
        return _info_from_stat(name, st, self._where)

    def copy_to(self, name: str, out: IO[bytes]) -> None:
        """Stream the file into ``out``."""
        with (self._folder / name).open("rb") as fh:
            shutil.copyfileobj(fh, out, CHUNK_SIZE)


class LocalFolderSource(_SessionSource):
    """Files in a local folder, or a share already mounted on the worker."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def describe(self) -> str:
        """E.g. ``folder /mnt/casemis``."""
        return f"folder {self.path}"

    @contextlib.contextmanager
    def _session(self) -> Iterator[_Session]:
        """Check the folder is there (an unmounted share should not look like 'no files yet')."""
        if not self.path.is_dir():
            raise SourceConfigError(
                f"{self.describe()} does not exist or is not a folder (is the share mounted?)"
            )
        yield _LocalSession(self.path, self.describe())


# --------------------------------------------------------------------------- SMB


_SMB_AUTH_ERRORS = ("LogonFailure", "WrongPassword", "PasswordExpired", "SMBAuthenticationError")


class _SmbSession:
    """Access to one directory of an SMB share through an entered SambaHook."""

    def __init__(self, hook: SambaHook, directory: str, where: str) -> None:
        self._hook = hook
        self._directory = directory
        self._where = where

    def stat(self, name: str) -> FileInfo | None:
        """``hook.stat`` (not ``scandir`` entries: those reconnect on port 445)."""
        try:
            st = self._hook.stat(_join(self._directory, name))
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        return _info_from_stat(name, st, self._where)

    def copy_to(self, name: str, out: IO[bytes]) -> None:
        """Stream the file; others may read meanwhile but not write (a writer makes this fail)."""
        with self._hook.open_file(_join(self._directory, name), mode="rb", share_access="r") as fh:
            shutil.copyfileobj(fh, out, CHUNK_SIZE)


@dataclass(frozen=True)
class _SmbTarget:
    """Where an SmbSource connects: the UNC path's server/share win over the connection's."""

    server: str
    share: str
    port: int
    login: str | None


class SmbSource(_SessionSource):
    r"""Files in a folder of an SMB share, read with the samba provider's ``SambaHook``.

    ``unc_path`` (``\\server\share\folder`` or ``//server/share/folder``)
    overrides the connection's host and share and names the folder; without
    it the connection's host and schema (share) are used, at the share's root.
    Login, password and port always come from the connection.
    """

    def __init__(self, conn_id: str = DEFAULT_SMB_CONN_ID, unc_path: str | None = None) -> None:
        self.conn_id = conn_id
        self.unc_path = unc_path
        self._server: str | None = None
        self._share: str | None = None
        self.directory = ""
        if unc_path:
            self._server, self._share, self.directory = parse_unc(unc_path)

    def _target(self) -> _SmbTarget:
        """Resolve server, share, port and login from the UNC path and the connection."""
        conn = _get_connection(self.conn_id)
        server = self._server or conn.host
        share = self._share or conn.schema
        if not server or not share:
            raise SourceConfigError(
                f"connection '{self.conn_id}' has no host/share (schema) and no UNC path was configured"
            )
        return _SmbTarget(server=server, share=share, port=int(conn.port or 445), login=conn.login)

    def _describe(self, target: _SmbTarget) -> str:
        r"""``SMB \\server\share\folder``, plus the port when it is not 445."""
        unc = "\\\\" + "\\".join([target.server, target.share, *[p for p in self.directory.split("/") if p]])
        return f"SMB {unc}" + (f" (port {target.port})" if target.port != 445 else "")

    def describe(self) -> str:
        r"""E.g. ``SMB \\server\share\casemis`` (plus the port when it is not 445)."""
        return self._describe(self._target())

    def _hook(self, target: _SmbTarget) -> SambaHook:
        """Build the SambaHook; the UNC server replaces the connection's host."""
        from airflow.providers.samba.hooks.samba import SambaHook

        try:
            hook = SambaHook(samba_conn_id=self.conn_id, share=target.share)
        except Exception as exc:
            raise SourceConfigError(
                f"SMB connection '{self.conn_id}' is unusable: {type(exc).__name__}: {exc}"
            ) from exc
        # SambaHook takes the host only from the connection; the UNC path in the
        # configuration must win, and the hook has no parameter for it.
        hook._host = target.server
        return hook

    @contextlib.contextmanager
    def _session(self) -> Iterator[_Session]:
        """Connect and log on, check the folder, yield a session; always disconnect."""
        target = self._target()
        hook = self._hook(target)
        where = self._describe(target)
        try:
            hook.__enter__()
        except Exception as exc:
            hook.__exit__(None, None, None)  # close a half-open connection left in the hook's cache
            raise _smb_connect_error(exc, self.conn_id, target) from exc
        try:
            self._check_folder(hook, target.share, where)
            yield _SmbSession(hook, self.directory, where)
        finally:
            hook.__exit__(None, None, None)

    def _check_folder(self, hook: SambaHook, share: str, where: str) -> None:
        """Fail clearly when the share or the folder is missing or not accessible.

        A missing share does not come back as BAD_NETWORK_NAME: smbclient first
        asks for a DFS referral and reports NOT_FOUND (ENOENT), so the share's
        root is checked on its own before the folder.
        """
        from smbprotocol.exceptions import AccessDenied, BadNetworkName

        checks = [("", f"share {share!r} does not exist on the server ({where})")]
        if self.directory:
            checks.append((self.directory, f"folder {self.directory!r} does not exist ({where})"))
        for path, missing_message in checks:
            try:
                st = hook.stat(path)
            except BadNetworkName as exc:
                raise SourceConfigError(checks[0][1]) from exc
            except AccessDenied as exc:
                raise SourceAuthError(
                    f"connection '{self.conn_id}' logged on but may not open {where}: check the share permissions"
                ) from exc
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    raise SourceConfigError(missing_message) from exc
                raise
            if not stat_mod.S_ISDIR(st.st_mode):
                raise SourceConfigError(f"{where} is not a folder")


def _smb_connect_error(exc: Exception, conn_id: str, target: _SmbTarget) -> SourceError:
    """Turn a failure of SMB connect/logon into a clear SourceError (no secrets in it)."""
    server, port, login = target.server, target.port, target.login
    if type(exc).__name__ in _SMB_AUTH_ERRORS:
        return SourceAuthError(
            f"SMB authentication failed for connection '{conn_id}' (user {login!r} on {server}:{port}): "
            "check the login and password (and domain, e.g. DISTRICT\\user) in the Airflow connection"
        )
    if isinstance(exc, ValueError) and isinstance(exc.__cause__, OSError):
        # smbprotocol reports "connection refused / no route" as ValueError from OSError.
        return SourceConnectionError(f"cannot reach SMB server {server}:{port} ({exc.__cause__})")
    if isinstance(exc, OSError | EOFError) or _is_smb_exception(exc):
        return SourceConnectionError(f"SMB connection to {server}:{port} failed: {type(exc).__name__}: {exc}")
    return SourceError(f"SMB connection '{conn_id}' to {server}:{port} failed: {type(exc).__name__}: {exc}")


def _is_smb_exception(exc: BaseException) -> bool:
    """True for smbprotocol's own exception types."""
    from smbprotocol.exceptions import SMBException

    return isinstance(exc, SMBException)


# --------------------------------------------------------------------------- SFTP


class _SftpSession:
    """Access to one directory of an SFTP site through a connected SFTPHook."""

    def __init__(self, hook: SFTPHook, client: SFTPClient, directory: str, where: str) -> None:
        self._hook = hook
        self._client = client
        self._directory = directory
        self._where = where

    def stat(self, name: str) -> FileInfo | None:
        """SFTP ``stat``; None when missing. mtime is whole seconds (SFTP v3)."""
        try:
            st = self._client.stat(_join(self._directory, name))
        except FileNotFoundError:
            return None
        return _info_from_stat(name, st, self._where)

    def copy_to(self, name: str, out: IO[bytes]) -> None:
        """Stream through ``SFTPHook.retrieve_file`` (reuses the open connection)."""
        self._hook.retrieve_file(_join(self._directory, name), out)  # type: ignore[arg-type]


class SftpSource(_SessionSource):
    """Files in a directory of an SFTP site, read with the sftp provider's ``SFTPHook``.

    Login, password/key and host key come from the connection; ``host`` and
    ``port`` from the configuration override the connection's when given.
    Host keys are always checked: put the server's public key in the
    connection's ``host_key`` extra, or set ``no_host_key_check: true`` there
    to turn checking off explicitly.
    """

    def __init__(
        self,
        conn_id: str = DEFAULT_SFTP_CONN_ID,
        host: str | None = None,
        port: int | None = None,
        directory: str = "",
    ) -> None:
        self.conn_id = conn_id
        self.host = host or None
        self.port = int(port) if port else None
        self.directory = directory or ""

    def _hook(self) -> SFTPHook:
        """Build the SFTPHook: one connect attempt (retries are ours) and a network timeout."""
        from airflow.providers.sftp.hooks.sftp import SFTPHook

        kwargs: dict[str, Any] = {"ssh_conn_id": self.conn_id, "conn_retry_attempts": 1}
        if self.host:
            kwargs["remote_host"] = self.host
        if self.port:
            kwargs["port"] = self.port
        try:
            hook = SFTPHook(**kwargs)
        except SourceError:
            raise
        except Exception as exc:
            raise SourceConfigError(
                f"SFTP connection '{self.conn_id}' is unusable: {type(exc).__name__}: {exc}"
            ) from exc
        if hook.conn_timeout is None:
            hook.conn_timeout = NETWORK_TIMEOUT
        return hook

    def describe(self) -> str:
        """E.g. ``SFTP sftp.example.org:22 /outbox``."""
        return self._describe(self._hook())

    def _describe(self, hook: SFTPHook) -> str:
        """Description from the hook's effective host and port."""
        return f"SFTP {hook.remote_host}:{hook.port} {self.directory or '(login folder)'}"

    @contextlib.contextmanager
    def _session(self) -> Iterator[_Session]:
        """Connect (checking the host key), check the folder, yield a session; always close."""
        hook = self._hook()
        where = self._describe(hook)
        with contextlib.ExitStack() as stack:
            try:
                client = stack.enter_context(hook.get_managed_conn())
            except Exception as exc:
                raise _sftp_connect_error(exc, self.conn_id, hook) from exc
            channel = client.get_channel()
            if channel is not None:
                channel.settimeout(NETWORK_TIMEOUT)
            self._check_folder(client, where)
            yield _SftpSession(hook, client, self.directory, where)

    def _check_folder(self, client: SFTPClient, where: str) -> None:
        """Fail clearly when the configured directory is missing."""
        if not self.directory:
            return
        try:
            st = client.stat(self.directory)
        except FileNotFoundError as exc:
            raise SourceConfigError(f"directory {self.directory!r} does not exist ({where})") from exc
        if st.st_mode is not None and not stat_mod.S_ISDIR(st.st_mode):
            raise SourceConfigError(f"{where} is not a directory")


def _sftp_connect_error(exc: Exception, conn_id: str, hook: SFTPHook) -> Exception:
    """Turn a failure of SSH connect/auth/host-key checking into a clear SourceError (no secrets)."""
    import paramiko

    where = f"{hook.remote_host}:{hook.port}"
    fix = (
        f"put the server's public key (e.g. from `ssh-keyscan -p {hook.port} {hook.remote_host}`, "
        "checked with the vendor) in the connection's `host_key` extra, "
        "or set the extra `no_host_key_check: true` to turn checking off explicitly (not recommended)"
    )
    if isinstance(exc, paramiko.BadHostKeyException):
        offered = f"{exc.key.get_name()} {exc.key.get_base64()}"
        return SourceHostKeyError(
            f"the host key of {where} is not the one in connection '{conn_id}': the server offers "
            f"'{offered}'. If the server's key really changed, {fix}"
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return SourceAuthError(
            f"SFTP authentication failed for connection '{conn_id}' (user {hook.username!r} at {where}): "
            "check the login and password or private key in the Airflow connection"
        )
    if isinstance(exc, paramiko.SSHException) and "known_hosts" in str(exc):
        return SourceHostKeyError(
            f"the host key of {where} is unknown: connection '{conn_id}' has no `host_key` extra "
            f"matching it. To fix, {fix}"
        )
    if isinstance(exc, OSError | EOFError | paramiko.SSHException):
        return SourceConnectionError(f"SFTP connection to {where} failed: {type(exc).__name__}: {exc}")
    return exc


# --------------------------------------------------------------------------- factory


def _get_connection(conn_id: str) -> Any:
    """Look up an Airflow connection (env ``AIRFLOW_CONN_*``, secrets backend or DB)."""
    from airflow.providers.common.compat.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as exc:
        raise SourceConfigError(
            f"Airflow connection '{conn_id}' is not defined or unreadable: {exc}"
        ) from exc


def make_source(location_type: str, **settings: Any) -> Source:
    """Build the source for ``location_type`` ("local", "smb" or "sftp") from its settings.

    Settings (``None`` values are ignored, unknown names are refused to catch typos):

    * local: ``path``
    * smb: ``conn_id`` (default ``casemis_smb``), ``unc_path``
    * sftp: ``conn_id`` (default ``casemis_sftp``), ``host``, ``port``, ``directory``
    """
    given = {key: value for key, value in settings.items() if value is not None}
    allowed = {
        "local": {"path"},
        "smb": {"conn_id", "unc_path"},
        "sftp": {"conn_id", "host", "port", "directory"},
    }
    kind = (location_type or "").strip().lower()
    if kind not in allowed:
        raise SourceConfigError(f"location type {location_type!r} is not one of {', '.join(LOCATION_TYPES)}")
    unknown = sorted(set(given) - allowed[kind])
    if unknown:
        raise SourceConfigError(f"unknown setting(s) for a {kind} location: {', '.join(unknown)}")
    if kind == "local":
        if "path" not in given:
            raise SourceConfigError("a local location needs a path")
        return LocalFolderSource(given["path"])
    if kind == "smb":
        return SmbSource(given.get("conn_id", DEFAULT_SMB_CONN_ID), given.get("unc_path"))
    return SftpSource(
        given.get("conn_id", DEFAULT_SFTP_CONN_ID),
        host=given.get("host"),
        port=given.get("port"),
        directory=given.get("directory", ""),
    )


# --------------------------------------------------------------------------- retries


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed fetch may succeed if simply tried again (a transport problem).

    Never retried: wrong credentials, host-key problems, bad configuration,
    missing files, local permission errors. Retried: dropped or refused
    connections, timeouts, SSH/SMB protocol errors, size mismatches.
    """
    if isinstance(exc, SourceConnectionError | SourceIntegrityError):
        return True
    if isinstance(exc, SourceError):
        return False
    if _is_smb_exception(exc):
        return _smb_retryable(exc)
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError):
        return False
    if isinstance(exc, OSError | EOFError):
        return True
    import paramiko

    if isinstance(exc, paramiko.AuthenticationException | paramiko.BadHostKeyException):
        return False
    return isinstance(exc, paramiko.SSHException)


def _smb_retryable(exc: BaseException) -> bool:
    """smbprotocol errors: retry all but auth, access and not-found ones (a sharing violation is retried)."""
    from smbprotocol.header import NtStatus

    if type(exc).__name__ in (*_SMB_AUTH_ERRORS, "AccessDenied", "BadNetworkName"):
        return False
    status = getattr(exc, "ntstatus", None) or getattr(exc, "status", None)
    permanent = {
        NtStatus.STATUS_OBJECT_NAME_NOT_FOUND,
        NtStatus.STATUS_OBJECT_PATH_NOT_FOUND,
        NtStatus.STATUS_NOT_FOUND,
        NtStatus.STATUS_ACCESS_DENIED,
        NtStatus.STATUS_FILE_IS_A_DIRECTORY,
        NtStatus.STATUS_NOT_A_DIRECTORY,
    }
    return status not in permanent


def fetch_with_retry(
    source: Source,
    name: str,
    dest: Path,
    attempts: int = 3,
    backoff: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """``source.fetch(name, dest)``, retrying transport failures with exponential back-off.

    Waits ``backoff``, ``2*backoff``, ... seconds between attempts. Logs the
    attempt number and the error type and text (which never contain
    credentials). After the last attempt raises :class:`SourceConnectionError`
    chained to the last error; errors that retrying cannot fix are raised at once.
    """
    attempts = max(1, attempts)
    for attempt in range(1, attempts + 1):
        try:
            digest = source.fetch(name, dest)
        except Exception as exc:
            if not is_retryable(exc):
                raise
            where = source.describe()
            if attempt == attempts:
                log.error(
                    "fetching %s from %s failed on attempt %d/%d; giving up", name, where, attempt, attempts
                )
                raise SourceConnectionError(
                    f"fetching {name} from {where} failed {attempts} times; last error: {type(exc).__name__}: {exc}"
                ) from exc
            delay = backoff * 2 ** (attempt - 1)
            log.warning(
                "fetching %s from %s failed on attempt %d/%d (%s: %s); retrying in %.1f s",
                name,
                where,
                attempt,
                attempts,
                type(exc).__name__,
                exc,
                delay,
            )
            sleep(delay)
        else:
            if attempt > 1:
                log.info("fetched %s on attempt %d/%d", name, attempt, attempts)
            return digest
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------- stability


def make_observation(files: Mapping[str, FileInfo | None], observed_at: float) -> dict[str, Any]:
    """A JSON-ready observation: when it was made and each file's size/mtime (None if missing)."""
    return {
        "observed_at": observed_at,
        "files": {name: (info.to_dict() if info is not None else None) for name, info in files.items()},
    }


def observation_files(observation: Mapping[str, Any]) -> dict[str, FileInfo | None]:
    """The FileInfo objects recorded in an observation."""
    return {
        name: (FileInfo.from_dict(data) if data is not None else None)
        for name, data in observation.get("files", {}).items()
    }


def is_stable(
    previous: Mapping[str, Any] | None, current: Mapping[str, Any], min_interval: float = 0.0
) -> bool:
    """Pure check: every file in ``current`` exists and has the same size and mtime as in ``previous``.

    ``previous`` must be at least ``min_interval`` seconds older than ``current``;
    with no previous observation nothing is stable yet.
    """
    if previous is None:
        return False
    if float(current["observed_at"]) - float(previous.get("observed_at", 0.0)) < min_interval:
        return False
    before = previous.get("files", {})
    now = current.get("files", {})
    if not now:
        return False
    for name, info in now.items():
        old = before.get(name)
        if info is None or old is None:
            return False
        if int(old["size"]) != int(info["size"]) or float(old["mtime"]) != float(info["mtime"]):
            return False
    return True


def check_stable(
    source: Source,
    names: list[str],
    previous: Mapping[str, Any] | None,
    *,
    min_interval: float = 0.0,
    clock: Callable[[], float] = time.time,
) -> tuple[bool, dict[str, Any]]:
    """One non-blocking look: ``(ready, observation)`` for a sensor's poke.

    Observes ``names`` once over one connection and compares with
    ``previous`` (the observation returned by the previous poke, or None). The
    observation is JSON-ready, so the sensor can keep it between pokes (on the
    operator instance in poke mode, or in a state store / XCom in reschedule
    mode) and, once ready, push it as the files' fingerprint.
    """
    observation = make_observation(source.stat_many(names), clock())
    return is_stable(previous, observation, min_interval), observation


def wait_until_stable(
    source: Source,
    names: list[str],
    *,
    interval: float,
    timeout: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, FileInfo] | None:
    """Block until all ``names`` exist and stay unchanged for ``interval`` seconds.

    Returns the stable FileInfo per name, or None when ``timeout`` seconds pass first.
    """
    deadline = None if timeout is None else clock() + timeout
    previous: dict[str, Any] | None = None
    while True:
        ready, observation = check_stable(source, names, previous)
        if ready:
            return {name: info for name, info in observation_files(observation).items() if info is not None}
        if deadline is not None and clock() + interval > deadline:
            log.info("files not stable within %.0f s in %s", timeout, source.describe())
            return None
        previous = observation
        sleep(interval)
