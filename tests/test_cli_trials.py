"""`eqprop train --seeds`: several seeds as lockstep trials of the one Trainer, through the CLI."""
import json

import pytest

from eqprop_cli.main import main

BASE = ["train", "--dataset", "xor", "--hidden", "3", "--free-steps", "30", "--nudged-steps", "4", "--quiet"]


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_seeds_are_trials_equal_to_single_runs(tmp_path, capsys, engine):
    out = tmp_path / "group"
    assert main(BASE + ["--epochs", "2", "--seeds", "0,1", "--engine", engine, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out / "s0") in printed and str(out / "s1") in printed
    assert (out / "checkpoint.pt").exists()
    cfg = json.loads((out / "s1" / "config.json").read_text())
    assert cfg["trials"] == 2 and cfg["trial"] == 1 and cfg["run"]["seed"] == 1
    assert cfg["solver"]["solver"] == ("EulerSolver" if engine == "reference" else "FastEulerSolver")
    alone = tmp_path / "alone"
    assert main(BASE + ["--epochs", "2", "--seed", "1", "--engine", engine, "--out", str(alone)]) == 0
    a = json.loads((alone / "metrics.json").read_text())
    b = json.loads((out / "s1" / "metrics.json").read_text())
    assert [e["test_error"] for e in a["epochs"]] == [e["test_error"] for e in b["epochs"]]
    assert a["log_spread"] == pytest.approx(b["log_spread"], rel=1e-5)
    # the group resumes to more epochs from its checkpoint
    assert main(BASE + ["--epochs", "3", "--seeds", "0,1", "--engine", engine, "--out", str(out), "--resume"]) == 0
    assert len(json.loads((out / "s0" / "metrics.json").read_text())["epochs"]) == 3


def test_seed_and_seeds_together_are_refused(tmp_path, capsys):
    assert main(BASE + ["--seed", "1", "--seeds", "0,1", "--out", str(tmp_path)]) == 2
    assert "--seed or --seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(BASE + ["--seeds", "0,0", "--out", str(tmp_path)])  # argparse: distinct seeds


def test_a_datasets_solver_defaults_sit_under_the_config_table_and_the_flags(tmp_path, capsys):
    """spice-train's iris default holds the nudge for a time (eqprop.config.DATASET_SOLVER_DEFAULTS): it reaches
    the SpiceConfig and is said on stderr; a --config [spice] table and a flag each override it; other datasets
    keep SpiceConfig's own."""
    from circuits.spice_config import SpiceConfig
    from eqprop.config import dataset_solver_defaults
    from eqprop_cli.main import build_parser
    from eqprop_cli.spice import spice_config
    from eqprop_cli.train import configs_from_args

    def solver(*argv):
        args = build_parser().parse_args(["spice-train", "--out", str(tmp_path / "r"), *argv])
        _, settings, _ = configs_from_args(args, "spice-train", None, {"spice": SpiceConfig})
        return spice_config(args, settings["spice"])

    want = dataset_solver_defaults("spice-train", "iris")["spice"]
    s = solver("--dataset", "iris")
    assert {k: getattr(s, k) for k in want} == want and s.nudged_phase == "timed"
    assert "spice.nudged_phase=timed" in capsys.readouterr().err
    assert solver("--dataset", "iris", "--nudged-phase", "settled").nudged_phase == "settled"
    assert s.on_unsettled == "polish" and solver("--dataset", "iris", "--on-unsettled", "raise").on_unsettled == "raise"
    toml = tmp_path / "c.toml"
    toml.write_text('[spice]\nt_nudged = 9.0\n')
    s = solver("--dataset", "iris", "--config", str(toml))
    assert s.t_nudged == 9.0 and s.nudged_phase == "timed"
    assert solver("--dataset", "xor").nudged_phase == SpiceConfig().nudged_phase == "settled"
