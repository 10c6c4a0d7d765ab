"""`eqprop device`: device presets from measured data (argument parsing and printing only)."""
from __future__ import annotations

from pathlib import Path

from .checks import output_file, positive_float


def cmd_fit(args) -> int:
    from circuits.device_csv import device_to_toml, fit_pulse_table
    from circuits.devices import load_device_file
    out = output_file(args.out)
    if out.exists() and not args.force:
        raise ValueError(f"--out {out} exists; give --force to replace it")
    device = fit_pulse_table(args.csv, name=args.name or out.stem, source=args.source or "", w_max=args.w_max)
    text = device_to_toml(device, f"Fitted by `eqprop device fit {args.csv}` (circuits.device_csv).\n"
                                  "Check the fit against your data before quoting it; add measured d2d/noise fields.")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    load_device_file(out)  # what was written loads back
    print(f"device {device.name}: g_min {device.g_min:.4g} S, g_max {device.g_max:.4g} S, step {device.dg_min:.4g} "
          f"of the range, asymmetry {device.asymmetry:+.3f}, nonlinearity up {device.nonlinearity_up:.3f} / down "
          f"{device.nonlinearity_down:.3f}, step spread {device.dg_min_std:.3f}")
    print(f"written to {out} (use it as --device-preset {out} where a TOML path is accepted)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("device", help="device presets from measured pulse responses",
                       description="Device presets (circuits.DeviceModel) from your own device data.")
    dsub = p.add_subparsers(dest="device_command", metavar="ACTION")
    dsub.required = True
    f = dsub.add_parser("fit", help="fit a pulse-rule preset to a CSV of G vs pulse number (up and down sweeps)",
                        description="Fit the pulse rule (first step, asymmetry, soft-bound nonlinearity, step "
                                    "spread) to a CSV with header direction,pulse,g[,cycle] (g in siemens) and write "
                                    "a device TOML; spice_models/examples/pulse_response_example.csv shows the format.")
    f.add_argument("csv", type=Path, help="the pulse-response table")
    f.add_argument("--out", required=True, help="the device TOML to write")
    f.add_argument("--name", help="device name (default: the output file's stem)")
    f.add_argument("--source", help="citation of the measurement (recorded in the preset)")
    f.add_argument("--w-max", type=positive_float, default=1.0, help="weight mapped onto the full range (default 1)")
    f.add_argument("--force", action="store_true", help="replace --out if it exists")
    f.set_defaults(func=cmd_fit)
