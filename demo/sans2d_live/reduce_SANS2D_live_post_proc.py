"""Demo post-processing script for the SANS2D sample streamed live (ADARA or Kafka): after every chunk, a PNG and a
NeXus file of the accumulation in ``$LIVEREDUCE_OUTPUT_DIR`` (default ``livereduce_output``), written atomically.

The PNG shows what a SANS scientist reads: the rear detector as an image in x/y (metres, log colour scale) and the
time-of-flight spectrum, titled with the run, its events and the proton charge (µA·h, from the pulses' charges
in pC where the stream carries them: ADARA does, Kafka's ev44 and the SANS2D sample file do not).

Pixel positions: none of the sources carries SANS2D's geometry (the sample file holds only its events, the fake
SMS's GEOMETRY packet is a placeholder grid of which the ADARA listener reads only the detector ids, and Kafka's
run start has only a detector-spectrum map), so the image places the pixels at the nominal positions of SANS2D's
instrument definition, ``SANS2D_Definition_Tubes.xml`` (Mantid, instrument/, valid from 2014-02-01), and its
title says so:

* each detector has 120 horizontal tubes of 512 pixels; the event ids are spectrum numbers: 1..8 the monitors,
  then the rear detector's tubes, then the front detector's, 512 consecutive ids per tube, the tubes in the order
  of the IDF's detector ids ``dgttppp``, in which "left" and "right" tubes alternate from the bottom up (Mantid's
  SANSTubeCalibration names tube ``k`` "left"/"right" ``k // 2`` the same way). The run's wiring table is not
  in the sample file; in this order its beam stop and the beam stop's arm come out undistorted;
* left tubes at y = -0.48195 .. 0.47385 m and right tubes at y = -0.473855 .. 0.48195 m, 60 each (consecutive
  tubes 8.1 mm apart); pixels at x = -0.5192 .. 0.5222 m in left tubes and -0.5222 .. 0.5192 m in right ones
  (the IDF's ``<locations>``); the detector at its default place, centred on the beam (its motors not applied).

The front detector's position changes from experiment to experiment: its events are counted in the title, not
drawn. The NeXus file holds the counts per pixel id, the spectrum and the image (``rear_detector``, x and y bin
edges in m), the run metadata and logs the engine sets on the accumulation, and the beam monitors' events of the
latest chunk as ``NXmonitor`` groups (``livereduce-fake-sms --monitor-events``, a Kafka ``<INSTRUMENT>_monitors``
topic).
"""

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import scipp as sc
from matplotlib.colors import LogNorm

from livereduce.outputs import save_figure, save_nexus

TUBES, TUBE_PIXELS = 120, 512
REAR_IDS = tuple(sc.scalar(first, unit=None, dtype="int32") for first in (9, 9 + TUBES * TUBE_PIXELS))
"""First event id of the rear detector (spectra 1..8 are the monitors) and of the front detector."""
BIN_PIXELS, BIN_TUBES = 8, 2
"""Pixels along a tube and tubes per bin of the image: 16.3 mm x 16.2 mm, a whole number of each tube's pixels
in every bin (no aliasing stripes from the left and right tubes' 3 mm offset)."""


def rear_detector_positions() -> tuple[np.ndarray, np.ndarray]:
    """Nominal x and y of the rear detector's pixels (see the module docstring), float64 [m], shape (61440,), in
    the order of their event ids (from ``REAR_IDS[0]``): tube by tube from the bottom, the left tubes even."""
    left = np.arange(TUBES) % 2 == 0
    y = np.where(left, np.linspace(-0.48195, 0.47385, 60).repeat(2), np.linspace(-0.473855, 0.48195, 60).repeat(2))
    x = np.where(left[:, None], np.linspace(-0.5192, 0.5222, TUBE_PIXELS), np.linspace(-0.5222, 0.5192, TUBE_PIXELS))
    return x.ravel(), np.repeat(y, TUBE_PIXELS)


