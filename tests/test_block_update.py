"""The update, its application and the statistics on the connected tiles only (ConnectionBlocks):
equal to the dense N x N computation within fp32 rounding, for stacks of MLFF and small-world
trials, undirected (W stays exactly symmetric) and directed, skips dense or sparse."""
import numpy as np
import pytest
import torch

from eqprop import learning
from eqprop.config import EulerConfig
from eqprop.deep_rule import deep_update
from eqprop.learning import ConnectionBlocks, apply_update, connected_abs_max, eqprop_update, rate_tensors
from eqprop.metrics import BlockStats
from eqprop.network import Network
from eqprop.topology import Topology, complete_directed, mlff, small_world

SIZES = (12, 9, 8, 7, 4)


def undirected_trials():
    return [mlff(SIZES), small_world(SIZES, 0.2, seed=1), small_world(SIZES, 0.3, seed=2, intralayer=True)]


def directed_trials():
    """DEEP's complete directed graph, and a directed layered net with one-way skips."""
    rng = np.random.default_rng(5)
    t = small_world(SIZES, 0.25, seed=3)
    mask = t.mask & (rng.random(t.mask.shape) < 0.7)  # drop directions independently: no longer symmetric
    mask[:, :SIZES[0]] = False  # nothing drives an input
    return [complete_directed(12, 24, 4), complete_directed(12, 24, 4)], [Topology(SIZES, mask, directed=True)] * 2


