"""Fig 4 of Gammell et al. (2021): 784-100x5-10 on MNIST, lr 0.015, 1000/12 steps, 10 epochs,
for p in {0} U logspace(-4, 0, 30) without p = 1: error, log-spread and per-block RMS vs p."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from eqprop.config import EulerConfig, RunConfig

from .common import Run
from .plotting import versus_p

P_VALUES = [0.0] + [float(p) for p in np.logspace(-4, 0, 30)[:-1]]
# paper-facts.md: test error at these p (trend; seeds at p = 0 span 30-36 %)
PAPER_POINTS = {0.0: 0.311, 9.2e-4: 0.191, 3.3e-3: 0.150, 1.6e-2: 0.118, 4.2e-2: 0.103}
PAPER = {}


def runs(epochs: int | None = None, seeds=(0,), only: str | None = None) -> list[Run]:
    ps = P_VALUES if not only else _p_values(only)
    euler = EulerConfig(free_steps=1000, nudged_steps=12)
    return [Run(f"p{p:.3g}", RunConfig(dataset="mnist", hidden=[100] * 5, topology="sw" if p > 0 else "mlff",
                                       p=p, lr=0.015, batch_size=20, epochs=epochs or 10, seed=s), euler)
            for p in ps for s in seeds]


def _p_values(only: str) -> list[float]:
    """--only as comma-separated p values, each in [0, 1] and given once."""
    try:
        ps = [float(v) for v in only.split(",")]
    except ValueError:
        raise ValueError(f"fig4: --only must be comma-separated p values in [0, 1], e.g. 0,0.01,0.1; got {only!r}") \
            from None
    labels = [f"p{p:.3g}" for p in ps]
    if len(set(labels)) != len(labels):
        raise ValueError(f"fig4: --only names a p value twice (at 3 significant digits): {only!r}")
    return ps


def check(summary: dict, results: dict | None = None) -> list[str]:
    """Per p: errors and log-spread; at the paper's points, our test error next to the paper's."""
    rows = sorted(summary.values(), key=lambda r: r["actual_p"])
    lines = ["| p (actual) | train error | test error | log-spread | paper test error |", "|---|---|---|---|---|"]
    for r in rows:
        near = [v for q, v in PAPER_POINTS.items() if abs(q - r["actual_p"]) <= 0.25 * max(q, 1e-4)]
        lines.append(f"| {r['actual_p']:.3g} | {r['train_error']:.4f} | {r['test_error']:.4f} | "
                     f"{r['log_spread']:.3f} | {near[0] if near else '-'} |")
    if len(rows) > 1:
        ls = np.array([r["log_spread"] for r in rows])
        ps = np.array([r["actual_p"] for r in rows])
        ok = np.isfinite(ls)
        if ok.sum() > 2:
            rho_s = np.corrcoef(np.argsort(np.argsort(ps[ok])), np.argsort(np.argsort(ls[ok])))[0, 1]
            lines.append(f"Spearman rank correlation of log-spread with p: {rho_s:+.2f} (paper: falls with p)")
    return lines


def plot(summary: dict, results: dict, out: Path) -> list[Path]:
    return [versus_p(summary, out / "fig4_vs_p.png", PAPER_POINTS)]
