"""Ensembles: several models' estimates of each stem combined into one, as a stream.

An ensemble is a list of models (``-n A -n B ...`` or a preset from weights.toml), one
weight per model (``--ensemble-weights``, default equal) and an algorithm
(``--ensemble``, default ``avg_wave``). Each model contributes to the stems it gives: a
stem of its own, or the complement of one of its stems (``accompaniment`` for vocals,
``no_X`` for X; ``vocals`` for the accompaniment) made by the ``--two-stems`` rules: the
sum of its other stems, or the mixture minus that stem with ``--other-method minus``. A
stem that only one model gives is that model's stem as it is.

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
one frame behind, for the spectral algorithms); ``StemSpool`` keeps the models' stems on disk
as raw float32 until the last model that gives a stem runs, when the combine reads them
back in step with it.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .errors import ModelError, OutputError, UsageError
from .registry import (DEFAULT_ENSEMBLE_ALGORITHM, ENSEMBLE_ALGORITHMS,
                       WEIGHTED_ENSEMBLE_ALGORITHMS, Registry)
from .stems import complement_name

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .engine import Network
    from .families.base import ChunkingRequest, LoadedModel

ALGORITHMS = ENSEMBLE_ALGORITHMS
WEIGHTED_ALGORITHMS = WEIGHTED_ENSEMBLE_ALGORITHMS
FRAME = 2048
HOP = 1024
FFT_FRAMES_PER_STEP = 64
"""STFT frames transformed at once (64 frames: 65,536 samples), whatever the block size."""
MAX_NAME_LENGTH = 80
"""Longer ensemble names are cut and end in 8 hex digits of the full name's sha1."""


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


# -- which model gives which stem -------------------------------------------------------------
@dataclass(frozen=True)
class MemberStems:
    """What one model of an ensemble contributes."""

    direct: tuple[str, ...]
    """Output stems that are the model's own stems."""
    derived: tuple[tuple[str, str, str], ...]
    """(output stem, the model's stem it complements, "add" or "minus")."""
    needed: tuple[str, ...]
    """The model's own stems to compute (in its order): the direct ones, and what the
    derived ones are made of."""

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.direct + tuple(name for name, _, _ in self.derived)

    @property
    def needs_mixture(self) -> bool:
        return any(method == "minus" for _, _, method in self.derived)


@dataclass(frozen=True)
class StemPlan:
    names: tuple[str, ...]
    """The ensemble's output stems, in order."""
    members: tuple[MemberStems, ...]

    def contributors(self, name: str) -> list[int]:
        """The members that give ``name``, in model order."""
        return [index for index, member in enumerate(self.members) if name in member.outputs]


def _member_stems(sources: Sequence[str], names: Sequence[str], method: str) -> MemberStems:
    direct, derived = [], []
    for name in names:
        if name in sources:
            direct.append(name)
            continue
        # complement_name is one-to-one: at most one of the model's stems has this complement
        complemented = [source for source in sources if complement_name(source) == name]
        if complemented:
            derived.append((name, complemented[0], method))
    used = set(direct)
    for _, source, how in derived:
        used.update([source] if how == "minus" else [s for s in sources if s != source])
    needed = tuple(source for source in sources if source in used)
    return MemberStems(tuple(direct), tuple(derived), needed)


def plan_stems(member_sources: Sequence[Sequence[str]], member_names: Sequence[str], *,
               two_stems: str | None = None, other_method: str = "add",
               only: Sequence[str] | None = None) -> StemPlan:
    """The output stems of an ensemble of models giving ``member_sources``, and who gives
    which. Without ``two_stems`` the outputs are every stem any model gives (first model's
    order, then the new ones of the next); with it, that stem and its complement (unless
    ``other_method`` is "none"). UsageError for a stem no model gives and for a model
    that gives none of the outputs, before any work."""
    if other_method not in ("add", "minus", "none"):
        raise UsageError(f"unknown --other-method '{other_method}'",
                         hint="choose add, minus or none")
    method = "minus" if other_method == "minus" else "add"
    givable: list[str] = []
    for sources in member_sources:
        givable += [s for s in sources if s not in givable]
    if two_stems is not None:
        names = [two_stems] + ([complement_name(two_stems)] if other_method != "none" else [])
    else:
        names = list(givable)
    if only:
        unknown = [stem for stem in only if stem not in names]
        if unknown:
            raise UsageError(f"--stem {', '.join(unknown)}: not among this run's stems",
                             hint=f"available: {', '.join(names)}")
        names = [stem for stem in names if stem in only]
    members = tuple(_member_stems(sources, names, method) for sources in member_sources)
    for name in names:
        if not any(name in member.outputs for member in members):
            raise UsageError(f"stem '{name}' is not produced by any model of the ensemble",
                             hint=f"they produce {', '.join(givable)}")
    for model, member in zip(member_names, members):
        if not member.outputs:
            raise UsageError(f"model {model} gives none of this run's stems "
                             f"({', '.join(names)})", hint="leave it out of the ensemble")
    return StemPlan(tuple(names), members)


