"""The worker side of NgspiceSession: libngspice driven through PySpice's cffi handle.

Runs in a child process (started by ``ngspice_runner.NgspiceSession``) and imports
PySpice only there. Requests and replies are length-prefixed pickles on two pipes; one
request is a list of operations run in order (load, commands, analyses, thousands of
alters, vector reads, whole equilibria), so a round trip costs ~0.2 ms however much it
carries. ``equilibrium`` runs SpiceSolver's whole recipe for one example here (alters,
transient, settle check and extensions, the warm ``.op`` polish), so a batch of examples
is one round trip; the worker keeps the netlist and the alters since it was loaded, so a
``.nodeset`` warm start reloads the text here, without a pipe round trip. Every reply
carries the worker's CPU seconds for the request (benchmarks count ngspice's CPU with it).

Why not PySpice's ``exec_command``: PySpice 1.5 raises on any stderr line that is not a
"Warning:", including harmless notes such as "Note: Starting dynamic gmin stepping", and
logs "Unsupported Ngspice version 39". Here ``ngSpice_Command`` is called directly, the
output is captured per call, and success means: no error line, and the analysis made a
new plot with data (the output patterns are ``ngspice_protocol``'s, shared with the
``ngspice -b`` route). PySpice's loggers are silenced by name, not globally.
"""
from __future__ import annotations

import os
import pickle
import select
import struct
import time

import numpy as np

from .ngspice_protocol import (
    DATA_ROWS,
    FATAL_RE,
    KLU_BUILD_RE,
    KLU_PROBE,
    OP_RESCUED_MESSAGE,
    OPTRAN_OFF,
    PAUSE_RE,
    RESUME,
    VERSION_RE,
    alter_command,
    failure_lines,
    op_rescued,
    optran_command,
    solver_used,
    tran_line,
    with_nodeset,
)
from .settle import geometric_limit, polish_agrees, unsettled_message

# ngspice keeps every command in a history; clear it now and then (PySpice does the same).
_HISTORY_FLUSH = 5000


# -- frames: the pipe protocol between NgspiceSession (parent) and this worker ----------
def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, timeout: float | None):
    deadline = None if timeout is None else time.monotonic() + timeout
    (n,) = struct.unpack("<Q", _read_exact(fd, 8, deadline))
    return pickle.loads(_read_exact(fd, n, deadline))


SAVE_CHUNK = 50  # node names per save command


