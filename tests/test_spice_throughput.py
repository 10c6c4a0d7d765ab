"""Issue 11: whole equilibria per worker round trip, and KLU/Sparse detected and chosen at run time.

The batched path (circuits/spice_batching.py: a worker's share of a batch in one request)
must give exactly the equilibria of the per-example path it replaces; the matrix solver is
read from ngspice's own output and recorded; the size guard follows the solver.
"""
import numpy as np
import pytest
import torch

from circuits.errors import ConvergenceError, NgspiceUnavailable, SimulationError
from circuits.ngspice_protocol import solver_used
from circuits.ngspice_runner import klu_available, library_available, ngspice_info
from circuits.spice_config import DEFAULT_OPTIONS, TRAN_OPTIONS
from circuits.spice_solver import SpiceSolver
from eqprop.network import Network
from eqprop.topology import mlff
from netlist_gen import NetlistTooLarge, build_circuit, check_size
from netlist_gen.generator import estimate_size, solver_of

pytestmark = [pytest.mark.ngspice,
              pytest.mark.skipif(not library_available(), reason="libngspice not found (make install)")]


def net_and_data(sizes=(4, 6, 3), batch=3, seed=0):
    net = Network.init(mlff(sizes), seed=seed, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.random((batch, sizes[0])))
    y = torch.eye(sizes[-1], dtype=torch.float64)[torch.arange(batch) % sizes[-1]]
    return net, x, y


def calls(solver) -> int:
    return sum(sl.session.calls for slots in solver._slots.values() for sl in slots)


@pytest.mark.parametrize("method", ["tran+op", "tran", "op"])
def test_batched_equals_per_example_in_one_round_trip(method):
    net, x, y = net_and_data()
    out = {}
    if method == "op":  # Newton from next to the fixed points (from zero one example needs ngspice's rescue)
        with SpiceSolver(matrix_solver="sparse") as s:
            near = s.relax(net, x)
    for batched in (True, False):
        with SpiceSolver(method=method, matrix_solver="sparse", polish="op") as s:
            if not batched:
                s._batched = lambda: False  # the per-example path (what measure and subclasses use)
            if method != "op":
                s.relax(net, x[:1])  # start and load
            else:
                s.relax(net, x[:1], near[:1])
            c0 = calls(s)
            free = s.relax(net, x, None if method != "op" else near)
            n_free = calls(s) - c0
            nudged = s.relax(net, x, free, 0.5, y)
            out[batched] = (free, nudged, n_free, calls(s) - c0 - n_free)
            assert s.last_stats["examples"] == 3
    (fb, nb, cf, cn), (fp, np_, cfp, cnp) = out[True], out[False]
    assert torch.equal(fb, fp) and torch.equal(nb, np_)  # bit for bit: the same commands in the same order
    assert (cf, cn) == (1, 1)  # one round trip for the worker's whole share of the batch
    assert cfp >= 3 and cnp >= 3


def test_an_unsettled_transient_of_a_stack_names_its_trial():
    """A stack's error says which trial (the Trainer's trial t runs seed cfgs[t]), a plain network's does not."""
    from circuits.errors import SimulationError
    from eqprop.network import Network as Net
    net, x, _ = net_and_data(batch=2)
    stack = Net.stack([net, Net.init(mlff((4, 6, 3)), seed=1, dtype=torch.float64)])
    strict = dict(matrix_solver="sparse", t_free=0.5, settle_tol=1e-3, rest_tol=0.0, max_extend=0)  # 0.5 tau from 0
    with SpiceSolver(**strict) as s:
        with pytest.raises(SimulationError, match=r"trial 0, example 0, free phase .*had not settled"):
            s.relax(stack, x)
        with pytest.raises(SimulationError, match=r"^example 0, free phase .*had not settled"):
            s.relax(net, x)


