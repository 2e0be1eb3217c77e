"""The command line: parse, report progress on stderr, map errors to exit codes.

Only this module touches the terminal. stdout carries results alone (one output path per
line, or ``--json``); messages and progress go to stderr, progress bars only when stderr is
a terminal. torch is imported only once a command runs, so ``--help`` stays fast.

Exit codes: 0 success, 1 an input or model failed, 2 usage, 130 Ctrl-C, 143 SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer
from rich.console import Console

from . import __version__
from .errors import StemsplitError, UsageError
from .models_cli import (complete_for_implicit_separate, complete_model, install_log_handler,
                         models_app)

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import TrackResult

stderr = Console(stderr=True, highlight=False, soft_wrap=True)

COMMANDS = ("separate", "batch", "models")

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Split songs into stems (drums, bass, other, vocals, ...).\n\n"
    "stemsplit FILE... separates files (the 'separate' command is implied);\n"
    "stemsplit batch DIR separates every audio file in a folder;\n"
    "stemsplit models lists the models.",
)


class Terminated(BaseException):
    """Raised on SIGTERM so that temporary files are cleaned up like on Ctrl-C."""


def _on_sigterm(signum, frame):  # pragma: no cover - exercised through a subprocess test
    raise Terminated()


class ClipMode(str, Enum):
    rescale = "rescale"
    clamp = "clamp"
    tanh = "tanh"
    none = "none"


class OtherMethod(str, Enum):
    add = "add"
    minus = "minus"
    none = "none"


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"stemsplit {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version_callback,
                                 is_eager=True, help="Print the version and exit."),
) -> None:
    """Split songs into stems."""


# -- reporting -------------------------------------------------------------------------
class TerminalObserver:
    """Draws per-track progress on stderr (bars on a terminal, one line per track else)."""

    def __init__(self, quiet: bool, on_result=None) -> None:
        self.quiet = quiet
        self.on_result = on_result
        """Called with each finished track's result (the CLI prints JSON lines with it)."""
        self.progress = None
        self.tasks: dict[str, object] = {}
        """The progress bar of each track being separated (several with --parallel)."""
        self.overall = None
        self.files_total = self.files_done = 0
        self.audio_seconds_done = 0.0
        if not quiet and stderr.is_terminal:
            from rich.progress import (BarColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                TextColumn("eta"), TimeRemainingColumn(), console=stderr, transient=True,
            )

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()

    def message(self, text: str) -> None:
        if not self.quiet:
            stderr.print(text, markup=False)

    def track_started(self, track: str, duration_seconds: float | None) -> None:
        if self.progress is not None:
            self.tasks[track] = self.progress.add_task(Path(track).name, total=None)

    def track_progress(self, track: str, done: int, total: int) -> None:
        if self.progress is not None and track in self.tasks:
            self.progress.update(self.tasks[track], completed=done, total=total)

    def track_finished(self, result: "TrackResult") -> None:
        task = self.tasks.pop(result.input, None)
        if self.progress is not None and task is not None:
            self.progress.remove_task(task)
        for warning in result.warnings:
            stderr.print(f"warning: {warning}", markup=False)
        if result.status == "failed":
            stderr.print(f"error: {result.error}", markup=False)
        elif result.status == "skipped":
            self.message(f"skipped {result.input}: {result.error}")
        else:
            duration = result.duration_seconds or 0.0
            self.message(f"separated {result.input} ({duration:.1f} s of audio in "
                         f"{result.seconds_taken:.1f} s)")
        self.files_done += 1
        self.audio_seconds_done += result.duration_seconds or 0.0
        if self.progress is not None and self.overall is not None:
            self.progress.update(self.overall, completed=self.files_done,
                                 description=self._overall_description())
        if self.on_result is not None:
            self.on_result(result)

    def batch_started(self, files: int) -> None:
        """Show an overall bar (files, audio minutes done, ETA) above the per-file bar."""
        self.files_total = files
        if self.progress is not None and files > 1:
            self.overall = self.progress.add_task(self._overall_description(), total=files)

    def _overall_description(self) -> str:
        return (f"{self.files_done}/{self.files_total} files, "
                f"{self.audio_seconds_done / 60:.1f} min of audio")

    def download_progress(self, filename: str, done: int, total: int | None) -> None:
        if self.progress is None:
            return
        key = ("download", filename)
        tasks = getattr(self, "_downloads", {})
        self._downloads = tasks
        if key not in tasks:
            tasks[key] = self.progress.add_task(f"download {filename}", total=total)
        self.progress.update(tasks[key], completed=done, total=total)


