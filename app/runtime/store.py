"""The run store: one SQLite database (WAL) per run folder, written only by the driver.

Four tables: ``meta`` (the experiment config and run facts), ``trials`` (one row per
trial: assignment, canonical hash, status, metrics, reward, timings, error, worker,
attempts, whether its feedback reached the strategy), ``events`` (the strategy's
history, append-only, exactly as :meth:`Strategy.state` lists it) and ``job_steps`` (one
JSON record per finished step of a strategy's search job, :mod:`nasir.runtime.jobs`). A
trial's result and the strategy events it caused are written in one transaction, so after
any crash — ``kill -9`` included — the store holds a consistent prefix of the run.

>>> import tempfile
>>> st = RunStore.create(tempfile.mkdtemp(), {"seed": 1})
>>> tid = st.add_trial({"x": 1}, "h1", events=[{"event": "propose", "n": 1}])
>>> st.finish_trial(tid, "done", metrics={"accuracy": 0.5}, reward=0.5, worker="w0")
>>> st.trial(tid)["status"], st.trial(tid)["metrics"], len(st.events())
('done', {'accuracy': 0.5}, 1)
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nasir.errors import StoreError

__all__ = ["DB_NAME", "STATUSES", "RunStore", "json_safe"]

DB_NAME = "run.sqlite"
#: pending: proposed, not started; running: sent to a worker; done / failed / infeasible: final
STATUSES = ("pending", "running", "done", "failed", "infeasible")
FINAL = ("done", "failed", "infeasible")

_JOB_TABLE = """CREATE TABLE IF NOT EXISTS job_steps (name TEXT NOT NULL, step INTEGER NOT NULL,
    record TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (name, step))"""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    assignment TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    metrics TEXT,
    reward REAL,
    error TEXT,
    worker TEXT,
    cached_from INTEGER,
    fed INTEGER NOT NULL DEFAULT 0,
    proposed_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    eval_s REAL
);
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, trial INTEGER, event TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS trials_hash ON trials(hash);
""" + _JOB_TABLE + ";\n"


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats turned into ``None`` and numpy scalars into Python ones.

    >>> json_safe({"a": float("nan"), "b": [1.5, float("inf")]})
    {'a': None, 'b': [1.5, None]}
    """
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and not isinstance(obj, str | bytes):
        try:
            obj = obj.item()
        except (TypeError, ValueError):
            return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _dumps(obj: Any) -> str:
    return json.dumps(json_safe(obj), sort_keys=True)


class RunStore:
    """A run's SQLite database. Use :meth:`create` for a new run, :meth:`open` for an old one."""

    def __init__(self, folder: str, conn: sqlite3.Connection) -> None:
        self.folder = folder
        self.conn = conn

    # -- opening -----------------------------------------------------------------------------
    @staticmethod
    def _connect(path: str) -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @classmethod
    def create(cls, folder: str, config: Mapping[str, Any]) -> RunStore:
        """Make ``folder`` (must not hold a run yet) and a fresh store in it."""
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, DB_NAME)
        if os.path.exists(path):
            raise StoreError(f"{folder} already holds a run", where=path,
                             hint="use `nasir resume` to continue it, or pick another --run-dir")
        conn = cls._connect(path)
        conn.executescript(_SCHEMA)
        st = cls(folder, conn)
        with st._tx():
            st._set_meta_raw("config", _dumps(config))
            st._set_meta_raw("created", _dumps(time.time()))
            st._set_meta_raw("status", _dumps("created"))
        return st

    @classmethod
    def open(cls, folder: str) -> RunStore:
        """Open an existing run folder (or the database file itself)."""
        if os.path.isfile(folder) and folder.endswith(DB_NAME):
            folder = os.path.dirname(folder) or "."
        path = os.path.join(folder, DB_NAME)
        if not os.path.exists(path):
            raise StoreError(f"{folder} is not a nasir run folder (no {DB_NAME})", where=folder,
                             hint="list runs with `nasir runs`")
        try:
            conn = cls._connect(path)
            conn.execute("SELECT 1 FROM trials LIMIT 1")
        except sqlite3.OperationalError:
            # a read-only folder or file (or a full disk): open it read-only, so that
            # `nasir show/runs/report` still work; writes then raise StoreError
            conn = cls._read_only(path)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot read the run store: {e}", where=path) from None
        return cls(folder, conn)

    @staticmethod
    def _read_only(path: str) -> sqlite3.Connection:
        # mode=ro needs the WAL's -shm file; on a read-only filesystem without it, nobody
        # can be writing, so the file is opened as immutable
        err: sqlite3.Error | None = None
        for query in ("mode=ro", "immutable=1"):
            try:
                conn = sqlite3.connect(f"file:{urllib.parse.quote(path)}?{query}", uri=True,
                                       timeout=30.0,
                                       isolation_level=None)
                conn.row_factory = sqlite3.Row
                conn.execute("SELECT 1 FROM trials LIMIT 1")
                return conn
            except sqlite3.DatabaseError as e:
                err = e
        raise StoreError(f"cannot read the run store: {err}", where=path)

    def close(self) -> None:
        """Close the connection (checkpoints the WAL)."""
        self.conn.close()

    def _tx(self):
        return _Transaction(self.conn, os.path.join(self.folder, DB_NAME))

    # -- meta ----------------------------------------------------------------------------------
    def _set_meta_raw(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def set_meta(self, key: str, value: Any) -> None:
        """Store one JSON value under ``key``."""
        with self._tx():
            self._set_meta_raw(key, _dumps(value))

    def meta(self, key: str, default: Any = None) -> Any:
        """Read one meta value."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row["value"])

    @property
    def config(self) -> dict[str, Any]:
        """The experiment config the run was created with."""
        return dict(self.meta("config", {}))

    # -- trials --------------------------------------------------------------------------------
    def add_trial(self, assignment: Mapping[str, Any], hash_: str,
                  events: Sequence[Mapping[str, Any]] = ()) -> int:
        """Record a proposed trial and the strategy events of its proposal; returns its id."""
        with self._tx():
            cur = self.conn.execute(
                "INSERT INTO trials(hash, assignment, status, proposed_at) VALUES (?, ?, ?, ?)",
                (hash_, _dumps(dict(assignment)), "pending", time.time()))
            tid = int(cur.lastrowid or 0)
            self._add_events(tid, events)
        return tid

    def _add_events(self, trial: int | None, events: Iterable[Mapping[str, Any]]) -> None:
        self.conn.executemany("INSERT INTO events(trial, event) VALUES (?, ?)",
                              [(trial, json.dumps(dict(ev), sort_keys=True)) for ev in events])

    def start_trial(self, tid: int, worker: str | None = None) -> None:
        """Mark a trial as sent to a worker (counts one attempt)."""
        with self._tx():
            self.conn.execute("UPDATE trials SET status='running', attempts=attempts+1, "
                              "started_at=?, worker=COALESCE(?, worker) WHERE id=?",
                              (time.time(), worker, tid))

    def finish_trial(self, tid: int, status: str, *, metrics: Mapping[str, Any] | None = None,
                     reward: float | None = None, error: str | None = None,
                     worker: str | None = None, eval_s: float | None = None,
                     cached_from: int | None = None) -> None:
        """Record a trial's final result."""
        if status not in FINAL:
            raise StoreError(f"bad final status {status!r}", hint=f"one of {', '.join(FINAL)}")
        r = reward if reward is not None and math.isfinite(reward) else None
        with self._tx():
            self.conn.execute(
                "UPDATE trials SET status=?, metrics=?, reward=?, error=?, "
                "worker=COALESCE(?, worker), finished_at=?, eval_s=?, cached_from=? WHERE id=?",
                (status, _dumps(metrics or {}), r, error, worker, time.time(), eval_s,
                 cached_from, tid))

    def mark_fed(self, tid: int, events: Sequence[Mapping[str, Any]]) -> None:
        """Record that the trial's feedback reached the strategy, with the events it caused."""
        with self._tx():
            self.conn.execute("UPDATE trials SET fed=1 WHERE id=?", (tid,))
            self._add_events(tid, events)

    def reset_unfinished(self) -> list[int]:
        """Set trials that were running when the driver died back to pending; their ids."""
        rows = self.conn.execute(
            "SELECT id FROM trials WHERE status IN ('pending', 'running') ORDER BY id").fetchall()
        with self._tx():
            self.conn.execute("UPDATE trials SET status='pending' WHERE status='running'")
        return [int(r["id"]) for r in rows]

    def objective_rows(self, keys: Sequence[str]) -> list[dict[str, Any]]:
        """Finished, non-cached trials as light dicts (``id``, ``hash``, ``status``,
        ``reward`` and ``metrics`` holding only ``keys``), read with SQLite's
        ``json_extract`` instead of decoding every trial's JSON in Python — what the Pareto
        front of a 100,000-trial run needs."""
        cols = ", ".join("json_extract(metrics, ?)" for _ in keys)
        paths = ['$."' + k.replace('"', '""') + '"' for k in keys]
        rows = self.conn.execute(
            f"SELECT id, hash, reward{', ' + cols if keys else ''} FROM trials "
            "WHERE status='done' AND cached_from IS NULL ORDER BY id", paths).fetchall()
        return [{"id": r[0], "hash": r[1], "status": "done", "reward": r[2],
                 "metrics": {k: r[3 + i] for i, k in enumerate(keys)}} for r in rows]

    def trials_by_id(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        """Full trials for ``ids`` (in id order)."""
        out: list[dict[str, Any]] = []
        ids = sorted({int(i) for i in ids})
        for k in range(0, len(ids), 500):
            chunk = ids[k:k + 500]
            q = ",".join("?" * len(chunk))
            out += [self._row(r) for r in self.conn.execute(
                f"SELECT * FROM trials WHERE id IN ({q}) ORDER BY id", chunk)]
        return out

    def last_trials(self, n: int) -> list[dict[str, Any]]:
        """The ``n`` most recent trials, in id order."""
        rows = self.conn.execute("SELECT * FROM trials ORDER BY id DESC LIMIT ?",
                                 (int(n),)).fetchall()
        return [self._row(r) for r in reversed(rows)]

    @staticmethod
    def _row(r: sqlite3.Row) -> dict[str, Any]:
        d = dict(r)
        d["assignment"] = json.loads(d["assignment"])
        d["metrics"] = json.loads(d["metrics"]) if d["metrics"] else {}
        return d

    def trial(self, tid: int) -> dict[str, Any]:
        """One trial as a dict."""
        r = self.conn.execute("SELECT * FROM trials WHERE id=?", (tid,)).fetchone()
        if r is None:
            raise StoreError(f"no trial {tid}", where=self.folder)
        return self._row(r)

    def trials(self, status: str | None = None) -> list[dict[str, Any]]:
        """All trials in id order (optionally only one status)."""
        if status is None:
            rows = self.conn.execute("SELECT * FROM trials ORDER BY id").fetchall()
        else:
            rows = self.conn.execute("SELECT * FROM trials WHERE status=? ORDER BY id",
                                     (status,)).fetchall()
        return [self._row(r) for r in rows]

    def finished_by_hash(self, hash_: str) -> dict[str, Any] | None:
        """The first successfully finished trial with this canonical hash, if any."""
        r = self.conn.execute("SELECT * FROM trials WHERE hash=? AND status='done' "
                              "AND cached_from IS NULL ORDER BY id LIMIT 1", (hash_,)).fetchone()
        return None if r is None else self._row(r)

    def counts(self) -> dict[str, int]:
        """Number of trials per status."""
        rows = self.conn.execute("SELECT status, COUNT(*) AS n FROM trials GROUP BY status")
        out = dict.fromkeys(STATUSES, 0)
        out.update({r["status"]: int(r["n"]) for r in rows})
        return out

    def best(self) -> dict[str, Any] | None:
        """The finished trial with the highest reward."""
        r = self.conn.execute("SELECT * FROM trials WHERE status='done' AND reward IS NOT NULL "
                              "ORDER BY reward DESC, id LIMIT 1").fetchone()
        return None if r is None else self._row(r)

    # -- strategy events -------------------------------------------------------------------------
    def add_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Append strategy events that belong to no trial (e.g. a finished job's)."""
        with self._tx():
            self._add_events(None, events)

    # -- search jobs -----------------------------------------------------------------------------
    def add_job_step(self, name: str, step: int, record: Mapping[str, Any]) -> None:
        """Record step ``step`` of job ``name`` (replacing a row of that step, if any)."""
        with self._tx():
            self.conn.execute(_JOB_TABLE)  # stores made before jobs existed lack the table
            self.conn.execute("INSERT OR REPLACE INTO job_steps(name, step, record, at) "
                              "VALUES (?, ?, ?, ?)", (name, int(step), _dumps(record),
                                                      time.time()))

    def drop_job_steps(self, name: str, first: int) -> None:
        """Forget the rows of job ``name`` from step ``first`` on (beyond its checkpoint)."""
        if self.job_steps(name):
            with self._tx():
                self.conn.execute("DELETE FROM job_steps WHERE name=? AND step>=?",
                                  (name, int(first)))

    def job_steps(self, name: str | None = None) -> list[dict[str, Any]]:
        """Job step rows (``name``, ``step``, ``record``, ``at``), by job then step."""
        q, args = "SELECT * FROM job_steps", []
        if name is not None:
            q, args = q + " WHERE name=?", [name]
        try:
            rows = self.conn.execute(q + " ORDER BY name, step", args).fetchall()
        except sqlite3.OperationalError:  # no such table: a store from before jobs
            return []
        return [dict(r) | {"record": json.loads(r["record"])} for r in rows]

    def events(self) -> list[dict[str, Any]]:
        """The strategy history, in order."""
        rows = self.conn.execute("SELECT event FROM events ORDER BY seq").fetchall()
        return [json.loads(r["event"]) for r in rows]


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK`` on error) on an autocommit connection.

    A write SQLite refuses (disk full, read-only folder or file, I/O error) rolls back and
    becomes a :class:`StoreError`: the store keeps every transaction committed before it.
    """

    def __init__(self, conn: sqlite3.Connection, path: str = DB_NAME) -> None:
        self.conn = conn
        self.path = path

    def _error(self, e: sqlite3.Error) -> StoreError:
        return StoreError(f"cannot write the run store: {e}", where=self.path,
                          hint="free disk space or make the run folder writable; everything "
                               "recorded so far is kept, and `nasir resume RUN` continues")

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise self._error(e) from None
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
                return
            except sqlite3.OperationalError as e:
                exc = e
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error:  # the write already failed; keep its error
            pass
        if isinstance(exc, sqlite3.OperationalError):
            raise self._error(exc) from None
