"""SpiceConfig: how ngspice finds a network's equilibria (recorded in config.json)."""
from __future__ import annotations

import dataclasses
import math

from netlist_gen import DEFAULT_OPTIONS

from .devices import DeviceModel, load_device
from .physical import PhysicalModel, load_physical
from .settle import ON_UNSETTLED

METHODS = ("tran", "op", "tran+op")
LEVELS = ("ideal", "crossbar", "physical")
UPDATES = ("alter", "renetlist")
MATRIX_SOLVERS = ("auto", "klu", "sparse")
POLISHES = ("op", "cold")
INTEGRATIONS = ("trap", "gear")  # ngspice's integration methods for the loose (settled) transients
NUDGED_PHASES = ("settled", "timed")  # the nudged phase: an equilibrium, or the nudge held for t_nudged
# Transient tolerances. "tran" must itself be within 1e-6 of the fixed point after the
# settle time (reltol 1e-4 measured 2e-13 on 20-50-50-10); "tran+op" only needs the
# basin, and ngspice's default-level tolerances are 3x faster there.
DEFAULT_TRTOL = 7.0  # ngspice's truncation-error overestimation factor (cktinit.c)
NGSPICE_STEPS = 50  # ngspice's maximum transient step is min(tstep, tstop / this) unless given
TRAN_OPTIONS = {"tran": {"reltol": 1e-4, "abstol": 1e-10, "vntol": 1e-7},
                "tran+op": {"reltol": 1e-3, "abstol": 1e-9, "vntol": 1e-6}}


# ngspice's .options names (its option table, cktsopt.c / the manual's "Simulator Variables"): ngspice
# ignores an unknown name without a word, so a misspelt tolerance would silently not apply
NGSPICE_OPTIONS = frozenset("""
abstol reltol vntol chgtol trtol gmin gshunt cshunt rshunt rseries pivtol pivrel tnom temp itl1 itl2 itl3 itl4 itl5
itl6 srcsteps gminsteps gminfactor noopiter maxord method xmu bypass maxopalter maxevtiter noopalter ramptime
convlimit convstep convabsstep autopartial indverbosity trytocompact badmos3 keepopinfo copynodesets nodedamping
absdv reldv noopac epsmin oldlimit interp klu sparse savecurrents seed seedinfo acct noacct list nomod nopage node
opts noinit numdgt cptime limtim limpts lvlcod lvltim defl defw defad defas defm minbreak scale warn maxwarns
norefvalue autostop strict_errorhandling
""".split())
# options that are tolerances, conductances or limits: positive numbers
POSITIVE_OPTIONS = frozenset("abstol reltol vntol chgtol trtol pivtol pivrel xmu epsmin".split())


def check_options(what: str, options) -> None:
    """A table of ngspice .options: known names, values that are numbers, true/false or words."""
    if not isinstance(options, dict):
        raise ValueError(f"{what} must be a table of ngspice options (name = value), got {options!r}")
    for name, value in options.items():
        if not isinstance(name, str) or name.lower() not in NGSPICE_OPTIONS:
            raise ValueError(f"{what}: {name!r} is not an ngspice option (ngspice would ignore it silently); "
                             f"known: {' '.join(sorted(NGSPICE_OPTIONS))}")
        if isinstance(value, bool) or (isinstance(value, str) and value.replace("_", "").isalnum()):
            continue
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{what}: {name} must be a finite number, true/false or a word, got {value!r}")
        if name.lower() in POSITIVE_OPTIONS and value <= 0:
            raise ValueError(f"{what}: {name} must be > 0, got {value!r}")



