"""``stemsplit models``: list, info, download, verify, remove and path.

Mounted by cli.py as a Typer group; bare ``stemsplit models`` lists. Nothing here imports torch
or (except to download) huggingface_hub, so the listing and shell completion stay fast.
Results go to stdout (tables, paths, ``--json``); messages and download bars to stderr.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, List, Optional

import typer

from .listing import (_human, _list, _model_row, _out,  # noqa: F401 (the list: without
                      _preset_row, _print_table,  # typer, for __main__; see listing.py)
                      download_size)
from .terminal import (ProgressDisplay, complete_model, install_log_handler, report_error,
                       run_command, stderr)

if TYPE_CHECKING:  # pragma: no cover
    from ..registry import Registry
    from ..specs import ModelSpec


models_app = typer.Typer(
    name="models",
    invoke_without_command=True,
    no_args_is_help=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="List, inspect, download, verify and remove models.\n\n"
    "Bare `stemsplit models` lists them (same as `stemsplit models list`).",
)


def _registry() -> "Registry":
    from ..registry import load_registry

    return load_registry()


def _specs(names: Optional[List[str]], everything: bool = False) -> list["ModelSpec"]:
    registry = _registry()
    if everything or not names:
        return list(registry.models.values())
    specs: list = []
    for name in names:
        preset = registry.preset(name)
        for model in preset.models if preset is not None else [name]:  # a preset: its models
            spec = registry.get(model)
            if spec not in specs:
                specs.append(spec)
    return specs


@models_app.callback()
def models_main(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON."),
) -> None:
    """List, inspect, download, verify and remove models (bare: list them)."""
    if ctx.invoked_subcommand is None:
        run_command(lambda: _list(as_json))


@models_app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON."),
) -> None:
    """The models: name, stems, published SDR, download size, cached or not, description."""
    run_command(lambda: _list(as_json))


# -- info ------------------------------------------------------------------------------


def _info_document(spec: "ModelSpec", default: str) -> dict:
    from ..cache.integrity import ChecksumStore, expected_digest
    from ..cache.inventory import is_cached, local_files
    from ..families import family_named

    family = family_named(spec.family)
    store = ChecksumStore()
    files = []
    for local in local_files(spec):
        if local.path is not None:
            digest, origin = expected_digest(local.path, local.file.sha256, store,
                                             recorded_from=local.file.sha256_from)
        else:
            digest = local.file.sha256
            origin = local.file.sha256_from if digest is not None else None
        files.append({
            "file": local.file.filename,
            "source": local.file.kind if local.file.source == "url" else local.file.source,
            "from": local.file.location,
            "mirrors": list(local.file.mirrors),
            "member": local.file.member,
            "sha256": digest,
            "sha256_from": origin,
            "sha256_is_prefix": digest is not None and len(digest) < 64,
            "cached": local.path is not None,
            "path": str(local.path) if local.path is not None else None,
            "size_bytes": local.size,
            "published_size_bytes": local.file.size,
        })
    document = {
        "name": spec.name,
        "default": spec.name == default,
        "aliases": list(spec.aliases),
        "description": spec.description,
        "family": spec.family,
        "architecture": spec.architecture,
        "stems": list(spec.stems),
        "sample_rate": spec.sample_rate,
        "sdr": spec.sdr,
        "unsupported": spec.unsupported,
        "cached": is_cached(spec),
        "download_bytes": download_size([spec]),
        "sources": family.sources(spec),
        "files": files,
    }
    document.update(family.details(spec))
    return document


def _preset_info(preset, registry: "Registry", as_json: bool) -> int:
    from ..cache.inventory import is_cached

    document = _preset_row(preset, registry)
    document["sample_rate"] = registry.get(preset.models[0]).sample_rate
    document["members"] = [{"name": model, "cached": is_cached(registry.get(model)),
                            "stems": list(registry.get(model).stems),
                            "weight": preset.weights[index] if preset.weights else 1.0}
                           for index, model in enumerate(preset.models)]
    for key in ("default", "family", "sdr", "size_bytes", "files_cached", "aliases", "supported"):
        document.pop(key)
    if as_json:
        _out(json.dumps(document, indent=2))
        return 0
    _out(f"{preset.name} (preset: an ensemble)")
    _out(f"  {preset.description}")
    _out(f"  algorithm     {preset.algorithm}")
    _out(f"  stems         {', '.join(document['stems'])}")
    _out(f"  sample rate   {document['sample_rate']} Hz")
    _out(f"  download      {_download_text(document['download_bytes'])}")
    _out(f"  cached        {'yes' if document['cached'] else 'no'}")
    _out("  models (weight, cached)")
    for member in document["members"]:
        _out(f"    {member['name']}  {member['weight']:g}  "
             f"{'yes' if member['cached'] else 'no'}  ({', '.join(member['stems'])})")
    return 0


def _download_text(size: int | None) -> str:
    """A download size for ``models info``: "639.3 MB (639,331,213 bytes)"."""
    if size is None:
        return "size unknown (weights.toml does not record it)"
    return f"{_human(size)} ({size:,} bytes)"


def _info(name: str, as_json: bool) -> int:
    registry = _registry()
    preset = registry.preset(name)
    if preset is not None:
        return _preset_info(preset, registry, as_json)
    spec = registry.get(name)
    document = _info_document(spec, registry.default_model)
    if as_json:
        _out(json.dumps(document, indent=2))
        return 0
    title = spec.name + (" (default)" if document["default"] else "")
    if spec.aliases:
        title += f", alias {', '.join(spec.aliases)}"
    _out(title)
    _out(f"  {spec.description}")
    if spec.unsupported:
        _out(f"  not supported yet: {spec.unsupported}")
    _out(f"  family        {spec.family} ({spec.architecture})")
    _out(f"  stems         {', '.join(spec.stems)}")
    _out(f"  sample rate   {spec.sample_rate} Hz")
    _out(f"  SDR           {f'{spec.sdr:.1f} dB (MUSDB18-HQ, published)' if spec.sdr else '-'}")
    from ..families import family_named

    for label, text in family_named(spec.family).detail_lines(spec):
        _out(f"  {label:<13} {text}")
    _out(f"  download      {_download_text(document['download_bytes'])}")
    _out(f"  cached        {'yes' if document['cached'] else 'no'}")
    _out("  sources (tried in this order)")
    for number, source in enumerate(document["sources"], 1):
        if source["kind"] == "huggingface":
            _out(f"    {number}. Hugging Face {source['repo']} ({source['url']})")
        elif "urls" in source:
            _out(f"    {number}. " + ", then ".join(source["urls"]))
        else:
            _out(f"    {number}. {source['url']}" + (f" ({source['note']})" if source.get("note") else ""))
    _out("  files")
    width = max((len(f["file"]) for f in document["files"]), default=0)
    for entry in document["files"]:
        if entry["sha256"] is None:
            digest = "sha256 not recorded (remembered at first download)"
        else:
            digest = f"sha256 {entry['sha256']}" + ("..." if entry["sha256_is_prefix"] else "")
            digest += f" ({entry['sha256_from']})"
        where = (f"{entry['path']} ({_human(entry['size_bytes'])})" if entry["cached"]
                 else "not cached" + (f" ({_human(entry['published_size_bytes'])} to download)"
                                      if entry["published_size_bytes"] is not None else ""))
        _out(f"    {entry['file']:<{width}}  {entry['source']:<6}  {digest}")
        _out(f"    {'':<{width}}  {'':<6}  {where}")
    return 0


@models_app.command("info")
def info_command(
    name: str = typer.Argument(..., metavar="NAME", help="Model or preset name, or an alias.", autocompletion=complete_model,
                               show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """A model's sources, files, checksums, where it is cached, and its description."""
    run_command(lambda: _info(name, as_json))


