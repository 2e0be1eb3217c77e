"""The driver's side of ``stemsplit batch --ray``: join (or start) the cluster, run the
files, and leave nothing half-written behind on this machine.

``run`` connects (``connection.connected``), runs ``dataset.run_batch`` and disconnects. The
run's workers end with it; if the run did not finish (Ctrl-C, the cluster failed) or a
file's worker died, the folders of the tracks that did not finish are swept of the
temporaries dead workers left (and removed when that leaves them empty) (only files whose owner is gone, see ``stemsplit.temporaries``:
on this machine, a dead process's; another machine's only once a day old). So a ``--ray
local`` run leaves nothing; on a joined cluster another node's leftovers go when the next
track is written into that folder on that node, or after a day.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..errors import ClusterError
from ..plan import BatchItem, BatchSummary, TrackResult
from .connection import connected
from .dataset import ClusterResources, run_batch
from .worker import SeparationWorker, WorkerSpec


def run(address: str, items: Sequence[BatchItem], spec: WorkerSpec,
        resources: ClusterResources = ClusterResources(), *,
        on_result: Callable[[TrackResult], None] | None = None, debug: bool = False,
        track_folders: Mapping[str, Sequence[Path]] | None = None,
        worker: type[SeparationWorker] = SeparationWorker,
        on_notice: Callable[[str], None] | None = None,
        fail_fast: bool = False) -> BatchSummary:
    """Separate ``items`` on the cluster at ``address``; one result per input.
    ``track_folders``: each input's output folders (by its path as given), swept after the
    run for the tracks that did not finish. A worker no node can hold is an error on a
    ``local`` cluster; on a joined one, which may add nodes as it scales, ``on_notice`` is
    told, and the run waits."""
    finished: set[str] = set()

    def remember(result: TrackResult) -> None:
        if result.status in ("done", "skipped"):
            finished.add(result.input)
        if on_result is not None:
            on_result(result)

    try:
        with connected(address, debug=debug) as ray:
            nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
            problem = resources.unschedulable(nodes)
            if problem is not None:
                if address == "local":
                    raise ClusterError(problem, hint="lower --cpus-per-worker or --gpus-per-worker")
                if on_notice is not None:
                    on_notice(f"{problem}; waiting for the cluster to add one (Ctrl-C stops)")
            return run_batch(items, spec, resources, on_result=remember, worker=worker,
                             fail_fast=fail_fast)
    finally:
        if track_folders:
            _sweep_unfinished(track_folders, finished)


def _sweep_unfinished(track_folders: Mapping[str, Sequence[Path]], finished: set[str]) -> None:
    from ..audio.write import sweep_destination

    for label, folders in track_folders.items():
        if label not in finished:
            for folder in folders:
                sweep_destination(folder)
                try:  # the track's own folder, when a dead worker left it empty
                    folder.rmdir()
                except OSError:
                    pass
