"""T trials in one call equal T separate runs: relaxation, update, rates, metrics, training."""
import numpy as np
import pytest
import torch

from eqprop.config import TrainConfig
from eqprop.datasets import Dataset
from eqprop.fast_relax import FastEulerSolver
from eqprop.learning import eqprop_update, rate_tensors
from eqprop.metrics import BlockStats
from eqprop.network import Network
from eqprop.solver import EulerSolver
from eqprop.topology import mlff, small_world
from eqprop.trainer import Trainer
from eqprop.trials import TrialStack, TrialStats, TrialTrainer, trial_eqprop_update, trial_rate_tensors

SIZES = [6, 5, 4, 4, 3]


def nets(T=3, sizes=SIZES):
    """Different seeds, p values and hence masks; random biases so every neuron moves."""
    out = []
    for t in range(T):
        topo = mlff(sizes) if t == 0 else small_world(sizes, p=0.15 * t, seed=t)
        n = Network.init(topo, seed=10 + t)
        n.b[topo.n_in:] = 0.3 * torch.randn(topo.n - topo.n_in, generator=torch.Generator().manual_seed(t))
        out.append(n)
    return out


def test_stack_round_trip_and_views():
    ns = nets()
    st = TrialStack.from_networks(ns)
    assert st.W.shape == (3, 22, 22) and st.mask.shape == (3, 22, 22) and st.T == 3
    back = st.to_networks()
    for a, b in zip(ns, back):
        assert torch.equal(a.W, b.W) and torch.equal(a.b, b.b) and a.topology is b.topology
    view = st.network(1, copy=False)
    st.W[1].mul_(2.0)
    assert torch.equal(view.W, st.W[1])


def test_stack_rejects_mismatched_trials():
    ns = nets(2)
    with pytest.raises(ValueError, match="trial 1 has sizes"):
        TrialStack.from_networks([ns[0], Network.init(mlff([6, 5, 3]))])
    with pytest.raises(ValueError, match="trial 1 is torch.float64"):
        TrialStack.from_networks([ns[0], ns[1].to(dtype=torch.float64)])
    with pytest.raises(ValueError, match="at least one"):
        TrialStack.from_networks([])
    with pytest.raises(ValueError, match="do not fit"):
        TrialStack([n.topology for n in ns], torch.zeros(2, 5, 5), torch.zeros(2, 5))


@pytest.mark.parametrize("form", ["sequential", "gradient"])
def test_trials_in_one_call_equal_separate_runs(form):
    ns = nets()
    st = TrialStack.from_networks(ns)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 7, 6, generator=g)  # per-trial inputs
    yd = torch.rand(3, 7, 3, generator=g)
    betas = torch.tensor([1.0, -1.0, 1.0])  # random sign per trial
    kw = dict(free_steps=50, nudged_steps=8, nudge_form=form)
    fast = FastEulerSolver(**kw)
    free = fast.relax_stack(st, x)
    nudged = fast.relax_stack(st, x, free, betas, yd)
    ref = EulerSolver(**kw)
    for t, n in enumerate(ns):
        f = ref.relax(n, x[t])
        assert (f - free[t]).abs().max() <= 1e-5
        assert (ref.relax(n, x[t], f, float(betas[t]), yd[t]) - nudged[t]).abs().max() <= 1e-5
    shared = fast.relax_stack(st, x[0])  # one batch shared by all trials
    for t, n in enumerate(ns):
        assert (ref.relax(n, x[0]) - shared[t]).abs().max() <= 1e-5


def test_tol_stops_each_trial_on_its_own():
    ns = nets()
    ns[2].W.mul_(3.0)  # the trials settle at different steps (80, 90, 35)
    st = TrialStack.from_networks(ns)
    x = torch.rand(5, 6, generator=torch.Generator().manual_seed(1))
    kw = dict(free_steps=400, tol=1e-6, check_every=5)
    fast = FastEulerSolver(**kw)
    out = fast.relax_stack(st, x)
    steps = []
    for t, n in enumerate(ns):
        ref = EulerSolver(**kw)
        assert (ref.relax(n, x) - out[t]).abs().max() <= 1e-5
        steps.append(ref.last_steps)
    assert fast.last_steps_per_trial.tolist() == steps
    assert fast.last_steps == max(steps) < 400 and len(set(steps)) == 3


