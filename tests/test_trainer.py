"""The one Trainer over T >= 1 trials: lockstep == separate runs, padding, the paper's procedure,
kill-and-resume, checkpoint refusals, results files, configs (RunConfig, TOML) and the CLI."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from eqprop.config import LOCKSTEP_FIELDS, EulerConfig, RunConfig, read_toml
from eqprop.datasets import Dataset, load_dataset
from eqprop.fast_relax import FastEulerSolver
from eqprop.network import Network
from eqprop.solver import EulerSolver
from eqprop.topology import mlff
from eqprop.trainer import CheckpointMismatch, Trainer, build_network, train

EULER = EulerConfig(free_steps=20, nudged_steps=4, engine="reference")


def toy_data(n_train=23, n_test=12, n_in=6, n_out=3):
    """23 examples in batches of 5: the short batch sits where each trial's shuffle puts it."""
    rng = np.random.default_rng(0)
    lab_tr, lab_te = rng.integers(n_out, size=n_train), rng.integers(n_out, size=n_test)
    eye = np.eye(n_out, dtype=np.float32)
    return Dataset("toy", "classification", rng.random((n_train, n_in), dtype=np.float32), eye[lab_tr],
                   rng.random((n_test, n_in), dtype=np.float32), eye[lab_te], lab_tr, lab_te, batch_size=5)


def toy_cfg(out, **kw):
    base = dict(dataset="toy", hidden=(5, 4), topology="sw", p=0.3, lr=0.05, epochs=2, seed=0, out=str(out))
    return RunConfig(**{**base, **kw})


# the three trials of the lockstep tests: other seeds, topologies, p values and rate specs
TRIALS = [dict(seed=0, topology="sw", p=0.2, lr=0.05), dict(seed=1, topology="mlff", lr=(0.1, 0.05, 0.02)),
          dict(seed=2, topology="sw", p=0.4, lr=0.03)]


def trial_cfgs(root, **kw):
    return [toy_cfg(root / f"t{t}", **{**tr, **kw}) for t, tr in enumerate(TRIALS)]


def short_batch_positions(tr):
    return [[k for k in range(tr.n_batches) if not tr.valid[t, k].all()] for t in range(tr.T)]


def epoch_tuples(history):
    return [(h.epoch, h.train_error, h.test_error, h.rms) for h in history]


# -- lockstep trials == separate runs ------------------------------------------------------
def test_lockstep_trials_equal_separate_runs_exactly_with_the_reference(tmp_path):
    data = toy_data(n_train=25)  # five full batches: no padding
    cfgs = trial_cfgs(tmp_path)
    group = Trainer(cfgs, data, euler=EULER, checkpoint=tmp_path / "group.pt")
    assert group.T == 3 and group.net.stacked and type(group.solver) is EulerSolver
    assert group.common_len == [5] * 5 and bool(group.valid.all())
    metrics = group.run(progress=False)
    for t, c in enumerate(cfgs):
        alone = Trainer(dataclasses.replace(c, out=str(tmp_path / f"alone{t}")), data, euler=EULER)
        assert alone.T == 1 and alone.checkpoint == tmp_path / f"alone{t}" / "checkpoint.pt"
        m = alone.run(progress=False)[0]
        assert torch.equal(alone.net.W[0], group.net.W[t]) and torch.equal(alone.net.b[0], group.net.b[t])
        assert torch.equal(alone.network().W, group.network(t).W)
        assert epoch_tuples(alone.history[0]) == epoch_tuples(group.history[t])
        assert torch.equal(alone.train_particles[0], group.train_particles[t])
        assert all(torch.equal(a[0], g[t]) for a, g in zip(alone.test_particles, group.test_particles))
        assert m["log_spread"] == metrics[t]["log_spread"] and m["mean_rms"] == metrics[t]["mean_rms"]
        assert metrics[t]["config"] == c.to_dict()
        assert m["config"] == {**c.to_dict(), "out": str(tmp_path / f"alone{t}")}
        assert (metrics[t]["trial"], metrics[t]["trials"], m["trial"], m["trials"]) == (t, 3, 0, 1)
    assert not torch.equal(group.net.W[0], group.net.W[2]), "the trials differ"
    assert group.network(1).W.data_ptr() == group.net.W[1].data_ptr(), "network(t) is a view of the stack"
    # each trial writes the folder of a single run
    for t, c in enumerate(cfgs):
        saved = json.loads((tmp_path / f"t{t}" / "metrics.json").read_text())
        solver = dict(saved["solver"])
        chosen = solver.pop("coupling_chosen")  # coupling auto: measured per batch size (B5 train, B2 test)
        assert saved["config"]["seed"] == c.seed and solver == EulerSolver(EULER).describe()
        assert set(chosen) == {"B5", "B2"} and set(chosen.values()) <= {"dense", "blocks"}
        assert [e["epoch"] for e in saved["epochs"]] == [1, 2]
        conf = json.loads((tmp_path / f"t{t}" / "config.json").read_text())
        assert conf == {"run": c.to_dict(), "solver": EulerSolver(EULER).describe(), "trial": t, "trials": 3}
    assert (tmp_path / "group.pt").exists()


