"""Training metrics of Gammell et al.: per-block RMS correction, log-spread, mean |dW| per block.

r_l = ||dW (.) C_l||_F / sqrt(#connections in C_l) for the block between layers l and l+1
(one triangle of the symmetric dW: each connection counted once; dW includes 1/beta).
m_l = mean of r_l over all batches of all epochs; log-spread = population std of log10(m_l).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .learning import ConnectionBlocks
from .topology import Topology


class BlockStats:
    """Accumulates per-batch r_l for adjacent blocks and mean |dW| for every layer pair.

    One network (``BlockStats(topology)``, dW (N, N)) or T trials of equal layer sizes
    (``BlockStats([topologies])``, dW (T, N, N)). Every batch's sums read only the topologies'
    connected tiles (``eqprop.learning.ConnectionBlocks``), never the empty part of N x N. Sums
    stay on ``device`` until asked for, so a training loop on a GPU pays no host sync per batch.
    """

    def __init__(self, topology: Topology | Sequence[Topology], full_matrix: bool = False,
                 device: str | torch.device = "cpu"):
        self.trials = not isinstance(topology, Topology)
        topos = list(topology) if self.trials else [topology]
        self.topology = topos[0]
        self.directed = self.topology.directed
        L = len(self.topology.sizes)
        self.device = torch.device(device)
        self.blocks = ConnectionBlocks(topos, self.device)
        counts = np.zeros((len(topos), L, L))  # connections per layer pair l <= m, each counted once
        for k, t in enumerate(topos):
            for blk in t.blocks():
                counts[k, blk.src, blk.dst] = blk.count
        self.counts = counts if self.trials else counts[0]
        self._adj_count = torch.as_tensor(counts[:, np.arange(L - 1), np.arange(1, L)], device=self.device)
        T = len(topos)
        z = lambda *shape: torch.zeros(T, *shape, dtype=torch.float64, device=self.device)  # noqa: E731
        self.rms_sum, self.epoch_sum, self.abs_sum = z(L - 1), z(L - 1), z(L, L)
        self.abs_full = z(self.topology.n, self.topology.n) if full_matrix else None  # Fig 5: per connection
        self.rms_n = self.epoch_n = self.abs_n = 0

    def _tile_sums(self, d: torch.Tensor, absolute: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per layer pair l <= m, each connection once (a symmetric matrix holds every pair twice:
        one triangle; a directed one's two directions both count): the sums of d^2 and, if
        ``absolute``, of |d| (also added into abs_full), in float64 (fp32 squares of corrections
        below ~1e-20 underflow), (T, L, L). d: (T, N, N)."""
        T, L = d.shape[0], len(self.topology.sizes)
        sq = torch.zeros(T, L, L, dtype=torch.float64, device=d.device)
        ab = torch.zeros_like(sq) if absolute else None
        for t in self.blocks.dense_tiles():
            half = 0.5 if t.a == t.c and not self.directed else 1.0  # a square symmetric tile holds pairs twice
            pieces = ([(t.rows, t.cols)] if t.forward else []) + ([(t.cols, t.rows)] if t.backward else [])
            for rows, cols in pieces:
                x = d[:, rows, cols].double()
                sq[:, t.a, t.c] += half * (x * x).sum((1, 2))
                if absolute:
                    a = x.abs()
                    ab[:, t.a, t.c] += half * a.sum((1, 2))
                    if self.abs_full is not None:
                        self.abs_full[:, rows, cols] += a
                        if not self.directed and t.a != t.c:
                            self.abs_full[:, cols, rows] += a.transpose(1, 2)
        sp = self.blocks.sparse_skips()
        if len(sp):  # skip connections one by one (a skip tile is never intralayer: no halving)
            x = d.reshape(-1).index_select(0, sp.flat).double()
            at = sp.trial * L * L + sp.pair
            sq.view(-1).index_add_(0, at, x * x)
            if absolute:
                a = x.abs()
                ab.view(-1).index_add_(0, at, a)
                if self.abs_full is not None:
                    for where in [sp.flat] + ([] if sp.mirror is None else [sp.mirror]):
                        self.abs_full.view(-1).index_add_(0, where, a)
        return sq, ab

    def _rms(self, sq: torch.Tensor) -> torch.Tensor:
        L = sq.shape[-1]
        adj = torch.diagonal(sq[:, : L - 1, 1:], dim1=-2, dim2=-1)  # the pairs (l, l + 1)
        return adj.sqrt() / self._adj_count.sqrt()  # 0/0 -> NaN

    def batch_rms(self, dW: torch.Tensor) -> torch.Tensor:
        """r_l, (L-1,) or (T, L-1) on the device: ||dW on block l<->l+1||_F / sqrt(count), NaN if empty."""
        d = dW if self.trials else dW.unsqueeze(0)
        r = self._rms(self._tile_sums(d, absolute=False)[0])
        return r if self.trials else r[0]

    def add(self, dW: torch.Tensor) -> torch.Tensor:
        """Add one batch's dW; returns its r_l (a tensor on the device: no sync)."""
        dW = dW.to(self.device)
        d = dW if self.trials else dW.unsqueeze(0)
        sq, ab = self._tile_sums(d, absolute=True)
        r = self._rms(sq)
        self.rms_sum += r
        self.epoch_sum += r
        self.abs_sum += ab
        self.rms_n += 1
        self.epoch_n += 1
        self.abs_n += 1
        return r if self.trials else r[0]

    def _out(self, x: torch.Tensor) -> np.ndarray:
        x = x.cpu().numpy()
        return x if self.trials else x[0]

    def end_epoch(self):
        """Mean r_l over this epoch's batches (and reset the epoch buffer): a list of floats for one
        network, a (T, L-1) array for trials."""
        r = self._out(self.epoch_sum / self.epoch_n) if self.epoch_n else np.full(
            self._out(self.epoch_sum).shape, np.nan)
        self.epoch_sum.zero_()
        self.epoch_n = 0
        return r if self.trials else [float(v) for v in r]

    def mean_rms(self) -> np.ndarray:
        return self._out(self.rms_sum / max(self.rms_n, 1))

    def log_spread(self):
        m = self.mean_rms()
        return np.array([log_spread(v) for v in m]) if self.trials else log_spread(m)

    def mean_abs_dw(self) -> np.ndarray:
        """(L, L) (or (T, L, L)) mean |dW| per existing connection of each layer pair (upper triangle),
        NaN if the pair has none."""
        with np.errstate(invalid="ignore", divide="ignore"):
            m = self._out(self.abs_sum / max(self.abs_n, 1)) / self.counts
        m[self.counts == 0] = np.nan
        return m

    def mean_abs_dw_matrix(self) -> np.ndarray | None:
        """(N, N) (or (T, N, N)) mean |dW| per connection over all batches (zero where none), if kept."""
        return None if self.abs_full is None else self._out(self.abs_full / max(self.abs_n, 1))

    def state_dict(self) -> dict:
        """Between epochs (the epoch buffer is empty then): sums and counts, on the host."""
        snap = lambda x: x.detach().clone().cpu()  # noqa: E731  (a copy: later add() must not change it)
        return {"rms_sum": snap(self.rms_sum), "rms_n": self.rms_n, "abs_sum": snap(self.abs_sum),
                "abs_n": self.abs_n, "abs_full": None if self.abs_full is None else snap(self.abs_full)}

    def load_state_dict(self, d: dict) -> None:
        def put(dst, src, key):  # checkpoints from before trials were supported hold (L-1,) numpy arrays
            src = src if torch.is_tensor(src) else torch.as_tensor(np.asarray(src))
            if tuple(src.shape) not in (tuple(dst.shape), tuple(dst.shape[1:])) or (
                    tuple(src.shape) != tuple(dst.shape) and dst.shape[0] != 1):
                raise ValueError(f"block stats state: {key} has shape {tuple(src.shape)}, this run needs "
                                 f"{tuple(dst.shape)}")
            dst.copy_(src.reshape(dst.shape))
        put(self.rms_sum, d["rms_sum"], "rms_sum")
        put(self.abs_sum, d["abs_sum"], "abs_sum")
        if self.abs_full is not None:
            if d.get("abs_full") is None:
                raise ValueError("block stats state has no per-connection |dW| sums, this run keeps them "
                                 "(save_dw_matrix): it cannot resume from that state")
            put(self.abs_full, d["abs_full"], "abs_full")
        self.rms_n, self.abs_n = int(d["rms_n"]), int(d["abs_n"])


def log_spread(m: np.ndarray) -> float:
    """Population std of log10(m_l). A block whose correction is exactly 0 over the whole run
    (its neurons saturated in both phases: the gradient vanished completely) makes it +inf."""
    m = np.asarray(m, dtype=float)
    if np.any(m < 0) or np.any(~np.isfinite(m)) or m.size == 0:
        return float("nan")
    if np.any(m == 0):
        return float("inf")
    return float(np.std(np.log10(m)))


def classification_errors(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Misclassified examples, a 0-d float64 tensor on output's device (exact: integers)."""
    return (output.argmax(1) != labels).sum().double()


def regression_loss_sum(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over examples of 1/2 ||y - y_hat||^2 (the paper's regression error, before averaging),
    a 0-d float64 tensor on output's device."""
    return (0.5 * ((output - target) ** 2).sum(-1)).double().sum()  # as TrialTrainer: rows in float32
