"""The separation engine: chunking, overlap-add, shifts and bag weighting as a stream.

Tensor layout, everywhere in stemsplit: (batch, stems, channels, time). A mixture block is
(channels, time); a finished output block is (stems, channels, time).

The maths is that of demucs' ``apply_model`` with ``split=True``:

* the track is normalised by the mean and (unbiased) standard deviation of its mono mix,
  measured over the whole track beforehand (see ``MixStatistics``);
* each network cuts the track into segments of ``segment_length`` samples every
  ``stride = int((1 - overlap) * segment_length)`` samples, pads each chunk to the network's
  ``valid_length`` with real neighbouring audio (zeros only past the ends of the track), runs
  the network, trims back, and overlap-adds the chunks weighted by a triangle window raised
  to ``transition_power``;
* with shifts, each pass sees the track delayed by a random number of samples in
  [0, 0.5 s] (zeros in front), and the passes are averaged; the offsets come from a seeded
  generator, so two runs give identical stems (``shifts=0`` is exactly demucs' output);
* a bag averages its networks per stem with the bag weights.

Unlike ``apply_model``, nothing here holds the whole track: ``StreamingSeparator`` consumes
mixture blocks and emits output samples as soon as no later chunk can change them, so memory
depends on the segment length, never on the track length.

A ``Network`` may declare a different chunking rule than demucs' (the defaults): MDX-Net
(UVR) networks work on the raw mixture (``normalise=False``), see the track padded with zeros
(``padding``: n_fft/2 in front, up to a whole chunk behind; chunks stop at the padded end
rather than the track's), and are overlap-added with a symmetric Hann window of each chunk's
real length (``window="hann"``, or equal weights without overlap), as UVR does.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import torch

Forward = Callable[[torch.Tensor], torch.Tensor]
"""A network: mixture (batch, channels, time) -> stems (batch, stems, channels, time)."""

ProgressCallback = Callable[[int, int], None]
"""Called with (work done, total work), both in chunk samples summed over passes."""


@dataclass(frozen=True)
class Network:
    """One member of a bag, as the engine sees it."""

    forward: Forward
    segment_length: int
    """Samples per chunk."""
    valid_length: Callable[[int], int]
    """Input length the network wants for a chunk of n samples (n itself if it pads)."""
    stem_weights: tuple[float, ...]
    """Weight of this network's estimate of each stem in the bag average."""
    window: str = "triangle"
    """Overlap-add weight: "triangle" (demucs: the segment's triangle, cut to the chunk,
    raised to ``transition_power``) or "hann" (UVR: a symmetric Hann window of the chunk's
    real length; equal weights when ``overlap`` is 0)."""
    padding: Callable[[int], tuple[int, int]] | None = None
    """Zeros (in front, behind) around a track of n samples: the chunk grid starts at minus
    the front padding and chunks are cut off at the padded end. None: no padding (demucs)."""
    normalise: bool = True
    """Whether the network sees the track normalised by its mean and std (demucs) or raw."""

    def __post_init__(self) -> None:
        if self.window not in WINDOWS:
            raise ValueError(f"unknown window {self.window!r}; choose {', '.join(WINDOWS)}")


@dataclass(frozen=True)
class SeparationSettings:
    """How chunks are cut and combined; the defaults are demucs' ``--shifts 0`` defaults."""

    overlap: float = 0.25
    transition_power: float = 1.0
    shifts: int = 0
    seed: int = 0
    max_shift_seconds: float = 0.5
    batch_size: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.transition_power < 1.0:
            raise ValueError("transition_power must be >= 1")
        if self.shifts < 0:
            raise ValueError("shifts must be >= 0")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")


