"""The Python API: a ``Separator`` holds its models, loaded once, and separates files and
arrays with the settings it was made with.

    import stemsplit

    with stemsplit.Separator(model="four_stems_best", device="cpu") as separator:
        stems = separator.separate("song.mp3")            # {"drums": (channels, time), ...}
        stems = separator.separate(array, sample_rate=44100, stems=["vocals"])
        paths = separator.separate_to_files("song.mp3", out_dir="out", format="flac")

``model`` is anything the command line's ``-n`` takes: a model name or alias, a preset, a
list of names (an ensemble), or None (``$STEMSPLIT_MODEL``, else the default model); or a
local checkpoint with ``weights=``. ``stemsplit.separate(...)`` is a one-call wrapper.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Sequence, Union

import numpy as np
import torch

from . import audio
from .engine import SeparationSettings
from .ensemble import Ensemble, as_ensemble
from .errors import InputError, UsageError
from .families import all_families
from .families.base import ChunkingRequest, LoadedModel
from .loading import load
from .pipeline import Observer, as_audio_array, separate_array, separate_file
from .plan import OutputOptions, TrackResult
from .precision import check_precision, resolve_precision
from .resolve import ModelChoice, Recipe
from .stem_plan import StemSelection

Progress = Callable[[int, int], None]
"""``progress(done, total)``: how far the current separation is, in any unit (the total is
the same for one separation and ``done`` reaches it at the end)."""

AudioSource = Union[str, Path, np.ndarray, torch.Tensor]

__all__ = ["Separator", "separate"]


class _Relay(Observer):
    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress

    def track_progress(self, track: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)


class Separator:
    """Models loaded once, and the settings every separation uses.

    ``device`` is "auto" (cuda, then mps, then cpu), "cpu", "cuda", "cuda:1", ...
    ``precision`` is the command line's ``--precision`` (fp32, the default; bf16; fp16 on a
    GPU; auto: fp32 for now), with a ``RuntimeWarning`` where bf16 is emulated. ``shifts``,
    ``seed``, ``overlap``, ``segment_seconds`` and ``batch_size`` are the command line's
    ``--shifts``, ``--seed``, ``--overlap``, ``--segment`` and ``--batch-size``; ``ensemble``
    and ``ensemble_weights`` its ``--ensemble`` and ``--ensemble-weights``; the keywords in
    ``family_options`` are the options only one family reads, by their Python names
    (``Separator.family_option_names()`` lists them; ``stemsplit separate --help`` explains each).
    Every setting is checked here, before anything is downloaded.

    ``model`` may also be a model loaded already (``stemsplit.load_model``, or an
    ``Ensemble``): it is used as it is, and ``close`` leaves it loaded.

    Threads: a ``Separator`` may be shared by several threads. Its calls run one at a time
    (a lock serialises them), since the networks' buffers and the runtimes outside torch are not
    meant to be entered twice at once; for separations in parallel, give each thread its
    own ``Separator`` (each holds its own copy of the models), or use ``stemsplit batch``.
    """

    def __init__(
        self,
        model: ModelChoice | Recipe | Ensemble | LoadedModel = None,
        *,
        weights: str | Path | None = None,
        device: str | torch.device | None = "auto",
        precision: str | None = "fp32",
        shifts: int = 0,
        seed: int = 0,
        overlap: float | None = None,
        segment_seconds: float | None = None,
        batch_size: int = 1,
        ensemble: str | None = None,
        ensemble_weights: Sequence[float] | str | None = None,
        offline: bool | None = None,
        progress: Progress | None = None,
        download_progress: Callable[[str, int, "int | None"], None] | None = None,
        **family_options: Any,
    ) -> None:
        known = self.family_option_names()
        unknown = sorted(set(family_options) - set(known))
        if unknown:
            raise UsageError(f"Separator: unknown option '{unknown[0]}'",
                             hint=f"the family options are {', '.join(known)}")
        try:
            self.settings = SeparationSettings(shifts=shifts, seed=seed, batch_size=batch_size)
        except ValueError as error:
            raise UsageError(str(error)) from None
        self.chunking = ChunkingRequest(segment_seconds=segment_seconds, overlap=overlap,
                                        shifts=shifts, batch_size=batch_size)
        self.progress = progress
        self._lock = threading.Lock()
        self._owns_models = not isinstance(model, (Ensemble, LoadedModel))
        if self._owns_models:
            check_precision(precision)
            self._model: Ensemble | None = load(
                model, weights=weights, ensemble=ensemble, ensemble_weights=ensemble_weights,
                offline=offline, device=device, progress=download_progress,
                options=family_options, precision=precision)
            note = resolve_precision(precision, self._model.device).warning
            if note is not None:
                warnings.warn(note, RuntimeWarning, stacklevel=2)
        else:
            if weights is not None or ensemble is not None or ensemble_weights is not None \
                    or family_options or check_precision(precision) not in ("auto", "fp32"):
                raise UsageError("a model loaded already takes no weights, ensemble, "
                                 "precision or family options",
                                 hint="give them to load_model")
            self._model = as_ensemble(model)  # type: ignore[arg-type]
        try:
            self._model.engine_networks(self.chunking)  # a bad --segment/--overlap, now
        except BaseException:
            self.close()
            raise

    @staticmethod
    def family_option_names() -> list[str]:
        """The keyword names of every family's own options."""
        return [option.name for family in all_families() for option in family.options]

    # -- what it holds ---------------------------------------------------------------------
    @property
    def model(self) -> Ensemble:
        """The loaded models (an ``Ensemble``; one model is an ensemble of one)."""
        if self._model is None:
            raise UsageError("this Separator is closed")
        return self._model

    @property
    def name(self) -> str:
        """The model's (or ensemble's) name, as in output folders."""
        return self.model.name

    @property
    def models(self) -> list[str]:
        """The name of each model, in order."""
        return [member.name for member in self.model.members]

    @property
    def sources(self) -> tuple[str, ...]:
        """Every stem the model (or ensemble) gives, in order."""
        return self.model.sources

    @property
    def sample_rate(self) -> int:
        """The rate the models run at (inputs at any rate are converted, and back)."""
        return self.model.sample_rate

    @property
    def audio_channels(self) -> int:
        return self.model.audio_channels

    @property
    def device(self) -> torch.device:
        return self.model.device

    # -- separating ------------------------------------------------------------------------
    def separate(
        self,
        source: AudioSource,
        sample_rate: int | None = None,
        *,
        two_stems: str | None = None,
        other_method: str = "add",
        stems: Sequence[str] | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """The stems of ``source``: {stem name: array}, at the input's sample rate and length.

        ``source`` is an audio or video file (decoded whole, into memory), or an array:
        numpy (channels, time) or (time,) float, with ``sample_rate``; a torch tensor the
        same way, or (batch, channels, time). Arrays come back as the same kind: numpy
        float32 arrays for numpy and files; tensors on the input's device (its dtype when
        it is a floating one) for tensors, with the input's batch dimension. Every stem has
        the model's channels (a mono input is separated as its stereo copy). Values are the
        network's, not clipped. ``two_stems``, ``other_method`` and ``stems`` are
        ``--two-stems``, ``--other-method`` and ``--stem``.
        """
        selection = _selection(two_stems, other_method, stems)
        with self._lock:
            model = self.model
            model.plan(selection)  # a stem no model gives: one line, before any work
            report = progress or self.progress
            if isinstance(source, (str, Path)):
                return self._separate_path(Path(source), model, selection, report)
            if sample_rate is None:
                raise UsageError("separating an array needs its sample_rate")
            if torch.is_tensor(source):
                return self._separate_tensor(source, sample_rate, model, selection, report)
            return separate_array(source, sample_rate, model, settings=self.settings,
                                  chunking=self.chunking, selection=selection,
                                  progress=report)

    def separate_to_files(self, source: str | Path | IO[bytes],
                          out_dir: str | Path = "separated", **keywords: Any) -> dict[str, Path]:
        """Separate a file (or a binary stream) into files, as ``stemsplit separate`` does;
        returns {stem name: path}. The keywords are ``separate_file``'s. A track whose
        outputs exist already is not separated again (unless ``force=True``): its paths
        are returned."""
        return self.separate_file(source, out_dir, **keywords).outputs

    def separate_file(
        self,
        source: str | Path | IO[bytes],
        out_dir: str | Path = "separated",
        *,
        two_stems: str | None = None,
        other_method: str = "add",
        stems: Sequence[str] | None = None,
        progress: Progress | None = None,
        **output_options: Any,
    ) -> TrackResult:
        """Separate a file (or a binary stream) into files; the whole ``TrackResult``
        (status, outputs, warnings, durations). ``two_stems``, ``other_method`` and
        ``stems`` are ``separate``'s; ``output_options`` are ``OutputOptions``' (filename,
        format, bits, float32, mp3_bitrate, clip_mode, sample_rate, force)."""
        options = _output_options(out_dir, output_options)
        selection = _selection(two_stems, other_method, stems)
        with self._lock:
            return separate_file(source, self.model, settings=self.settings,
                                 chunking=self.chunking, selection=selection, options=options,
                                 observer=_Relay(progress or self.progress))

    # -- the models' lifetime --------------------------------------------------------------
    def close(self) -> None:
        """Free the models (a model given loaded is only let go of). Closing twice is fine;
        a closed ``Separator`` refuses to separate."""
        with self._lock:
            model, self._model = self._model, None
            if model is None:
                return
            on_cuda = model.device.type == "cuda"
            if self._owns_models:
                model.release()
            if on_cuda:
                torch.cuda.empty_cache()

    def __enter__(self) -> "Separator":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._model is None:
            return "Separator(closed)"
        return (f"Separator(model={self.name!r}, sources={list(self.sources)}, "
                f"sample_rate={self.sample_rate}, device='{self.device}')")

    # -- inputs ----------------------------------------------------------------------------
    def _separate_path(self, path: Path, model: Ensemble, selection: StemSelection,
                       progress: Progress | None) -> dict[str, np.ndarray]:
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        input_rate = audio.probe(path).sample_rate
        mix = audio.decode(path, model.sample_rate, model.audio_channels)
        at_model_rate = separate_array(mix, model.sample_rate, model, settings=self.settings,
                                       chunking=self.chunking, selection=selection,
                                       progress=progress)
        return {name: audio.convert(stem, model.sample_rate, input_rate, stem.shape[0])
                for name, stem in at_model_rate.items()}

    def _separate_tensor(self, tensor: torch.Tensor, sample_rate: int, model: Ensemble,
                         selection: StemSelection,
                         progress: Progress | None) -> dict[str, torch.Tensor]:
        dtype = tensor.dtype if tensor.is_floating_point() else torch.float32
        items = list(tensor) if tensor.dim() == 3 else [tensor]
        if not items:
            raise InputError("the audio tensor is empty")
        results = [separate_array(as_audio_array(item), sample_rate, model,
                                  settings=self.settings, chunking=self.chunking,
                                  selection=selection, progress=progress) for item in items]

        def back(arrays: list[np.ndarray]) -> torch.Tensor:
            stacked = np.stack(arrays) if tensor.dim() == 3 else arrays[0]
            return torch.from_numpy(stacked).to(device=tensor.device, dtype=dtype)

        return {name: back([result[name] for result in results]) for name in results[0]}


def _selection(two_stems: str | None, other_method: str,
               stems: Sequence[str] | str | None) -> StemSelection:
    if isinstance(stems, str):
        stems = [stems]
    return StemSelection(two_stems=two_stems, other_method=other_method,
                         only=tuple(stems) if stems else None)


def _output_options(out_dir: str | Path, values: Mapping[str, Any]) -> OutputOptions:
    try:
        return OutputOptions(out_dir=Path(out_dir), **values)
    except TypeError:
        fields = ", ".join(sorted(f for f in OutputOptions.__dataclass_fields__
                                  if f not in ("out_dir", "stream")))
        unknown = sorted(set(values) - set(OutputOptions.__dataclass_fields__))
        raise UsageError(f"unknown output option {', '.join(map(repr, unknown))}",
                         hint=f"they are {fields}") from None


def separate(
    source: AudioSource,
    *,
    sample_rate: int | None = None,
    model: ModelChoice | Recipe | Ensemble | LoadedModel = None,
    device: str | torch.device | None = "auto",
    precision: str | None = "fp32",
    shifts: int = 0,
    seed: int = 0,
    overlap: float | None = None,
    segment_seconds: float | None = None,
    batch_size: int = 1,
    two_stems: str | None = None,
    other_method: str = "add",
    stems: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    **output_options: Any,
) -> dict[str, Any]:
    """Separate one file or array with ``model`` in one call (a ``Separator`` made and
    closed). With ``out_dir`` the stems are written as files (``output_options``:
    ``OutputOptions``' fields) and their paths returned; otherwise the stems are returned
    as arrays (see ``Separator.separate``). To separate several inputs, make one
    ``Separator``: it loads the models once."""
    if out_dir is None and output_options:
        raise UsageError(f"{', '.join(output_options)}: only with out_dir")
    if out_dir is not None and not isinstance(source, (str, Path)):
        raise UsageError("out_dir applies to file inputs; write the returned arrays yourself")
    with Separator(model, device=device, precision=precision, shifts=shifts, seed=seed,
                   overlap=overlap,
                   segment_seconds=segment_seconds, batch_size=batch_size) as separator:
        if out_dir is None:
            return separator.separate(source, sample_rate, two_stems=two_stems,
                                      other_method=other_method, stems=stems)
        return separator.separate_to_files(source, out_dir, two_stems=two_stems,
                                           other_method=other_method, stems=stems,
                                           **output_options)
