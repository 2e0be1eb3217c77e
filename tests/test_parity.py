"""Same checkpoints, same input: stemsplit's stems equal demucs 4.1.0's.

Random-weight checkpoints in the published Hugging Face format sit in a temporary HF cache;
stemsplit resolves them offline through its real loading code, and demucs (the oracle, a test
dependency) runs the very same files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from tests.checkpoints import (
    DEMUCS,
    HDEMUCS,
    HTDEMUCS,
    SMALL_DEMUCS_KWARGS,
    SMALL_HDEMUCS_KWARGS,
    SMALL_HTDEMUCS_KWARGS,
    SOURCES_6,
    hf_repo_dir,
    write_hf_bag,
)

SAMPLE_RATE = 44100
TOLERANCE = 1e-4  # the bound; we assert the tighter 1e-5 relative below as well

# name -> (repo, members, bag weights, bag segment): small networks, published layout.
BAGS = {
    "htdemucs": ("adefossez/HTDemucs", [(HTDEMUCS, [], SMALL_HTDEMUCS_KWARGS, 1, "955717e8")],
                 None, None),
    "htdemucs_6s": ("adefossez/HTDemucs-6s",
                    [(HTDEMUCS, [], {**SMALL_HTDEMUCS_KWARGS, "sources": SOURCES_6}, 2,
                      "5c90dfd2")], None, None),
    "htdemucs_ft": ("adefossez/HTDemucs-ft",
                    [(HTDEMUCS, [], SMALL_HTDEMUCS_KWARGS, 10 + i, sig) for i, sig in
                     enumerate(["f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d"])],
                    [[1.0 if i == j else 0.0 for j in range(4)] for i in range(4)], None),
    "hdemucs_mmi": ("adefossez/Demucs-hdemucs_mmi",
                    [(HDEMUCS, [], SMALL_HDEMUCS_KWARGS, 3, "75fc33f5")], None, 44),
    "mdx": ("adefossez/Demucs-mdx",
            [(DEMUCS, [], SMALL_DEMUCS_KWARGS, 4, "0d19c1c6"),
             (DEMUCS, [], {**SMALL_DEMUCS_KWARGS, "resample": False}, 5, "7ecf8ec1"),
             (HDEMUCS, [], SMALL_HDEMUCS_KWARGS, 6, "c511e2ab"),
             (HDEMUCS, [], {**SMALL_HDEMUCS_KWARGS, "cac": False}, 7, "7d865c68")],
            [[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 1.0],
             [1.0, 0.0, 1.0, 1.0]], 44),
}


def test_mixture(seconds: float, seed: int = 0) -> np.ndarray:
    """A stereo mix of tones, a pulse train and noise, peaking below 1."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    left = 0.3 * np.sin(2 * np.pi * 110 * t) + 0.1 * np.sin(2 * np.pi * 1760 * t)
    right = 0.25 * np.sin(2 * np.pi * 220 * t + 0.3) + 0.2 * (np.sin(2 * np.pi * 2 * t) > 0.99)
    noise = 0.05 * rng.standard_normal((2, t.size))
    return (np.stack([left, right]) + noise).astype(np.float32)


test_mixture.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("hf-parity")
    for name, (repo, members, weights, segment) in BAGS.items():
        write_hf_bag(home, name, repo, members, weights, segment)
    return home


@pytest.fixture
def offline_hf(hf_home, monkeypatch) -> Path:
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hf_home


def demucs_stems(hf_home: Path, name: str, mix: np.ndarray) -> torch.Tensor:
    """demucs' own loader and apply_model on the files of the cached bag."""
    import yaml
    from demucs.apply import BagOfModels
    from demucs.hf import load_safetensors_model

    repo = BAGS[name][0]
    snapshot = next((hf_repo_dir(hf_home, repo) / "snapshots").iterdir())
    bag = yaml.safe_load((snapshot / f"{name}.yaml").read_text())
    models = [load_safetensors_model(snapshot / f"{sig}.safetensors") for sig in bag["models"]]
    return apply_demucs_bag(BagOfModels(models, bag.get("weights"), bag.get("segment")), mix)


def apply_demucs_bag(model, mix: np.ndarray) -> torch.Tensor:
    """What `demucs -n <name> --shifts 0` computes with demucs' bag ``model``: apply_model on
    the normalised mix, split, overlap 0.25."""
    from demucs.apply import apply_model

    model.eval()
    wav = torch.from_numpy(mix)
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    with torch.no_grad():
        out = apply_model(model, ((wav - mean) / std)[None], shifts=0, split=True,
                          overlap=0.25)
    return (out * std + mean)[0]


def assert_parity(ours: torch.Tensor, expected: torch.Tensor) -> None:
    difference = float((ours - expected).abs().max())
    scale = max(1.0, float(expected.abs().max()))
    assert difference <= TOLERANCE, f"max |difference| {difference:.3g}"
    assert difference <= 1e-5 * scale, f"max |difference| {difference:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("name", list(BAGS))
def test_stems_equal_demucs(name, offline_hf):
    import stemsplit
    from stemsplit.pipeline import separate_array

    mix = test_mixture(21.0, seed=len(name))
    model = stemsplit.load_model(name)
    assert model.origin  # resolved from the temporary Hugging Face cache, offline
    stems = separate_array(mix, SAMPLE_RATE, model)
    ours = torch.stack([torch.from_numpy(stems[source]) for source in model.sources])
    expected = demucs_stems(offline_hf, name, mix)
    assert ours.shape == expected.shape == (len(model.sources), 2, mix.shape[1])
    assert_parity(ours, expected)


