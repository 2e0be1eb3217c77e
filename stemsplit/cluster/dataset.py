"""``stemsplit batch`` on Ray Data: paths go out, records come back, the driver reports.

Three layers, each usable on its own:

* ``paths_dataset(inputs)``: a ``ray.data.Dataset`` of the files to separate (columns
  ``path``, ``relative_dir``), found the way ``stemsplit batch`` finds them;
* ``separate_dataset(paths, spec, resources)``: that dataset mapped through an actor pool
  of ``SeparationWorker``s (each loads the model once), giving one record per file (see
  ``records``), lazily, for pipelines of the user's own;
* ``run_batch(items, spec, resources)``: what ``stemsplit batch --ray`` runs: the records as
  ``TrackResult``s, one per input, as they finish, a file that ran twice counted once, and a
  file whose worker died on every attempt reported failed.

Only paths and records travel through the object store: a 4-minute track is 85 MB of float32
and its stems four times that. Each file is a block of its own (up to ``MAX_BLOCKS`` files;
beyond, files share blocks), so a crash costs one file a retry, not its neighbours. Ray's
defaults retry a dead actor's tasks forever, and any escaped exception fails the whole
dataset; here each file gets ``attempts`` tries, and a block that used them all is dropped
(``max_errored_blocks = -1``) and reported by the driver.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..errors import ClusterError, UsageError
from ..plan import BatchItem, BatchSummary, TrackResult, collect_inputs, failed_result
from .connection import import_ray
from .records import as_result, preferred
from .worker import SeparationWorker, WorkerSpec

MAX_BLOCKS = 10_000
"""The most blocks a paths dataset is cut into: one file each up to this many files (every
block is a small object the driver holds until it is processed)."""

DEFAULT_ATTEMPTS = 3
"""Tries per file before a file whose worker keeps dying is recorded as failed."""


@dataclass(frozen=True)
class ClusterResources:
    """How many workers, and what each one is given."""

    workers: int | None = None
    """The actor pool's maximum; None: as many as the cluster's CPUs (or GPUs) hold."""
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    attempts: int = DEFAULT_ATTEMPTS

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers {self.workers}: must be 1 or more")
        if not self.cpus_per_worker > 0:
            raise UsageError(f"--cpus-per-worker {self.cpus_per_worker:g}: must be above 0")
        if self.gpus_per_worker < 0:
            raise UsageError(f"--gpus-per-worker {self.gpus_per_worker:g}: must be 0 or more")
        if self.attempts < 1:
            raise UsageError(f"attempts {self.attempts}: must be 1 or more")

    def check_device(self, device: str) -> None:
        """A UsageError for a device the workers will not have."""
        if self.gpus_per_worker == 0 and device.startswith("cuda"):
            raise UsageError(f"-d {device} on a cluster needs --gpus-per-worker",
                             hint="Ray gives a worker no GPU unless it asks for one")

    def unschedulable(self, nodes: Sequence[Mapping[str, float]]) -> str | None:
        """Why no worker can start on a cluster whose live nodes have ``nodes`` resources
        (Ray would wait for a node that fits), or None."""
        wanted = {"CPU": self.cpus_per_worker, "GPU": self.gpus_per_worker}
        if any(all(node.get(kind, 0) >= amount for kind, amount in wanted.items() if amount)
               for node in nodes):
            return None
        largest = max((node.get("GPU" if self.gpus_per_worker else "CPU", 0) for node in nodes),
                      default=0)
        what = "GPU" if self.gpus_per_worker else "CPU"
        return (f"no node of the cluster has the {self.cpus_per_worker:g} CPUs and "
                f"{self.gpus_per_worker:g} GPUs a worker asks for (the most {what}s on a "
                f"node: {largest:g})")

    def fitting(self, nodes: Sequence[Mapping[str, float]]) -> int:
        """How many workers the nodes (their resources) hold at once."""
        total = 0
        for node in nodes:
            fit = int(node.get("CPU", 0) // self.cpus_per_worker)
            if self.gpus_per_worker > 0:
                fit = min(fit, int(node.get("GPU", 0) // self.gpus_per_worker))
            total += fit
        return total

    def pool_bounds(self, nodes: Sequence[Mapping[str, float]], files: int) -> tuple[int, int]:
        """The actor pool's (minimum, maximum) on nodes with these resources. The pool
        starts with every worker the nodes hold (up to ``workers`` and the files): Ray
        Data's autoscaler, left to grow a pool from one actor, keeps it at one on a small
        machine (its resource budget for an operator is a share of the cluster)."""
        fitting = self.fitting(nodes)
        maximum = self.workers if self.workers is not None else max(1, fitting)
        maximum = max(1, min(maximum, files))
        return max(1, min(fitting, maximum)), maximum


def paths_dataset(inputs: Sequence[BatchItem | str | os.PathLike], *,
                  recursive: bool = True) -> Any:
    """A Dataset of the files to separate: folders walked (``recursive``), files, globs;
    ``BatchItem``s as they are. Paths are made absolute, as workers run elsewhere."""
    ray = import_ray()
    items = [item for item in inputs if isinstance(item, BatchItem)]
    others = [str(item) for item in inputs if not isinstance(item, BatchItem)]
    if others:
        items += collect_inputs(others, recursive=recursive)
    rows = [{"path": os.path.abspath(item.path), "relative_dir": item.relative_dir}
            for item in items]
    return ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), MAX_BLOCKS)))


def absolute_spec(spec: WorkerSpec) -> WorkerSpec:
    """``spec`` with its output folder and local weights made absolute (workers do not run
    in this folder)."""
    options = replace(spec.options, out_dir=Path(os.path.abspath(spec.options.out_dir)))
    weights = Path(os.path.abspath(spec.weights)) if spec.weights is not None else None
    return replace(spec, options=options, weights=weights)


def separate_dataset(paths: Any, spec: WorkerSpec, resources: ClusterResources = ClusterResources(),
                     *, files: int | None = None,
                     worker: type[SeparationWorker] = SeparationWorker) -> Any:
    """``paths`` (a Dataset with ``path`` and ``relative_dir`` columns) mapped to one record
    per file by an actor pool of ``worker``s. Lazy: nothing runs until the result is
    consumed. ``files``: how many rows ``paths`` has, when known (sizes the pool; counted
    otherwise)."""
    ray = import_ray()
    resources.check_device(spec.device)
    if resources.gpus_per_worker > 0 and spec.device in ("auto", "cpu"):
        spec = replace(spec, device="cuda" if spec.device == "auto" else spec.device)
    spec = replace(absolute_spec(spec), threads=max(1, int(resources.cpus_per_worker)))
    count = files if files is not None else paths.count()
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    smallest, largest = resources.pool_bounds(nodes, max(1, count))
    retries = resources.attempts - 1
    with warnings.catch_warnings():
        # Ray 2.60 deprecates extra remote arguments but has no named parameter for these
        # two yet; its defaults (-1) would retry a crashing file forever.
        warnings.simplefilter("ignore", DeprecationWarning)
        records = paths.map_batches(
            worker, fn_constructor_kwargs={"spec": spec}, batch_size=1,
            # One file in flight per actor: a crash costs no queued neighbour an attempt.
            compute=ray.data.ActorPoolStrategy(min_size=smallest, max_size=largest,
                                               max_tasks_in_flight_per_actor=1),
            num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_worker or None,
            max_restarts=retries, max_task_retries=retries)
    records.context.max_errored_blocks = -1
    return records


def run_batch(items: Sequence[BatchItem], spec: WorkerSpec,
              resources: ClusterResources = ClusterResources(), *,
              on_result: Callable[[TrackResult], None] | None = None,
              worker: type[SeparationWorker] = SeparationWorker,
              fail_fast: bool = False) -> BatchSummary:
    """Separate ``items`` on the Ray cluster this process is connected to; one result per
    input, in the order they finish (``on_result`` is called with each at once). The results
    name inputs and outputs as ``items`` and ``spec`` did (relative stays relative).
    ``fail_fast``: stop at the first failure (the files under way are abandoned when the
    caller disconnects)."""
    if not items:
        return BatchSummary([])
    records = separate_dataset(paths_dataset(items), spec, resources, files=len(items),
                               worker=worker)
    try:
        return collect_results(records.iter_rows(), items, spec.options.out_dir,
                               attempts=resources.attempts, on_result=on_result,
                               fail_fast=fail_fast)
    except Exception as error:
        if type(error).__module__.startswith("ray"):
            raise ClusterError(f"the Ray run failed: {str(error).splitlines()[0]}") from None
        raise


def collect_results(records: Iterable[Mapping[str, Any]], items: Sequence[BatchItem],
                    out_dir: Path, *, attempts: int = DEFAULT_ATTEMPTS,
                    on_result: Callable[[TrackResult], None] | None = None,
                    fail_fast: bool = False) -> BatchSummary:
    """The driver's bookkeeping over the records as they arrive: each input reported once
    (a record for a file already reported, from a second attempt, only decides which result
    counts), a ``fatal`` record stops the run with its error, and every input without a
    record at the end (its worker died on each attempt) is reported failed. With
    ``fail_fast`` the first failure ends the collection."""
    labels = {os.path.abspath(item.path): str(item.path) for item in items}
    absolute_out = Path(os.path.abspath(out_dir))
    results: dict[str, TrackResult] = {}
    order: list[str] = []

    def report(result: TrackResult) -> None:
        results[result.input] = result
        order.append(result.input)
        if on_result is not None:
            on_result(result)

    for record in records:
        result = _as_given(as_result(record), labels, out_dir, absolute_out)
        if record["fatal"]:
            raise ClusterError(result.error or "the workers could not load the model")
        if result.input in results:
            results[result.input] = preferred(results[result.input], result)
        else:
            report(result)
            if fail_fast and result.status == "failed":
                return BatchSummary([results[label] for label in order])
    for item in items:
        label = str(item.path)
        if label not in results:
            report(failed_result(label, ClusterError(
                f"{label}: its worker process died on each of {attempts} attempts "
                "(a crash in native code, or out of memory)")))
    return BatchSummary([results[label] for label in order])


def _as_given(result: TrackResult, labels: dict[str, str], out_dir: Path,
              absolute_out: Path) -> TrackResult:
    """A worker's result with the input named as the user gave it, and outputs under a
    relative ``out_dir`` kept relative, as ``stemsplit batch`` names them."""
    absolute_label = result.input
    result.input = labels.get(absolute_label, absolute_label)
    if result.error and result.error.startswith(absolute_label):
        result.error = result.input + result.error[len(absolute_label):]
    if not out_dir.is_absolute():
        outputs = {}
        for stem, path in result.outputs.items():
            try:
                outputs[stem] = out_dir / path.relative_to(absolute_out)
            except ValueError:
                outputs[stem] = path
        result.outputs = outputs
    return result

