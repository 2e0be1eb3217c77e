"""The separation engine: chunking, overlap-add, shifts and bag weighting as a stream.

Tensor layout, everywhere in stemsplit: (batch, stems, channels, time). A mixture block is
(channels, time); a finished output block is (stems, channels, time).

A model is a bag of one or more networks. Each ``Network`` declares how it wants the track
cut and put back together as one ``Chunking`` value, built by its family:

* ``length`` samples per chunk, a chunk starting every ``stride`` samples (an integer, so
  that "a third of a chunk" is exactly ``length // 3``);
* ``border``: samples added before the first and after the last sample of the track (zeros,
  or the track reflected at its ends), where the chunk grid starts and ends;
* ``last_chunk``: "pad" (the grid runs on; the last chunks are cut at the end of the border)
  or "align_end" (the last chunk is moved back to end exactly there);
* ``fill``: how a chunk shorter than ``length`` reaches the network ("none": as it is, or
  with ``input_length`` samples of real neighbouring audio around it; "zeros"; "reflect":
  its own samples reflected when it is longer than half a chunk, else zeros);
* ``window``: each chunk's overlap-add weight (``Window``: a triangle to a power, Hann,
  Hamming, rectangular, or linear fades with no fade-in on the first chunk and no fade-out
  on the last);
* ``normalise``: whether the network sees the mixture normalised by the mean and standard
  deviation of the whole track's mono mix (measured beforehand, see ``MixStatistics``; the
  stems are scaled back), or the raw mixture;
* ``overlap_rule``: overlapping chunks are averaged with their window weights, or summed
  (pieces of one overlap-add);
* ``positioned``: the forward is told where its chunks are (``ChunkPlace``: each input's
  first sample in the track, the track's length, what a pre-pass measured, and a state the
  pass keeps between its chunks), for networks whose chunk output depends on its place in
  the track; ``chunks_per_call`` caps the chunks per forward call below the batch size
  (networks that batch inside a chunk).

A network may need a statistic of the whole track before its first chunk (a maximum, say):
its ``Prepass`` measures each of its chunk inputs in a first pass over the mixture blocks
(``measure_track``), folded into one value the forward then reads from ``ChunkPlace``.

With shifts, each pass sees the chunk grid moved by a random number of samples in
[0, max_shift_seconds] (zeros in front), and the passes are averaged; the offsets come from
a seeded generator, so two runs give identical stems. A bag averages its networks per stem
with the bag weights.

Nothing here holds the whole track: ``StreamingSeparator`` consumes mixture blocks and emits
output samples as soon as no remaining chunk can change them (everything before the earliest
remaining chunk start), so memory depends on the chunk length, never on the track length.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch

Forward = Callable[[torch.Tensor], torch.Tensor]
"""A network: mixture (batch, channels, time) -> stems (batch, stems, channels, time)."""

ProgressCallback = Callable[[int, int], None]
"""Called with (work done, total work), both in chunk samples summed over passes."""

WINDOW_KINDS = ("triangle", "hann", "hamming", "rectangular", "linear_fade")
BORDER_MODES = ("zeros", "reflect")
LAST_CHUNK_RULES = ("pad", "align_end")
FILL_RULES = ("none", "zeros", "reflect")
OVERLAP_RULES = ("average", "sum")


@dataclass(frozen=True)
class Window:
    """A chunk's overlap-add weight.

    * "triangle": the chunk's triangle (rising to the middle of a full chunk, normalised to
      a peak of 1), raised to ``power``, cut to the chunk's real length;
    * "hann", "hamming": the symmetric window of the chunk's real length (as numpy's
      ``hanning``/``hamming``, computed in float64);
    * "rectangular": equal weights;
    * "linear_fade": ones with linear fades of ``fade`` samples at both ends of a full chunk
      (0 to 1 and 1 to 0, as ``torch.linspace``), except no fade-in on the first chunk of the
      grid and no fade-out on the last (unless it is the first too); cut to the chunk's real
      length.
    """

    kind: str = "triangle"
    power: float = 1.0
    fade: int = 0

    def __post_init__(self) -> None:
        if self.kind not in WINDOW_KINDS:
            raise ValueError(f"unknown window {self.kind!r}; choose {', '.join(WINDOW_KINDS)}")
        if self.kind == "triangle" and self.power < 1.0:
            raise ValueError("a triangle window's power must be >= 1")
        if self.kind == "linear_fade" and self.fade < 1:
            raise ValueError("a linear-fade window needs a fade of at least 1 sample")


@dataclass(frozen=True)
class Normalisation:
    """The network sees (mix - mean) / scale, scale = std + epsilon, std of the mono mix
    over the whole track (``unbiased``: divided by n - 1, else by n). A scale of 0 (digital
    silence without epsilon) leaves the mixture as it is."""

    unbiased: bool = True
    epsilon: float = 1e-8


@dataclass(frozen=True)
class Chunking:
    """How one network wants the track cut into chunks and put back together."""

    length: int
    """Samples per chunk."""
    stride: int
    """Samples from one chunk's start to the next one's."""
    window: Window = Window()
    border: Callable[[int], tuple[int, int]] | None = None
    """Samples (before, after) a track of n frames added around it; None: no border."""
    border_mode: str = "zeros"
    """What the border holds: "zeros", or "reflect" (the track mirrored at its ends)."""
    last_chunk: str = "pad"
    fill: str = "none"
    input_length: Callable[[int], int] | None = None
    """With fill "none": the input length the network wants for a chunk of n samples,
    read centred around the chunk from the real track (zeros past its ends)."""
    normalise: Normalisation | None = Normalisation()
    overlap_rule: str = "average"
    """How overlapping chunks combine: "average" (weighted by ``window``, divided by the sum
    of the weights) or "sum" (added as they are: for networks whose chunks are pieces of one
    overlap-add, such as an inverse STFT over blocks of frames; ``window`` must be
    rectangular)."""

    positioned: bool = False
    """The forward is called as forward(batch, place) with a ``ChunkPlace``."""
    chunks_per_call: int | None = None
    """At most this many chunks per forward call (None: the run's batch size)."""

    def __post_init__(self) -> None:
        if self.chunks_per_call is not None and self.chunks_per_call < 1:
            raise ValueError("chunks_per_call must be >= 1")
        if self.overlap_rule not in OVERLAP_RULES:
            raise ValueError(f"unknown overlap rule {self.overlap_rule!r}")
        if self.overlap_rule == "sum" and self.window.kind != "rectangular":
            raise ValueError("chunks that are summed take no window")
        if self.length < 1 or self.stride < 1:
            raise ValueError("a chunk's length and stride must be positive")
        if self.border_mode not in BORDER_MODES:
            raise ValueError(f"unknown border mode {self.border_mode!r}")
        if self.last_chunk not in LAST_CHUNK_RULES:
            raise ValueError(f"unknown last-chunk rule {self.last_chunk!r}")
        if self.fill not in FILL_RULES:
            raise ValueError(f"unknown fill rule {self.fill!r}")
        if self.fill != "none" and self.input_length is not None:
            raise ValueError("input_length applies only with fill 'none'")


@dataclass
class ChunkPlace:
    """Where a positioned forward's chunks are (see ``Chunking.positioned``)."""

    read_starts: tuple[int, ...]
    """Per input of the batch, the track sample its first sample is (negative in front of
    the track, where the input holds zeros or a border)."""
    total_frames: int
    measured: Any
    """What the network's ``Prepass`` measured of the whole track (None without one)."""
    state: dict
    """Kept between the chunks of one pass over one track (they come in order): a forward's
    own carry-over from one chunk to the next."""


@dataclass(frozen=True)
class Prepass:
    """A statistic of the whole track that a network needs before its first chunk: each
    batch of its chunk inputs (as the forward will get them) is ``measure``d, the values
    folded with ``combine`` (``measure_track``)."""

    measure: Callable[[torch.Tensor, ChunkPlace], Any]
    combine: Callable[[Any, Any], Any]


@dataclass(frozen=True)
class Network:
    """One member of a bag, as the engine sees it."""

    forward: Forward
    chunking: Chunking
    stem_weights: tuple[float, ...]
    """Weight of this network's estimate of each stem in the bag average."""
    prepass: Prepass | None = None
    """A whole-track statistic to measure before the first chunk (``measure_track``)."""
    measured: Any = None
    """Its value, once measured."""

    @property
    def segment_length(self) -> int:
        return self.chunking.length


def overlap_stride(overlap: float, length: int) -> int:
    """The stride of chunks of ``length`` samples for an ``overlap`` given by a user: a
    fraction in [0, 1) (the share of a chunk its neighbour covers: stride =
    int((1 - overlap) * length)), or an integer n >= 2 (every sample is in n chunks:
    stride = length // n)."""
    if 0.0 <= overlap < 1.0:
        return max(1, int((1 - overlap) * length))
    if overlap >= 2 and float(overlap).is_integer():
        return max(1, length // int(overlap))
    raise ValueError(f"overlap must be a fraction in [0, 1) or a whole number >= 2, not {overlap:g}")


@dataclass(frozen=True)
class SeparationSettings:
    """What the engine does on top of each network's chunking: shifts and batching."""

    shifts: int = 0
    seed: int = 0
    max_shift_seconds: float = 0.5
    batch_size: int = 1

    def __post_init__(self) -> None:
        if self.shifts < 0:
            raise ValueError("shifts must be >= 0")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")


@dataclass
class MixStatistics:
    """Running mean and standard deviation of the mono mix (the mean over channels).

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

    def _squares(self) -> float:
        centred_mean = self._sum / self.frames
        return max(self._sum_squares - self.frames * centred_mean**2, 0.0)

    @property
    def std(self) -> float:
        """Unbiased standard deviation (0 for fewer than two frames)."""
        if self.frames < 2:
            return 0.0
        return math.sqrt(self._squares() / (self.frames - 1))

    @property
    def population_std(self) -> float:
        """Standard deviation divided by n (numpy's default; 0 without frames)."""
        if self.frames < 1:
            return 0.0
        return math.sqrt(self._squares() / self.frames)

    def scale(self, normalisation: Normalisation) -> float:
        std = self.std if normalisation.unbiased else self.population_std
        return std + normalisation.epsilon


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
    """First output sample, in track coordinates (negative inside a border or a shift)."""
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
        stems: int,
        channels: int,
        device: torch.device,
    ) -> None:
        self.network = network
        chunking = self.chunking = network.chunking
        self.total_frames = total_frames
        front, back = chunking.border(total_frames + shift) if chunking.border else (0, 0)
        self.reflect = (front, back) if chunking.border_mode == "reflect" else (0, 0)
        if max(self.reflect) >= max(total_frames, 1):
            raise ValueError("a reflected border must be shorter than the track")
        self.grid_start = -(shift + front)
        """Where the chunk grid starts: before the track by a shift's delay and the border."""
        self.padded_end = total_frames + back
        """Chunks are cut off here (the track's end, or the end of the border)."""
        self.segment_length = chunking.length
        self.stride = chunking.stride
        span = self.padded_end - self.grid_start
        if chunking.last_chunk == "align_end":
            self.grid_count = 1 if span <= self.segment_length else (
                math.ceil((span - self.segment_length) / self.stride) + 1)
        else:
            self.grid_count = math.ceil(span / self.stride)
        # Chunks starting at or after the track's end only touch dropped samples: skip them.
        self.chunk_count = 0
        if total_frames:
            low, high = 0, self.grid_count
            while low < high:  # the first chunk starting at or after the track's end
                middle = (low + high) // 2
                if self._start(middle) < total_frames:
                    low = middle + 1
                else:
                    high = middle
            self.chunk_count = low
        self.next_chunk = 0
        self.device = device
        window = chunking.window
        self._triangle = (transition_window(self.segment_length, window.power, device)
                          if window.kind == "triangle" else None)
        self._cache: dict[tuple[int, bool, bool], torch.Tensor] = {}
        self.state: dict = {}
        """A positioned forward's carry-over between this pass's chunks."""
        # Overlap-add accumulators over [acc_start, acc_start + acc.shape[-1]).
        self.acc_start = self.grid_start
        self.acc = torch.zeros(stems, channels, 0, device=device)
        self.weight_sum = torch.zeros(0, device=device)

    def _start(self, index: int) -> int:
        if self.chunking.last_chunk == "align_end" and index == self.grid_count - 1:
            return max(self.padded_end - self.segment_length, self.grid_start)
        return self.grid_start + index * self.stride

    def chunk(self, index: int) -> _Chunk:
        start = self._start(index)
        length = min(self.segment_length, self.padded_end - start)
        input_length = self.chunking.input_length
        read_length = input_length(length) if input_length is not None else length
        read_start = start - (read_length - length) // 2
        return _Chunk(index, start, length, read_start, read_length)

    @property
    def done(self) -> bool:
        return self.next_chunk >= self.chunk_count

    def _sources(self, chunk: _Chunk) -> tuple[int, int]:
        """The track samples [first, end) a chunk's input is made of (reflected ones too)."""
        total = self.total_frames
        read_end = chunk.read_start + chunk.read_length
        first, end = max(chunk.read_start, 0), min(read_end, total)
        front, back = self.reflect
        if front and chunk.read_start < 0:  # x[-p] for p in the front border
            end = max(end, min(-max(chunk.read_start, -front) + 1, total))
        if back and read_end > total:  # x[2 (total - 1) - p] for p in the back border
            first = min(first, 2 * (total - 1) - (min(read_end, total + back) - 1))
        return max(first, 0), end

    def needed_from(self) -> int:
        """First input sample any remaining chunk reads."""
        if self.done:
            return self.total_frames
        return self._sources(self.chunk(self.next_chunk))[0]

    def ready_chunks(self, available_until: int, limit: int) -> list[_Chunk]:
        """Up to ``limit`` next chunks whose input is available, all of one input length."""
        chunks: list[_Chunk] = []
        index = self.next_chunk
        while index < self.chunk_count and len(chunks) < limit:
            chunk = self.chunk(index)
            if self._sources(chunk)[1] > available_until:
                break
            if chunks and chunk.read_length != chunks[0].read_length:
                break
            chunks.append(chunk)
            index += 1
        return chunks

    def weights(self, chunk: _Chunk) -> torch.Tensor:
        """The overlap-add weight of one chunk."""
        window, length = self.chunking.window, chunk.length
        if self._triangle is not None:
            return self._triangle[:length]
        first = chunk.index == 0
        # A chunk that is both the first and the last keeps its fade-out.
        last = chunk.index == self.grid_count - 1 and not first
        key = (length, first, last) if window.kind == "linear_fade" else (length, False, False)
        if key not in self._cache:
            if window.kind == "rectangular":
                weights = torch.ones(length)
            elif window.kind in ("hann", "hamming"):
                make = torch.hann_window if window.kind == "hann" else torch.hamming_window
                weights = make(length, periodic=False, dtype=torch.float64).float()
            else:  # linear_fade: on a full chunk, then cut
                fade = min(window.fade, self.segment_length)
                weights = torch.ones(self.segment_length)
                if not last:
                    weights[-fade:] = torch.linspace(1, 0, fade)
                if not first:
                    weights[:fade] = torch.linspace(0, 1, fade)
                weights = weights[:length]
            # Few distinct keys exist (full chunks, the last ones): keep the last few.
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[key] = weights.to(self.device)
        return self._cache[key]

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
        begin = chunk.start - self.acc_start
        if self.chunking.overlap_rule == "sum":
            self.acc[..., begin : begin + chunk.length] += estimate
            self.weight_sum[begin : begin + chunk.length] = 1.0
        else:
            weight = self.weights(chunk)
            self.acc[..., begin : begin + chunk.length] += weight * estimate
            self.weight_sum[begin : begin + chunk.length] += weight
        self.next_chunk = chunk.index + 1

    def take_finished(self) -> torch.Tensor | None:
        """Final output up to the earliest start of a remaining chunk (the track's end once
        every chunk is in), at most a stride of it per call (call again for the rest: the end
        of a track then needs no bigger buffers than its middle); samples no chunk weighted
        (a window's zeros) are 0. None once nothing is finished."""
        if self.done:
            until = self.total_frames
        else:
            until = min(self._start(self.next_chunk), self._start(self.chunk_count - 1))
        count = until - self.acc_start
        if count <= 0:
            return None
        # Samples before 0 (a border, a shift's leading zeros) are dropped: not counted.
        count = min(count, max(0, -self.acc_start) + self.stride)
        until = self.acc_start + count
        weight_sum = self.weight_sum[:count]
        result = self.acc[..., :count] / weight_sum
        if not bool((weight_sum > 0).all()):
            result = torch.where(weight_sum > 0, result, torch.zeros_like(result))
        self.acc = self.acc[..., count:]
        self.weight_sum = self.weight_sum[count:]
        self.acc_start = until
        # Samples before 0 belong to the border or a shift's leading zeros: drop them.
        skip = max(0, -(until - count))
        result = result[..., skip:]
        return result if result.shape[-1] else None


class _InputWindow:
    """The part of the (normalised) mixture that remaining chunks may still read."""

    def __init__(self, channels: int, device: torch.device) -> None:
        self.start = 0
        self.data = torch.zeros(channels, 0, device=device)

    @property
    def end(self) -> int:
        return self.start + self.data.shape[-1]

    def append(self, block: torch.Tensor) -> None:
        self.data = torch.cat([self.data, block], dim=-1)

    def _span(self, first: int, end: int) -> torch.Tensor:
        if first < self.start or end > self.end:
            raise AssertionError("engine read outside its input window")
        return self.data[..., first - self.start : end - self.start]

    def read(self, start: int, length: int, total_frames: int,
             reflect: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """Samples [start, start + length): the track inside [0, total_frames), its mirror
        image in the ``reflect`` (before, after) borders, zeros elsewhere."""
        end = start + length
        front, back = reflect
        pieces = []
        position = start
        if position < 0:
            zeros_until = min(-front, end)
            if zeros_until > position:
                pieces.append(self.data.new_zeros(self.data.shape[0], zeros_until - position))
                position = zeros_until
            if position < min(0, end):  # the front border: x[-p]
                upto = min(0, end)
                pieces.append(self._span(-upto + 1, -position + 1).flip(-1))
                position = upto
        if position < end and position < total_frames:
            upto = min(end, total_frames)
            pieces.append(self._span(position, upto))
            position = upto
        if position < end and position < total_frames + back:  # the back border
            upto = min(end, total_frames + back)
            last = 2 * (total_frames - 1)
            pieces.append(self._span(last - upto + 1, last - position + 1).flip(-1))
            position = upto
        if position < end:
            pieces.append(self.data.new_zeros(self.data.shape[0], end - position))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)

    def drop_before(self, position: int) -> None:
        count = min(max(0, position - self.start), self.data.shape[-1])
        if count:
            self.data = self.data[..., count:]
            self.start += count


def shift_offsets(members: int, shifts: int, sample_rate: int, settings: SeparationSettings):
    """Per member, the delays (samples of zeros in front) of each shifted pass.

    Each offset is drawn as ``randint(0, max_shift)`` and the grid delayed by
    ``max_shift - offset``, from a generator seeded with ``settings.seed``. Without shifts
    every member has one pass with no delay.
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
    """Separate a track fed as mixture blocks; emit finished stems.

    ``push(block)`` takes (channels, time) mixture blocks in order (raw, not normalised);
    it returns the output blocks (stems, channels, time) that became final. After the last
    block, ``finish()`` returns the rest. The concatenated outputs have exactly
    ``total_frames`` samples.

    ``statistics`` (of the whole track, measured beforehand) normalise the mixture for
    networks whose chunking asks for it; all networks of one separator must agree.

    ``needed_stems`` (indices) names the stems the caller will use; None = all. Members of
    the bag whose weight is 0 for every needed stem are not run (a bag whose weights are
    one-hot gives one stem from one network). The needed stems are exactly what the
    whole bag gives (the skipped members only ever added 0 times their estimate; shifts keep
    the offsets drawn for the whole bag); the other stems of the output are then partial
    sums, not estimates.
    """

    networks: Sequence[Network]
    total_frames: int
    channels: int
    stems: int
    sample_rate: int
    statistics: MixStatistics
    settings: SeparationSettings = field(default_factory=SeparationSettings)
    device: torch.device | str = "cpu"
    progress: ProgressCallback | None = None
    needed_stems: Sequence[int] | None = None

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        totals = [0.0] * self.stems
        for network in self.networks:
            if len(network.stem_weights) != self.stems:
                raise ValueError("a network's stem weights do not match the stem count")
            for stem, weight in enumerate(network.stem_weights):
                totals[stem] += weight
        self._stem_totals = totals
        # Offsets are drawn for the whole bag, so that skipping members changes nothing.
        delays = shift_offsets(len(self.networks), self.settings.shifts, self.sample_rate,
                               self.settings)
        members = list(zip(self.networks, delays))
        if self.needed_stems is not None:
            needed = sorted(set(self.needed_stems))
            if not needed or not all(0 <= stem < self.stems for stem in needed):
                raise ValueError(f"needed_stems {self.needed_stems} out of range")
            members = [(network, member_delays) for network, member_delays in members
                       if any(network.stem_weights[stem] != 0 for stem in needed)]
        self._networks = [network for network, _ in members]
        if any(network.prepass is not None for network in self._networks):
            raise ValueError("a network's pre-pass has not been measured (measure_track)")
        normalising = _normalising(self._networks, self.statistics)
        self._normalise = normalising is not None
        self._mean, self._scale = normalising or (self.statistics.mean, 1.0)
        self._passes: list[list[_Pass]] = [
            [
                _Pass(network, self.total_frames, delay, self.stems, self.channels,
                      self.device)
                for delay in member_delays
            ]
            for network, member_delays in members
        ]
        self._pending: list[list[deque[torch.Tensor]]] = [
            [deque() for _ in member] for member in self._passes
        ]
        self._input = _InputWindow(self.channels, self.device)
        self._emitted = 0
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
            block = (block - self._mean) / self._scale
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
                    chunks = one_pass.ready_chunks(available, _per_call(one_pass.chunking,
                                                                        self.settings))
                    if not chunks:
                        break
                    self._forward(one_pass, chunks)
                    while (finished := one_pass.take_finished()) is not None:
                        pending.append(finished)
        self._input.drop_before(
            min(p.needed_from() for member in self._passes for p in member)
        )
        return self._combine()

    def _forward(self, one_pass: _Pass, chunks: list[_Chunk]) -> None:
        batch = torch.stack([_network_input(self._input, one_pass, c, self.total_frames)
                             for c in chunks])
        with torch.inference_mode():
            if one_pass.chunking.positioned:
                estimates = one_pass.network.forward(batch, _place(one_pass, chunks))
            else:
                estimates = one_pass.network.forward(batch)
        filled = one_pass.chunking.fill != "none"
        for chunk, estimate in zip(chunks, estimates):
            # A filled chunk starts its input; otherwise it sits in the middle of it.
            trim = 0 if filled else (estimate.shape[-1] - chunk.length) // 2
            one_pass.add(chunk, estimate[..., trim : trim + chunk.length])
            self._work_done += chunk.length
        if self.progress is not None:
            self.progress(self._work_done, self._work_total)

    def _combine(self) -> list[torch.Tensor]:
        """Emit the range every pass has finished, averaged over shifts, bag-weighted, in
        blocks of at most the shortest stride: the last push of a track may finish two
        strides and the tail at once, and blocks (and their temporaries) larger than any
        before would grow the heap just as the track ends."""
        ready_until = min(
            self._emitted + sum(block.shape[-1] for block in pending)
            for member in self._pending for pending in member
        )
        limit = min((p.stride for member in self._passes for p in member), default=1)
        outputs = []
        while self._emitted < ready_until:
            count = min(ready_until - self._emitted, limit)
            estimate: torch.Tensor | float = 0.0
            for network, member_pending in zip(self._networks, self._pending):
                member_estimate: torch.Tensor | float = 0.0
                for pending in member_pending:
                    member_estimate = member_estimate + _pop_frames(pending, count)
                member_estimate = member_estimate / len(member_pending)
                weights = torch.tensor(network.stem_weights, device=self.device)
                estimate = estimate + member_estimate * weights[:, None, None]
            totals = torch.tensor(self._stem_totals, device=self.device)
            assert isinstance(estimate, torch.Tensor)
            estimate = estimate / totals[:, None, None]
            self._emitted += count
            if self._normalise:
                estimate = estimate * self._scale + self._mean
            outputs.append(estimate)
        return outputs


def _network_input(window: _InputWindow, one_pass: _Pass, chunk: _Chunk,
                   total_frames: int) -> torch.Tensor:
    """A chunk as its network takes it: read, then filled up to a whole chunk."""
    piece = window.read(chunk.read_start, chunk.read_length, total_frames, one_pass.reflect)
    chunking = one_pass.chunking
    missing = chunking.length - piece.shape[-1]
    if chunking.fill == "none" or missing <= 0:
        return piece
    reflect = chunking.fill == "reflect" and piece.shape[-1] > chunking.length // 2
    return torch.nn.functional.pad(piece[None], (0, missing),
                                   mode="reflect" if reflect else "constant")[0]


def _place(one_pass: _Pass, chunks: list[_Chunk]) -> ChunkPlace:
    return ChunkPlace(tuple(chunk.read_start for chunk in chunks), one_pass.total_frames,
                      one_pass.network.measured, one_pass.state)


def _per_call(chunking: Chunking, settings: SeparationSettings) -> int:
    if chunking.chunks_per_call is None:
        return settings.batch_size
    return min(settings.batch_size, chunking.chunks_per_call)


def _normalising(networks: Sequence[Network], statistics: MixStatistics) -> tuple[float, float] | None:
    """(mean, scale) the mixture is normalised with for ``networks`` (None: raw)."""
    normalise = {network.chunking.normalise for network in networks}
    if len(normalise) > 1:
        raise ValueError("a bag cannot mix networks that normalise the mixture differently")
    normalisation = normalise.pop() if normalise else None
    if normalisation is None:
        return None
    scale = statistics.scale(normalisation)
    return statistics.mean, scale if scale > 0 else 1.0


def measure_track(networks: Sequence[Network], blocks, total_frames: int, channels: int,
                  statistics: MixStatistics, device: torch.device | str = "cpu",
                  ) -> list[Network]:
    """``networks`` with each ``Prepass`` measured: the mixture's (channels, time) blocks
    (an iterable, read only if some network has a pre-pass) go through each such network's
    chunk grid once (no shift), its chunk inputs measured and folded; the networks come
    back with ``measured`` set and no pre-pass. Memory as in a separation pass: the inputs
    of one batch of chunks."""
    waiting = [index for index, network in enumerate(networks) if network.prepass is not None]
    if not waiting:
        return list(networks)
    device = torch.device(device)
    normalising = _normalising(networks, statistics)
    passes = {index: _Pass(networks[index], total_frames, 0, 1, channels, device)
              for index in waiting}
    values: dict[int, Any] = {}
    window = _InputWindow(channels, device)
    settings = SeparationSettings()

    def measure_ready() -> None:
        for index, one_pass in passes.items():
            prepass = networks[index].prepass
            assert prepass is not None
            while chunks := one_pass.ready_chunks(window.end, _per_call(one_pass.chunking,
                                                                        settings)):
                batch = torch.stack([_network_input(window, one_pass, chunk, total_frames)
                                     for chunk in chunks])
                with torch.inference_mode():
                    value = prepass.measure(batch, _place(one_pass, chunks))
                values[index] = (value if index not in values
                                 else prepass.combine(values[index], value))
                one_pass.next_chunk = chunks[-1].index + 1
        window.drop_before(min(p.needed_from() for p in passes.values()))

    for block in blocks:
        block = torch.as_tensor(block).to(device, torch.float32)
        if normalising is not None:
            block = (block - normalising[0]) / normalising[1]
        window.append(block)
        if window.end > total_frames:
            raise ValueError("more input than total_frames")
        measure_ready()
    measure_ready()
    if window.end != total_frames:
        raise ValueError(f"expected {total_frames} frames of input, got {window.end}")
    return [replace(network, prepass=None, measured=values.get(index))
            if index in passes else network for index, network in enumerate(networks)]


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
    networks = measure_track(
        networks, (mix[..., begin : begin + block_frames]
                   for begin in range(0, mix.shape[-1], block_frames)),
        mix.shape[-1], mix.shape[0], statistics, device)
    separator = StreamingSeparator(
        networks=networks, total_frames=mix.shape[-1], channels=mix.shape[0], stems=stems,
        sample_rate=sample_rate, statistics=statistics, settings=settings, device=device, progress=progress,
    )
    outputs = []
    for begin in range(0, mix.shape[-1], block_frames):
        outputs += separator.push(mix[..., begin : begin + block_frames])
    outputs += separator.finish()
    if not outputs:
        return torch.zeros(stems, mix.shape[0], 0)
    return torch.cat([o.cpu() for o in outputs], dim=-1)
