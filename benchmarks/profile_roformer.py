"""Where one BS-RoFormer (or Mel-Band RoFormer) chunk's time goes, in stemsplit and in
audio-separator 0.47.1's copy of ZFTurbo's class, on the CPU.

Builds audio-separator's network at viperx ep_317's dimensions (BS: dim 512, depth 12, 62
bands) or KimberleyJensen's (Mel: dim 384, depth 6, 60 bands) with random weights, loads the
same weights into stemsplit's network, and feeds both one 8 s stereo chunk. Prints the fp32
GEMM rate, the network time per chunk of both (alternating) and their ratio, the max
|difference| relative to the output's peak, and the op breakdown of stemsplit's forward.

    python benchmarks/profile_roformer.py [--kind bs|mel] [--threads 2] [--repeats 3]

Numbers, not assertions: run it on a quiet machine.
"""

from __future__ import annotations

import argparse

import torch

from _common import ROOT  # noqa: F401  (puts the repository on sys.path)
from _profile import compare_networks, gemm_peak, op_breakdown

from tests.roformer_models import KIM_MEL, VIPERX_BS, build_pair  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=["bs", "mel"], default="bs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    options = parser.parse_args()
    from stemsplit.allocator import keep_freed_memory

    keep_freed_memory()  # as the CLI does (both networks run in this process)
    torch.set_num_threads(options.threads)
    theirs, ours = build_pair(options.kind, **(VIPERX_BS if options.kind == "bs" else KIM_MEL))
    length = int(options.seconds * 44100)
    mix = 0.2 * torch.randn(1, 2, length, generator=torch.Generator().manual_seed(1))

    peak = gemm_peak(options.threads)
    print(f"{options.kind} roformer, {options.threads} threads; fp32 GEMM {peak:.0f} GFLOP/s; "
          f"one chunk of {options.seconds:g} s")
    compare_networks(theirs, ours, mix, options.repeats, reference_name="audio-separator")
    op_breakdown(lambda: ours(mix), f"stemsplit {options.kind} roformer, one chunk",
                 gemm_peak_gflops=peak)


if __name__ == "__main__":
    main()
