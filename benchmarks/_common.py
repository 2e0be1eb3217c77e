"""Shared pieces of the benchmark scripts: test models, tracks, and measured runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.checkpoints import (  # noqa: E402
    HTDEMUCS,
    SMALL_HTDEMUCS_KWARGS,
    SOURCES,
    write_hf_bag,
)

# The published htdemucs constructor arguments (41.98 M parameters).
FULL_HTDEMUCS_KWARGS = dict(
    sources=SOURCES, audio_channels=2, channels=48, growth=2, nfft=4096, cac=True,
    wiener_iters=0, depth=4, rewrite=True, multi_freqs=[], freq_emb=0.2, emb_scale=10,
    emb_smooth=True, kernel_size=8, stride=4, time_stride=2, context=1, context_enc=0,
    norm_starts=4, norm_groups=4, dconv_mode=3, dconv_depth=2, dconv_comp=8, dconv_init=1e-3,
    bottom_channels=512, t_layers=5, t_hidden_scale=4.0, t_heads=8, t_dropout=0.02,
    t_layer_scale=True, t_gelu=True, t_emb="sin", t_max_period=1e4, t_weight_pos_embed=1.0,
    t_sin_random_shift=0, t_norm_in=True, t_norm_in_group=False, t_group_norm=False,
    t_norm_first=True, t_norm_out=True, t_cross_first=False, rescale=0.1, samplerate=44100,
    segment=Fraction(39, 5),
)


def htdemucs_kwargs(size: str = "full") -> dict:
    """Constructor arguments of the benchmarks' htdemucs: the published ones, or ("tiny")
    the tests' small configuration with the published segment."""
    if size == "full":
        return FULL_HTDEMUCS_KWARGS
    return {**SMALL_HTDEMUCS_KWARGS, "segment": Fraction(39, 5)}


HTDEMUCS_SEED = 0
"""Seed of the random weights (``tests.checkpoints.make_demucs_member``)."""


def htdemucs_pair(size: str = "full"):
    """(demucs' htdemucs, stemsplit's with the same weights, one training segment of mix):
    the weights are those ``write_htdemucs`` writes, both networks in eval mode."""
    import torch

    from stemsplit.models.htdemucs import HTDemucs
    from tests.checkpoints import make_demucs_member

    kwargs = htdemucs_kwargs(size)
    theirs, _ = make_demucs_member(HTDEMUCS, [], kwargs, HTDEMUCS_SEED)
    ours = HTDemucs(**kwargs)
    ours.load_state_dict(theirs.state_dict())
    ours.eval()
    length = int(kwargs["segment"] * 44100)
    mix = 0.2 * torch.randn(1, 2, length, generator=torch.Generator().manual_seed(1))
    return theirs, ours, mix


def write_htdemucs(hf_home: Path, size: str = "full") -> None:
    """A random-weight htdemucs under its published name in an HF cache at hf_home."""
    write_hf_bag(hf_home, "htdemucs", "adefossez/HTDemucs",
                 [(HTDEMUCS, [], htdemucs_kwargs(size), HTDEMUCS_SEED, "955717e8")])


def make_track(path: Path, seconds: float, sample_rate: int = 44100,
               subtype: str = "FLOAT") -> None:
    """A stereo test track (two tones and noise), written block by block."""
    rng = np.random.default_rng(0)
    block = 60 * sample_rate
    with soundfile.SoundFile(path, "w", sample_rate, 2, subtype=subtype) as file:
        total = int(seconds * sample_rate)
        for start in range(0, total, block):
            t = (np.arange(start, min(start + block, total))) / sample_rate
            tones = np.stack([0.3 * np.sin(2 * np.pi * 110 * t),
                              0.3 * np.sin(2 * np.pi * 165 * t)])
            file.write((tones + 0.05 * rng.standard_normal(tones.shape)).T.astype(np.float32))


def offline_env(hf_home: Path) -> dict:
    return {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}


def measured_run(command: list[str], env: dict) -> tuple[float, float]:
    """Run a command; (wall seconds, peak RSS in MiB of it and its waited-for children)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{stderr}")
    return wall, usage.ru_maxrss / 1024


def sampled_run(command: list[str], env: dict, interval: float = 0.02
                ) -> tuple[float, float, list[tuple[float, float]]]:
    """``measured_run``, sampling the process's RSS (Linux ``/proc``) every ``interval``
    seconds: (wall seconds, peak RSS in MiB, [(seconds since start, RSS MiB), ...])."""
    import threading

    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    samples: list[tuple[float, float]] = []
    finished = threading.Event()

    def sample() -> None:
        status = Path(f"/proc/{process.pid}/status")
        while not finished.is_set():
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        samples.append((time.perf_counter() - started,
                                        int(line.split()[1]) / 1024))
            except (OSError, ValueError):
                pass
            finished.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    finished.set()
    sampler.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{stderr}")
    return wall, max([usage.ru_maxrss / 1024] + [rss for _, rss in samples]), samples


def steady_rss(samples: list[tuple[float, float]], wall: float) -> float | None:
    """The RSS a run holds: the median of the samples from half-way to 90% of its wall
    time (after the allocator has settled, before the end of the track)."""
    held = sorted(rss for at, rss in samples if 0.5 * wall <= at <= 0.9 * wall)
    return held[len(held) // 2] if held else None


def compare_alternately(commands: dict[str, tuple[list[str], dict]], repeats: int,
                        title: str) -> dict[str, tuple[float, float]]:
    """Run each (command, env) in turn, ``repeats`` times (the reference first: its label
    is the first key, stemsplit's the last); print every run, the medians of wall time and
    peak RSS, and the reference / stemsplit ratios. Returns the medians by label."""
    import statistics

    results: dict[str, list[tuple[float, float]]] = {label: [] for label in commands}
    width = max(len(label) for label in commands) + 2
    for repeat in range(repeats):
        for label, (command, env) in commands.items():
            wall, rss = measured_run(command, env)
            results[label].append((wall, rss))
            print(f"run {repeat + 1}  {label:<{width}} {wall:7.1f} s  {rss:7.0f} MiB", flush=True)
    medians = {label: (statistics.median(w for w, _ in runs), statistics.median(r for _, r in runs))
               for label, runs in results.items()}
    print(f"\n{title}, median of {repeats}:")
    for label, (wall, rss) in medians.items():
        print(f"  {label:<{width}} {wall:7.1f} s  {rss:7.0f} MiB")
    reference, ours = list(commands)[0], list(commands)[-1]
    (their_wall, their_rss), (our_wall, our_rss) = medians[reference], medians[ours]
    print(f"  {reference} / {ours}: time {their_wall / our_wall:.2f}x, "
          f"peak RSS {their_rss / our_rss:.2f}x")
    return medians


def demucs_command(track: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "demucs", "-n", "htdemucs", "--shifts", "0", *extra,
            "-o", str(out), str(track)]


def stemsplit_command(track: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "stemsplit", str(track), "-n", "htdemucs", "--shifts", "0",
            "--force", "-q", *extra, "-o", str(out)]
