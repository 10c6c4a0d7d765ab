"""physical-check: the physical level's equilibria against the ideal level and the surrogate.

For each non-ideality (one at a time, the others off) and a growing list of values, the
free and nudged equilibria of random networks are solved by ngspice at the physical level
and compared (max |activation difference|, V, over neurons and examples) with

* the ideal level (same units, clamp and method): how far the non-ideality moves the
  equilibrium;
* the digital surrogate (circuits.physical_surrogate): whether the cheap model still
  describes the circuit. Wire resistance has no surrogate: there SPICE is the reference.
Activations are the circuit's own (the diode clamp node, via ``physical_activation``), not
clip(u). ``measure`` adds settling time and energy per example (circuits.physical_measure).
"""
from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from circuits.devices import DeviceArray, instance_seed
from circuits.errors import SimulationError
from circuits.physical import UNITS, load_physical
from circuits.physical_surrogate import no_surrogate, physical_activation, surrogate_relax
from circuits.spice_config import SpiceConfig
from circuits.spice_solver import SpiceSolver

from .spice_check import random_networks

# field -> (values, the other fields it needs); rails stay at 0 and 1 V so the diode's forward drop shows
SWEEPS = {
    "diode_is": ([1e-12, 1e-10, 2.52e-9, 1e-7, 1e-5], {"activation": "diode", "diode_n": 1.752}),
    "diode_n": ([1.0, 1.752, 2.5], {"activation": "diode", "diode_is": 2.52e-9}),
    "tia_gain": ([1e1, 1e2, 1e3, 1e4, 1e5], {}),
    "tia_offset": ([1e-4, 1e-3, 1e-2], {"tia_gain": 1e4}),
    "tia_swing": ([10.0, 3.0, 1.0], {"tia_gain": 1e4}),
    "r_wire": ([0.1, 1.0, 10.0, 100.0], {}),  # r_row = r_col
    "read_v0": ([4.0, 2.0, 1.0, 0.5], {}),
    "nudge": (["conductance"], {}),
}


def point_model(field: str, value, base: dict | None = None):
    """The PhysicalModel of one sweep point: ``base`` overrides, then the field's needs, then the value."""
    needs = SWEEPS.get(field, ([], {}))[1]
    kw = {**(base or {}), **needs}
    if field == "r_wire":
        kw.update(r_row=value, r_col=value)
    else:
        kw[field] = value
    return load_physical("off", **kw)


def activations(u: torch.Tensor, model, n_in: int) -> torch.Tensor:
    """The circuit's activation voltages (inputs: rho(x))."""
    return torch.cat([u[..., :n_in].clamp(0, 1), physical_activation(u[..., n_in:], model)], dim=-1)


def _solve(cfg: SpiceConfig, net, x, y, beta):
    with SpiceSolver(cfg) as s:
        free = s.relax(net, x)
        nudged = s.relax(net, x, free, beta=beta, target=y)
        rep = s.report()
    n_in = net.topology.n_in
    return activations(free, cfg.physical, n_in), activations(nudged, cfg.physical, n_in), rep


def _surrogate(cfg: SpiceConfig, net, x, y, beta, free_spice):
    arr = DeviceArray(cfg.device, net.topology.mask, instance_seed(cfg.device_seed, 0), clip=cfg.clip_weights)
    prog = tuple(arr.program(net.W.detach().double().numpy()))
    kw = dict(g0=cfg.g0, clamp=cfg.clamp, fold_inputs=cfg.fold_inputs)
    # both start where the circuit starts (u = 0; the nudged phase from the free state) so they meet the same basin
    free = surrogate_relax(net, x, cfg.physical, prog, **kw)
    nudged = surrogate_relax(net, x, cfg.physical, prog, beta=beta, target=y, s0=free, **kw)
    return free, nudged