@pytest.mark.parametrize("batched", [True, False])
def test_an_update_rides_with_the_next_relax_and_equals_a_fresh_load(batched):
    """apply_update's alters make no round trip of their own: the batched relax carries them in its request (the
    per-example path sends them first), and the equilibria are those of a circuit loaded with the new weights,
    bit for bit (the same elements altered before the same commands)."""
    net, x, y = net_and_data(batch=4)
    g = torch.Generator().manual_seed(1)
    dW = 0.1 * torch.randn(net.W.shape, generator=g, dtype=net.dtype) * net.mask_tensor()
    dW, db = dW + dW.T, torch.full_like(net.b, 0.02)
    db[:net.topology.n_in] = 0
    one = torch.ones((), dtype=net.dtype)
    with SpiceSolver(method="tran", matrix_solver="sparse") as s:
        if not batched:
            s._batched = lambda: False
        s.relax(net, x)  # start and load
        c0 = calls(s)
        s.apply_update(net, dW, db, one, one)
        assert calls(s) == c0  # deferred
        free = s.relax(net, x)
        with_update = calls(s) - c0
        assert s.last_stats["load_s"] == 0.0
        s.relax(net, x)
        # one request; on the per-example path the alters' own call before the examples' as without an update
        assert with_update == 1 if batched else with_update == calls(s) - c0 - with_update + 1
        updated = net.clone()
    with SpiceSolver(method="tran", matrix_solver="sparse") as fresh:  # the new weights in the netlist text
        if not batched:
            fresh._batched = lambda: False
        assert torch.equal(fresh.relax(updated, x), free)


@pytest.mark.parametrize("settings", [dict(), dict(method="tran"), dict(method="op"),
                                      dict(nudged_phase="timed", t_nudged=6.0), dict(workers=2)])
def test_both_phases_in_one_round_trip_equal_two_relax_calls(settings):
    """relax_phases (what the Trainer calls): each worker's free and nudged phases in one request, the nudged
    phase starting in the worker from the free state; bit for bit the two relax calls, over 2 lockstep trials
    with their own targets and betas."""
    from eqprop.network import Network as Net
    from eqprop.solver import relax_phases
    net, x, y = net_and_data(batch=4)
    stack = Net.stack([net, Net.init(mlff((4, 6, 3)), seed=1, dtype=torch.float64)])
    u0 = torch.cat([x, torch.full((4, 9), 0.3, dtype=torch.float64)], -1).expand(2, -1, -1)
    ys, betas = torch.stack([y, y.flip(0)]), torch.tensor([0.5, 0.25], dtype=torch.float64)
    if settings.get("method") == "op":  # Newton from next to the fixed points: from 0.3 some need ngspice's rescue
        with SpiceSolver(matrix_solver="sparse") as s:
            u0 = s.relax(stack, x, u0)
    with SpiceSolver(matrix_solver="sparse", **settings) as s:
        s.relax(stack, x[:1], u0[:, :1])  # start and load
        c0 = calls(s)
        free, nudged = relax_phases(s, stack, x, u0, betas, ys)
        workers = sum(len(v) for v in s._slots.values())  # one per trial here
        assert workers == 2 and calls(s) - c0 == workers  # both phases: one request per worker
        assert s.last_stats["examples"] == 2 * 2 * 4
        c1 = calls(s)
        free2 = s.relax(stack, x, u0)
        nudged2 = s.relax(stack, x, free2, betas, ys)
        assert calls(s) - c1 == 2 * workers
    assert torch.equal(free, free2) and torch.equal(nudged, nudged2)
    assert (nudged - free).abs().amax((1, 2)).min() > 1e-3  # each trial's nudge did something


