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
import queue
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable, Sequence

import torch

from . import audio
from .errors import StemsplitError, UsageError
from .pipeline import Cancelled, Observer, TrackJob, TrackResult

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


# -- running: a pipeline of decode -> separate -> encode, several tracks at once ------------
MAX_AUTO_PARALLEL = 4
"""The most tracks ``choose_parallel`` separates at once on its own (more only when asked)."""

BYTES_PER_SEGMENT_FRAME = 4096
"""Memory one more track in flight needs, per frame of the segment its networks see at once
(activations, the chunk's buffers): the default model, 343,980-frame segments, measured
+1.06 GiB for a second track on CPU; rounded up. Models with longer segments need more."""


def track_memory_bytes(segment_frames: int, batch_size: int = 1) -> int:
    """What one more track separated at the same time will add to the peak memory."""
    return segment_frames * max(1, batch_size) * BYTES_PER_SEGMENT_FRAME


def available_memory_bytes() -> int | None:
    """Memory the system can give without swapping (Linux MemAvailable), if known."""
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def choose_parallel(requested: int, *, tracks: int, threads: int, device_type: str,
                    torch_networks: bool, memory_bytes: int | None = None,
                    per_track_bytes: int = 0) -> int:
    """How many tracks to separate at the same time.

    ``requested`` > 0 is obeyed (up to the number of tracks). Otherwise (auto): one on a GPU
    (the device is the bottleneck) or for networks that run outside torch (their runtime
    keeps its own thread pool); on a CPU, as many as there are threads, at most
    ``MAX_AUTO_PARALLEL`` and at most what ``memory_bytes`` (available) holds with
    ``per_track_bytes`` for every track after the first. Each track then runs
    its networks on threads / parallel threads: two tracks on one thread each keep two cores
    busier than one track on two threads (10 x 30 s of the default model on 2 cores: 120 s
    against 126 s), since no operation's thread scaling is lost.
    """
    if requested < 0:
        raise UsageError("--parallel must be 0 (auto) or a positive number of tracks")
    tracks = max(1, tracks)
    if requested > 0:
        return min(requested, tracks)
    if device_type != "cpu" or not torch_networks or threads < 2:
        return 1
    by_memory = MAX_AUTO_PARALLEL
    if memory_bytes is not None and per_track_bytes > 0:
        by_memory = 1 + memory_bytes // per_track_bytes
    return max(1, min(tracks, threads, MAX_AUTO_PARALLEL, by_memory))