def states(T, B, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    free, nudged = torch.rand(T, B, N, generator=g) * 1.4 - 0.2, torch.rand(T, B, N, generator=g) * 1.4 - 0.2
    return free, nudged  # some outside [0, 1]: rho is taken inside


def dense_and_blocks(topos, skips, valid=None, betas=(0.5, -1.0, 2.0)):
    T, N, n_in = len(topos), topos[0].n, topos[0].n_in
    free, nudged = states(T, 6, N)
    beta = torch.tensor(betas[:T])
    masks = torch.as_tensor(np.stack([t.mask for t in topos]))
    dense = eqprop_update(free, nudged, beta, masks, topos[0].directed, n_in, valid)
    blocks = eqprop_update(free, nudged, beta, ConnectionBlocks(topos, skips=skips), topos[0].directed, n_in, valid)
    return dense, blocks, masks


@pytest.mark.parametrize("skips", ["dense", "sparse"])
def test_block_update_equals_the_dense_rule_undirected(skips):
    valid = torch.ones(3, 6, dtype=torch.bool)
    valid[1, 4:] = False  # a padded short batch
    (dW, db), (bW, bb), masks = dense_and_blocks(undirected_trials(), skips, valid)
    assert dW.abs().max() > 0.1
    torch.testing.assert_close(bW, dW, rtol=0, atol=1e-6)
    assert torch.equal(bb, db)
    assert torch.equal(bW, bW.transpose(-1, -2)), "exactly symmetric"
    assert torch.all(bW[~masks] == 0)


@pytest.mark.parametrize("skips", ["dense", "sparse"])
def test_block_update_equals_the_dense_rule_directed(skips):
    for topos in directed_trials():
        (dW, db), (bW, bb), masks = dense_and_blocks(topos, skips, betas=(0.5, 2.0))
        torch.testing.assert_close(bW, dW, rtol=0, atol=1e-6)
        assert torch.equal(bb, db) and torch.all(bW[~masks] == 0)
    assert not torch.equal(bW, bW.transpose(-1, -2)), "a one-way net's dW is not symmetric"


def test_one_network_and_a_reused_buffer():
    t = small_world(SIZES, 0.2, seed=4)
    free, nudged = states(1, 5, t.n, seed=1)
    mask = torch.as_tensor(t.mask)
    dW, _ = eqprop_update(free[0], nudged[0], 0.7, mask, False, t.n_in)
    blocks = ConnectionBlocks(t, reuse_output=True)
    bW, _ = eqprop_update(free[0], nudged[0], 0.7, blocks, False, t.n_in)
    assert bW.shape == (t.n, t.n)
    torch.testing.assert_close(bW, dW, rtol=0, atol=1e-6)
    again, _ = eqprop_update(nudged[0], free[0], 0.7, blocks, False, t.n_in)
    assert again.data_ptr() == bW.data_ptr(), "the buffer is reused"
    torch.testing.assert_close(again, -dW, rtol=0, atol=1e-6)  # swapping the phases flips the sign
    assert ConnectionBlocks(mlff(SIZES)).entries() == 2 * sum(a * b for a, b in zip(SIZES, SIZES[1:]))
    with pytest.raises(ValueError, match="do not fit"):
        eqprop_update(free, nudged, 0.7, blocks, False, t.n_in)


@pytest.mark.parametrize("skips", ["dense", "sparse"])
def test_apply_update_on_tiles_equals_the_dense_update_bitwise(skips, monkeypatch):
    monkeypatch.setattr(learning, "SKIPS", skips)  # the default apply_update and BlockStats use
    topos = undirected_trials()
    st = Network.stack([Network.init(t, seed=k) for k, t in enumerate(topos)])
    free, nudged = states(3, 6, st.topologies[0].n, seed=2)
    dW, db = eqprop_update(free, nudged, torch.tensor([0.5, -1.0, 2.0]), ConnectionBlocks(topos), False, 12)
    assert len(learning.cached_blocks(st.topologies, "cpu").sparse_skips()) == (skips == "sparse") * sum(
        int(np.triu(t.mask & (np.abs(t.layer_of[:, None] - t.layer_of[None, :]) >= 2)).sum()) for t in topos)
    lr_W, lr_b = rate_tensors(st, [0.1, [0.3, 0.2, 0.1, 0.05], 0.02])
    want_W, want_b = st.W + lr_W * dW, st.b + lr_b * db
    apply_update(st, dW, db, lr_W, lr_b)
    assert torch.equal(st.W, want_W) and torch.equal(st.b, want_b)
    assert torch.equal(st.W, st.W.transpose(-1, -2))
    one = Network.init(topos[1], seed=9)
    want = one.W + 0.05 * dW[1]
    apply_update(one, dW[1], db[1], 0.05, 0.05)  # plain numbers as rates, one network
    assert torch.equal(one.W, want)
    outside = torch.zeros_like(dW[0])
    outside[0, 1] = 1.0  # two inputs: no tile holds this entry
    before = one.W.clone()
    apply_update(one, outside, torch.zeros_like(db[0]), 1.0, 1.0)
    assert torch.equal(one.W, before), "entries outside the connected tiles are no connections: never read"


@pytest.mark.parametrize("skips", ["dense", "sparse"])
def test_connected_abs_max_is_the_dense_max_and_keeps_nan_per_trial(skips, monkeypatch):
    monkeypatch.setattr(learning, "SKIPS", skips)
    topos = undirected_trials()
    st = Network.stack([Network.init(t, seed=k) for k, t in enumerate(topos)])
    assert torch.equal(connected_abs_max(st), st.W.abs().amax((1, 2)))
    t = topos[1]
    skip = np.argwhere(np.triu(t.mask & (np.abs(t.layer_of[:, None] - t.layer_of[None, :]) >= 2)))
    assert len(skip), "the small-world trial needs a skip connection for this test"
    i, j = skip[0]
    st.W[1, j, i] = float("nan")  # the mirror of a skip connection
    a, c = np.argwhere(topos[2].mask & (np.abs(topos[2].layer_of[:, None] - topos[2].layer_of[None, :]) == 1))[0]
    st.W[2, a, c] = 1e7  # an adjacent-layer tile
    m = connected_abs_max(st)
    assert not torch.isnan(m[0]) and torch.isnan(m[1]) and float(m[2]) == 1e7


@pytest.mark.parametrize("skips", ["dense", "sparse"])
def test_block_stats_equal_the_dense_definition(skips, monkeypatch):
    monkeypatch.setattr(learning, "SKIPS", skips)
    for topos in [undirected_trials(), directed_trials()[1]]:
        free, nudged = states(len(topos), 6, topos[0].n, seed=3)
        masks = torch.as_tensor(np.stack([t.mask for t in topos]))
        dW = eqprop_update(free, nudged, 0.5, masks, topos[0].directed, 12)[0].double()
        st = BlockStats(topos, full_matrix=True)
        assert st.blocks.skips == skips
        r = st.add(dW)
        for k, t in enumerate(topos):
            for l in range(len(SIZES) - 1):
                blk = t.block_mask(l, l + 1)
                n = blk.sum() if t.directed else blk.sum() / 2
                want = np.sqrt((dW[k].numpy()[blk] ** 2).sum() / (1 if t.directed else 2) / n)
                assert float(r[k, l]) == pytest.approx(want, rel=1e-12)
            np.testing.assert_allclose(st.mean_abs_dw_matrix()[k], dW[k].abs().numpy(), rtol=1e-12)
            skip = t.block_mask(1, 3)
            if skip.any():
                want = np.abs(dW[k].numpy()[skip]).sum() / (1 if t.directed else 2) / st.counts[k, 1, 3]
                assert st.mean_abs_dw()[k, 1, 3] == pytest.approx(want, rel=1e-12)


def test_deep_rule_takes_the_dense_mask_from_blocks():
    topos = directed_trials()[0]
    blocks = ConnectionBlocks(topos)
    traj = torch.rand(4, 2, 3, topos[0].n, dtype=torch.float64)
    a, _ = deep_update(traj, blocks.mask, 12)
    b, _ = deep_update(traj, torch.as_tensor(np.stack([t.mask for t in topos])), 12)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="skips must be"):
        ConnectionBlocks(topos, skips="csr")
    with pytest.raises(ValueError, match="share layer sizes"):
        ConnectionBlocks([mlff(SIZES), mlff((12, 9, 4))])


