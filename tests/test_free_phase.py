"""The fast engine's free-phase methods (EulerConfig.free_method): per-example stopping is the
reference run example by example; the hybrid reaches the reference trajectory's own limit."""
import json
import types

import pytest
import torch

from eqprop import free_phase
from eqprop.config import EulerConfig, RunConfig
from eqprop.datasets import load_dataset
from eqprop.fast_relax import FastEulerSolver, make_euler_solver
from eqprop.free_phase import SKIP_LAG_DENSITY, ActiveRows, LayerDrive, face_solve
from eqprop.network import Network
from eqprop.solver import EulerSolver
from eqprop.topology import mlff, small_world
from eqprop.trainer import Trainer

TOPOLOGIES = {
    "mlff": lambda: mlff([6, 5, 4, 3]),
    "sw": lambda: small_world([6, 5, 4, 4, 3], p=0.3, seed=1),
    "sw_intra": lambda: small_world([5, 6, 6, 3], p=0.2, seed=2, intralayer=True),
}


def net_and_batch(kind, seed=3, B=9, T=None):
    """float64 nets with random biases (so neurons settle at different speeds) and a batch."""
    g = torch.Generator().manual_seed(seed)
    nets = []
    for t in range(T or 1):
        topo = TOPOLOGIES[kind]()
        n = Network.init(topo, seed=seed + t, dtype=torch.float64)
        n.b[topo.n_in:] = 0.3 * torch.randn(topo.n - topo.n_in, generator=g, dtype=torch.float64)
        nets.append(n)
    x = torch.rand(B, nets[0].topology.n_in, generator=g, dtype=torch.float64)
    return (nets[0] if T is None else nets), x


@pytest.mark.parametrize("kind", sorted(TOPOLOGIES))
@pytest.mark.parametrize("coupling", ["dense", "blocks"])
def test_per_example_equals_the_reference_relaxing_each_example_alone(kind, coupling):
    nets, x = net_and_batch(kind, T=2)
    kw = dict(free_steps=400, tol=1e-7, check_every=5)
    fast = FastEulerSolver(EulerConfig(free_method="per-example", coupling=coupling, engine="fast", **kw))
    out = fast.relax(Network.stack(nets), x)
    report = fast.report()
    steps = []
    for t, net in enumerate(nets):
        for i in range(x.shape[0]):
            ref = EulerSolver(EulerConfig(**kw))
            alone = ref.relax(net, x[i:i + 1])
            assert (alone[0] - out[t, i]).abs().max() <= 1e-12
            steps.append(ref.last_steps)
    assert len(set(steps)) > 2, "the examples settle at different steps (else the test shows nothing)"
    assert report["free_steps_max"] == [max(steps[:9]), max(steps[9:])]
    assert report["free_steps_mean"][0] == pytest.approx(sum(steps[:9]) / 9)
    assert report["free_unconverged"] == [0, 0] and max(report["free_residual_max"]) < 1e-6
    assert fast.report() == {}, "report() clears what it reported"


def test_per_example_without_convergence_runs_all_steps_and_says_so():
    net, x = net_and_batch("mlff")
    kw = dict(free_steps=23, tol=1e-14, check_every=5)  # 23: a remainder of 3 unchecked steps, as the reference
    fast = FastEulerSolver(EulerConfig(free_method="per-example", engine="fast", **kw))
    out = fast.relax(net, x)
    ref = EulerSolver(EulerConfig(free_steps=23))
    assert (ref.relax(net, x) - out).abs().max() <= 1e-12
    assert fast.report()["free_unconverged"] == [x.shape[0]]


@pytest.mark.parametrize("kind", sorted(TOPOLOGIES))
@pytest.mark.parametrize("omega", [1.0, 1.5])
def test_hybrid_reaches_the_reference_trajectorys_limit(kind, omega):
    net, x = net_and_batch(kind, seed=5, B=12)
    star = EulerSolver(EulerConfig(free_steps=200_000, tol=1e-13)).relax(net, x)
    hy = FastEulerSolver(EulerConfig(free_method="hybrid", tol=1e-10, prefix_steps=20, omega=omega, engine="fast"))
    out = hy.relax(net, x)
    r = hy.report()
    assert (out - star).abs().max() <= 1e-7
    assert r["free_unconverged"] == [0] and r["free_residual_max"][0] < 1e-8
    assert r["free_steps_max"] == [20] and 0 < r["free_sweeps_mean"][0] < 1000
    fixed = EulerSolver(EulerConfig(free_steps=20)).relax(net, x)  # the prefix alone is far from it
    assert (fixed - star).abs().max() > 1e-3


