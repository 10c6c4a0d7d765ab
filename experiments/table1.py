"""Table 1 of Gammell et al. (2021): MLFF vs small-world (p = 0.1) on four datasets.

Small data (CPU-sized): diabetes 10-10x5-1 / 10-10x8-1 and wine 13-10x5-3 / 13-10x8-3,
lr 0.01, 10 epochs, 1000/12 free/nudged steps for 5 hidden layers and 5000/18 for 8, batch 5.
Image data (GPU-sized): MNIST and FMNIST 784-100x5-10, lr 0.015, 1000/12, batch 20, 100 epochs.
The claim: SW's log-spread is below MLFF's in every pair.
"""
from __future__ import annotations

from eqprop.config import EulerConfig, RunConfig

from .common import Run

GROUPS = {"small": ["diabetes", "wine"], "images": ["mnist", "fmnist"]}
DEFAULT_ONLY = "small"

# paper-facts.md, "Numbers to reproduce"
PAPER = {
    "diabetes-5-mlff": {"log_spread": 1.09}, "diabetes-5-sw": {"log_spread": 0.56},
    "diabetes-8-mlff": {"log_spread": 2.49}, "diabetes-8-sw": {"log_spread": 0.44},
    "wine-5-mlff": {"log_spread": 1.22}, "wine-5-sw": {"log_spread": 0.69},
    "wine-8-mlff": {"log_spread": 1.73}, "wine-8-sw": {"log_spread": 0.47},
    "mnist-5-mlff": {"test_error": 0.132}, "mnist-5-sw": {"test_error": 0.0524},
    "fmnist-5-mlff": {"test_error": 0.253}, "fmnist-5-sw": {"test_error": 0.164},
}


def runs(epochs: int | None = None, seeds: list[int] = (0,), only: str | None = None) -> list[Run]:
    names = GROUPS.get(only or DEFAULT_ONLY, [only] if only else [])
    if not names or any(n not in GROUPS["small"] + GROUPS["images"] for n in names):
        raise ValueError(f"table1: --only must be one of {sorted(GROUPS)} or a dataset of "
                         f"{GROUPS['small'] + GROUPS['images']}, got {only!r}")
    out = []
    for ds in names:
        image = ds in GROUPS["images"]
        for depth in ((5,) if image else (5, 8)):
            steps = (1000, 12) if depth == 5 else (5000, 18)
            for topo in ("mlff", "sw"):
                for seed in seeds:
                    run = RunConfig(dataset=ds, hidden=[100 if image else 10] * depth, topology=topo, p=0.1,
                                    lr=0.015 if image else 0.01, epochs=epochs or (100 if image else 10), seed=seed)
                    euler = EulerConfig(free_steps=steps[0], nudged_steps=steps[1])
                    out.append(Run(f"{ds}-{depth}-{topo}", run, euler))
    return out


def check(summary: dict, results: dict | None = None) -> list[str]:
    """The paper's qualitative claim, pair by pair."""
    lines = []
    for label, row in summary.items():
        if label.endswith("-mlff") and label[:-5] + "-sw" in summary:
            sw = summary[label[:-5] + "-sw"]
            ok = sw["log_spread"] < row["log_spread"]
            lines.append(f"{label[:-5]}: log-spread MLFF {row['log_spread']:.3f} -> SW {sw['log_spread']:.3f} "
                         f"({'SW below MLFF' if ok else 'NOT below'})")
    return lines


def plot(summary: dict, results: dict, out):
    from .plotting import log_spread_bars
    return [log_spread_bars(summary, out / "table1_log_spread.png", PAPER)]
