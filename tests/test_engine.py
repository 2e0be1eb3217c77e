"""The streaming engine: exact identity, and demucs' apply_model maths on toy networks."""

from __future__ import annotations

import random

import pytest
import torch

from stemsplit.engine import (
    ChunkPlace,
    Chunking,
    MixStatistics,
    Network,
    Normalisation,
    Prepass,
    SeparationSettings,
    StreamingSeparator,
    Window,
    overlap_stride,
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


def demucs_chunking(length: int, overlap: float = 0.25, power: float = 1.0,
                    input_length=None) -> Chunking:
    """demucs' apply_model chunking (the demucs family builds the same value)."""
    return Chunking(length=length, stride=overlap_stride(overlap, length),
                    window=Window("triangle", power=power), input_length=input_length,
                    normalise=Normalisation(unbiased=True, epsilon=1e-8))


def as_network(model, weights=None, overlap: float = 0.25, power: float = 1.0):
    return Network(
        forward=model,
        chunking=demucs_chunking(int(model.samplerate * model.segment), overlap, power,
                                 model.valid_length),
        stem_weights=tuple(weights or [1.0] * len(model.sources)),
    )


@pytest.mark.parametrize("length", [1, 37, 1299, 1300, 1301, 5000, 12345])
@pytest.mark.parametrize("shifts", [0, 2])
def test_identity_returns_the_input(length, shifts):
    torch.manual_seed(length)
    mix = torch.randn(2, length) * 0.3 + 0.05
    network = Network(Identity(), chunking=demucs_chunking(1300), stem_weights=(1.0,) * 4)
    settings = SeparationSettings(shifts=shifts, seed=3, max_shift_seconds=0.5)
    out = separate_tensor(mix, [network], SAMPLE_RATE, settings, block_frames=700)
    assert out.shape == (4, 2, length)
    for stem in out:
        torch.testing.assert_close(stem, mix, atol=2e-6, rtol=0)


def test_identity_on_digital_silence_is_silence():
    mix = torch.zeros(2, 4000)
    network = Network(Identity(), demucs_chunking(1300), (1.0,) * 4)
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
    ours = separate_tensor(mix, [as_network(model, overlap=overlap, power=power)], SAMPLE_RATE,
                           block_frames=333)
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
    separator = StreamingSeparator([network], total, 2, 4, SAMPLE_RATE, _statistics(0.0, 1.0))
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


@pytest.mark.parametrize("total,block", [(52_920, 2_621), (12_000, 5_000), (1_500, 1_000)])
def test_the_end_of_a_track_emits_no_bigger_blocks_than_its_middle(total, block):
    """The last push may finish two strides and the tail at once (a 20-minute track at the
    default block size): it is still emitted a stride at a time, so the end of a track needs
    no bigger buffers than its middle (glibc would grow the heap for them, just then), and
    the stems are the same samples whatever the blocks."""
    torch.manual_seed(3)
    networks = [as_network(ContextNet(1)), as_network(ContextNet(2), [1.0, 0.5, 0.0, 2.0])]
    stride = min(network.chunking.stride for network in networks)
    mix = torch.randn(2, total)
    statistics = MixStatistics()
    statistics.update(mix)
    settings = SeparationSettings(shifts=1, seed=5)
    separator = StreamingSeparator(networks, total, 2, 4, SAMPLE_RATE, statistics, settings)
    streamed = []
    for begin in range(0, total, block):
        streamed += separator.push(mix[:, begin:begin + block])
    streamed += separator.finish()
    assert max(piece.shape[-1] for piece in streamed) <= stride
    whole = StreamingSeparator(networks, total, 2, 4, SAMPLE_RATE, statistics, settings)
    at_once = whole.push(mix) + whole.finish()
    assert max(piece.shape[-1] for piece in at_once) <= stride
    assert torch.equal(torch.cat(streamed, dim=-1), torch.cat(at_once, dim=-1))


def _statistics(mean: float, std: float) -> MixStatistics:
    """Statistics of a two-sample track with this mean and unbiased std."""
    statistics = MixStatistics()
    half = std / 2 ** 0.5
    statistics.update(torch.tensor([[mean - half, mean + half]] * 2, dtype=torch.float64))
    return statistics


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


# -- chunking strategies ------------------------------------------------------------------
STRATEGIES = {
    "demucs": lambda: Chunking(1300, 975, Window("triangle", power=2.0),
                               input_length=lambda n: n + (-n) % 64 + 64),
    "uvr": lambda: Chunking(1300, 975, Window("hann"), border=lambda n: (200, 1100 - n % 900),
                            fill="zeros", normalise=None),
    "uvr_without_overlap": lambda: Chunking(1300, 1300, Window("rectangular"), fill="zeros",
                                            border=lambda n: (200, 1100 - n % 900),
                                            normalise=None),
    "zfturbo": lambda: Chunking(
        1300, 650, Window("linear_fade", fade=130),
        border=lambda n: (650, 650) if n > 1300 else (0, 0), border_mode="reflect",
        fill="reflect", normalise=None),
    "zfturbo_thirds": lambda: Chunking(
        1300, 1300 // 3, Window("linear_fade", fade=130),
        border=lambda n: (867, 867) if n > 2 * 867 else (0, 0), border_mode="reflect",
        fill="reflect", normalise=Normalisation(unbiased=False, epsilon=0.0)),
    "hamming_aligned": lambda: Chunking(1300, 650, Window("hamming"), last_chunk="align_end",
                                        fill="zeros", normalise=None),
}


class ShiftedIdentity(torch.nn.Module):
    """Identity through a padded input: any input longer than the chunk is an error."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def forward(self, mix):
        assert mix.shape[-1] <= self.limit + 128
        return mix[:, None].expand(-1, 2, -1, -1).clone()


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("length", [1, 400, 1299, 1300, 1301, 2601, 9000])
@pytest.mark.parametrize("shifts", [0, 1])
def test_identity_for_every_strategy(strategy, length, shifts):
    """Whatever the window, borders, fill and last-chunk rule, an identity network gives the
    input back: inputs shorter than, equal to and longer than a chunk, streamed in blocks."""
    torch.manual_seed(length)
    mix = torch.randn(2, length) * 0.3 + 0.05
    network = Network(ShiftedIdentity(1300), STRATEGIES[strategy](), (1.0, 1.0))
    settings = SeparationSettings(shifts=shifts, seed=4, max_shift_seconds=0.3)
    out = separate_tensor(mix, [network], SAMPLE_RATE, settings, block_frames=377)
    assert out.shape == (2, 2, length)
    for stem in out:
        torch.testing.assert_close(stem, mix, atol=2e-6, rtol=0)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_memory_stays_bounded_for_every_strategy(strategy):
    network = Network(ShiftedIdentity(1300), STRATEGIES[strategy](), (1.0, 1.0))
    total = 60_000
    statistics = _statistics(0.0, 1.0)
    separator = StreamingSeparator([network], total, 2, 2, SAMPLE_RATE, statistics)
    emitted = largest = 0
    for begin in range(0, total, 500):
        for block in separator.push(torch.randn(2, min(500, total - begin))):
            emitted += block.shape[-1]
        largest = max(largest, separator._input.data.shape[-1],
                      max(p.acc.shape[-1] for member in separator._passes for p in member))
    emitted += sum(block.shape[-1] for block in separator.finish())
    assert emitted == total
    assert largest <= 3 * 1300 + 500


def test_linear_fade_rules_first_and_last_chunk():
    """ZFTurbo's fades: none at the start of the first chunk, none at the end of the last."""
    from stemsplit.engine import _Pass

    chunking = Chunking(100, 50, Window("linear_fade", fade=10), normalise=None)
    network = Network(ShiftedIdentity(100), chunking, (1.0,))
    one_pass = _Pass(network, 260, 0, 1, 1, torch.device("cpu"))
    assert one_pass.grid_count == 6 and one_pass.chunk_count == 6
    first, middle, last = (one_pass.weights(one_pass.chunk(i)) for i in (0, 2, 5))
    fade_in, fade_out = torch.linspace(0, 1, 10), torch.linspace(1, 0, 10)
    assert torch.equal(first[:10], torch.ones(10)) and torch.equal(first[-10:], fade_out)
    assert torch.equal(middle[:10], fade_in) and torch.equal(middle[-10:], fade_out)
    assert last.shape == (10,) and torch.equal(last, fade_in)  # cut to its 10 samples
    single = _Pass(network, 40, 0, 1, 1, torch.device("cpu"))
    weights = single.weights(single.chunk(0))
    assert single.grid_count == 1 and torch.equal(weights, torch.ones(40))


def test_align_end_moves_the_last_chunk_back():
    from stemsplit.engine import _Pass

    network = Network(ShiftedIdentity(100), Chunking(100, 50, Window("hamming"),
                                                     last_chunk="align_end"), (1.0,))
    one_pass = _Pass(network, 260, 0, 1, 1, torch.device("cpu"))
    starts = [one_pass.chunk(i).start for i in range(one_pass.chunk_count)]
    assert starts == [0, 50, 100, 150, 160]
    assert all(one_pass.chunk(i).length == 100 for i in range(one_pass.chunk_count))


def test_reflected_border_reads_the_mirror_image():
    from stemsplit.engine import _InputWindow

    window = _InputWindow(1, torch.device("cpu"))
    window.append(torch.arange(10.0)[None])
    got = window.read(-3, 16, 10, reflect=(3, 3))[0].tolist()
    assert got == [3, 2, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 8, 7, 6]
    assert window.read(-5, 3, 10, reflect=(3, 3))[0].tolist() == [0, 0, 3]
    assert window.read(11, 4, 10, reflect=(3, 3))[0].tolist() == [7, 6, 0, 0]


def test_overlap_stride_fraction_or_count():
    assert overlap_stride(0.25, 1000) == 750 and overlap_stride(0.0, 1000) == 1000
    assert overlap_stride(2, 1001) == 500 and overlap_stride(4.0, 1000) == 250
    for bad in (1.0, 1.5, 2.5, -0.1):
        with pytest.raises(ValueError):
            overlap_stride(bad, 1000)


class HalfHalf(torch.nn.Module):
    """Each chunk gives the input weighted by a triangle that, summed over chunks overlapping
    by half, is 1: pieces of one overlap-add."""

    def forward(self, mix):
        length = mix.shape[-1]
        ramp = torch.arange(length, dtype=torch.float32) / (length // 2)
        weight = torch.minimum(ramp, 2 - ramp).clamp(0, 1)
        return (mix * weight)[:, None]


def test_summed_chunks_are_one_overlap_add():
    """overlap_rule "sum": chunks add up as they are (no window, no division)."""
    chunking = Chunking(200, 100, Window("rectangular"), border=lambda n: (100, 300),
                        fill="zeros", normalise=None, overlap_rule="sum")
    torch.manual_seed(5)
    mix = torch.randn(2, 1234)
    out = separate_tensor(mix, [Network(HalfHalf(), chunking, (1.0,))], SAMPLE_RATE,
                          block_frames=97)
    torch.testing.assert_close(out[0], mix, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="no window"):
        Chunking(200, 100, Window("hann"), overlap_rule="sum")


def test_a_prepass_measures_the_whole_track_before_positioned_chunks():
    """measure_track feeds each chunk input (as the forward will get it) to the network's
    Prepass and folds the values; the positioned forward then sees that value, where its
    chunks sit, and a state kept across the pass; a network not measured is refused."""
    from stemsplit.engine import measure_track

    total, length, context = 10_000, 3_000, 200
    mix = torch.randn(2, total, generator=torch.Generator().manual_seed(3))
    seen: list[tuple[int, ...]] = []

    def measure(inputs: torch.Tensor, place: ChunkPlace) -> float:
        return float(inputs.abs().max())

    def forward(inputs: torch.Tensor, place: ChunkPlace) -> torch.Tensor:
        seen.append(place.read_starts)
        place.state["calls"] = place.state.get("calls", 0) + 1
        assert place.total_frames == total
        # the mixture scaled by the measured maximum, as a one-stem estimate
        return (inputs / place.measured)[:, None]

    chunking = Chunking(length=length, stride=length, window=Window("rectangular"),
                        input_length=lambda n: n + 2 * context, normalise=None,
                        positioned=True, chunks_per_call=1)
    network = Network(forward=forward, chunking=chunking, stem_weights=(1.0,),
                      prepass=Prepass(measure=measure, combine=max))
    statistics = MixStatistics()
    statistics.update(mix)
    with pytest.raises(ValueError, match="pre-pass"):
        StreamingSeparator([network], total, 2, 1, 44100, statistics)
    blocks = [mix[:, start : start + 777] for start in range(0, total, 777)]
    (measured,) = measure_track([network], blocks, total, 2, statistics)
    assert measured.prepass is None and measured.measured == float(mix.abs().max())
    separator = StreamingSeparator([measured], total, 2, 1, 44100, statistics,
                                   SeparationSettings(batch_size=4))
    outputs = [out for block in blocks for out in separator.push(block)] + separator.finish()
    stems = torch.cat(outputs, dim=-1)
    torch.testing.assert_close(stems[0], mix / mix.abs().max(), rtol=0, atol=0)
    assert seen == [(start - context,) for start in range(0, total, length)]  # one per call
    assert separator._passes[0][0].state["calls"] == len(seen)
