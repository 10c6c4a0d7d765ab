"""Device-variability studies: one sweep point = one run of the one Trainer over device instances.

A ``Point`` names everything a point of a study is: the data and net (a Table 1 net by
default), the training scheme (``mlff``: layered with one global rate; ``mlff-layer``:
layered with per-layer rates, Scellier & Bengio's factor 4 per layer towards the input;
``sw``: small-world with one global rate), the device (a base DeviceModel plus the swept
field overrides, e.g. bits or g_dtod), the backend (the digital surrogate
``DeviceEulerSolver`` or ngspice at crossbar level) and the seeds. Its seeds are trials of
one lockstep Trainer: trial t uses seed t's topology, initial weights and batch order, and
device instance ``instance_seed(device_seed, t)``.

``run_point`` trains a point into its own folder (``<out>/<point name>/``: point.json, one
s<seed>/ folder per trial with config.json, metrics.json/csv and plots, the group's
group/checkpoint.pt) and writes result.json once, atomically, when it is finished. It resumes
from the checkpoint after a kill, and refuses a folder that holds another point.

``LostUpdateMeter`` records, per block and epoch, which updates the devices did not take
(Gammell et al.'s argument: corrections near the input fall below one conductance level).
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from eqprop.config import NUDGE_FORMS, EulerConfig, RunConfig
from eqprop.run_files import RunLock, read_metrics, write_json

SCHEMES = ("mlff", "mlff-layer", "sw")
BACKENDS = ("surrogate", "spice")
LAYER_FACTOR = 4.0  # Scellier & Bengio's per-layer rates (.128, .032, .008, .002): x4 per layer towards the input
RESULT = "result.json"
POINT = "point.json"


@dataclasses.dataclass(frozen=True)
class Point:
    """One point of a variability sweep (validated on construction; JSON round trip).

    device: the base device, a dict of ``circuits.devices.DeviceModel`` fields (a preset read
    once by the caller, so remote workers need no files); overrides: the swept fields, applied
    on top (their names and values label the point). seeds: the trials. lr: the global rate
    (mlff, sw) or the output block's rate (mlff-layer: block l gets lr * layer_factor^(L-2-l)).
    """

    dataset: str = "wine"
    hidden: tuple[int, ...] = (10, 10, 10, 10, 10)
    scheme: str = "mlff"
    device: dict = dataclasses.field(default_factory=dict)
    overrides: dict = dataclasses.field(default_factory=dict)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    device_seed: int = 0
    epochs: int = 10
    lr: float = 0.01
    layer_factor: float = LAYER_FACTOR
    p: float = 0.1
    beta: float = 1.0
    free_steps: int = 1000
    nudged_steps: int = 12
    nudge_form: str = "sequential"
    train_limit: int | None = None
    test_limit: int | None = None
    backend: str = "surrogate"

    def __post_init__(self):
        o = "variability point"
        if self.scheme not in SCHEMES:
            raise ValueError(f"{o}: scheme must be one of {SCHEMES}, got {self.scheme!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"{o}: backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.nudge_form not in NUDGE_FORMS:
            raise ValueError(f"{o}: nudge_form must be one of {NUDGE_FORMS}, got {self.nudge_form!r}")
        if self.backend == "spice" and self.nudge_form != "gradient":
            raise ValueError(f"{o}: the spice backend's nudge is a current (the gradient form): set nudge_form "
                             f"'gradient' (got {self.nudge_form!r})")
        for k in ("device", "overrides"):
            if not isinstance(getattr(self, k), dict):
                raise ValueError(f"{o}: {k} must be a dict of device fields, got {getattr(self, k)!r}")
        seeds = tuple(self.seeds) if isinstance(self.seeds, (list, tuple)) else ()
        if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds) \
                or len(set(seeds)) != len(seeds):
            raise ValueError(f"{o}: seeds must be distinct integers >= 0, at least one, got {list(self.seeds)}")
        object.__setattr__(self, "seeds", seeds)
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.scheme == "mlff-layer" and not self.hidden:
            raise ValueError(f"{o}: per-layer rates need at least one hidden layer")
        if isinstance(self.layer_factor, bool) or not isinstance(self.layer_factor, (int, float)) \
                or not math.isfinite(self.layer_factor) or self.layer_factor <= 0:
            raise ValueError(f"{o}: layer_factor must be > 0, got {self.layer_factor}")
        self.device_model()  # a bad device field fails here, naming the field, before any work
        self.run_configs(Path("."))  # ... and a bad run field (RunConfig validates)
        self.euler()

    # -- what the point runs -------------------------------------------------------------
    def rates(self) -> float | tuple[float, ...]:
        if self.scheme != "mlff-layer":
            return float(self.lr)
        n = len(self.hidden) + 1  # adjacent blocks, input side first
        return tuple(float(self.lr) * self.layer_factor ** (n - 1 - l) for l in range(n))

    def device_model(self):
        import circuits.devices as dv
        fields = {f.name for f in dataclasses.fields(dv.DeviceModel)}
        unknown = sorted((set(self.device) | set(self.overrides)) - fields)
        if unknown:
            raise ValueError(f"variability point: unknown device fields {unknown}; known: {sorted(fields)}")
        return dv.DeviceModel(**{**self.device, **self.overrides})

    def euler(self) -> EulerConfig:
        # the fast engine relaxes all trials of the stack in one call (the lockstep speed-up)
        return EulerConfig(free_steps=self.free_steps, nudged_steps=self.nudged_steps, nudge_form=self.nudge_form,
                           engine="fast")

    def run_configs(self, folder: Path) -> list[RunConfig]:
        topo = "sw" if self.scheme == "sw" else "mlff"
        return [RunConfig(dataset=self.dataset, hidden=self.hidden, topology=topo, p=self.p, lr=self.rates(),
                          beta=self.beta, epochs=self.epochs, seed=s, dtype="float64",
                          train_limit=self.train_limit, test_limit=self.test_limit, out=str(folder / f"s{s}"))
                for s in self.seeds]

    def solver(self):
        dev = self.device_model()
        if self.backend == "spice":
            from circuits.spice_solver import SpiceSolver
            return SpiceSolver(level="crossbar", device=dev, device_seed=self.device_seed, clip_weights=True)
        from circuits.device_solver import DeviceEulerSolver
        return DeviceEulerSolver(dev, self.euler(), device_seed=self.device_seed, clip_weights=True)

    # -- naming and records --------------------------------------------------------------
    @property
    def name(self) -> str:
        """The folder name: data, depth, scheme, the device unless it is the ideal one, and the swept
        device fields (bits 'float' when continuous)."""
        parts = [self.dataset, str(len(self.hidden)), self.scheme]
        if self.device.get("name", "ideal") != "ideal":
            parts.append(str(self.device["name"]))
        for k in sorted(self.overrides):
            v = self.overrides[k]
            parts.append(f"{k}-float" if k == "bits" and v is None else f"{k}-{_short(v)}")
        return "_".join(parts)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"], d["seeds"] = list(self.hidden), list(self.seeds)
        return json.loads(json.dumps(d))  # tuples inside device fields as lists, like the file holds them

    @classmethod
    def from_dict(cls, d: dict) -> "Point":
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"variability point: unknown keys {unknown}")
        return cls(**d)


def _short(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


# -- the lost-update probe ------------------------------------------------------------------
class LostUpdateMeter:
    """Wraps a device solver and counts, per block and epoch, the updates its devices did not take.

    A probe, not a backend: relax, prepare and the update itself are the inner solver's; its
    describe() and checkpoint state are unchanged. Per trial and block (adjacent blocks input
    side first, then all layer-skipping connections as one block "skip"), over the epoch's
    batches, among connections whose requested step lr*dW is non-zero:

    * ``below_step_fraction``: |lr*dW| below one conductance step (``DeviceModel.lsb_weight``):
      the paper's criterion, any backend (0 for a continuous device);
    * ``lost_fraction``: no device of the pair moved. The device model's own count when its
      solver reports one (``DeviceEulerSolver.report()``, per "src-dst" block, saturated weights
      excluded; the skip blocks averaged here); else read from the surrogate's device arrays
      before and after each update (a saturated device then counts; a noisy write changes every
      device, so only devices without write noise are counted exactly). With rounding to the
      nearest level a step below half a level is lost.
    """

    def __init__(self, inner, lsb_weight: float):
        self.inner, self.lsb = inner, float(lsb_weight)
        self.names: list[str] = []
        self._blocks: np.ndarray | None = None  # (T, N, N) block index per connection, -1 where none

    def __getattr__(self, name):  # close, realised_weights, ...: the inner solver's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def describe(self) -> dict:
        return self.inner.describe()

    def prepare(self, network) -> None:
        self.inner.prepare(network)
        topos = network.as_stack().topologies
        L = len(topos[0].sizes)
        self.names = [f"{l}-{l + 1}" for l in range(L - 1)] + ["skip"]
        blocks = []
        for t in topos:
            lay = t.layer_of
            gap = np.abs(lay[:, None] - lay[None, :])
            idx = np.where(gap == 1, np.minimum(lay[:, None], lay[None, :]), np.where(gap >= 2, L - 1, -1))
            blocks.append(np.where(t.mask, idx, -1))
        self._blocks = np.stack(blocks)
        self._reset()

    def _reset(self) -> None:
        T, nb = self._blocks.shape[0], len(self.names)
        self.requested, self.below, self.lost = (np.zeros((T, nb), np.int64) for _ in range(3))

    def relax(self, network, x, u0=None, beta=0.0, target=None):
        return self.inner.relax(network, x, u0, beta, target)

    def apply_update(self, network, dW, db, lr_W, lr_b) -> None:
        arrays = getattr(self.inner, "arrays", None)
        before = [(a.prog.Gp.copy(), a.prog.Gm.copy()) for a in arrays] if arrays else None
        step = (lr_W * dW).detach().cpu().double().numpy().reshape(self._blocks.shape)
        self.inner.apply_update(network, dW, db, lr_W, lr_b)
        nb = len(self.names)
        for t in range(step.shape[0]):
            blk, s = self._blocks[t], np.abs(step[t])
            asked = (blk >= 0) & (s > 0)
            self.requested[t] += np.bincount(blk[asked], minlength=nb)
            self.below[t] += np.bincount(blk[asked & (s < self.lsb)], minlength=nb)
            if before is not None:
                a = arrays[t].prog
                same = (a.Gp == before[t][0]) & (a.Gm == before[t][1])
                self.lost[t] += np.bincount(blk[asked & same], minlength=nb)

    def report(self) -> dict:
        rep = dict(self.inner.report()) if hasattr(self.inner, "report") else {}

        def frac(n):
            return [[None if r == 0 else float(k / r) for k, r in zip(nt, rt)] for nt, rt in zip(n, self.requested)]

        rep["update_blocks"] = [list(self.names)] * len(self.requested)
        rep["below_step_fraction"] = frac(self.below)
        if "lost_fraction" in rep:  # the device model counts it itself (per "src-dst" block): on our blocks
            rep["lost_fraction"] = [self._on_blocks(d) if isinstance(d, dict) else d for d in rep["lost_fraction"]]
        elif getattr(self.inner, "arrays", None):
            rep["lost_fraction"] = frac(self.lost)
        self._reset()  # per epoch; checkpoints fall between epochs, so no counter needs saving
        return rep

    def _on_blocks(self, by_name: dict) -> list[float | None]:
        """A device model's {"l-m": fraction} on this meter's blocks: adjacent ones as they are, the
        skip blocks' fractions averaged (unweighted: the device model reports fractions, not counts)."""
        adj = [by_name.get(n) for n in self.names[:-1]]
        skip = [v for k, v in by_name.items() if v is not None and k not in self.names
                and abs(int(k.split("-")[1]) - int(k.split("-")[0])) >= 2]
        return adj + [float(np.mean(skip)) if skip else None]

    def state_dict(self):
        return self.inner.state_dict() if hasattr(self.inner, "state_dict") else None

    def load_state_dict(self, state, network) -> None:
        self.inner.load_state_dict(state, network)


