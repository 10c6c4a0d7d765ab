"""The subprocess route: ``ngspice -b`` with a ``.control`` block and binary raw files.

Independent of libngspice and PySpice: the fallback when the shared library is absent
or misbehaves, and the cross-check of the shared-library route (both must agree). Binary
raw output keeps full float64 precision (``wrdata``/``print`` keep about 8 digits).

``run_batch(netlist, control)`` appends ``control`` as a ``.control`` block; every bare
``write`` command there becomes ``write <rundir>/out<k>.raw``, and the plots of those
files come back in order. ``batch_op`` and ``batch_two_phase`` are the two analyses the
project needs. A failure raises ``SimulationError`` with the netlist, ngspice's output
and the run directory (kept on failure). Commands and the output patterns that mean
failure are ``ngspice_protocol``'s, shared with the shared-library route.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .errors import ConvergenceError, NgspiceUnavailable, SimulationError, SimulationTimeout
from .ngspice_protocol import (
    CLEAR_BREAKPOINTS,
    CONVERGENCE_RE,
    OP_RESCUED_MESSAGE,
    RESUME,
    STOP_WHEN,
    alter_command,
    failure_lines,
    op_rescued,
    optran_command,
    stop_command,
    tran_line,
)


def find_binary() -> str | None:
    return shutil.which("ngspice")


@dataclasses.dataclass
class RawPlot:
    """One plot of a raw file: ``data[name]`` is a float64 (or complex) array per vector.

    Voltage vectors are reachable by node name too (``v(u1)`` and ``u1``).
    """

    title: str
    name: str
    flags: str
    variables: list[tuple[str, str]]  # (name, type) in file order
    data: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        key = name.lower()
        if key in self.data:
            return self.data[key]
        if f"v({key})" in self.data:
            return self.data[f"v({key})"]
        raise KeyError(f"no vector {name!r} in plot {self.name!r} (has {', '.join(list(self.data)[:8])}...)")

    def last(self, names) -> np.ndarray:
        return np.array([float(np.real(self[n][-1])) for n in names])


def read_raw(source) -> list[RawPlot]:
    """Every plot of an ngspice raw file (binary or ascii), from a path or bytes."""
    buf = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    plots, pos = [], 0
    while pos < len(buf):
        header, variables = {}, []
        while True:  # header lines up to "Binary:" or "Values:"
            end = buf.index(b"\n", pos)
            line = buf[pos:end].decode("latin-1").rstrip("\r")
            pos = end + 1
            if not line.strip():
                continue
            key, _, val = line.partition(":")
            key = key.strip().lower()
            if key == "variables":
                n = int(header["no. variables"])
                for _ in range(n):
                    end = buf.index(b"\n", pos)
                    parts = buf[pos:end].decode("latin-1").split()
                    pos = end + 1
                    variables.append((parts[1].lower(), parts[2] if len(parts) > 2 else ""))
                continue
            if key in ("binary", "values"):
                break
            header[key] = val.strip()
        n_var, n_pts = int(header["no. variables"]), int(header["no. points"])
        complex_ = "complex" in header.get("flags", "").lower()
        if key == "binary":
            width = 2 if complex_ else 1
            count = n_var * n_pts * width
            arr = np.frombuffer(buf, dtype="<f8", count=count, offset=pos).reshape(n_pts, n_var * width)
            pos += count * 8
            cols = arr[:, 0::2] + 1j * arr[:, 1::2] if complex_ else arr
        else:
            cols, pos = _ascii_values(buf, pos, n_var, n_pts, complex_)
        data = {name: np.array(cols[:, k]) for k, (name, _) in enumerate(variables)}
        plots.append(RawPlot(header.get("title", ""), header.get("plotname", ""), header.get("flags", ""),
                             variables, data))
        while pos < len(buf) and buf[pos:pos + 1] in (b"\n", b"\r"):
            pos += 1
    return plots


def _ascii_values(buf: bytes, pos: int, n_var: int, n_pts: int, complex_: bool):
    """The ascii ("Values:") section: per point, an index then one value per line."""
    tokens, out = [], np.zeros((n_pts, n_var), dtype=complex if complex_ else float)
    text = buf[pos:].decode("latin-1")
    lines = iter(text.splitlines(keepends=True))
    consumed = 0
    for p in range(n_pts):
        for v in range(n_var):
            line = next(lines)
            consumed += len(line)
            while not line.strip():
                line = next(lines)
                consumed += len(line)
            tokens = line.split()
            val = tokens[-1]
            if complex_:
                re_, im = val.split(",")
                out[p, v] = complex(float(re_), float(im))
            else:
                out[p, v] = float(val)
    return out, pos + len(text[:consumed].encode("latin-1"))


@dataclasses.dataclass
class BatchResult:
    plots: list[RawPlot]
    log: str
    rundir: str | None  # kept only when asked (keep=True)


def run_batch(netlist: str, control: list[str], timeout: float = 600.0, binary: str | None = None,
              keep: bool = False, rundir: str | None = None) -> BatchResult:
    """Run ``ngspice -b`` on ``netlist`` with ``control`` commands; returns the written plots.

    Bare ``write`` commands in ``control`` write the current plot to the next raw file.
    """
    binary = binary or find_binary()
    if not binary:
        raise NgspiceUnavailable("ngspice binary not found (apt-get install ngspice)")
    workdir = Path(rundir) if rundir else Path(tempfile.mkdtemp(prefix="eqprop-ngspice-"))
    workdir.mkdir(parents=True, exist_ok=True)
    raws, ctl = [], ["set filetype=binary"]
    for cmd in control:
        if cmd.strip() == "write":
            raws.append(workdir / f"out{len(raws)}.raw")
            ctl.append(f"write {raws[-1]}")
        else:
            ctl.append(cmd)
    lines = [l for l in netlist.splitlines() if l.strip().lower() != ".end"]
    text = "\n".join(lines + [".control"] + ctl + ["quit", ".endc", ".end"]) + "\n"
    cir = workdir / "circuit.cir"
    cir.write_text(text)
    try:
        proc = subprocess.run([binary, "-b", str(cir)], cwd=workdir, capture_output=True, text=True,
                              timeout=timeout, env=dict(os.environ, LC_ALL="C"))
    except subprocess.TimeoutExpired as e:
        out = e.stdout or ""
        if isinstance(out, bytes):  # TimeoutExpired keeps bytes even with text=True
            out = out.decode(errors="replace")
        raise SimulationTimeout(f"ngspice -b ran past {timeout:.0f} s", netlist=text, log=out,
                                command=f"{binary} -b {cir}", rundir=str(workdir)) from None
    log = proc.stdout + proc.stderr
    paused = any(STOP_WHEN in c for c in control)
    bad = failure_lines(log.splitlines(), paused)
    missing = [str(p) for p in raws if not p.exists()]
    if bad or missing or proc.returncode not in (0, 1):
        cls = ConvergenceError if any(CONVERGENCE_RE.search(b) for b in bad) else SimulationError
        why = "; ".join(dict.fromkeys(bad[:3])) or (f"missing raw files {missing}" if missing
                                                     else f"exit code {proc.returncode}")
        raise cls(f"ngspice -b failed: {why}", netlist=text, log=log, command=f"{binary} -b {cir}",
                  rundir=str(workdir))
    plots = [read_raw(p)[-1] for p in raws]
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return BatchResult(plots, log, str(workdir) if keep else None)


def batch_op(netlist: str, nodes, alters: dict[str, float] | None = None, tau: float | None = None,
             **kw) -> np.ndarray:
    """DC operating point (after optional alters); the voltages of ``nodes``. tau (s): the circuit's time
    constant, to which ngspice's .op rescue is scaled as in the library route (optran_command); an answer
    that rescue gave is no fixed point and raises ConvergenceError, as method "op" does."""
    ctl = [] if tau is None else [optran_command(tau)]
    ctl += [alter_command(k, v) for k, v in (alters or {}).items()] + ["op", "write"]
    res = run_batch(netlist, ctl, **kw)
    if op_rescued(res.log.splitlines()):
        raise ConvergenceError(f"ngspice -b: {OP_RESCUED_MESSAGE}", netlist=netlist, log=res.log, command="op")
    return res.plots[0].last(list(nodes))


def batch_tran(netlist: str, nodes, tstep: float, tstop: float, tmax: float | None = None, uic: bool = False,
               alters: dict[str, float] | None = None, **kw) -> np.ndarray:
    """Transient analysis; the voltages of ``nodes`` at tstop."""
    ctl = [alter_command(k, v) for k, v in (alters or {}).items()]
    ctl += [tran_line(tstep, tstop, 0.0, tmax, uic), "write"]
    return run_batch(netlist, ctl, **kw).plots[0].last(list(nodes))


def batch_two_phase(netlist: str, nodes, tstep: float, t1: float, t2: float, nudge: dict[str, float],
                    tmax: float | None = None, uic: bool = True, alters: dict[str, float] | None = None,
                    **kw) -> tuple[np.ndarray, np.ndarray]:
    """Both EqProp phases in one transient (as ``NgspiceSession.tran_two_phase``)."""
    nodes = list(nodes)
    ctl = [alter_command(k, v) for k, v in (alters or {}).items()]
    ctl += [stop_command(t1), tran_line(tstep, t2, 0.0, tmax, uic), "write"]
    ctl += [alter_command(k, v) for k, v in nudge.items()] + [CLEAR_BREAKPOINTS, RESUME, "write"]
    res = run_batch(netlist, ctl, **kw)
    free, nudged = res.plots
    if free["time"][-1].real < t1 * (1 - 1e-9) or nudged["time"][-1].real < t2 * (1 - 1e-9):
        raise ConvergenceError("two-phase transient stopped early", netlist=netlist, log=res.log)
    return free.last(nodes), nudged.last(nodes)
