"""Peak memory against track length: stemsplit streams, demucs holds the whole track.

Runs stemsplit with a random-weight htdemucs on 1, 10 and 60 minute tracks and demucs 4.1.0
on the 1 and 10 minute ones (its memory grows ~210 MiB per minute), and prints peak RSS and
wall time side by side.

stemsplit's RSS is sampled through the run (every 20 ms): the line gives the RSS it holds
(the steady state: the median from half-way to 90% of the run, once the allocator has
settled) and its peak, which must be the same within 3% (``--check`` exits 1 otherwise, for
runs of 10 minutes of audio or more; shorter ones end before the allocator settles): the
end of a track, where the last blocks and the commit of the stems happen, needs no more
memory than its middle.

    python benchmarks/bench_memory.py [--minutes 1 10 60] [--demucs-minutes 1 10]
                                      [--size full|tiny] [--check]

With --size full (the published htdemucs shape) a 60 minute track takes about half an hour
on a 2-core CPU; --size tiny exercises the same streaming path in minutes.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import (demucs_command, make_track, measured_run, offline_env, sampled_run,
                     steady_rss, stemsplit_command, write_htdemucs)

SETTLED_MINUTES = 10
"""Runs on this much audio or more hold a steady state long enough to compare the peak with."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    parser.add_argument("--demucs-minutes", type=float, nargs="*", default=[1, 10])
    parser.add_argument("--size", choices=["full", "tiny"], default="full")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a peak is more than 3%% over the steady state")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="stemsplit-memory-") as directory:
        work = Path(directory)
        write_htdemucs(work / "hf", options.size)
        env = offline_env(work / "hf")
        rows = []
        over = []
        for minutes in sorted(set(options.minutes) | set(options.demucs_minutes)):
            track = work / f"track-{minutes:g}min.flac"
            make_track(track, minutes * 60, subtype="PCM_16")
            wall, peak, samples = sampled_run(stemsplit_command(track, work / "out"), env)
            ours = (wall, peak)
            steady = steady_rss(samples, wall)
            theirs = None
            if minutes in options.demucs_minutes:
                theirs = measured_run(demucs_command(track, work / "demucs"), env)
            rows.append((minutes, ours, theirs))
            line = f"{minutes:6g} min  stemsplit {ours[1]:7.0f} MiB {ours[0]:8.1f} s"
            if steady:
                line += f" (holds {steady:.0f} MiB, peak {100 * (peak / steady - 1):+.1f}%)"
                if peak > 1.03 * steady and minutes >= SETTLED_MINUTES:
                    over.append(f"{minutes:g} min: peak {peak:.0f} MiB, steady {steady:.0f} MiB")
            if theirs:
                line += f"   demucs {theirs[1]:7.0f} MiB {theirs[0]:8.1f} s"
            print(line, flush=True)
            track.unlink()
        first, last = rows[0][1][1], rows[-1][1][1]
        print(f"stemsplit peak at {rows[-1][0]:g} min is {100 * (last / first - 1):+.1f}% of "
              f"its peak at {rows[0][0]:g} min ({options.size} htdemucs)")
    if options.check and over:
        raise SystemExit("peak over the steady state by more than 3%: " + "; ".join(over))


if __name__ == "__main__":
    main()