def test_padded_lockstep_trials_equal_separate_runs(tmp_path):
    """Short batches at different positions are padded; padded rows count nowhere. The padded relaxations
    run over 5 rows where a separate run has 3, and MKL's addmm rounds a row differently with the row
    count: the trials agree with separate runs to fp32 rounding there (bitwise elsewhere)."""
    data = toy_data()
    cfgs = trial_cfgs(tmp_path)
    group = Trainer(cfgs, data, euler=EULER, checkpoint=tmp_path / "group.pt")
    pos = short_batch_positions(group)
    assert all(len(p) == 1 for p in pos) and len({p[0] for p in pos}) > 1, "short batches at different positions"
    assert [L is None for L in group.common_len] == [k in sum(pos, []) for k in range(group.n_batches)]
    assert int(group.valid.sum()) == 3 * 23
    group.run(progress=False)
    for t, c in enumerate(cfgs):
        alone = Trainer(c, data, euler=EULER)
        assert short_batch_positions(alone) == [pos[t]] and alone.common_len[pos[t][0]] == 3
        alone.run(progress=False)
        assert (alone.net.W[0] - group.net.W[t]).abs().max() <= 1e-5
        assert (alone.net.b[0] - group.net.b[t]).abs().max() <= 1e-5
        for k in range(group.n_batches):  # the particles of real rows; padded rows hold nothing of use
            v = group.valid[t, k]
            assert (alone.train_particles[0, k][v] - group.train_particles[t, k][v]).abs().max() <= 1e-5
        for a, g in zip(alone.history[0], group.history[t]):
            assert (a.train_error, a.test_error) == (g.train_error, g.test_error), "padded rows count nowhere"
            np.testing.assert_allclose(a.rms, g.rms, rtol=1e-4)


def test_lockstep_with_the_fast_engine_equals_separate_reference_runs_within_rounding(tmp_path):
    data = toy_data()
    fast_euler = dataclasses.replace(EULER, engine="fast")
    cfgs = trial_cfgs(tmp_path, epochs=1)
    group = Trainer(cfgs, data, euler=fast_euler, checkpoint=tmp_path / "group.pt")
    assert type(group.solver) is FastEulerSolver and group.solver.check_values is False
    group.run(progress=False)
    for t, c in enumerate(cfgs):
        alone = Trainer(c, data, euler=EULER)
        alone.run(progress=False)
        assert (alone.net.W[0] - group.net.W[t]).abs().max() <= 1e-5
        assert (alone.net.b[0] - group.net.b[t]).abs().max() <= 1e-5
        assert alone.history[0][0].test_error == group.history[t][0].test_error
        np.testing.assert_allclose(alone.history[0][0].rms, group.history[t][0].rms, rtol=1e-4)
    # a solver instance works too (any Solver)
    single = Trainer(cfgs[0], data, solver=FastEulerSolver(EULER))
    single.run(progress=False)
    assert (single.net.W[0] - group.net.W[0]).abs().max() <= 1e-5


def test_configs_that_cannot_run_in_lockstep_are_refused(tmp_path):
    data = toy_data()
    a = toy_cfg(tmp_path / "a")
    assert {"dataset", "hidden", "epochs", "batch_size"} <= set(LOCKSTEP_FIELDS) and "seed" not in LOCKSTEP_FIELDS
    ck = tmp_path / "g.pt"
    with pytest.raises(ValueError, match=r"trial 1's config differs from trial 0's in \['hidden'\]"):
        Trainer([a, toy_cfg(tmp_path / "b", hidden=(5, 5))], data, euler=EULER, checkpoint=ck)
    with pytest.raises(ValueError, match="epochs"):
        Trainer([a, toy_cfg(tmp_path / "b", epochs=3)], data, euler=EULER, checkpoint=ck)
    with pytest.raises(ValueError, match="distinct results folders"):
        Trainer([a, toy_cfg(tmp_path / "a", seed=1)], data, euler=EULER, checkpoint=ck)
    with pytest.raises(ValueError, match="needs a checkpoint path"):
        Trainer([a, toy_cfg(tmp_path / "b", seed=1)], data, euler=EULER)
    with pytest.raises(ValueError, match="2 networks for 1 run configs"):
        Trainer([a], data, euler=EULER, networks=[Network.init(mlff([6, 5, 4, 3]))] * 2)
    with pytest.raises(ValueError, match="at least one run config"):
        Trainer([], data)
    with pytest.raises(ValueError, match="does not fit dataset toy"):
        Trainer(a, data, euler=EULER, networks=[Network.init(mlff([5, 5, 4, 3]))])


