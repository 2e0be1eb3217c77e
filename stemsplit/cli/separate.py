"""The command line: parse, report progress on stderr, map errors to exit codes.

Only this module touches the terminal. stdout carries results alone (one output path per
line, or ``--json``); messages and progress go to stderr, progress bars only when stderr is
a terminal. torch is imported only once a command runs, so ``--help`` stays fast.

Exit codes: 0 success, 1 an input or model failed, 2 usage, 130 Ctrl-C, 143 SIGTERM.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, List, Optional

import typer

from .. import __version__
from ..errors import UsageError
from .eval import eval_command
from ..families import all_families
from .models import models_app
from .terminal import (ProgressDisplay, complete_for_implicit_separate, complete_model,
                       install_log_handler, run_command, stderr)

if TYPE_CHECKING:  # pragma: no cover
    from ..pipeline import TrackResult

COMMANDS = ("separate", "batch", "models", "eval")

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Split songs into stems (drums, bass, other, vocals, ...).\n\n"
    "stemsplit FILE... separates files (the 'separate' command is implied);\n"
    "stemsplit batch DIR separates every audio file in a folder;\n"
    "stemsplit models lists the models;\n"
    "stemsplit eval REFERENCE_DIR ESTIMATES_DIR scores stems against references.",
)


class ClipMode(str, Enum):
    rescale = "rescale"
    clamp = "clamp"
    tanh = "tanh"
    none = "none"


class OtherMethod(str, Enum):
    add = "add"
    minus = "minus"
    none = "none"


def _ensemble_algorithms() -> tuple[str, ...]:
    from ..registry import ENSEMBLE_ALGORITHMS

    return ENSEMBLE_ALGORITHMS


EnsembleAlgorithm = Enum("EnsembleAlgorithm", {name: name for name in _ensemble_algorithms()},
                         type=str)
"""``--ensemble``: how an ensemble combines its models' stems (see ensemble.py)."""


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

    def track_started(self, track: str, duration_seconds: float | None) -> None:
        if self.progress is not None:
            self.tasks[track] = self.progress.add_task(Path(track).name, total=None)

    def track_progress(self, track: str, done: int, total: int) -> None:
        if self.progress is not None and track in self.tasks:
            self.progress.update(self.tasks[track], completed=done, total=total)

    def track_stage(self, track: str, stage: str) -> None:
        if self.progress is not None and track in self.tasks:
            self.progress.update(self.tasks[track], description=f"{Path(track).name} ({stage})")

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
def _choose_model(model: Optional[List[str]], name: Optional[List[str]], stems: Optional[int],
                  two_stems: Optional[str]) -> tuple[Optional[List[str]], Optional[str]]:
    """Resolve --model/-n (repeated, or a preset, for an ensemble) and --stems into (model
    names or None, two_stems)."""
    from ..registry import load_registry

    if model and name and list(model) != list(name):
        raise UsageError(f"--model {' '.join(model)} and -n {' '.join(name)} disagree",
                         hint="name the models with one of them (repeated for an ensemble)")
    environment = os.environ.get("STEMSPLIT_MODEL")
    chosen = list(model or name or []) or ([environment] if environment else None)
    if stems is None:
        return chosen, two_stems
    registry = load_registry()
    counts = sorted({2, *registry.stems_models})
    if stems not in counts:
        raise UsageError(f"--stems {stems}: choose {', '.join(map(str, counts[:-1]))} or {counts[-1]}")
    if stems == 2:
        if two_stems and two_stems != "vocals":
            raise UsageError("--stems 2 means --two-stems vocals; give only one of them")
        return chosen, "vocals"
    if two_stems:
        raise UsageError(f"--stems {stems} and --two-stems contradict each other")
    if chosen is None:
        return [registry.stems_models[stems]], None
    members = [member for label in chosen for member in
               (registry.preset(label).models if registry.preset(label) else [label])]
    if len(members) > 1:  # an ensemble gives every stem one of its models gives
        given = list(dict.fromkeys(s for member in members for s in registry.get(member).stems))
        if len(given) != stems:
            raise UsageError(f"the ensemble gives {len(given)} stems ({', '.join(given)}), "
                             f"not {stems}", hint="drop --stems")
        return chosen, None
    spec = registry.get(chosen[0])
    if len(spec.stems) != stems:
        raise UsageError(f"model {spec.name} gives {len(spec.stems)} stems, not {stems}",
                         hint=f"drop --stems, or use --model {registry.stems_models[stems]}")
    return chosen, None


