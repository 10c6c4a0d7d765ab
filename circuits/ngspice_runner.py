"""libngspice in a worker process, driven through PySpice's cffi handle.

Why a worker: after some netlist errors libngspice prints "cannot recover and awaits to
be detached" and the hosting process is unusable; a crash in the library would take the
trainer with it. ``NgspiceSession`` runs the library in a child Python process (a
persistent subprocess speaking length-prefixed pickles over two pipes), restarts it
after a crash, timeout or fatal error, and raises ``SimulationError`` with the log.

The library itself is driven by ``circuits.ngspice_worker`` (in the child), which says
why PySpice's own ``exec_command`` is bypassed. Commands and their numbers
(``repr(float(x))``) come from ``ngspice_protocol``, as on the ``ngspice -b`` route.
"""
from __future__ import annotations

import glob
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path

import numpy as np

from .errors import ConvergenceError, NgspiceUnavailable, SimulationError, SimulationTimeout, WorkerCrashed
from .ngspice_protocol import (  # noqa: F401
    CLEAR_BREAKPOINTS,
    RESUME,
    alter_command,
    fmt,
    optran_command,
    stop_command,
    tran_line,
    with_nodeset,
)
from .ngspice_worker import read_frame, write_all

# alter_command and with_nodeset (imported above) stay importable from here: their home before ngspice_protocol
LIBRARY_ENV = "NGSPICE_LIBRARY_PATH"
_LIBRARY_GLOBS = ("/usr/lib/*/libngspice.so*", "/usr/lib/libngspice.so*", "/usr/local/lib/libngspice.so*",
                  "/usr/lib64/libngspice.so*", "/opt/homebrew/lib/libngspice*.dylib",
                  "/usr/local/lib/libngspice*.dylib")
_ROOT = str(Path(__file__).resolve().parent.parent)


def find_library() -> str | None:
    """Path of libngspice: $NGSPICE_LIBRARY_PATH, else the usual install locations."""
    env = os.environ.get(LIBRARY_ENV)
    if env:
        return env if os.path.exists(env) else None
    for pattern in _LIBRARY_GLOBS:
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[0]
    return None


def library_available() -> bool:
    return find_library() is not None


_INFO: dict[str, dict] = {}


def ngspice_info(library: str | None = None) -> dict:
    """What the installed libngspice is, from its own output (cached per library path):
    ``version`` (its banner's), ``klu_build`` (banner says "Compiled with KLU"), ``klu``
    (a circuit with ``.options klu=1`` reported "Using KLU as Direct Linear Solver"),
    ``solver_reported`` (whether it names its solver at all: 39 does not), ``library``.
    Raises NgspiceUnavailable when there is no library."""
    library = library or find_library()
    if library not in _INFO:
        with NgspiceSession(library=library, timeout=60.0) as s:
            _INFO[library] = {**s.probe(), "library": library}
    return dict(_INFO[library])


def klu_available(library: str | None = None) -> bool:
    """Whether this libngspice honours ``.options klu`` (False where there is no library)."""
    try:
        return ngspice_info(library)["klu"]
    except SimulationError:
        return False