def test_file_pipeline_equals_demucs_for_float_output(offline_hf, tmp_path):
    """Decode -> spool -> streaming engine -> float32 wav: still the reference stems."""
    from stemsplit.pipeline import OutputOptions, separate_file
    from stemsplit.loading import load_model

    mix = test_mixture(23.5, seed=7)
    source = tmp_path / "mix.wav"
    soundfile.write(source, mix.T, SAMPLE_RATE, subtype="FLOAT")
    model = load_model("htdemucs")
    options = OutputOptions(out_dir=tmp_path / "out", float32=True, clip_mode="none")
    result = separate_file(source, model, options=options)
    expected = demucs_stems(offline_hf, "htdemucs", mix).clamp(-1, 1)
    for index, stem in enumerate(model.sources):
        data, rate = soundfile.read(result.outputs[stem], dtype="float32", always_2d=True)
        assert rate == SAMPLE_RATE and data.shape == (mix.shape[1], 2)
        assert_parity(torch.from_numpy(data.T), expected[index])


def _run(command: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def test_cli_equals_demucs_cli(hf_home, tmp_path):
    """`stemsplit x.wav -n htdemucs --shifts 0 --float32` against `demucs` on the same files."""
    mix = test_mixture(20.5, seed=3)
    source = tmp_path / "x.wav"
    soundfile.write(source, mix.T, SAMPLE_RATE, subtype="FLOAT")
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    theirs = _run([sys.executable, "-m", "demucs", "-n", "htdemucs", "--shifts", "0",
                   "--float32", "-o", str(tmp_path / "demucs"), str(source)], env)
    assert theirs.returncode == 0, theirs.stderr
    ours = _run([sys.executable, "-m", "stemsplit", str(source), "-n", "htdemucs",
                 "--shifts", "0", "--float32", "-o", str(tmp_path / "ours")], env)
    assert ours.returncode == 0, ours.stderr
    written = ours.stdout.split()
    assert len(written) == 4
    for stem in ("drums", "bass", "other", "vocals"):
        mine = tmp_path / "ours" / "htdemucs" / "x" / f"{stem}.wav"
        reference = tmp_path / "demucs" / "htdemucs" / "x" / f"{stem}.wav"
        assert str(mine) in written
        a, rate_a = soundfile.read(mine, dtype="float32")
        b, rate_b = soundfile.read(reference, dtype="float32")
        assert rate_a == rate_b == SAMPLE_RATE and a.shape == b.shape
        assert float(np.abs(a - b).max()) <= 1e-5
    # 16-bit output: the same stems, at most one LSB apart
    ours16 = _run([sys.executable, "-m", "stemsplit", str(source), "-n", "htdemucs",
                   "-o", str(tmp_path / "ours16"), "-q"], env)
    theirs16 = _run([sys.executable, "-m", "demucs", "-n", "htdemucs", "--shifts", "0",
                     "-o", str(tmp_path / "demucs16"), str(source)], env)
    assert ours16.returncode == 0 and theirs16.returncode == 0, ours16.stderr + theirs16.stderr
    assert ours16.stderr == ""
    for stem in ("drums", "vocals"):
        a, _ = soundfile.read(tmp_path / "ours16" / "htdemucs" / "x" / f"{stem}.wav",
                              dtype="int16")
        b, _ = soundfile.read(tmp_path / "demucs16" / "htdemucs" / "x" / f"{stem}.wav",
                              dtype="int16")
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


@pytest.fixture(scope="module")
def whole_bag_stems() -> dict:
    """Each bag's stems with every member run, computed once per bag."""
    return {}


@pytest.mark.parametrize("name, selection, runs", [
    ("htdemucs_ft", {"only": ("vocals",)}, 1),
    ("htdemucs_ft", {"two_stems": "vocals", "other_method": "minus"}, 1),
    ("htdemucs_ft", {"two_stems": "vocals"}, 4),
    ("htdemucs_ft", {"only": ("drums", "bass")}, 2),
    ("mdx", {"only": ("bass",)}, 2),
    ("mdx", {"only": ("other",)}, 2),
])
def test_only_the_networks_the_outputs_need_run(offline_hf, whole_bag_stems, name, selection,
                                               runs):
    """A bag member whose weight is 0 for every stem the outputs are made of is not run, and
    the outputs are exactly the whole bag's (shifts included: offsets are drawn per member
    of the whole bag)."""
    from stemsplit.engine import SeparationSettings
    from stemsplit.loading import load_model
    from stemsplit.pipeline import StemSelection, separate_array

    model = load_model(name)
    calls = []
    for index, network in enumerate(model.networks):
        network.register_forward_pre_hook(lambda module, args, index=index: calls.append(index))
    mix = test_mixture(9.0, seed=4)
    settings = SeparationSettings(shifts=2, seed=3)
    chosen = StemSelection(**selection)
    fast = separate_array(mix, SAMPLE_RATE, model, settings=settings, selection=chosen)
    assert len(set(calls)) == runs
    calls.clear()
    if name not in whole_bag_stems:
        whole_bag_stems[name] = separate_array(mix, SAMPLE_RATE, model, settings=settings)
        assert len(set(calls)) == len(model.networks)
    whole = whole_bag_stems[name]
    for stem, values in fast.items():
        if stem in whole:
            assert np.array_equal(values, whole[stem]), stem
            continue
        else:  # the complement of --two-stems, from the whole bag's stems
            kept = [s for s in model.sources if s != chosen.two_stems]
            expected = (mix - whole[chosen.two_stems] if chosen.other_method == "minus"
                        else sum(whole[s] for s in kept))
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-6)
