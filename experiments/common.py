"""What every named experiment shares: running labelled configs over seeds, summaries, comparisons.

An experiment module defines ``runs(epochs, seeds, only) -> list[Run]``, ``PAPER`` (the paper's
numbers by run label, from ../shared/reference/paper-facts.md) and optionally ``plot(summary, out)``.
Each run writes the usual results folder (config, metrics, plots, checkpoint) under
results/<experiment>/<label>/s<seed>/, so an interrupted experiment resumes run by run. Every
run, alone or as one trial of a lockstep group, is trained by the one ``eqprop.trainer.Trainer``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import sys
from pathlib import Path

import numpy as np

from eqprop.config import LOCKSTEP_FIELDS, EulerConfig, RunConfig, field_names
from eqprop.run_files import SOLVER_MAY_CHANGE, config_diff, read_metrics, write_json
from eqprop.trainer import CheckpointMismatch, Trainer

RESTART_HINT = "rerun with --restart to start afresh, or use another --out"


@dataclasses.dataclass(frozen=True)
class Run:
    label: str  # e.g. "diabetes-5-sw"
    run: RunConfig
    euler: EulerConfig

    @property
    def name(self) -> str:  # how a sweep names it
        return f"{self.label}/s{self.run.seed}"


def place(runs: list[Run], out: Path, device: str | None = None, **run_overrides) -> list[Run]:
    """The runs with their results folders under ``out`` (<label>/s<seed>), the device and any
    other RunConfig overrides (e.g. train_limit) applied; validated on construction."""
    # an override left at None (e.g. no --train-limit) keeps the experiment's own value
    extra = {**{k: v for k, v in run_overrides.items() if v is not None}, **({"device": device} if device else {})}
    return [dataclasses.replace(r, run=dataclasses.replace(r.run, out=str(out / r.label / f"s{r.run.seed}"),
                                                           **extra)) for r in runs]


def _load_data(runs: list[Run]) -> dict:
    """Every dataset the runs need, their example limits checked, all before any training (a bad
    limit must not fail the third group)."""
    from eqprop.datasets import load_dataset

    data: dict = {}
    for r in runs:
        if r.run.dataset not in data:
            data[r.run.dataset] = load_dataset(r.run.dataset)
        data[r.run.dataset].head(r.run.train_limit, r.run.test_limit)  # raises on a bad limit
    return data


def run_all(name: str, runs: list[Run], out: Path, resume: bool = True, progress: bool = True,
            workers: int | None = None) -> tuple[dict, dict[str, list[dict]]]:
    """Train every run (skipping finished ones when resuming): one after another in this process, or
    with ``workers`` >= 1 as independent single-threaded processes, one per core (each run resumes
    from its own checkpoint after a kill). Returns (summary by label, every run's metrics by label)."""
    runs = place(runs, out)
    data = _load_data(runs)  # every dataset and limit checked before any run starts
    if workers:
        from .sweep import make_executor, run_sweep
        with make_executor(workers) as ex:
            run_sweep(runs, functools.partial(train_one, resume=resume), out, ex,
                      is_done=(lambda r, _out: {} if finished(r) else None) if resume else None, progress=progress)
        return _collect(runs, out)
    for i, r in enumerate(runs):
        done = resume and finished(r)
        if progress:
            print(f"[{name} {i + 1}/{len(runs)}] {r.label} seed {r.run.seed}" + (" (done)" if done else ""),
                  flush=True)
        if not done:
            _train(r, data[r.run.dataset], resume, progress)
    return _collect(runs, out)


def _train(r: Run, dataset, resume: bool, progress: bool) -> None:
    tr = Trainer(r.run, dataset, euler=r.euler)
    try:
        tr.run(resume=resume and tr.checkpoint.exists(), progress=progress)
    except CheckpointMismatch as e:
        raise CheckpointMismatch(f"{e}; {RESTART_HINT}") from None


def train_one(r: Run, out, resume: bool = True) -> dict:
    """A sweep task (a worker process): train one run into its folder, resuming its checkpoint unless not
    ``resume`` (--restart)."""
    from eqprop.datasets import load_dataset
    _train(r, load_dataset(r.run.dataset), resume=resume, progress=False)
    return {}


def run_batched(name: str, runs: list[Run], out: Path, resume: bool = True, progress: bool = True,
                ) -> tuple[dict, dict[str, list[dict]]]:
    """All runs as lockstep trials of the one Trainer: seeds and p values of one experiment relax
    together. Finished runs are skipped (also those a sequential run finished); the rest are
    grouped by what lockstep trials share (LOCKSTEP_FIELDS and the Euler settings). Each trial
    writes the files of a single run after every epoch; each group checkpoints to
    out/batched/<group>.pt after every epoch and resumes from it."""
    runs = place(runs, out)
    data = _load_data(runs)
    done = {id(r) for r in runs if resume and finished(r)}
    by_key: dict[tuple, list[Run]] = {}
    for r in runs:
        by_key.setdefault(tuple(str(getattr(r.run, k)) for k in LOCKSTEP_FIELDS) + (str(r.euler),), []).append(r)
    groups = []
    for group in by_key.values():
        todo = [r for r in group if id(r) not in done]
        if not todo:
            continue
        # a kill between the trials' metrics files in a group's last epoch leaves some of them finished:
        # the whole group's checkpoint holds them all, so the group resumes from it as it was
        whole = out / "batched" / f"{_group_key([f'{r.label}/s{r.run.seed}' for r in group])}.pt"
        groups.append(group if resume and whole.exists() else todo)
    if progress and done:
        print(f"[{name}] {len(done)} of {len(runs)} runs already done", flush=True)
    for gi, group in enumerate(groups):
        members = [f"{r.label}/s{r.run.seed}" for r in group]
        ck = out / "batched" / f"{_group_key(members)}.pt"
        if progress:
            print(f"[{name} batched group {gi + 1}/{len(groups)}] {len(group)} trials: " + ", ".join(members),
                  flush=True)
        euler = dataclasses.replace(group[0].euler, engine="fast")  # the engine that relaxes a stack at once
        tr = Trainer([r.run for r in group], data[group[0].run.dataset], euler=euler, checkpoint=ck)
        try:
            tr.run(resume=resume and ck.exists(), progress=progress)
        except CheckpointMismatch as e:
            raise CheckpointMismatch(f"{e}; {RESTART_HINT}") from None
    return _collect(runs, out)


def _collect(runs: list[Run], out: Path) -> tuple[dict, dict[str, list[dict]]]:
    """Every run's metrics.json by label, their summary (also written to out/summary.json)."""
    results: dict[str, list[dict]] = {}
    for r in runs:
        results.setdefault(r.label, []).append(read_metrics(Path(r.run.out) / "metrics.json"))
    summary = summarise(results)
    write_json(out / "summary.json", summary)
    return summary, results


def finished(r: Run) -> bool:
    """Whether the run's folder holds this run, finished: metrics.json with its epochs from the same
    configs. A folder holding another config's run is an error, not a result to reuse."""
    mfile = Path(r.run.out) / "metrics.json"
    if not mfile.exists():
        return False
    try:
        m = read_metrics(mfile)
    except ValueError as e:  # e.g. truncated by a kill: the run resumes from its checkpoint and rewrites it
        print(f"note: {e}; resuming that run from its checkpoint", file=sys.stderr)
        return False
    diff = config_diff(m["config"], r.run.to_dict())
    old_euler = {k: v for k, v in m.get("solver", {}).items() if k in r.euler.to_dict()}
    diff.update(config_diff(old_euler, r.euler.to_dict(), SOLVER_MAY_CHANGE))
    if diff:
        raise CheckpointMismatch(f"{mfile} holds a run with another config: {diff}; {RESTART_HINT}")
    return len(m["epochs"]) >= r.run.epochs


def _group_key(members: list[str]) -> str:
    """A stable file name for a group of trials (its members, sorted)."""
    import hashlib
    return "group-" + hashlib.sha1("\n".join(sorted(members)).encode()).hexdigest()[:12]


def summarise(results: dict[str, list[dict]]) -> dict:
    """Mean and population std over seeds of the final errors and the log-spread, per label."""
    out = {}
    for label, ms in results.items():
        last = [m["epochs"][-1] for m in ms]
        row = {"seeds": [m["config"]["seed"] for m in ms], "epochs": len(ms[0]["epochs"])}
        for key, vals in (("train_error", [e["train_error"] for e in last]),
                          ("test_error", [e["test_error"] for e in last]),
                          ("log_spread", [m["log_spread"] for m in ms]),
                          ("actual_p", [m["actual_p"] for m in ms])):
            row[key] = float(np.mean(vals))
            finite = [v for v in vals if np.isfinite(v)]  # a vanished block makes log-spread inf
            row[key + "_std"] = float(np.std(finite)) if finite else float("nan")
            row[key + "_all"] = [float(v) for v in vals]
        row["mean_rms"] = np.mean([m["mean_rms"] for m in ms], axis=0).tolist()
        out[label] = row
    return out


def compare_table(summary: dict, paper: dict) -> str:
    """Markdown table: ours (mean +- std over seeds) next to the paper's, with the difference."""
    keys = sorted({k for v in paper.values() for k in v})
    head = "| run | seeds | epochs | " + " | ".join(f"{k} ours | {k} paper | diff" for k in keys) + " |"
    lines = [head, "|" + "---|" * (3 + 3 * len(keys))]
    for label, row in summary.items():
        cells = [label, str(len(row["seeds"])), str(row["epochs"])]
        for k in keys:
            ours, ref = row.get(k), paper.get(label, {}).get(k)
            cells.append("-" if ours is None else f"{ours:.4g} ± {row.get(k + '_std', 0):.2g}")
            cells.append("-" if ref is None else f"{ref:.4g}")
            cells.append("-" if ours is None or ref is None or math.isnan(ours) else f"{ours - ref:+.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def duration(seconds: float) -> str:
    return (f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60
            else f"{seconds:.0f} s")


def epoch_steps(run: RunConfig, euler: EulerConfig, n_train: int, n_test: int, batch_size: int) -> int:
    """Euler steps of one epoch (every train batch free + nudged, every test batch free)."""
    bs = run.batch_size or batch_size
    nt, ne = min(n_train, run.train_limit or n_train), min(n_test, run.test_limit or n_test)
    return math.ceil(nt / bs) * (euler.free_steps + euler.nudged_steps) + math.ceil(ne / bs) * euler.free_steps


def projection_lines(paper_runs: list[Run], results: dict[str, list[dict]], batched: bool) -> list[str]:
    """The paper-length time of each run group, projected from this run's measured seconds per
    Euler step (same machine, same solver; epochs after the first when there are several): a
    markdown table. Groups are the lockstep groups
    (batched: one epoch time covers all members) or single runs (sequential: times add up)."""
    from eqprop.datasets import load_dataset

    paper = {(r.label, r.run.seed): r for r in paper_runs}
    groups: dict[tuple, list[tuple[str, RunConfig, EulerConfig, dict]]] = {}
    for label, ms in results.items():
        for m in ms:
            run = RunConfig.from_dict(m["config"])
            euler = EulerConfig.from_dict({k: v for k, v in m["solver"].items() if k in field_names(EulerConfig)})
            shared = [k for k in LOCKSTEP_FIELDS if k not in ("epochs", "train_limit", "test_limit")]
            key = (tuple(str(getattr(run, k)) for k in shared) + (str(euler),)) if batched else (label, run.seed)
            groups.setdefault(key, []).append((label, run, euler, m))
    sizes: dict[str, tuple[int, int, int]] = {}
    rows, total = [], 0.0
    for members in groups.values():
        label, run, euler, m = members[0]
        full = paper.get((label, run.seed))
        if full is None or not m["epochs"]:
            continue
        if run.dataset not in sizes:
            d = load_dataset(run.dataset)
            sizes[run.dataset] = (len(d.x_train), len(d.x_test), d.batch_size)
        n_train, n_test, bs = sizes[run.dataset]
        # CPU seconds where every epoch has them (a shared machine's wall time measures its load too)
        used = m["epochs"][1:] if len(m["epochs"]) > 1 else m["epochs"]  # epoch 1 also pays one-off set-up
        cpu = all(e.get("cpu_seconds") is not None for e in used)
        sec = float(np.mean([e["cpu_seconds" if cpu else "seconds"] for e in used]))
        measured = epoch_steps(run, euler, n_train, n_test, bs)
        target = epoch_steps(full.run, full.euler, n_train, n_test, bs)
        proj = sec / measured * target * full.run.epochs
        total += proj
        names = [f"{lb}/s{c.seed}" for lb, c, _, _ in members]
        who = ", ".join(names) if len(names) <= 4 else f"{names[0]} ... {names[-1]} ({len(names)} trials)"
        # a free phase ended by convergence (per-example, hybrid) runs fewer steps than its budget: the column
        # names it, and its projection is per epoch (it scales with the budget only where the budgets differ)
        how = "" if euler.free_method == "fixed" else f", free phase {euler.free_method} to tol {euler.tol:g}"
        unit = "CPU s" if cpu else "s"
        rows.append(f"| {who} | {sec:.1f} {unit}/epoch of {measured} steps{how} | {full.run.epochs} epochs of {target} "
                    f"steps | {duration(proj)} |")
    if not rows:
        return []
    return (["Projected paper-length time at this run's measured speed (seconds per Euler step, this machine; CPU "
             "seconds where the runs recorded them, else wall seconds):", "",
             f"| {'lockstep group' if batched else 'run'} | measured | paper length | projected |", "|---|---|---|---|"]
            + rows + [f"| total | | | {duration(total)} |"])