@pytest.mark.parametrize("kind", sorted(TOPOLOGIES))
def test_examples_at_the_sweep_cap_go_on_with_the_reference_euler_steps(kind):
    """Sweeps can cycle instead of converging (full-data Fig 4, docs/free-phase.md): an example at max_sweeps
    is finished by the reference's Euler steps from the prefix's end, as per-example stopping would, and
    counted. With a cap of 1 sweep every example takes that path: the hybrid equals per-example stopping."""
    net, x = net_and_batch(kind, seed=5, B=7)
    kw = dict(free_steps=3000, tol=1e-10, check_every=5, engine="fast")
    per = FastEulerSolver(EulerConfig(free_method="per-example", **kw))
    want = per.relax(net, x)
    hy = FastEulerSolver(EulerConfig(free_method="hybrid", prefix_steps=20, max_sweeps=1, **kw))
    out = hy.relax(net, x)
    r = hy.report()
    assert (out - want).abs().max() <= 1e-12
    assert r["free_sweep_fallbacks"] == [7] and r["free_unconverged"] == [0] and r["free_residual_max"][0] < 1e-8
    assert r["free_steps_max"] == per.report()["free_steps_max"]
    kw["free_steps"] = 20
    capped = FastEulerSolver(EulerConfig(free_method="hybrid", prefix_steps=20, max_sweeps=1, **kw))
    capped.relax(net, x)  # no Euler budget beyond the prefix: the cap is where it stays, and it says so
    assert capped.report()["free_unconverged"] == [7]


@pytest.mark.parametrize("kind", sorted(TOPOLOGIES))
def test_face_solve_lands_exactly_on_the_fixed_point_near_it(kind):
    net, x = net_and_batch(kind, seed=5, B=6)
    n = net.topology.n_in
    star = EulerSolver(EulerConfig(free_steps=200_000, tol=1e-13)).relax(net, x)[:, n:]
    Wff, c = net.W[n:, n:], net.b[n:] + x.clamp(0, 1) @ net.W[:n, n:]
    assert ((star > 1e-9) & (star < 1 - 1e-9)).any() and ((star < 1e-9) | (star > 1 - 1e-9)).any(), \
        "the fixed points need free and bound units for the face to matter"
    g = torch.Generator().manual_seed(1)
    for i in range(x.shape[0]):
        near = (star[i] + 1e-4 * torch.randn(star.shape[1], generator=g, dtype=torch.float64)).clamp(0, 1)
        got = face_solve(Wff, c[i], near, 1e-12)
        assert got is not None and (got - star[i]).abs().max() <= 1e-10
    monkey = free_phase.FACE_TRIES
    try:  # no face read: nothing accepted, never a state that is not a fixed point
        free_phase.FACE_TRIES = 0
        assert face_solve(Wff, c[0], star[0], 1e-12) is None
    finally:
        free_phase.FACE_TRIES = monkey


@pytest.mark.parametrize("kind", sorted(TOPOLOGIES))
def test_the_hybrid_with_face_solves_reaches_the_same_limit_and_counts_them(kind, monkeypatch):
    net, x = net_and_batch(kind, seed=5, B=12)
    monkeypatch.setattr(free_phase, "FACE_ROWS", 12)  # tried on every row: these small nets settle in few sweeps
    monkeypatch.setattr(free_phase, "FACE_FROM", 1e-2)
    star = EulerSolver(EulerConfig(free_steps=200_000, tol=1e-13)).relax(net, x)
    reports = {}
    for face in (False, True):
        hy = FastEulerSolver(EulerConfig(free_method="hybrid", tol=1e-10, prefix_steps=20, engine="fast",
                                         check_every=1, face_solve=face))
        out = hy.relax(net, x)
        reports[face] = hy.report()
        assert (out - star).abs().max() <= 1e-7
        assert reports[face]["free_residual_max"][0] < 1e-8
    assert reports[False]["free_face_solves"] == [0]
    assert reports[True]["free_face_solves"][0] >= 6
    assert reports[True]["free_sweeps_mean"][0] < reports[False]["free_sweeps_mean"][0]