# ----------------------------------------------------------------------------------
# client side
class NgspiceSession:
    """One libngspice in a worker process. Use as a context manager.

    ``load(netlist)``, then analyses (``op``, ``tran``, ``tran_two_phase``), ``alter``,
    ``voltages``. Every failure raises ``SimulationError`` (subclasses:
    ``ConvergenceError``, ``WorkerCrashed``, ``SimulationTimeout``,
    ``NgspiceUnavailable``) carrying the netlist, the command and ngspice's log; after a
    crash, timeout or unrecoverable state the next call starts a fresh worker (the
    circuit must then be loaded again). ``log`` holds the output of the last call.
    """

    def __init__(self, library: str | None = None, timeout: float = 600.0, start_timeout: float = 60.0):
        self.library = library or find_library()
        self.timeout = float(timeout)
        self.start_timeout = float(start_timeout)
        self.log = ""
        self.netlist: str | None = None
        self.restarts = 0  # workers started after the first (crashes, timeouts, netlist errors)
        self._started = 0
        self._proc = None
        self._finalizer = None
        self.cpu_seconds = 0.0  # CPU time the worker processes spent on this session's requests
        self.calls = 0  # round trips (requests) so far

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> "NgspiceSession":
        self._ensure_worker(fresh_ok=True)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._proc = self._finalizer = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc[0].poll() is None

    @property
    def pid(self) -> int | None:
        """The worker process's pid (None when none runs): for memory measurements."""
        return self._proc[0].pid if self.alive else None

    def _ensure_worker(self, fresh_ok: bool = False) -> None:
        """Start a worker if none runs. One that died since the last call took the loaded
        circuit with it: that raises ``WorkerCrashed`` unless a new circuit comes (load)."""
        if self.alive:
            return
        if self._proc is not None:
            errfile, code = self._proc[3], self._proc[0].poll()
            errfile.seek(0)
            tail = errfile.read()[-4000:].decode("utf8", "replace")
            self.close()
            if not fresh_ok:
                raise WorkerCrashed(f"ngspice worker died since the last call (exit code {code}); load the "
                                    "circuit again", netlist=self.netlist, log=tail, command="(between calls)")
        if self._started and not fresh_ok:
            raise SimulationError("no circuit loaded: the ngspice worker was stopped after an error; "
                                  "call load() again", netlist=self.netlist, command="(no worker)")
        self.restarts += self._started > 0
        self._started += 1
        if not self.library:
            raise NgspiceUnavailable(f"libngspice not found: install libngspice0 (Debian) or set {LIBRARY_ENV}")
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        errfile = tempfile.TemporaryFile()
        env = dict(os.environ, **{LIBRARY_ENV: self.library})
        boot = (f"import sys; sys.path.insert(0, {_ROOT!r}); "
                "from circuits.ngspice_worker import worker_main; worker_main(int(sys.argv[1]), int(sys.argv[2]))")
        proc = subprocess.Popen([sys.executable, "-c", boot, str(to_child_r), str(from_child_w)],
                                pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL,
                                stdout=errfile, stderr=errfile, env=env, close_fds=True)
        os.close(to_child_r)
        os.close(from_child_w)
        self._proc = (proc, to_child_w, from_child_r, errfile)
        self._finalizer = weakref.finalize(self, _stop_worker, proc, to_child_w, from_child_r, errfile)
        self.netlist = None
        reply = self._exchange([("hello",)], self.start_timeout, "start worker")
        if not reply["ok"]:
            msg = reply["message"]
            self.close()
            raise NgspiceUnavailable(f"could not start libngspice ({self.library}): {msg}", log=reply["log"])

    def _exchange(self, ops: list, timeout: float, what: str) -> dict:
        proc, w, r, errfile = self._proc
        data = pickle.dumps(ops, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            os.write(w, struct.pack("<Q", len(data)))
            write_all(w, data)
            return read_frame(r, timeout)
        except TimeoutError:
            errfile.seek(0)
            tail = errfile.read()[-4000:].decode("utf8", "replace")  # this call's output, not the last call's log
            self.close()
            raise SimulationTimeout(f"ngspice call '{what}' ran past {timeout:.0f} s; worker stopped",
                                    netlist=self.netlist, log=tail, command=what) from None
        except (OSError, EOFError, pickle.UnpicklingError):
            errfile.seek(0)
            tail = errfile.read()[-4000:].decode("utf8", "replace")
            self.close()
            raise WorkerCrashed(f"ngspice worker died during '{what}' (exit code {proc.poll()})",
                                netlist=self.netlist, log=tail, command=what) from None

    def call(self, ops: list, what: str | None = None, timeout: float | None = None) -> list:
        """Run raw worker operations in one round trip; returns their results.

        Operations: ("circ", text), ("cmd", command), ("analysis", command),
        ("alter", [(name, value), ...]), ("op", nodeset or None, nodes or None),
        ("equilibrium", spec) (ngspice_worker._Engine.equilibrium), ("get", nodes, index),
        ("plot",), ("probe",), ("optran", command) (the .op rescue for the loaded circuit, kept by the worker).
        """
        self._ensure_worker()
        what = what or "; ".join(str(op[1])[:60] if len(op) > 1 else op[0] for op in ops)[:200]
        reply = self._exchange(ops, self.timeout if timeout is None else timeout, what)
        self.log = reply["log"]
        self.calls += 1
        self.cpu_seconds += reply.get("cpu", 0.0)
        if reply["ok"]:
            return reply["results"]
        cls = {"convergence": ConvergenceError, "fatal": WorkerCrashed}.get(reply["kind"], SimulationError)
        if reply["kind"] in ("fatal", "netlist"):
            self.close()  # the library cannot go on; a fresh worker starts on the next call
        raise cls(reply["message"], netlist=self.netlist, log=reply["log"], command=reply["command"])

    # -- circuit ---------------------------------------------------------------------
    def load(self, netlist: str, tau: float | None = None) -> None:
        """Load a netlist (text as the generator writes it; ``.end`` is added if missing). tau (s): the
        circuit's time constant c/g0, to which ngspice's .op rescue transient is scaled (optran_command)."""
        self._ensure_worker(fresh_ok=True)  # before recording the text: a fresh worker forgets it
        self.netlist = netlist
        # a netlist error can leave libngspice unrecoverable: call() then drops the worker
        ops = [("circ", netlist)] + ([] if tau is None else [("optran", optran_command(tau))])
        self.call(ops, "load")

    def command(self, command: str) -> str:
        """Any ngspice control command; returns its output (the log of this call)."""
        self.call([("cmd", command)])
        return self.log

    def alter(self, values: dict[str, float]) -> None:
        """Change element values in the loaded circuit, all in one round trip.

        Keys are element names (``Gw5_3``, ``Ib5``...) or ``name[param]`` (``Cn5[ic]``).
        """
        items = [(str(k), float(v)) for k, v in values.items()]
        if items:
            self.call([("alter", items)], f"alter ({len(items)} values)")

    # -- analyses --------------------------------------------------------------------
    def op(self, nodeset: dict[str, float] | None = None, nodes=None):
        """DC operating point; returns ``voltages(nodes)`` when nodes are given.

        ngspice has no interactive nodeset command, so ``nodeset`` ({node: volts})
        reloads the netlist with ``.nodeset`` lines and replays the alters made since
        the last load (in the worker: one round trip): Newton then starts next to the
        wanted fixed point.
        """
        if nodeset and self.netlist is None:
            raise SimulationError("op(nodeset=...) needs a loaded netlist")
        ns = {str(k): float(v) for k, v in nodeset.items()} if nodeset else None
        res = self.call([("op", ns, None if nodes is None else list(nodes))],
                        "op" + (" (nodeset reload)" if nodeset else ""))
        return res[0]

    def equilibria(self, specs: list[dict], alters=()) -> list[dict]:
        """Whole equilibria (``ngspice_worker._Engine.equilibrium``), all in one round trip; ``alters``
        ([(name, value), ...], as ``alter`` takes them) go into the circuit first, in the same trip."""
        ops = ([("alter", [(str(k), float(v)) for k, v in alters])] if alters else []) + [
            ("equilibrium", sp) for sp in specs]
        res = self.call(ops, f"{len(specs)} equilibria" + (f" after {len(alters)} alters" if alters else ""))
        return res[1:] if alters else res

    def probe(self) -> dict:
        """The library's version, KLU build and whether ``.options klu`` is honoured (unloads the circuit)."""
        self.netlist = None
        return self.call([("probe",)], "probe")[0]

    def tran(self, tstep: float, tstop: float, tstart: float = 0.0, tmax: float | None = None,
             uic: bool = False, nodes=None):
        """Transient analysis; returns the final ``voltages(nodes)`` when nodes are given."""
        ops = [("analysis", tran_line(tstep, tstop, tstart, tmax, uic))]
        if nodes is not None:
            ops.append(("get", list(nodes), -1))
        res = self.call(ops)
        return res[-1] if nodes is not None else None

    def tran_two_phase(self, tstep: float, t1: float, t2: float, nudge: dict[str, float], nodes,
                       tmax: float | None = None, uic: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Both EqProp phases in one transient: run to t1, alter ``nudge``, resume to t2.

        ``CLEAR_BREAKPOINTS`` removes the stop breakpoint (else ngspice stops again at once).
        Returns the node voltages at t1 and at t2.
        """
        nodes = list(nodes)
        ops = [("cmd", stop_command(t1)),
               ("analysis", tran_line(tstep, t2, 0.0, tmax, uic), True),
               ("get", nodes, -1), ("get", ["time"], -1),
               ("alter", [(str(k), float(v)) for k, v in nudge.items()]),
               ("cmd", CLEAR_BREAKPOINTS),
               ("analysis", RESUME),
               ("get", nodes, -1), ("get", ["time"], -1)]
        res = self.call(ops, f"two-phase tran to {t1} and {t2}")
        (v1, t_a), (v2, t_b) = (res[2], res[3]), (res[7], res[8])
        if t_a[0] < t1 * (1 - 1e-9) or t_b[0] < t2 * (1 - 1e-9):
            raise ConvergenceError(f"two-phase transient stopped early (t={t_a[0]}, {t_b[0]}; wanted {t1}, {t2})",
                                   netlist=self.netlist, log=self.log, command="tran/resume")
        return v1, v2

    def voltages(self, nodes, index: int = -1) -> np.ndarray:
        """Node voltages of the current plot at point ``index`` (-1: the last time point)."""
        return self.call([("get", list(nodes), index)], "read vectors")[0]

    def vector(self, name: str) -> np.ndarray:
        """A whole vector of the current plot (e.g. ``time``)."""
        return self.call([("get", [name], None)], f"read {name}")[0][0]


def _stop_worker(proc, w, r, errfile) -> None:
    for fd in (w, r):
        try:
            os.close(fd)
        except OSError:
            pass
    if proc.poll() is None:
        proc.kill()  # only the worker this session started
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    errfile.close()
