"""A variability sweep's summary: one table row per point, plots of error and lost updates vs
the swept device field, written next to the points (summary.md, summary.json, *.png)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from eqprop.run_files import write_atomic, write_json


def _pm(r: dict, k: str, fmt: str = ".3f") -> str:
    v, s = r.get(k), r.get(k + "_std")
    if v is None or not math.isfinite(v):
        return "inf" if v == math.inf else "-"
    return f"{v:{fmt}} ± {s:{fmt}}" if s is not None and math.isfinite(s) else f"{v:{fmt}}"


def _fractions(v) -> str:
    return "-" if not v else " ".join("-" if x is None else f"{100 * x:.0f}" for x in v)


def table(results: list[dict]) -> str:
    """Markdown: point, seeds, final train/test error and log-spread (mean ± population std over
    seeds), and per block (input side first, then skip) the % of updates lost / below one step."""
    lines = ["| point | seeds | train error | test error | log-spread | lost % by block | below 1 step % by block |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        note = " (diverged)" if r.get("diverged") else ""
        lines.append(f"| {r['name']}{note} | {len(r['seeds'])} | {_pm(r, 'train_error')} | {_pm(r, 'test_error')} | "
                     f"{_pm(r, 'log_spread', '.2f')} | {_fractions(r.get('lost_fraction_by_block'))} | "
                     f"{_fractions(r.get('below_step_fraction_by_block'))} |")
    return "\n".join(lines)


def swept_fields(results: list[dict]) -> list[str]:
    """The device fields whose value differs between points."""
    keys = sorted({k for r in results for k in r["point"]["overrides"]})
    return [k for k in keys if len({repr(r["point"]["overrides"].get(k)) for r in results}) > 1]


def write_summary(results: list[dict], out: Path, title: str = "variability sweep", lines: list[str] = ()) -> str:
    """summary.json (every result), summary.md (the table and ``lines``) and the plots; returns the markdown."""
    out = Path(out)
    write_json(out / "summary.json", results)
    md = f"# {title}\n\n" + table(results) + ("\n\n" + "\n".join(f"* {s}" for s in lines) if lines else "") + "\n"
    write_atomic(out / "summary.md", md)
    for field in swept_fields(results):
        having = [r for r in results if field in r["point"]["overrides"]]  # studies sweep one field at a time
        error_vs_field(having, field, out / f"error_vs_{field}.png")
        lost_vs_field(having, field, out / f"lost_vs_{field}.png")
    return md


def _x(v, field):
    return v if v is not None else (12 if field == "bits" else 0)  # "float" drawn right of the largest bit depth


def _groups(results):
    """Points by (dataset, depth, scheme [device] [backend]): one line each."""
    out: dict[tuple, list[dict]] = {}
    for r in results:
        p = r["point"]
        dev = p["device"].get("name", "ideal")
        label = p["scheme"] + ("" if dev == "ideal" else f" {dev}") + ("" if p["backend"] == "surrogate" else " spice")
        out.setdefault((p["dataset"], len(p["hidden"]), label), []).append(r)
    return out


def error_vs_field(results: list[dict], field: str, path: Path) -> Path:
    """Final test error and log-spread (mean ± std over seeds) vs the swept field, one line per scheme,
    one column per dataset."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eqprop.run_files import save_figure

    groups = _groups(results)
    datasets = sorted({k[0] for k in groups})
    fig, axes = plt.subplots(2, len(datasets), figsize=(4.2 * len(datasets), 6.4), squeeze=False)
    for c, ds in enumerate(datasets):
        for key, rows in sorted(groups.items()):
            if key[0] != ds:
                continue
            rows = sorted(rows, key=lambda r: _x(r["point"]["overrides"].get(field), field))
            x = [_x(r["point"]["overrides"].get(field), field) for r in rows]
            for a, k in ((axes[0, c], "test_error"), (axes[1, c], "log_spread")):
                y = np.array([r[k] for r in rows], float)
                e = np.nan_to_num(np.array([r[k + "_std"] for r in rows], float))
                ok = np.isfinite(y)
                a.errorbar(np.array(x)[ok], y[ok], yerr=e[ok], marker="o", capsize=3, label=f"{key[2]}")
        axes[0, c].set_title(f"{ds} ({key[1]} hidden)")
        axes[0, c].set_ylabel("final test error")
        axes[1, c].set_ylabel("log-spread")
        for a in axes[:, c]:
            a.set_xlabel(field)
            a.grid(alpha=0.3)
            if field == "bits":
                ticks = sorted({_x(r["point"]["overrides"].get(field), field) for r in results})
                a.set_xticks(ticks)
                a.set_xticklabels(["float" if t == 12 else str(t) for t in ticks])
        axes[0, c].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def lost_vs_field(results: list[dict], field: str, path: Path) -> Path | None:
    """Per scheme (columns) and dataset (rows): the % of each block's updates the devices did not
    take, averaged over epochs and seeds, vs the swept field (one line per block)."""
    have = [r for r in results if r.get("lost_fraction_by_block") or r.get("below_step_fraction_by_block")]
    if not have:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eqprop.run_files import save_figure

    groups = _groups(have)
    keys = sorted(groups)
    datasets = sorted({k[0] for k in keys})
    schemes = sorted({k[2] for k in keys})
    fig, axes = plt.subplots(len(datasets), len(schemes), figsize=(4 * len(schemes), 3.2 * len(datasets)),
                             squeeze=False)
    for key in keys:
        rows = sorted(groups[key], key=lambda r: _x(r["point"]["overrides"].get(field), field))
        a = axes[datasets.index(key[0]), schemes.index(key[2])]
        x = [_x(r["point"]["overrides"].get(field), field) for r in rows]
        src = "lost_fraction_by_block" if rows[0].get("lost_fraction_by_block") else "below_step_fraction_by_block"
        names = rows[0]["blocks"]
        for b, name in enumerate(names):
            y = [100 * r[src][b] if r[src] and r[src][b] is not None else np.nan for r in rows]
            if np.isfinite(y).any():
                a.plot(x, y, marker=".", label=name, color=matplotlib.colormaps["viridis"](b / max(len(names) - 1, 1)))
        a.set_title(f"{key[0]} {key[2]}")
        a.set_xlabel(field)
        a.set_ylabel("% updates lost" if src.startswith("lost") else "% below one step")
        a.set_ylim(-3, 103)
        a.grid(alpha=0.3)
        if field == "bits":
            ticks = sorted(set(x))
            a.set_xticks(ticks)
            a.set_xticklabels(["float" if t == 12 else str(t) for t in ticks])
    _legend(axes.flat)
    fig.tight_layout()
    return save_figure(fig, path)


