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
the medians and their ratios. Both use the config's chunk (8 s) and num_overlap (UVR's 4,
or ``--num-overlap``, written into the config both read); their stems differ by their
chunking (audio-separator: Hamming window, last chunk aligned to the end, 0.9 peak
normalisation), so only their sizes are compared. Then stemsplit's peak RSS against track
length (``--memory-seconds``), with a small random BS-RoFormer (the engine's memory, not the
network's, is what could grow).

    python benchmarks/bench_roformer_cpu.py [--seconds 60] [--repeats 3] [--num-overlap 2]
        [--memory-seconds 60,600] [--audio-separator PATH] [--threads 2]

Numbers, not assertions: run it on a quiet machine. audio-separator comes from the test
install (README: ``pip install --no-deps audio-separator==0.47.1`` and the test extra).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from _common import ROOT, compare_alternately, make_track, measured_run

from tests.msst_models import reference_network, write_checkpoint  # noqa: E402

NAME = "model_bs_roformer_ep_317_sdr_12.9755"
CONFIG = ROOT / "tests" / "data" / "msst" / f"uvr_{NAME}.yaml"


def write_model(folder: Path, num_overlap: int | None) -> Path:
    """The checkpoint and its config (UVR's, zero_dc: false added) in ``folder``."""
    from stemsplit.families.msst.config import read_config

    folder.mkdir(parents=True, exist_ok=True)
    text = CONFIG.read_text().replace("  num_stems: 1\n", "  num_stems: 1\n  zero_dc: false\n")
    if num_overlap:
        text = text.replace("  num_overlap: 4", f"  num_overlap: {num_overlap}")
    (folder / f"{NAME}.yaml").write_text(text)
    config = read_config(folder / f"{NAME}.yaml")
    sections = {"model": config.model}
    write_checkpoint(folder / f"{NAME}.ckpt", reference_network("bs_roformer", sections))
    return folder / f"{NAME}.ckpt"


def write_small_model(folder: Path) -> Path:
    from tests.msst_models import config_sections, write_config

    folder.mkdir(parents=True, exist_ok=True)
    sections = config_sections("bs_roformer")
    write_config(folder / "small.yaml", sections)
    return write_checkpoint(folder / "small.ckpt", reference_network("bs_roformer", sections))


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
    parser.add_argument("--num-overlap", type=int, default=None,
                        help="replace the config's num_overlap (4) for both tools")
    parser.add_argument("--memory-seconds", default="60,600",
                        help="track lengths for stemsplit's memory check ('' to skip)")
    parser.add_argument("--audio-separator", default=shutil.which("audio-separator"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if not args.audio_separator:
        raise SystemExit("audio-separator is not on PATH (see README, Install)")

    work = Path(tempfile.mkdtemp(prefix="stemsplit-bench-roformer-"))
    try:
        checkpoint = write_model(work / "model", args.num_overlap)
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
        compare_alternately({"audio-separator": (theirs, env), "stemsplit": (ours, env)},
                            args.repeats, f"{args.seconds:g} s track, BS-RoFormer viperx "
                            f"dimensions, {threads} threads")
        if args.memory_seconds:
            print("\nstemsplit's peak RSS against track length (small random BS-RoFormer):")
            small = write_small_model(work / "small")
            for seconds in (float(value) for value in args.memory_seconds.split(",")):
                long_track = work / f"track-{seconds:g}.wav"
                make_track(long_track, seconds)
                command = [*ours[:3], str(long_track), "--weights", str(small), *ours[6:]]
                wall, rss = measured_run(command, env)
                print(f"  {seconds:7g} s of audio: {wall:6.1f} s, peak RSS {rss:6.0f} MiB",
                      flush=True)
                long_track.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