# -- the coupling choice, measured on the actual net ------------------------------------------------
def test_coupling_auto_is_measured_once_per_net_and_batch():
    from eqprop import couplings
    from eqprop.couplings import Couplings, choose_coupling, coupling_choices
    net = Network.stack([Network.init(small_world((6, 8, 8, 3), 0.2, seed=s), seed=s) for s in range(2)])
    before = len(coupling_choices())
    assert choose_coupling("blocks", net, 4) == "blocks" and len(coupling_choices()) == before, "explicit: as given"
    for engine in ("fast", "reference"):
        mode = choose_coupling("auto", net, 4, engine)
        rec = coupling_choices()[-1]
        assert rec["engine"] == engine and rec["batch"] == 4 and rec["choice"] == mode
        assert rec["dense_ms"] > 0 and rec["blocks_ms"] > 0
        assert mode == ("blocks" if rec["blocks_ms"] * couplings.BLOCKS_MARGIN < rec["dense_ms"] else "dense")
    n = len(coupling_choices())
    assert n == before + 2
    choose_coupling("auto", net, 4, "fast")
    assert len(coupling_choices()) == n, "cached: the same net at the same batch size is not measured again"
    choose_coupling("auto", net, 5, "fast")
    assert len(coupling_choices()) == n + 1, "another batch size is"
    built = Couplings.build(net.trial(1), "auto", batch=4)  # the reference engine's drive, measured for this net
    assert coupling_choices()[-1]["engine"] == "reference" and coupling_choices()[-1]["trials"] == 1
    assert (built.dense is None) == (coupling_choices()[-1]["choice"] == "blocks")
    mine = coupling_choices(net, 4)
    assert {r["engine"] for r in mine} == {"fast", "reference"} and all(r["batch"] == 4 for r in mine)
    # a resumed run takes its checkpoint's choices (here flipped, so a new measurement would show) ...
    saved = [dict(r, choice="dense" if r["choice"] == "blocks" else "blocks") for r in mine]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(couplings, "_CHOICES", {})
        couplings.restore_coupling_choices(saved)
        assert [choose_coupling("auto", net, 4, r["engine"]) for r in mine] == [r["choice"] for r in saved]
        assert len(coupling_choices()) == 2, "... and measures nothing"
        with pytest.raises(ValueError, match="needs 'key' and 'choice'"):
            couplings.restore_coupling_choices([{"choice": "dense"}])
    with pytest.raises(ValueError, match="batch must be"):
        choose_coupling("auto", net, 0)
    with pytest.raises(ValueError, match="engine must be"):
        choose_coupling("auto", net, 4, "gpu")


