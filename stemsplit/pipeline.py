"""One track (or a list of tracks) from input to written stems: the Python API.

decode (ffmpeg) -> spool + mix statistics -> engine (streaming) -> one writer per stem.
Memory does not grow with the track: the decoded mixture is spooled to a temporary
float32 file on disk during the statistics pass, then streamed through the engine, whose
finished samples go straight to the encoders. Every output is written to a temporary file
and renamed into place only when all stems of the track are complete.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence

import numpy as np
import torch

from . import audio
from .ensemble import Ensemble, StemSpool, run_ensemble
from .engine import MixStatistics, SeparationSettings, StreamingSeparator
from .errors import InputError, OutputError, StemsplitError, UsageError
from .families.base import ChunkingRequest
from .loading import LoadedModel, load_model
from .plan import (OUTPUT_FORMATS, OutputOptions, StemSelection, TrackResult,  # noqa: F401
                   _track_name, output_paths, skipped_result)

SPOOL_BLOCK_FRAMES = 1 << 18
"""Frames per block read from the spool and fed to the engine (~6 s at 44.1 kHz)."""

class Observer:
    """Progress reports from the pipeline; the CLI draws them. All methods are optional."""

    def track_started(self, track: str, duration_seconds: float | None) -> None: ...

    def track_progress(self, track: str, done: int, total: int) -> None: ...

    def track_stage(self, track: str, stage: str) -> None:
        """The track moved on to another stage (an ensemble's next model: "model 2/3 X")."""

    def track_finished(self, result: TrackResult) -> None: ...


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto' (or None) picks cuda, then mps, then cpu; an unavailable device is an error."""
    name = str(device or "auto")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device '{name}'", hint="use auto, cpu, cuda or mps")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' requested but no CUDA GPU is available")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("device 'mps' requested but MPS is not available")
    return resolved


# -- mixture sources --------------------------------------------------------------------
class _Spool:
    """A decoded mixture on disk as raw float32 (frames, channels), with its statistics."""

    def __init__(self, blocks: Iterator[np.ndarray], channels: int, directory: str | None,
                 cancel: threading.Event | None = None):
        self.channels = channels
        self.statistics = MixStatistics()
        try:
            handle, self.path = tempfile.mkstemp(prefix="stemsplit-", suffix=".f32",
                                                 dir=directory)
        except OSError as error:
            raise OutputError(f"cannot create a temporary file: {error.strerror}",
                              hint="set TMPDIR to a writable folder") from None
        try:
            with os.fdopen(handle, "wb") as file:
                for block in blocks:
                    if cancel is not None and cancel.is_set():
                        raise Cancelled()
                    self.statistics.update(torch.from_numpy(block))
                    file.write(np.ascontiguousarray(block.T, dtype=np.float32).tobytes())
        except OSError as error:
            self.close()
            raise OutputError(
                f"cannot spool the decoded audio to {self.path}: {error.strerror}",
                hint="free some space, or set TMPDIR to a disk with room") from None
        except BaseException:
            self.close()
            raise
        self.frames = self.statistics.frames

    def blocks(self, block_frames: int = SPOOL_BLOCK_FRAMES) -> Iterator[np.ndarray]:
        """(channels, frames) float32 blocks, in order."""
        frame_bytes = 4 * self.channels
        with open(self.path, "rb") as file:
            while True:
                data = file.read(block_frames * frame_bytes)
                if not data:
                    return
                yield np.frombuffer(data, dtype=np.float32).reshape(-1, self.channels).T

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


# -- the separation of one mixture ------------------------------------------------------
def _derive_outputs(names: Sequence[str], sources: Sequence[str], selection: StemSelection,
                    stems: torch.Tensor, mix: torch.Tensor) -> dict[str, torch.Tensor]:
    """The requested output stems of one (stems, channels, n) block."""
    result = {}
    for name in names:
        if name in sources:
            result[name] = stems[sources.index(name)]
        else:  # the complement of selection.two_stems
            chosen = sources.index(selection.two_stems)
            if selection.other_method == "minus":
                result[name] = mix - stems[chosen]
            else:
                rest = torch.zeros_like(stems[chosen])
                for index in range(len(sources)):
                    if index != chosen:
                        rest += stems[index]
                result[name] = rest
    return result


