"""One track (or a list of tracks) from input to written stems.

decode (ffmpeg) -> spool + mix statistics -> every model of the ``Ensemble`` in turn
(engine, streaming; one model is an ensemble of one) -> one writer per stem. Memory does
not grow with the track: the decoded mixture is spooled to a temporary float32 file on disk
during the statistics pass, then streamed through the engine, whose finished samples go
straight to the encoders (through the ensemble's combine). Every output is written to a
temporary file and renamed into place only when all stems of the track are complete.

The Python API is ``separator.Separator`` (and ``stemsplit.separate``) on top of this.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from . import audio
from .engine import MixStatistics, SeparationSettings, StreamingSeparator, measure_track
from .ensemble import Ensemble, as_ensemble, run_ensemble
from .errors import InputError, OutputError, StemsplitError, UsageError
from .families.base import ChunkingRequest, LoadedModel
from .plan import OutputOptions, TrackResult, output_paths, skipped_result
from .spool import ArrayMixture, MixtureSpool, StemSpool
from .preflight import probe_path
from .stem_plan import StemPlan, StemSelection
from .temporaries import owned_name, sweep_temporary_folder

class Observer:
    """Progress reports from the pipeline; the CLI draws them. All methods are optional."""

    def track_started(self, track: str, duration_seconds: float | None) -> None: ...

    def track_progress(self, track: str, done: int, total: int) -> None: ...

    def track_stage(self, track: str, stage: str) -> None:
        """The track moved on to another stage (an ensemble's next model: "model 2/3 X")."""

    def track_finished(self, result: TrackResult) -> None: ...


# -- one model over one mixture -----------------------------------------------------------
def _network_stem_indices(model: LoadedModel, names: Sequence[str]) -> list[int]:
    """The indices of the networks' stems that the model's stems ``names`` are made of: a
    stem itself, or for a residual stem (the mixture minus the others) every network stem."""
    sources = list(model.sources)
    network_count = len(model.network_sources)
    needed: set[int] = set()
    for name in names:
        index = sources.index(name)
        needed.update([index] if index < network_count else range(network_count))
    return sorted(needed)


def _run_engine(
    model: LoadedModel,
    blocks: Callable[[], Iterator[np.ndarray]],
    statistics: MixStatistics,
    settings: SeparationSettings,
    chunking: ChunkingRequest,
    names: Sequence[str],
    emit: Callable[[str, np.ndarray], None],
    progress: Callable[[int, int], None] | None,
) -> None:
    """Separate the mixture that ``blocks()`` yields with one model, calling emit(stem,
    block) in order for each of ``names`` (the model's own stems)."""
    # Networks that need a whole-track statistic first read the mixture once more for it.
    networks = measure_track(model.engine_networks(chunking),
                             (torch.from_numpy(block) for block in blocks()),
                             statistics.frames, model.audio_channels, statistics, model.device)
    separator = StreamingSeparator(
        networks=networks, total_frames=statistics.frames,
        channels=model.audio_channels, stems=len(model.network_sources),
        sample_rate=model.sample_rate, statistics=statistics, settings=settings,
        device=model.device, progress=progress,
        needed_stems=_network_stem_indices(model, names) or None,
    )
    sources = list(model.sources)
    # The raw mixture not yet matched by emitted stems (for a model's residual stem).
    pending_mix = torch.zeros(model.audio_channels, 0)

    def deliver(outputs: list[torch.Tensor]) -> None:
        nonlocal pending_mix
        for stems in outputs:
            count = stems.shape[-1]
            mix, pending_mix = pending_mix[..., :count], pending_mix[..., count:]
            stems = stems.cpu()
            if model.residual_stem is not None:
                stems = torch.cat([stems, (mix - stems.sum(dim=0))[None]])
            for name in names:
                emit(name, stems[sources.index(name)].numpy())

    for block in blocks():
        mix = torch.from_numpy(np.ascontiguousarray(block))
        if model.residual_stem is not None:
            pending_mix = torch.cat([pending_mix, mix], dim=-1)
        deliver(separator.push(mix))
    deliver(separator.finish())


def _separate_mixture(ensemble: Ensemble, plan: StemPlan, mixture: MixtureSpool | ArrayMixture,
                      statistics: MixStatistics, settings: SeparationSettings,
                      chunking: ChunkingRequest, emit: Callable[[str, np.ndarray], None],
                      progress: Callable[[int, int], None] | None = None,
                      stage: Callable[[int, str], None] | None = None) -> None:
    """Every model of ``ensemble`` over ``mixture``; the run's stems (``plan.names``) go to
    ``emit`` in order. The models' stems wait in a temporary folder only where several
    models give one stem."""
    spool = StemSpool() if plan.combines else None
    try:
        run_ensemble(
            ensemble, plan, spool=spool, mixture=mixture, emit=emit, progress=progress,
            stage=stage,
            run_member=lambda member, names, member_emit, member_progress: _run_engine(
                member, mixture.blocks, statistics, settings, chunking, names, member_emit,
                member_progress))
    finally:
        if spool is not None:
            spool.close()


def _observed(blocks: Iterable[np.ndarray], statistics: MixStatistics,
              cancel: threading.Event | None) -> Iterator[np.ndarray]:
    """``blocks`` as they are, measured into ``statistics`` on the way; Cancelled once
    ``cancel`` is set."""
    for block in blocks:
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        statistics.update(torch.from_numpy(block))
        yield block


def _spool_stream(stream: IO[bytes]) -> Path:
    """Copy a byte stream (stdin) to a temporary file, so that ffmpeg can seek in it."""
    handle, name = tempfile.mkstemp(prefix=owned_name("stemsplit-stdin-"))
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
        model: Ensemble | LoadedModel,
        *,
        settings: SeparationSettings = SeparationSettings(),
        chunking: ChunkingRequest = ChunkingRequest(),
        selection: StemSelection = StemSelection(),
        options: OutputOptions = OutputOptions(),
        relative_dir: str = "",
        name_as: str | None = None,
        probed: "audio.AudioInfo | StemsplitError | None" = None,
    ) -> None:
        """``probed``: what ``preflight.probe_inputs`` found for this input (its AudioInfo,
        or the error it will fail with), so that ``prepare`` does not probe it again."""
        self.stream = None if isinstance(source, (str, Path)) else source
        self._probed = probed
        self.path = None if self.stream is not None else Path(source)
        self.label = "-" if self.stream is not None else str(source)
        self.model = model = as_ensemble(model)
        self.settings = settings
        self.chunking = chunking
        self.selection = selection
        self.options = options
        self.plan = model.plan(selection)  # each model gives what it can (see stem_plan.py)
        self.names = list(self.plan.names)
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
        self.statistics = MixStatistics()
        self.spool: MixtureSpool | None = None
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
        if isinstance(self._probed, StemsplitError):
            raise self._probed
        self.info = self._probed if isinstance(self._probed, audio.AudioInfo) \
            else probe_path(path)
        model = self.model
        decoder = audio.decode_blocks(path, model.sample_rate, model.audio_channels,
                                      info=self.info)
        with decoder:
            self.spool = MixtureSpool(_observed(decoder, self.statistics, cancel),
                                      model.audio_channels)
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
        count = len(model.members)
        _separate_mixture(
            model, self.plan, self.spool, self.statistics, self.settings, self.chunking,
            emit=lambda name, block: self.writers[name].write(block),
            progress=lambda done, total: observer.track_progress(self.label, done, total),
            stage=lambda index, name: observer.track_stage(
                self.label, f"model {index + 1}/{count} {name}"))
        self.spool.close()

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
        if self._stdin_copy is not None:
            self._stdin_copy.unlink(missing_ok=True)
            self._stdin_copy = None