def rear_detector_image(pixels: sc.DataArray) -> sc.DataArray:
    """The rear detector's counts per pixel binned by position onto a regular grid.

    Args:
        pixels: counts per event id (the proc script's ``pixels``: bin edges ``event_id``, int32, covering the rear
            detector's ids ``REAR_IDS[0]`` .. ``REAR_IDS[1] - 1``).

    Returns:
        counts, dims (y, x), with bin-edge coordinates ``x`` and ``y`` [m], BIN_PIXELS pixel pitches by BIN_TUBES
        tube pitches per bin, the lowest edges a quarter pitch below the lowest pixel (none on an edge).
    """
    counts = pixels["event_id", REAR_IDS[0] : REAR_IDS[1]]
    x, y = rear_detector_positions()
    edges = {}
    for name, values, pitch, per_bin in (
        ("y", y, (y.max() - y.min()) / (TUBES - 1), BIN_TUBES),
        ("x", x, x[1] - x[0], BIN_PIXELS),
    ):
        low = values.min() - pitch / 4
        count = int(np.ceil((values.max() - low) / (pitch * per_bin)))
        edges[name] = sc.array(dims=[name], values=low + pitch * per_bin * np.arange(count + 1), unit="m")
    by_pixel = sc.DataArray(
        sc.array(dims=["pixel"], values=counts.values, unit=counts.unit),
        coords={"x": sc.array(dims=["pixel"], values=x, unit="m"), "y": sc.array(dims=["pixel"], values=y, unit="m")},
    )
    return by_pixel.hist(y=edges["y"], x=edges["x"])


def charge_label(accumulation: sc.DataGroup) -> str:
    """The proton charge of the accumulation in µA·h (the proc script's sum of the pulses' charges, pC), or why
    there is none."""
    if "proton_charge" not in accumulation:
        return "no proton charge in the stream"
    return f"proton charge {accumulation['proton_charge'].to(unit='uA*h').value:.3g} µA·h"


out_dir = Path(os.environ.get("LIVEREDUCE_OUTPUT_DIR", "livereduce_output")).absolute()
out_dir.mkdir(parents=True, exist_ok=True)
pixels, tof = input["pixels"], input["tof"]
run = int(pixels.coords["run_number"].value) if "run_number" in pixels.coords else 0
stem = out_dir / f"SANS2D_{run}_live"
events = float(pixels.values.sum(dtype=np.float64))

if events > 0:  # nothing to show before the first events of a run (e.g. waiting for a run start)
    image = rear_detector_image(pixels)
    front = float(pixels["event_id", REAR_IDS[1] :].values.sum(dtype=np.float64))
    figure, (detector, spectrum) = plt.subplots(1, 2, figsize=(12, 5), width_ratios=(1.15, 1))
    figure.subplots_adjust(left=0.06, right=0.98, bottom=0.11, top=0.83, wspace=0.2)  # tight_layout: 0.4 s more
    figure.suptitle(f"SANS2D run {run}: {events:,.0f} events, {charge_label(input)}")
    viridis = plt.get_cmap("viridis")
    mesh = detector.pcolormesh(
        image.coords["x"].values,
        image.coords["y"].values,
        image.values,
        norm=LogNorm(vmin=1, vmax=max(float(image.values.max()), 10)),
        cmap=viridis.with_extremes(bad=viridis(0)),  # no counts (masked by the log scale): the lowest colour
    )
    width, height = ((image.coords[name][1] - image.coords[name][0]).to(unit="mm").value for name in ("x", "y"))
    figure.colorbar(mesh, ax=detector, label=f"counts per bin of {width:.1f} mm x {height:.1f} mm")
    detector.set_aspect("equal")
    detector.set(
        title=f"rear detector: {image.values.sum(dtype=np.float64):,.0f} events (front: {front:,.0f}, not drawn)\n"
        "nominal IDF pixel positions: the stream carries none",
        xlabel="x [m]",
        ylabel="y [m]",
    )
    spectrum.step(sc.midpoints(tof.coords["event_time_offset"]).values, tof.values, where="mid")
    spectrum.set(title="both detectors", xlabel="time of flight [µs]", ylabel="counts per bin", xlim=(0, None))
    save_figure(figure, stem.with_suffix(".png"), dpi=80)
    plt.close(figure)

    # arrays of rank >= 1 only: the proton charge is in the title
    save_nexus(sc.DataGroup({"pixels": pixels, "tof": tof, "rear_detector": image}), stem.with_suffix(".h5"))
    print(f"Wrote {stem.with_suffix('.png')} and {stem.with_suffix('.h5')}")
output = input
