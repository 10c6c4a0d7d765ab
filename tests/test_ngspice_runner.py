"""The two ngspice routes: shared library in a worker process, and `ngspice -b` + raw files."""
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from circuits.errors import ConvergenceError, SimulationError, SimulationTimeout, WorkerCrashed
from circuits.ngspice_batch import batch_op, batch_two_phase, find_binary, read_raw, run_batch
from circuits.ngspice_runner import NgspiceSession, alter_command, library_available, tran_line, with_nodeset

NO_LIBRARY = "libngspice not found (apt-get install libngspice0, or set NGSPICE_LIBRARY_PATH)"
pytestmark = pytest.mark.ngspice
needs_library = pytest.mark.skipif(not library_available(),
                                   reason=NO_LIBRARY)
needs_binary = pytest.mark.skipif(find_binary() is None, reason="no ngspice binary (apt-get install ngspice)")

# Two neurons, u1 <-> u2 with weight 0.5, bias 0.7 on u1: the fixed point in the linear
# region solves u1 = 0.7 + 0.5 u2, u2 = 0.5 u1, i.e. u1 = 0.7/0.75, u2 = 0.35/0.75.
TWO = """* two neurons
Cn1 u1 0 1.0
Rl1 u1 0 1.0
Br1 r1 0 v=min(max(v(u1),0),1)
Ib1 0 u1 0.7
Cn2 u2 0 1.0
Rl2 u2 0 1.0
Br2 r2 0 v=min(max(v(u2),0),1)
Ib2 0 u2 0.0
Gw2_1 0 u2 r1 0 0.5
Gw1_2 0 u1 r2 0 0.5
.options reltol=1e-9 abstol=1e-15 vntol=1e-12
.end
"""
NODES = ["u1", "u2"]
FIXED = np.array([0.7 / 0.75, 0.35 / 0.75])


def fixed_point(ib1, ib2, w21=0.5, w12=0.5):
    """Linear-region fixed point of TWO with other values."""
    A = np.array([[1.0, -w12], [-w21, 1.0]])
    return np.linalg.solve(A, [ib1, ib2])


@pytest.fixture(scope="module")
def session():
    if not library_available():
        pytest.skip("libngspice not found (apt-get install libngspice0, or set NGSPICE_LIBRARY_PATH)")
    with NgspiceSession(timeout=60) as s:
        yield s


# -- pure helpers --------------------------------------------------------------------
def test_failure_lines_find_what_the_error_pattern_finds():
    """The worker's plain-string test of each output line (is_failure) says what ERROR_RE says."""
    from circuits.ngspice_protocol import ERROR_RE, failure_lines, is_failure
    lines = ["Error: no such device", "  error on line 3", "\tERROR", "xerror", "errors", "simulation ABORTED",
             "Note: doAnalyses: TRAN:  Timestep too small", "Circuit not parsed.", "No such command", "cannot recover",
             "Doing analysis at TEMP = 27", "No. of Data Rows : 16", "", "warning: gmin stepping", "erro r"]
    rng = np.random.default_rng(0)
    alphabet = list("abdeinoprst ERORBT:\t")
    lines += ["".join(rng.choice(alphabet, rng.integers(0, 16))) for _ in range(3000)]
    assert [is_failure(line) for line in lines] == [bool(ERROR_RE.search(line)) for line in lines]
    assert failure_lines(lines[:5]) == ["Error: no such device", "error on line 3", "ERROR", "errors"]  # stripped
    assert sum(map(is_failure, lines[:15])) == 9


def test_alter_command_syntax():
    assert alter_command("Gw5_3", np.float64(0.25)) == "alter @Gw5_3[gain]=0.25"
    assert alter_command("Ib5", -1e-6) == "alter Ib5 = -1e-06"
    assert alter_command("Cn5[ic]", 0.5) == "alter @Cn5[ic]=0.5"
    assert "np.float64" not in alter_command("Rp1_2", np.float64(1e4))
    assert tran_line(1, 300) == "tran 1.0 300.0"
    assert tran_line(1, 300, tmax=5, uic=True) == "tran 1.0 300.0 0.0 5.0 uic"


def test_with_nodeset_replaces_old_lines():
    text = with_nodeset(TWO + "\n", {"u1": 0.1})
    text = with_nodeset(text, {"u2": np.float64(0.2)})
    lines = text.splitlines()
    assert [l for l in lines if l.startswith(".nodeset")] == [".nodeset v(u2)=0.2"]
    assert lines[-1] == ".end" and lines.count(".end") == 1