def separate_file(
    path: str | Path | IO[bytes],
    model: Ensemble | LoadedModel,
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
    sweep_temporary_folder()  # what killed runs left in TMPDIR
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


def as_audio_array(mix: np.ndarray | torch.Tensor) -> np.ndarray:
    """A (channels, time) or (time,) float array or tensor as (channels, time) float32."""
    array = mix.detach().cpu().numpy() if torch.is_tensor(mix) else np.asarray(mix)
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2:
        raise UsageError("an audio array must be (channels, time) or (time,)")
    if array.shape[0] > array.shape[1]:
        raise UsageError(f"audio array of shape {array.shape}: expected (channels, time)")
    return array


def separate_array(
    mix: np.ndarray | torch.Tensor,
    sample_rate: int,
    model: Ensemble | LoadedModel,
    *,
    settings: SeparationSettings = SeparationSettings(),
    chunking: ChunkingRequest = ChunkingRequest(),
    selection: StemSelection = StemSelection(),
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Separate an in-memory (channels, time) or (time,) float array; returns stem arrays.

    The stems come back as float32 numpy arrays at ``sample_rate`` with the input's length;
    clip modes do not apply (the values are the network's). ``progress(done, total)`` is
    called as the models advance.
    """
    model = as_ensemble(model)
    array = audio.convert(as_audio_array(mix), sample_rate, model.sample_rate,
                          model.audio_channels)
    statistics = MixStatistics()
    statistics.update(torch.from_numpy(array))
    if statistics.frames == 0:
        raise InputError("the audio array is empty")
    plan = model.plan(selection)
    collected: dict[str, list[np.ndarray]] = {name: [] for name in plan.names}
    _separate_mixture(model, plan, ArrayMixture(array), statistics, settings, chunking,
                      emit=lambda name, block: collected[name].append(block.copy()),
                      progress=progress)
    stems = {name: np.concatenate(blocks, axis=-1) for name, blocks in collected.items()}
    if sample_rate != model.sample_rate:
        stems = {name: audio.convert(stem, model.sample_rate, sample_rate, stem.shape[0])
                 for name, stem in stems.items()}
    return stems


__all__ = [
    "Observer", "TrackJob", "Cancelled", "separate_file", "separate_array", "as_audio_array",
]
