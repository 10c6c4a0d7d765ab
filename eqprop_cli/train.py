"""`eqprop train` and `eqprop demo`."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from eqprop.config import TrainConfig


def _ints(text: str) -> list[int]:
    """'100,100,100' or '100x3' (the papers' 784-100x3-10 shorthand) or a mix: '500x2,100'."""
    out = []
    try:
        for tok in text.split(","):
            n, _, k = tok.partition("x")
            out += [int(n)] * (int(k) if k else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 100,100 or 100x2, got {text!r}") from None
    return out


def _rates(text: str) -> float | list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v]
    except ValueError:
        vals = []
    if not vals:
        raise argparse.ArgumentTypeError(f"expected a rate or comma-separated rates, got {text!r}")
    return vals[0] if len(vals) == 1 else vals


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """Flags for every TrainConfig field; unset flags keep the TOML/default value."""
    g = p.add_argument_group("run configuration (override the TOML config)")
    g.add_argument("--config", type=Path, help="TOML file with TrainConfig keys")
    g.add_argument("--dataset", help="mnist, fmnist, digits, wine, diabetes, iris, and, or, xor")
    g.add_argument("--hidden", type=_ints, help="hidden layer sizes, e.g. 100,100,100 or 100x3")
    g.add_argument("--topology", choices=["mlff", "sw"])
    g.add_argument("--p", type=float, help="small-world replacement probability")
    g.add_argument("--sw-mode", choices=["replace", "add"])
    g.add_argument("--intralayer", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--lr", type=_rates, help="global rate, or one per adjacent block (input side first)")
    g.add_argument("--eps", type=float)
    g.add_argument("--beta", type=float)
    g.add_argument("--random-beta-sign", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--free-steps", type=int)
    g.add_argument("--nudged-steps", type=int)
    g.add_argument("--nudge-form", choices=["sequential", "gradient"])
    g.add_argument("--batch-size", type=int)
    g.add_argument("--epochs", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="cpu or cuda")
    g.add_argument("--dtype", choices=["float32", "float64"])
    g.add_argument("--coupling", choices=["auto", "blocks", "dense"])
    g.add_argument("--engine", choices=["auto", "reference", "fast"],
                   help="Euler solver: reference EulerSolver or the fast engine (auto: fast on CUDA)")
    g.add_argument("--train-limit", type=int, help="reduced run: only the first N training examples")
    g.add_argument("--test-limit", type=int, help="reduced run: only the first N test examples")
    g.add_argument("--out", help="results folder (default results/train/<dataset>-<topology>-s<seed>)")


def config_from_args(args, **defaults) -> TrainConfig:
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    overrides = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if args.config is not None:
        cfg = TrainConfig.from_toml(args.config, **overrides)
    else:
        cfg = TrainConfig.from_dict({**defaults, **overrides}, source="flags")
    if "out" not in overrides and (args.config is None or "out" not in _toml_keys(args.config)):
        cfg.out = f"results/train/{cfg.dataset}-{cfg.topology}-s{cfg.seed}"
    return cfg


def _toml_keys(path: Path) -> set:
    import tomllib
    with open(path, "rb") as f:
        return set(tomllib.load(f))


def cmd_train(args) -> int:
    from eqprop.trainer import train
    cfg = config_from_args(args)
    print(f"training {cfg.dataset} hidden={cfg.hidden} {cfg.topology} -> {cfg.out}", file=sys.stderr)
    m = train(cfg, resume=args.resume, progress=not args.quiet)
    last = m["epochs"][-1] if m["epochs"] else {}
    print(json.dumps({"out": cfg.out, "last_epoch": last, "log_spread": m["log_spread"],
                      "actual_p": m["actual_p"]}, indent=2))
    return 0


DEMO = dict(dataset="digits", hidden=[32, 32], topology="sw", p=0.1, lr=0.05, free_steps=100,
            nudged_steps=12, batch_size=20, epochs=5, seed=0)


def cmd_demo(args) -> int:
    """The main job on bundled data: a small SW network on scikit-learn digits (Euler reference),
    then ngspice's equilibria checked against the Euler reference, then EqProp with ngspice in the loop."""
    import shutil

    from eqprop.trainer import train
    from eqprop_cli.main import main as cli
    out = Path(args.out)
    cfg = TrainConfig.from_dict({**DEMO, "out": str(out / "euler-digits")})
    print(f"[demo 1/3] Euler reference: digits 64-{'-'.join(map(str, cfg.hidden))}-10 small-world p={cfg.p}, "
          f"{cfg.epochs} epochs -> {cfg.out}", file=sys.stderr)
    m = train(cfg, progress=not args.quiet)
    last = m["epochs"][-1]
    print(f"[demo 1/3] test error {last['test_error']:.3f}, log-spread {m['log_spread']:.3f}; "
          f"plots in {cfg.out}")
    if shutil.which("ngspice") is None:
        print("[demo] ngspice not installed: skipping the circuit steps (apt-get install ngspice libngspice0)")
        return 0
    quiet = ["--quiet"] if args.quiet else []
    print("[demo 2/3] ngspice vs Euler equilibria on 6 random layered and small-world nets", file=sys.stderr)
    rc = cli(["spice-check", "--count", "6", "--topology", "both", "--out", str(out / "spice-check.json")] + quiet)
    if rc != 0:
        return rc
    report = json.loads((out / "spice-check.json").read_text())
    print(f"[demo 2/3] worst max |rho_spice - s_euler|: {report['worst']['overall']:.2e} "
          f"(report {out / 'spice-check.json'})")
    print("[demo 3/3] EqProp with ngspice in the loop: iris 4-8-3, 5 epochs", file=sys.stderr)
    rc = cli(["spice-train", "--dataset", "iris", "--hidden", "8", "--topology", "mlff", "--lr", "0.3",
              "--nudge-form", "gradient", "--epochs", "5", "--out", str(out / "spice-iris")] + quiet)
    if rc == 0:
        sm = json.loads((out / "spice-iris" / "metrics.json").read_text())
        print(f"[demo 3/3] test error after {len(sm['epochs'])} epochs: {sm['epochs'][-1]['test_error']:.3f}; "
              f"plots in {out / 'spice-iris'}")
    return rc


def register(sub) -> None:
    p = sub.add_parser("train", help="train a network with EqProp (Euler reference solver)",
                       description="Train with EqProp; writes config.json, metrics.json/csv, plots and a "
                                   "checkpoint under --out.")
    add_config_flags(p)
    p.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    d = sub.add_parser("demo", help="the quick-start job (make demo)")
    d.add_argument("--out", default="results/demo")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)
