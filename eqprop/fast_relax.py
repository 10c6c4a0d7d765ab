"""Fast Euler relaxation: one network or a stack of T independent ones, CPU or CUDA.

Same settings (``EulerConfig``), validation (``check_relax``), coupling choice
(``choose_coupling``) and step equation (``eqprop.dynamics``: nudge and clip) as
``eqprop.solver.EulerSolver``, the reference, held by composition; only the arithmetic of
the drive is arranged for speed:

* Packed state: the non-input neurons of all T trials live in one (T, B, Nf) tensor.
* The leak is folded into the coupling matrix and the clamped inputs plus biases into a
  per-call constant:  s <- clip(c + s Wp, 0, 1),  Wp = eps W_ff + (1 - eps) I,
  c = eps (b + rho(x) W_in).  A free step is one batched GEMM and one clamp.
* On CUDA the fixed-step loop is captured once in a CUDA graph and replayed. At batch 20
  the GPU is launch-bound (../shared/reference/gpu-notes.md), so launches are what counts.
  The graph reads the caller's W and b in place (Wp and c are rebuilt at the start of
  every replay), so in-place weight updates (``eqprop.learning.apply_update``) keep it
  valid; a new W tensor, batch size or step count captures a new graph.
* ``blocks`` coupling: one batched product per connected layer pair (adjacent, skip,
  intralayer), for large layers on CPU, where flops rather than launches dominate.

The reordered arithmetic differs from the reference by rounding only (<= 1e-5 in fp32 on
the tests' nets). TF32 is off unless asked for. No autograd: use EulerSolver for that.
"""
from __future__ import annotations

import collections
import contextlib

import torch

from .config import EulerConfig
from .couplings import choose_coupling, coupling_state, free_layer_pairs, free_offsets, restore_coupling_state
from .dynamics import clip_, nudge_
from .free_phase import FreePhaseLog, LayerDrive, hybrid_sor, per_example
from .learning import apply_update as exact_update
from .network import Network
from .solver import EulerSolver, check_relax

MAX_CACHED = 8  # kernels (graphs + static buffers) kept per solver


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
        self.coef = torch.zeros(T, 1, 1, **kw)  # eps beta per trial
        self.yd = torch.zeros(T, B, n_out, **kw)
        self.ds = torch.zeros(T, **kw)  # max |ds| of the last step of a checked chunk
        self.graphs: dict = {}

    # -- the computation ------------------------------------------------------
    def input_drive(self) -> torch.Tensor:
        """b + rho(x) W[in, free] per trial: the clamped inputs' constant drive, (T, B, Nf)."""
        n_in, W = self.n_in, self.W
        return torch.baddbmm(self.b[:, n_in:].unsqueeze(1), self.x.clamp(0, 1).expand(W.shape[0], -1, -1),
                             W[:, :n_in, n_in:])

    def prologue(self):
        eps, W = self.eps, self.W
        torch.mul(self.input_drive(), eps, out=self.c)
        if self.Wp is not None:
            torch.mul(W[:, self.n_in:, self.n_in:], eps, out=self.Wp)
            self.Wp.diagonal(dim1=1, dim2=2).add_(1.0 - eps)

    def free_step(self, s, c, nxt):
        """nxt = c + s Wp, the free step before the clip, for any rows s (T, A, Nf) with their c."""
        # the drive with the leak folded in: c + s Wp = s + eps (W rho(s) + b - s) for s in [0, 1]
        if self.Wp is not None:
            torch.baddbmm(c, s, self.Wp, out=nxt)
        else:
            torch.add(c, s, alpha=1.0 - self.eps, out=nxt)
            W, n = self.W, self.n_in
            for src, dst in self.blocks:  # free-packed slices of two connected layers
                nxt[..., dst].baddbmm_(s[..., src], W[:, src.start + n:src.stop + n, dst.start + n:dst.stop + n],
                                       alpha=self.eps)

    def _step(self, s, nxt):
        self.free_step(s, self.c, nxt)
        if self.nudged:
            nudge_(nxt[..., -self.n_out:], s[..., -self.n_out:], self.yd, self.coef, self.form)
        clip_(nxt)

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


