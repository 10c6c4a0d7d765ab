"""Fig 3 of Gammell et al. (2021): lr_l * r_l per block and epoch for Fig 2's three runs.

MLFF with one global rate shows the vanishing gradient: the correction shrinks by orders of
magnitude from the output block to the input block. Per-layer rates flatten lr * r by
scaling (r itself still spreads); SW p = 0.1 flattens r itself. The runs are Fig 2's and
share its results folder (results/fig2), so either command reuses the other's runs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from eqprop.metrics import log_spread

from . import fig2
from .plotting import lr_rms_panels

RESULTS_OF = "fig2"
PAPER: dict = {}  # Fig 3 is a plot; the claim is qualitative (check below)


def runs(epochs: int | None = None, seeds=(0,), only: str | None = None):
    return fig2.runs(epochs, seeds, only)  # looked up per call: Fig 2's runs, whatever they are now


def lr_rms(m: dict) -> np.ndarray:
    """Per-block lr_l * m_l (m_l = mean r_l over the run) of one run's metrics."""
    lr, rms = m["config"]["lr"], np.asarray(m["mean_rms"], float)
    return np.asarray(lr if isinstance(lr, list) else [lr] * len(rms), float) * rms


def check(summary: dict, results: dict | None = None) -> list[str]:
    """Spread of r_l and of lr_l * r_l per run: MLFF-global's should be the widest."""
    lines = []
    for label, ms in (results or {}).items():
        r = [log_spread(np.asarray(m["mean_rms"])) for m in ms]
        lr_r = [log_spread(lr_rms(m)) for m in ms]
        lines.append(f"{label}: log-spread of r_l {np.mean(r):.3f}, of lr_l * r_l {np.mean(lr_r):.3f} "
                     f"(mean over {len(ms)} seed(s); r_l input side first: "
                     + " ".join(f"{v:.2e}" for v in np.mean([m['mean_rms'] for m in ms], axis=0)) + ")")
    return lines


def plot(summary: dict, results: dict, out: Path) -> list[Path]:
    return [lr_rms_panels(results, out / "fig3_lr_rms.png")]
