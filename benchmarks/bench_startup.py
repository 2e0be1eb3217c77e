"""Start-up time of the commands that must not load torch: ``stemsplit --help`` and
``stemsplit models`` (budget: 0.3 s each), and the rerun of a finished batch of 100 files
(``stemsplit batch DIR`` with every output there: budget 1 s), which decides from the
registry's names alone, without torch or the model.

Each command runs N times (after two warm-up runs, so the page cache and .pyc files are
warm: ``PYTHONDONTWRITEBYTECODE`` is dropped for them, or every run would compile
stemsplit's sources again) against temporary caches holding one cached model, and the
median, fastest and slowest wall times are printed, with ``python -c pass`` as the floor. A
separate run of each command reports which heavy modules got imported (torch,
huggingface_hub, numpy, safetensors): there should be none.

    python benchmarks/bench_startup.py [--runs 15] [--budget 0.3] [--resume-budget 1]
                                       [--files 100] [--check]

Numbers, not assertions (``--check`` exits 1 when a median is over the budget): run it on a
quiet machine. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "huggingface_hub", "numpy", "safetensors")
COMMANDS = {
    "stemsplit --help": ["--help"],
    "stemsplit models": ["models"],
    "stemsplit models --json": ["models", "--json"],
    "stemsplit models path": ["models", "path"],
    "stemsplit models info htdemucs": ["models", "info", "htdemucs"],
}
RESUME = ["batch", "album", "-o", "out", "-q"]
"""The rerun of a finished batch (``finished_batch`` lays it out in the working folder)."""
_PROBE = """
import atexit, sys
atexit.register(lambda: sys.stderr.write(
    "\\nIMPORTED:" + ",".join(m for m in {heavy!r} if m in sys.modules) + "\\n"))
sys.argv = ["stemsplit", *{args!r}]
from stemsplit.__main__ import main
main()
"""


def fake_hf_cache(hf_home: Path) -> None:
    """A cached htdemucs (a few bytes under the real names), as huggingface_hub lays it out."""
    repo = hf_home / "hub" / "models--adefossez--HTDemucs"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    for name, data in (("htdemucs.yaml", b"models: ['955717e8']\n"),
                       ("955717e8.safetensors", os.urandom(4096))):
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        entry = repo / "snapshots" / commit / name
        entry.parent.mkdir(parents=True, exist_ok=True)
        entry.symlink_to(os.path.relpath(blob, entry.parent))


def finished_batch(folder: Path, files: int) -> None:
    """``folder/album`` with ``files`` inputs, and every one's four stems under
    ``folder/out/htdemucs`` (stand-ins: a rerun looks at their names only)."""
    for index in range(files):
        track = folder / "album" / f"disc {index // 20 + 1}" / f"{index:03d} track.wav"
        track.parent.mkdir(parents=True, exist_ok=True)
        track.write_bytes(b"RIFF")
        for stem in ("drums", "bass", "other", "vocals"):
            output = (folder / "out" / "htdemucs" / track.parent.name / track.stem
                      / f"{stem}.wav")
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_bytes(b"done")


def stemsplit_argv() -> list[str]:
    """The installed console script when there is one (what users run), else -m."""
    script = Path(sys.executable).parent / "stemsplit"
    if script.is_file():
        return [str(script)]
    found = shutil.which("stemsplit")
    return [found] if found else [sys.executable, "-m", "stemsplit"]


def timed(argv: list[str], env: dict, runs: int, cwd: Path | None = None) -> list[float]:
    times = []
    for index in range(runs + 2):
        started = time.perf_counter()
        result = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                cwd=cwd)
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{result.stderr.decode(errors='replace')}")
        if index >= 2:
            times.append(elapsed)
    return times


def imported(args: list[str], env: dict, cwd: Path | None = None) -> str:
    code = _PROBE.format(heavy=HEAVY, args=args)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, cwd=cwd)
    lines = [line for line in result.stderr.splitlines() if line.startswith("IMPORTED:")]
    return (lines[-1].split(":", 1)[1] or "none") if lines else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--budget", type=float, default=0.3, help="seconds")
    parser.add_argument("--resume-budget", type=float, default=1.0,
                        help="seconds for the rerun of the finished batch")
    parser.add_argument("--files", type=int, default=100, help="files in the finished batch")
    parser.add_argument("--check", action="store_true", help="exit 1 if a median is over budget")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="stemsplit-bench-") as directory:
        work = Path(directory)
        fake_hf_cache(work / "hf")
        finished_batch(work, options.files)
        env = {**os.environ, "HF_HOME": str(work / "hf"), "TORCH_HOME": str(work / "torch"),
               "XDG_CACHE_HOME": str(work / "xdg"), "PYTHONPATH": str(ROOT),
               "HF_HUB_OFFLINE": "1"}
        for variable in ("STEMSPLIT_WEIGHTS_TOML", "PYTHONDONTWRITEBYTECODE"):
            env.pop(variable, None)
        argv = stemsplit_argv()
        floor = statistics.median(timed([sys.executable, "-c", "pass"], env, options.runs))
        print(f"{sys.version.split()[0]} on {os.cpu_count()} cores; {options.runs} runs each; "
              f"`python -c pass` median {floor * 1000:.0f} ms; running {' '.join(argv)}")
        print(f"{'command':<32}{'median':>9}{'min':>9}{'max':>9}  heavy modules imported")
        over = []
        runs = [(label, args, options.budget) for label, args in COMMANDS.items()]
        runs.append((f"batch, {options.files} finished", RESUME, options.resume_budget))
        for label, args, budget in runs:
            times = timed(argv + args, env, options.runs, cwd=work)
            median = statistics.median(times)
            flag = "  OVER BUDGET" if median > budget else ""
            if flag:
                over.append(label)
            print(f"{label:<32}{median * 1000:>7.0f}ms{min(times) * 1000:>7.0f}ms"
                  f"{max(times) * 1000:>7.0f}ms  {imported(args, env, cwd=work)}{flag}")
    if options.check and over:
        raise SystemExit(f"over budget: {', '.join(over)}")


if __name__ == "__main__":
    main()
