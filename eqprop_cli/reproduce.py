"""`eqprop reproduce NAME`: a paper figure or table as a named experiment."""
from __future__ import annotations

import dataclasses
import importlib
import sys

from eqprop.run_files import RunLock, write_atomic

from .checks import results_folder

EXPERIMENTS = {
    "table1": "Table 1: MLFF vs SW on diabetes, wine (default) and MNIST/FMNIST (--only images)",
    "fig2": "Fig 2: MNIST 784-500x3-10, MLFF global rate vs per-layer rates vs SW p=0.1 (plus Fig 3 and Fig 5 plots)",
    "fig3": "Fig 3: per-block lr * RMS correction per epoch for Fig 2's three runs (shares results/fig2)",
    "fig5": "Fig 5: mean |dW| per connection, 784-100x5-10 MLFF vs SW on MNIST (Table 1's image runs)",
    "fig4": "Fig 4: 784-100x5-10 MNIST, error and log-spread vs p (p = 0 and 29 values of logspace(-4, 0, 30))",
    "free-phase-fidelity": "issue 15: the reference's fixed free phase vs the hybrid (docs/free-phase.md), "
                           "784-100x5-10 MNIST MLFF and SW, 6000/2000 examples, 10 epochs (use --seeds 3)",
    "deep": "DEEP (Farinha et al. 2020) vs asymmetric EqProp on AND/OR/XOR/NOT/identity, pruning, stability "
            "(use --seeds 10; --only tasks and/or methods)",
    "deep-mismatch": "Hopfield EqProp vs DEEP on XOR with device-to-device mismatch g_dtod 0-0.8, the device model "
                     "in the loop (use --seeds 10; --only methods eqprop,deep and/or g_dtod values)",
}


def cmd_reproduce(args) -> int:
    if args.name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {args.name!r}; known: {', '.join(sorted(EXPERIMENTS))}")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.workers and args.batched:
        raise ValueError("--workers runs independent runs side by side; --batched stacks them in one process: "
                         "choose one")
    if (args.free_method or "fixed") != "fixed" and args.tol is None:
        raise ValueError(f"--free-method {args.free_method} needs --tol (e.g. 1e-6)")
    mod = importlib.import_module(f"experiments.{args.name.replace('-', '_')}")
    seeds = list(range(args.seed0, args.seed0 + args.seeds))
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if args.epochs is not None and args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if args.only is not None and not args.only.strip():
        raise ValueError("--only: empty; leave it out for the whole experiment")
    if args.out is not None and not args.out.strip():
        raise ValueError("--out: empty path; give a results folder")
    if hasattr(mod, "reproduce"):  # experiments with their own solver and rule (deep)
        return mod.reproduce(args)
    out = results_folder(args.out or f"results/{getattr(mod, 'RESULTS_OF', args.name)}")  # before any work
    with RunLock(out):  # one reproduce per --out (its summary and report); a killed one's temp files go
        return _reproduce(args, mod, seeds, out)


def _reproduce(args, mod, seeds: list[int], out) -> int:
    from experiments.common import compare_table, place, run_all, run_batched
    runs = place(mod.runs(epochs=args.epochs, seeds=seeds, only=args.only), out, args.device,
                 train_limit=args.train_limit, test_limit=args.test_limit)
    runs = with_free_method(runs, args.free_method, args.tol)
    reduced = [f"{k} {v}" for k, v in (("train_limit", args.train_limit), ("test_limit", args.test_limit)) if v]
    out.mkdir(parents=True, exist_ok=True)
    batched, why = choose_mode(args, runs)
    if not args.quiet:
        how = f"{args.workers} worker processes" if args.workers else "one run after another"
        print(f"mode: {'lockstep trials' if batched else how} ({why})", file=sys.stderr)
    if batched:
        summary, results = run_batched(args.name, runs, out, resume=not args.restart, progress=not args.quiet)
    else:
        summary, results = run_all(args.name, runs, out, resume=not args.restart, progress=not args.quiet,
                                   workers=args.workers)
    if hasattr(mod, "plot"):
        for path in mod.plot(summary, results, out):
            print(f"plot: {path}", file=sys.stderr)
    report = [f"# {args.name}: {len(runs)} runs, seeds {seeds}", ""]
    if reduced:
        report += [f"REDUCED SCALE ({', '.join(reduced)}): not the paper's data size; numbers are not comparable "
                   "to the paper's", ""]
    if args.compare:
        report += [compare_table(summary, mod.PAPER), ""]
    if hasattr(mod, "check"):
        report += mod.check(summary, results)
    paper_runs = mod.runs(None, seeds, args.only)  # the paper's lengths, for the projection
    if reduced or (args.epochs and any(args.epochs < r.run.epochs for r in paper_runs)):
        from experiments.common import projection_lines
        report += [""] + projection_lines(paper_runs, results, batched=batched)
    text = "\n".join(report)
    write_atomic(out / f"report_{args.name}.md" if hasattr(mod, "RESULTS_OF") else out / "report.md", text + "\n")
    print(text)
    print(f"\nsummary: {out / 'summary.json'}", file=sys.stderr)
    return 0