def test_trainer_starts_from_given_networks(tmp_path):
    data = toy_data()
    cfgs = [toy_cfg(tmp_path / f"s{s}", topology="mlff", seed=s, epochs=1) for s in (0, 1)]
    # e.g. device instances, in another dtype
    given = [Network.init(mlff([6, 5, 4, 3]), seed=20 + s, dtype=torch.float64) for s in (0, 1)]
    before = given[0].W.clone()
    tr = Trainer(cfgs, data, euler=EULER, networks=given, checkpoint=tmp_path / "g.pt")
    assert tr.net.dtype == torch.float32 and tr.network_given
    assert all(torch.equal(tr.net.W[t], given[t].W.float()) for t in range(2))
    assert not torch.equal(tr.net.W[0], build_network(cfgs[0], 6, 3).W)
    tr.train_batch(0)
    assert not torch.equal(tr.net.W[0], given[0].W.float())  # trained the stack ...
    assert torch.equal(given[0].W, before)  # ... not the caller's networks
    stack = Network.stack([g.to(dtype=torch.float32) for g in given])
    tr2 = Trainer(cfgs, data, euler=EULER, networks=stack, checkpoint=tmp_path / "g2.pt")
    assert torch.equal(tr2.net.W, stack.W) and tr2.net.W.data_ptr() != stack.W.data_ptr()
    assert tr2.metrics()[0]["network_given"] is True


def test_build_network_follows_the_config():
    a = build_network(RunConfig(hidden=(5, 4), topology="sw", p=0.5, seed=3), 6, 3)
    b = build_network(RunConfig(hidden=(5, 4), topology="sw", p=0.5, seed=3, lr=0.2), 6, 3)
    c = build_network(RunConfig(hidden=(5, 4), topology="sw", p=0.5, seed=4), 6, 3)
    assert a.sizes == (6, 5, 4, 3) and not a.stacked and a.topology.info.get("actual_p", 0) > 0
    assert torch.equal(a.W, b.W) and not torch.equal(a.W, c.W)
    assert build_network(RunConfig(hidden=(5,), dtype="float64"), 6, 3).dtype == torch.float64


# -- the paper's procedure ---------------------------------------------------------------------
class SpySolver:
    """The reference solver, recording every relax call (phase, inputs, start, result, weights)."""

    def __init__(self, config):
        self.inner = EulerSolver(config)
        self.calls = []
        self.updates = 0

    def prepare(self, network):
        self.prepared = network

    def relax(self, network, x, u0=None, beta=0.0, target=None):
        out = self.inner.relax(network, x, u0, beta, target)
        self.calls.append(dict(beta=torch.as_tensor(beta, dtype=torch.float64).flatten().clone(), x=x.clone(),
                               u0=None if u0 is None else u0.clone(), out=out.clone(), W=network.W.clone(),
                               target=None if target is None else target.clone()))
        return out

    def apply_update(self, network, dW, db, lr_W, lr_b):
        self.updates += 1
        self.inner.apply_update(network, dW, db, lr_W, lr_b)

    def describe(self):
        return {**self.inner.describe(), "solver": "spy"}

    def close(self):
        pass


def test_paper_procedure_particles_order_and_beta(tmp_path):
    data = load_dataset("iris")
    spy = SpySolver(EulerConfig(free_steps=15, nudged_steps=3))
    cfg = RunConfig(dataset="iris", hidden=(4,), lr=0.05, epochs=2, seed=1, out=str(tmp_path / "run"))
    tr = Trainer(cfg, data, solver=spy)
    assert spy.prepared is tr.net
    tr.run(progress=False)
    nb, nt, n_in = tr.n_batches, len(tr.test_batches), 4
    assert tr.common_len == [None] * nb or all(L is not None for L in tr.common_len)
    per_epoch = 2 * nb + nt
    assert len(spy.calls) == 2 * per_epoch and spy.updates == 2 * nb
    for e in range(2):
        calls = spy.calls[e * per_epoch:(e + 1) * per_epoch]
        train_calls, test = calls[:2 * nb], calls[2 * nb:]
        for k in range(nb):
            free, nudged = train_calls[2 * k], train_calls[2 * k + 1]
            assert free["beta"].tolist() == [0.0] and nudged["beta"].abs().tolist() == [cfg.beta]
            assert torch.equal(nudged["u0"], free["out"]), "nudged phase starts from the free equilibrium"
            rows = tr.idx[0, k][tr.valid[0, k]].numpy()
            assert torch.equal(free["x"][0], torch.as_tensor(data.x_train[rows])), "same order every epoch"
            assert torch.equal(free["u0"][..., :n_in], free["x"]), "inputs first"
            if e == 0:
                assert torch.all(free["u0"][..., n_in:] == 0), "particles start at 0"
            else:  # the particle stored in epoch 1
                assert torch.equal(free["u0"][..., n_in:], spy.calls[2 * k]["out"][..., n_in:])
            if k + 1 < nb:
                assert not torch.equal(train_calls[2 * k + 2]["W"], free["W"]), "one update per batch"
        assert all(c["beta"].tolist() == [0.0] for c in test)
        if e == 1:
            for k in range(nt):
                assert torch.equal(test[k]["u0"][..., n_in:], spy.calls[2 * nb + k]["out"][..., n_in:])
    signs = {float(torch.sign(c["beta"][0])) for c in spy.calls if c["beta"][0] != 0}
    assert signs == {1.0, -1.0}, "random beta sign"
    # the batch list is a shuffled list of consecutive file-order batches
    batches = [tr.idx[0, k][tr.valid[0, k]].numpy() for k in range(nb)]
    assert sorted(int(b[0]) for b in batches) == list(range(0, len(data.x_train), 5))
    assert all(np.array_equal(b, np.arange(b[0], b[0] + len(b))) for b in batches)
    assert [int(b[0]) for b in batches] != sorted(int(b[0]) for b in batches), "shuffled"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["solver"]["solver"] == "spy"


