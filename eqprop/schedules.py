"""Learning-rate schedules: the factor each epoch's rates are multiplied by.

A schedule is a short text (a RunConfig field, a flag, a TOML key):

  constant               the configured rate every epoch
  cosine[:FLOOR]         half a cosine from the rate down towards FLOOR x the rate (default 0)
  step:EVERY[:GAMMA]     multiplied by GAMMA (default 0.5) every EVERY epochs

and ``warmup`` epochs (a separate RunConfig field) ramp linearly up to the rate first: epoch
e <= warmup uses e / (warmup + 1) of it; the schedule then counts from the first epoch after.
Rates change once per epoch (every batch of an epoch uses the same rates), so the rate of an
epoch is a plain number recorded beside its errors in metrics.json.

Epochs are counted from the schedule's start: epoch 1 of a run, or the first epoch after a
``--resume`` that changed the rate or the schedule (the new schedule starts there, from the
new rate, over the epochs left).
"""
from __future__ import annotations

import dataclasses
import math

KINDS = ("constant", "cosine", "step")
SYNTAX = "constant, cosine[:FLOOR] or step:EVERY[:GAMMA]"


@dataclasses.dataclass(frozen=True)
class Schedule:
    kind: str = "constant"
    floor: float = 0.0  # cosine: the factor it decays towards
    every: int = 1  # step: epochs between decays
    gamma: float = 0.5  # step: the factor of each decay


def parse_schedule(text: str) -> Schedule:
    """A schedule from its text; a ValueError that says what is wrong and what is allowed."""
    if not isinstance(text, str) or isinstance(text, bool):
        raise ValueError(f"schedule must be a text like {SYNTAX}, got {text!r} ({type(text).__name__})")
    kind, *args = [p.strip() for p in text.strip().split(":")]
    if kind not in KINDS:
        raise ValueError(f"schedule: unknown kind {kind!r} in {text!r}; known: {SYNTAX}")
    try:
        if kind == "constant":
            if args:
                raise ValueError("constant takes no arguments")
            return Schedule()
        if kind == "cosine":
            if len(args) > 1:
                raise ValueError("cosine takes at most FLOOR")
            floor = float(args[0]) if args else 0.0
            if not 0.0 <= floor <= 1.0:  # also refuses nan
                raise ValueError(f"FLOOR must lie in [0, 1], got {args[0]}")
            return Schedule("cosine", floor=floor)
        if not 1 <= len(args) <= 2:
            raise ValueError("step needs EVERY (epochs) and takes an optional GAMMA")
        every = int(args[0])
        gamma = float(args[1]) if len(args) > 1 else 0.5
        if every < 1:
            raise ValueError(f"EVERY must be an integer >= 1, got {args[0]}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"GAMMA must lie in (0, 1], got {args[1]}")
        return Schedule("step", every=every, gamma=gamma)
    except ValueError as e:
        raise ValueError(f"schedule {text!r}: {e} (syntax: {SYNTAX})") from None


def rate_factor(schedule: str | Schedule, epoch: int, epochs: int, warmup: int = 0) -> float:
    """The factor of epoch ``epoch`` (1-based, counted from the schedule's start) of ``epochs``."""
    s = parse_schedule(schedule) if isinstance(schedule, str) else schedule
    if epoch < 1:
        raise ValueError(f"epochs count from 1, got {epoch}")
    if epoch <= warmup:
        return epoch / (warmup + 1)
    k, n = epoch - warmup - 1, max(epochs - warmup, 1)  # k: 0 on the first epoch after the warm-up
    if s.kind == "cosine":
        return s.floor + (1.0 - s.floor) * 0.5 * (1.0 + math.cos(math.pi * min(k, n) / n))
    if s.kind == "step":
        return s.gamma ** (k // s.every)
    return 1.0


def scaled_rate(lr, factor: float):
    """A configured rate (global or per layer) times a factor, in the config's shape."""
    return [v * factor for v in lr] if isinstance(lr, (list, tuple)) else lr * factor
