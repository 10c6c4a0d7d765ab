"""What every sub-command checks before any work: numeric flags (argparse types whose errors
name the flag) and output paths (a results folder or a report file that can be written)."""
from __future__ import annotations

import argparse
import errno
import math
import os
import tempfile
from pathlib import Path


# -- numeric flags (argparse prefixes "argument --flag: ") -----------------------------------
def _number(text: str, kind=float):
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None
    if kind is float and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return v


def positive_int(text: str) -> int:
    v = _number(text, int)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return v


def nonneg_int(text: str) -> int:
    v = _number(text, int)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return v


def finite_float(text: str) -> float:
    return _number(text)


def positive_float(text: str) -> float:
    v = _number(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return v


def nonneg_float(text: str) -> float:
    v = _number(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return v


def nonzero_float(text: str) -> float:
    v = _number(text)
    if v == 0:
        raise argparse.ArgumentTypeError(f"must be non-zero, got {text!r}")
    return v


def probability(text: str) -> float:
    v = _number(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text!r}")
    return v


# -- output paths ------------------------------------------------------------------------
def _why(e: OSError, path: Path) -> str:
    """An OS error on creating ``path``, in a user's words."""
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return f"{blocker} is a file, not a folder"
    if e.errno == errno.ENOENT:
        return "cannot create a folder there (no such file or directory)"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "not writable (" + (e.strerror or "permission denied").lower() + ")"
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    return (e.strerror or str(e)).lower() if e.strerror else str(e)


def results_folder(path, flag: str = "--out") -> Path:
    """Create the results folder ``path`` (and its parents) and prove a file can be written in it;
    ValueError naming the flag and the path otherwise. Run before any work."""
    if path is None or not str(path).strip():
        raise ValueError(f"{flag}: empty path; give a results folder")
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{flag} {path}: {_why(e, path)}") from None
    return path


def output_file(path, flag: str = "--out") -> Path:
    """A file the command will write at its end: not a folder, its folder created and writable.
    Run before any work, so a bad path does not lose the result of a long run."""
    if path is None or not str(path).strip():
        raise ValueError(f"{flag}: empty path; give a file name")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a folder; give a file name")
    results_folder(path.parent, f"{flag} {path}: folder")
    return path
