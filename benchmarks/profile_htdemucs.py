"""Where one htdemucs segment's time goes, in stemsplit and in demucs 4.1.0, on the CPU.

Builds demucs' own full-size htdemucs (the published constructor arguments, 41.98 M
parameters) with random weights, loads the same weights into stemsplit's network, and feeds
both one training segment (7.8 s of stereo audio). Prints

* the fp32 GEMM rate of this machine (the ceiling for the big kernels),
* the network time per segment of both, alternating, and their ratio,
* the max |difference| between their outputs,
Both run in this process with glibc's malloc tuned as stemsplit's CLI tunes it
(``stemsplit.allocator``; ``--plain-malloc`` leaves it alone).

* the op breakdown of stemsplit's forward (and with ``--demucs-table``, demucs'):
  self CPU time per aten op, its share, and GFLOP/s for the ops doing arithmetic work.

    python benchmarks/profile_htdemucs.py [--threads 2] [--repeats 3] [--demucs-table]

Numbers, not assertions: run it on a quiet machine.
"""

from __future__ import annotations

import argparse

import torch

from _common import FULL_HTDEMUCS_KWARGS, HTDEMUCS
from _profile import alternate, gemm_peak, op_breakdown

from tests.checkpoints import make_demucs_member  # noqa: E402


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

    from stemsplit.models.htdemucs import HTDemucs

    theirs, _ = make_demucs_member(HTDEMUCS, [], FULL_HTDEMUCS_KWARGS, 0)
    ours = HTDemucs(**FULL_HTDEMUCS_KWARGS)
    ours.load_state_dict(theirs.state_dict())
    ours.eval()
    length = int(FULL_HTDEMUCS_KWARGS["segment"] * 44100)
    mix = 0.2 * torch.randn(1, 2, length, generator=torch.Generator().manual_seed(1))

    peak = gemm_peak(options.threads)
    print(f"{options.threads} threads; fp32 GEMM {peak:.0f} GFLOP/s; one segment of "
          f"{length / 44100:.1f} s")
    with torch.inference_mode():
        difference = float((ours(mix) - theirs(mix)).abs().max())
    print(f"max |stemsplit - demucs| on the segment: {difference:.2e}")
    medians = alternate({"demucs": lambda: theirs(mix), "stemsplit": lambda: ours(mix)},
                        options.repeats)
    print(f"network time per segment, median of {options.repeats}: demucs "
          f"{medians['demucs']:.2f} s, stemsplit {medians['stemsplit']:.2f} s, "
          f"ratio {medians['demucs'] / medians['stemsplit']:.2f}x")
    op_breakdown(lambda: ours(mix), "stemsplit htdemucs, one segment", gemm_peak_gflops=peak)
    if options.demucs_table:
        op_breakdown(lambda: theirs(mix), "demucs htdemucs, one segment", gemm_peak_gflops=peak)


if __name__ == "__main__":
    main()