def test_error_carries_netlist_log_command_and_pickles():
    e = SimulationError("it failed", netlist="* n\n.end", log="\n".join(f"line {i}" for i in range(40)), command="op")
    text = str(e)
    assert "it failed" in text and "command: op" in text and "line 39" in text and "line 0\n" not in text
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.netlist, e2.log, e2.command) == (e.netlist, e.log, e.command)


# -- shared library --------------------------------------------------------------------
@needs_library
def test_op_alter_and_nodeset(session):
    session.load(TWO)
    np.testing.assert_allclose(session.op(nodes=NODES), FIXED, atol=1e-12)
    session.alter({"Gw2_1": 0.25, "Ib1": np.float64(0.2)})  # one round trip, numpy scalars welcome
    np.testing.assert_allclose(session.op(nodes=NODES), fixed_point(0.2, 0.0, w21=0.25), atol=1e-12)
    # nodeset reloads the netlist: the alters must survive it
    u = session.op(nodeset={"u1": 0.3, "u2": 0.1}, nodes=NODES)
    np.testing.assert_allclose(u, fixed_point(0.2, 0.0, w21=0.25), atol=1e-12)
    np.testing.assert_allclose(session.op(nodes=NODES), u, atol=1e-12)


@needs_library
def test_tran_from_initial_condition_settles_to_op(session):
    session.load(TWO)
    session.alter({"Cn1[ic]": 0.9, "Cn2[ic]": 0.1})
    u = session.tran(0.1, 60.0, uic=True, nodes=NODES)
    np.testing.assert_allclose(u, FIXED, atol=1e-8)
    t = session.vector("time")
    assert t[-1] == pytest.approx(60.0) and session.voltages(["u1"], index=0)[0] == pytest.approx(0.9, abs=1e-3)


@needs_library
def test_two_phase_transient(session):
    session.load(TWO)
    v1, v2 = session.tran_two_phase(0.1, 60.0, 120.0, {"Ib2": -0.1}, NODES)
    np.testing.assert_allclose(v1, FIXED, atol=1e-8)
    np.testing.assert_allclose(v2, fixed_point(0.7, -0.1), atol=1e-8)


@needs_library
def test_netlist_error_raises_and_worker_recovers(session):
    bad = "* bad\nR1 a 0 1k\nQ5 x y\n.end\n"
    with pytest.raises(SimulationError) as info:
        session.load(bad)
    assert info.value.netlist == bad and "Error on line" in info.value.log and info.value.command == "load"
    restarts = session.restarts
    session.load(TWO)  # a fresh worker: the library may be unrecoverable after a netlist error
    np.testing.assert_allclose(session.op(nodes=NODES), FIXED, atol=1e-12)
    assert session.restarts == restarts + 1


@needs_library
def test_failed_analysis_raises_with_log(session):
    session.load("* two sources fight\nV1 a 0 1\nV2 a 0 2\nR1 a 0 1\n.end\n")
    with pytest.raises(ConvergenceError) as info:
        session.op()
    assert "aborted" in info.value.log and info.value.command == "op" and "V2 a 0 2" in info.value.netlist
    with pytest.raises(SimulationError, match="no such device"):
        session.alter({"Gnothere1": 1.0})
    session.load(TWO)
    np.testing.assert_allclose(session.op(nodes=NODES), FIXED, atol=1e-12)


@needs_library
def test_worker_crash_and_timeout_restart():
    with NgspiceSession(timeout=60) as s:
        s.load(TWO)
        os.kill(s._proc[0].pid, 9)  # the worker this session started
        with pytest.raises(WorkerCrashed):
            s.op()
        s.load(TWO)
        np.testing.assert_allclose(s.op(nodes=NODES), FIXED, atol=1e-12)
        with pytest.raises(SimulationTimeout):
            s.call([("analysis", "tran 1e-4 1e4 0 1e-4")], timeout=0.5)  # ~1e8 steps
        assert not s.alive
        with pytest.raises(SimulationError, match="no circuit loaded"):
            s.op()  # the circuit went with the stopped worker: say so, do not run on nothing
        s.load(TWO)
        np.testing.assert_allclose(s.op(nodes=NODES), FIXED, atol=1e-12)
        assert s.restarts == 2