def test_free_start_zero_starts_every_free_phase_at_zero(tmp_path):
    """free_start "zero": every training and test free phase from u = 0 (the particles are not read), so a
    test error does not depend on what the circuit held before; the nudged phase still starts from the free
    state. The default reads the particles (test_paper_procedure_particles_order_and_beta)."""
    data = load_dataset("iris")
    spy = SpySolver(EulerConfig(free_steps=15, nudged_steps=3))
    cfg = RunConfig(dataset="iris", hidden=(4,), lr=0.05, epochs=2, seed=1, free_start="zero",
                    out=str(tmp_path / "run"))
    tr = Trainer(cfg, data, solver=spy)
    tr.run(progress=False)
    free_calls = [c for c in spy.calls if c["beta"].abs().sum() == 0]
    assert len(free_calls) == 2 * (tr.n_batches + len(tr.test_batches))
    assert all(torch.all(c["u0"][..., 4:] == 0) for c in free_calls)
    assert any(bool((c["out"][..., 4:] != 0).any()) for c in free_calls), "the free states themselves are not 0"
    nudged = [c for c in spy.calls if c["beta"].abs().sum() != 0]
    assert all(bool((c["u0"][..., 4:] != 0).any()) for c in nudged[-3:]), "the nudge starts from the free state"
    before = tr.evaluate()
    for p in tr.test_particles:  # whatever the circuit held before: the same test error
        p.uniform_(-1.0, 2.0)
    assert np.array_equal(tr.evaluate(), before)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["run"]["free_start"] == "zero"
    assert "free_start" not in RunConfig().to_dict(), "the default is not written: older folders compare equal"
    with pytest.raises(ValueError, match="free_start must be one of"):
        RunConfig(free_start="random")


def test_soft_targets_move_the_nudge_targets_and_not_the_error_count(tmp_path):
    """soft_targets s: every nudge pulls towards s and 1 - s instead of the one-hot 0 and 1 (the class at 1 - s);
    errors are still counted against the labels, and a regression task refuses it before any work."""
    data = load_dataset("iris")
    runs = {}
    for s in (0.0, 0.2):
        spy = SpySolver(EulerConfig(free_steps=15, nudged_steps=3))
        cfg = RunConfig(dataset="iris", hidden=(4,), lr=0.05, epochs=1, seed=1, soft_targets=s,
                        out=str(tmp_path / f"run{s}"))
        tr = Trainer(cfg, data, solver=spy)
        tr.run(progress=False)
        nudges = [c for c in spy.calls if c["beta"].abs().sum() != 0]
        assert len(nudges) == tr.n_batches
        targets = torch.cat([c["target"].reshape(-1, 3) for c in nudges])
        assert sorted(torch.unique(targets).tolist()) == pytest.approx([s, 1 - s])
        assert torch.equal(targets.argmax(1), torch.cat([torch.as_tensor(data.y_train)[tr.idx[0, k]].argmax(1)
                                                         for k in range(tr.n_batches)]))
        runs[s] = (tr, nudges)
    (hard, hard_nudges), (soft, soft_nudges) = runs[0.0], runs[0.2]
    assert torch.equal(hard_nudges[0]["W"], soft_nudges[0]["W"]), "the same start"
    assert not torch.equal(hard.net.W, soft.net.W), "other targets, other updates"
    # the error is counted against the one-hot labels: the soft run's evaluation equals a count by hand
    out = torch.cat([soft.solver.relax(soft.net, soft._t["x_test"][rows], soft._start(
        soft._t["x_test"][rows].expand(1, -1, -1), soft.test_particles[k]))[..., -3:] for k, rows in
        enumerate(soft.test_batches)], 1)
    by_hand = (out[0].argmax(1) != torch.as_tensor(data.y_test).argmax(1)).double().mean().item()
    assert soft.evaluate()[0] == pytest.approx(by_hand, abs=1e-12)
    assert json.loads((tmp_path / "run0.2" / "config.json").read_text())["run"]["soft_targets"] == 0.2
    assert "soft_targets" not in RunConfig().to_dict(), "the default is not written: older folders compare equal"
    for bad in (0.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="soft_targets must"):
            RunConfig(soft_targets=bad)
    with pytest.raises(ValueError, match="soft_targets 0.1 is for classification.*diabetes is a regression task"):
        Trainer(RunConfig(dataset="diabetes", hidden=(4,), soft_targets=0.1, out=str(tmp_path / "reg")),
                load_dataset("diabetes"), euler=EULER)
    assert not (tmp_path / "reg").exists(), "refused before any work"


