"""The fast engine reproduces the reference EulerSolver (faithful mode, tol stopping), CPU and CUDA."""
import pytest
import torch

from eqprop.fast_relax import FastEulerSolver, choose_coupling
from eqprop.network import Network
from eqprop.solver import EulerSolver
from eqprop.topology import mlff, small_world

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)")

TOPOLOGIES = {
    "mlff": lambda: mlff([6, 5, 4, 3]),
    "sw": lambda: small_world([6, 5, 4, 4, 3], p=0.3, seed=1),
    "sw_intra": lambda: small_world([5, 6, 6, 3], p=0.2, seed=2, intralayer=True),
}


def make_net(kind="sw", seed=3, dtype=torch.float32, device="cpu"):
    topo = TOPOLOGIES[kind]()
    net = Network.init(topo, seed=seed, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    net.b[topo.n_in:] = 0.3 * torch.randn(topo.n - topo.n_in, generator=g, dtype=torch.float64)
    return net.to(device=device, dtype=dtype)


def batch(net, B=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = net.topology
    return (torch.rand(B, t.n_in, generator=g).to(net.device, net.dtype),
            torch.rand(B, t.n_out, generator=g).to(net.device, net.dtype))


def both_phases(solver, net, x, yd, beta):
    free = solver.relax(net, x)
    return free, solver.relax(net, x, free, beta, yd)


CASES = [(k, c) for k in sorted(TOPOLOGIES) for c in ("auto", "dense", "blocks") if c != "blocks" or k == "mlff"]


@pytest.mark.parametrize("kind,coupling", CASES)
@pytest.mark.parametrize("form", ["sequential", "gradient"])
def test_faithful_mode_matches_euler_solver(kind, coupling, form):
    net = make_net(kind)
    x, yd = batch(net)
    kw = dict(free_steps=60, nudged_steps=9, nudge_form=form)
    for beta in (1.0, -1.0, 0.4):
        ref = both_phases(EulerSolver(**kw), net, x, yd, beta)
        got = both_phases(FastEulerSolver(coupling=coupling, **kw), net, x, yd, beta)
        for a, b in zip(ref, got):
            assert a.shape == b.shape
            assert (a - b).abs().max() <= 1e-5


def test_float64_agrees_to_rounding_and_state0_is_used():
    net = make_net("sw", dtype=torch.float64)
    x, yd = batch(net)
    s0 = torch.rand(x.shape[0], net.topology.n, dtype=torch.float64) * 1.4 - 0.2  # clamped like the reference
    kw = dict(free_steps=40, nudged_steps=5, nudge_form="gradient")
    a = EulerSolver(**kw).relax(net, x, s0)
    b = FastEulerSolver(**kw).relax(net, x, s0)
    assert (a - b).abs().max() < 1e-12
    assert torch.equal(b[:, :net.topology.n_in], x)


def test_zero_steps_returns_the_clamped_start():
    net = make_net()
    x, _ = batch(net)
    s0 = torch.rand(x.shape[0], net.topology.n) * 2 - 0.5
    out = FastEulerSolver().relax(net, x, s0, steps=0)
    ref = EulerSolver().relax(net, x, s0, steps=0)
    assert torch.equal(out, ref)


def test_tol_stops_early_with_the_reference_step_count():
    net = make_net("mlff")
    x, yd = batch(net)
    for form in ("sequential", "gradient"):
        kw = dict(free_steps=500, nudged_steps=200, tol=1e-6, check_every=7, nudge_form=form)
        ref, fast = EulerSolver(**kw), FastEulerSolver(**kw)
        a, b = ref.relax(net, x), fast.relax(net, x)
        assert fast.last_steps == ref.last_steps < 500
        assert fast.last_steps % 7 == 0
        assert (a - b).abs().max() <= 1e-5
        a, b = ref.relax(net, x, a, 0.5, yd), fast.relax(net, x, b, 0.5, yd)
        assert fast.last_steps == ref.last_steps < 200
        assert (a - b).abs().max() <= 1e-5


def test_tol_never_met_runs_all_steps_including_the_remainder():
    net = make_net()
    x, _ = batch(net)
    kw = dict(free_steps=23, tol=1e-30, check_every=5)
    ref, fast = EulerSolver(**kw), FastEulerSolver(**kw)
    a, b = ref.relax(net, x), fast.relax(net, x)
    assert fast.last_steps == ref.last_steps == 23
    assert fast.last_steps_per_trial.tolist() == [23]
    assert (a - b).abs().max() <= 1e-5


def test_in_place_weight_updates_reuse_the_kernel_and_are_seen():
    net = make_net()
    x, _ = batch(net)
    fast, ref = FastEulerSolver(free_steps=30), EulerSolver(free_steps=30)
    fast.relax(net, x)
    n_kernels = fast.cached_kernels
    g = torch.Generator().manual_seed(5)
    upd = torch.randn(net.W.shape, generator=g) * torch.as_tensor(net.topology.mask) * 0.1
    net.W.add_(upd + upd.T)  # in place, as eqprop.learning.apply_update does
    net.b[net.topology.n_in:] += 0.1
    b = fast.relax(net, x)
    assert fast.cached_kernels == n_kernels
    assert (ref.relax(net, x) - b).abs().max() <= 1e-5


def test_auto_coupling_choice():
    cpu, dev = torch.device("cpu"), torch.device("cuda")
    layered = [mlff([20, 300, 300, 5])]
    assert choose_coupling("auto", layered, cpu) == "blocks"
    assert choose_coupling("auto", layered, dev) == "dense"  # launch-bound: one GEMM per step
    assert choose_coupling("auto", [mlff([20, 100, 100, 5])], cpu) == "dense"
    assert choose_coupling("auto", [small_world([20, 300, 300, 5], 0.1, seed=1)], cpu) == "dense"


def test_bad_input_raises_clear_errors():
    net = make_net()
    x, yd = batch(net)
    s = FastEulerSolver()
    with pytest.raises(ValueError, match="x must have shape"):
        s.relax(net, x[:, :-1])
    with pytest.raises(ValueError, match="state0 must have shape"):
        s.relax(net, x, torch.zeros(x.shape[0], net.topology.n + 1))
    with pytest.raises(ValueError, match="needs a target"):
        s.relax(net, x, beta=1.0)
    with pytest.raises(ValueError, match="target must have shape"):
        s.relax(net, x, beta=1.0, target=yd[:, :-1])
    with pytest.raises(ValueError, match="non-finite"):
        s.relax(net, x * float("nan"))
    with pytest.raises(ValueError, match="blocks"):
        FastEulerSolver(coupling="blocks").relax(net, x)
    with pytest.raises(ValueError, match="cuda_graph=True needs CUDA"):
        FastEulerSolver(cuda_graph=True).relax(net, x)
    with pytest.raises(ValueError, match="nudge_form"):
        FastEulerSolver(nudge_form="other")
    with pytest.raises(ValueError, match="eps"):
        FastEulerSolver(eps=0)
    with pytest.raises(ValueError, match="coupling"):
        FastEulerSolver(coupling="sparse")


# -- CUDA: graph capture and replay --------------------------------------------------------
@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("form", ["sequential", "gradient"])
def test_cuda_graph_matches_euler_solver_and_survives_in_place_updates(form):
    net = make_net("sw", device="cuda")
    x, yd = batch(net)
    kw = dict(free_steps=60, nudged_steps=9, nudge_form=form)
    ref, fast = EulerSolver(**kw), FastEulerSolver(**kw)
    for rnd in range(2):
        a, b = both_phases(ref, net, x, yd, -1.0), both_phases(fast, net, x, yd, -1.0)
        for u, v in zip(a, b):
            assert (u - v).abs().max() <= 1e-5
        captured = fast.captures
        net.W.mul_(1.05)  # in place: the captured graphs must see it without re-capture
    assert fast.captures == captured


@cuda
@pytest.mark.cuda
def test_cuda_tol_and_tf32():
    net = make_net("mlff", device="cuda")
    x, _ = batch(net)
    kw = dict(free_steps=500, tol=1e-6, check_every=7)
    ref, fast = EulerSolver(**kw), FastEulerSolver(**kw)
    a, b = ref.relax(net, x), fast.relax(net, x)
    assert fast.last_steps == ref.last_steps < 500
    assert (a - b).abs().max() <= 1e-5
    c = FastEulerSolver(free_steps=60, tf32=True).relax(net, x)
    assert (EulerSolver(free_steps=60).relax(net, x) - c).abs().max() < 1e-2
