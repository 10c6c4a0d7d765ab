"""Fidelity of the hybrid free phase over a longer run (issue 15; docs/free-phase.md).

Table 1 / Fig 4's MNIST net (784-100x5-10, lr 0.015, batch 20, 1000/12 steps, sequential nudge),
MLFF and small-world p 0.1, on the first 6,000 training and 2,000 test examples for 10 epochs:
the reference's fixed 1000 free steps against the hybrid (50 Euler steps, then layer-wise
Gauss-Seidel/SOR to |ds| < 1e-6), same seeds (topology, initial weights, batch order and beta
signs). Faithful means: the test-error and log-spread curves overlap within the seed spread.

    eqprop reproduce free-phase-fidelity --seeds 3 --workers 2      # 12 runs
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from eqprop.config import EulerConfig, RunConfig
from eqprop.metrics import log_spread

from .common import Run
from .plotting import curves

PAPER: dict = {}  # not a paper figure: the reference is the comparison
TOL = 1e-6
TRAIN, TEST = 6000, 2000
METHODS = {"reference": EulerConfig(free_steps=1000, nudged_steps=12),
           "hybrid": EulerConfig(free_steps=1000, nudged_steps=12, free_method="hybrid", tol=TOL)}


def runs(epochs: int | None = None, seeds=(0,), only: str | None = None) -> list[Run]:
    """--only: mlff, sw or both (default both)."""
    topos = ("mlff", "sw") if not only else tuple(only.split(","))
    for t in topos:
        if t not in ("mlff", "sw"):
            raise ValueError(f"free-phase-fidelity: --only takes mlff, sw or mlff,sw; got {only!r}")
    return [Run(f"{t}-{m}", RunConfig(dataset="mnist", hidden=[100] * 5, topology=t, p=0.1, lr=0.015, batch_size=20,
                                      epochs=epochs or 10, seed=s, train_limit=TRAIN, test_limit=TEST), euler)
            for t in topos for m, euler in METHODS.items() for s in seeds]


def _per_epoch_log_spread(results: dict) -> dict:
    """The runs' metrics with each epoch's log-spread (of that epoch's per-block RMS) added."""
    out = {}
    for label, ms in results.items():
        out[label] = [{**m, "epochs": [{**e, "log_spread": log_spread(np.array(e["rms"]))} for e in m["epochs"]]}
                      for m in ms]
    return out


def check(summary: dict, results: dict | None = None) -> list[str]:
    """Per topology: the largest gap between the two methods' mean curves over the epochs, next to the
    seeds' spread (max - min) at that epoch, for test error and log-spread."""
    if not results:
        return []
    res = _per_epoch_log_spread(results)
    lines = ["| topology | quantity | largest gap of the means (epoch) | seed spread there, reference / hybrid | "
             "within spread |", "|---|---|---|---|---|"]
    for topo in sorted({label.split("-")[0] for label in res}):
        ref, hyb = res.get(f"{topo}-reference"), res.get(f"{topo}-hybrid")
        if not ref or not hyb:
            continue
        for key in ("test_error", "log_spread"):
            a = np.array([[e[key] for e in m["epochs"]] for m in ref])
            b = np.array([[e[key] for e in m["epochs"]] for m in hyb])
            n = min(a.shape[1], b.shape[1])
            gap = np.abs(a[:, :n].mean(0) - b[:, :n].mean(0))
            k = int(np.argmax(gap))
            sa, sb = np.ptp(a[:, k]), np.ptp(b[:, k])
            lines.append(f"| {topo} | {key} | {gap[k]:.4f} (epoch {k + 1}) | {sa:.4f} / {sb:.4f} | "
                         f"{'yes' if gap[k] <= max(sa, sb) else 'NO'} |")
    return lines


def plot(summary: dict, results: dict, out: Path) -> list[Path]:
    res = _per_epoch_log_spread(results)
    return [curves(res, out / "test_error.png", "test_error", "test error"),
            curves(res, out / "log_spread.png", "log_spread", "log-spread (per epoch)")]
