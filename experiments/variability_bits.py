"""Study (a) and (b): bit depth, and the updates that fall below one conductance step.

Gammell et al. (2021) motivate layer skipping by hardware: per-layer learning rates are
multiplicative factors a limited-bit-depth synapse cannot hold, and corrections that vanish
towards the input fall below one conductance level and are lost. The paper never tests it.
Here: final error and log-spread vs bits (2, 3, 4, 5, 6, 8, 10, float) for the three training
schemes (MLFF global rate, MLFF per-layer rates, SW global rate) on Table 1-style deep nets
(5 hidden layers of 10, lr 0.01, 1000/12 free/nudged steps, batch 5 / 20), and per block and
epoch the fraction of requested updates the devices did not take. Scale, sized for a shared
2-core CPU: wine whole (150 train / 25 test examples) for 5 epochs (Table 1: 10), digits its
first 100 train / 50 test examples for 3 epochs; 5 seeds each (iris: ``points(datasets=("iris",))``).

The device is the ideal preset (1-100 uS, w_max 1) with only its bit depth changed: levels
evenly spaced, updates rounded to the nearest level, no noise, so every effect is quantisation.
"""
from __future__ import annotations

import dataclasses

from .variability import Point

BITS = (2, 3, 4, 5, 6, 8, 10, None)  # None: continuous (float)
DATASETS = ("wine", "digits")
# digits has 1,500 / 297 examples (75 + 15 batches of 20): its first 100 / 50 and 3 epochs keep the sweep
# within an hour of a shared 2-core CPU
LIMITS = {"digits": (100, 50)}
EPOCHS = {"wine": 5, "digits": 3}


def points(seeds: int = 5, epochs: int | None = None, datasets=DATASETS, bits=BITS,
           schemes=("mlff", "mlff-layer", "sw"), free_steps: int = 1000, limits: dict | None = None) -> list[Point]:
    """The sweep's points; epochs None: the per-dataset default (EPOCHS, else 5)."""
    from circuits.devices import load_preset

    base = dataclasses.asdict(load_preset("ideal"))
    limits = LIMITS if limits is None else limits
    return [Point(dataset=ds, scheme=sc, device=base, overrides={"bits": b}, seeds=tuple(range(seeds)),
                  epochs=epochs or EPOCHS.get(ds, 5), free_steps=free_steps,
                  train_limit=limits.get(ds, (None, None))[0], test_limit=limits.get(ds, (None, None))[1])
            for ds in datasets for sc in schemes for b in bits]


def finding(results: list[dict]) -> list[str]:
    """The numbers the answer rests on, per dataset and scheme: test error at float and at 6, 8 and
    10 bits, and the % of updates lost in the deepest block (input side), the output block and (SW)
    the skip connections at 8 and 10 bits."""
    by: dict = {}
    for r in results:
        p = r["point"]
        by.setdefault((p["dataset"], p["scheme"]), {})[p["overrides"].get("bits")] = r

    def pct(r, b):
        v = (r.get("lost_fraction_by_block") or [None] * (b + 1))[b]
        return "-" if v is None else f"{100 * v:.0f} %"

    lines = []
    for (ds, sc), rows in by.items():
        err = ", ".join(f"{'float' if b is None else f'{b} bits'} {rows[b]['test_error']:.3f} ± "
                        f"{rows[b]['test_error_std']:.3f}" for b in (None, 6, 8, 10) if b in rows)
        lost = "; ".join(f"{b} bits: deepest {pct(rows[b], 0)}, output {pct(rows[b], len(rows[b]['blocks']) - 2)}"
                         + (f", skip {pct(rows[b], len(rows[b]['blocks']) - 1)}" if sc == "sw" else "")
                         for b in (8, 10) if b in rows)
        lines.append(f"{ds} {sc}: test error {err}; updates lost {lost}")
    return lines


def plot(results: list[dict], out) -> list:
    """Beyond the sweep's plots: lost updates per block and epoch at 10 bits, per dataset and scheme."""
    from pathlib import Path

    from .variability_summary import lost_by_epoch
    return [lost_by_epoch([r for r in results if r["point"]["overrides"].get("bits") == 10],
                          Path(out) / "lost_by_epoch_10bits.png")]