def test_stack_relax_bad_input():
    st = TrialStack.from_networks(nets())
    s = FastEulerSolver(free_steps=3)
    x = torch.rand(4, 6)
    with pytest.raises(ValueError, match="x must have shape"):
        s.relax_stack(st, torch.rand(2, 4, 6))  # 2 input sets for 3 trials
    with pytest.raises(ValueError, match="state0 must have shape"):
        s.relax_stack(st, x, torch.zeros(4, 22))
    with pytest.raises(ValueError, match="one value or 3 values"):
        s.relax_stack(st, x, beta=[1.0, -1.0], target=torch.rand(4, 3))
    with pytest.raises(ValueError, match="zero for all trials"):
        s.relax_stack(st, x, beta=[1.0, 0.0, 1.0], target=torch.rand(4, 3))
    with pytest.raises(ValueError, match="target must have shape"):
        s.relax_stack(st, x, beta=1.0, target=torch.rand(2, 4, 3))


def test_update_rates_and_metrics_equal_the_single_network_ones():
    ns = nets()
    st = TrialStack.from_networks(ns)
    g = torch.Generator().manual_seed(2)
    free, nudged = torch.rand(3, 7, 22, generator=g), torch.rand(3, 7, 22, generator=g)
    betas = torch.tensor([1.0, -1.0, 0.5])
    valid = torch.ones(3, 7, dtype=torch.bool)
    valid[1, 5:] = False  # trial 1 has a short batch of 5, padded to 7
    dW, db = trial_eqprop_update(free, nudged, betas, st, valid)
    lr_W, lr_b = trial_rate_tensors(st, [0.1, [0.3, 0.2, 0.1, 0.05], 0.02])
    stats = TrialStats(st)
    r = stats.add(dW).cpu().numpy()
    for t, (n, lr) in enumerate(zip(ns, [0.1, [0.3, 0.2, 0.1, 0.05], 0.02])):
        rows = valid[t]
        w1, b1 = eqprop_update(free[t][rows], nudged[t][rows], float(betas[t]), n.topology)
        assert torch.allclose(w1, dW[t], atol=1e-6) and torch.allclose(b1, db[t], atol=1e-6)
        lw, lb = rate_tensors(n.topology, lr)
        assert torch.equal(lw, lr_W[t]) and torch.equal(lb, lr_b[t])
        bs = BlockStats(n.topology)
        np.testing.assert_allclose(r[t], bs.add(w1).numpy(), rtol=1e-5)
        np.testing.assert_allclose(stats.mean_abs_dw()[t], bs.mean_abs_dw(), rtol=1e-5)
    with pytest.raises(ValueError, match="beta != 0"):
        trial_eqprop_update(free, nudged, torch.tensor([1.0, 0.0, 1.0]), st)
    with pytest.raises(ValueError, match="one learning-rate spec per trial"):
        trial_rate_tensors(st, [0.1, 0.2])


def toy_data(n_train=23, n_test=12, n_in=6, n_out=3):
    """23 examples in batches of 5: the short batch sits where each trial's shuffle puts it."""
    rng = np.random.default_rng(0)
    lab_tr, lab_te = rng.integers(n_out, size=n_train), rng.integers(n_out, size=n_test)
    eye = np.eye(n_out, dtype=np.float32)
    return Dataset("toy", "classification", rng.random((n_train, n_in), dtype=np.float32), eye[lab_tr],
                   rng.random((n_test, n_in), dtype=np.float32), eye[lab_te], lab_tr, lab_te, batch_size=5)


def test_lockstep_training_equals_separate_trainer_runs():
    data = toy_data()
    cfgs = [TrainConfig(dataset="toy", hidden=[5, 4], topology=top, p=p, lr=lr, free_steps=20, nudged_steps=4,
                        epochs=2, seed=seed)
            for seed, top, p, lr in [(0, "sw", 0.2, 0.05), (1, "mlff", 0.1, [0.1, 0.05, 0.02]), (2, "sw", 0.4, 0.03)]]
    tt = TrialTrainer(cfgs, data)
    hist = tt.run(progress=False)
    for t, c in enumerate(cfgs):
        tr = Trainer(c, data)  # the single-network trainer with the reference EulerSolver
        for e in range(2):
            train = sum(tr.train_batch(k) for k in range(len(tr.train_batches))) / len(data.x_train)
            test, rms = tr.evaluate(), tr.stats.end_epoch()
            assert hist[t][e].train_error == train and hist[t][e].test_error == test
            np.testing.assert_allclose(hist[t][e].rms, rms, rtol=1e-4)
        assert (tr.net.W - tt.stack.W[t]).abs().max() <= 1e-5
        assert (tr.net.b - tt.stack.b[t]).abs().max() <= 1e-5
        assert tt.stats.log_spread()[t] == pytest.approx(tr.stats.log_spread(), rel=1e-4)
    assert [n.topology for n in tt.networks()] == [n.topology for n in tt.stack.to_networks()]


