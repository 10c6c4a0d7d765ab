"""kill -9 at random points, then rerun: the result is bit-identical to an uninterrupted run and no
results file is ever lost or damaged.

Each command runs as a real `eqprop` subprocess (its own session, one thread like the in-process
reference) and is SIGKILLed at a random time after it starts training; the rerun is the command
again with --resume when a checkpoint exists (reproduce: the same command, which resumes by
itself). After every kill each results file present must parse (JSON, CSV, checkpoint, PNG);
at the end the checkpoints (weights, biases, particles, random streams, statistics, history) and
metrics.json / metrics.csv / config.json / summary.json equal the uninterrupted run's, wall-clock
seconds and the folder name aside, and the same files exist.

CI: one kill per command (train, train --seeds, spice-train), ~30 s. EQPROP_KILLS=N: N kills per
command, chained (a rerun is killed again at a random point of the epochs left, once more after
the last epoch is saved, then completed; then a fresh chain), and `reproduce table1` (4 runs in 2
lockstep groups) joins; EQPROP_KILL_SEED fixes the kill times. Results: docs/reliability.md.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from eqprop_cli.main import main as eqprop_main

REPO = Path(__file__).resolve().parents[1]
KILLS = int(os.environ.get("EQPROP_KILLS", "1"))
SEED = int(os.environ.get("EQPROP_KILL_SEED", str(int.from_bytes(os.urandom(4), "little"))))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
START_TIMEOUT_S = 120  # imports (torch ~5 s on a slow disk) and data loading before training starts
PNG_HEAD, PNG_TAIL = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


@dataclasses.dataclass
class Command:
    name: str
    argv: Callable[[Path], list[str]]  # the command for a results folder
    checkpoints: Callable[[Path], list[Path]]
    run_dirs: Callable[[Path], list[Path]]  # folders holding a run's metrics.json
    resume_flag: bool = True  # reruns add --resume once a checkpoint exists (reproduce resumes by itself)


EULER_SMALL = ["--free-steps", "40", "--nudged-steps", "6", "--quiet"]
COMMANDS = {
    "train": Command(
        "train", lambda o: ["train", "--dataset", "wine", "--hidden", "8", "--epochs", "5", *EULER_SMALL,
                            "--out", str(o)],
        lambda o: [o / "checkpoint.pt"], lambda o: [o]),
    "train-seeds": Command(
        "train-seeds", lambda o: ["train", "--dataset", "iris", "--hidden", "6", "--seeds", "0,1,2", "--epochs", "5",
                                  *EULER_SMALL, "--out", str(o)],
        lambda o: [o / "checkpoint.pt"], lambda o: [o / f"s{s}" for s in (0, 1, 2)]),
    "spice-train": Command(
        "spice-train", lambda o: ["spice-train", "--dataset", "xor", "--hidden", "2", "--epochs", "6", "--quiet",
                                  "--out", str(o)],
        lambda o: [o / "checkpoint.pt"], lambda o: [o]),
    "reproduce": Command(
        "reproduce", lambda o: ["reproduce", "table1", "--only", "wine", "--epochs", "3", "--train-limit", "40",
                                "--test-limit", "10", "--out", str(o)],
        lambda o: sorted((o / "batched").glob("*.pt")), lambda o: sorted(o.glob("wine-*/s0")),
        resume_flag=False),
}
CI_COMMANDS = ["train", "train-seeds", "spice-train"]


def rerun_argv(cmd: Command, out: Path) -> list[str]:
    argv, cks = cmd.argv(out), cmd.checkpoints(out)
    return argv + ["--resume"] if cmd.resume_flag and cks and all(p.exists() for p in cks) else argv


# -- reading results back -------------------------------------------------------------------------
def _strip(obj, drop=("seconds", "cpu_seconds", "out", "coupling_chosen")):
    """A results file's content without wall-clock and CPU seconds, the results folder's name and the solver
    description's ``coupling_chosen`` (what this process relaxed with so far: a run resumed after its last epoch
    relaxes nothing; the choices themselves are the checkpoint's ``coupling_choices``, compared in full)."""
    if isinstance(obj, dict):
        return {k: _strip(v, drop) for k, v in obj.items() if k not in drop}
    if isinstance(obj, list):
        return [_strip(v, drop) for v in obj]
    return obj