# -- download --------------------------------------------------------------------------


class DownloadBars(ProgressDisplay):
    """One progress bar per file on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.progress = None
        if not quiet and stderr.is_terminal:
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                       TimeRemainingColumn, TransferSpeedColumn)
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(), console=stderr,
                redirect_stdout=False, redirect_stderr=False,
            )

    download_label = "{filename}"

    def __call__(self, filename: str, done: int, total: int | None) -> None:
        self.download_progress(filename, done, total)


def _download_one(spec: "ModelSpec", bars: DownloadBars) -> list:
    """The model's local files after fetching what is missing, and those fetched now."""
    from ..cache.locations import offline_policy
    from ..families import family_named

    fetched = family_named(spec.family).fetch(spec, offline=offline_policy(None), progress=bars)
    return [fetched.paths, fetched.downloaded, fetched.origin]


def _download(names: Optional[List[str]], everything: bool, quiet: bool, as_json: bool) -> int:
    from ..errors import StemsplitError, UsageError

    if not names and not everything:
        raise UsageError("name the models to download, or give --all",
                         hint="`stemsplit models` lists them")
    if names and everything:
        raise UsageError("give model names or --all, not both")
    install_log_handler(quiet)
    specs = _specs(names, everything)
    failed = 0
    report = []
    with DownloadBars(quiet) as bars:
        for spec in specs:
            if spec.unsupported:
                if everything:
                    if not quiet:
                        stderr.print(f"{spec.name}: skipped ({spec.unsupported})", markup=False)
                    continue
            try:
                paths, fetched, origin = _download_one(spec, bars)
            except StemsplitError as error:
                report_error(error, "--debug" in sys.argv)
                report.append({"name": spec.name, "status": "failed", "error": error.message})
                failed += 1
                continue
            size = sum(path.stat().st_size for path in fetched if path.exists())
            if not quiet:
                if fetched:
                    stderr.print(f"{spec.name}: downloaded {len(fetched)} file"
                                 f"{'s' if len(fetched) != 1 else ''} ({_human(size)}) from "
                                 f"{origin}", markup=False)
                else:
                    stderr.print(f"{spec.name}: already cached ({origin})", markup=False)
            report.append({"name": spec.name, "status": "downloaded" if fetched else "cached",
                           "paths": [str(path) for path in paths],
                           "downloaded": [str(path) for path in fetched]})
    if as_json:
        _out(json.dumps(report, indent=2))
    else:  # after the bars are gone
        for entry in report:
            for path in entry.get("paths", []):
                _out(path)
    return 1 if failed else 0


