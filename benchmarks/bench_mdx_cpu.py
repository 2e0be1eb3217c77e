"""audio-separator 0.47.1 versus stemsplit on the same MDX-Net ONNX network and track, on CPU.

Writes a random-weight ONNX network with Kim_Vocal_2's shapes (input/output [batch, 4, 3072,
256], n_fft 7680, compensate 1.009; a few 3x3 convolutions stand in for the real U-Net, so
the network costs less than the real one and the framing around it weighs relatively
more), makes a stereo float track that peaks at exactly 1.0, then runs

    stemsplit TRACK --weights Kim_Vocal_2.onnx --n-fft 7680 --compensate 1.009
              --primary-stem vocals --float32
    audio-separator TRACK -m Kim_Vocal_2.onnx --use_soundfile --normalization 1.0
              (offline: its model folder seeded with UVR's download list and hash table)

one after the other, several times. Prints the wall time and peak RSS of each run, the
medians, their ratio, and the max |difference| between the stems (ours = UVR's: vocals =
audio-separator's vocals x compensate, accompaniment = its instrumental).

Without audio-separator (``--audio-separator`` names its executable; default: the one on
PATH), the comparison is with the test suite's whole-track reference implementation of
UVR's algorithm (tests/mdx_models.py, numpy), which is said in the output.

    python benchmarks/bench_mdx_cpu.py [--seconds 60] [--repeats 3] [--batch-size 1]
        [--audio-separator PATH] [--hidden 16]

audio-separator pulls its own torch; to keep an existing one, install it beside, e.g.
``pip install --no-deps audio-separator==0.47.1`` plus librosa, pydub, requests, onnx2torch.
Numbers, not assertions: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from _common import ROOT, measured_run

from tests.mdx_models import (  # noqa: E402
    KIM_VOCAL_2, seed_audio_separator_models, write_mdx_onnx)

REFERENCE_SCRIPT = """
import sys, numpy as np, soundfile
sys.path.insert(0, {root!r})
from tests.mdx_models import reference_separation, onnx_runner
import onnxruntime
mix = soundfile.read({track!r}, dtype="float32")[0].T
session = onnxruntime.InferenceSession({model!r}, providers=["CPUExecutionProvider"])
run = lambda a: session.run(["output"], {{"input": a}})[0]
primary, secondary = reference_separation(mix, run, n_fft={n_fft}, dim_f={dim_f},
                                          dim_t={dim_t}, compensate={compensate})
soundfile.write({out!r} + "/vocals.wav", primary.T.astype(np.float32), 44100, subtype="FLOAT")
soundfile.write({out!r} + "/accompaniment.wav", secondary.T.astype(np.float32), 44100,
                subtype="FLOAT")
"""


def make_track(path: Path, seconds: float) -> None:
    """Two tones, a sweep and noise, scaled to peak at exactly 1.0."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 44100)) / 44100
    sweep = 0.2 * np.sin(2 * np.pi * (300 + 20 * t) * t)
    mix = np.stack([0.3 * np.sin(2 * np.pi * 220 * t) + sweep, 0.3 * np.sin(2 * np.pi * 330 * t)])
    mix += 0.05 * rng.standard_normal(mix.shape)
    mix /= np.abs(mix).max()
    soundfile.write(path, mix.T.astype(np.float32), 44100, subtype="FLOAT")


def audio_separator_command(executable: str, track: Path, model: Path, work: Path) -> list[str]:
    """Seed audio-separator's model folder for ``model`` (as Kim_Vocal_2.onnx); its command."""
    models = work / "as-models"
    seed_audio_separator_models(models, model, n_fft=KIM_VOCAL_2["n_fft"],
                                dim_f=KIM_VOCAL_2["dim_f"], dim_t=KIM_VOCAL_2["dim_t"],
                                compensate=KIM_VOCAL_2["compensate"], primary="Vocals")
    return [executable, str(track), "-m", "Kim_Vocal_2.onnx", "--model_file_dir", str(models),
            "--output_dir", str(work / "audio-separator"), "--use_soundfile",
            "--normalization", "1.0", "--output_format", "WAV", "--log_level", "warning"]


