"""Ensembles: several models' estimates of each stem combined into one, as a stream.

An ``Ensemble`` is what the pipeline runs, always: loaded models (``-n A -n B ...``, a preset
from weights.toml, or one model alone: an ensemble of one), one weight per model
(``--ensemble-weights``, default equal) and an algorithm (``--ensemble``, default
``avg_wave``). Which model gives which stem is the stem plan's (``stem_plan``): each model
contributes to the stems it gives, a stem of its own or the complement of one of its stems
made by the ``--two-stems`` rules. A stem that only one model gives is that model's stem as
it is (for an ensemble of one: every stem, unchanged).

The algorithms, for the K estimates x_1..x_K of one stem (each (channels, n), in the order
the models were given) with weights w_1..w_K > 0:

* ``avg_wave``: sum_k w_k x_k / sum_k w_k, per sample (computed in float64).
* ``median_wave``: per sample, the median of the K values (K even: the mean of the two
  middle ones, as ``numpy.median``).
* ``min_wave`` / ``max_wave``: per sample, the value of smallest / largest magnitude; on
  equal magnitudes (e.g. 0.5 and -0.5) the model given first wins.
* ``avg_fft``, ``median_fft``, ``min_fft``, ``max_fft``: the same per STFT bin, on
  complex values, then the inverse STFT: avg is the weighted mean of the complex values;
  min / max keep the complex value of smallest / largest magnitude (ties: the model given
  first); median ranks the K complex values by magnitude (a stable sort: ties in model
  order) and keeps the middle one, or for even K the mean of the two middle complex values
  (so for K = 2 every median is the mean).

Weights are used by ``avg_wave`` and ``avg_fft`` only; the other algorithms pick a value or
take a median, and refuse ``--ensemble-weights`` (a preset's weights are left unused).

The STFT is Ultimate Vocal Remover's and audio-separator's: frames of 2048, hop 1024, periodic Hann window,
centred (1024 zeros before the track and after it, as librosa's default
``pad_mode="constant"``), one-sided, no normalisation; the inverse overlap-adds the
inverse FFTs times the window and divides by the sum of the squared windows (librosa's
``istft``). One change: each estimate is first zero-padded to a multiple of the hop, so
that every output sample is covered by two frames and the divisor is at least 0.5.
Without it (audio-separator: ``1 + n // 1024`` frames) the last ``n % 1024`` samples are
covered by the falling edge of one window only and are divided by its square, down to
1e-10, which turns any change min/max/median made to the spectrum into a burst at the very
end of the track. On every other sample the two definitions are the same frames and give
the same result. The STFT arithmetic is float64.

Nothing here holds a track: ``StreamingCombiner`` takes the K estimates block by block and
returns finished samples as soon as no later input can change them (at most one hop plus
one frame behind, for the spectral algorithms); ``spool.StemSpool`` keeps the models' stems
on disk as raw float32 until the last model that gives a stem runs, when the combine reads
them back in step with it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import numpy as np

from .errors import ModelError, UsageError
from .resolve import Recipe
from .specs import DEFAULT_ENSEMBLE_ALGORITHM, ENSEMBLE_ALGORITHMS
from .spool import StemSpool
from .stem_plan import MemberStems, StemPlan, StemSelection

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .engine import Network
    from .families.base import ChunkingRequest, LoadedModel

ALGORITHMS = ENSEMBLE_ALGORITHMS
FRAME = 2048
HOP = 1024
FFT_FRAMES_PER_STEP = 64
"""STFT frames transformed at once (64 frames: 65,536 samples), whatever the block size."""


# -- the algorithms on blocks ---------------------------------------------------------------
def _pick(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.take_along_axis(values, index[None], axis=0)[0]


def _median_by_magnitude(values: np.ndarray) -> np.ndarray:
    """The middle of the K values ranked by magnitude (stable: ties in model order); for
    even K the mean of the two middle ones."""
    count = values.shape[0]
    order = np.argsort(np.abs(values), axis=0, kind="stable")
    middle = _pick(values, order[(count - 1) // 2])
    if count % 2:
        return middle
    return (middle + _pick(values, order[count // 2])) / 2


def combine_values(algorithm: str, values: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Combine K estimates ``values`` (K, ...) into one (...), per element.

    Real values for the *_wave algorithms (the median is ``numpy.median``), complex STFT
    bins for the *_fft ones (the median is by magnitude, see the module's docstring)."""
    kind = algorithm.split("_", 1)[0]
    if kind == "avg":
        w = np.asarray(weights, dtype=np.float64).reshape((-1,) + (1,) * (values.ndim - 1))
        return (values * w).sum(axis=0) / w.sum()
    if kind == "median":
        if np.iscomplexobj(values):
            return _median_by_magnitude(values)
        return np.median(values, axis=0)
    magnitude = np.abs(values)
    index = np.argmin(magnitude, axis=0) if kind == "min" else np.argmax(magnitude, axis=0)
    return _pick(values, index)  # argmin/argmax: the first of equal magnitudes