# ----------------------------------------------------------------------------------
# the engine (child process)
class _Engine:
    def __init__(self):
        import logging
        for name in ("PySpice.Spice.NgSpice.Shared", "PySpice.Spice.NgSpice.Shared.NgSpiceShared"):
            lg = logging.getLogger(name)  # the "Unsupported Ngspice version 39" warning and per-line errors
            lg.propagate = False
            lg.addHandler(logging.NullHandler())
        from PySpice.Spice.NgSpice.Shared import NgSpiceShared, ffi

        lines = self.lines = []

        class Shared(NgSpiceShared):
            def send_char(self, message, ngspice_id):
                lines.append(message)
                return 0

            def send_stat(self, message, ngspice_id):
                return 0

        self.ffi = ffi
        self.shared = Shared(ngspice_id=0, send_data=False)
        self.lib = self.shared._ngspice_shared
        self.n_commands = 0
        self.netlist: str | None = None  # the text loaded last (without .nodeset lines)
        self.altered: dict[str, float] = {}  # alters since that load: a .nodeset reload replays them
        self.nodeset_loaded = False  # the circuit in the library carries .nodeset lines
        self.interp = False  # ``option interp`` was given (ngspice keeps it for the process: a static flag)
        self.saved = None  # the nodes of the loaded circuit's ``save`` list (None: ngspice keeps every vector)
        self.optran = optran_command(1.0)  # the .op rescue in force: ngspice's default is the tau = 1 s case

    # output handling: each callback line is "stdout ..." or "stderr ..."
    def take_log(self) -> list[str]:
        out = list(self.lines)
        del self.lines[:]
        return out

    def errors(self, lines, paused_ok: bool = False) -> list[str]:
        texts = [text for stream, _, text in (line.partition(" ") for line in lines) if stream in ("stdout", "stderr")]
        return failure_lines(texts, paused_ok)

    def command(self, cmd: str, log: list, paused_ok: bool = False) -> None:
        self.n_commands += 1
        if self.n_commands > _HISTORY_FLUSH:
            self.lib.ngSpice_Command(self.ffi.NULL)
            self.n_commands = 0
        rc = self.lib.ngSpice_Command(cmd.encode("ascii"))
        got = self.take_log()
        log.extend(got)
        bad = self.errors(got, paused_ok)
        if rc or bad:
            raise _Failure("fatal" if any(FATAL_RE.search(b) for b in bad) else "error",
                           f"ngspice command '{cmd[:200]}' failed: " + ("; ".join(bad[:3]) or f"return code {rc}"),
                           cmd)

    def quiet(self, cmd: str) -> None:
        """A setting whose output is no result (optran prints an "Error:" line when it works; ngspice < 37
        has no optran command and says so: either way nothing to report)."""
        self.lib.ngSpice_Command(cmd.encode("ascii"))
        self.take_log()

    def set_optran(self, cmd: str) -> None:
        """The .op rescue for this circuit's time constant (ngspice_protocol.optran_command); the cold polish
        turns it off for its try and puts this one back."""
        self.optran = cmd
        self.quiet(cmd)

    def cur_plot(self) -> str:
        return self.ffi.string(self.lib.ngSpice_CurPlot()).decode()

    def circ(self, text: str, log: list) -> None:
        lines = [l for l in text.splitlines()]
        if not any(l.strip().lower() == ".end" for l in lines):
            lines.append(".end")
        keep = [self.ffi.new("char[]", l.encode("ascii")) for l in lines]
        arr = self.ffi.new("char *[]", keep + [self.ffi.NULL])
        self.lib.ngSpice_Command(b"destroy all")  # old plots would only use memory
        self.lib.ngSpice_Command(b"remcirc")  # one circuit at a time (remcirc is silent if none)
        self.take_log()
        rc = self.lib.ngSpice_Circ(arr)
        self.saved = None  # a save list belongs to its circuit
        got = self.take_log()
        log.extend(got)
        bad = self.errors(got)
        if rc or bad:
            bad = list(dict.fromkeys(bad))  # ngspice repeats "Error on line ..."
            raise _Failure("netlist", "netlist rejected by ngspice: " + ("; ".join(bad[:3]) or f"return code {rc}"),
                           "load")

    def load(self, text: str, log: list) -> None:
        """A new circuit: forgets the alters of the last one."""
        self.circ(text, log)
        self.netlist, self.altered, self.nodeset_loaded = text, {}, False

    def alter(self, items, log: list) -> None:
        """Alter element values; a value the element already holds from an earlier alter is skipped
        (each alter is a parsed command, ~15 us: the nudge pair stays 0 over a free phase's batch)."""
        altered = self.altered
        for name, value in items:
            if altered.get(name) == value:
                continue
            self.command(alter_command(name, value), log)
            altered[name] = value

    def op(self, nodeset, nodes, log: list):
        """DC operating point; ``nodeset`` ({node: volts}) starts Newton there.

        ngspice has no interactive nodeset, so a warm start reloads the netlist with
        ``.nodeset`` lines and replays the alters since the load; a cold op after a warm
        one reloads the plain text (it must not inherit the last nodesets).
        """
        if nodeset or self.nodeset_loaded:
            self.reload(nodeset, log)
        self.analysis("op", log)
        return None if nodes is None else self.get(nodes, 0)

    def reload(self, nodeset, log: list) -> None:
        """The netlist again, with ``.nodeset`` lines for ``nodeset`` (None: the plain text), and the alters
        since its load replayed."""
        if self.netlist is None:
            raise _Failure("error", "a reload needs a loaded netlist", "op")
        self.circ(with_nodeset(self.netlist, nodeset) if nodeset else self.netlist, log)
        for name, value in self.altered.items():
            self.command(alter_command(name, value), log)
        self.nodeset_loaded = bool(nodeset)

    def equilibrium(self, spec: dict, log: list) -> dict:
        """SpiceSolver's recipe for one example, all in this process (spice_solver says why each step).

        spec: alters, nodes, method ("tran", "op", "tran+op"), warm (op: u0 as nodeset),
        u0, tran_opts / op_opts / cold_opts (option command arguments), polish ("op" or "cold"), rest_tol (no
        polish where the transient's end moves slower: SpiceConfig.rest_tol),
        cold_tol, interp (``option interp`` before the transient), tstep, tmax, tstop, tau, settle_tol,
        settle_window, max_extend, on_unsettled (SpiceConfig's; "polish": circuits.settle), ic_keys (the
        capacitor IC alter keys, in node order), label (names the example in errors).
        """
        st = {"alter_s": 0.0, "tran_s": 0.0, "op_s": 0.0, "extensions": 0, "unsettled": 0, "polish_change": 0.0,
              "cold": 0, "rescued": 0, "rested": 0, "slow": 0}
        nodes = spec["nodes"]
        t = time.perf_counter()
        self.alter(spec["alters"], log)
        st["alter_s"] = time.perf_counter() - t
        if spec["method"] == "op":
            t = time.perf_counter()
            self.command("destroy all", log)  # one op plot per example would pile up
            start = len(log)
            u = self.op(dict(zip(nodes, spec["u0"])) if spec["warm"] else None, nodes, log)
            if op_rescued(log[start:]):
                raise _Failure("convergence", OP_RESCUED_MESSAGE, "op")
            st["op_s"] = time.perf_counter() - t
            return {"u": u, **st}
        t = time.perf_counter()
        tau, tstop = spec["tau"], spec["tstop"]
        line = tran_line(spec["tstep"], tstop, tmax=spec.get("tmax"), uic=True)
        if spec.get("interp"):
            if not self.interp:
                self.command("option interp", log)
                self.interp = True
            if self.saved != nodes:
                # nothing reads another vector on this path (interp: the batched solver): the states only, not the
                # rho nodes and branch currents at every stored point (~4 % of a free transient's instructions)
                for k in range(0, len(nodes), SAVE_CHUNK):  # one long save line is cut short (~225 names kept)
                    self.command("save " + " ".join(nodes[k:k + SAVE_CHUNK]), log)
                self.saved = nodes
        self.command("option " + spec["tran_opts"], log)
        self.command("destroy all", log)  # earlier transients' plots would pile up
        self.analysis(line, log)
        u = self.get(nodes, -1)
        start = np.asarray(spec["u0"], dtype=float)  # the capacitors' initial conditions
        ends, limit = [u], None  # each window's end; where a slow one heads (on_unsettled "polish": circuits.settle)
        for extension in range(spec["max_extend"] + 1):
            tv = self.get(["time"], None)[0]
            if len(tv) < 2:  # interp stores t > 0 at multiples of tstep only: tstop <= tstep leaves the end
                rate = np.abs(u - start).max() * tau / max(tv[-1], 1e-300)  # the mean rate from t = 0
            else:
                j = min(int(np.searchsorted(tv, tv[-1] - spec["settle_window"] * tau)), len(tv) - 2)
                rate = np.abs(u - self.get(nodes, j)).max() * tau / max(tv[-1] - tv[j], 1e-300)
            if rate < spec["settle_tol"]:
                break
            if extension == spec["max_extend"]:
                why = ""
                if spec["on_unsettled"] == "polish":  # Newton below, kept where it lands on this limit
                    limit, why = geometric_limit(ends)
                    if limit is not None:
                        break
                st["unsettled"] = 1
                if spec["on_unsettled"] != "warn":  # a state that is still moving is no equilibrium
                    message = unsettled_message(spec["max_extend"], tstop / tau, rate, spec["settle_tol"], why)
                    raise _Failure("unsettled", message, "tran (settle check)")
                break
            self.alter(zip(spec["ic_keys"], u.tolist()), log)
            start = u
            self.command("destroy all", log)
            self.analysis(line, log)
            u = self.get(nodes, -1)
            ends.append(u)
            st["extensions"] += 1
        st["tran_s"] = time.perf_counter() - t
        st["rate"] = float(rate)  # max |du/dt| over the settle window at the end (V/tau)
        if spec["method"] == "tran":
            return {"u": u, **st}
        if rate < spec.get("rest_tol", 0.0):  # at rest: the transient's Newton already solved the fixed point
            st["rested"] = 1
            return {"u": u, **st}
        t = time.perf_counter()
        # a slow transient's end is still far from its fixed point (0.09 V in circuits.settle's case): no cold try,
        # which keeps only answers within cold_tol of the end
        u2 = self.cold_op(spec, u, nodes, log) if spec.get("polish") == "cold" and limit is None else None
        if u2 is None:
            self.command("option " + spec["op_opts"], log)  # interactive options outlive a reload
            start = len(log)
            u2 = self.op(dict(zip(nodes, u.tolist())), nodes, log)
            if op_rescued(log[start:]):  # the rescue's answer is no fixed point: keep the settled transient's end
                st["rescued"], u2 = 1, u
        else:
            st["cold"] = 1
        st["op_s"] = time.perf_counter() - t
        st["polish_change"] = float(np.abs(np.clip(u2, 0, 1) - np.clip(u, 0, 1)).max())
        if limit is not None:
            ok, how = polish_agrees(u2, u, limit)
            if not ok or st["rescued"]:
                message = unsettled_message(spec["max_extend"], tstop / tau, rate, spec["settle_tol"], how)
                raise _Failure("unsettled", message, "op (polish of a slow transient)")
            st["slow"] = 1
        return {"u": u2, **st}

    def cold_op(self, spec: dict, u: np.ndarray, nodes, log: list) -> np.ndarray | None:
        """The polish "cold": ``.op`` in the plain netlist, freshly reloaded (Newton from ngspice's own start),
        kept when it lands within ``cold_tol`` of the transient's end u (the same fixed point the
        ``.nodeset`` polish would reach from there), else None (no convergence within its iteration
        limit, or another fixed point: the caller falls back to the ``.nodeset`` reload)."""
        start = len(log)
        # ngspice's last rescue of a failed .op ("optran", a short transient from the initial conditions) returns
        # the transient's end as the operating point: no fixed point to the .op tolerances (on 784-100x5-10 one
        # was 1.1e-5 from it, 3.6e-4 from the exact one, and within COLD_TOL of the loose transient: kept). This
        # try is for Newton's exact answers only, so the rescue is off for it and back after (step 0 deselects).
        self.quiet(OPTRAN_OFF)
        try:
            self.command("option " + spec["cold_opts"], log)
            self.command("destroy all", log)
            # a fresh load every time: Newton's start in a circuit that already ran depends on what it ran (after
            # a free transient from u = 0 a 4-10-3 net's .op fell to u = 0, 1.0 from the fixed point; after the
            # last example's .nodeset fallback it did not), so an example's bits depended on this worker's
            # history and a run resumed in a fresh worker was not bit-identical (tests/test_kill_resume.py)
            self.reload(None, log)
            u2 = self.op(None, nodes, log)
        except _Failure as f:
            if f.kind in ("fatal", "netlist"):
                raise  # the library cannot go on: the parent replaces this worker
            del log[start:]  # an expected miss, not this request's failure
            return None
        finally:
            self.quiet(self.optran)
        return u2 if np.abs(np.clip(u2, 0, 1) - np.clip(u, 0, 1)).max() <= spec["cold_tol"] else None

    def probe(self, log: list) -> dict:
        """What this libngspice is: its banner's version, whether it was built with KLU, and
        whether it honours ``.options klu`` (the probe circuit's op says which solver it used).
        Leaves no circuit loaded."""
        self.command("version -f", log)
        banner = _join(log)
        self.load(KLU_PROBE, log)
        start = len(log)
        self.analysis("op", log)
        used = solver_used(_join(log[start:]))
        self.command("remcirc", log)
        self.netlist, self.altered = None, {}
        m = VERSION_RE.search(banner)
        return {"version": m.group(1) if m else None, "klu_build": bool(KLU_BUILD_RE.search(banner)),
                "klu": used == "klu", "solver_reported": used is not None}

    def analysis(self, cmd: str, log: list, paused_ok: bool = False) -> str:
        """Run an analysis and check it produced a new plot with data.

        paused_ok: a ``stop when`` breakpoint is set, so "pause requested" is expected.
        """
        before = self.cur_plot()
        start = len(log)
        try:
            self.command(cmd, log, paused_ok)
        except _Failure as f:
            if f.kind == "error":
                f.kind = "convergence"
            raise
        plot = self.cur_plot()
        rows = [l for l in log[start:] if DATA_ROWS in l or (paused_ok and PAUSE_RE.search(l))]
        if plot == "const" or not rows or (cmd != RESUME and plot == before):
            raise _Failure("convergence", f"'{cmd}' produced no data (plot {plot!r})", cmd)
        return plot

    def get(self, names, index) -> np.ndarray | list:
        plot = self.cur_plot()
        out = []
        for name in names:
            vi = self.lib.ngGet_Vec_Info(f"{plot}.{name}".encode("ascii"))
            if vi == self.ffi.NULL or vi.v_length == 0 or vi.v_realdata == self.ffi.NULL:
                raise _Failure("error", f"no vector '{name}' in plot {plot}", f"read {name}")
            data = np.frombuffer(self.ffi.buffer(vi.v_realdata, vi.v_length * 8), dtype=np.float64)
            out.append(data.copy() if index is None else float(data[index]))
        return out if index is None else np.array(out)

    def run(self, ops: list) -> dict:
        log, results, equilibria = [], [], []  # u0_from counts this request's equilibria only
        cpu0 = time.process_time()
        try:
            for op in ops:
                kind = op[0]
                if kind == "hello":
                    results.append(os.getpid())
                elif kind == "circ":
                    results.append(self.load(op[1], log))
                elif kind == "cmd":
                    results.append(self.command(op[1], log))
                elif kind == "optran":
                    results.append(self.set_optran(op[1]))
                elif kind == "analysis":
                    results.append(self.analysis(op[1], log, *op[2:]))
                elif kind == "alter":
                    results.append(self.alter(op[1], log))
                elif kind == "op":
                    results.append(self.op(op[1], op[2], log))
                elif kind == "equilibrium":
                    try:
                        equilibria.append(self.equilibrium(_chained(op[1], equilibria), log))
                        results.append(equilibria[-1])
                    except _Failure as f:
                        f.message = f"{op[1].get('label', 'example')}: {f.message}"
                        raise
                elif kind == "probe":
                    results.append(self.probe(log))
                elif kind == "get":
                    results.append(self.get(op[1], op[2]))
                elif kind == "plot":
                    results.append(self.cur_plot())
                else:
                    raise _Failure("error", f"unknown worker operation {kind!r}", str(kind))
        except _Failure as f:
            return {"ok": False, "kind": f.kind, "message": f.message, "command": f.command, "log": _join(log),
                    "cpu": time.process_time() - cpu0}
        return {"ok": True, "results": results, "log": _join(log), "cpu": time.process_time() - cpu0}


