"""Study (c): final error vs device-to-device spread, cycle-to-cycle (write) noise and the
fraction of stuck devices, per preset, one field at a time from the preset's own values.

Each axis is swept alone (the other fields stay at the preset's values): ``g_dtod`` (d2d gain
spread, relative), ``write_noise_std`` (c2c programming error, fraction of the range; the PCM
preset's conductance-dependent noise polynomial replaces it, so PCM sweeps only the others)
and ``stuck_min_fraction`` (devices stuck at g_min). Small scale: iris 4-10-10-3, lr 0.05,
3 seeds (each its own device instance), 3 epochs, 300/12 free/nudged steps.
"""
from __future__ import annotations

import dataclasses

from .variability import Point

PRESETS = ("taox_hfox_rram", "pcm")
AXES = {"g_dtod": (0.0, 0.1, 0.3), "write_noise_std": (0.0, 0.02, 0.05), "stuck_min_fraction": (0.0, 0.05, 0.2)}


def points(seeds: int = 3, epochs: int = 3, presets=PRESETS, axes=None) -> list[Point]:
    from circuits.devices import DeviceModel, load_preset

    fields = {f.name for f in dataclasses.fields(DeviceModel)}
    out = []
    for name in presets:
        base = dataclasses.asdict(load_preset(name))
        for field, values in (axes or AXES).items():
            if field not in fields or (field == "write_noise_std" and base.get("write_noise_coeffs")):
                continue  # a field this device model lacks, or noise the preset gives by its polynomial
            for v in values:
                out.append(Point(dataset="iris", hidden=(10, 10), scheme="mlff", device=base, overrides={field: v},
                                 seeds=tuple(range(seeds)), epochs=epochs, lr=0.05, free_steps=300, nudged_steps=12))
    return out
