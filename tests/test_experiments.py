import dataclasses

import pytest

import experiments.fig2 as fig2
import experiments.fig4 as fig4
import experiments.table1 as table1
from experiments.common import run_all, run_batched


def tiny_runs(seeds, epochs=1, **run):
    rs = table1.runs(epochs=epochs, seeds=seeds, only="wine")
    return [dataclasses.replace(r, run=dataclasses.replace(r.run, dtype="float64", **run),
                                euler=dataclasses.replace(r.euler, free_steps=15, nudged_steps=3))
            for r in rs if r.label.startswith("wine-5")]


def test_batched_trials_give_the_sequential_results(tmp_path):
    seq, _ = run_all("t", tiny_runs([0, 1]), tmp_path / "seq", progress=False)
    bat, _ = run_batched("t", tiny_runs([0, 1]), tmp_path / "bat", progress=False)
    assert set(seq) == set(bat) == {"wine-5-mlff", "wine-5-sw"}
    for label in seq:
        assert bat[label]["test_error_all"] == seq[label]["test_error_all"]
        assert bat[label]["log_spread_all"] == pytest.approx(seq[label]["log_spread_all"], rel=1e-6)
        assert bat[label]["actual_p_all"] == seq[label]["actual_p_all"]
    assert (tmp_path / "bat" / "wine-5-sw" / "s1" / "metrics.json").exists()


def test_worker_processes_give_the_in_process_results_and_skip_finished_runs(tmp_path, capsys):
    seq, _ = run_all("t", tiny_runs([0]), tmp_path / "seq", progress=False)
    par, _ = run_all("t", tiny_runs([0]), tmp_path / "par", progress=True, workers=2)
    for label in seq:  # float64, one thread each: the same arithmetic in another process
        assert par[label]["test_error_all"] == seq[label]["test_error_all"]
        assert par[label]["log_spread_all"] == seq[label]["log_spread_all"]
    capsys.readouterr()
    again, _ = run_all("t", tiny_runs([0]), tmp_path / "par", progress=True, workers=2)
    assert "2 already done, 0 to run" in capsys.readouterr().out and again == par


def test_free_phase_fidelity_runs_and_its_overlap_check():
    import experiments.free_phase_fidelity as fpf
    rs = fpf.runs(seeds=[0, 1])
    assert [r.label for r in rs[::2]] == ["mlff-reference", "mlff-hybrid", "sw-reference", "sw-hybrid"]
    assert {(r.run.train_limit, r.run.test_limit, r.run.epochs) for r in rs} == {(6000, 2000, 10)}
    assert rs[2].euler.free_method == "hybrid" and rs[0].euler.free_method == "fixed"
    with pytest.raises(ValueError, match="--only takes mlff, sw"):
        fpf.runs(only="cnn")

    def metrics(errs):
        return {"epochs": [{"test_error": e, "rms": [1e-3, 1e-2]} for e in errs]}
    res = {"mlff-reference": [metrics([0.5, 0.3]), metrics([0.6, 0.4])],
           "mlff-hybrid": [metrics([0.55, 0.35]), metrics([0.9, 0.9])]}
    lines = fpf.check({}, res)
    row = next(line for line in lines if "test_error" in line)
    assert "0.2750 (epoch 2)" in row and row.endswith("| yes |")  # gap 0.275 < the hybrid seeds' spread 0.55
    res["mlff-hybrid"] = [metrics([0.9, 0.9]), metrics([0.9, 0.91])]
    assert next(line for line in fpf.check({}, res) if "test_error" in line).endswith("| NO |")


def test_named_experiment_configs():
    assert [r.label for r in fig2.runs()] == ["mlff-global", "mlff-per-layer", "sw"]
    assert fig2.runs()[1].run.lr == (0.128, 0.032, 0.008, 0.002)
    ps = fig4.P_VALUES
    assert len(ps) == 30 and ps[0] == 0 and ps[1] == pytest.approx(1e-4) and max(ps) < 1
    assert {r.run.topology for r in fig4.runs()} == {"mlff", "sw"}
    with pytest.raises(ValueError, match="--only"):
        table1.runs(only="cifar")


