"""The actor that separates files on a cluster node: the model loaded once, then for each
path it is given, decode, separate and write, exactly as ``stemsplit batch`` does one track
(``batch.separate_items``: outputs renamed into place, temporaries named by their owner,
finished tracks skipped), returning only a small record (``records``).

``WorkerSpec`` is everything a worker needs to load and run the model the way the command
line would: the resolved ``Recipe`` (a name, preset, ensemble or local checkpoint), the
separation settings, family options, the stem selection and the output options. It is
plain data, sent to every actor once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import StemsplitError
from ..plan import BATCH_FILENAME, BatchItem, OutputOptions, TrackResult, failed_result
from ..resolve import ModelChoice, Recipe
from ..stem_plan import StemSelection
from .records import COLUMNS, as_record


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker loads and how it writes. Paths in it must be absolute (a worker
    does not run in the driver's folder), and on storage every node sees."""

    model: ModelChoice | Recipe = None
    options: OutputOptions = field(
        default_factory=lambda: OutputOptions(filename=BATCH_FILENAME))
    """Where and how stems are written; by default a batch's layout (the input folders
    mirrored, ``{relpath}/{track}/{stem}.{ext}``)."""
    selection: StemSelection = field(default_factory=StemSelection)
    device: str = "auto"
    precision: str = "fp32"
    shifts: int = 0
    seed: int = 0
    overlap: float | None = None
    segment_seconds: float | None = None
    batch_size: int = 1
    offline: bool | None = None
    family_options: Mapping[str, Any] = field(default_factory=dict)
    ensemble: str | None = None
    ensemble_weights: str | None = None
    weights: Path | None = None
    threads: int = 1
    """torch's threads in each worker: the CPUs the actor was given."""


class SeparationWorker:
    """A Ray Data callable class: ``__init__`` loads the model, each call separates the
    files of a batch (columns ``path`` and ``relative_dir``) and returns their records.

    A model that cannot be loaded (weights unavailable, a bad checkpoint) does not kill the
    actor: every file it is given comes back failed with that reason and ``fatal`` set, so
    the driver can stop the run in one line. Any other exception while separating a file is
    that file's failure; only a crash of the process itself (native code, out of memory)
    loses the file, which Ray then retries on a fresh actor."""

    def __init__(self, spec: WorkerSpec) -> None:
        from ..allocator import keep_freed_memory

        keep_freed_memory()
        import torch

        torch.set_num_threads(max(1, spec.threads))
        self.spec = spec
        self.separator = None
        self.load_error: StemsplitError | None = None
        from ..separator import Separator

        try:
            self.separator = Separator(
                spec.model, weights=spec.weights, device=spec.device,
                precision=spec.precision, shifts=spec.shifts,
                seed=spec.seed, overlap=spec.overlap, segment_seconds=spec.segment_seconds,
                batch_size=spec.batch_size, ensemble=spec.ensemble,
                ensemble_weights=spec.ensemble_weights, offline=spec.offline,
                **dict(spec.family_options))
        except StemsplitError as error:
            self.load_error = error

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        import numpy as np

        rows = [self.separate(BatchItem(Path(str(path)), str(relative_dir)))
                for path, relative_dir in zip(batch["path"], batch["relative_dir"])]
        return {column: np.array([row[column] for row in rows]) for column in COLUMNS}

    def separate(self, item: BatchItem) -> dict[str, Any]:
        """One file's record."""
        if self.load_error is not None or self.separator is None:
            error = self.load_error or StemsplitError("the model was not loaded")
            return as_record(failed_result(str(item.path), error), fatal=True)
        return as_record(self._separate(item))

    def _separate(self, item: BatchItem) -> TrackResult:
        from ..batch import separate_items

        separator, spec = self.separator, self.spec
        assert separator is not None
        try:
            summary = separate_items(
                [item], separator.model, settings=separator.settings,
                chunking=separator.chunking, selection=spec.selection, options=spec.options,
                parallel=1)
        except StemsplitError as error:
            return failed_result(str(item.path), error)
        except Exception as error:  # a bug: that file fails, with what went wrong
            return failed_result(str(item.path), StemsplitError(
                f"{item.path}: internal error ({type(error).__name__}: {error})",
                hint="please report it with --debug's output"))
        return summary.results[0]
