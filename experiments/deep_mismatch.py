"""Symmetric EqProp under device mismatch against DEEP (issue 14, item 6).

A Hopfield net's weight W_ij = W_ji is realised by two device pairs, one per direction; the device
model's device-to-device spread (``DeviceModel.g_dtod``: a fixed gain 1 + g_dtod N(0, 1) per device)
makes the two directions differ, so the realised W is asymmetric and EqProp's premise (a symmetric
coupling, an energy) fails by ||W - W^T|| / ||W||. DEEP has a weight per direction anyway; the same
spread only puts a gain error on each. Both run on the crossbar's digital surrogate with the device
model in the loop (``circuits.device_solver.DeviceEulerSolver`` for EqProp's leaky dynamics,
``circuits.deep_spice.DeviceDeepSolver`` for DEEP's), every update through the devices:

* ``eqprop``: a Hopfield net on the complete *undirected* graph of the same neurons as DEEP's
  (inputs with the bias neuron, 5 hidden, 2 outputs; ``complete_undirected``), symmetric N(0, 0.05^2)
  initial weights, EqProp's rule (``eqprop_update``), leaky dynamics, experiments/deep.py's eqprop
  settings (lr 0.3, project beta 0.5, fixed beta sign);
* ``deep``: DEEP on ``complete_directed`` with experiments/deep.py's deep-tuned settings (lr 30,
  beta 0.5), ``DeepRule``.

Device: the ideal preset (continuous, noiseless) with w_max 2 (trained XOR weights reach ~1.5) and
g_dtod in ``SPREADS``; device instance of trial t from ``instance_seed(0, t)``, so both methods of
a seed hold the same gains. dt 0.05, T1 = T2 = 1000 steps, XOR with the bias input, 200 epochs.
Per epoch the solver report holds ``realised_asymmetry`` (||W - W^T|| / ||W|| of the realised
weights) and, for DEEP, ``realised_deviation`` (||W_real - W_nominal|| / ||W_nominal||).

``eqprop reproduce deep-mismatch --seeds 5`` (or ``python -m experiments.deep_mismatch``): groups
results/deep-mismatch/<task>-<method>-d<spread>/s<seed>/, summary.json, report.md, deep_mismatch.png.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

from eqprop.run_files import read_metrics, write_atomic, write_json

from .deep import DT, HIDDEN, METHODS, STEPS, finished, fit
from .sweep import local_pool

SPREADS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8)
MODES = ("eqprop", "deep")
EPOCHS, TASK, W_MAX, INIT_STD = 200, "xor", 2.0, 0.05


def complete_undirected(n_in: int, n_hidden: int, n_out: int, bias: bool = True):
    """The complete undirected graph on complete_directed's neurons: every pair except input-input,
    symmetric (a Hopfield net; inputs clamped, so their incoming direction never acts)."""
    from eqprop.topology import Topology, complete_directed

    d = complete_directed(n_in, n_hidden, n_out, bias=bias)
    mask = d.mask | d.mask.T
    return Topology(d.sizes, mask, directed=False, info={**d.info, "kind": "complete_undirected"})


def hopfield_init(topology, seed, std: float = INIT_STD, dtype=None):
    """Symmetric weights: each pair's one weight ~ N(0, std^2), both directions equal; biases 0."""
    import torch

    from eqprop.network import Network

    rng = np.random.default_rng(seed)
    A = np.triu(rng.normal(0.0, std, size=(topology.n, topology.n)), 1)
    W = (A + A.T) * topology.mask
    dtype = dtype or torch.float32
    return Network(topology, torch.tensor(W, dtype=dtype), torch.zeros(topology.n, dtype=dtype))


def label(task: str, mode: str, spread: float) -> str:
    return f"{task}-{mode}-d{spread:g}"


