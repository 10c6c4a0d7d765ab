import numpy as np
import pytest

from eqprop.network import Network, skip_init_bound
from eqprop.topology import Topology, complete_directed, mlff, small_world


def layer_dist(topo):
    lay = topo.layer_of
    return np.abs(lay[:, None] - lay[None, :])


def test_mlff_connects_exactly_adjacent_layers():
    t = mlff((3, 4, 2))
    assert t.n_connections == 3 * 4 + 4 * 2
    assert np.all(t.mask == (layer_dist(t) == 1))
    assert [b.kind for b in t.blocks()] == ["adjacent", "adjacent"]


@pytest.mark.parametrize("sizes,p", [((20, 30, 30, 30, 5), 0.1), ((10, 10, 10, 10, 10, 10, 1), 0.3),
                                     ((13, 10, 10, 3), 0.05)])
def test_small_world_replacement_semantics(sizes, p):
    t = small_world(sizes, p, seed=3)
    ref = mlff(sizes)
    m, d, lay = t.mask, layer_dist(t), t.layer_of
    assert np.array_equal(m, m.T) and not np.any(np.diag(m))
    L = len(sizes)
    for layer in (0, L - 1):  # nothing inside the input or output layer
        sel = lay == layer
        assert not m[np.ix_(sel, sel)].any()
    assert not np.any(m & (d == 0)), "no intralayer pairs unless asked for"
    removed = ref.mask & ~m
    assert np.all(d[removed] == 1), "only adjacent pairs are removed"
    added = m & ~ref.mask
    assert np.all(d[added] >= 2)
    assert t.n_connections == ref.n_connections, "replace keeps the count"
    n_exist = ref.n_connections
    n = t.info["n_replaced"]
    assert t.info["actual_p"] == pytest.approx(n / n_exist)
    sd = np.sqrt(n_exist * p * (1 - p))
    assert abs(n - n_exist * p) <= 4 * sd + 1, "n ~ Binomial(N_existing, p)"
    # a removed pair may come back (it returns to the pool), so removed <= replaced
    assert removed.sum() // 2 <= n


def test_small_world_is_reproducible_from_seed_and_saves(tmp_path):
    a = small_world((20, 30, 30, 30, 5), 0.2, seed=7)
    b = small_world((20, 30, 30, 30, 5), 0.2, seed=7)
    c = small_world((20, 30, 30, 30, 5), 0.2, seed=8)
    assert np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.mask, c.mask)
    a.save(tmp_path / "t.npz")
    back = Topology.load(tmp_path / "t.npz")
    assert np.array_equal(back.mask, a.mask) and back.sizes == a.sizes and back.info == a.info


def test_small_world_p_extremes_and_add_mode():
    sizes = (8, 12, 12, 12, 4)
    assert np.array_equal(small_world(sizes, 0.0, seed=1).mask, mlff(sizes).mask)
    full = small_world(sizes, 1.0, seed=1)
    assert full.info["actual_p"] == 1.0
    add = small_world(sizes, 0.2, seed=1, mode="add")
    ref = mlff(sizes)
    assert np.all(add.mask[ref.mask]), "add mode removes nothing"
    assert add.n_connections == ref.n_connections + add.info["n_replaced"]


def test_small_world_intralayer_and_fixed_count_variants():
    sizes = (6, 8, 8, 3)
    t = small_world(sizes, 0.1, seed=0, intralayer=True)
    lay, d = t.layer_of, layer_dist(t)
    hidden_intra = (d == 0) & (lay[:, None] > 0) & (lay[:, None] < 3)
    assert t.mask[hidden_intra].sum() > 0.7 * hidden_intra.sum()
    n = small_world(sizes, seed=0, n_replace=10)
    n_o = mlff(sizes).n_connections
    assert n.info["n_replaced"] == 10
    assert n.info["p"] == pytest.approx(1 - ((n_o - 1) / n_o) ** 10)
    assert n.n_connections == n_o


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_small_world_rejects_p_outside_unit_interval(bad):
    with pytest.raises(ValueError, match="p must lie in"):
        small_world((4, 5, 5, 2), bad)


