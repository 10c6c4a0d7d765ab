"""`eqprop train` and `eqprop demo`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eqprop.config import (
    FREE_METHODS,
    FREE_STARTS,
    EulerConfig,
    RunConfig,
    dataset_defaults,
    dataset_solver_defaults,
    read_toml,
)

from .checks import results_folder


def _ints(text: str) -> list[int]:
    """'100,100,100' or '100x3' (the papers' 784-100x3-10 shorthand) or a mix: '500x2,100'."""
    out = []
    try:
        for tok in text.split(","):
            n, _, k = tok.partition("x")
            reps = int(k) if k else 1
            if reps < 1:  # '4x0' would silently mean no hidden layer at all
                raise ValueError
            out += [int(n)] * reps
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 100,100 or 100x2 (repeats >= 1), got {text!r}") from None
    return out


def _rates(text: str) -> float | list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v]
    except ValueError:
        vals = []
    if not vals:
        raise argparse.ArgumentTypeError(f"expected a rate or comma-separated rates, got {text!r}")
    return vals[0] if len(vals) == 1 else vals


def _seeds(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        vals = []
    if not vals or min(vals) < 0 or len(set(vals)) != len(vals):
        raise argparse.ArgumentTypeError(f"expected distinct non-negative seeds like 0,1,2, got {text!r}")
    return vals


RUN_FLAGS = ("dataset", "hidden", "topology", "p", "sw_mode", "intralayer", "lr", "schedule", "warmup", "beta",
             "random_beta_sign", "free_start", "soft_targets",
             "batch_size", "epochs", "seed", "device", "dtype", "train_limit", "test_limit", "out")
EULER_FLAGS = ("eps", "free_steps", "nudged_steps", "nudge_form", "coupling", "engine", "tol", "free_method",
               "prefix_steps", "omega", "omega_from", "max_sweeps", "face_solve")


def add_config_flags(p: argparse.ArgumentParser, euler: bool = True) -> None:
    """Flags for the RunConfig fields (and, with euler, the EulerConfig ones); unset flags keep the
    TOML/default value."""
    g = p.add_argument_group("run configuration (override the TOML config)")
    g.add_argument("--config", type=Path, help="TOML file with RunConfig keys (and [euler] / [spice] tables)")
    g.add_argument("--dataset", help="mnist, fmnist, digits, wine, diabetes, iris, and, or, xor")
    g.add_argument("--hidden", type=_ints, help="hidden layer sizes, e.g. 100,100,100 or 100x3")
    g.add_argument("--topology", choices=["mlff", "sw"])
    g.add_argument("--p", type=float, help="small-world replacement probability")
    g.add_argument("--sw-mode", choices=["replace", "add"])
    g.add_argument("--intralayer", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--lr", type=_rates, help="global rate, or one per adjacent block (input side first)")
    g.add_argument("--schedule", help="the rates' course over the epochs: constant, cosine[:FLOOR] (down to FLOOR x "
                                      "the rate) or step:EVERY[:GAMMA] (x GAMMA every EVERY epochs); docs/training.md")
    g.add_argument("--warmup", type=int, help="epochs of linear warm-up to the rate before the schedule")
    g.add_argument("--beta", type=float)
    g.add_argument("--random-beta-sign", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--free-start", choices=list(FREE_STARTS),
                   help="where every free phase starts, in training and evaluation: each example's last free state "
                        "(persistent particles, default) or u = 0 (a reset before every input: the prediction then "
                        "depends on x alone; docs/training.md)")
    g.add_argument("--soft-targets", type=float, metavar="S",
                   help="classification: nudge the outputs towards S (other classes) and 1 - S (the class) instead "
                        "of 0 and 1, 0 <= S < 0.5 (default 0; iris's default 0.2; docs/training.md)")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--epochs", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--seeds", type=_seeds,
                   help="several seeds as lockstep trials of one Trainer, e.g. 0,1,2 (results in OUT/s<seed>)")
    g.add_argument("--device", help="torch device: cpu or cuda")
    g.add_argument("--dtype", choices=["float32", "float64"])
    g.add_argument("--train-limit", type=int, help="reduced run: only the first N training examples")
    g.add_argument("--test-limit", type=int, help="reduced run: only the first N test examples")
    g.add_argument("--out", help="results folder (default results/<command>/<dataset>-<topology>-s<seed>)")
    if euler:
        e = p.add_argument_group("Euler solver (override the TOML [euler] table)")
        e.add_argument("--eps", type=float)
        e.add_argument("--free-steps", type=int)
        e.add_argument("--nudged-steps", type=int)
        e.add_argument("--nudge-form", choices=["sequential", "gradient"])
        e.add_argument("--coupling", choices=["auto", "blocks", "dense"])
        e.add_argument("--engine", choices=["auto", "reference", "fast"],
                       help="reference EulerSolver or the fast engine (auto: fast on CUDA or for a free method "
                            "other than fixed)")
        e.add_argument("--free-method", choices=list(FREE_METHODS),
                       help="how the free phase ends: fixed step count (default, the reproductions), per-example "
                            "stop at --tol, or hybrid (--prefix-steps Euler steps, then layer-wise Gauss-Seidel to "
                            "--tol); docs/free-phase.md")
        e.add_argument("--tol", type=float, help="stop tolerance on max |ds| (per-example, hybrid; with fixed: the "
                                                 "whole batch)")
        e.add_argument("--prefix-steps", type=int, help="hybrid: Euler steps before the sweeps (default 50)")
        e.add_argument("--omega", type=float, help="hybrid: over-relaxation once in the basin (default 1.5)")
        e.add_argument("--omega-from", type=float, help="hybrid: Gauss-Seidel until a sweep moves an example less "
                                                        "than this, then --omega (default 1e-2)")
        e.add_argument("--max-sweeps", type=int, help="hybrid: sweep limit per example (default 1000)")
        e.add_argument("--face-solve", action=argparse.BooleanOptionalAction, default=None,
                       help="hybrid: finish a batch's last examples by solving their fixed point exactly (default on)")


def _from_args(args, names) -> dict:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def configs_from_args(args, command: str = "train", run_defaults: dict | None = None,
                      tables: dict | None = None) -> tuple[list[RunConfig], dict, Path | None]:
    """(run configs, {table: settings}, group checkpoint): one RunConfig per seed of --seeds (else one),
    the settings of each solver table (``tables``: name -> dataclass, default the [euler] table; TOML,
    then flags). A table the command does not use is an unknown key of its --config."""
    tables = {"euler": EulerConfig} if tables is None else dict(tables)
    toml = read_toml(args.config, {"run": RunConfig, **tables}) if args.config is not None else {}
    given = {**toml.get("run", {}), **_from_args(args, RUN_FLAGS)}
    dataset = given.get("dataset", (run_defaults or {}).get("dataset", RunConfig.dataset))
    chosen = {k: v for k, v in dataset_defaults(command, dataset).items() if k not in given}
    # a dataset's solver defaults (e.g. spice-train's [spice] table): under the --config table and the flags
    solver_defaults = {name: d for name, d in dataset_solver_defaults(command, dataset).items() if name in tables}
    epochs = given.get("epochs")
    if chosen.get("warmup") and isinstance(epochs, int) and not isinstance(epochs, bool) and epochs <= chosen["warmup"]:
        # the tuned warm-up belongs to the tuned run length; a shorter run the user asked for goes without
        chosen["warmup"] = 0
    if chosen or solver_defaults:  # said, so nobody mistakes a tuned default for RunConfig's
        shown = {**chosen, **{f"{name}.{k}": v for name, d in solver_defaults.items() for k, v in d.items()}}
        print(f"{command} defaults for {dataset} (docs/training.md; a flag overrides): "
              + ", ".join(f"{k}={v}" for k, v in shown.items()), file=sys.stderr)
    run = {**(run_defaults or {}), **chosen, **given}
    # flags of the euler table here; other tables' flags are their command's to merge
    settings = {name: {**solver_defaults.get(name, {}), **toml.get(name, {}),
                       **(_from_args(args, EULER_FLAGS) if name == "euler" else {})} for name in tables}
    if "out" in run and not str(run["out"]).strip():
        raise ValueError("--out: empty path; give a results folder")
    seeds = args.seeds or [run.get("seed", 0)]
    if args.seeds and args.seed is not None:
        raise ValueError("give --seed or --seeds, not both")
    default_out = "results/{c}/{d}-{t}-".format(c=command, d=run.get("dataset", "digits"),
                                                t=run.get("topology", "mlff"))
    if len(seeds) == 1:
        run.setdefault("out", default_out + f"s{seeds[0]}")
        return [RunConfig.from_dict({**run, "seed": seeds[0]})], settings, None
    root = Path(run.pop("out", default_out + "seeds" + "_".join(map(str, seeds))))
    cfgs = [RunConfig.from_dict({**run, "seed": s, "out": str(root / f"s{s}")}) for s in seeds]
    return cfgs, settings, root / "checkpoint.pt"


def check_outs(cfgs: list[RunConfig], checkpoint: Path | None) -> None:
    """Every results folder (and the group's) created and writable, before any work."""
    results_folder(checkpoint.parent if checkpoint is not None else cfgs[0].out)
    for c in cfgs:
        results_folder(c.out)


def print_runs(metrics: list[dict]) -> None:
    """One readable line per trial."""
    for m in metrics:
        last = m["epochs"][-1] if m["epochs"] else None
        what = "no epochs" if last is None else (
            f"epoch {last['epoch']}: train {last['train_error']:.4f}, test {last['test_error']:.4f}")
        print(f"{m['config']['out']}: seed {m['config']['seed']}, {what}, log-spread {m['log_spread']:.3f}"
              + (f", actual p {m['actual_p']:.3f}" if m["config"]["topology"] == "sw" else ""))


def cmd_train(args) -> int:
    from eqprop.datasets import load_dataset
    from eqprop.trainer import Trainer
    cfgs, settings, ck = configs_from_args(args)
    euler = EulerConfig.from_dict(settings["euler"])
    check_outs(cfgs, ck)
    c0 = cfgs[0]
    print(f"training {c0.dataset} hidden={list(c0.hidden)} {c0.topology}, {len(cfgs)} trial(s) -> "
          f"{ck.parent if ck else c0.out}", file=sys.stderr)
    tr = Trainer(cfgs, load_dataset(c0.dataset), euler=euler, checkpoint=ck)
    print_runs(tr.run(resume=args.resume, progress=not args.quiet))
    return 0


def cmd_demo(args) -> int:
    """The main job on bundled data (experiments.demo), with a short readable summary."""
    from experiments.demo import demo
    quiet = args.quiet
    results_folder(args.out)
    lines = demo(args.out, progress=not quiet, log=lambda s: print(s, file=sys.stderr))
    print("\neqprop-spice demo: results under " + str(args.out))
    for line in lines:
        print("  " + line)
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a network with EqProp (Euler reference solver)",
                       description="Train with EqProp; writes config.json, metrics.json/csv, plots and a "
                                   "checkpoint under --out (--seeds: one folder per seed, trained in lockstep).")
    add_config_flags(p)
    p.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    d = sub.add_parser("demo", help="the quick-start job (make demo)")
    d.add_argument("--out", default="results/demo")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)