def test_trial_trainer_rejects_configs_that_cannot_run_in_lockstep():
    data = toy_data()
    a = TrainConfig(dataset="toy", hidden=[5, 4], free_steps=5, nudged_steps=2, epochs=1)
    with pytest.raises(ValueError, match="free_steps"):
        TrialTrainer([a, TrainConfig(dataset="toy", hidden=[5, 4], free_steps=6, nudged_steps=2, epochs=1)], data)
    with pytest.raises(ValueError, match="hidden"):
        TrialTrainer([a, TrainConfig(dataset="toy", hidden=[5, 5], free_steps=5, nudged_steps=2, epochs=1)], data)
    with pytest.raises(ValueError, match="2 networks for 1 configs"):
        TrialTrainer([a], data, networks=nets(2))


def test_fast_solver_is_a_drop_in_solver_for_the_single_network_trainer():
    data = toy_data()
    cfg = TrainConfig(dataset="toy", hidden=[5, 4], topology="sw", p=0.2, lr=0.05, free_steps=20, nudged_steps=4,
                      epochs=1, seed=4)
    ref, fast = Trainer(cfg, data), Trainer(cfg, data, solver=FastEulerSolver(free_steps=20, nudged_steps=4))
    for tr in (ref, fast):
        for k in range(len(tr.train_batches)):
            tr.train_batch(k)
    assert (ref.net.W - fast.net.W).abs().max() <= 1e-5
    assert ref.evaluate() == fast.evaluate()


def test_raw_tensor_entry_checks_the_topologies():
    ns = nets(2)
    st = TrialStack.from_networks(ns)
    with pytest.raises(ValueError, match="need 2 topologies of equal sizes"):
        FastEulerSolver().relax_tensors(st.W, st.b, [ns[0].topology, mlff([6, 5, 3])], torch.rand(3, 6))
    with pytest.raises(ValueError, match="need 2 topologies"):
        FastEulerSolver().relax_tensors(st.W, st.b, [ns[0].topology], torch.rand(3, 6))


def test_trial_trainer_starts_from_given_networks():
    data = toy_data()
    cfgs = [TrainConfig(dataset="toy", hidden=[5, 4], free_steps=5, nudged_steps=2, epochs=1, seed=s) for s in (0, 1)]
    given = [Network.init(mlff([6, 5, 4, 3]), seed=20 + s, dtype=torch.float64) for s in (0, 1)]  # e.g. device instances
    before = given[0].W.clone()
    tt = TrialTrainer(cfgs, data, networks=given)
    assert tt.stack.dtype == torch.float32
    assert all(torch.equal(tt.stack.W[t], given[t].W.float()) for t in range(2))
    tt.train_batch(0)
    assert not torch.equal(tt.stack.W[0], given[0].W.float())  # trained the stack ...
    assert torch.equal(given[0].W, before)  # ... not the caller's networks


def test_trial_checkpoint_resume_equals_an_uninterrupted_run(tmp_path):
    data = toy_data()
    cfgs = [TrainConfig(dataset="toy", hidden=[5, 4], topology=top, p=0.3, lr=0.05, free_steps=15, nudged_steps=3,
                        epochs=3, seed=s) for s, top in ((0, "sw"), (1, "mlff"))]
    whole = TrialTrainer(cfgs, data)
    whole.run(progress=False)
    first = TrialTrainer(cfgs, data)
    first.run(epochs=1, progress=False, checkpoint=tmp_path / "g.pt")
    resumed = TrialTrainer(cfgs, data)
    resumed.load_checkpoint(tmp_path / "g.pt")
    assert len(resumed.history[0]) == 1
    resumed.run(progress=False)
    assert torch.equal(resumed.stack.W, whole.stack.W) and torch.equal(resumed.stack.b, whole.stack.b)
    for t in range(2):
        assert [(h.train_error, h.test_error, h.rms) for h in resumed.history[t]] == \
            [(h.train_error, h.test_error, h.rms) for h in whole.history[t]]
    np.testing.assert_array_equal(resumed.stats.log_spread(), whole.stats.log_spread())
    assert resumed.metrics(1)["config"]["seed"] == 1 and len(resumed.metrics(1)["epochs"]) == 3


