import numpy as np
import pytest
import torch

from eqprop.metrics import BlockStats, log_spread
from eqprop.topology import complete_directed, mlff, small_world


def test_rms_per_block_matches_definition():
    t = small_world((3, 4, 4, 2), 0.4, seed=1)
    rng = np.random.default_rng(0)
    A = rng.normal(size=(t.n, t.n))
    dW = torch.tensor((A + A.T) * t.mask)
    st = BlockStats(t)
    r = st.add(dW).numpy()
    for k in range(3):
        blk = t.block_mask(k, k + 1)  # both triangles: each connection twice
        expected = np.sqrt((dW.numpy()[blk] ** 2).sum() / 2 / (blk.sum() / 2))
        assert r[k] == pytest.approx(expected)
    st.add(2 * dW)
    assert np.allclose(st.mean_rms(), 1.5 * r)
    m = st.mean_abs_dw()
    skip = t.block_mask(0, 2)
    assert m[0, 2] == pytest.approx(1.5 * np.abs(dW.numpy()[skip]).sum() / 2 / (skip.sum() / 2))
    assert np.isnan(m[0, 0]), "no intralayer connections"


def test_log_spread_is_population_std_of_log10():
    assert log_spread([1e-2, 1e-3]) == pytest.approx(0.5)
    assert log_spread([1e-3, 1e-3, 1e-3]) == 0.0
    assert log_spread([1e-3, 0.0]) == float("inf"), "a block that never changed: vanished gradient"
    assert np.isnan(log_spread([1e-3, -1.0])) and np.isnan(log_spread([1e-3, float("nan")]))


def test_directed_metrics_count_both_directions():
    t = complete_directed(2, 3, 2)
    dW = torch.zeros(t.n, t.n, dtype=torch.float64)
    dW[5, 2] = 3.0  # output -> hidden only
    st = BlockStats(t)
    r = st.add(dW).numpy()
    assert r[1] == pytest.approx(3.0 / np.sqrt(t.block_mask(1, 2).sum()))
    assert r[1] > 0 and st.counts[1, 2] == 12


def test_mlff_block_counts():
    st = BlockStats(mlff((4, 5, 3)))
    assert st.counts[0, 1] == 20 and st.counts[1, 2] == 15 and st.counts[0, 2] == 0
