"""``--precision bf16`` against fp32: quality on real weights, closeness and speed.

1. Quality. Deezer's real Spleeter 2stems (the oracle venv's copy: ``bash
   tests/spleeter_oracle/setup.sh``) on ``--songs`` synthesised songs with true stems
   (``tests/songs.py``: a formant-synthesised singer, drums, bass, chords): the global SDR
   of vocals and accompaniment at fp32 and at bf16, per song.
2. Speed and closeness, in this process, fp32 and bf16 alternating ``--repeats`` times on
   ``--threads`` threads: Spleeter 2stems (real weights; its designed bf16 path) and the
   full-size htdemucs with random weights (its designed path) on a ``--seconds`` song; the wall
   time of ``Separator.separate`` on the array, and the SNR of the bf16 stems against fp32.

    python benchmarks/bench_precision.py [--songs 4] [--seconds 30] [--repeats 3]
                                         [--threads 2] [--skip-htdemucs]

Numbers, not assertions: run it on a quiet machine, and say which CPU (``/proc/cpuinfo``:
``amx_bf16`` and ``avx512_bf16`` are what bf16 needs to be fast).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import write_htdemucs

from tests.songs import mixture, song  # noqa: E402
from tests.spleeter_models import real_2stems_folder, require_oracle  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--songs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-htdemucs", action="store_true")
    options = parser.parse_args()
    import torch

    from stemsplit.evaluation import sdr
    from stemsplit.precision import cpu_has_bf16
    from stemsplit.separator import Separator

    torch.set_num_threads(options.threads)
    print(f"CPU: {cpu_name()}; bf16 arithmetic: {'yes' if cpu_has_bf16() else 'no (emulated)'};"
          f" {options.threads} threads")
    require_oracle()
    folder = real_2stems_folder()
    separators = {label: Separator(weights=folder, device="cpu", precision=label)
                  for label in ("fp32", "bf16")}
    print(f"\nSpleeter 2stems, real weights: global SDR (dB) on {options.songs} songs of "
          f"{options.seconds:g} s with true stems")
    print(f"{'song':>4}  {'vocals fp32':>11} {'bf16':>8} {'change':>7}   "
          f"{'accomp. fp32':>12} {'bf16':>8} {'change':>7}")
    for seed in range(options.songs):
        stems = song(seed, seconds=options.seconds)
        mix = mixture(stems)
        truth = {"vocals": stems["vocals"], "accompaniment": mix - stems["vocals"]}
        scores = {label: {stem: sdr(reference, separator.separate(mix, 44100)[stem])
                          for stem, reference in truth.items()}
                  for label, separator in separators.items()}
        cells = []
        for stem in truth:
            before, after = scores["fp32"][stem], scores["bf16"][stem]
            cells.append(f"{before:11.3f} {after:8.3f} {after - before:+7.3f}")
        print(f"{seed:>4}  {cells[0]}   {cells[1]}")

    mix = mixture(song(100, seconds=options.seconds))
    print(f"\nspeed: Separator.separate on a {options.seconds:g} s song, alternating, "
          f"{options.repeats} repeats (median wall time; SNR of bf16 against fp32)")
    compare("spleeter_2stems (real weights, designed path)", separators, mix, options.repeats)
    for separator in separators.values():
        separator.close()
    if not options.skip_htdemucs:
        with tempfile.TemporaryDirectory(prefix="stemsplit-precision-") as directory:
            write_htdemucs(Path(directory), "full")
            os.environ.update(HF_HOME=directory, HF_HUB_OFFLINE="1")
            separators = {label: Separator("htdemucs", device="cpu", precision=label)
                          for label in ("fp32", "bf16")}
            compare("htdemucs (full size, random weights, designed path)", separators, mix,
                    options.repeats)


def compare(label: str, separators: dict, mix: np.ndarray, repeats: int) -> None:
    walls: dict[str, list[float]] = {name: [] for name in separators}
    outputs: dict[str, dict] = {}
    for _ in range(repeats):
        for name, separator in separators.items():
            started = time.perf_counter()
            outputs[name] = separator.separate(mix, 44100)
            walls[name].append(time.perf_counter() - started)
    fp32, bf16 = (statistics.median(walls[name]) for name in ("fp32", "bf16"))
    closeness = ", ".join(f"{stem} {snr_db(outputs['fp32'][stem], values):.1f} dB"
                          for stem, values in outputs["bf16"].items())
    print(f"  {label}: fp32 {fp32:.2f} s ({', '.join(f'{w:.2f}' for w in walls['fp32'])}), "
          f"bf16 {bf16:.2f} s ({', '.join(f'{w:.2f}' for w in walls['bf16'])}); "
          f"fp32/bf16 {fp32 / bf16:.2f}x; SNR {closeness}")


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    reference, estimate = np.asarray(reference, np.float64), np.asarray(estimate, np.float64)
    return float(10 * np.log10(np.sum(reference ** 2) / np.sum((reference - estimate) ** 2)))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
