"""The rest of ZFTurbo's zoo as named models: weights.toml entries in the published layout,
downloaded from a loopback server, run with ``-n``, scored with ``eval``.

The golden fixtures (tests/golden.py) stand in for the published files: the same checkpoint
formats and names (DrumSep's demucs package ``.th``, BandIt Plus's ``.chpt``, Apollo's
``pytorch_model.bin``, SCNet's ``.ckpt``), ZFTurbo's own output as the expected stems.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.golden import assert_matches_golden, load_golden, run_stemsplit
from tests.parity import assert_close_to_peak

# fixture -> (model_type, weights.toml stems: a permutation of the config's where it has
# several, which the config's order wins over)
NAMED = {
    "drumsep": ("htdemucs", ["cymbals", "kick", "snare", "toms"]),
    "scnet_masked": ("scnet_masked", None),
    "bandit": ("bandit", None),
    "apollo": ("apollo", ["restored"]),
}


def served_registry(tmp_path, server, fixture: str) -> tuple[dict, str]:
    """A weights.toml naming the fixture as model ``zoo_<fixture>``, its files on the
    server (the checkpoint with sha256 and size, the config without), and the env to use."""
    golden = load_golden(fixture)
    model_type, stems = NAMED[fixture]
    stems = stems or list(golden.names)
    folder = server.root / fixture
    folder.mkdir(parents=True)
    checkpoint = shutil.copy(golden.checkpoint, folder / golden.checkpoint.name)
    shutil.copy(golden.config, folder / f"config_{fixture}.yaml")
    data = golden.checkpoint.read_bytes()
    rate = sf.info(golden.mixture_path).samplerate
    name = f"zoo_{fixture}"
    registry = tmp_path / "weights.toml"
    registry.write_text(f'''[models.{name}]
family = "msst"
model_type = "{model_type}"
architecture = "test"
description = "a test model"
stems = {json.dumps(stems)}
sample_rate = {rate}
files = [
  {{ name = "{golden.checkpoint.name}", url = "{server.url}{fixture}/{golden.checkpoint.name}", sha256 = "{hashlib.sha256(data).hexdigest()}", size = {len(data)} }},
  {{ name = "config_{fixture}.yaml", url = "{server.url}{fixture}/config_{fixture}.yaml" }},
]
''')
    assert checkpoint
    return {"STEMSPLIT_WEIGHTS_TOML": str(registry), "STEMSPLIT_CACHE": str(tmp_path / "cache"),
            "STEMSPLIT_OFFLINE": "0"}, name


@pytest.mark.parametrize("fixture", sorted(NAMED))
def test_a_named_model_downloads_and_matches_zfturbo(tmp_path, file_server, fixture):
    golden = load_golden(fixture)
    env, name = served_registry(tmp_path, file_server, fixture)
    download = run_stemsplit("models", "download", name, cwd=tmp_path, env=env)
    assert download.returncode == 0, download.stderr
    verify = run_stemsplit("models", "verify", name, cwd=tmp_path, env=env)
    assert verify.returncode == 0, verify.stderr
    env["STEMSPLIT_OFFLINE"] = "1"
    result = run_stemsplit(str(golden.mixture_path), "-n", name, "--float32", "--clip-mode",
                           "none", "-o", "out", "--json", cwd=tmp_path,
                           env=env)
    assert result.returncode == 0, result.stderr
    outputs = json.loads(result.stdout)["tracks"][0]["outputs"]
    assert sorted(outputs) == sorted(golden.names)
    stems = {stem: sf.read(tmp_path / path, dtype="float32", always_2d=True)[0].T.copy()
             for stem, path in outputs.items()}
    assert_matches_golden(golden, stems)


def test_eval_scores_apollo_against_the_clean_original(tmp_path, file_server):
    """``eval -n`` on a restoration model: ``restored`` against ``restored.wav``, or against
    ``mixture.wav`` with ``--mixture-as restored``; the line says which."""
    golden = load_golden("apollo")
    env, name = served_registry(tmp_path, file_server, "apollo")
    track = tmp_path / "ref" / "song"
    track.mkdir(parents=True)
    shutil.copy(golden.mixture_path, track / "mixture.wav")
    rate = sf.info(golden.mixture_path).samplerate
    sf.write(track / "restored.wav", golden.stem("restored").T, rate, subtype="FLOAT")
    result = run_stemsplit("eval", "ref", "-n", name, "--json", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    scored = json.loads(result.stdout)["tracks"][0]["stems"]["restored"]
    assert scored["reference"].endswith("restored.wav") and scored["sdr"] > 80
    result = run_stemsplit("eval", "ref", "-n", name, "--mixture-as", "restored", "--json",
                           "--offline", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    scored = json.loads(result.stdout)["tracks"][0]["stems"]["restored"]
    assert scored["reference"].endswith("mixture.wav")
    assert "restored against mixture.wav" in result.stderr
    mixture, _ = sf.read(track / "mixture.wav", dtype="float32", always_2d=True)
    error = golden.stem("restored") - mixture.T
    expected = 10 * np.log10((np.sum(mixture.astype(np.float64) ** 2) + 1e-8)
                             / (np.sum(error.astype(np.float64) ** 2) + 1e-8))
    assert abs(scored["sdr"] - expected) < 1e-3


def test_drumsep_on_a_named_models_drums(tmp_path, file_server):
    """``--stem snare`` of the named DrumSep (downloaded on first use): that one file, equal to
    ZFTurbo's snare."""
    golden = load_golden("drumsep")
    env, name = served_registry(tmp_path, file_server, "drumsep")
    result = run_stemsplit(str(golden.mixture_path), "-n", name, "--stem", "snare",
                           "--float32", "--clip-mode", "none", "-o", "out", cwd=tmp_path,
                           env=env)
    assert result.returncode == 0, result.stderr
    (path,) = result.stdout.split()
    data, _ = sf.read(tmp_path / path, dtype="float32", always_2d=True)
    assert path.endswith("snare.wav")
    assert_close_to_peak(torch.from_numpy(golden.stem("snare")), torch.from_numpy(data.T.copy()))
