"""Stress test: SIGINT/SIGTERM at random moments, and whether anything is left behind.

Each run starts ``stemsplit`` in a session of its own (tiny random-weight htdemucs models
in a temporary Hugging Face cache, offline), waits a random time, and sends SIGINT or
SIGTERM to the process alone, to its process group (a terminal's Ctrl-C), or to both one
after the other (what ``timeout -s INT`` does). Three workloads: one track, a batch of
three tracks two at a time, and an ensemble of two models. A run must end with 128 + the
signal (or 0 within a second when it was finishing as the signal came; "done before" when it
had exited already; "ignored" when it went on working for longer), never abort, and leave no temporary
file in the output tree or in its private TMPDIR; every output file it leaves must be
complete. A signal in the interpreter's own start-up, before stemsplit's first line runs,
meets Python's defaults (SIGTERM kills: shown as -15, 143 to a shell; nothing exists yet to
leave behind); the table shows such runs as they are. Prints a table and exits 1 if any run broke a rule.

    python benchmarks/stress_signals.py --runs 300
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile

from _common import ROOT, make_track  # noqa: E402  (puts the checkout on sys.path)
from tests.checkpoints import HTDEMUCS, SMALL_HTDEMUCS_KWARGS, SOURCES_6, write_hf_bag

WORKLOADS = {
    "track": ["song.wav", "-o", "out"],
    "batch": ["batch", "album", "-o", "out", "--parallel", "2"],
    "ensemble": ["song.wav", "-n", "htdemucs", "-n", "htdemucs_6s", "-o", "out"],
}
TARGETS = ("process", "group", "both")
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}
FINISHED_FIRST = "done before"
"""The run had exited before the signal was sent."""
IGNORED = "ignored"
"""Exit 0 more than IGNORED_AFTER_SECONDS after the signal: the run went on working."""
IGNORED_AFTER_SECONDS = 1.0


def prepare(work: Path) -> dict:
    tiny = {**SMALL_HTDEMUCS_KWARGS, "t_layers": 1}
    write_hf_bag(work / "hf", "htdemucs", "adefossez/HTDemucs", [(HTDEMUCS, [], tiny, 1, "955717e8")])
    write_hf_bag(work / "hf", "htdemucs_6s", "adefossez/HTDemucs-6s",
                 [(HTDEMUCS, [], {**tiny, "sources": SOURCES_6}, 2, "5c90dfd2")])
    make_track(work / "song.wav", 40.0)
    (work / "album").mkdir()
    for index in range(3):
        make_track(work / "album" / f"track {index}.wav", 15.0)
    return {**os.environ, "HF_HOME": str(work / "hf"), "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(ROOT)}


def default_signals() -> None:
    """In the child: the signals' default dispositions, as a terminal gives them. A script
    started in the background (`nohup`, `&`) holds SIGINT ignored, and stemsplit keeps an
    inherited ignored signal ignored, as it should."""
    for signum in SIGNALS.values():
        signal.signal(signum, signal.SIG_DFL)


def leftovers(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.rglob("*")
            if p.is_file() and (p.name.startswith(".") or p.name.startswith("stemsplit-"))]


def broken_outputs(folder: Path) -> list[Path]:
    broken = []
    for path in folder.rglob("*.wav") if folder.exists() else []:
        if path.name.startswith("."):
            continue
        try:
            soundfile.info(str(path))
        except RuntimeError:
            broken.append(path)
    return broken


def run_once(work: Path, env: dict, workload: str, sent: str, target: str,
             delay: float) -> tuple[int, list[Path], str]:
    for folder in ("out", "tmp"):
        subprocess.run(["rm", "-rf", str(work / folder)], check=True)
    (work / "tmp").mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "stemsplit", *WORKLOADS[workload], "-q"], cwd=work,
        env={**env, "TMPDIR": str(work / "tmp")}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True, preexec_fn=default_signals)
    time.sleep(delay)
    signum = SIGNALS[sent]
    if process.poll() is not None:  # it finished before the signal
        process.communicate()
        return FINISHED_FIRST, [], ""
    try:
        if target in ("process", "both"):
            os.kill(process.pid, signum)
        if target in ("group", "both"):
            os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass
    sent_at = time.monotonic()
    _, stderr = process.communicate(timeout=300)
    took = time.monotonic() - sent_at
    left = leftovers(work / "out", work / "tmp") + broken_outputs(work / "out")
    code = process.returncode
    if code == 0 and took > IGNORED_AFTER_SECONDS:  # it went on working: the signal was lost
        code = IGNORED
    return code, left, stderr.decode(errors="replace")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    rng = random.Random(options.seed)
    with tempfile.TemporaryDirectory(prefix="stemsplit-stress-") as directory:
        work = Path(directory)
        env = prepare(work)
        durations = {}
        for workload in WORKLOADS:  # how long each takes when left alone
            started = time.monotonic()
            subprocess.run(["rm", "-rf", str(work / "out")], check=True)
            subprocess.run([sys.executable, "-m", "stemsplit", *WORKLOADS[workload], "-q"],
                           cwd=work, env=env, check=True, capture_output=True)
            durations[workload] = time.monotonic() - started
        print("uninterrupted: " + ", ".join(f"{k} {v:.1f} s" for k, v in durations.items()))
        table: dict = collections.defaultdict(collections.Counter)
        failures = []
        for run in range(options.runs):
            workload = rng.choice(list(WORKLOADS))
            sent, target = rng.choice(list(SIGNALS)), rng.choice(TARGETS)
            delay = rng.uniform(0.05, durations[workload] * 1.05)
            code, left, stderr = run_once(work, env, workload, sent, target, delay)
            expected = 128 + SIGNALS[sent]
            table[(workload, sent, target)][code] += 1
            table[(workload, sent, target)]["leftovers"] += len(left)
            if code not in (expected, 0, FINISHED_FIRST) or left:
                failures.append((run, workload, sent, target, round(delay, 2), code,
                                 [p.name for p in left][:4], stderr.strip()[-300:]))
        print(f"{'workload':<9} {'signal':<8} {'to':<8} {'runs':>5} {'exit codes':<28} leftovers")
        for key in sorted(table):
            counts = table[key]
            codes = {code: n for code, n in counts.items() if code != "leftovers"}
            text = ", ".join(f"{code}: {n}" for code, n in sorted(codes.items(), key=str))
            print(f"{key[0]:<9} {key[1]:<8} {key[2]:<8} {sum(codes.values()):>5} {text:<28} "
                  f"{counts['leftovers']}")
        total = sum(sum(n for c, n in counts.items() if c != "leftovers")
                    for counts in table.values())
        print(f"{total} runs, {len(failures)} broke a rule")
        for failure in failures:
            print("  ", failure)
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