def test_cold_polish_gives_the_nodeset_polish_fixed_points_and_falls_back_where_it_lands_elsewhere():
    """polish "cold" (the default): .op in the loaded circuit without the .nodeset reload, kept only
    within COLD_TOL of the transient's end. On the small-world net a cold .op lands on other fixed
    points (rho 1.0 away) for some examples: those take the reload, and every equilibrium must equal
    the .nodeset polish's."""
    from eqprop.dynamics import rho
    from eqprop.topology import small_world
    sw = Network.init(small_world((6, 20, 20, 4), 0.2, seed=1), seed=1, dtype=torch.float64)
    rng = np.random.default_rng(1)
    cases = [(*net_and_data((4, 10, 3), batch=4)[:2], torch.eye(3, dtype=torch.float64)[[0, 1, 2, 0]]),
             (sw, torch.tensor(rng.random((4, 6))), torch.tensor(rng.random((4, 4))))]
    used = []
    for net, x, y in cases:
        out = {}
        for polish in ("op", "cold"):
            with SpiceSolver(polish=polish, rest_tol=0.0, matrix_solver="sparse") as s:  # the polish every time
                free = s.relax(net, x)
                cold_free = s.last_stats["cold"]
                nudged = s.relax(net, x, free, 0.5, y)
                out[polish] = (free, nudged, cold_free + s.last_stats["cold"])
        for a, b in zip(out["op"][:2], out["cold"][:2]):
            assert float((rho(a) - rho(b)).abs().max()) < 1e-10
        assert out["op"][2] == 0
        used.append(out["cold"][2])
    assert used[0] >= 6  # iris-size: most examples' cold .op was the fixed point (7 of 8 measured)
    assert 0 < used[1] < 8  # small-world: some fell back to the reload (and still match)


def test_an_equilibrium_does_not_depend_on_what_the_worker_solved_before():
    """Bit-identical resume needs an example's bits to be independent of the worker's history: a batch
    in a fresh worker and the same batch after other examples in one worker give the same bits, both
    phases (the cold .op in the circuit as the last transient left it did not: docs/spice.md, session 9).
    Same batch size in both: the folded input currents' matmul may round differently at another size."""
    net, x = net_and_data((4, 10, 3), batch=4)[:2]
    y = torch.eye(3, dtype=torch.float64)[[0, 1, 2, 0]]
    z = torch.tensor(np.random.default_rng(7).random((4, 4)))
    with SpiceSolver() as fresh:
        free = fresh.relax(net, x)
        assert fresh.last_stats["matrix_solver"] == ["sparse"]  # 13 neurons: Sparse, not measured (that is noise)
        assert fresh.last_stats["matrix_solver_cpu_s"] == [None]
        nudged = fresh.relax(net, x, free, 0.5, y)
    for k, nudge in [(1, False), (2, False), (3, False), (2, True)]:  # histories ending in a fallback and not
        with SpiceSolver() as s:
            zf = s.relax(net, z[:k])
            if nudge:
                s.relax(net, z[:k], zf, 0.5, y[:k])
            after = f"after {k} other examples (their nudged phase too: {nudge})"
            assert torch.equal(s.relax(net, x), free), f"free phase {after}"
            assert torch.equal(s.relax(net, x, free, 0.5, y), nudged), f"nudged phase {after}"


@pytest.mark.parametrize("batched", [True, False])
def test_a_transient_at_rest_skips_the_polish_and_is_its_fixed_point(batched):
    """rest_tol: where the settled transient's end no longer moves, its own Newton steps stood on the fixed
    point, so no polish runs and the answer is the polished one to < 1e-9; rest_tol 0 polishes every example,
    and a transient cut short (still moving) is polished whatever rest_tol is."""
    net, x = net_and_data((4, 10, 3), batch=4)[:2]
    y = torch.eye(3, dtype=torch.float64)[[0, 1, 2, 0]]
    out = {}
    # gear: trapezoidal steps ring on the stiff clamp around the fixed point (|du/dt| 1e-11..1e-5 V/tau at the
    # end here, the polish then moves < 3e-13 V), so they rarely come to rest; gear's damp out
    for name, settings in [("always", dict(rest_tol=0.0)), ("rest", dict()),
                           ("cut", dict(t_free=2.0, max_extend=0, on_unsettled="warn"))]:
        with SpiceSolver(matrix_solver="sparse", free_integration="gear", **settings) as s:
            if not batched:
                s._batched = lambda: False  # the per-example path (measure, DEEP)
            free = s.relax(net, x)
            rested = s.last_stats["rested"]
            nudged = s.relax(net, x, free, 0.5, y)
            out[name] = (free, nudged, rested + s.last_stats["rested"], s.last_stats["unsettled"])
    assert out["always"][2] == 0
    assert out["rest"][2] == 8  # every free and nudged transient of this net ends at rest
    assert out["cut"][2] == 0 and out["cut"][3] == 4  # still moving after 2 tau: polished
    for a, b in zip(out["always"][:2], out["rest"][:2]):
        assert float((a - b).abs().max()) < 1e-9
    assert float((out["cut"][0] - out["always"][0]).abs().max()) < 1e-9  # the polish found the same fixed point
    with pytest.raises(ValueError, match="rest_tol must be a number >= 0 and below settle_tol"):
        SpiceSolver(rest_tol=-1e-12)
    with pytest.raises(ValueError, match="rest_tol must be"):
        SpiceSolver(rest_tol=1e-5)


