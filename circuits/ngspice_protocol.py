"""What both ngspice routes say to ngspice and how they read its answers.

The shared-library route (``ngspice_worker``, driven by ``ngspice_runner``) and the
``ngspice -b`` route (``ngspice_batch``) send the same control commands and must judge
ngspice's output alike, else the cross-check between them would test two dialects. So the
command syntax (numbers, alter, tran, the two-phase breakpoint) and the output patterns
that mean failure live here once. Imports nothing heavy: the worker process loads it.
"""
from __future__ import annotations

import re

# Output lines that mean a command failed. Warnings and notes ("Note: Starting dynamic
# gmin stepping", "Warning: singular matrix" during stepping) are not failures by themselves.
ERROR_RE = re.compile(r"^\s*error|aborted|cannot recover|no such command|not parsed|doanalyses", re.I)
# ERROR_RE's unanchored words, for failure_lines' test without the regex (the worker tests every output line)
_ERROR_WORDS = ("aborted", "cannot recover", "no such command", "not parsed", "doanalyses")
# what a ``stop when`` breakpoint prints: expected, not a failure, while one is set
PAUSE_RE = re.compile(r"pause requested|simulation interrupted", re.I)
# failures after which libngspice must be unloaded (the worker process is replaced)
FATAL_RE = re.compile(r"cannot recover|awaits to be detached|not parsed", re.I)
# failures of an analysis itself (the batch route raises ConvergenceError for them)
CONVERGENCE_RE = re.compile(r"abort|doanalyses", re.I)
DATA_ROWS = "No. of Data Rows"  # printed when an analysis stored data
# ngspice >= 37 when Newton, gmin and source stepping failed and its "optran" transient gave the .op answer
# (on stderr; "Note: Transient op finished successfully" follows): the transient's end, no fixed point
OP_RESCUED_RE = re.compile(r"Transient op started", re.I)

# the two-phase transient: stop at t1, alter the nudge, clear the breakpoint, resume
STOP_WHEN = "stop when"
CLEAR_BREAKPOINTS = "delete all"  # else ngspice stops again at once on resume
RESUME = "resume"


def fmt(x) -> str:
    """numpy 2 reprs (np.float64(..)) break ngspice; repr(float) round-trips exactly."""
    return repr(float(x))


def alter_command(name: str, value: float) -> str:
    """The alter line for an element value; ``name[param]`` alters an instance parameter.

    Controlled sources (G, F, E, H) take ``@name[gain]`` (docs/netlist-format.md sec. 8),
    R, C, L, I, V take their value directly; ``cn5[ic]`` gives ``alter @cn5[ic]=v``.
    """
    if "[" in name:
        return f"alter @{name}={fmt(value)}"
    if name[:1].lower() in "gfeh":
        return f"alter @{name}[gain]={fmt(value)}"
    return f"alter {name} = {fmt(value)}"


def tran_line(tstep, tstop, tstart=0.0, tmax=None, uic=False) -> str:
    line = f"tran {fmt(tstep)} {fmt(tstop)}"
    if tmax is not None or tstart:
        line += f" {fmt(tstart)}"
    if tmax is not None:
        line += f" {fmt(tmax)}"
    return line + (" uic" if uic else "")


def stop_command(t: float) -> str:
    """The breakpoint that pauses a transient once past time t."""
    return f"{STOP_WHEN} time > {fmt(t)}"


def with_nodeset(netlist: str, nodeset: dict[str, float]) -> str:
    """The netlist with its ``.nodeset`` lines replaced by ``nodeset``."""
    lines = [l for l in netlist.splitlines() if not l.lower().startswith(".nodeset")]
    while lines and not lines[-1].strip():
        lines.pop()
    if lines and lines[-1].strip().lower() == ".end":
        lines.pop()
    lines += [f".nodeset v({n})={fmt(v)}" for n, v in nodeset.items()] + [".end"]
    return "\n".join(lines) + "\n"


# Matrix solvers. ngspice >= 41 built with KLU prints which one an analysis uses; older
# builds (Debian 12's 39) print nothing and ignore ``.options klu`` without a word, so
# whether KLU is there is read from what ngspice says, never from its version number.
SOLVER_LINE_RE = re.compile(r"Using (KLU|SPARSE[^\n]*?) as Direct Linear Solver", re.I)
KLU_BUILD_RE = re.compile(r"Compiled with KLU", re.I)
VERSION_RE = re.compile(r"\*\* ngspice-(\S+)")
# a two-node circuit that asks for KLU: its op log says whether KLU was used
KLU_PROBE = "* klu probe\nR1 1 0 1\nI1 0 1 1\n.options klu=1\n.op\n.end\n"


def solver_used(log: str) -> str | None:
    """'klu' or 'sparse' as the log's last analysis reported it; None when ngspice did not say."""
    hits = SOLVER_LINE_RE.findall(log)
    return None if not hits else ("klu" if hits[-1].upper() == "KLU" else "sparse")


def op_rescued(lines) -> bool:
    """Whether these output lines say an ``.op`` was answered by ngspice's transient rescue (optran)."""
    return any(OP_RESCUED_RE.search(line) for line in lines)


# method "op" refuses a rescued answer: on a 4-6-3 net one was 1.0 from the fixed point (residual 0.48)
OP_RESCUED_MESSAGE = ("ngspice's .op did not converge (Newton, gmin and source stepping failed) and its transient "
                      "rescue (optran) gave the answer, which is no fixed point; use method 'tran+op', which follows "
                      "the dynamics first")


def failure_lines(lines, paused_ok: bool = False) -> list[str]:
    """The output lines (stripped) that say a command failed.

    paused_ok: a ``stop when`` breakpoint is set, so its pause message is expected.
    """
    return [line.strip() for line in lines
            if is_failure(line) and not (paused_ok and PAUSE_RE.search(line))]


def is_failure(line: str) -> bool:
    """``ERROR_RE.search(line)``, by plain string tests: a case-insensitive regex of unanchored alternatives tries
    each at every character, ~20k instructions per line, and the worker tests every line ngspice prints."""
    low = line.lower()
    return low.lstrip().startswith("error") or any(w in low for w in _ERROR_WORDS)


# the rescue deselected (step size 0: "Note: Optran is deselected."), for the cold polish's try
OPTRAN_OFF = "optran 1 1 1 0 0 0"


def optran_command(tau: float) -> str:
    """ngspice's last rescue of a failed ``.op`` (>= 37: after Newton, gmin and source stepping), "optran", a
    transient from the initial conditions for 10 us in steps of 100 ns, scaled to the circuit's time constant.

    Those defaults are 1e-5 tau at this project's normalised units (tau = c/g0 = 1 s): a few pseudo-transient
    steps that rescue many of the cold polish's misses cheaply. At physical units (tau = 10 ns) the same 10 us is
    1000 tau at the .op tolerances (reltol 1e-9): on an iris net with a diode clamp one such rescue ran past the
    600 s call timeout (docs/physical.md). Scaled, it is the same few steps at every unit. The first three
    arguments keep ngspice's defaults (first iteration, gmin and source stepping on); later ``option`` commands
    (the cold polish's gminsteps=0 srcsteps=0) still set those."""
    return f"optran 1 1 1 {fmt(1e-7 * tau)} {fmt(1e-5 * tau)} 0"
