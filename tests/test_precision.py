"""``--precision``: fp32 stays the reference; bf16 runs a designed path (Spleeter, htdemucs,
the RoFormers, MDX23C) or autocast (the other networks); fp16 is refused on a CPU; the quality of bf16
is judged by SDR on Deezer's real Spleeter weights, on songs with true stems."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from stemsplit import precision as precision_module
from stemsplit.errors import UsageError
from stemsplit.evaluation import sdr
from stemsplit.families.base import LoadedModel
from stemsplit.families.spleeter.adapter import FAMILY as SPLEETER
from stemsplit.models import roformer
from stemsplit.models.roformer import rotate_pairs
from stemsplit.models.spleeter import SpleeterNet
from stemsplit.precision import Precision, check_precision, cpu_has_bf16, resolve_precision
from stemsplit.separator import Separator
from tests.spleeter_models import INSTRUMENTS, real_2stems_folder, require_oracle, test_signal
from tests.checkpoints import HDEMUCS, SMALL_HDEMUCS_KWARGS, write_hf_bag
from tests.golden import load_golden
from tests.msst_models import config_sections, reference_network, write_checkpoint, write_config
from tests.songs import mixture, song

CPU = torch.device("cpu")


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    reference, estimate = np.asarray(reference, np.float64), np.asarray(estimate, np.float64)
    return float(10 * np.log10(np.sum(reference ** 2) / np.sum((reference - estimate) ** 2)))


# -- choosing a precision -----------------------------------------------------------------
def test_names_and_devices():
    assert check_precision(None) == "auto" and check_precision("BF16") == "bf16"
    with pytest.raises(UsageError, match="--precision fp8: unknown"):
        check_precision("fp8")
    with pytest.raises(UsageError, match="fp16 needs a GPU"):
        check_precision("fp16", "cpu")
    assert check_precision("fp16", "auto") == "fp16"  # auto may find a GPU: decided at load
    with pytest.raises(UsageError, match="fp16 needs a GPU"):
        resolve_precision("fp16", CPU)
    assert resolve_precision("auto", CPU) == Precision("fp32")
    assert not resolve_precision("fp32", CPU).reduced
    assert resolve_precision("bf16", CPU).dtype == torch.bfloat16


def test_bf16_on_a_cpu_without_it_warns(tmp_path, monkeypatch):
    with_bf16 = tmp_path / "with"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    without = tmp_path / "without"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    assert cpu_has_bf16(with_bf16) and not cpu_has_bf16(without)
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: False)
    emulated = resolve_precision("bf16", CPU)
    assert emulated.name == "bf16" and "emulated" in emulated.warning
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: True)
    assert resolve_precision("bf16", CPU).warning is None


def test_a_family_outside_torch_refuses_reduced_precision():
    model = LoadedModel(name="onnx_model", sources=("vocals",), sample_rate=44100,
                        audio_channels=2, networks=[object()], bag_weights=[[1.0]], origin="",
                        family=SPLEETER, runs_outside_torch=True)
    with pytest.raises(UsageError, match="runs outside torch"):
        SPLEETER.set_precision(model, Precision("bf16"))
    SPLEETER.set_precision(model, Precision("fp32"))  # fp32: nothing to do
    assert model.precision == "fp32" and model.autocast_dtype is None


def test_the_command_line_refuses_fp16_on_a_cpu_at_once(run_cli, tmp_path):
    (tmp_path / "song.wav").write_bytes(b"")  # never read: refused before
    result = run_cli("song.wav", "-d", "cpu", "--precision", "fp16")
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert lines[0] == "error: --precision fp16 needs a GPU: CPUs have no fast float16 " \
                       "arithmetic", lines
    unknown = run_cli("batch", ".", "--precision", "half")
    assert unknown.returncode == 2 and "--precision half: unknown" in unknown.stderr.decode()


# -- htdemucs' designed path; autocast, the default, on hdemucs ------------------------
@pytest.fixture(scope="module")
def hdemucs_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("hf-hdemucs")
    write_hf_bag(home, "hdemucs_mmi", "adefossez/Demucs-hdemucs_mmi",
                 [(HDEMUCS, [], SMALL_HDEMUCS_KWARGS, 2, "75fc33f5")])
    return home


def _bf16_against_fp32(name: str, mix: np.ndarray) -> tuple[object, object, dict, dict]:
    """(the bf16 model, its network, the fp32 stems, the bf16 stems)."""
    with Separator(name, device="cpu") as reference:
        expected = reference.separate(mix, 44100)
    with Separator(name, device="cpu", precision="bf16") as separator:
        member = separator.model.members[0]
        network = member.networks[0]
        stems = separator.separate(mix, 44100)
    return member, network, expected, stems


def _close_not_equal(expected: dict, stems: dict) -> None:
    for stem, values in stems.items():
        assert values.dtype == np.float32 and values.shape == expected[stem].shape
        assert 15 < snr_db(expected[stem], values) < 110, stem  # close, and not fp32 itself


@pytest.mark.parametrize("name, designed", [("htdemucs", True), ("hdemucs_mmi", False)])
def test_htdemucs_designed_path_and_autocast_on_hdemucs(name, designed, tiny_hf_home,
                                                        hdemucs_home, monkeypatch):
    """htdemucs: its weights in bf16, no autocast; an hdemucs bag: fp32 weights, autocast.
    Both close to fp32, and not fp32 itself."""
    home = tiny_hf_home if designed else hdemucs_home
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: True)
    member, network, expected, stems = _bf16_against_fp32(name, test_signal(3.0).T.copy())
    assert member.precision == "bf16"
    assert member.autocast_dtype == (None if designed else torch.bfloat16)
    weights_dtype = torch.bfloat16 if designed else torch.float32
    assert {parameter.dtype for parameter in network.parameters()} == {weights_dtype}
    _close_not_equal(expected, stems)


def test_the_separator_warns_where_bf16_is_emulated(tiny_hf_home, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tiny_hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="emulated"):
        Separator("htdemucs", device="cpu", precision="bf16").close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Separator("htdemucs", device="cpu").close()


# -- the RoFormers' and MDX23C's designed paths --------------------------------------------
@pytest.mark.parametrize("model_type", ["bs_roformer", "mel_band_roformer", "mdx23c"])
def test_msst_designed_paths(model_type, tmp_path, monkeypatch):
    """The RoFormers: the transformers' linears in bf16, the norms, band split and mask
    estimators in fp32; MDX23C: the whole U-Net in bf16, its STFT window in fp32. No
    autocast; the stems close to fp32's, not fp32's."""
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: True)
    model = {"bs_roformer": dict(config_sections(model_type)["model"],
                                 linear_transformer_depth=1)}.get(model_type)
    sections = config_sections(model_type, model=model)
    write_config(tmp_path / "model.yaml", sections)
    checkpoint = write_checkpoint(tmp_path / "model.ckpt",
                                  reference_network(model_type, sections, seed=3))
    mix = test_signal(4.0).T.copy()
    with Separator(weights=checkpoint, device="cpu") as reference:
        expected = reference.separate(mix, 44100)
    with Separator(weights=checkpoint, device="cpu", precision="bf16") as separator:
        member = separator.model.members[0]
        network = member.networks[0]
        stems = separator.separate(mix, 44100)
    assert member.precision == "bf16" and member.autocast_dtype is None
    dtypes = {name: parameter.dtype for name, parameter in network.named_parameters()}
    if model_type == "mdx23c":
        assert set(dtypes.values()) == {torch.bfloat16}
        assert network.window.dtype == torch.float32
    else:
        reduced = {name for name, dtype in dtypes.items() if dtype == torch.bfloat16}
        assert reduced == {name for name in dtypes if name.startswith("layers.")
                           and name.endswith(("to_qkv.weight", "to_qkv.0.weight",
                                              "to_gates.weight", "to_gates.bias",
                                              "to_out.0.weight", "to_out.1.weight",
                                              "net.1.weight", "net.1.bias",
                                              "net.4.weight", "net.4.bias"))}
        assert all(dtypes[name] == torch.float32 for name in dtypes
                   if name.endswith("gamma") or "rotary" in name or "mask_estimators" in name)
    _close_not_equal(expected, stems)


@pytest.mark.parametrize("name", ["scnet", "scnet_masked", "scnet_tran", "bandit", "bandit_v2",
                                  "apollo", "htdemucs"])
def test_the_other_zfturbo_networks_run_at_bf16(name, monkeypatch):
    """The ZFTurbo fixtures: networks without a designed path run under autocast (ZFTurbo's
    htdemucs takes htdemucs' designed path); close to fp32, not fp32 itself."""
    import soundfile

    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: True)
    golden = load_golden(name)
    mix, rate = soundfile.read(golden.mixture_path, dtype="float32", always_2d=True)
    stems = {}
    for label in ("fp32", "bf16"):
        with Separator(weights=golden.checkpoint, config=golden.config, device="cpu",
                       precision=label) as separator:
            member = separator.model.members[0]
            stems[label] = separator.separate(mix.T.copy(), rate)
    designed = name == "htdemucs"
    assert member.autocast_dtype == (None if designed else torch.bfloat16)
    _close_not_equal(stems["fp32"], stems["bf16"])


