"""The fast engine reproduces the reference EulerSolver (faithful mode, tol stopping, stacks of
trials, both couplings), CPU and CUDA."""
import pytest
import torch

from eqprop.config import EulerConfig
from eqprop.couplings import Couplings, coupling_mode
from eqprop.fast_relax import FastEulerSolver
from eqprop.network import Network
from eqprop.solver import EulerSolver
from eqprop.topology import mlff, small_world


def ref_solver(**kw):
    return EulerSolver(EulerConfig(**kw))


def fast_solver(cuda_graph=None, tf32=False, **kw):
    return FastEulerSolver(EulerConfig(**kw), cuda_graph=cuda_graph, tf32=tf32)

cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                          reason="needs a CUDA device (torch.cuda.is_available() is False)")

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


CASES = [(k, c) for k in sorted(TOPOLOGIES) for c in ("auto", "dense", "blocks")]  # blocks: small-world nets too


@pytest.mark.parametrize("kind,coupling", CASES)
@pytest.mark.parametrize("form", ["sequential", "gradient"])
def test_faithful_mode_matches_euler_solver(kind, coupling, form):
    net = make_net(kind)
    x, yd = batch(net)
    kw = dict(free_steps=60, nudged_steps=9, nudge_form=form)
    n64, x64, y64 = net.to(dtype=torch.float64), x.double(), yd.double()
    for beta in (1.0, -1.0, 0.4):
        ref = both_phases(ref_solver(**kw), net, x, yd, beta)
        got = both_phases(fast_solver(coupling=coupling, **kw), net, x, yd, beta)
        exact = both_phases(ref_solver(**kw), n64, x64, y64, beta)
        for a, b, e in zip(ref, got, exact):
            assert a.shape == b.shape and b.dtype == torch.float32
            # fp32 rounding: 1e-5, or more where the reference's own fp32 error is larger (beta -1 with the
            # sequential form doubles a deviation every nudged step: y' = 2c - y_d)
            assert (a - b).abs().max() <= 1e-5 + 2 * (a.double() - e).abs().max()
            assert (b.double() - e).abs().max() <= 1e-5 + 2 * (a.double() - e).abs().max()


def test_float64_agrees_to_rounding_and_u0_is_used():
    net = make_net("sw", dtype=torch.float64)
    x, yd = batch(net)
    # a seeded start: with the global stream it depended on the tests run before, and some starts
    # relax to within 1e-4 of the run from zero in 40 steps (then the last check cannot tell)
    g = torch.Generator().manual_seed(0)
    s0 = torch.rand(x.shape[0], net.topology.n, dtype=torch.float64, generator=g) * 1.4 - 0.2  # clamped like the ref
    kw = dict(free_steps=40, nudged_steps=5, nudge_form="gradient")
    a = ref_solver(**kw).relax(net, x, s0)
    b = fast_solver(**kw).relax(net, x, s0)
    assert (a - b).abs().max() < 1e-12
    assert torch.equal(b[:, :net.topology.n_in], x)
    assert (a - ref_solver(**kw).relax(net, x)).abs().max() > 1e-3, "the start mattered"


def test_zero_steps_returns_the_clamped_start():
    net = make_net()
    x, _ = batch(net)
    s0 = torch.rand(x.shape[0], net.topology.n) * 2 - 0.5
    out = fast_solver(free_steps=0).relax(net, x, s0)
    ref = ref_solver(free_steps=0).relax(net, x, s0)
    assert torch.equal(out, ref)
    assert torch.equal(out[:, 6:], s0[:, 6:].clamp(0, 1)) and torch.equal(out[:, :6], x)


def test_tol_stops_early_with_the_reference_step_count():
    net = make_net("mlff")
    x, yd = batch(net)
    for form in ("sequential", "gradient"):
        kw = dict(free_steps=500, nudged_steps=200, tol=1e-6, check_every=7, nudge_form=form)
        ref, fast = ref_solver(**kw), fast_solver(**kw)
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
    ref, fast = ref_solver(**kw), fast_solver(**kw)
    a, b = ref.relax(net, x), fast.relax(net, x)
    assert fast.last_steps == ref.last_steps == 23
    assert fast.last_steps_per_trial.tolist() == [23]
    assert (a - b).abs().max() <= 1e-5


def test_in_place_weight_updates_reuse_the_kernel_and_are_seen():
    net = make_net()
    x, _ = batch(net)
    fast, ref = fast_solver(free_steps=30), ref_solver(free_steps=30)
    fast.relax(net, x)
    n_kernels = fast.cached_kernels
    g = torch.Generator().manual_seed(5)
    upd = torch.randn(net.W.shape, generator=g) * torch.as_tensor(net.topology.mask) * 0.1
    net.W.add_(upd + upd.T)  # in place, as eqprop.learning.apply_update does
    net.b[net.topology.n_in:] += 0.1
    b = fast.relax(net, x)
    assert fast.cached_kernels == n_kernels
    assert (ref.relax(net, x) - b).abs().max() <= 1e-5


