"""on_unsettled = "polish" (circuits.settle): a transient slowed by a mode of time constant ~1/gap tau is
finished by Newton where its fixed point is the limit the last windows extrapolate to; otherwise the
unsettled error stands."""
import numpy as np
import pytest
import torch

from circuits.errors import SimulationError
from circuits.ngspice_runner import library_available
from circuits.settle import geometric_limit, polish_agrees
from circuits.spice_config import SpiceConfig
from eqprop.network import Network
from eqprop.topology import mlff


def geometric_ends(limit, direction, first, ratio, n):
    return [limit + direction * first * ratio ** k for k in range(n)]


def test_geometric_limit_recovers_a_single_decaying_modes_limit():
    rng = np.random.default_rng(0)
    limit, direction = rng.random(7), rng.standard_normal(7)
    for ratio in (0.3, 0.9, 0.98):
        got, why = geometric_limit(geometric_ends(limit, direction, 0.2, ratio, 5))
        assert got is not None and np.abs(got - limit).max() < 1e-9, why
        assert f"ratio {ratio:.4g}" in why


def test_geometric_limit_refuses_what_is_no_single_decaying_mode():
    rng = np.random.default_rng(1)
    limit, direction = rng.random(7), rng.standard_normal(7)
    growing = geometric_ends(limit, direction, 0.01, 1.2, 3)
    assert geometric_limit(growing)[0] is None
    turning = [limit, limit + direction * 0.1, limit + direction * 0.1 + rng.standard_normal(7) * 0.05]
    got, why = geometric_limit(turning)
    assert got is None and "cosine" in why
    assert geometric_limit(geometric_ends(limit, direction, 0.2, 0.5, 2))[0] is None  # two ends: no ratio
    assert "3 needed" in geometric_limit(geometric_ends(limit, direction, 0.2, 0.5, 2))[1]
    assert geometric_limit([limit, limit, limit])[0] is None  # not moving at all


def test_polish_agrees_only_at_the_limit():
    end, limit = np.zeros(3), np.array([0.1, 0.0, 0.05])
    assert polish_agrees(limit + 1e-4, end, limit)[0]  # 1e-4 of a 0.1 V way: within 1 %
    ok, how = polish_agrees(limit + 0.01, end, limit)
    assert not ok and "0.01 V from the extrapolated limit" in how
    assert not polish_agrees(end, end, limit)[0]  # the end itself (ngspice's rescue answers it) is no fixed point


def test_polish_needs_the_op_polish():
    with pytest.raises(ValueError, match="polish.*tran\\+op"):
        SpiceConfig(method="tran", on_unsettled="polish")
    with pytest.raises(ValueError, match="on_unsettled must be one of"):
        SpiceConfig(on_unsettled="ignore")
    assert SpiceConfig(on_unsettled="polish").on_unsettled == "polish"


def slow_net(gap=0.01, u=0.5):
    """Hidden and output unit coupled by 1 - gap, both biased to a fixed point at u: their sum relaxes with
    rate gap (time constant 100 tau), their difference with 2 - gap."""
    W = torch.zeros(3, 3, dtype=torch.float64)
    W[1, 2] = W[2, 1] = 1 - gap
    return Network(mlff((1, 1, 1)), W, torch.tensor([0.0, u * gap, u * gap], dtype=torch.float64))


SLOW = dict(matrix_solver="sparse", t_free=30.0)  # 11 windows of 30 tau: 0.4 V away, 1.5e-4 V/tau at the end
X, U0 = torch.zeros(1, 1, dtype=torch.float64), torch.tensor([[0.0, 0.1, 0.1]], dtype=torch.float64)


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.ngspice
@pytest.mark.skipif(not library_available(), reason="libngspice not found (make install)")
def test_a_slow_transient_is_polished_to_its_fixed_point_or_raises(batched):
    from circuits.spice_solver import SpiceSolver

    def relax(**kw):
        with SpiceSolver(**SLOW, **kw) as s:
            if not batched:
                s._batched = lambda: False
            return s.relax(slow_net(), X, U0), s.report()

    with pytest.raises(SimulationError, match="had not settled after 11 x 30 tau.*on_unsettled='polish'"):
        relax(on_unsettled="raise")
    u, rep = relax(on_unsettled="polish")
    assert torch.allclose(u[0, 1:], torch.tensor([0.5, 0.5], dtype=torch.float64), atol=1e-9)
    assert rep["slow_polished"] == [1] and rep["unsettled"] == [0]
    u_warn, rep = relax(on_unsettled="warn")  # the same polish, but only counted
    assert rep["unsettled"] == [1] and "slow_polished" not in rep
    assert torch.equal(u, u_warn)
    # too few windows to extrapolate from: the error says so
    with pytest.raises(SimulationError, match="3 needed"):
        relax(on_unsettled="polish", max_extend=1)
    # two slow modes of near rates (gaps 0.01 and 0.012): the last windows' moves still point one way (cosine >=
    # 0.99), but the single-mode extrapolation misses the fixed point by 12 % of its way there: not vouched for
    with SpiceSolver(**SLOW, on_unsettled="polish") as s:
        if not batched:
            s._batched = lambda: False
        with pytest.raises(SimulationError, match="no verified limit: Newton's fixed point .* from the extrapolated"):
            s.relax(two_slow_modes(), X, torch.tensor([[0.0, 0.1, 0.9, 0.1, 0.9]], dtype=torch.float64))


def two_slow_modes(gaps=(0.01, 0.012), u=0.5):
    """Two slow pairs (hidden i with output i), one each of slow_net's kind."""
    W, b = torch.zeros(5, 5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    for i, gap in enumerate(gaps):
        W[1 + i, 3 + i] = W[3 + i, 1 + i] = 1 - gap
        b[1 + i] = b[3 + i] = u * gap
    return Network(mlff((1, 2, 2)), W, b)
