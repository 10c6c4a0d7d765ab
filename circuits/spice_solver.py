"""SpiceSolver: the Solver interface of eqprop.solver, answered by ngspice.

One circuit per worker is loaded once (netlist_gen.build_circuit, inputs folded, nudge
elements present at 0) and then changed in place: per example, the folded input
currents ``Ix``, the nudge pair ``Gn``/``In`` and the capacitors' initial conditions
are altered; after a training update only the weights that changed are altered
(``update="renetlist"`` rebuilds the text instead; both give the same equilibria).

Methods (which equilibrium, at what cost; ngspice-notes.md has the measurements):
* ``tran``: ``.tran ... uic`` from state0 (capacitor ICs), i.e. the circuit's own
  dynamics; accurate to the transient tolerances.
* ``op``: ``.op`` warm-started by ``.nodeset`` from state0 (exact fixed point, a few
  Newton steps; ngspice has no interactive nodeset, so this reloads the netlist). Without
  state0 it is a cold ``.op``, which cycles on deep nets with hard clamps.
* ``tran+op`` (default): a loose transient picks the basin the dynamics reach (the
  clipped Euler reference's, with the stiff clamp), ``.op`` from its end polishes it to
  the exact fixed point.
The nudged phase starts where the free phase ended: the free call's node voltages u are
kept and reused when the nudged call's state0 is that free state (rho(u) loses u outside
[0, 1]). Returns rho(u) as the state, inputs first, like EulerSolver.
"""
from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from eqprop.network import Network
from eqprop.solver import check_inputs
from netlist_gen import DEFAULT_OPTIONS, build_circuit, folded_input_currents

from .errors import SimulationError
from .ngspice_runner import NgspiceSession

METHODS = ("tran", "op", "tran+op")
UPDATES = ("alter", "renetlist")
# Transient tolerances. "tran" must itself be within 1e-6 of the fixed point after the
# settle time (reltol 1e-4 measured 2e-13 on 20-50-50-10); "tran+op" only needs the
# basin, and ngspice's default-level tolerances are 3x faster there.
TRAN_OPTIONS = {"tran": {"reltol": 1e-4, "abstol": 1e-10, "vntol": 1e-7},
                "tran+op": {"reltol": 1e-3, "abstol": 1e-9, "vntol": 1e-6}}


SETTLE_WINDOW = 5.0  # tau over which the end-of-transient rate |du/dt| is measured