SeparateInputs = typer.Argument(..., help="Audio or video files to separate.",
                                show_default=False)


def _separate_inputs(
    inputs: list, *, model: Optional[List[str]], name: Optional[List[str]],
    stems: Optional[int], weights: Optional[Path], out: Path, filename: str, device: str,
    shifts: int, seed: int, overlap: Optional[float], segment: Optional[float],
    two_stems: Optional[str], other_method: OtherMethod, stem: Optional[List[str]],
    int24: bool, float32: bool, clip_mode: ClipMode, flac: bool, mp3: bool, mp3_bitrate: int,
    sample_rate: Optional[int], jobs: int, parallel: int, batch_size: int, force: bool,
    offline: bool, quiet: bool, as_json: bool, debug: bool, batch: bool = False,
    fail_fast: bool = False, family_options: Optional[dict] = None,
    ensemble: Optional[str] = None, ensemble_weights: Optional[str] = None,
) -> int:
    """Separate ``inputs`` (paths, '-', or batch items) with one model or an ensemble (several
    ``-n``, or a preset: ``ensemble`` algorithm, ``ensemble_weights`` "2,1"); the exit code.

    ``batch``: JSON Lines as each file finishes and a summary table on stderr; otherwise
    one JSON document (or the written paths) at the end. ``family_options``: the values of
    the options only one family reads, by name.
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
    model_names, two_stems = _choose_model(model, name, stems, two_stems)
    to_stdout = str(out) == "-"
    if to_stdout and (as_json or batch):
        raise UsageError("-o - writes audio to stdout; it takes one input, without --json")
    if sum(str(track) == "-" for track in inputs) > 1 or (to_stdout and len(inputs) != 1):
        raise UsageError("stdin ('-') and -o - take exactly one input")
    from ..plan import OutputOptions, StemSelection
    options = OutputOptions(
        out_dir=out, filename=filename, format="mp3" if mp3 else "flac" if flac else "wav",
        bits=24 if int24 else 16, float32=float32, mp3_bitrate=mp3_bitrate,
        clip_mode=clip_mode.value, sample_rate=sample_rate, force=force,
        stream=sys.stdout.buffer if to_stdout else None,
    )
    selection = StemSelection(two_stems=two_stems, other_method=other_method.value,
                              only=tuple(stem) if stem else None)
    finished = _finished_before_loading(
        inputs, model_names, options, selection, weights=weights, device=device,
        ensemble=ensemble is not None or ensemble_weights is not None,
        family_options=family_options, shifts=shifts, batch_size=batch_size,
        segment=segment, overlap=overlap)
    if finished is not None:  # a rerun with nothing left to do: no torch, no model
        return _report_finished(*finished, batch=batch, as_json=as_json, quiet=quiet)

    from ..allocator import keep_freed_memory
    keep_freed_memory()  # before torch and the worker threads; see allocator.py
    recipe = _ensemble_recipe(model_names or [], ensemble, ensemble_weights, weights,
                              two_stems, other_method.value, tuple(stem) if stem else None)
    from .. import pipeline  # torch is imported from here on
    from ..batch import (BatchItem, available_memory_bytes, choose_parallel, plan_jobs,
                        run_jobs, track_memory_bytes)
    from ..engine import SeparationSettings
    from ..families.base import ChunkingRequest
    from ..loading import load_model

    import torch
    if jobs > 0:
        torch.set_num_threads(jobs)
    try:
        settings = SeparationSettings(shifts=shifts, seed=seed, batch_size=batch_size)
    except ValueError as error:
        raise UsageError(str(error))
    chunking = ChunkingRequest(segment_seconds=segment, overlap=overlap)
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
        if recipe is not None:
            loaded = _load_ensemble(recipe, offline, pipeline.resolve_device(device),
                                    observer.download_progress, family_options or {})
        else:
            loaded = load_model(
                model_names[0] if model_names else None, weights=weights,
                offline=True if offline else None, device=pipeline.resolve_device(device),
                progress=observer.download_progress, options=family_options,
            )
        # Rejects a bad --segment or --overlap before any work.
        networks = loaded.engine_networks(chunking)

        def make_job(item) -> "pipeline.TrackJob":
            if not isinstance(item, BatchItem):
                item = BatchItem(Path(item))
            source = sys.stdin.buffer if str(item.path) == "-" else item.path
            return pipeline.TrackJob(
                source, loaded, settings=settings, chunking=chunking,
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


def _finished_before_loading(
    inputs: list, model_names: Optional[List[str]], options: Any, selection: Any, *,
    weights: Optional[Path], device: str, ensemble: bool, family_options: Optional[dict],
    shifts: int, batch_size: int, segment: Optional[float], overlap: Optional[float],
) -> Optional[tuple[str, list]]:
    """(the model's name, every input's 'skipped' result) when all the outputs of a run
    exist already and that can be told without torch or the model: from the registry's
    name and stems of a published model, and the output options. None otherwise, and the
    run goes on as ever (the model is loaded, then each track is skipped or separated).

    Only for one model named from the registry: with ``--weights`` the model may name
    itself and its stems after the file, a family's own option may change its stems, and
    an ensemble names its outputs itself; and only when nothing the loaded model would check
    (``--segment``, an ``--overlap`` no network takes, ``--shifts``/``--batch-size``, the
    registry entry) could make the real run refuse to start.
    """
    if options.force or options.stream is not None or weights is not None or ensemble:
        return None
    if model_names is not None and len(model_names) != 1:
        return None
    if any(value is not None and value is not False for value in (family_options or {}).values()):
        return None
    if segment is not None or shifts < 0 or batch_size < 1:
        return None
    if overlap is not None and not (0 <= overlap < 1
                                    or (overlap >= 2 and float(overlap).is_integer())):
        return None
    from ..errors import StemsplitError
    from ..plan import finished_tracks
    from ..registry import load_registry

    try:
        spec = load_registry().get(model_names[0] if model_names else None)
        if spec.unsupported:
            return None
        results = finished_tracks(inputs, model_name=spec.name, sources=spec.stems,
                                  selection=selection, options=options)
    except StemsplitError:  # the real run reports it, as ever
        return None
    if results is None:
        return None
    if device not in ("auto", "cpu"):  # an unavailable device is refused, as ever
        from ..pipeline import resolve_device
        resolve_device(device)
    return spec.name, results


def _report_finished(model_name: str, results: list, *, batch: bool, as_json: bool,
                     quiet: bool) -> int:
    """Report the results of ``_finished_before_loading`` as a run that skipped them."""
    from ..plan import BatchSummary

    def print_json_line(result: "TrackResult") -> None:
        sys.stdout.write(json.dumps(_result_document(result)) + "\n")
        sys.stdout.flush()

    with TerminalObserver(quiet, on_result=print_json_line if batch and as_json else None) \
            as observer:
        observer.batch_started(len(results))
        for result in results:
            observer.track_finished(result)
    if batch:
        _print_summary(BatchSummary(results), quiet)
    else:
        _emit_results(results, model_name, as_json)
    return 0


def _ensemble_recipe(names: List[str], algorithm: Optional[str], weights_text: Optional[str],
                     weights: Optional[Path], two_stems: Optional[str], other_method: str,
                     only: Optional[tuple]) -> Any:
    """The ensemble that several -n (or a preset) ask for, checked before any work (its
    stems included: a stem no model gives is a usage error); None for one model."""
    from ..ensemble import parse_weights, plan_stems, recipe_sources, resolve_ensemble
    from ..registry import load_registry

    registry = load_registry()
    recipe = resolve_ensemble(
        names, registry, algorithm=getattr(algorithm, "value", algorithm),
        weights=parse_weights(weights_text) if weights_text is not None else None)
    if recipe is None:
        return None
    if weights is not None:
        raise UsageError("--weights runs one local checkpoint; it does not join an ensemble")
    plan_stems(recipe_sources(recipe, registry), recipe.models, two_stems=two_stems,
               other_method=other_method, only=only)
    return recipe


def _load_ensemble(recipe, offline: bool, device, progress, family_options: dict) -> Any:
    """Every model of the ensemble, loaded once; each gets the family options its own
    family reads (one that none of them reads is a usage error)."""
    from ..ensemble import Ensemble
    from ..families import family_named
    from ..loading import load_model
    from ..registry import load_registry

    registry = load_registry()
    families = [family_named(registry.get(model).family) for model in recipe.models]
    owned = {option.name for family in families for option in family.options}
    for family in all_families():
        for option in family.options:
            if option.is_set(family_options.get(option.name)) and option.name not in owned:
                raise UsageError(f"{option.flag} applies to {family.display} models; the "
                                 f"ensemble {recipe.name} has none")
    members = []
    for model, family in zip(recipe.models, families):
        own = {option.name for option in family.options}
        members.append(load_model(
            model, offline=True if offline else None, device=device, progress=progress,
            options={key: value for key, value in family_options.items() if key in own}))
    return Ensemble(recipe, members)


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


def _registry_facts() -> tuple[str, dict[int, str]]:
    """The default model and the ``--stems`` models, for the help texts."""
    try:
        from ..registry import load_registry

        registry = load_registry()
        return registry.default_model, dict(registry.stems_models)
    except Exception:  # a broken registry is reported when a command runs, not here
        return "the registry's default", {}


_DEFAULT_MODEL, _STEMS_MODELS = _registry_facts()
_STEMS_HELP = ", ".join([f"{count} ({model})" for count, model in sorted(_STEMS_MODELS.items())]
                        + ["2 (vocals + accompaniment)"])
_WEIGHTS_HELP = "; ".join(family.weights_help for family in all_families())

# Options shared by `separate` and `batch` (one definition, one help text each).
MODEL_OPTION = typer.Option(None, "--model", "-m", help=f"Model name or preset (see `stemsplit models`); default {_DEFAULT_MODEL}. Repeat for an ensemble (-n A -n B).", autocompletion=complete_model)
NAME_OPTION = typer.Option(None, "-n", "--name", help="Same as --model.", autocompletion=complete_model)
ENSEMBLE_OPTION = typer.Option(None, "--ensemble", help="How an ensemble (several -n, or a preset) combines its models' stems: per sample (*_wave) or per STFT bin (*_fft) the weighted mean, the median, or the value of smallest/largest magnitude. Default avg_wave (or the preset's).", show_default=False)
ENSEMBLE_WEIGHTS_OPTION = typer.Option(None, "--ensemble-weights", metavar="W1,W2,...", help="One positive weight per model of the ensemble, in -n order (avg_wave and avg_fft only; default equal).")
STEMS_OPTION = typer.Option(None, "--stems", help=f"The number of stems: {_STEMS_HELP}.")
WEIGHTS_OPTION = typer.Option(None, "--weights", help=f"Run a local checkpoint: {_WEIGHTS_HELP}.")
DEVICE_OPTION = typer.Option(os.environ.get("STEMSPLIT_DEVICE", "auto"), "-d", "--device", help="auto, cpu, cuda or mps.")
SHIFTS_OPTION = typer.Option(0, "--shifts", help="Random time shifts averaged (seeded; 0 = the reference's exact stems).")
SEED_OPTION = typer.Option(0, "--seed", help="Seed for the shifts.")
OVERLAP_OPTION = typer.Option(None, "--overlap", help="How much chunks overlap: a fraction below 1 (the share of a chunk its neighbour covers, e.g. 0.25), or a whole number N >= 2 (every sample is in N chunks: a chunk every 1/N of a chunk). Default: the model's (0.25; for a model with a config, its num_overlap).")
SEGMENT_OPTION = typer.Option(None, "--segment", help="Chunk length in seconds (default: the model's; rounded down to a length the network takes where it needs one).")
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
PARALLEL_OPTION = typer.Option(0, "-P", "--parallel", metavar="N", help="Tracks separated at the same time, sharing the --jobs threads (0 = auto: on a CPU, up to one per thread, at most 4, as memory allows; 1 on a GPU or for networks that run outside torch).")
BATCH_SIZE_OPTION = typer.Option(1, "--batch-size", help="Segments per network call.")
FORCE_OPTION = typer.Option(False, "--force", "-f", help="Redo tracks whose outputs exist.")
OFFLINE_OPTION = typer.Option(False, "--offline", help="Never use the network (also STEMSPLIT_OFFLINE=1).")
QUIET_OPTION = typer.Option(False, "-q", "--quiet", help="No messages on stderr, errors only.")
DEBUG_OPTION = typer.Option(False, "--debug", help="Show tracebacks.")


def _family_parameters() -> list[inspect.Parameter]:
    """Every family's own options, as keyword parameters typer turns into options."""
    parameters: dict[str, inspect.Parameter] = {}
    flags: dict[str, str] = {}
    for family in all_families():
        for option in family.options:
            if option.flag in flags or option.name in parameters:
                raise AssertionError(f"{option.flag} is declared twice ({family.name}, "
                                     f"{flags.get(option.flag)})")
            flags[option.flag] = family.name
            boolean = option.kind == "bool"
            default = typer.Option(False if boolean else None, option.flag, help=option.help,
                                   metavar=option.metavar, show_default=False)
            annotation = bool if boolean else Optional[option.python_type]
            parameters[option.name] = inspect.Parameter(
                option.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                annotation=annotation)
    return list(parameters.values())


