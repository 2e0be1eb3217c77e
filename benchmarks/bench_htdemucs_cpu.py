"""demucs 4.1.0 versus stemsplit on the same full-size random-weight htdemucs and track.

Writes a full-size htdemucs (41.98 M parameters, the published constructor arguments) with
random weights into a temporary Hugging Face cache, makes a stereo test track, then runs

    demucs    -n htdemucs --shifts 0 --float32 TRACK
    stemsplit TRACK -n htdemucs --shifts 0 --float32

one after the other, several times, offline against that cache. Prints the wall time and
peak RSS of each run, the medians, their ratio, and the max |difference| between the stems;
then the network time of one training segment (7.8 s) of both, in this process with the same
weights, alternating (``--segment-repeats``; 0 skips it), so the whole-track ratio can be
read against the networks' own.

With ``--precision bf16`` a third command runs beside them, ``stemsplit ... --precision bf16``:
its time is divided into demucs' (issue 22's figure: at least 2.5 on a CPU with AMX), its
peak RSS set beside float32 stemsplit's, and its stems compared with those by SNR.

    python benchmarks/bench_htdemucs_cpu.py [--seconds 60] [--repeats 3] [--batch-size 1]
                                            [--segment-repeats 3] [--threads 2]
                                            [--precision fp32|bf16]

Numbers, not assertions: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from _common import (SOURCES, demucs_command, htdemucs_pair, make_track, measured_run,
                     offline_env, stemsplit_command, write_htdemucs)


def max_difference(ours: Path, theirs: Path) -> float:
    worst = 0.0
    for stem in SOURCES:
        a, _ = soundfile.read(ours / f"{stem}.wav", dtype="float32")
        b, _ = soundfile.read(theirs / f"{stem}.wav", dtype="float32")
        worst = max(worst, float(np.abs(a - b).max()))
    return worst


def stems_snr_db(reference: Path, estimate: Path, stem: str) -> float:
    a, _ = soundfile.read(reference / f"{stem}.wav", dtype="float64")
    b, _ = soundfile.read(estimate / f"{stem}.wav", dtype="float64")
    return float(10 * np.log10(np.sum(a ** 2) / np.sum((a - b) ** 2)))


def segment_times(size: str, repeats: int, threads: int) -> None:
    """demucs' and stemsplit's htdemucs network on one training segment, in this process,
    with the weights the command-line runs load: difference, then times in turn."""
    import torch

    from _profile import compare_networks
    from stemsplit.allocator import keep_freed_memory

    keep_freed_memory()  # as the stemsplit CLI does; applies to both networks here
    torch.set_num_threads(threads)
    theirs, ours, mix = htdemucs_pair(size)
    print(f"\none {mix.shape[-1] / 44100:.1f} s segment through each network in this process, "
          f"{threads} threads:")
    compare_networks(theirs, ours, mix, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--size", choices=["full", "tiny"], default="full")
    parser.add_argument("--segment-repeats", type=int, default=3)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: also run stemsplit --precision bf16")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads of the in-process segment timing (the CLIs use them all)")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="stemsplit-bench-") as directory:
        work = Path(directory)
        write_htdemucs(work / "hf", options.size)
        track = work / "track.wav"
        make_track(track, options.seconds)
        env = offline_env(work / "hf")
        commands = {
            "demucs": demucs_command(track, work / "demucs", "--float32"),
            "stemsplit": stemsplit_command(track, work / "stemsplit", "--float32",
                                           "--batch-size", str(options.batch_size)),
        }
        if options.precision != "fp32":
            commands[options.precision] = stemsplit_command(
                track, work / options.precision, "--float32", "--batch-size",
                str(options.batch_size), "--precision", options.precision)
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        print(f"{options.seconds:g} s stereo track, {options.size}-size random-weight htdemucs, "
              f"CPU, {os.cpu_count()} cores")
        for repeat in range(options.repeats):
            for name, command in commands.items():
                wall, rss = measured_run(command, env)
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
        if options.precision != "fp32":
            reduced = options.precision
            print(f"speed ratio (demucs time / stemsplit --precision {reduced} time): "
                  f"{medians['demucs'][0] / medians[reduced][0]:.2f}; "
                  f"stemsplit fp32 / {reduced}: "
                  f"{medians['stemsplit'][0] / medians[reduced][0]:.2f}; peak RSS "
                  f"{medians[reduced][1]:.0f} MiB against {medians['stemsplit'][1]:.0f} MiB")
            print(f"SNR of the {reduced} stems against stemsplit's float32 stems: " + ", ".join(
                f"{stem} {stems_snr_db(work / 'stemsplit' / 'htdemucs' / 'track', work / reduced / 'htdemucs' / 'track', stem):.1f} dB"
                for stem in SOURCES))
    if options.segment_repeats > 0:
        segment_times(options.size, options.segment_repeats, options.threads)


if __name__ == "__main__":
    main()