def test_trial_checkpoint_refuses_another_group(tmp_path):
    data = toy_data()
    cfgs = [TrainConfig(dataset="toy", hidden=[5, 4], free_steps=5, nudged_steps=2, epochs=1, seed=s) for s in (0, 1)]
    TrialTrainer(cfgs, data).save_checkpoint(tmp_path / "g.pt")
    other = [TrainConfig(dataset="toy", hidden=[5, 4], free_steps=5, nudged_steps=2, epochs=1, seed=s, lr=0.5)
             for s in (0, 1)]
    with pytest.raises(ValueError, match="trial 0's checkpoint config differs.*lr"):
        TrialTrainer(other, data).load_checkpoint(tmp_path / "g.pt")
    with pytest.raises(ValueError, match="holds 2 trials, this group has 1"):
        TrialTrainer(cfgs[:1], data).load_checkpoint(tmp_path / "g.pt")
    with pytest.raises(FileNotFoundError, match="no trial checkpoint"):
        TrialTrainer(cfgs, data).load_checkpoint(tmp_path / "missing.pt")


def test_train_limit_uses_the_first_examples_in_both_trainers():
    data = toy_data()
    cfg = TrainConfig(dataset="toy", hidden=[5, 4], free_steps=5, nudged_steps=2, epochs=1, train_limit=12,
                      test_limit=7)
    for tr in (Trainer(cfg, data), TrialTrainer([cfg], data)):
        assert len(tr.data.x_train) == 12 and len(tr.data.x_test) == 7
        np.testing.assert_array_equal(tr.data.x_train, data.x_train[:12])
        assert "first 12 train / 7 test" in tr.data.info["limited"]
    with pytest.raises(ValueError, match="train limit 999 outside 1..23"):
        Trainer(TrainConfig(dataset="toy", hidden=[5, 4], train_limit=999), data)
    with pytest.raises(ValueError, match="test_limit must be a positive integer"):
        TrainConfig(test_limit=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_config_without_cuda_is_refused_before_any_work():
    cfg = TrainConfig(dataset="toy", hidden=[5, 4], device="cuda", free_steps=5, nudged_steps=2, epochs=1)
    for make in (lambda: TrialTrainer([cfg], toy_data()), lambda: Trainer(cfg, toy_data())):
        with pytest.raises(RuntimeError, match="device 'cuda' requested but torch.cuda.is_available"):
            make()


def test_engine_choice_and_its_results():
    from eqprop.trainer import make_solver
    data = toy_data()
    base = dict(dataset="toy", hidden=[5, 4], topology="sw", p=0.2, lr=0.05, free_steps=20, nudged_steps=4,
                epochs=1, seed=3)
    assert type(make_solver(TrainConfig(**base))) is EulerSolver  # auto on CPU: the reference
    assert type(make_solver(TrainConfig(**base, engine="fast"))) is FastEulerSolver
    assert type(make_solver(TrainConfig(**base, device="cuda"))) is FastEulerSolver  # no CUDA needed to choose
    net = nets(1)[0]
    bad = torch.rand(3, 6)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        FastEulerSolver(free_steps=3).relax(net, bad)
    # the Trainer's fast engine skips that check (Dataset rows are validated on load): no GPU sync per call
    assert make_solver(TrainConfig(**base, engine="fast")).check_values is False
    assert torch.isnan(make_solver(TrainConfig(**base, engine="fast")).relax(net, bad)).any()
    ref, fast = Trainer(TrainConfig(**base), data), Trainer(TrainConfig(**base, engine="fast"), data)
    for tr in (ref, fast):
        for k in range(len(tr.train_batches)):
            tr.train_batch(k)
    assert (ref.net.W - fast.net.W).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="engine 'reference' cannot run trials"):
        TrialTrainer([TrainConfig(**base, engine="reference")], data)
    with pytest.raises(ValueError, match="engine must be one of"):
        TrainConfig(**base, engine="turbo")
