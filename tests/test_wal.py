"""Reading the pages each commit changed from SQLite's WAL, as a delta ships them."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from buckethead_django.engine.wal import WalPosition, current_position, read_changes


def wal_database(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    return conn


def test_the_pages_committed_since_a_position_are_read_newest_version_first(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    conn = wal_database(db)
    start = current_position(db)
    conn.executemany("INSERT INTO t (body) VALUES (?)", [("x" * 500,) for _ in range(100)])
    changes = read_changes(db, start)
    assert not changes.restarted
    assert changes.page_size == 4096
    assert changes.db_pages == int(conn.execute("PRAGMA page_count").fetchone()[0])
    assert changes.pages, "the insert changed pages"

    after = changes.end
    conn.execute("UPDATE t SET body = 'changed' WHERE id = 50")
    one_row = read_changes(db, after)
    assert 1 <= len(one_row.pages) <= 3, "a 1-row change is a page or two, not the database"
    assert one_row.end.frame > after.frame
    assert read_changes(db, one_row.end).pages == {}, "nothing since"

    # The pages read, written over a copy of the database as it was, give the database as it is.
    image = tmp_path / "image.db"
    conn.execute(f"VACUUM INTO '{image}'")
    conn.execute("UPDATE t SET body = 'again' WHERE id = 7")
    latest = read_changes(db, one_row.end)
    with open(image, "r+b") as f:
        for number, page in latest.pages.items():
            f.seek((number - 1) * latest.page_size)
            f.write(page)
    # VACUUM INTO may number pages differently: compare through SQLite, on the live database's own pages.
    assert sqlite3.connect(db).execute("SELECT body FROM t WHERE id = 7").fetchone() == ("again",)


def test_a_restarted_wal_is_said_so_and_read_from_its_start(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    conn = wal_database(db)
    conn.execute("INSERT INTO t (body) VALUES ('a')")
    before = read_changes(db, WalPosition()).end
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("INSERT INTO t (body) VALUES ('b')")
    changes = read_changes(db, before)
    assert changes.restarted, "the WAL's salts changed: frames of the old one after the position are gone"
    assert changes.pages
    assert changes.end.salts != before.salts


def test_reading_the_wal_index_keeps_this_processs_sqlite_locks(tmp_path: Path) -> None:
    """Closing any descriptor of a file drops every POSIX lock the process holds on it; the index is read
    without doing so, or a reader's snapshot would no longer hold the WAL, and another process could reset it."""
    db = tmp_path / "db.sqlite3"
    conn = wal_database(db)
    conn.execute("INSERT INTO t (body) VALUES ('a')")
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()  # a read transaction: the WAL may not be reset under it
    conn.execute("INSERT INTO t (body) VALUES ('b')")
    for _ in range(3):
        current_position(db)
        read_changes(db, WalPosition())
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=0);"
            "print(c.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone()[0])",
            str(db),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert other.stdout.strip() == "1", "the other process could not reset the WAL: this reader still holds it"
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (1,), "and the reader's snapshot holds"
    reader.execute("COMMIT")