@dataclass
class MixStatistics:
    """Running mean and unbiased std of the mono mix (the mean over channels).

    Accumulated in float64 over blocks so that a first decoding pass can measure a track
    of any length without holding it.
    """

    frames: int = 0
    _sum: float = 0.0
    _sum_squares: float = 0.0
    _shift: float | None = None

    def update(self, block: torch.Tensor) -> None:
        """Add a (channels, time) block."""
        mono = block.to(torch.float64).mean(dim=0)
        if mono.numel() == 0:
            return
        if self._shift is None:
            # Shifting by an early sample keeps the sums of squares well conditioned.
            self._shift = float(mono[0])
        centred = mono - self._shift
        self.frames += mono.numel()
        self._sum += float(centred.sum())
        self._sum_squares += float((centred * centred).sum())

    @property
    def mean(self) -> float:
        if self.frames == 0:
            return 0.0
        return (self._shift or 0.0) + self._sum / self.frames

    @property
    def std(self) -> float:
        """Unbiased standard deviation (0 for fewer than two frames)."""
        if self.frames < 2:
            return 0.0
        centred_mean = self._sum / self.frames
        variance = (self._sum_squares - self.frames * centred_mean**2) / (self.frames - 1)
        return math.sqrt(max(variance, 0.0))


WINDOWS = ("triangle", "hann")

NORMALISATION_EPSILON = 1e-8
"""Added to the std before dividing, as demucs does: digital silence stays finite."""


