"""Open a run's SQLite file read-only while another process may still be creating it."""

import sqlite3
import urllib.parse


def read_only(db: str) -> sqlite3.Connection:
    """A read-only connection to ``db`` (``mode=ro``): unlike a plain ``sqlite3.connect`` it
    never creates the file, which a search starting in that folder would then take for an
    existing run; raises ``sqlite3.OperationalError`` while the file does not exist."""
    return sqlite3.connect(f"file:{urllib.parse.quote(db)}?mode=ro", uri=True, timeout=5)
