"""Many tracks with one model: input discovery, output planning, and an overlapped runner.

``collect_inputs`` turns folders, files, globs and ``-`` (paths on stdin) into ``BatchItem``s;
``plan_jobs`` builds every ``TrackJob`` and refuses output collisions before any work starts;
``run_jobs`` runs them as a three-stage pipeline: while the networks separate track *i*, a
background thread decodes track *i+1* and another finishes encoding track *i-1*, so the model
does not wait for ffmpeg. A failing track is reported and the batch goes on (unless
``fail_fast``). Every observer call happens on the calling thread.
"""

from __future__ import annotations

import glob
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable, Sequence

from . import audio
from .errors import StemsplitError, UsageError
from .pipeline import Observer, TrackJob, TrackResult

# Extensions that are never audio: not probed, silently passed over in folders.
NOT_AUDIO_EXTENSIONS = frozenset({
    ".txt", ".nfo", ".cue", ".log", ".m3u", ".m3u8", ".pls", ".json", ".xml", ".md", ".pdf",
    ".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".svg", ".ico",
    ".doc", ".docx", ".zip", ".rar", ".7z", ".gz", ".tar", ".exe", ".db", ".ini", ".url",
    ".lrc", ".sfv", ".md5", ".py", ".sh", ".part", ".spool", ".f32", ".accurip", ".toc",
})


@dataclass(frozen=True)
class BatchItem:
    """One input and the folder its outputs mirror (``{relpath}``)."""

    path: Path
    relative_dir: str = ""


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _has_audio(path: Path) -> bool:
    """For a file with an unfamiliar extension: does ffmpeg find an audio stream in it?"""
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
        if audio.is_audio_path(path) or _has_audio(path):
            parent = relative.parent
            yield BatchItem(path, "" if parent == Path(".") else str(parent))


def _relative_dir_of_file(path: Path) -> str:
    """Where a file named directly (not found in a folder) mirrors to: its folder relative
    to the working directory, or, outside it, its folder without the root."""
    parent = path.parent
    try:
        relative = parent.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        relative = Path(*parent.resolve().parts[1:])
    return "" if relative == Path(".") else str(relative)


def collect_inputs(arguments: Sequence[str], *, recursive: bool = True,
                   stdin: IO[str] | None = None) -> list[BatchItem]:
    """Folders (walked), files, quoted globs, and ``-`` (one path per line on ``stdin``)."""
    items: list[BatchItem] = []
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
            items.append(BatchItem(path, _relative_dir_of_file(path)))
        else:
            matches = sorted(glob.glob(argument, recursive=recursive))
            if not matches:
                raise UsageError(f"{argument}: no file matches")
            items += [BatchItem(Path(m), _relative_dir_of_file(Path(m)))
                      for m in matches if Path(m).is_file()]
    unique: dict[Path, BatchItem] = {}
    for item in items:
        unique.setdefault(item.path.resolve(), item)
    return list(unique.values())


def plan_jobs(items: Sequence[BatchItem], make_job: Callable[[BatchItem], TrackJob]
              ) -> list[TrackJob]:
    """Build every job and refuse two inputs writing the same output path."""
    jobs = [make_job(item) for item in items]
    owners: dict[Path, str] = {}
    for job in jobs:
        for destination in job.destinations.values():
            key = Path(os.path.abspath(destination))
            if key in owners:
                raise UsageError(
                    f"{owners[key]} and {job.label} would both write {destination}",
                    hint="use --filename with {relpath} or {trackext}, or separate them apart",
                )
            owners[key] = job.label
    return jobs


@dataclass
class BatchSummary:
    results: list[TrackResult]

    def count(self, status: str) -> int:
        return sum(result.status == status for result in self.results)

    @property
    def failed(self) -> list[TrackResult]:
        return [result for result in self.results if result.status == "failed"]


def _failed(job: TrackJob, error: StemsplitError) -> TrackResult:
    message = error.message + (f" ({error.hint})" if error.hint else "")
    return TrackResult(input=job.label, status="failed", error=message,
                       duration_seconds=job.duration_seconds)


def run_jobs(jobs: Sequence[TrackJob], observer: Observer | None = None, *,
             fail_fast: bool = False) -> BatchSummary:
    """Run the jobs with decoding and encoding overlapped with separation.

    Errors a user can cause (a bad file, a full disk) fail that track only; anything else
    (Ctrl-C, a bug) stops the batch after cleaning up every temporary file.
    """
    observer = observer or Observer()
    results: list[TrackResult] = []
    cancel = threading.Event()
    decoding: dict[int, Future] = {}
    encoding: list[tuple[TrackJob, Future]] = []

    def report(result: TrackResult) -> None:
        results.append(result)
        observer.track_finished(result)

    def collect_encoded(wait: bool) -> None:
        while encoding and (wait or encoding[0][1].done()):
            job, future = encoding.pop(0)
            try:
                report(future.result())
            except StemsplitError as error:
                report(_failed(job, error))
            finally:
                job.close()

    pending = [job for job in jobs]
    with ThreadPoolExecutor(1, thread_name_prefix="stemsplit-decode") as decoder, \
            ThreadPoolExecutor(1, thread_name_prefix="stemsplit-encode") as encoder:
        def start_decoding(index: int) -> None:
            while index < len(pending) and index not in decoding:
                job = pending[index]
                skipped = job.skipped()
                if skipped is None:
                    decoding[index] = decoder.submit(job.prepare, cancel)
                    return
                pending[index] = None  # type: ignore[call-overload]
                report(skipped)
                index += 1

        current: TrackJob | None = None
        try:
            start_decoding(0)
            for index, job in enumerate(pending):
                if job is None:
                    continue
                future = decoding.pop(index)
                try:
                    future.result()
                except StemsplitError as error:
                    job.close()
                    report(_failed(job, error))
                    if fail_fast:
                        break
                    start_decoding(index + 1)
                    continue
                start_decoding(index + 1)
                observer.track_started(job.label, job.duration_seconds)
                current = job
                try:
                    job.separate(observer)
                except StemsplitError as error:
                    job.close()
                    collect_encoded(wait=True)
                    report(_failed(job, error))
                    if fail_fast:
                        break
                    continue
                encoding.append((job, encoder.submit(job.commit)))
                current = None
                collect_encoded(wait=False)
                if fail_fast and any(r.status == "failed" for r in results):
                    break
            collect_encoded(wait=True)
        finally:
            cancel.set()
            if current is not None:  # interrupted mid-separation
                current.close()
            for index, future in decoding.items():
                try:
                    future.result()
                except Exception:  # a failed or cancelled prefetch: only clean up
                    pass
                finally:
                    if pending[index] is not None:
                        pending[index].close()
            for job, future in encoding:
                try:
                    future.result()
                except BaseException:  # the batch is ending on another error anyway
                    pass
                job.close()
    return BatchSummary(results)
