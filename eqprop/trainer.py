"""The one EqProp trainer: T >= 1 trials in lockstep, any solver.

Per training batch k (Gammell et al.'s procedure, paper-facts.md), for every trial at once:
  free   = relax from the batch's persistent particle (beta = 0); store its u back
  error  = online training error at the free equilibrium, before the update
  beta   = +-|beta| with a random sign (each trial its own draw)
  nudged = relax from the free state with beta and the targets
  dW, db = eqprop_update(free, nudged, beta);  solver.apply_update(network, dW, db, rates)
Test error after each epoch, also from persistent particles. Batches are built once in
file order and their order shuffled once per trial; the same order serves every epoch.

Trials (seeds, p values, rates, device instances) share the data and the layer sizes
(``LOCKSTEP_FIELDS``); each has its own seed streams, particles, batch order, beta signs,
metrics and results folder, exactly as if it ran alone. Trials whose orders put a short
last batch at different positions are padded; padded rows are relaxed but count nowhere.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import LATER_FIELDS, LOCKSTEP_FIELDS, EulerConfig, RunConfig
from .dynamics import rho
from .fast_relax import make_euler_solver
from .learning import ConnectionBlocks, connected_abs_max, eqprop_update, rate_tensors
from .metrics import BlockStats
from .network import Network
from .run_files import (
    RUN_MAY_CHANGE,
    SOLVER_MAY_CHANGE,
    EpochResult,
    RunLock,
    config_diff,
    run_metrics,
    write_atomic,
    write_json,
    write_run_outputs,
)
from .schedules import rate_factor, scaled_rate
from .solver import Solver, relax_phases
from .topology import mlff, small_world

CHECKPOINT = "checkpoint.pt"
EULER_ENGINES = {"EulerSolver", "FastEulerSolver"}
PLOT_EVERY_EPOCH_S = 30.0  # epochs at least this long also refresh the plots (else only the run's end does)
MAX_ABS_WEIGHT = 1e6  # EqProp weights stay O(1); beyond this a run has diverged (lr or beta too large)
CHECK_EVERY_CUDA = 25  # batches between divergence checks on CUDA (each is a host sync); every batch on CPU
RATE_FIELDS = ("lr", "schedule", "warmup")  # what a resume may change too: recorded with the epoch it changed at


class TrainingDiverged(RuntimeError):
    """Weights or states became non-finite or exploded; the checkpoint keeps the last good epoch."""


class CheckpointMismatch(ValueError):
    """A checkpoint or results folder that belongs to another run (config, topology or trials differ)."""


def seed_streams(seed: int) -> list[np.random.SeedSequence]:
    """Independent streams for (topology, initial weights, batch order and beta signs)."""
    return np.random.SeedSequence(seed).spawn(3)


def build_network(cfg: RunConfig, n_in: int, n_out: int) -> Network:
    """The network a config describes: its topology and initial weights, each from its own stream."""
    s_topo, s_init, _ = seed_streams(cfg.seed)
    sizes = (n_in, *cfg.hidden, n_out)
    topo = mlff(sizes) if cfg.topology == "mlff" else small_world(
        sizes, cfg.p, seed=np.random.default_rng(s_topo), mode=cfg.sw_mode, intralayer=cfg.intralayer)
    return Network.init(topo, seed=s_init, dtype=getattr(torch, cfg.dtype), device=cfg.device)


def check_device(name: str) -> torch.device:
    """The config's device, refused before any work when this torch cannot use it."""
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but torch.cuda.is_available() is False "
                           f"(torch {torch.__version__}{', a CPU-only build' if torch.version.cuda is None else ''})")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise RuntimeError(f"device {name!r} requested but this machine has {torch.cuda.device_count()} GPU(s)")
    return dev


def check_dataset_name(cfg: RunConfig, dataset) -> None:
    """A config naming one of the known datasets trains on that dataset, not on another one."""
    from .datasets import available_datasets
    known = available_datasets()
    name = getattr(dataset, "name", None)
    if cfg.dataset in known and name in known and name != cfg.dataset:
        raise ValueError(f"run config says dataset {cfg.dataset!r}, the dataset given is {name!r}")


