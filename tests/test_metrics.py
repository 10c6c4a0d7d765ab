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


def test_trial_stats_equal_single_network_stats_directed_and_undirected():
    rng = np.random.default_rng(3)
    for topos in ([complete_directed(2, 3, 2)] * 2, [small_world((3, 4, 4, 2), 0.4, seed=s) for s in (1, 2)]):
        n = topos[0].n
        dWs = []
        for t in topos:
            A = rng.normal(size=(n, n))
            dWs.append(torch.tensor((A if t.directed else A + A.T) * t.mask))
        many = BlockStats(topos, full_matrix=True)
        singles = [BlockStats(t, full_matrix=True) for t in topos]
        for k in range(2):  # two batches
            r = many.add(torch.stack([(k + 1) * d for d in dWs]))
            for i, st in enumerate(singles):
                np.testing.assert_allclose(r[i].numpy(), st.add((k + 1) * dWs[i]).numpy(), rtol=1e-12)
        for i, st in enumerate(singles):
            np.testing.assert_allclose(many.mean_rms()[i], st.mean_rms(), rtol=1e-12)
            np.testing.assert_allclose(many.mean_abs_dw()[i], st.mean_abs_dw(), rtol=1e-12)
            np.testing.assert_allclose(many.mean_abs_dw_matrix()[i], st.mean_abs_dw_matrix(), rtol=1e-12)
            assert many.log_spread()[i] == pytest.approx(st.log_spread(), rel=1e-12)
        assert np.asarray(many.end_epoch()).shape == (2, len(topos[0].sizes) - 1)


def test_block_stats_resume_from_state_dict():
    t = small_world((3, 4, 4, 2), 0.4, seed=1)
    dW = torch.tensor(np.random.default_rng(0).normal(size=(t.n, t.n)) * t.mask)
    dW = dW + dW.T
    a = BlockStats(t)
    a.add(dW)
    b = BlockStats(t)
    b.load_state_dict(a.state_dict())
    a.add(2 * dW)
    b.add(2 * dW)
    np.testing.assert_array_equal(a.mean_rms(), b.mean_rms())
    old = {"rms_sum": a.rms_sum[0].numpy(), "rms_n": 2, "abs_sum": a.abs_sum[0].numpy(), "abs_n": 2}
    c = BlockStats(t)
    c.load_state_dict(old)  # a checkpoint written before trials shared this class (numpy, no T axis)
    np.testing.assert_array_equal(c.mean_rms(), a.mean_rms())
    snap = a.state_dict()
    kept = snap["rms_sum"].clone()
    a.add(dW)
    assert torch.equal(snap["rms_sum"], kept), "a state_dict is a copy, not a view of the live sums"
    with pytest.raises(ValueError, match="rms_sum has shape"):
        c.load_state_dict(dict(old, rms_sum=np.zeros(7)))
    with pytest.raises(ValueError, match="no per-connection"):
        BlockStats(t, full_matrix=True).load_state_dict(old)
    tiny = BlockStats(t)
    assert tiny.add((1e-24 * dW).float()).numpy().min() > 0, "fp32 corrections of 1e-24 must not square to 0"