def test_one_coupling_rule_for_both_engines():
    cpu, dev = torch.device("cpu"), torch.device("cuda")
    layered, sw = mlff([20, 300, 300, 5]), small_world([20, 300, 300, 5], 0.1, seed=1)
    assert coupling_mode("auto", [layered], cpu) == "blocks"
    assert coupling_mode("auto", [layered], dev) == "dense"  # launch-bound: one GEMM per step
    assert coupling_mode("auto", [mlff([20, 100, 100, 5])], cpu) == "dense"
    assert coupling_mode("auto", [sw], cpu) == "blocks"  # wide layers: blocks, small-world or not
    assert coupling_mode("blocks", [mlff([3, 4, 2])], dev) == "blocks"  # an explicit mode is taken as given
    assert coupling_mode("dense", [layered], cpu) == "dense"
    with pytest.raises(ValueError, match="coupling must be one of"):
        coupling_mode("sparse", [layered], cpu)
    # the reference follows the rule: auto on CPU builds blocks for the wide net, dense for a narrow one
    assert Couplings.build(Network.init(sw, seed=0), "auto").dense is None
    assert Couplings.build(Network.init(mlff([20, 100, 100, 5]), seed=0), "auto").dense is not None


def test_bad_input_raises_clear_errors():
    net = make_net()
    x, yd = batch(net)
    s = fast_solver(free_steps=5)
    with pytest.raises(ValueError, match="x must have shape"):
        s.relax(net, x[:, :-1])
    with pytest.raises(ValueError, match="u0 must have shape"):
        s.relax(net, x, torch.zeros(x.shape[0], net.topology.n + 1))
    with pytest.raises(ValueError, match="needs a target"):
        s.relax(net, x, beta=1.0)
    with pytest.raises(ValueError, match="target must have shape"):
        s.relax(net, x, beta=1.0, target=yd[:, :-1])
    with pytest.raises(ValueError, match="non-finite"):
        s.relax(net, x * float("nan"))
    with pytest.raises(ValueError, match="cuda_graph=True needs CUDA"):
        fast_solver(cuda_graph=True).relax(net, x)
    bad = x.clone()
    bad[1, 2] = float("nan")
    unchecked = FastEulerSolver(EulerConfig(free_steps=3), check_values=False)  # the Trainer's: data validated once
    assert torch.isnan(unchecked.relax(net, bad)).any()


# -- stacks of trials -----------------------------------------------------------------------
def trial_nets(T=3, sizes=(6, 5, 4, 4, 3), device="cpu"):
    """Different seeds, p values and hence masks; random biases so every neuron moves."""
    out = []
    for t in range(T):
        topo = mlff(sizes) if t == 0 else small_world(sizes, p=0.15 * t, seed=t)
        n = Network.init(topo, seed=10 + t)
        n.b[topo.n_in:] = 0.3 * torch.randn(topo.n - topo.n_in, generator=torch.Generator().manual_seed(t))
        out.append(n.to(device=device))
    return out


@pytest.mark.parametrize("coupling", ["dense", "blocks"])
@pytest.mark.parametrize("form", ["sequential", "gradient"])
def test_trials_in_one_call_equal_separate_reference_runs(form, coupling):
    ns = trial_nets()
    st = Network.stack(ns)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 7, 6, generator=g)  # per-trial inputs
    yd = torch.rand(3, 7, 3, generator=g)
    betas = torch.tensor([1.0, -1.0, 0.5])  # random sign per trial
    kw = dict(free_steps=50, nudged_steps=8, nudge_form=form)
    fast = fast_solver(coupling=coupling, **kw)
    free = fast.relax(st, x)
    nudged = fast.relax(st, x, free, betas, yd)
    ref = ref_solver(**kw)
    for t, n in enumerate(ns):
        f = ref.relax(n, x[t])
        assert (f - free[t]).abs().max() <= 1e-5
        assert (ref.relax(n, x[t], f, float(betas[t]), yd[t]) - nudged[t]).abs().max() <= 1e-5
    shared = fast.relax(st, x[0])  # one batch shared by all trials
    for t, n in enumerate(ns):
        assert (ref.relax(n, x[0]) - shared[t]).abs().max() <= 1e-5
    assert (shared[0] - shared[2]).abs().max() > 1e-3, "the trials differ"