def test_batched_groups_resume_from_their_checkpoint(tmp_path):
    """Stop a batched group after epoch 1 of 2; the rerun resumes it and ends where an uninterrupted run ends."""
    def runs(epochs, **kw):
        return tiny_runs([0], epochs, **kw)

    whole, _ = run_batched("t", runs(2), tmp_path / "whole", progress=False)
    run_batched("t", runs(1), tmp_path / "cut", progress=False)
    (ck,) = (tmp_path / "cut" / "batched").glob("group-*.pt")
    resumed, res = run_batched("t", runs(2), tmp_path / "cut", progress=False)
    for label in whole:
        assert resumed[label]["test_error_all"] == whole[label]["test_error_all"]
        assert resumed[label]["log_spread_all"] == whole[label]["log_spread_all"]
        assert len(res[label][0]["epochs"]) == 2
    # finished groups are skipped, not retrained
    stamp = ck.stat().st_mtime_ns
    run_batched("t", runs(2), tmp_path / "cut", progress=False)
    assert ck.stat().st_mtime_ns == stamp
    # a changed config does not silently resume another run's checkpoint
    changed = runs(3, lr=0.5)
    with pytest.raises(ValueError, match="another config.*lr.*rerun with --restart"):
        run_batched("t", changed, tmp_path / "cut", progress=False)
    with pytest.raises(ValueError, match="another config.*lr.*rerun with --restart"):
        run_all("t", changed, tmp_path / "cut", progress=False)


def test_a_checkpoint_ahead_of_metrics_is_written_out_on_resume(tmp_path):
    import json

    def runs():
        return tiny_runs([0])

    for runner in (run_batched, run_all):
        out = tmp_path / runner.__name__
        runner("t", runs(), out, progress=False)
        before = {}
        for label in ("wine-5-mlff", "wine-5-sw"):  # killed after the checkpoint, before the metrics
            mfile = out / label / "s0" / "metrics.json"
            before[label] = json.loads(mfile.read_text())
            mfile.write_text(json.dumps(dict(before[label], epochs=[])))
        _, res = runner("t", runs(), out, progress=False)
        for label, m in before.items():
            assert res[label][0]["epochs"] == m["epochs"]  # from the checkpoint, not retrained (same seconds)


def test_a_kill_between_two_trials_metrics_resumes_the_whole_group_from_its_checkpoint(tmp_path):
    import json
    out = tmp_path / "b"
    run_batched("t", tiny_runs([0]), out, progress=False)
    mfile = out / "wine-5-sw" / "s0" / "metrics.json"  # its group mate wine-5-mlff was written, it was not
    before = json.loads(mfile.read_text())
    mfile.write_text(json.dumps(dict(before, epochs=before["epochs"][:-1])))
    groups = sorted((out / "batched").glob("*.pt"))
    _, res = run_batched("t", tiny_runs([0]), out, progress=False)
    assert res["wine-5-sw"][0]["epochs"] == before["epochs"]  # from the group's checkpoint: not retrained alone
    assert sorted((out / "batched").glob("*.pt")) == groups  # no new one-trial group


def test_fig3_and_fig4_checks_report_per_run_numbers():
    import experiments.fig3 as fig3
    m = {"config": {"lr": [1.0, 0.01], "seed": 0}, "mean_rms": [1e-3, 1e-1]}
    lines = fig3.check({}, {"mlff-per-layer": [m]})
    assert "log-spread of r_l 1.000" in lines[0] and "of lr_l * r_l 0.000" in lines[0]
    rows = {f"p{p}": {"actual_p": p, "train_error": 0.3 - p, "test_error": 0.31 - p, "log_spread": 1 - p}
            for p in (0.0, 0.01, 0.1, 0.5)}
    out = "\n".join(fig4.check(rows))
    assert "| 0 | 0.3000 | 0.3100 | 1.000 | 0.311 |" in out and "correlation of log-spread with p: -1.00" in out