def test_bad_sizes_and_masks_raise():
    with pytest.raises(ValueError):
        mlff((5,))
    with pytest.raises(ValueError):
        mlff((5, 0, 2))
    m = mlff((2, 2)).mask.copy()
    m[0, 2] = False
    with pytest.raises(ValueError, match="symmetric"):
        Topology((2, 2), m)


@pytest.mark.parametrize("sizes,a", [
    ((784, 500, 500, 500, 10), 0.0829), ((784,) + (100,) * 5 + (10,), 0.168),
    ((10,) + (10,) * 5 + (1,), 0.5795), ((10,) + (10,) * 8 + (1,), 0.5689),
    ((13,) + (10,) * 5 + (3,), 0.5635), ((13,) + (10,) * 8 + (3,), 0.5582)])
def test_skip_init_bound_matches_paper(sizes, a):
    assert skip_init_bound(sizes) == pytest.approx(a, abs=6e-4)


def test_init_respects_bounds_mask_and_symmetry():
    t = small_world((10, 10, 10, 10, 10, 10, 1), 0.3, seed=2)
    net = Network.init(t, seed=0)
    W = net.W.numpy()
    d = layer_dist(t)
    a = skip_init_bound(t.sizes)
    assert np.array_equal(W, W.T) and np.all(W[~t.mask] == 0)
    assert np.abs(W[(d >= 2) & t.mask]).max() <= a
    assert np.abs(W[(d >= 2) & t.mask]).max() > 0.8 * a
    assert np.abs(W[t.layer_slice(5), t.layer_slice(6)]).max() <= np.sqrt(6 / 11)


def test_complete_directed():
    t = complete_directed(2, 5, 1)
    assert t.directed and not np.any(np.diag(t.mask))
    assert not t.mask[:, :2].any(), "nothing drives the inputs"
    assert t.mask[2:, 2:].sum() == 6 * 5


def test_small_world_needs_a_layer_to_skip():
    with pytest.raises(ValueError, match="no layer pairs >= 2 apart"):
        small_world((4, 3), 0.5, seed=0)
    assert small_world((4, 3), 0.0).n_connections == 12


def test_full_replacement_moves_every_adjacent_connection():
    sizes = (6, 8, 8, 8, 3)
    t = small_world(sizes, 1.0, seed=4)
    ref = mlff(sizes)
    assert t.info["n_replaced"] == ref.n_connections
    # every connection now in the mask was drawn from the pool; most must be skips
    assert (t.mask & (layer_dist(t) >= 2)).sum() // 2 > 0.5 * ref.n_connections


def test_n_replace_only_in_replace_mode():
    with pytest.raises(ValueError, match="n_replace"):
        small_world((4, 5, 5, 2), mode="add", n_replace=3)


def test_directed_one_way_skip_is_a_block():
    t = complete_directed(2, 3, 2)
    m = np.zeros_like(t.mask)
    m[6, 2] = True  # output neuron 6 drives hidden 2 only (a layer-2 -> layer-1 weight)... and
    m[0, 6] = True  # input 0 drives output 6 (a skip, forward only)
    d = Topology(t.sizes, m, directed=True)
    kinds = {(b.src, b.dst): (b.kind, b.count) for b in d.blocks()}
    assert kinds[(1, 2)] == ("adjacent", 1) and kinds[(0, 2)] == ("skip", 1)


@pytest.mark.parametrize("sizes,n_exist", [((784, 500, 500, 500, 10), 897_000),
                                           ((784,) + (100,) * 5 + (10,), 119_400)])
def test_paper_existing_connection_counts(sizes, n_exist):
    assert mlff(sizes).n_connections == n_exist