# -- kill and resume ---------------------------------------------------------------------------
class Killed(Exception):
    pass


def test_kill_and_resume_gives_the_same_weights(tmp_path, monkeypatch):
    data = toy_data()
    straight = Trainer(toy_cfg(tmp_path / "a"), data, euler=EULER)
    straight.run(progress=False)
    cfg = toy_cfg(tmp_path / "b")
    first = Trainer(cfg, data, euler=EULER)
    calls = {"n": 0}
    orig = Trainer.train_batch

    def dying(self, k):  # killed in the middle of epoch 2, after epoch 1's checkpoint
        calls["n"] += 1
        if calls["n"] == self.n_batches + 3:
            raise Killed
        return orig(self, k)

    monkeypatch.setattr(Trainer, "train_batch", dying)
    with pytest.raises(Killed):
        first.run(progress=False)
    monkeypatch.setattr(Trainer, "train_batch", orig)
    assert [e["epoch"] for e in json.loads((tmp_path / "b" / "metrics.json").read_text())["epochs"]] == [1]
    resumed = Trainer(cfg, data, euler=EULER)
    m = resumed.run(resume=True, progress=False)[0]
    assert [e["epoch"] for e in m["epochs"]] == [1, 2]
    assert torch.equal(resumed.net.W, straight.net.W) and torch.equal(resumed.net.b, straight.net.b)
    assert epoch_tuples(resumed.history[0]) == epoch_tuples(straight.history[0])
    assert m["log_spread"] == straight.metrics()[0]["log_spread"]
    # resuming a finished run trains nothing more
    again = Trainer(cfg, data, euler=EULER)
    again.run(resume=True, progress=False)
    assert torch.equal(again.net.W, straight.net.W) and len(again.history[0]) == 2


def test_trials_resume_bit_identical(tmp_path):
    data = toy_data()
    whole = Trainer(trial_cfgs(tmp_path / "a"), data, euler=EULER, checkpoint=tmp_path / "a.pt")
    whole.run(progress=False)
    cfgs = trial_cfgs(tmp_path / "b")
    first = Trainer(cfgs, data, euler=EULER, checkpoint=tmp_path / "b.pt")
    first.run(epochs=1, progress=False)
    assert len(first.history[0]) == 1 and not torch.equal(first.net.W, whole.net.W)
    resumed = Trainer(cfgs, data, euler=EULER, checkpoint=tmp_path / "b.pt")
    metrics = resumed.run(progress=False, resume=True)
    assert torch.equal(resumed.net.W, whole.net.W) and torch.equal(resumed.net.b, whole.net.b)
    assert torch.equal(resumed.train_particles, whole.train_particles)
    for t in range(3):
        assert epoch_tuples(resumed.history[t]) == epoch_tuples(whole.history[t])
        assert torch.equal(resumed.test_particles[0][t], whole.test_particles[0][t])
    np.testing.assert_array_equal(resumed.stats.log_spread(), whole.stats.log_spread())
    assert metrics[1]["config"]["seed"] == 1 and len(metrics[1]["epochs"]) == 2
    assert json.loads((tmp_path / "b" / "t2" / "metrics.json").read_text())["epochs"] == metrics[2]["epochs"]


