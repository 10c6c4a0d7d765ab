"""Conductance-level operations of the device model: levels, noise, one instance's hidden
parameters, the two update rules (level and pulse), and what a solve reads (drift, read noise).

Arrays of one instance carry both devices of every pair: index 0 is G+, 1 is G- (shape
(2, N, N)); conductances here are in the device's *base* units, before its d2d gain.
Everything random takes a numpy Generator; a field at 0 draws nothing, so adding a field to
the model never changes the random stream of a configuration that leaves it off.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .device_model import DeviceModel

MIN_GAIN = 1e-3  # a d2d factor of zero or below would be a dead (or negative) device: floored here


def quantize(G: np.ndarray, device: DeviceModel) -> np.ndarray:
    """Nearest of the 2^bits levels (clipped to [g_min, g_max]); continuous devices: clip only."""
    G = np.clip(G, device.g_min, device.g_max)
    if device.bits is None:
        return G
    step = (device.g_max - device.g_min) / (device.levels - 1)
    return device.g_min + np.rint((G - device.g_min) / step) * step


def write_noise(G: np.ndarray, device: DeviceModel, rng: np.random.Generator) -> np.ndarray:
    """Programming error of one write, kept inside the physical range [g_min, g_max]."""
    if device.write_noise_coeffs is not None:
        x = G / device.g_max
        std = device.g_max * sum(c * x ** k for k, c in enumerate(device.write_noise_coeffs))
    elif device.write_noise_std > 0:
        std = device.write_noise_std * (device.g_max - device.g_min)
    else:
        return G
    return np.clip(G + np.abs(std) * rng.standard_normal(G.shape), device.g_min, device.g_max)


def has_write_noise(device: DeviceModel) -> bool:
    return device.write_noise_std > 0 or device.write_noise_coeffs is not None


@dataclasses.dataclass(eq=False)
class HiddenParameters:
    """One instance's per-device parameters (aihwkit's "hidden parameters"), each (2, N, N) or a
    scalar where the model has no spread: asymmetry a, step (S, base units), upper bound g_hi (S),
    drift exponent nu, stuck (+1 at g_hi, -1 at g_min, 0 free; None: none stuck) and the two
    soft-bound nonlinearities."""

    asymmetry: np.ndarray | float
    step: np.ndarray | float
    g_hi: np.ndarray | float
    nu: np.ndarray | float
    stuck: np.ndarray | None
    k_up: np.ndarray | float = 0.0
    k_down: np.ndarray | float = 0.0


def sample_hidden(shape, device: DeviceModel, rng: np.random.Generator) -> HiddenParameters:
    """Draw the hidden parameters of one instance (only the fields the model spreads draw)."""
    full = (2, *shape)
    span = device.g_max - device.g_min
    frac = device.step_fraction
    step = 0.0 if frac is None else frac * span
    a, g_hi, nu = float(device.asymmetry), float(device.g_max), float(device.drift_nu)
    if device.asymmetry_dtod > 0:
        # a device with |a| >= 2 would not move one way at all: bounded like the model's own field
        a = np.clip(a + device.asymmetry_dtod * rng.standard_normal(full), -1.99, 1.99)
    if device.dg_min_dtod > 0:
        step = step * np.maximum(1.0 + device.dg_min_dtod * rng.standard_normal(full), MIN_GAIN)
    if device.range_dtod > 0:
        g_hi = device.g_min + span * np.clip(1.0 + device.range_dtod * rng.standard_normal(full), MIN_GAIN, 1.0)
    if device.drift_nu > 0 and device.drift_nu_dtod > 0:
        nu = np.maximum(nu + device.drift_nu_dtod * rng.standard_normal(full), 0.0)
    stuck = None
    if device.stuck_min_fraction > 0 or device.stuck_max_fraction > 0:
        u = rng.random(full)
        stuck = np.where(u < device.stuck_min_fraction, -1,
                         np.where(u < device.stuck_min_fraction + device.stuck_max_fraction, 1, 0)).astype(np.int8)
    k_up, k_down = float(device.nonlinearity_up), float(device.nonlinearity_down)
    if device.nonlinearity_dtod > 0:
        k_up = np.clip(k_up + device.nonlinearity_dtod * rng.standard_normal(full), -10.0, 1.0)
        k_down = np.clip(k_down + device.nonlinearity_dtod * rng.standard_normal(full), -10.0, 1.0)
    return HiddenParameters(a, step, g_hi, nu, stuck, k_up, k_down)


def nominal_hidden(device: DeviceModel) -> HiddenParameters:
    """The hidden parameters of a device without spread (scalars)."""
    frac = device.step_fraction
    return HiddenParameters(float(device.asymmetry), 0.0 if frac is None else frac * (device.g_max - device.g_min),
                            float(device.g_max), float(device.drift_nu), None, float(device.nonlinearity_up),
                            float(device.nonlinearity_down))


def pin_stuck(G: np.ndarray, device: DeviceModel, hidden: HiddenParameters) -> np.ndarray:
    """Clip to each device's own range, and put stuck devices on their bound."""
    G = np.minimum(G, hidden.g_hi)
    if hidden.stuck is None:
        return G
    top = np.broadcast_to(hidden.g_hi, G.shape)
    return np.where(hidden.stuck < 0, device.g_min, np.where(hidden.stuck > 0, top, G))