# -- what the user asked for ------------------------------------------------------------------
@dataclass(frozen=True)
class EnsembleRecipe:
    """An ensemble before loading: its models (registry names), weights and algorithm."""

    name: str
    """The output folder name (``{model}``)."""
    models: tuple[str, ...]
    weights: tuple[float, ...]
    algorithm: str
    preset: str | None = None


def parse_weights(text: str) -> tuple[float, ...]:
    """``--ensemble-weights 2,1,1``: positive finite numbers."""
    try:
        weights = tuple(float(part) for part in text.replace(" ", "").split(","))
    except ValueError:
        raise UsageError(f"--ensemble-weights {text}: not a list of numbers",
                         hint="e.g. --ensemble-weights 2,1,1, one per model") from None
    if not all(math.isfinite(w) and w > 0 for w in weights):
        raise UsageError(f"--ensemble-weights {text}: weights must be positive numbers")
    return weights


def _format_weights(weights: Sequence[float]) -> str:
    return "-".join(f"{w:g}" for w in weights)


def ensemble_name(base: str, algorithm: str, weights: Sequence[float],
                  default_algorithm: str = DEFAULT_ENSEMBLE_ALGORITHM,
                  default_weights: Sequence[float] | None = None) -> str:
    """``base`` (the models joined with "+", or the preset's name), then ``.ALGORITHM``
    and ``.wW1-W2...`` where they differ from the defaults, so that two different
    ensembles of the same models never share an output folder; cut to MAX_NAME_LENGTH."""
    name = base
    if algorithm != default_algorithm:
        name += f".{algorithm}"
    if algorithm in WEIGHTED_ALGORITHMS:
        default = tuple(default_weights or (1.0,) * len(weights))
        if _normalised(weights) != _normalised(default):
            name += f".w{_format_weights(weights)}"
    if len(name) > MAX_NAME_LENGTH:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = name[: MAX_NAME_LENGTH - 9].rstrip("+.-_") + "-" + digest
    return name


def _normalised(weights: Sequence[float]) -> tuple[float, ...]:
    total = sum(weights)
    return tuple(round(w / total, 12) for w in weights)


def resolve_ensemble(names: Sequence[str], registry: Registry, *,
                     algorithm: str | None = None,
                     weights: Sequence[float] | None = None) -> EnsembleRecipe | None:
    """The ensemble ``-n`` names ask for (several models, or one preset), or None for a
    single model. UsageError for what cannot be combined."""
    presets = [registry.preset(name) for name in names]
    preset = next((p for p in presets if p is not None), None)
    if preset is not None and len(names) > 1:
        raise UsageError(f"preset {preset.name} is an ensemble of its own; give it alone",
                         hint=f"or list its models: -n {' -n '.join(preset.models)}")
    if preset is None and len(names) < 2:
        if algorithm is not None or weights is not None:
            raise UsageError("--ensemble and --ensemble-weights combine several models",
                             hint="repeat -n (-n A -n B), or name a preset "
                             "(`stemsplit models` lists them)")
        return None
    if preset is not None:
        models = preset.models
        default_algorithm = preset.algorithm
        default_weights = preset.weights or (1.0,) * len(models)
        base = preset.name
    else:
        models = tuple(registry.get(name).name for name in names)
        seen = set()
        for model in models:
            if model in seen:
                raise UsageError(f"model {model} is named twice in the ensemble")
            seen.add(model)
        default_algorithm = DEFAULT_ENSEMBLE_ALGORITHM
        default_weights = (1.0,) * len(models)
        base = "+".join(models)
    chosen = algorithm or default_algorithm
    if chosen not in ALGORITHMS:
        raise UsageError(f"unknown ensemble algorithm '{chosen}'",
                         hint=f"choose {', '.join(ALGORITHMS)}")
    if weights is not None:
        if chosen not in WEIGHTED_ALGORITHMS:
            raise UsageError(f"--ensemble-weights applies to {' and '.join(WEIGHTED_ALGORITHMS)}",
                             hint=f"{chosen} picks a value or takes a median; it has no weights")
        if len(weights) != len(models):
            raise UsageError(f"--ensemble-weights: {len(weights)} weights for {len(models)} "
                             "models", hint="give one weight per model, in the order of -n")
        used = tuple(float(w) for w in weights)
    else:
        used = tuple(float(w) for w in default_weights)
    rates = {registry.get(model).sample_rate for model in models}
    if len(rates) > 1:
        listing = ", ".join(f"{m} {registry.get(m).sample_rate} Hz" for m in models)
        raise UsageError(f"the models of an ensemble must run at one sample rate ({listing})")
    for model in models:
        unsupported = registry.get(model).unsupported
        if unsupported:
            raise ModelError(f"model '{model}': {unsupported}")
    name = ensemble_name(base, chosen, used, default_algorithm, default_weights)
    return EnsembleRecipe(name=name, models=tuple(models), weights=used, algorithm=chosen,
                          preset=preset.name if preset is not None else None)