@dataclasses.dataclass(frozen=True)
class SpiceConfig:
    """Settings of ``SpiceSolver``; frozen, validated once.

    method: "tran+op" (a loose transient picks the basin the dynamics reach, a warm .op
        polishes it to the exact fixed point; default), "tran" (the transient only) or "op"
        (.op warm-started by .nodeset from u0; cold without one).
    polish: how "tran+op" reaches the exact fixed point from the loose transient's end: "op" (the
        netlist reloaded with .nodeset lines there, then .op: a parse per example) or "cold" (.op in
        the plain netlist reloaded, Newton from ngspice's own start, kept when it lands within
        spice_batching.COLD_TOL of the transient's end, else the "op" reload; batched path only,
        which then also stores the transient at tstep only, ngspice's interp).
    rest_tol: "tran+op" skips the polish where the settled transient's end is at rest: its
        max |du/dt| over the settle window below rest_tol (V per tau; 0: always polish). The
        transient's own Newton solves then already stand on the fixed point (this circuit is
        piecewise linear: a step that moves nothing solves it): on iris 97.8 % of the free
        transients, where the polish moved the state by <= 7.2e-10 V (docs/results.md, session 13).
        Not at level "physical" (not piecewise linear; ``rest_below``).
    level: "ideal" (behavioural transconductances), "crossbar" (device pairs) or "physical"
        (device pairs plus the non-idealities of ``physical``).
    physical: level "physical": a PhysicalModel or a preset name (spice_models/physical_<name>.toml;
        "off": every non-ideality off, which equals the ideal level).
    measure: record each transient's settling time (s, to settle_v) and the energy the sources
        deliver (J) per example and phase (``SpiceSolver.report()``; circuits/physical_measure.py).
    settle_v: the settling tolerance of ``measure``: max |rho(t) - rho(end)| (V).
    device: crossbar device, a preset name (spice_models/<name>.toml), a device TOML path or a DeviceModel.
    device_seed: seed of the device instances (trial t: ``devices.instance_seed(seed, t)``).
    clamp: stiff penalty clamp gain keeping u in [0, 1] like the clipped Euler state (0: none).
    t_free, t_nudged: transient length in tau = c/g0 (t_nudged None: t_free; from u = 0 a
        layered net needs ~300 tau). tstep: print step in tau.
    free_integration: ngspice's integration method for the transients that only pick a basin (those
        ended by a settle check and the polish): "trap" (ngspice's default) or "gear" (BDF, damps the
        stiff clamp's ringing that holds trap's steps back at a large tstep: docs/spice.md). A timed
        nudge, read where it ends, keeps trap.
    nudged_phase: "settled" (the nudged equilibrium, as the free one: transient, settle check,
        polish) or "timed" (the nudge held for exactly t_nudged tau from the free state, then read:
        no settle check, no polish; the circuit analogue of the Euler reference's nudged_steps x eps,
        e.g. 12 x 0.5 = 6 tau). With beta 0.5 on iris the settled nudged state trains worse, in
        the Euler reference too (docs/training.md).
    max_step: the settled transients' maximum step in tau (None: ngspice's min(tstep, transient/50)).
        With gear on a piecewise-linear circuit a larger one lets the steps grow once the state is
        at rest: the same fixed points (to 3e-11 on iris), fewer steps (docs/spice.md, session 14).
    settle_trtol: ngspice's trtol (how far the local truncation error estimate may be trusted, default
        7) for the settled transients (a timed nudge has timed_trtol). Larger lets gear's steps grow
        where only the noise of Newton's answers makes the error estimate nonzero: on iris 50 gives the
        same fixed points (to 3e-11) in ~1.3x less worker CPU (docs/spice.md, session 14).
    timed_steps: a timed nudge's maximum step is t_nudged / timed_steps (and at most tstep);
        ngspice's default is 50 steps. On iris 10 steps change the weight update by <= 9e-4
        (relative) from a 1000-step solve, 50 steps by <= 1.3e-4 (docs/spice.md, session 14).
    timed_trtol: ngspice's trtol for the timed nudge (default 7). Its steps are set by the truncation
        error, not by timed_steps: on iris 4-10-3 in training 50 takes 60 Newton iterations per nudge
        instead of 102 (24 % less worker CPU) and moves a batch's update by 6.7e-4 of itself (median)
        from a 1000-step solve, 7 by 5.0e-4 (docs/spice.md, session 15).
    clip_weights: crossbar: saturate |W| > w_max at the device range instead of raising.
    settle_tol: max |du/dt| (V per tau) at a transient's end to call it settled;
        max_extend: further transients of the same length while it is not; on_unsettled:
        then "raise" (a SimulationError with ngspice's log), "warn" (go on; counted in
        ``last_stats["unsettled"]`` and reported by spice-check / per epoch) or "polish" (method
        tran+op: where the last three windows' moves shrink geometrically along one direction, the
        .op polish's fixed point is kept if it is their extrapolated limit, counted as ``slow``;
        otherwise raise as "raise" does: circuits.settle, docs/spice.md).
    options: the netlist's .options (the .op tolerances); tran_options: overrides
        TRAN_OPTIONS[method]. update: weight changes by "alter" or by a new netlist.
    workers: parallel ngspice processes (each trial gets max(1, workers // T)); recycle_after:
        solves after which a worker process is replaced by a fresh one (libngspice's memory
        grows ~1-1.8 MB per 1,000 solves and is never returned; docs/reliability.md).
    matrix_solver: ngspice's linear solver per circuit: "klu" (needs an ngspice built with KLU,
        e.g. 46 from Debian's bookworm-backports), "sparse" (Sparse 1.3, every ngspice) or "auto"
        (KLU when this ngspice honours it and a short measurement on the circuit finds it faster;
        the choice is in ``SpiceSolver.report()`` and ``last_stats``; circuits beyond Sparse's size
        limits take KLU unmeasured).
    timeout: seconds per ngspice call. g0 (S), c (F): unit conductance and node capacitance.
    fold_inputs: inputs as bias currents (40x fewer elements on 784-input nets) or as
        voltage sources with every input synapse. force: beyond the size guard.
    """

    method: str = "tran+op"
    polish: str = "cold"
    rest_tol: float = 1e-10
    level: str = "ideal"
    device: str | DeviceModel = "ideal"
    device_seed: int = 0
    physical: str | PhysicalModel = "off"
    measure: bool = False
    settle_v: float = 1e-3
    clamp: float = 1e3
    t_free: float = 300.0
    t_nudged: float | None = None
    nudged_phase: str = "settled"
    tstep: float = 1.0
    free_integration: str = "trap"
    max_step: float | None = None
    settle_trtol: float = DEFAULT_TRTOL
    timed_steps: int = NGSPICE_STEPS
    timed_trtol: float = DEFAULT_TRTOL
    clip_weights: bool = False
    settle_tol: float = 1e-5
    max_extend: int = 10
    on_unsettled: str = "raise"
    options: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_OPTIONS))
    tran_options: dict | None = None
    update: str = "alter"
    workers: int = 1
    recycle_after: int = 5000
    matrix_solver: str = "auto"
    timeout: float = 600.0
    g0: float = 1.0
    c: float = 1.0
    fold_inputs: bool = True
    force: bool = False

    def __post_init__(self):
        o = "spice config"
        if self.method not in METHODS:
            raise ValueError(f"{o}: method must be one of {METHODS}, got {self.method!r}")
        if self.polish not in POLISHES:
            raise ValueError(f"{o}: polish must be one of {POLISHES}, got {self.polish!r}")
        if self.level not in LEVELS:
            raise ValueError(f"{o}: level must be one of {LEVELS}, got {self.level!r}")
        if self.on_unsettled not in ON_UNSETTLED:
            raise ValueError(f"{o}: on_unsettled must be one of {ON_UNSETTLED}, got {self.on_unsettled!r}")
        if self.on_unsettled == "polish" and self.method != "tran+op":
            raise ValueError(f"{o}: on_unsettled 'polish' finishes a slow transient with the .op polish, which only "
                             f"method 'tran+op' runs; method is {self.method!r}")
        if self.matrix_solver not in MATRIX_SOLVERS:
            raise ValueError(f"{o}: matrix_solver must be one of {MATRIX_SOLVERS}, got {self.matrix_solver!r}")
        if self.options is not None and any(str(k).lower() in ("klu", "sparse") for k in self.options):
            raise ValueError(f"{o}: options: choose the matrix solver by matrix_solver (auto, klu, sparse), not by "
                             f"a klu/sparse option")
        if self.free_integration not in INTEGRATIONS:
            raise ValueError(f"{o}: free_integration must be one of {INTEGRATIONS}, got {self.free_integration!r}")
        if self.nudged_phase not in NUDGED_PHASES:
            raise ValueError(f"{o}: nudged_phase must be one of {NUDGED_PHASES}, got {self.nudged_phase!r}")
        if self.nudged_phase == "timed" and self.method == "op":
            raise ValueError(f"{o}: nudged_phase 'timed' holds the nudge for t_nudged tau of transient; method 'op' "
                             f"has no transient: use method tran+op or tran, or nudged_phase 'settled' "
                             f"(--nudged-phase settled)")
        if self.update not in UPDATES:
            raise ValueError(f"{o}: update must be one of {UPDATES}, got {self.update!r}")
        if isinstance(self.device, str):  # a preset name or a device TOML file (*.toml)
            object.__setattr__(self, "device", load_device(self.device))
        if isinstance(self.physical, str):
            object.__setattr__(self, "physical", load_physical(self.physical))
        elif isinstance(self.physical, dict):  # from a TOML [spice.physical] table or a config.json
            object.__setattr__(self, "physical", PhysicalModel(**self.physical))
        if not isinstance(self.physical, PhysicalModel):
            raise ValueError(f"{o}: physical must be a preset name (spice_models/physical_*.toml, or 'off') or a "
                             f"PhysicalModel, got {self.physical!r} (on the command line --physical-set FIELD=VALUE)")
        if self.level != "physical" and not self.physical.is_off:
            raise ValueError(f"{o}: physical non-idealities ({', '.join(self.physical.off_fields())}) need level "
                             f"'physical', got level {self.level!r}")
        if not isinstance(self.device, DeviceModel):
            raise ValueError(f"{o}: device must be a preset name (spice_models/*.toml) or a DeviceModel, got "
                             f"{self.device!r} (to change a preset's fields: load_preset(name, field=value), on the "
                             f"command line --device-set field=value)")
        for k in ("clip_weights", "fold_inputs", "force", "measure"):
            if not isinstance(getattr(self, k), bool):
                raise ValueError(f"{o}: {k} must be true or false, got {getattr(self, k)!r}")
        if self.options is not None:  # None: no .options line
            check_options(f"{o}: options", self.options)
        if self.tran_options is not None:
            check_options(f"{o}: tran_options", self.tran_options)
        if self.t_nudged is None:
            # 100 tau was measured too short: on 1 of 30 random nets (spice-check seed 24,
            # 20-25-25-25-5) the .op polish then jumped to another nudged fixed point
            object.__setattr__(self, "t_nudged", self.t_free)
        for k in ("t_free", "t_nudged", "tstep", "timeout", "g0", "c", "settle_tol", "settle_v") + (
                () if self.max_step is None else ("max_step",)):  # max_step None: ngspice's default
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{o}: {k} must be a positive number, got {v!r}")
        for k in ("settle_trtol", "timed_trtol"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v >= 1):
                raise ValueError(f"{o}: {k} must be a number >= 1 (ngspice's trtol; default 7), got {v!r}")
            if v != DEFAULT_TRTOL and any(str(t).lower() == "trtol" for t in self.tran_options or {}):
                raise ValueError(f"{o}: trtol given twice, by {k} and in tran_options: keep one")
        if isinstance(self.rest_tol, bool) or not isinstance(self.rest_tol, (int, float)) or not (
                math.isfinite(self.rest_tol) and 0 <= self.rest_tol < self.settle_tol):
            raise ValueError(f"{o}: rest_tol must be a number >= 0 and below settle_tol ({self.settle_tol:g}: a state "
                             f"at rest is a settled one), got {self.rest_tol!r}")
        if isinstance(self.clamp, bool) or not isinstance(self.clamp, (int, float)) or not (
                math.isfinite(self.clamp) and self.clamp >= 0):
            raise ValueError(f"{o}: clamp must be a number >= 0, got {self.clamp!r}")
        for k in ("workers", "max_extend", "device_seed", "recycle_after", "timed_steps"):
            v = getattr(self, k)
            low = 1 if k in ("workers", "recycle_after", "timed_steps") else 0
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{o}: {k} must be an integer >= {low}, got {v!r}")

    @property
    def rest_below(self) -> float:
        """The rest_tol in force: 0 (always polish) at level "physical", whose diodes and amplifiers are not
        piecewise linear (a transient's Newton stops at its loose tolerances there, not on the fixed point)."""
        return 0.0 if self.level == "physical" else float(self.rest_tol)

    @property
    def devices(self) -> bool:
        """Whether this level's synapses are device pairs (one device instance per trial)."""
        return self.level in ("crossbar", "physical")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["device"] = dataclasses.asdict(self.device)
        d["physical"] = self.physical.to_dict()
        return d
