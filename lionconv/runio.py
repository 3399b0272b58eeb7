"""Run folders on disk: atomic writes, run identity, provenance, checkpoints.

Every file a run writes goes through `atomic_write`: the bytes land in a temporary file in the
same folder, are fsynced, and are renamed over the target. A kill at any instant therefore leaves
either the old file or the new one, never a torn one.
"""
from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import functools
import hashlib
import io
import json
import math
import os
import platform
import socket
import subprocess
import sys
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

# Top-level config keys that say where, how fast or how verbosely a run is written, not what it
# computes (a resumed or re-threaded run is bit-identical): they are left out of the run identity,
# the run-folder name (conf/config.yaml's override_dirname.exclude_keys must list exactly these;
# tests/test_robust.py checks it) and the loader's de-duplication. `experiment`/`preset` name the preset that
# set the other keys, which are hashed themselves; `run_id` is what config.yaml adds.
BOOKKEEPING_KEYS = ("out_dir", "sweep_name", "restart", "progress", "checkpoint_every",
                    "checkpoint_seconds", "name", "tags", "threads", "experiment", "preset", "run_id")
NON_IDENTITY_KEYS = BOOKKEEPING_KEYS  # the former name
# Keys that vary within one experiment family (replicates, horizons, logging, placement) on top of
# the bookkeeping ones: the analysis groups runs over the remaining keys.
NOT_FAMILY_KEYS = frozenset(BOOKKEEPING_KEYS) | {"seed", "steps", "device", "log", "hydra"}

DONE_STATUSES = ("finished", "diverged")
# A folder moved aside (`restart=true`, or a run whose files were corrupt) is named
# `<run>.<reason>-<time>`; it is kept for inspection and is never a result.
ASIDE_REASONS = ("replaced", "broken")
_ASIDE = re.compile(r"\.(%s)-\d{8}-\d{6}" % "|".join(ASIDE_REASONS))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Files get the user's umask (mkstemp alone would make every result file 0600).
FILE_MODE = 0o666 & ~_umask()


def is_aside(name: str) -> bool:
    """True for a folder name that `move_aside` produced."""
    return _ASIDE.search(name) is not None


def move_aside(run_dir: Path, reason: str) -> Path:
    """Rename `run_dir` to `<name>.<reason>-<time>[-n]` (nothing is deleted); returns the new path."""
    assert reason in ASIDE_REASONS, reason
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = run_dir.with_name(f"{run_dir.name}.{reason}-{stamp}")
    n = 1
    while aside.exists():
        aside = run_dir.with_name(f"{run_dir.name}.{reason}-{stamp}-{n}")
        n += 1
    run_dir.rename(aside)
    return aside


class RunLocked(RuntimeError):
    """Another live process holds this run's lock."""


class RunLock:
    """An exclusive OS lock (flock) on `<sweep>/.locks/<run>.lock`, outside the run folder so that
    moving the folder aside keeps it. The kernel drops the lock when its holder dies, so a stale lock is
    simply taken over; lock files are never deleted (deleting one would let two holders in)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir.parent / ".locks" / f"{self.run_dir.name}.lock"
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunLocked(f"{self.run_dir} is being run by another process") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
            self.fd = None


def lock_run_dir(run_dir: Path) -> RunLock:
    """`with lock_run_dir(run_dir): ...` holds the run's lock, or raises RunLocked at once."""
    return RunLock(run_dir)


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def remove_torn_temps(folder: Path) -> list[Path]:
    """Delete the temp files of writes that a kill interrupted: only those of this process or of
    a process that no longer exists (call it holding the run's lock)."""
    removed = []
    for torn in Path(folder).glob(".*.tmp"):
        parts = torn.name.split(".")
        pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None
        if pid is not None and pid != os.getpid() and _alive(pid):
            continue
        torn.unlink(missing_ok=True)
        removed.append(torn)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write `path` by calling `write(fileobj)` on a temp file, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), FILE_MODE)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def json_safe(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as null so every reader can parse the file."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    text = json.dumps(json_safe(obj), indent=2, sort_keys=True, default=_json_default)
    atomic_write(path, lambda f: f.write(text.encode() + b"\n"))


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_parquet(path: str | os.PathLike, frame) -> None:
    """`frame` as pandas' to_parquet writes it (pyarrow, no index), dictionary-encoding only the
    text columns: a run's numeric columns rarely repeat a value, and trying a dictionary on each
    first made writing a 30000-step metrics table 3× slower (and its file 20% larger)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # nthreads=1: a run's table is small, and a thread pool per table costs more than it saves
    table = pa.Table.from_pandas(frame, preserve_index=False, nthreads=1)
    text = [field.name for field in table.schema
            if pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
            or pa.types.is_dictionary(field.type)]
    atomic_write(path, lambda f: pq.write_table(table, f, use_dictionary=text))


def write_torch(path: str | os.PathLike, obj: Any) -> None:
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))


def identity_config(config: dict) -> dict:
    """The part of a resolved config that decides what a run computes (all but BOOKKEEPING_KEYS)."""
    return {k: v for k, v in config.items() if k not in BOOKKEEPING_KEYS}


def run_identity(config: dict) -> str:
    """Hash of the resolved config minus `BOOKKEEPING_KEYS` (sha256, first 12 hex digits); the
    same for the dict read back from a run's config.yaml."""
    kept = identity_config(config)
    blob = json.dumps(kept, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


@functools.lru_cache(maxsize=1)  # once per process: two git calls cost more than a short run
def _git_commit() -> dict:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit or None, "git_dirty": dirty if commit else None}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: str = "cpu") -> dict:
    """What made a result: code version, library versions, hardware, time."""
    import numpy
    import pandas
    import torch

    info = {
        **_git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
    }
    try:
        import hydra

        info["hydra"] = hydra.__version__
    except ImportError:
        pass
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info
