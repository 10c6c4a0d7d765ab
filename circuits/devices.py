"""Device models: weights -> conductance pairs (G+, G-) and back; one instance in the loop.

A weight W is realised by two positive conductances, W = (G+ - G-)/G_unit, with
G_unit = (g_max - g_min)/w_max: the positive part of W goes on G+, the negative part on
G-, both offset from g_min (a device cannot go below it). The model's fields
(``DeviceModel``, circuits/device_model.py; aihwkit style: ``_std`` per write/pulse/read,
``_dtod`` per device instance) cover levels, write and read noise, d2d spread of gain,
range, step and asymmetry, level or pulse updates with soft bounds, rounding, lost or
accumulated sub-step updates, stuck devices and drift (circuits/device_update.py holds the
conductance-level operations). Everything random takes a seed or a numpy Generator.
Presets live in spice_models/*.toml and cite their sources. The arrays produced here are
what ``netlist_gen.build_circuit(level="crossbar")`` takes.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .device_model import (  # noqa: F401  (re-exported: the device API lives here)
    MAX_BITS,
    PRESET_DIR,
    DeviceModel,
    device_from_dict,
    list_presets,
    load_device_file,
    load_preset,
)
from .device_update import (  # noqa: F401
    HiddenParameters,
    drift_factor,
    has_write_noise,
    move_level,
    move_pulse,
    nominal_hidden,
    pin_stuck,
    quantize,
    read_noise,
    sample_dtod,
    sample_hidden,
    write_noise,
)


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


def load_device(spec, **overrides) -> DeviceModel:
    """A DeviceModel from a preset name, a TOML file path (ends in .toml) or a DeviceModel."""
    if isinstance(spec, DeviceModel):
        return dataclasses.replace(spec, **overrides) if overrides else spec
    if isinstance(spec, str) and spec.endswith(".toml"):
        return load_device_file(spec, **overrides)
    return load_preset(spec, **overrides)


# -- mapping ---------------------------------------------------------------------
def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)



def _as_array(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


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


def update_pairs(prog: ProgrammedWeights, dW, device: DeviceModel, rng=None, dtod=None,
                 hidden: HiddenParameters | None = None, residual: np.ndarray | None = None):
    """One update of every device pair; returns (new ProgrammedWeights, moved (2, N, N), saturated (N, N)).

    The target is the canonical pair (one device at g_min) of W_eff + dW, clipped to +-w_max
    (saturation, as hardware does, not an error; ``saturated`` marks where). Each device
    moves toward its target by the model's update rule (``move_level`` or ``move_pulse``),
    then gets write noise (the level rule: every device, a fresh program-and-verify error;
    the pulse rule: devices that received pulses). ``dtod`` gains divide out first and back
    in after, so a mismatched instance keeps its mismatch; ``hidden``: the instance's other
    per-device parameters (default: none spread); ``residual`` (2, N, N): sub-step requests
    carried between updates (sub_step "accumulate"), updated in place.
    """
    dW = _as_array(dW)
    if dW.shape != prog.Gp.shape or not np.isfinite(dW[prog.mask]).all():
        raise ValueError(f"dW must be finite with shape {prog.Gp.shape}")
    noisy = has_write_noise(device)
    if (noisy or device.rounding == "stochastic" or device.dg_min_std > 0) and rng is None:
        raise ValueError(f"device {device.name} has write noise, stochastic rounding or pulse spread: pass rng")
    hidden = hidden or nominal_hidden(device)
    fp, fm = dtod if dtod is not None else (np.ones(dW.shape), np.ones(dW.shape))
    Gp0 = np.where(prog.mask, prog.Gp / fp, device.g_min)
    Gm0 = np.where(prog.mask, prog.Gm / fm, device.g_min)
    W0 = (Gp0 - Gm0) / prog.g_unit
    W1 = np.clip(W0 + dW, -device.w_max, device.w_max)
    saturated = prog.mask & (W1 != W0 + dW)
    pair = -3  # the axis of (G+, G-) in the (2, N, N) arrays of device_update
    target = np.stack([device.g_min + np.maximum(W1, 0.0) * prog.g_unit,
                       device.g_min + np.maximum(-W1, 0.0) * prog.g_unit], axis=pair)
    move = move_pulse if device.update_rule == "pulse" else move_level
    r = None if rng is None else _rng(rng)
    G, moved = move(np.stack([Gp0, Gm0], axis=pair), target, device, hidden, residual, r)
    if noisy:
        Gp, Gm = write_noise(G[..., 0, :, :], device, r), write_noise(G[..., 1, :, :], device, r)
        noised = np.stack([Gp, Gm], axis=pair)
        G = noised if device.update_rule == "level" else np.where(moved, noised, G)
    G = pin_stuck(G, device, hidden)
    if hidden.stuck is not None:
        moved = moved & (hidden.stuck == 0)
    Gp, Gm = np.where(prog.mask, G[..., 0, :, :] * fp, 0.0), np.where(prog.mask, G[..., 1, :, :] * fm, 0.0)
    return ProgrammedWeights(Gp, Gm, prog.g_unit, prog.mask, 0), moved & prog.mask[..., None, :, :], saturated


def apply_update(prog: ProgrammedWeights, dW, device: DeviceModel, rng=None, dtod=None) -> ProgrammedWeights:
    """Incremental write-back of dW through the device model (``update_pairs`` without hidden
    parameters or carried residuals): the new ProgrammedWeights."""
    return update_pairs(prog, dW, device, rng, dtod)[0]


# -- one device instance in the learning loop ---------------------------------------------
def instance_seed(device_seed: int, trial: int) -> np.random.SeedSequence:
    """The random stream of trial ``trial``'s device instance (its d2d draw, write noise): the
    same for every backend, so ngspice and the digital surrogate hold the same devices."""
    return np.random.SeedSequence([int(device_seed), int(trial)])


READ_STREAM = 1  # spawn key of an instance's read stream (read noise), apart from its write stream


class DeviceArray:
    """The device pairs of one network trial: programmed once, then changed by updates only.

    Every weight update passes through ``update`` (aihwkit's rule: the device model is in
    the loop). ``nominal_weights`` is what the pairs hold before this instance's d2d gain
    mismatch, ``realised_weights`` what they hold with it (the two directions of a symmetric
    weight then differ), ``read()`` what one solve sees (with drift and read noise; every
    backend calls it once per solve, so all draw the same read noise from the instance's
    seed). ``lost_fraction(topology)``: per block, the fraction of requested weight changes
    since the last call that moved no device (below one step), the saturated ones excluded.
    """

    def __init__(self, device: DeviceModel, mask: np.ndarray, seed, clip: bool = False, topology=None):
        self.device, self.mask, self.clip, self.topology = device, np.asarray(mask, bool), clip, topology
        ss = seed if isinstance(seed, np.random.SeedSequence) else None
        if ss is None and not isinstance(seed, np.random.Generator):
            ss = np.random.SeedSequence(seed)
        self.rng = np.random.default_rng(seed if ss is None else ss)
        # the read stream is its own, so read noise never shifts the write stream
        if ss is not None:
            self.read_rng = np.random.default_rng(np.random.SeedSequence(ss.entropy,
                                                                         spawn_key=(*ss.spawn_key, READ_STREAM)))
        else:  # a Generator as the seed: the read stream branches off it only when the model reads noisily
            self.read_rng = np.random.default_rng(self.rng.integers(2 ** 63) if device.read_varies else 0)
        self.dtod = sample_dtod(self.mask.shape, device, self.rng) if device.stochastic else None
        self.hidden = sample_hidden(self.mask.shape, device, self.rng) if device.has_hidden_parameters else None
        shape = (2, *self.mask.shape)
        self.residual = np.zeros(shape) if device.sub_step == "accumulate" else None
        self.age = np.zeros(shape) if device.drift_nu > 0 else None
        self.prog: ProgrammedWeights | None = None
        self.n_clipped = 0
        self.requested = np.zeros(self.mask.shape, np.int64)  # since the last lost_fraction()
        self.lost = np.zeros(self.mask.shape, np.int64)

    def program(self, W) -> ProgrammedWeights:
        """Write W afresh (every device, from its canonical pair)."""
        prog = weights_to_conductances(W, self.device, self.rng if self.device.stochastic else None,
                                       mask=self.mask, clip=self.clip, dtod=self.dtod)
        if self.hidden is not None:  # each device's own range, stuck devices on their bound
            fp, fm = self.dtod if self.dtod is not None else (1.0, 1.0)
            G = pin_stuck(np.stack([np.where(self.mask, prog.Gp / fp, self.device.g_min),
                                    np.where(self.mask, prog.Gm / fm, self.device.g_min)]), self.device, self.hidden)
            prog = ProgrammedWeights(np.where(self.mask, G[0] * fp, 0.0), np.where(self.mask, G[1] * fm, 0.0),
                                     prog.g_unit, prog.mask, prog.n_clipped)
        if self.residual is not None:
            self.residual[...] = 0.0
        if self.age is not None:
            self.age[...] = 0.0
        self.prog = prog
        self.n_clipped = self.prog.n_clipped
        return self.prog

    def update(self, step) -> np.ndarray:
        """Move every device by the weight step (N, N); returns where a conductance changed."""
        if self.prog is None:
            raise RuntimeError("program the devices before updating them")
        old = self.prog
        self.prog, moved, saturated = update_pairs(old, step, self.device, self.rng, self.dtod, self.hidden,
                                                   self.residual)
        return self._account(old, step, moved, saturated)

    def _account(self, old: ProgrammedWeights, step, moved: np.ndarray, saturated: np.ndarray) -> np.ndarray:
        """After an update: lost-update counts and drift ages; returns where a conductance changed."""
        asked = self.mask & (_as_array(step) != 0) & ~saturated
        if self.hidden is not None and self.hidden.stuck is not None:
            asked &= ~(self.hidden.stuck != 0).any(0)  # a stuck device is no sub-step loss: not counted
        self.requested += asked
        self.lost += asked & ~moved.any(0)
        if self.age is not None:
            self.age += self.device.drift_dt
            self.age[moved] = 0.0
        return (self.prog.Gp != old.Gp) | (self.prog.Gm != old.Gm)

    def lost_fraction(self, topology=None, reset: bool = True) -> dict[str, float | None]:
        """Per block "src-dst" (layers): lost / requested weight changes since the last call (None:
        none requested). Counted per device pair (each direction of a symmetric weight is one).
        topology: default the one the array was made for."""
        topology = topology if topology is not None else self.topology
        if topology is None:
            raise ValueError("lost_fraction needs the network's topology (its blocks)")
        out = {}
        for blk in topology.blocks():
            sel = topology.block_mask(blk.src, blk.dst)
            n = int(self.requested[sel].sum())
            out[f"{blk.src}-{blk.dst}"] = None if n == 0 else int(self.lost[sel].sum()) / n
        if reset:
            self.requested[...] = 0
            self.lost[...] = 0
        return out

    def read(self) -> ProgrammedWeights:
        """The conductances one solve sees: the written ones with drift and read noise (one draw
        from the read stream per call); the written ones themselves when neither is on."""
        if not self.device.read_varies:
            return self.prog
        G = np.stack([self.prog.Gp, self.prog.Gm])
        if self.age is not None:
            G = G * drift_factor(self.age, self.device, self.hidden or nominal_hidden(self.device))
        G = np.where(self.mask, read_noise(G, self.device, self.read_rng), 0.0)
        return ProgrammedWeights(G[0], G[1], self.prog.g_unit, self.mask, self.prog.n_clipped)

    def nominal_weights(self) -> np.ndarray:
        fp, fm = self.dtod if self.dtod is not None else (1.0, 1.0)
        Gp = np.where(self.mask, self.prog.Gp / fp, 0.0)
        Gm = np.where(self.mask, self.prog.Gm / fm, 0.0)
        return conductances_to_weights(Gp, Gm, self.prog.g_unit)

    def realised_weights(self) -> np.ndarray:
        return self.prog.weights()

    def state_dict(self) -> dict:
        d = {"Gp": self.prog.Gp.copy(), "Gm": self.prog.Gm.copy(), "rng": self.rng.bit_generator.state,
             "n_clipped": self.n_clipped, "read_rng": self.read_rng.bit_generator.state,
             "requested": self.requested.copy(), "lost": self.lost.copy()}
        for k in ("residual", "age"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k).copy()
        return d

    def load_state_dict(self, d: dict) -> None:
        self.prog = ProgrammedWeights(np.asarray(d["Gp"]), np.asarray(d["Gm"]), self.device.g_unit, self.mask)
        self.rng.bit_generator.state = d["rng"]
        self.n_clipped = int(d["n_clipped"])
        if "read_rng" in d:  # checkpoints from before read noise existed have none
            self.read_rng.bit_generator.state = d["read_rng"]
            self.requested[...], self.lost[...] = d["requested"], d["lost"]
        for k in ("residual", "age"):
            if getattr(self, k) is not None and k in d:
                getattr(self, k)[...] = d[k]


def symmetrise(W: np.ndarray, directed: bool) -> np.ndarray:
    """The weight a Hopfield network holds for two device pairs: the mean of both directions."""
    return W if directed else 0.5 * (W + W.T)


def weight_asymmetry(W: np.ndarray) -> float:
    """||W - W^T||_F / ||W||_F (0 for a symmetric matrix or all-zero W)."""
    n = float(np.linalg.norm(W))
    return 0.0 if n == 0 else float(np.linalg.norm(W - W.T)) / n
