"""`eqprop variability`: argument parsing and printing for the device-variability sweeps.

A sweep is a grid of points (experiments.variability.Point): the fixed settings come from
flags or a TOML file's [point] table, the device from --preset / --device-toml (or [device]),
and the axes from --dataset/--scheme/--bits/--set (or [sweep]). --study NAME runs a named
study instead (experiments/variability_<name>.py). One folder per point; re-runs skip
finished points and resume killed ones from their checkpoints.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import itertools
import tomllib
from pathlib import Path

from .checks import nonneg_int, positive_float, positive_int, probability, results_folder

STUDIES = ("bits", "spread", "asymmetry")
POINT_AXES = ("dataset", "scheme", "lr", "p", "layer_factor")  # Point fields a sweep may vary
NO_BITS = ("float", "none", "inf")
ALL = "all"  # --train-limit / --test-limit all: every example
# flags a named study takes when its points() has the parameter (flag -> parameter); others are refused
STUDY_OPTIONS = {"dataset": "datasets", "scheme": "schemes", "bits": "bits", "hidden": "hidden", "lr": "lr",
                 "free_steps": "free_steps", "train_limit": "train_limit", "test_limit": "test_limit"}
GRID_FLAGS = ("sweep", "preset", "device_toml", "dataset", "scheme", "bits", "set", "hidden", "lr", "layer_factor", "p",
              "beta", "free_steps", "nudged_steps", "nudge_form", "train_limit", "test_limit", "backend", "device_seed")


def limit_arg(text: str):
    """--train-limit / --test-limit: a count >= 1, or 'all'."""
    if text.strip().lower() == ALL:
        return ALL
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 or '{ALL}', got {text!r}") from None


def parse_value(text: str):
    """A flag or TOML list item: int, float, 'float'/'none' (a continuous device) or text."""
    if not isinstance(text, str):
        return text
    t = text.strip()
    if t.lower() in NO_BITS:
        return None
    for kind in (int, float):
        try:
            return kind(t)
        except ValueError:
            pass
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    return t


def split_list(text: str, flag: str) -> list:
    items = [s for s in text.split(",")]
    if not text.strip() or any(not s.strip() for s in items):
        raise ValueError(f"{flag}: give a comma-separated list without empty items, got {text!r}")
    return [parse_value(s) for s in items]


def read_sweep_toml(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--sweep: no such file: {p}")
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--sweep {p}: not valid TOML ({e})") from None
    unknown = sorted(set(data) - {"point", "device", "sweep"})
    if unknown:
        raise ValueError(f"--sweep {p}: unknown tables {unknown}; known: [point], [device], [sweep]")
    for k in data:
        if not isinstance(data[k], dict):
            raise ValueError(f"--sweep {p}: {k} must be a table ([{k}])")
    for k, v in data.get("sweep", {}).items():
        if not isinstance(v, list) or not v:
            raise ValueError(f"--sweep {p}: [sweep] {k} must be a non-empty list, got {v!r}")
    return data


def base_device(preset: str | None, device_toml: str | None, table: dict) -> dict:
    """The base device's fields: a preset, a device TOML file, or the sweep file's [device] table."""
    import circuits.devices as dv

    if device_toml:
        p = Path(device_toml)
        if not p.is_file():
            raise FileNotFoundError(f"--device-toml: no such file: {p}")
        try:
            return dataclasses.asdict(dv.load_device_file(p))
        except ValueError as e:  # the message names the file and the field
            raise ValueError(f"--device-toml: {e}") from None
    table = dict(table)
    name = preset or table.pop("preset", None) or "ideal"
    return dataclasses.asdict(dv.load_preset(name, **table))


def build_points(args) -> list:
    from experiments.variability import Point

    toml = read_sweep_toml(args.sweep) if args.sweep else {}
    fixed = dict(toml.get("point", {}))
    axes = {k: list(v) for k, v in toml.get("sweep", {}).items()}
    for flag, key in (("dataset", "dataset"), ("scheme", "scheme")):
        if getattr(args, flag):
            axes[key] = split_list(getattr(args, flag), f"--{flag}")
    if args.bits:
        axes["bits"] = split_list(args.bits, "--bits")
    for item in args.set or []:
        field, eq, values = item.partition("=")
        if not eq or not field.strip():
            raise ValueError(f"--set: give FIELD=V1,V2,..., got {item!r}")
        axes[field.strip()] = split_list(values, f"--set {field.strip()}")
    for k in ("hidden", "epochs", "lr", "layer_factor", "p", "beta", "free_steps", "nudged_steps", "nudge_form",
              "train_limit", "test_limit", "backend", "device_seed"):
        v = getattr(args, k)
        if v is not None:
            fixed[k] = None if v == ALL else v
    if args.seeds is not None:
        fixed["seeds"] = list(range(args.seeds))
    elif isinstance(fixed.get("seeds"), int):
        fixed["seeds"] = list(range(fixed["seeds"]))
    if isinstance(fixed.get("hidden"), str):
        fixed["hidden"] = [int(h) for h in split_list(fixed["hidden"], "--hidden")]
    if fixed.get("backend") == "spice":
        fixed.setdefault("nudge_form", "gradient")  # the circuit's nudge
    device = base_device(args.preset, args.device_toml, toml.get("device", {}))
    dev_fields = set(device)
    bad = sorted(k for k in axes if k not in POINT_AXES and k not in dev_fields)
    if bad:
        raise ValueError(f"cannot sweep {bad}: a sweep varies {list(POINT_AXES)} or device fields "
                         f"{sorted(dev_fields - {'name', 'source', 'notes'})}")
    bad = sorted(k for k in fixed if k in ("device", "overrides"))
    if bad:
        raise ValueError(f"[point] cannot set {bad}: give the device in [device] and the swept fields in [sweep]")
    names = list(axes)
    points = []
    for combo in itertools.product(*(axes[k] for k in names)) if names else [()]:
        point_fields = {k: v for k, v in zip(names, combo) if k in POINT_AXES}
        overrides = {k: v for k, v in zip(names, combo) if k not in POINT_AXES}
        try:
            points.append(Point(**{**fixed, **point_fields}, device=device, overrides=overrides))
        except TypeError as e:
            raise ValueError(f"sweep: {e}") from None
    names_seen = [p.name for p in points]
    if len(set(names_seen)) != len(names_seen):
        raise ValueError("sweep: two points get the same folder name (a field set twice?)")
    return points


def study_options(args, study) -> dict:
    """A named study's points() keywords: --seeds, --epochs and the STUDY_OPTIONS flags its points()
    takes (e.g. the bits study at another rate or scale); any other sweep flag is refused, named."""
    import inspect

    params = inspect.signature(study.points).parameters
    kw = {k: getattr(args, k) for k in ("seeds", "epochs") if getattr(args, k) is not None}
    drop = []
    for flag in (f for f in GRID_FLAGS if getattr(args, f)):
        if STUDY_OPTIONS.get(flag) not in params:
            drop.append("--" + flag.replace("_", "-"))
            continue
        v = getattr(args, flag)
        if flag in ("dataset", "scheme", "bits"):
            v = split_list(v, f"--{flag}")
        elif flag == "hidden":
            v = [int(h) for h in split_list(v, "--hidden")]
        kw[STUDY_OPTIONS[flag]] = None if v == ALL else v
    if drop:
        raise ValueError(f"--study {args.study} is a named sweep: drop {drop}"
                         f" (or give the sweep by flags instead of --study)")
    return kw


def cmd_variability(args) -> int:
    from experiments.sweep import make_executor, run_sweep
    from experiments.variability import finished_result, run_point
    from experiments.variability_summary import table, write_summary

    if args.workers is not None and args.scheduler:
        raise ValueError("--workers sets local processes; a Dask cluster (--scheduler) has its own workers")
    if args.study:
        study = importlib.import_module(f"experiments.variability_{args.study}")
        points = study.points(**study_options(args, study))
        title, out = f"variability study: {args.study}", Path(args.out or f"results/variability/{args.study}")
    else:
        points = build_points(args)
        study, title, out = None, "variability sweep", Path(args.out or "results/variability/sweep")
    if args.list:
        for p in points:
            print(f"{p.name}: seeds {list(p.seeds)}, {p.epochs} epochs, {p.backend}")
        return 0
    results_folder(out)
    with make_executor(args.workers, args.scheduler) as ex:
        results = run_sweep(points, run_point, out, ex, is_done=finished_result, progress=not args.quiet)
    lines = study.finding(results) if study is not None and hasattr(study, "finding") else []
    write_summary(results, out, title, lines)
    if study is not None and hasattr(study, "plot"):
        study.plot(results, out)
    print(table(results))
    for s in lines:
        print(f"* {s}")
    print(f"results in {out} (summary.md, summary.json, plots; one folder per point)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("variability", help="device-variability sweeps (bits, spread, presets) over seeds",
                       description="A sweep of device-variability points, each a lockstep run of its seeds and "
                                   "device instances; one results folder per point, a summary table and plots. "
                                   "Re-runs skip finished points; a killed point resumes from its checkpoint. "
                                   "Points run in local worker processes (one per core) or on a Dask cluster "
                                   "(--scheduler; pip install 'eqprop-spice[cluster]').")
    p.add_argument("--study", choices=STUDIES, help="a named study (experiments/variability_NAME.py)")
    p.add_argument("--sweep", metavar="FILE.toml", help="[point] fixed fields, [device] base device, [sweep] axes")
    p.add_argument("--preset", help="base device preset (spice_models/NAME.toml; default ideal)")
    p.add_argument("--device-toml", metavar="FILE", help="base device from a TOML file of DeviceModel fields")
    p.add_argument("--dataset", help="datasets, comma-separated (default wine)")
    p.add_argument("--scheme", help="mlff, mlff-layer (per-layer rates), sw; comma-separated (default mlff)")
    p.add_argument("--bits", help="bit depths, comma-separated; 'float' = continuous, e.g. 2,4,6,8,float")
    p.add_argument("--set", action="append", metavar="FIELD=V1,V2",
                   help="sweep any device field, e.g. g_dtod=0,0.05,0.1 (repeatable)")
    p.add_argument("--hidden", help="hidden layer sizes, comma-separated (default 10,10,10,10,10)")
    p.add_argument("--seeds", type=positive_int, help="seeds 0..N-1, the trials of each point (default 5)")
    p.add_argument("--device-seed", type=nonneg_int, help="seed of the device instances (default 0)")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--lr", type=positive_float, help="global rate (mlff-layer: the output block's)")
    p.add_argument("--layer-factor", type=positive_float, help="mlff-layer: rate factor per layer towards the input")
    p.add_argument("--p", type=probability, help="small-world replacement probability (default 0.1)")
    p.add_argument("--beta", type=positive_float)
    p.add_argument("--free-steps", type=nonneg_int)
    p.add_argument("--nudged-steps", type=nonneg_int)
    p.add_argument("--nudge-form", choices=("sequential", "gradient"))
    p.add_argument("--train-limit", type=limit_arg, help="first N training examples, or 'all' (default all; "
                                                          "--study bits: digits 100)")
    p.add_argument("--test-limit", type=limit_arg, help="first N test examples, or 'all'")
    p.add_argument("--backend", choices=("surrogate", "spice"), help="digital surrogate (default) or ngspice crossbar")
    p.add_argument("--workers", type=nonneg_int, help="local worker processes (default: one per core; 0: in this "
                                                     "process)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run on the Dask cluster at this scheduler address")
    p.add_argument("--out", help="results folder (default results/variability/<study or sweep>)")
    p.add_argument("--list", action="store_true", help="print the points and exit")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_variability)
