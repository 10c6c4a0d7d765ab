"""What a run leaves in its folder: config.json, metrics.json/csv, dw_mean.npy and plots.

Every file is written to a unique temporary name beside it and renamed into place, so a
kill or a full disk never leaves a truncated file where a finished one was.
"""
from __future__ import annotations

import csv
import dataclasses
import fcntl
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

# a run may be resumed with more epochs, from a moved folder, on another device
RUN_MAY_CHANGE = ("epochs", "out", "device")
# ... and with another arrangement of the same arithmetic, or other resources (polish: the SPICE fixed point
# found by a cold .op or by the reload agree to < 1e-10, and a cold one is kept only where it is that one;
# rest_tol: a transient at rest below it was that fixed point to <= 7.2e-10 on iris, session 13; max_step and
# settle_trtol: how the settled transients step to that fixed point, the same one to 3e-11, session 14;
# on_unsettled and max_extend: what happens to a transient still moving after its extensions; the unsettled
# transient's error says to resume with "warn" or more extensions, which change only the transients that used up
# the old count, none of which a "raise" run had met before it stopped; session 15)
SOLVER_MAY_CHANGE = ("coupling", "engine", "cuda_graph", "tf32", "workers", "timeout", "recycle_after",
                     "coupling_chosen", "polish", "rest_tol", "max_step", "settle_trtol", "on_unsettled", "max_extend")


@dataclasses.dataclass
class EpochResult:
    epoch: int
    train_error: float
    test_error: float
    rms: list[float]
    seconds: float
    solver: dict = dataclasses.field(default_factory=dict)  # the solver's report (e.g. device state)
    # CPU seconds of the epoch (this process plus the solver's worker processes): on a shared machine
    # the wall seconds above measure the load as much as the run. None in runs recorded before it existed.
    cpu_seconds: float | None = None


_UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it) ...
os.umask(_UMASK)  # ... and put back


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a unique temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would make results unreadable to others
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())  # the data on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunFolderBusy(RuntimeError):
    """Another live process trains into the same results folder."""


class RunLock:
    """An exclusive lock on a results folder for as long as a run writes there.

    flock on ``<folder>/.lock``: the kernel releases it when the holder exits, however it
    exits, so a lock left by a killed run is never stale. The file holds the holder's pid
    for the message a second run gets.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderBusy(f"{self.folder} is in use by another run (pid {holder}); wait for it to finish, "
                                f"or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        for stale in self.folder.glob(".*.tmp"):  # write_atomic's temp files of a killed run: no writer is left
            stale.unlink(missing_ok=True)
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """A matplotlib figure to PNG, atomically like every results file (and closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    plt.close(fig)
    write_atomic(path, buf.getvalue())
    return Path(path)


def write_json(path: str | Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


def run_metrics(run: dict, solver: dict, topology, history: list[EpochResult], mean_rms, log_spread: float,
                mean_abs_dw, task: str, network_given: bool, trial: int = 0, trials: int = 1) -> dict:
    """metrics.json's content for one run (one trial of a Trainer)."""
    return {
        "epochs": [dataclasses.asdict(h) for h in history],
        "log_spread": float(log_spread),
        "mean_rms": [float(v) for v in mean_rms],
        "mean_abs_dw_blocks": [[None if np.isnan(v) else float(v) for v in row] for row in mean_abs_dw],
        "actual_p": topology.info.get("actual_p", 0.0),
        "sizes": list(topology.sizes),
        "n_connections": topology.n_connections,
        "task": task,
        "network_given": network_given,
        "trial": trial,
        "trials": trials,
        "config": run,
        "solver": solver,
    }


def write_run_outputs(m: dict, out: str | Path, dw_full: np.ndarray | None = None, plots: bool = True) -> None:
    """A run's files: metrics.json, metrics.csv, dw_mean.npy (if kept) and plots."""
    out = Path(out)
    write_json(out / "metrics.json", m)
    buf = io.StringIO()
    w = csv.writer(buf)
    nb = len(m["mean_rms"])
    w.writerow(["epoch", "train_error", "test_error", "seconds", "cpu_seconds"] + [f"rms_{l}" for l in range(nb)])
    for h in m["epochs"]:
        cpu = h.get("cpu_seconds")
        w.writerow([h["epoch"], h["train_error"], h["test_error"], h["seconds"], "" if cpu is None else cpu]
                   + list(h["rms"]))
    write_atomic(out / "metrics.csv", buf.getvalue())
    if dw_full is not None:
        b = io.BytesIO()
        np.save(b, dw_full.astype(np.float32))
        write_atomic(out / "dw_mean.npy", b.getvalue())
    if plots:
        from .plots import plot_run  # matplotlib only when writing outputs
        plot_run(m, out)


def config_diff(old: dict, new: dict, may_change=RUN_MAY_CHANGE) -> dict:
    """Keys in which a recorded config differs from ``new`` (those a resume may not change)."""
    keys = set(old) | set(new)
    return {k: (old.get(k), new.get(k)) for k in sorted(keys) if old.get(k) != new.get(k) and k not in may_change}


def read_metrics(path: str | Path) -> dict:
    """A metrics.json, or an error naming the file when it is damaged."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is damaged ({e}); delete it to retrain that run, or rerun with --restart") from None