def needed_network_stems(names: Sequence[str], model: LoadedModel,
                         selection: StemSelection) -> list[int]:
    """The indices of the networks' stems that the outputs ``names`` are made from: a stem
    itself; for a complement, the chosen stem (``--other-method minus``) or every other
    stem (the sum); for a residual stem, every network stem."""
    sources = list(model.sources)
    network_count = len(model.network_sources)
    needed: set[int] = set()

    def source(index: int) -> None:
        if index < network_count:
            needed.add(index)
        else:  # the residual: the mixture minus every network stem
            needed.update(range(network_count))

    for name in names:
        if name in sources:
            source(sources.index(name))
        else:
            chosen = sources.index(selection.two_stems)
            if selection.other_method == "minus":
                source(chosen)
            else:
                for index in range(len(sources)):
                    if index != chosen:
                        source(index)
    return sorted(needed)


def _run_engine(
    model: LoadedModel,
    blocks: Callable[[], Iterator[np.ndarray]],
    statistics: MixStatistics,
    settings: SeparationSettings,
    chunking: ChunkingRequest,
    names: Sequence[str],
    selection: StemSelection,
    emit: Callable[[str, np.ndarray], None],
    progress: Callable[[int, int], None] | None,
) -> None:
    """Separate the mixture that ``blocks()`` yields, calling emit(stem, block) in order."""
    separator = StreamingSeparator(
        networks=model.engine_networks(chunking), total_frames=statistics.frames,
        channels=model.audio_channels, stems=len(model.network_sources),
        sample_rate=model.sample_rate, statistics=statistics, settings=settings,
        device=model.device, progress=progress,
        needed_stems=needed_network_stems(names, model, selection) or None,
    )
    # The raw mixture not yet matched by emitted stems (for --other-method minus, and a
    # model's residual stem).
    pending_mix = torch.zeros(model.audio_channels, 0)

    def deliver(outputs: list[torch.Tensor]) -> None:
        nonlocal pending_mix
        for stems in outputs:
            count = stems.shape[-1]
            mix, pending_mix = pending_mix[..., :count], pending_mix[..., count:]
            stems = stems.cpu()
            if model.residual_stem is not None:
                stems = torch.cat([stems, (mix - stems.sum(dim=0))[None]])
            derived = _derive_outputs(names, list(model.sources), selection, stems.cpu(), mix)
            for name in names:
                emit(name, derived[name].numpy())

    for block in blocks():
        mix = torch.from_numpy(np.ascontiguousarray(block))
        pending_mix = torch.cat([pending_mix, mix], dim=-1)
        deliver(separator.push(mix))
    deliver(separator.finish())


def _spool_stream(stream: IO[bytes]) -> Path:
    """Copy a byte stream (stdin) to a temporary file, so that ffmpeg can seek in it."""
    handle, name = tempfile.mkstemp(prefix="stemsplit-stdin-")
    try:
        with os.fdopen(handle, "wb") as file:
            while chunk := stream.read(1 << 20):
                file.write(chunk)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


STDIN_TRACK_NAME = "stdin"


class Cancelled(Exception):
    """A background stage was told to stop (the batch is ending early)."""


