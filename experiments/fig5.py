"""Fig 5 of Gammell et al. (2021): mean |dW| of every connection, MLFF vs SW (p = 0.1),
784-100x5-10 on MNIST (Table 1's image runs: lr 0.015, 1000/12 steps, 100 epochs)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .plotting import dw_connection_images
from .table1 import runs as table1_runs

PAPER: dict = {}


def runs(epochs: int | None = None, seeds=(0,), only: str | None = None):
    if only not in (None, "mnist", "fmnist"):
        raise ValueError(f"fig5: --only must be mnist or fmnist, got {only!r}")
    return [dataclasses.replace(r, run=dataclasses.replace(r.run, save_dw_matrix=True))
            for r in table1_runs(epochs, seeds, only or "mnist")]


def plot(summary: dict, results: dict, out: Path) -> list[Path]:
    return [dw_connection_images(out, sorted(results), out / "fig5_dw_matrix.png")]
