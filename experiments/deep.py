"""DEEP (Farinha et al. 2020) against asymmetric EqProp on logic gates, seeds as lockstep trials.

Tasks: AND, OR, XOR, NOT, identity, each with the bias input (``eqprop.datasets.gate_dataset(...,
bias_input=True)``), one-hot 2-class outputs, train = test = the truth table, one batch per epoch.
Network for every method and seed: ``complete_directed(n, 5, 2, bias=True)``, weights N(0, 0.05^2)
per direction (``eqprop.deep.deep_init``, from the run's seed). Relaxation: dt (eps) 0.05, T1 = T2
= 1000 steps, gradient-form nudge; 200 epochs. Methods (``METHODS``; beta is this project's, whose
nudge force 2 beta (y - s) is the paper's beta (y - s) at twice the value):

* deep: DEEP at the paper's XOR values (dt_W = lr 100, paper beta 10);
* deep-tuned: DEEP at lr 30, paper beta 1 (the best of a sweep on XOR, seeds 0-9, docs/deep.md);
* deep-prune-<tol>: deep-tuned plus the paper's L1 (reg_W 1.5e-4 per update) and pruning (temp 5);
* eqprop: EqProp's rule (``eqprop_update``) on the asymmetric weights, the leaky Euler dynamics;
* ep-vf: the authors' asymmetric-EqProp baseline rule (``vector_field_update``), their dt_W 1, beta 10.

Each (task, method) is one ``Trainer`` of T = len(seeds) trials: results/deep/<task>-<method>/s<seed>/
(config.json, metrics.json with the per-epoch stability and sparsity report), the group's checkpoint
<task>-<method>/checkpoint.pt; groups run in worker processes. ``reproduce(args)`` is the
``eqprop reproduce deep`` entry; ``python -m experiments.deep`` runs it standalone.
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

from eqprop.run_files import SOLVER_MAY_CHANGE, config_diff, read_metrics, write_atomic, write_json
from experiments.sweep import local_pool

TASKS = ("and", "or", "xor", "not", "identity")
HIDDEN, EPOCHS, STEPS, DT = 5, 200, 1000, 0.05
REG_W, TEMP = 1.5e-4, 5.0  # paper-facts.md: the L1 step per update and the pruning temperature
PAPER = {"xor-deep": {"test_error": 0.0}, "xor-ep-vf": {"test_error": 0.75}}  # paper: DEEP 0 %, asym. EqProp 75 %
SAVE_EVERY = 20  # epochs between the trials' files and the group checkpoint (and at the end)
RESTART_HINT = "rerun with --restart to start afresh, or use another --out"


@dataclasses.dataclass(frozen=True)
class Method:
    kind: str  # deep | eqprop | vf
    lr: float
    beta: float  # this project's beta (the paper's / 2)
    prune_tol: float | None = None  # pruning on (with the L1 term) at this tol_W
    tasks: tuple[str, ...] = TASKS


METHODS = {
    "deep": Method("deep", 100.0, 5.0),
    "deep-tuned": Method("deep", 30.0, 0.5),
    "deep-prune-0.01": Method("deep", 30.0, 0.5, prune_tol=0.01, tasks=("and", "or", "xor")),
    "deep-prune-0.003": Method("deep", 30.0, 0.5, prune_tol=0.003, tasks=("xor",)),
    "deep-prune-0.001": Method("deep", 30.0, 0.5, prune_tol=0.001, tasks=("xor",)),
    "eqprop": Method("eqprop", 0.3, 0.5),
    "ep-vf": Method("vf", 1.0, 5.0),
}
CURVE_METHODS = ("deep", "deep-tuned", "eqprop", "ep-vf")


def groups(only: str | None = None) -> list[tuple[str, str]]:
    """(task, method) pairs; only: comma-separated tasks and/or methods (each kind filters if given)."""
    keys = [k.strip() for k in (only or "").split(",") if k.strip()]
    bad = [k for k in keys if k not in TASKS and k not in METHODS]
    if bad:
        raise ValueError(f"deep: --only takes tasks {list(TASKS)} and/or methods {list(METHODS)}, got {bad}")
    tasks = [k for k in keys if k in TASKS] or list(TASKS)
    methods = [k for k in keys if k in METHODS] or list(METHODS)
    return [(t, m) for m in methods for t in tasks if t in METHODS[m].tasks]


def build_trainer(task: str, method: str, seeds, epochs: int, out: Path, device: str = "cpu"):
    """The one Trainer of a (task, method) group: its configs, networks, solver and rule."""
    import torch

    from eqprop.config import EulerConfig, RunConfig
    from eqprop.datasets import gate_dataset
    from eqprop.deep import DeepConfig, DeepSolver, deep_init
    from eqprop.deep_rule import DeepRule, vector_field_update
    from eqprop.deep_stability import LeakyStabilityReport
    from eqprop.fast_relax import make_euler_solver
    from eqprop.learning import eqprop_update
    from eqprop.topology import complete_directed
    from eqprop.trainer import Trainer, seed_streams

    m, label = METHODS[method], f"{task}-{method}"
    data = gate_dataset(task, bias_input=True)
    cfgs = [RunConfig(dataset=data.name, hidden=(HIDDEN,), lr=m.lr, beta=m.beta, random_beta_sign=False,
                      epochs=epochs, seed=s, device=device, out=str(out / label / f"s{s}")) for s in seeds]
    topo = complete_directed(data.n_in - 1, HIDDEN, data.n_out, bias=True)
    nets = [deep_init(topo, seed=seed_streams(s)[1], device=device) for s in seeds]
    if m.kind == "deep":
        prune = m.prune_tol is not None
        solver = DeepSolver(DeepConfig(dt=DT, free_steps=STEPS, nudged_steps=STEPS, prune=prune,
                                       tol_W=m.prune_tol if prune else 0.01, temp=TEMP), trial_seeds=seeds)
        rule = DeepRule(solver, l1=REG_W / m.lr if prune else 0.0)
    else:
        rule = eqprop_update if m.kind == "eqprop" else vector_field_update
        euler = EulerConfig(eps=DT, free_steps=STEPS, nudged_steps=STEPS, nudge_form="gradient", engine="fast")
        solver = LeakyStabilityReport(make_euler_solver(euler, device), rule={"rule": rule.__name__})
    torch.set_num_threads(1)  # one group per core; these nets are far too small for threads to pay
    return Trainer(cfgs, data, solver=solver, networks=nets, checkpoint=out / label / "checkpoint.pt", rule=rule)


def finished(tr) -> bool:
    """Every trial's metrics.json holds this run to its last epoch; another config's run is an error."""
    done = True
    for c in tr.cfgs:
        f = Path(c.out) / "metrics.json"
        if not f.exists():
            return False
        m = read_metrics(f)
        diff = {**config_diff(m["config"], c.to_dict()),
                **config_diff(m["solver"], tr.solver.describe(), SOLVER_MAY_CHANGE)}
        if diff:
            from eqprop.trainer import CheckpointMismatch
            raise CheckpointMismatch(f"{f} holds a run with another config: {diff}; {RESTART_HINT}")
        done &= len(m["epochs"]) >= c.epochs
    return done


def fit(tr, epochs: int, resume: bool, save_every: int = SAVE_EVERY) -> None:
    """Trainer.run's loop (its public epoch API, the same locks, files and checkpoint), writing the
    trials' files and the checkpoint every ``save_every`` epochs and at the end, with no per-run
    plots: DEEP's epochs are one short batch, and run()'s per-epoch metrics.json of every trial
    (O(epochs^2) over a run) and 1.7 s of plots per folder took 4x the training time here."""
    from eqprop.run_files import RunLock

    folders = sorted({Path(c.out) for c in tr.cfgs} | {tr.checkpoint.parent})
    locks = [RunLock(f).acquire() for f in folders]
    try:
        if resume:
            tr.load_checkpoint(tr.checkpoint)
        tr.write_configs()
        for _ in range(len(tr.history[0]), epochs):
            epoch = tr.run_epoch()[0].epoch
            if epoch % save_every == 0 or epoch == epochs:
                tr.write_outputs(plots=False)  # metrics first: a kill before the checkpoint repeats epochs only
                tr.save_checkpoint(tr.checkpoint)
    finally:
        for lock in locks:
            lock.release()


def train_group(task: str, method: str, seeds, epochs: int, out: Path, restart: bool, device: str):
    """One group, in a worker process: skipped when finished, resumed from its checkpoint if any."""
    t0 = time.perf_counter()
    tr = build_trainer(task, method, seeds, epochs, out, device)
    if restart or not finished(tr):
        fit(tr, epochs, resume=not restart and tr.checkpoint.exists())
        return f"{task}-{method}", time.perf_counter() - t0
    return f"{task}-{method}", None


def run(out: Path, seeds, epochs: int = EPOCHS, only: str | None = None, workers: int = 2, restart: bool = False,
        device: str = "cpu", progress: bool = True) -> tuple[dict, dict]:
    """Train every group (workers processes), then summarise, plot and report; returns (summary, results)."""
    from tqdm.auto import tqdm

    todo = groups(only)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "experiment.json", {"tasks": sorted({t for t, _ in todo}), "seeds": list(seeds),
                                         "epochs": epochs, "hidden": HIDDEN, "steps": STEPS, "dt": DT,
                                         "methods": {k: dataclasses.asdict(v) for k, v in METHODS.items()}})
    t0 = time.perf_counter()
    args = [(t, m, list(seeds), epochs, out, restart, device) for t, m in todo]
    bar = tqdm(total=len(args), desc="deep groups", disable=not progress)
    if workers <= 1:  # in this process, one group after another
        done = (train_group(*a) for a in args)
    else:
        ex = local_pool(workers)
        done = (f.result() for f in concurrent.futures.as_completed([ex.submit(train_group, *a) for a in args]))
    try:
        for label, sec in done:
            bar.update()
            bar.write(f"{label}: " + ("already done" if sec is None else f"{len(seeds)} trials in {sec:.0f} s"))
    finally:
        bar.close()
        if workers > 1:
            ex.shutdown(cancel_futures=True)
    results = {f"{t}-{m}": [read_metrics(out / f"{t}-{m}" / f"s{s}" / "metrics.json") for s in seeds]
               for t, m in todo}
    summary = summarise(results)
    write_json(out / "summary.json", summary)
    if progress:
        print(f"deep: {len(todo)} groups of {len(seeds)} trials, {time.perf_counter() - t0:.0f} s wall", flush=True)
    return summary, results


# -- summary, checks, plots ---------------------------------------------------------------------

def _per_epoch(ms: list[dict], key: str) -> np.ndarray:
    """(seeds, epochs) of a solver-report key (NaN where absent or None)."""
    return np.array([[np.nan if e["solver"].get(key) is None else float(e["solver"][key]) for e in m["epochs"]]
                     for m in ms])


def summarise(results: dict) -> dict:
    out = {}
    for label, ms in results.items():
        final = np.array([m["epochs"][-1]["test_error"] for m in ms])
        err = np.array([[e["test_error"] for e in m["epochs"]] for m in ms])
        solved = [int(np.argmax(r == 0)) + 1 if (r == 0).any() else None for r in err]
        row = {"seeds": [m["config"]["seed"] for m in ms], "epochs": len(ms[0]["epochs"]),
               "test_error": float(final.mean()), "test_error_std": float(final.std()),
               "test_error_worst": float(final.max()), "test_error_all": final.tolist(),
               "n_zero": int((final == 0).sum()), "first_zero_epoch": solved,
               "train_error": float(np.mean([m["epochs"][-1]["train_error"] for m in ms])),
               "seconds": float(sum(e["seconds"] for e in ms[0]["epochs"]))}
        for key in ("sparsity", "gershgorin_stable", "eig_stable", "max_real_eig", "eq_gershgorin_stable",
                    "eq_stable", "free_residual"):
            v = _per_epoch(ms, key)
            if v.size and np.isfinite(v[:, -1]).any():
                row[key] = float(np.nanmean(v[:, -1]))  # final epoch, mean over seeds (fraction for booleans)
                row[key + "_all"] = v[:, -1].tolist()
                if key.endswith("stable"):
                    row[key + "_any_epoch"] = float(np.nanmean(v))  # over all epochs and seeds
        out[label] = row
    return out


def table(summary: dict) -> list[str]:
    lines = ["| task | method | seeds | final error mean ± std | worst | seeds at 0 | sparsity | J Gershgorin-stable | "
             "J eig-stable | median max Re λ(J) | equilibria eig-stable | equilibria Gershgorin-stable | "
             "max free residual |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, r in summary.items():
        task, method = label.split("-", 1)
        stab = lambda k: "-" if k not in r else f"{r[k]:.0%} ({r[k + '_any_epoch']:.0%})"  # noqa: E731
        med = f"{np.nanmedian(r['max_real_eig_all']):+.2f}" if "max_real_eig_all" in r else "-"
        res = f"{np.nanmax(r['free_residual_all']):.1e}" if "free_residual_all" in r else "-"
        lines.append(f"| {task} | {method} | {len(r['seeds'])} | {r['test_error']:.3f} ± {r['test_error_std']:.3f} | "
                     f"{r['test_error_worst']:.2f} | {r['n_zero']}/{len(r['seeds'])} | {r.get('sparsity', 0.0):.3f} | "
                     f"{stab('gershgorin_stable')} | {stab('eig_stable')} | {med} | {stab('eq_stable')} | "
                     f"{stab('eq_gershgorin_stable')} | {res} |")
    return lines + ["", "Stability columns: fraction of seeds at the final epoch (in brackets: over all epochs and "
                        "seeds). J: the free dynamics' Jacobian in the box's interior; equilibria: J restricted to "
                        "the unsaturated neurons at each example's free equilibrium (eqprop.deep_stability)."]


def check(summary: dict, results: dict | None = None) -> list[str]:
    """The paper's claim on XOR next to what was measured."""
    lines = []
    for label, paper in (("xor-deep", "0 % (learned)"), ("xor-ep-vf", "75 %"), ("xor-deep-tuned", None),
                         ("xor-eqprop", None)):
        r = summary.get(label)
        if r:
            lines.append(f"{label}: final error mean {r['test_error']:.3f}, worst {r['test_error_worst']:.2f}, "
                         f"{r['n_zero']}/{len(r['seeds'])} seeds at 0" + (f" (paper: {paper})" if paper else ""))
    return lines


