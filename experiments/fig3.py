"""Fig 3 of Gammell et al. (2021): lr_l * r_l per block and epoch for Fig 2's three runs.

MLFF with one global rate shows the vanishing gradient: the correction shrinks by orders of
magnitude from the output block to the input block. Per-layer rates flatten lr * r by
scaling (r itself still spreads); SW p = 0.1 flattens r itself. The runs are Fig 2's and
share its results folder (results/fig2), so either command reuses the other's runs.
"""
from __future__ import annotations

from pathlib import Path

from . import fig2
from .plotting import lr_rms_panels

RESULTS_OF = "fig2"
PAPER: dict = {}  # Fig 3 is a plot; the claim is qualitative (fig2.check)
check = fig2.check


def runs(epochs: int | None = None, seeds=(0,), only: str | None = None):
    try:
        return fig2.runs(epochs, seeds, only)  # looked up per call: Fig 2's runs, whatever they are now
    except ValueError as e:  # say fig3, the experiment the user ran
        raise ValueError(str(e).replace("fig2:", "fig3 (Fig 2's runs):", 1)) from None


def plot(summary: dict, results: dict, out: Path) -> list[Path]:
    return [lr_rms_panels(results, out / "fig3_lr_rms.png")]
