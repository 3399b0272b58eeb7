"""Run folders on disk: atomic writes, run identity, provenance, checkpoints.

Every file a run writes goes through `atomic_write`: the bytes land in a temporary file in the
same folder, are fsynced, and are renamed over the target. A kill at any instant therefore leaves
either the old file or the new one, never a torn one.
"""
from __future__ import annotations

import datetime as _dt
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
import tempfile
from pathlib import Path
from typing import Any, Callable

# Keys that say where or how verbosely a run is written, not what it computes: they do not change
# a run's identity.
NON_IDENTITY_KEYS = ("out_dir", "sweep_name", "restart", "progress", "checkpoint_every",
                     "checkpoint_seconds", "name", "tags")

DONE_STATUSES = ("finished", "diverged")


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write `path` by calling `write(fileobj)` on a temp file, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
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
    atomic_write(path, lambda f: frame.to_parquet(f, engine="pyarrow", index=False))


def write_torch(path: str | os.PathLike, obj: Any) -> None:
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))


def run_identity(config: dict) -> str:
    """Hash of the resolved config minus `NON_IDENTITY_KEYS` (sha256, first 12 hex digits)."""
    kept = {k: v for k, v in config.items() if k not in NON_IDENTITY_KEYS}
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
