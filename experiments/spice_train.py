"""spice-train: the one Trainer with ngspice in the loop (every equilibrium a circuit solve)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from circuits.spice_config import SpiceConfig
from circuits.spice_solver import SpiceSolver
from eqprop.config import RunConfig
from eqprop.trainer import Trainer

# small data only: every example is two ngspice solves per epoch
SPICE_TRAIN_DEFAULTS = dict(dataset="iris", hidden=[8], epochs=3, lr=0.05, batch_size=10, beta=0.5,
                            dtype="float64")


def spice_train(runs: RunConfig | Sequence[RunConfig], spice: SpiceConfig, dataset,
                checkpoint: str | Path | None = None, resume: bool = False, progress: bool = True) -> list[dict]:
    """Train T >= 1 trials (seeds, device instances: trial t's devices from spice.device_seed and t)
    through ngspice; returns every trial's metrics."""
    with SpiceSolver(spice) as solver:
        tr = Trainer(runs, dataset, solver=solver, checkpoint=checkpoint)
        return tr.run(resume=resume, progress=progress)