class TrackJob:
    """One input through the three stages a batch overlaps across tracks.

    ``prepare`` (probe, decode, spool to disk: ffmpeg and I/O), ``separate`` (the networks;
    stems stream into their writers), ``commit`` (finish encoding, rename into place).
    ``close`` releases whatever a stage left (temporary files, open writers) and is safe to
    call at any point, several times. Construction only computes names and paths, so a
    batch can check every output path before any work starts.
    """

    def __init__(
        self,
        source: str | Path | IO[bytes],
        model: LoadedModel | Ensemble,
        *,
        settings: SeparationSettings = SeparationSettings(),
        chunking: ChunkingRequest = ChunkingRequest(),
        selection: StemSelection = StemSelection(),
        options: OutputOptions = OutputOptions(),
        relative_dir: str = "",
        name_as: str | None = None,
    ) -> None:
        self.stream = None if isinstance(source, (str, Path)) else source
        self.path = None if self.stream is not None else Path(source)
        self.label = "-" if self.stream is not None else str(source)
        self.model = model
        self.settings = settings
        self.chunking = chunking
        self.selection = selection
        self.options = options
        self.plan = None
        if isinstance(model, Ensemble):  # each model gives what it can (see ensemble.py)
            self.plan = model.plan(selection.two_stems, selection.other_method,
                                   selection.only)
            self.names = list(self.plan.names)
        else:
            self.names = selection.output_names(model.sources)
        self._ensemble_spool: StemSpool | None = None
        if options.stream is not None:
            if len(self.names) != 1:
                raise UsageError(f"-o - writes one stem, but this run has {len(self.names)} "
                                 f"({', '.join(self.names)})", hint="choose one with --stem NAME")
            self.destinations: dict[str, Path] = {}
        else:
            naming = Path(name_as or (STDIN_TRACK_NAME if self.stream is not None else source))
            self.destinations = output_paths(naming, self.names, model.name, options,
                                             relative_dir)
        self.started: float | None = None
        """When ``prepare`` began (``seconds_taken`` counts from there)."""
        self.info: audio.AudioInfo | None = None
        self.spool: _Spool | None = None
        self.warnings: list[str] = []
        self.writers: dict[str, audio.StemWriter] = {}
        self._stdin_copy: Path | None = None
        self._new_folders: list[Path] = []
        """Output folders this job created, removed again if it ends without output."""

    def skipped(self) -> TrackResult | None:
        """A 'skipped' result when every output exists already (and --force is off)."""
        if self.options.force:
            return None
        return skipped_result(self.label, self.destinations)

    def prepare(self, cancel: threading.Event | None = None) -> None:
        """Probe and decode the input into the spool, measuring the mix statistics."""
        self.started = time.monotonic()
        if self.stream is not None:
            self._stdin_copy = self.path = _spool_stream(self.stream)
        path = self.path
        assert path is not None
        if not path.exists():
            raise InputError(f"{path}: no such file")
        if path.is_dir():
            raise InputError(f"{path}: is a directory",
                             hint="use `stemsplit batch DIR` for folders")
        self.info = audio.probe(path)
        model = self.model
        decoder = audio.decode_blocks(path, model.sample_rate, model.audio_channels,
                                      info=self.info)
        with decoder:
            self.spool = _Spool(decoder, model.audio_channels, None, cancel)
        if decoder.nonfinite_samples:
            self.warnings.append(
                f"{self.label}: {decoder.nonfinite_samples} NaN/Inf samples replaced by 0")
        if self.spool.frames == 0:
            raise InputError(f"{self.label}: contains no audio samples")

    @property
    def duration_seconds(self) -> float | None:
        if self.spool is not None:
            return self.spool.frames / self.model.sample_rate
        return self.info.duration_seconds if self.info else None

    @property
    def output_sample_rate(self) -> int:
        assert self.info is not None
        return self.options.sample_rate or self.info.sample_rate

    def separate(self, observer: Observer) -> None:
        """Run the networks; the stems stream into one writer each (not yet committed)."""
        assert self.spool is not None
        model, options = self.model, self.options
        for name in self.names:
            target = options.stream if options.stream is not None else self.destinations[name]
            if isinstance(target, Path):
                self._make_folder(target.parent)
            self.writers[name] = audio.open_stem_writer(
                target, sample_rate=model.sample_rate,
                output_sample_rate=self.output_sample_rate, channels=model.audio_channels,
                format=options.format, bits=options.bits, float32=options.float32,
                mp3_bitrate=options.mp3_bitrate, clip_mode=options.clip_mode,
            )
        if isinstance(model, Ensemble):
            self._separate_ensemble(model, observer)
        else:
            _run_engine(
                model, self.spool.blocks, self.spool.statistics, self.settings,
                self.chunking, self.names, self.selection,
                lambda name, block: self.writers[name].write(block),
                lambda done, total: observer.track_progress(self.label, done, total),
            )
        self.spool.close()

    def _separate_ensemble(self, ensemble: Ensemble, observer: Observer) -> None:
        """Every model in turn over the spooled mixture; their stems spooled to a temporary
        folder (removed by ``close``) until the combine of each stem streams out."""
        spool = self.spool
        assert spool is not None and self.plan is not None
        self._ensemble_spool = StemSpool()
        count = len(ensemble.members)
        run_ensemble(
            ensemble, self.plan, spool=self._ensemble_spool, mixture=spool.path,
            run_member=lambda member, names, emit, progress: _run_engine(
                member, spool.blocks, spool.statistics, self.settings, self.chunking,
                names, StemSelection(), emit, progress),
            emit=lambda name, block: self.writers[name].write(block),
            progress=lambda done, total: observer.track_progress(self.label, done, total),
            stage=lambda index, name: observer.track_stage(
                self.label, f"model {index + 1}/{count} {name}"),
        )
        self._ensemble_spool.close()
        self._ensemble_spool = None

    def _make_folder(self, folder: Path) -> None:
        """Create ``folder`` and its missing parents, remembering which ones are new."""
        for _ in range(3):  # a parallel track may remove a parent it made, just then
            missing, parent = [], folder
            while not parent.exists() and parent != parent.parent:
                missing.append(parent)
                parent = parent.parent
            try:
                for new in reversed(missing):
                    try:
                        new.mkdir()
                    except FileExistsError:  # another track made it meanwhile: not ours
                        continue
                    self._new_folders.append(new)
                return
            except FileNotFoundError:
                continue
            except OSError as error:
                raise OutputError(f"cannot create {folder}: {error.strerror}") from None
        raise OutputError(f"cannot create {folder}")

    def commit(self) -> TrackResult:
        """Finish every stem and rename them into place."""
        committed = {name: writer.commit() for name, writer in self.writers.items()}
        self.writers = {}
        self._new_folders = []  # they hold the outputs now
        return TrackResult(
            input=self.label, status="done",
            outputs={name: p for name, p in committed.items() if p is not None},
            sample_rate=self.output_sample_rate, duration_seconds=self.duration_seconds,
            seconds_taken=time.monotonic() - (self.started or time.monotonic()),
            warnings=self.warnings,
        )

    def close(self) -> None:
        """Abort uncommitted writers and delete temporary files."""
        for writer in self.writers.values():
            writer.abort()
        self.writers = {}
        for folder in reversed(self._new_folders):  # deepest first; only if left empty
            try:
                folder.rmdir()
            except OSError:
                pass
        self._new_folders = []
        if self.spool is not None:
            self.spool.close()
        if self._ensemble_spool is not None:
            self._ensemble_spool.close()
            self._ensemble_spool = None
        if self._stdin_copy is not None:
            self._stdin_copy.unlink(missing_ok=True)
            self._stdin_copy = None


