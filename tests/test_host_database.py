"""The host's database file and the locks its processes share, with real processes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from buckethead_django.engine.database import (
    SHM_ROOT,
    HostDatabase,
    LocalDir,
    LocalDirError,
    choose_local_dir,
    filesystem_of,
    problems,
)
from buckethead_django.engine.host import Host

ROOT = Path(__file__).resolve().parents[1]


def database(tmp_path: Path) -> HostDatabase:
    db = HostDatabase(tmp_path / "host", busy_timeout=5)
    db.create(None)
    return db


def hold_in_child(directory: Path, what: str) -> subprocess.Popen[str]:
    """A process that takes a host role (``replicator`` or ``member``) in ``directory``, says so, and waits."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from buckethead_django.engine.host import Host
        host = Host({str(directory)!r})
        ok = host.try_become_replicator() if {what!r} == "replicator" else host.join()
        print("held" if ok else "refused", flush=True)
        time.sleep(120)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "held"
    return child


# -- the file ------------------------------------------------------------------------------------


def test_the_file_is_in_wal_mode_and_shared_by_processes(tmp_path: Path) -> None:
    db = database(tmp_path)
    conn = db.connect(autocommit=True)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA synchronous").fetchone() == (1,), "NORMAL"
    conn.execute("CREATE TABLE t (x)")
    watcher = db.connect(autocommit=True)
    before = watcher.execute("PRAGMA data_version").fetchone()
    other = f"import sqlite3; c = sqlite3.connect({str(db.path)!r}); c.execute('INSERT INTO t VALUES (1)'); c.commit()"
    subprocess.run([sys.executable, "-c", other], check=True)
    assert watcher.execute("PRAGMA data_version").fetchone() != before, "a commit in another process is seen"
    assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_a_missing_file_is_never_created_by_a_connection(tmp_path: Path) -> None:
    db = HostDatabase(tmp_path / "host", busy_timeout=5)
    (tmp_path / "host").mkdir()
    with pytest.raises(sqlite3.OperationalError):
        db.connect()
    assert not db.exists(), "only create() makes the file, so nobody writes into a database not yet restored"


def test_a_capture_is_consistent_while_another_process_writes(tmp_path: Path) -> None:
    db = database(tmp_path)
    conn = db.connect(autocommit=True)
    conn.execute("CREATE TABLE t (x INTEGER)")
    writer = textwrap.dedent(
        f"""
        import sqlite3, time
        c = sqlite3.connect({str(db.path)!r}, isolation_level=None, timeout=5)
        for i in range(2000):
            with c:
                c.execute("BEGIN IMMEDIATE")
                c.executemany("INSERT INTO t VALUES (?)", [(i,), (-i,)])
        """
    )
    child = subprocess.Popen([sys.executable, "-c", writer])
    copies = []
    try:
        while child.poll() is None:
            dest = tmp_path / f"copy{len(copies)}.sqlite3"
            db.capture(conn, dest)
            copies.append(dest)
    finally:
        child.wait()
    assert copies
    for dest in copies:
        copy = sqlite3.connect(dest)
        assert copy.execute("SELECT count(*) % 2, coalesce(sum(x), 0) FROM t").fetchone() == (0, 0), (
            "whole transactions only"
        )
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_replacing_the_content_reaches_open_connections_and_converts_page_sizes(tmp_path: Path) -> None:
    db = database(tmp_path)
    reader = db.connect(autocommit=True)
    reader.execute("CREATE TABLE t (x)")
    source = tmp_path / "other.sqlite3"
    other = sqlite3.connect(source)
    other.execute("PRAGMA page_size = 8192")
    other.execute("CREATE TABLE t (x)")
    other.execute("INSERT INTO t VALUES ('restored')")
    other.commit()
    other.close()
    db.replace_with(source)
    assert reader.execute("SELECT x FROM t").fetchall() == [("restored",)]
    assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_the_fingerprint_moves_with_every_commit_and_not_with_reads(tmp_path: Path) -> None:
    db = database(tmp_path)
    conn = db.connect(autocommit=True)
    conn.execute("CREATE TABLE t (x)")
    seen = db.fingerprint()
    conn.execute("SELECT * FROM t").fetchall()
    assert db.fingerprint() == seen
    conn.execute("INSERT INTO t VALUES (1)")
    assert db.fingerprint() != seen