# -- subprocess route and cross-check ------------------------------------------------------
@needs_binary
def test_batch_route_standalone():
    np.testing.assert_allclose(batch_op(TWO, NODES), FIXED, atol=1e-12)
    np.testing.assert_allclose(batch_op(TWO, NODES, alters={"Ib1": 0.2}), fixed_point(0.2, 0.0), atol=1e-12)
    v1, v2 = batch_two_phase(TWO, NODES, 0.1, 60.0, 120.0, {"Ib2": -0.1})
    np.testing.assert_allclose(v1, FIXED, atol=1e-8)
    np.testing.assert_allclose(v2, fixed_point(0.7, -0.1), atol=1e-8)
    with pytest.raises(SimulationError) as info:
        batch_op("* bad\nR1 a 0 1k\nQ5 x y\n.end\n", ["a"])
    assert info.value.rundir and "Error on line" in info.value.log
    shutil.rmtree(info.value.rundir)  # kept for the user on failure; not needed here
    # Newton capped at 3 iterations without stepping: ngspice's transient rescue answers, which is refused
    stiff = ("* rescue\n.options itl1=3 gminsteps=0 srcsteps=0 noopiter\nV1 in 0 5\nR1 in a 1k\nD1 a 0 dm\n"
             "D2 a b dm\nR2 b 0 10\nC1 a 0 1p\n.model dm d is=1e-14 n=1\n.end\n")
    with pytest.raises(ConvergenceError, match="transient rescue") as info:
        batch_op(stiff, ["a"])
    assert "Transient op started" in info.value.log
    # with tau the rescue is scaled as in the library route; its command also turns gmin and source stepping
    # back on (optran's first three flags), which converge here
    assert 0.6 < batch_op(stiff, ["a"], tau=1e-9)[0] < 0.8


@needs_binary
def test_raw_reader_binary_and_ascii(tmp_path):
    res = run_batch(TWO, ["op", "write", "set filetype=ascii", "tran 0.5 2", "write"], keep=True,
                    rundir=str(tmp_path))
    op, tran = res.plots
    assert op.name == "Operating Point" and tran.name == "Transient Analysis"
    np.testing.assert_allclose(op.last(NODES), FIXED, atol=1e-12)
    assert tran["time"][-1] == pytest.approx(2.0) and len(tran["u1"]) == len(tran["time"])
    both = read_raw((tmp_path / "out0.raw").read_bytes() + (tmp_path / "out1.raw").read_bytes())
    assert [p.name for p in both] == ["Operating Point", "Transient Analysis"]


@needs_library
@needs_binary
def test_shared_library_and_subprocess_agree(session):
    from eqprop.network import Network
    from eqprop.topology import small_world
    from netlist_gen import build_circuit
    net = Network.init(small_world((5, 12, 12, 4), 0.2, seed=3), seed=3, dtype=torch.float64)
    x = np.random.default_rng(3).random(5)
    circ = build_circuit(net, x, beta=0.5, target=np.full(4, 0.5), clamp=1e3)
    nodes = [circ.u_node[i] for i in circ.neurons]
    text = circ.to_spice()
    session.load(text)
    u_lib = session.op(nodes=nodes)
    np.testing.assert_allclose(batch_op(text, nodes), u_lib, rtol=0, atol=1e-12)
    nudge = {circ.nudge_elements[o][0]: 0.0 for o in circ.outputs}
    session.load(text)
    lib = session.tran_two_phase(1.0, 50.0, 80.0, nudge, nodes)
    sub = batch_two_phase(text, nodes, 1.0, 50.0, 80.0, nudge)
    for a, b in zip(lib, sub):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_a_failed_cold_op_at_physical_units_does_not_stall_in_ngspices_rescue_transient(session):
    """Recorded from an iris run on the physical level (diode clamp alone, tau = 10 ns; docs/physical.md): the
    cold polish's Newton misses from its start, and ngspice's last rescue ("optran": 10 us = 1000 tau of transient
    at reltol 1e-9) ran past the 600 s call timeout. Loaded with its tau, the rescue is scaled to the circuit
    (optran_command): the miss is fast, and the .nodeset polish lands on the transient's fixed point."""
    import json
    from pathlib import Path
    data = Path(__file__).parent / "data"
    spec = json.loads((data / "diode_cold_op_miss.json").read_text())
    spec["alters"] = [tuple(a) for a in spec["alters"]]
    session.load((data / "diode_cold_op_miss.cir").read_text(), tau=spec["tau"])
    (r,) = session.call([("equilibrium", spec)], timeout=30)  # minutes with ngspice's unscaled optran
    assert r["op_s"] < 5  # ngspice 46 misses the cold op here and reloads; 39's Sparse Newton converges
    tran = session.call([("equilibrium", {**spec, "method": "tran"})], timeout=30)[0]["u"]
    np.testing.assert_allclose(r["u"], tran, atol=1e-3)  # the transient's fixed point, polished
