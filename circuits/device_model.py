"""DeviceModel: one synaptic device technology, as a frozen dataclass, and its presets.

aihwkit style: one docstring line with its unit per field; ``_dtod`` is a device-to-device
spread (sampled once per device instance from its seed, ``devices.instance_seed``), ``_std``
a cycle-to-cycle one (drawn afresh per pulse, write or read). Presets are TOML files in
spice_models/ that cite their sources; ``load_device_file`` reads any such file and names it
in every error. Every field is checked on construction (type, range, unit).
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path

import numpy as np

PRESET_DIR = Path(__file__).resolve().parent.parent / "spice_models"
MAX_BITS = 32  # more levels than this is a continuous device for every purpose here (bits = None)
MAX_CONDUCTANCE = 1.0  # S: no synaptic device conducts more (a larger value is a unit slip)
UPDATE_RULES = ("level", "pulse")
ROUNDINGS = ("nearest", "stochastic")
SUB_STEPS = ("lost", "accumulate")
# field -> (low, high, low inclusive, high inclusive); None: unbounded on that side
_RANGES = {
    "g_min": (None, None, True, True), "g_max": (None, None, True, True), "w_max": (0.0, None, False, True),
    "write_noise_std": (0.0, None, True, True), "g_dtod": (0.0, None, True, True),
    "asymmetry": (-2.0, 2.0, False, False), "asymmetry_dtod": (0.0, None, True, True),
    "dg_min_dtod": (0.0, None, True, True), "dg_min_std": (0.0, None, True, True),
    "range_dtod": (0.0, None, True, True),
    "nonlinearity_up": (-10.0, 1.0, True, True), "nonlinearity_down": (-10.0, 1.0, True, True),
    "nonlinearity_dtod": (0.0, None, True, True),
    "stuck_min_fraction": (0.0, 1.0, True, True), "stuck_max_fraction": (0.0, 1.0, True, True),
    "read_noise_std": (0.0, 0.5, True, True), "drift_nu": (0.0, 1.0, True, True),
    "drift_nu_dtod": (0.0, None, True, True), "drift_t0": (0.0, None, False, True),
    "drift_dt": (0.0, None, True, True), "dg_min": (0.0, 1.0, False, True),
}


@dataclasses.dataclass(frozen=True)
class DeviceModel:
    """One resistive synaptic device technology (all fields optional; defaults: ideal device).

    Attributes:
        name: label (the preset's file stem for presets).
        g_min: lowest programmable conductance, S (> 0: the netlist writes 1/G).
        g_max: highest programmable conductance, S.
        bits: None for a continuous device, else 2**bits evenly spaced levels in [g_min, g_max].
        w_max: weight magnitude mapped onto the full range g_max - g_min, unitless (a mapping choice).
        write_noise_std: programming error of one write, std as a fraction of (g_max - g_min), unitless.
        write_noise_coeffs: conductance-dependent programming-error std sum_i c_i (G/g_max)^i, in
            units of g_max (PCM-style); replaces write_noise_std when given.
        g_dtod: d2d gain spread: relative std of a fixed per-device gain on the conductance, unitless.
        asymmetry: up/down asymmetry, unitless: increases scaled by (1 + a/2), decreases by (1 - a/2).
        asymmetry_dtod: d2d spread of asymmetry: std of each device's own a, unitless (absolute).
        update_rule: "level" (each device moves toward the pair of W + dW and snaps to the nearest
            level: a program-and-verify write) or "pulse" (a number of identical pulses, each moving G
            by the device's own, state-dependent step: open-loop incremental updates).
        dg_min: pulse rule: the nominal step of one pulse as a fraction of (g_max - g_min), unitless;
            None: one level, 1/(2**bits - 1) (required for a continuous pulse device).
        dg_min_dtod: d2d spread of the step: relative std of each device's step, unitless.
        dg_min_std: c2c spread of the step: relative std of each pulse's step, unitless.
        nonlinearity_up, nonlinearity_down: pulse rule, soft bounds, unitless in [-10, 1]: an up (down)
            step at the top (bottom) of the range is (1 - nonlinearity) times the step at the other
            end, linear in G between (0: constant steps; 1: aihwkit's soft bounds, the step vanishes;
            < 0: steps that grow toward that bound, NeuroSim's positive LTD labels).
        nonlinearity_dtod: d2d spread of both nonlinearities: std of each device's own, unitless
            (absolute; NeuroSim's sigmaDtoD), kept in [-10, 1].
        rounding: requested change -> whole steps (levels or pulses): "nearest" or "stochastic".
        sub_step: the part of a request below one step: "lost" or "accumulate" (carried per device).
        range_dtod: d2d spread of the range: relative std of each device's g_max - g_min, unitless.
        stuck_min_fraction, stuck_max_fraction: fraction of devices stuck at g_min / g_max, unitless.
        read_noise_std: read noise: relative std of a device's conductance per solve, unitless.
        drift_nu: drift exponent, unitless: G(t) = G_written ((t0 + age)/t0)^-nu (0: no drift).
        drift_nu_dtod: d2d spread of nu: std of each device's exponent, unitless (absolute).
        drift_t0: drift reference time after a write, s.
        drift_dt: time that passes per weight update (training step), s.
        source: citation of the numbers (presets).
        notes: caveats, e.g. which values are this project's choice rather than the source's.
    """

    name: str = "ideal"
    g_min: float = 1e-6
    g_max: float = 1e-4
    bits: int | None = None
    w_max: float = 1.0
    write_noise_std: float = 0.0
    write_noise_coeffs: tuple[float, ...] | None = None
    g_dtod: float = 0.0
    asymmetry: float = 0.0
    asymmetry_dtod: float = 0.0
    update_rule: str = "level"
    dg_min: float | None = None
    dg_min_dtod: float = 0.0
    dg_min_std: float = 0.0
    nonlinearity_up: float = 0.0
    nonlinearity_down: float = 0.0
    nonlinearity_dtod: float = 0.0
    rounding: str = "nearest"
    sub_step: str = "lost"
    range_dtod: float = 0.0
    stuck_min_fraction: float = 0.0
    stuck_max_fraction: float = 0.0
    read_noise_std: float = 0.0
    drift_nu: float = 0.0
    drift_nu_dtod: float = 0.0
    drift_t0: float = 1.0
    drift_dt: float = 0.0
    source: str = ""
    notes: str = ""

    def __post_init__(self):
        for k in ("name", "source", "notes"):
            if not isinstance(getattr(self, k), str):
                raise ValueError(f"device: {k} must be a string, got {getattr(self, k)!r}")
        o = f"device {self.name}"
        for k, (lo, hi, lo_in, hi_in) in _RANGES.items():
            v = getattr(self, k)
            if k == "dg_min" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
                raise ValueError(f"{o}: {k} must be a finite number, got {v!r}")
            bad = (lo is not None and (v < lo or (v == lo and not lo_in))) or (
                hi is not None and (v > hi or (v == hi and not hi_in)))
            if bad:
                span = (("[" if lo_in else "(") + ("-inf" if lo is None else f"{lo:g}") + ", "
                        + ("inf" if hi is None else f"{hi:g}") + ("]" if hi_in else ")"))
                raise ValueError(f"{o}: {k} must lie in {span}, got {v!r}")
        if not 0 < self.g_min < self.g_max:
            raise ValueError(f"{o}: need 0 < g_min < g_max (S), got g_min {self.g_min}, g_max {self.g_max}")
        if self.g_max > MAX_CONDUCTANCE:  # the usual slip: microsiemens written as plain numbers
            raise ValueError(f"{o}: g_max {self.g_max} S is no synaptic device (> {MAX_CONDUCTANCE} S, under 1 Ohm); "
                             f"conductances are in siemens: 10 uS is 1e-5")
        if self.bits is not None and (isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer))
                                      or not 1 <= self.bits <= MAX_BITS):
            raise ValueError(f"{o}: bits must be an integer in 1..{MAX_BITS} or absent (continuous), got {self.bits!r}")
        for k, allowed in (("update_rule", UPDATE_RULES), ("rounding", ROUNDINGS), ("sub_step", SUB_STEPS)):
            if getattr(self, k) not in allowed:
                raise ValueError(f"{o}: {k} must be one of {allowed}, got {getattr(self, k)!r}")
        if self.stuck_min_fraction + self.stuck_max_fraction > 1:
            raise ValueError(f"{o}: stuck_min_fraction + stuck_max_fraction must be <= 1, got "
                             f"{self.stuck_min_fraction} + {self.stuck_max_fraction}")
        if self.update_rule == "pulse" and self.dg_min is None and self.bits is None:
            raise ValueError(f"{o}: update_rule 'pulse' needs dg_min (step per pulse, fraction of the range) or bits")
        if self.update_rule == "level":
            for k in ("dg_min", "dg_min_dtod", "dg_min_std", "nonlinearity_up", "nonlinearity_down",
                      "nonlinearity_dtod"):
                if getattr(self, k) not in (None, 0, 0.0):
                    raise ValueError(f"{o}: {k} is a field of the pulse rule: set update_rule = 'pulse' to use it")
        if self.write_noise_coeffs is not None:
            c = self.write_noise_coeffs
            if isinstance(c, (str, bytes)) or not hasattr(c, "__iter__") or not all(
                    isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                    and np.isfinite(v) for v in c) or len(list(c)) == 0:
                raise ValueError(f"{o}: write_noise_coeffs must be a non-empty list of finite numbers or absent, "
                                 f"got {c!r}")
            object.__setattr__(self, "write_noise_coeffs", tuple(float(v) for v in c))

    @property
    def g_unit(self) -> float:
        """Conductance per unit weight, S."""
        return (self.g_max - self.g_min) / self.w_max

    @property
    def levels(self) -> int | None:
        return None if self.bits is None else 2 ** int(self.bits)

    @property
    def lsb_weight(self) -> float:
        """One conductance level expressed as a weight (0 for continuous devices)."""
        return 0.0 if self.bits is None else self.w_max / (self.levels - 1)

    @property
    def step_fraction(self) -> float | None:
        """The nominal step of one update (pulse or level) as a fraction of the range; None: continuous."""
        if self.update_rule == "pulse" and self.dg_min is not None:
            return float(self.dg_min)
        return None if self.bits is None else 1.0 / (self.levels - 1)

    @property
    def step_weight(self) -> float:
        """The nominal step of one update expressed as a weight (0 for a continuous level device)."""
        f = self.step_fraction
        return 0.0 if f is None else f * self.w_max

    @property
    def stochastic(self) -> bool:
        """Write noise or a d2d gain: programming needs a random stream."""
        return self.write_noise_std > 0 or self.write_noise_coeffs is not None or self.g_dtod > 0

    @property
    def has_hidden_parameters(self) -> bool:
        """Per-device parameters beyond the gain, sampled once per instance."""
        return any(getattr(self, k) > 0 for k in ("asymmetry_dtod", "dg_min_dtod", "range_dtod", "stuck_min_fraction",
                                                  "stuck_max_fraction", "drift_nu", "dg_min_std",
                                                  "nonlinearity_dtod"))

    @property
    def read_varies(self) -> bool:
        """Each solve reads conductances that differ from the written ones (read noise or drift)."""
        return self.read_noise_std > 0 or (self.drift_nu > 0 and self.drift_dt > 0)


# -- presets and device files ----------------------------------------------------------------
NOT_DEVICE_PREFIXES = ("physical_",)  # spice_models/physical_*.toml: circuit presets (circuits.physical)


def list_presets() -> list[str]:
    """Device presets: spice_models/*.toml except the circuit presets there."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml") if not p.stem.startswith(NOT_DEVICE_PREFIXES))


def device_from_dict(data: dict, where: str, **overrides) -> DeviceModel:
    """A DeviceModel from a table of fields (a TOML file's), every error naming ``where``."""
    fields = {f.name for f in dataclasses.fields(DeviceModel)}
    unknown = (set(data) | set(overrides)) - fields
    if unknown:
        raise ValueError(f"{where}: unknown fields {sorted(unknown)}; known: {', '.join(sorted(fields))}")
    data = {**data, **overrides}
    try:
        return DeviceModel(**data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


def _read_toml(path: Path, where: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{where}: not valid TOML ({e})") from None


def load_device_file(path: str | Path, **overrides) -> DeviceModel:
    """The device of a TOML file (a preset's format); its stem is the default name."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"device file {path}: no such file")
    data = _read_toml(path, f"device file {path}")
    data.setdefault("name", path.stem)
    return device_from_dict(data, f"device file {path}", **overrides)


def load_preset(name: str, **overrides) -> DeviceModel:
    """The device of spice_models/<name>.toml, with fields replaced by ``overrides``."""
    if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"no device preset {name!r} (a preset is a name, not a path); available: "
                         f"{', '.join(list_presets())}")
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file() or name.startswith(NOT_DEVICE_PREFIXES):
        raise ValueError(f"no device preset {name!r}; available: {', '.join(list_presets())}")
    data = _read_toml(path, f"device preset {path}")
    data.setdefault("name", name)
    return device_from_dict(data, f"preset {name} ({path})", **overrides)