def build_trainer(task: str, mode: str, spread: float, seeds, epochs: int, out: Path):
    import torch

    from circuits.deep_spice import DeviceDeepSolver
    from circuits.device_solver import DeviceEulerSolver
    from circuits.devices import load_preset
    from eqprop.config import EulerConfig, RunConfig
    from eqprop.datasets import gate_dataset
    from eqprop.deep import DeepConfig, deep_init
    from eqprop.deep_rule import DeepRule
    from eqprop.learning import eqprop_update
    from eqprop.topology import complete_directed
    from eqprop.trainer import Trainer, seed_streams

    if mode not in MODES:
        raise ValueError(f"deep-mismatch: method must be one of {MODES}, got {mode!r}")
    m = METHODS["deep-tuned" if mode == "deep" else "eqprop"]
    data = gate_dataset(task, bias_input=True)
    lab = label(task, mode, spread)
    cfgs = [RunConfig(dataset=data.name, hidden=(HIDDEN,), lr=m.lr, beta=m.beta, random_beta_sign=False,
                      epochs=epochs, seed=s, out=str(out / lab / f"s{s}")) for s in seeds]
    device = dataclasses.replace(load_preset("ideal", g_dtod=float(spread), w_max=W_MAX), name=f"ideal-dtod{spread:g}")
    if mode == "deep":
        topo = complete_directed(data.n_in - 1, HIDDEN, data.n_out, bias=True)
        nets = [deep_init(topo, seed=seed_streams(s)[1]) for s in seeds]
        solver = DeviceDeepSolver(device, DeepConfig(dt=DT, free_steps=STEPS, nudged_steps=STEPS), device_seed=0,
                                  clip_weights=True, trial_seeds=seeds)
        rule = DeepRule(solver)
    else:
        topo = complete_undirected(data.n_in - 1, HIDDEN, data.n_out, bias=True)
        nets = [hopfield_init(topo, seed_streams(s)[1]) for s in seeds]
        euler = EulerConfig(eps=DT, free_steps=STEPS, nudged_steps=STEPS, nudge_form="gradient", engine="fast")
        solver = DeviceEulerSolver(device, euler, device_seed=0, clip_weights=True)
        rule = eqprop_update
    torch.set_num_threads(1)
    return Trainer(cfgs, data, solver=solver, networks=nets, checkpoint=out / lab / "checkpoint.pt", rule=rule)


def train_group(task, mode, spread, seeds, epochs, out, restart):
    t0 = time.perf_counter()
    tr = build_trainer(task, mode, spread, seeds, epochs, out)
    if restart or not finished(tr):
        fit(tr, epochs, resume=not restart and tr.checkpoint.exists())
        return label(task, mode, spread), time.perf_counter() - t0
    return label(task, mode, spread), None


def run(out: Path, seeds, epochs: int = EPOCHS, task: str = TASK, spreads=SPREADS, modes=MODES, workers: int = 2,
        restart: bool = False, progress: bool = True) -> tuple[dict, dict]:
    todo = [(task, m, s) for m in modes for s in spreads]
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "experiment.json", {"task": task, "seeds": list(seeds), "epochs": epochs, "spreads": list(spreads),
                                         "methods": list(modes), "w_max": W_MAX, "dt": DT, "steps": STEPS})
    args = [(t, m, s, list(seeds), epochs, out, restart) for t, m, s in todo]
    if workers <= 1:
        done = (train_group(*a) for a in args)
    else:
        ex = local_pool(workers)
        done = (f.result() for f in concurrent.futures.as_completed([ex.submit(train_group, *a) for a in args]))
    try:
        for lab, sec in done:
            if progress:
                print(f"{lab}: " + ("already done" if sec is None else f"{len(seeds)} trials in {sec:.0f} s"),
                      file=sys.stderr, flush=True)
    finally:
        if workers > 1:
            ex.shutdown(cancel_futures=True)
    results = {label(t, m, s): [read_metrics(out / label(t, m, s) / f"s{x}" / "metrics.json") for x in seeds]
               for t, m, s in todo}
    summary = summarise(results, todo)
    write_json(out / "summary.json", summary)
    return summary, results


def _final(ms, key):
    v = [m["epochs"][-1]["solver"].get(key) for m in ms]
    return [float(np.mean(x)) if isinstance(x, list) else (np.nan if x is None else float(x)) for x in v]


def summarise(results: dict, todo) -> dict:
    out = {}
    for t, m, s in todo:
        ms = results[label(t, m, s)]
        final = np.array([r["epochs"][-1]["test_error"] for r in ms])
        err = np.array([[e["test_error"] for e in r["epochs"]] for r in ms])
        asym, dev = _final(ms, "realised_asymmetry"), _final(ms, "realised_deviation")
        out[label(t, m, s)] = {
            "task": t, "method": m, "g_dtod": s, "seeds": [r["config"]["seed"] for r in ms],
            "test_error": float(final.mean()), "test_error_std": float(final.std()), "test_error_all": final.tolist(),
            "n_zero": int((final == 0).sum()), "mean_error_last20": float(err[:, -20:].mean()),
            "realised_asymmetry": float(np.nanmean(asym)), "realised_asymmetry_all": asym,
            "realised_deviation": None if np.isnan(dev).all() else float(np.nanmean(dev)),
            "clipped_weights": _final(ms, "clipped_weights")}
    return out