def test_polish_is_recorded_only_when_not_the_nodeset_polish():
    # a run recorded before the field existed (config.json, checkpoint) ran the .nodeset polish
    assert "polish" not in SpiceSolver(polish="op").describe()
    assert SpiceSolver().describe()["polish"] == "cold"
    with pytest.raises(ValueError, match="polish must be one of"):
        SpiceSolver(polish="newton")


def test_worker_cpu_is_counted_and_recycling_keeps_the_equilibria():
    net, x, _ = net_and_data(batch=3)
    with SpiceSolver(matrix_solver="sparse") as plain:
        ref = plain.relax(net, x)
        assert plain._slots[0][0].session.cpu_seconds > 0
    with SpiceSolver(matrix_solver="sparse", recycle_after=2) as s:
        first = s.relax(net, x)  # 3 solves: the next relax starts a fresh worker
        pid = s._slots[0][0].session.pid
        cpu = s.worker_cpu_seconds()
        second = s.relax(net, x)
        assert s.last_stats["recycled"] == 1 and s._slots[0][0].session.pid != pid
        assert s.worker_cpu_seconds() > cpu > 0, "the recycled worker's CPU is kept, the new one's added"
        cpu = s.worker_cpu_seconds()
    assert s.worker_cpu_seconds() == cpu, "closing keeps the count"
    assert torch.equal(first, ref) and torch.equal(second, ref)


def test_failure_in_a_batch_names_the_example_and_phase():
    net, x, _ = net_and_data(sizes=(4, 20, 20, 3))
    with SpiceSolver(t_free=1.0, max_extend=0, matrix_solver="sparse") as s:
        with pytest.raises(SimulationError, match=r"example 0, free phase \(tran\+op\): the transient had not settled"):
            s.relax(net, x)


def test_solver_detected_from_ngspice_output():
    info = ngspice_info()
    assert set(info) >= {"version", "klu", "klu_build", "solver_reported", "library"}
    assert info["klu"] == klu_available() and (not info["klu"] or info["klu_build"])
    assert solver_used("x\nUsing KLU as Direct Linear Solver\n") == "klu"
    assert solver_used("Using SPARSE 1.3 as Direct Linear Solver") == "sparse"
    assert solver_used("ngspice-39 says nothing") is None