def lost_by_epoch(results: list[dict], path: Path) -> Path | None:
    """One panel per point: the % of each block's updates lost in each epoch (mean over seeds)."""
    have = [r for r in results if any(s["lost_fraction"] and s["lost_fraction"][0] for s in r["seeds"])]
    if not have:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eqprop.run_files import save_figure

    fig, axes = plt.subplots(1, len(have), figsize=(3.6 * len(have), 3.2), squeeze=False)
    for a, r in zip(axes[0], have):
        per = np.array([[[np.nan if v is None else v for v in blk] for blk in s["lost_fraction"]]
                        for s in r["seeds"]], float)  # (seeds, epochs, blocks)
        counted = np.isfinite(per).sum(0)  # a block no seed has (mlff's skip) stays NaN, without a warning
        m = np.where(counted > 0, np.nansum(per, 0) / np.maximum(counted, 1), np.nan)
        epochs = np.arange(1, m.shape[0] + 1)
        for b, name in enumerate(r["blocks"]):
            if np.isfinite(m[:, b]).any():
                a.plot(epochs, 100 * m[:, b], marker=".", label=name,
                       color=matplotlib.colormaps["viridis"](b / max(len(r["blocks"]) - 1, 1)))
        a.set_title(r["name"], fontsize=8)
        a.set_xlabel("epoch")
        a.set_ylabel("% updates lost")
        a.set_ylim(-3, 103)
        a.grid(alpha=0.3)
    _legend(axes.flat)
    fig.tight_layout()
    return save_figure(fig, path)


def _legend(axes) -> None:
    """The block legend on the panel with the most lines (matplotlib warns on a panel without any)."""
    best = max(axes, key=lambda a: len(a.lines))
    if best.lines:
        best.legend(fontsize=7, title="block")
