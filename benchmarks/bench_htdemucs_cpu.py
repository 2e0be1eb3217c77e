"""demucs 4.1.0 versus stemsplit on the same full-size random-weight htdemucs and track.

Writes a full-size htdemucs (41.98 M parameters, the published constructor arguments) with
random weights into a temporary Hugging Face cache, makes a stereo test track, then runs

    demucs    -n htdemucs --shifts 0 --float32 TRACK
    stemsplit TRACK -n htdemucs --shifts 0 --float32

one after the other, several times, offline against that cache. Prints the wall time and
peak RSS of each run, the medians, their ratio, and the max |difference| between the stems.

    python benchmarks/bench_htdemucs_cpu.py [--seconds 60] [--repeats 3] [--batch-size 1]

Numbers, not assertions: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.checkpoints import HTDEMUCS, SOURCES, write_hf_bag  # noqa: E402

FULL_HTDEMUCS_KWARGS = dict(
    sources=SOURCES, audio_channels=2, channels=48, growth=2, nfft=4096, cac=True,
    wiener_iters=0, depth=4, rewrite=True, multi_freqs=[], freq_emb=0.2, emb_scale=10,
    emb_smooth=True, kernel_size=8, stride=4, time_stride=2, context=1, context_enc=0,
    norm_starts=4, norm_groups=4, dconv_mode=3, dconv_depth=2, dconv_comp=8, dconv_init=1e-3,
    bottom_channels=512, t_layers=5, t_hidden_scale=4.0, t_heads=8, t_dropout=0.02,
    t_layer_scale=True, t_gelu=True, t_emb="sin", t_max_period=1e4, t_weight_pos_embed=1.0,
    t_sin_random_shift=0, t_norm_in=True, t_norm_in_group=False, t_group_norm=False,
    t_norm_first=True, t_norm_out=True, t_cross_first=False, rescale=0.1, samplerate=44100,
    segment=Fraction(39, 5),
)


def make_track(path: Path, seconds: float, sample_rate: int = 44100) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tones = np.stack([0.3 * np.sin(2 * np.pi * 110 * t), 0.3 * np.sin(2 * np.pi * 165 * t)])
    data = tones + 0.05 * rng.standard_normal(tones.shape)
    soundfile.write(path, data.T.astype(np.float32), sample_rate, subtype="FLOAT")


def timed_run(command: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB of the process and its waited-for children)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{command[2]} failed:\n{stderr}")
    return wall, usage.ru_maxrss / 1024


def max_difference(ours: Path, theirs: Path) -> float:
    worst = 0.0
    for stem in SOURCES:
        a, _ = soundfile.read(ours / f"{stem}.wav", dtype="float32")
        b, _ = soundfile.read(theirs / f"{stem}.wav", dtype="float32")
        worst = max(worst, float(np.abs(a - b).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="stemsplit-bench-") as directory:
        work = Path(directory)
        write_hf_bag(work / "hf", "htdemucs", "adefossez/HTDemucs",
                     [(HTDEMUCS, [], FULL_HTDEMUCS_KWARGS, 0, "955717e8")])
        track = work / "track.wav"
        make_track(track, options.seconds)
        env = {**os.environ, "HF_HOME": str(work / "hf"), "HF_HUB_OFFLINE": "1"}
        commands = {
            "demucs": [sys.executable, "-m", "demucs", "-n", "htdemucs", "--shifts", "0",
                       "--float32", "-o", str(work / "demucs"), str(track)],
            "stemsplit": [sys.executable, "-m", "stemsplit", str(track), "-n", "htdemucs",
                          "--shifts", "0", "--float32", "--force", "-q",
                          "--batch-size", str(options.batch_size),
                          "-o", str(work / "stemsplit")],
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        print(f"{options.seconds:g} s stereo track, full-size random-weight htdemucs, CPU, "
              f"{os.cpu_count()} cores")
        for repeat in range(options.repeats):
            for name, command in commands.items():
                wall, rss = timed_run(command, env)
                results[name].append((wall, rss))
                print(f"  run {repeat + 1} {name:<9} {wall:7.2f} s  {rss:8.0f} MiB", flush=True)
        medians = {name: (statistics.median(w for w, _ in runs),
                          statistics.median(r for _, r in runs))
                   for name, runs in results.items()}
        print()
        print(f"{'':10}{'median wall':>14}{'peak RSS':>12}")
        for name, (wall, rss) in medians.items():
            print(f"{name:10}{wall:12.2f} s{rss:8.0f} MiB")
        ratio = medians["demucs"][0] / medians["stemsplit"][0]
        print(f"speed ratio (demucs time / stemsplit time): {ratio:.2f}")
        difference = max_difference(work / "stemsplit" / "htdemucs" / "track",
                                    work / "demucs" / "htdemucs" / "track")
        print(f"max |difference| between the float32 stems: {difference:.2e}")


if __name__ == "__main__":
    main()