def report_error(error: BaseException, debug: bool) -> None:
    if debug:
        import traceback
        traceback.print_exception(error, file=sys.stderr)
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    stderr.print(f"error: {message}", markup=False)
    hint = getattr(error, "hint", None)
    if hint:
        stderr.print(f"hint: {hint}", markup=False)


def _emit_results(results: list["TrackResult"], model_name: str, as_json: bool) -> None:
    if as_json:
        document = {"model": model_name,
                    "tracks": [_result_document(result) for result in results]}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        for result in results:
            if result.status == "done":
                for path in result.outputs.values():
                    sys.stdout.write(f"{path}\n")
    sys.stdout.flush()


# -- shared option handling -------------------------------------------------------------
STEMS_TO_MODEL = {4: "htdemucs", 6: "htdemucs_6s"}


def _choose_model(model: Optional[str], name: Optional[str], stems: Optional[int],
                  two_stems: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """Resolve --model/-n and --stems into (model name or None, two_stems)."""
    if model and name and model != name:
        raise UsageError(f"--model {model} and -n {name} disagree")
    chosen = model or name or os.environ.get("STEMSPLIT_MODEL") or None
    if stems is None:
        return chosen, two_stems
    if stems not in (2, 4, 6):
        raise UsageError(f"--stems {stems}: choose 2, 4 or 6")
    if stems == 2:
        if two_stems and two_stems != "vocals":
            raise UsageError("--stems 2 means --two-stems vocals; give only one of them")
        return chosen, "vocals"
    if two_stems:
        raise UsageError(f"--stems {stems} and --two-stems contradict each other")
    if chosen is None:
        return STEMS_TO_MODEL[stems], None
    from .registry import load_registry
    spec = load_registry().get(chosen)
    if len(spec.stems) != stems:
        raise UsageError(f"model {spec.name} gives {len(spec.stems)} stems, not {stems}",
                         hint=f"drop --stems, or use --model {STEMS_TO_MODEL[stems]}")
    return chosen, None


def _run(callback) -> None:
    """Run a command body, mapping errors and signals to one stderr line and an exit code."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    debug = os.environ.get("STEMSPLIT_DEBUG", "") not in ("", "0")
    try:
        code = callback()
        sys.stdout.flush()  # a closed stdout fails here, not at interpreter exit
    except StemsplitError as error:
        report_error(error, debug or "--debug" in sys.argv)
        code = error.exit_code
    except BrokenPipeError:
        # The reader of stdout went away (`stemsplit batch DIR | head`): stop quietly, as a
        # Unix tool killed by SIGPIPE would (temporary files are cleaned up on the way out).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        stderr.print("interrupted", markup=False)
        code = 130
    except Terminated:
        stderr.print("terminated", markup=False)
        code = 143
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as error:  # a bug: still one line, the traceback with --debug
        if debug or "--debug" in sys.argv:
            raise
        stderr.print(f"error: internal error: {type(error).__name__}: {error}".splitlines()[0],
                     markup=False)
        stderr.print("hint: rerun with --debug for the traceback, and please report it",
                     markup=False)
        code = 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    raise typer.Exit(code or 0)


SeparateInputs = typer.Argument(..., help="Audio or video files to separate.",
                                show_default=False)


def _separate_inputs(
    inputs: list, *, model: Optional[str], name: Optional[str], stems: Optional[int],
    weights: Optional[Path], repo: Optional[Path], out: Path, filename: str, device: str,
    shifts: int, seed: int, overlap: float, segment: Optional[float], two_stems: Optional[str],
    other_method: OtherMethod, stem: Optional[List[str]], int24: bool, float32: bool,
    clip_mode: ClipMode, flac: bool, mp3: bool, mp3_bitrate: int, sample_rate: Optional[int],
    jobs: int, parallel: int, batch_size: int, force: bool, offline: bool, quiet: bool,
    as_json: bool, debug: bool, batch: bool = False, fail_fast: bool = False,
    denoise: bool = False, n_fft: Optional[int] = None, compensate: Optional[float] = None,
    primary_stem: Optional[str] = None,
) -> int:
    """Separate ``inputs`` (paths, '-', or batch items) with one model; the exit code.

    ``batch``: JSON Lines as each file finishes and a summary table on stderr; otherwise
    one JSON document (or the written paths) at the end.
    """
    if parallel < 0:
        raise UsageError("--parallel must be 0 (auto) or a positive number of tracks")
    if flac and mp3:
        raise UsageError("--flac and --mp3 are exclusive")
    if int24 and float32:
        raise UsageError("--int24 and --float32 are exclusive")
    if (int24 or float32) and mp3:
        raise UsageError("--int24/--float32 do not apply to --mp3")
    if float32 and flac:
        raise UsageError("--float32 applies to wav only (flac is 16 or 24 bit)")
    model_name, two_stems = _choose_model(model, name, stems, two_stems)
    to_stdout = str(out) == "-"
    if to_stdout and (as_json or batch):
        raise UsageError("-o - writes audio to stdout; it takes one input, without --json")
    if sum(str(track) == "-" for track in inputs) > 1 or (to_stdout and len(inputs) != 1):
        raise UsageError("stdin ('-') and -o - take exactly one input")

    from .allocator import keep_freed_memory
    keep_freed_memory()  # before torch and the worker threads; see allocator.py
    from . import pipeline  # torch is imported from here on
    from .batch import (BatchItem, available_memory_bytes, choose_parallel, plan_jobs,
                        run_jobs, track_memory_bytes)
    from .engine import SeparationSettings
    from .loading import load_model

    import torch
    if jobs > 0:
        torch.set_num_threads(jobs)
    options = pipeline.OutputOptions(
        out_dir=out, filename=filename, format="mp3" if mp3 else "flac" if flac else "wav",
        bits=24 if int24 else 16, float32=float32, mp3_bitrate=mp3_bitrate,
        clip_mode=clip_mode.value, sample_rate=sample_rate, force=force,
        stream=sys.stdout.buffer if to_stdout else None,
    )
    try:
        settings = SeparationSettings(overlap=overlap, shifts=shifts, seed=seed,
                                      batch_size=batch_size)
    except ValueError as error:
        raise UsageError(str(error))
    selection = pipeline.StemSelection(two_stems=two_stems, other_method=other_method.value,
                                       only=tuple(stem) if stem else None)
    def print_json_line(result: "TrackResult") -> None:
        sys.stdout.write(json.dumps(_result_document(result)) + "\n")
        sys.stdout.flush()

    def print_paths(result: "TrackResult") -> None:
        if result.status == "done":
            sys.stdout.write("".join(f"{path}\n" for path in result.outputs.values()))
            sys.stdout.flush()

    on_result = None
    if batch:
        on_result = print_json_line if as_json else print_paths
    with TerminalObserver(quiet, on_result=on_result) as observer:
        from .mdx_onnx import MDXOptions
        loaded = load_model(
            model_name, weights=weights, repo=repo, offline=True if offline else None,
            device=pipeline.resolve_device(device), progress=observer.download_progress,
            mdx=MDXOptions(n_fft=n_fft, compensate=compensate, primary_stem=primary_stem,
                           denoise=denoise),
        )
        networks = loaded.engine_networks(segment)  # rejects a bad --segment before any work

        def make_job(item) -> "pipeline.TrackJob":
            if not isinstance(item, BatchItem):
                item = BatchItem(Path(item))
            source = sys.stdin.buffer if str(item.path) == "-" else item.path
            return pipeline.TrackJob(
                source, loaded, settings=settings, segment_seconds=segment,
                selection=selection, options=options, relative_dir=item.relative_dir)

        planned = plan_jobs(inputs, make_job)
        to_run = sum(job.skipped() is None for job in planned)
        threads = torch.get_num_threads()
        segment_frames = max(network.segment_length for network in networks)
        at_once = choose_parallel(
            parallel, tracks=to_run, threads=threads, device_type=loaded.device.type,
            torch_networks=not loaded.runs_outside_torch, memory_bytes=available_memory_bytes(),
            per_track_bytes=track_memory_bytes(segment_frames, batch_size))
        observer.batch_started(len(planned))
        summary = run_jobs(planned, observer, fail_fast=fail_fast, parallel=at_once,
                           threads=threads)
    if batch:
        _print_summary(summary, quiet)
    elif not to_stdout:
        _emit_results(summary.results, loaded.name, as_json)
    return 1 if summary.failed else 0


def _result_document(result: "TrackResult") -> dict:
    return {
        "input": result.input,
        "status": result.status,
        "outputs": {stem: str(path) for stem, path in result.outputs.items()},
        "sample_rate": result.sample_rate,
        "duration_seconds": result.duration_seconds,
        "seconds_taken": round(result.seconds_taken, 3),
        "error": result.error if result.status != "done" else None,
    }


def _print_summary(summary, quiet: bool) -> None:
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
            table.add_row(result.input, result.error or "")
        stderr.print(table)


# Options shared by `separate` and `batch` (one definition, one help text each).
MODEL_OPTION = typer.Option(None, "--model", "-m", help="Model name (see `stemsplit models`); default htdemucs.", autocompletion=complete_model)
NAME_OPTION = typer.Option(None, "-n", "--name", help="Same as --model (demucs' spelling).", autocompletion=complete_model)
STEMS_OPTION = typer.Option(None, "--stems", help="4 (htdemucs), 6 (htdemucs_6s) or 2 (vocals + accompaniment).")
WEIGHTS_OPTION = typer.Option(None, "--weights", help="Run a local checkpoint (.safetensors/.th), bag folder or MDX-Net .onnx file.")
REPO_OPTION = typer.Option(None, "--repo", help="A demucs-style local model folder to load -n from.")
DEVICE_OPTION = typer.Option(os.environ.get("STEMSPLIT_DEVICE", "auto"), "-d", "--device", help="auto, cpu, cuda or mps.")
SHIFTS_OPTION = typer.Option(0, "--shifts", help="Random time shifts averaged (seeded; 0 = the reference's exact stems).")
SEED_OPTION = typer.Option(0, "--seed", help="Seed for the shifts.")
OVERLAP_OPTION = typer.Option(0.25, "--overlap", help="Overlap between segments, a fraction.")
SEGMENT_OPTION = typer.Option(None, "--segment", help="Segment length in seconds (default: the model's).")
TWO_STEMS_OPTION = typer.Option(None, "--two-stems", metavar="STEM", help="Only STEM and its complement (accompaniment for vocals, else no_STEM).")
OTHER_METHOD_OPTION = typer.Option(OtherMethod.add, "--other-method", help="Complement of --two-stems: sum of the other stems (add), mix minus stem (minus), or none.")
STEM_OPTION = typer.Option(None, "--stem", help="Write only this stem (repeatable).")
INT24_OPTION = typer.Option(False, "--int24", help="24-bit wav/flac.")
FLOAT32_OPTION = typer.Option(False, "--float32", help="32-bit float wav.")
CLIP_MODE_OPTION = typer.Option(ClipMode.rescale, "--clip-mode", help="Avoid clipping by rescaling the whole stem, clamping, tanh, or none.")
FLAC_OPTION = typer.Option(False, "--flac", help="Write flac.")
MP3_OPTION = typer.Option(False, "--mp3", help="Write mp3.")
MP3_BITRATE_OPTION = typer.Option(320, "--mp3-bitrate", help="mp3 bitrate in kbit/s.")
SAMPLE_RATE_OPTION = typer.Option(None, "--sample-rate", help="Output sample rate (default: the input's).")
JOBS_OPTION = typer.Option(0, "-j", "--jobs", help="CPU threads for the networks (0 = all cores).")
PARALLEL_OPTION = typer.Option(0, "-P", "--parallel", metavar="N", help="Tracks separated at the same time, sharing the --jobs threads (0 = auto: on a CPU, up to one per thread, at most 4, as memory allows; 1 on a GPU or for MDX-Net).")
BATCH_SIZE_OPTION = typer.Option(1, "--batch-size", help="Segments per network call.")
DENOISE_OPTION = typer.Option(False, "--denoise", help="MDX-Net: average the network on the mix and its negation (UVR's denoise; 2x slower).")
N_FFT_OPTION = typer.Option(None, "--n-fft", help="MDX-Net: FFT size, for an .onnx file weights.toml does not know.")
COMPENSATE_OPTION = typer.Option(None, "--compensate", help="MDX-Net: gain applied to the network's stem, for an unknown .onnx file.")
PRIMARY_STEM_OPTION = typer.Option(None, "--primary-stem", help="MDX-Net: the stem an unknown .onnx file estimates (vocals, instrumental, drums, ...).")
FORCE_OPTION = typer.Option(False, "--force", "-f", help="Redo tracks whose outputs exist.")
OFFLINE_OPTION = typer.Option(False, "--offline", help="Never use the network (also STEMSPLIT_OFFLINE=1).")
QUIET_OPTION = typer.Option(False, "-q", "--quiet", help="No messages on stderr, errors only.")
DEBUG_OPTION = typer.Option(False, "--debug", help="Show tracebacks.")


@app.command("separate")
def separate_command(
    inputs: List[Path] = SeparateInputs,
    model: Optional[str] = MODEL_OPTION,
    name: Optional[str] = NAME_OPTION,
    stems: Optional[int] = STEMS_OPTION,
    weights: Optional[Path] = WEIGHTS_OPTION,
    repo: Optional[Path] = REPO_OPTION,
    out: Path = typer.Option(Path("separated"), "-o", "--out", help="Output folder; a subfolder per model is created."),
    filename: str = typer.Option("{track}/{stem}.{ext}", "--filename", help="Output name template: {track} {trackext} {stem} {ext} {model}."),
    device: str = DEVICE_OPTION,
    shifts: int = SHIFTS_OPTION,
    seed: int = SEED_OPTION,
    overlap: float = OVERLAP_OPTION,
    segment: Optional[float] = SEGMENT_OPTION,
    two_stems: Optional[str] = TWO_STEMS_OPTION,
    other_method: OtherMethod = OTHER_METHOD_OPTION,
    stem: Optional[List[str]] = STEM_OPTION,
    int24: bool = INT24_OPTION,
    float32: bool = FLOAT32_OPTION,
    clip_mode: ClipMode = CLIP_MODE_OPTION,
    flac: bool = FLAC_OPTION,
    mp3: bool = MP3_OPTION,
    mp3_bitrate: int = MP3_BITRATE_OPTION,
    sample_rate: Optional[int] = SAMPLE_RATE_OPTION,
    jobs: int = JOBS_OPTION,
    parallel: int = PARALLEL_OPTION,
    batch_size: int = BATCH_SIZE_OPTION,
    denoise: bool = DENOISE_OPTION,
    n_fft: Optional[int] = N_FFT_OPTION,
    compensate: Optional[float] = COMPENSATE_OPTION,
    primary_stem: Optional[str] = PRIMARY_STEM_OPTION,
    force: bool = FORCE_OPTION,
    offline: bool = OFFLINE_OPTION,
    quiet: bool = QUIET_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document describing what was written."),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Separate audio files into stems."""
    arguments = dict(locals())
    _run(lambda: _separate_inputs(**arguments))




@app.command("batch")
def batch_command(
    folders: List[str] = typer.Argument(..., help="Folders, files, quoted globs, or - to read paths from stdin."),
    recursive: bool = typer.Option(True, "--recursive/--no-recursive", help="Descend into subfolders."),
    filename: str = typer.Option("{relpath}/{track}/{stem}.{ext}", "--filename", help="Output name template: {relpath} {track} {trackext} {stem} {ext} {model}."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first failing file."),
    model: Optional[str] = MODEL_OPTION,
    name: Optional[str] = NAME_OPTION,
    stems: Optional[int] = STEMS_OPTION,
    weights: Optional[Path] = WEIGHTS_OPTION,
    repo: Optional[Path] = REPO_OPTION,
    out: Path = typer.Option(Path("separated"), "-o", "--out", help="Output folder; a subfolder per model, then the input tree."),
    device: str = DEVICE_OPTION,
    shifts: int = SHIFTS_OPTION,
    seed: int = SEED_OPTION,
    overlap: float = OVERLAP_OPTION,
    segment: Optional[float] = SEGMENT_OPTION,
    two_stems: Optional[str] = TWO_STEMS_OPTION,
    other_method: OtherMethod = OTHER_METHOD_OPTION,
    stem: Optional[List[str]] = STEM_OPTION,
    int24: bool = INT24_OPTION,
    float32: bool = FLOAT32_OPTION,
    clip_mode: ClipMode = CLIP_MODE_OPTION,
    flac: bool = FLAC_OPTION,
    mp3: bool = MP3_OPTION,
    mp3_bitrate: int = MP3_BITRATE_OPTION,
    sample_rate: Optional[int] = SAMPLE_RATE_OPTION,
    jobs: int = JOBS_OPTION,
    parallel: int = PARALLEL_OPTION,
    batch_size: int = BATCH_SIZE_OPTION,
    denoise: bool = DENOISE_OPTION,
    n_fft: Optional[int] = N_FFT_OPTION,
    compensate: Optional[float] = COMPENSATE_OPTION,
    primary_stem: Optional[str] = PRIMARY_STEM_OPTION,
    force: bool = FORCE_OPTION,
    offline: bool = OFFLINE_OPTION,
    quiet: bool = QUIET_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per file as it finishes (JSON Lines)."),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Separate every audio file in folders; outputs mirror the folder tree; finished
    files are skipped on a re-run (--force redoes them)."""
    arguments = dict(locals())

    def body() -> int:
        from .batch import collect_inputs
        items = collect_inputs(arguments.pop("folders"), recursive=arguments.pop("recursive"),
                               stdin=sys.stdin)
        if not items:
            raise UsageError("no audio files found")
        return _separate_inputs(items, batch=True, **arguments)

    _run(body)


app.add_typer(models_app, name="models")


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: ``stemsplit FILE...`` means ``stemsplit separate FILE...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] not in COMMANDS and args[0] not in ("-h", "--help", "--version") \
            and not args[0].startswith("--show-completion") \
            and not args[0].startswith("--install-completion"):
        args.insert(0, "separate")
    install_log_handler("-q" in args or "--quiet" in args)  # cache notices -> stderr lines
    complete_for_implicit_separate(COMMANDS)  # `stemsplit song.mp3 -n <TAB>` completes
    app(args=args, prog_name="stemsplit")


if __name__ == "__main__":  # pragma: no cover
    main()
