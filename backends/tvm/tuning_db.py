"""A persistent MetaSchedule tuning database per target, keyed by workload.

One folder per target under ``$NASIR_CACHE_DIR/tuning`` (default ``~/.cache/nasir/tuning``):
its name carries a fingerprint of the target dict (with the core count MetaSchedule tunes
for) and of the TVM version, so records never leak between targets or TVM builds. Inside,
one JSON file per workload — a fused TIR function, named by MetaSchedule's structural hash —
holds the workload, its best records (``top_k``) and how it was tuned. Every candidate,
worker and run of that target reads the same files, so a workload is tuned once and every
later network that contains it compiles from the database.

Concurrency: a file is replaced atomically (write a temporary file, ``os.replace``), so a
reader never sees half a record; writers of the same workload hold an ``flock`` on its lock
file and merge what is there, so two processes never lose each other's records, and
:meth:`TuningDatabase.claim` lets a tuner hold a workload while it tunes it (a second
tuner waits, then finds it done).

>>> import tempfile
>>> db = TuningDatabase("host", tempfile.mkdtemp())
>>> len(db), db.has("123")
(0, False)
>>> db.target_json()["kind"]
'llvm'
>>> TuningDatabase("host", "/dev/null/tuning")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
nasir.errors.StoreError: cannot use tuning database folder /dev/null/tuning/...
  where: /dev/null/tuning
  fix:   give a writable folder (--tuning-db) or set NASIR_CACHE_DIR to one
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from nasir.backends.tvm.targets import TargetSpec, resolve_target
from nasir.backends.tvm.user_cache import cache_dir
from nasir.errors import StoreError

__all__ = ["FORMAT", "WANTED_MAX_BYTES", "TuningDatabase", "default_tuning_root",
           "ms_target_config"]

#: version of the workload files' layout (and of the wanted list's lines)
FORMAT = 1
#: the wanted list stops growing at this size (appends are skipped until a tuner takes it)
WANTED_MAX_BYTES = 16 << 20


def default_tuning_root() -> str:
    """``$NASIR_CACHE_DIR/tuning`` (default ``~/.cache/nasir/tuning``)."""
    return os.path.join(cache_dir(), "tuning")


def ms_target_config(spec: TargetSpec) -> dict[str, Any]:
    """The target dict MetaSchedule tunes for: ``spec.config`` plus ``num-cores`` (the
    physical core count) for CPU targets, which sizes the parallel loops of a schedule.

    >>> ms_target_config(resolve_target({"kind": "llvm", "mcpu": "skylake",
    ...                                  "num-cores": 4}))["num-cores"]
    4
    """
    cfg = dict(spec.config)
    if spec.kind == "llvm" and "num-cores" not in cfg:
        import psutil

        cfg["num-cores"] = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    return cfg


def _tvm_version() -> str:
    from importlib import metadata

    try:  # the installed distribution's version, without importing TVM
        return metadata.version("apache-tvm")
    except metadata.PackageNotFoundError:
        import tvm

        return str(tvm.__version__)


def _fingerprint(cfg: Mapping[str, Any]) -> str:
    blob = json.dumps({"format": FORMAT, "target": cfg, "tvm": _tvm_version()},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _folder_name(cfg: Mapping[str, Any], fp: str) -> str:
    what = cfg.get("mcpu") or cfg.get("mtriple") or cfg.get("arch") or "generic"
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(what))
    return f"{cfg['kind']}-{safe}-{fp}"


class TuningDatabase:
    """The tuning records of one target, in a folder shared by every process that tunes or
    compiles for it.

    ``target``: anything :func:`~nasir.backends.tvm.targets.resolve_target` takes;
    ``root``: the folder holding one sub-folder per target (default
    :func:`default_tuning_root`); ``top_k``: records kept per workload. A folder that cannot
    be created or written raises :class:`~nasir.errors.StoreError`. ``cost_model``: the
    MetaSchedule cost model workloads missing here are tuned with when a compile asks for
    ``auto`` (``xgb``, ``random``, ``none``; ``auto``: ``xgb`` when ``xgboost`` is
    installed).
    """

    def __init__(self, target: str | Mapping[str, Any] | TargetSpec = "host",
                 root: str | None = None, *, top_k: int = 5, cost_model: str = "auto") -> None:
        self.spec = resolve_target(target)
        self.config = ms_target_config(self.spec)
        self.fingerprint = _fingerprint(self.config)
        self.root = os.path.abspath(root or default_tuning_root())
        self.path = os.path.join(self.root, _folder_name(self.config, self.fingerprint))
        self.top_k = int(top_k)
        self.cost_model = cost_model
        self._parsed: dict[str, tuple[float, dict[str, Any]]] = {}
        self._held: set[str] = set()  # keys this instance has claimed (flock is per open)
        try:
            os.makedirs(os.path.join(self.path, "workloads"), exist_ok=True)
            os.makedirs(os.path.join(self.path, "locks"), exist_ok=True)
            info = os.path.join(self.path, "target.json")
            if not os.path.exists(info):
                self._write_json(info, {"format": FORMAT, "target": self.config,
                                        "fingerprint": self.fingerprint})
            if not os.access(self.path, os.W_OK):
                raise PermissionError(f"{self.path} is not writable")
        except OSError as e:
            raise StoreError(f"cannot use tuning database folder {self.path}: "
                             f"{e.strerror or e}", where=root or self.root,
                             hint="give a writable folder (--tuning-db) or set "
                                  "NASIR_CACHE_DIR to one") from None

    def __repr__(self) -> str:
        return f"TuningDatabase({self.path!r})"

    def target_json(self) -> dict[str, Any]:
        """The target dict the records were tuned for."""
        return dict(self.config)

    def _file(self, key: str) -> str:
        if not key.isdigit():
            raise StoreError(f"bad workload key {key!r}", where=self.path,
                             hint="keys are MetaSchedule structural hashes (digits)")
        return os.path.join(self.path, "workloads", f"{key}.json")

    def keys(self) -> list[str]:
        """Keys of the workloads the database knows (tuned, or tried without a result)."""
        d = os.path.join(self.path, "workloads")
        return sorted(f[:-5] for f in os.listdir(d) if f.endswith(".json") and f[:-5].isdigit())

    def __len__(self) -> int:
        return len(self.keys())

    def has(self, key: str) -> bool:
        """Whether workload ``key`` has been tuned (or tried) for this target."""
        return os.path.exists(self._file(key))

    def read(self, key: str) -> dict[str, Any]:
        """The stored entry of ``key``: ``workload``, ``records`` (MetaSchedule JSON, best
        first), ``trials``, ``tuning_s``, ``cost_model``, ``task``. A file that is not such an
        entry raises :class:`~nasir.errors.StoreError` naming it."""
        path = self._file(key)
        try:
            mtime = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            raise StoreError(f"workload {key} is not in the tuning database", where=path,
                             hint="tune it first (trials_per_workload > 0)") from None
        hit = self._parsed.get(key)
        if hit is not None and hit[0] == mtime:
            return hit[1]
        try:
            with open(path, encoding="utf-8") as fh:
                entry = json.load(fh)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self._corrupt(path, str(e)) from None
        if (not isinstance(entry, dict) or entry.get("format") != FORMAT
                or entry.get("key") != key or not isinstance(entry.get("workload"), list)
                or not isinstance(entry.get("records"), list)):
            raise self._corrupt(path, "not a nasir tuning record of this format")
        self._parsed[key] = (mtime, entry)
        return entry

    def _corrupt(self, path: str, why: str) -> StoreError:
        return StoreError(f"corrupt tuning record: {why}", where=path,
                          hint="delete the file; its workload is tuned again when next needed")

    def save(self, key: str, workload: Any, records: Iterable[Any], *, task: str = "",
             trials: int = 0, tuning_s: float = 0.0, cost_model: str = "") -> dict[str, Any]:
        """Merge ``records`` (MetaSchedule JSON, each ``[trace, run_secs, target, args]``)
        into ``key``'s entry under its lock and write it atomically; keeps the ``top_k``
        fastest. Returns the entry written."""
        with self._locked(key):
            old = self.read(key) if self.has(key) else None
            recs = list(records) + (old["records"] if old else [])
            seen: set[str] = set()
            uniq = []
            for r in sorted(recs, key=_mean_secs):
                tag = json.dumps(r[0], sort_keys=True)
                if tag not in seen and _mean_secs(r) < float("inf"):
                    seen.add(tag)
                    uniq.append(r)
            entry = {"format": FORMAT, "key": key, "task": task or (old or {}).get("task", ""),
                     "workload": workload, "records": uniq[:self.top_k],
                     "trials": int(trials) + int((old or {}).get("trials", 0)),
                     "tuning_s": float(tuning_s) + float((old or {}).get("tuning_s", 0.0)),
                     "cost_model": cost_model or (old or {}).get("cost_model", ""),
                     "updated": time.time()}
            self._write_json(self._file(key), entry)
        return entry

    def _write_json(self, path: str, obj: Any) -> None:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(obj, fh)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def _locked(self, key: str, timeout_s: float | None = None) -> Iterator[None]:
        with self.claim([key], timeout_s=timeout_s):
            yield

    @contextlib.contextmanager
    def claim(self, keys: Iterable[str], *, timeout_s: float | None = None) -> Iterator[None]:
        """Hold the locks of ``keys`` (taken in sorted order, so two claimers never
        deadlock); another process claiming one of them waits. ``timeout_s`` (default: no
        limit) raises :class:`~nasir.errors.StoreError` when a lock is not had in time."""
        import fcntl

        held: list[int] = []
        mine: list[str] = []
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            for key in sorted(set(keys) - self._held):
                self._file(key)  # checks the key
                fd = os.open(os.path.join(self.path, "locks", f"{key}.lock"),
                             os.O_CREAT | os.O_RDWR, 0o644)
                held.append(fd)
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | (0 if deadline is None
                                                         else fcntl.LOCK_NB))
                        break
                    except BlockingIOError:
                        if time.monotonic() > (deadline or 0.0):
                            raise StoreError(f"workload {key} stayed locked for {timeout_s} s",
                                             where=self.path,
                                             hint="another process is tuning it; wait or "
                                                  "give a longer timeout") from None
                        time.sleep(0.1)
                self._held.add(key)
                mine.append(key)
            yield
        finally:
            self._held.difference_update(mine)
            for fd in held:
                os.close(fd)  # closing releases the flock

    @property
    def wanted_path(self) -> str:
        """The wanted list: JSON lines, one per network whose workloads a compile found
        missing and nobody tuned yet (``{"format", "graph", "keys", "batch"}``; ``graph``:
        the network's nasir JSON, :func:`~nasir.serialize.graph_to_json`)."""
        return os.path.join(self.path, "wanted.jsonl")

    @contextlib.contextmanager
    def _wanted_lock(self) -> Iterator[None]:
        import fcntl

        fd = os.open(os.path.join(self.path, "wanted.lock"), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def add_wanted(self, entries: Iterable[Mapping[str, Any]]) -> int:
        """Append ``entries`` (each ``{"graph": ..., "keys": [...], "batch": n}``) to the
        wanted list under its lock, one line each, written whole; returns how many were
        written (0 once the list holds :data:`WANTED_MAX_BYTES`).

        >>> import tempfile
        >>> db = TuningDatabase("host", tempfile.mkdtemp())
        >>> db.add_wanted([{"graph": {}, "keys": ["12"], "batch": 1}])
        1
        >>> [e["keys"] for e in db.take_wanted()], db.take_wanted()
        ([['12']], [])
        """
        lines = [json.dumps({"format": FORMAT, "graph": e["graph"],
                             "keys": [str(k) for k in e["keys"]],
                             "batch": int(e.get("batch", 1))}) + "\n" for e in entries]
        if not lines:
            return 0
        try:
            with self._wanted_lock():
                with contextlib.suppress(FileNotFoundError):
                    if os.path.getsize(self.wanted_path) >= WANTED_MAX_BYTES:
                        return 0
                fd = os.open(self.wanted_path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
                try:
                    os.write(fd, "".join(lines).encode())
                finally:
                    os.close(fd)
        except OSError as e:
            raise StoreError(f"cannot write the wanted list: {e.strerror or e}",
                             where=self.wanted_path,
                             hint="give a writable tuning database folder") from None
        return len(lines)

    def take_wanted(self) -> list[dict[str, Any]]:
        """Read and empty the wanted list under its lock (the taker now owns its work; two
        tuners starting together never both take it). A line that is not such an entry
        raises :class:`~nasir.errors.StoreError` naming the file and line; the file is then
        moved aside to ``wanted.jsonl.bad`` so later runs are not stopped by it."""
        path = self.wanted_path
        try:
            with self._wanted_lock():
                try:
                    with open(path, encoding="utf-8") as fh:
                        text = fh.read()
                except FileNotFoundError:
                    return []
                except UnicodeDecodeError as e:
                    os.replace(path, path + ".bad")
                    raise self._bad_wanted(path, 1, str(e)) from None
                out = []
                for no, line in enumerate(text.splitlines(), 1):
                    if not line.strip():
                        continue
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError as e:
                        entry, why = None, str(e)
                    else:
                        why = "not a wanted entry of this format"
                    if not _wanted_entry(entry):
                        os.replace(path, path + ".bad")
                        raise self._bad_wanted(path, no, why)
                    out.append(entry)
                os.unlink(path)
                return out
        except OSError as e:
            raise StoreError(f"cannot read the wanted list: {e.strerror or e}", where=path,
                             hint="give a writable tuning database folder") from None

    def _bad_wanted(self, path: str, line: int, why: str) -> StoreError:
        return StoreError(f"corrupt wanted list (line {line}): {why}; moved to {path}.bad",
                          where=f"{path}:{line}",
                          hint="delete the .bad file; its workloads are queued again by the "
                               "next compile that needs them")

    def load(self, keys: Iterable[str], *, top: int | None = None) -> Any:
        """A MetaSchedule ``MemoryDatabase`` holding the records of ``keys`` found here
        (keys not in the database are skipped); ``top``: only each workload's ``top``
        fastest (a build applies the fastest only, and parsing the others is most of the
        cost of loading)."""
        from tvm.s_tir import meta_schedule as ms

        mem = ms.database.MemoryDatabase()
        for key in keys:
            if not self.has(key):
                continue
            entry = self.read(key)
            if not entry["records"]:
                continue
            path = self._file(key)
            try:
                wl = mem.commit_workload(ms.database.Workload.from_json(entry["workload"]).mod)
                for rec in entry["records"][:top]:
                    mem.commit_tuning_record(ms.database.TuningRecord.from_json(rec, wl))
            except Exception as e:
                lines = str(e).strip().splitlines()
                raise self._corrupt(path, lines[-1] if lines else type(e).__name__) from None
        return mem


def _wanted_entry(e: Any) -> bool:
    return (isinstance(e, dict) and e.get("format") == FORMAT
            and isinstance(e.get("graph"), dict) and isinstance(e.get("batch"), int)
            and isinstance(e.get("keys"), list)
            and all(isinstance(k, str) and k.isdigit() for k in e["keys"]))


def _mean_secs(rec: Any) -> float:
    try:
        secs = [float(s) for s in rec[1]]
    except (TypeError, ValueError, IndexError):
        return float("inf")
    return sum(secs) / len(secs) if secs else float("inf")
