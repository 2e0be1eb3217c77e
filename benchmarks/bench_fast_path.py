"""htdemucs_ft: one stem against the whole bag, on CPU.

Writes htdemucs_ft as published (four full-size htdemucs networks, 41.98 M parameters each,
one-hot bag weights: each network gives one stem) with random weights into a temporary
Hugging Face cache, makes a stereo test track, then runs

    stemsplit TRACK -n htdemucs_ft                 (all four networks)
    stemsplit TRACK -n htdemucs_ft --stem vocals   (only the vocals network runs)

alternately, several times, offline. Prints each run's wall time and peak RSS, the medians
and their ratio, and checks that the vocals are the same samples (the fast path must not
change them).

    python benchmarks/bench_fast_path.py [--seconds 60] [--repeats 2] [--threads 2]

Numbers, not assertions: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from _common import (FULL_HTDEMUCS_KWARGS, HTDEMUCS, compare_alternately, make_track,
                     offline_env, write_hf_bag)

FT_MEMBERS = ("f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stemsplit-bench-fast-") as folder:
        work = Path(folder)
        hf_home = work / "hf"
        members = [(HTDEMUCS, [], FULL_HTDEMUCS_KWARGS, 20 + index, sig)
                   for index, sig in enumerate(FT_MEMBERS)]
        weights = [[1.0 if i == j else 0.0 for j in range(4)] for i in range(4)]
        write_hf_bag(hf_home, "htdemucs_ft", "adefossez/HTDemucs-ft", members, weights)
        track = work / "track.wav"
        make_track(track, args.seconds)
        threads = str(args.threads)
        env = {**offline_env(hf_home), "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        base = [sys.executable, "-m", "stemsplit", str(track), "-n", "htdemucs_ft",
                "--float32", "--force", "-q", "-j", threads]
        whole = [*base, "-o", str(work / "whole")]
        vocals = [*base, "--stem", "vocals", "-o", str(work / "vocals")]
        compare_alternately({"whole bag": (whole, env), "--stem vocals": (vocals, env)},
                            args.repeats, f"{args.seconds:g} s track, htdemucs_ft (4 full-size "
                            f"random-weight networks), {threads} threads")
        a, _ = soundfile.read(work / "whole" / "htdemucs_ft" / "track" / "vocals.wav",
                              dtype="float32")
        b, _ = soundfile.read(work / "vocals" / "htdemucs_ft" / "track" / "vocals.wav",
                              dtype="float32")
        print(f"  vocals max |difference|: {float(np.abs(a - b).max()):.3g}")


if __name__ == "__main__":
    main()
