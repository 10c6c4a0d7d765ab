"""EqProp training loop, shared by every solver (Euler reference, ngspice).

Per training batch k (Gammell et al.'s procedure, paper-facts.md):
  free   = relax from the batch's persistent particle (beta = 0); store it back
  error  = online training error at the free equilibrium, before the update
  beta   = +-|beta| with a random sign
  nudged = relax from the free state with beta and the targets
  W, b  += lr (.) eqprop_update(free, nudged, beta)
Test error after each epoch, also from persistent particles. Batches are built once in
file order and their order shuffled once; the same order serves every epoch.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import TrainConfig
from .learning import apply_update, eqprop_update, rate_tensors
from .metrics import BlockStats, classification_errors, regression_loss_sum
from .network import Network
from .solver import EulerSolver, Solver
from .topology import mlff, small_world

CHECKPOINT = "checkpoint.pt"
# a run may be resumed with more epochs, from a moved folder, on another device or coupling
RESUME_MAY_CHANGE = ("epochs", "out", "device", "coupling", "engine")


def seed_streams(seed: int) -> list[np.random.SeedSequence]:
    """Independent streams for (topology, initial weights, batch order and beta signs)."""
    return np.random.SeedSequence(seed).spawn(3)


def build_network(cfg: TrainConfig, n_in: int, n_out: int) -> Network:
    """The network a config describes: its topology and initial weights, each from its own stream."""
    s_topo, s_init, _ = seed_streams(cfg.seed)
    sizes = (n_in, *cfg.hidden, n_out)
    topo = mlff(sizes) if cfg.topology == "mlff" else small_world(
        sizes, cfg.p, seed=np.random.default_rng(s_topo), mode=cfg.sw_mode, intralayer=cfg.intralayer)
    return Network.init(topo, seed=s_init, dtype=getattr(torch, cfg.dtype), device=cfg.device)


def make_solver(cfg: TrainConfig) -> Solver:
    """The config's Euler solver: the reference EulerSolver, or the fast engine (same dynamics,
    equal within fp32 noise; CUDA graphs on a GPU, where the eager reference is launch-bound)."""
    engine = cfg.engine if cfg.engine != "auto" else ("fast" if torch.device(cfg.device).type == "cuda"
                                                      else "reference")
    settings = dict(eps=cfg.eps, free_steps=cfg.free_steps, nudged_steps=cfg.nudged_steps, nudge_form=cfg.nudge_form,
                    coupling=cfg.coupling)
    if engine == "fast":
        from .fast_relax import FastEulerSolver
        # the Trainer feeds Dataset rows, validated finite on load: no per-call check (a GPU sync)
        return FastEulerSolver(**settings, check_values=False)
    return EulerSolver(**settings)


def check_device(name: str) -> torch.device:
    """The config's device, refused before any work when this torch cannot use it."""
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but torch.cuda.is_available() is False "
                           f"(torch {torch.__version__}{', a CPU-only build' if torch.version.cuda is None else ''})")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise RuntimeError(f"device {name!r} requested but this machine has {torch.cuda.device_count()} GPU(s)")
    return dev