def test_checkpoint_refuses_another_run(tmp_path):
    data = toy_data()
    cfgs = [toy_cfg(tmp_path / f"s{s}", seed=s, epochs=1) for s in (0, 1)]
    ck = tmp_path / "g.pt"
    Trainer(cfgs, data, euler=EULER, checkpoint=ck).save_checkpoint(ck)
    other = [dataclasses.replace(c, beta=0.5) for c in cfgs]  # (the rates may change: tests/test_schedules.py)
    with pytest.raises(CheckpointMismatch, match=r"g.pt: trial 0's checkpoint config differs.*'beta'"):
        Trainer(other, data, euler=EULER, checkpoint=ck).load_checkpoint(ck)
    with pytest.raises(CheckpointMismatch, match="holds 2 trials, this run has 1"):
        Trainer(cfgs[:1], data, euler=EULER, checkpoint=ck).load_checkpoint(ck)
    with pytest.raises(CheckpointMismatch, match="solver settings differ.*free_steps"):
        Trainer(cfgs, data, euler=dataclasses.replace(EULER, free_steps=21), checkpoint=ck).load_checkpoint(ck)
    nets = [Network.init(mlff([6, 5, 4, 3]), seed=s) for s in (0, 1)]  # same configs, other topologies
    with pytest.raises(CheckpointMismatch, match="topologies differ"):
        Trainer(cfgs, data, euler=EULER, networks=nets, checkpoint=ck).load_checkpoint(ck)
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*missing.pt"):
        Trainer(cfgs, data, euler=EULER, checkpoint=tmp_path / "missing.pt").run(resume=True, progress=False)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointMismatch, match="garbage.pt is not a readable checkpoint"):
        Trainer(cfgs, data, euler=EULER, checkpoint=garbage).run(resume=True, progress=False)
    assert issubclass(CheckpointMismatch, ValueError)
    # what a resume may change: more epochs, another folder, another arrangement of the same arithmetic
    ok = Trainer([dataclasses.replace(c, epochs=3, out=c.out + "-moved") for c in cfgs], data,
                 euler=dataclasses.replace(EULER, coupling="blocks"), checkpoint=ck)
    ok.load_checkpoint(ck)
    assert torch.equal(ok.net.W, Trainer(cfgs, data, euler=EULER, checkpoint=ck).net.W)


def test_resume_may_switch_the_euler_engine(tmp_path):
    data = toy_data()
    cfg = toy_cfg(tmp_path / "run", epochs=1)
    Trainer(cfg, data, euler=EULER).run(progress=False)  # the reference
    fast = Trainer(cfg, data, euler=dataclasses.replace(EULER, engine="fast"))
    fast.load_checkpoint(fast.checkpoint)
    assert type(fast.solver) is FastEulerSolver and len(fast.history[0]) == 1


# -- results -------------------------------------------------------------------------------------
def test_run_writes_results_and_learns_wine(tmp_path, with_plots):
    cfg = RunConfig(dataset="wine", hidden=(10,), lr=0.1, epochs=4, seed=1, out=str(tmp_path / "run"))
    m = train(cfg, euler=EulerConfig(free_steps=60, nudged_steps=6), progress=False)[0]
    out = tmp_path / "run"
    for f in ("config.json", "metrics.json", "metrics.csv", "errors.png", "rms.png", "checkpoint.pt"):
        assert (out / f).stat().st_size > 0, f
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["config"]["hidden"] == [10] and len(saved["epochs"]) == 4
    assert saved["solver"]["free_steps"] == 60 and saved["solver"]["solver"] == "EulerSolver"
    assert len(saved["epochs"][0]["rms"]) == 2 and np.isfinite(saved["log_spread"])
    assert m["epochs"][-1]["test_error"] < 0.3, "wine is easy: well below chance (0.67)"
    assert len((out / "metrics.csv").read_text().splitlines()) == 5
    assert "cpu_seconds" in (out / "metrics.csv").read_text().splitlines()[0]
    # each epoch's CPU time (the machine may be shared, so only its sign and the wall time's order are sure)
    assert all(0 < e["cpu_seconds"] < 5 * e["seconds"] + 1 for e in saved["epochs"])
    conf = json.loads((out / "config.json").read_text())
    assert RunConfig.from_dict(conf["run"]) == cfg and (conf["trial"], conf["trials"]) == (0, 1)


def test_regression_error_on_diabetes(tmp_path):
    cfg = RunConfig(dataset="diabetes", hidden=(5,), epochs=1, lr=0.05, out=str(tmp_path / "run"))
    m = train(cfg, load_dataset("diabetes"), euler=EulerConfig(free_steps=30, nudged_steps=6), progress=False)[0]
    e = m["epochs"][0]
    assert m["task"] == "regression" and 0 < e["test_error"] < 0.5


def test_train_limit_uses_the_first_examples(tmp_path):
    data = toy_data()
    cfg = toy_cfg(tmp_path, epochs=1, train_limit=12, test_limit=7)
    tr = Trainer(cfg, data, euler=EULER)
    assert len(tr.data.x_train) == 12 and len(tr.data.x_test) == 7 and tr.n_batches == 3
    np.testing.assert_array_equal(tr.data.x_train, data.x_train[:12])
    assert "first 12 train / 7 test" in tr.data.info["limited"]
    with pytest.raises(ValueError, match="train limit 999 outside 1..23"):
        Trainer(toy_cfg(tmp_path, train_limit=999), data, euler=EULER)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_config_without_cuda_is_refused_before_any_work(tmp_path):
    cfg = toy_cfg(tmp_path, device="cuda", epochs=1)
    with pytest.raises(RuntimeError, match="device 'cuda' requested but torch.cuda.is_available"):
        Trainer(cfg, toy_data(), euler=EULER)
    assert not any(tmp_path.iterdir()), "nothing written"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)")
