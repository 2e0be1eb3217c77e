"""Random-weight Open-Unmix models in the published format, and the openunmix 1.3.0 oracle.

Published format (openunmix 1.3.0's ``*_spec`` downloads): one state dict per target, in
torch's legacy (non-zip) format, named ``<target>-<first 8 hex digits of its sha256>.pth``,
with v1.0's extra keys (``sample_rate``, ``stft.window``, ``transform.0.window``) beside the
network's. A model folder, as ``openunmix.utils.load_separator`` reads one, adds
``separator.json`` and ``<target>.json`` (``args``: nfft, nhop, nb_channels, hidden_size).

The oracle is openunmix 1.3.0 installed without its dependencies into
``<repo>/.openunmix-oracle`` (``tests/umx_oracle/setup.sh``; or ``$STEMSPLIT_UMX_ORACLE``)
with a stub torchaudio, run in a subprocess of this python.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from tests.oracles import unavailable

ROOT = Path(__file__).resolve().parent.parent
# umxhq's published shape: 4096/1024 STFT, hidden 512, 3 BiLSTM layers, bins below 16 kHz.
UMXHQ = dict(n_fft=4096, hop=1024, hidden=512, max_bin=1487, channels=2, rate=44100)
TINY = dict(n_fft=512, hop=128, hidden=16, max_bin=100, channels=2, rate=44100)
TINY_SE = dict(n_fft=256, hop=128, hidden=8, max_bin=129, channels=1, rate=16000)
FOUR = ("vocals", "drums", "bass", "other")


def random_state(n_fft: int, hidden: int, max_bin: int, channels: int, seed: int,
                 layers: int = 3) -> dict[str, torch.Tensor]:
    """A target network's state dict with random weights (batch-norm statistics too) in
    openunmix's key names, plus v1.0's extra keys."""
    from stemsplit.models.openunmix import UnmixNet

    torch.manual_seed(seed)
    net = UnmixNet(n_fft // 2 + 1, channels, hidden, layers, max_bin)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in net.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100)
            continue
        noise = torch.randn(value.shape, generator=generator)
        if key.endswith("running_var"):
            value = noise.abs() * 0.5 + 0.5
        elif value.ndim == 2:
            value = noise / value.shape[1] ** 0.5
        elif key in ("input_scale", "output_scale", "output_mean"):
            value = 1 + 0.3 * noise
        else:
            value = 0.3 * noise
        state[key] = value.float()
    state["sample_rate"] = torch.tensor(44100.0)
    state["stft.window"] = torch.hann_window(n_fft)
    state["transform.0.window"] = torch.hann_window(n_fft)
    return state


def save_legacy(state: dict, folder: Path, target: str, separator: str = "-") -> Path:
    """``state`` saved as torch's legacy format under openunmix's name:
    ``<target>-<sha256 prefix>.pth``."""
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f"{target}.part"
    torch.save(state, temporary, _use_new_zipfile_serialization=False)
    digest = hashlib.sha256(temporary.read_bytes()).hexdigest()[:8]
    path = folder / f"{target}{separator}{digest}.pth"
    temporary.rename(path)
    return path


def write_model_folder(folder: Path, targets: Sequence[str] = FOUR, *, n_fft: int, hop: int,
                       hidden: int, max_bin: int, channels: int, rate: int,
                       seed: int = 0) -> dict[str, Path]:
    """An openunmix model folder of random-weight targets; target -> its .pth."""
    paths = {}
    for number, target in enumerate(targets):
        state = random_state(n_fft, hidden, max_bin, channels, seed + number)
        paths[target] = save_legacy(state, folder, target)
        args = {"nfft": n_fft, "nhop": hop, "nb_channels": channels, "hidden_size": hidden,
                "bandwidth": 16000, "target": target}
        (folder / f"{target}.json").write_text(json.dumps({"args": args, "best_loss": 1.0}))
    (folder / "separator.json").write_text(json.dumps(
        {"targets": list(targets), "sample_rate": rate, "nfft": n_fft, "nhop": hop,
         "nb_channels": channels}))
    return paths


def registry_text(name: str, urls: Sequence[str], stems: Sequence[str], *, n_fft: int,
                  hop: int, rate: int) -> str:
    """A weights.toml entry of an Open-Unmix model downloading ``urls``."""
    files = ",\n".join(f'  {{ url = "{url}" }}' for url in urls)
    return (f'[models.{name}]\nfamily = "umx"\narchitecture = "Open-Unmix"\n'
            f'description = "test"\nstems = {json.dumps(list(stems))}\n'
            f'sample_rate = {rate}\nn_fft = {n_fft}\nhop = {hop}\nfiles = [\n{files}\n]\n')


# -- the oracle --------------------------------------------------------------------------
def oracle_dir() -> Path:
    """openunmix 1.3.0's folder; the test is skipped (fails under CI) without it."""
    folder = Path(os.environ.get("STEMSPLIT_UMX_ORACLE") or ROOT / ".openunmix-oracle")
    if not (folder / "openunmix" / "model.py").is_file():
        unavailable(f"the openunmix 1.3.0 oracle is missing from {folder}; run "
                    "tests/umx_oracle/setup.sh")
    return folder