def plot(summary: dict, results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    tasks = [t for t in TASKS if any(k.startswith(t + "-") for k in results)]

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths.append(out / name)

    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.2), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], tasks):
        for i, m in enumerate(CURVE_METHODS):
            ms = results.get(f"{task}-{m}")
            if ms:
                err = np.array([[e["test_error"] for e in r["epochs"]] for r in ms])
                ep, mu, sd = np.arange(1, err.shape[1] + 1), err.mean(0), err.std(0)
                ax.plot(ep, mu, color=f"C{i}", label=m)
                ax.fill_between(ep, np.clip(mu - sd, 0, 1), np.clip(mu + sd, 0, 1), color=f"C{i}", alpha=0.15)
        ax.set_title(task.upper())
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"error (mean ± std over {len(next(iter(results.values())))} seeds)")
    axes[0][0].legend(fontsize=7)
    save(fig, "deep_curves.png")

    pruned = [k for k in results if "-deep-prune-" in k
              or (k.endswith("-deep-tuned") and any(p.startswith(k.split("-")[0] + "-deep-prune") for p in results))]
    if any("-deep-prune-" in k for k in pruned):
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
        for i, k in enumerate(sorted(pruned)):
            sp = np.nan_to_num(_per_epoch(results[k], "sparsity"))
            err = np.array([m["epochs"][-1]["test_error"] for m in results[k]])
            a.scatter(sp[:, -1], err, color=f"C{i}", s=10, alpha=0.35)
            a.errorbar(sp[:, -1].mean(), err.mean(), xerr=sp[:, -1].std(), yerr=err.std(), color=f"C{i}", fmt="o",
                       capsize=3, label=k)
            if "prune" in k:
                b.plot(np.arange(1, sp.shape[1] + 1), sp.mean(0), color=f"C{i}", label=k)
        a.set_xlabel("final sparsity (pruned fraction of connections)")
        a.set_ylabel("final error (dots: seeds; marks: mean ± std)")
        b.set_xlabel("epoch")
        b.set_ylabel("sparsity (mean over seeds)")
        for ax in (a, b):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
        save(fig, "deep_pruning.png")

    keys = (("gershgorin_stable", "J Gershgorin-stable"), ("eig_stable", "all Re λ(J) < 0"),
            ("eq_stable", "equilibria stable (Re λ)"))
    fig, axes = plt.subplots(len(keys), len(tasks), figsize=(3.6 * len(tasks), 2.6 * len(keys)), squeeze=False,
                             sharey=True)
    for col, task in enumerate(tasks):
        for i, m in enumerate(CURVE_METHODS):
            ms = results.get(f"{task}-{m}")
            for row, (key, _) in enumerate(keys):
                v = _per_epoch(ms, key) if ms else np.empty((0, 0))
                if v.size:
                    axes[row][col].plot(np.arange(1, v.shape[1] + 1), np.nanmean(v, 0), color=f"C{i}", label=m,
                                        ls="--" if m == "deep" else "-", lw=2.2 if m == "deep" else 1.2)
        axes[0][col].set_title(task.upper())
        axes[-1][col].set_xlabel("epoch")
        for row in range(len(keys)):
            axes[row][col].grid(alpha=0.3)
    for row, (_, name) in enumerate(keys):
        axes[row][0].set_ylabel(f"{name}\n(fraction of seeds)")
    axes[0][0].legend(fontsize=7)
    save(fig, "deep_stability.png")
    return paths


