"""Demo post-processing script: runs on the accumulation (``input``) after every chunk.

Writes a PNG plot and a NeXus file (``NXentry`` with one ``NXdata`` per member: ``pixels``, ``tof``; NeXpy,
h5web and ``scippnexus.load`` read it) of the reduced data to ``$LIVEREDUCE_OUTPUT_DIR`` (default
``livereduce_output`` in the working directory) and logs where. Both are written with ``livereduce.outputs``: a
temporary file, fsync, then an atomic rename, so that a reader never sees a half-written file, even when the
daemon is killed in the middle of a write.
"""

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import scipp as sc

from livereduce.outputs import save_figure, save_nexus

out_dir = Path(os.environ.get("LIVEREDUCE_OUTPUT_DIR", "livereduce_output")).absolute()
out_dir.mkdir(parents=True, exist_ok=True)
run = int(input["pixels"].coords["run_number"].value) if "run_number" in input["pixels"].coords else 0
stem = out_dir / f"ADARA_FakeEvent_{run}_live"

figure, (image, spectrum) = plt.subplots(1, 2, figsize=(11, 4.5))
counts = input["pixels"].values
shown = image.imshow(counts, origin="lower", norm=matplotlib.colors.LogNorm(vmin=1, vmax=max(counts.max(), 1)))
figure.colorbar(shown, ax=image, label="counts")
image.set(title=f"Run {run}: counts per pixel ({counts.sum():.0f} events)", xlabel="x pixel", ylabel="y pixel")
tof = input["tof"]
centres = sc.midpoints(tof.coords["event_time_offset"]).values
spectrum.step(centres, tof.values, where="mid")
spectrum.set(title="Time of flight", xlabel="time of flight [µs]", ylabel="counts")
figure.tight_layout()
save_figure(figure, stem.with_suffix(".png"), dpi=80)
plt.close(figure)

save_nexus(input, stem.with_suffix(".h5"))
print(f"Wrote {stem.with_suffix('.png')} and {stem.with_suffix('.h5')}")
output = input