def test_klu_and_sparse_give_the_same_equilibria_and_the_choice_is_recorded():
    net, x, y = net_and_data(sizes=(6, 12, 12, 3), batch=2)
    with SpiceSolver(matrix_solver="sparse") as s:
        ref = s.relax(net, x)
        assert s.last_stats["matrix_solver"] == ["sparse"] and "klu" not in s._slots[0][0].session.netlist
    with SpiceSolver() as auto:  # "auto": measured where KLU is there, else Sparse
        u = auto.relax(net, x)
        rep = auto.report()
        assert rep["matrix_solver"] == auto.last_stats["matrix_solver"]
        assert "matrix_solver_cpu_s" not in rep  # timings stay out of the per-epoch metrics
        if klu_available():
            assert set(auto.last_stats["matrix_solver_cpu_s"][0]) == {"klu", "sparse"}
        else:
            assert rep["matrix_solver"] == ["sparse"]
    assert float((u - ref).abs().max()) < 1e-10
    if not klu_available():
        with pytest.raises(NgspiceUnavailable, match="does not use KLU"):
            SpiceSolver(matrix_solver="klu").relax(net, x)
        return
    with SpiceSolver(matrix_solver="klu") as k:
        uk = k.relax(net, x)
        assert k.last_stats["matrix_solver"] == ["klu"] and "klu=1" in k._slots[0][0].session.netlist
        assert "Using KLU" in k._slots[0][0].session.command("op")
    assert float((uk - ref).abs().max()) < 1e-10


def test_size_guard_follows_the_matrix_solver():
    big = mlff((784, 500, 500, 500, 10))
    with pytest.raises(NetlistTooLarge, match="MAX_DENSE_WIDTH=400"):
        check_size(big)
    assert estimate_size(big, solver="klu").ok
    assert not estimate_size(mlff((784, 600, 600, 10)), solver="klu").ok
    assert solver_of({"klu": 1}) == "klu" and solver_of({"KLU": "0"}) == "sparse" and solver_of(None) == "sparse"
    with pytest.raises(ValueError, match="solver must be one of"):
        estimate_size(big, solver="umfpack")
    net = Network.init(mlff((3, 4, 2)), seed=0, dtype=torch.float64)
    assert ".options" in build_circuit(net, options={"reltol": 1e-9, "klu": 1}).to_spice()
    with pytest.raises(ValueError, match="matrix_solver"):
        SpiceSolver(matrix_solver="umfpack")
    with pytest.raises(ValueError, match="not by a klu/sparse option"):
        SpiceSolver(options={"klu": 1})


@pytest.mark.skipif(not klu_available(), reason="this ngspice has no KLU: the choice is always Sparse")
def test_a_resumed_solver_keeps_the_checkpointed_matrix_solver():
    """'auto' measures once per circuit; a resume must not measure again (another choice would move
    the equilibria in their last bits). 20-50-50-10 measures as KLU (2x, docs/results.md), so a
    restored 'sparse' that took effect shows that the checkpoint, not a new measurement, decided."""
    net, x, _ = net_and_data((20, 50, 50, 10), batch=1)
    with SpiceSolver(matrix_solver="auto", method="op") as s:
        s.load_state_dict({"matrix_solver": {0: "sparse"}}, net)
        s.relax(net, x)
        assert s.report()["matrix_solver"] == ["sparse"]
        assert s.state_dict()["matrix_solver"] == {0: "sparse"}
    with SpiceSolver(matrix_solver="auto", method="op") as s:
        with pytest.raises(ValueError, match="matrix solver of trial 0 is 'umfpack'"):
            s.load_state_dict({"matrix_solver": {0: "umfpack"}}, net)


@pytest.mark.parametrize("batched", [True, False])
def test_an_op_answered_by_ngspices_transient_rescue_is_refused(batched):
    """method "op": on this net Newton, gmin and source stepping fail from u = 0 for example 0 and ngspice's
    last rescue (optran) answered with a state 1.0 from the fixed point (residual 0.48); that is an error
    carrying the log, not an equilibrium."""
    net, x, _ = net_and_data()
    with SpiceSolver(method="op", matrix_solver="sparse") as s:
        if not batched:
            s._batched = lambda: False
        with pytest.raises(ConvergenceError, match="transient rescue") as e:
            s.relax(net, x, torch.zeros(3, 13, dtype=torch.float64))
    assert "Transient op started" in e.value.log


