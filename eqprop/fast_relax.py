"""Fast Euler relaxation: one network or a stack of T independent ones, CPU or CUDA.

Same dynamics, nudge forms, step counts and ``tol`` rule as ``eqprop.solver.EulerSolver``
(the reference); only the arithmetic is arranged for speed:

* Packed state: the non-input neurons of all T trials live in one (T, B, Nf) tensor.
* The leak is folded into the coupling matrix and the clamped inputs plus biases into a
  per-call constant:  s <- clip(c + s Wp, 0, 1),  Wp = eps W_ff + (1 - eps) I,
  c = eps (b + rho(x) W_in).  A free step is one batched GEMM and one clamp.
* On CUDA the fixed-step loop is captured once in a CUDA graph and replayed. At batch 20
  the GPU is launch-bound (../shared/reference/gpu-notes.md), so launches are what counts.
  The graph reads the caller's W and b in place (Wp and c are rebuilt at the start of
  every replay), so in-place weight updates (``eqprop.learning.apply_update``) keep it
  valid; a new W tensor, batch size or step count captures a new graph.
* ``coupling="blocks"`` (per adjacent-block products, like ``eqprop.couplings``) is kept
  for layered nets on CPU, where flops rather than launches dominate.

The reordered arithmetic differs from the reference by rounding only (<= 1e-5 in fp32 on
the tests' nets). TF32 is off unless asked for. No autograd: use EulerSolver for that.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
from typing import Sequence

import torch

from .network import Network
from .solver import COUPLINGS, EulerSolver
from .topology import Topology

BLOCKS_MIN_LAYER = 256  # CPU: per-block products pay from layers this wide (measured, choose_coupling)
MAX_CACHED = 8  # kernels (graphs + static buffers) kept per solver


def adjacent_only(topologies: Sequence[Topology]) -> bool:
    """True when no topology couples two free neurons outside adjacent layers."""
    for topo in topologies:
        lay = topo.layer_of[topo.n_in:]
        m = topo.mask[topo.n_in:, topo.n_in:]
        if (m & (abs(lay[:, None] - lay[None, :]) != 1)).any():
            return False
    return True


def choose_coupling(mode: str, topologies: Sequence[Topology], device: torch.device) -> str:
    """dense (one GEMM per step) unless blocks pays: CPU, layered, large layers.

    On CUDA at batch 20 launches dominate, so the one-GEMM form always wins. On CPU flops
    dominate once layers are large: per-block products skip the empty part of the packed
    matrix (2x faster measured for 784-500x3-10), but their per-op overhead loses on
    100-wide and smaller layers (784-100x5-10, 10-10x5-1: dense faster; docs/engine.md).
    """
    if mode not in COUPLINGS:
        raise ValueError(f"coupling must be one of {COUPLINGS}, got {mode!r}")
    layered = adjacent_only(topologies)
    if mode == "blocks" and not layered:
        raise ValueError("coupling='blocks' needs free-free connections between adjacent layers only; "
                         "these topologies have skip or intralayer connections (use 'dense')")
    if mode != "auto":
        return mode
    big = max(topologies[0].sizes[1:]) >= BLOCKS_MIN_LAYER
    return "blocks" if device.type == "cpu" and layered and big else "dense"


@contextlib.contextmanager
def matmul_precision(tf32: bool):
    """TF32 for CUDA fp32 matmuls inside the block (or strict fp32), the old setting restored."""
    m = torch.backends.cuda.matmul
    try:  # torch >= 2.9 API; reading it after the legacy flag was set may raise
        name, old, new = "fp32_precision", m.fp32_precision, ("tf32" if tf32 else "ieee")
    except (AttributeError, RuntimeError):
        name, old, new = "allow_tf32", m.allow_tf32, tf32
    setattr(m, name, new)
    try:
        yield
    finally:
        setattr(m, name, old)


class _Kernel:
    """Static buffers and step code for one (weights, shapes, phase, coupling).

    The same code runs eagerly (CPU, or CUDA without graphs) and under capture. Every
    piece starts and ends with the state in ``s[0]`` so pieces can be replayed in any order.
    """

    def __init__(self, W, b, sizes, x_trials, B, nudged, form, eps, mode, blocks):
        T, N, _ = W.shape
        n_in, n_out, nf, kw = sizes[0], sizes[-1], N - sizes[0], dict(dtype=W.dtype, device=W.device)
        self.W, self.b, self.n_in, self.n_out, self.eps = W, b, n_in, n_out, eps
        self.nudged, self.form, self.mode, self.blocks = nudged, form, mode, blocks
        self.x = torch.zeros(x_trials, B, n_in, **kw)
        self.s = [torch.zeros(T, B, nf, **kw), torch.zeros(T, B, nf, **kw)]
        self.c = torch.zeros(T, B, nf, **kw)
        self.Wp = torch.zeros(T, nf, nf, **kw) if mode == "dense" else None
        self.coef = torch.zeros(T, 1, 1, **kw)  # 2 eps beta per trial
        self.yd = torch.zeros(T, B, n_out, **kw)
        self.ds = torch.zeros(T, **kw)  # max |ds| of the last step of a checked chunk
        self.graphs: dict = {}

    # -- the computation ------------------------------------------------------
    def prologue(self):
        n_in, eps, W = self.n_in, self.eps, self.W
        const = torch.baddbmm(self.b[:, n_in:].unsqueeze(1), self.x.clamp(0, 1).expand(W.shape[0], -1, -1),
                              W[:, :n_in, n_in:])
        torch.mul(const, eps, out=self.c)
        if self.Wp is not None:
            torch.mul(W[:, n_in:, n_in:], eps, out=self.Wp)
            self.Wp.diagonal(dim1=1, dim2=2).add_(1.0 - eps)

    def _step(self, s, nxt):
        if self.Wp is not None:
            torch.baddbmm(self.c, s, self.Wp, out=nxt)
        else:
            torch.add(self.c, s, alpha=1.0 - self.eps, out=nxt)
            W = self.W
            for src, dst in self.blocks:  # free-packed slices of two adjacent layers
                n = self.n_in
                nxt[..., dst].baddbmm_(s[..., src], W[:, src.start + n:src.stop + n, dst.start + n:dst.stop + n],
                                       alpha=self.eps)
        if self.nudged:
            y, ny = s[..., -self.n_out:], nxt[..., -self.n_out:]
            if self.form == "gradient":  # force on the old output state, inside the step
                ny.addcmul_(self.coef, self.yd - y)
            else:  # sequential: free-style update clamped, then pulled towards the target
                ny.clamp_(0, 1)
                ny.addcmul_(self.coef, self.yd - ny)
        nxt.clamp_(0, 1)

    def run(self, k: int, check: bool):
        """k steps from s[0] back into s[0]; with ``check``, per-trial max |ds| of the last step."""
        s, nxt = self.s
        for _ in range(k):
            self._step(s, nxt)
            s, nxt = nxt, s
        if check and k:
            torch.amax((s - nxt).abs(), dim=(1, 2), out=self.ds)
        if s is not self.s[0]:
            self.s[0].copy_(s)

    # -- CUDA graphs ------------------------------------------------------------
    def capture(self, pieces):
        """Capture the prologue and each (k, check) piece not captured yet."""
        todo = [p for p in [("prologue",)] + list(pieces) if p not in self.graphs]
        if not todo:
            return
        side = torch.cuda.Stream(device=self.W.device)
        side.wait_stream(torch.cuda.current_stream(self.W.device))
        with torch.cuda.stream(side):  # warm-up: cuBLAS handles and workspaces exist before capture
            self.prologue()
            self.run(1, True)
        torch.cuda.current_stream(self.W.device).wait_stream(side)
        for p in todo:
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                self.prologue() if p[0] == "prologue" else self.run(*p)
            self.graphs[p] = g

    def call(self, piece, graphed: bool):
        if graphed:
            self.graphs[piece].replay()
        elif piece[0] == "prologue":
            self.prologue()
        else:
            self.run(*piece)


@dataclasses.dataclass
class FastEulerSolver(EulerSolver):
    """EulerSolver's relaxation, packed, batched over trials, CUDA-graphed on GPU.

    ``relax`` follows the ``eqprop.solver.Solver`` interface (one network, states (B, N));
    ``relax_stack`` relaxes T networks of equal sizes at once (states (T, B, N)). With
    ``tol``, each trial stops on its own, exactly as T separate EulerSolver runs would;
    ``last_steps`` (max over trials) and ``last_steps_per_trial`` report the steps used.
    cuda_graph: None = on for CUDA tensors. tf32: CUDA fp32 matmuls in TF32 (not faithful).
    """

    cuda_graph: bool | None = None  # (eps, steps, nudge_form, tol, coupling: EulerSolver's settings)
    tf32: bool = False
    check_values: bool = True  # relax(): test x for NaN/inf (a host sync per call on CUDA); False for validated data
    last_steps_per_trial: torch.Tensor | None = dataclasses.field(default=None, init=False)
    captures: int = dataclasses.field(default=0, init=False)  # graphs captured so far (diagnostics)

    def __post_init__(self):
        super().__post_init__()
        self._kernels: collections.OrderedDict = collections.OrderedDict()
        self._modes: dict = {}

    # -- public entry points ------------------------------------------------------
    def relax(self, network: Network, x, state0=None, beta: float = 0.0, target=None, steps=None):
        """One network, the Solver interface: x (B, n_in) -> state (B, N)."""
        x, n = torch.as_tensor(x, device=network.device), network.topology.n
        if x.ndim != 2:
            raise ValueError(f"x must have shape (batch, {network.topology.n_in}), got {tuple(x.shape)}")
        if state0 is not None:
            state0 = torch.as_tensor(state0, device=network.device)
            if tuple(state0.shape) != (x.shape[0], n):
                raise ValueError(f"state0 must have shape ({x.shape[0]}, {n}), got {tuple(state0.shape)}")
            state0 = state0[None]
        out = self.relax_tensors(network.W.unsqueeze(0), network.b.unsqueeze(0), [network.topology],
                                 x, state0, float(beta), target, steps, check_values=self.check_values)
        return out[0]

    def relax_stack(self, stack, x, state0=None, beta=0.0, target=None, steps=None):
        """T networks at once (an ``eqprop.trials.TrialStack``): states (T, B, N)."""
        return self.relax_tensors(stack.W, stack.b, stack.topologies, x, state0, beta, target, steps)

    def relax_tensors(self, W, b, topologies, x, state0=None, beta=0.0, target=None, steps=None,
                      check_values: bool = True):
        """The engine on raw tensors: W (T, N, N), b (T, N), one topology per trial.

        x: (B, n_in) shared by all trials or (T, B, n_in); state0: (T, B, N) or None (zeros);
        beta: a float or (T,) values, all zero (free phase) or all non-zero (nudged);
        target: (B, n_out) or (T, B, n_out), needed when nudged. check_values=False skips
        the finiteness test of x, a host sync on CUDA (for callers whose data are validated).
        """
        topo = topologies[0]
        T = W.shape[0]
        x, state0, betas, target, nudged = check_stack_inputs(W, b, topologies, x, state0, beta, target,
                                                              check_values)
        if steps is None:
            steps = self.nudged_steps if nudged else self.free_steps
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        B, n_in = x.shape[-2], topo.n_in
        mode = self._mode(topologies, W)
        graphed = (W.device.type == "cuda") if self.cuda_graph is None else self.cuda_graph
        if graphed and W.device.type != "cuda":
            raise ValueError("cuda_graph=True needs CUDA tensors")
        # the graph pieces this call replays: (steps, check max |ds| after the last one)
        if self.tol is None:
            pieces = [(steps, False)] if steps else []
        else:
            pieces = [(self.check_every, True)] if steps >= self.check_every else []
            pieces += [(steps % self.check_every, False)] if steps % self.check_every else []
        on_cuda = W.device.type == "cuda"
        precision = matmul_precision(self.tf32) if on_cuda else contextlib.nullcontext()
        device = torch.cuda.device(W.device) if on_cuda else contextlib.nullcontext()  # capture on W's GPU
        with torch.no_grad(), precision, device:
            k = self._kernel(W, b, topo.sizes, x.shape[0] if x.ndim == 3 else 1, B, nudged, mode)
            if graphed:
                n_before = len(k.graphs)
                k.capture(pieces)
                self.captures += len(k.graphs) - n_before
            # inputs into the static buffers; the graph reads them from there
            k.x.copy_(x if x.ndim == 3 else x.unsqueeze(0))
            if state0 is None:
                k.s[0].zero_()
            else:
                k.s[0].copy_(state0[..., n_in:].clamp(0, 1))
            if nudged:
                k.coef.copy_((2 * self.eps * betas).view(T, 1, 1))
                k.yd.copy_(target)
            k.call(("prologue",), graphed)
            free = self._loop(k, steps, graphed, pieces)
            out = torch.empty(T, B, topo.n, dtype=W.dtype, device=W.device)
            out[..., :n_in] = x
            out[..., n_in:] = free
        return out

    @property
    def cached_kernels(self) -> int:  # stays put while weights change in place
        return len(self._kernels)

    # -- internals ----------------------------------------------------------------------
    def _loop(self, k: _Kernel, steps: int, graphed: bool, pieces) -> torch.Tensor:
        T = k.s[0].shape[0]
        if self.tol is None:
            for p in pieces:
                k.call(p, graphed)
            self._report(torch.full((T,), steps, dtype=torch.long))
            return k.s[0]
        # Per-trial stopping: every trial keeps stepping (one launch for all), but a trial's
        # state is taken at the first check where its max |ds| < tol, as a separate run would.
        used = torch.full((T,), steps, dtype=torch.long)
        done = torch.zeros(T, dtype=torch.bool)
        result, dev, t = torch.empty_like(k.s[0]), k.s[0].device, 0
        while t + self.check_every <= steps and not bool(done.all()):
            k.call((self.check_every, True), graphed)
            t += self.check_every
            newly = (k.ds < self.tol).cpu() & ~done
            if newly.any():
                result = torch.where(newly.to(dev).view(T, 1, 1), k.s[0], result)
                used[newly] = t
                done |= newly
        if not bool(done.all()):
            if t < steps:  # only the remainder can be left: the loop ran every full chunk
                k.call((steps - t, False), graphed)
            result = torch.where(done.to(dev).view(T, 1, 1), result, k.s[0])
        self._report(used)
        return result

    def _report(self, used: torch.Tensor) -> None:
        self.last_steps_per_trial = used
        self.last_steps = int(used.max()) if used.numel() else 0

    def _mode(self, topologies, W) -> str:
        # adjacency scans cost O(T N^2) on the host, so remember them per topology set
        key = (tuple(id(t) for t in topologies), W.device.type)
        if key not in self._modes:
            if len(self._modes) > 4 * MAX_CACHED:
                self._modes.clear()
            self._modes[key] = (choose_coupling(self.coupling, topologies, W.device), list(topologies))
        return self._modes[key][0]

    def _kernel(self, W, b, sizes, x_trials, B, nudged, mode) -> _Kernel:
        # The kernel keeps W and b alive, so an equal data_ptr means the same storage.
        key = (W.data_ptr(), W.shape, W.stride(), W.dtype, str(W.device), b.data_ptr(), b.stride(),
               tuple(sizes), x_trials, B, nudged, self.nudge_form, self.eps, mode, self.tf32)
        k = self._kernels.get(key)
        if k is None:
            blocks = _adjacent_block_slices(sizes) if mode == "blocks" else []
            k = _Kernel(W, b, sizes, x_trials, B, nudged, self.nudge_form, self.eps, mode, blocks)
            self._kernels[key] = k
            while len(self._kernels) > MAX_CACHED:
                self._kernels.popitem(last=False)
        self._kernels.move_to_end(key)
        return k


def _adjacent_block_slices(sizes) -> list[tuple[slice, slice]]:
    """(src, dst) slices in free-packed coordinates for every adjacent free-layer pair, both ways."""
    off = [0, *itertools.accumulate(sizes[1:])]
    pairs = [(slice(off[l], off[l + 1]), slice(off[l + 1], off[l + 2])) for l in range(len(sizes) - 2)]
    return [p for a, c in pairs for p in ((a, c), (c, a))]


def check_stack_inputs(W, b, topologies, x, state0, beta, target, check_values=True):
    """Validate one stacked relax call before any work: (x, state0, betas, target, nudged).

    beta is checked on the host; nothing here waits for the GPU unless check_values.
    """
    if W.ndim != 3 or W.shape[1] != W.shape[2]:
        raise ValueError(f"W must have shape (trials, N, N), got {tuple(W.shape)}")
    T, N = W.shape[0], W.shape[1]
    topo = topologies[0]
    if len(topologies) != T or any(t.sizes != topo.sizes for t in topologies):
        raise ValueError(f"need {T} topologies of equal sizes, got {[t.sizes for t in topologies]}")
    if topo.n != N or tuple(b.shape) != (T, N):
        raise ValueError(f"W {tuple(W.shape)} / b {tuple(b.shape)} do not fit sizes {topo.sizes} and {T} trials")
    dev, dt = W.device, W.dtype
    x = torch.as_tensor(x, device=dev).to(dt)
    if x.ndim not in (2, 3) or x.shape[-1] != topo.n_in or (x.ndim == 3 and x.shape[0] != T):
        raise ValueError(f"x must have shape (batch, {topo.n_in}) or ({T}, batch, {topo.n_in}), got {tuple(x.shape)}")
    if check_values and not torch.isfinite(x).all():
        raise ValueError("x has non-finite entries")
    B = x.shape[-2]
    if state0 is not None:
        state0 = torch.as_tensor(state0, device=dev).to(dt)
        if tuple(state0.shape) != (T, B, N):
            raise ValueError(f"state0 must have shape ({T}, {B}, {N}), got {tuple(state0.shape)}")
    betas = torch.as_tensor(beta, dtype=torch.float64).flatten().cpu()
    if betas.numel() == 1:
        betas = betas.expand(T)
    if betas.numel() != T:
        raise ValueError(f"beta must be one value or {T} values (one per trial), got {betas.numel()}")
    if not torch.isfinite(betas).all():
        raise ValueError("beta has non-finite entries")
    nz = betas != 0
    if nz.any() and not nz.all():
        raise ValueError("beta must be zero for all trials (free phase) or non-zero for all (nudged phase)")
    betas = to_device_async(betas.to(dt), dev)
    if nz.any():
        if target is None:
            raise ValueError("a nudged relaxation (beta != 0) needs a target")
        target = torch.as_tensor(target, device=dev).to(dt)
        if tuple(target.shape) not in ((B, topo.n_out), (T, B, topo.n_out)):
            raise ValueError(f"target must have shape ({B}, {topo.n_out}) or ({T}, {B}, {topo.n_out}), "
                             f"got {tuple(target.shape)}")
    return x, state0, betas, target, bool(nz.any())


def to_device_async(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor onto the device without a host sync (pinned, non-blocking on CUDA)."""
    if device.type != "cuda":
        return t.to(device)
    return t.contiguous().pin_memory().to(device, non_blocking=True)