def transition_window(segment_length: int, transition_power: float, device=None) -> torch.Tensor:
    """The overlap-add weight: a triangle peaking mid-segment, normalised, to a power."""
    rising = torch.arange(1, segment_length // 2 + 1, device=device)
    falling = torch.arange(segment_length - segment_length // 2, 0, -1, device=device)
    window = torch.cat([rising, falling])
    return (window / window.max()) ** transition_power


@dataclass
class _Chunk:
    index: int
    start: int
    """First output sample, in track coordinates (negative inside a shift's zeros)."""
    length: int
    read_start: int
    read_length: int


class _Pass:
    """One network over the track at one shift: its chunk grid and overlap-add state."""

    def __init__(
        self,
        network: Network,
        total_frames: int,
        shift: int,
        settings: SeparationSettings,
        stems: int,
        channels: int,
        device: torch.device,
    ) -> None:
        self.network = network
        self.total_frames = total_frames
        front, back = network.padding(total_frames + shift) if network.padding else (0, 0)
        self.shift = shift + front
        """Where the chunk grid starts, before the first sample: a shift's delay plus the
        network's front padding."""
        self.padded_end = total_frames + back
        """Chunks are cut off here (the track's end, or the end of the network's padding)."""
        self.segment_length = network.segment_length
        self.stride = max(1, int((1 - settings.overlap) * self.segment_length))
        # Chunks starting at or after the track's end only touch dropped samples: skip them.
        shifted_length = total_frames + self.shift
        self.chunk_count = math.ceil(shifted_length / self.stride) if total_frames else 0
        self.next_chunk = 0
        self.device = device
        if network.window == "hann":
            self.window = None
            self.equal_weights = settings.overlap == 0
            self._hann: dict[int, torch.Tensor] = {}
        else:
            self.window = transition_window(self.segment_length, settings.transition_power,
                                            device)
        # Overlap-add accumulators over [acc_start, acc_start + acc.shape[-1]).
        self.acc_start = -self.shift
        self.acc = torch.zeros(stems, channels, 0, device=device)
        self.weight_sum = torch.zeros(0, device=device)
        self.finished_until = -self.shift
        """Output before this position is final (and has left the accumulators)."""

    def chunk(self, index: int) -> _Chunk:
        start = index * self.stride - self.shift
        length = min(self.segment_length, self.padded_end - start)
        read_length = self.network.valid_length(length)
        read_start = start - (read_length - length) // 2
        return _Chunk(index, start, length, read_start, read_length)

    @property
    def done(self) -> bool:
        return self.next_chunk >= self.chunk_count

    def needed_from(self) -> int:
        """First input sample any remaining chunk reads."""
        if self.done:
            return self.total_frames
        return self.chunk(self.next_chunk).read_start

    def ready_chunks(self, available_until: int, limit: int) -> list[_Chunk]:
        """Up to ``limit`` next chunks whose input is available, all of one input length."""
        chunks: list[_Chunk] = []
        index = self.next_chunk
        while index < self.chunk_count and len(chunks) < limit:
            chunk = self.chunk(index)
            needed_until = min(chunk.read_start + chunk.read_length, self.total_frames)
            if needed_until > available_until:
                break
            if chunks and chunk.read_length != chunks[0].read_length:
                break
            chunks.append(chunk)
            index += 1
        return chunks

    def weights(self, length: int) -> torch.Tensor:
        """The overlap-add weight of a chunk of ``length`` samples."""
        if self.window is not None:
            return self.window[:length]
        if self.equal_weights:
            return torch.ones(length, device=self.device)
        if length not in self._hann:
            # numpy.hanning(length), as UVR computes it: float64, then float32.
            hann = torch.hann_window(length, periodic=False, dtype=torch.float64)
            self._hann = {length: hann.to(self.device, torch.float32)}
        return self._hann[length]

    def add(self, chunk: _Chunk, estimate: torch.Tensor) -> None:
        """Overlap-add one chunk's (stems, channels, length) estimate."""
        end = chunk.start + chunk.length
        missing = end - (self.acc_start + self.acc.shape[-1])
        if missing > 0:
            stems, channels, _ = self.acc.shape
            self.acc = torch.cat(
                [self.acc, self.acc.new_zeros(stems, channels, missing)], dim=-1
            )
            self.weight_sum = torch.cat([self.weight_sum, self.weight_sum.new_zeros(missing)])
        weight = self.weights(chunk.length)
        begin = chunk.start - self.acc_start
        self.acc[..., begin : begin + chunk.length] += weight * estimate
        self.weight_sum[begin : begin + chunk.length] += weight
        self.next_chunk = chunk.index + 1

    def take_finished(self) -> torch.Tensor | None:
        """Final output from ``finished_until`` up to where no later chunk reaches."""
        until = self.total_frames if self.done else self.chunk(self.next_chunk).start
        count = until - self.acc_start
        if count <= 0:
            return None
        result = self.acc[..., :count] / self.weight_sum[:count]
        self.acc = self.acc[..., count:]
        self.weight_sum = self.weight_sum[count:]
        self.acc_start = until
        # Samples before 0 belong to a shift's leading zeros: drop them.
        skip = max(0, -(until - count))
        self.finished_until = until
        result = result[..., skip:]
        return result if result.shape[-1] else None


class _InputWindow:
    """The part of the normalised mixture that remaining chunks may still read."""

    def __init__(self, channels: int, device: torch.device) -> None:
        self.start = 0
        self.data = torch.zeros(channels, 0, device=device)

    @property
    def end(self) -> int:
        return self.start + self.data.shape[-1]

    def append(self, block: torch.Tensor) -> None:
        self.data = torch.cat([self.data, block], dim=-1)

    def read(self, start: int, length: int, total_frames: int) -> torch.Tensor:
        """Samples [start, start + length) with zeros outside [0, total_frames)."""
        real_start = max(start, 0)
        real_end = min(start + length, total_frames)
        if real_end <= real_start:  # wholly in a shift's leading zeros (or past the end)
            return self.data.new_zeros(self.data.shape[0], length)
        if real_start < self.start or real_end > self.end:
            raise AssertionError("engine read outside its input window")
        piece = self.data[..., real_start - self.start : max(real_end, real_start) - self.start]
        pad_left = real_start - start
        pad_right = length - pad_left - piece.shape[-1]
        if pad_left or pad_right:
            piece = torch.nn.functional.pad(piece, (pad_left, pad_right))
        return piece

    def drop_before(self, position: int) -> None:
        count = min(max(0, position - self.start), self.data.shape[-1])
        if count:
            self.data = self.data[..., count:]
            self.start += count


def shift_offsets(members: int, shifts: int, sample_rate: int, settings: SeparationSettings):
    """Per member, the delays (samples of zeros in front) of each shifted pass.

    demucs draws ``offset = randint(0, max_shift)`` and delays the track by
    ``max_shift - offset``; we draw the same way from a generator seeded with
    ``settings.seed``. Without shifts every member has one pass with no delay.
    """
    if shifts == 0:
        return [[0] for _ in range(members)]
    max_shift = int(settings.max_shift_seconds * sample_rate)
    generator = random.Random(settings.seed)
    return [
        [max_shift - generator.randint(0, max_shift) for _ in range(shifts)]
        for _ in range(members)
    ]


@dataclass
class StreamingSeparator:
    """Separate a track fed as normalised-on-the-fly mixture blocks; emit finished stems.

    ``push(block)`` takes (channels, time) mixture blocks in order (raw, not normalised);
    it returns the output blocks (stems, channels, time) that became final. After the last
    block, ``finish()`` returns the rest. The concatenated outputs have exactly
    ``total_frames`` samples.

    ``mean`` and ``std`` normalise the track for networks that want it (``Network.normalise``,
    demucs); networks that work on the raw mixture ignore them. All networks of one separator
    must agree.
    """

    networks: Sequence[Network]
    total_frames: int
    channels: int
    stems: int
    sample_rate: int
    mean: float
    std: float
    settings: SeparationSettings = field(default_factory=SeparationSettings)
    device: torch.device | str = "cpu"
    progress: ProgressCallback | None = None

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        normalise = {network.normalise for network in self.networks}
        if len(normalise) > 1:
            raise ValueError("a bag cannot mix normalised and raw-mixture networks")
        self._normalise = normalise.pop() if normalise else True
        self._scale = self.std + NORMALISATION_EPSILON
        delays = shift_offsets(len(self.networks), self.settings.shifts, self.sample_rate,
                               self.settings)
        self._passes: list[list[_Pass]] = [
            [
                _Pass(network, self.total_frames, delay, self.settings, self.stems,
                      self.channels, self.device)
                for delay in member_delays
            ]
            for network, member_delays in zip(self.networks, delays)
        ]
        self._pending: list[list[deque[torch.Tensor]]] = [
            [deque() for _ in member] for member in self._passes
        ]
        self._input = _InputWindow(self.channels, self.device)
        self._emitted = 0
        totals = [0.0] * self.stems
        for network in self.networks:
            if len(network.stem_weights) != self.stems:
                raise ValueError("a network's stem weights do not match the stem count")
            for stem, weight in enumerate(network.stem_weights):
                totals[stem] += weight
        self._stem_totals = totals
        self._work_total = sum(
            p.chunk(i).length for member in self._passes for p in member
            for i in range(p.chunk_count)
        )
        self._work_done = 0

    # -- feeding -------------------------------------------------------------------------
    def push(self, block: torch.Tensor) -> list[torch.Tensor]:
        if block.shape[-1] == 0:
            return []
        if self._input.end + block.shape[-1] > self.total_frames:
            raise ValueError("more input than total_frames")
        block = block.to(self.device, torch.float32)
        if self._normalise:
            block = (block - self.mean) / self._scale
        self._input.append(block)
        return self._run()

    def finish(self) -> list[torch.Tensor]:
        if self._input.end != self.total_frames:
            raise ValueError(
                f"expected {self.total_frames} frames of input, got {self._input.end}"
            )
        outputs = self._run()
        if self._emitted != self.total_frames:
            raise AssertionError("engine finished without emitting every sample")
        return outputs

    # -- work ----------------------------------------------------------------------------
    def _run(self) -> list[torch.Tensor]:
        available = self._input.end
        for member_passes, member_pending in zip(self._passes, self._pending):
            for one_pass, pending in zip(member_passes, member_pending):
                while True:
                    chunks = one_pass.ready_chunks(available, self.settings.batch_size)
                    if not chunks:
                        break
                    self._forward(one_pass, chunks)
                    finished = one_pass.take_finished()
                    if finished is not None:
                        pending.append(finished)
        self._input.drop_before(
            min(p.needed_from() for member in self._passes for p in member)
        )
        return self._combine()

    def _forward(self, one_pass: _Pass, chunks: list[_Chunk]) -> None:
        batch = torch.stack(
            [self._input.read(c.read_start, c.read_length, self.total_frames) for c in chunks]
        )
        with torch.inference_mode():
            estimates = one_pass.network.forward(batch)
        for chunk, estimate in zip(chunks, estimates):
            trim = (estimate.shape[-1] - chunk.length) // 2
            one_pass.add(chunk, estimate[..., trim : trim + chunk.length])
            self._work_done += chunk.length
        if self.progress is not None:
            self.progress(self._work_done, self._work_total)

    def _combine(self) -> list[torch.Tensor]:
        """Emit the range every pass has finished, averaged over shifts, bag-weighted."""
        ready_until = min(
            self._emitted + sum(block.shape[-1] for block in pending)
            for member in self._pending for pending in member
        )
        count = ready_until - self._emitted
        if count <= 0:
            return []
        estimate: torch.Tensor | float = 0.0
        for network, member_pending in zip(self.networks, self._pending):
            member_estimate: torch.Tensor | float = 0.0
            for pending in member_pending:
                member_estimate = member_estimate + _pop_frames(pending, count)
            member_estimate = member_estimate / len(member_pending)
            weights = torch.tensor(network.stem_weights, device=self.device)
            estimate = estimate + member_estimate * weights[:, None, None]
        totals = torch.tensor(self._stem_totals, device=self.device)
        assert isinstance(estimate, torch.Tensor)
        estimate = estimate / totals[:, None, None]
        self._emitted = ready_until
        if self._normalise:
            estimate = estimate * self._scale + self.mean
        return [estimate]


def _pop_frames(pending: deque[torch.Tensor], count: int) -> torch.Tensor:
    """Remove and return the first ``count`` frames of a queue of (S, C, n) blocks."""
    pieces = []
    while count > 0:
        block = pending[0]
        if block.shape[-1] <= count:
            pieces.append(pending.popleft())
            count -= block.shape[-1]
        else:
            pieces.append(block[..., :count])
            pending[0] = block[..., count:]
            count = 0
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)


def separate_tensor(
    mix: torch.Tensor,
    networks: Sequence[Network],
    sample_rate: int,
    settings: SeparationSettings = SeparationSettings(),
    device: torch.device | str = "cpu",
    block_frames: int = 1 << 18,
    progress: ProgressCallback | None = None,
) -> torch.Tensor:
    """Whole-track convenience: mix (channels, time) -> stems (stems, channels, time)."""
    statistics = MixStatistics()
    statistics.update(mix)
    stems = len(networks[0].stem_weights)
    separator = StreamingSeparator(
        networks=networks, total_frames=mix.shape[-1], channels=mix.shape[0], stems=stems,
        sample_rate=sample_rate, mean=statistics.mean, std=statistics.std,
        settings=settings, device=device, progress=progress,
    )
    outputs = []
    for begin in range(0, mix.shape[-1], block_frames):
        outputs += separator.push(mix[..., begin : begin + block_frames])
    outputs += separator.finish()
    if not outputs:
        return torch.zeros(stems, mix.shape[0], 0)
    return torch.cat([o.cpu() for o in outputs], dim=-1)


def iter_blocks(blocks: Iterable[torch.Tensor], separator: StreamingSeparator
                ) -> Iterator[torch.Tensor]:
    """Drive a separator with a block iterator, yielding finished output blocks."""
    for block in blocks:
        yield from separator.push(block)
    yield from separator.finish()
