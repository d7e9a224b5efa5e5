"""Tests for casemis.sources against real servers on loopback.

The SFTP server is asyncssh (in a thread), the SMB server is Samba's smbd
(a subprocess); both come from tests/servers.py, start once per module on free
ports and stop afterwards. Connections reach Airflow's hooks the way they do
in production: through ``AIRFLOW_CONN_*`` environment variables (JSON form).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import paramiko
import pytest
from smbprotocol.exceptions import SMBConnectionClosed, SMBOSError
from smbprotocol.header import NtStatus

from casemis.sources import (
    FileInfo,
    LocalFolderSource,
    SftpSource,
    SmbSource,
    Source,
    SourceAuthError,
    SourceConfigError,
    SourceConnectionError,
    SourceError,
    SourceFileMissingError,
    SourceHostKeyError,
    SourceIntegrityError,
    atomic_download,
    check_name,
    check_stable,
    fetch_with_retry,
    is_retryable,
    is_stable,
    make_observation,
    make_source,
    parse_unc,
    wait_until_stable,
)
from tests.servers import SftpServer, SmbServer, free_port, public_key_line, sftp_server, smb_server

SFTP_CONN = "casemis_sftp"
SMB_CONN = "casemis_smb"
SMB_FOLDER = "casemis"
SFTP_FOLDER = "outbox"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep Airflow's config/state out of ~/airflow; connections come from env vars only."""
    home = tmp_path_factory.mktemp("airflow_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_HOME", str(home))
        mp.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        # Importing Airflow configures logging (replacing root handlers). Do it now,
        # not inside the first hook call, so pytest's caplog handlers survive.
        import airflow.providers.samba.hooks.samba  # noqa: F401
        import airflow.providers.sftp.hooks.sftp  # noqa: F401

        yield home


@pytest.fixture(scope="module")
def sftp_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpServer]:
    """One asyncssh SFTP server for the module, serving <root>/outbox."""
    root = tmp_path_factory.mktemp("sftp_root")
    (root / SFTP_FOLDER).mkdir()
    with sftp_server(root) as srv:
        yield srv


@pytest.fixture(scope="module")
def smb_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmbServer]:
    """One smbd for the module, sharing a folder that contains casemis/."""
    share_dir = tmp_path_factory.mktemp("smb_share")
    (share_dir / SMB_FOLDER).mkdir()
    with smb_server(share_dir) as srv:
        yield srv


