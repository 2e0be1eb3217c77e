"""What a worker sends back for one file: a small record, never audio.

A record is one row of the dataset ``separate_dataset`` returns, with the fields of
``stemsplit batch --json``'s lines (``outputs`` and ``warnings`` as JSON text, so that every
column has one plain type), and ``fatal``: the worker could not load the model, so no file
will succeed. ``as_record`` and ``as_result`` convert between a ``TrackResult`` and a row;
``preferred`` picks the result that counts when a file ran twice. Standard library only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from ..plan import TrackResult

COLUMNS = ("input", "status", "outputs", "sample_rate", "duration_seconds", "seconds_taken",
           "error", "warnings", "fatal")

_RANK = {"done": 2, "skipped": 1, "failed": 0}
"""Which result of a file that ran twice counts: a finished one over a skip (a second
attempt that found the first one's outputs) over a failure."""


def as_record(result: TrackResult, *, fatal: bool = False) -> dict[str, Any]:
    """The row for ``result``: plain values only (no None: 0, NaN or "" stand for unknown)."""
    return {
        "input": result.input,
        "status": result.status,
        "outputs": json.dumps({stem: str(path) for stem, path in result.outputs.items()}),
        "sample_rate": int(result.sample_rate or 0),
        "duration_seconds": float("nan") if result.duration_seconds is None
        else float(result.duration_seconds),
        "seconds_taken": float(result.seconds_taken),
        "error": result.error or "",
        "warnings": json.dumps(list(result.warnings)),
        "fatal": bool(fatal),
    }


def as_result(record: Mapping[str, Any]) -> TrackResult:
    """The ``TrackResult`` a row stands for."""
    duration = float(record["duration_seconds"])
    return TrackResult(
        input=str(record["input"]),
        status=str(record["status"]),
        outputs={stem: Path(path) for stem, path in json.loads(record["outputs"]).items()},
        sample_rate=int(record["sample_rate"]) or None,
        duration_seconds=None if math.isnan(duration) else duration,
        seconds_taken=float(record["seconds_taken"]),
        error=str(record["error"]) or None,
        warnings=list(json.loads(record["warnings"])),
    )


def preferred(current: TrackResult | None, new: TrackResult) -> TrackResult:
    """Of two results for one input (a file run twice), the one that counts."""
    if current is None or _RANK.get(new.status, 0) > _RANK.get(current.status, 0):
        return new
    return current
