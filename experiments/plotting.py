"""Figure styles of the paper's plots (log scales, legends), shared by the experiments."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from eqprop.run_files import save_figure  # noqa: E402


def curves(results: dict, path: Path, key, ylabel: str, logy: bool = False) -> Path:
    """Error curves per run (mean over seeds, min-max band); first key solid, others dashed (Fig 2 style)."""
    keys = (key,) if isinstance(key, str) else tuple(key)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (label, ms) in enumerate(results.items()):
        for j, k in enumerate(keys):
            vals = np.array([[e[k] for e in m["epochs"]] for m in ms])
            ep = np.arange(1, vals.shape[1] + 1)
            ax.plot(ep, vals.mean(0), color=f"C{i}", ls="-" if j == 0 else "--",
                    label=f"{label} {k.split('_')[0]}" if len(keys) > 1 else label)
            if len(ms) > 1:
                ax.fill_between(ep, vals.min(0), vals.max(0), color=f"C{i}", alpha=0.2)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # whole epochs
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def lr_rms_panels(results: dict, path: Path) -> Path:
    """Fig 3: lr_l * r_l per epoch, one panel per run, one line per adjacent block."""
    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.5), sharey=True, squeeze=False)
    for ax, (label, ms) in zip(axes[0], results.items()):
        m = ms[0]
        lr = m["config"]["lr"]
        rms = np.array([e["rms"] for e in m["epochs"]])
        lrs = np.array(lr if isinstance(lr, list) else [lr] * rms.shape[1])
        for l in range(rms.shape[1]):
            ax.semilogy(np.arange(1, len(rms) + 1), lrs[l] * rms[:, l], label=f"layers {l}-{l + 1}")
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # whole epochs
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("lr x RMS correction")
    axes[0][-1].legend(fontsize=7)
    return _save(fig, path)


def dw_matrices(results: dict, path: Path) -> Path:
    """Fig 5: mean |dW| per layer pair, one image per run, common colour scale."""
    mats = {k: np.array([[np.nan if v is None else v for v in row] for row in ms[0]["mean_abs_dw_blocks"]], float)
            for k, ms in results.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = {k: np.log10(m) for k, m in mats.items()}
    finite = np.concatenate([v[np.isfinite(v)] for v in logs.values()])
    vmin, vmax = (finite.min(), finite.max()) if finite.size else (0, 1)
    fig, axes = plt.subplots(1, len(mats), figsize=(3.8 * len(mats), 3.4), squeeze=False)
    for ax, (k, v) in zip(axes[0], logs.items()):
        im = ax.imshow(v, vmin=vmin, vmax=vmax, cmap="viridis")
        ax.set_title(k)
        ax.set_xticks(range(v.shape[0]))
        ax.set_yticks(range(v.shape[0]))
    fig.colorbar(im, ax=axes[0].tolist(), label="log10 mean |dW|")
    return save_figure(fig, path)


def versus_p(summary: dict, path: Path, paper_points: dict) -> Path:
    """Fig 4: test/train error, log-spread and per-block RMS against p (log x axis; p = 0 drawn at 1e-5)."""
    rows = sorted(summary.items(), key=lambda kv: kv[1]["actual_p"])
    p = np.array([max(r["actual_p"], 1e-5) for _, r in rows])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].errorbar(p, [r["test_error"] for _, r in rows], [r["test_error_std"] for _, r in rows], fmt="o-",
                     label="test (ours)")
    axes[0].plot(p, [r["train_error"] for _, r in rows], "s--", label="train (ours)")
    pp = np.array([max(k, 1e-5) for k in paper_points])
    axes[0].plot(pp, list(paper_points.values()), "k*", ms=10, label="test (paper)")
    axes[0].set_ylabel("error")
    axes[1].errorbar(p, [r["log_spread"] for _, r in rows], [r["log_spread_std"] for _, r in rows], fmt="o-")
    axes[1].set_ylabel("log-spread")
    rms = np.array([r["mean_rms"] for _, r in rows])
    for l in range(rms.shape[1]):
        axes[2].loglog(p, rms[:, l], "o-", label=f"layers {l}-{l + 1}")
    axes[2].set_ylabel("mean RMS correction")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("p (p = 0 drawn at 1e-5)")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=7)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    return save_figure(fig, path)


def log_spread_bars(summary: dict, path: Path, paper: dict) -> Path:
    """Table 1 as bars: log-spread of MLFF and SW per dataset/depth (ours with seed spread; paper as marks)."""
    pairs = sorted({k.rsplit("-", 1)[0] for k in summary})
    x = np.arange(len(pairs))
    fig, ax = plt.subplots(figsize=(1.6 * len(pairs) + 2, 3.6))
    for off, topo in ((-0.18, "mlff"), (0.18, "sw")):
        rows = [summary.get(f"{p}-{topo}") for p in pairs]
        # a run without a log-spread (missing, or NaN: a block that never changed) gets no bar; a NaN
        # bar height makes matplotlib warn "invalid value encountered" on every reproduce
        have = [i for i, r in enumerate(rows) if r and np.isfinite(r["log_spread"])]
        ax.bar(x[have] + off, [rows[i]["log_spread"] for i in have], 0.34,
               yerr=[np.nan_to_num(rows[i]["log_spread_std"]) for i in have], label=f"{topo.upper()} (ours)",
               capsize=3)
        ref = [paper.get(f"{p}-{topo}", {}).get("log_spread", np.nan) for p in pairs]
        ax.plot(x + off, ref, "k_", ms=18, mew=2, label="paper" if topo == "sw" else None)
    ax.set_xticks(x)
    ax.set_xticklabels(pairs)
    ax.set_ylabel("log-spread")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def dw_connection_images(out: Path, labels: list[str], path: Path) -> Path:
    """Fig 5: log10 mean |dW| per connection (N x N, neurons in layer order), one image per run."""
    mats = {k: np.load(out / k / "s0" / "dw_mean.npy") for k in labels if (out / k / "s0" / "dw_mean.npy").exists()}
    fig, axes = plt.subplots(1, max(len(mats), 1), figsize=(5 * max(len(mats), 1), 4.4), squeeze=False)
    with np.errstate(divide="ignore"):
        logs = {k: np.where(m > 0, np.log10(np.where(m > 0, m, 1)), np.nan) for k, m in mats.items()}
    finite = [v[np.isfinite(v)] for v in logs.values() if np.isfinite(v).any()]
    # colour range from the 1st percentile up: a few near-zero corrections would wash out the rest
    vmin, vmax = ((np.percentile(np.concatenate(finite), 1), max(f.max() for f in finite)) if finite
                  else (0, 1))
    for ax, (k, v) in zip(axes[0], logs.items()):
        im = ax.imshow(v, vmin=vmin, vmax=vmax, cmap="viridis", interpolation="nearest")
        ax.set_title(k)
        ax.set_xlabel("neuron")
        ax.set_ylabel("neuron")
        fig.colorbar(im, ax=ax, label="log10 mean |dW|")
    return _save(fig, path)