@dataclasses.dataclass
class SpiceSolver:
    """Equilibria of the network's circuit, computed by ngspice (see the module doc).

    method: "tran", "op" or "tran+op". level: "ideal" or "crossbar" (then ``device``: a
    circuits.devices.DeviceModel or a preset name; ``device_seed`` seeds its noise and
    mismatch). clamp: stiff penalty clamp gain (keeps u in [0, 1] like the clipped Euler
    state; 0 = none). t_free / t_nudged: transient length in tau = c/g0 (from u = 0 a
    layered net needs ~300 tau; 40 left errors up to 0.9; t_nudged defaults to t_free:
    100 tau from the free state left 3e-5 with tran, and let tran+op's polish jump basins once). tstep: transient print step
    in tau. options: the netlist's ``.options`` (the .op tolerances); tran_options:
    overrides TRAN_OPTIONS[method]. update: "alter" or "renetlist". workers: parallel
    ngspice processes (examples are split among them). timeout: seconds per ngspice call.
    fold_inputs: inputs as bias currents ``Ix`` (default; 40x fewer elements on 784-input
    nets) or as voltage sources ``Vx`` with every input synapse in the netlist.
    ``steps`` of ``relax`` is ignored (the circuit runs to its equilibrium).
    ``last_stats`` holds the time split of the last ``relax`` call.
    """

    method: str = "tran+op"
    level: str = "ideal"
    device: object = None
    device_seed: int = 0
    clamp: float = 1e3
    t_free: float = 300.0
    t_nudged: float | None = None
    tstep: float = 1.0
    clip_weights: bool = False  # crossbar: saturate |W| > w_max at the device range (as hardware
    # would; counted in last_stats) instead of raising
    settle_tol: float = 1e-5  # max |du/dt| (V per tau) at the end of a transient to call it settled
    max_extend: int = 10  # further transients of the same length while it is not
    options: dict | None = dataclasses.field(default_factory=lambda: dict(DEFAULT_OPTIONS))
    tran_options: dict | None = None
    update: str = "alter"
    workers: int = 1
    timeout: float = 600.0
    g0: float = 1.0
    c: float = 1.0
    fold_inputs: bool = True
    force: bool = False
    last_stats: dict = dataclasses.field(default_factory=dict, init=False)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.update not in UPDATES:
            raise ValueError(f"update must be one of {UPDATES}, got {self.update!r}")
        if self.level not in ("ideal", "crossbar"):
            raise ValueError(f"level must be 'ideal' or 'crossbar', got {self.level!r}")
        if self.t_nudged is None:
            # 100 tau was measured too short: on 1 of 30 random nets (spice-check seed 24,
            # 20-25-25-25-5) the .op polish then jumped to another nudged fixed point
            self.t_nudged = self.t_free
        if self.workers < 1 or self.t_free <= 0 or self.t_nudged <= 0 or self.tstep <= 0:
            raise ValueError("need workers >= 1 and positive t_free, t_nudged, tstep")
        if self.level == "crossbar":
            from .devices import DeviceModel, load_preset
            if self.device is None or isinstance(self.device, str):
                self.device = load_preset(self.device or "ideal")
            if not isinstance(self.device, DeviceModel):
                raise ValueError(f"device must be a DeviceModel or a preset name, got {self.device!r}")
            self._rng = np.random.default_rng(self.device_seed)
        self._dtod = self._prog = None
        self._slots: list[_Slot] = []
        self._u_cache: dict[bytes, np.ndarray] = {}

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        for slot in self._slots:
            slot.session.close()
        self._slots = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def rusage(self) -> dict[str, float]:
        """ngspice's own time split of the first worker's last analysis ("rusage all")."""
        if not self._slots or not self._slots[0].session.alive:
            return {}
        out = {}
        for line in self._slots[0].session.command("rusage all").splitlines():
            key, eq, val = line.partition("=")
            try:
                out[key.strip()] = float(val.split()[0]) if eq else None
            except (ValueError, IndexError):
                pass
        return {k: v for k, v in out.items() if v is not None}

    # -- the Solver interface ----------------------------------------------------------
    def relax(self, network: Network, x, state0=None, beta=0.0, target=None, steps=None) -> torch.Tensor:
        x = check_inputs(network, x, state0, beta, target)
        self.last_stats = {}  # a call that raises leaves no stale numbers behind
        topo = network.topology
        t_start = time.perf_counter()
        xs = x.detach().cpu().double().numpy()
        B, n_in = xs.shape[0], topo.n_in
        s0 = None if state0 is None else state0.detach().cpu().double().numpy()
        y = None if beta == 0 else target.detach().cpu().double().numpy()
        while len(self._slots) < min(self.workers, B):
            self._slots.append(_Slot(NgspiceSession(timeout=self.timeout)))
        slots = self._slots[:min(self.workers, B)]
        for slot in slots:
            slot.session.timeout = self.timeout  # may have changed since the session started
            slot.stats = _new_stats()  # one dict per worker thread: no unlocked += across threads
        prog = self._program(network)
        self._map(lambda sl: self._sync(sl, network, prog), slots)
        if self.fold_inputs:
            _, cur = folded_input_currents(network, xs, self.g0, device_arrays=prog)
        else:  # input voltage sources hold rho(x), as the reference clamps them
            cur = np.clip(xs, 0.0, 1.0)
        u0 = np.zeros((B, topo.n - n_in))
        if s0 is not None:
            for b in range(B):  # the free call's u when state0 is its rho(u) (nudged phase)
                u0[b] = self._u_cache.get(s0[b].tobytes(), s0[b, n_in:])
        u = np.zeros_like(u0)
        parts = [list(range(k, B, len(slots))) for k in range(len(slots))]

        def run(k):
            for b in parts[k]:
                u[b] = self._solve(slots[k], cur[b], u0[b], float(beta), None if y is None else y[b],
                                   b, warm=s0 is not None)

        self._map(run, range(len(slots)))
        out = torch.as_tensor(np.concatenate([xs, np.clip(u, 0.0, 1.0)], axis=1), dtype=network.dtype,
                              device=network.device)
        keys = out.detach().cpu().double().numpy()  # as the caller will pass it back (e.g. float32)
        self._u_cache = {keys[b].tobytes(): u[b] for b in range(B)}
        self.last_stats = {"examples": B, "method": self.method, **_merge_stats([sl.stats for sl in slots]),
                           "seconds": time.perf_counter() - t_start}
        return out

    # -- one example ---------------------------------------------------------------------
    def _solve(self, slot, cur, u0, beta, y, b, warm):
        circ, ses, st = slot.circuit, slot.session, slot.stats
        neurons = circ.neurons
        nodes = [circ.u_node[i] for i in neurons]
        inputs = circ.input_elements if self.fold_inputs else circ.input_sources
        values = dict(zip(inputs.values(), cur.tolist()))
        gains, currents = circ.nudge_values(beta, np.zeros(circ.sizes[-1]) if y is None else y)
        for k, (gn, inn) in enumerate(circ.nudge_elements.values()):
            values[gn], values[inn] = float(gains[k]), float(currents[0, k])
        phase = "free" if beta == 0 else "nudged"
        try:
            t = time.perf_counter()
            if self.method != "op":
                values.update({f"Cn{i}[ic]": float(v) for i, v in zip(neurons, u0)})
            ses.alter(values)
            st["alter_s"] += time.perf_counter() - t
            if self.method == "op":
                t = time.perf_counter()
                ns = dict(zip(nodes, u0.tolist())) if warm else None
                ses.command("destroy all")  # one op plot per example would pile up in the worker
                u = ses.op(nodeset=ns, nodes=nodes) if ns else ses.op(nodes=nodes)
                st["op_s"] += time.perf_counter() - t
                return u
            t = time.perf_counter()
            tau = self.c / self.g0
            ses.command("option " + _opts(self.tran_options or TRAN_OPTIONS[self.method]))
            tstop = (self.t_free if beta == 0 else self.t_nudged) * tau
            ses.command("destroy all")  # earlier transients' plots would pile up in the worker
            u = ses.tran(self.tstep * tau, tstop, uic=True, nodes=nodes)
            for extension in range(self.max_extend + 1):
                # a slow mode near a saddle can still be moving at tstop; an .op polish from
                # there may reach another fixed point (wine spice-compare, epoch 2): go on.
                # The rate is taken over the last SETTLE_WINDOW tau, not the last (shortened) step.
                tv = ses.vector("time")
                j = int(np.searchsorted(tv, tv[-1] - SETTLE_WINDOW * tau))
                j = min(j, len(tv) - 2)
                rate = np.abs(u - ses.voltages(nodes, index=j)).max() * tau / max(tv[-1] - tv[j], 1e-300)
                if rate < self.settle_tol:
                    break
                if extension == self.max_extend:
                    st["unsettled"] += 1  # spice-check and last_stats report it; the polish still runs
                    break
                ses.alter({f"Cn{i}[ic]": float(v) for i, v in zip(neurons, u)})
                ses.command("destroy all")
                u = ses.tran(self.tstep * tau, tstop, uic=True, nodes=nodes)
                st["extensions"] += 1
            st["tran_s"] += time.perf_counter() - t
            if self.method == "tran":
                return u
            t = time.perf_counter()
            ses.command("option " + _opts(self.options or {}))  # interactive options outlive a reload
            u2 = ses.op(nodeset=dict(zip(nodes, u.tolist())), nodes=nodes)
            st["op_s"] += time.perf_counter() - t
            st["polish_max_change"] = max(st["polish_max_change"],
                                          float(np.abs(np.clip(u2, 0, 1) - np.clip(u, 0, 1)).max()))
            return u2
        except SimulationError as e:
            if not ses.alive:
                slot.circuit = None  # a fresh worker must load the circuit again
            raise type(e)(f"example {b}, {phase} phase ({self.method}): {e.message}", netlist=e.netlist,
                          log=e.log, command=e.command, rundir=e.rundir) from None

    # -- circuit and weights -------------------------------------------------------------
    def _program(self, network):
        """Crossbar level: device conductances of the current weights (None at ideal level).

        Only weights that changed since the last call are written again, so a noisy
        device keeps the programming error of the weights that did not change.
        """
        if self.level != "crossbar":
            return None
        from .devices import program_network, sample_dtod
        W = network.W.detach().cpu().double().numpy()
        old = self._prog
        if old is not None and old[0].shape == W.shape and np.array_equal(old[0], W):
            return old[1]
        if self._dtod is None or self._dtod[0].shape != W.shape:
            self._dtod = sample_dtod(W.shape, self.device, self._rng)
        new = program_network(network, self.device, self._rng if self.device.stochastic else None,
                              clip=self.clip_weights,
                              dtod=self._dtod if self.device.stochastic else None)
        self.last_clipped = new.n_clipped  # weights saturated at the device range (clip_weights)
        if old is not None and old[0].shape == W.shape:
            keep = W == old[0]
            new.Gp = np.where(keep, old[1].Gp, new.Gp)
            new.Gm = np.where(keep, old[1].Gm, new.Gm)
        self._prog = (W.copy(), new)
        return new

    def _build(self, network, prog):
        return build_circuit(network, None, level=self.level, fold_inputs=self.fold_inputs, g0=self.g0,
                             c=self.c, clamp=self.clamp, device_arrays=None if prog is None else tuple(prog),
                             options=self.options, force=self.force)

    def _sync(self, slot, network, prog) -> None:
        """Make the loaded circuit carry the network's current weights and biases."""
        W = network.W.detach().cpu().double().numpy()
        b = network.b.detach().cpu().double().numpy()
        mask = network.topology.mask
        same_topo = (slot.circuit is not None and slot.session.alive and slot.mask is not None
                     and slot.mask.shape == mask.shape and np.array_equal(slot.mask, mask)
                     and slot.circuit.sizes == network.topology.sizes)
        t = time.perf_counter()
        if not same_topo or self.update == "renetlist":
            if not (same_topo and np.array_equal(W, slot.W) and np.array_equal(b, slot.b)):
                slot.circuit = self._build(network, prog)
                slot.session.load(slot.circuit.to_spice())
                slot.mask, slot.W, slot.b = mask.copy(), W.copy(), b.copy()
            slot.stats["load_s"] += time.perf_counter() - t
            return
        values = {}
        pairs = list(slot.circuit.weight_elements)  # (src, dst), docs/netlist-format.md sec. 8
        src, dst = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        changed = np.nonzero(W[src, dst] != slot.W[src, dst])[0] if len(pairs) else []
        names = slot.circuit.weight_elements
        for k in changed:
            s, d = int(src[k]), int(dst[k])
            el = names[(s, d)]
            if prog is None:
                values[el[0]] = self.g0 * float(W[s, d])
            else:
                values[el[0]], values[el[1]] = 1.0 / float(prog.Gp[s, d]), 1.0 / float(prog.Gm[s, d])
        for i in np.nonzero(b != slot.b)[0]:
            if i >= network.topology.n_in:
                values[slot.circuit.bias_elements[int(i)]] = self.g0 * float(b[i])
        if values and self.method != "tran":
            # op and tran+op reload the netlist per example (nodeset), which would replay
            # every weight alter: a fresh text is cheaper
            slot.circuit = self._build(network, prog)
            slot.session.load(slot.circuit.to_spice())
            slot.stats["load_s"] += time.perf_counter() - t
        elif values:
            slot.session.alter(values)
            slot.stats["alter_s"] += time.perf_counter() - t
        slot.W, slot.b = W.copy(), b.copy()

    def _map(self, fn, items) -> None:
        items = list(items)
        if len(items) == 1:
            fn(items[0])
            return
        with ThreadPoolExecutor(max_workers=len(items)) as pool:
            for f in [pool.submit(fn, it) for it in items]:
                f.result()


@dataclasses.dataclass(eq=False)
class _Slot:
    """One worker: its session and the network state its loaded circuit carries."""

    session: NgspiceSession
    circuit: object = None
    mask: np.ndarray | None = None
    W: np.ndarray | None = None
    b: np.ndarray | None = None
    stats: dict = dataclasses.field(default_factory=dict)  # this worker's share of last_stats


def _new_stats() -> dict:
    return {"load_s": 0.0, "alter_s": 0.0, "tran_s": 0.0, "op_s": 0.0, "polish_max_change": 0.0,
            "extensions": 0, "unsettled": 0}


def _merge_stats(parts: list[dict]) -> dict:
    """Workers' stats into one: times and counts add up, the polish change is the largest."""
    out = _new_stats()
    for p in parts:
        for k, v in p.items():
            out[k] = max(out[k], v) if k == "polish_max_change" else out[k] + v
    return out


def _opts(options: dict) -> str:
    return " ".join(f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in options.items())
