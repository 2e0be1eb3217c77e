"""``stemsplit eval``: how good a separation is, as a table, JSON or CSV.

Registered by cli.py as a command. The scoring lives in ``evaluation`` (no terminal code);
this module parses the options, draws progress and messages on stderr, and prints the
results on stdout: the table (plain text where stdout is no terminal), or ``--json`` /
``--csv -`` instead of it. ``-q`` silences the messages, never the results. Nothing here
imports torch or numpy at import time, so ``--help`` stays fast; torch is imported only to
separate with ``-n MODEL``.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from ..errors import OutputError, UsageError
from .. import settings
from .separate import ENSEMBLE_OPTION, ENSEMBLE_WEIGHTS_OPTION, EnsembleAlgorithm, model_names
from .terminal import (ProgressDisplay, complete_model, install_log_handler, prepare_process,
                       run_command, stderr, warnings_as_lines)

if TYPE_CHECKING:  # pragma: no cover
    from ..evaluation import EvaluationReport, TrackScore

_DEFAULT_METRICS = "sdr,si_sdr"


class EvalProgress(ProgressDisplay):
    """An evaluation's progress on stderr: a tracks bar (and the separation's) on a terminal;
    a line per track, warnings and failures in any case (errors even with -q). The stems
    skipped are said once at the end (``skipped_lines``), not per track."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress = None
        self.overall = None
        self.current = None
        if not quiet and stderr.is_terminal:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn)
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=stderr, transient=True,
            )

    def tracks_found(self, total: int) -> None:
        if self.progress is not None:
            self.overall = self.progress.add_task("tracks", total=total)

    def track_started(self, track: str, index: int, stage: str) -> None:
        if self.progress is None:
            return
        self.progress.update(self.overall, description=f"{stage} {track}")
        if self.current is not None:
            self.progress.remove_task(self.current)
            self.current = None
        if stage == "separating":
            self.current = self.progress.add_task("  samples", total=None)

    def track_progress(self, track: str, done: int, total: int) -> None:
        if self.progress is not None and self.current is not None:
            self.progress.update(self.current, completed=done, total=total)

    def track_finished(self, score: "TrackScore") -> None:
        if self.progress is not None:
            if self.current is not None:
                self.progress.remove_task(self.current)
                self.current = None
            self.progress.advance(self.overall)
        if not self.quiet:
            for warning in score.warnings:
                stderr.print(f"warning: {score.track}: {warning}", markup=False)
        if score.status == "failed":
            stderr.print(f"error: {score.error}", markup=False)
        elif score.status == "missing":
            self.message(f"warning: {score.error}")
        else:
            frames = max((stem.frames for stem in score.stems.values()), default=0)
            audio_seconds = frames / score.sample_rate if score.sample_rate else 0.0
            count = len(score.stems)
            # a stem scored against a file not named for it (the mixture, --mixture-as)
            against = [f"{name} against {Path(stem.reference).name}"
                       for name, stem in score.stems.items()
                       if not stem.reference.startswith("sum of ")
                       and Path(stem.reference).stem != name]
            self.message(f"scored {score.track} ({count} stem{'s' if count != 1 else ''}, "
                         f"{audio_seconds:.1f} s of audio, in {score.seconds_taken:.1f} s"
                         + "".join(f"; {text}" for text in against) + ")")


