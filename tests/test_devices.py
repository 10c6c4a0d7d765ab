"""circuits.devices: differential mapping, quantisation, noise, mismatch, presets."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from circuits.devices import (
    DeviceModel,
    apply_update,
    conductances_to_weights,
    list_presets,
    load_preset,
    program_network,
    sample_dtod,
    weights_to_conductances,
)
from eqprop.network import Network
from eqprop.topology import small_world


def weights(n=12, scale=1.0, seed=0):
    return np.random.default_rng(seed).uniform(-scale, scale, (n, n))


def test_continuous_round_trip_is_exact():
    dev = DeviceModel(g_min=1e-6, g_max=1e-4, w_max=1.0)
    W = weights()
    prog = weights_to_conductances(W, dev)
    Gp, Gm, g_unit = prog  # unpacks as a triple
    assert g_unit == pytest.approx(9.9e-5)
    assert (Gp >= dev.g_min).all() and (Gm >= dev.g_min).all() and (Gp <= dev.g_max * (1 + 1e-12)).all()
    assert np.minimum(Gp, Gm) == pytest.approx(np.full(W.shape, dev.g_min))  # one device of a pair rests at g_min
    assert np.abs(conductances_to_weights(Gp, Gm, g_unit) - W).max() < 1e-12
    assert prog.n_clipped == 0


@pytest.mark.parametrize("bits", [1, 3, 7])
def test_quantised_round_trip_within_half_lsb(bits):
    dev = DeviceModel(g_min=1e-6, g_max=1e-5, bits=bits, w_max=2.0)
    W = weights(scale=2.0)
    Gp, Gm, g = weights_to_conductances(W, dev)
    err = np.abs(conductances_to_weights(Gp, Gm, g) - W)
    assert err.max() <= dev.lsb_weight / 2 * (1 + 1e-9)
    levels = dev.g_min + np.arange(2 ** bits) * (dev.g_max - dev.g_min) / (2 ** bits - 1)
    assert np.abs(Gp[..., None] - levels).min(-1).max() < 1e-18  # every device sits on a level


def test_out_of_range_raises_unless_clip():
    dev = DeviceModel(w_max=0.5)
    W = weights()
    with pytest.raises(ValueError, match=r"exceed the device range \|W\| <= w_max=0.5"):
        weights_to_conductances(W, dev)
    prog = weights_to_conductances(W, dev, clip=True)
    assert prog.n_clipped == int((np.abs(W) > 0.5).sum()) > 0
    assert np.abs(prog.weights()).max() <= 0.5 + 1e-12
    with pytest.raises(ValueError, match="non-finite"):
        weights_to_conductances(np.full((2, 2), np.nan), dev)


def test_noise_and_mismatch_are_seeded_and_bounded():
    dev = DeviceModel(g_min=1e-6, g_max=1e-5, w_max=1.0, write_noise_std=0.05, g_dtod=0.1)
    W = weights()
    with pytest.raises(ValueError, match="rng"):
        weights_to_conductances(W, dev)
    a = weights_to_conductances(W, dev, rng=3)
    b = weights_to_conductances(W, dev, rng=3)
    c = weights_to_conductances(W, dev, rng=4)
    assert np.array_equal(a.Gp, b.Gp) and not np.array_equal(a.Gp, c.Gp)
    err = a.weights() - W
    assert 0.01 < err.std() < 0.3  # noise of order write_noise_std * w_max, g_dtod on top
    # the same instance (dtod gains) reprogrammed without write noise reproduces its mismatch exactly
    quiet = dataclasses.replace(dev, write_noise_std=0.0)
    gains = sample_dtod(W.shape, dev, rng=1)
    p1 = weights_to_conductances(W, quiet, rng=0, dtod=gains)
    p2 = weights_to_conductances(W, quiet, rng=9, dtod=gains)
    assert np.array_equal(p1.Gp, p2.Gp)


def test_symmetric_network_becomes_asymmetric_with_mismatch():
    net = Network.init(small_world((3, 5, 2), 0.2, 0), seed=0, dtype=torch.float64)
    dev = load_preset("ideal", w_max=2.0, g_dtod=0.05)
    prog = program_network(net, dev, rng=0)
    We = prog.weights()
    mask = net.topology.mask
    assert (We[~mask] == 0).all() and (prog.Gp[~mask] == 0).all()
    assert not np.allclose(We, We.T)
    ideal = program_network(net, load_preset("ideal", w_max=2.0))
    assert np.abs(ideal.weights() - net.W.numpy()).max() < 1e-12


def test_apply_update_asymmetry_and_saturation():
    dev = DeviceModel(g_min=1e-6, g_max=1e-5, w_max=1.0)
    prog = weights_to_conductances(np.zeros((4, 4)), dev)
    up = apply_update(prog, np.full((4, 4), 0.2), dev)
    assert np.allclose(up.weights(), 0.2, atol=1e-12)
    down = apply_update(up, np.full((4, 4), -0.5), dev)  # G+ back to g_min, G- up
    assert np.allclose(down.weights(), -0.3, atol=1e-12) and np.allclose(down.Gp, dev.g_min)
    skew = dataclasses.replace(dev, asymmetry=0.5)
    s1 = apply_update(prog, np.full((4, 4), 0.2), skew)  # G+ rises 1.25x
    assert np.allclose(s1.weights(), 0.25, atol=1e-12)
    s2 = apply_update(s1, np.full((4, 4), -0.2), skew)  # G+ falls 0.75x of the asked 0.2
    assert np.allclose(s2.weights(), 0.1, atol=1e-12)
    big = apply_update(prog, np.full((4, 4), 5.0), dev)
    assert (big.Gp <= dev.g_max * (1 + 1e-12)).all() and np.allclose(big.weights(), 1.0)


def test_presets_load_and_cite():
    names = list_presets()
    assert {"ideal", "taox_hfox_rram", "pcm"} <= set(names)
    for name in names:
        dev = load_preset(name)
        assert dev.name == name and dev.source and dev.g_min > 0
    rram = load_preset("taox_hfox_rram")
    assert rram.bits == 7 and rram.levels == 128
    pcm = load_preset("pcm", w_max=0.5)
    assert pcm.w_max == 0.5 and pcm.write_noise_coeffs is not None
    with pytest.raises(ValueError, match="no device preset"):
        load_preset("unobtainium")
    with pytest.raises(ValueError, match="unknown fields"):
        load_preset("ideal", colour="red")
    with pytest.raises(ValueError, match="g_min < g_max"):
        DeviceModel(g_min=0.0)