class _ThreadShare:
    """Splits a budget of CPU threads between the tracks being separated at the moment.

    torch's thread count is per calling thread, so each separation worker sets its own
    (``apply``, before the track and after each segment): with two tracks in flight on two
    threads each gets one, and a track left alone at the end of a batch gets both back.
    """

    def __init__(self, total: int) -> None:
        self.total = max(1, total)
        self.active = 0
        self._lock = threading.Lock()
        self._local = threading.local()

    def enter(self) -> None:
        with self._lock:
            self.active += 1

    def leave(self) -> None:
        with self._lock:
            self.active -= 1

    def apply(self) -> None:
        share = max(1, self.total // max(1, self.active))
        if getattr(self._local, "threads", None) != share:
            torch.set_num_threads(share)
            self._local.threads = share


_worker = threading.local()
"""In a separation worker: ``cancel``, the event that stops its track."""


def _cancellation_point(module: torch.nn.Module, args: tuple) -> None:
    """A forward pre-hook on every module: a worker stops within one layer of a cancel
    (Ctrl-C, --fail-fast), not at the end of a segment that may take seconds."""
    cancel = getattr(_worker, "cancel", None)
    if cancel is not None and cancel.is_set():
        raise Cancelled()


class _WorkerObserver(Observer):
    """What a separation worker reports: progress goes to the main thread through a queue."""

    def __init__(self, share: _ThreadShare, cancel: threading.Event,
                 updates: "queue.SimpleQueue[tuple[str, int, int]]") -> None:
        self.share, self.cancel, self.updates = share, cancel, updates

    def track_progress(self, track: str, done: int, total: int) -> None:
        if self.cancel.is_set():  # between segments: networks outside torch have no hooks
            raise Cancelled()
        self.share.apply()
        self.updates.put((track, done, total))


def _separate_in_worker(job: TrackJob, observer: _WorkerObserver) -> None:
    _worker.cancel = observer.cancel
    observer.share.enter()
    try:
        observer.share.apply()
        job.separate(observer)
    finally:
        observer.share.leave()
        _worker.cancel = None


def _failed(job: TrackJob, error: StemsplitError) -> TrackResult:
    message = error.message + (f" ({error.hint})" if error.hint else "")
    return TrackResult(input=job.label, status="failed", error=message,
                       duration_seconds=job.duration_seconds)


def run_jobs(jobs: Sequence[TrackJob], observer: Observer | None = None, *,
             fail_fast: bool = False, parallel: int = 1,
             threads: int | None = None) -> BatchSummary:
    """Run the jobs: ``parallel`` tracks separate at once, decoding and encoding overlapped.

    While the networks separate, background threads decode the next tracks (up to
    ``parallel`` ahead) and finish encoding the previous ones, so the model never waits for
    ffmpeg. ``threads`` (default: torch's current count) is shared between the tracks in
    flight. Results are reported as tracks finish. Errors a user can cause (a bad file, a
    full disk) fail that track only, or stop the batch with ``fail_fast``; anything else
    (Ctrl-C, a bug) stops it. Every temporary file is removed on the way out, and every
    observer call happens on the calling thread.
    """
    observer = observer or Observer()
    parallel = max(1, parallel)
    share = _ThreadShare(threads if threads is not None else torch.get_num_threads())
    cancel = threading.Event()
    updates: queue.SimpleQueue[tuple[str, int, int]] = queue.SimpleQueue()
    results: list[TrackResult] = []
    waiting = deque(jobs)
    decoded: list[TrackJob] = []  # waiting for a separation worker; started in input order
    order = {id(job): index for index, job in enumerate(jobs)}
    decoding: dict[Future, TrackJob] = {}
    separating: dict[Future, TrackJob] = {}
    encoding: dict[Future, TrackJob] = {}

    def report(result: TrackResult) -> None:
        results.append(result)
        observer.track_finished(result)

    def failed(job: TrackJob, error: StemsplitError) -> None:
        job.close()
        report(_failed(job, error))
        if fail_fast:
            cancel.set()  # stop decodes and separations; commits under way still finish

    def show_progress() -> None:
        while not updates.empty():
            observer.track_progress(*updates.get())

    def finished(future: Future) -> None:
        if future in decoding:
            job = decoding.pop(future)
            try:
                future.result()
                decoded.append(job)
                decoded.sort(key=lambda waiting_job: order[id(waiting_job)])
            except StemsplitError as error:
                failed(job, error)
            except Cancelled:
                job.close()
        elif future in separating:
            job = separating.pop(future)
            show_progress()
            try:
                future.result()
                encoding[encoders.submit(job.commit)] = job
            except StemsplitError as error:
                failed(job, error)
            except Cancelled:
                job.close()
        else:
            job = encoding.pop(future)
            try:
                report(future.result())
            except StemsplitError as error:
                failed(job, error)
            finally:
                job.close()

    hook = torch.nn.modules.module.register_module_forward_pre_hook(_cancellation_point)
    pools = [ThreadPoolExecutor(parallel, thread_name_prefix=f"stemsplit-{stage}")
             for stage in ("decode", "separate", "encode")]
    decoders, separators, encoders = pools
    try:
        while True:
            while not cancel.is_set() and waiting and len(decoding) + len(decoded) < parallel:
                job = waiting.popleft()
                skipped = job.skipped()
                if skipped is not None:
                    report(skipped)
                else:
                    decoding[decoders.submit(job.prepare, cancel)] = job
            while not cancel.is_set() and decoded and len(separating) < parallel:
                job = decoded.pop(0)
                observer.track_started(job.label, job.duration_seconds)
                worker = _WorkerObserver(share, cancel, updates)
                separating[separators.submit(_separate_in_worker, job, worker)] = job
            outstanding = [*decoding, *separating, *encoding]
            if not outstanding:
                break
            done, _ = wait(outstanding, timeout=0.1, return_when=FIRST_COMPLETED)
            show_progress()
            for future in done:
                finished(future)
    finally:
        cancel.set()
        for pool in pools:
            pool.shutdown(wait=True)
        hook.remove()
        for job in [*decoding.values(), *decoded, *separating.values(), *encoding.values()]:
            job.close()
    return BatchSummary(results)
