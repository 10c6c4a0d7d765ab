"""`eqprop spice-compare`: the same EqProp run with ngspice and with the Euler reference.

Both trainers start from the same seed (same topology, weights, batch order, beta signs and
particles). The Euler reference runs to convergence in the gradient nudge form, the
equilibrium the circuit reaches. After every epoch the weights of the two runs are compared;
the error curves are plotted side by side.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .spice import SPICE_TRAIN_DEFAULTS, add_solver_flags, make_solver
from .train import add_config_flags, config_from_args

COMPARE_DEFAULTS = {**SPICE_TRAIN_DEFAULTS, "dataset": "wine", "hidden": [10, 10], "epochs": 3, "lr": 0.05,
                    "batch_size": 5}


def cmd_compare(args) -> int:
    from eqprop.datasets import load_dataset
    from eqprop.solver import EulerSolver
    from eqprop.trainer import Trainer
    cfg = config_from_args(args, **COMPARE_DEFAULTS)
    cfg.nudge_form = "gradient"  # the circuit's nudge
    out = Path(args.out or f"results/spice-compare/{cfg.dataset}-{cfg.topology}-s{cfg.seed}")
    data = load_dataset(cfg.dataset)
    euler = EulerSolver(eps=args.euler_eps, free_steps=args.euler_max_steps, nudged_steps=args.euler_max_steps,
                        nudge_form="gradient", tol=args.euler_tol)
    rows = []
    with make_solver(args) as spice:
        runs = {}
        for name, solver in (("spice", spice), ("euler", euler)):
            c = type(cfg).from_dict({**cfg.to_dict(), "out": str(out / name)})
            runs[name] = Trainer(c, data, solver=solver)
        for epoch in range(1, cfg.epochs + 1):
            for name, tr in runs.items():
                print(f"[spice-compare] epoch {epoch}: {name}", file=sys.stderr)
                tr.run(epochs=epoch, progress=not args.quiet)
            dW = float((runs["spice"].net.W - runs["euler"].net.W).abs().max())
            db = float((runs["spice"].net.b - runs["euler"].net.b).abs().max())
            h = {k: tr.history[-1] for k, tr in runs.items()}
            rows.append({"epoch": epoch, "max_abs_dW": dW, "max_abs_db": db,
                         **{f"{k}_{m}": getattr(h[k], m) for k in h for m in ("train_error", "test_error")}})
            print(f"[spice-compare] epoch {epoch}: max |W_spice - W_euler| = {dW:.3e}, max |db| = {db:.3e}",
                  file=sys.stderr)
    report = {"config": cfg.to_dict(), "solver": {"method": args.method, "level": args.level},
              "euler": {"eps": args.euler_eps, "tol": args.euler_tol}, "epochs": rows}
    (out / "compare.json").write_text(json.dumps(report, indent=2))
    plot_compare(rows, out / "compare.png", f"{cfg.dataset} {'-'.join(map(str, runs['euler'].net.topology.sizes))}")
    print(json.dumps({"out": str(out), "epochs": rows}, indent=2))
    return 0 if rows and rows[0]["max_abs_dW"] <= args.tol else 1


def plot_compare(rows: list[dict], path: Path, title: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for k, style in (("spice", "o-"), ("euler", "x--")):
        a.plot(ep, [r[f"{k}_train_error"] for r in rows], style, label=f"{k} train")
        a.plot(ep, [r[f"{k}_test_error"] for r in rows], style, label=f"{k} test", alpha=0.7)
    a.set_xlabel("epoch")
    a.set_ylabel("error")
    a.set_title(title)
    a.legend(fontsize=7)
    b.semilogy(ep, [max(r["max_abs_dW"], 1e-17) for r in rows], "o-", label="max |W_spice - W_euler|")
    b.semilogy(ep, [max(r["max_abs_db"], 1e-17) for r in rows], "s-", label="max |b_spice - b_euler|")
    b.set_xlabel("epoch")
    b.legend(fontsize=7)
    for ax in (a, b):
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def register(sub) -> None:
    p = sub.add_parser("spice-compare", help="train with ngspice and with the Euler reference from one seed",
                       description=__doc__)
    add_config_flags(p)
    add_solver_flags(p)
    p.add_argument("--euler-eps", type=float, default=0.5)
    p.add_argument("--euler-tol", type=float, default=1e-12, help="Euler phases stop once max |ds| < this")
    p.add_argument("--euler-max-steps", type=int, default=200000)
    p.add_argument("--tol", type=float, default=1e-4, help="exit 1 if epoch 1's max |dW| exceeds this")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_compare)