def with_family_options(body: Callable[..., None]) -> Callable[..., None]:
    """A command taking ``body``'s options and every family's, before ``--force``; the
    family options reach ``body`` as one ``family_options`` dict."""
    own = [p for p in inspect.signature(body, eval_str=True).parameters.values()
           if p.name != "family_options"]
    extra = _family_parameters()
    names = {p.name for p in extra}
    at = next((i for i, p in enumerate(own) if p.name == "force"), len(own))
    parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
    parameters = parameters[:at] + extra + parameters[at:]

    def command(**values: Any) -> None:
        family_options = {key: values.pop(key) for key in list(values) if key in names}
        body(**values, family_options=family_options)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__doc__ = body.__doc__
    command.__name__ = body.__name__
    return command


@app.command("separate")
@with_family_options
def separate_command(
    inputs: List[Path] = SeparateInputs,
    model: Optional[List[str]] = MODEL_OPTION,
    name: Optional[List[str]] = NAME_OPTION,
    stems: Optional[int] = STEMS_OPTION,
    ensemble: Optional[EnsembleAlgorithm] = ENSEMBLE_OPTION,
    ensemble_weights: Optional[str] = ENSEMBLE_WEIGHTS_OPTION,
    weights: Optional[Path] = WEIGHTS_OPTION,
    out: Path = typer.Option(Path("separated"), "-o", "--out", help="Output folder; a subfolder per model is created."),
    filename: str = typer.Option("{track}/{stem}.{ext}", "--filename", help="Output name template: {track} {trackext} {stem} {ext} {model}."),
    device: str = DEVICE_OPTION,
    shifts: int = SHIFTS_OPTION,
    seed: int = SEED_OPTION,
    overlap: Optional[float] = OVERLAP_OPTION,
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
    force: bool = FORCE_OPTION,
    offline: bool = OFFLINE_OPTION,
    quiet: bool = QUIET_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document describing what was written."),
    debug: bool = DEBUG_OPTION,
    family_options: Optional[dict] = None,
) -> None:
    """Separate audio files into stems."""
    arguments = dict(locals())
    run_command(lambda: _separate_inputs(**arguments))


