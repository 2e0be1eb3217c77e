"""What a run reads and writes, worked out without torch: the inputs, each track's output
paths, and which tracks are done already.

``collect_inputs`` turns folders, files, globs and ``-`` (paths on stdin) into
``BatchItem``s; ``output_paths`` names each stem's file from the ``OutputOptions`` and the
stems a ``StemSelection`` keeps; ``plan_jobs`` refuses two inputs that would write the same
file. The command line uses these before it imports torch or loads a model, so a rerun of a
finished batch reports every track skipped in a fraction of a second
(``finished_tracks``); ``pipeline`` and ``batch`` use them for the real run, so both name
the same files.

Standard library only: ``audio`` (numpy) is imported only to probe a file whose extension
says nothing.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, Iterable, Sequence, TypeVar, Union

from .audio.formats import (AUDIO_EXTENSIONS, NOT_AUDIO_EXTENSIONS,  # noqa: F401 (re-exported)
                            OUTPUT_FORMATS, is_audio_path)
from .errors import StemsplitError, UsageError
from .stem_plan import StemSelection

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

SKIPPED_REASON = "outputs exist (use --force to redo)"


# -- inputs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchItem:
    """One input and the folder its outputs mirror (``{relpath}``)."""

    path: Path
    relative_dir: str = ""


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _has_audio(path: Path) -> bool:
    """For a file with an unfamiliar extension: does ffmpeg find an audio stream in it?"""
    from . import audio

    try:
        audio.probe(path)
    except StemsplitError:
        return False
    return True


def _walk(folder: Path, recursive: bool) -> Iterable[BatchItem]:
    pattern = "**/*" if recursive else "*"
    for path in sorted(folder.glob(pattern)):
        relative = path.relative_to(folder)
        if _is_hidden(relative) or not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix in NOT_AUDIO_EXTENSIONS:
            continue
        if is_audio_path(path) or _has_audio(path):
            parent = relative.parent
            yield BatchItem(path, "" if parent == Path(".") else str(parent))


def _relative_dir(path: Path, root: Path) -> str:
    relative = path.parent.resolve().relative_to(root)
    return "" if relative == Path(".") else str(relative)


def _mirrored_from(paths: Sequence[Path]) -> Path:
    """The folder that files named directly (or matched by one glob) mirror from: the working
    directory when they all lie inside it, else their common folder (`/music/a/x.wav` and
    `/music/b/y.wav` give `a/` and `b/`, not `music/a/`)."""
    cwd = Path.cwd().resolve()
    parents = [path.parent.resolve() for path in paths]
    if all(parent == cwd or cwd in parent.parents for parent in parents):
        return cwd
    return Path(os.path.commonpath([str(parent) for parent in parents]))


def collect_inputs(arguments: Sequence[str], *, recursive: bool = True,
                   stdin: IO[str] | None = None) -> list[BatchItem]:
    """Folders (walked), files, quoted globs, and ``-`` (one path per line on ``stdin``)."""
    items: list[BatchItem] = []
    named: list[int] = []  # files named directly: mirrored from their common folder
    for argument in arguments:
        if argument == "-":
            if stdin is None:
                raise UsageError("'-' reads paths from stdin, but there is none")
            lines = [line.rstrip("\n") for line in stdin]
            items += collect_inputs([line for line in lines if line.strip()],
                                    recursive=recursive)
            continue
        path = Path(argument)
        if path.is_dir():
            found = list(_walk(path, recursive))
            items += found
        elif path.exists() or not glob.has_magic(argument):
            # A missing file stays in the list: it fails alone, with its own message.
            named.append(len(items))
            items.append(BatchItem(path))
        else:
            matches = sorted(glob.glob(argument, recursive=recursive))
            if not matches:
                raise UsageError(f"{argument}: no file matches")
            files = [Path(m) for m in matches if Path(m).is_file()]
            root = _mirrored_from(files) if files else Path.cwd()
            items += [BatchItem(path, _relative_dir(path, root)) for path in files]
    if named:
        root = _mirrored_from([items[index].path for index in named])
        for index in named:
            items[index] = BatchItem(items[index].path, _relative_dir(items[index].path, root))
    unique: dict[Path, BatchItem] = {}
    for item in items:
        unique.setdefault(item.path.resolve(), item)
    return list(unique.values())


# -- outputs -----------------------------------------------------------------------------
BATCH_FILENAME = "{relpath}/{track}/{stem}.{ext}"
"""The file name template of a batch: the input's folder tree mirrored under the model's."""


@dataclass(frozen=True)
class OutputOptions:
    """Where and how stems are written."""

    out_dir: Path = Path("separated")
    filename: str = "{track}/{stem}.{ext}"
    format: str = "wav"
    bits: int = 16
    float32: bool = False
    mp3_bitrate: int = 320
    clip_mode: str = "rescale"
    sample_rate: int | None = None
    """Output rate; None = the input's own rate."""
    force: bool = False
    """Rewrite a track whose outputs all exist already (otherwise it is skipped)."""
    stream: IO[bytes] | None = None
    """Write the single selected stem to this binary stream (``-o -``) instead of files."""

    def __post_init__(self) -> None:
        if self.format not in OUTPUT_FORMATS:
            raise UsageError(f"unknown output format '{self.format}'",
                             hint=f"choose one of {', '.join(OUTPUT_FORMATS)}")
        if self.bits not in (16, 24):
            raise UsageError("bits must be 16 or 24")
        if self.clip_mode not in ("rescale", "clamp", "tanh", "none"):
            raise UsageError(f"unknown clip mode '{self.clip_mode}'")
        if self.float32 and self.format != "wav":
            raise UsageError("--float32 applies to wav output only")