# -- entry points ---------------------------------------------------------------------------------

def reproduce(args) -> int:
    """``eqprop reproduce deep`` (the reproduce parser's arguments)."""
    if getattr(args, "train_limit", None) or getattr(args, "test_limit", None):
        raise ValueError("deep: the gates have 2-4 examples; --train-limit/--test-limit do not apply")
    if args.seeds < 1 or (args.epochs is not None and args.epochs < 1):
        raise ValueError("deep: --seeds and --epochs must be >= 1")
    seeds = list(range(args.seed0, args.seed0 + args.seeds))
    out = Path(args.out or "results/deep")
    workers = getattr(args, "workers", None) or min(2, os.cpu_count() or 1)
    summary, results = run(out, seeds, args.epochs or EPOCHS, args.only, workers, args.restart,
                           args.device or "cpu", progress=not args.quiet)
    for p in plot(summary, results, out):
        print(f"plot: {p}", file=sys.stderr)
    text = "\n".join([f"# deep: {len(results)} groups, seeds {seeds}, {args.epochs or EPOCHS} epochs", "",
                      *table(summary), "", *check(summary)])
    write_atomic(out / "report.md", text + "\n")
    print(text)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.deep", description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--seed0", type=int, default=0)
    p.add_argument("--only", help=f"comma-separated tasks {TASKS} and/or methods {tuple(METHODS)}")
    p.add_argument("--workers", type=int, help="processes (default: min(2, CPUs))")
    p.add_argument("--device", default="cpu")
    p.add_argument("--restart", action="store_true")
    p.add_argument("--out")
    p.add_argument("--quiet", action="store_true")
    return reproduce(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
