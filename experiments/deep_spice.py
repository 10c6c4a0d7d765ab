"""DEEP trained with ngspice in the loop, against the digital DEEP run at the same seed.

One gate task (default AND, with the bias input) on ``complete_directed(2, 5, 2, bias=True)``, the
settings of experiments/deep.py's ``deep-tuned`` (lr 30, project beta 0.5 = paper beta 1, T1 = T2 =
1000 steps of dt 0.05), trained by the one ``Trainer`` with ``DeepRule`` and three backends:

* ``spice``: ``circuits.deep_spice.DeepSpiceSolver``: every free and nudged phase a transient of
  DEEP's circuit (method "tran", t_free = t_nudged = T1 dt = 50 tau, no extensions: the state at
  that time, as DeepSolver's fixed step count), the nudged trajectory sampled every dt for the rule;
* ``digital``: ``eqprop.deep.DeepSolver`` at dt 0.05 (the experiment's reference);
* ``digital-fine``: DeepSolver at dt 0.005 with 10x the steps (the same time span) and 10x the lr:
  the rule's 1/T2 normalisation makes dW scale with 1/T2 (it is (1/T2) int s_i ds_j), so this is the
  same learning problem closer to the continuous dynamics the circuit integrates.

Per epoch: train/test error of each, and ||W_a - W_b|| / ||W_b|| between the backends. Results:
results/deep-spice/<task>-s<seed>/<backend>/ (config.json, metrics.json), compare.json, a plot.
``python -m experiments.deep_spice --task and --seed 0 --epochs 60``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from eqprop.run_files import write_atomic, write_json

from .deep import DT, HIDDEN, METHODS, STEPS

BACKENDS = ("spice", "digital", "digital-fine")
FINE = 10  # digital-fine: dt / FINE, steps * FINE, lr * FINE


def build_trainer(task: str, seed: int, backend: str, epochs: int, out: Path, level: str = "ideal"):
    """The one Trainer of one backend: the deep-tuned settings, the same initial network for all."""
    import torch

    from circuits.deep_spice import DeepSpiceSolver
    from circuits.spice_config import SpiceConfig
    from eqprop.config import RunConfig
    from eqprop.datasets import gate_dataset
    from eqprop.deep import DeepConfig, DeepSolver, deep_init
    from eqprop.deep_rule import DeepRule
    from eqprop.topology import complete_directed
    from eqprop.trainer import Trainer, seed_streams

    if backend not in BACKENDS:
        raise ValueError(f"deep-spice: backend must be one of {BACKENDS}, got {backend!r}")
    m = METHODS["deep-tuned"]
    data = gate_dataset(task, bias_input=True)
    lr = m.lr * (FINE if backend == "digital-fine" else 1)
    cfg = RunConfig(dataset=data.name, hidden=(HIDDEN,), lr=lr, beta=m.beta, random_beta_sign=False, epochs=epochs,
                    seed=seed, dtype="float64", out=str(out / backend))
    topo = complete_directed(data.n_in - 1, HIDDEN, data.n_out, bias=True)
    net = deep_init(topo, seed=seed_streams(seed)[1], dtype=torch.float64)
    if backend == "spice":
        solver = DeepSpiceSolver(SpiceConfig(method="tran", level=level, t_free=STEPS * DT, t_nudged=STEPS * DT,
                                             tstep=DT, max_extend=0, on_unsettled="warn"), record_dt=DT)
    else:
        k = FINE if backend == "digital-fine" else 1
        solver = DeepSolver(DeepConfig(dt=DT / k, free_steps=STEPS * k, nudged_steps=STEPS * k), trial_seeds=[seed])
    rule = DeepRule(solver)
    return Trainer(cfg, data, solver=solver, networks=[net], checkpoint=out / backend / "checkpoint.pt", rule=rule)


def train(tr, epochs: int, label: str, progress: bool = True) -> tuple[list[np.ndarray], float]:
    """Epochs of one Trainer; the weights after each epoch and the wall seconds (the ngspice workers
    are live processes while it runs: their CPU time is not in this process's rusage)."""
    tr.write_configs()
    t0, Ws = time.perf_counter(), []
    for _ in range(epochs):
        res = tr.run_epoch()[0]
        Ws.append(tr.net.W.detach().cpu().double().numpy().copy())
        if progress:
            print(f"{label}: epoch {res.epoch} train {res.train_error:.2f} test {res.test_error:.2f} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    tr.write_outputs(plots=False)
    tr.solver.close()
    return Ws, time.perf_counter() - t0


def run(task: str = "and", seed: int = 0, epochs: int = 60, out: Path = Path("results/deep-spice"),
        level: str = "ideal", progress: bool = True) -> dict:
    out = Path(out) / (f"{task}-s{seed}" + ("" if level == "ideal" else f"-{level}"))
    out.mkdir(parents=True, exist_ok=True)
    curves, weights, wall = {}, {}, {}
    for backend in BACKENDS:
        tr = build_trainer(task, seed, backend, epochs, out, level)
        weights[backend], wall[backend] = train(tr, epochs, backend, progress)
        curves[backend] = {"train_error": [h.train_error for h in tr.history[0]],
                           "test_error": [h.test_error for h in tr.history[0]]}
        if backend == "spice":
            curves[backend]["unsettled"] = [h.solver.get("unsettled") for h in tr.history[0]]
    rel = lambda a, b: [float(np.linalg.norm(x - y) / np.linalg.norm(y)) for x, y in zip(a, b)]  # noqa: E731
    report = {"task": task, "seed": seed, "epochs": epochs, "level": level, "curves": curves,
              "weight_gap": {"spice_vs_digital": rel(weights["spice"], weights["digital"]),
                             "spice_vs_digital_fine": rel(weights["spice"], weights["digital-fine"]),
                             "digital_vs_digital_fine": rel(weights["digital"], weights["digital-fine"])},
              "wall_seconds": wall}
    write_json(out / "compare.json", report)
    plot(report, out / "deep_spice_curve.png")
    write_atomic(out / "report.md", "\n".join(summary_lines(report)) + "\n")
    return report


def summary_lines(r: dict) -> list[str]:
    c, g = r["curves"], r["weight_gap"]
    first0 = lambda e: next((k + 1 for k, v in enumerate(e) if v == 0), None)  # noqa: E731
    lines = [f"# DEEP {r['task'].upper()} seed {r['seed']}, {r['epochs']} epochs, level {r['level']}", "",
             "| backend | final train error | final test error | first epoch at 0 test error | wall s |",
             "|---|---|---|---|---|"]
    for b in BACKENDS:
        lines.append(f"| {b} | {c[b]['train_error'][-1]:.2f} | {c[b]['test_error'][-1]:.2f} | "
                     f"{first0(c[b]['test_error'])} | {r['wall_seconds'][b]:.0f} |")
    lines += ["", "||W_a - W_b|| / ||W_b|| after epoch 1 / 10 / last:", ""]
    for k, v in g.items():
        pick = [v[i] for i in (0, min(9, len(v) - 1), len(v) - 1)]
        lines.append(f"* {k}: " + " / ".join(f"{x:.2e}" for x in pick))
    return lines


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    for i, bk in enumerate(BACKENDS):
        e = r["curves"][bk]["test_error"]
        a.plot(np.arange(1, len(e) + 1), e, color=f"C{i}", ls=("-", "--", ":")[i], label=bk)
    a.set(xlabel="epoch", ylabel="test error (truth table)", title=f"DEEP {r['task'].upper()}, seed {r['seed']}")
    a.legend()
    for k, v in r["weight_gap"].items():
        b.semilogy(np.arange(1, len(v) + 1), v, label=k.replace("_", " "))
    b.set(xlabel="epoch", ylabel="||W_a - W_b|| / ||W_b||", title="weights: backends apart")
    b.legend(fontsize=7)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.deep_spice", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="and", choices=["and", "or", "xor", "not", "identity"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--level", default="ideal", choices=["ideal", "crossbar"])
    p.add_argument("--out", default="results/deep-spice")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.epochs < 1 or a.seed < 0:
        raise SystemExit("deep-spice: --epochs must be >= 1 and --seed >= 0")
    r = run(a.task, a.seed, a.epochs, Path(a.out), a.level, progress=not a.quiet)
    print("\n".join(summary_lines(r)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
