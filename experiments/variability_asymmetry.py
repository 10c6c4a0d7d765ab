"""Study (d): how d2d mismatch of a symmetric weight's two devices makes the realised weights
asymmetric, ||W - W^T|| / ||W|| per epoch, and what that does to EqProp (which assumes W = W^T).

Every weight W_ij = W_ji of the Hopfield net is two device pairs (i->j and j->i); each device
has a fixed gain 1 + g_dtod * N(0, 1) (``DeviceModel.g_dtod``), so the directions differ and
the relaxation runs on a directed network. Kept short and EqProp-only (DEEP's directed rule
under the same mismatch is studied separately): iris 4-10-10-3, continuous ideal devices, the
gain spread swept, 5 seeds (each its own device instance), 5 epochs.
"""
from __future__ import annotations

import dataclasses

from .variability import Point

G_DTOD = (0.0, 0.05, 0.1, 0.2, 0.4)


def points(seeds: int = 5, epochs: int = 5, g_dtod=G_DTOD) -> list[Point]:
    from circuits.devices import load_preset

    base = dataclasses.asdict(load_preset("ideal"))
    return [Point(dataset="iris", hidden=(10, 10), scheme="mlff", device=base, overrides={"g_dtod": g},
                  seeds=tuple(range(seeds)), epochs=epochs, lr=0.05, free_steps=300, nudged_steps=12)
            for g in g_dtod]


def finding(results: list[dict]) -> list[str]:
    lines = []
    for r in results:
        asym = [s["realised_asymmetry"] for s in r["seeds"]]
        first = sum(a[0] for a in asym) / len(asym)
        last = sum(a[-1] for a in asym) / len(asym)
        lines.append(f"g_dtod {r['point']['overrides']['g_dtod']}: ||W - W^T||/||W|| {first:.3f} after epoch 1, "
                     f"{last:.3f} after epoch {len(asym[0])}; test error {r['test_error']:.3f} ± "
                     f"{r['test_error_std']:.3f}")
    return lines