# -- output ------------------------------------------------------------------------------
def _number(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


def skipped_lines(report: "EvaluationReport") -> list[str]:
    """The stems not scored, one line per reason and set of stems, whatever the number of
    tracks: ``skipped drums, bass, other in all 50 tracks: no estimate``."""
    lines = []
    for stems, reason, tracks in report.skipped_summary():
        if len(tracks) == 1:
            where = f"track {tracks[0]}"
        elif len(tracks) == len(report.tracks):
            where = f"all {len(tracks)} tracks"
        elif len(tracks) <= 3:
            where = f"tracks {', '.join(tracks)}"
        else:
            where = f"{len(tracks)} tracks"
        lines.append(f"skipped {', '.join(stems)} in {where}: {reason}")
    return lines


def _table_rows(report: "EvaluationReport") -> tuple[list[str], list[tuple[list[str], bool]]]:
    """The results table: its column names, and its rows (cells, whether a section ends
    there): per track and stem, then per stem the mean and median over the scored tracks."""
    keys = report.keys
    rows: list[tuple[list[str], bool]] = []
    for track in report.tracks:
        if track.status != "done":
            label = "(failed)" if track.status == "failed" else "(no estimates)"
            rows.append(([track.track, label, *["" for _ in keys]], False))
            continue
        for number, (stem, score) in enumerate(track.stems.items()):
            rows.append(([track.track if number == 0 else "", stem,
                          *[_number(score.values.get(key)) for key in keys]], False))
    aggregate = report.aggregate()
    if aggregate:
        if rows:
            rows[-1] = (rows[-1][0], True)
        for statistic in ("mean", "median"):
            for number, (stem, per_key) in enumerate(aggregate.items()):
                count = max(entry["tracks"] for entry in per_key.values())
                rows.append(([f"{statistic} ({_plural(count, 'track')})", stem,
                              *[_number(per_key[key][statistic]) for key in keys]],
                             number == len(aggregate) - 1 and statistic == "mean"))
    return ["track", "stem", *keys], rows


def results_table(report: "EvaluationReport"):
    """The results as a rich table, for a terminal."""
    from rich.table import Table

    headers, rows = _table_rows(report)
    table = Table(box=None, pad_edge=False, show_edge=False)
    for index, header in enumerate(headers):
        if index == 0:
            table.add_column(header, overflow="fold")
        else:
            table.add_column(header, justify="left" if index == 1 else "right")
    for cells, end_section in rows:
        table.add_row(*cells, end_section=end_section)
    return table


def print_results(report: "EvaluationReport") -> None:
    """The results table on stdout: drawn by rich on a terminal; elsewhere (a file, a pipe)
    plain text in the same layout, never wrapped, without trailing blanks."""
    if sys.stdout.isatty():
        from rich.console import Console

        Console(highlight=False).print(results_table(report))
        return
    from .listing import PlainTable

    headers, rows = _table_rows(report)
    table = PlainTable()
    for index, header in enumerate(headers):
        table.add_column(header, justify="right" if index >= 2 else "left")
    for cells, _ in rows:
        table.add_row(*cells)
    sys.stdout.write("".join(line + "\n" for line in table.lines()))


def _write_csv(report: "EvaluationReport", target: str) -> None:
    if target == "-":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(report.CSV_COLUMNS)
        writer.writerows(report.csv_rows())
        return
    path = Path(target)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: is a folder", hint="give --csv a file name")
    # A hidden temporary file beside the target, renamed over it once complete: a reader
    # never sees half a file, and an error leaves the old one as it was.
    temporary = None
    try:
        for attempt in range(100):
            candidate = path.parent / f".{path.name}.{os.getpid()}.{attempt}.tmp"
            try:
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue
            temporary = candidate
            break
        else:
            raise OutputError(f"cannot write {path}: no temporary file name free in "
                              f"{path.parent}")
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(report.CSV_COLUMNS)
            writer.writerows(report.csv_rows())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        temporary = None
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        if temporary is not None:
            try:
                os.unlink(temporary)
            except OSError:
                pass


# -- the command -----------------------------------------------------------------------
def _evaluate(
    reference_dir: Path, estimates_dir: Optional[Path], *, model: Optional[List[str]],
    name: Optional[List[str]], ensemble: Optional[str], ensemble_weights: Optional[str],
    weights: Optional[Path], out: Optional[Path], force: bool,
    metrics: str, tracks: Optional[List[str]], two_stems: Optional[str], device: Optional[str],
    precision: Optional[str], jobs: int, segment: Optional[float], overlap: Optional[float], shifts: int, seed: int,
    batch_size: int, offline: bool, as_json: bool, csv_path: Optional[str], quiet: bool,
    mixture_as: Optional[List[str]] = None,
) -> int:
    from .. import evaluation

    chosen_metrics = evaluation.parse_metrics(metrics)
    names = model_names(model, name)
    with_model = bool(names) or weights is not None
    if with_model and estimates_dir is not None:
        raise UsageError("give ESTIMATES_DIR or -n MODEL, not both",
                         hint="ESTIMATES_DIR scores stems written before; -n separates the mixtures now")
    if not with_model:
        if estimates_dir is None:
            raise UsageError("give ESTIMATES_DIR, or -n MODEL to separate the mixtures and score them")
        given = [flag for flag, value in (("-o", out), ("--two-stems", two_stems),
                                          ("--segment", segment), ("--overlap", overlap),
                                          ("--shifts", shifts or None), ("--force", force or None),
                                          ("--ensemble", ensemble),
                                          ("--ensemble-weights", ensemble_weights),
                                          ("--precision", None if precision in (None, "fp32")
                                           else precision))
                 if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)}: only with -n MODEL (separating the mixtures)")
    if as_json and csv_path == "-":
        raise UsageError("--json and --csv - both write to stdout; give --csv a file")
    from ..precision import check_precision
    precision = check_precision(precision, device or settings.device())
    evaluation.require_packages(chosen_metrics)  # before any work: one line saying how to install

    install_log_handler(quiet)
    with EvalProgress(quiet) as progress:
        if with_model:
            report = _evaluate_with_model(
                reference_dir, chosen_metrics, progress, names=names, ensemble=ensemble,
                ensemble_weights=ensemble_weights, weights=weights, out=out,
                force=force, tracks=tracks, two_stems=two_stems, device=device,
                precision=precision, jobs=jobs,
                segment=segment, overlap=overlap, shifts=shifts, seed=seed,
                batch_size=batch_size, offline=offline, mixture_as=mixture_as)
        else:
            assert estimates_dir is not None
            report = evaluation.evaluate_folders(reference_dir, estimates_dir, chosen_metrics,
                                                 tracks=tracks, observer=progress,
                                                 mixture_as=mixture_as or ())
    for line in skipped_lines(report):
        progress.message(line)
    if report.missing:
        progress.message(f"{_plural(len(report.missing), 'track')} without estimates")
    if report.failed:
        progress.message(f"{_plural(len(report.failed), 'track')} failed")
    if not as_json and csv_path != "-":  # --json, --csv -: every number, on stdout instead
        print_results(report)
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2, allow_nan=False) + "\n")
    if csv_path is not None:
        _write_csv(report, csv_path)
    sys.stdout.flush()
    return 1 if report.failed or not report.scored else 0