@models_app.command("download")
def download_command(
    names: Optional[List[str]] = typer.Argument(None, metavar="NAME", help="Models to fetch.",
                                                autocompletion=complete_model, show_default=False),
    everything: bool = typer.Option(False, "--all", help="Every supported model."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No messages or bars, errors only."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Fetch models ahead, for offline use (prints the local paths)."""
    run_command(lambda: _download(names, everything, quiet, as_json))


# -- verify ----------------------------------------------------------------------------


def _verify(names: Optional[List[str]], keep: bool, as_json: bool) -> int:
    from ..cache.inventory import is_cached, local_files, verify_model

    install_log_handler()
    specs = _specs(names)
    explicit = bool(names)
    results = []
    corrupt = incomplete = 0
    for spec in specs:
        if not any(local.path is not None for local in local_files(spec)):
            if explicit:
                incomplete += 1
                results.append({"name": spec.name, "file": None, "status": "not cached",
                                "path": None, "detail": f"run `stemsplit models download {spec.name}`"})
            continue
        for check in verify_model(spec, delete=not keep):
            corrupt += not check.ok
            results.append({"name": spec.name, "file": check.path.name,
                            "status": "ok" if check.ok else "corrupt", "path": str(check.path),
                            "detail": check.detail, "sha256": check.sha256})
        if explicit and not is_cached(spec):
            incomplete += 1
            results.append({"name": spec.name, "file": None, "status": "incomplete", "path": None,
                            "detail": f"run `stemsplit models download {spec.name}`"})
    if as_json:
        _out(json.dumps(results, indent=2))
    else:
        for row in results:
            label = row["status"].upper() if row["status"] != "ok" else "ok"
            _out(f"{row['name']}  {row['file'] or '-'}  {label}  {row['detail']}"
                 + (f"  {row['path']}" if row["path"] else ""))
    checked = sum(1 for row in results if row["file"])
    summary = f"{checked} file{'s' if checked != 1 else ''} checked, {corrupt} corrupt"
    if corrupt:
        summary += " (kept)" if keep else " (deleted; `stemsplit models download NAME` fetches them again)"
    if incomplete:
        summary += f", {incomplete} model{'s' if incomplete != 1 else ''} not fully cached"
    if not results:
        summary = "nothing cached to verify"
    stderr.print(summary, markup=False)
    return 1 if corrupt or incomplete else 0


@models_app.command("verify")
def verify_command(
    names: Optional[List[str]] = typer.Argument(None, metavar="NAME", help="Models to check (default: every cached one).",
                                                autocompletion=complete_model, show_default=False),
    keep: bool = typer.Option(False, "--keep", help="Keep corrupt files (default: delete them)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Re-hash cached files against their recorded sha256; exit 1 if any is corrupt."""
    run_command(lambda: _verify(names, keep, as_json))


# -- remove ----------------------------------------------------------------------------


def _remove(names: Optional[List[str]], everything: bool, quiet: bool) -> int:
    from ..cache.inventory import remove_model
    from ..errors import UsageError

    if not names and not everything:
        raise UsageError("name the models to remove, or give --all")
    others = list(_registry().models.values())
    for spec in _specs(names, everything):
        removed = remove_model(spec, others)
        for path in removed:
            _out(str(path))
        if not quiet and (removed or not everything):
            stderr.print(f"{spec.name}: removed {len(removed)} file{'s' if len(removed) != 1 else ''}"
                         if removed else f"{spec.name}: nothing cached", markup=False)
    return 0


@models_app.command("remove")
def remove_command(
    names: Optional[List[str]] = typer.Argument(None, metavar="NAME", help="Models to delete from the caches.",
                                                autocompletion=complete_model, show_default=False),
    everything: bool = typer.Option(False, "--all", help="Every model."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No messages."),
) -> None:
    """Delete a model's files from every cache (prints the paths deleted)."""
    run_command(lambda: _remove(names, everything, quiet))


# -- path ------------------------------------------------------------------------------

_PATH_ROLES = {
    "huggingface": "Hugging Face hub cache (HF_HOME, HF_HUB_CACHE): the hub files",
    "stemsplit": "STEMSPLIT_CACHE: checksums, locks, plain URL downloads",
    "torch_hub": "the torch hub cache (TORCH_HOME): checkpoints shared with torch.hub",
}


def _path(which: Optional[str], as_json: bool) -> int:
    from ..cache.locations import cache_locations
    from ..errors import UsageError

    locations = cache_locations()
    if which is not None:
        key = {"hf": "huggingface", "torch": "torch_hub"}.get(which, which)
        if key not in locations:
            raise UsageError(f"unknown cache '{which}'", hint="choose huggingface, stemsplit or torch_hub")
        _out(str(locations[key]))
        return 0
    if as_json:
        _out(json.dumps({key: str(value) for key, value in locations.items()}, indent=2))
        return 0
    width = max(len(key) for key in locations)
    for key, value in locations.items():
        _out(f"{key:<{width}}  {value}")
    return 0


def _complete_cache(incomplete: str) -> list[str]:
    return [key for key in _PATH_ROLES if key.startswith(incomplete)]


@models_app.command("path")
def path_command(
    which: Optional[str] = typer.Argument(None, metavar="CACHE", help="Print only this one: huggingface, stemsplit or torch_hub.",
                                          autocompletion=_complete_cache, show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Print the cache folders: the Hugging Face cache, STEMSPLIT_CACHE, the torch hub cache."""
    run_command(lambda: _path(which, as_json))
