"""Fig 4 of Gammell et al. (2021): 784-100x5-10 on MNIST, lr 0.015, 1000/12 steps, 10 epochs,
for p in {0} U logspace(-4, 0, 30) without p = 1: error, log-spread and per-block RMS vs p."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from eqprop.config import TrainConfig

from .common import Run
from .plotting import versus_p

P_VALUES = [0.0] + [float(p) for p in np.logspace(-4, 0, 30)[:-1]]
# paper-facts.md: test error at these p (trend; seeds at p = 0 span 30-36 %)
PAPER_POINTS = {0.0: 0.311, 9.2e-4: 0.191, 3.3e-3: 0.150, 1.6e-2: 0.118, 4.2e-2: 0.103}
PAPER = {}


def runs(epochs: int | None = None, seeds=(0,), only: str | None = None) -> list[Run]:
    ps = P_VALUES if not only else [float(v) for v in only.split(",")]
    return [Run(f"p{p:.3g}", TrainConfig(dataset="mnist", hidden=[100] * 5, topology="sw" if p > 0 else "mlff",
                                         p=p, lr=0.015, free_steps=1000, nudged_steps=12, batch_size=20,
                                         epochs=epochs or 10, seed=s)) for p in ps for s in seeds]


def plot(summary: dict, results: dict, out: Path) -> list[Path]:
    return [versus_p(summary, out / "fig4_vs_p.png", PAPER_POINTS)]