def check_memory(cfgs: Sequence[RunConfig], n_in: int, n_out: int) -> None:
    """Refuse, before any allocation, networks whose dense N x N weights alone exceed this machine's memory."""
    n = n_in + sum(cfgs[0].hidden) + n_out
    need = len(cfgs) * n * n * 8  # the float64 draw of the initial weights, per trial
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        raise ValueError(f"a network of {n:,} neurons needs a dense {n:,} x {n:,} weight matrix per trial: "
                         f"{need / 2**30:,.0f} GiB for {len(cfgs)} trial(s), more than this machine's "
                         f"{have / 2**30:,.0f} GiB; give smaller hidden layers")


def make_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Consecutive batches in file order, the list shuffled once."""
    batches = [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def check_lockstep(cfgs: Sequence[RunConfig]) -> None:
    for i, c in enumerate(cfgs):
        diff = [k for k in LOCKSTEP_FIELDS if getattr(c, k) != getattr(cfgs[0], k)]
        if diff:
            raise ValueError(f"trial {i}'s config differs from trial 0's in {diff}: trials run in lockstep")
    outs = [c.out for c in cfgs]
    if len(set(outs)) != len(outs):
        raise ValueError(f"trials need distinct results folders (out), got {outs}")


class Trainer:
    """EqProp over T >= 1 trials (one RunConfig each) with one solver.

    solver: any Solver (default: the Euler engine of ``euler``, an EulerConfig). networks:
    start from these (a list of plain networks, or one network / stack) instead of each
    config's initialisation. checkpoint: where the group saves after every epoch (default
    <out>/checkpoint.pt for one trial; required for T > 1). rule: the learning rule, called
    as ``eqprop.learning.eqprop_update`` is (free, nudged, beta, mask, directed, n_in, valid)
    and returning (dW, db) (e.g. DEEP's rule, which reads its solver's nudged trajectory).
    """

    def __init__(self, runs: RunConfig | Sequence[RunConfig], dataset, solver: Solver | None = None,
                 euler: EulerConfig | None = None, networks: Network | Sequence[Network] | None = None,
                 checkpoint: str | Path | None = None, rule=eqprop_update):
        cfgs = [runs] if isinstance(runs, RunConfig) else list(runs)
        if not cfgs:
            raise ValueError("a Trainer needs at least one run config")
        if not all(isinstance(c, RunConfig) for c in cfgs):
            raise TypeError(f"a Trainer takes RunConfigs, got {[type(c).__name__ for c in cfgs]}")
        if not hasattr(dataset, "head") or not hasattr(dataset, "x_train"):
            raise TypeError(f"dataset must be an eqprop.datasets.Dataset (load_dataset(name)), got "
                            f"{type(dataset).__name__}")
        if euler is not None and not isinstance(euler, EulerConfig):
            raise TypeError(f"euler must be an EulerConfig (EulerConfig.from_dict for a dict), got "
                            f"{type(euler).__name__}")
        check_lockstep(cfgs)
        c0 = cfgs[0]
        check_dataset_name(c0, dataset)
        self.cfgs, self.data = cfgs, dataset.head(c0.train_limit, c0.test_limit)
        data = self.data
        self.device, self.dtype = check_device(c0.device), getattr(torch, c0.dtype)
        # given networks override the configs' hidden/topology/p: metrics.json says so
        self.network_given = networks is not None
        if networks is None:
            check_memory(cfgs, data.n_in, data.n_out)
            nets = [build_network(c, data.n_in, data.n_out) for c in cfgs]
        elif isinstance(networks, Network):
            nets = networks.trials(copy=True)
        else:
            nets = [n.clone() for n in networks]
        if len(nets) != len(cfgs):
            raise ValueError(f"{len(nets)} networks for {len(cfgs)} run configs")
        self.net = Network.stack([n.to(self.device, self.dtype) for n in nets])
        topo = self.net.topologies[0]
        if topo.n_in != data.n_in or topo.n_out != data.n_out:
            raise ValueError(f"network {topo.sizes} does not fit dataset {data.name} "
                             f"({data.n_in} inputs, {data.n_out} outputs)")
        if c0.soft_targets and data.task != "classification":
            raise ValueError(f"soft_targets {c0.soft_targets:g} is for classification (targets s and 1 - s instead of "
                             f"0 and 1); {data.name} is a {data.task} task")
        self.solver = solver or make_euler_solver(euler or EulerConfig(), self.device, check_values=False)
        self.solver.prepare(self.net)  # e.g. program the devices: the network then holds what they hold
        self.rule = rule
        if checkpoint is None and len(cfgs) > 1:
            raise ValueError("a Trainer of several trials needs a checkpoint path for the group")
        self.checkpoint = Path(checkpoint) if checkpoint is not None else Path(c0.out) / CHECKPOINT
        self.mask = self.net.mask_tensor()
        # a rule that takes them (eqprop_update) computes dW on the connected tiles only, into one reused buffer
        self.blocks = ConnectionBlocks(list(self.net.topologies), self.device, reuse_output=True)
        self._rule_mask = self.blocks if getattr(rule, "takes_blocks", False) else self.mask
        self.lr_W, self.lr_b = rate_tensors(self.net, [c.lr for c in cfgs])  # the configured rates
        # per trial: resumes that changed its rates ({"epoch": first epoch under the new ones, field: [old, new]}),
        # and the rate each finished epoch used (metrics.json's epochs[k].lr)
        self.rate_changes: list[list[dict]] = [[] for _ in cfgs]
        self.lr_used: list[list] = [[] for _ in cfgs]
        self.horizon = c0.epochs  # the epoch a schedule runs to (run(epochs) may set another)
        self._set_epoch_rates(1)
        self.rngs = [np.random.default_rng(seed_streams(c.seed)[2]) for c in cfgs]
        bs = c0.batch_size or data.batch_size
        orders = [make_batches(len(data.x_train), bs, rng) for rng in self.rngs]
        self.n_batches = len(orders[0])
        self._index_table(orders, bs)
        self.test_batches = [np.arange(i, min(i + bs, len(data.x_test))) for i in range(0, len(data.x_test), bs)]
        T, nf = len(cfgs), topo.n - topo.n_in
        self.train_particles = torch.zeros(T, self.n_batches, bs, nf, dtype=self.dtype, device=self.device)
        self.test_particles = [torch.zeros(T, len(i), nf, dtype=self.dtype, device=self.device)
                               for i in self.test_batches]
        self.stats = BlockStats(list(self.net.topologies), full_matrix=any(c.save_dw_matrix for c in cfgs),
                                device=self.device)
        self.history: list[list[EpochResult]] = [[] for _ in cfgs]
        self._t = {k: torch.as_tensor(getattr(data, k), dtype=self.dtype, device=self.device)
                   for k in ("x_train", "y_train", "x_test", "y_test")}
        if c0.soft_targets:  # the nudge's targets only: errors are counted by argmax, which they keep
            s = c0.soft_targets
            self._t["y_train"] = s + (1 - 2 * s) * self._t["y_train"]

    def _index_table(self, orders, bs):
        """(T, K, bs) example indices and validity: trial t's k-th batch, padded with row 0; and per
        position k the common batch length when every trial's batch has it (no padding needed)."""
        T, K = len(orders), len(orders[0])
        idx, valid = np.zeros((T, K, bs), np.int64), np.zeros((T, K, bs), bool)
        for t, order in enumerate(orders):
            for k, rows in enumerate(order):
                idx[t, k, :len(rows)], valid[t, k, :len(rows)] = rows, True
        counts = valid.sum(2)
        self.common_len = [int(counts[0, k]) if (counts[:, k] == counts[0, k]).all() else None for k in range(K)]
        self.idx, self.valid = torch.as_tensor(idx, device=self.device), torch.as_tensor(valid, device=self.device)

    @property
    def T(self) -> int:
        return self.net.T

    def network(self, t: int = 0) -> Network:
        return self.net.trial(t)

    # -- one phase pair -----------------------------------------------------------------
    def _errors(self, u, y, valid=None) -> torch.Tensor:
        """(T,) float64 on the device: misclassified examples, or the sum of 1/2 ||y - y_hat||^2."""
        out = rho(u[..., self.net.topologies[0].output_slice])
        if self.data.task == "regression":
            e = 0.5 * ((out - y) ** 2).sum(-1).double()
        else:
            e = (out.argmax(-1) != y.argmax(-1)).double()  # counts exact
        return (e if valid is None else e * valid).sum(-1)

    def betas(self) -> torch.Tensor:
        """One draw per trial per batch, from each trial's own stream."""
        out = []
        for c, rng in zip(self.cfgs, self.rngs):
            b = abs(c.beta)
            out.append(-b if c.random_beta_sign and rng.random() < 0.5 else b)
        return torch.tensor(out, dtype=torch.float64)

    def rate_factors(self, epoch: int) -> list[float]:
        """Each trial's schedule factor in epoch ``epoch`` (1-based), its schedule counted from the trial's
        last rate change (else from epoch 1) to the horizon."""
        out = []
        for c, changes in zip(self.cfgs, self.rate_changes):
            start = changes[-1]["epoch"] - 1 if changes else 0
            out.append(rate_factor(c.schedule, epoch - start, self.horizon - start, c.warmup))
        return out

    def _set_epoch_rates(self, epoch: int) -> None:
        """The rate tensors epoch ``epoch``'s updates use, and each trial's rate recorded for it."""
        factors = self.rate_factors(epoch)
        self._epoch_lr = [scaled_rate(c.lr, f) for c, f in zip(self.cfgs, factors)]
        if all(f == 1.0 for f in factors):  # the configured tensors themselves: no copy, bitwise as before
            self._rates = (self.lr_W, self.lr_b)
        else:
            f = torch.tensor(factors, dtype=self.lr_W.dtype, device=self.device)
            self._rates = (self.lr_W * f[:, None, None], self.lr_b * f[:, None])

    def check_finite(self, where: str, *states: torch.Tensor) -> None:
        """Stop with a clear error when a trial's weights or states are non-finite or exploding."""
        W, b = self.net.W, self.net.b
        # the connections only: entries off the mask never change (Network refuses them), and a
        # non-finite one would reach the states, which are checked whole (all N x N cost 9 ms per
        # batch on 784-100x5-10, a sixth of a hybrid free phase's batch)
        big = connected_abs_max(self.net)
        bad = ~torch.isfinite(big) | (big > MAX_ABS_WEIGHT) | ~torch.isfinite(b).all(1)
        for u in states:
            bad |= ~torch.isfinite(u.reshape(self.T, -1)).all(1)
        if bool(bad.any()):
            t = int(torch.nonzero(bad)[0])
            what = (f"max |W| = {float(W[t].abs().max()):.3g}" if bool(torch.isfinite(W[t]).all())
                    else f"{int((~torch.isfinite(W[t])).sum())} non-finite weights")
            last = self.checkpoint if self.checkpoint.exists() else None
            raise TrainingDiverged(
                f"training diverged at {where} (trial {t}, seed {self.cfgs[t].seed}, lr {self.cfgs[t].lr}, beta "
                f"{self.cfgs[t].beta}): {what} or non-finite biases/states; "
                + (f"{last} holds the last good epoch" if last else "no epoch finished, nothing was saved")
                + "; try a smaller lr or beta")

    def _start(self, x: torch.Tensor, particles: torch.Tensor) -> torch.Tensor:
        """A free phase's u0: the inputs, then the particles or 0 (RunConfig.free_start)."""
        return torch.cat([x, torch.zeros_like(particles) if self.cfgs[0].free_start == "zero" else particles], -1)

    def train_batch(self, k: int) -> torch.Tensor:
        """Lockstep position k: every trial trains on its own k-th batch; (T,) errors on the device."""
        n_in, L = self.net.topologies[0].n_in, self.common_len[k]
        rows = slice(None) if L is None else slice(0, L)
        idx, valid = self.idx[:, k, rows], (self.valid[:, k] if L is None else None)
        x, y = self._t["x_train"][idx], self._t["y_train"][idx]
        beta = self.betas()  # each trial's own stream: drawn before the free phase, the same draws as after
        free, nudged = relax_phases(self.solver, self.net, x, self._start(x, self.train_particles[:, k, rows]), beta,
                                    y)
        self.train_particles[:, k, rows] = free[..., n_in:]
        err = self._errors(free, y, valid)
        beta_dev = beta.to(self.dtype).to(self.device, non_blocking=True)
        dW, db = self.rule(free, nudged, beta_dev, self._rule_mask, self.net.topologies[0].directed, n_in, valid)
        self.stats.add(dW)
        self.solver.apply_update(self.net, dW, db, *self._rates)
        if self.device.type != "cuda" or k % CHECK_EVERY_CUDA == CHECK_EVERY_CUDA - 1 or k == self.n_batches - 1:
            self.check_finite(f"epoch {len(self.history[0]) + 1}, batch {k + 1} of {self.n_batches}", free, nudged)
        return err

    def evaluate(self) -> np.ndarray:
        """(T,) test error from the persistent test particles (x shared by all trials)."""
        n_in = self.net.topologies[0].n_in
        total = torch.zeros(self.T, dtype=torch.float64, device=self.device)
        for k, rows in enumerate(self.test_batches):
            x, y = self._t["x_test"][rows], self._t["y_test"][rows]
            free = self.solver.relax(self.net, x, self._start(x.expand(self.T, -1, -1), self.test_particles[k]))
            self.test_particles[k] = free[..., n_in:].clone()
            total += self._errors(free, y)
        # divided on the CPU: CUDA divides a tensor by a scalar as a multiply by its reciprocal, which
        # made 7/12 differ from the CPU's in the last bit
        return total.cpu().numpy() / max(len(self.data.x_test), 1)

    def _cpu_seconds(self) -> float:
        """This process's CPU time plus the solver's worker processes' (SpiceSolver), if it has any."""
        workers = getattr(self.solver, "worker_cpu_seconds", None)
        return time.process_time() + (workers() if workers is not None else 0.0)

    def run_epoch(self, progress: bool = False) -> list[EpochResult]:
        epoch = len(self.history[0]) + 1
        self._set_epoch_rates(epoch)
        t0, c0 = time.perf_counter(), self._cpu_seconds()
        err = torch.zeros(self.T, dtype=torch.float64, device=self.device)
        desc = f"epoch {epoch}" + (f" ({self.T} trials)" if self.T > 1 else "")
        for k in tqdm(range(self.n_batches), desc=desc, disable=not progress, leave=False, unit="batch"):
            err += self.train_batch(k)
        train = err.cpu().numpy() / len(self.data.x_train)
        test, rms = self.evaluate(), self.stats.end_epoch()
        sec, cpu = time.perf_counter() - t0, self._cpu_seconds() - c0
        rep = self.solver.report() if hasattr(self.solver, "report") else {}
        res = [EpochResult(epoch, float(train[t]), float(test[t]), [float(v) for v in rms[t]], sec,
                           {k: v[t] for k, v in rep.items()}, cpu_seconds=cpu) for t in range(self.T)]
        for h, r in zip(self.history, res):
            h.append(r)
        for used, lr in zip(self.lr_used, self._epoch_lr):
            used.append(lr)
        return res

    # -- runs, outputs, checkpoints ---------------------------------------------------------
    def run(self, epochs: int | None = None, resume: bool = False, progress: bool = True) -> list[dict]:
        """Train to ``epochs`` (default: the configs'), writing each trial's folder after every
        epoch and the group's checkpoint after that; returns every trial's metrics."""
        epochs = self.cfgs[0].epochs if epochs is None else epochs
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
        self.horizon = epochs
        folders = {Path(c.out) for c in self.cfgs} | {self.checkpoint.parent}
        locks = []
        try:  # refused before any work when another live run writes here
            for folder in sorted(folders):
                locks.append(RunLock(folder).acquire())
            return self._run(epochs, resume, progress)
        finally:
            for lock in locks:
                lock.release()

    def _run(self, epochs: int, resume: bool, progress: bool) -> list[dict]:
        if resume:
            self.load_checkpoint(self.checkpoint)
            if self.history[0]:  # the checkpoint may be an epoch ahead of metrics.json (killed in between)
                self.write_outputs(plots=False)
        self.write_configs()
        for _ in range(len(self.history[0]), epochs):
            res = self.run_epoch(progress)
            if progress:
                r0 = res[0]
                what = (f"train {r0.train_error:.4f} test {r0.test_error:.4f} rms "
                        + " ".join(f"{r:.2e}" for r in r0.rms)) if self.T == 1 else (
                    "test " + " ".join(f"{r.test_error:.4f}" for r in res))
                tqdm.write(f"epoch {r0.epoch}: {what} ({r0.seconds:.1f} s)")
            # the checkpoint first: metrics.json never runs ahead of it, so a run whose metrics.json
            # holds every epoch has its final weights saved (reproduce skips such runs); a kill
            # in between leaves the checkpoint an epoch ahead, written out on resume. Plots cost ~1 s a
            # figure, so between epochs only where an epoch is long enough for someone to watch them.
            self.save_checkpoint(self.checkpoint)
            self.write_outputs(plots=res[0].seconds >= PLOT_EVERY_EPOCH_S)
        self.write_outputs(plots=True)
        return self.metrics()

    def metrics(self) -> list[dict]:
        """Every trial's metrics.json content (the stats read back from the device once)."""
        rms, spread, absdw = self.stats.mean_rms(), self.stats.log_spread(), self.stats.mean_abs_dw()
        solver = self.solver.describe()
        out = [run_metrics(c.to_dict(), solver, self.net.topologies[t], self.history[t], rms[t], spread[t],
                           absdw[t], self.data.task, self.network_given, t, self.T)
               for t, c in enumerate(self.cfgs)]
        for m, used, changes in zip(out, self.lr_used, self.rate_changes):
            for e, lr in zip(m["epochs"], used):
                e["lr"] = lr  # the rate this epoch's updates used (schedule applied)
            if changes:
                m["rate_changes"] = changes
        return out

    def write_configs(self) -> None:
        solver = self.solver.describe()
        for t, c in enumerate(self.cfgs):
            changes = {"rate_changes": self.rate_changes[t]} if self.rate_changes[t] else {}
            write_json(Path(c.out) / "config.json", {"run": c.to_dict(), "solver": solver, "trial": t,
                                                     "trials": self.T, **changes})

    def write_outputs(self, plots: bool = True) -> None:
        full = self.stats.mean_abs_dw_matrix()
        for t, (c, m) in enumerate(zip(self.cfgs, self.metrics())):
            write_run_outputs(m, c.out, full[t] if full is not None and c.save_dw_matrix else None, plots=plots)

    def save_checkpoint(self, path: str | Path) -> None:
        import io
        buf = io.BytesIO()
        torch.save({
            "W": self.net.W.cpu(), "b": self.net.b.cpu(), "mask": self.mask.cpu(),
            "train_particles": self.train_particles.cpu(), "test_particles": [p.cpu() for p in self.test_particles],
            "rngs": [r.bit_generator.state for r in self.rngs], "stats": self.stats.state_dict(),
            "history": [[dataclasses.asdict(h) for h in hs] for hs in self.history],
            "lr_used": self.lr_used, "rate_changes": self.rate_changes,
            "configs": [c.to_dict() for c in self.cfgs], "solver": self.solver.describe(),
            "solver_state": self.solver.state_dict() if hasattr(self.solver, "state_dict") else None,
        }, buf)
        write_atomic(path, buf.getvalue())  # a kill mid-write leaves the previous checkpoint intact

    def load_checkpoint(self, path: str | Path) -> None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {path}")
        try:
            ck = torch.load(path, weights_only=False)
            configs, solver = ck["configs"], ck["solver"]
        except Exception as e:  # a damaged or foreign file: say which, not torch's internals
            raise CheckpointMismatch(f"{path} is not a readable checkpoint of this version ({type(e).__name__}: "
                                     f"{e}); rerun without --resume / with --restart") from None
        if len(configs) != self.T:
            raise CheckpointMismatch(f"{path}: checkpoint holds {len(configs)} trials, this run has {self.T}")
        for t, (old, cfg) in enumerate(zip(configs, self.cfgs)):
            diff = config_diff(old, cfg.to_dict(), RUN_MAY_CHANGE + RATE_FIELDS)
            if diff:
                raise CheckpointMismatch(f"{path}: trial {t}'s checkpoint config differs from this run's: {diff}")
        diff = config_diff(solver, self.solver.describe(), SOLVER_MAY_CHANGE)
        if set(diff.get("solver", ())) <= EULER_ENGINES:
            diff.pop("solver", None)  # the two Euler engines compute the same thing: a resume may switch
        if diff:
            raise CheckpointMismatch(f"{path}: checkpoint solver settings differ from this run's: {diff}")
        if not torch.equal(ck["mask"], self.mask.cpu()):
            raise CheckpointMismatch(f"{path}: checkpoint topologies differ from this run's (other config or seed?)")
        dev = self.device
        self.net.W.copy_(ck["W"].to(dev))  # in place: CUDA graphs captured on W stay valid
        self.net.b.copy_(ck["b"].to(dev))
        self.train_particles.copy_(ck["train_particles"].to(dev))
        self.test_particles = [p.to(dev) for p in ck["test_particles"]]
        for r, st in zip(self.rngs, ck["rngs"]):
            r.bit_generator.state = st
        self.stats.load_state_dict(ck["stats"])
        self.history = [[EpochResult(**h) for h in hs] for hs in ck["history"]]
        # checkpoints from before schedules: every epoch ran at the configured rate, never changed
        self.lr_used = ck.get("lr_used") or [[old.get("lr")] * len(hs) for old, hs in zip(configs, self.history)]
        self.rate_changes = ck.get("rate_changes") or [[] for _ in configs]
        for t, (old, cfg) in enumerate(zip(configs, self.cfgs)):
            new = cfg.to_dict()
            changed = {k: [old.get(k, LATER_FIELDS.get(k)), new.get(k, LATER_FIELDS.get(k))] for k in RATE_FIELDS
                       if old.get(k, LATER_FIELDS.get(k)) != new.get(k, LATER_FIELDS.get(k))}
            if changed:  # the new rate/schedule starts at the next epoch
                self.rate_changes[t] = [*self.rate_changes[t], {"epoch": len(self.history[t]) + 1, **changed}]
        if ck.get("solver_state") is not None and hasattr(self.solver, "load_state_dict"):
            self.solver.load_state_dict(ck["solver_state"], self.net)


def train(runs: RunConfig | Sequence[RunConfig], dataset=None, solver: Solver | None = None,
          euler: EulerConfig | None = None, networks=None, checkpoint=None, resume: bool = False,
          progress: bool = True) -> list[dict]:
    """Train per ``runs`` (loading the dataset by name if not given); returns every trial's metrics."""
    cfgs = [runs] if isinstance(runs, RunConfig) else list(runs)
    if dataset is None:
        from .datasets import load_dataset
        dataset = load_dataset(cfgs[0].dataset)  # the documented fixed split; seeds drive init and order
    trainer = Trainer(cfgs, dataset, solver=solver, euler=euler, networks=networks, checkpoint=checkpoint)
    return trainer.run(resume=resume, progress=progress)