def _evaluate_with_model(reference_dir: Path, metrics, progress: EvalProgress, *,
                         names: List[str], ensemble: Optional[str],
                         ensemble_weights: Optional[str], weights: Optional[Path],
                         out: Optional[Path], force: bool, tracks: Optional[List[str]],
                         two_stems: Optional[str], device: Optional[str],
                         precision: Optional[str], jobs: int, segment: Optional[float], overlap: Optional[float], shifts: int,
                         seed: int, batch_size: int, offline: bool,
                         mixture_as: Optional[List[str]] = None) -> "EvaluationReport":
    """Separate each mixture with the model, preset or ensemble ``names`` ask for (or
    ``--weights``) and score it, as ``stemsplit separate`` would separate it."""
    from .. import evaluation
    from ..registry import load_registry
    from ..resolve import resolve
    from ..stem_plan import StemSelection

    registry = load_registry()
    recipe = resolve(names or None, weights=weights, algorithm=getattr(ensemble, "value", ensemble),
                     ensemble_weights=ensemble_weights, registry=registry)
    selection = StemSelection(two_stems=two_stems)
    member_sources = recipe.member_sources(registry)
    if member_sources is not None:
        selection.plan(member_sources, recipe.models)  # a stem no model gives: now
    evaluation.find_reference_tracks(reference_dir)  # a wrong folder fails before the model loads
    prepare_process(jobs)
    from ..separator import Separator

    with warnings_as_lines():
        separator = Separator(recipe, device=device or settings.device(), precision=precision,
                              shifts=shifts, seed=seed, overlap=overlap,
                              segment_seconds=segment, batch_size=batch_size,
                              offline=True if offline else None,
                              download_progress=progress.download_progress)
    with separator:
        return evaluation.evaluate_with_model(
            reference_dir, separator.model, metrics, settings=separator.settings,
            chunking=separator.chunking, selection=selection, out_dir=out, force=force,
            tracks=tracks, observer=progress, mixture_as=mixture_as or ())