@pytest.mark.parametrize("batched", [True, False])
def test_a_polish_the_rescue_answered_keeps_the_transients_end_and_is_counted(batched):
    """The .nodeset polish from a transient cut short (0.5 tau) with one Newton iteration allowed and no
    stepping: where ngspice's rescue answers, the transient's end is kept (the
    rescue's answer is no fixed point) and counted in report()["op_rescued"]; the others are polished."""
    from experiments.spice_check import residual
    net, x, _ = net_and_data()
    short = dict(matrix_solver="sparse", t_free=0.5, max_extend=0, on_unsettled="warn")
    with SpiceSolver(polish="op", options={**DEFAULT_OPTIONS, "itl1": 1, "gminsteps": 0, "srcsteps": 0},
                     **short) as s:
        if not batched:
            s._batched = lambda: False
        u = s.relax(net, x)
        rescued = s.report()["op_rescued"][0]
    with SpiceSolver(method="tran", tran_options=TRAN_OPTIONS["tran+op"], **short) as s:
        end = s.relax(net, x)  # the same transient alone
    kept = [b for b in range(3) if torch.equal(u[b], end[b])]
    assert rescued >= 1 and len(kept) == rescued
    assert all(residual(net, u[b:b + 1]) < 1e-8 for b in range(3) if b not in kept)


def test_unsettled_transients_are_reported_per_trial_and_epoch():
    """With on_unsettled "warn" a transient still moving at its end is counted; report() (metrics.json per
    epoch, physical-study's column) gives the count per trial since the last report, then starts again."""
    from eqprop.network import Network as Net
    net, x, y = net_and_data(batch=3)
    stack = Net.stack([net, Net.init(mlff((4, 6, 3)), seed=1, dtype=torch.float64)])
    with SpiceSolver(matrix_solver="sparse", t_free=0.5, max_extend=0, on_unsettled="warn") as s:
        s.relax(stack, x)  # 0.5 tau from u = 0: nothing has settled
        first = s.report()["unsettled"]
        assert first == [3, 3] and s.last_stats["unsettled"] == 6
        assert s.report()["unsettled"] == [0, 0]  # counted since the last report
    with SpiceSolver(matrix_solver="sparse") as s:
        s.relax(stack, x)
        assert s.report()["unsettled"] == [0, 0]


@pytest.mark.skipif(not klu_available(),
                    reason="needs an ngspice with KLU: with Sparse 1.3 (ngspice 39) this net's one free phase took "
                           "1,157 s to over 1,200 s of CPU on the project's 2-core machine (sessions 12-13)")
def test_the_cold_polish_is_an_exact_fixed_point_on_784_100x5_10():
    """The cold polish keeps only Newton's answers: with ngspice's .op rescue (optran) on during the try, the
    free phase of spice-check's 784-100x5-10 net was kept at a transient's end 1.1e-5 from a fixed point (3.6e-4
    from the exact one, inside COLD_TOL of the loose transient), and spice-check failed. ~2 min of ngspice."""
    from experiments.spice_check import random_networks, residual
    (k, net, _), = list(random_networks([(784, 100, 100, 100, 100, 100, 10)], "mlff", 0.2, 1, 0))
    x = torch.tensor(np.random.default_rng(10_000 + k).random((1, 784)))
    with SpiceSolver(timeout=1200) as s:
        free = s.relax(net, x)
    assert residual(net, free) < 1e-9