def separate_file(
    path: str | Path | IO[bytes],
    model: LoadedModel,
    *,
    settings: SeparationSettings = SeparationSettings(),
    chunking: ChunkingRequest = ChunkingRequest(),
    selection: StemSelection = StemSelection(),
    options: OutputOptions = OutputOptions(),
    observer: Observer | None = None,
    relative_dir: str = "",
    name_as: str | None = None,
) -> TrackResult:
    """Separate one file (or a byte stream such as stdin) into files or ``options.stream``.

    ``name_as`` replaces the file's name in output names (a stream is named "stdin").
    Errors the user can cause raise StemsplitError; no output or temporary file is left.
    """
    observer = observer or Observer()
    job = TrackJob(path, model, settings=settings, chunking=chunking,
                   selection=selection, options=options, relative_dir=relative_dir,
                   name_as=name_as)
    skipped = job.skipped()
    if skipped is not None:
        observer.track_finished(skipped)
        return skipped
    try:
        job.prepare()
        observer.track_started(job.label, job.duration_seconds)
        job.separate(observer)
        result = job.commit()
    finally:
        job.close()
    observer.track_finished(result)
    return result


def separate_array(
    mix: np.ndarray | torch.Tensor,
    sample_rate: int,
    model: LoadedModel,
    *,
    settings: SeparationSettings = SeparationSettings(),
    chunking: ChunkingRequest = ChunkingRequest(),
    selection: StemSelection = StemSelection(),
) -> dict[str, np.ndarray]:
    """Separate an in-memory (channels, time) or (time,) float array; returns stem arrays.

    The stems come back at ``sample_rate`` with the input's length; clip modes do not
    apply (the values are the network's).
    """
    array = mix.detach().cpu().numpy() if torch.is_tensor(mix) else np.asarray(mix)
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2:
        raise UsageError("an audio array must be (channels, time) or (time,)")
    if array.shape[0] > array.shape[1]:
        raise UsageError(f"audio array of shape {array.shape}: expected (channels, time)")
    array = audio.convert(array, sample_rate, model.sample_rate, model.audio_channels)
    statistics = MixStatistics()
    statistics.update(torch.from_numpy(array))
    if statistics.frames == 0:
        raise InputError("the audio array is empty")
    names = selection.output_names(model.sources)
    collected: dict[str, list[np.ndarray]] = {name: [] for name in names}
    _run_engine(
        model, lambda: iter([array]), statistics, settings, chunking, names,
        selection, lambda name, block: collected[name].append(block.copy()), None,
    )
    stems = {name: np.concatenate(blocks, axis=-1) for name, blocks in collected.items()}
    if sample_rate != model.sample_rate:
        stems = {name: audio.convert(stem, model.sample_rate, sample_rate, stem.shape[0])
                 for name, stem in stems.items()}
    return stems


