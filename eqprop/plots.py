"""Plots every run writes: error curves, per-block RMS correction, mean |dW| per layer pair."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: runs on CI machines and GPU hosts without a display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .run_files import save_figure  # noqa: E402


def plot_run(metrics: dict, out: Path) -> list[Path]:
    out = Path(out)
    eps = metrics["epochs"]
    if not eps:
        return []
    ep = [e["epoch"] for e in eps]
    paths = []

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(ep, [e["train_error"] for e in eps], "o-", label="train")
    ax.plot(ep, [e["test_error"] for e in eps], "s-", label="test")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # whole epochs
    ax.set_ylabel("regression error (1/2 MSE)" if metrics.get("task") == "regression" else "error rate")
    ax.set_title(_title(metrics))
    ax.legend()
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out / "errors.png"))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    rms = np.array([e["rms"] for e in eps])
    for l in range(rms.shape[1]):
        ax.semilogy(ep, rms[:, l], "o-", label=f"layers {l}-{l + 1}")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # whole epochs
    ax.set_ylabel("RMS correction r_l")
    ax.set_title(f"log-spread {metrics['log_spread']:.3f}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    paths.append(_save(fig, out / "rms.png"))

    m = np.array([[np.nan if v is None else v for v in row] for row in metrics["mean_abs_dw_blocks"]], float)
    if np.isfinite(m).any():
        fig, ax = plt.subplots(figsize=(4.2, 3.5))
        with np.errstate(divide="ignore", invalid="ignore"):
            im = ax.imshow(np.log10(m), cmap="viridis")
        fig.colorbar(im, ax=ax, label="log10 mean |dW|")
        ax.set_xticks(range(m.shape[0]))
        ax.set_yticks(range(m.shape[0]))
        ax.set_xlabel("layer")
        ax.set_ylabel("layer")
        ax.set_title("mean |dW| per layer pair")
        paths.append(_save(fig, out / "dw_blocks.png"))
    return paths


def _title(metrics: dict) -> str:
    cfg = metrics.get("config", {})
    topo = cfg.get("topology", "?")
    p = f" p={metrics.get('actual_p', 0):.3f}" if topo == "sw" else ""
    return f"{cfg.get('dataset', '')} {'-'.join(map(str, metrics.get('sizes', [])))} {topo}{p}"


def _save(fig, path: Path) -> Path:
    for ax in fig.axes:
        if ax.get_xlabel() == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return save_figure(fig, path)