@dataclass
class TrackResult:
    """What happened to one input."""

    input: str
    status: str
    """'done', 'skipped' or 'failed'."""
    outputs: dict[str, Path] = field(default_factory=dict)
    stems: "dict[str, np.ndarray] | None" = None
    sample_rate: int | None = None
    duration_seconds: float | None = None
    seconds_taken: float = 0.0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


def skipped_result(label: str, destinations: dict[str, Path]) -> TrackResult | None:
    """A 'skipped' result when every one of ``destinations`` exists as a file."""
    if destinations and all(path.is_file() for path in destinations.values()):
        return TrackResult(input=label, status="skipped", outputs=destinations,
                           error=SKIPPED_REASON)
    return None


def _track_name(path: Path) -> str:
    return path.name.rsplit(".", 1)[0] if "." in path.name else path.name


_WINDOWS_FORBIDDEN = str.maketrans(dict.fromkeys('<>:"|?*' + "".join(map(chr, range(32))), "_"))


def _name_part(text: str) -> str:
    """A model's, track's or stem's name as part of a file name here: on Windows the
    characters it forbids become ``_`` (``vocals:lead`` would write an NTFS stream)."""
    return text.translate(_WINDOWS_FORBIDDEN) if os.name == "nt" else text


def output_paths(track: Path, names: Sequence[str], model_name: str,
                 options: OutputOptions, relative_dir: str = "") -> dict[str, Path]:
    """Where each stem of ``track`` goes: <out_dir>/<model>/<filename template>.

    ``relative_dir`` is the track's folder relative to a batch root (``{relpath}``).
    """
    ext = options.format
    fields = {
        "relpath": relative_dir or ".",
        "track": _name_part(_track_name(track)),
        "trackext": track.name.rsplit(".", 1)[-1] if "." in track.name else "",
        "ext": ext,
        "model": _name_part(model_name),
    }
    paths = {}
    for name in names:
        try:
            relative = options.filename.format(stem=_name_part(name), **fields)
        except (KeyError, IndexError, ValueError) as error:
            raise UsageError(f"--filename '{options.filename}': bad template ({error})",
                             hint="fields: {track} {trackext} {stem} {ext} {model} {relpath}")
        paths[name] = options.out_dir / _name_part(model_name.replace("/", "_")) / relative
    if len(set(paths.values())) != len(paths):
        raise UsageError(f"--filename '{options.filename}' gives several stems the same path",
                         hint="include {stem} in the template")
    return paths


