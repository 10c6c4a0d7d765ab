"""EBANA's own iris example timed on one core: run by bench_iris_ebana.py --ebana-python/--ebana-src, in EBANA's
environment (its PySpice fork, numpy < 2), so both tools are measured in one run on one machine.

    $EBANA_PYTHON benchmarks/ebana_iris.py --ebana EBANA_SRC --epochs 3

Runs ``iris.train`` of mawatfa/ebana examples/simple/iris/iris.py unmodified except for the epoch count, its pool
sizes (1: one core) and save_state. CPU is user+sys of this process and of its children (EBANA runs libngspice in
``multiprocessing.Pool`` workers, ~98 % of its CPU): reaped ones by RUSAGE_CHILDREN, live ones from /proc.
Training is ``Model.fit`` less the ``Model.evaluate`` calls inside it; its examples are batches x batch_size
(EBANA's iris trains on the first batch_size rows of each batch); evaluation examples are the evaluated set's
size times the output heads. Prints one line ``RESULT {json}``.
"""
from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import resource
import sys
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def cpu() -> float:
    live = 0.0
    for p in multiprocessing.active_children():
        try:
            f = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            live += (int(f[11]) + int(f[12])) / TICK
        except (FileNotFoundError, ProcessLookupError):
            pass
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime + live


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ebana", type=Path, required=True, help="EBANA's source tree (mawatfa/ebana)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--procs", type=int, default=1, help="EBANA's pool sizes (its example's default is 8)")
    args = ap.parse_args()
    iris_dir = args.ebana / "examples" / "simple" / "iris"
    if not (iris_dir / "iris.py").exists():
        raise SystemExit(f"{iris_dir / 'iris.py'}: not found; --ebana takes a checkout of mawatfa/ebana")
    sys.path.insert(0, str(iris_dir))
    os.chdir(iris_dir)
    import iris  # EBANA's example (it puts its repository root on sys.path)
    from src.analognn import analognn as ann

    ev = {"cpu": 0.0, "n": 0}
    fit = {}
    evaluate, fit_fn = ann.Model.evaluate, ann.Model.fit

    def timed_evaluate(self, dataset, loss_fn=None, verbose=True):
        c0 = cpu()
        out = evaluate(self, dataset, loss_fn=loss_fn, verbose=verbose)
        gc.collect()  # its Evaluator's pool is finalised (workers reaped) before the CPU is read
        ev["cpu"] += cpu() - c0
        ev["n"] += dataset.get_size() * len(self.output_nodes)
        return out

    def timed_fit(self, **kw):
        c0 = cpu()
        out = fit_fn(self, **kw)
        gc.collect()
        fit.update(cpu=cpu() - c0, n=self.epochs * self.num_batches * self.batch_size)
        return out

    ann.Model.evaluate, ann.Model.fit = timed_evaluate, timed_fit
    acc, _ = iris.train({"num_epoch": args.epochs, "n_processes_train": args.procs, "n_processes_test": args.procs,
                         "save_state": False})
    train_cpu = fit["cpu"] - ev["cpu"]  # fit's own evaluations are the evaluation row's
    print("RESULT " + json.dumps({
        "epochs": args.epochs, "procs": args.procs, "train_n": fit["n"], "train_cpu": train_cpu,
        "train_ex_s": fit["n"] / train_cpu, "eval_n": ev["n"], "eval_cpu": ev["cpu"], "eval_ex_s": ev["n"] / ev["cpu"],
        "test_acc_last": float(list(acc.values())[0][-1])}))


if __name__ == "__main__":
    main()