def _chained(spec: dict, results: list) -> dict:
    """A spec that starts where an earlier equilibrium of this request ended (``u0_from``: its index among the
    request's equilibria; ``results``: theirs): that u as
    the start state (the capacitors' initial conditions; the .nodeset of method "op"), e.g. the nudged phase
    from the free one without a round trip between them."""
    j = spec.get("u0_from")
    if j is None:
        return spec
    u0 = results[j]["u"]
    alters = list(spec["alters"])
    if spec["method"] != "op":
        alters += list(zip(spec["ic_keys"], u0.tolist()))
    return {**spec, "alters": alters, "u0": u0.tolist(), "warm": True}


class _Failure(Exception):
    def __init__(self, kind: str, message: str, command: str):
        super().__init__(message)
        self.kind, self.message, self.command = kind, message, command


def _join(lines) -> str:
    return "\n".join(l.partition(" ")[2] if l.startswith(("stdout ", "stderr ")) else l for l in lines)


def worker_main(r: int, w: int) -> None:
    """The child's loop (started by ``NgspiceSession``): one reply per request, until EOF."""
    try:
        engine = _Engine()
        failure = None
    except Exception as e:  # reported to the parent on the first request
        engine, failure = None, f"{type(e).__name__}: {e}"
    while True:
        try:
            ops = read_frame(r, None)
        except EOFError:
            return
        if engine is None:
            reply = {"ok": False, "kind": "fatal", "message": failure, "command": "start", "log": ""}
        else:
            try:
                reply = engine.run(ops)
            except Exception as e:  # a bug here must not hang the parent
                reply = {"ok": False, "kind": "error", "message": f"worker: {type(e).__name__}: {e}",
                         "command": str(ops[:1])[:200], "log": _join(engine.take_log())}
        data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        write_all(w, struct.pack("<Q", len(data)) + data)
        if reply.get("kind") in ("fatal", "netlist"):
            return  # the parent starts a fresh worker