def table(summary: dict) -> list[str]:
    lines = ["| g_dtod | EqProp: realised asymmetry ‖W−Wᵀ‖/‖W‖ | EqProp: final error mean ± std | EqProp: seeds at 0 | "
             "DEEP: ‖W_real−W_nom‖/‖W_nom‖ | DEEP: final error mean ± std | DEEP: seeds at 0 |",
             "|---|---|---|---|---|---|---|"]
    by = {(r["method"], r["g_dtod"]): r for r in summary.values()}
    for s in sorted({r["g_dtod"] for r in summary.values()}):
        e, d = by.get(("eqprop", s)), by.get(("deep", s))
        cell = lambda r: ("-", "-", "-") if r is None else (  # noqa: E731
            f"{r['test_error']:.3f} ± {r['test_error_std']:.3f}", f"{r['n_zero']}/{len(r['seeds'])}")
        ce, cd = cell(e), cell(d)
        asym = "-" if e is None else format(e["realised_asymmetry"], ".3f")
        dev = "-" if d is None or d["realised_deviation"] is None else format(d["realised_deviation"], ".3f")
        lines.append(f"| {s:g} | {asym} | {ce[0]} | {ce[1]} | {dev} | {cd[0]} | {cd[1]} |")
    return lines


def plot(summary: dict, results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9.5, 3.4))
    for i, m in enumerate(MODES):
        rows = sorted((r for r in summary.values() if r["method"] == m), key=lambda r: r["g_dtod"])
        if not rows:
            continue
        x = [r["g_dtod"] for r in rows]
        a.errorbar(np.array(x) + (i - 0.5) * 0.01, [r["test_error"] for r in rows],  # offset: bars apart
                   yerr=[r["test_error_std"] for r in rows], color=f"C{i}",
                   marker="o", capsize=3, label=f"{m} (±std over {len(rows[0]['seeds'])} seeds)")
        if m == "eqprop":
            b.errorbar([r["realised_asymmetry"] for r in rows], [r["test_error"] for r in rows],
                       yerr=[r["test_error_std"] for r in rows], color=f"C{i}", marker="o", capsize=3, label=m)
            for r in rows:
                b.annotate(f"{r['g_dtod']:g}", (r["realised_asymmetry"], r["test_error"]), fontsize=7,
                           textcoords="offset points", xytext=(3, 3))
    a.set(xlabel="device-to-device spread g_dtod", ylabel="final XOR error (epoch 200)",
          title="EqProp (Hopfield) vs DEEP on mismatched devices")
    b.set(xlabel="realised ||W - W^T|| / ||W|| (epoch 200)", ylabel="final XOR error",
          title="EqProp vs realised asymmetry (labels: g_dtod)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "deep_mismatch.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def reproduce(args) -> int:
    """``eqprop reproduce deep-mismatch``: --seeds, --seed0, --epochs, --only (spreads and/or methods), --out."""
    if args.seeds < 1 or (args.epochs is not None and args.epochs < 1):
        raise ValueError("deep-mismatch: --seeds and --epochs must be >= 1")
    spreads, modes = list(SPREADS), list(MODES)
    if getattr(args, "only", None):
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        bad = []
        for k in keys:
            if k not in MODES:
                try:
                    float(k)
                except ValueError:
                    bad.append(k)
        if bad:
            raise ValueError(f"deep-mismatch: --only takes methods {list(MODES)} and/or g_dtod values, got {bad}")
        modes = [k for k in keys if k in MODES] or modes
        spreads = [float(k) for k in keys if k not in MODES] or spreads
        if not all(np.isfinite(s) and s >= 0 for s in spreads):
            raise ValueError(f"deep-mismatch: g_dtod values must be finite and >= 0, got {spreads}")
    seeds = list(range(args.seed0, args.seed0 + args.seeds))
    out = Path(args.out or "results/deep-mismatch")
    workers = getattr(args, "workers", None) or min(2, os.cpu_count() or 1)
    epochs = args.epochs or EPOCHS
    t0 = time.perf_counter()
    summary, results = run(out, seeds, epochs, TASK, spreads, modes, workers, args.restart, not args.quiet)
    for p in plot(summary, results, out):
        print(f"plot: {p}", file=sys.stderr)
    text = "\n".join([f"# deep-mismatch: {TASK.upper()}, seeds {seeds}, {epochs} epochs, "
                      f"{time.perf_counter() - t0:.0f} s wall", "", *table(summary)])
    write_atomic(out / "report.md", text + "\n")
    print(text)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.deep_mismatch", description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--seed0", type=int, default=0)
    p.add_argument("--only", help=f"comma-separated methods {MODES} and/or g_dtod values (default {SPREADS})")
    p.add_argument("--workers", type=int, help="processes (default: min(2, CPUs))")
    p.add_argument("--restart", action="store_true")
    p.add_argument("--out")
    p.add_argument("--quiet", action="store_true")
    return reproduce(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
