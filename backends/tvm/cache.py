"""Persistent latency cache in SQLite keyed by (canonical hash, target, input shape, batch).

>>> import tempfile, os
>>> from nasir.backends.tvm.measure import LatencyResult
>>> path = os.path.join(tempfile.mkdtemp(), "lat.db")
>>> c = LatencyCache(path)
>>> r = LatencyResult("ok", "host", (3, 8, 8), 1, median_ms=0.5, cv=0.01, graph_key="abc")
>>> c.put(r, "llvm-json")
>>> hit = c.get("abc", "llvm-json", (3, 8, 8), 1)
>>> hit.median_ms, hit.cached, len(c)
(0.5, True, 1)
>>> c.get("abc", "llvm-json", (3, 8, 8), 2) is None
True
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import replace
from typing import Any

from nasir.backends.tvm.measure import LatencyResult
from nasir.backends.tvm.user_cache import cache_dir
from nasir.errors import StoreError

__all__ = ["LatencyCache", "default_cache_path"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS latency (
    graph_key   TEXT NOT NULL,
    target      TEXT NOT NULL,
    input_shape TEXT NOT NULL,
    batch       INTEGER NOT NULL,
    result      TEXT NOT NULL,
    created     REAL NOT NULL,
    PRIMARY KEY (graph_key, target, input_shape, batch)
)
"""


def default_cache_path() -> str:
    """``$NASIR_CACHE_DIR/latency.sqlite`` (default ``~/.cache/nasir``)."""
    return os.path.join(cache_dir(), "latency.sqlite")


def _shape(shape: Any) -> str:
    return "x".join(str(int(s)) for s in shape)


class LatencyCache:
    """A SQLite table of successful :class:`LatencyResult` s; safe across runs and threads."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or default_cache_path()
        d = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(d, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            self._db.execute(_SCHEMA)
            self._db.commit()
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open latency cache {self.path}: {e}",
                             hint="set NASIR_CACHE_DIR to a writable folder") from None
        self._lock = threading.Lock()

    def get(self, graph_key: str, target: str, input_shape: Any, batch: int
            ) -> LatencyResult | None:
        """The stored result, marked ``cached=True``, or ``None``."""
        with self._lock:
            row = self._db.execute(
                "SELECT result FROM latency WHERE graph_key=? AND target=? AND input_shape=? "
                "AND batch=?", (graph_key, target, _shape(input_shape), int(batch))).fetchone()
        if row is None:
            return None
        d = json.loads(row[0])
        d["input_shape"] = tuple(d["input_shape"])
        d["times_ms"] = tuple(d["times_ms"])
        return replace(LatencyResult(**d), cached=True)

    def put(self, result: LatencyResult, target: str) -> None:
        """Store a successful result under its key (failures are never cached)."""
        if not result.ok:
            return
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO latency VALUES (?, ?, ?, ?, ?, ?)",
                (result.graph_key, target, _shape(result.input_shape), int(result.batch),
                 json.dumps(result.to_json()), time.time()))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM latency").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        self._db.close()
