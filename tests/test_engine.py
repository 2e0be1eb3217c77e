"""The streaming engine: exact identity, and demucs' apply_model maths on toy networks."""

from __future__ import annotations

import random

import pytest
import torch

from stemsplit.engine import (
    MixStatistics,
    Network,
    SeparationSettings,
    StreamingSeparator,
    separate_tensor,
    transition_window,
)

SAMPLE_RATE = 1000  # small rates keep segments short; the maths does not care


class Identity(torch.nn.Module):
    """Every stem is the mixture itself."""

    def __init__(self, stems: int = 4):
        super().__init__()
        self.stems = stems

    def forward(self, mix):
        return mix[:, None].expand(-1, self.stems, -1, -1).clone()


class ContextNet(torch.nn.Module):
    """A toy 'separator' whose output depends on its neighbourhood and on the chunk edges,
    so that wrong padding, windows or offsets show up as differences. Attributes mimic
    demucs models so that demucs' apply_model can run it too."""

    def __init__(self, seed: int, stems: int = 4, segment: float = 1.3, pad_to: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv1d(2, 2 * stems, 9, padding=4)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator))
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=generator))
        self.sources = [f"s{i}" for i in range(stems)]
        self.samplerate = SAMPLE_RATE
        self.audio_channels = 2
        self.segment = segment
        self.pad_to = pad_to

    def valid_length(self, length):
        if not self.pad_to:
            return length
        return length + (-length) % self.pad_to + self.pad_to

    def forward(self, mix):
        batch, channels, length = mix.shape
        out = torch.tanh(self.conv(mix)) + mix.mean(dim=-1, keepdim=True).repeat(1, len(self.sources), 1)
        return out.view(batch, len(self.sources), channels, length)


def as_network(model, weights=None):
    return Network(
        forward=model,
        segment_length=int(model.samplerate * model.segment),
        valid_length=model.valid_length,
        stem_weights=tuple(weights or [1.0] * len(model.sources)),
    )


@pytest.mark.parametrize("length", [1, 37, 1299, 1300, 1301, 5000, 12345])
@pytest.mark.parametrize("shifts", [0, 2])
def test_identity_returns_the_input(length, shifts):
    torch.manual_seed(length)
    mix = torch.randn(2, length) * 0.3 + 0.05
    network = Network(Identity(), segment_length=1300, valid_length=lambda n: n,
                      stem_weights=(1.0,) * 4)
    settings = SeparationSettings(shifts=shifts, seed=3, max_shift_seconds=0.5)
    out = separate_tensor(mix, [network], SAMPLE_RATE, settings, block_frames=700)
    assert out.shape == (4, 2, length)
    for stem in out:
        torch.testing.assert_close(stem, mix, atol=2e-6, rtol=0)


def test_identity_on_digital_silence_is_silence():
    mix = torch.zeros(2, 4000)
    network = Network(Identity(), 1300, lambda n: n, (1.0,) * 4)
    out = separate_tensor(mix, [network], SAMPLE_RATE)
    assert torch.isfinite(out).all() and out.abs().max() == 0


def demucs_reference(models, mix, weights=None, bag_segment=None, **kwargs):
    """demucs 4.1.0's own separate_tensor maths on the same networks."""
    from demucs.apply import BagOfModels, apply_model

    bag = BagOfModels(models, weights, bag_segment)
    ref = mix.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    out = apply_model(bag, ((mix - mean) / std)[None], **kwargs)
    return (out * std + mean)[0]


@pytest.mark.parametrize("length", [700, 1300, 4321, 9000])
@pytest.mark.parametrize("overlap,power", [(0.25, 1.0), (0.5, 2.0), (0.1, 1.0)])
@pytest.mark.parametrize("pad_to", [0, 64])
def test_matches_demucs_apply_model(length, overlap, power, pad_to):
    torch.manual_seed(0)
    mix = torch.randn(2, length)
    model = ContextNet(1, pad_to=pad_to)
    expected = demucs_reference([model], mix, shifts=0, overlap=overlap,
                                transition_power=power)
    settings = SeparationSettings(overlap=overlap, transition_power=power)
    ours = separate_tensor(mix, [as_network(model)], SAMPLE_RATE, settings, block_frames=333)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_bag_with_weights_segment_and_shifts_matches_demucs(batch_size):
    torch.manual_seed(1)
    mix = torch.randn(2, 6000)
    models = [ContextNet(1, segment=1.3), ContextNet(2, segment=2.0, pad_to=32),
              ContextNet(3, segment=0.9)]
    weights = [[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.5], [1.0, 0.0, 1.0, 1.0]]
    random.seed(11)  # demucs draws its shifts from the global generator, in our order
    expected = demucs_reference(models, mix, weights, bag_segment=1.1, shifts=2)
    for model in models:  # BagOfModels overrode their segment, as our loader does
        assert model.segment == 1.1
    networks = [as_network(m, w) for m, w in zip(models, weights)]
    settings = SeparationSettings(shifts=2, seed=11, batch_size=batch_size)
    ours = separate_tensor(mix, networks, SAMPLE_RATE, settings, block_frames=1000)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_memory_stays_bounded_while_streaming():
    """Input and accumulators never hold more than a few segments, whatever the length."""
    model = ContextNet(4)
    network = as_network(model)
    total = 200_000
    separator = StreamingSeparator([network], total, 2, 4, SAMPLE_RATE, 0.0, 1.0)
    emitted = 0
    largest_window = 0
    for begin in range(0, total, 500):
        for block in separator.push(torch.randn(2, min(500, total - begin))):
            emitted += block.shape[-1]
        largest_window = max(largest_window, separator._input.data.shape[-1])
    for block in separator.finish():
        emitted += block.shape[-1]
    assert emitted == total
    assert largest_window <= 2 * network.segment_length + 500


def test_same_seed_same_stems_and_shifts_change_them():
    torch.manual_seed(2)
    mix = torch.randn(2, 3000)
    network = as_network(ContextNet(5))
    one = separate_tensor(mix, [network], SAMPLE_RATE, SeparationSettings(shifts=2, seed=1))
    two = separate_tensor(mix, [network], SAMPLE_RATE, SeparationSettings(shifts=2, seed=1))
    other = separate_tensor(mix, [network], SAMPLE_RATE, SeparationSettings(shifts=2, seed=2))
    assert torch.equal(one, two)
    assert not torch.equal(one, other)


def test_statistics_match_torch():
    torch.manual_seed(3)
    mix = torch.randn(2, 10007) * 0.2 + 0.1
    statistics = MixStatistics()
    for begin in range(0, mix.shape[-1], 999):
        statistics.update(mix[:, begin:begin + 999])
    ref = mix.double().mean(0)
    assert statistics.frames == 10007
    assert statistics.mean == pytest.approx(float(ref.mean()), abs=1e-12)
    assert statistics.std == pytest.approx(float(ref.std()), rel=1e-12)


def test_transition_window_is_demucs_triangle():
    window = transition_window(7, 1.0)
    torch.testing.assert_close(window, torch.tensor([1, 2, 3, 4, 3, 2, 1]) / 4.0)
