"""Bad input gets one clear line and a non-zero exit, never a traceback or a silent run (docs/reliability.md).

Regression tests of the bad-input audit: every case fails in validation, before any training or
simulation (``no_work`` makes the work itself fail where a case must be refused before it).
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import experiments.common
import experiments.demo
import experiments.spice_check
import experiments.spice_compare
import experiments.spice_train  # noqa: F401  (imported before no_work patches what they import)
from circuits.devices import DeviceModel, load_preset
from circuits.spice_config import SpiceConfig
from circuits.spice_solver import SpiceSolver
from eqprop.config import RunConfig
from eqprop.datasets import load_dataset
from eqprop.network import Network, NetworkError
from eqprop.run_files import RunLock, write_atomic
from eqprop.topology import mlff
from eqprop.trainer import Trainer
from eqprop_cli.main import main

NAN, INF = float("nan"), float("inf")
TR = ["train", "--dataset", "xor", "--hidden", "4", "--epochs", "1", "--quiet", "--out", "out"]
ST = ["spice-train", "--dataset", "xor", "--hidden", "2", "--epochs", "1", "--quiet", "--out", "out"]
SC = ["spice-check", "--sizes", "2,3,2", "--count", "1", "--examples", "1", "--quiet"]
CMP = ["spice-compare", "--dataset", "xor", "--hidden", "2", "--epochs", "1", "--quiet", "--out", "out"]
RP = ["reproduce", "table1", "--only", "wine", "--epochs", "1", "--quiet", "--out", "out"]
NL = ["netlist", "--out", "n.cir"]


class WorkStarted(AssertionError):
    pass


def _boom(*a, **k):
    raise WorkStarted("the command started its work before refusing the input")


@pytest.fixture
def no_work(monkeypatch):
    """Loading data, starting ngspice or running an experiment fails the test: the case must be refused first.
    (The modules are imported above, before any patch: one imported under it would keep the patched name.)"""
    for target in ("eqprop.datasets.load_dataset", "circuits.spice_solver.SpiceSolver", "experiments.demo.demo",
                   "experiments.common.run_all", "experiments.common.run_batched",
                   "experiments.spice_train.spice_train", "experiments.spice_compare.spice_compare",
                   "experiments.spice_check.spice_check"):
        monkeypatch.setattr(target, _boom)


def cli(argv, tmp_path, monkeypatch, capsys, files=None):
    """Run `eqprop argv` in tmp_path (with a regular file 'afile' and the given files); (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("a regular file\n")
    (tmp_path / "adir").mkdir()
    for name, content in (files or {}).items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's usage errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


# (argv, the message, files to create, refused before any work)
CLI_CASES = [
    # train: numbers, sizes, configs, --out
    (TR + ["--beta", "1e30"], r"\|beta\| must be <= 1000", None, False),
    (TR + ["--epochs", "0"], r"run config: epochs must be >= 1, got 0", None, False),
    (TR + ["--soft-targets", "0.5"], r"run config: soft_targets must lie in \[0, 0.5\)", None, False),
    (TR + ["--soft-targets", "nan"], r"run config: soft_targets must be finite", None, False),
    (["train", "--dataset", "diabetes", "--epochs", "1", "--quiet", "--out", "out", "--soft-targets", "0.1"],
     r"soft_targets 0.1 is for classification .* diabetes is a regression task", None, False),  # needs the data
    (ST + ["--soft-targets", "-0.1"], r"run config: soft_targets must lie in \[0, 0.5\)", None, False),
    (TR + ["--hidden", "4x0"], r"argument --hidden: expected sizes .* got '4x0'", None, False),
    (TR + ["--hidden", "2000000000"], r"needs a dense .* weight matrix per trial", None, False),
    (TR + ["--out", ""], r"--out: empty path", None, True),
    (TR + ["--out", "afile/sub"], r"--out afile/sub: afile is a file, not a folder", None, True),
    (TR + ["--out", "afile", "--seeds", "0,1"], r"--out afile: afile is a file, not a folder", None, True),
    (TR + ["--out", "/proc/eqprop-test"], r"--out /proc/eqprop-test: cannot create a folder there", None, True),
    (TR + ["--out", "/dev/null"], r"--out /dev/null: /dev/null is a file, not a folder", None, True),
    (TR + ["--config", "c.toml"], r"c.toml: run config: epochs must be an integer, got 1.0", {"c.toml": "epochs = 1.0"},
     True),
    (TR + ["--config", "c.toml"], r"c.toml: run config: hidden must be a list of integers", {"c.toml": "hidden = 4"},
     True),
    (TR + ["--config", "c.toml"], r"c.toml: run config: dataset must be a string", {"c.toml": "dataset = 5"}, True),
    (TR + ["--config", "c.toml"], r"c.toml: run config: out must be a string", {"c.toml": "out = 5"}, True),
    (TR + ["--config", "c.toml"], r"c.toml: \[run\] unknown key 'foo'", {"c.toml": "[run]\nfoo = 1\n"}, True),
    (TR + ["--config", "c.toml"], r"c.toml: \[euler\] unknown key 'bogus'", {"c.toml": "[euler]\nbogus = 1\n"}, True),
    (TR + ["--config", "c.toml"], r"c.toml: run must be a table", {"c.toml": "run = 5\n"}, True),
    (TR + ["--config", "c.toml"], r"c.toml: not UTF-8 text", {"c.toml": b"\xb5 = 1\n"}, True),
    (TR + ["--config", "c.toml"], r"c.toml: not valid TOML", {"c.toml": "[euler] = 3\n"}, True),
    (TR + ["--config", "adir"], r"config file not found: adir \(a folder\)", None, True),
    # demo
    (["demo", "--out", "afile"], r"--out afile: afile is a file, not a folder", None, True),
    (["demo", "--out", ""], r"--out: empty path", None, True),
    # data
    (["data", "info", "digits", "--seed", "-1"], r"argument --seed: must be an integer >= 0", None, True),
    (["data", "list", "--cache-dir", "afile/sub"], r"afile is a file, not a folder", None, True),
    (["data", "info", "mnist", "--cache-dir", "c"], r"manifest.json is damaged",
     {"c/mnist/manifest.json": "{garbage"}, False),
    # reproduce
    (RP + ["--only", ""], r"--only: empty", None, True),
    (RP + ["--workers", "0"], r"--workers must be >= 1", None, True),
    (RP + ["--workers", "2", "--batched"], r"--batched stacks them in one process", None, True),
    (RP + ["--free-method", "hybrid"], r"--free-method hybrid needs --tol", None, True),
    (TR + ["--free-method", "per-example"], r"stops each example at a tolerance: set tol", None, True),
    (TR + ["--free-method", "hybrid", "--tol", "1e-6", "--omega", "2.5"], r"omega must lie in \(0, 2\)", None,
     True),
    (RP + ["--out", ""], r"--out: empty path", None, True),
    (RP + ["--out", "afile/sub"], r"--out afile/sub: afile is a file, not a folder", None, True),
    (["reproduce", "fig4", "--only", "abc", "--out", "o"], r"fig4: --only must be comma-separated p values", None,
     True),
    (["reproduce", "fig4", "--only", "0.1,0.1", "--out", "o"], r"fig4: --only names a p value twice", None, True),
    (["reproduce", "fig5", "--only", "bad", "--out", "o"], r"fig5: --only must be mnist or fmnist", None, True),
    (["reproduce", "fig3", "--only", "bad", "--out", "o"], r"fig3 \(Fig 2's runs\): --only must be one of", None,
     True),
    # netlist
    (NL + ["--p", "2"], r"argument --p: must lie in \[0, 1\]", None, True),
    (NL + ["--level", "crossbar", "--w-max", "0"], r"argument --w-max: must be a number > 0", None, True),
    (NL + ["--x", "5,5,5,5"], r"--x: values must lie in \[0, 1\]", None, True),
    (NL + ["--phase", "nudged", "--beta", "0"], r"argument --beta: must be non-zero", None, True),
    (NL + ["--seed", "-1"], r"argument --seed: must be an integer >= 0", None, True),
    (NL + ["--out", "adir"], r"--out adir: is a folder; give a file name", None, True),
    (NL + ["--out", "afile/n.cir"], r"--out afile/n.cir: folder afile: afile is a file", None, True),
    (NL + ["--network", "missing.npz"], r"missing.npz not found \(Network.save writes", None, True),
    (NL + ["--network", "g.npz"], r"g.npz is not a saved network",
     {"g.npz": b"\x00garbage", "g.topology.npz": b"PK\x03\x04garbage"}, True),
    (NL + ["--network", "g.npz", "--sizes", "4,5,3"], r"--network gives the network: leave out --sizes", None, True),
    (NL + ["--level", "crossbar", "--device-preset", "../x"], r"a preset is a name, not a path", None, True),
    # spice-check
    (SC + ["--count", "0"], r"argument --count: must be an integer >= 1", None, True),
    (SC + ["--examples", "0"], r"argument --examples: must be an integer >= 1", None, True),
    (SC + ["--tol", "nan"], r"argument --tol: must be finite", None, True),
    (SC + ["--tol", "-1"], r"argument --tol: must be a number > 0", None, True),
    (SC + ["--beta", "0"], r"argument --beta: must be non-zero", None, True),
    (SC + ["--euler-max-steps", "0"], r"argument --euler-max-steps: must be an integer >= 1", None, True),
    (SC + ["--weight-scale", "inf"], r"argument --weight-scale: must be finite", None, True),
    (SC + ["--p", "2"], r"argument --p: must lie in \[0, 1\]", None, True),
    (SC + ["--seed", "-1"], r"argument --seed: must be an integer >= 0", None, True),
    (SC + ["--out", "adir"], r"--out adir: is a folder; give a file name", None, True),
    (SC + ["--out", "afile/r.json"], r"afile is a file, not a folder", None, True),
    (SC + ["--device-set", "g_min=abc"], r"device ideal: g_min must be a finite number, got 'abc'", None, True),
    (SC + ["--device-set", "bits=true"], r"bits must be an integer in 1..32 or absent", None, True),
    (SC + ["--device-set", "write_noise_std=nan"], r"write_noise_std must be a finite number", None, True),
    (SC + ["--device-set", 'write_noise_coeffs=["a"]'], r"write_noise_coeffs must be a non-empty list", None, True),
    (SC + ["--device-set", "g_dtod=nan"], r"g_dtod must be a finite number", None, True),
    # spice-train
    (ST + ["--epochs", "0"], r"epochs must be >= 1", None, True),
    (ST + ["--out", "afile/sub"], r"--out afile/sub: afile is a file, not a folder", None, True),
    (ST + ["--config", "c.toml"], r"c.toml: \[spice\] unknown key 'unknownkey'", {"c.toml": "[spice]\nunknownkey = 1"},
     True),
    (ST + ["--config", "c.toml"], r"c.toml: spice config: tran_options must be a table",
     {"c.toml": "[spice]\ntran_options = 3"}, True),
    (ST + ["--config", "c.toml"], r"'bogus' is not an ngspice option", {"c.toml": '[spice]\noptions = {bogus = "x"}'},
     True),
    (ST + ["--config", "c.toml"], r"clip_weights must be true or false", {"c.toml": '[spice]\nclip_weights = "yes"'},
     True),
    (ST + ["--config", "c.toml"], r"c.toml: unknown key 'euler'", {"c.toml": "[euler]\neps = 0.1"}, True),
    # spice-compare
    (CMP + ["--tol", "nan"], r"argument --tol: must be finite", None, True),
    (CMP + ["--tol", "-1"], r"argument --tol: must be a number > 0", None, True),
    (CMP + ["--euler-max-steps", "0"], r"argument --euler-max-steps: must be an integer >= 1", None, True),
    (CMP + ["--epochs", "0"], r"epochs must be >= 1", None, True),
    (CMP + ["--out", "afile/sub"], r"--out afile/sub: afile is a file, not a folder", None, True),
    (CMP + ["--config", "c.toml"], r"c.toml: \[spice\] unknown key 'nope'", {"c.toml": "[spice]\nnope = 1"}, True),
]


@pytest.mark.parametrize("argv,message,files,early", CLI_CASES,
                         ids=[f"{i}:{' '.join(c[0])[-60:]}" for i, c in enumerate(CLI_CASES)])
def test_cli_refuses_bad_input_in_one_clear_line(argv, message, files, early, tmp_path, monkeypatch, capsys,
                                                 request):
    if early:
        request.getfixturevalue("no_work")
    rc, _, err = cli(argv, tmp_path, monkeypatch, capsys, files)
    assert rc not in (0, None), f"exit 0 on bad input: {err}"
    assert "Traceback" not in err
    line = next((ln for ln in err.splitlines() if "error" in ln), "")
    assert re.search(message, line), f"stderr: {err!r}"


def test_data_list_names_a_damaged_manifest_and_fails(tmp_path, monkeypatch, capsys):
    rc, out, err = cli(["data", "list", "--cache-dir", "c"], tmp_path, monkeypatch, capsys,
                       {"c/mnist/manifest.json": "{garbage"})
    assert rc == 1 and "Traceback" not in err
    assert re.search(r"mnist\s+NOT USABLE: .*manifest.json is damaged", out)


# -- the Python API ------------------------------------------------------------------------------
XOR = load_dataset("xor")
TOPO = mlff((2, 3, 2))
NET = Network.init(TOPO, dtype=torch.float64)


def _cfg(tmp, **kw):
    return RunConfig(**{"dataset": "xor", "hidden": (3,), "epochs": 1, "out": str(tmp / "run"), **kw})


def _nan_net():
    n = NET.clone()
    n.W[0, 2] = NAN  # changed in place, after construction
    return n


API_CASES = [
    (lambda t: RunConfig(beta=1e4), ValueError, r"run config: \|beta\| must be <= 1000"),
    (lambda t: RunConfig(epochs=0), ValueError, r"run config: epochs must be >= 1"),
    (lambda t: RunConfig(out=""), ValueError, r"run config: out must be a folder path, got an empty string"),
    (lambda t: DeviceModel(g_min="1e-6"), ValueError, r"device ideal: g_min must be a finite number"),
    (lambda t: DeviceModel(w_max="1"), ValueError, r"w_max must be a finite number"),
    (lambda t: DeviceModel(write_noise_std=NAN), ValueError, r"write_noise_std must be a finite number"),
    (lambda t: DeviceModel(write_noise_std=INF), ValueError, r"write_noise_std must be a finite number"),
    (lambda t: DeviceModel(g_dtod=NAN), ValueError, r"g_dtod must be a finite number"),
    (lambda t: DeviceModel(bits=True), ValueError, r"bits must be an integer in 1..32"),
    (lambda t: DeviceModel(bits=200), ValueError, r"bits must be an integer in 1..32"),
    (lambda t: DeviceModel(write_noise_coeffs=5), ValueError, r"write_noise_coeffs must be a non-empty list"),
    (lambda t: DeviceModel(write_noise_coeffs=[NAN]), ValueError, r"write_noise_coeffs must be a non-empty list"),
    (lambda t: DeviceModel(name=None), ValueError, r"device: name must be a string"),
    (lambda t: load_preset("../spice_models/ideal"), ValueError, r"a preset is a name, not a path"),
    (lambda t: SpiceConfig(options="x"), ValueError, r"options must be a table of ngspice options"),
    (lambda t: SpiceConfig(options={"bogus": 1}), ValueError, r"'bogus' is not an ngspice option"),
    (lambda t: SpiceConfig(tran_options={"reltol": -1}), ValueError, r"tran_options: reltol must be > 0"),
    (lambda t: SpiceConfig(tran_options={"reltol": "a b"}), ValueError, r"reltol must be a finite number"),
    (lambda t: SpiceConfig(clip_weights="yes"), ValueError, r"clip_weights must be true or false"),
    (lambda t: SpiceConfig(fold_inputs="no"), ValueError, r"fold_inputs must be true or false"),
    (lambda t: SpiceConfig(force=1), ValueError, r"force must be true or false"),
    (lambda t: SpiceConfig(device={"bits": 4}), ValueError, r"device must be a preset name .* --device-set"),
    (lambda t: load_dataset(None), ValueError, r"dataset name must be a string"),
    (lambda t: load_dataset("digits", seed=-1), ValueError, r"dataset split seed must be an integer >= 0"),
    (lambda t: load_dataset("digits", seed="a"), ValueError, r"dataset split seed must be an integer >= 0"),
    (lambda t: Trainer(_cfg(t), "xor"), TypeError, r"dataset must be an eqprop.datasets.Dataset"),
    (lambda t: Trainer(_cfg(t), XOR, euler={"eps": 0.1}), TypeError, r"euler must be an EulerConfig"),
    (lambda t: Trainer(_cfg(t, dataset="wine"), XOR), ValueError, r"says dataset 'wine', the dataset given is 'xor'"),
    (lambda t: Trainer(_cfg(t), XOR).run(epochs=-1), ValueError, r"epochs must be an integer >= 1"),
    (lambda t: Trainer(_cfg(t), XOR).run(epochs=1.5), ValueError, r"epochs must be an integer >= 1"),
    (lambda t: Network.stack(NET), NetworkError, r"Network.stack takes a list of plain networks"),
    (lambda t: Network.stack([NET, NET]).trial(5), IndexError, r"a stack of 2 trials has no trial 5"),
    (lambda t: Network.load(t / "missing.npz"), FileNotFoundError, r"missing.npz not found \(Network.save writes"),
    (lambda t: SpiceSolver().relax("net", torch.zeros(1, 2)), TypeError, r"relax takes an eqprop.network.Network"),
    (lambda t: SpiceSolver().relax(_nan_net(), torch.zeros(1, 2, dtype=torch.float64)), ValueError,
     r"the network's W has non-finite entries"),
    (lambda t: SpiceSolver().apply_update(NET.clone(), torch.full((7, 7), NAN), torch.zeros(7), 0.1, 0.1),
     ValueError, r"dW has non-finite entries"),
    (lambda t: SpiceSolver().apply_update(NET.clone(), torch.zeros(3, 3), torch.zeros(7), 0.1, 0.1), ValueError,
     r"dW must have shape \(7, 7\), got \(3, 3\)"),
    (lambda t: SpiceSolver().apply_update(NET.clone(), torch.zeros(7, 7), torch.full((7,), INF), 0.1, 0.1),
     ValueError, r"db has non-finite entries"),
    (lambda t: SpiceSolver().apply_update(NET.clone(), torch.zeros(7, 7), torch.zeros(7), NAN, 0.1), ValueError,
     r"lr_W has non-finite entries"),
    (lambda t: SpiceSolver().apply_update(NET.clone(), torch.full((7, 7), 1e300, dtype=torch.float64)
                                          * torch.as_tensor(TOPO.mask), torch.zeros(7, dtype=torch.float64), 1e300,
                                          0.1), ValueError, r"the update makes W non-finite"),
]


@pytest.mark.parametrize("call,exc,message", API_CASES, ids=[f"api{i}" for i in range(len(API_CASES))])
def test_api_refuses_bad_input_naming_the_field(call, exc, message, tmp_path):
    with pytest.raises(exc, match=message):
        call(tmp_path)


def test_network_load_names_a_garbage_file(tmp_path):
    (tmp_path / "g.npz").write_bytes(b"\x00garbage")
    (tmp_path / "g.topology.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(NetworkError, match=r"g.npz is not a saved network"):
        Network.load(tmp_path / "g.npz")


def test_config_values_that_are_fine_are_normalised(tmp_path):
    cfg = RunConfig(out=tmp_path / "x", epochs=np.int64(3), hidden=[np.int64(4)])
    assert cfg.out == str(tmp_path / "x") and type(cfg.epochs) is int and cfg.hidden == (4,)
    assert SpiceConfig(options={"reltol": 1e-9, "method": "gear", "noopiter": True}).options["method"] == "gear"


def test_results_files_are_readable_like_any_file_and_stale_temp_files_go(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    write_atomic(tmp_path / "metrics.json", "{}")
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~umask
    stale = tmp_path / ".metrics.json.abc123.tmp"  # what a kill during write_atomic leaves
    stale.write_text("half")
    lock = RunLock(tmp_path).acquire()
    try:
        assert not stale.exists() and (tmp_path / "metrics.json").exists()
    finally:
        lock.release()


def test_finite_check_helpers_agree_with_math():
    from eqprop_cli.checks import finite_float, positive_int, probability
    assert finite_float("1e3") == 1000.0 and positive_int("2") == 2 and probability("1") == 1.0
    for f, text in ((finite_float, "inf"), (positive_int, "0"), (probability, "nan"), (probability, "-0.1")):
        with pytest.raises(Exception, match="must|expected"):
            f(text)
    assert not math.isnan(probability("0"))


def test_early_checks_leave_no_results_folder_behind_a_refused_run(tmp_path, monkeypatch, capsys, no_work):
    rc, _, _ = cli(TR + ["--out", "afile/sub"], tmp_path, monkeypatch, capsys)
    assert rc == 2 and not Path(tmp_path / "out").exists()


def test_a_second_reproduce_on_one_out_is_refused_before_any_work(tmp_path, monkeypatch, capsys, no_work):
    lock = RunLock(tmp_path / "out").acquire()  # another reproduce writing there
    try:
        rc, _, err = cli(RP, tmp_path, monkeypatch, capsys)
    finally:
        lock.release()
    assert rc == 2 and re.search(r"out is in use by another run \(pid \d+\)", err)
