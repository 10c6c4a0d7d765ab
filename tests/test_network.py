import numpy as np
import pytest
import torch

from eqprop.network import Network, NetworkError
from eqprop.topology import mlff, small_world


def test_validation_errors_name_the_problem():
    t = mlff((3, 4, 2))
    net = Network.init(t, seed=0)
    with pytest.raises(NetworkError, match="shape"):
        Network(t, torch.zeros(8, 8), torch.zeros(9))
    with pytest.raises(NetworkError, match=r"b has shape"):
        Network(t, net.W, torch.zeros(5))
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