# -- a whole run -------------------------------------------------------------------------
Job = TypeVar("Job")


def plan_jobs(items: Sequence[BatchItem], make_job: Callable[[BatchItem], Job]) -> list[Job]:
    """Build every job (anything with ``destinations`` and ``label``) and refuse two inputs
    writing the same output path."""
    jobs = [make_job(item) for item in items]
    owners: dict[Path, str] = {}
    for job in jobs:
        for destination in job.destinations.values():  # type: ignore[attr-defined]
            key = Path(os.path.abspath(destination))
            if key in owners:
                raise UsageError(
                    f"{owners[key]} and {job.label} would both write {destination}",  # type: ignore[attr-defined]
                    hint="use --filename with {relpath} or {trackext}, or separate them apart",
                )
            owners[key] = job.label  # type: ignore[attr-defined]
    return jobs


@dataclass
class BatchSummary:
    results: list[TrackResult]

    def count(self, status: str) -> int:
        return sum(result.status == status for result in self.results)

    @property
    def failed(self) -> list[TrackResult]:
        return [result for result in self.results if result.status == "failed"]


@dataclass(frozen=True)
class _PlannedTrack:
    label: str
    destinations: dict[str, Path]


def failed_result(label: str, error: "StemsplitError",
                  duration_seconds: float | None = None) -> TrackResult:
    """A 'failed' result: the error's message, and its hint in brackets."""
    message = error.message + (f" ({error.hint})" if error.hint else "")
    return TrackResult(input=label, status="failed", error=message,
                       duration_seconds=duration_seconds)


def finished_tracks(items: Sequence[BatchItem | PathLike], *, model_name: str,
                    member_sources: Sequence[Sequence[str]], selection: StemSelection,
                    options: OutputOptions) -> list[TrackResult] | None:
    """Each input's 'skipped' result, when the outputs of every one of them exist already;
    None when something is left to do (or cannot be decided from names alone, see
    ``track_outcomes``)."""
    results = track_outcomes(items, model_name=model_name, member_sources=member_sources,
                             selection=selection, options=options)
    if not results or any(result is None for result in results):
        return None
    return results  # type: ignore[return-value]


def track_outcomes(items: Sequence[BatchItem | PathLike], *, model_name: str,
                   member_sources: Sequence[Sequence[str]], selection: StemSelection,
                   options: OutputOptions) -> list[TrackResult | None] | None:
    """Per input, its 'skipped' result when its outputs exist already, else None; None for
    the whole list when that cannot be decided from names alone (stdin, a stream output,
    ``force``, two inputs writing one file). ``model_name`` and ``member_sources`` are what
    the loaded model (or ensemble) will call itself and the stems of each of its models
    (the registry says so for published models)."""
    if options.force or options.stream is not None:
        return None
    names = selection.plan(member_sources).names
    planned = []
    for item in items:
        if not isinstance(item, BatchItem):
            item = BatchItem(Path(item))
        if str(item.path) == "-":
            return None
        destinations = output_paths(item.path, names, model_name, options, item.relative_dir)
        planned.append(_PlannedTrack(str(item.path), destinations))
    try:
        plan_jobs(planned, lambda track: track)  # type: ignore[arg-type]
    except UsageError:
        return None  # the real run refuses it, after loading the model, as ever
    return [skipped_result(track.label, track.destinations) for track in planned]


def output_folders(items: Sequence[BatchItem], *, model_name: str,
                   member_sources: Sequence[Sequence[str]], selection: StemSelection,
                   options: OutputOptions) -> dict[str, list[Path]]:
    """Each input's output folders (by its path as given): where its writers leave their
    temporaries. A UsageError, as ``plan_jobs`` gives, when two inputs would write one
    file."""
    names = selection.plan(member_sources).names
    planned = [_PlannedTrack(str(item.path), output_paths(item.path, names, model_name, options,
                                                          item.relative_dir))
               for item in items]
    plan_jobs(planned, lambda track: track)  # type: ignore[arg-type]
    return {track.label: sorted({path.parent for path in track.destinations.values()})
            for track in planned}
