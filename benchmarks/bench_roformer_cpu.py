"""audio-separator 0.47.1 versus stemsplit on the same BS-RoFormer checkpoint and track, on CPU.

Writes a random-weight BS-RoFormer with viperx ep_317's dimensions (dim 512, depth 12,
62 bands, stft 2048/441; UVR's config for it, with ``zero_dc: false`` added so that both
tools compute the same network: audio-separator ignores zero_dc), as
``model_bs_roformer_ep_317_sdr_12.9755.ckpt`` + ``.yaml``, makes a stereo float track, then
runs

    stemsplit TRACK --weights model_bs_roformer_ep_317_sdr_12.9755.ckpt --float32
    audio-separator TRACK -m model_bs_roformer_ep_317_sdr_12.9755.ckpt --use_soundfile
              (offline: its model folder seeded with UVR's download list naming the model)

alternately, several times, on the same threads. Prints each run's wall time and peak RSS,
the medians and their ratios, and stemsplit's peak RSS on a track ``--long`` times longer
(memory must not grow with the length). Both use the config's num_overlap (4) and chunk
(8 s); their stems differ by their chunking (audio-separator: Hamming window, last chunk
aligned to the end, 0.9 peak normalisation), so only their sizes are compared.

    python benchmarks/bench_roformer_cpu.py [--seconds 60] [--repeats 3] [--long 3]
        [--audio-separator PATH] [--threads 2]

Numbers, not assertions: run it on a quiet machine. audio-separator comes from the test
install (README: ``pip install --no-deps audio-separator==0.47.1`` and the test extra).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from _common import ROOT, make_track, measured_run

from tests.msst_models import reference_network, write_checkpoint  # noqa: E402

NAME = "model_bs_roformer_ep_317_sdr_12.9755"
CONFIG = ROOT / "tests" / "data" / "msst" / f"uvr_{NAME}.yaml"


def write_model(folder: Path) -> Path:
    """The checkpoint and its config (UVR's, zero_dc: false added) in ``folder``."""
    from stemsplit.families.msst_config import read_config

    folder.mkdir(parents=True, exist_ok=True)
    text = CONFIG.read_text().replace("  num_stems: 1\n", "  num_stems: 1\n  zero_dc: false\n")
    (folder / f"{NAME}.yaml").write_text(text)
    config = read_config(folder / f"{NAME}.yaml")
    sections = {"model": config.model}
    write_checkpoint(folder / f"{NAME}.ckpt", reference_network("bs_roformer", sections))
    return folder / f"{NAME}.ckpt"


def seed_audio_separator(models: Path, checkpoint: Path) -> None:
    """audio-separator's model folder, so that it runs offline: UVR's download list names
    the model, its files are already there."""
    models.mkdir(parents=True, exist_ok=True)
    for path in (checkpoint, checkpoint.with_suffix(".yaml")):
        shutil.copy(path, models / path.name)
    lists = {key: {} for key in (
        "demucs_download_list", "vr_download_list", "mdx_download_list",
        "mdx_download_vip_list", "mdx23c_download_list", "mdx23c_download_vip_list",
        "roformer_download_list")}
    lists["roformer_download_list"]["Roformer Model: BS-Roformer-Viperx-1297"] = {
        f"{NAME}.ckpt": f"{NAME}.yaml"}
    (models / "download_checks.json").write_text(json.dumps(lists))
    (models / "vr_model_data.json").write_text("{}")
    (models / "mdx_model_data.json").write_text("{}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long", type=float, default=3.0,
                        help="stemsplit's memory on a track this many times longer (0: skip)")
    parser.add_argument("--audio-separator", default=shutil.which("audio-separator"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if not args.audio_separator:
        raise SystemExit("audio-separator is not on PATH (see README, Install)")

    work = Path(tempfile.mkdtemp(prefix="stemsplit-bench-roformer-"))
    try:
        checkpoint = write_model(work / "model")
        models = work / "as-models"
        seed_audio_separator(models, checkpoint)
        track = work / "track.wav"
        make_track(track, args.seconds)
        threads = str(args.threads)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        tools = work / "bin"  # audio-separator wants an ffmpeg on PATH
        tools.mkdir()
        import imageio_ffmpeg

        (tools / "ffmpeg").symlink_to(shutil.which("ffmpeg") or imageio_ffmpeg.get_ffmpeg_exe())
        env["PATH"] = f"{tools}{os.pathsep}{env.get('PATH', '')}"
        ours = [sys.executable, "-m", "stemsplit", str(track), "--weights", str(checkpoint),
                "--float32", "--force", "-q", "-j", threads, "-o", str(work / "ours")]
        theirs = [args.audio_separator, str(track), "-m", checkpoint.name, "--model_file_dir",
                  str(models), "--output_dir", str(work / "theirs"), "--use_soundfile",
                  "--output_format", "WAV", "--log_level", "warning"]
        results: dict[str, list[tuple[float, float]]] = {"stemsplit": [], "audio-separator": []}
        for repeat in range(args.repeats):
            for label, command in (("audio-separator", theirs), ("stemsplit", ours)):
                wall, rss = measured_run(command, env)
                results[label].append((wall, rss))
                print(f"run {repeat + 1}  {label:<16} {wall:7.1f} s  {rss:7.0f} MiB", flush=True)
        medians = {label: (statistics.median(w for w, _ in runs),
                           statistics.median(r for _, r in runs))
                   for label, runs in results.items()}
        print(f"\n{args.seconds:g} s track, BS-RoFormer viperx dimensions, {threads} threads, "
              f"median of {args.repeats}:")
        for label, (wall, rss) in medians.items():
            print(f"  {label:<16} {wall:7.1f} s  {rss:7.0f} MiB")
        (their_wall, their_rss), (our_wall, our_rss) = medians["audio-separator"], medians["stemsplit"]
        print(f"  audio-separator / stemsplit: time {their_wall / our_wall:.2f}x, "
              f"peak RSS {their_rss / our_rss:.2f}x")
        if args.long:
            long_track = work / "long.wav"
            make_track(long_track, args.seconds * args.long)
            command = [*ours[:3], str(long_track), *ours[4:]]
            wall, rss = measured_run(command, env)
            print(f"  stemsplit on {args.seconds * args.long:g} s: {wall:.1f} s, peak RSS "
                  f"{rss:.0f} MiB (against {our_rss:.0f} MiB on {args.seconds:g} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