def eval_command(
    reference_dir: Path = typer.Argument(..., metavar="REFERENCE_DIR", show_default=False,
                                         help="Reference track folders, as MUSDB18-HQ: <track>/mixture.wav and <track>/<stem>.wav."),
    estimates_dir: Optional[Path] = typer.Argument(None, metavar="ESTIMATES_DIR", show_default=False,
                                                   help="Estimates to score, from any tool: <track>/<stem>.<ext> or <model>/<track>/<stem>.<ext>, any audio format; a no_<stem> file is the complement of <stem> (no_vocals = accompaniment). Not with -n."),
    metrics: str = typer.Option(_DEFAULT_METRICS, "--metrics", metavar="LIST",
                                help="Comma-separated: sdr (global SDR over the whole track, as the music demixing challenges and MVSEP compute it), si_sdr (scale-invariant SDR), bss_v4 (museval's BSSEval v4 SDR/SIR/ISR/SAR, median over 1 s frames; holds a track's stems in memory, museval's way; sdr and si_sdr are read in blocks); for speech-like stems only (vocals, speech, voice, dialog...), of the mean of the channels at 16 kHz: pesq (ITU-T P.862.2 wideband, perceived quality as MOS 1.0-4.64), stoi (intelligibility 0-1), estoi (extended STOI). bss_v4, pesq, stoi and estoi need `pip install \"stemsplit-cli[eval]\"`."),
    tracks: Optional[List[str]] = typer.Option(None, "--track", metavar="NAME", help="Score only this reference track (repeatable)."),
    mixture_as: Optional[List[str]] = typer.Option(None, "--mixture-as", metavar="STEM", help="Score STEM against the reference's mixture file instead of <track>/STEM.wav (repeatable): for a restoration model (Apollo's restored) when mixture.wav is the clean original. Each track's line says which reference a stem was scored against."),
    model: Optional[List[str]] = typer.Option(None, "--model", "-m", metavar="NAME", help="Separate every mixture with this model or preset (see `stemsplit models`) and score the stems. Repeat for an ensemble (-n A -n B).", autocompletion=complete_model),
    name: Optional[List[str]] = typer.Option(None, "-n", "--name", metavar="NAME", help="Same as --model.", autocompletion=complete_model),
    ensemble: Optional[EnsembleAlgorithm] = ENSEMBLE_OPTION,
    ensemble_weights: Optional[str] = ENSEMBLE_WEIGHTS_OPTION,
    weights: Optional[Path] = typer.Option(None, "--weights", metavar="PATH", help="Separate with a local checkpoint (as `stemsplit separate --weights`)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", metavar="DIR", help="With -n: keep the stems, as 32-bit float wav, in DIR/<model>/<track>/<stem>.wav (default: a temporary folder, deleted)."),
    force: bool = typer.Option(False, "--force", "-f", help="With -o: separate again tracks whose stems exist there (otherwise they are scored as found)."),
    two_stems: Optional[str] = typer.Option(None, "--two-stems", metavar="STEM", help="With -n: only STEM and its complement (accompaniment for vocals, else no_STEM)."),
    device: Optional[str] = typer.Option(None, "-d", "--device", metavar="DEVICE", help="With -n: auto, cpu, cuda or mps (default: $STEMSPLIT_DEVICE, else auto).", show_default=False),
    precision: str = typer.Option("fp32", "--precision", metavar="P", help="With -n: what the networks compute in: fp32 (the reference's stems), bf16, fp16 (GPUs only), auto (fp32 for now); see `stemsplit separate --help`."),
    jobs: int = typer.Option(0, "-j", "--jobs", metavar="N", help="With -n: CPU threads for the networks (0 = all cores)."),
    segment: Optional[float] = typer.Option(None, "--segment", metavar="SECONDS", help="With -n: chunk length in seconds (default: the model's)."),
    overlap: Optional[float] = typer.Option(None, "--overlap", metavar="X", help="With -n: how much chunks overlap, as for `stemsplit separate` (default: the model's)."),
    shifts: int = typer.Option(0, "--shifts", metavar="N", help="With -n: random time shifts averaged (seeded)."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="With -n: seed for the shifts."),
    batch_size: int = typer.Option(1, "--batch-size", metavar="N", help="With -n: segments per network call."),
    offline: bool = typer.Option(False, "--offline", help="With -n: never use the network (also STEMSPLIT_OFFLINE=1)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document with every number on stdout (instead of the table)."),
    csv_path: Optional[str] = typer.Option(None, "--csv", metavar="FILE", help="Write one row per track, stem and metric, then the mean and median rows, to FILE ('-': stdout)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No messages on stderr, errors only (the results are still printed)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Score separated stems against reference stems: SDR, SI-SDR, BSSEval v4, PESQ, STOI.

    Score a tool's stems in ESTIMATES_DIR, or give -n MODEL to separate each reference
    mixture (the model loaded once) and score that, writing no stems unless -o DIR.
    Tracks are matched by folder name; stems missing on either side are skipped and said.
    A missing reference accompaniment (or no_<stem>) is the sum of the other reference stems.
    The results table (per track and stem, then the mean and median per stem) goes to
    stdout, messages to stderr; --json and --csv give every number (--json, --csv -: on
    stdout instead of the table). Exit 1 if a track failed (the others are scored).
    """
    arguments = dict(locals())
    arguments.pop("debug")
    run_command(lambda: _evaluate(**arguments))
