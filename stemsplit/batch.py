"""Many tracks with one model: an overlapped runner.

Input discovery (``collect_inputs``) and output planning (``plan_jobs``, which refuses two
inputs writing one file before any work starts) live in ``plan``, without torch, and are
re-exported here. ``run_jobs`` runs the jobs as a three-stage pipeline: while the networks
separate track *i*, a background thread decodes track *i+1* and another finishes encoding
track *i-1*, so the model does not wait for ffmpeg. A failing track is reported and the batch goes on (unless
``fail_fast``). Every observer call happens on the calling thread.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import IO, Mapping, Sequence

import torch

from .engine import SeparationSettings
from .ensemble import Ensemble
from .errors import StemsplitError, UsageError
from .families.base import ChunkingRequest
from .pipeline import Cancelled, Observer, TrackJob, TrackResult
from .plan import OutputOptions
from .stem_plan import StemSelection
from .temporaries import sweep_temporary_folder
from .plan import (NOT_AUDIO_EXTENSIONS, BatchItem, BatchSummary,  # noqa: F401 (re-exported)
                   collect_inputs, failed_result, plan_jobs)

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

    def track_stage(self, track: str, stage: str) -> None:
        self.updates.put((track, stage))


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
    return failed_result(job.label, error, job.duration_seconds)


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
    sweep_temporary_folder()  # what killed runs left in TMPDIR
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
            update = updates.get()
            if len(update) == 2:  # (track, stage)
                observer.track_stage(*update)
            else:
                observer.track_progress(*update)

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


def separate_items(items: Sequence[BatchItem | str | Path], model: Ensemble, *,
                   settings: SeparationSettings, chunking: ChunkingRequest,
                   selection: StemSelection, options: OutputOptions,
                   observer: Observer | None = None, parallel: int = 0,
                   fail_fast: bool = False, stdin: IO[bytes] | None = None,
                   probed: Mapping[Path, object] | None = None) -> BatchSummary:
    """Separate every input with ``model`` (loaded once): a path, a ``BatchItem``, or "-"
    (``stdin``). Every output path is checked before any work (two inputs writing one file
    are a UsageError); tracks whose outputs exist are skipped unless ``options.force``;
    ``parallel`` tracks at once (0: ``choose_parallel``'s choice). ``probed``: what
    ``preflight.probe_inputs`` found for the inputs (not probed again)."""
    networks = model.engine_networks(chunking)  # a bad --segment or --overlap: before any work

    def make_job(item: BatchItem | str | Path) -> TrackJob:
        if not isinstance(item, BatchItem):
            item = BatchItem(Path(item))
        source = stdin if str(item.path) == "-" and stdin is not None else item.path
        return TrackJob(source, model, settings=settings, chunking=chunking,
                        selection=selection, options=options, relative_dir=item.relative_dir,
                        probed=(probed or {}).get(item.path))

    jobs = plan_jobs(items, make_job)
    threads = torch.get_num_threads()
    at_once = choose_parallel(
        parallel, tracks=sum(job.skipped() is None for job in jobs), threads=threads,
        device_type=model.device.type, torch_networks=not model.runs_outside_torch,
        memory_bytes=available_memory_bytes(),
        per_track_bytes=track_memory_bytes(max(network.segment_length for network in networks),
                                           settings.batch_size))
    batch_started = getattr(observer, "batch_started", None)
    if batch_started is not None:
        batch_started(len(jobs))
    return run_jobs(jobs, observer, fail_fast=fail_fast, parallel=at_once, threads=threads)
