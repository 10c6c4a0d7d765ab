"""Sweeps through an Executor: each point's result written once, re-runs skip finished points, a
killed point resumes to the same numbers, and local processes and a real Dask cluster (LocalCluster
on loopback) give bit-identical results."""
import dataclasses
import json

import pytest

from circuits.devices import load_preset
from experiments.sweep import make_executor, run_sweep
from experiments.variability import Point, finished_result, point_folder, run_point


def points(seeds=(0,), bits=(3, None), epochs=2):
    dev = dataclasses.asdict(load_preset("ideal"))
    return [Point(dataset="iris", hidden=(3, 3), scheme="sw", device=dev, overrides={"bits": b}, seeds=seeds,
                  epochs=epochs, free_steps=20, nudged_steps=4, train_limit=10, test_limit=5) for b in bits]


def numbers(result: dict) -> str:
    """A result without its timing (CPU seconds differ run to run; everything else must not), as
    JSON text: NaN (e.g. the spread of one seed's infinite log-spread) then equals NaN."""
    return json.dumps({k: v for k, v in result.items() if k != "cpu_seconds_this_call"}, sort_keys=True)


def test_a_sweep_writes_each_point_once_and_a_rerun_skips_it(tmp_path, capsys):
    pts = points()
    first = run_sweep(pts, run_point, tmp_path, None, is_done=finished_result, progress=False)
    files = [point_folder(p, tmp_path) / "result.json" for p in pts]
    stamps = [f.stat().st_mtime_ns for f in files]
    assert [r["name"] for r in first] == [p.name for p in pts]
    assert first[0]["test_error"] == json.loads(files[0].read_text())["test_error"]

    def must_not_run(point, out):
        raise AssertionError(f"{point.name} is finished and must not run again")

    again = run_sweep(pts, must_not_run, tmp_path, None, is_done=finished_result)
    assert "2 already done, 0 to run" in capsys.readouterr().out
    assert [f.stat().st_mtime_ns for f in files] == stamps and list(map(numbers, again)) == list(map(numbers, first))


def test_a_killed_point_resumes_from_its_checkpoint_to_the_same_numbers(tmp_path):
    p = points(seeds=(0, 1), bits=(4,))[0]  # two trials: each resumes its own device instance
    whole = run_point(p, tmp_path / "whole")
    assert run_point(p, tmp_path / "cut", until_epoch=1) is None  # stopped (as if killed) after epoch 1
    assert not (point_folder(p, tmp_path / "cut") / "result.json").exists()
    assert numbers(run_point(p, tmp_path / "cut")) == numbers(whole)


def test_a_folder_holding_another_point_is_refused(tmp_path):
    p = points(bits=(4,), epochs=1)[0]
    run_point(p, tmp_path)
    other = dataclasses.replace(p, lr=0.02)
    assert other.name == p.name
    with pytest.raises(ValueError, match="holds another point .*lr"):
        run_point(other, tmp_path)


def test_local_processes_and_a_dask_cluster_give_identical_numbers(tmp_path):
    distributed = pytest.importorskip("distributed", reason="Dask is the optional extra [cluster]")
    pts = points(epochs=1)
    with make_executor(workers=1) as ex:
        local = run_sweep(pts, run_point, tmp_path / "local", ex, is_done=finished_result, progress=False)
    # a real scheduler and worker talking TCP on loopback (in this process: no second torch import)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        with make_executor(scheduler=cluster.scheduler_address) as ex:
            dask = run_sweep(pts, run_point, tmp_path / "dask", ex, is_done=finished_result, progress=False)
    assert [numbers(r) for r in dask] == [numbers(r) for r in local]
    assert 0 <= local[0]["test_error"] <= 1
    assert local[0]["seeds"][0]["mean_rms"] != local[1]["seeds"][0]["mean_rms"]  # two points, two results
    assert (tmp_path / "dask" / pts[0].name / "s0" / "metrics.json").exists()  # the worker wrote the point's folder


def test_executor_choices_fail_clearly():
    with pytest.raises(ValueError, match="--workers must be an integer >= 0"):
        with make_executor(workers=-1):
            pass
    with make_executor(workers=0) as ex:
        assert ex is None  # run_sweep then runs the points in this process
    with pytest.raises(ValueError, match="--scheduler must be a Dask scheduler address"):
        with make_executor(scheduler=" "):
            pass


SLEEPER = """
import os, sys, time
from pathlib import Path
from experiments.sweep import make_executor

def task(path):
    Path(path).write_text(str(os.getpid()))
    time.sleep(120)

if __name__ == "__main__":
    with make_executor(1) as ex:
        ex.submit(task, sys.argv[1]).result()
"""


def test_workers_end_when_the_sweeps_process_is_killed(tmp_path):
    """kill -9 of a sweep skips its clean-up; its workers must not train on, holding their runs' locks."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path
    script, pidfile = tmp_path / "sleeper.py", tmp_path / "worker.pid"
    script.write_text(SLEEPER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    parent = subprocess.Popen([sys.executable, str(script), str(pidfile)], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        worker = int(pidfile.read_text())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.kill(worker, signal.SIGKILL)
            pytest.fail("the worker outlived its sweep's process by 15 s")
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_worker_orphaned_before_its_start_up_ends_too(tmp_path):
    """A sweep killed while its workers still import torch (minutes on a loaded machine): the worker has been
    re-parented before worker_start runs, so it must compare with the sweep's pid it was given, not its
    parent at that moment."""
    import multiprocessing
    import os
    import signal

    from experiments.sweep import worker_start
    gone = multiprocessing.get_context("spawn").Process(target=os.getpid)  # a pid that has ended
    gone.start()
    gone.join()
    w = multiprocessing.get_context("spawn").Process(target=_start_then_sleep, args=(gone.pid,))
    w.start()
    w.join(30)
    if w.is_alive():
        w.kill()
        pytest.fail("a worker whose sweep had ended before its start-up trained on")
    assert w.exitcode == -signal.SIGTERM
    assert worker_start.__defaults__ == (None,)  # in-process callers may still omit it


def _start_then_sleep(parent: int) -> None:
    import time

    from experiments.sweep import worker_start
    worker_start(parent)
    time.sleep(60)
