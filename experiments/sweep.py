"""Sweeps past one machine: the points of a study through a ``concurrent.futures.Executor``.

Local processes by default (one single-threaded process per core, no set-up), or a Dask
distributed cluster given its scheduler address: ``distributed.Client(address).get_executor()``
is an Executor too, so the same code runs there (dask-jobqueue's SLURMCluster / PBSCluster
hand out such an address). Dask is the optional extra ``pip install .[cluster]``.

Each point is a ``task(point, out)`` call (``experiments.variability.run_point``) that writes
its own folder and its result once, atomically; points whose result exists are not submitted
again, so a re-run of a sweep does only what is missing. On a cluster, ``out`` must be on a
file system every worker sees (as on Slurm/PBS clusters); the result also comes back to the
caller, which writes the summary.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable, Iterator, Sequence

ORPHAN_POLL_S = 1.0  # how often a worker checks that the process that started it is still there


def _exit_when_orphaned(parent: int) -> None:
    while True:
        time.sleep(ORPHAN_POLL_S)
        if os.getppid() != parent:  # re-parented: the sweep's process was killed (kill -9 skips its clean-up)
            os.kill(os.getpid(), signal.SIGTERM)  # its run's lock names this pid: a dead pid frees it for a re-run
            return


def worker_start(parent: int | None = None) -> None:
    """Worker start: torch on one thread (one process per core; N threads each would oversubscribe), and an
    exit once the sweep's process is gone, so a killed sweep leaves no workers training on (and holding its
    runs' locks) behind it."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    torch.set_num_threads(1)
    # the sweep's pid as the pool gave it, not os.getppid() here: a worker's start (torch's import) can take
    # minutes on a loaded machine, and a sweep killed meanwhile had left its workers re-parented already, so
    # they recorded init as their parent and trained on (seen: two orphans holding Fig 4 runs' locks)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid() if parent is None else parent,), daemon=True,
                     name="exit-when-orphaned").start()


def local_pool(workers: int) -> ProcessPoolExecutor:
    """``workers`` local single-threaded worker processes (spawned: a fork after torch has started threads can
    deadlock) that end with the process that started them."""
    return ProcessPoolExecutor(max_workers=workers, initializer=worker_start, initargs=(os.getpid(),),
                               mp_context=multiprocessing.get_context("spawn"))


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@contextlib.contextmanager
def make_executor(workers: int | None = None, scheduler: str | None = None) -> Iterator[Executor | None]:
    """Local worker processes (``workers``, default one per core; 0: None, i.e. run in this process),
    or the Dask cluster at ``scheduler`` (e.g. tcp://10.0.0.5:8786). The error says how to install
    Dask when it is missing."""
    if scheduler is not None:
        if not isinstance(scheduler, str) or not scheduler.strip():
            raise ValueError(f"--scheduler must be a Dask scheduler address such as tcp://HOST:8786, got {scheduler!r}")
        try:
            from distributed import Client
        except ImportError:
            raise RuntimeError("--scheduler needs Dask: pip install 'eqprop-spice[cluster]' "
                               "(or pip install 'dask[distributed]')") from None
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as e:
            raise RuntimeError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
        try:
            yield client.get_executor(pure=False)
        finally:
            client.close()
        return
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ValueError(f"--workers must be an integer >= 0, got {workers!r}")
    if workers == 0:  # in this process, one point after another (debugging, tiny sweeps)
        yield None
        return
    with local_pool(workers or default_workers()) as ex:
        yield ex


def run_sweep(points: Sequence, task: Callable, out: str | Path, executor: Executor | None = None,
              is_done: Callable | None = None, progress: bool = True) -> list[dict]:
    """Every point's result, in the order of ``points``: finished ones read back (``is_done(point,
    out)`` returns the result or None), the rest submitted to ``executor`` (or run here, one after
    another, when it is None). A failing point raises after the others have finished, naming it."""
    out = Path(out)
    results: list[dict | None] = [None] * len(points)
    todo = []
    for i, p in enumerate(points):
        results[i] = is_done(p, out) if is_done else None
        if results[i] is None:
            todo.append(i)
    say = (lambda s: print(s, flush=True)) if progress else (lambda s: None)
    say(f"[sweep] {len(points)} points, {len(points) - len(todo)} already done, {len(todo)} to run"
        + (f" on {type(executor).__name__}" if executor is not None and todo else ""))
    failures: list[str] = []
    t0 = time.perf_counter()
    if executor is None:
        for n, i in enumerate(todo, 1):
            results[i] = task(points[i], out)
            say(f"[sweep {n}/{len(todo)}] {_label(points[i])} done ({time.perf_counter() - t0:.0f} s)")
    else:
        futures = {executor.submit(task, points[i], out): i for i in todo}
        for n, fut in enumerate(as_completed(futures), 1):
            i = futures[fut]
            try:
                results[i] = fut.result()
                say(f"[sweep {n}/{len(todo)}] {_label(points[i])} done ({time.perf_counter() - t0:.0f} s)")
            except BrokenProcessPool:
                raise RuntimeError("a sweep worker process died (killed, out of memory, or a script that starts a "
                                   "sweep without `if __name__ == '__main__':`); finished points are kept, re-run "
                                   "to go on") from None
            except Exception as e:  # the others keep running; all failures are named at the end
                failures.append(f"{_label(points[i])}: {type(e).__name__}: {e}")
                print(f"[sweep {n}/{len(todo)}] {_label(points[i])} FAILED: {e}", file=sys.stderr, flush=True)
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(todo)} points failed (finished points are kept; re-run to "
                           f"retry the rest): " + "; ".join(failures[:5]) + (" ..." if len(failures) > 5 else ""))
    return results


def _label(point) -> str:
    return getattr(point, "name", str(point))
