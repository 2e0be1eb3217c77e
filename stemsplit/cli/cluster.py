"""``stemsplit batch --ray`` and its worker options, on the command line's side: the request
checked before any work, the tracks left to do handed to ``stemsplit.cluster.driver``, and
what comes back reported as ``stemsplit batch`` reports it. ray is imported only by
``stemsplit.cluster``, once a run starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..errors import StemsplitError, UsageError
from .reporting import TerminalObserver, print_paths, print_result_line, print_summary
from .terminal import stderr


PROBED_ON_THE_DRIVER = 256
"""With --ray, the driver probes the files left to do when there are at most this many (a
second at most), so that a rerun whose only unfinished files are unreadable answers
without starting a cluster; a larger catalogue is probed by the workers, file by file."""


@dataclass(frozen=True)
class ClusterRequest:
    """``batch --ray``: the cluster's address and what each worker gets."""

    address: str
    workers: Optional[int] = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0


def separate_on_cluster(cluster: ClusterRequest, items: list, outcomes: Optional[list],
                        spec: Any, member_sources: Optional[list], *, quiet: bool,
                        as_json: bool, debug: bool, fail_fast: bool = False) -> int:
    """Run the tracks not finished yet on a Ray cluster: the driver reports the finished
    ones at once, schedules the rest (paths only), prints each record as it comes back
    and the summary at the end; the exit code, as ``stemsplit batch``'s."""
    from ..cluster import driver
    from ..cluster.dataset import ClusterResources
    from ..plan import BatchSummary, output_folders

    resources = ClusterResources(workers=cluster.workers,
                                 cpus_per_worker=cluster.cpus_per_worker,
                                 gpus_per_worker=cluster.gpus_per_worker)
    resources.check_device(spec.device)
    finished = [outcome for outcome in outcomes or [] if outcome is not None]
    pending = [item for index, item in enumerate(items)
               if outcomes is None or outcomes[index] is None]
    if len(pending) <= PROBED_ON_THE_DRIVER:  # a rerun with a few broken files starts no cluster
        from ..plan import failed_result
        from ..preflight import probe_inputs
        probed = probe_inputs(pending)
        unreadable = [item for item in pending if isinstance(probed.get(item.path), StemsplitError)]
        finished += [failed_result(str(item.path), probed[item.path]) for item in unreadable]
        pending = [item for item in pending if item not in unreadable]
        if fail_fast and unreadable:  # the first failure ends the run: nothing to schedule
            pending = []
    folders = None
    if member_sources is not None:
        folders = output_folders(pending, model_name=spec.model.name,
                                 member_sources=member_sources, selection=spec.selection,
                                 options=spec.options)
    with TerminalObserver(quiet, on_result=print_result_line if as_json else print_paths) \
            as observer:
        observer.batch_started(len(items))
        for result in finished:
            observer.track_finished(result)
        if not quiet and stderr.is_terminal:
            stderr.print(f"starting {len(pending)} files on Ray ({cluster.address})…",
                         markup=False)
        summary = BatchSummary([])
        if pending:
            summary = driver.run(cluster.address, pending, spec, resources,
                                 on_result=observer.track_finished, debug=debug,
                                 track_folders=folders, fail_fast=fail_fast,
                                 on_notice=lambda text: stderr.print(f"warning: {text}",
                                                                     markup=False))
    summary = BatchSummary(finished + summary.results)
    print_summary(summary, quiet)
    return 1 if summary.failed else 0


def cluster_request(arguments: dict) -> Optional[ClusterRequest]:
    """``--ray`` and its worker options, taken out of ``arguments``; None without --ray
    (when the worker options are refused)."""
    address = arguments.pop("ray")
    workers = arguments.pop("workers")
    cpus, gpus = arguments.pop("cpus_per_worker"), arguments.pop("gpus_per_worker")
    if address is None:
        given = [flag for flag, value, default in (
            ("--workers", workers, None), ("--cpus-per-worker", cpus, 1.0),
            ("--gpus-per-worker", gpus, 0.0)) if value != default]
        if given:
            raise UsageError(f"{given[0]} applies with --ray only")
        return None
    from ..cluster.connection import check_address
    from ..cluster.dataset import ClusterResources
    check_address(address)
    ClusterResources(workers=workers, cpus_per_worker=cpus, gpus_per_worker=gpus)  # ranges
    return ClusterRequest(address, workers, cpus, gpus)