def make_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Consecutive batches in file order, the list shuffled once."""
    batches = [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


class CheckpointMismatch(ValueError):
    """A checkpoint that belongs to another run (config, topology or trial count differ)."""


@dataclasses.dataclass
class EpochResult:
    epoch: int
    train_error: float
    test_error: float
    rms: list[float]
    seconds: float


class Trainer:
    def __init__(self, cfg: TrainConfig, dataset, network: Network | None = None,
                 solver: Solver | None = None):
        self.cfg, self.data = cfg, dataset.head(cfg.train_limit, cfg.test_limit)
        dataset = self.data
        self.device, self.dtype = check_device(cfg.device), getattr(torch, cfg.dtype)
        # a given network overrides the config's hidden/topology/p: metrics.json says so
        self.network_given = network is not None
        if network is None:
            network = build_network(cfg, dataset.n_in, dataset.n_out)
        elif network.topology.n_in != dataset.n_in or network.topology.n_out != dataset.n_out:
            raise ValueError(f"network {network.topology.sizes} does not fit dataset {dataset.name} "
                             f"({dataset.n_in} inputs, {dataset.n_out} outputs)")
        else:
            network = network.to(self.device, self.dtype)
        self.net = network
        self.mask = network.mask_tensor()
        self.solver = solver or make_solver(cfg)
        self.lr_W, self.lr_b = rate_tensors(network.topology, cfg.lr, dtype=self.dtype, device=self.device)
        self.rng = np.random.default_rng(seed_streams(cfg.seed)[2])
        bs = cfg.batch_size or dataset.batch_size
        self.train_batches = make_batches(len(dataset.x_train), bs, self.rng)
        self.test_batches = [np.arange(i, min(i + bs, len(dataset.x_test))) for i in range(0, len(dataset.x_test), bs)]
        nf = network.topology.n - network.topology.n_in
        zeros = lambda idx: torch.zeros(len(idx), nf, dtype=self.dtype, device=self.device)  # noqa: E731
        self.train_particles = [zeros(i) for i in self.train_batches]
        self.test_particles = [zeros(i) for i in self.test_batches]
        self.stats = BlockStats(network.topology, full_matrix=cfg.save_dw_matrix, device=self.device)
        self.history: list[EpochResult] = []
        self._tensors = {k: torch.as_tensor(getattr(dataset, k), dtype=self.dtype, device=self.device)
                         for k in ("x_train", "y_train", "x_test", "y_test")}

    # -- one phase pair ---------------------------------------------------------
    def _batch(self, split: str, idx: np.ndarray):
        x = self._tensors[f"x_{split}"][idx]
        return x, self._tensors[f"y_{split}"][idx]

    def _errors(self, state: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """0-d float64 tensor on the device (summed there: no host sync per batch)."""
        out = state[:, self.net.topology.output_slice]
        if self.data.task == "regression":
            return regression_loss_sum(out, y)
        return classification_errors(out, y.argmax(1))

    def train_batch(self, k: int) -> torch.Tensor:
        """One EqProp step on training batch k; returns its online error (misclassified examples,
        or the regression loss sum) as a 0-d tensor on the device."""
        x, y = self._batch("train", self.train_batches[k])
        n_in = self.net.topology.n_in
        free = self.solver.relax(self.net, x, torch.cat([x, self.train_particles[k]], 1))
        self.train_particles[k] = free[:, n_in:].clone()
        err = self._errors(free, y)
        beta = self.cfg.beta
        if self.cfg.random_beta_sign and self.rng.random() < 0.5:
            beta = -beta
        nudged = self.solver.relax(self.net, x, free, beta=beta, target=y)
        dW, db = eqprop_update(free, nudged, beta, self.net.topology, mask=self.mask)
        self.stats.add(dW)
        apply_update(self.net, dW, db, self.lr_W, self.lr_b)
        return err

    def evaluate(self) -> float:
        n_in, total = self.net.topology.n_in, torch.zeros((), dtype=torch.float64, device=self.device)
        for k, idx in enumerate(self.test_batches):
            x, y = self._batch("test", idx)
            free = self.solver.relax(self.net, x, torch.cat([x, self.test_particles[k]], 1))
            self.test_particles[k] = free[:, n_in:].clone()
            total += self._errors(free, y)
        return float(total) / max(len(self.data.x_test), 1)

    # -- epochs, checkpoints, outputs ------------------------------------------------
    def run(self, out: str | Path | None = None, resume: bool = False, progress: bool = True,
            epochs: int | None = None) -> dict:
        out = Path(out or self.cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        epochs = self.cfg.epochs if epochs is None else epochs
        if resume:
            self.load_checkpoint(out / CHECKPOINT)
            if self.history:  # the checkpoint may be an epoch ahead of metrics.json (killed in between)
                self.write_metrics(out)
        (out / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        n_train = len(self.data.x_train)
        for epoch in range(len(self.history) + 1, epochs + 1):
            t0 = time.perf_counter()
            err = torch.zeros((), dtype=torch.float64, device=self.device)
            bar = tqdm(range(len(self.train_batches)), desc=f"epoch {epoch}/{epochs}", disable=not progress,
                       leave=False, unit="batch")
            for k in bar:
                err += self.train_batch(k)
            test_err = self.evaluate()
            res = EpochResult(epoch, float(err) / n_train, test_err, self.stats.end_epoch(), time.perf_counter() - t0)
            self.history.append(res)
            if progress:
                tqdm.write(f"epoch {epoch}: train {res.train_error:.4f} test {res.test_error:.4f} "
                           f"rms {' '.join(f'{r:.2e}' for r in res.rms)} ({res.seconds:.1f} s)")
            self.write_metrics(out)  # first: a kill before the checkpoint only repeats this epoch on resume
            self.save_checkpoint(out / CHECKPOINT)
        return self.metrics()

    def metrics(self) -> dict:
        return run_metrics(self.cfg, self.net.topology, self.history, self.stats.mean_rms(), self.stats.log_spread(),
                           self.stats.mean_abs_dw(), self.data.task, type(self.solver).__name__, self.network_given)

    def write_metrics(self, out: Path) -> None:
        write_run_outputs(self.metrics(), out, self.stats.mean_abs_dw_matrix())

    def save_checkpoint(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        torch.save({
            "W": self.net.W.cpu(), "b": self.net.b.cpu(), "mask": self.net.topology.mask,
            "train_particles": [p.cpu() for p in self.train_particles],
            "test_particles": [p.cpu() for p in self.test_particles],
            "rng": self.rng.bit_generator.state, "stats": self.stats.state_dict(),
            "history": [dataclasses.asdict(h) for h in self.history], "config": self.cfg.to_dict(),
        }, tmp)
        tmp.replace(path)  # atomic: a kill mid-write leaves the previous checkpoint intact

    def load_checkpoint(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {path}")
        ck = torch.load(path, weights_only=False)
        if not np.array_equal(ck["mask"], self.net.topology.mask):
            raise CheckpointMismatch(f"{path}: checkpoint topology differs from this run's (different config or seed?)")
        if ck["config"] != self.cfg.to_dict():
            diff = config_diff(ck["config"], self.cfg)
            if diff:
                raise CheckpointMismatch(f"{path}: checkpoint config differs from this run's: {diff}")
        dev = self.device
        self.net.W.copy_(ck["W"].to(dev))
        self.net.b.copy_(ck["b"].to(dev))
        self.train_particles = [p.to(dev) for p in ck["train_particles"]]
        self.test_particles = [p.to(dev) for p in ck["test_particles"]]
        self.rng.bit_generator.state = ck["rng"]
        self.stats.load_state_dict(ck["stats"])
        self.history = [EpochResult(**h) for h in ck["history"]]


def run_metrics(cfg: TrainConfig, topology, history: list[EpochResult], mean_rms, log_spread: float, mean_abs_dw,
                task: str, solver: str, network_given: bool) -> dict:
    """metrics.json's content for one run (Trainer, or one trial of TrialTrainer)."""
    return {
        "epochs": [dataclasses.asdict(h) for h in history],
        "log_spread": float(log_spread),
        "mean_rms": [float(v) for v in mean_rms],
        "mean_abs_dw_blocks": [[None if np.isnan(v) else float(v) for v in row] for row in mean_abs_dw],
        "actual_p": topology.info.get("actual_p", 0.0),
        "sizes": list(topology.sizes),
        "n_connections": topology.n_connections,
        "task": task,
        "solver": solver,
        "network_given": network_given,
        "config": cfg.to_dict(),
    }


