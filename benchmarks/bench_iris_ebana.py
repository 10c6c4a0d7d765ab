"""Iris with ngspice in the loop, side by side with EBANA's figures and our previous default.

    .venv/bin/python benchmarks/bench_iris_ebana.py                  # ~10-20 min on one busy core
    .venv/bin/python benchmarks/bench_iris_ebana.py --seeds 0 1 2

The task of EBANA's iris example (mawatfa/ebana examples/simple/iris/iris.py: 4 features,
3 classes, one hidden layer of 10, outputs folded): here the layered Hopfield net
4-10-3 with inputs folded into bias currents, trained by the one Trainer with SpiceSolver
(every equilibrium an ngspice solve; one worker process). Throughput is per core: CPU
seconds of this process plus its ngspice worker (``NgspiceSession.cpu_seconds``; code
without that counter is read from /proc/<pid>/stat of its worker) over the examples of the
training batches (free + nudged phase + update) and of the evaluations (one free phase
each), measured by wrapping ``Trainer.train_batch`` and ``Trainer.evaluate``.

With --ebana-python and --ebana-src, EBANA itself is timed first in the same run (benchmarks/ebana_iris.py in
its own environment, 1 pool process, --ebana-epochs x --ebana-repeats; set-up in docs/spice.md) and the ratios
are against its median; without them, against its figures recorded on an earlier machine.

Rows, all in this run, the same SpiceConfig settings (defaults, --tstep; this tree's rows also spice-train's
iris solver settings, eqprop.config.DATASET_SOLVER_DEFAULTS: the nudge held 3 tau):
* ``previous default``: the code of git revision --baseline-rev (extracted with `git archive` into
  a temporary folder, run in a child process), --baseline-epochs epochs: throughput and accuracy;
  with --baseline-solver-defaults at that revision's own spice-train iris solver settings.
* ``new default, seed s``: this tree (SpiceConfig defaults: the cold .op polish, transients
  stored at tstep), the full run of --epochs per seed: throughput and test accuracy (best and
  last epoch) on the dataset's held-out split.
Training settings: `eqprop spice-train`'s iris defaults (eqprop.config.dataset_defaults: per-layer
rates, warm-up, cosine, soft targets, 80 epochs, a random beta sign; docs/training.md) with EBANA's
hidden 10. EBANA's figures recorded on an earlier machine (one core, ngspice-notes.md): 21-27 training and
35-41 evaluation examples/s. Not a test: prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EBANA_TRAIN = (21.0, 27.0)  # examples/s, one core (ngspice-notes.md)
EBANA_EVAL = (35.0, 41.0)
BASELINE_REV = "c6b0de5"  # the last commit before the cold polish (session 4 end)


def worker_cpu(solver) -> float:
    """CPU seconds of the solver's ngspice workers: the session's counter, else /proc/<pid>/stat."""
    total = 0.0
    for slots in solver._slots.values():
        for sl in slots:
            ses = sl.session
            if hasattr(ses, "cpu_seconds"):
                total += ses.cpu_seconds
            elif ses.pid is not None:
                fields = Path(f"/proc/{ses.pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def measure(run: dict) -> dict:
    """Train one configuration; CPU per training and evaluation example (main + worker)."""
    import torch
    torch.set_num_threads(1)  # one core: torch's intra-op threads only spin against the worker on small nets
    from circuits.spice_config import SpiceConfig
    from circuits.spice_solver import SpiceSolver
    from eqprop.config import RunConfig
    from eqprop.datasets import load_dataset
    from eqprop.trainer import Trainer

    fields = RunConfig.__dataclass_fields__
    cfg = RunConfig(**{k: v for k, v in run["run"].items() if k in fields})
    data = load_dataset(cfg.dataset)
    # the baseline with --baseline-solver-defaults: its own revision's iris solver settings (imported there)
    settings = {**run["spice"], **(iris_solver_defaults() if run.get("tree_solver_defaults") else {})}
    spice = SpiceConfig(**settings)
    acc = {"train_cpu": 0.0, "eval_cpu": 0.0, "train_n": 0, "eval_n": 0,
           "train_worker_cpu": 0.0, "eval_worker_cpu": 0.0}
    with SpiceSolver(spice) as solver:
        tr = Trainer(cfg, data, solver=solver)

        def cpu():
            return time.process_time() + worker_cpu(solver)

        def timed(fn, key, n):
            def wrapped(*a):
                c0, w0 = cpu(), worker_cpu(solver)
                out = fn(*a)
                acc[key + "_cpu"] += cpu() - c0
                acc[key + "_worker_cpu"] += worker_cpu(solver) - w0  # the ngspice worker's share of it
                acc[key + "_n"] += n(*a)
                return out
            return wrapped

        counts = {"unsettled": 0, "cold": 0, "rested": 0, "equilibria": 0}
        name = "_relax" if hasattr(solver, "_relax") else "relax"  # every call, both phases in one or not
        relax = getattr(solver, name)

        def counted(*a, **k):  # examples whose transient did not settle (on_unsettled "warn"), cold polishes
            out = relax(*a, **k)
            for key in ("unsettled", "cold", "rested"):
                counts[key] += solver.last_stats.get(key, 0)
            counts["equilibria"] += solver.last_stats["examples"]
            return out
        setattr(solver, name, counted)
        tr.train_batch = timed(tr.train_batch, "train", lambda k: int(tr.idx.shape[-1] if tr.common_len[k] is None
                                                                       else tr.common_len[k]))
        tr.evaluate = timed(tr.evaluate, "eval", lambda: len(data.x_test))
        t0 = time.perf_counter()
        metrics = tr.run(progress=False)[0]
        wall = time.perf_counter() - t0
        stats = dict(solver.last_stats)
    errors = [e["test_error"] for e in metrics["epochs"]]
    return {**acc, "wall_s": wall, "train_ex_s": acc["train_n"] / acc["train_cpu"],
            "eval_ex_s": acc["eval_n"] / acc["eval_cpu"], "test_acc_last": 1 - errors[-1],
            "test_acc_best": 1 - min(errors), "epochs": len(errors), "n_test": len(data.x_test),
            "n_train": len(data.x_train), "matrix_solver": stats.get("matrix_solver"), "spice": settings, **counts}


def baseline(rev: str, run: dict) -> dict:
    """``measure`` on the code of git revision rev, in a child process (its own imports)."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=tree, check=True)
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps(run), "--root", tmp],
                             capture_output=True, text=True, cwd=tmp)
        if out.returncode:
            raise RuntimeError(f"the baseline (rev {rev}) failed:\n" + "\n".join(out.stderr.splitlines()[-15:]))
        return json.loads(out.stdout.strip().splitlines()[-1])