def separate(
    source: str | Path | np.ndarray | torch.Tensor,
    *,
    sample_rate: int | None = None,
    model: str | LoadedModel | None = None,
    device: str | torch.device | None = "auto",
    shifts: int = 0,
    seed: int = 0,
    overlap: float | None = None,
    segment_seconds: float | None = None,
    batch_size: int = 1,
    two_stems: str | None = None,
    other_method: str = "add",
    stems: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    **output_options,
) -> dict[str, np.ndarray] | dict[str, Path]:
    """Separate a file or an array with a model (a name, or one from ``load_model``).

    With ``out_dir`` the stems are written as files (``output_options`` are those of
    ``OutputOptions``: filename, format, bits, float32, mp3_bitrate, clip_mode, sample_rate,
    force) and their paths returned; otherwise the stems are returned as float32 arrays
    (channels, time) at the input's rate (``sample_rate`` is required for arrays).
    """
    if not isinstance(model, LoadedModel):
        model = load_model(model, device=resolve_device(device))
    settings = SeparationSettings(shifts=shifts, seed=seed, batch_size=batch_size)
    chunking = ChunkingRequest(segment_seconds=segment_seconds, overlap=overlap)
    selection = StemSelection(two_stems=two_stems, other_method=other_method,
                              only=tuple(stems) if stems else None)
    if isinstance(source, (str, Path)):
        if out_dir is None:
            if output_options:
                raise UsageError(f"{', '.join(output_options)}: only with out_dir")
            path = Path(source)
            if not path.is_file():
                raise InputError(f"{path}: no such file")
            input_rate = audio.probe(path).sample_rate
            mix = audio.decode(path, model.sample_rate, model.audio_channels)
            stems_at_model_rate = separate_array(
                mix, model.sample_rate, model, settings=settings,
                chunking=chunking, selection=selection)
            return {name: audio.convert(stem, model.sample_rate, input_rate, stem.shape[0])
                    for name, stem in stems_at_model_rate.items()}
        options = OutputOptions(out_dir=Path(out_dir), **output_options)
        result = separate_file(source, model, settings=settings,
                               chunking=chunking, selection=selection,
                               options=options)
        return result.outputs
    if sample_rate is None:
        raise UsageError("separating an array needs its sample_rate")
    if out_dir is not None:
        raise UsageError("out_dir applies to file inputs; write the returned arrays yourself")
    return separate_array(source, sample_rate, model, settings=settings,
                          chunking=chunking, selection=selection)


__all__ = [
    "OutputOptions", "StemSelection", "TrackResult", "Observer", "StemsplitError",
    "separate", "separate_file", "separate_array", "load_model", "resolve_device",
]