# -- one point ------------------------------------------------------------------------------
def point_folder(point: Point, out: Path) -> Path:
    return Path(out) / point.name


def finished_result(point: Point, out: Path) -> dict | None:
    """The point's result.json when it holds this point, finished; None when there is none yet.
    A folder holding another point is an error: results are never overwritten."""
    folder = point_folder(point, out)
    rec = folder / POINT
    if rec.exists():
        old, new = _comparable(json.loads(rec.read_text())), _comparable(point.to_dict())
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ValueError(f"{folder} holds another point (differs in {diff}); use another --out or delete it")
    res = folder / RESULT
    return json.loads(res.read_text()) if res.exists() else None


def _comparable(d: dict) -> dict:
    """A point record with its device completed by the model's defaults: a device field added to
    DeviceModel after the point ran (at its default, i.e. off) does not make it another point."""
    import circuits.devices as dv
    try:
        dev = json.loads(json.dumps(dataclasses.asdict(dv.DeviceModel(**d.get("device", {})))))
    except (TypeError, ValueError):  # a field the model no longer has: compare as recorded
        return d
    return {**d, "device": dev}


def run_point(point: Point | dict, out: str | Path, progress: bool = False, until_epoch: int | None = None,
              ) -> dict | None:
    """Train one point (resuming its checkpoint) and return its result (also written to
    <out>/<name>/result.json, once, atomically). Runs single-threaded: sweeps run one point per
    core, and one thread makes the numbers the same on every worker (local or Dask).
    until_epoch: stop after this epoch (checkpointed; returns None): a run in stages."""
    from eqprop.datasets import load_dataset
    from eqprop.trainer import Trainer, TrainingDiverged

    point = Point.from_dict(point) if isinstance(point, dict) else point
    out = Path(out)
    done = finished_result(point, out)
    if done is not None:
        return done
    folder = point_folder(point, out)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with RunLock(folder):
            write_json(folder / POINT, point.to_dict())
            t0 = time.process_time()
            dev = point.device_model()
            solver = LostUpdateMeter(point.solver(), dev.lsb_weight)
            ck = folder / "group" / "checkpoint.pt"  # its own folder: the Trainer locks the checkpoint's folder
            tr = Trainer(point.run_configs(folder), load_dataset(point.dataset), solver=solver, checkpoint=ck)
            try:
                metrics = tr.run(epochs=until_epoch, resume=ck.exists(), progress=progress)
                diverged = None
                if until_epoch is not None and until_epoch < point.epochs:
                    return None
            except TrainingDiverged as e:  # an outcome of this point (e.g. a rate too large), not a crash
                metrics, diverged = tr.metrics(), str(e)
            finally:
                if hasattr(solver, "close"):
                    solver.close()
            result = summarise_point(point, metrics, time.process_time() - t0)
            result["diverged"] = diverged
            write_json(folder / RESULT, result)
            return result
    finally:
        torch.set_num_threads(threads)