def test_projection_scales_measured_seconds_per_step_to_the_paper_length():
    from experiments.common import epoch_steps, projection_lines
    paper = tiny_runs([0], epochs=10)  # wine-5 MLFF and SW, 15/3 steps, batch 5 (wine: 150 train / 25 test)
    cfg = dataclasses.replace(paper[0].run, epochs=1, train_limit=50, test_limit=10, batch_size=5)
    assert epoch_steps(cfg, paper[0].euler, 150, 25, 5) == 10 * 18 + 2 * 15
    m = {"config": cfg.to_dict(), "solver": paper[0].euler.to_dict(),
         "epochs": [{"seconds": 9.0}, {"seconds": 2.1}, {"seconds": 1.9}]}
    lines = projection_lines(paper, {"wine-5-mlff": [m]}, batched=False)
    seconds = 2.0 / 210 * (30 * 18 + 5 * 15) * 10  # 58.6 s
    assert f"| wine-5-mlff/s0 | 2.0 s/epoch of 210 steps | 10 epochs of 615 steps | {seconds:.0f} s |" in lines
    # CPU seconds, where every epoch recorded them, stand in for the wall seconds (a shared machine's load)
    timed = dict(m, epochs=[{"seconds": 9.0, "cpu_seconds": 4.0}, {"seconds": 2.1, "cpu_seconds": 1.1},
                            {"seconds": 1.9, "cpu_seconds": 0.9}])
    cpu = 1.0 / 210 * (30 * 18 + 5 * 15) * 10
    assert (f"| wine-5-mlff/s0 | 1.0 CPU s/epoch of 210 steps | 10 epochs of 615 steps | {cpu:.0f} s |"
            in projection_lines(paper, {"wine-5-mlff": [timed]}, batched=False))
    partly = dict(m, epochs=[*timed["epochs"][:2], {"seconds": 1.9}])  # an old run resumed, or the reverse
    assert any("| 2.0 s/epoch" in ln for ln in projection_lines(paper, {"wine-5-mlff": [partly]}, batched=False))
    sw = dict(m, config={**m["config"], "topology": "sw"})
    both = projection_lines(paper, {"wine-5-mlff": [m], "wine-5-sw": [sw]}, batched=True)
    assert sum("wine-5-mlff/s0, wine-5-sw/s0" in ln for ln in both) == 1  # one lockstep group, one time
    assert len(projection_lines(paper, {"wine-5-mlff": [m], "wine-5-sw": [sw]}, batched=False)) == len(both) + 1


