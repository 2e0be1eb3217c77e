"""What a separation run shows: per-track progress and status lines on stderr, and its
results on stdout (paths, one JSON document, or JSON Lines as each file of a batch
finishes), with the batch's closing summary."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .terminal import ProgressDisplay, print_json_line, stderr

if TYPE_CHECKING:  # pragma: no cover
    from ..pipeline import TrackResult


class TerminalObserver(ProgressDisplay):
    """Draws per-track progress on stderr (bars on a terminal, one line per track else)."""

    def __init__(self, quiet: bool, on_result=None) -> None:
        self.quiet = quiet
        self.on_result = on_result
        """Called with each finished track's result (the CLI prints JSON lines with it)."""
        self.progress = None
        self.tasks: dict[str, object] = {}
        """The progress bar of each track being separated (several with --parallel)."""
        self.overall = None
        self.files_total = self.files_done = self.files_failed = 0
        self.audio_seconds_done = 0.0
        self.started_at = time.monotonic()
        self.expected_seconds: dict[str, float] = {}
        """Each pending track's duration, when known before the run."""
        self.fractions: dict[str, float] = {}
        """How far each track being separated has got."""
        self.seconds_finished = 0.0
        if not quiet and stderr.is_terminal:
            from rich.progress import (BarColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                TextColumn("eta"), TimeRemainingColumn(), console=stderr, transient=True,
            )

    def expect_audio(self, seconds_by_track: dict[str, float | None]) -> None:
        """The durations of the tracks to separate (from the probe before the run): the
        overall bar then counts seconds of audio, and its ETA follows them."""
        self.expected_seconds = {track: seconds for track, seconds in seconds_by_track.items()
                                 if seconds}

    def track_started(self, track: str, duration_seconds: float | None) -> None:
        if self.progress is not None:
            self.tasks[track] = self.progress.add_task(Path(track).name, total=None)

    def track_progress(self, track: str, done: int, total: int) -> None:
        if self.progress is not None and track in self.tasks:
            self.progress.update(self.tasks[track], completed=done, total=total)
            self.fractions[track] = done / total if total else 0.0
            self._update_overall()

    def _update_overall(self) -> None:
        if self.progress is None or self.overall is None:
            return
        if self.expected_seconds:
            under_way = sum(fraction * self.expected_seconds.get(track, 0.0)
                            for track, fraction in self.fractions.items())
            self.progress.update(self.overall, completed=self.seconds_finished + under_way,
                                 description=self._overall_description())
        else:
            self.progress.update(self.overall, completed=self.files_done,
                                 description=self._overall_description())

    def track_stage(self, track: str, stage: str) -> None:
        if self.progress is not None and track in self.tasks:
            self.progress.update(self.tasks[track], description=f"{Path(track).name} ({stage})")

    def track_finished(self, result: "TrackResult") -> None:
        task = self.tasks.pop(result.input, None)
        if self.progress is not None and task is not None:
            self.progress.remove_task(task)
        self.files_done += 1
        self.files_failed += result.status == "failed"
        if result.status == "done":
            self.audio_seconds_done += result.duration_seconds or 0.0
        # Without bars (a log file, a job's stderr) a batch's lines carry its totals.
        totals = f" [{self._overall_description()}]" \
            if self.progress is None and self.files_total > 1 else ""
        for warning in result.warnings:
            stderr.print(f"warning: {warning}", markup=False)
        if result.status == "failed":
            stderr.print(f"error: {result.error}", markup=False)
        elif result.status == "skipped":
            self.message(f"skipped {result.input}: {result.error}{totals}")
        else:
            duration = result.duration_seconds or 0.0
            self.message(f"separated {result.input} ({duration:.1f} s of audio in "
                         f"{result.seconds_taken:.1f} s){totals}")
        self.fractions.pop(result.input, None)
        self.seconds_finished += self.expected_seconds.get(result.input, 0.0)
        self._update_overall()
        if self.on_result is not None:
            self.on_result(result)

    def batch_started(self, files: int) -> None:
        """Show an overall bar (files, audio minutes done, ETA) above the per-file bar: over
        seconds of audio when the durations are known (``expect_audio``), else files."""
        self.files_total = files
        if self.progress is not None and files > 1:
            total = sum(self.expected_seconds.values()) or files
            self.overall = self.progress.add_task(self._overall_description(), total=total)

    def _overall_description(self) -> str:
        failed = f", {self.files_failed} failed" if self.files_failed else ""
        elapsed = time.monotonic() - self.started_at
        counted = f"{self.files_done}/{self.files_total} files{failed}"
        if not self.audio_seconds_done:  # only skipped or failed files so far
            return counted
        speed = self.audio_seconds_done / elapsed if elapsed > 0 else 0.0
        return (f"{counted}, {self.audio_seconds_done / 60:.1f} min of audio, "
                f"{speed:.1f} s of audio/s")


def emit_results(results: list["TrackResult"], model_name: str, as_json: bool) -> None:
    if as_json:
        document = {"model": model_name,
                    "tracks": [result_document(result) for result in results]}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        for result in results:
            if result.status == "done":
                for path in result.outputs.values():
                    sys.stdout.write(f"{path}\n")
    sys.stdout.flush()


def report_finished(model_name: str, results: list, *, batch: bool, as_json: bool,
                     quiet: bool) -> int:
    """Report a run that had nothing to separate (each input skipped, or failed before the
    model was needed); the exit code."""
    from ..plan import BatchSummary

    with TerminalObserver(quiet, on_result=print_result_line if batch and as_json else None) \
            as observer:
        observer.batch_started(len(results))
        for result in results:
            observer.track_finished(result)
    if batch:
        print_summary(BatchSummary(results), quiet)
    else:
        emit_results(results, model_name, as_json)
    return 1 if any(result.status == "failed" for result in results) else 0


def print_paths(result: "TrackResult") -> None:
    """A finished track's output paths on stdout, one per line (batch without --json)."""
    if result.status == "done":
        sys.stdout.write("".join(f"{path}\n" for path in result.outputs.values()))
        sys.stdout.flush()


def print_result_line(result: "TrackResult") -> None:
    print_json_line(result_document(result))


def result_document(result: "TrackResult") -> dict:
    return {
        "input": result.input,
        "status": result.status,
        "outputs": {stem: str(path) for stem, path in result.outputs.items()},
        "sample_rate": result.sample_rate,
        "duration_seconds": result.duration_seconds,
        "seconds_taken": round(result.seconds_taken, 3),
        "error": result.error if result.status != "done" else None,
    }


def print_summary(summary, quiet: bool) -> None:
    """The batch's closing table on stderr: counts, then each failure with its reason."""
    done, skipped, failed = (summary.count(s) for s in ("done", "skipped", "failed"))
    if quiet and not failed:
        return
    stderr.print(f"{done} done, {skipped} skipped, {failed} failed", markup=False)
    if failed:
        from rich.table import Table
        table = Table(box=None, pad_edge=False)
        table.add_column("failed")
        table.add_column("reason")
        for result in summary.failed:
            reason = result.error or ""
            if reason.startswith(f"{result.input}: "):  # the path once, in its column
                reason = reason[len(result.input) + 2:]
            table.add_row(result.input, reason)
        stderr.print(table)