def _csv_rows(path: Path) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(path.read_text())))
    assert rows and all(len(r) == len(rows[0]) for r in rows), f"{path}: ragged or empty CSV"
    keep = [i for i, h in enumerate(rows[0]) if h not in ("seconds", "cpu_seconds")]
    return [[r[i] for i in keep] for r in rows]


def check_readable(out: Path) -> dict:
    """Every results file in ``out`` parses; returns counts (files checked, temp files left by a kill)."""
    n, tmp = 0, 0
    for p in sorted(out.rglob("*")):
        if not p.is_file() or p.name == ".lock":
            continue
        if p.name.endswith(".tmp"):  # a write the kill interrupted: never under the result's name
            tmp += 1
            continue
        n += 1
        assert p.stat().st_size > 0, f"{p} is empty"
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".csv":
            _csv_rows(p)
        elif p.suffix == ".pt":
            ck = torch.load(p, weights_only=False)
            assert {"W", "b", "history", "configs"} <= set(ck), f"{p}: incomplete checkpoint"
        elif p.suffix == ".png":
            data = p.read_bytes()
            assert data.startswith(PNG_HEAD) and data.endswith(PNG_TAIL), f"{p}: truncated PNG"
    return {"files": n, "tmp": tmp}


def _equal(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(set(a) ^ set(b))} differ"
        for k in a:
            _equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _equal(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        pass  # e.g. the std of an infinite log-spread: NaN in both runs
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def compare(cmd: Command, ref: Path, out: Path) -> None:
    """``out`` holds exactly the run ``ref`` holds: checkpoints, metrics, configs, summary, same files."""
    for rc, oc in zip(cmd.checkpoints(ref), cmd.checkpoints(out), strict=True):
        a, b = torch.load(rc, weights_only=False), torch.load(oc, weights_only=False)
        _equal(_strip(a), _strip(b), oc.name)
    for rd, od in zip(cmd.run_dirs(ref), cmd.run_dirs(out), strict=True):
        for name in ("metrics.json", "config.json"):
            _equal(_strip(json.loads((rd / name).read_text())), _strip(json.loads((od / name).read_text())),
                   str(od / name))
        assert _csv_rows(rd / "metrics.csv") == _csv_rows(od / "metrics.csv"), f"{od}/metrics.csv differs"
    if (ref / "summary.json").exists():
        _equal(_strip(json.loads((ref / "summary.json").read_text())),
               _strip(json.loads((out / "summary.json").read_text())), "summary.json")

    def files(root):  # plots: the in-process runs skip per-run plots (tests/conftest.py)
        return {p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.suffix != ".png"
                and p.name != ".lock" and not p.name.endswith(".tmp")}
    assert files(ref) == files(out), f"files differ: {sorted(map(str, files(ref) ^ files(out)))}"


# -- running --------------------------------------------------------------------------------------
def run_in_process(argv: list[str]) -> float:
    t0 = time.perf_counter()
    assert eqprop_main(argv) == 0, f"eqprop {' '.join(argv)} failed"
    return time.perf_counter() - t0


def _stamp(path: Path):
    try:
        st = path.stat()
        return st.st_ino, st.st_mtime_ns
    except FileNotFoundError:
        return None


def run_and_kill(argv: list[str], started: list[Path], delay: float, log: Path) -> bool:
    """Start `eqprop argv`, SIGKILL its whole session ``delay`` s after it (re)writes one of ``started``
    (runs' config.json: written once the imports, data and checkpoint are loaded and the epochs begin);
    True if the kill hit a live process, False if the command finished first (it must have succeeded)."""
    before = [_stamp(p) for p in started]
    with open(log, "ab") as f:
        f.write(f"\n$ eqprop {' '.join(argv)}   (kill {delay:.2f} s into the work)\n".encode())
        f.flush()
        proc = subprocess.Popen([sys.executable, "-m", "eqprop_cli.main", *argv], cwd=REPO, env=ENV, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        t0 = time.monotonic()
        while all(_stamp(p) in (None, b) for p, b in zip(started, before)) and proc.poll() is None:
            assert time.monotonic() - t0 < START_TIMEOUT_S, f"eqprop {argv[0]} did not start: {log.read_text()}"
            time.sleep(0.005)
        deadline = time.monotonic() + delay
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        if proc.poll() is not None:
            assert proc.returncode == 0, f"eqprop {' '.join(argv)} failed:\n{log.read_text()[-3000:]}"
            return False
        os.killpg(proc.pid, 9)  # the command and its ngspice workers, at once
        proc.wait()
        return True
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()


def saved_epochs(checkpoints: list[Path], none: bool = False):
    """Epochs all ``checkpoints`` hold (a missing one: 0; or None with ``none`` when none exists yet)."""
    held = [len(torch.load(c, weights_only=False)["history"][0]) if c.exists() else 0 for c in checkpoints]
    return None if none and not any(c.exists() for c in checkpoints) else min(held)


def training_seconds(run_dirs: list[Path]) -> float:
    """Seconds the epochs of a finished run took (lockstep trials share theirs)."""
    total = 0.0
    for d in run_dirs:
        m = json.loads((d / "metrics.json").read_text())
        total += sum(e["seconds"] for e in m["epochs"]) / m["trials"]
    return total


def kill_chains(cmd: Command, tmp: Path, kills: int, rng: random.Random) -> dict:
    """``kills`` real SIGKILLs of ``cmd``. A chain starts fresh and is killed, rerun and killed again at
    random points of the epochs left, once more after the last epoch is saved (plots, summaries), then
    completed (in this process) and compared with the uninterrupted run; then the next chain."""
    ref = tmp / "reference"
    run_in_process(cmd.argv(ref))
    names = [c.relative_to(ref) for c in cmd.checkpoints(ref)]  # the checkpoints a complete run has
    configs = [d.relative_to(ref) / "config.json" for d in cmd.run_dirs(ref)]
    work = training_seconds(cmd.run_dirs(ref))  # the epochs alone: imports and data loading come before
    epochs = saved_epochs([ref / n for n in names])
    stats = {"command": " ".join(cmd.argv(Path("OUT"))), "kills": 0, "chains": 0, "finished_before_kill": 0,
             "tmp_files_seen": 0, "max_files_checked": 0, "epochs_s": round(work, 2), "epochs_saved_at_kill": []}
    log = tmp / "kills.log"
    while stats["kills"] < kills:
        out = tmp / f"chain{stats['chains']}"
        stats["chains"] += 1
        done = False
        while not done and stats["kills"] < kills:
            saved = saved_epochs([out / n for n in names])
            if saved == epochs and stats["epochs_saved_at_kill"][-1:] == [epochs]:
                break  # the end phase was hit once in this chain: complete it, start the next
            delay = rng.uniform(0.0, work * (1.0 - saved / epochs) + 0.3)
            if run_and_kill(rerun_argv(cmd, out), [out / c for c in configs], delay, log):
                stats["kills"] += 1
                seen = check_readable(out)
                # where the kill landed: epochs the checkpoint(s) held afterwards (None: before the first)
                stats["epochs_saved_at_kill"].append(saved_epochs([out / n for n in names], none=True))
                stats["tmp_files_seen"] += seen["tmp"]
                stats["max_files_checked"] = max(stats["max_files_checked"], seen["files"])
            else:
                stats["finished_before_kill"] += 1
                done = True
        if not done:
            run_in_process(rerun_argv(cmd, out))
        check_readable(out)
        assert not list(out.rglob("*.tmp")), "a rerun left temp files of a killed run behind"
        compare(cmd, ref, out)
    return stats


@pytest.mark.parametrize("name", CI_COMMANDS + ["reproduce"])
def test_kill_9_then_rerun_is_bit_identical(name, tmp_path, capsys):
    if name == "reproduce" and KILLS <= 1:
        pytest.skip("reproduce table1 (4 runs, plots, summary): with EQPROP_KILLS=N only")
    if name == "spice-train":
        pytest.importorskip("circuits.spice_solver")
        import shutil
        if shutil.which("ngspice") is None:
            pytest.skip("ngspice not installed")
    rng = random.Random(f"{SEED}-{name}")
    stats = kill_chains(COMMANDS[name], tmp_path, KILLS, rng)
    with capsys.disabled():
        print(f"\n[kill -9] {name} (EQPROP_KILL_SEED={SEED}): {json.dumps(stats)}")
    assert stats["kills"] == KILLS