def test_gear_for_the_settled_transients_reaches_the_same_fixed_points_and_the_timed_nudge_keeps_trap():
    from circuits.spice_batching import tran_options
    from circuits.spice_config import SpiceConfig
    with pytest.raises(ValueError, match="free_integration must be one of"):
        SpiceConfig(free_integration="bdf")
    trap, gear = SpiceConfig(), SpiceConfig(free_integration="gear", nudged_phase="timed", t_nudged=3.0)
    assert "method" not in tran_options(trap, 0.0) and "method" not in tran_options(trap, 0.5)  # never set
    assert tran_options(gear, 0.0)["method"] == "gear" and tran_options(gear, 0.5)["method"] == "trap"
    net, x, y = net_and_data((4, 10, 3), batch=4)
    out = {}
    for integ in ("trap", "gear"):
        # rest_tol 0: the polish every time (a gear transient at rest ends within 2e-10 of it unpolished)
        with SpiceSolver(free_integration=integ, tstep=10.0, rest_tol=0.0, matrix_solver="sparse") as s:
            free = s.relax(net, x)
            out[integ] = (free, s.relax(net, x, free, 0.5, y))
            assert s.describe().get("free_integration") == (None if integ == "trap" else "gear")
    for a, b in zip(out["trap"], out["gear"]):  # the polish ends both at the exact fixed points
        assert float((a - b).abs().max()) < 1e-10
    loose = {}
    for integ in ("trap", "gear"):  # without the polish the two integrations end apart: gear was applied
        with SpiceSolver(free_integration=integ, tstep=10.0, method="tran", matrix_solver="sparse") as s:
            loose[integ] = s.relax(net, x)
    assert float((loose["trap"] - loose["gear"]).abs().max()) > 1e-12


def test_max_step_and_timed_steps_set_the_transients_steps():
    """max_step: the settled transients' maximum step (None keeps ngspice's default, and the commands of earlier
    runs); timed_steps: a timed nudge in t_nudged / timed_steps steps (at most tstep)."""
    from circuits.spice_batching import transient_steps
    from circuits.spice_config import SpiceConfig
    base = SpiceConfig(tstep=10.0, nudged_phase="timed", t_nudged=3.0)
    assert transient_steps(base, 0.0, False) == {"tstep": 10.0, "tmax": None}  # ngspice's min(tstep, tstop/50)
    assert transient_steps(base, 0.5, False) == {"tstep": 10.0, "tmax": None}
    assert transient_steps(base, 0.0, True)["tmax"] == pytest.approx(6.0)
    assert transient_steps(base, 0.5, True)["tmax"] == pytest.approx(3.0 / 50)
    fast = SpiceConfig(tstep=10.0, nudged_phase="timed", t_nudged=3.0, max_step=100.0, timed_steps=10, c=2.0)
    for interp in (False, True):  # tau = c / g0 = 2
        assert transient_steps(fast, 0.0, interp)["tmax"] == pytest.approx(200.0)
        assert transient_steps(fast, 0.5, interp)["tmax"] == pytest.approx(0.6)
    assert transient_steps(SpiceConfig(tstep=0.1, nudged_phase="timed", t_nudged=3.0, timed_steps=2), 0.5,
                           True)["tmax"] == pytest.approx(0.1)  # never above the print step
    for bad in (dict(max_step=0.0), dict(max_step=-1.0), dict(max_step=float("inf")), dict(max_step=True)):
        with pytest.raises(ValueError, match="max_step must be a positive number"):
            SpiceConfig(**bad)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="timed_steps must be an integer >= 1"):
            SpiceConfig(timed_steps=bad)
    d = SpiceSolver().describe()  # recorded only when not ngspice's default: earlier runs compare equal
    assert not {"max_step", "timed_steps", "settle_trtol", "timed_trtol"} & set(d)
    d = SpiceSolver(max_step=50.0, timed_steps=10, settle_trtol=50.0, timed_trtol=40.0).describe()
    assert d["max_step"] == 50.0 and d["timed_steps"] == 10 and d["settle_trtol"] == 50.0 and d["timed_trtol"] == 40.0


def test_settle_trtol_is_set_for_the_settled_transients_and_reset_for_the_timed_nudge():
    from circuits.spice_batching import tran_options
    from circuits.spice_config import SpiceConfig
    assert "trtol" not in tran_options(SpiceConfig(), 0.0)  # ngspice's default is never set
    timed = SpiceConfig(nudged_phase="timed", t_nudged=3.0, settle_trtol=50.0, free_integration="gear")
    # an interactive option outlives its transient: the timed nudge after a free phase must set 7 back
    assert tran_options(timed, 0.0)["trtol"] == 50.0 and tran_options(timed, 0.5)["trtol"] == 7.0
    assert tran_options(SpiceConfig(settle_trtol=50.0), 0.5)["trtol"] == 50.0  # a settled nudged phase
    for bad in (0.5, float("nan"), True, "50"):
        with pytest.raises(ValueError, match="settle_trtol must be a number >= 1"):
            SpiceConfig(settle_trtol=bad)
    with pytest.raises(ValueError, match="trtol given twice"):
        SpiceConfig(settle_trtol=50.0, tran_options={"trtol": 20})


