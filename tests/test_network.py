"""Network: validation of one network, stacks of T trials (views, round trip, errors), persistence."""
import numpy as np
import pytest
import torch

from eqprop.network import Network, NetworkError
from eqprop.topology import mlff, small_world

SIZES = [6, 5, 4, 4, 3]


def trial_nets(T=3, sizes=SIZES):
    """Different seeds, p values and hence masks (trial 0 an MLFF)."""
    return [Network.init(mlff(sizes) if t == 0 else small_world(sizes, p=0.15 * t, seed=t), seed=10 + t)
            for t in range(T)]


def test_validation_errors_name_the_problem():
    t = mlff((3, 4, 2))
    net = Network.init(t, seed=0)
    with pytest.raises(NetworkError, match="shape"):
        Network(t, torch.zeros(8, 8), torch.zeros(9))
    with pytest.raises(NetworkError, match=r"b has shape"):
        Network(t, net.W, torch.zeros(5))
    with pytest.raises(NetworkError, match="floating point"):
        Network(t, torch.zeros(9, 9, dtype=torch.int64), torch.zeros(9))
    W = net.W.clone()
    W[3, 5] = float("nan")
    W[5, 3] = float("nan")
    with pytest.raises(NetworkError, match="non-finite"):
        Network(t, W, net.b)
    W = net.W.clone()
    W[0, 1] = W[1, 0] = 0.5  # both inputs: not in the mask
    with pytest.raises(NetworkError, match="outside the topology's mask"):
        Network(t, W, net.b)
    W = net.W.clone()
    W[0, 3] += 0.1
    with pytest.raises(NetworkError, match="symmetric"):
        Network(t, W, net.b)
    b = net.b.clone()
    b[0] = 1.0
    with pytest.raises(NetworkError, match="input neurons"):
        Network(t, net.W, b)


def test_save_load_roundtrip(tmp_path):
    net = Network.init(small_world((5, 6, 6, 6, 2), 0.3, seed=1), seed=4)
    net.b[5:] = torch.linspace(-1, 1, net.topology.n - 5)
    net.save(tmp_path / "net.npz")
    back = Network.load(tmp_path / "net.npz")
    assert torch.equal(back.W, net.W) and torch.equal(back.b, net.b)
    assert np.array_equal(back.topology.mask, net.topology.mask)
    with pytest.raises(NetworkError, match="one trial at a time"):
        Network.stack(trial_nets(2)).save(tmp_path / "stack.npz")


def test_stack_round_trip_and_views():
    ns = trial_nets()
    st = Network.stack(ns)
    assert st.stacked and st.T == 3 and st.W.shape == (3, 22, 22) and st.b.shape == (3, 22)
    assert st.sizes == tuple(SIZES) and st.topologies == tuple(n.topology for n in ns)
    assert st.mask_tensor().shape == (3, 22, 22)
    for t, n in enumerate(ns):
        assert torch.equal(st.mask_tensor()[t], torch.as_tensor(n.topology.mask))
    for a, b in zip(ns, st.trials()):
        assert torch.equal(a.W, b.W) and torch.equal(a.b, b.b) and a.topology is b.topology and not b.stacked
    view, copy = st.trial(1), st.trial(1, copy=True)
    st.W[1].mul_(2.0)  # in place, as apply_update does
    assert torch.equal(view.W, st.W[1]) and torch.equal(view.W, 2 * ns[1].W)
    assert torch.equal(copy.W, ns[1].W), "copy=True does not follow the stack"
    ns[0].W.mul_(3.0)
    assert not torch.equal(st.W[0], ns[0].W), "stack copies the networks' tensors"
    with pytest.raises(IndexError):
        st.trial(3)


def test_plain_network_as_a_stack_of_one():
    net = trial_nets(1)[0]
    assert not net.stacked and net.T == 1 and net.topologies == (net.topology,)
    one = net.as_stack()
    assert one.stacked and one.T == 1 and one.W.shape == (1, 22, 22)
    one.W.mul_(0.5)  # a view: same storage
    assert torch.equal(net.W, one.W[0])
    assert net.trial(0) is net and torch.equal(net.trial(0, copy=True).W, net.W)
    with pytest.raises(IndexError, match="one trial"):
        net.trial(1)
    st = Network.stack([net])
    assert st.as_stack() is st and st.mask_tensor().shape == (1, 22, 22)


def test_stack_rejects_mismatched_trials():
    ns = trial_nets(2)
    with pytest.raises(NetworkError, match="trial 1 has sizes"):
        Network.stack([ns[0], Network.init(mlff([6, 5, 3]))])
    with pytest.raises(NetworkError, match="trial 1 is torch.float64"):
        Network.stack([ns[0], ns[1].to(dtype=torch.float64)])
    with pytest.raises(NetworkError, match="at least one"):
        Network.stack([])
    with pytest.raises(NetworkError, match="already a stack"):
        Network.stack([Network.stack(ns)])
    topos = tuple(n.topology for n in ns)
    with pytest.raises(NetworkError, match="W has shape"):
        Network(topos, torch.zeros(2, 5, 5), torch.zeros(2, 5))
    with pytest.raises(NetworkError, match="b has shape"):
        Network(topos, torch.zeros(2, 22, 22), torch.zeros(3, 22))
    with pytest.raises(NetworkError, match="trial 1 has sizes"):
        Network((ns[0].topology, mlff([6, 5, 3])), torch.zeros(2, 22, 22), torch.zeros(2, 22))
    # per-trial masks: trial 1's skip connection is outside trial 0's (MLFF) mask
    W = torch.stack([ns[1].W, ns[1].W])
    assert ((ns[1].W != 0) & ~torch.as_tensor(ns[0].topology.mask)).any(), "trial 1 has a skip MLFF lacks"
    with pytest.raises(NetworkError, match=r"W\[0, .*outside the topology's mask"):
        Network(topos, W, torch.zeros(2, 22))
    Network((ns[1].topology, ns[1].topology), W, torch.zeros(2, 22))  # the same W under trial 1's mask is fine