@pytest.mark.parametrize("chunk", [1 << 20, 16])
def test_rotation_of_16_bit_pairs_is_the_complex_rotation_rounded_once(chunk, monkeypatch):
    monkeypatch.setattr(roformer, "_ROTATION_CHUNK", chunk)  # 16: one slice of axis 1 at a time
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(5, 7, 3, 16, generator=generator)
    angles = torch.rand(7, 1, 8, generator=generator) * 6.3
    rotation = torch.polar(torch.ones_like(angles), angles)
    exact = values.bfloat16().float()
    rotate_pairs(exact, rotation)  # float32: the complex multiply
    reduced = values.bfloat16()
    rotate_pairs(reduced, rotation)
    assert reduced.dtype == torch.bfloat16
    assert torch.equal(reduced, exact.bfloat16())


# -- Spleeter's designed path -------------------------------------------------------------
def test_spleeter_bf16_path_converts_once_and_keeps_the_transforms_in_fp32():
    torch.manual_seed(0)
    net = SpleeterNet(INSTRUMENTS["2stems"])
    for name, buffer in net.named_buffers():  # batch norms with sane random statistics
        if name.endswith(("moving_variance", "gamma")):
            buffer.uniform_(0.5, 1.5)
        elif name.endswith(("moving_mean", "beta")):
            buffer.uniform_(-0.1, 0.1)
    block = torch.from_numpy(test_signal(12.0).T.copy())[None, :, : 511 * 1024 + 4096]
    with torch.inference_mode():
        expected = net(block)
        net.set_compute_dtype(torch.bfloat16)
        reduced = net(block)
    unet = net.unets[0]
    assert unet.encoders[0].weight.dtype == torch.bfloat16
    assert unet.encoders[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert unet.final.bias.dtype == torch.bfloat16
    assert unet.encoder_norms[0].moving_variance.dtype == torch.float32
    assert net.window.dtype == torch.float32 and reduced.dtype == torch.float32
    for stem in range(2):
        assert 20 < snr_db(expected[0, stem].numpy(), reduced[0, stem].numpy()) < 80


def test_real_spleeter_bf16_keeps_the_vocals_sdr(record_property):
    """Deezer's 2stems on four synthesised 10 s songs with true stems: each song's vocals and
    accompaniment global SDR at bf16 within 0.05 dB of fp32."""
    require_oracle()
    folder = real_2stems_folder()
    results = {}
    with Separator(weights=folder, device="cpu") as fp32, \
            Separator(weights=folder, device="cpu", precision="bf16") as bf16:
        for seed in range(4):
            stems = song(seed, seconds=10.0)
            mix = mixture(stems)
            truth = {"vocals": stems["vocals"],
                     "accompaniment": mix - stems["vocals"]}
            for label, separator in (("fp32", fp32), ("bf16", bf16)):
                estimates = separator.separate(mix, 44100)
                for stem, reference in truth.items():
                    results[(seed, stem, label)] = sdr(reference, estimates[stem])
    for seed in range(4):
        for stem in ("vocals", "accompaniment"):
            at_fp32, at_bf16 = results[(seed, stem, "fp32")], results[(seed, stem, "bf16")]
            record_property(f"song{seed}_{stem}_sdr_db", f"{at_fp32:.3f} -> {at_bf16:.3f}")
            assert at_fp32 > 3.0, (seed, stem, at_fp32)  # the model separates these songs
            assert abs(at_bf16 - at_fp32) < 0.05, (seed, stem, at_fp32, at_bf16)


def test_cli_bf16_on_spleeter(run_cli, tmp_path):
    require_oracle()
    import soundfile

    soundfile.write(tmp_path / "song.wav", mixture(song(7, seconds=6.0)).T, 44100,
                    subtype="FLOAT")
    outputs = {}
    for label in ("fp32", "bf16"):
        result = run_cli("song.wav", "--weights", str(real_2stems_folder()), "-d", "cpu",
                         "--precision", label, "-o", label, "--float32")
        assert result.returncode == 0, result.stderr.decode()
        expect_warning = label == "bf16" and not cpu_has_bf16()
        assert ("emulated" in result.stderr.decode()) == expect_warning
        outputs[label] = {path.stem: soundfile.read(path)[0]
                          for path in Path(tmp_path, label).rglob("*.wav")}
    assert set(outputs["bf16"]) == {"vocals", "accompaniment"}
    for stem, values in outputs["bf16"].items():
        assert 20 < snr_db(outputs["fp32"][stem], values) < 100, stem


def test_eval_takes_precision_only_when_it_separates(run_cli, tmp_path):
    (tmp_path / "reference").mkdir()
    (tmp_path / "estimates").mkdir()
    result = run_cli("eval", "reference", "estimates", "--precision", "bf16")
    assert result.returncode == 2
    assert "--precision: only with -n MODEL" in result.stderr.decode()
    refused = run_cli("eval", "reference", "-n", "htdemucs", "-d", "cpu", "--precision", "fp16")
    assert refused.returncode == 2 and "fp16 needs a GPU" in refused.stderr.decode()