def test_cuda_lockstep_trials_equal_cpu_reference_runs_within_rounding(tmp_path):
    data = toy_data()
    cfgs = trial_cfgs(tmp_path / "gpu", device="cuda", epochs=1)
    group = Trainer(cfgs, data, euler=dataclasses.replace(EULER, engine="auto"), checkpoint=tmp_path / "g.pt")
    assert type(group.solver) is FastEulerSolver and group.net.device.type == "cuda"
    group.run(progress=False)
    for t, c in enumerate(trial_cfgs(tmp_path / "cpu", epochs=1)):
        alone = Trainer(c, data, euler=EULER)
        alone.run(progress=False)
        assert (alone.net.W[0] - group.net.W[t].cpu()).abs().max() <= 1e-5
        assert alone.history[0][0].test_error == group.history[t][0].test_error


# -- configuration -----------------------------------------------------------------------------
def test_run_config_validation_names_the_field():
    for kw, field in [(dict(epochs=1.0), "epochs"), (dict(epochs=True), "epochs"), (dict(hidden=4), "hidden"),
                      (dict(hidden=[4, 0]), "hidden"), (dict(hidden=[4.0]), "hidden"), (dict(dataset=5), "dataset"),
                      (dict(lr=[0.1, 0.2]), "per-layer lr needs 3"), (dict(lr=-0.1), "learning rates"),
                      (dict(lr="fast"), "lr"), (dict(test_limit=0), "test_limit"), (dict(batch_size=2.5), "batch_size"),
                      (dict(topology="ring"), "topology"), (dict(topology="sw", p=1.5), "p must lie in"),
                      (dict(beta=0), "beta"), (dict(beta=-1.0), "beta < 0 with random_beta_sign"),
                      (dict(seed=-1), "seed"), (dict(device="tpu"), "device"), (dict(dtype="float16"), "dtype"),
                      (dict(intralayer=1), "intralayer"), (dict(out=3), "out"), (dict(sw_mode="swap"), "sw_mode")]:
        with pytest.raises(ValueError, match=f"run config: {field}"):
            RunConfig(**kw)
    cfg = RunConfig(hidden=[5, 4], lr=[0.1, 0.2, 0.3], beta=-0.5, random_beta_sign=False)
    assert cfg.hidden == (5, 4) and cfg.lr == (0.1, 0.2, 0.3), "lists become tuples (hashable, frozen)"
    assert cfg.to_dict()["hidden"] == [5, 4] and cfg.to_dict()["lr"] == [0.1, 0.2, 0.3]
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3
    with pytest.raises(ValueError, match="epochs"):
        dataclasses.replace(cfg, epochs=2.0)
    with pytest.raises(ValueError, match=r"x.json: unknown keys \['learning_rate'\]"):
        RunConfig.from_dict({"learning_rate": 0.1}, "x.json")


def test_toml_configs_are_read_into_both_tables_and_type_checked(tmp_path):
    tables = {"run": RunConfig, "euler": EulerConfig}
    flat = tmp_path / "flat.toml"
    flat.write_text('dataset = "iris"\nhidden = [4]\nepochs = 1\nfree_steps = 10\nnudged_steps = 2\n')
    got = read_toml(flat, tables)
    assert got == {"run": {"dataset": "iris", "hidden": [4], "epochs": 1},
                   "euler": {"free_steps": 10, "nudged_steps": 2}}
    assert RunConfig.from_dict(got["run"]).hidden == (4,) and EulerConfig.from_dict(got["euler"]).free_steps == 10
    nested = tmp_path / "nested.toml"
    nested.write_text('seed = 3\n[run]\nlr = [0.1, 0.2]\nhidden = [4]\n[euler]\neps = 0.25\n')
    got = read_toml(nested, tables)
    assert got == {"run": {"seed": 3, "lr": [0.1, 0.2], "hidden": [4]}, "euler": {"eps": 0.25}}
    for text, field in [("epochs = 1.0", "epochs"), ("hidden = 4", "hidden"), ("dataset = 5", "dataset"),
                        ("random_beta_sign = 1", "random_beta_sign"), ("[euler]\nfree_steps = 1.5", "free_steps")]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text + "\n")
        with pytest.raises(ValueError, match=f"bad.toml: (run|euler) config: {field}"):
            read_toml(bad, tables)  # types checked on reading: a flag overriding the key does not hide it
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('dataset = "iris"\nlearning_rate = 0.1\n')
    with pytest.raises(ValueError, match="unknown.toml: unknown key 'learning_rate'"):
        read_toml(unknown, tables)
    broken = tmp_path / "broken.toml"
    broken.write_text("dataset = \n")
    with pytest.raises(ValueError, match="broken.toml"):
        read_toml(broken, tables)
    with pytest.raises(FileNotFoundError, match="config file not found"):
        read_toml(tmp_path / "none.toml", tables)


