"""Fig 2, 3 and 5 of Gammell et al. (2021): MNIST 784-500x3-10, 500/8 steps, batch 20.

Three runs: MLFF with one global rate 0.02, MLFF with per-layer rates .128/.032/.008/.002
(input side first, Scellier & Bengio's), SW p = 0.1 with rate 0.02. Fig 2 is their error
curves, Fig 3 the per-block lr * r_l per epoch, Fig 5 the mean |dW| per layer pair.
Paper length: 250 epochs (SW) / 100 for the comparison; GPU-sized (docs/results.md).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from eqprop.config import EulerConfig, RunConfig
from eqprop.metrics import log_spread

from .common import Run
from .plotting import curves, dw_matrices, lr_rms_panels

PER_LAYER = [0.128, 0.032, 0.008, 0.002]
PAPER = {"mlff-global": {"test_error": 0.0287}, "mlff-per-layer": {"test_error": 0.0257},
         "sw": {"test_error": 0.0316}}  # epoch 100, paper-facts.md (SW reaches 2.55 % at epoch 250)


def runs(epochs: int | None = None, seeds=(0,), only: str | None = None) -> list[Run]:
    base = dict(dataset="mnist", hidden=[500, 500, 500], batch_size=20, epochs=epochs or 100)
    euler = EulerConfig(free_steps=500, nudged_steps=8)
    variants = {"mlff-global": dict(topology="mlff", lr=0.02),
                "mlff-per-layer": dict(topology="mlff", lr=PER_LAYER),
                "sw": dict(topology="sw", p=0.1, lr=0.02)}
    if only and only not in variants:
        raise ValueError(f"fig2: --only must be one of {sorted(variants)}, got {only!r}")
    return [Run(k, RunConfig(**base, **v, seed=s), euler) for k, v in variants.items() if not only or k == only
            for s in seeds]


def lr_rms(m: dict) -> np.ndarray:
    """Per-block lr_l * m_l (m_l = mean r_l over the run) of one run's metrics."""
    lr, rms = m["config"]["lr"], np.asarray(m["mean_rms"], float)
    return np.asarray(lr if isinstance(lr, list) else [lr] * len(rms), float) * rms


def check(summary: dict, results: dict | None = None) -> list[str]:
    """The vanishing-gradient numbers behind Fig 3: spread of r_l and of lr_l * r_l per run
    (MLFF-global's should be the widest)."""
    lines = []
    for label, ms in (results or {}).items():
        r = [log_spread(np.asarray(m["mean_rms"])) for m in ms]
        lr_r = [log_spread(lr_rms(m)) for m in ms]
        lines.append(f"{label}: log-spread of r_l {np.mean(r):.3f}, of lr_l * r_l {np.mean(lr_r):.3f} "
                     f"(mean over {len(ms)} seed(s); r_l input side first: "
                     + " ".join(f"{v:.2e}" for v in np.mean([m['mean_rms'] for m in ms], axis=0)) + ")")
    return lines


def plot(summary: dict, results: dict, out: Path) -> list[Path]:
    return [curves(results, out / "fig2_errors.png", key=("test_error", "train_error"), ylabel="error", logy=True),
            lr_rms_panels(results, out / "fig3_lr_rms.png"),
            dw_matrices(results, out / "fig5_dw.png")]