@app.command("batch")
@with_family_options
def batch_command(
    folders: List[str] = typer.Argument(..., help="Folders, files, quoted globs, or - to read paths from stdin."),
    recursive: bool = typer.Option(True, "--recursive/--no-recursive", help="Descend into subfolders."),
    filename: str = typer.Option("{relpath}/{track}/{stem}.{ext}", "--filename", help="Output name template: {relpath} {track} {trackext} {stem} {ext} {model}."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first failing file."),
    model: Optional[List[str]] = MODEL_OPTION,
    name: Optional[List[str]] = NAME_OPTION,
    stems: Optional[int] = STEMS_OPTION,
    ensemble: Optional[EnsembleAlgorithm] = ENSEMBLE_OPTION,
    ensemble_weights: Optional[str] = ENSEMBLE_WEIGHTS_OPTION,
    weights: Optional[Path] = WEIGHTS_OPTION,
    out: Path = typer.Option(Path("separated"), "-o", "--out", help="Output folder; a subfolder per model, then the input tree."),
    device: str = DEVICE_OPTION,
    shifts: int = SHIFTS_OPTION,
    seed: int = SEED_OPTION,
    overlap: Optional[float] = OVERLAP_OPTION,
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
    force: bool = FORCE_OPTION,
    offline: bool = OFFLINE_OPTION,
    quiet: bool = QUIET_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per file as it finishes (JSON Lines)."),
    debug: bool = DEBUG_OPTION,
    family_options: Optional[dict] = None,
) -> None:
    """Separate every audio file in folders; outputs mirror the folder tree; finished
    files are skipped on a re-run (--force redoes them)."""
    arguments = dict(locals())

    def body() -> int:
        from ..plan import collect_inputs
        items = collect_inputs(arguments.pop("folders"), recursive=arguments.pop("recursive"),
                               stdin=sys.stdin)
        if not items:
            raise UsageError("no audio files found")
        return _separate_inputs(items, batch=True, **arguments)

    run_command(body)


app.add_typer(models_app, name="models")
app.command("eval")(eval_command)


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
