"""The hardware side: device models, the ngspice runners and the SpiceSolver.

Exports are resolved lazily (PEP 562): the ngspice worker process imports
``circuits.ngspice_runner`` and must not pay for torch and the generator on every start.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "SimulationError": "errors", "ConvergenceError": "errors", "NgspiceUnavailable": "errors",
    "SimulationTimeout": "errors", "WorkerCrashed": "errors",
    "NgspiceSession": "ngspice_runner", "find_library": "ngspice_runner", "library_available": "ngspice_runner",
    "run_batch": "ngspice_batch", "read_raw": "ngspice_batch", "find_binary": "ngspice_batch",
    "SpiceSolver": "spice_solver", "SpiceConfig": "spice_config", "DeviceEulerSolver": "device_solver",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'circuits' has no attribute {name!r}")
