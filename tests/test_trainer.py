import json

import numpy as np
import pytest
import torch

from eqprop.config import TrainConfig
from eqprop.datasets import load_dataset
from eqprop.trainer import Trainer
from eqprop_cli.main import main


def small_cfg(tmp_path, **kw):
    base = dict(dataset="wine", hidden=[6, 6], topology="sw", p=0.2, lr=0.05, free_steps=30, nudged_steps=6,
                epochs=3, seed=1, out=str(tmp_path / "run"))
    base.update(kw)
    return TrainConfig(**base)


class Killed(Exception):
    pass


def test_kill_and_resume_gives_the_same_weights(tmp_path, monkeypatch):
    data = load_dataset("wine")
    straight = Trainer(small_cfg(tmp_path, out=str(tmp_path / "a")), data)
    straight.run(progress=False)

    cfg = small_cfg(tmp_path, out=str(tmp_path / "b"))
    first = Trainer(cfg, data)
    calls = {"n": 0}
    orig = Trainer.train_batch

    def dying(self, k):  # killed in the middle of epoch 2, after epoch 1's checkpoint
        calls["n"] += 1
        if calls["n"] == len(self.train_batches) + 7:
            raise Killed
        return orig(self, k)

    monkeypatch.setattr(Trainer, "train_batch", dying)
    with pytest.raises(Killed):
        first.run(progress=False)
    monkeypatch.setattr(Trainer, "train_batch", orig)
    resumed = Trainer(cfg, data)
    m = resumed.run(resume=True, progress=False)
    assert [e["epoch"] for e in m["epochs"]] == [1, 2, 3]
    assert torch.equal(resumed.net.W, straight.net.W)
    assert torch.equal(resumed.net.b, straight.net.b)
    assert m["epochs"][-1]["test_error"] == straight.history[-1].test_error