def test_timed_trtol_is_set_for_the_timed_nudge_and_set_back_for_the_free_transient():
    from circuits.spice_batching import tran_options
    from circuits.spice_config import SpiceConfig
    only = SpiceConfig(nudged_phase="timed", t_nudged=3.0, timed_trtol=50.0)
    # the free transient after a timed nudge must set ngspice's 7 back (interactive options outlive it)
    assert tran_options(only, 0.5)["trtol"] == 50.0 and tran_options(only, 0.0)["trtol"] == 7.0
    both = SpiceConfig(nudged_phase="timed", t_nudged=3.0, settle_trtol=30.0, timed_trtol=50.0)
    assert tran_options(both, 0.5)["trtol"] == 50.0 and tran_options(both, 0.0)["trtol"] == 30.0
    assert tran_options(SpiceConfig(timed_trtol=50.0), 0.5)["trtol"] == 7.0  # a settled nudge: not timed
    for bad in (0.5, float("inf"), False, "50"):
        with pytest.raises(ValueError, match="timed_trtol must be a number >= 1"):
            SpiceConfig(timed_trtol=bad)
    with pytest.raises(ValueError, match="trtol given twice, by timed_trtol"):
        SpiceConfig(timed_trtol=50.0, tran_options={"TRTOL": 20})


@pytest.mark.parametrize("batched", [True, False])
def test_a_larger_max_step_reaches_the_same_fixed_points_in_fewer_steps(batched):
    """gear with max_step 100 tau (and settle_trtol 50): the free and (settled) nudged equilibria are the
    default's (the CPU it saves is benchmarks' business); timed_steps reaches ngspice: the nudge held 3 tau
    in 10 steps ends a little away from the one in 50 steps, on both paths."""
    net, x, y = net_and_data((4, 10, 3), batch=4)
    out = {}
    for name, settings in [("default", dict()), ("ms100", dict(max_step=100.0)),
                           ("trtol50", dict(max_step=100.0, settle_trtol=50.0))]:
        with SpiceSolver(matrix_solver="sparse", free_integration="gear", tstep=10.0, **settings) as s:
            if not batched:
                s._batched = lambda: False
            free = s.relax(net, x)
            out[name] = (free, s.relax(net, x, free, 0.5, y))
    for other in ("ms100", "trtol50"):
        for a, b in zip(out["default"], out[other]):
            assert float((a - b).abs().max()) < 1e-9
    timed = {}
    for n in (50, 10):
        with SpiceSolver(matrix_solver="sparse", free_integration="gear", tstep=10.0, nudged_phase="timed",
                         t_nudged=3.0, timed_steps=n) as s:
            if not batched:
                s._batched = lambda: False
            free = s.relax(net, x)
            timed[n] = s.relax(net, x, free, 0.5, y)
    diff = float((timed[50] - timed[10]).abs().max())
    assert 1e-9 < diff < 1e-2  # applied (the steps differ) and the same 3 tau of dynamics
    with SpiceSolver(matrix_solver="sparse", free_integration="gear", tstep=10.0, nudged_phase="timed",
                     t_nudged=3.0, timed_steps=10, timed_trtol=50.0) as s:
        if not batched:
            s._batched = lambda: False
        free = s.relax(net, x)
        loose = s.relax(net, x, free, 0.5, y)
    diff = float((timed[10] - loose).abs().max())
    assert 1e-12 < diff < 1e-2  # timed_trtol reaches ngspice (other steps), the same 3 tau of dynamics