def write_run_outputs(m: dict, out: str | Path, dw_full: np.ndarray | None = None, plots: bool = True) -> None:
    """A run's files: metrics.json, metrics.csv, dw_mean.npy (if kept) and plots (Trainer and trials)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(m, indent=2))
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        nb = len(m["mean_rms"])
        w.writerow(["epoch", "train_error", "test_error", "seconds"] + [f"rms_{l}" for l in range(nb)])
        for h in m["epochs"]:
            w.writerow([h["epoch"], h["train_error"], h["test_error"], h["seconds"]] + list(h["rms"]))
    if dw_full is not None:
        np.save(out / "dw_mean.npy", dw_full.astype(np.float32))
    if plots:
        from .plots import plot_run  # matplotlib only when writing outputs
        plot_run(m, out)


def config_diff(old: dict, cfg: TrainConfig) -> dict:
    """Config keys in which a recorded run differs from ``cfg`` (those a resume may not change)."""
    return {k: (old.get(k), v) for k, v in cfg.to_dict().items() if old.get(k) != v and k not in RESUME_MAY_CHANGE}


def train(cfg: TrainConfig, dataset=None, network: Network | None = None, solver: Solver | None = None,
          resume: bool = False, progress: bool = True) -> dict:
    """Train per ``cfg`` (loading the dataset by name if not given); returns metrics.json's content."""
    if dataset is None:
        from .datasets import load_dataset
        dataset = load_dataset(cfg.dataset)  # the documented fixed split; cfg.seed drives init and order
    trainer = Trainer(cfg, dataset, network=network, solver=solver)
    return trainer.run(cfg.out, resume=resume, progress=progress)
