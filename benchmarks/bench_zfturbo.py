"""ZFTurbo's inference.py versus stemsplit on the same random-weight checkpoints, on the CPU,
and stemsplit's peak memory against track length for every ZFTurbo type of the golden
fixtures.

Speed: for each model below, a random-weight checkpoint of a full-size published config
(from ZFTurbo's ``configs/``, written by ZFTurbo's own ``get_model_from_config`` in the
Python that runs its code), one stereo 44.1 kHz track, then

    python inference.py --model_type T --config_path C --start_check_point W
           --input_folder IN --store_dir OUT --force_cpu --disable_detailed_pbar   (cwd: checkout)
    stemsplit TRACK --weights W --config C --float32 --clip-mode none -j THREADS

alternately, several times, each with OMP_NUM_THREADS=THREADS. Both write 32-bit float
stems. Prints each run's wall time and peak RSS, the medians and their ratios.

- ``scnet``: ``config_musdb18_scnet_large.yaml`` (dims 4/64/128/256; SCNet XL's and XL IHF's
  configs are release assets this machine cannot fetch, so the largest SCNet config in the
  repository stands in for them);
- ``drumsep``: ``config_drumsep.yaml`` (Hybrid Demucs, depth 6, 40 s segments), its weights
  as DrumSep's are published (a demucs package's ``state``).

Memory: stemsplit's peak RSS on tracks of ``--memory-seconds`` with each golden fixture's
small model (tests/data/zfturbo_golden/<name>): the engine's memory, not the network's, is
what could grow with the track.

    python benchmarks/bench_zfturbo.py --zfturbo CHECKOUT --zfturbo-python PYTHON
        [--models scnet,drumsep] [--seconds 60] [--repeats 3] [--threads 2]
        [--memory-seconds 60,600] [--memory-fixtures scnet,htdemucs,...]

PYTHON must import ZFTurbo's code (torch, einops, omegaconf, ml_collections, demucs,
soundfile, librosa, ...; see tests/zfturbo_golden/make.py). Numbers, not assertions: run it
on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, compare_alternately, make_track, measured_run

GOLDEN = ROOT / "tests" / "data" / "zfturbo_golden"

MODELS = {
    # name: (model_type, config in ZFTurbo's configs/, checkpoint name, wrap under "state")
    "scnet": ("scnet", "config_musdb18_scnet_large.yaml", "model_scnet_large.ckpt", False),
    "drumsep": ("htdemucs", "config_drumsep.yaml", "model_drumsep.ckpt", True),
}

WRITE_WEIGHTS = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from utils.settings import get_model_from_config
torch.manual_seed(0)
model, _ = get_model_from_config(sys.argv[2], sys.argv[3])
state = model.state_dict()
torch.save({"state": state} if sys.argv[5] == "1" else state, sys.argv[4])
"""


def write_weights(python: str, checkout: Path, model_type: str, config: Path, out: Path,
                  wrap: bool) -> None:
    """Random weights for ``config``, made by ZFTurbo's own model code."""
    subprocess.run([python, "-c", WRITE_WEIGHTS, str(checkout), model_type, str(config),
                    str(out), "1" if wrap else "0"], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zfturbo", type=Path, required=True,
                        help="a checkout of ZFTurbo's Music-Source-Separation-Training")
    parser.add_argument("--zfturbo-python", required=True,
                        help="the Python that runs ZFTurbo's code")
    parser.add_argument("--models", default="scnet,drumsep")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-seconds", default="60,600",
                        help="track lengths for stemsplit's memory check ('' to skip)")
    parser.add_argument("--memory-fixtures", default="",
                        help="golden fixtures for the memory check (default: all)")
    args = parser.parse_args()
    checkout = args.zfturbo.resolve()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads), "STEMSPLIT_OFFLINE": "1"}
    work = Path(tempfile.mkdtemp(prefix="bench-zfturbo-"))
    try:
        track_dir = work / "in"
        track_dir.mkdir()
        track = track_dir / "song.wav"
        make_track(track, args.seconds)
        for name in [n for n in args.models.split(",") if n]:
            model_type, config_name, checkpoint_name, wrap = MODELS[name]
            folder = work / name
            folder.mkdir()
            config = folder / config_name
            shutil.copyfile(checkout / "configs" / config_name, config)
            checkpoint = folder / checkpoint_name
            write_weights(args.zfturbo_python, checkout, model_type, config, checkpoint, wrap)
            theirs = [args.zfturbo_python, str(checkout / "inference.py"), "--model_type",
                      model_type, "--config_path", str(config), "--start_check_point",
                      str(checkpoint), "--input_folder", str(track_dir), "--store_dir",
                      str(work / f"{name}-theirs"), "--force_cpu", "--disable_detailed_pbar"]
            ours = [sys.executable, "-m", "stemsplit", str(track), "--weights", str(checkpoint),
                    "--config", str(config), "--float32", "--clip-mode", "none", "--force",
                    "-q", "-j", str(args.threads), "-o", str(work / f"{name}-ours")]
            print(f"\n== {name}: {config_name}, {args.seconds:.0f} s track, "
                  f"{args.threads} threads", flush=True)
            compare_alternately({"ZFTurbo": (theirs, {**env, "PYTHONPATH": str(checkout)}),
                                 "stemsplit": (ours, env)}, args.repeats,
                                f"{name} ({model_type})")
        if args.memory_seconds:
            fixtures = ([n for n in args.memory_fixtures.split(",") if n] or
                        sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()))
            lengths = [float(value) for value in args.memory_seconds.split(",")]
            tracks = {}
            for seconds in lengths:
                tracks[seconds] = work / f"memory-{seconds:.0f}.wav"
                make_track(tracks[seconds], seconds)
            print(f"\nstemsplit's peak RSS against track length ({args.threads} threads):")
            for fixture in fixtures:
                folder = GOLDEN / fixture
                checkpoint = next(p for p in folder.iterdir()
                                  if p.name not in ("config.yaml", "mixture.wav", "expected.npz"))
                peaks = []
                for seconds in lengths:
                    command = [sys.executable, "-m", "stemsplit", str(tracks[seconds]),
                               "--weights", str(checkpoint), "--config",
                               str(folder / "config.yaml"), "--force", "-q", "-j",
                               str(args.threads), "-o", str(work / "memory-out")]
                    wall, rss = measured_run(command, env)
                    peaks.append(rss)
                    print(f"  {fixture:<14} {seconds:6.0f} s track: {wall:7.1f} s, "
                          f"peak RSS {rss:6.0f} MiB", flush=True)
                print(f"  {fixture:<14} longest / shortest: {peaks[-1] / peaks[0]:.3f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
