"""Peak memory against track length: stemsplit streams, demucs holds the whole track.

Runs stemsplit with a random-weight htdemucs on 1, 10 and 60 minute tracks and demucs 4.1.0
on the 1 and 10 minute ones (its memory grows ~210 MiB per minute), and prints peak RSS and
wall time side by side.

    python benchmarks/bench_memory.py [--minutes 1 10 60] [--demucs-minutes 1 10]
                                      [--size full|tiny]

With --size full (the published htdemucs shape) a 60 minute track takes about half an hour
on a 2-core CPU; --size tiny exercises the same streaming path in minutes.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import (demucs_command, make_track, measured_run, offline_env,
                     stemsplit_command, write_htdemucs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    parser.add_argument("--demucs-minutes", type=float, nargs="*", default=[1, 10])
    parser.add_argument("--size", choices=["full", "tiny"], default="full")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="stemsplit-memory-") as directory:
        work = Path(directory)
        write_htdemucs(work / "hf", options.size)
        env = offline_env(work / "hf")
        rows = []
        for minutes in sorted(set(options.minutes) | set(options.demucs_minutes)):
            track = work / f"track-{minutes:g}min.flac"
            make_track(track, minutes * 60, subtype="PCM_16")
            ours = measured_run(stemsplit_command(track, work / "out"), env)
            theirs = None
            if minutes in options.demucs_minutes:
                theirs = measured_run(demucs_command(track, work / "demucs"), env)
            rows.append((minutes, ours, theirs))
            line = f"{minutes:6g} min  stemsplit {ours[1]:7.0f} MiB {ours[0]:8.1f} s"
            if theirs:
                line += f"   demucs {theirs[1]:7.0f} MiB {theirs[0]:8.1f} s"
            print(line, flush=True)
            track.unlink()
        first, last = rows[0][1][1], rows[-1][1][1]
        print(f"stemsplit peak at {rows[-1][0]:g} min is {100 * (last / first - 1):+.1f}% of "
              f"its peak at {rows[0][0]:g} min ({options.size} htdemucs)")


if __name__ == "__main__":
    main()
