"""Shared fixtures; the ngspice marker skips (with the reason) only where ngspice is absent."""
import shutil

import pytest
import torch

torch.set_num_threads(2)  # CI machines have 2 cores; more threads only add contention


def pytest_collection_modifyitems(config, items):
    if shutil.which("ngspice") is not None:
        return
    skip = pytest.mark.skip(reason="ngspice not installed (apt-get install ngspice libngspice0; `make test` does it)")
    for item in items:
        if "ngspice" in item.keywords:
            item.add_marker(skip)