def read(path: Path) -> np.ndarray:
    return soundfile.read(path, dtype="float32")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=16,
                        help="hidden channels of the stand-in network (its cost)")
    parser.add_argument("--audio-separator", default=shutil.which("audio-separator"),
                        help="the audio-separator executable (default: on PATH)")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="stemsplit-bench-mdx-") as directory:
        work = Path(directory)
        model = write_mdx_onnx(work / "Kim_Vocal_2.onnx", KIM_VOCAL_2["dim_f"],
                               KIM_VOCAL_2["dim_t"], kind="heavy", hidden=options.hidden)
        track = work / "track.wav"
        make_track(track, options.seconds)
        env = dict(os.environ)
        tools = work / "bin"  # audio-separator wants an ffmpeg on PATH
        tools.mkdir()
        import imageio_ffmpeg
        (tools / "ffmpeg").symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
        env["PATH"] = f"{tools}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
        ours = [sys.executable, "-m", "stemsplit", str(track), "--weights", str(model),
                "--n-fft", str(KIM_VOCAL_2["n_fft"]), "--compensate",
                str(KIM_VOCAL_2["compensate"]), "--primary-stem", "vocals", "--float32",
                "--clip-mode", "none", "--batch-size", str(options.batch_size), "--force", "-q",
                "-o", str(work / "stemsplit")]
        if options.audio_separator:
            peer = "audio-separator"
            peer_command = audio_separator_command(options.audio_separator, track, model, work)
        else:
            peer = "reference"
            (work / "reference").mkdir()
            script = REFERENCE_SCRIPT.format(root=str(ROOT), track=str(track), model=str(model),
                                             out=str(work / "reference"), **KIM_VOCAL_2)
            peer_command = [sys.executable, "-c", script]
        commands = {peer: peer_command, "stemsplit": ours}
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        print(f"{options.seconds:g} s stereo track, random-weight MDX-Net with Kim_Vocal_2's "
              f"shapes ({options.hidden} hidden channels), CPU, {os.cpu_count()} cores")
        if peer == "reference":
            print("audio-separator not found: comparing with the whole-track numpy reference "
                  "implementation of UVR's algorithm (tests/mdx_models.py) instead")
        for repeat in range(options.repeats):
            for name, command in commands.items():
                wall, rss = measured_run(command, env)
                results[name].append((wall, rss))
                print(f"  run {repeat + 1} {name:<15} {wall:7.2f} s  {rss:8.0f} MiB", flush=True)
        medians = {name: (statistics.median(w for w, _ in runs),
                          statistics.median(r for _, r in runs))
                   for name, runs in results.items()}
        print()
        print(f"{'':16}{'median wall':>14}{'peak RSS':>12}")
        for name, (wall, rss) in medians.items():
            print(f"{name:16}{wall:12.2f} s{rss:8.0f} MiB")
        print(f"speed ratio ({peer} time / stemsplit time): "
              f"{medians[peer][0] / medians['stemsplit'][0]:.2f}")
        stems = work / "stemsplit" / "Kim_Vocal_2" / "track"
        vocals, accompaniment = read(stems / "vocals.wav"), read(stems / "accompaniment.wav")
        if peer == "audio-separator":
            out = work / "audio-separator"
            their_vocals = read(next(out.glob("*(Vocals)*.wav"))) * KIM_VOCAL_2["compensate"]
            their_accompaniment = read(next(out.glob("*(Instrumental)*.wav")))
        else:
            their_vocals = read(work / "reference" / "vocals.wav")
            their_accompaniment = read(work / "reference" / "accompaniment.wav")
        difference = max(float(np.abs(vocals - their_vocals).max()),
                         float(np.abs(accompaniment - their_accompaniment).max()))
        print(f"max |difference| between the float32 stems: {difference:.2e}")


if __name__ == "__main__":
    main()