def set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> None:
    """Define an Airflow connection through its AIRFLOW_CONN_<ID> env var (JSON form)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


def sftp_conn_fields(srv: SftpServer, **overrides: Any) -> dict[str, Any]:
    """The SFTP connection a district admin would create for ``srv``."""
    fields: dict[str, Any] = {
        "conn_type": "sftp",
        "host": srv.host,
        "port": srv.port,
        "login": srv.username,
        "password": srv.password,
        "extra": {"host_key": srv.host_key_public},
    }
    fields.update(overrides)
    return fields


def smb_conn_fields(srv: SmbServer, **overrides: Any) -> dict[str, Any]:
    """The SMB connection a district admin would create for ``srv``."""
    fields: dict[str, Any] = {
        "conn_type": "samba",
        "host": srv.host,
        "port": srv.port,
        "login": srv.username,
        "password": srv.password,
        "schema": srv.share,
        "extra": {"auth_protocol": "ntlm"},
    }
    fields.update(overrides)
    return fields


@dataclass
class Location:
    """A source under test plus the local folder that backs it (where the test writes files)."""

    kind: str
    source: Source
    folder: Path
    secret: str | None
    description: str


def _empty(folder: Path) -> Path:
    """Remove the files a previous test left in a shared server folder."""
    for child in folder.iterdir():
        child.unlink()
    return folder


@pytest.fixture(params=["local", "smb", "sftp"])
def location(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Location:
    """Each of the three interchangeable sources, built with make_source as the DAG does."""
    kind = request.param
    if kind == "local":
        folder = tmp_path / "drop"
        folder.mkdir()
        return Location(kind, make_source("local", path=str(folder)), folder, None, f"folder {folder}")
    if kind == "smb":
        srv: SmbServer = request.getfixturevalue("smb_srv")
        set_conn(monkeypatch, SMB_CONN, **smb_conn_fields(srv))
        unc = rf"\\{srv.host}\{srv.share}\{SMB_FOLDER}"
        source = make_source("smb", conn_id=SMB_CONN, unc_path=unc)
        description = rf"SMB \\{srv.host}\{srv.share}\{SMB_FOLDER} (port {srv.port})"
        return Location(kind, source, _empty(srv.share_dir / SMB_FOLDER), srv.password, description)
    sftp: SftpServer = request.getfixturevalue("sftp_srv")
    set_conn(monkeypatch, SFTP_CONN, **sftp_conn_fields(sftp))
    source = make_source("sftp", conn_id=SFTP_CONN, directory=f"/{SFTP_FOLDER}")
    description = f"SFTP {sftp.host}:{sftp.port} /{SFTP_FOLDER}"
    return Location(kind, source, _empty(sftp.root / SFTP_FOLDER), sftp.password, description)


def sample_bytes(size: int, seed: int = 7) -> bytes:
    """Deterministic CSV-ish bytes of ``size`` bytes (several copy chunks for large sizes)."""
    line = f"SSID{seed:04d},LocalID,2026-09-01,Speech,Resource Specialist Program\r\n".encode()
    return (line * (size // len(line) + 1))[:size]


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (r"\\myserver\myshare\casemis", ("myserver", "myshare", "casemis")),
        (r"\\myserver\myshare\casemis\inbox\\", ("myserver", "myshare", "casemis/inbox")),
        ("//myserver/myshare/casemis", ("myserver", "myshare", "casemis")),
        (r"\\myserver\myshare", ("myserver", "myshare", "")),
        (r"  //10.1.2.3/sped$/vendor\drop ", ("10.1.2.3", "sped$", "vendor/drop")),
    ],
)
def test_parse_unc_splits_server_share_and_folder(path: str, expected: tuple[str, str, str]) -> None:
    assert parse_unc(path) == expected


@pytest.mark.parametrize(
    "path", [r"\\server", "//server/", r"C:\data\casemis", "server/share", r"\\s\sh\..\x"]
)
def test_parse_unc_rejects_non_unc_paths(path: str) -> None:
    with pytest.raises(SourceConfigError):
        parse_unc(path)


@pytest.mark.parametrize("name", ["", ".", "..", "../etc/passwd", "a/b.csv", r"a\b.csv", "x\x00"])
def test_check_name_refuses_paths(name: str) -> None:
    with pytest.raises(SourceConfigError):
        check_name(name)


def test_make_source_builds_each_kind_and_refuses_typos(tmp_path: Path) -> None:
    local = make_source("local", path=str(tmp_path))
    assert isinstance(local, LocalFolderSource)
    assert local.describe() == f"folder {tmp_path}"
    smb = make_source("SMB", conn_id="c", unc_path=r"\\srv\share\dir")
    assert isinstance(smb, SmbSource)
    assert smb.directory == "dir"
    sftp = make_source("sftp", conn_id="c", host="h", port="2222", directory="/outbox", unc_path=None)
    assert isinstance(sftp, SftpSource)
    assert (sftp.host, sftp.port, sftp.directory) == ("h", 2222, "/outbox")
    with pytest.raises(SourceConfigError, match="not one of local, smb, sftp"):
        make_source("ftp")
    with pytest.raises(SourceConfigError, match="unknown setting"):
        make_source("sftp", hostname="h")
    with pytest.raises(SourceConfigError, match="needs a path"):
        make_source("local")


def test_is_stable_compares_size_and_mtime() -> None:
    a1 = FileInfo("tableA.csv", 10, 1000.0)
    b1 = FileInfo("tableB.csv", 20, 1000.0)
    first = make_observation({"tableA.csv": a1, "tableB.csv": b1}, observed_at=0.0)
    same = make_observation({"tableA.csv": a1, "tableB.csv": b1}, observed_at=5.0)
    grown = make_observation({"tableA.csv": FileInfo("tableA.csv", 11, 1000.0), "tableB.csv": b1}, 5.0)
    touched = make_observation({"tableA.csv": FileInfo("tableA.csv", 10, 1001.0), "tableB.csv": b1}, 5.0)
    missing = make_observation({"tableA.csv": a1, "tableB.csv": None}, 5.0)
    assert is_stable(None, first) is False
    assert is_stable(first, same) is True
    assert is_stable(first, grown) is False
    assert is_stable(first, touched) is False
    assert is_stable(first, missing) is False
    assert is_stable(missing, same) is False  # B appeared only now
    assert is_stable(first, same, min_interval=10.0) is False  # observations too close together
    assert is_stable(first, make_observation({}, 5.0)) is False
    # Observations survive a JSON round trip (XCom / state store).
    assert is_stable(json.loads(json.dumps(first)), json.loads(json.dumps(same))) is True


def test_atomic_download_rejects_size_mismatch_and_leaves_no_part(tmp_path: Path) -> None:
    dest = tmp_path / "raw" / "tableA.csv"
    with pytest.raises(SourceIntegrityError, match="reported 11"):
        atomic_download(dest, 11, lambda out: out.write(b"0123456789"))
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []
    digest = atomic_download(dest, 10, lambda out: out.write(b"0123456789"))
    assert digest == sha256(b"0123456789")
    assert dest.read_bytes() == b"0123456789"


def test_is_retryable_separates_transport_errors_from_permanent_ones() -> None:
    assert is_retryable(ConnectionResetError())
    assert is_retryable(EOFError())
    assert is_retryable(TimeoutError())
    assert is_retryable(paramiko.SSHException("Server connection dropped: "))
    assert is_retryable(SourceConnectionError("x"))
    assert is_retryable(SourceIntegrityError("x"))
    assert not is_retryable(paramiko.AuthenticationException("no"))
    assert not is_retryable(SourceAuthError("x"))
    assert not is_retryable(SourceHostKeyError("x"))
    assert not is_retryable(SourceFileMissingError("x"))
    assert not is_retryable(FileNotFoundError())
    assert not is_retryable(PermissionError())
    assert not is_retryable(ValueError())
    assert is_retryable(SMBConnectionClosed("SMB socket was closed"))
    assert is_retryable(SMBOSError(NtStatus.STATUS_SHARING_VIOLATION, "tableA.csv"))  # vendor still writing
    assert not is_retryable(SMBOSError(NtStatus.STATUS_OBJECT_NAME_NOT_FOUND, "tableA.csv"))


# --------------------------------------------------------------------------- all three sources


def test_stat_reports_size_and_mtime(location: Location) -> None:
    data = sample_bytes(5000)
    path = location.folder / "tableA.csv"
    path.write_bytes(data)
    mtime = 1_780_000_000.25
    os.utime(path, (mtime, mtime))

    info = location.source.stat("tableA.csv")

    assert info is not None
    assert info.name == "tableA.csv"
    assert info.size == len(data)
    # SFTP v3 carries whole seconds; SMB and local keep the fraction.
    assert abs(info.mtime - mtime) < (1.0 if location.kind == "sftp" else 1e-3)


def test_stat_of_missing_file_is_none(location: Location) -> None:
    (location.folder / "tableA.csv").write_bytes(b"x")
    assert location.source.stat("tableB.csv") is None
    both = location.source.stat_many(["tableA.csv", "tableB.csv"])
    assert both["tableB.csv"] is None
    assert both["tableA.csv"] == FileInfo("tableA.csv", 1, both["tableA.csv"].mtime)  # type: ignore[union-attr]


def test_fetch_copies_whole_file_with_matching_checksum(location: Location, tmp_path: Path) -> None:
    data = sample_bytes(3 * 1024 * 1024 + 123)  # more than one copy chunk
    (location.folder / "tableB.csv").write_bytes(data)
    dest = tmp_path / "staging" / "raw" / "tableB.csv"

    digest = location.source.fetch("tableB.csv", dest)

    assert digest == sha256(data)
    assert dest.read_bytes() == data
    assert [p.name for p in dest.parent.iterdir()] == ["tableB.csv"]  # no .part left behind


def test_fetch_of_missing_file_raises_and_creates_nothing(location: Location, tmp_path: Path) -> None:
    dest = tmp_path / "raw" / "tableA.csv"
    with pytest.raises(SourceFileMissingError, match="tableA.csv does not exist"):
        location.source.fetch("tableA.csv", dest)
    assert not dest.exists()
    assert not dest.with_name("tableA.csv.part").exists()


def test_growing_file_is_not_stable_until_it_stops_changing(location: Location) -> None:
    path = location.folder / "tableA.csv"
    path.write_bytes(sample_bytes(1000))
    names = ["tableA.csv"]

    ready, first = check_stable(location.source, names, None)
    assert ready is False  # one observation is never enough

    with path.open("ab") as fh:  # the vendor is still writing
        fh.write(sample_bytes(500))
    ready, second = check_stable(location.source, names, first)
    assert ready is False
    assert second["files"]["tableA.csv"]["size"] == 1500

    ready, third = check_stable(location.source, names, second)
    assert ready is True
    assert json.loads(json.dumps(third)) == third  # safe to keep in XCom between pokes


def test_wait_until_stable_waits_for_a_real_writer(location: Location) -> None:
    path = location.folder / "tableB.csv"
    path.write_bytes(b"")
    chunks, pause = 8, 0.06
    finished = threading.Event()

    def vendor_upload() -> None:
        for _ in range(chunks):
            time.sleep(pause)
            with path.open("ab") as fh:
                fh.write(sample_bytes(100))
        finished.set()

    writer = threading.Thread(target=vendor_upload)
    writer.start()
    try:
        result = wait_until_stable(location.source, ["tableB.csv"], interval=0.25, timeout=15)
        done_when_returned = finished.is_set()
    finally:
        writer.join()

    assert done_when_returned, "reported stable while the file was still being written"
    assert result is not None
    assert result["tableB.csv"].size == chunks * 100


def test_wait_until_stable_gives_up_after_timeout(location: Location) -> None:
    start = time.monotonic()
    assert wait_until_stable(location.source, ["tableA.csv"], interval=0.1, timeout=0.35) is None
    assert time.monotonic() - start < 5


def test_describe_names_the_place_without_secrets(location: Location) -> None:
    text = location.source.describe()
    assert text == location.description
    if location.secret:
        assert location.secret not in text


# --------------------------------------------------------------------------- SFTP specifics


def test_sftp_wrong_password_is_a_clear_auth_error(
    sftp_srv: SftpServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "Wrong-Pass-Word-123"
    set_conn(monkeypatch, SFTP_CONN, **sftp_conn_fields(sftp_srv, password=wrong))
    source = SftpSource(SFTP_CONN, directory=SFTP_FOLDER)
    sleeps: list[float] = []
    caplog.set_level(logging.DEBUG)

    with pytest.raises(SourceAuthError) as info:
        fetch_with_retry(source, "tableA.csv", Path("/nonexistent/never"), sleep=sleeps.append)

    message = str(info.value)
    assert "authentication failed" in message
    assert f"'{SFTP_CONN}'" in message
    assert wrong not in message
    assert sftp_srv.password not in message
    assert wrong not in caplog.text
    assert sleeps == []  # a wrong password is never retried


def test_sftp_mismatched_host_key_is_refused_with_fix(
    sftp_srv: SftpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    other_key = public_key_line(asyncssh.generate_private_key("ssh-ed25519"))
    set_conn(monkeypatch, SFTP_CONN, **sftp_conn_fields(sftp_srv, extra={"host_key": other_key}))

    with pytest.raises(SourceHostKeyError) as info:
        SftpSource(SFTP_CONN, directory=SFTP_FOLDER).stat("tableA.csv")

    message = str(info.value)
    assert (
        f"host key of {sftp_srv.host}:{sftp_srv.port} is not the one in connection '{SFTP_CONN}'" in message
    )
    assert "`host_key` extra" in message
    assert "no_host_key_check: true" in message
    assert sftp_srv.host_key_public in message  # tells the admin what the server offers
    assert sftp_srv.password not in message


def test_sftp_unknown_host_key_is_refused(sftp_srv: SftpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, SFTP_CONN, **sftp_conn_fields(sftp_srv, extra={}))
    with pytest.raises(SourceHostKeyError, match="is unknown"):
        SftpSource(SFTP_CONN, directory=SFTP_FOLDER).stat("tableA.csv")


def test_sftp_explicit_no_host_key_check_connects(
    sftp_srv: SftpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn(monkeypatch, SFTP_CONN, **sftp_conn_fields(sftp_srv, extra={"no_host_key_check": True}))
    (sftp_srv.root / SFTP_FOLDER / "tableA.csv").write_bytes(b"abc")
    info = SftpSource(SFTP_CONN, directory=SFTP_FOLDER).stat("tableA.csv")
    assert info is not None
    assert info.size == 3


def test_sftp_config_host_and_port_override_the_connection(
    sftp_srv: SftpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn(monkeypatch, SFTP_CONN, **sftp_conn_fields(sftp_srv, host="sftp.invalid", port=1))
    (sftp_srv.root / SFTP_FOLDER / "tableA.csv").write_bytes(b"abcd")
    source = make_source(
        "sftp", conn_id=SFTP_CONN, host=sftp_srv.host, port=sftp_srv.port, directory="outbox"
    )
    assert source.describe() == f"SFTP {sftp_srv.host}:{sftp_srv.port} outbox"
    info = source.stat("tableA.csv")
    assert info is not None
    assert info.size == 4


def test_sftp_missing_directory_is_a_config_error(
    sftp_srv: SftpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn(monkeypatch, SFTP_CONN, **sftp_conn_fields(sftp_srv))
    with pytest.raises(SourceConfigError, match="'/nope' does not exist"):
        SftpSource(SFTP_CONN, directory="/nope").stat("tableA.csv")


def test_sftp_dropped_connection_is_retried_and_file_is_whole(
    sftp_srv: SftpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    set_conn(monkeypatch, SFTP_CONN, **sftp_conn_fields(sftp_srv))
    data = sample_bytes(2 * 1024 * 1024, seed=3)
    (_empty(sftp_srv.root / SFTP_FOLDER) / "tableA.csv").write_bytes(data)
    dest = tmp_path / "raw" / "tableA.csv"
    drops_before = sftp_srv.drops
    sftp_srv.drop_next_transfer(after_bytes=300_000)  # the server cuts the TCP link mid-file, once
    caplog.set_level(logging.INFO, logger="casemis.sources")

    digest = fetch_with_retry(
        make_source("sftp", conn_id=SFTP_CONN, directory=SFTP_FOLDER),
        "tableA.csv",
        dest,
        attempts=3,
        backoff=0.01,
    )

    assert sftp_srv.drops == drops_before + 1  # the drop really happened
    assert digest == sha256(data)
    assert dest.read_bytes() == data
    assert [p.name for p in dest.parent.iterdir()] == ["tableA.csv"]  # no .part
    assert "attempt 1/3" in caplog.text
    assert "attempt 2/3" in caplog.text
    assert sftp_srv.password not in caplog.text


def test_sftp_connection_dropping_every_time_gives_up_and_keeps_old_file(
    sftp_srv: SftpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_conn(monkeypatch, SFTP_CONN, **sftp_conn_fields(sftp_srv))
    data = sample_bytes(1024 * 1024, seed=4)
    (_empty(sftp_srv.root / SFTP_FOLDER) / "tableB.csv").write_bytes(data)
    dest = tmp_path / "raw" / "tableB.csv"
    dest.parent.mkdir()
    dest.write_bytes(b"previous import\n")
    drops_before = sftp_srv.drops
    sftp_srv.drop_next_transfer(after_bytes=100_000)
    sleeps: list[float] = []

    def sleep_and_rearm(seconds: float) -> None:
        sleeps.append(seconds)
        sftp_srv.drop_next_transfer(after_bytes=100_000)  # the link dies on every attempt

    source = SftpSource(SFTP_CONN, directory=SFTP_FOLDER)
    with pytest.raises(SourceConnectionError, match="failed 3 times"):
        fetch_with_retry(source, "tableB.csv", dest, attempts=3, backoff=0.01, sleep=sleep_and_rearm)

    assert sftp_srv.drops == drops_before + 3
    assert sleeps == [0.01, 0.02]
    assert dest.read_bytes() == b"previous import\n"  # never half-replaced
    assert [p.name for p in dest.parent.iterdir()] == ["tableB.csv"]


# --------------------------------------------------------------------------- SMB specifics


def test_smb_wrong_password_is_a_clear_auth_error(
    smb_srv: SmbServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "Wrong-Pass-Word-456"
    set_conn(monkeypatch, SMB_CONN, **smb_conn_fields(smb_srv, password=wrong))
    source = SmbSource(SMB_CONN, rf"\\{smb_srv.host}\{smb_srv.share}\{SMB_FOLDER}")
    sleeps: list[float] = []
    caplog.set_level(logging.DEBUG)

    with pytest.raises(SourceAuthError) as info:
        fetch_with_retry(source, "tableA.csv", Path("/nonexistent/never"), sleep=sleeps.append)

    message = str(info.value)
    assert "SMB authentication failed" in message
    assert f"'{SMB_CONN}'" in message
    assert wrong not in message
    assert smb_srv.password not in message
    assert wrong not in caplog.text
    assert sleeps == []


def test_smb_unc_path_overrides_connection_host_and_share(
    smb_srv: SmbServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_conn(
        monkeypatch, SMB_CONN, **smb_conn_fields(smb_srv, host="fileserver.invalid", schema="nosuchshare")
    )
    data = sample_bytes(777)
    (_empty(smb_srv.share_dir / SMB_FOLDER) / "tableA.csv").write_bytes(data)
    for unc in (
        rf"\\{smb_srv.host}\{smb_srv.share}\{SMB_FOLDER}",
        f"//{smb_srv.host}/{smb_srv.share}/{SMB_FOLDER}",
    ):
        source = SmbSource(SMB_CONN, unc)
        assert source.fetch("tableA.csv", tmp_path / "a.csv") == sha256(data)


def test_smb_connection_host_and_share_used_without_unc(
    smb_srv: SmbServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn(monkeypatch, SMB_CONN, **smb_conn_fields(smb_srv))
    (smb_srv.share_dir / "root.csv").write_bytes(b"12345")
    try:
        info = SmbSource(SMB_CONN).stat("root.csv")
    finally:
        (smb_srv.share_dir / "root.csv").unlink()
    assert info is not None
    assert info.size == 5


def test_smb_missing_share_or_folder_is_a_config_error(
    smb_srv: SmbServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn(monkeypatch, SMB_CONN, **smb_conn_fields(smb_srv))
    with pytest.raises(SourceConfigError, match="share 'nosuchshare' does not exist"):
        SmbSource(SMB_CONN, rf"\\{smb_srv.host}\nosuchshare\x").stat("tableA.csv")
    with pytest.raises(SourceConfigError, match="folder 'nofolder' does not exist"):
        SmbSource(SMB_CONN, rf"\\{smb_srv.host}\{smb_srv.share}\nofolder").stat("tableA.csv")


def test_smb_unreachable_server_is_retried_then_reported(
    smb_srv: SmbServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_conn(monkeypatch, SMB_CONN, **smb_conn_fields(smb_srv, port=free_port()))  # nothing listens there
    sleeps: list[float] = []
    with pytest.raises(SourceConnectionError, match="failed 2 times") as info:
        fetch_with_retry(
            SmbSource(SMB_CONN),
            "tableA.csv",
            tmp_path / "a.csv",
            attempts=2,
            backoff=0.01,
            sleep=sleeps.append,
        )
    assert "cannot reach SMB server" in str(info.value.__cause__)
    assert sleeps == [0.01]


def test_undefined_connection_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_CASEMIS_NOT_THERE", raising=False)
    with pytest.raises(SourceError, match="casemis_not_there"):
        SmbSource("casemis_not_there").stat("tableA.csv")
    with pytest.raises(SourceError, match="casemis_not_there"):
        SftpSource("casemis_not_there").stat("tableA.csv")


def test_local_missing_folder_is_not_mistaken_for_missing_files(tmp_path: Path) -> None:
    with pytest.raises(SourceConfigError, match="is the share mounted"):
        LocalFolderSource(tmp_path / "unmounted").stat("tableA.csv")


def test_smb_dropped_connection_is_retried_and_file_is_whole(
    smb_srv: SmbServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    set_conn(monkeypatch, SMB_CONN, **smb_conn_fields(smb_srv))
    data = sample_bytes(24 * 1024 * 1024, seed=5)  # big enough to take a few hundred ms over SMB
    (_empty(smb_srv.share_dir / SMB_FOLDER) / "tableA.csv").write_bytes(data)
    dest = tmp_path / "raw" / "tableA.csv"
    part = dest.with_name("tableA.csv.part")
    existing = smb_srv.child_pids()  # smbd helpers and earlier clients: not ours to cut
    killed: list[int] = []
    stop = threading.Event()

    def cut_link_mid_transfer() -> None:
        """Once bytes are arriving in the .part file, kill the smbd child serving this client."""
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline:
            if part.exists() and part.stat().st_size > 0:
                ours = smb_srv.child_pids() - existing
                smb_srv.drop_connections(ours)
                killed.extend(ours)
                return
            time.sleep(0.001)

    caplog.set_level(logging.INFO, logger="casemis.sources")
    cutter = threading.Thread(target=cut_link_mid_transfer)
    cutter.start()
    try:
        source = SmbSource(SMB_CONN, rf"\\{smb_srv.host}\{smb_srv.share}\{SMB_FOLDER}")
        digest = fetch_with_retry(source, "tableA.csv", dest, attempts=3, backoff=0.01)
    finally:
        stop.set()
        cutter.join()

    assert killed, "the connection was never cut"
    assert "attempt 1/3" in caplog.text  # the first attempt failed and was retried
    assert digest == sha256(data)
    assert dest.read_bytes() == data
    assert [p.name for p in dest.parent.iterdir()] == ["tableA.csv"]
