"""audio-separator 0.47.1 versus stemsplit on the same VR Architecture network and track.

Writes a random-weight ``.pth`` in UVR's published format (a bare state dict, so the file has
the published size and both programs pick the same network from it):

* ``--variant hp`` (default): the older HP network of 1_HP-UVR/2_HP-UVR (123821 KiB, ASPP
  cascade, 5 branches) with band config 4band_v2, primary stem Instrumental;
* ``--variant v51``: a v5.1 network with UVR-De-Echo-Normal's widths (nout 48, nout_lstm
  128) with 4band_v3, primary stem No Echo;

makes a stereo float track, then runs, alternately and as separate processes,

    audio-separator: its VRSeparator class driven directly (tests/vr_models.oracle_stems:
                     explicit model data, the stems written before its peak normalisation)
    stemsplit TRACK --weights FILE.pth --vr-params NAME --primary-stem STEM [--nout ...]

and prints the wall time and peak RSS of each run, the medians and their ratios, and the
max |difference| between the two programs' stems.

    python benchmarks/bench_vr.py [--seconds 60] [--repeats 3] [--variant hp|v51]
        [--window-size 512]

Numbers, not assertions: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from _common import ROOT, compare_alternately, make_track

from tests.vr_models import write_aspp_pth, write_cascaded_pth  # noqa: E402

VARIANTS = {
    "hp": dict(params="4band_v2", primary="Instrumental", stems=("accompaniment", "vocals")),
    "v51": dict(params="4band_v3", primary="No Echo", nout=48, nout_lstm=128,
                stems=("no_echo", "echo")),
}

REFERENCE_SCRIPT = """
import sys, numpy as np, soundfile
sys.path.insert(0, {root!r})
from tests.vr_models import oracle_stems
primary, secondary = oracle_stems(__import__("pathlib").Path({model!r}),
                                  __import__("pathlib").Path({track!r}), {data!r},
                                  window_size={window})
for name, stem in (({first!r}, primary), ({second!r}, secondary)):
    soundfile.write({out!r} + "/" + name + ".wav", stem.T.astype(np.float32), 44100,
                    subtype="FLOAT")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="hp")
    parser.add_argument("--window-size", type=int, default=512)
    args = parser.parse_args()
    variant = VARIANTS[args.variant]

    with tempfile.TemporaryDirectory(prefix="bench-vr-") as folder:
        root = Path(folder)
        track = root / "track.wav"
        make_track(track, args.seconds)
        if args.variant == "hp":
            model = write_aspp_pth(root / "HP.pth", 123821, bins=672, seed=1)
        else:
            model = write_cascaded_pth(root / "V51.pth", 672, variant["nout"],
                                       variant["nout_lstm"], seed=1)
        data = {"vr_model_param": variant["params"], "primary_stem": variant["primary"]}
        ours_extra = []
        if "nout" in variant:
            data.update(nout=variant["nout"], nout_lstm=variant["nout_lstm"])
            ours_extra = ["--nout", str(variant["nout"]), "--nout-lstm",
                          str(variant["nout_lstm"])]
        theirs_out, ours_out = root / "theirs", root / "ours"
        theirs_out.mkdir()
        first, second = variant["stems"]
        script = REFERENCE_SCRIPT.format(root=str(ROOT), model=str(model), track=str(track),
                                         data=data, window=args.window_size,
                                         first=first, second=second, out=str(theirs_out))
        import os

        env = dict(os.environ)
        commands = {
            "audio-separator 0.47.1": ([sys.executable, "-c", script], env),
            "stemsplit": ([sys.executable, "-m", "stemsplit", str(track), "--weights",
                           str(model), "--vr-params", variant["params"], "--primary-stem",
                           variant["primary"], *ours_extra, "--window-size",
                           str(args.window_size), "--float32", "--force", "-q",
                           "-o", str(ours_out)], env),
        }
        compare_alternately(commands, args.repeats,
                            f"VR {args.variant} ({model.stat().st_size >> 20} MiB file), "
                            f"{args.seconds:g} s track")
        for name in (first, second):
            theirs = soundfile.read(theirs_out / f"{name}.wav", dtype="float32")[0]
            ours = soundfile.read(ours_out / model.stem / "track" / f"{name}.wav",
                                  dtype="float32")[0]
            length = min(len(theirs), len(ours))
            print(f"  max |difference| {name}: "
                  f"{float(np.abs(theirs[:length] - ours[:length]).max()):.2e}")


if __name__ == "__main__":
    main()