def hann_window(length: int = FRAME) -> np.ndarray:
    """The periodic Hann window (scipy's ``get_window("hann", length)``), float64."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)


class StreamingCombiner:
    """One stem's K estimates in, the combined stem out, block by block.

    ``push(blocks)`` takes K (channels, m) arrays of equal length (the next m samples of
    every estimate) and returns the finished combined samples (channels, m') float32, or
    None; after the last block, ``finish()`` returns the rest. The outputs concatenate to
    exactly the input's length. Memory: the spectral algorithms keep one frame of input and
    one hop of overlap-add per estimate.
    """

    def __init__(self, algorithm: str, weights: Sequence[float], channels: int) -> None:
        if algorithm not in ALGORITHMS:
            raise UsageError(f"unknown ensemble algorithm '{algorithm}'",
                             hint=f"choose {', '.join(ALGORITHMS)}")
        self.algorithm = algorithm
        self.weights = tuple(float(w) for w in weights)
        self.count = len(self.weights)
        self.channels = channels
        self.received = 0
        self.emitted = 0
        self._spectral = algorithm.endswith("_fft") and self.count > 1
        if self._spectral:
            if FRAME != 2 * HOP:
                raise AssertionError("the overlap-add below assumes a hop of half a frame")
            self._window = hann_window(FRAME)
            squares = self._window ** 2
            self._divisor = squares[:HOP] + squares[HOP:]  # two frames cover every sample
            # Input in padded coordinates (the track starts at FRAME // 2) from frame
            # ``_frame``'s first sample; the overlap-add carried into the next frames.
            self._input = np.zeros((self.count, channels, FRAME // 2))
            self._frame = 0
            self._carry = np.zeros((channels, HOP))

    def push(self, blocks: Sequence[np.ndarray]) -> np.ndarray | None:
        if len(blocks) != self.count:
            raise ValueError(f"expected {self.count} estimates, got {len(blocks)}")
        length = blocks[0].shape[-1]
        if any(block.shape != (self.channels, length) for block in blocks):
            raise ValueError("the estimates of one block must have the same shape")
        if length == 0:
            return None
        self.received += length
        if self.count == 1:
            self.emitted += length
            return np.ascontiguousarray(blocks[0], dtype=np.float32)
        stacked = np.stack([np.asarray(block, dtype=np.float64) for block in blocks])
        if not self._spectral:
            self.emitted += length
            return combine_values(self.algorithm, stacked, self.weights).astype(np.float32)
        self._input = np.concatenate([self._input, stacked], axis=-1)
        return self._transform(last=False)

    def finish(self) -> np.ndarray | None:
        if not self._spectral:
            return None
        # Zero-pad the track to a multiple of the hop, then the centring's FRAME // 2 zeros.
        padded_end = FRAME // 2 + math.ceil(self.received / HOP) * HOP + FRAME // 2
        available = self._frame * HOP + self._input.shape[-1]
        self._input = np.concatenate(
            [self._input, np.zeros((self.count, self.channels, padded_end - available))],
            axis=-1)
        return self._transform(last=True)

    def _transform(self, last: bool) -> np.ndarray | None:
        """STFT every frame whose input is complete, combine, overlap-add, and return the
        samples no later frame touches."""
        pieces = []
        while True:
            frames = (self._input.shape[-1] - FRAME) // HOP + 1
            if frames <= 0:
                break
            frames = min(frames, FFT_FRAMES_PER_STEP)
            span = self._input[..., : (frames - 1) * HOP + FRAME]
            windows = np.lib.stride_tricks.sliding_window_view(span, FRAME, axis=-1)[..., ::HOP, :]
            spectra = np.fft.rfft(windows * self._window, axis=-1)  # (K, C, frames, bins)
            combined = combine_values(self.algorithm, spectra, self.weights)
            signal = np.fft.irfft(combined, n=FRAME, axis=-1) * self._window  # (C, frames, N)
            added = np.zeros((self.channels, (frames + 1) * HOP))
            added[:, :HOP] += self._carry
            added[:, : frames * HOP] += signal[..., :HOP].reshape(self.channels, -1)
            added[:, HOP:] += signal[..., HOP:].reshape(self.channels, -1)
            self._carry = added[:, frames * HOP:]
            finished = added[:, : frames * HOP] / np.tile(self._divisor, frames)
            # Padded positions [frame * HOP, ...) are track samples from FRAME // 2 on.
            start = self._frame * HOP - FRAME // 2
            self._frame += frames
            self._input = self._input[..., frames * HOP:]
            begin = max(self.emitted - start, 0)
            end = min(start + frames * HOP, self.received) - start if last else frames * HOP
            if end > begin:
                pieces.append(finished[:, begin:end])
                self.emitted = start + end
        if last and self.emitted != self.received:
            raise AssertionError("the spectral combine did not emit every sample")
        if not pieces:
            return None
        return np.concatenate(pieces, axis=-1).astype(np.float32)


def combine_arrays(algorithm: str, arrays: Sequence[np.ndarray],
                   weights: Sequence[float] | None = None,
                   block_frames: int = 1 << 16) -> np.ndarray:
    """Whole arrays (each (channels, n)) combined by the streaming combiner, for the
    Python API and tests."""
    weights = tuple(weights) if weights is not None else (1.0,) * len(arrays)
    channels, total = arrays[0].shape
    combiner = StreamingCombiner(algorithm, weights, channels)
    out = []
    for begin in range(0, total, block_frames):
        piece = combiner.push([array[:, begin:begin + block_frames] for array in arrays])
        if piece is not None:
            out.append(piece)
    rest = combiner.finish()
    if rest is not None:
        out.append(rest)
    return np.concatenate(out, axis=-1) if out else np.zeros((channels, 0), np.float32)


# -- a loaded ensemble ------------------------------------------------------------------------
@dataclass
class Ensemble:
    """Loaded models with their weights and an algorithm: what the pipeline runs. One model
    alone is an ensemble of one (``Ensemble.of``), whose stems are the model's own."""

    recipe: Recipe
    members: list["LoadedModel"]

    def __post_init__(self) -> None:
        if not self.members:
            raise ModelError("an ensemble needs at least one model")
        rates = {member.sample_rate for member in self.members}
        channels = {member.audio_channels for member in self.members}
        if len(rates) > 1 or len(channels) > 1:
            listing = ", ".join(f"{m.name} {m.sample_rate} Hz {m.audio_channels} ch"
                                for m in self.members)
            raise ModelError("the models of an ensemble must agree on sample rate and "
                             f"channels ({listing})")
        devices = {str(member.device) for member in self.members}
        if len(devices) > 1:
            raise ModelError(f"the models of an ensemble run on several devices ({devices})")

    @classmethod
    def of(cls, model: "LoadedModel") -> "Ensemble":
        """One loaded model as an ensemble of one."""
        recipe = Recipe(name=model.name, models=(model.name,), weights=(1.0,),
                        algorithm=DEFAULT_ENSEMBLE_ALGORITHM)
        return cls(recipe, [model])

    @property
    def name(self) -> str:
        """The output folder name: the recipe's, or one model's own (a local checkpoint
        names itself once loaded)."""
        return self.members[0].name if len(self.members) == 1 else self.recipe.name

    @property
    def weights(self) -> tuple[float, ...]:
        return self.recipe.weights

    @property
    def algorithm(self) -> str:
        return self.recipe.algorithm

    @property
    def sample_rate(self) -> int:
        return self.members[0].sample_rate

    @property
    def audio_channels(self) -> int:
        return self.members[0].audio_channels

    @property
    def device(self) -> "torch.device":
        return self.members[0].device

    @property
    def runs_outside_torch(self) -> bool:
        return any(member.runs_outside_torch for member in self.members)

    @property
    def sources(self) -> tuple[str, ...]:
        """Every stem the ensemble gives, in order."""
        return self.plan().names

    def plan(self, selection: StemSelection = StemSelection()) -> StemPlan:
        """Which stems this run gives, and which model gives each (UsageError for a stem
        no model gives)."""
        return selection.plan([member.sources for member in self.members],
                              [member.name for member in self.members])

    def engine_networks(self, request: "ChunkingRequest | float | None" = None) -> list["Network"]:
        """Every member's networks (checks ``--segment``/``--overlap`` for each)."""
        return [network for member in self.members
                for network in member.engine_networks(request)]

    def release(self) -> None:
        """Drop the networks (their memory is freed once nothing else holds them)."""
        for member in self.members:
            member.networks = []
        self.members = []


# -- one track through every model ------------------------------------------------------------
Emit = Callable[[str, np.ndarray], None]
RunMember = Callable[["LoadedModel", Sequence[str], Emit, Callable[[int, int], None]], None]
"""``run(model, stems, emit, progress)``: separate the track with one model, calling
``emit(stem, (channels, m) block)`` in order for each of ``stems`` (the model's own)."""

PROGRESS_SCALE = 1 << 20
"""Each model's share of the track's progress bar (equal shares)."""


class _LiveCombine:
    """The last model that gives a stem: each of its blocks is combined at once with the
    same samples of the earlier models' spooled estimates, and the result emitted."""

    def __init__(self, name: str, readers: list[Any], combiner: StreamingCombiner,
                 emit: Emit) -> None:
        self.name, self.readers, self.combiner, self.emit = name, readers, combiner, emit

    def write(self, block: np.ndarray) -> None:
        blocks = [reader.read(block.shape[-1]) for reader in self.readers] + [block]
        combined = self.combiner.push(blocks)
        if combined is not None:
            self.emit(self.name, combined)

    def close(self) -> None:
        combined = self.combiner.finish()
        if combined is not None:
            self.emit(self.name, combined)
        for reader in self.readers:
            reader.close()


class _MemberOutputs:
    """One model's stems as the engine emits them -> the outputs it gives (its own stems,
    and complements: the sum of its other stems, or the mixture minus the stem)."""

    def __init__(self, stems: MemberStems, sources: Sequence[str], sinks: dict[str, Any],
                 mixture: Any) -> None:
        self.stems, self.sources, self.sinks, self.mixture = stems, list(sources), sinks, mixture
        self.pending: dict[str, deque[np.ndarray]] = {name: deque() for name in stems.needed}

    def emit(self, name: str, block: np.ndarray) -> None:
        self.pending[name].append(block)
        while all(self.pending.values()):
            count = min(queue[0].shape[-1] for queue in self.pending.values())
            blocks = {name: _take(queue, count) for name, queue in self.pending.items()}
            mixture = self.mixture.read(count) if self.mixture is not None else None
            for stem in self.stems.direct:
                self.sinks[stem].write(blocks[stem])
            for stem, source, method in self.stems.derived:
                if method == "minus":
                    assert mixture is not None
                    self.sinks[stem].write(mixture - blocks[source])
                else:  # in the sources' order, as the single-model --two-stems sum
                    self.sinks[stem].write(sum(blocks[s] for s in self.sources if s != source))

    def finish(self) -> None:
        if any(self.pending.values()):
            raise AssertionError("a model's stems ended at different lengths")


def _take(queue: deque[np.ndarray], count: int) -> np.ndarray:
    """The first ``count`` frames of a queue of (channels, m) blocks."""
    pieces = []
    while count > 0:
        block = queue[0]
        if block.shape[-1] <= count:
            pieces.append(queue.popleft())
            count -= block.shape[-1]
        else:
            pieces.append(block[..., :count])
            queue[0] = block[..., count:]
            count = 0
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=-1)


