"""A device preset from a measured pulse-response table (bring your own device data).

The table is a CSV with a header and one row per measured point:

    direction,pulse,g        (g in siemens; optional 4th column "cycle" for repeated sweeps)
    up,0,1.02e-6
    up,1,1.09e-6
    ...
    down,0,9.97e-6

"up" rows are a potentiation sweep (identical pulses, G rising), "down" rows a depression
sweep; pulse numbers count within a sweep (and cycle). Steps that end on a bound (saturated) are
left out of the fit. The fit is the pulse rule of
``DeviceModel``: the step of one pulse is linear in G (soft bounds), so per direction a
least-squares line through (state, step) pairs gives the first step and the nonlinearity;
the scatter of the steps around that line is the cycle-to-cycle spread (dg_min_std). g_min
and g_max are the lowest and highest conductance measured.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from .device_model import DeviceModel

COLUMNS = ("direction", "pulse", "g")
SATURATION_TOL = 1e-3  # a step ending within this fraction of the range from a bound counts as saturated


def read_pulse_table(path: str | Path) -> dict[str, list[np.ndarray]]:
    """{"up": [G of each sweep, in pulse order], "down": [...]}; every error names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"pulse table {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"pulse table {path}: not UTF-8 text ({e})") from None
    rows = list(csv.reader(line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")))
    if not rows:
        raise ValueError(f"pulse table {path}: empty (expected a header {','.join(COLUMNS)}[,cycle])")
    header = [h.strip().lower() for h in rows[0]]
    if header[:3] != list(COLUMNS) or len(header) > 4 or (len(header) == 4 and header[3] != "cycle"):
        raise ValueError(f"pulse table {path}: header must be {','.join(COLUMNS)} or {','.join(COLUMNS)},cycle, "
                         f"got {','.join(rows[0])}")
    sweeps: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for n, row in enumerate(rows[1:], start=2):
        where = f"pulse table {path}, data row {n - 1}"
        if len(row) != len(header):
            raise ValueError(f"{where}: expected {len(header)} columns, got {len(row)}: {','.join(row)}")
        direction = row[0].strip().lower()
        if direction not in ("up", "down"):
            raise ValueError(f"{where}: direction must be up or down, got {row[0]!r}")
        try:
            pulse, g = float(row[1]), float(row[2])
        except ValueError:
            raise ValueError(f"{where}: pulse and g must be numbers, got {row[1]!r}, {row[2]!r}") from None
        if not (math.isfinite(pulse) and math.isfinite(g)) or g <= 0:
            raise ValueError(f"{where}: g must be a finite conductance > 0 (S) and pulse finite, got {row[2]!r}")
        cycle = row[3].strip() if len(row) == 4 else "0"
        sweeps.setdefault((direction, cycle), []).append((pulse, g))
    out: dict[str, list[np.ndarray]] = {"up": [], "down": []}
    for (direction, cycle), pts in sweeps.items():
        pts.sort()
        pulses = [p for p, _ in pts]
        if len(set(pulses)) != len(pulses):
            raise ValueError(f"pulse table {path}: {direction} sweep (cycle {cycle}) repeats a pulse number")
        out[direction].append(np.array([g for _, g in pts]))
    for direction, seq in out.items():
        if sum(len(s) - 1 for s in seq) < 3:
            raise ValueError(f"pulse table {path}: need at least 4 points of the {direction} sweep to fit its steps")
    return out


def _fit_steps(states: np.ndarray, steps: np.ndarray, R: float, direction: str, where: str):
    """Step = s (1 - k x) with x the distance travelled toward the bound, as a fraction of R."""
    A = np.stack([np.ones_like(states), states / R], axis=1)
    (c0, c1), *_ = np.linalg.lstsq(A, steps, rcond=None)
    if c0 <= 0:
        raise ValueError(f"{where}: the {direction} sweep's fitted first step is {c0:.3g} S (not > 0): the "
                         f"conductance does not move {direction} with the pulses")
    spread = float(np.std(steps - A @ np.array([c0, c1]))) / c0
    return float(c0), float(-c1 / c0), spread


def fit_pulse_table(path: str | Path, name: str | None = None, source: str = "", w_max: float = 1.0) -> DeviceModel:
    """The pulse-rule DeviceModel that best fits the measured sweeps (see the module doc)."""
    path = Path(path)
    where = f"pulse table {path}"
    sweeps = read_pulse_table(path)
    allg = np.concatenate([g for seq in sweeps.values() for g in seq])
    g_min, g_max = float(allg.min()), float(allg.max())
    if not g_max > g_min:
        raise ValueError(f"{where}: every conductance is the same ({g_min} S): nothing to fit")
    R = g_max - g_min
    # up: the step at distance y = G - g_min from the bottom; down: at distance g_max - G from the top
    # a step that ends on the bound was cut short by it (saturation): left out of the fit
    tol = SATURATION_TOL * R
    up = [(g[:-1] - g_min, np.diff(g), g[1:] < g_max - tol) for g in sweeps["up"]]
    down = [(g_max - g[:-1], -np.diff(g), g[1:] > g_min + tol) for g in sweeps["down"]]
    up_states, up_steps = (np.concatenate([u[i][u[2]] for u in up]) for i in (0, 1))
    down_states, down_steps = (np.concatenate([d[i][d[2]] for d in down]) for i in (0, 1))
    for direction, st in (("up", up_steps), ("down", down_steps)):
        if len(st) < 3:
            raise ValueError(f"{where}: the {direction} sweep has fewer than 3 steps that do not end on a bound "
                             f"(saturated): nothing to fit its steps to")
    s_up, k_up, c2c_up = _fit_steps(up_states, up_steps, R, "up", where)
    s_dn, k_dn, c2c_dn = _fit_steps(down_states, down_steps, R, "down", where)
    for direction, k in (("up", k_up), ("down", k_dn)):
        if not -10 <= k <= 1:
            raise ValueError(f"{where}: the {direction} sweep's fitted nonlinearity {k:.3g} lies outside [-10, 1] "
                             f"(steps that change sign or grow more than 11x over the range): not a pulse-rule device")
    n_up, n_dn = len(up_steps), len(down_steps)
    c2c = math.sqrt((n_up * c2c_up ** 2 + n_dn * c2c_dn ** 2) / (n_up + n_dn))
    return DeviceModel(
        name=name or path.stem, g_min=g_min, g_max=g_max, w_max=w_max, update_rule="pulse",
        dg_min=(s_up + s_dn) / 2 / R, asymmetry=2 * (s_up - s_dn) / (s_up + s_dn),
        nonlinearity_up=k_up, nonlinearity_down=k_dn, dg_min_std=c2c,
        source=source or f"fitted from the pulse table {path.name} (circuits.device_csv)",
        notes=f"fit: {n_up} up and {n_dn} down steps; g_min/g_max = lowest/highest measured G; w_max a mapping choice")


def device_to_toml(device: DeviceModel, header: str = "") -> str:
    """The TOML text of a device (the fields that differ from the defaults), loadable by load_device."""
    defaults = DeviceModel()
    lines = [f"# {h}" for h in header.splitlines()] if header else []
    for f in device.__dataclass_fields__:
        v = getattr(device, f)
        if f != "name" and v == getattr(defaults, f) and f not in ("g_min", "g_max", "source"):
            continue
        if v is None:
            continue
        if isinstance(v, str):
            lines.append(f"{f} = {_toml_string(v)}")
        elif isinstance(v, tuple):
            lines.append(f"{f} = [{', '.join(repr(float(x)) for x in v)}]")
        elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            lines.append(f"{f} = {int(v)}")
        else:
            lines.append(f"{f} = {float(v)!r}")
    return "\n".join(lines) + "\n"


def _toml_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
