"""Independent trials in lockstep: T networks of the same sizes relaxed and trained at once.

Monte Carlo studies (seeds, p values, masks, device instances) run the same loop T times
on small nets; one batched call per phase turns T launch-bound loops into one
(../shared/reference/gpu-notes.md). ``Network`` stays the one network type: a
``TrialStack`` is a batched view built from a list of them and turned back into one.

``TrialTrainer`` mirrors ``eqprop.trainer.Trainer`` batch for batch, per trial: its own
seed (init, topology, batch order, beta signs from the same numpy generator draws), its
own persistent particles, train error before the update, test error after each epoch.
Trials whose shuffled orders put a short last batch at different positions are padded;
padded rows are relaxed but count nowhere (errors, dW, db).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import TrainConfig
from .energy import rho
from .fast_relax import FastEulerSolver, to_device_async
from .learning import contrastive_update, rate_tensors
from .metrics import BlockStats
from .network import Network
from .topology import Topology
from .trainer import (CheckpointMismatch, EpochResult, build_network, check_device, make_batches,
                      config_diff, run_metrics, seed_streams)


@dataclasses.dataclass(eq=False)
class TrialStack:
    """W (T, N, N), b (T, N) and masks (T, N, N) of T networks with equal layer sizes."""

    topologies: list[Topology]
    W: torch.Tensor
    b: torch.Tensor
    mask: torch.Tensor = dataclasses.field(init=False)

    def __post_init__(self):
        topos = list(self.topologies)
        if not topos:
            raise ValueError("a trial stack needs at least one network")
        t0 = topos[0]
        for i, t in enumerate(topos):
            if t.sizes != t0.sizes or t.directed != t0.directed:
                raise ValueError(f"trial {i} has sizes {t.sizes} (directed={t.directed}), trial 0 has "
                                 f"{t0.sizes} (directed={t0.directed}): trials must share layer sizes")
        T, n = len(topos), t0.n
        if tuple(self.W.shape) != (T, n, n) or tuple(self.b.shape) != (T, n):
            raise ValueError(f"W {tuple(self.W.shape)} / b {tuple(self.b.shape)} do not fit {T} trials of "
                             f"sizes {t0.sizes} (need ({T}, {n}, {n}) and ({T}, {n}))")
        self.topologies = topos
        self.mask = torch.as_tensor(np.stack([t.mask for t in topos]), device=self.W.device)

    @classmethod
    def from_networks(cls, networks: Sequence[Network]) -> "TrialStack":
        nets = list(networks)
        if not nets:
            raise ValueError("a trial stack needs at least one network")
        for i, n in enumerate(nets):
            if n.dtype != nets[0].dtype or n.device != nets[0].device:
                raise ValueError(f"trial {i} is {n.dtype} on {n.device}, trial 0 is {nets[0].dtype} on "
                                 f"{nets[0].device}: convert them first (Network.to)")
        topos = [n.topology for n in nets]
        cls._check_sizes(topos)
        return cls(topos, torch.stack([n.W for n in nets]), torch.stack([n.b for n in nets]))

    @staticmethod
    def _check_sizes(topos):  # before torch.stack, whose shape error would not name the trial
        for i, t in enumerate(topos):
            if t.sizes != topos[0].sizes:
                raise ValueError(f"trial {i} has sizes {t.sizes}, trial 0 has {topos[0].sizes}: "
                                 f"trials must share layer sizes")

    def network(self, i: int, copy: bool = True) -> Network:
        """Trial i as a Network (copy=False: a view that follows in-place updates of the stack)."""
        W, b = (self.W[i].clone(), self.b[i].clone()) if copy else (self.W[i], self.b[i])
        return Network(self.topologies[i], W, b)

    def to_networks(self, copy: bool = True) -> list[Network]:
        return [self.network(i, copy) for i in range(self.T)]

    @property
    def T(self) -> int:
        return len(self.topologies)

    @property
    def sizes(self) -> tuple[int, ...]:
        return self.topologies[0].sizes

    @property
    def n_in(self) -> int:
        return self.topologies[0].n_in

    @property
    def device(self):
        return self.W.device

    @property
    def dtype(self):
        return self.W.dtype


# -- the learning rule, per trial -----------------------------------------------------
def trial_eqprop_update(free: torch.Tensor, nudged: torch.Tensor, beta, stack: TrialStack,
                        valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``eqprop.learning.eqprop_update`` for every trial: (dW (T, N, N), db (T, N)).

    Same formula: dW = (rb^T rb - r0^T r0) / (beta B) (.) mask, db = mean(rb - r0) / beta,
    input biases 0. beta: (T,) (or one value). valid: (T, B) bool rows that count; the
    batch mean then runs over each trial's valid rows only (padded short batches).
    """
    T, B, N = free.shape
    if nudged.shape != free.shape or stack.T != T or stack.topologies[0].n != N:
        raise ValueError(f"free {tuple(free.shape)} / nudged {tuple(nudged.shape)} do not fit {stack.T} trials "
                         f"of {stack.topologies[0].n} neurons")
    beta = torch.as_tensor(beta, dtype=free.dtype).flatten().cpu()  # checked on the host: no GPU sync
    if beta.numel() not in (1, T):
        raise ValueError(f"beta must be one value or {T} values (one per trial), got {beta.numel()}")
    beta = beta.expand(T)
    if (beta == 0).any():
        raise ValueError("trial_eqprop_update needs beta != 0 for every trial")
    beta = to_device_async(beta, free.device)
    r0, rb = rho(free), rho(nudged)
    if valid is None:
        n = torch.full((T,), float(B), dtype=free.dtype, device=free.device)
    else:
        v = valid.to(free.dtype).unsqueeze(-1)
        r0, rb = r0 * v, rb * v  # rho = 0 rows add nothing to either outer product
        n = v.sum((1, 2))
    topo = stack.topologies[0]
    return contrastive_update(r0, rb, beta * n, stack.mask, topo.directed, topo.n_in)


