"""Device models: weights -> conductance pairs (G+, G-) and back.

A weight W is realised by two positive conductances, W = (G+ - G-)/G_unit, with
G_unit = (g_max - g_min)/w_max: the positive part of W goes on G+, the negative part on
G-, both offset from g_min (a device cannot go below it). Non-idealities, each a field of
``DeviceModel`` (aihwkit style: ``_std`` per write, ``_dtod`` per device instance):
quantisation to 2^bits levels, write (programming) noise, device-to-device gain
mismatch and up/down asymmetry of incremental updates. Everything random takes a seed
or a numpy Generator. Presets live in spice_models/*.toml and cite their sources.
The arrays produced here are what ``netlist_gen.build_circuit(level="crossbar")`` takes.
"""
from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import numpy as np

PRESET_DIR = Path(__file__).resolve().parent.parent / "spice_models"
MAX_BITS = 32  # more levels than this is a continuous device for every purpose here (bits = None)


@dataclasses.dataclass(frozen=True)
class DeviceModel:
    """One resistive synaptic device technology.

    Attributes:
        name: label (the preset's file stem for presets).
        g_min: lowest programmable conductance, S. Must be > 0: the netlist writes 1/G.
        g_max: highest programmable conductance, S.
        bits: None for a continuous device, else 2**bits evenly spaced levels in
            [g_min, g_max] (g_min and g_max included).
        w_max: the weight magnitude mapped onto the full range g_max - g_min (unitless);
            |W| > w_max is not representable.
        write_noise_std: std of the programming error of one write, as a fraction of
            (g_max - g_min) (unitless), conductance-independent.
        write_noise_coeffs: optional conductance-dependent programming-error std,
            a polynomial sum_i c_i (G/g_max)^i in units of g_max (PCM-style); replaces
            write_noise_std when given.
        g_dtod: device-to-device spread: relative std of a fixed per-device gain
            (1 + g_dtod * N(0, 1)) on the realised conductance (unitless). Makes the two
            directions of a symmetric weight differ (DEEP's regime).
        asymmetry: up/down asymmetry of incremental updates (unitless): a device's
            increase is scaled by (1 + asymmetry/2), its decrease by (1 - asymmetry/2).
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
    source: str = ""
    notes: str = ""

    def __post_init__(self):
        for k in ("name", "source", "notes"):
            if not isinstance(getattr(self, k), str):
                raise ValueError(f"device: {k} must be a string, got {getattr(self, k)!r}")
        o = f"device {self.name}"
        for k in ("g_min", "g_max", "w_max", "write_noise_std", "g_dtod", "asymmetry"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
                raise ValueError(f"{o}: {k} must be a finite number, got {v!r}")
        if not (0 < self.g_min < self.g_max):
            raise ValueError(f"{o}: need 0 < g_min < g_max (S), got g_min {self.g_min}, g_max {self.g_max}")
        if self.bits is not None and (isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer))
                                      or not 1 <= self.bits <= MAX_BITS):
            raise ValueError(f"{o}: bits must be an integer in 1..{MAX_BITS} or absent (continuous), got {self.bits!r}")
        if self.w_max <= 0:
            raise ValueError(f"{o}: w_max must be > 0, got {self.w_max}")
        for k in ("write_noise_std", "g_dtod"):
            if getattr(self, k) < 0:
                raise ValueError(f"{o}: {k} must be >= 0, got {getattr(self, k)}")
        if not -2 < self.asymmetry < 2:
            raise ValueError(f"{o}: asymmetry must lie in (-2, 2) (a step is scaled by 1 +- asymmetry/2), "
                             f"got {self.asymmetry}")
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
        """One conductance step expressed as a weight (0 for continuous devices)."""
        return 0.0 if self.bits is None else self.w_max / (self.levels - 1)

    @property
    def stochastic(self) -> bool:
        return self.write_noise_std > 0 or self.write_noise_coeffs is not None or self.g_dtod > 0


@dataclasses.dataclass(eq=False)
class ProgrammedWeights:
    """Conductances of every device pair. Unpacks as ``Gp, Gm, g_unit``.

    ``Gp[i, j]``, ``Gm[i, j]`` (S) realise W[i, j] (i's activity into j); 0 where no device
    exists (outside ``mask``). ``n_clipped``: weights clipped to +-w_max (clip=True only).
    """

    Gp: np.ndarray
    Gm: np.ndarray
    g_unit: float
    mask: np.ndarray
    n_clipped: int = 0

    def __iter__(self):
        return iter((self.Gp, self.Gm, self.g_unit))

    def weights(self) -> np.ndarray:
        return conductances_to_weights(self.Gp, self.Gm, self.g_unit)


# -- presets ---------------------------------------------------------------------
def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_preset(name: str, **overrides) -> DeviceModel:
    """The device of spice_models/<name>.toml, with fields replaced by ``overrides``."""
    if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"no device preset {name!r} (a preset is a name, not a path); available: "
                         f"{', '.join(list_presets())}")
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        raise ValueError(f"no device preset {name!r}; available: {', '.join(list_presets())}")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"device preset {path}: not valid TOML ({e})") from None
    fields = {f.name for f in dataclasses.fields(DeviceModel)}
    unknown = (set(data) | set(overrides)) - fields
    if unknown:
        raise ValueError(f"preset {name}: unknown fields {sorted(unknown)}")
    data.setdefault("name", name)
    data.update(overrides)
    return DeviceModel(**data)


# -- mapping ---------------------------------------------------------------------
def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _as_array(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


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


def sample_dtod(shape, device: DeviceModel, rng=None) -> tuple[np.ndarray, np.ndarray]:
    """Fixed per-device gains (for G+ and G-) of one device instance; keep them across writes."""
    if device.g_dtod == 0:
        return np.ones(shape), np.ones(shape)
    r = _rng(rng)
    # a gain of zero or below would be a dead (or negative) device: floor it
    f = 1.0 + device.g_dtod * r.standard_normal((2, *shape))
    return np.maximum(f[0], 1e-3), np.maximum(f[1], 1e-3)


def weights_to_conductances(W, device: DeviceModel, rng=None, *, mask=None, clip: bool = False,
                            dtod: tuple[np.ndarray, np.ndarray] | None = None) -> ProgrammedWeights:
    """Differential mapping of W onto device pairs, with the device's non-idealities.

    W (N, N) numpy or torch; mask: where devices exist (default: everywhere). |W| above
    w_max raises unless ``clip=True`` (then the count is in ``n_clipped``). rng: seed or
    Generator, required when the device is stochastic (noise or mismatch). dtod: the
    per-device gains of ``sample_dtod`` to reuse an instance's mismatch across writes.
    """
    W = _as_array(W)
    if W.ndim != 2:
        raise ValueError(f"W must be a matrix, got shape {W.shape}")
    mask = np.ones(W.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != W.shape:
        raise ValueError(f"mask shape {mask.shape} != W shape {W.shape}")
    if not np.isfinite(W[mask]).all():
        raise ValueError("W has non-finite entries")
    if device.stochastic and rng is None:
        raise ValueError(f"device {device.name} is stochastic (write noise / d2d): pass rng (a seed or Generator)")
    over = mask & (np.abs(W) > device.w_max * (1 + 1e-12))
    n_over = int(over.sum())
    if n_over and not clip:
        i, j = (int(v) for v in np.argwhere(over)[0])
        raise ValueError(f"{n_over} weights exceed the device range |W| <= w_max={device.w_max} "
                         f"(max |W| = {float(np.abs(W[mask]).max())}, first at W[{i}, {j}] = {W[i, j]}); "
                         f"use a larger w_max (dataclasses.replace(device, w_max=...)) or clip=True")
    Wc = np.clip(W, -device.w_max, device.w_max)
    g = device.g_unit
    Gp = device.g_min + np.maximum(Wc, 0.0) * g
    Gm = device.g_min + np.maximum(-Wc, 0.0) * g
    Gp, Gm = quantize(Gp, device), quantize(Gm, device)
    if device.stochastic:
        r = _rng(rng)
        Gp, Gm = write_noise(Gp, device, r), write_noise(Gm, device, r)
        fp, fm = dtod if dtod is not None else sample_dtod(W.shape, device, r)
        Gp, Gm = Gp * fp, Gm * fm
    Gp, Gm = np.where(mask, Gp, 0.0), np.where(mask, Gm, 0.0)
    return ProgrammedWeights(Gp, Gm, g, mask, n_over)


def conductances_to_weights(Gp, Gm, g_unit: float) -> np.ndarray:
    """Effective weights (G+ - G-)/G_unit (0 where no device: both conductances 0)."""
    return (_as_array(Gp) - _as_array(Gm)) / float(g_unit)


def program_network(network, device: DeviceModel, rng=None, *, clip: bool = False, dtod=None) -> ProgrammedWeights:
    """``weights_to_conductances`` over an eqprop Network's mask (every direction a device pair)."""
    return weights_to_conductances(network.W, device, rng, mask=network.topology.mask, clip=clip, dtod=dtod)


def apply_update(prog: ProgrammedWeights, dW, device: DeviceModel, rng=None, dtod=None) -> ProgrammedWeights:
    """Incremental write-back of dW, each device moved toward the pair of the new weight.

    The target is the canonical pair (one device at g_min) of W_eff + dW, clipped to
    +-w_max (saturation, as hardware does, not an error). Each device's move is scaled by
    (1 + asymmetry/2) when it increases and (1 - asymmetry/2) when it decreases, then
    quantised and write-noised. ``dtod`` gains (from ``sample_dtod``) divide out first
    and back in after, so a mismatched instance keeps its mismatch.
    """
    dW = _as_array(dW)
    if dW.shape != prog.Gp.shape or not np.isfinite(dW[prog.mask]).all():
        raise ValueError(f"dW must be finite with shape {prog.Gp.shape}")
    noisy = device.write_noise_std > 0 or device.write_noise_coeffs is not None
    if noisy and rng is None:
        raise ValueError(f"device {device.name} has write noise: pass rng")
    fp, fm = dtod if dtod is not None else (np.ones(dW.shape), np.ones(dW.shape))
    Gp0 = np.where(prog.mask, prog.Gp / fp, device.g_min)
    Gm0 = np.where(prog.mask, prog.Gm / fm, device.g_min)
    W1 = np.clip((Gp0 - Gm0) / prog.g_unit + dW, -device.w_max, device.w_max)
    a = device.asymmetry

    def move(G, target):
        d = target - G
        return quantize(G + np.where(d > 0, d * (1 + a / 2), d * (1 - a / 2)), device)

    Gp = move(Gp0, device.g_min + np.maximum(W1, 0.0) * prog.g_unit)
    Gm = move(Gm0, device.g_min + np.maximum(-W1, 0.0) * prog.g_unit)
    if noisy:
        r = _rng(rng)
        Gp, Gm = write_noise(Gp, device, r), write_noise(Gm, device, r)
    Gp, Gm = np.where(prog.mask, Gp * fp, 0.0), np.where(prog.mask, Gm * fm, 0.0)
    return ProgrammedWeights(Gp, Gm, prog.g_unit, prog.mask, 0)


# -- one device instance in the learning loop ---------------------------------------------
def instance_seed(device_seed: int, trial: int) -> np.random.SeedSequence:
    """The random stream of trial ``trial``'s device instance (its d2d draw, write noise): the
    same for every backend, so ngspice and the digital surrogate hold the same devices."""
    return np.random.SeedSequence([int(device_seed), int(trial)])


class DeviceArray:
    """The device pairs of one network trial: programmed once, then changed by updates only.

    Every weight update passes through ``update`` (aihwkit's rule: the device model is in
    the loop): each pair moves toward the pair of W + step with the model's asymmetry,
    quantisation and write noise. ``nominal_weights`` is what the pairs hold before this
    instance's d2d gain mismatch, ``realised_weights`` what acts in the circuit (with it:
    the two directions of a symmetric weight then differ).
    """

    def __init__(self, device: DeviceModel, mask: np.ndarray, seed, clip: bool = False):
        self.device, self.mask, self.clip = device, np.asarray(mask, bool), clip
        self.rng = np.random.default_rng(seed)
        self.dtod = sample_dtod(self.mask.shape, device, self.rng) if device.stochastic else None
        self.prog: ProgrammedWeights | None = None
        self.n_clipped = 0

    def program(self, W) -> ProgrammedWeights:
        """Write W afresh (every device, from its canonical pair)."""
        self.prog = weights_to_conductances(W, self.device, self.rng if self.device.stochastic else None,
                                            mask=self.mask, clip=self.clip, dtod=self.dtod)
        self.n_clipped = self.prog.n_clipped
        return self.prog

    def update(self, step) -> np.ndarray:
        """Move every device by the weight step (N, N); returns where a conductance changed."""
        if self.prog is None:
            raise RuntimeError("program the devices before updating them")
        old = self.prog
        self.prog = apply_update(old, step, self.device, self.rng, dtod=self.dtod)
        return (self.prog.Gp != old.Gp) | (self.prog.Gm != old.Gm)

    def nominal_weights(self) -> np.ndarray:
        fp, fm = self.dtod if self.dtod is not None else (1.0, 1.0)
        Gp = np.where(self.mask, self.prog.Gp / fp, 0.0)
        Gm = np.where(self.mask, self.prog.Gm / fm, 0.0)
        return conductances_to_weights(Gp, Gm, self.prog.g_unit)

    def realised_weights(self) -> np.ndarray:
        return self.prog.weights()

    def state_dict(self) -> dict:
        return {"Gp": self.prog.Gp.copy(), "Gm": self.prog.Gm.copy(), "rng": self.rng.bit_generator.state,
                "n_clipped": self.n_clipped}

    def load_state_dict(self, d: dict) -> None:
        self.prog = ProgrammedWeights(np.asarray(d["Gp"]), np.asarray(d["Gm"]), self.device.g_unit, self.mask)
        self.rng.bit_generator.state = d["rng"]
        self.n_clipped = int(d["n_clipped"])


def symmetrise(W: np.ndarray, directed: bool) -> np.ndarray:
    """The weight a Hopfield network holds for two device pairs: the mean of both directions."""
    return W if directed else 0.5 * (W + W.T)


def weight_asymmetry(W: np.ndarray) -> float:
    """||W - W^T||_F / ||W||_F (0 for a symmetric matrix or all-zero W)."""
    n = float(np.linalg.norm(W))
    return 0.0 if n == 0 else float(np.linalg.norm(W - W.T)) / n