def iris_defaults() -> dict:
    """`eqprop spice-train`'s per-dataset iris defaults (eqprop.config.dataset_defaults: train's rates and
    schedule with a fixed beta sign)."""
    sys.path.insert(0, str(ROOT))
    from eqprop.config import dataset_defaults
    return dataset_defaults("spice-train", "iris")


def iris_solver_defaults() -> dict:
    """`eqprop spice-train`'s iris solver settings (eqprop.config.dataset_solver_defaults: the timed nudge)."""
    from eqprop.config import dataset_solver_defaults
    return dataset_solver_defaults("spice-train", "iris").get("spice", {})


def ebana(python: str, src: Path, epochs: int) -> dict:
    """EBANA's iris example timed in its own environment (benchmarks/ebana_iris.py), one pool process."""
    from circuits.ngspice_runner import LIBRARY_ENV, find_library
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.setdefault(LIBRARY_ENV, find_library() or "")  # PySpice looks for an unversioned libngspice.so
    out = subprocess.run([python, str(ROOT / "benchmarks" / "ebana_iris.py"), "--ebana", str(src), "--epochs",
                          str(epochs)], check=True, capture_output=True, text=True, env=env)
    line = next(ln for ln in out.stdout.splitlines()[::-1] if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = iris_defaults()
    ap.add_argument("--hidden", type=int, default=10, help="hidden neurons (default 10: EBANA's iris net)")
    ap.add_argument("--epochs", type=int, default=d.get("epochs", 40))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--lr", type=float, nargs="+", default=d.get("lr", [0.3, 0.075]),
                    help="one rate, or one per adjacent block (input side first)")
    ap.add_argument("--warmup", type=int, default=d.get("warmup", 0))
    ap.add_argument("--beta", type=float, default=d.get("beta", 0.5))
    ap.add_argument("--random-beta-sign", action=argparse.BooleanOptionalAction,
                    default=d.get("random_beta_sign", True), help="default: spice-train's iris setting (fixed)")
    ap.add_argument("--batch-size", type=int, default=d.get("batch_size", 5))
    ap.add_argument("--soft-targets", type=float, default=d.get("soft_targets", 0.0),
                    help="the nudge's targets S and 1 - S (a revision without the field trains with 0 and 1)")
    ap.add_argument("--schedule", default=d.get("schedule", "cosine"), help="learning-rate schedule")
    ap.add_argument("--tstep", type=float, default=10.0, help="transient print step (tau) of every row")
    ap.add_argument("--on-unsettled", choices=["raise", "warn", "polish"],
                    help="SpiceConfig.on_unsettled of every row (default: this tree's iris default for its rows, "
                         "raise for the baseline; warn: counted, the polish still runs; polish: this tree's rows "
                         "only, the baseline revision predates it and takes warn)")
    ap.add_argument("--baseline-rev", default=BASELINE_REV)
    ap.add_argument("--baseline-epochs", type=int, default=1)
    ap.add_argument("--baseline-solver-defaults", action="store_true",
                    help="the baseline runs with its own revision's `eqprop spice-train --dataset iris` solver "
                         "settings (a revision with eqprop.config.dataset_solver_defaults), not SpiceConfig's")
    ap.add_argument("--out", type=Path, default=Path("results/bench_iris_ebana.json"))
    ap.add_argument("--ebana-python", help="EBANA's environment's python: EBANA is measured in this run (docs/spice.md "
                                           "says how to set it up); without it the recorded figures are printed")
    ap.add_argument("--ebana-src", type=Path, help="a checkout of mawatfa/ebana (with --ebana-python)")
    ap.add_argument("--ebana-epochs", type=int, default=3, help="EBANA epochs timed (its iris trains 35 ex/epoch)")
    ap.add_argument("--ebana-repeats", type=int, default=3)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # a measurement on another tree (the baseline revision): its modules only
        sys.path[:] = [args.root] + [p for p in sys.path if Path(p or ".").resolve() != ROOT]
        for name in [m for m in sys.modules if m.split(".")[0] in ("eqprop", "circuits", "netlist_gen")]:
            del sys.modules[name]  # imported from this tree for the flags' defaults
        print(json.dumps(measure(json.loads(args.child))))
        return
    sys.path.insert(0, str(ROOT))
    from circuits.ngspice_runner import ngspice_info
    info = ngspice_info()
    lr = args.lr[0] if len(args.lr) == 1 else args.lr
    run = {"dataset": "iris", "hidden": [args.hidden], "lr": lr, "beta": args.beta, "warmup": args.warmup,
           "batch_size": args.batch_size, "dtype": "float64", "schedule": args.schedule,
           "random_beta_sign": args.random_beta_sign, "soft_targets": args.soft_targets}
    if (args.ebana_python is None) != (args.ebana_src is None):
        raise SystemExit("--ebana-python and --ebana-src go together")
    flag = {"on_unsettled": args.on_unsettled} if args.on_unsettled else {}
    spice = {"tstep": args.tstep, "on_unsettled": "warn" if args.on_unsettled == "polish" else
             args.on_unsettled or "raise"}  # the baseline's
    rows, eb = [], []
    for _ in range(args.ebana_repeats if args.ebana_python else 0):
        eb.append(ebana(args.ebana_python, args.ebana_src, args.ebana_epochs))
    short = {**run, "epochs": args.baseline_epochs, "warmup": min(args.warmup, max(args.baseline_epochs - 1, 0))}
    res = baseline(args.baseline_rev, {"run": {**short, "out": tempfile.mkdtemp(prefix="bench_iris_old_")},
                                       "spice": spice, "tree_solver_defaults": args.baseline_solver_defaults})
    spice = {**spice, **iris_solver_defaults(), **flag}  # this tree's rows: spice-train's iris solver settings too
    rows.append((f"previous default (rev {args.baseline_rev})", res))
    tuned = []
    failed = []
    for seed in args.seeds:
        try:
            res = measure({"run": {**run, "epochs": args.epochs, "seed": seed,
                                   "out": tempfile.mkdtemp(prefix=f"bench_iris_s{seed}_")}, "spice": spice})
        except Exception as e:  # e.g. a transient that does not settle: reported, not hidden
            failed.append(f"seed {seed}: {type(e).__name__}: {str(e).splitlines()[0]}")
            continue
        tuned.append(res)
        rows.append((f"new default, seed {seed}", res))
    old = rows[0][1]
    klu = "yes" if info["klu"] else "no"
    if eb:  # measured here, in this run: ratios against the median of its repeats
        e_train, e_eval = (statistics.median(r[k] for r in eb) for k in ("train_ex_s", "eval_ex_s"))
        e_src = f"measured in this run (median of {len(eb)})"
        e_train_rng, e_eval_rng = (e_train, e_train), (e_eval, e_eval)
    else:
        e_train_rng, e_eval_rng, e_src = EBANA_TRAIN, EBANA_EVAL, "recorded on an earlier machine (ngspice-notes.md)"
    print(f"ngspice-{info['version']} (KLU {klu}), {platform.node()}; iris 4-{args.hidden}-3, "
          f"batch {args.batch_size}, lr {args.lr}, beta {args.beta:g}, warm-up {args.warmup}, schedule "
          f"{args.schedule}, soft targets {args.soft_targets:g}, tstep {args.tstep:g}, this tree's rows "
          f"{iris_solver_defaults()}; examples/s per core "
          f"(CPU incl. the ngspice worker)")
    print(f"{'run':<34} {'train ex/s':>10} {'x EBANA':>9} {'x prev':>7} {'eval ex/s':>10} {'x EBANA':>9} "
          f"{'x prev':>7} {'test acc last/best':>19}")

    def ratio(v, rng):
        return f"{v / rng[1]:.1f}" if rng[0] == rng[1] else f"{v / rng[1]:.1f}-{v / rng[0]:.1f}"
    for r in eb:
        print(f"{'EBANA (its iris example, 1 process)':<34} {r['train_ex_s']:>10.1f} {'':>9} {'':>7} "
              f"{r['eval_ex_s']:>10.1f} {'':>9} {'':>7} {'':>19}")
    for name, r in rows:
        accs = f"{r['test_acc_last']:.3f}/{r['test_acc_best']:.3f} ({r['epochs']} ep)"
        print(f"{name:<34} {r['train_ex_s']:>10.1f} {ratio(r['train_ex_s'], e_train_rng):>9} "
              f"{r['train_ex_s'] / old['train_ex_s']:>6.1f}x {r['eval_ex_s']:>10.1f} "
              f"{ratio(r['eval_ex_s'], e_eval_rng):>9} {r['eval_ex_s'] / old['eval_ex_s']:>6.1f}x {accs:>19}")
    def span(rng):
        return f"{rng[0]:.1f}" + ("" if rng[0] == rng[1] else f"-{rng[1]:.1f}")
    print(f"EBANA {e_src}: training {span(e_train_rng)} ex/s, evaluation {span(e_eval_rng)} ex/s, one core")
    if tuned:
        med = statistics.median(r["train_ex_s"] for r in tuned)
        mean = statistics.mean(r["test_acc_last"] for r in tuned)
        worst = min(r["test_acc_last"] for r in tuned)
        print(f"new default over {len(tuned)} seed(s): train ex/s median {med:.1f}, test accuracy last epoch mean "
              f"{mean:.3f} worst {worst:.3f} (of {tuned[0]['n_test']} held-out examples)")
        for r in tuned:
            print(f"  {r['equilibria']} equilibria: {r.get('rested', 0)} at rest (no polish), {r['cold']} kept the "
                  f"cold .op, {r['unsettled']} unsettled (on_unsettled {args.on_unsettled}); training CPU "
                  f"{1e3 * r['train_cpu'] / r['train_n']:.2f} ms/example, of it the ngspice worker "
                  f"{1e3 * r.get('train_worker_cpu', 0) / r['train_n']:.2f}")
    for f in failed:
        print(f"FAILED {f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"ngspice": info, "args": {k: v for k, v in vars(args).items() if k != "out"},
              "rows": [{"run": n, **r} for n, r in rows], "ebana": eb, "failed": failed}
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
