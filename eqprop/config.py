"""Run configuration: one dataclass, loadable from TOML, overridable from flags."""
from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

TOPOLOGIES = ("mlff", "sw")
ENGINES = ("auto", "reference", "fast")


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs; written to results/.../config.json.

    Defaults follow Gammell et al.'s small-data runs (eps 0.5, |beta| 1 with random sign,
    sequential nudging, fixed step counts).
    """

    dataset: str = "digits"
    hidden: list[int] = dataclasses.field(default_factory=lambda: [10, 10])
    topology: str = "mlff"  # mlff | sw
    p: float = 0.1  # small-world replacement probability
    sw_mode: str = "replace"  # replace | add
    intralayer: bool = False
    lr: float | list[float] = 0.01  # global, or one per adjacent block (input side first)
    eps: float = 0.5
    beta: float = 1.0
    random_beta_sign: bool = True
    free_steps: int = 1000
    nudged_steps: int = 12
    nudge_form: str = "sequential"  # sequential (paper's code) | gradient (Scellier)
    batch_size: int | None = None  # None: the dataset's paper default
    epochs: int = 10
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    coupling: str = "auto"  # auto | blocks | dense
    engine: str = "auto"  # reference (EulerSolver) | fast (FastEulerSolver) | auto: fast on CUDA only
    train_limit: int | None = None  # reduced-scale runs: only the first N training examples
    test_limit: int | None = None  # ... and the first N test examples (None: the whole split)
    save_dw_matrix: bool = False  # also keep the N x N mean |dW| (Fig 5), written to dw_mean.npy
    out: str = "results/train/run"

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {TOPOLOGIES}, got {self.topology!r}")
        if not (0.0 <= float(self.p) <= 1.0):
            raise ValueError(f"p must lie in [0, 1], got {self.p}")
        if self.sw_mode not in ("replace", "add"):
            raise ValueError(f"sw_mode must be 'replace' or 'add', got {self.sw_mode!r}")
        if any(int(h) != h or h < 1 for h in self.hidden):
            raise ValueError(f"hidden layer sizes must be positive integers, got {self.hidden}")
        if self.epochs < 0 or self.free_steps < 0 or self.nudged_steps < 0:
            raise ValueError("epochs and step counts must be >= 0")
        if self.beta == 0:
            raise ValueError("beta must be non-zero (EqProp divides by it)")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for k in ("train_limit", "test_limit"):
            v = getattr(self, k)
            if v is not None and (int(v) != v or v < 1):
                raise ValueError(f"{k} must be a positive integer or None, got {v!r}")
        if self.nudge_form not in ("sequential", "gradient"):
            raise ValueError(f"nudge_form must be 'sequential' or 'gradient', got {self.nudge_form!r}")
        if self.coupling not in ("auto", "blocks", "dense"):
            raise ValueError(f"coupling must be auto, blocks or dense, got {self.coupling!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if not 0 < self.eps <= 1:
            raise ValueError(f"eps must lie in (0, 1], got {self.eps}")
        if not (self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")):
            raise ValueError(f"device must be cpu, cuda or cuda:N, got {self.device!r}")
        if self.random_beta_sign and self.beta < 0:
            raise ValueError("beta < 0 with random_beta_sign: give |beta| (the sign is drawn per batch)")
        if self.topology == "sw" and not self.hidden:
            raise ValueError("a small-world net needs at least one hidden layer (nothing to skip over)")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if isinstance(self.lr, (list, tuple)):
            if len(self.lr) != len(self.hidden) + 1:
                raise ValueError(f"per-layer lr needs {len(self.hidden) + 1} values (one per adjacent block), "
                                 f"got {len(self.lr)}")
            self.lr = [float(v) for v in self.lr]
        else:
            self.lr = float(self.lr)
        if any(v < 0 for v in (self.lr if isinstance(self.lr, list) else [self.lr])):
            raise ValueError(f"learning rates must be >= 0, got {self.lr}")

    @classmethod
    def from_toml(cls, path: str | Path, **overrides) -> "TrainConfig":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"config file not found: {path}")
        with open(path, "rb") as f:
            try:
                data = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise ValueError(f"{path}: {e}") from None
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{source}: unknown keys {unknown}; known: {sorted(names)}")
        return cls(**data)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