class MixtureSource(Protocol):
    """The decoded track, readable from its start as often as needed (``spool``)."""

    def reader(self) -> Any: ...


def run_ensemble(ensemble: Ensemble, plan: StemPlan, *, run_member: RunMember,
                 spool: StemSpool, mixture: MixtureSource, emit: Emit,
                 progress: Callable[[int, int], None] | None = None,
                 stage: Callable[[int, str], None] | None = None) -> None:
    """Separate one track with every model in turn and emit the combined stems.

    Each model's outputs go to ``spool`` (raw float32 files), except for a stem whose last
    giver it is: that one is combined at once with the spooled estimates of the earlier
    models and emitted, and their files deleted. ``mixture`` is the decoded track
    (read again for ``--other-method minus``). ``progress(done, total)`` spans
    every model (an equal share each); ``stage(index, name)`` announces each model of an
    ensemble of more than one.
    """
    channels = ensemble.audio_channels
    count = len(ensemble.members)
    for index, (member, stems) in enumerate(zip(ensemble.members, plan.members)):
        if stage is not None and count > 1:
            stage(index, member.name)
        sinks: dict[str, Any] = {}
        for name in stems.outputs:
            givers = plan.contributors(name)
            if givers[-1] == index:
                readers = [spool.reader(giver, name, channels) for giver in givers[:-1]]
                combiner = StreamingCombiner(ensemble.algorithm,
                                             [ensemble.weights[giver] for giver in givers],
                                             channels)
                sinks[name] = _LiveCombine(name, readers, combiner, emit)
            else:
                sinks[name] = spool.writer(index, name, channels)
        mix = mixture.reader() if stems.needs_mixture else None

        def member_progress(done: int, total: int, index: int = index) -> None:
            if progress is not None:
                share = PROGRESS_SCALE * done // max(total, 1)
                progress(index * PROGRESS_SCALE + share, count * PROGRESS_SCALE)

        try:
            outputs = _MemberOutputs(stems, member.sources, sinks, mix)
            run_member(member, stems.needed, outputs.emit, member_progress)
            outputs.finish()
        finally:
            if mix is not None:
                mix.close()
        for name, sink in sinks.items():
            sink.close()
            if isinstance(sink, _LiveCombine):
                for giver in plan.contributors(name)[:-1]:
                    spool.remove(giver, name)


def as_ensemble(model: "Ensemble | LoadedModel") -> Ensemble:
    """An ensemble as it is; one loaded model as an ensemble of one."""
    return model if isinstance(model, Ensemble) else Ensemble.of(model)
