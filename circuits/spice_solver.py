"""SpiceSolver: the solver protocol of eqprop.solver, answered by ngspice.

One circuit per trial (and, at crossbar level, one device instance per trial) is loaded
once into each of that trial's worker processes (netlist_gen.build_circuit, inputs
folded, nudge elements present at 0) and then changed in place: per example, the folded
input currents ``Ix``, the nudge pair ``Gn``/``In`` and the capacitors' initial
conditions are altered; a training update (``apply_update``) alters exactly the elements
whose value changed: at crossbar level the devices the device model moved.

Methods (which equilibrium, at what cost; ngspice-notes.md has the measurements):
* ``tran``: ``.tran ... uic`` from u0 (capacitor ICs), i.e. the circuit's own dynamics;
  accurate to the transient tolerances.
* ``op``: ``.op`` warm-started by ``.nodeset`` from u0 (exact fixed point, a few Newton
  steps; ngspice has no interactive nodeset, so this reloads the netlist). Without u0 it
  is a cold ``.op``, which cycles on deep nets with hard clamps.
* ``tran+op`` (default): a loose transient picks the basin the dynamics reach (the
  clipped Euler reference's, with the stiff clamp), ``.op`` from its end polishes it to
  the exact fixed point: by default (``polish="cold"``, batched path) a cold ``.op`` in the
  loaded circuit kept when it lands next to the transient's end, else the ``.nodeset``
  reload (spice_batching says why).
The state is the node voltages u (rho(u) lies on the activation nodes); the nudged phase
starts from the free phase's u, as the protocol hands it back.
"""
from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from eqprop.learning import apply_update as exact_update
from eqprop.network import Network
from eqprop.solver import check_relax, check_update, check_weights
from netlist_gen import build_circuit, cap_ic_key, folded_input_currents

from .devices import DeviceArray, instance_seed, symmetrise, weight_asymmetry
from .errors import ConvergenceError, SimulationError
from .matrix_solver import choose_matrix_solver, matrix_solver_report, restore_choices, saved_choices
from .ngspice_protocol import OP_RESCUED_MESSAGE, op_rescued
from .ngspice_runner import NgspiceSession
from .settle import geometric_limit, polish_agrees, unsettled_message
from .spice_batching import (
    SETTLE_WINDOW,
    example_spec,
    example_values,
    phase_spec,
    timed_phase,
    tran_options,
    transient_steps,
)
from .spice_config import SpiceConfig