def round_steps(x: np.ndarray, device: DeviceModel, rng: np.random.Generator | None) -> np.ndarray:
    """Whole steps for a request x in steps: nearest, or stochastic (floor + Bernoulli(fraction))."""
    if device.rounding == "nearest":
        return np.rint(x)
    if rng is None:
        raise ValueError(f"device {device.name} rounds stochastically: pass rng")
    f = np.floor(x)
    return f + (rng.random(x.shape) < (x - f))


def move_level(G: np.ndarray, target: np.ndarray, device: DeviceModel, hidden: HiddenParameters,
               residual: np.ndarray | None, rng) -> tuple[np.ndarray, np.ndarray]:
    """The level rule: each device moves toward its target, the move scaled by (1 +- a/2), and lands
    on a level (program-and-verify). Returns the new G and where a device changed level."""
    d = target - G
    a = hidden.asymmetry
    want = G + np.where(d > 0, d * (1 + a / 2), d * (1 - a / 2))
    if device.bits is None:
        return np.minimum(np.clip(want, device.g_min, device.g_max), hidden.g_hi), want != G
    lsb = (device.g_max - device.g_min) / (device.levels - 1)
    top = np.floor((np.asarray(hidden.g_hi) - device.g_min) / lsb * (1 + 1e-12))
    x = (np.clip(want, device.g_min, device.g_max) - device.g_min) / lsb
    if residual is not None:
        x = x + residual
    k = round_steps(x, device, rng)
    clipped = (k < 0) | (k > top)
    k = np.clip(k, 0, top)
    if residual is not None:
        residual[...] = np.where(clipped, 0.0, x - k)
    before = np.clip(np.rint((np.clip(G, device.g_min, device.g_max) - device.g_min) / lsb), 0, top)
    return device.g_min + k * lsb, k != before


def _pulses(y0, n, s, k, R):
    """Position after n >= 0 pulses of step s (1 - k y/R) from y0 in [0, R] (closed form)."""
    q = np.maximum(1.0 - s * k / R, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        soft = R / k + (y0 - R / k) * q ** n
    return np.where(k > 0, soft, y0 + n * s)


def move_pulse(G: np.ndarray, target: np.ndarray, device: DeviceModel, hidden: HiddenParameters,
               residual: np.ndarray | None, rng) -> tuple[np.ndarray, np.ndarray]:
    """The pulse rule: the controller asks for round((target - G) / nominal step) pulses; each moves
    this device by its own step s (1 +- a/2), shrinking linearly toward the bound it approaches
    (soft bounds), with c2c spread dg_min_std per pulse. Returns the new G and where pulses went."""
    span = device.g_max - device.g_min
    x = (target - G) / (device.step_fraction * span)
    if residual is not None:
        x = x + residual
    n = round_steps(x, device, rng)
    if residual is not None:
        residual[...] = x - n
    R = np.asarray(hidden.g_hi) - device.g_min
    y = np.clip(G - device.g_min, 0.0, R)
    a, s = hidden.asymmetry, hidden.step
    up = _pulses(y, np.maximum(n, 0), s * (1 + a / 2), hidden.k_up, R)
    down = R - _pulses(R - y, np.maximum(-n, 0), s * (1 - a / 2), hidden.k_down, R)
    y1 = np.where(n > 0, up, np.where(n < 0, down, y))
    if device.dg_min_std > 0:
        y1 = y1 + np.sqrt(np.abs(n)) * device.dg_min_std * s * rng.standard_normal(y.shape)
    moved = n != 0
    if residual is not None:
        residual[...] = np.where(((y1 <= 0) & (n < 0)) | ((y1 >= R) & (n > 0)), 0.0, residual)  # saturated
    return device.g_min + np.clip(y1, 0.0, R), moved


def drift_factor(age: np.ndarray, device: DeviceModel, hidden: HiddenParameters) -> np.ndarray | float:
    """G(read) / G(written) of a device written ``age`` seconds ago: ((t0 + age) / t0)^-nu."""
    if device.drift_nu == 0:
        return 1.0
    return ((device.drift_t0 + age) / device.drift_t0) ** (-np.asarray(hidden.nu))


def read_noise(G: np.ndarray, device: DeviceModel, rng: np.random.Generator) -> np.ndarray:
    """One solve's read: each conductance scaled by (1 + read_noise_std N(0, 1)), kept > 0."""
    if device.read_noise_std == 0:
        return G
    return G * np.maximum(1.0 + device.read_noise_std * rng.standard_normal(G.shape), MIN_GAIN)


def sample_dtod(shape, device: DeviceModel, rng=None) -> tuple[np.ndarray, np.ndarray]:
    """Fixed per-device gains (for G+ and G-) of one device instance; keep them across writes."""
    if device.g_dtod == 0:
        return np.ones(shape), np.ones(shape)
    r = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    f = 1.0 + device.g_dtod * r.standard_normal((2, *shape))
    return np.maximum(f[0], MIN_GAIN), np.maximum(f[1], MIN_GAIN)