class FastEulerSolver:
    """EulerSolver's relaxation, packed, batched over trials, CUDA-graphed on GPU.

    config: the EulerConfig it shares with the reference. With ``tol``, each trial stops
    on its own, exactly as T separate EulerSolver runs would; ``last_steps`` (max over
    trials) and ``last_steps_per_trial`` report the steps used. cuda_graph: None = on for
    CUDA tensors. tf32: CUDA fp32 matmuls in TF32 (not faithful). check_values: test the
    inputs for NaN/inf per call (a host sync on CUDA); False for validated data.
    """

    def __init__(self, config: EulerConfig | None = None, cuda_graph: bool | None = None, tf32: bool = False,
                 check_values: bool = True):
        self.config = config or EulerConfig()
        self.cuda_graph, self.tf32, self.check_values = cuda_graph, tf32, check_values
        self.last_steps = 0
        self.last_steps_per_trial: torch.Tensor | None = None
        self.captures = 0  # graphs captured so far (diagnostics)
        self._kernels: collections.OrderedDict = collections.OrderedDict()
        self._modes: dict = {}
        self._coupling_keys: set = set()  # the measured choices this solver relaxed with (its checkpoint)
        self._free = FreePhaseLog()

    def describe(self) -> dict:
        d = {"solver": type(self).__name__, **self.config.to_dict(), "cuda_graph": self.cuda_graph, "tf32": self.tf32}
        chosen = {f"T{k[-2]} B{k[-1]}": m for k, (m, _) in self._modes.items()}
        return {**d, "coupling_chosen": chosen} if chosen and self.config.coupling == "auto" else d

    def state_dict(self) -> dict:
        """The measured coupling choices: a resumed run relaxes with the same arithmetic (no new measurement)."""
        return coupling_state(self._coupling_keys)

    def load_state_dict(self, state: dict, network) -> None:
        restore_coupling_state(state, self._coupling_keys)

    def close(self) -> None:
        self._kernels.clear()

    def report(self) -> dict:
        """Per-example and hybrid free phases: per trial, the steps, sweeps, cap hits and largest residual
        since the last report (eqprop.free_phase.FreePhaseLog); nothing for the fixed step count."""
        return self._free.report() if self.config.free_method != "fixed" else {}

    def prepare(self, network) -> None:
        pass  # weights act exactly as the network holds them

    def apply_update(self, network, dW, db, lr_W, lr_b) -> None:
        exact_update(network, dW, db, lr_W, lr_b)  # in place: captured CUDA graphs keep reading this W

    def relax(self, network: Network, x, u0=None, beta=0.0, target=None):
        cfg = self.config
        x, u0, betas, target, nudged = check_relax(network, x, u0, beta, target, self.check_values)
        stack = network.as_stack()
        W, b, topologies = stack.W, stack.b, stack.topologies
        topo, T = topologies[0], stack.T
        steps = cfg.nudged_steps if nudged else cfg.free_steps
        B, n_in = x.shape[-2], topo.n_in
        mode = self._mode(stack, B)
        graphed = (W.device.type == "cuda") if self.cuda_graph is None else self.cuda_graph
        if graphed and W.device.type != "cuda":
            raise ValueError("cuda_graph=True needs CUDA tensors")
        # per-example and hybrid end the free phase eagerly (examples drop out as they finish); their nudged
        # phase is the fixed step count, so tol stops a phase of the step loop only with free_method fixed
        eager = not nudged and cfg.free_method != "fixed"
        tol = cfg.tol if cfg.free_method == "fixed" else None
        # the graph pieces this call replays: (steps, check max |ds| after the last one)
        if eager:
            pieces = []
        elif tol is None:
            pieces = [(steps, False)] if steps else []
        else:
            pieces = [(cfg.check_every, True)] if steps >= cfg.check_every else []
            pieces += [(steps % cfg.check_every, False)] if steps % cfg.check_every else []
        on_cuda = W.device.type == "cuda"
        precision = matmul_precision(self.tf32) if on_cuda else contextlib.nullcontext()
        device = torch.cuda.device(W.device) if on_cuda else contextlib.nullcontext()  # capture on W's GPU
        with torch.no_grad(), precision, device:
            k = self._kernel(W, b, topologies, x.shape[0] if x.ndim == 3 else 1, B, nudged, mode)
            if graphed:
                n_before = len(k.graphs)
                k.capture(pieces)
                self.captures += len(k.graphs) - n_before
            # inputs into the static buffers; the graph reads them from there
            k.x.copy_(x if x.ndim == 3 else x.unsqueeze(0))
            if u0 is None:
                k.s[0].zero_()
            else:
                k.s[0].copy_(u0[..., n_in:].clamp(0, 1))
            if nudged:
                k.coef.copy_(to_device_async((cfg.eps * betas).to(W.dtype), W.device).view(T, 1, 1))
                k.yd.copy_(target)
            k.call(("prologue",), graphed)
            free = self._free_phase(k, topo.sizes, topologies) if eager else self._loop(k, steps, graphed, pieces, tol)
            out = torch.empty(T, B, topo.n, dtype=W.dtype, device=W.device)
            out[..., :n_in] = x
            out[..., n_in:] = free
        return out if network.stacked else out[0]

    @property
    def cached_kernels(self) -> int:  # stays put while weights change in place
        return len(self._kernels)

    # -- internals ----------------------------------------------------------------------
    def _free_phase(self, k: _Kernel, sizes, topologies) -> torch.Tensor:
        """The free phase by per-example stopping or the hybrid (eager: examples drop out as they finish)."""
        cfg, T, B = self.config, k.s[0].shape[0], k.s[0].shape[1]
        drive, c0 = LayerDrive(k, sizes, topologies), k.input_drive()
        if cfg.free_method == "per-example":
            s, steps, converged = per_example(k, k.s[0], cfg.free_steps, cfg.tol, cfg.check_every)
            sweeps, faced, fell_back = torch.zeros(T, B, dtype=torch.long), None, None
        else:
            k.run(cfg.prefix_steps, False)
            steps = torch.full((T, B), cfg.prefix_steps, dtype=torch.long)
            prefix = k.s[0]  # read, never written, by hybrid_sor and per_example (each starts from a copy)
            s, sweeps, converged, faced = hybrid_sor(drive, prefix, c0, cfg.omega, cfg.omega_from, cfg.tol,
                                                      cfg.max_sweeps, cfg.check_every, cfg.face_solve)
            fell_back = ~converged
            if bool(fell_back.any()) and cfg.free_steps > cfg.prefix_steps:
                # the sweeps can cycle instead of converging (full-data Fig 4, epoch 2, p ~ 1e-3: thousands of
                # examples at the cap, 0.75 from a fixed point): those examples go on with the reference's own
                # Euler steps from the prefix's end, per example to tol, as method per-example would
                s2, used, conv2 = per_example(k, prefix, cfg.free_steps - cfg.prefix_steps, cfg.tol, cfg.check_every,
                                              live=fell_back.to(prefix.device))
                rows = fell_back.to(s.device)
                s[rows] = s2[rows]
                steps += used
                converged = conv2  # True on the rows it did not relax, which had converged
            else:
                fell_back = None
        self._free.add(steps, sweeps, converged, drive.residual(s, c0).cpu(), faced, fell_back)
        self._report(steps.amax(1))
        return s

    def _loop(self, k: _Kernel, steps: int, graphed: bool, pieces, tol: float | None) -> torch.Tensor:
        T, every = k.s[0].shape[0], self.config.check_every
        if tol is None:
            for p in pieces:
                k.call(p, graphed)
            self._report(torch.full((T,), steps, dtype=torch.long))
            return k.s[0]
        # Per-trial stopping: every trial keeps stepping (one launch for all), but a trial's
        # state is taken at the first check where its max |ds| < tol, as a separate run would.
        used = torch.full((T,), steps, dtype=torch.long)
        done = torch.zeros(T, dtype=torch.bool)
        result, dev, t = torch.empty_like(k.s[0]), k.s[0].device, 0
        while t + every <= steps and not bool(done.all()):
            k.call((every, True), graphed)
            t += every
            newly = (k.ds < tol).cpu() & ~done
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

    def _mode(self, stack, B: int) -> str:
        """dense or blocks: ``coupling`` as given, or for auto measured once per net and batch size."""
        key = (tuple(id(t) for t in stack.topologies), str(stack.W.device), stack.W.dtype, stack.T, B)
        if key not in self._modes:
            if len(self._modes) > 4 * MAX_CACHED:
                self._modes.clear()
            # the topologies are kept with the choice so their ids stay theirs
            self._modes[key] = (choose_coupling(self.config.coupling, stack, B, "fast", self._coupling_keys,
                                                cuda_graph=self.cuda_graph,
                                                tf32=self.tf32), list(stack.topologies))
        return self._modes[key][0]

    def _kernel(self, W, b, topologies, x_trials, B, nudged, mode) -> _Kernel:
        # The kernel keeps W and b alive, so an equal data_ptr means the same storage.
        cfg, sizes = self.config, topologies[0].sizes
        key = (W.data_ptr(), W.shape, W.stride(), W.dtype, str(W.device), b.data_ptr(), b.stride(),
               tuple(sizes), x_trials, B, nudged, cfg.nudge_form, cfg.eps, mode, self.tf32,
               tuple(id(t) for t in topologies))
        k = self._kernels.get(key)
        if k is None:
            blocks = _block_slices(topologies) if mode == "blocks" else []
            k = _Kernel(W, b, sizes, x_trials, B, nudged, cfg.nudge_form, cfg.eps, mode, blocks)
            self._kernels[key] = k
            while len(self._kernels) > MAX_CACHED:
                self._kernels.popitem(last=False)
        self._kernels.move_to_end(key)
        return k


def make_euler_solver(config: EulerConfig, device="cpu", check_values: bool = True):
    """The config's Euler engine: the reference, or the fast engine (same dynamics, equal within
    fp32 rounding; CUDA graphs on a GPU, where the eager reference is launch-bound).
    engine auto: fast on CUDA, the reference on CPU."""
    engine = config.engine
    if engine == "auto":  # per-example and hybrid free phases exist in the fast engine only
        engine = "fast" if torch.device(device).type == "cuda" or config.free_method != "fixed" else "reference"
    if engine == "fast":
        return FastEulerSolver(config, check_values=check_values)
    return EulerSolver(config)


def _block_slices(topologies) -> list[tuple[slice, slice]]:
    """(src, dst) slices in free-packed coordinates for every connected free-layer pair and direction."""
    off = free_offsets(topologies[0].sizes)
    return [(slice(off[a], off[a + 1]), slice(off[c], off[c + 1])) for a, c in free_layer_pairs(topologies)]


def to_device_async(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor onto the device without a host sync (pinned, non-blocking on CUDA)."""
    if device.type != "cuda":
        return t.to(device)
    return t.contiguous().pin_memory().to(device, non_blocking=True)
