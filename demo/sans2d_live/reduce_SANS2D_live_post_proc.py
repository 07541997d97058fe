"""Demo post-processing script for the SANS2D sample streamed live (ADARA or Kafka): after every chunk, a PNG plot
and a NeXus file of the accumulation in ``$LIVEREDUCE_OUTPUT_DIR`` (default ``livereduce_output``), written
atomically. The NeXus file also holds the run metadata and logs the engine sets on the accumulation, and the beam
monitors' events of the latest chunk as ``NXmonitor`` groups (``livereduce-fake-sms --monitor-events``, a Kafka
``<INSTRUMENT>_monitors`` topic)."""

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import scipp as sc

from livereduce.outputs import save_figure, save_nexus

out_dir = Path(os.environ.get("LIVEREDUCE_OUTPUT_DIR", "livereduce_output")).absolute()
out_dir.mkdir(parents=True, exist_ok=True)
pixels, tof = input["pixels"], input["tof"]
run = int(pixels.coords["run_number"].value) if "run_number" in pixels.coords else 0
stem = out_dir / f"SANS2D_{run}_live"

if pixels.values.sum() > 0:  # nothing to show before the first events of a run (e.g. waiting for a run start)
    figure, (per_pixel, spectrum) = plt.subplots(1, 2, figsize=(11, 4.5))
    per_pixel.plot(pixels.coords["event_id"].values[:-1], pixels.values, linewidth=0.5)
    per_pixel.set(title=f"Run {run}: {pixels.values.sum():.0f} events", xlabel="pixel id", ylabel="counts")
    spectrum.step(sc.midpoints(tof.coords["event_time_offset"]).values, tof.values, where="mid")
    charge = f" ({input['proton_charge'].value:.3g} pC)" if "proton_charge" in input else ""
    spectrum.set(title=f"Time of flight{charge}", xlabel="µs", ylabel="counts")
    figure.tight_layout()
    save_figure(figure, stem.with_suffix(".png"), dpi=80)
    plt.close(figure)

    save_nexus(sc.DataGroup({"pixels": pixels, "tof": tof}), stem.with_suffix(".h5"))  # arrays of rank >= 1 only
    print(f"Wrote {stem.with_suffix('.png')} and {stem.with_suffix('.h5')}")
output = input
