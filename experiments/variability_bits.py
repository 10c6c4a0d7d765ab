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


PER_DATASET = "per-dataset"  # a limit left at the study's per-dataset default (LIMITS)


def points(seeds: int = 5, epochs: int | None = None, datasets=DATASETS, bits=BITS,
           schemes=("mlff", "mlff-layer", "sw"), free_steps: int = 1000, limits: dict | None = None,
           lr: float = 0.01, hidden=(10, 10, 10, 10, 10), train_limit=PER_DATASET,
           test_limit=PER_DATASET) -> list[Point]:
    """The sweep's points; epochs None: the per-dataset default (EPOCHS, else 5). lr: the global rate
    (mlff-layer: the output block's). train_limit / test_limit: every dataset's first examples
    (None: all), else each dataset's own (``limits``, default LIMITS). `eqprop variability --study
    bits` passes its --dataset, --scheme, --bits, --hidden, --lr, --epochs, --seeds, --free-steps,
    --train-limit and --test-limit here (e.g. digits whole at another rate)."""
    from circuits.devices import load_preset

    base = dataclasses.asdict(load_preset("ideal"))
    limits = LIMITS if limits is None else limits

    def limit(ds, i, given):
        return limits.get(ds, (None, None))[i] if given == PER_DATASET else given

    return [Point(dataset=ds, hidden=tuple(hidden), scheme=sc, device=base, overrides={"bits": b},
                  seeds=tuple(range(seeds)), epochs=epochs or EPOCHS.get(ds, 5), lr=lr, free_steps=free_steps,
                  train_limit=limit(ds, 0, train_limit), test_limit=limit(ds, 1, test_limit))
            for ds in datasets for sc in schemes for b in bits]


def finding(results: list[dict]) -> list[str]:
    """The numbers the answer rests on, per dataset and scheme: test error at float and at 6, 8 and
    10 bits, and the % of updates lost in the deepest block (input side), the output block and (SW)
    the skip connections at 4, 6, 8 and 10 bits."""
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
                         for b in (4, 6, 8, 10) if b in rows)
        lines.append(f"{ds} {sc}: test error {err}; updates lost {lost}")
    return lines


def bits_table(results: list[dict]) -> str:
    """Markdown: per dataset and scheme, the final test error (mean ± std over seeds) at every bit depth
    swept, then the % of updates lost in the deepest block (input side), the output block and (SW) the
    skip connections at every bit depth."""
    by: dict = {}
    for r in results:
        p = r["point"]
        by.setdefault((p["dataset"], p["scheme"]), {})[p["overrides"].get("bits")] = r
    swept = [b for b in BITS if any(b in rows for rows in by.values())]
    head = " | ".join("float" if b is None else f"{b} bits" for b in swept)
    err = [f"| data | scheme | {head} |", "|---|---|" + "---|" * len(swept)]
    lost = [f"| data | scheme | block | {head} |", "|---|---|---|" + "---|" * len(swept)]
    for (ds, sc), rows in by.items():
        cells = (f"{rows[b]['test_error']:.3f} ± {rows[b]['test_error_std']:.3f}" if b in rows else "-" for b in swept)
        err.append(f"| {ds} | {sc} | " + " | ".join(cells) + " |")
        any_r = next(iter(rows.values()))
        n = len(any_r["blocks"])
        for label, k in (("deepest " + any_r["blocks"][0], 0), ("output " + any_r["blocks"][n - 2], n - 2),
                         ("skip", n - 1)):
            if label == "skip" and sc != "sw":
                continue
            cells = []
            for b in swept:
                v = (rows[b].get("lost_fraction_by_block") or [None] * n)[k] if b in rows else None
                cells.append("-" if v is None else f"{100 * v:.0f}")
            lost.append(f"| {ds} | {sc} | {label} | " + " | ".join(cells) + " |")
    return "Final test error (mean ± std over seeds):\n\n" + "\n".join(err) + \
        "\n\n% of requested updates lost (all epochs and seeds):\n\n" + "\n".join(lost) + "\n"


def plot(results: list[dict], out) -> list:
    """Beyond the sweep's plots: lost updates per block and epoch at 6 and 10 bits, per dataset and
    scheme, and bits_table.md (bits_table)."""
    from pathlib import Path

    from eqprop.run_files import write_atomic

    from .variability_summary import lost_by_epoch
    write_atomic(Path(out) / "bits_table.md", bits_table(results))
    return [lost_by_epoch([r for r in results if r["point"]["overrides"].get("bits") == b],
                          Path(out) / f"lost_by_epoch_{b}bits.png") for b in (6, 10)]
