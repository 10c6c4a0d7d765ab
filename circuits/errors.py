"""Errors of the simulation side: each carries what is needed to reproduce the failure.

Following Hdl21/VlsirTools, a failed run raises one error that holds the netlist, the
command that failed and ngspice's own log, so a user can paste the netlist into ngspice
and see the same thing. ``str(error)`` shows the message, the command and the log's tail;
the full texts stay on the attributes.
"""
from __future__ import annotations

LOG_TAIL_LINES = 25


class SimulationError(RuntimeError):
    """ngspice did not produce the requested result.

    Attributes: ``netlist`` (text or None), ``log`` (ngspice's stdout/stderr of the
    failing call), ``command`` (the control command or "load"), ``rundir`` (subprocess
    route only: where the files were kept, or None).
    """

    def __init__(self, message: str, *, netlist: str | None = None, log: str = "",
                 command: str | None = None, rundir: str | None = None):
        super().__init__(message)
        self.message = message
        self.netlist = netlist
        self.log = log or ""
        self.command = command
        self.rundir = rundir

    def __str__(self) -> str:
        parts = [self.message]
        if self.command:
            parts.append(f"command: {self.command}")
        if self.rundir:
            parts.append(f"run directory: {self.rundir}")
        lines = [l for l in self.log.splitlines() if l.strip()]
        if lines:
            tail = lines[-LOG_TAIL_LINES:]
            more = f" (last {len(tail)} of {len(lines)} lines; full text in .log)" if len(lines) > len(tail) else ""
            parts.append("ngspice log" + more + ":\n  " + "\n  ".join(tail))
        return "\n".join(parts)

    def __reduce__(self):  # keep the keyword fields when pickled (worker pools)
        return (_rebuild, (type(self), self.message, self.netlist, self.log, self.command, self.rundir))


def _rebuild(cls, message, netlist, log, command, rundir):
    return cls(message, netlist=netlist, log=log, command=command, rundir=rundir)


class NgspiceUnavailable(SimulationError):
    """The ngspice shared library or binary cannot be found or started."""


class WorkerCrashed(SimulationError):
    """The worker process hosting libngspice died or reached an unrecoverable state.

    The session starts a fresh worker on its next call; the loaded circuit is gone.
    """


class SimulationTimeout(SimulationError):
    """A call ran past its time limit; the worker was stopped (and restarts on the next call)."""


class ConvergenceError(SimulationError):
    """An analysis ran but did not converge (ngspice aborted it or produced no data)."""