_ORACLE = r"""
import json, sys
import numpy as np, soundfile, torch
from openunmix import predict, utils
torch.set_num_threads(1)
names = []
for job in json.loads(sys.argv[1]):
    options = job["options"]
    separator = utils.load_separator(job["folder"], targets=job["targets"],
                                     niter=options["niter"], residual=options["residual"],
                                     wiener_win_len=options["wiener_win_len"], device="cpu")
    separator.softmask = options["softmask"]
    separator.freeze()
    audio, rate = soundfile.read(job["audio"], dtype="float32", always_2d=True)
    with torch.no_grad():
        estimates = predict.separate(torch.as_tensor(audio.T), rate=rate, separator=separator)
    np.save(job["out"], np.stack([estimates[name][0].numpy() for name in estimates]))
    names.append(list(estimates))
print(json.dumps(names))
"""

ORACLE_DEFAULTS = {"niter": 1, "residual": False, "softmask": False, "wiener_win_len": 300}
"""openunmix's command-line defaults."""


def oracle_job(folder: Path, targets: Sequence[str], audio: Path, out: Path,
               **options) -> dict:
    """One separation for ``run_oracle_jobs``: a model folder's ``targets`` on ``audio``,
    the stems saved to ``out`` (.npy), with openunmix's ``options`` (``ORACLE_DEFAULTS``)."""
    return {"folder": str(folder), "targets": list(targets), "audio": str(audio),
            "out": str(out), "options": {**ORACLE_DEFAULTS, **options}}


def run_oracle_jobs(jobs: Sequence[dict]) -> list[tuple[list[str], np.ndarray]]:
    """openunmix's stems for each job, in one process: (stem names, (stems, channels,
    time))."""
    oracle = oracle_dir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(oracle), str(ROOT)])}
    result = subprocess.run([sys.executable, "-c", _ORACLE, json.dumps(list(jobs))], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    names = json.loads(result.stdout.strip().splitlines()[-1])
    return [(stems, np.load(job["out"])) for stems, job in zip(names, jobs)]


def run_oracle(folder: Path, targets: Sequence[str], audio: Path, out: Path,
               **options) -> tuple[list[str], np.ndarray]:
    """openunmix's stems of ``audio`` with the model folder ``folder``."""
    return run_oracle_jobs([oracle_job(folder, targets, audio, out, **options)])[0]


def write_mix(path: Path, seconds: float, rate: int, seed: int = 0, channels: int = 2) -> Path:
    """A float32 WAV of noise and tones with a digital-silence gap (zero STFT bins)."""
    import soundfile

    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    audio = 0.1 * rng.standard_normal((n, channels))
    audio += 0.3 * np.sin(2 * np.pi * 220 * t)[:, None] * np.linspace(0.5, 1, channels)
    audio[n // 4: n // 4 + rate // 10] = 0
    soundfile.write(path, audio.astype(np.float32), rate, subtype="FLOAT")
    return path


def read_stems(folder: Path, names: Sequence[str]) -> np.ndarray:
    """Our stems as written in ``folder`` (``<stem>.wav``): (stems, channels, time)."""
    import soundfile

    return np.stack([soundfile.read(folder / f"{name}.wav", dtype="float32",
                                    always_2d=True)[0].T for name in names])
