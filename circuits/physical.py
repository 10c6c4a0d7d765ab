"""PhysicalModel: the non-idealities of the ``physical`` circuit level, each with a unit.

Every field defaults to "off" (the ideal element); a model with every field off makes
the physical netlist the crossbar netlist with ideal neurons, i.e. the ideal level to
solver precision (tests/test_physical.py). Presets live in spice_models/physical_*.toml
and cite where their numbers come from. ``netlist_gen.blocks_physical`` receives the
model as a plain dict (``to_netlist()``): netlist_gen never imports circuits.
"""
from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from pathlib import Path

PRESET_DIR = Path(__file__).resolve().parent.parent / "spice_models"
PRESET_PREFIX = "physical_"
ACTIVATIONS = ("ideal", "diode", "subckt")
PIN_ROLES = ("state", "activation", "ground", "input", "bias", "nudge")  # blocks_physical.PIN_NODES
NUDGES = ("current", "conductance")


@dataclasses.dataclass(frozen=True)
class PhysicalModel:
    """Non-idealities of the physical level (docs/physical.md has the circuit of each).

    Attributes:
        name: label (a preset's name without the ``physical_`` prefix).
        activation: "ideal" (behavioural min/max clamp to [0, 1] V) or "diode": the
            neuron node u drives, through ``diode_rs``, a node clamped by two Shockley
            diodes to the rails ``v_low``/``v_high``; a unity buffer copies it to rho.
        diode_is: diode saturation current, A.
        diode_n: diode ideality factor (unitless, >= 1 for real junctions).
        diode_rs: series resistance from u to the clamp node, Ohm.
        v_low, v_high: clamp rails, V (a diode conducts past a rail by its forward drop,
            so rails at 0 and 1 V give a clamp slightly wider than [0, 1]).
        tia_gain: DC open-loop gain of each column's transimpedance amplifier, V/V (inf:
            ideal virtual ground). Feedback resistor 1/g_unit, so the column node sits at
            I_column / (g_unit (1 + tia_gain)) instead of 0 V.
        tia_gbw: the TIA op-amp's gain-bandwidth product, Hz (inf: no pole); needs a
            finite tia_gain.
        tia_swing: the TIA output saturates at +-tia_swing, V (inf: none); finite gain.
        tia_offset: TIA input offset voltage, V; finite gain.
        r_row, r_col: wire resistance per crossbar cell along rows (driven by rho of
            the source neuron) and along columns (into the TIA), Ohm.
        c_wire: parasitic capacitance of every wire node (row and column taps, TIA
            inputs), F; needs wire resistance or a finite TIA gain (nodes held by ideal
            sources carry no charge).
        read_v0: device read nonlinearity I = G V0 sinh(V / V0), V0 in V (inf: linear).
        neuron_lib, neuron_subckt, neuron_pins: activation "subckt": the user's ``.subckt``
            ``neuron_subckt`` in the file ``neuron_lib`` replaces the clamp of every neuron; its
            pins in order, each a role of PIN_ROLES: "state" (node u, required), "activation"
            (node rho, required: it drives the devices), "ground", and optionally "input",
            "bias", "nudge" (those currents then enter that pin instead of u). The node
            capacitor and leak stay outside (the solver sets u's initial condition on them).
            docs/tutorial-subckt.md.
        nudge: "current" (the ideal level's: 2 beta g0 (y_d - rho(u)), a VCCS on rho) or
            "conductance": a conductance 2 beta g0 from node u to a target voltage y_d,
            written in its Norton form (same element names, altered in place).
        source, notes: where the numbers come from; caveats.
    """

    name: str = "off"
    activation: str = "ideal"
    diode_is: float = 1e-14
    diode_n: float = 1.0
    diode_rs: float = 1e4
    v_low: float = 0.0
    v_high: float = 1.0
    tia_gain: float = math.inf
    tia_gbw: float = math.inf
    tia_swing: float = math.inf
    tia_offset: float = 0.0
    r_row: float = 0.0
    r_col: float = 0.0
    c_wire: float = 0.0
    read_v0: float = math.inf
    nudge: str = "current"
    neuron_lib: str = ""
    neuron_subckt: str = ""
    neuron_pins: tuple = ()
    source: str = ""
    notes: str = ""

    def __post_init__(self):
        for k in ("name", "source", "notes"):
            if not isinstance(getattr(self, k), str):
                raise ValueError(f"physical model: {k} must be a string, got {getattr(self, k)!r}")
        o = f"physical model {self.name}"
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"{o}: activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        object.__setattr__(self, "neuron_pins", tuple(self.neuron_pins))
        if self.activation == "subckt":
            self._check_subckt(o)
        elif self.neuron_lib or self.neuron_subckt or self.neuron_pins:
            raise ValueError(f"{o}: neuron_lib/neuron_subckt/neuron_pins need activation 'subckt'")
        if self.nudge not in NUDGES:
            raise ValueError(f"{o}: nudge must be one of {NUDGES}, got {self.nudge!r}")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type == "float" and (isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v)):
                raise ValueError(f"{o}: {f.name} must be a number ({_UNITS[f.name]}), got {v!r}")
        for k in ("diode_is", "diode_n", "diode_rs", "tia_gain", "tia_gbw", "tia_swing", "read_v0"):
            if not getattr(self, k) > 0:
                raise ValueError(f"{o}: {k} must be > 0 ({_UNITS[k]}), got {getattr(self, k)!r}")
        for k in ("r_row", "r_col", "c_wire"):
            if not (math.isfinite(getattr(self, k)) and getattr(self, k) >= 0):
                raise ValueError(f"{o}: {k} must be a finite number >= 0 ({_UNITS[k]}), got {getattr(self, k)!r}")
        for k in ("diode_is", "diode_n", "diode_rs", "v_low", "v_high", "tia_offset"):
            if not math.isfinite(getattr(self, k)):
                raise ValueError(f"{o}: {k} must be finite ({_UNITS[k]}), got {getattr(self, k)!r}")
        if not self.v_low < self.v_high:
            raise ValueError(f"{o}: need v_low < v_high (V), got {self.v_low}, {self.v_high}")
        if math.isinf(self.tia_gain) and (math.isfinite(self.tia_gbw) or math.isfinite(self.tia_swing)
                                          or self.tia_offset != 0):
            raise ValueError(f"{o}: tia_gbw, tia_swing and tia_offset are properties of the TIA op-amp macro-model, "
                             f"which needs a finite tia_gain (V/V), e.g. 1e5")
        if self.c_wire > 0 and self.r_row == 0 and self.r_col == 0 and math.isinf(self.tia_gain):
            raise ValueError(f"{o}: c_wire > 0 needs r_row or r_col > 0 or a finite tia_gain: with ideal wires and an "
                             f"ideal virtual ground every wire node is held by an ideal source and carries no charge")

    def _check_subckt(self, o: str) -> None:
        """The user neuron: a readable file holding .subckt <name> with one pin per declared role."""
        if not (isinstance(self.neuron_lib, str) and self.neuron_lib and isinstance(self.neuron_subckt, str)
                and self.neuron_subckt):
            raise ValueError(f"{o}: activation 'subckt' needs neuron_lib (a .lib file) and neuron_subckt (its name)")
        bad = [r for r in self.neuron_pins if r not in PIN_ROLES]
        if bad or len(set(self.neuron_pins)) != len(self.neuron_pins) or "state" not in self.neuron_pins \
                or "activation" not in self.neuron_pins:
            raise ValueError(f"{o}: neuron_pins must name each pin's role once, from {PIN_ROLES}, with 'state' and "
                             f"'activation'; got {self.neuron_pins!r}")
        path = Path(self.neuron_lib).expanduser().resolve()
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{o}: neuron_lib {self.neuron_lib}: cannot read it ({e})") from None
        object.__setattr__(self, "neuron_lib", str(path))
        lines = re.sub(r"\n\s*\+", " ", text).splitlines()  # + continuation lines
        heads = [l.split() for l in lines if l.strip().lower().startswith(".subckt")]
        head = next((h for h in heads if len(h) > 1 and h[1].lower() == self.neuron_subckt.lower()), None)
        if head is None:
            raise ValueError(f"{o}: {path} has no .subckt {self.neuron_subckt} (it has: "
                             f"{', '.join(h[1] for h in heads if len(h) > 1) or 'none'})")
        pins = [t for t in head[2:] if "=" not in t and t.lower() != "params:"]
        if len(pins) != len(self.neuron_pins):
            raise ValueError(f"{o}: .subckt {self.neuron_subckt} in {path} has {len(pins)} pins ({' '.join(pins)}), "
                             f"neuron_pins declares {len(self.neuron_pins)} ({' '.join(self.neuron_pins)})")

    @property
    def is_off(self) -> bool:
        """Every non-ideality off: the circuit equals the ideal level (to solver precision)."""
        return self.off_fields() == ()

    def off_fields(self) -> tuple[str, ...]:
        """The fields that differ from their "off" value (the non-idealities in effect)."""
        off = OFF
        keys = [k for k in NONIDEALITIES if getattr(self, k) != getattr(off, k)]
        if self.activation != "diode":  # diode parameters act only with the diode activation
            keys = [k for k in keys if not k.startswith("diode_") and k not in ("v_low", "v_high")]
        return tuple(keys)

    def to_netlist(self) -> dict:
        """The plain dict netlist_gen.blocks_physical takes."""
        return {k: getattr(self, k) for k in NONIDEALITIES}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["neuron_pins"] = list(self.neuron_pins)  # as JSON gives it back (a resumed run compares them)
        return d