def recipe_sources(recipe: EnsembleRecipe, registry: Registry) -> list[tuple[str, ...]]:
    """Each member's stems, from the registry (before anything is loaded)."""
    return [registry.get(model).stems for model in recipe.models]


# -- a loaded ensemble ------------------------------------------------------------------------
@dataclass
class Ensemble:
    """Loaded models with their weights and an algorithm; to the pipeline it looks like
    one model (name, rate, channels, device, networks)."""

    recipe: EnsembleRecipe
    members: list["LoadedModel"]

    def __post_init__(self) -> None:
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

    @property
    def name(self) -> str:
        return self.recipe.name

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
        return self.plan().names

    def plan(self, two_stems: str | None = None, other_method: str = "add",
             only: Sequence[str] | None = None) -> StemPlan:
        return plan_stems([member.sources for member in self.members],
                          [member.name for member in self.members], two_stems=two_stems,
                          other_method=other_method, only=only)

    def engine_networks(self, request: "ChunkingRequest | float | None" = None) -> list["Network"]:
        """Every member's networks (checks ``--segment``/``--overlap`` for each)."""
        return [network for member in self.members
                for network in member.engine_networks(request)]


# -- the models' stems on disk ----------------------------------------------------------------
class SpoolWriter:
    """Appends (channels, m) float32 blocks to a raw file, frames interleaved."""

    def __init__(self, path: Path, channels: int) -> None:
        self.path, self.channels = path, channels
        self.frames = 0
        try:
            self._file = open(path, "wb")
        except OSError as error:
            raise _spool_error(path, error) from None

    def write(self, block: np.ndarray) -> None:
        try:
            self._file.write(np.ascontiguousarray(np.asarray(block, np.float32).T).tobytes())
        except OSError as error:
            raise _spool_error(self.path, error) from None
        self.frames += block.shape[-1]

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as error:
            raise _spool_error(self.path, error) from None


class SpoolReader:
    """Reads a raw float32 file (a stem spool, or the decoded mixture's) in order."""

    def __init__(self, path: str | Path, channels: int) -> None:
        self.path, self.channels = Path(path), channels
        self._file = open(path, "rb")

    def read(self, frames: int) -> np.ndarray:
        data = self._file.read(frames * 4 * self.channels)
        if len(data) != frames * 4 * self.channels:
            raise AssertionError(f"{self.path} ended early")
        return np.frombuffer(data, dtype=np.float32).reshape(frames, self.channels).T

    def close(self) -> None:
        self._file.close()


def _spool_error(path: Path, error: OSError) -> OutputError:
    return OutputError(f"cannot spool an ensemble's stems to {path.parent}: {error.strerror}",
                       hint="free some space, or set TMPDIR to a disk with room")


@dataclass
class StemSpool:
    """A temporary folder (in TMPDIR) holding one raw float32 file per model and stem;
    ``close`` deletes it, whatever state it is in."""

    directory: str | None = None
    path: Path = field(init=False)
    _open: list[Any] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        try:
            self.path = Path(tempfile.mkdtemp(prefix="stemsplit-ensemble-", dir=self.directory))
        except OSError as error:
            raise OutputError(f"cannot create a temporary folder: {error.strerror}",
                              hint="set TMPDIR to a writable folder") from None

    def file(self, member: int, stem: str) -> Path:
        return self.path / f"{member}-{stem}.f32"

    def writer(self, member: int, stem: str, channels: int) -> SpoolWriter:
        writer = SpoolWriter(self.file(member, stem), channels)
        self._open.append(writer)
        return writer

    def reader(self, member: int, stem: str, channels: int) -> SpoolReader:
        reader = SpoolReader(self.file(member, stem), channels)
        self._open.append(reader)
        return reader

    def remove(self, member: int, stem: str) -> None:
        try:
            os.unlink(self.file(member, stem))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        for handle in self._open:
            try:
                handle._file.close()
            except OSError:
                pass
        self._open = []
        shutil.rmtree(self.path, ignore_errors=True)


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

    def __init__(self, name: str, readers: list[SpoolReader], combiner: StreamingCombiner,
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
                 mixture: SpoolReader | None) -> None:
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


def run_ensemble(ensemble: Ensemble, plan: StemPlan, *, run_member: RunMember,
                 spool: StemSpool, mixture: str | Path, emit: Emit,
                 progress: Callable[[int, int], None] | None = None,
                 stage: Callable[[int, str], None] | None = None) -> None:
    """Separate one track with every model in turn and emit the combined stems.

    Each model's outputs go to ``spool`` (raw float32 files), except for a stem whose last
    giver it is: that one is combined at once with the spooled estimates of the earlier
    models and emitted, and their files deleted. ``mixture`` is the decoded track's raw
    float32 spool (for ``--other-method minus``). ``progress(done, total)`` spans every
    model (an equal share each); ``stage(index, name)`` announces each model.
    """
    channels = ensemble.audio_channels
    count = len(ensemble.members)
    for index, (member, stems) in enumerate(zip(ensemble.members, plan.members)):
        if stage is not None:
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
        mix = SpoolReader(mixture, channels) if stems.needs_mixture else None

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