def summarise_point(point: Point, metrics: list[dict], cpu_seconds: float) -> dict:
    """What a study reads from a point: per seed the final errors, log-spread, mean r_l, and the
    per-epoch lost / below-step fractions per block; means and population std over seeds."""
    seeds = []
    for m in metrics:
        last = m["epochs"][-1] if m["epochs"] else {"train_error": math.nan, "test_error": math.nan}
        seeds.append({
            "seed": m["config"]["seed"], "train_error": last["train_error"], "test_error": last["test_error"],
            "log_spread": m["log_spread"], "mean_rms": m["mean_rms"], "actual_p": m["actual_p"],
            "realised_asymmetry": [e["solver"].get("realised_asymmetry") for e in m["epochs"]],
            "lost_fraction": [e["solver"].get("lost_fraction") for e in m["epochs"]],
            "below_step_fraction": [e["solver"].get("below_step_fraction") for e in m["epochs"]],
        })
    blocks = metrics[0]["epochs"][-1]["solver"].get("update_blocks", []) if metrics[0]["epochs"] else []
    res = {"name": point.name, "point": point.to_dict(), "blocks": blocks, "seeds": seeds,
           "lsb_weight": point.device_model().lsb_weight, "cpu_seconds_this_call": cpu_seconds}
    for k in ("train_error", "test_error", "log_spread"):
        vals = [s[k] for s in seeds]
        finite = [v for v in vals if math.isfinite(v)]
        res[k] = float(np.mean(vals))
        res[k + "_std"] = float(np.std(finite)) if finite else float("nan")
    for k in ("lost_fraction", "below_step_fraction"):
        res[k + "_by_block"] = mean_fraction(seeds, k)
    return res


def mean_fraction(seeds: list[dict], key: str) -> list[float | None] | None:
    """Per block, the fraction averaged over every epoch and seed (None where no update was asked)."""
    rows = [blk for s in seeds for blk in s[key] if blk is not None]
    if not rows:
        return None
    a = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float)
    have = ~np.isnan(a).all(0)
    m = np.zeros(a.shape[1])
    m[have] = np.nanmean(a[:, have], 0)
    return [float(v) if h else None for v, h in zip(m, have)]


def read_point_metrics(point: Point, out: Path) -> list[dict]:
    return [read_metrics(c.out + "/metrics.json") for c in point.run_configs(point_folder(point, out))]
