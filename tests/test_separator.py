"""The Python API: ``stemsplit.Separator`` and ``stemsplit.separate`` do what the command line
does (presets, ensembles, local checkpoints), with the models loaded once per Separator.

Random-weight htdemucs and htdemucs_ft bags under their published names (the registry's
member signatures and bag weights) stand in for the real ones, so the packaged preset
``four_stems_best`` (htdemucs_ft + htdemucs) resolves and loads as it would for a user.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from stemsplit.errors import StemsplitError, UnknownModelError, UsageError
from tests.checkpoints import HTDEMUCS, SMALL_HTDEMUCS_KWARGS, write_hf_bag

RATE = 44100
PRESET = "four_stems_best"
STEMS = ("drums", "bass", "other", "vocals")
FT_MEMBERS = ["f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d"]
FT_WEIGHTS = [[1.0 if i == j else 0.0 for j in range(4)] for i in range(4)]


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("hf-separator")
    tiny = {**SMALL_HTDEMUCS_KWARGS, "t_layers": 1}
    write_hf_bag(home, "htdemucs", "adefossez/HTDemucs", [(HTDEMUCS, [], tiny, 1, "955717e8")])
    write_hf_bag(home, "htdemucs_ft", "adefossez/HTDemucs-ft",
                 [(HTDEMUCS, [], tiny, 10 + index, sig) for index, sig in enumerate(FT_MEMBERS)],
                 weights=FT_WEIGHTS)
    return home


@pytest.fixture
def offline(hf_home, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("STEMSPLIT_MODEL", raising=False)
    monkeypatch.delenv("STEMSPLIT_WEIGHTS_TOML", raising=False)
    return hf_home


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    """1.5 s of stereo tones and noise, float wav."""
    folder = tmp_path_factory.mktemp("song")
    t = np.arange(int(1.5 * RATE)) / RATE
    rng = np.random.default_rng(3)
    mix = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 440 * t)])
    mix = (mix + 0.05 * rng.standard_normal(mix.shape)).astype(np.float32)
    path = folder / "song.wav"
    soundfile.write(path, mix.T, RATE, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def cli_stems(hf_home, song, tmp_path_factory) -> dict[str, np.ndarray]:
    """What `stemsplit song.wav -n four_stems_best --float32 --clip-mode none` writes."""
    out = tmp_path_factory.mktemp("cli")
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("STEMSPLIT_MODEL", None)
    result = subprocess.run([sys.executable, "-m", "stemsplit", str(song), "-n", PRESET,
                             "--float32", "--clip-mode", "none", "-o", str(out), "--json"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["model"] == PRESET
    return {stem: soundfile.read(path, dtype="float32")[0].T
            for stem, path in document["tracks"][0]["outputs"].items()}


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """The name of every model loaded from here on."""
    import stemsplit.loading as loading

    names: list[str] = []
    real = loading._load_named

    def counted(spec, *args, **kwargs):
        names.append(spec.name)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(loading, "_load_named", counted)
    return names


def assert_same_stems(stems: dict, expected: dict, tolerance: float = 1e-5) -> None:
    assert list(stems) == list(expected)
    for name in expected:
        assert stems[name].shape == expected[name].shape, name
        assert np.abs(stems[name] - expected[name]).max() <= tolerance, name


def test_a_preset_and_a_list_of_names_give_the_command_lines_stems(offline, song, cli_stems,
                                                                   loads):
    import stemsplit

    assert list(cli_stems) == list(STEMS)
    assert_same_stems(stemsplit.separate(song, model=PRESET, device="cpu"), cli_stems)
    assert loads == ["htdemucs_ft", "htdemucs"]
    listed = stemsplit.separate(song, model=["htdemucs_ft", "htdemucs"], device="cpu")
    assert_same_stems(listed, cli_stems)


def test_a_separator_loads_once_and_is_reused(offline, song, cli_stems, loads, tmp_path):
    import stemsplit

    reports = []
    with stemsplit.Separator(model=PRESET, device="cpu",
                             progress=lambda done, total: reports.append((done, total))) as sep:
        assert loads == ["htdemucs_ft", "htdemucs"]
        assert (sep.name, sep.models, sep.sources) == (PRESET, ["htdemucs_ft", "htdemucs"], STEMS)
        assert sep.sample_rate == RATE and str(sep.device) == "cpu"
        first = sep.separate(song)
        second = sep.separate(song)
        assert_same_stems(first, cli_stems)
        assert_same_stems(second, first, tolerance=0.0)
        assert reports and reports[-1][0] == reports[-1][1]
        written = sep.separate_to_files(song, tmp_path / "out", float32=True, clip_mode="none",
                                        stems=["vocals"])
        assert written == {"vocals": tmp_path / "out" / PRESET / "song" / "vocals.wav"}
        vocals = soundfile.read(written["vocals"], dtype="float32")[0].T
        assert np.abs(vocals - cli_stems["vocals"]).max() <= 1e-5
        assert loads == ["htdemucs_ft", "htdemucs"]  # nothing loaded again
    assert repr(sep) == "Separator(closed)"
    with pytest.raises(UsageError, match="closed"):
        sep.separate(song)
    sep.close()  # twice is fine


def test_arrays_and_tensors_come_back_as_they_went_in(offline, song, cli_stems):
    import stemsplit

    mix = soundfile.read(song, dtype="float32")[0].T
    with stemsplit.Separator(model=PRESET, device="cpu") as sep:
        from_numpy = sep.separate(mix, sample_rate=RATE, two_stems="vocals")
        assert list(from_numpy) == ["vocals", "accompaniment"]
        assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in from_numpy.values())
        assert np.abs(from_numpy["vocals"] - cli_stems["vocals"]).max() <= 1e-5
        tensor = torch.from_numpy(mix).double()
        from_tensor = sep.separate(tensor, sample_rate=RATE, stems=["drums", "bass"])
        assert list(from_tensor) == ["drums", "bass"]
        assert all(torch.is_tensor(t) and t.dtype == torch.float64 for t in from_tensor.values())
        assert np.abs(from_tensor["drums"].numpy() - cli_stems["drums"]).max() <= 1e-5
        batch = torch.stack([tensor[:, :RATE], tensor[:, RATE // 2:RATE // 2 + RATE]]).float()
        batched = sep.separate(batch, sample_rate=RATE)
        assert batched["vocals"].shape == (2, 2, RATE)
        one = sep.separate(batch[1], sample_rate=RATE)
        assert torch.equal(batched["vocals"][1], one["vocals"])
        resampled = sep.separate(mix, sample_rate=22050, stems=["vocals"])
        assert resampled["vocals"].shape == mix.shape
        with pytest.raises(UsageError, match="sample_rate"):
            sep.separate(mix)
        with pytest.raises(UsageError, match="stem 'guitar' is not produced by any model"):
            sep.separate(mix, sample_rate=RATE, two_stems="guitar")


def test_one_separator_shared_by_threads_gives_the_same_stems(offline, song):
    import stemsplit

    mix = soundfile.read(song, dtype="float32")[0].T[:, :RATE]
    with stemsplit.Separator(model="htdemucs", device="cpu") as sep:
        alone = sep.separate(mix, sample_rate=RATE)
        results: list = [None, None]

        def work(index: int) -> None:
            results[index] = sep.separate(mix, sample_rate=RATE)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for result in results:  # another thread: torch's own thread count, so float rounding
        assert_same_stems(result, alone, tolerance=1e-6)


def test_a_loaded_model_is_used_as_it_is(offline, song, loads):
    import stemsplit

    model = stemsplit.load_model("htdemucs", device="cpu")
    assert loads == ["htdemucs"]
    with stemsplit.Separator(model=model) as sep:
        assert sep.name == "htdemucs" and sep.models == ["htdemucs"]
        sep.separate(song)
    assert model.networks  # closing did not free the caller's model
    with pytest.raises(UsageError, match="takes no weights"):
        stemsplit.Separator(model=model, ensemble="max_fft")
    assert loads == ["htdemucs"]


def test_mistakes_are_one_line_before_any_work(offline, loads):
    import stemsplit
    from stemsplit.registry import load_registry

    with pytest.raises(UsageError, match="unknown option 'banana'"):
        stemsplit.Separator(model="htdemucs", banana=1)
    with pytest.raises(UsageError, match="--model-type applies to"):
        stemsplit.Separator(model=PRESET, model_type="bs_roformer")
    with pytest.raises(UsageError, match="--ensemble-weights: 3 weights for 2 models"):
        stemsplit.Separator(model=PRESET, ensemble_weights=[1, 2, 3])
    with pytest.raises(UsageError, match="named twice"):
        stemsplit.Separator(model=["htdemucs", "htdemucs"])
    with pytest.raises(UsageError, match="--segment must be positive"):
        stemsplit.Separator(model="htdemucs", segment_seconds=-1)
    with pytest.raises(UsageError, match="shifts"):
        stemsplit.Separator(model="htdemucs", shifts=-1)
    with pytest.raises(UsageError, match="model: a name"):
        stemsplit.separate(np.zeros((2, 10)), sample_rate=RATE, model=["htdemucs", 3])
    with pytest.raises(UnknownModelError, match="is a preset .* not a single model"):
        load_registry().get(PRESET)
    with pytest.raises(UsageError, match="unknown output option 'colour'"):
        stemsplit.Separator(model="htdemucs").separate_to_files("x.wav", colour="red")
    assert loads == ["htdemucs"]  # the last one only
    with pytest.raises(StemsplitError, match="applies to file inputs"):
        stemsplit.separate(np.zeros((2, 10)), sample_rate=RATE, model="htdemucs", out_dir="x")


def test_eval_takes_a_preset(offline, song, tmp_path):
    """`stemsplit eval REFS -n four_stems_best` separates each mixture with the preset."""
    track = tmp_path / "refs" / "one"
    track.mkdir(parents=True)
    mix, _ = soundfile.read(song, dtype="float32")
    soundfile.write(track / "mixture.wav", mix, RATE, subtype="FLOAT")
    for index, stem in enumerate(STEMS):
        soundfile.write(track / f"{stem}.wav", mix * (0.1 + 0.2 * index), RATE, subtype="FLOAT")
    result = subprocess.run([sys.executable, "-m", "stemsplit", "eval", str(tmp_path / "refs"),
                             "-n", PRESET, "--json", "-q", "-d", "cpu"],
                            env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == PRESET
    scored = report["tracks"][0]
    assert scored["status"] == "done" and sorted(scored["stems"]) == sorted(STEMS)