def test_sweep_groups_follow_the_layers_and_a_sparse_skip_net_still_reaches_the_limit():
    sizes = (12, 30, 30, 30, 30, 4)
    kernel = lambda net: types.SimpleNamespace(n_in=sizes[0], W=net.W.unsqueeze(0))  # noqa: E731
    layered = Network.init(mlff(sizes), seed=0, dtype=torch.float64)
    drive = LayerDrive(kernel(layered), sizes, [layered.topology])
    assert [(g.start, g.stop) for g in drive.groups] == [(0, 64), (64, 124)]  # layers 1, 3, out then 2, 4
    s = torch.rand(1, 3, 124, dtype=torch.float64)
    assert torch.equal(drive.unpack(drive.pack(s)), s)
    sparse = small_world(sizes, p=0.02, seed=2)
    dens = [b.count / (sizes[b.src] * sizes[b.dst]) for b in sparse.blocks() if b.kind == "skip" and b.src]
    assert dens and max(dens) <= SKIP_LAG_DENSITY, "the skips must be sparse enough to share a group"
    net = Network.init(sparse, seed=1, dtype=torch.float64)
    net.b[12:] = 0.3 * torch.randn(124, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert len(LayerDrive(kernel(net), sizes, [sparse]).groups) == 2
    x = torch.rand(10, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    star = EulerSolver(EulerConfig(free_steps=200_000, tol=1e-13)).relax(net, x)
    hy = FastEulerSolver(EulerConfig(free_method="hybrid", tol=1e-10, prefix_steps=20, engine="fast"))
    assert (hy.relax(net, x) - star).abs().max() <= 1e-7
    dense_skips = small_world(sizes, p=0.3, seed=4)
    assert len(LayerDrive(kernel(Network.init(dense_skips, seed=1)), sizes, [dense_skips]).groups) > 2


def test_blocks_and_sources_gathered_by_runs_equal_index_select():
    """LayerDrive copies its weight blocks and the sweeps their sources as slices of whole layers: the same
    numbers as index_select's gathers, bit for bit (the runs' bits, e.g. Fig 4's, do not move)."""
    assert free_phase.index_runs(torch.tensor([3, 4, 5, 9, 10, 0])) == [slice(3, 6), slice(9, 11), slice(0, 1)]
    assert free_phase.index_runs(torch.zeros(0, dtype=torch.long)) == []
    gathered = 0
    for sizes, topo in [((12, 30, 30, 30, 30, 4), mlff((12, 30, 30, 30, 30, 4))),
                        ((12, 30, 30, 30, 30, 4), small_world((12, 30, 30, 30, 30, 4), p=0.3, seed=4)),
                        ((5, 6, 6, 3), small_world((5, 6, 6, 3), p=0.2, seed=2, intralayer=True))]:
        net = Network.init(topo, seed=1, dtype=torch.float32)
        W = (net.W + torch.rand_like(net.W)).unsqueeze(0)  # distinct entries everywhere, the zeros included
        drive = LayerDrive(types.SimpleNamespace(n_in=sizes[0], W=W), sizes, [topo])
        lay = free_phase.sweep_layout(sizes, [topo], "cpu")
        Wf = W[:, sizes[0]:, sizes[0]:]
        for blk, r, c in zip(drive.W, lay.rows, lay.cols):
            assert blk.is_contiguous() and torch.equal(blk, Wf.index_select(1, r).index_select(2, c))
        s = torch.rand(1, 7, W.shape[-1] - sizes[0])
        c0 = torch.rand_like(s)
        for (_, parts, span, *_), src in zip(drive.plan(s, c0), lay.sources):
            if parts is not None:  # as a sweep gathers them
                gathered += 1
                torch.cat(parts, -1, out=span)
                assert torch.equal(span, s.index_select(-1, src))
    assert gathered, "no layout above gathers its sources: the test would not check that path"


def test_the_nudged_phase_stays_the_fixed_step_reference():
    net, x = net_and_batch("sw")
    y = torch.rand(x.shape[0], net.topology.n_out, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    free = EulerSolver(EulerConfig(free_steps=300)).relax(net, x)
    ref = EulerSolver(EulerConfig(nudged_steps=12)).relax(net, x, free, 0.5, y)
    for method in ("per-example", "hybrid"):
        got = FastEulerSolver(EulerConfig(free_method=method, tol=1e-6, nudged_steps=12, engine="fast")).relax(
            net, x, free, 0.5, y)
        assert (got - ref).abs().max() <= 1e-12


def test_active_rows_compact_per_trial_and_keep_coordinates():
    rows = ActiveRows(2, 4, "cpu")
    s = torch.arange(8.0).reshape(2, 4, 1)
    done = torch.tensor([[True, False, True, False], [True, True, True, False]])
    (s2,) = rows.finish(done, s)
    assert rows.A == 2 and rows.live.tolist() == [[True, True], [True, False]]
    assert rows.idx[0].tolist() == [1, 3] and rows.idx[1, 0] == 3
    assert s2[0, :, 0].tolist() == [1.0, 3.0] and s2[1, 0, 0] == 7.0
    tt, bb = rows.coords(rows.live)
    assert tt.tolist() == [0, 0, 1] and bb.tolist() == [1, 3, 3]


def test_config_errors_and_engine_choice():
    with pytest.raises(ValueError, match="set tol"):
        EulerConfig(free_method="hybrid")
    with pytest.raises(ValueError, match="fast engine"):
        EulerConfig(free_method="per-example", tol=1e-6, engine="reference")
    with pytest.raises(ValueError, match="omega must lie in"):
        EulerConfig(free_method="hybrid", tol=1e-6, omega=2.0)
    with pytest.raises(ValueError, match="free_method must be one of"):
        EulerConfig(free_method="sor")
    with pytest.raises(ValueError, match="max_sweeps"):
        EulerConfig(max_sweeps=0)
    with pytest.raises(ValueError, match="fixed-step reference"):
        EulerSolver(EulerConfig(free_method="hybrid", tol=1e-6))
    assert isinstance(make_euler_solver(EulerConfig(free_method="hybrid", tol=1e-6)), FastEulerSolver)
    assert isinstance(make_euler_solver(EulerConfig()), EulerSolver)
    # runs recorded before these fields existed compare equal: defaults are not written
    assert "free_method" not in EulerConfig().to_dict()
    assert EulerConfig(free_method="hybrid", tol=1e-6).to_dict()["free_method"] == "hybrid"
    # omega_from: written for every hybrid run; a hybrid run recorded before the field ran with 1e-3
    hyb = EulerConfig(free_method="hybrid", tol=1e-6)
    assert hyb.to_dict()["omega_from"] == 1e-2 and "omega_from" not in EulerConfig().to_dict()
    old = {k: v for k, v in hyb.to_dict().items() if k != "omega_from"}
    assert EulerConfig.from_dict(old).omega_from == 1e-3
    assert EulerConfig.from_dict(hyb.to_dict()) == hyb
    with pytest.raises(ValueError, match="omega_from must be > 0"):
        EulerConfig(free_method="hybrid", tol=1e-6, omega_from=0.0)
    # face_solve: on for new hybrid runs, off for those recorded before it, not written for fixed-step runs
    assert hyb.face_solve and hyb.to_dict()["face_solve"] is True and "face_solve" not in EulerConfig().to_dict()
    assert EulerConfig.from_dict({k: v for k, v in hyb.to_dict().items() if k != "face_solve"}).face_solve is False
    with pytest.raises(ValueError, match="face_solve must be true or false"):
        EulerConfig(free_method="hybrid", tol=1e-6, face_solve=1)


def test_training_with_the_hybrid_records_its_steps_and_learns(tmp_path):
    run = RunConfig(dataset="iris", hidden=(8,), lr=[0.3, 0.075], beta=0.5, random_beta_sign=False, batch_size=5,
                    epochs=3, seed=0, out=str(tmp_path / "run"))
    euler = EulerConfig(free_method="hybrid", tol=1e-6, free_steps=200, nudged_steps=20)
    tr = Trainer(run, load_dataset("iris"), euler=euler)
    tr.run(progress=False)
    tr.write_outputs(plots=False)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    ep = m["epochs"]
    assert all(e["solver"]["free_sweeps_mean"] > 0 and e["solver"]["free_residual_max"] < 1e-4 for e in ep), ep[-1]
    assert ep[-1]["test_error"] < 0.5, "3 epochs of iris learn well past chance (0.67)"