_UNITS = {"diode_is": "A", "diode_n": "unitless", "diode_rs": "Ohm", "v_low": "V", "v_high": "V",
          "tia_gain": "V/V", "tia_gbw": "Hz", "tia_swing": "V", "tia_offset": "V", "r_row": "Ohm per cell",
          "r_col": "Ohm per cell", "c_wire": "F per wire node", "read_v0": "V"}
NONIDEALITIES = ("activation", *_UNITS, "nudge", "neuron_lib", "neuron_subckt", "neuron_pins")
OFF = PhysicalModel()
UNITS = dict(_UNITS)


def list_presets() -> list[str]:
    return sorted(p.stem[len(PRESET_PREFIX):] for p in PRESET_DIR.glob(f"{PRESET_PREFIX}*.toml"))


def load_physical(name: str = "off", **overrides) -> PhysicalModel:
    """spice_models/physical_<name>.toml with fields replaced by ``overrides``; "off": all ideal."""
    if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"no physical preset {name!r} (a preset is a name, not a path); available: off, "
                         f"{', '.join(list_presets())}")
    data: dict = {}
    if name != "off":
        path = PRESET_DIR / f"{PRESET_PREFIX}{name}.toml"
        if not path.is_file():
            raise ValueError(f"no physical preset {name!r} ({path.name}); available: off, {', '.join(list_presets())}")
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"physical preset {path}: not valid TOML ({e})") from None
        data.pop("g0", None), data.pop("c", None)  # the preset's units: SpiceConfig's fields (see preset_units)
        if data.get("neuron_lib"):  # a preset's user neuron lies next to it
            data["neuron_lib"] = str(PRESET_DIR / Path(data["neuron_lib"]).expanduser())
    fields = {f.name for f in dataclasses.fields(PhysicalModel)}
    unknown = (set(data) | set(overrides)) - fields
    if unknown:
        raise ValueError(f"physical preset {name}: unknown fields {sorted(unknown)}; known: {sorted(fields)}")
    data.setdefault("name", name)
    data.update(overrides)
    return PhysicalModel(**data)


def preset_units(name: str) -> dict:
    """The g0 (S) and c (F) a preset recommends (its real units), {} if it gives none."""
    if name == "off":
        return {}
    path = PRESET_DIR / f"{PRESET_PREFIX}{name}.toml"
    if not path.is_file():
        load_physical(name)  # raises the named error
    with open(path, "rb") as f:
        data = tomllib.load(f)
    return {k: float(data[k]) for k in ("g0", "c") if k in data}
