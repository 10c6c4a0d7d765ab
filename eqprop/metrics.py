"""Training metrics of Gammell et al.: per-block RMS correction, log-spread, mean |dW| per block.

r_l = ||dW (.) C_l||_F / sqrt(#connections in C_l) for the block between layers l and l+1
(one triangle of the symmetric dW: each connection counted once; dW includes 1/beta).
m_l = mean of r_l over all batches of all epochs; log-spread = population std of log10(m_l).
"""
from __future__ import annotations

import numpy as np
import torch

from .topology import Topology


class BlockStats:
    """Accumulates per-batch r_l for adjacent blocks and mean |dW| for every layer pair."""

    def __init__(self, topology: Topology, full_matrix: bool = False):
        self.topology = topology
        self.abs_full = np.zeros((topology.n, topology.n)) if full_matrix else None  # Fig 5: per connection
        L = len(topology.sizes)
        self.slices = [topology.layer_slice(l) for l in range(L)]
        m = topology.mask
        self.counts = np.zeros((L, L))
        for l in range(L):
            for k in range(l, L):
                c = m[self.slices[l], self.slices[k]].sum()
                if l != k and topology.directed:
                    c += m[self.slices[k], self.slices[l]].sum()
                self.counts[l, k] = c // 2 if (l == k and not topology.directed) else c
        self.adjacent = [(l, l + 1) for l in range(L - 1)]
        self.rms_sum = np.zeros(L - 1)
        self.rms_n = 0
        self.abs_sum = np.zeros((L, L))
        self.abs_n = 0
        self.epoch_rms: list[np.ndarray] = []

    def batch_rms(self, dW: torch.Tensor) -> np.ndarray:
        out = np.empty(len(self.adjacent))
        for k, (l, m) in enumerate(self.adjacent):
            sl, sm = self.slices[l], self.slices[m]
            sq = torch.linalg.matrix_norm(dW[sl, sm]) ** 2
            if self.topology.directed:  # directed weights differ by direction: both count
                sq = sq + torch.linalg.matrix_norm(dW[sm, sl]) ** 2
            c = self.counts[l, m]
            out[k] = float(sq.sqrt()) / np.sqrt(c) if c else np.nan
        return out

    def add(self, dW: torch.Tensor) -> np.ndarray:
        r = self.batch_rms(dW)
        self.rms_sum += r
        self.rms_n += 1
        self.epoch_rms.append(r)
        L = len(self.slices)
        a = dW.abs()
        if self.abs_full is not None:
            self.abs_full += a.double().cpu().numpy()
        for l in range(L):
            for m in range(l, L):
                if self.counts[l, m]:
                    s = float(a[self.slices[l], self.slices[m]].sum())
                    if l == m and not self.topology.directed:
                        s /= 2  # each intralayer pair appears twice
                    elif l != m and self.topology.directed:
                        s += float(a[self.slices[m], self.slices[l]].sum())
                    self.abs_sum[l, m] += s
        self.abs_n += 1
        return r

    def end_epoch(self) -> list[float]:
        """Mean r_l over this epoch's batches (and reset the epoch buffer)."""
        r = np.mean(self.epoch_rms, axis=0) if self.epoch_rms else np.full(len(self.adjacent), np.nan)
        self.epoch_rms = []
        return [float(v) for v in r]

    def mean_rms(self) -> np.ndarray:
        return self.rms_sum / max(self.rms_n, 1)

    def log_spread(self) -> float:
        return log_spread(self.mean_rms())

    def mean_abs_dw(self) -> np.ndarray:
        """(L, L) mean |dW| per existing connection of each layer pair (upper triangle), NaN if empty."""
        with np.errstate(invalid="ignore", divide="ignore"):
            m = self.abs_sum / max(self.abs_n, 1) / self.counts
        m[self.counts == 0] = np.nan
        return m

    def mean_abs_dw_matrix(self) -> np.ndarray | None:
        """(N, N) mean |dW| per connection over all batches (zero where no connection), if kept."""
        return None if self.abs_full is None else self.abs_full / max(self.abs_n, 1)

    def state_dict(self) -> dict:
        return {"rms_sum": self.rms_sum.copy(), "rms_n": self.rms_n, "abs_sum": self.abs_sum.copy(),
                "abs_n": self.abs_n, "abs_full": None if self.abs_full is None else self.abs_full.copy()}

    def load_state_dict(self, d: dict) -> None:
        if d.get("abs_full") is not None:
            self.abs_full = np.array(d["abs_full"])
        self.rms_sum, self.rms_n = np.array(d["rms_sum"]), int(d["rms_n"])
        self.abs_sum, self.abs_n = np.array(d["abs_sum"]), int(d["abs_n"])


def log_spread(m: np.ndarray) -> float:
    """Population std of log10(m_l). A block whose correction is exactly 0 over the whole run
    (its neurons saturated in both phases: the gradient vanished completely) makes it +inf."""
    m = np.asarray(m, dtype=float)
    if np.any(m < 0) or np.any(~np.isfinite(m)) or m.size == 0:
        return float("nan")
    if np.any(m == 0):
        return float("inf")
    return float(np.std(np.log10(m)))


def classification_errors(output: torch.Tensor, labels: torch.Tensor) -> int:
    return int((output.argmax(1) != labels).sum())


def regression_loss_sum(output: torch.Tensor, target: torch.Tensor) -> float:
    """Sum over examples of 1/2 ||y - y_hat||^2 (the paper's regression error, before averaging)."""
    return float(0.5 * ((output - target) ** 2).sum())
