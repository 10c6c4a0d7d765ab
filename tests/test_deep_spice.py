"""DEEP's circuit (netlist_gen.blocks_deep, circuits.deep_spice) against the digital DEEP reference
(eqprop.deep.DeepSolver): netlist elements, equilibria (free and nudged, <= 1e-6), the self terms
following weight updates, the recorded nudged trajectory and DEEP's rule on it, and one Trainer
epoch with ngspice in the loop. ngspice tests run the real simulator (marker ngspice)."""
import pytest
import torch

from circuits.ngspice_runner import library_available
from eqprop.deep import DeepConfig, DeepSolver, deep_init, deep_residual
from eqprop.deep_rule import DeepRule, deep_update
from eqprop.topology import complete_directed
from netlist_gen import build_circuit
from netlist_gen.blocks_deep import self_term_name

F64 = torch.float64


def net_and_data(seed=3, std=0.5, n_in=2, hidden=3, n_out=2):
    net = deep_init(complete_directed(n_in, hidden, n_out, bias=True), seed=seed, std=std, dtype=F64)
    x = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]], dtype=F64)  # the last input is the bias neuron
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    return net, x, y


def converged(net, x, y, beta, dt=0.02):
    ref = DeepSolver(DeepConfig(dt=dt, free_steps=200_000, nudged_steps=200_000, init="zero", tol=1e-13))
    free = ref.relax(net, x)
    return free, ref.relax(net, x, free, beta, y)


# -- netlist (no simulator) -------------------------------------------------------------------

def test_deep_netlist_has_self_terms_of_the_row_sums_and_no_leak():
    net, x, _ = net_and_data()
    c = build_circuit(net, x[0], dynamics="deep", g0=2.0, clamp=1e3)
    W = net.W.numpy()
    for j in c.neurons:
        assert c.value(self_term_name(j)) == pytest.approx(2.0 * W[j].sum(), rel=1e-15)
    names = {e[0] for e in c.elements}
    assert not any(n.startswith("Rl") for n in names), "DEEP's neuron has no unit leak"
    assert c.header["dynamics"] == "deep" and c.header["directed"] == 1
    assert any(W[j].sum() < 0 for j in c.neurons), "the test net should have a negative row sum (a VCCS sources)"
    leaky = build_circuit(net, x[0])
    assert "dynamics" not in leaky.header and any(e[0].startswith("Rl") for e in leaky.elements)


def test_deep_netlist_bad_settings_raise_before_work():
    net, x, _ = net_and_data()
    with pytest.raises(ValueError, match="dynamics must be one of"):
        build_circuit(net, x[0], dynamics="hopfield")
    with pytest.raises(ValueError, match="clamp > 0"):
        build_circuit(net, x[0], dynamics="deep", clamp=0.0)


def test_deep_residual_is_zero_at_the_reference_fixed_point_only():
    net, x, y = net_and_data(seed=1, std=0.2)
    free, nudged = converged(net, x, y, 0.5)
    assert deep_residual(net, free) < 1e-12 and deep_residual(net, nudged, 0.5, y) < 1e-12
    assert deep_residual(net, nudged) > 1e-4, "the nudged state is no free fixed point"


# -- ngspice --------------------------------------------------------------------------------

@pytest.mark.ngspice
@pytest.mark.skipif(not library_available(), reason="libngspice not found")
@pytest.mark.parametrize("seed,std", [(0, 0.3), (3, 0.5)])
def test_equilibria_match_the_digital_reference(seed, std):
    from circuits.deep_spice import DeepSpiceSolver
    net, x, y = net_and_data(seed, std)
    ref_free, ref_nudged = converged(net, x, y, 0.5)
    with DeepSpiceSolver(method="tran+op") as s:
        free = s.relax(net, x)
        nudged = s.relax(net, x, free, 0.5, y)
    assert float((free.clamp(0, 1) - ref_free).abs().max()) <= 1e-6
    assert float((nudged.clamp(0, 1) - ref_nudged).abs().max()) <= 1e-6
    assert deep_residual(net, free) <= 1e-9 and deep_residual(net, nudged, 0.5, y) <= 1e-9


@pytest.mark.ngspice
@pytest.mark.skipif(not library_available(), reason="libngspice not found")
def test_self_terms_follow_an_update_altered_in_place():
    from circuits.deep_spice import DeepSpiceSolver
    net, x, _ = net_and_data(0, 0.3)  # neuron 5 (and 7 in example 0) settles inside (0, 1)
    cfg = dict(method="tran", t_free=60.0, max_extend=0, on_unsettled="warn")  # "tran": updates are alters
    with DeepSpiceSolver(**cfg) as s:
        before = s.relax(net, x)
        assert bool(((before[:, 5] > 1e-3) & (before[:, 5] < 1 - 1e-3)).all()) and 1e-3 < float(before[0, 7]) < 1
        dW = torch.zeros_like(net.W)
        dW[5, 6], dW[7, 3] = 0.2, -0.15  # rows 5 and 7 change: their outgoing sums must follow
        s.apply_update(net, dW, torch.zeros_like(net.b), 1.0, 1.0)
        after = s.relax(net, x)
    with DeepSpiceSolver(**cfg) as fresh:
        again = fresh.relax(net, x)  # a circuit built from the updated weights, the same transient
    assert float((after - again).abs().max()) <= 1e-9, "the loaded circuit must hold the updated self terms"
    assert float((after - before).abs().max()) > 1e-3, "the update must move the state (else the test shows nothing)"