# On CPU, stacking T trials of MNIST-sized nets costs more per trial than running them one after
# another (bench_engine, docs/engine.md: 32 trials of 784-100x5-10 took 63x one trial's time),
# while T small nets in one call are ~7x faster than T separate runs. On CUDA stacking is the point.
SMALL_NET_HIDDEN = 256


def with_free_method(runs, method: str | None, tol: float | None):
    """The runs with their free phase ended by ``method`` at ``tol`` (None: as each experiment defines)."""
    if method is None and tol is None:
        return runs
    kw = {"tol": tol} if tol is not None else {}
    if method is not None:
        kw["free_method"] = method
    return [dataclasses.replace(r, euler=dataclasses.replace(r.euler, **kw)) for r in runs]


def choose_mode(args, runs) -> tuple[bool, str]:
    """Lockstep trials or one run after another: the flag if given, else by device and size."""
    if args.batched:
        return True, "--batched"
    if args.sequential or args.workers:
        return False, "--sequential" if args.sequential else "--workers"
    cfg = runs[0].run
    if (args.device or cfg.device).startswith("cuda"):
        return True, "default on CUDA"
    if sum(cfg.hidden) <= SMALL_NET_HIDDEN:
        return True, f"default on CPU for nets with <= {SMALL_NET_HIDDEN} hidden neurons"
    return False, f"default on CPU for nets with > {SMALL_NET_HIDDEN} hidden neurons (stacking does not pay there)"


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="run a paper figure/table as a named experiment",
                       description="Named experiments: " + "; ".join(f"{k}: {v}" for k, v in EXPERIMENTS.items()))
    p.add_argument("name", help=", ".join(sorted(EXPERIMENTS)))
    p.add_argument("--epochs", type=int, help="override the paper's epoch count")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (mean and spread are reported)")
    p.add_argument("--seed0", type=int, default=0)
    p.add_argument("--only", help="a subset: table1 small|images|DATASET; fig2/fig3 mlff-global|mlff-per-layer|sw; "
                                  "fig4 comma-separated p values (e.g. 0,0.01,0.1); fig5 mnist|fmnist")
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--compare", action="store_true", help="print our numbers next to the paper's")
    p.add_argument("--restart", action="store_true", help="ignore finished runs and checkpoints")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--batched", action="store_true",
                      help="seeds and p values of equal sizes/steps run as lockstep trials of one solver (the "
                           "fast engine; one checkpoint per group per epoch). Default on CUDA and for small nets")
    mode.add_argument("--sequential", action="store_true",
                      help="one Trainer run after another (the config's engine: the reference EulerSolver on "
                           "CPU), a checkpoint per run; same results as --batched within fp32 noise. Default on "
                           "CPU for nets with more than 256 hidden neurons")
    p.add_argument("--train-limit", type=int,
                   help="reduced scale: only the first N training examples (reported as such)")
    p.add_argument("--test-limit", type=int, help="reduced scale: only the first N test examples")
    p.add_argument("--workers", type=int,
                   help="--sequential runs as N independent single-threaded processes (one per core; each resumes "
                        "from its own checkpoint). Default: one after another in this process")
    e = p.add_argument_group("free phase (default: each experiment's fixed step count, the paper's)")
    e.add_argument("--free-method", choices=["fixed", "per-example", "hybrid"],
                   help="per-example stopping or the hybrid (Euler prefix + layer-wise Gauss-Seidel/SOR) for every "
                        "run's free phase; needs --tol (docs/free-phase.md)")
    e.add_argument("--tol", type=float, help="stop tolerance of --free-method (e.g. 1e-6)")
    p.add_argument("--out", help="default results/NAME")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_reproduce)