def test_a_solvers_checkpoint_holds_only_the_choices_it_relaxed_with():
    """The process measures for every net it meets (other runs, other tests); a checkpoint must not
    depend on that history, or a run resumed in a fresh process differs from one run straight through."""
    from eqprop.couplings import choose_coupling
    from eqprop.fast_relax import FastEulerSolver
    from eqprop.solver import EulerSolver
    other = Network.init(mlff((5, 7, 2)), seed=3)
    choose_coupling("auto", other, 3, "fast")  # someone else's choice, in this process
    net = Network.init(mlff((6, 8, 3)), seed=1)
    x = torch.rand(4, 6, generator=torch.Generator().manual_seed(0))
    for Solver, engine in ((FastEulerSolver, "fast"), (EulerSolver, "reference")):
        solver = Solver(EulerConfig(free_steps=5, nudged_steps=2, coupling="auto"))
        assert solver.state_dict() == {"coupling_choices": []}
        solver.relax(net, x)
        recs = solver.state_dict()["coupling_choices"]
        assert len(recs) == 1 and recs[0]["key"][0] == engine and recs[0]["key"][-1] == 4, recs
        fresh = Solver(EulerConfig(free_steps=5, nudged_steps=2, coupling="auto"))
        fresh.load_state_dict(solver.state_dict(), net)
        assert fresh.state_dict() == solver.state_dict(), "a resumed solver checkpoints what it was given"
        explicit = Solver(EulerConfig(free_steps=5, nudged_steps=2, coupling="dense"))
        explicit.relax(net, x)
        assert explicit.state_dict() == {"coupling_choices": []}, "an explicit mode measures nothing"


def test_trainer_updates_on_tiles_as_with_the_dense_rule(tmp_path):
    """The Trainer hands eqprop_update its ConnectionBlocks (other rules keep the dense mask); two epochs
    of lockstep SW trials train to the same weights and statistics as with the dense rule."""
    from eqprop.config import EulerConfig, RunConfig
    from eqprop.datasets import Dataset
    from eqprop.trainer import Trainer
    rng = np.random.default_rng(0)
    lab = rng.integers(3, size=30)
    eye = np.eye(3, dtype=np.float32)
    data = Dataset("synthetic", "classification", rng.random((20, 6), dtype=np.float32), eye[lab[:20]],
                   rng.random((10, 6), dtype=np.float32), eye[lab[20:]], lab[:20], lab[20:], batch_size=5)
    euler = EulerConfig(free_steps=30, nudged_steps=6, engine="fast")

    def trainer(rule, name):
        cfgs = [RunConfig(dataset="synthetic", hidden=(7, 5, 4), topology="sw", p=0.3, intralayer=s == 1, lr=0.1,
                          batch_size=5, epochs=2, seed=s, out=str(tmp_path / f"{name}{s}")) for s in range(2)]
        return Trainer(cfgs, data, euler=euler, checkpoint=tmp_path / f"{name}.pt", rule=rule)

    tiles, dense = trainer(eqprop_update, "tiles"), trainer(lambda *a: eqprop_update(*a), "dense")
    assert tiles._rule_mask is tiles.blocks and dense._rule_mask is dense.mask
    tiles.run(progress=False)
    dense.run(progress=False)
    torch.testing.assert_close(tiles.net.W, dense.net.W, rtol=0, atol=1e-5)
    assert torch.equal(tiles.net.W, tiles.net.W.transpose(-1, -2))
    np.testing.assert_allclose(tiles.stats.mean_rms(), dense.stats.mean_rms(), rtol=1e-4)
    np.testing.assert_allclose(tiles.stats.mean_abs_dw(), dense.stats.mean_abs_dw(), rtol=1e-4)


@pytest.mark.parametrize("skips", ["dense", "sparse"])
def test_a_neuron_equal_in_both_phases_gets_exactly_zero(skips):
    """As the dense rule: a connection whose two neurons have the same activities in both phases
    (an input and a saturated neuron) gets exactly 0, so a vanished gradient stays 0 in the statistics."""
    topos = undirected_trials()
    free, nudged = states(3, 6, topos[0].n, seed=4)
    nudged[..., :12] = free[..., :12]  # inputs: clamped, the same in both phases
    nudged[..., 30] = free[..., 30]  # a layer-3 neuron that did not move
    dW, _ = eqprop_update(free, nudged, 0.5, ConnectionBlocks(topos, skips=skips), False, 12)
    skip = torch.as_tensor(np.stack([t.mask[:12, 29:31] for t in topos]))  # input -> layer 3: skip connections
    assert bool(skip[..., 1].any()) and bool(skip[..., 0].any())
    assert torch.all(dW[..., :12, 30] == 0) and torch.all(dW[..., 30, :12] == 0)
    assert bool((dW[..., :12, 29][skip[..., 0]] != 0).all()), "a neuron that moved has corrections from the inputs"