class SpiceSolver:
    """Equilibria of a network's circuit, computed by ngspice (see the module doc).

    ``SpiceSolver(config)`` or ``SpiceSolver(**settings)`` (the fields of SpiceConfig).
    ``last_stats`` holds the time split of the last ``relax`` call; ``report()`` the device
    state (clipped weights, asymmetry of the realised weights).
    """

    dynamics = "leaky"  # the neuron circuit (netlist_gen.build_circuit); circuits.deep_spice: "deep"

    def __init__(self, config: SpiceConfig | None = None, **settings):
        if config is not None and settings:
            raise ValueError("give a SpiceConfig or its fields as keywords, not both")
        self.config = config or SpiceConfig(**settings)
        self.last_stats: dict = {}
        self._slots: dict[int, list[_Slot]] = {}
        self._arrays: dict[int, DeviceArray] = {}
        self._source: dict[int, np.ndarray] = {}  # the weights each trial's devices were set to
        # per trial since the last report: transients still moving at their end (on_unsettled "warn"), and
        # .op answers that were ngspice's transient rescue (optran), not Newton's fixed point
        self._unsettled: dict[int, int] = {}
        self._rescued: dict[int, int] = {}
        self._slow: dict[int, int] = {}  # ... and slow ones Newton finished at their limit (on_unsettled "polish")
        self._trials = 0
        self._retired_cpu = 0.0  # worker CPU of the sessions close() has dropped

    def describe(self) -> dict:
        d = {"solver": type(self).__name__, **self.config.to_dict()}
        if d["polish"] == "op":  # recorded only when not the .op polish: a run recorded before the
            del d["polish"]  # field existed (config.json, checkpoint) compares equal to what it ran
        fields = SpiceConfig.__dataclass_fields__
        for k in ("free_integration", "max_step", "timed_steps", "settle_trtol", "timed_trtol"):
            if d[k] == fields[k].default:  # likewise, recorded only when not ngspice's default
                del d[k]
        return d

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        self._retired_cpu = self.worker_cpu_seconds()
        for slots in self._slots.values():
            for slot in slots:
                slot.session.close()
        self._slots = {}

    def worker_cpu_seconds(self) -> float:
        """CPU seconds the ngspice worker processes spent on this solver's requests so far (the
        Trainer adds them to its own process's CPU time: most of a SPICE epoch runs in the workers)."""
        return self._retired_cpu + sum(slot.session.cpu_seconds for slots in self._slots.values() for slot in slots)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def rusage(self) -> dict[str, float]:
        """ngspice's own time split of the first worker's last analysis ("rusage all")."""
        slot = next((s[0] for s in self._slots.values() if s and s[0].session.alive), None)
        if slot is None:
            return {}
        out = {}
        for line in slot.session.command("rusage all").splitlines():
            key, eq, val = line.partition("=")
            try:
                out[key.strip()] = float(val.split()[0]) if eq else None
            except (ValueError, IndexError):
                pass
        return {k: v for k, v in out.items() if v is not None}

    # -- devices -------------------------------------------------------------------------
    def prepare(self, network: Network) -> None:
        """Crossbar level: program every trial's device instance from the network's weights;
        the network then holds what the devices hold (symmetrised nominal weights)."""
        if not self.config.devices:
            return
        stack = network.as_stack()
        for t in range(stack.T):
            self._program(t, stack.trial(t), force=True)

    def _program(self, t: int, net: Network, force: bool = False):
        """Trial t's device pairs; programmed afresh when they were not programmed from (or updated
        to) net's weights. force (prepare): program, then let the network hold what the devices hold;
        otherwise relax leaves the caller's network as it is."""
        if not self.config.devices:
            return None
        arr = self._arrays.get(t)
        topo = net.topology
        if arr is None or arr.mask.shape != topo.mask.shape or not np.array_equal(arr.mask, topo.mask):
            seed = instance_seed(self.config.device_seed, t)
            arr = self._arrays[t] = DeviceArray(self.config.device, topo.mask, seed, clip=self.config.clip_weights,
                                                topology=topo)
        W = _numpy(net.W)
        if force or arr.prog is None or not np.array_equal(self._source.get(t), W):
            arr.program(W)
            self._source[t] = W
            if force:
                self._hold(t, net)
        return arr.prog

    def _hold(self, t: int, net: Network) -> None:
        """The network takes the weights trial t's devices hold (symmetrised nominal weights)."""
        W = symmetrise(self._arrays[t].nominal_weights(), net.topology.directed)
        with torch.no_grad():
            net.W.copy_(torch.as_tensor(W))
        self._source[t] = _numpy(net.W)

    def report(self) -> dict:
        """Per trial: the transients still moving at their end since the last report (``unsettled``; counted
        with on_unsettled "warn", raised otherwise) and the ``.op`` answers ngspice's transient rescue gave
        (``op_rescued``: Newton, gmin and source stepping had failed; the answer is that transient's end,
        which the polish's tolerances do not vouch for). Crossbar: weights saturated at the device range, and
        ||W - W^T|| / ||W|| of the weights the devices realise (d2d mismatch and write noise make the two
        directions differ). With
        ``measure``: per trial the mean settling time (s) and energy (J) per example and phase
        over the solves since the last report (then cleared)."""
        out = {**self._measured_report(), **matrix_solver_report(self)}
        if self._trials:
            out["unsettled"] = [self._unsettled.get(t, 0) for t in range(self._trials)]
            out["op_rescued"] = [self._rescued.get(t, 0) for t in range(self._trials)]
            if self.config.on_unsettled == "polish":
                out["slow_polished"] = [self._slow.get(t, 0) for t in range(self._trials)]
            self._unsettled, self._rescued, self._slow = {}, {}, {}
        if not self._arrays:
            return out
        return {**out, "clipped_weights": [a.n_clipped for _, a in sorted(self._arrays.items())],
                "realised_asymmetry": [weight_asymmetry(a.realised_weights()) for _, a in sorted(self._arrays.items())],
                "lost_fraction": [a.lost_fraction() for _, a in sorted(self._arrays.items())]}

    def realised_weights(self, t: int = 0) -> np.ndarray:
        """The (N, N) weights trial t's devices realise (crossbar level)."""
        return self._arrays[t].realised_weights()

    def state_dict(self) -> dict:
        return {"arrays": {t: a.state_dict() for t, a in self._arrays.items()},
                "matrix_solver": saved_choices(self)}

    def load_state_dict(self, state: dict, network: Network) -> None:
        stack = network.as_stack()
        restore_choices(self, state.get("matrix_solver", {}), network)
        for t, d in state.get("arrays", {}).items():
            self._program(t, stack.trial(t))  # creates the instance (its d2d draw) ...
            self._arrays[t].load_state_dict(d)  # ... then its saved conductances and stream
            self._source[t] = _numpy(stack.W[t])  # the checkpoint's W: what these devices hold
        for slots in self._slots.values():
            for slot in slots:
                slot.W = None  # reload on the next relax

    # -- the solver protocol ----------------------------------------------------------------
    def apply_update(self, network: Network, dW, db, lr_W, lr_b) -> None:
        """Ideal level: the exact update; crossbar: every weight step through the device model
        (the network then holds the devices' symmetrised nominal weights). Biases are ideal
        current sources. Then exactly the changed elements are altered in the loaded circuits."""
        check_update(network, dW, db, lr_W, lr_b)  # nothing non-finite reaches the devices or ngspice
        cfg = self.config
        stack = network.as_stack()
        if cfg.devices:
            step = (lr_W * dW).detach().cpu().double().numpy().reshape(stack.W.shape)
            with torch.no_grad():
                stack.b.add_((lr_b * db).reshape(stack.b.shape))
            changed = []
            for t in range(stack.T):
                net = stack.trial(t)
                self._program(t, net)
                changed.append(self._arrays[t].update(step[t]))
                self._hold(t, net)
        else:
            step = (lr_W * dW).reshape(stack.W.shape)
            changed = list(((step != 0) & self._mask(stack)).cpu().numpy())
            with torch.no_grad():
                exact_update(network, dW, db, lr_W, lr_b)
        b_changed = ((lr_b * db).reshape(stack.b.shape) != 0).cpu().numpy()
        for t, slots in self._slots.items():
            if t < stack.T:
                for slot in slots:
                    self._push(slot, stack.trial(t), t, changed[t], b_changed[t])

    @staticmethod
    def _mask(stack):
        return stack.mask_tensor()

    def relax(self, network: Network, x, u0=None, beta=0.0, target=None) -> torch.Tensor:
        return self._relax(network, x, u0, [(beta, target)])[0]

    def relax_phases(self, network: Network, x, u0, beta, target) -> tuple[torch.Tensor, torch.Tensor]:
        """The free phase from u0 and the nudged phase from its end (the protocol's optional call for both,
        eqprop.solver.relax_phases): on the batched path each worker runs both for its examples in one round
        trip, the nudged phase starting in the worker from the free state it just computed; the numbers are
        those of two relax calls (bit for bit in float64). Devices whose read varies (read noise, drift) are
        read once per relax call, as the device surrogate does: there each phase keeps its own call."""
        cfg = self.config
        if not self._batched() or (cfg.devices and cfg.device.read_varies):
            free = self.relax(network, x, u0)
            return free, self.relax(network, x, free, beta, target)
        free, nudged = self._relax(network, x, u0, [(0.0, None), (beta, target)])
        return free, nudged

    def _relax(self, network: Network, x, u0, phases: list) -> list[torch.Tensor]:
        """Phases (beta, target) one after another, each from the previous one's end (the first from u0)."""
        checked = [check_relax(network, x, u0, b, tg) for b, tg in phases]
        x, u0 = checked[0][0], checked[0][1]
        check_weights(network)
        self.last_stats = {}  # a call that raises leaves no stale numbers behind
        cfg = self.config
        stack = network.as_stack()
        T, topo = stack.T, stack.topologies[0]
        t_start = time.perf_counter()
        xs = x.detach().cpu().double().numpy()
        xs = xs if xs.ndim == 3 else np.broadcast_to(xs, (T, *xs.shape))
        B, n_in = xs.shape[1], topo.n_in
        u0s = None if u0 is None else u0.detach().cpu().double().numpy()
        nudges = []  # per phase: (betas (T,), targets (T, B, n_out) or None)
        for _, _, betas, target, nudged in checked:
            ys = None if not nudged else target.detach().cpu().double().numpy()
            nudges.append((betas, ys if ys is None or ys.ndim == 3 else np.broadcast_to(ys, (T, *ys.shape))))
        per_trial = max(1, cfg.workers // T)
        jobs, all_slots = [], []
        for t in range(T):
            net = stack.trial(t)
            prog = self._program(t, net)
            if prog is not None:  # this solve's read of the devices (drift, read noise: one draw per trial)
                prog = self._arrays[t].read()
            slots = self._trial_slots(t, min(per_trial, B))
            for slot in slots:
                slot.session.timeout = cfg.timeout  # may have changed since the session started
                slot.stats = _new_stats()  # one dict per worker thread: no unlocked += across threads
            if cfg.fold_inputs:
                _, cur = folded_input_currents(net, xs[t], cfg.g0, device_arrays=prog)
            else:  # input voltage sources hold rho(x), as the reference clamps them
                cur = np.clip(xs[t], 0.0, 1.0)
            for k, slot in enumerate(slots):
                jobs.append((t, slot, net, prog, cur, list(range(k, B, len(slots)))))
            all_slots += [(t, slot) for slot in slots]
        u = np.zeros((len(phases), T, B, topo.n - n_in))

        def run(job):
            t, slot, net, prog, cur, rows = job
            if slot.solves >= cfg.recycle_after:  # libngspice's memory grows per solve: a fresh worker
                slot.session.close()
                slot.circuit, slot.W, slot.solves = None, None, 0
                slot.stats["recycled"] += 1
            self._sync(slot, net, t, prog)
            slot.solves += len(rows) * len(phases)
            if self._batched():  # the worker's whole share in one round trip (circuits/spice_batching.py)
                # (with the last update's alters in front: _push defers them to this request)
                phase_t = [(float(betas[t]), None if ys is None else ys[t]) for betas, ys in nudges]
                u[:, t, rows] = self._solve_batch(slot, cur, u0s, t, rows, phase_t, f"trial {t}, " if T > 1 else "")
                return
            (betas, ys), = nudges  # more than one phase per call only on the batched path (relax_phases)
            self._flush(slot)
            for b in rows:
                u0b = np.zeros(topo.n - n_in) if u0s is None else u0s[t, b, n_in:]
                u[0, t, b] = self._solve(slot, cur[b], u0b, float(betas[t]), None if ys is None else ys[t, b],
                                         b, warm=u0s is not None)

        _map(run, jobs)
        self._trials = T
        for t, slot in all_slots:  # each worker's stats hold its share of this call
            self._unsettled[t] = self._unsettled.get(t, 0) + slot.stats.get("unsettled", 0)
            self._slow[t] = self._slow.get(t, 0) + slot.stats.get("slow", 0)
            self._rescued[t] = self._rescued.get(t, 0) + slot.stats.get("rescued", 0)
        outs = [torch.as_tensor(np.concatenate([xs, up], axis=2), dtype=network.dtype, device=network.device)
                for up in u]
        self.last_stats = {"examples": T * B * len(phases), "trials": T, "method": cfg.method,
                           **matrix_solver_report(self, times=True),
                           **_merge_stats([sl.stats for _, sl in all_slots]), "seconds": time.perf_counter() - t_start}
        return [o if network.stacked else o[0] for o in outs]

    # -- one example ---------------------------------------------------------------------
    def _solve(self, slot, cur, u0, beta, y, b, warm):
        cfg = self.config
        circ, ses, st = slot.circuit, slot.session, slot.stats
        neurons = circ.neurons
        nodes = [circ.u_node[i] for i in neurons]
        values = example_values(cfg, circ, cur, beta, y)
        phase = "free" if beta == 0 else "nudged"
        timed = timed_phase(cfg, beta)  # the nudge held for t_nudged tau and read there: no settle check, no polish
        try:
            t = time.perf_counter()
            if cfg.method != "op":
                values.update({cap_ic_key(i): float(v) for i, v in zip(neurons, u0)})
            ses.alter(values)
            st["alter_s"] += time.perf_counter() - t
            if cfg.method == "op":
                t = time.perf_counter()
                ns = dict(zip(nodes, u0.tolist())) if warm else None
                ses.command("destroy all")  # one op plot per example would pile up in the worker
                u = ses.op(nodeset=ns, nodes=nodes) if ns else ses.op(nodes=nodes)
                if op_rescued(ses.log.splitlines()):
                    raise ConvergenceError(OP_RESCUED_MESSAGE, netlist=ses.netlist, log=ses.log, command="op")
                st["op_s"] += time.perf_counter() - t
                return u
            t = time.perf_counter()
            tau = cfg.c / cfg.g0
            ses.command("option " + _opts(tran_options(cfg, beta)))
            tstop = (cfg.t_free if beta == 0 else cfg.t_nudged) * tau
            ses.command("destroy all")  # earlier transients' plots would pile up in the worker
            steps = transient_steps(cfg, beta, False)
            u = ses.tran(steps["tstep"], tstop, tmax=steps["tmax"], uic=True, nodes=nodes)
            self._after_transient(slot, b, beta, nodes)
            if cfg.measure:  # before any extension or polish replaces the plot
                self._measure(slot, beta)
            ends, limit = [u], None  # each window's end; where a slow one heads (on_unsettled "polish")
            for extension in range(0 if timed else cfg.max_extend + 1):
                # a slow mode near a saddle can still be moving at tstop; an .op polish from
                # there may reach another fixed point (wine spice-compare, epoch 2): go on.
                # The rate is taken over the last SETTLE_WINDOW tau, not the last (shortened) step.
                tv = ses.vector("time")
                j = int(np.searchsorted(tv, tv[-1] - SETTLE_WINDOW * tau))
                j = min(j, len(tv) - 2)
                rate = np.abs(u - ses.voltages(nodes, index=j)).max() * tau / max(tv[-1] - tv[j], 1e-300)
                if rate < cfg.settle_tol:
                    break
                if extension == cfg.max_extend:
                    why = ""
                    if cfg.on_unsettled == "polish":  # Newton below, kept where it lands on this limit
                        limit, why = geometric_limit(ends)
                        if limit is not None:
                            break
                    st["unsettled"] += 1
                    if cfg.on_unsettled != "warn":  # a state that is still moving is no equilibrium
                        raise SimulationError(unsettled_message(cfg.max_extend, tstop / tau, rate, cfg.settle_tol, why),
                                              netlist=ses.netlist, log=ses.log, command="tran (settle check)")
                    break  # on_unsettled "warn": counted in last_stats, the polish still runs
                ses.alter({cap_ic_key(i): float(v) for i, v in zip(neurons, u)})
                ses.command("destroy all")
                u = ses.tran(steps["tstep"], tstop, tmax=steps["tmax"], uic=True, nodes=nodes)
                ends.append(u)
                st["extensions"] += 1
            st["tran_s"] += time.perf_counter() - t
            if cfg.method == "tran" or timed:
                return u
            if rate < cfg.rest_below:  # at rest: the transient's Newton already solved the fixed point
                st["rested"] += 1
                return u
            t = time.perf_counter()
            # the per-example path (measure, DEEP) always takes the .nodeset polish (polish "cold" is batched only)
            ses.command("option " + _opts(cfg.options or {}))  # interactive options outlive a reload
            u2 = ses.op(nodeset=dict(zip(nodes, u.tolist())), nodes=nodes)
            if op_rescued(ses.log.splitlines()):  # the rescue's answer is no fixed point: keep the transient's end
                st["rescued"], u2 = st["rescued"] + 1, u
            st["op_s"] += time.perf_counter() - t
            st["polish_max_change"] = max(st["polish_max_change"],
                                          float(np.abs(np.clip(u2, 0, 1) - np.clip(u, 0, 1)).max()))
            if limit is not None:
                ok, how = polish_agrees(u2, u, limit)
                if not ok or np.array_equal(u2, u):  # the rescue's answer (u) is no fixed point
                    raise SimulationError(unsettled_message(cfg.max_extend, tstop / tau, rate, cfg.settle_tol, how),
                                          netlist=ses.netlist, log=ses.log, command="op (polish of a slow transient)")
                st["slow"] += 1
            return u2
        except SimulationError as e:
            if not ses.alive:
                slot.circuit = None  # a fresh worker must load the circuit again
            raise type(e)(f"example {b}, {phase} phase ({cfg.method}): {e.message}", netlist=e.netlist,
                          log=e.log, command=e.command, rundir=e.rundir) from None

    def _batched(self) -> bool:
        """Whole equilibria run in the worker unless something must read each example's first
        transient in between (``measure``, or a subclass's ``_after_transient``)."""
        return not self.config.measure and type(self)._after_transient is SpiceSolver._after_transient

    def _interp(self) -> bool:
        """Whether the worker may store transients at tstep only (spice_batching.example_spec): with the
        cold polish, where nothing reads a trajectory (ngspice keeps interp for the process)."""
        cfg = self.config
        return self._batched() and cfg.method == "tran+op" and cfg.polish == "cold"

    def _solve_batch(self, slot, cur, u0s, t, rows, phases, label: str = "") -> np.ndarray:
        """A worker's examples (rows) of trial t, one ``equilibria`` round trip; the same recipe as _solve.
        phases: (beta, targets of trial t or None) each; a later phase starts from the previous one's end in the
        worker. label: what errors name before the example (its trial, in a stack). Returns (phases, rows,
        neurons)."""
        cfg, circ, st = self.config, slot.circuit, slot.stats
        n_in = circ.n_in
        specs = []
        for p, (beta, ys_t) in enumerate(phases):
            phase = "free" if beta == 0 else "nudged"
            common = self._phase_spec(slot, beta)
            for i, b in enumerate(rows):
                if p:  # where this example's previous phase ends, in this request
                    start = (p - 1) * len(rows) + i
                else:
                    start = np.zeros(len(circ.neurons)) if u0s is None else u0s[t, b, n_in:]
                specs.append(example_spec(cfg, circ, cur[b], start, beta, None if ys_t is None else ys_t[b],
                                          p > 0 or u0s is not None, f"{label}example {b}, {phase} phase ({cfg.method})",
                                          common=common))
        pending, slot.pending = slot.pending, {}
        try:
            res = slot.session.equilibria(specs, alters=list(pending.items()))
        except SimulationError:
            if not slot.session.alive:
                slot.circuit = None  # a fresh worker must load the circuit again
            elif pending:
                slot.W = None  # whether the update's alters got in is unknown: the next relax reloads the text
            raise
        for r in res:
            for k in ("alter_s", "tran_s", "op_s", "extensions", "unsettled", "cold", "rescued", "rested", "slow"):
                st[k] += r[k]
            st["polish_max_change"] = max(st["polish_max_change"], r["polish_change"])
        return np.stack([r["u"] for r in res]).reshape(len(phases), len(rows), -1)

    def _phase_spec(self, slot, beta: float) -> dict:
        """phase_spec for this slot's circuit, built once per circuit, settings and phase kind (it depends on beta
        only through beta != 0) rather than per batch."""
        cfg, circ, key = self.config, slot.circuit, (beta != 0, self._interp())
        hit = slot.phase_specs.get(key)
        if hit is None or hit[0] is not cfg or hit[1] is not circ:
            hit = slot.phase_specs[key] = (cfg, circ, phase_spec(cfg, circ, beta, key[1]))
        return hit[2]

    def _after_transient(self, slot, b: int, beta: float, nodes: list[str]) -> None:
        """Called after each example's first transient (its plot still current); subclasses read
        it there (circuits.deep_spice records DEEP's nudged trajectory)."""

    def _measure(self, slot, beta: float) -> None:
        """Settling time and energy of the example's first transient (circuits.physical_measure)."""
        from .physical_measure import measure, passive_elements
        if slot.passive is None or slot.passive[0] is not slot.circuit:
            slot.passive = (slot.circuit, passive_elements(slot.circuit))
        cfg = self.config
        m = measure(slot.session, slot.circuit, slot.passive[1], cfg.settle_v, cfg.physical)
        for k, v in m.items():
            slot.measured.setdefault(f"{k}_{'free' if beta == 0 else 'nudged'}", []).append(v)

    def _measured_report(self) -> dict:
        if not self.config.measure or not self._slots:
            return {}
        T = max(self._slots) + 1
        keys = sorted({k for slots in self._slots.values() for sl in slots for k in sl.measured})
        out = {k: [float(np.mean(sum((sl.measured.get(k, []) for sl in self._slots.get(t, [])), [])))
                   if any(sl.measured.get(k) for sl in self._slots.get(t, [])) else None for t in range(T)]
               for k in keys}
        for slots in self._slots.values():
            for sl in slots:
                sl.measured = {}
        return out

    # -- circuits ------------------------------------------------------------------------
    def _trial_slots(self, t: int, n: int) -> list:
        slots = self._slots.setdefault(t, [])
        while len(slots) < n:
            slots.append(_Slot(NgspiceSession(timeout=self.config.timeout)))
        return slots[:n]

    def _build(self, network, prog, solver: str = "sparse"):
        cfg = self.config
        options = cfg.options if solver == "sparse" else {**(cfg.options or {}), "klu": 1}
        return build_circuit(network, None, level=cfg.level, fold_inputs=cfg.fold_inputs, g0=cfg.g0, c=cfg.c,
                             clamp=cfg.clamp, device_arrays=None if prog is None else tuple(prog),
                             options=options, force=cfg.force, dynamics=self.dynamics,
                             physical=cfg.physical.to_netlist() if cfg.level == "physical" else None)

    def _load(self, slot, network, t, prog) -> None:
        t0 = time.perf_counter()
        slot.circuit = self._build(network, prog, choose_matrix_solver(self, slot, network, t, prog))
        slot.session.load(slot.circuit.to_spice(), tau=self.config.c / self.config.g0)
        slot.mask = network.topology.mask.copy()
        slot.W, slot.b = _numpy(network.W), _numpy(network.b)
        slot.pending = {}  # the text holds them
        slot.stats["load_s"] = slot.stats.get("load_s", 0.0) + time.perf_counter() - t0

    def _sync(self, slot, network, t, prog) -> None:
        """Load the circuit when this worker holds another network (a new trial, topology or weights
        set from outside apply_update); weights changed by apply_update are already in place."""
        topo = network.topology
        same = (slot.circuit is not None and slot.session.alive and slot.W is not None
                and slot.mask.shape == topo.mask.shape and np.array_equal(slot.mask, topo.mask)
                and np.array_equal(slot.W, _numpy(network.W)) and np.array_equal(slot.b, _numpy(network.b))
                and (prog is None or not self.config.device.read_varies))  # a noisy read: new conductances
        if not same:
            self._load(slot, network, t, prog)

    def _push(self, slot, network, t, changed: np.ndarray, b_changed: np.ndarray) -> None:
        """Alter the elements of the weights and biases an update changed (or reload the text)."""
        cfg = self.config
        if slot.circuit is None or not slot.session.alive or slot.W is None or (
                cfg.devices and cfg.device.read_varies):
            return  # the next relax loads it (with a varying read: with that solve's conductances)
        prog = self._arrays[t].prog if cfg.devices else None
        if cfg.update == "renetlist" or cfg.method == "op" or (cfg.method == "tran+op" and cfg.rest_below == 0):
            # op, and tran+op polishing every example, reload the netlist per example (the nodeset or the
            # cold polish), which would replay every weight alter: a fresh text is cheaper. Where most
            # transients end at rest (rest_tol) few examples reload, and the alters are cheaper than a text
            # per batch (iris: ~60 alters, 0.6 ms, against 17 ms for building and loading the netlist)
            self._load(slot, network, t, prog)
            return
        t0 = time.perf_counter()
        W, b = _numpy(network.W), _numpy(network.b)
        values = {}
        names = slot.circuit.weight_elements  # (src, dst) -> element names, docs/netlist-format.md sec. 8
        for s, d in zip(*np.nonzero(changed)):
            el = names.get((int(s), int(d)))
            if el is None:
                continue  # folded inputs: their weights live in the per-example Ix currents
            if prog is None:
                values[el[0]] = cfg.g0 * float(W[s, d])
            else:
                gp, gm = float(prog.Gp[s, d]), float(prog.Gm[s, d])  # physical: conductance elements
                values[el[0]], values[el[1]] = (gp, gm) if cfg.level == "physical" else (1.0 / gp, 1.0 / gm)
        for i in np.nonzero(b_changed)[0]:
            if i >= network.topology.n_in:
                values[slot.circuit.bias_elements[int(i)]] = cfg.g0 * float(b[i])
        self._alter_later(slot, values)
        slot.W, slot.b = W, b
        slot.stats["alter_s"] = slot.stats.get("alter_s", 0.0) + time.perf_counter() - t0

    @staticmethod
    def _alter_later(slot, values: dict) -> None:
        """Element values for the loaded circuit, sent with the slot's next request (the batched relax
        carries them in its round trip, the per-example path sends them first: _flush) rather than in a
        round trip of their own per update."""
        slot.pending.update(values)

    @staticmethod
    def _flush(slot) -> None:
        """The deferred alters (_alter_later) into the loaded circuit now."""
        if slot.pending:
            pending, slot.pending = slot.pending, {}
            try:
                slot.session.alter(pending)
            except SimulationError:
                slot.W = None  # the next relax reloads the text
                raise


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy().copy()


def _map(fn, items) -> None:
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
    measured: dict = dataclasses.field(default_factory=dict)  # settle_s_free: [...] etc. since the last report
    passive: tuple | None = None  # (circuit, its physical_measure.PassiveElements)
    solves: int = 0  # since this worker's process started (it is recycled after SpiceConfig.recycle_after)
    pending: dict = dataclasses.field(default_factory=dict)  # alters for its next request (SpiceSolver._alter_later)
    phase_specs: dict = dataclasses.field(default_factory=dict)  # (nudged, interp) -> (config, circuit, phase_spec)


def _new_stats() -> dict:
    return {"load_s": 0.0, "alter_s": 0.0, "tran_s": 0.0, "op_s": 0.0, "polish_max_change": 0.0,
            "extensions": 0, "unsettled": 0, "recycled": 0, "cold": 0, "rescued": 0, "rested": 0, "slow": 0}


def _merge_stats(parts: list[dict]) -> dict:
    """Workers' stats into one: times and counts add up, the polish change is the largest."""
    out = _new_stats()
    for p in parts:
        for k, v in p.items():
            out[k] = max(out[k], v) if k == "polish_max_change" else out[k] + v
    return out


def _opts(options: dict) -> str:
    return " ".join(f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in options.items())
