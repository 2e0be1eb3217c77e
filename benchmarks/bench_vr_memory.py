"""Peak memory of a VR model against track length, through the stemsplit command line.

The whole path a user runs: ffmpeg decode to the spool, the pre-pass for the spectrogram's
maximum, the chunks, the encoders. A random-weight v5.1 network with UVR-De-Echo-Normal's
widths (nout 48, nout_lstm 128; band config 4band_v3) in UVR's published format, on tracks
of the given lengths; prints wall time and peak RSS of each, and each peak against the
first's (the issue's bound: 10 minutes within 10% of 1 minute).

    python benchmarks/bench_vr_memory.py [--minutes 1 10] [--check]

``--check`` exits 1 if a longer track peaks more than 10% above the first. Numbers, not
assertions: about 10 minutes on a 2-core CPU with the defaults.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from _common import make_track, measured_run

from tests.vr_models import write_cascaded_pth  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a peak is more than 10%% over the first track's")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-vr-memory-") as folder:
        root = Path(folder)
        model = write_cascaded_pth(root / "V51.pth", 672, 48, 128, seed=1)
        peaks = []
        for minutes in args.minutes:
            track = root / f"track-{minutes:g}.wav"
            make_track(track, 60 * minutes)
            command = [sys.executable, "-m", "stemsplit", str(track), "--weights", str(model),
                       "--vr-params", "4band_v3", "--primary-stem", "No Echo", "--nout", "48",
                       "--nout-lstm", "128", "--force", "-q", "-o", str(root / "out")]
            wall, peak = measured_run(command, dict(os.environ))
            peaks.append(peak)
            print(f"{minutes:6g} min: {wall:8.1f} s, peak RSS {peak:7.0f} MiB "
                  f"({peak / peaks[0]:.3f}x the first)", flush=True)
            track.unlink()
    if args.check and max(peaks) > 1.10 * peaks[0]:
        raise SystemExit("a longer track peaked more than 10% above the first")


if __name__ == "__main__":
    main()
