"""openunmix 1.3.0 versus stemsplit on an Open-Unmix model, on CPU; and what the exact and
chunked modes cost.

The model is a folder as openunmix reads one (``--weights FOLDER``: a real one, e.g. umxhq's
four .pth files with their .json and separator.json), or by default random weights in
umxhq's published shape (``--size full``; ``tiny`` for a quick check of the script).

* Speed (``--repeats``): on a ``--seconds`` track, alternately, each run a separate process:

      stemsplit TRACK --weights FOLDER --float32            (exact mode, the default)
      python -c <openunmix: utils.load_separator(FOLDER), predict.separate, soundfile.write>

  openunmix runs from the test oracle's folder (``bash tests/umx_oracle/setup.sh``; its
  torchaudio is a stub, so the track is read and the stems written with soundfile, as
  openunmix's own command line would with torchaudio). Prints each run, the medians and the
  openunmix / stemsplit ratio.
* Memory (``--memory-seconds``): stemsplit's peak RSS in exact mode against track length,
  and the growth per minute of audio; (``--chunked-memory-seconds``) the same with
  ``--segment``, which should not grow.
* Quality of the chunked mode (``--sdr-segments``): the SDR of each stem separated with
  ``--segment S`` against the exact (whole-track) output, per segment length S. With random
  weights this measures the chunking's effect on a random network only: give a real model
  folder with ``--weights`` for the figure that matters.

    python benchmarks/bench_umx.py [--weights FOLDER] [--size full|tiny] [--seconds 60]
        [--repeats 3] [--threads 2] [--memory-seconds 30,60,120]
        [--chunked-memory-seconds 60,600] [--segment 10] [--sdr-segments 5,10,20,30]

Numbers, not assertions: run it on a quiet machine. ``--repeats 0`` and empty lists skip
parts.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from _common import ROOT, compare_alternately, make_track, measured_run

from tests.umx_models import FOUR, TINY, UMXHQ, oracle_dir, write_model_folder  # noqa: E402

OPENUNMIX = r"""
import sys
from pathlib import Path
import soundfile, torch
from openunmix import predict, utils
folder, targets, track, out = sys.argv[1], sys.argv[2].split(","), sys.argv[3], Path(sys.argv[4])
separator = utils.load_separator(folder, targets=targets, niter=1, residual=False,
                                 wiener_win_len=300, device="cpu")
separator.freeze()
audio, rate = soundfile.read(track, dtype="float32", always_2d=True)
with torch.no_grad():
    estimates = predict.separate(torch.as_tensor(audio.T), rate=rate, separator=separator)
out.mkdir(parents=True, exist_ok=True)
for name, estimate in estimates.items():
    soundfile.write(out / f"{name}.wav", estimate[0].numpy().T, rate, subtype="FLOAT")
"""


def _seconds(text: str) -> list[float]:
    return [float(s) for s in text.split(",") if s]


def model_folder(args: argparse.Namespace, work: Path) -> tuple[Path, list[str]]:
    if args.weights:
        from stemsplit.families.umx.config import folder_targets

        folder = Path(args.weights).expanduser()
        return folder, list(folder_targets(folder))
    folder = work / f"umxhq-random-{args.size}"
    write_model_folder(folder, FOUR, **(UMXHQ if args.size == "full" else TINY), seed=0)
    return folder, list(FOUR)


def speed(args, env, work: Path, folder: Path, targets: list[str]) -> None:
    track = work / "track.wav"
    make_track(track, args.seconds)
    ours = [sys.executable, "-m", "stemsplit", str(track), "--weights", str(folder),
            "--float32", "--force", "-q", "-o", str(work / "ours")]
    theirs = [sys.executable, "-c", OPENUNMIX, str(folder), ",".join(targets), str(track),
              str(work / "theirs")]
    oracle_env = {**env, "PYTHONPATH": str(oracle_dir())}
    compare_alternately({"openunmix": (theirs, oracle_env), "stemsplit": (ours, env)},
                        args.repeats, f"{args.seconds:g} s track, {folder.name}, "
                        f"{args.threads} threads")


def memory(args, env, work: Path, folder: Path, lengths: list[float], *extra: str) -> None:
    mode = f"--segment {extra[1]}" if extra else "exact mode"
    print(f"\nstemsplit's peak RSS against track length ({mode}):")
    points = []
    for seconds in lengths:
        track = work / f"long-{seconds:g}.wav"
        make_track(track, seconds)
        command = [sys.executable, "-m", "stemsplit", str(track), "--weights", str(folder),
                   "--force", "-q", *extra, "-o", str(work / "memory")]
        wall, rss = measured_run(command, env)
        points.append((seconds, rss))
        print(f"  {seconds:7g} s  {wall:7.1f} s  {rss:7.0f} MiB", flush=True)
        track.unlink()
    if len(points) >= 2:
        (first, low), (last, high) = points[0], points[-1]
        print(f"  growth: {(high - low) / ((last - first) / 60):.0f} MiB per minute of audio")


def chunked_sdr(args, folder: Path, segments: list[float]) -> None:
    import numpy as np
    import soundfile
    import torch

    from stemsplit.engine import SeparationSettings, separate_tensor
    from stemsplit.evaluation import sdr
    from stemsplit.loading import load_model

    model = load_model(weights=folder)
    with tempfile.TemporaryDirectory() as scratch:
        track = Path(scratch) / "track.wav"
        make_track(track, args.seconds, model.sample_rate)
        mix, _ = soundfile.read(track, dtype="float32", always_2d=True)
    mix = torch.from_numpy(mix.T.copy())
    exact = separate_tensor(mix, model.engine_networks(), model.sample_rate,
                            SeparationSettings()).numpy()
    print(f"\nSDR (dB) of --segment S against the exact output, {args.seconds:g} s track, "
          f"{folder.name}:")
    print("  S (s)  " + "  ".join(f"{stem:>9}" for stem in model.sources))
    for segment in segments:
        chunked = separate_tensor(mix, model.engine_networks(segment), model.sample_rate,
                                  SeparationSettings()).numpy()
        scores = [sdr(exact[i].T, chunked[i].T) for i in range(len(model.sources))]
        print(f"  {segment:5g}  " + "  ".join(f"{score:9.2f}" for score in scores)
              + f"   max |diff| {np.abs(chunked - exact).max():.2e}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", help="an Open-Unmix model folder (default: random "
                        "weights in umxhq's shape)")
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--memory-seconds", default="30,60,120")
    parser.add_argument("--chunked-memory-seconds", default="60,600")
    parser.add_argument("--segment", type=float, default=10.0)
    parser.add_argument("--sdr-segments", default="5,10,20,30")
    args = parser.parse_args()
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "CUDA_VISIBLE_DEVICES": ""}
    os.environ.update({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    with tempfile.TemporaryDirectory(prefix="stemsplit-bench-umx-") as scratch:
        work = Path(scratch)
        folder, targets = model_folder(args, work)
        if args.repeats > 0:
            speed(args, env, work, folder, targets)
        if _seconds(args.memory_seconds):
            memory(args, env, work, folder, _seconds(args.memory_seconds))
        if _seconds(args.chunked_memory_seconds):
            memory(args, env, work, folder, _seconds(args.chunked_memory_seconds),
                   "--segment", f"{args.segment:g}")
        if _seconds(args.sdr_segments):
            chunked_sdr(args, folder, _seconds(args.sdr_segments))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
