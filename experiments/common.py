"""What every named experiment shares: running labelled configs over seeds, summaries, comparisons.

An experiment module defines ``runs(epochs, seeds, only) -> list[Run]``, ``PAPER`` (the paper's
numbers by run label, from ../shared/reference/paper-facts.md) and optionally ``plot(summary, out)``.
Each run writes the usual results folder (config, metrics, plots, checkpoint) under
results/<experiment>/<label>/s<seed>/, so an interrupted experiment resumes run by run.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from eqprop.config import TrainConfig
from eqprop.trainer import CheckpointMismatch


RESTART_HINT = "rerun with --restart to start afresh, or use another --out"


@dataclasses.dataclass
class Run:
    label: str  # e.g. "diabetes-5-sw"
    config: TrainConfig


def run_all(name: str, runs: list[Run], out: Path, resume: bool = True, progress: bool = True,
            device: str | None = None) -> tuple[dict, dict[str, list[dict]]]:
    """Train every run one after another (skipping finished ones when resuming); returns
    (summary by label, every run's metrics by label)."""
    from eqprop.trainer import Trainer

    data = _prepare(runs, out, device)
    results: dict[str, list[dict]] = {}
    for i, r in enumerate(runs):
        cfg = r.config
        done = resume and finished(cfg)
        if progress:
            print(f"[{name} {i + 1}/{len(runs)}] {r.label} seed {cfg.seed}" + (" (done)" if done else ""),
                  flush=True)
        if not done:
            ck = Path(cfg.out) / "checkpoint.pt"
            try:
                Trainer(cfg, data[cfg.dataset]).run(resume=resume and ck.exists(), progress=progress)
            except CheckpointMismatch as e:
                raise CheckpointMismatch(f"{e}; {RESTART_HINT}") from None
    return _collect(runs, out)


def run_batched(name: str, runs: list[Run], out: Path, resume: bool = True, progress: bool = True,
                device: str | None = None) -> tuple[dict, dict[str, list[dict]]]:
    """All runs as independent trials of one lockstep solver call per step (eqprop.trials): seeds and
    p values of one experiment relax together (the GPU path's batching). Finished runs are skipped
    (also those a sequential run finished); the rest are grouped by what must be equal in lockstep.
    Each trial writes the files of a single run after every epoch; each group checkpoints to
    out/batched/<group>.pt after every epoch and resumes from it."""
    from eqprop.trials import _SHARED, TrialTrainer

    data = _prepare(runs, out, device)
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        if not (resume and finished(r.config)):
            groups.setdefault(tuple(str(getattr(r.config, k)) for k in _SHARED), []).append(r)
    if progress and len(runs) > sum(map(len, groups.values())):
        print(f"[{name}] {len(runs) - sum(map(len, groups.values()))} of {len(runs)} runs already done", flush=True)
    for gi, group in enumerate(groups.values()):
        cfgs = [r.config for r in group]
        members = [f"{r.label}/s{r.config.seed}" for r in group]
        ck = out / "batched" / f"{_group_key(members)}.pt"
        if progress:
            print(f"[{name} batched group {gi + 1}/{len(groups)}] {len(group)} trials: " + ", ".join(members),
                  flush=True)
        tr = TrialTrainer(cfgs, data[cfgs[0].dataset])
        if resume and ck.exists():
            try:
                tr.load_checkpoint(ck)
            except CheckpointMismatch as e:
                raise CheckpointMismatch(f"{e}; {RESTART_HINT}") from None
            if tr.history[0]:
                _write_trials(tr, plots=False)  # the checkpoint may be an epoch ahead of metrics.json
        ck.parent.mkdir(parents=True, exist_ok=True)
        tr.run(progress=progress, checkpoint=ck, on_epoch=_write_trials)
        _write_trials(tr, plots=True)
    return _collect(runs, out)


def _collect(runs: list[Run], out: Path) -> tuple[dict, dict[str, list[dict]]]:
    """Every run's metrics.json by label, their summary (also written to out/summary.json)."""
    results: dict[str, list[dict]] = {}
    for r in runs:
        results.setdefault(r.label, []).append(json.loads((Path(r.config.out) / "metrics.json").read_text()))
    summary = summarise(results)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary, results


def _prepare(runs: list[Run], out: Path, device: str | None) -> dict:
    """Set each run's device and folder; load every dataset the runs need and check their
    example limits, all before any training (a bad limit must not fail the third group)."""
    from eqprop.datasets import load_dataset

    data: dict = {}
    for r in runs:
        if device:
            r.config.device = device
        r.config.out = str(out / r.label / f"s{r.config.seed}")
        if r.config.dataset not in data:
            data[r.config.dataset] = load_dataset(r.config.dataset)
        data[r.config.dataset].head(r.config.train_limit, r.config.test_limit)  # raises on a bad limit
    return data


def finished(cfg: TrainConfig) -> bool:
    """Whether cfg.out holds this run, finished: metrics.json with cfg.epochs epochs from the same
    config. A folder holding another config's run is an error, not a result to reuse."""
    from eqprop.trainer import config_diff

    mfile = Path(cfg.out) / "metrics.json"
    if not mfile.exists():
        return False
    m = json.loads(mfile.read_text())
    diff = config_diff(m["config"], cfg)
    if diff:
        raise CheckpointMismatch(f"{mfile} holds a run with another config: {diff}; {RESTART_HINT}")
    return len(m["epochs"]) >= cfg.epochs


def _group_key(members: list[str]) -> str:
    """A stable file name for a group of trials (its members, sorted)."""
    import hashlib
    return "group-" + hashlib.sha1("\n".join(sorted(members)).encode()).hexdigest()[:12]


def _write_trials(tr, plots: bool = False) -> None:
    """Every trial's config.json and the files a single run writes (after each epoch: no plots)."""
    from eqprop.trainer import write_run_outputs

    full = tr.stats.mean_abs_dw_matrix()
    for t, (cfg, m) in enumerate(zip(tr.cfgs, tr.metrics_all())):
        run_dir = Path(cfg.out)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        write_run_outputs(m, run_dir, full[t] if full is not None and cfg.save_dw_matrix else None, plots=plots)


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


def epoch_steps(cfg: TrainConfig, n_train: int, n_test: int) -> int:
    """Euler steps of one epoch (every train batch free + nudged, every test batch free)."""
    bs = cfg.batch_size
    nt, ne = min(n_train, cfg.train_limit or n_train), min(n_test, cfg.test_limit or n_test)
    return math.ceil(nt / bs) * (cfg.free_steps + cfg.nudged_steps) + math.ceil(ne / bs) * cfg.free_steps


def projection_lines(paper_runs: list[Run], results: dict[str, list[dict]], batched: bool) -> list[str]:
    """The paper-length time of each run group, projected from this run's measured seconds per
    Euler step (same machine, same solver; epochs after the first when there are several): a
    markdown table. Groups are the lockstep groups
    (batched: one epoch time covers all members) or single runs (sequential: times add up)."""
    from eqprop.datasets import load_dataset
    from eqprop.trials import _SHARED

    paper = {(r.label, r.config.seed): r.config for r in paper_runs}
    groups: dict[tuple, list[tuple[str, TrainConfig, dict]]] = {}
    for label, ms in results.items():
        for m in ms:
            cfg = TrainConfig.from_dict(m["config"])
            key = (tuple(str(getattr(cfg, k)) for k in _SHARED if k not in ("epochs", "train_limit", "test_limit"))
                   if batched else (label, cfg.seed))
            groups.setdefault(key, []).append((label, cfg, m))
    sizes: dict[str, tuple[int, int]] = {}
    rows, total = [], 0.0
    for members in groups.values():
        label, cfg, m = members[0]
        full = paper.get((label, cfg.seed))
        if full is None or not m["epochs"]:
            continue
        if cfg.dataset not in sizes:
            d = load_dataset(cfg.dataset)
            sizes[cfg.dataset] = (len(d.x_train), len(d.x_test), d.batch_size)
        n_train, n_test, bs = sizes[cfg.dataset]
        cfg.batch_size, full = cfg.batch_size or bs, dataclasses.replace(full, batch_size=full.batch_size or bs)
        secs = [e["seconds"] for e in m["epochs"]]
        sec = float(np.mean(secs[1:] if len(secs) > 1 else secs))  # epoch 1 also pays one-off set-up
        measured, target = epoch_steps(cfg, n_train, n_test), epoch_steps(full, n_train, n_test)
        proj = sec / measured * target * full.epochs
        total += proj
        names = [f"{lb}/s{c.seed}" for lb, c, _ in members]
        who = ", ".join(names) if len(names) <= 4 else f"{names[0]} ... {names[-1]} ({len(names)} trials)"
        rows.append(f"| {who} | {sec:.1f} s/epoch of {measured} steps | {full.epochs} epochs of {target} steps | "
                    f"{duration(proj)} |")
    if not rows:
        return []
    return (["Projected paper-length time at this run's measured speed (seconds per Euler step, this machine):", "",
             f"| {'lockstep group' if batched else 'run'} | measured | paper length | projected |", "|---|---|---|---|"]
            + rows + [f"| total | | | {duration(total)} |"])