def physical_check(sizes=((4, 8, 3), (6, 10, 10, 3)), count: int = 2, examples: int = 2, seed: int = 0,
                   beta: float = 0.5, fields=None, base: dict | None = None, spice: dict | None = None,
                   progress: bool = True) -> dict:
    """Rows (field, value, errors vs ideal and surrogate, free and nudged) over random networks.

    spice: SpiceConfig fields shared by every solve (default: g0 10 uS, c 100 fF, clamp 0, tran+op).
    """
    fields = list(SWEEPS) if fields is None else list(fields)
    unknown = [f for f in fields if f not in SWEEPS]
    if unknown:
        raise ValueError(f"physical-check: no sweep for {unknown}; sweeps: {sorted(SWEEPS)}")
    settings = {"g0": 1e-5, "c": 1e-13, "clamp": 0.0, **(spice or {})}
    nets = list(random_networks([tuple(s) for s in sizes], "mlff", count=count, seed=seed))
    data = []
    for k, net, _ in nets:
        rng = np.random.default_rng(seed + 10_000 + k)
        x = torch.tensor(rng.random((examples, net.topology.n_in)))
        y = torch.tensor(rng.random((examples, net.topology.n_out)))
        data.append((net, x, y, _solve(SpiceConfig(level="ideal", **settings), net, x, y, beta)))
    rows, t0 = [], time.perf_counter()
    points = [(f, v) for f in fields for v in SWEEPS[f][0]]
    for field, value in tqdm(points, desc="physical-check", disable=not progress):
        model = point_model(field, value, base)
        cfg = SpiceConfig(level="physical", physical=model, **settings)
        unit = UNITS["r_row"] if field == "r_wire" else UNITS.get(field, "")
        row = {"field": field, "value": value, "unit": unit,
               "vs_ideal": {"free": 0.0, "nudged": 0.0}, "vs_surrogate": None}
        surrogate = not no_surrogate(model)
        if surrogate:
            row["vs_surrogate"] = {"free": 0.0, "nudged": 0.0}
        measured = {}
        for net, x, y, (i_free, i_nudged, _) in data:
            try:
                p_free, p_nudged, rep = _solve(cfg, net, x, y, beta)
            except SimulationError as e:  # one point ngspice cannot solve must not lose the sweep
                row["error"] = str(e).splitlines()[0]
                break
            for ph, a, b in (("free", p_free, i_free), ("nudged", p_nudged, i_nudged)):
                row["vs_ideal"][ph] = max(row["vs_ideal"][ph], float((a - b).abs().max()))
            if surrogate:
                s_free, s_nudged = _surrogate(cfg, net, x, y, beta, p_free)
                for ph, a, b in (("free", p_free, s_free), ("nudged", p_nudged, s_nudged)):
                    row["vs_surrogate"][ph] = max(row["vs_surrogate"][ph], float((a - b).abs().max()))
            for key, v in rep.items():
                if key.startswith(("settle_s", "energy_j", "power_w")) and v[0] is not None:
                    measured.setdefault(key, []).append(v[0])
        row.update({k: float(np.mean(v)) for k, v in measured.items()})
        rows.append(row)
    return {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                       f"python {platform.python_version()}",
            "sizes": [list(s) for s in sizes], "count": count, "examples": examples, "seed": seed, "beta": beta,
            "spice": SpiceConfig(level="physical", **settings).to_dict(), "base": base or {}, "rows": rows,
            "no_surrogate": list(("r_wire",)), "seconds": round(time.perf_counter() - t0, 1)}


def table(report: dict) -> str:
    """A markdown table of the rows."""
    lines = ["| non-ideality | value | vs ideal free | vs ideal nudged | vs surrogate free | vs surrogate nudged |",
             "|---|---|---|---|---|---|"]
    for r in report["rows"]:
        if r.get("error"):
            lines.append(f"| {r['field']} | {r['value']} {r['unit']} | ngspice failed: {r['error'][:80]} | | | |")
            continue
        s = r["vs_surrogate"]
        sur = ("no surrogate (SPICE is the reference)", "") if s is None else (f"{s['free']:.1e}", f"{s['nudged']:.1e}")
        value = r["value"] if isinstance(r["value"], str) else f"{r['value']:g} {r['unit']}"
        lines.append(f"| {r['field']} | {value} | {r['vs_ideal']['free']:.1e} | {r['vs_ideal']['nudged']:.1e} | "
                     f"{sur[0]} | {sur[1]} |")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> Path:
    """One panel per swept numeric field: max |activation error| (V) vs the value, ideal and surrogate."""
    from .plotting import plt, save_figure
    ok = [r for r in report["rows"] if not r.get("error")]
    fields = [f for f in dict.fromkeys(r["field"] for r in ok)
              if not any(isinstance(r["value"], str) for r in ok if r["field"] == f)]
    fig, axes = plt.subplots(1, len(fields), figsize=(3.2 * len(fields), 3.2), squeeze=False)
    for ax, f in zip(axes[0], fields):
        rs = [r for r in report["rows"] if r["field"] == f and not r.get("error")]
        v = [r["value"] for r in rs]
        for ph, ls in (("free", "-"), ("nudged", "--")):
            ax.plot(v, [max(r["vs_ideal"][ph], 1e-16) for r in rs], "o" + ls, color="C0", label=f"vs ideal, {ph}")
            if rs[0]["vs_surrogate"] is not None:
                ax.plot(v, [max(r["vs_surrogate"][ph], 1e-16) for r in rs], "s" + ls, color="C1",
                        label=f"vs surrogate, {ph}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f)
        ax.set_xlabel(rs[0]["unit"])
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("max |activation error| (V)")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def write(report: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "table": out / "table.md", "plot": out / "errors.png"}
    paths["json"].write_text(json.dumps(report, indent=2, default=_json) + "\n")
    paths["table"].write_text(table(report) + "\n")
    if any(not isinstance(r["value"], str) and not r.get("error") for r in report["rows"]):
        plot(report, paths["plot"])
    else:  # only the nudge form was swept: nothing to draw against a value
        del paths["plot"]
    return paths


def _json(v):
    return None if isinstance(v, float) and math.isinf(v) else str(v)
