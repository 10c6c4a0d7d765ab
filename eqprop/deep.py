"""DEEP (Farinha et al. 2020): EqProp for complete directed networks, as a backend of the one
solver protocol (``eqprop.solver``), trained by the one ``Trainer`` with ``eqprop.deep_rule.DeepRule``.

Dynamics, state s = u in [0, 1] (rho(u) = u on the state), inputs (and the bias neuron) clamped:

    ds_j/dt = sum_i W_ij s_i + b_j - s_j sum_k W_jk   [+ the nudge on outputs]

Euler with step dt and a clip after every step. ``W[i, j]`` carries i's activity into j (the
project's convention), so sum_k W_jk is neuron j's total *outgoing* weight: a neuron that drives
others strongly leaks strongly. b is 0 in the paper (the bias is an input neuron clamped to 1,
``complete_directed(..., bias=True)``); it enters the drive like the Euler engines' b.

The nudge is the project's (``eqprop.dynamics.nudge_``, gradient form by default): the force
2 beta (y_d - s_out), so the paper's beta (force beta (y - s)) is twice this project's beta.

The nudged phase records its trajectory s(0..T2) (s(0) = the free state) for the rule, which
takes it with ``take_trajectory()``. ``apply_update`` applies the update exactly and then, when
``prune`` is on, the paper's stochastic pruning (``eqprop.deep_rule.prune_``): after every weight
update, as in the paper, and before the epoch's test evaluation, so the reported error is that of
the pruned network. Pruned connections stay removed (the solver keeps an ``alive`` mask,
checkpointed with the per-trial pruning streams). ``report()`` gives, per epoch and trial, the
Gershgorin test and (small nets) the largest real part of the Jacobian's eigenvalues, the
convergence of the free phases and the sparsity (``eqprop.deep_stability``).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from .config import NUDGE_FORMS
from .deep_rule import prune_
from .deep_stability import deep_jacobian, equilibrium_stability, stability_summary
from .dynamics import clip_, nudge_, nudge_force
from .learning import apply_update as exact_update
from .network import Network
from .solver import check_relax
from .topology import Topology

INITS = ("particle", "zero")


@dataclasses.dataclass(frozen=True)
class DeepConfig:
    """How the DEEP solver relaxes and prunes (paper-facts.md, DEEP; XOR's values are the defaults).

    dt: Euler step of the neuron dynamics. free_steps / nudged_steps: the paper's T1 / T2 (fixed
    counts). init: where a free phase starts: "particle" (the u0 the caller passes, e.g. the
    Trainer's persistent particles) or "zero" (every free phase from s = 0). prune: the paper's
    stochastic pruning after every update; tol_W: only |W| <= tol_W may go; temp: the softmax
    temperature over each neuron's incoming weights; prune_seed: with the trial's seed
    (``DeepSolver(trial_seeds=...)``), the pruning stream. eig_max_neurons: eigenvalues are
    computed for nets with at most this many non-input neurons (the Gershgorin test always).
    tol: 0 (the paper's fixed step counts) or > 0: a phase stops early once max |ds/dt| < tol, so
    free_steps / nudged_steps become limits (the converged reference of spice-check).
    """

    dt: float = 0.05
    free_steps: int = 1000
    nudged_steps: int = 1000
    nudge_form: str = "gradient"
    init: str = "particle"
    prune: bool = False
    tol_W: float = 0.01
    temp: float = 5.0
    prune_seed: int = 0
    eig_max_neurons: int = 64
    tol: float = 0.0

    def __post_init__(self):
        o = "deep config"
        for k in ("free_steps", "nudged_steps", "prune_seed", "eig_max_neurons"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{o}: {k} must be an integer >= 0, got {v!r}")
        for k in ("dt", "tol_W", "temp", "tol"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{o}: {k} must be a finite number, got {v!r}")
        if not 0 < self.dt <= 1:
            raise ValueError(f"{o}: dt must lie in (0, 1], got {self.dt}")
        if self.tol < 0:
            raise ValueError(f"{o}: tol must be >= 0, got {self.tol}")
        if self.tol_W < 0 or self.temp <= 0:
            raise ValueError(f"{o}: need tol_W >= 0 and temp > 0, got {self.tol_W}, {self.temp}")
        if self.nudge_form not in NUDGE_FORMS:
            raise ValueError(f"{o}: nudge_form must be one of {NUDGE_FORMS}, got {self.nudge_form!r}")
        if self.init not in INITS:
            raise ValueError(f"{o}: init must be one of {INITS}, got {self.init!r}")
        if not isinstance(self.prune, bool):
            raise ValueError(f"{o}: prune must be true or false, got {self.prune!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if not self.tol:
            del d["tol"]  # fixed step counts: recorded as before tol existed (resume checks compare these)
        return d


def deep_init(topology: Topology, seed=0, std: float = 0.05, dtype=torch.float32, device="cpu") -> Network:
    """The paper's initialisation: every existing (ordered) connection ~ N(0, std^2), independently
    (asymmetric for a directed mask), biases 0. ``seed``: an int or a numpy SeedSequence."""
    if not topology.directed:
        raise ValueError("deep_init draws independent weights per direction: it needs a directed topology")
    rng = np.random.default_rng(seed)
    W = rng.normal(0.0, std, size=(topology.n, topology.n)) * topology.mask
    return Network(topology, torch.tensor(W, dtype=dtype, device=device),
                   torch.zeros(topology.n, dtype=dtype, device=device))


def deep_residual(network: Network, u: torch.Tensor, beta: float = 0.0, target=None) -> float:
    """max |clip(s + f(s)) - s| over the non-input neurons of one network's states u (B, N), s = clip(u),
    f DEEP's vector field (+ the gradient nudge): 0 exactly at a fixed point of the clipped dynamics
    (whatever the Euler step), independently of any solver run."""
    topo = network.topology
    n_in, n_out = topo.n_in, topo.n_out
    W, b = network.W.to(u.dtype), network.b.to(u.dtype)
    s = u.clamp(0, 1)
    f = s @ W[:, n_in:] + b[n_in:] - s[:, n_in:] * W[n_in:].sum(-1)
    if beta:
        f[:, -n_out:] += nudge_force(s[:, -n_out:], torch.as_tensor(target, dtype=u.dtype), beta)
    return float(((s[:, n_in:] + f).clamp(0, 1) - s[:, n_in:]).abs().max())


class DeepSolver:
    """DEEP's dynamics for a plain network or a stack of T trials, all trials in one batched product.

    One step, with the leak folded into the coupling matrix (as the fast Euler engine folds its own):
    s <- clip(dt (x W_in + b) + s M), M = dt W_ff + diag(1 - dt r), r_j = sum_k W_jk.
    trial_seeds: one int per trial (e.g. the RunConfigs' seeds) for the pruning streams, so a
    trial prunes as the same run alone would; default: the trial index.
    """

    def __init__(self, config: DeepConfig | None = None, trial_seeds=None, check_values: bool = True):
        self.config = config or DeepConfig()
        self.trial_seeds = None if trial_seeds is None else [int(s) for s in trial_seeds]
        self.check_values = check_values
        self.trajectory: torch.Tensor | None = None
        self.weights: torch.Tensor | None = None  # the W last relaxed (the rule's L1 term reads its sign)
        self.alive: torch.Tensor | None = None  # (T, N, N): connections not pruned
        self.n_mask: torch.Tensor | None = None  # (T,): connections of each trial's mask
        self.rngs: list[np.random.Generator] = []
        self._residual: torch.Tensor | None = None  # per trial: max |ds/dt| at the end of this epoch's free phases
        self.n_in = 0
        self.free: torch.Tensor | None = None  # the last free phase's non-input states (the report's equilibria)
        self.rule: dict | None = None  # the settings of the DeepRule reading this solver, recorded with ours
        self.last_steps = 0

    def describe(self) -> dict:
        d = {"solver": type(self).__name__, **self.config.to_dict()}
        return d if self.rule is None else {**d, "rule": dict(self.rule)}

    def close(self) -> None:
        pass

    def prepare(self, network: Network) -> None:
        """Every connection of the mask starts alive; one pruning stream per trial."""
        T = network.T
        seeds = self.trial_seeds if self.trial_seeds is not None else list(range(T))
        if len(seeds) != T:
            raise ValueError(f"DeepSolver: {len(seeds)} trial seeds for a network of {T} trials")
        self.alive = network.as_stack().mask_tensor().clone()
        self.n_mask = self.alive.sum((-2, -1))
        self.n_in = network.topologies[0].n_in
        self.rngs = [np.random.default_rng(np.random.SeedSequence([self.config.prune_seed, s])) for s in seeds]

    # -- relaxation -----------------------------------------------------------------------
    def relax(self, network: Network, x, u0=None, beta=0.0, target=None) -> torch.Tensor:
        cfg = self.config
        x, u0, betas, target, nudged = check_relax(network, x, u0, beta, target, self.check_values)
        stack = network.as_stack()
        T, topo = stack.T, stack.topologies[0]
        if self.alive is None or self.alive.shape != stack.W.shape:
            self.prepare(network)  # a standalone relax: the Trainer calls prepare itself
        n_in, n_out, N = topo.n_in, topo.n_out, topo.n
        W, b = stack.W, stack.b
        xt = (x if x.ndim == 3 else x.expand(T, -1, -1)).clamp(0, 1)
        B = xt.shape[1]
        steps = cfg.nudged_steps if nudged else cfg.free_steps
        with torch.no_grad():
            c = torch.baddbmm(b[:, n_in:].unsqueeze(1), xt, W[:, :n_in, n_in:]).mul_(cfg.dt)
            r = W[:, n_in:, :].sum(-1)  # total outgoing weight of every non-input neuron
            M = cfg.dt * W[:, n_in:, n_in:] + torch.diag_embed(1 - cfg.dt * r)
            if u0 is not None and (nudged or cfg.init == "particle"):
                s = u0[..., n_in:].clamp(0, 1)
            else:
                s = torch.zeros(T, B, N - n_in, dtype=W.dtype, device=W.device)
            if nudged:
                coef = (cfg.dt * betas).to(W.dtype).to(W.device).view(T, 1, 1)
                y_d = target if target.ndim == 3 else target.expand(T, -1, -1)
                traj = torch.empty(steps + 1, T, B, N, dtype=W.dtype, device=W.device)
                traj[:, :, :, :n_in] = xt
                traj[0, :, :, n_in:] = s
            out = slice(N - n_in - n_out, N - n_in)
            new = s
            for t in range(steps):
                new = torch.baddbmm(c, s, M)
                if nudged:
                    nudge_(new[..., out], s[..., out], y_d, coef, cfg.nudge_form)
                clip_(new)
                if nudged:
                    traj[t + 1, :, :, n_in:] = new
                done = cfg.tol > 0 and float((new - s).abs().max()) < cfg.tol * cfg.dt
                if (t == steps - 1 or done) and not nudged:
                    res = (new - s).abs().amax((-2, -1)) / cfg.dt
                    self._residual = res if self._residual is None else torch.maximum(self._residual, res)
                s = new
                if done:
                    steps = t + 1
                    if nudged:
                        traj = traj[:steps + 1]
                    break
            if not nudged:
                self.free = s
        self.last_steps = steps
        self.weights = network.W
        if nudged:
            self.trajectory = traj if network.stacked else traj[:, 0]
        u = torch.cat([xt, s], -1)
        return u if network.stacked else u[0]

    def take_trajectory(self) -> torch.Tensor:
        """The last nudged phase's s(0..T2), (T2 + 1, T, B, N) (or (T2 + 1, B, N)), handed over once."""
        if self.trajectory is None:
            raise RuntimeError("no nudged trajectory: DEEP's rule needs a nudged relaxation of this solver first "
                               "(each trajectory is used by one update)")
        traj, self.trajectory = self.trajectory, None
        return traj

    # -- updates, pruning, reports ----------------------------------------------------------
    def apply_update(self, network: Network, dW, db, lr_W, lr_b) -> None:
        exact_update(network, dW, db, lr_W, lr_b)
        if not self.config.prune:
            return
        if self.alive is None:
            self.prepare(network)
        W = network.as_stack().W
        W.mul_(self.alive)  # pruned connections stay removed
        for t in range(W.shape[0]):
            prune_(W[t], self.alive[t], self.config.tol_W, self.config.temp, self.rngs[t])

    def report(self) -> dict:
        """Per trial: connections left and sparsity (the pruned fraction of the mask), the Gershgorin
        test and eigenvalues of the free dynamics' Jacobian at the current weights (global, and at the
        last free phase's equilibria: ``equilibrium_stability``), and free_residual: max |ds/dt| at
        the last step of this epoch's free phases (did they settle?)."""
        if self.weights is None:
            return {}
        W = self.weights if self.weights.ndim == 3 else self.weights.unsqueeze(0)
        T = W.shape[0]
        J = deep_jacobian(W, self.n_in)
        rep = stability_summary(J, self.config.eig_max_neurons)
        if self.free is not None:
            rep.update(equilibrium_stability(J, self.free, self.config.eig_max_neurons))
        n_alive = self.alive.sum((-2, -1)).tolist()
        rep["connections"] = [int(v) for v in n_alive]
        rep["sparsity"] = [1.0 - a / m if m else 0.0 for a, m in zip(n_alive, self.n_mask.tolist())]
        res, self._residual = self._residual, None
        rep["free_residual"] = [None] * T if res is None else [float(v) for v in res]
        return rep

    def state_dict(self) -> dict:
        return {"alive": None if self.alive is None else self.alive.cpu().clone(),
                "rngs": [r.bit_generator.state for r in self.rngs]}

    def load_state_dict(self, state: dict, network: Network) -> None:
        if state.get("alive") is not None:
            self.alive = state["alive"].to(network.device)
        for r, st in zip(self.rngs, state.get("rngs", [])):
            r.bit_generator.state = st