def test_a_damaged_file_fails_its_quick_check(tmp_path: Path) -> None:
    db = database(tmp_path)
    conn = db.connect(autocommit=True)
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(os.urandom(500),) for _ in range(200)])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert db.quick_check() == []
    data = bytearray(db.path.read_bytes())
    data[4096 * 3 : 4096 * 3 + 200] = b"\xff" * 200
    db.path.write_bytes(bytes(data))
    assert db.quick_check() != []


# -- where it lives --------------------------------------------------------------------------------


def test_dev_shm_is_the_default_where_it_has_room(tmp_path: Path) -> None:
    chosen = choose_local_dir(None, "abc", tmp_path)
    if SHM_ROOT.is_dir():
        assert chosen.path == SHM_ROOT / "buckethead-abc"
        assert chosen.ram_backed
    else:
        assert chosen.path == tmp_path / "abc"
    configured = choose_local_dir(tmp_path / "mine", "abc", tmp_path)
    assert configured.path == tmp_path / "mine"
    assert configured.reason.startswith("configured")


def test_a_directory_too_small_or_on_a_network_is_refused_with_the_fix(tmp_path: Path) -> None:
    local = LocalDir(tmp_path, filesystem_of(tmp_path), "configured (LOCAL_DIR)")
    assert problems(local) == []
    (too_small,) = problems(local, needed_bytes=10**15)
    assert "--shm-size" in too_small
    (network,) = problems(LocalDir(tmp_path, "nfs4", "configured (LOCAL_DIR)"))
    assert "nfs4" in network
    assert "local directory" in network


def test_a_directory_without_write_permission_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    tmp_path.chmod(0o755)
    local = LocalDir(locked / "db", "ext4", "configured (LOCAL_DIR)")
    if os.getuid() != 0:
        found = problems(local)
    else:  # no permission stops root: ask as another user, in a forked child
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.setgid(65534)
                os.setuid(65534)
                os.write(write, "\n".join(problems(local)).encode())
            except BaseException as exc:  # noqa: BLE001 - reported to the parent, whatever it is
                os.write(write, repr(exc).encode())
            os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        with os.fdopen(read) as answer:
            found = [answer.read()]
    assert any("cannot be created or written" in message for message in found), found


def test_a_directory_another_user_made_is_refused(tmp_path: Path) -> None:
    trap = tmp_path / "elsewhere"
    trap.mkdir()
    (tmp_path / "host").symlink_to(trap)
    with pytest.raises(LocalDirError, match="not a directory of this user"):
        HostDatabase(tmp_path / "host", busy_timeout=5).create(None)


# -- the locks -------------------------------------------------------------------------------------


def test_one_replicator_per_host_and_another_takes_over_when_it_dies(tmp_path: Path) -> None:
    first = hold_in_child(tmp_path, "replicator")
    try:
        host = Host(tmp_path)
        assert not host.try_become_replicator(), "a live process holds the role"
        info = host.replicator()
        assert info is not None
        assert (info.pid, info.running, info.ready) == (first.pid, True, False)
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert not host.replicator().running  # type: ignore[union-attr]
        deadline = time.monotonic() + 5
        while not host.try_become_replicator() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert host.is_replicator, "the kernel released the dead process's lock"
        assert host.replicator().pid == os.getpid()  # type: ignore[union-attr]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_the_last_member_knows_it_is_the_last(tmp_path: Path) -> None:
    host = Host(tmp_path)
    assert host.join()
    other = hold_in_child(tmp_path, "member")
    try:
        assert not Host(tmp_path).claim_alone(), "another member is there"
        other.terminate()
        other.wait()
        assert host.claim_alone(), "the only member left can hold the lock alone"
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
    host.leave()


def test_a_forked_child_does_not_inherit_the_role(tmp_path: Path) -> None:
    host = Host(tmp_path)
    assert host.try_become_replicator()
    pid = os.fork()
    if pid == 0:  # the child: it must not hold the parent's lock, and cannot take it while the parent does
        os._exit(0 if not Host(tmp_path).try_become_replicator() else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    host.leave()
    assert Host(tmp_path).try_become_replicator(), "released when the holder leaves"


def test_a_local_dir_under_a_file_is_a_problem_named_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    local = LocalDir(tmp_path / "a-file" / "db", "ext4", "configured (LOCAL_DIR)")
    (found,) = problems(local, needed_bytes=1024)
    assert f"'{tmp_path / 'a-file'}' is a file, not a directory" in found
    assert "point LOCAL_DIR at a directory" in found
