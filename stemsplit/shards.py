"""``--shard K/N``: the K-th of N disjoint parts of a batch's inputs, the same on every node.

For a job array (``sbatch --array=1-N``, one task per part) with no engine behind it: each
task lists the same inputs, sorts them by their path relative to what was given (``disc1/
track.flac``, not the mount point it was found under), and keeps the ``i``-th file when
``i mod N + 1 == K``. Every file lands in exactly one part whatever order the file system
listed it in, and the parts differ in size by at most one file. Standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Sequence

from .errors import UsageError
from .plan import BatchItem

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise UsageError(f"--shard {self.index}/{self.count}: K must be from 1 to N",
                             hint="e.g. --shard $SLURM_ARRAY_TASK_ID/8 with --array=1-8")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"3/8"`` -> Shard(3, 8); UsageError for anything else."""
    match = _SHARD.fullmatch(text)
    if match is None:
        raise UsageError(f"--shard {text}: give K/N, part K of N (from 1/N to N/N)",
                         hint="e.g. --shard $SLURM_ARRAY_TASK_ID/8 with --array=1-8")
    return Shard(int(match.group(1)), int(match.group(2)))


def relative_path(item: BatchItem) -> str:
    """The input's path relative to the folder or glob it was found under, as every node
    sees it: ``relative_dir/name`` in POSIX form."""
    folder = item.relative_dir.replace("\\", "/")
    return str(PurePosixPath(folder) / item.path.name) if folder else item.path.name


def shard_order(items: Sequence[BatchItem]) -> list[BatchItem]:
    """The inputs sorted by relative path (then by full path, for two files of the same
    relative path under different folders)."""
    return sorted(items, key=lambda item: (relative_path(item), item.path.as_posix()))


def shard_items(items: Sequence[BatchItem], shard: Shard) -> list[BatchItem]:
    """The inputs of part ``shard``: the ``i``-th of ``shard_order`` when ``i mod N + 1 ==
    K``, in that order."""
    return [item for position, item in enumerate(shard_order(items))
            if position % shard.count + 1 == shard.index]