def trial_rate_tensors(stack: TrialStack, lrs: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
    """``eqprop.learning.rate_tensors`` per trial: one spec per trial (a global rate or one rate
    per adjacent block, input side first). Returns lr_W (T, N, N), lr_b (T, N)."""
    specs = list(lrs)
    if len(specs) != stack.T:
        raise ValueError(f"need one learning-rate spec per trial ({stack.T}), got {len(specs)}")
    pairs = [rate_tensors(t, s, stack.dtype, stack.device) for t, s in zip(stack.topologies, specs)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


# -- metrics, per trial, on the device ---------------------------------------------------
class TrialStats(BlockStats):
    """``eqprop.metrics.BlockStats`` over a stack's T trials, kept on the stack's device."""

    def __init__(self, stack: TrialStack, full_matrix: bool = False):
        super().__init__(stack.topologies, full_matrix=full_matrix, device=stack.device)


# -- lockstep training -------------------------------------------------------------------
_SHARED = ("dataset", "epochs", "hidden", "eps", "free_steps", "nudged_steps", "nudge_form", "batch_size", "device", "dtype",
           "coupling", "train_limit", "test_limit")  # what trials may not differ in (the rest: seed, topology, p, lr, beta, ...)


class TrialTrainer:
    """T runs of ``eqprop.trainer.Trainer`` in lockstep, one TrainConfig per trial.

    ``networks``: start from these instead of each config's initialisation (e.g. device
    instances). The solver must relax stacks (``FastEulerSolver``, built from the configs
    when not given). ``history[t]`` holds trial t's EpochResults; ``run(checkpoint=...)``
    saves the whole group after every epoch, ``load_checkpoint`` resumes it.
    """

    def __init__(self, cfgs: Sequence[TrainConfig], dataset, networks: Sequence[Network] | None = None,
                 solver: FastEulerSolver | None = None):
        cfgs = list(cfgs)
        if not cfgs:
            raise ValueError("TrialTrainer needs at least one config")
        for i, c in enumerate(cfgs):
            diff = [k for k in _SHARED if getattr(c, k) != getattr(cfgs[0], k)]
            if diff:
                raise ValueError(f"trial {i}'s config differs from trial 0's in {diff}: trials run in lockstep")
        c0 = cfgs[0]
        if any(c.engine == "reference" for c in cfgs):
            raise ValueError("engine 'reference' cannot run trials in lockstep (EulerSolver relaxes one network); "
                             "use engine 'fast' or 'auto'")
        self.cfgs, self.data = cfgs, dataset.head(c0.train_limit, c0.test_limit)
        dataset = self.data
        self.device, self.dtype = check_device(c0.device), getattr(torch, c0.dtype)
        self.networks_given = networks is not None
        if networks is None:
            networks = [build_network(c, dataset.n_in, dataset.n_out) for c in cfgs]
        elif len(networks) != len(cfgs):
            raise ValueError(f"{len(networks)} networks for {len(cfgs)} configs")
        else:
            networks = [n.to(self.device, self.dtype) for n in networks]  # the configs' device and dtype
        topo = networks[0].topology
        if topo.n_in != dataset.n_in or topo.n_out != dataset.n_out:
            raise ValueError(f"networks {topo.sizes} do not fit dataset {dataset.name}")
        self.stack = TrialStack.from_networks(networks)
        self.solver = solver or FastEulerSolver(eps=c0.eps, free_steps=c0.free_steps, nudged_steps=c0.nudged_steps,
                                                nudge_form=c0.nudge_form, coupling=c0.coupling)
        self.lr_W, self.lr_b = trial_rate_tensors(self.stack, [c.lr for c in cfgs])
        self.rngs = [np.random.default_rng(seed_streams(c.seed)[2]) for c in cfgs]  # the same draws as Trainer's rng
        bs = c0.batch_size or dataset.batch_size
        orders = [make_batches(len(dataset.x_train), bs, rng) for rng in self.rngs]
        self.n_batches = len(orders[0])
        self.idx, self.valid = self._index_table(orders, bs)
        self.test_batches = [np.arange(i, min(i + bs, len(dataset.x_test))) for i in range(0, len(dataset.x_test), bs)]
        T, nf = len(cfgs), topo.n - topo.n_in
        self.train_particles = torch.zeros(T, self.n_batches, bs, nf, dtype=self.dtype, device=self.device)
        self.test_particles = [torch.zeros(T, len(i), nf, dtype=self.dtype, device=self.device)
                               for i in self.test_batches]
        self.stats = TrialStats(self.stack, full_matrix=any(c.save_dw_matrix for c in cfgs))
        self.history: list[list[EpochResult]] = [[] for _ in cfgs]
        self._t = {k: torch.as_tensor(getattr(dataset, k), dtype=self.dtype, device=self.device)
                   for k in ("x_train", "y_train", "x_test", "y_test")}

    def _index_table(self, orders, bs):
        """(T, K, bs) example indices and validity: trial t's k-th batch, padded with row 0."""
        T, K = len(orders), len(orders[0])
        idx, valid = np.zeros((T, K, bs), np.int64), np.zeros((T, K, bs), bool)
        for t, order in enumerate(orders):
            for k, rows in enumerate(order):
                idx[t, k, :len(rows)], valid[t, k, :len(rows)] = rows, True
        return torch.as_tensor(idx, device=self.device), torch.as_tensor(valid, device=self.device)

    @property
    def T(self) -> int:
        return self.stack.T

    def _errors(self, state, y, valid=None) -> torch.Tensor:
        """Per trial, as eqprop.metrics: misclassifications, or the sum of 1/2 ||y - y_hat||^2."""
        out = state[..., self.stack.topologies[0].output_slice]
        if self.data.task == "regression":
            e = 0.5 * ((out - y) ** 2).sum(-1).double()
        else:
            e = (out.argmax(-1) != y.argmax(-1)).double()  # counts exact, like Trainer's ints
        return (e if valid is None else e * valid).sum(-1)

    def betas(self) -> torch.Tensor:
        """One draw per trial per batch, exactly as Trainer.train_batch draws its sign."""
        out = []
        for c, rng in zip(self.cfgs, self.rngs):
            b = abs(c.beta)
            out.append(-b if c.random_beta_sign and rng.random() < 0.5 else b)
        return torch.tensor(out, dtype=self.dtype)

    def train_batch(self, k: int) -> torch.Tensor:
        """Lockstep position k: every trial trains on its own k-th batch; (T,) errors on the device."""
        s, n_in = self.stack, self.stack.n_in
        idx, valid = self.idx[:, k], self.valid[:, k]
        x, y = self._t["x_train"][idx], self._t["y_train"][idx]
        free = self.solver.relax_tensors(s.W, s.b, s.topologies, x, torch.cat([x, self.train_particles[:, k]], -1),
                                         check_values=False)  # Dataset validated x: no per-call sync
        self.train_particles[:, k] = free[..., n_in:]
        err = self._errors(free, y, valid)
        beta = self.betas()
        nudged = self.solver.relax_tensors(s.W, s.b, s.topologies, x, free, beta, y, check_values=False)
        dW, db = trial_eqprop_update(free, nudged, beta, s, valid)
        self.stats.add(dW)
        s.W.add_(self.lr_W * dW)  # in place: the solver's CUDA graphs keep reading this W
        s.b.add_(self.lr_b * db)
        return err

    def evaluate(self) -> np.ndarray:
        """(T,) test error from the persistent test particles (x shared by all trials)."""
        n_in, total = self.stack.n_in, 0.0
        for k, rows in enumerate(self.test_batches):
            x, y = self._t["x_test"][rows], self._t["y_test"][rows]
            x3 = x.expand(self.T, -1, -1)
            free = self.solver.relax_tensors(self.stack.W, self.stack.b, self.stack.topologies, x,
                                             torch.cat([x3, self.test_particles[k]], -1), check_values=False)
            self.test_particles[k] = free[..., n_in:].clone()
            total = total + self._errors(free, y)
        return (total / max(len(self.data.x_test), 1)).cpu().numpy()

    def run_epoch(self, progress: bool = False) -> list[EpochResult]:
        epoch = len(self.history[0]) + 1
        t0 = time.perf_counter()
        err = torch.zeros(self.T, dtype=torch.float64, device=self.device)
        for k in tqdm(range(self.n_batches), desc=f"epoch {epoch} ({self.T} trials)", disable=not progress,
                      leave=False, unit="batch"):
            err += self.train_batch(k)
        train = (err / len(self.data.x_train)).cpu().numpy()
        test, rms = self.evaluate(), self.stats.end_epoch()
        sec = time.perf_counter() - t0
        res = [EpochResult(epoch, float(train[t]), float(test[t]), [float(v) for v in rms[t]], sec)
               for t in range(self.T)]
        for h, r in zip(self.history, res):
            h.append(r)
        return res

    def run(self, epochs: int | None = None, progress: bool = True, checkpoint: str | Path | None = None,
            on_epoch=None) -> list[list[EpochResult]]:
        """Train to ``epochs``; with ``checkpoint``, save the group there after every epoch (resume
        with ``load_checkpoint`` first). ``on_epoch(self)`` runs after each epoch (e.g. writes metrics)."""
        epochs = self.cfgs[0].epochs if epochs is None else epochs
        for _ in range(len(self.history[0]), epochs):
            res = self.run_epoch(progress)
            if progress:
                tqdm.write(f"epoch {res[0].epoch}: test " + " ".join(f"{r.test_error:.4f}" for r in res)
                           + f" ({res[0].seconds:.1f} s)")
            if on_epoch is not None:
                on_epoch(self)  # first: a kill before the checkpoint only repeats this epoch on resume
            if checkpoint is not None:
                self.save_checkpoint(checkpoint)
        return self.history

    def metrics_all(self) -> list[dict]:
        """Every trial's metrics.json content (the stats read back from the device once)."""
        rms, spread, absdw = self.stats.mean_rms(), self.stats.log_spread(), self.stats.mean_abs_dw()
        return [run_metrics(c, self.stack.topologies[t], self.history[t], rms[t], spread[t], absdw[t], self.data.task,
                            "FastEulerSolver (trials)", self.networks_given) for t, c in enumerate(self.cfgs)]

    def metrics(self, t: int) -> dict:
        """Trial t's metrics.json content."""
        return self.metrics_all()[t]

    def networks(self) -> list[Network]:
        return self.stack.to_networks()

    # -- checkpoints: the lockstep group resumes exactly where it stopped ---------------
    def save_checkpoint(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_suffix(".tmp")
        torch.save({
            "W": self.stack.W.cpu(), "b": self.stack.b.cpu(), "mask": self.stack.mask.cpu(),
            "train_particles": self.train_particles.cpu(), "test_particles": [p.cpu() for p in self.test_particles],
            "rngs": [r.bit_generator.state for r in self.rngs], "stats": self.stats.state_dict(),
            "history": [[dataclasses.asdict(h) for h in hs] for hs in self.history],
            "configs": [c.to_dict() for c in self.cfgs],
        }, tmp)
        tmp.replace(path)  # atomic, as Trainer's

    def load_checkpoint(self, path: str | Path) -> None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no trial checkpoint at {path}")
        ck = torch.load(path, weights_only=False)
        if len(ck["configs"]) != self.T:
            raise CheckpointMismatch(f"{path}: checkpoint holds {len(ck['configs'])} trials, this group has {self.T}")
        for t, (old, cfg) in enumerate(zip(ck["configs"], self.cfgs)):
            diff = config_diff(old, cfg)
            if diff:
                raise CheckpointMismatch(f"{path}: trial {t}'s checkpoint config differs from this run's: {diff}")
        if not torch.equal(ck["mask"], self.stack.mask.cpu()):
            raise CheckpointMismatch(f"{path}: checkpoint topologies differ from this group's")
        dev = self.device
        self.stack.W.copy_(ck["W"].to(dev))  # in place: CUDA graphs captured on W stay valid
        self.stack.b.copy_(ck["b"].to(dev))
        self.train_particles.copy_(ck["train_particles"].to(dev))
        self.test_particles = [p.to(dev) for p in ck["test_particles"]]
        for r, st in zip(self.rngs, ck["rngs"]):
            r.bit_generator.state = st
        self.stats.load_state_dict(ck["stats"])
        self.history = [[EpochResult(**h) for h in hs] for hs in ck["history"]]


def train_trials(cfgs: Sequence[TrainConfig], dataset=None, networks=None, solver=None,
                 progress: bool = True) -> tuple[list[list[EpochResult]], list[Network]]:
    """Train T configs in lockstep (dataset loaded by name if not given): (histories, networks)."""
    if dataset is None:
        from .datasets import load_dataset
        dataset = load_dataset(cfgs[0].dataset)
    tr = TrialTrainer(cfgs, dataset, networks=networks, solver=solver)
    return tr.run(progress=progress), tr.networks()