def test_tol_stops_each_trial_on_its_own():
    ns = trial_nets()
    ns[2].W.mul_(3.0)  # the trials settle at different steps
    st = Network.stack(ns)
    x = torch.rand(5, 6, generator=torch.Generator().manual_seed(1))
    kw = dict(free_steps=400, tol=1e-6, check_every=5)
    fast = fast_solver(**kw)
    out = fast.relax(st, x)
    steps = []
    for t, n in enumerate(ns):
        ref = ref_solver(**kw)
        assert (ref.relax(n, x) - out[t]).abs().max() <= 1e-5
        steps.append(ref.last_steps)
    assert fast.last_steps_per_trial.tolist() == steps
    assert fast.last_steps == max(steps) < 400 and len(set(steps)) == 3


def test_stack_relax_bad_input():
    st = Network.stack(trial_nets())
    s = fast_solver(free_steps=3)
    x = torch.rand(4, 6)
    with pytest.raises(ValueError, match="x must have shape"):
        s.relax(st, torch.rand(2, 4, 6))  # 2 input sets for 3 trials
    with pytest.raises(ValueError, match="u0 must have shape"):
        s.relax(st, x, torch.zeros(4, 22))
    with pytest.raises(ValueError, match="one value or 3 values"):
        s.relax(st, x, beta=[1.0, -1.0], target=torch.rand(4, 3))
    with pytest.raises(ValueError, match="zero for all trials"):
        s.relax(st, x, beta=[1.0, 0.0, 1.0], target=torch.rand(4, 3))
    with pytest.raises(ValueError, match="target must have shape"):
        s.relax(st, x, beta=1.0, target=torch.rand(2, 4, 3))


def test_blocks_coupling_on_small_world_nets_equals_dense_in_both_engines():
    net = make_net("sw_intra", dtype=torch.float64)  # skips and intralayer connections
    x, yd = batch(net)
    x, yd = x.double(), yd.double()
    out = {}
    for engine, make in (("ref", ref_solver), ("fast", fast_solver)):
        for coupling in ("dense", "blocks"):
            out[engine, coupling] = both_phases(make(free_steps=40, nudged_steps=6, coupling=coupling), net, x, yd,
                                                -0.7)
    for key, (free, nudged) in out.items():
        assert (free - out["ref", "dense"][0]).abs().max() < 1e-12, key
        assert (nudged - out["ref", "dense"][1]).abs().max() < 1e-12, key
    # a stack of small-world trials with different masks: blocks over the union of their layer pairs
    ns = [n.to(dtype=torch.float64) for n in trial_nets()]
    st, x3 = Network.stack(ns), torch.rand(4, 6, dtype=torch.float64)
    a = fast_solver(free_steps=40, coupling="blocks").relax(st, x3)
    b = ref_solver(free_steps=40, coupling="blocks").relax(st, x3)
    for t, n in enumerate(ns):
        d = ref_solver(free_steps=40, coupling="dense").relax(n, x3)
        assert (a[t] - d).abs().max() < 1e-12 and (b[t] - d).abs().max() < 1e-12


# -- CUDA: graph capture and replay --------------------------------------------------------
@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("form", ["sequential", "gradient"])
def test_cuda_graph_matches_euler_solver_and_survives_in_place_updates(form):
    net = make_net("sw", device="cuda")
    x, yd = batch(net)
    kw = dict(free_steps=60, nudged_steps=9, nudge_form=form)
    ref, fast = ref_solver(**kw), fast_solver(**kw)
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
    ref, fast = ref_solver(**kw), fast_solver(**kw)
    a, b = ref.relax(net, x), fast.relax(net, x)
    assert fast.last_steps == ref.last_steps < 500
    assert (a - b).abs().max() <= 1e-5
    c = fast_solver(free_steps=60, tf32=True).relax(net, x)
    assert (ref_solver(free_steps=60).relax(net, x) - c).abs().max() < 1e-2


@cuda
@pytest.mark.cuda
def test_cuda_trials_in_one_graph_equal_separate_runs_with_per_trial_tol():
    ns = trial_nets(device="cuda")
    ns[2].W.mul_(3.0)
    st = Network.stack(ns)
    g = torch.Generator().manual_seed(0)
    x, yd = torch.rand(3, 7, 6, generator=g).cuda(), torch.rand(3, 7, 3, generator=g).cuda()
    betas = torch.tensor([1.0, -1.0, 0.5])
    kw = dict(free_steps=300, nudged_steps=9, tol=1e-6, check_every=5)
    fast, ref = fast_solver(**kw), ref_solver(**kw)
    free = fast.relax(st, x)
    nudged = fast.relax(st, x, free, betas, yd)
    assert fast.captures > 0
    steps = []
    for t, n in enumerate(ns):
        f = ref.relax(n, x[t])
        steps.append(ref.last_steps)
        assert (f - free[t]).abs().max() <= 1e-5
        assert (ref.relax(n, x[t], f, float(betas[t]), yd[t]) - nudged[t]).abs().max() <= 1e-5
    fast.relax(st, x)
    assert fast.last_steps_per_trial.tolist() == steps
