import pytest

import experiments.fig2 as fig2
import experiments.fig4 as fig4
import experiments.table1 as table1
from experiments.common import run_all, run_batched


def tiny_runs(seeds):
    rs = table1.runs(epochs=1, seeds=seeds, only="wine")
    rs = [r for r in rs if r.label.startswith("wine-5")]
    for r in rs:
        r.config.free_steps, r.config.nudged_steps, r.config.dtype = 15, 3, "float64"
    return rs


def test_batched_trials_give_the_sequential_results(tmp_path):
    seq, _ = run_all("t", tiny_runs([0, 1]), tmp_path / "seq", progress=False)
    bat, _ = run_batched("t", tiny_runs([0, 1]), tmp_path / "bat", progress=False)
    assert set(seq) == set(bat) == {"wine-5-mlff", "wine-5-sw"}
    for label in seq:
        assert bat[label]["test_error_all"] == seq[label]["test_error_all"]
        assert bat[label]["log_spread_all"] == pytest.approx(seq[label]["log_spread_all"], rel=1e-6)
        assert bat[label]["actual_p_all"] == seq[label]["actual_p_all"]
    assert (tmp_path / "bat" / "wine-5-sw" / "s1" / "metrics.json").exists()


def test_named_experiment_configs():
    assert [r.label for r in fig2.runs()] == ["mlff-global", "mlff-per-layer", "sw"]
    assert fig2.runs()[1].config.lr == [0.128, 0.032, 0.008, 0.002]
    ps = fig4.P_VALUES
    assert len(ps) == 30 and ps[0] == 0 and ps[1] == pytest.approx(1e-4) and max(ps) < 1
    assert {r.config.topology for r in fig4.runs()} == {"mlff", "sw"}
    with pytest.raises(ValueError, match="--only"):
        table1.runs(only="cifar")