@pytest.mark.ngspice
@pytest.mark.skipif(not library_available(), reason="libngspice not found")
def test_nudged_trajectory_sampled_like_deep_solver_and_the_rule_on_it():
    from circuits.deep_spice import DeepSpiceSolver
    net, x, y = net_and_data()
    with DeepSpiceSolver(method="tran", t_free=10.0, t_nudged=5.0, tstep=0.05, max_extend=0, on_unsettled="warn",
                         record_dt=0.05) as s:
        free = s.relax(net, x)
        with pytest.raises(RuntimeError, match="no nudged trajectory"):
            s.take_trajectory()  # a free phase records nothing
        nudged = s.relax(net, x, free, 0.5, y)
        traj = s.take_trajectory()
        rep = s.report()
    assert traj.shape == (101, 2, net.topology.n)
    assert torch.equal(traj[:, :, :3], x.expand(101, -1, -1)), "inputs clamped in every sample"
    assert float((traj[0] - free.clamp(0, 1)).abs().max()) < 1e-5, "s(0) is the free state"
    assert float((traj[-1] - nudged.clamp(0, 1)).abs().max()) < 1e-9, "the last sample is the nudged state"
    assert isinstance(rep["unsettled"], list) and len(rep["unsettled"]) == 1
    # the same phase digitally, 50 Euler steps per sample: the circuit is the continuous dynamics
    fine = DeepSolver(DeepConfig(dt=0.001, free_steps=1, nudged_steps=5000))
    fine.relax(net, x, free.clamp(0, 1), 0.5, y)
    ref = fine.take_trajectory()[::50]
    assert float((traj - ref).abs().max()) < 5e-3
    mask = torch.as_tensor(net.topology.mask)
    dW, dW_ref = deep_update(traj, mask, 3)[0], deep_update(ref, mask, 3)[0]
    assert float((dW - dW_ref).norm() / dW_ref.norm()) < 1e-3


@pytest.mark.ngspice
@pytest.mark.skipif(not library_available(), reason="libngspice not found")
def test_trainer_epochs_with_ngspice_follow_the_digital_run(tmp_path):
    """Two epochs of AND on the one Trainer with DeepRule: ngspice vs DeepSolver at a fine step."""
    from circuits.deep_spice import DeepSpiceSolver
    from circuits.spice_config import SpiceConfig
    from eqprop.config import RunConfig
    from eqprop.datasets import gate_dataset
    from eqprop.trainer import Trainer

    data = gate_dataset("and", bias_input=True)
    topo = complete_directed(2, 3, 2, bias=True)
    W = {}
    for name in ("spice", "digital"):
        cfg = RunConfig(dataset=data.name, hidden=(3,), lr=30.0 * (20 if name == "digital" else 1), beta=0.5,
                        random_beta_sign=False, epochs=2, seed=0, dtype="float64", out=str(tmp_path / name))
        net = deep_init(topo, seed=5, std=0.3, dtype=F64)
        if name == "spice":
            solver = DeepSpiceSolver(SpiceConfig(method="tran", t_free=5.0, t_nudged=5.0, tstep=0.05, max_extend=0,
                                                 on_unsettled="warn"), record_dt=0.05)
        else:  # 20 steps per sample, the lr scaled by 20 (the rule's 1/T2)
            solver = DeepSolver(DeepConfig(dt=0.0025, free_steps=2000, nudged_steps=2000))
        tr = Trainer(cfg, data, solver=solver, networks=[net], checkpoint=tmp_path / name / "ck.pt",
                     rule=DeepRule(solver))
        W0 = net.W.clone()
        for _ in range(2):
            tr.run_epoch()
        solver.close()
        W[name] = (tr.net.W.detach().clone(), W0)
    (ws, w0), (wd, _) = W["spice"], W["digital"]
    step = float((wd - w0).norm())
    assert step > 1e-3, "the weights must move"
    assert float((ws - wd).norm()) < 0.05 * step


@pytest.mark.ngspice
@pytest.mark.skipif(not library_available(), reason="libngspice not found")
def test_spice_check_directed_cli_report(tmp_path):
    import json

    from eqprop_cli.main import main
    out = tmp_path / "r.json"
    rc = main(["spice-check", "--directed", "--count", "2", "--sizes", "2,3,2", "--examples", "1", "--quiet",
               "--out", str(out)])
    r = json.loads(out.read_text())
    assert rc == 0 and r["passed"] and r["reference"] == "deep" and r["solver"]["dynamics"] == "deep"
    assert [n["topology"] for n in r["networks"]] == ["complete", "sparse"]
    assert r["networks"][1]["connections"] < r["networks"][0]["connections"]
    assert r["worst"]["overall"] <= 1e-6 and r["networks"][0]["reference"] == "deep dt 0.01"