def test_fig3_reuses_fig2_runs_through_the_cli(tmp_path, monkeypatch):
    from eqprop_cli.main import main

    def tiny(epochs=None, seeds=(0,), only=None):  # Fig 2's three variants on wine, tiny
        rs = []
        for label, lr in (("mlff-global", 0.02), ("mlff-per-layer", [0.08, 0.04, 0.02, 0.01]), ("sw", 0.02)):
            r = tiny_runs(list(seeds), epochs or 2, lr=lr, hidden=[10, 10, 10])[0 if label != "sw" else 1]
            rs.append(dataclasses.replace(r, label=label))
        return rs

    monkeypatch.setattr(fig2, "runs", tiny)
    out = tmp_path / "f2"
    assert main(["reproduce", "fig2", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    stamp = (out / "sw" / "s0" / "metrics.json").stat().st_mtime_ns
    assert main(["reproduce", "fig3", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    assert (out / "sw" / "s0" / "metrics.json").stat().st_mtime_ns == stamp  # reused, not rerun
    report = (out / "report_fig3.md").read_text()
    assert "mlff-per-layer: log-spread of r_l" in report and (out / "fig3_lr_rms.png").exists()
    assert (out / "report.md").exists() and (out / "fig2_errors.png").exists()


def test_reproduce_mode_default_follows_device_and_size():
    import argparse

    from eqprop_cli.reproduce import choose_mode
    small, big = tiny_runs([0]), fig4.runs(epochs=1)
    ns = lambda **k: argparse.Namespace(**{"batched": False, "sequential": False, "device": None, "workers": None,  # noqa: E731
                                           **k})
    assert choose_mode(ns(), small)[0] is True  # 10x5 hidden: stacking pays on CPU
    assert choose_mode(ns(), big)[0] is False  # 784-100x5-10 on CPU: one after another
    assert choose_mode(ns(device="cuda"), big)[0] is True
    assert choose_mode(ns(batched=True), big) == (True, "--batched")
    assert choose_mode(ns(sequential=True), small) == (False, "--sequential")
    assert choose_mode(ns(workers=2), small) == (False, "--workers")  # worker processes run runs one by one


def test_defaults_sweep_trains_candidates_over_seeds_and_merges_its_table(tmp_path):
    import json

    from experiments import defaults_sweep as ds
    rows = ds.sweep("train", "xor", seeds=(0, 1), out=tmp_path, only=["h4-e10-fixed-sign"], progress=False,
                    log=lambda s: None)
    (r,) = rows
    runs = [json.loads((tmp_path / "train" / "xor" / "h4-e10-fixed-sign" / f"s{s}" / "metrics.json").read_text())
            for s in (0, 1)]
    acc = [1 - m["epochs"][-1]["test_error"] for m in runs]
    assert r["seeds"] == [0, 1] and r["accuracy"] == acc and r["worst"] == min(acc) and r["epochs"] == 10
    assert runs[1]["config"]["random_beta_sign"] is False and runs[1]["config"]["seed"] == 1
    ds.write_table(rows, "train", "xor", tmp_path)
    ds.write_table([{**r, "candidate": "other"}], "train", "xor", tmp_path)  # a second invocation adds its row
    table = json.loads((tmp_path / "table.json").read_text())
    assert [t["candidate"] for t in table] == ["h4-e10-fixed-sign", "other"]
    assert f"| {r['mean']:.1%} | {r['worst']:.1%} |" in (tmp_path / "table.md").read_text()
    (again,) = ds.sweep("train", "xor", seeds=(0, 1), out=tmp_path, only=["h4-e10-fixed-sign"], progress=False,
                        log=lambda s: None)  # finished: resumed from the group's checkpoint, nothing retrained
    assert {**again, "seconds": 0} == {**r, "seconds": 0}
    with pytest.raises(ValueError, match="no candidate"):
        ds.sweep("train", "xor", only=["nosuch"])


def test_demo_trains_at_the_spice_train_defaults():
    """The demo's ngspice step is what `eqprop spice-train --dataset D` runs with no other flag."""
    import argparse

    from circuits.spice_config import SpiceConfig
    from eqprop_cli.spice import register, spice_config
    from eqprop_cli.train import configs_from_args
    from experiments.demo import SPICE_DATASET, spice_run, spice_solver
    from experiments.spice_train import SPICE_TRAIN_DEFAULTS
    p = argparse.ArgumentParser()
    register(p.add_subparsers())
    args = p.parse_args(["spice-train", "--dataset", SPICE_DATASET])
    (cli,), settings, _ = configs_from_args(args, "spice-train", SPICE_TRAIN_DEFAULTS, {"spice": SpiceConfig})
    assert spice_run() == dataclasses.replace(cli, out=spice_run().out)
    assert spice_solver() == spice_config(args, settings["spice"])  # its solver settings too (iris: the timed nudge)
    assert spice_solver().nudged_phase == ("timed" if SPICE_DATASET == "iris" else "settled")


def test_defaults_sweep_records_a_candidate_that_stops_and_goes_on(tmp_path, monkeypatch):
    """A candidate whose training cannot finish (here it diverges) is a row saying why, not the sweep's end."""

    from experiments import defaults_sweep as ds
    monkeypatch.setitem(ds.CANDIDATES[("train", "xor")], "diverges", dict(ds.GATE, lr=1e30, epochs=2))
    rows = ds.sweep("train", "xor", seeds=(0,), out=tmp_path, only=["diverges", "h4-e10-fixed-sign"],
                    progress=False, log=lambda s: None)
    by = {r["candidate"]: r for r in rows}
    assert by["diverges"]["mean"] is None and "TrainingDiverged" in by["diverges"]["error"]
    assert by["h4-e10-fixed-sign"]["epochs"] == 10 and by["h4-e10-fixed-sign"]["mean"] is not None
    ds.write_table(rows, "train", "xor", tmp_path)
    line = next(ln for ln in (tmp_path / "table.md").read_text().splitlines() if "| diverges |" in ln)
    assert "**stopped**" in line and "TrainingDiverged" in line
    assert "NaN" not in (tmp_path / "table.json").read_text()
