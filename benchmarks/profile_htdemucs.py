"""Where one htdemucs segment's time goes, in stemsplit and in demucs 4.1.0, on the CPU.

Builds demucs' own full-size htdemucs (the published constructor arguments, 41.98 M
parameters) with random weights, loads the same weights into stemsplit's network, and feeds
both one training segment (7.8 s of stereo audio). Prints

* the fp32 GEMM rate of this machine (the ceiling for the big kernels),
* the max |difference| between their outputs,
* the network time per segment of both, alternating, and their ratio,
* the op breakdown of stemsplit's forward (and with ``--demucs-table``, demucs'):
  self CPU time per aten op, its share, and GFLOP/s for the ops doing arithmetic work.

Both run in this process with glibc's malloc tuned as stemsplit's CLI tunes it
(``stemsplit.allocator``; ``--plain-malloc`` leaves it alone).

    python benchmarks/profile_htdemucs.py [--threads 2] [--repeats 3] [--demucs-table]

Numbers, not assertions: run it on a quiet machine.
"""

from __future__ import annotations

import argparse

import torch

from _common import htdemucs_pair
from _profile import compare_networks, gemm_peak, op_breakdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--demucs-table", action="store_true")
    parser.add_argument("--plain-malloc", action="store_true",
                        help="leave glibc's malloc as it is (the CLI keeps freed memory)")
    options = parser.parse_args()
    if not options.plain_malloc:
        from stemsplit.allocator import keep_freed_memory

        keep_freed_memory()  # as the CLI does (both networks run in this process)
    torch.set_num_threads(options.threads)

    theirs, ours, mix = htdemucs_pair("full")
    length = mix.shape[-1]

    peak = gemm_peak(options.threads)
    print(f"{options.threads} threads; fp32 GEMM {peak:.0f} GFLOP/s; one segment of "
          f"{length / 44100:.1f} s")
    compare_networks(theirs, ours, mix, options.repeats)
    op_breakdown(lambda: ours(mix), "stemsplit htdemucs, one segment", gemm_peak_gflops=peak)
    if options.demucs_table:
        op_breakdown(lambda: theirs(mix), "demucs htdemucs, one segment", gemm_peak_gflops=peak)


if __name__ == "__main__":
    main()