def test_resume_refuses_a_different_config(tmp_path):
    data = load_dataset("wine")
    Trainer(small_cfg(tmp_path, epochs=1), data).run(progress=False)
    with pytest.raises(ValueError, match="config differs"):
        Trainer(small_cfg(tmp_path, lr=0.1), data).run(resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(small_cfg(tmp_path, out=str(tmp_path / "none")), data).run(resume=True, progress=False)


def test_run_writes_results_and_learns_wine(tmp_path):
    cfg = small_cfg(tmp_path, topology="mlff", epochs=4, free_steps=60, lr=0.1, hidden=[10])
    m = Trainer(cfg, load_dataset("wine")).run(progress=False)
    out = tmp_path / "run"
    for f in ("config.json", "metrics.json", "metrics.csv", "errors.png", "rms.png", "checkpoint.pt"):
        assert (out / f).stat().st_size > 0, f
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["config"]["hidden"] == [10] and len(saved["epochs"]) == 4
    assert len(saved["epochs"][0]["rms"]) == 2 and np.isfinite(saved["log_spread"])
    assert m["epochs"][-1]["test_error"] < 0.3, "wine is easy: well below chance (0.67)"
    assert len((out / "metrics.csv").read_text().splitlines()) == 5


def test_regression_error_on_diabetes(tmp_path):
    cfg = small_cfg(tmp_path, dataset="diabetes", topology="mlff", epochs=1, hidden=[5])
    m = Trainer(cfg, load_dataset("diabetes")).run(progress=False)
    e = m["epochs"][0]
    assert m["task"] == "regression" and 0 < e["test_error"] < 0.5


def test_cli_train_and_clear_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["train", "--dataset", "iris", "--hidden", "5", "--epochs", "1", "--free-steps", "20",
               "--nudged-steps", "4", "--out", str(out), "--quiet"])
    assert rc == 0 and (out / "metrics.json").exists()
    toml = tmp_path / "c.toml"
    toml.write_text('dataset = "iris"\nhidden = [4]\nepochs = 1\nfree_steps = 10\nnudged_steps = 2\n'
                    f'out = "{tmp_path / "t"}"\n')
    assert main(["train", "--config", str(toml), "--quiet", "--lr", "0.02"]) == 0
    assert json.loads((tmp_path / "t" / "config.json").read_text())["lr"] == 0.02
    capsys.readouterr()
    assert main(["train", "--dataset", "nosuchset", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "nosuchset" in capsys.readouterr().err
    assert main(["train", "--dataset", "iris", "--p", "1.5", "--topology", "sw", "--quiet"]) == 2
    assert "p must lie in [0, 1]" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('dataset = "iris"\nlearning_rate = 0.1\n')
    assert main(["train", "--config", str(bad), "--quiet"]) == 2
    assert "unknown keys ['learning_rate']" in capsys.readouterr().err


def test_per_layer_rate_count_is_checked():
    with pytest.raises(ValueError, match="per-layer lr needs 3"):
        TrainConfig(hidden=[5, 5], lr=[0.1, 0.2])


class SpySolver:
    """The Euler solver, recording every call (phase, inputs, starting state, result)."""

    def __init__(self):
        from eqprop.solver import EulerSolver
        self.inner = EulerSolver(free_steps=15, nudged_steps=3)
        self.calls = []

    def relax(self, network, x, state0=None, beta=0.0, target=None, steps=None):
        out = self.inner.relax(network, x, state0, beta, target, steps)
        self.calls.append(dict(beta=beta, x=x.clone(), s0=None if state0 is None else state0.clone(),
                               out=out.clone(), W=network.W.clone()))
        return out


def test_paper_procedure_particles_order_and_beta(tmp_path):
    data = load_dataset("iris")
    spy = SpySolver()
    cfg = small_cfg(tmp_path, dataset="iris", epochs=2, hidden=[4])
    tr = Trainer(cfg, data, solver=spy)
    tr.run(progress=False)
    nb, nt, n_in = len(tr.train_batches), len(tr.test_batches), 4
    per_epoch = 2 * nb + nt
    assert len(spy.calls) == 2 * per_epoch
    for e in range(2):
        calls = spy.calls[e * per_epoch:(e + 1) * per_epoch]
        train, test = calls[:2 * nb], calls[2 * nb:]
        for k in range(nb):
            free, nudged = train[2 * k], train[2 * k + 1]
            assert free["beta"] == 0 and abs(nudged["beta"]) == cfg.beta
            assert torch.equal(nudged["s0"], free["out"]), "nudged phase starts from the free equilibrium"
            assert torch.equal(free["x"], torch.as_tensor(data.x_train[tr.train_batches[k]])), "same order"
            if e == 0:
                assert torch.all(free["s0"][:, n_in:] == 0), "particles start at 0"
            else:  # the particle stored in epoch 1
                assert torch.equal(free["s0"][:, n_in:], spy.calls[2 * k]["out"][:, n_in:])
            if k + 1 < nb:
                assert not torch.equal(train[2 * k + 2]["W"], free["W"]), "one update per batch"
        assert all(c["beta"] == 0 for c in test)
        if e == 1:
            for k in range(nt):
                assert torch.equal(test[k]["s0"][:, n_in:], spy.calls[2 * nb + k]["out"][:, n_in:])
    signs = {np.sign(c["beta"]) for c in spy.calls if c["beta"] != 0}
    assert signs == {1.0, -1.0}, "random beta sign"
    # the batch list is a shuffled list of consecutive file-order batches
    assert sorted(int(b[0]) for b in tr.train_batches) == list(range(0, len(data.x_train), 5))
    assert all(np.array_equal(b, np.arange(b[0], b[0] + len(b))) for b in tr.train_batches)


def test_hidden_shorthand_and_reproduce_restart(tmp_path, capsys):
    from eqprop_cli.train import _ints
    assert _ints("500x3") == [500, 500, 500] and _ints("20,10x2") == [20, 10, 10]
    out = tmp_path / "rep"
    args = ["reproduce", "table1", "--only", "wine", "--epochs", "1", "--out", str(out), "--quiet"]
    import experiments.table1 as t1
    orig = t1.runs

    def tiny(epochs=None, seeds=(0,), only=None):
        rs = orig(epochs, seeds, only)[:2]  # wine-5 MLFF and SW
        for r in rs:
            r.config.free_steps, r.config.nudged_steps = 10, 2
        return rs

    t1.runs = tiny
    try:
        assert main(args) == 0
        first = (out / "wine-5-mlff" / "s0" / "metrics.json").stat().st_mtime_ns
        assert main(args) == 0  # finished runs are skipped
        assert (out / "wine-5-mlff" / "s0" / "metrics.json").stat().st_mtime_ns == first
        assert main(args + ["--restart"]) == 0
        assert (out / "wine-5-mlff" / "s0" / "metrics.json").stat().st_mtime_ns != first
        seq = tmp_path / "seq"
        assert main(args[:-3] + ["--out", str(seq), "--quiet", "--sequential"]) == 0  # run by run, the reference solver
        assert (seq / "wine-5-sw" / "s0" / "checkpoint.pt").exists()
        a, b = (json.loads((d / "summary.json").read_text()) for d in (out, seq))
        for label in a:
            assert a[label]["test_error"] == b[label]["test_error"]
            assert a[label]["log_spread"] == pytest.approx(b[label]["log_spread"], rel=1e-4)
    finally:
        t1.runs = orig
    report = (out / "report.md").read_text()
    assert "wine-5: log-spread MLFF" in report and (out / "table1_log_spread.png").exists()
