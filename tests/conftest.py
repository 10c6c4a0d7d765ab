"""Shared fixtures; the ngspice marker skips (with the reason) only where ngspice is absent."""
import shutil

import pytest
import torch

torch.set_num_threads(1)  # small nets: a second thread only adds contention on 2-core CI machines


def pytest_collection_modifyitems(config, items):
    if shutil.which("ngspice") is not None:
        return
    skip = pytest.mark.skip(reason="ngspice not installed (apt-get install ngspice libngspice0; `make test` does it)")
    for item in items:
        if "ngspice" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def with_plots():
    """Keep the per-run plots (errors.png, rms.png): ~1 s per run folder, so other tests skip them."""


@pytest.fixture(autouse=True)
def no_plots(request, monkeypatch):
    if "with_plots" not in request.fixturenames:
        monkeypatch.setattr("eqprop.plots.plot_run", lambda m, out: None)


@pytest.fixture(autouse=True)
def fixed_global_seed():
    """Each test starts from the same global torch stream, whatever ran before it: a test that draws
    with torch.rand must not pass or fail with the test order."""
    torch.manual_seed(0)