# -- the command line ----------------------------------------------------------------------------
def test_cli_train_and_clear_errors(tmp_path, capsys):
    from eqprop_cli.main import main
    out = tmp_path / "cli"
    rc = main(["train", "--dataset", "iris", "--hidden", "5", "--epochs", "1", "--free-steps", "20",
               "--nudged-steps", "4", "--out", str(out), "--quiet"])
    assert rc == 0 and (out / "metrics.json").exists()
    assert json.loads((out / "config.json").read_text())["solver"]["free_steps"] == 20
    toml = tmp_path / "c.toml"
    toml.write_text('dataset = "iris"\nhidden = [4]\nepochs = 1\nfree_steps = 10\nnudged_steps = 2\n'
                    f'out = "{tmp_path / "t"}"\n')
    assert main(["train", "--config", str(toml), "--quiet", "--lr", "0.02"]) == 0
    conf = json.loads((tmp_path / "t" / "config.json").read_text())
    assert conf["run"]["lr"] == 0.02 and conf["run"]["hidden"] == [4] and conf["solver"]["nudged_steps"] == 2
    capsys.readouterr()
    assert main(["train", "--dataset", "nosuchset", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "nosuchset" in capsys.readouterr().err
    assert main(["train", "--dataset", "iris", "--p", "1.5", "--topology", "sw", "--quiet"]) == 2
    assert "p must lie in [0, 1]" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('dataset = "iris"\nlearning_rate = 0.1\n')
    assert main(["train", "--config", str(bad), "--quiet"]) == 2
    assert "unknown key 'learning_rate'" in capsys.readouterr().err
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('dataset = "iris"\nepochs = 1.0\n')
    assert main(["train", "--config", str(wrong), "--quiet"]) == 2
    assert "epochs must be an integer" in capsys.readouterr().err


def test_hidden_shorthand_and_reproduce_restart(tmp_path, monkeypatch):
    from eqprop_cli.main import main
    from eqprop_cli.train import _ints
    assert _ints("500x3") == [500, 500, 500] and _ints("20,10x2") == [20, 10, 10]
    out = tmp_path / "rep"
    args = ["reproduce", "table1", "--only", "wine", "--epochs", "1", "--out", str(out), "--quiet"]
    import experiments.table1 as t1
    orig = t1.runs

    def tiny(epochs=None, seeds=(0,), only=None):
        return [dataclasses.replace(r, euler=dataclasses.replace(r.euler, free_steps=10, nudged_steps=2))
                for r in orig(epochs, seeds, only)[:2]]  # wine-5 MLFF and SW

    monkeypatch.setattr(t1, "runs", tiny)
    assert main(args) == 0
    first = (out / "wine-5-mlff" / "s0" / "metrics.json").stat().st_mtime_ns
    assert main(args) == 0  # finished runs are skipped
    assert (out / "wine-5-mlff" / "s0" / "metrics.json").stat().st_mtime_ns == first
    assert main(args + ["--restart"]) == 0
    assert (out / "wine-5-mlff" / "s0" / "metrics.json").stat().st_mtime_ns != first
    seq = tmp_path / "seq"
    assert main(args[:-3] + ["--out", str(seq), "--quiet", "--sequential"]) == 0  # run by run
    assert (seq / "wine-5-sw" / "s0" / "checkpoint.pt").exists()
    a, b = (json.loads((d / "summary.json").read_text()) for d in (out, seq))
    assert set(a) == {"wine-5-mlff", "wine-5-sw"}
    for label in a:  # lockstep trials == separate runs (to rounding where short batches are padded)
        assert a[label]["test_error"] == b[label]["test_error"]
        assert a[label]["log_spread"] == pytest.approx(b[label]["log_spread"], rel=1e-4)
    report = (out / "report.md").read_text()
    assert "wine-5: log-spread MLFF" in report and (out / "table1_log_spread.png").exists()


def test_a_spice_resume_may_change_what_happens_to_an_unsettled_transient():
    """A run stopped by an unsettled transient (its error suggests on_unsettled 'warn') resumes with 'warn' or more
    extensions: up to there no transient met them. Tolerances that change every solve stay refused."""
    from circuits.spice_solver import SpiceSolver
    from eqprop.run_files import SOLVER_MAY_CHANGE, config_diff
    old = SpiceSolver(on_unsettled="raise").describe()
    assert config_diff(old, SpiceSolver(on_unsettled="warn", max_extend=20).describe(), SOLVER_MAY_CHANGE) == {}
    assert set(config_diff(old, SpiceSolver(settle_tol=1e-4).describe(), SOLVER_MAY_CHANGE)) == {"settle_tol"}
