"""The model list of ``stemsplit models`` (and ``models list``, ``--json``), with the standard
library alone.

It is what a new user runs first, so ``stemsplit.__main__`` answers those words with
``print_listing`` without importing the rest of the command line (typer, rich, every
command's options); ``models_cli`` mounts the same ``_list`` as its typer commands. Results
go to stdout: a plain-text table (``PlainTable``: rich's borderless layout, at a fraction of
its cost) or JSON.
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


def _print_table(table: "PlainTable") -> None:
    """A table on stdout as plain text (no colour, no trailing blanks), fitted to the
    terminal's width when stdout is one."""
    import shutil

    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    for line in table.lines(max(width, 80) if width else None):
        _out(line)


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
        "files_cached": None,
        "aliases": [],
        "description": preset.description,
        "supported": True,
        "models": list(preset.models),
        "algorithm": preset.algorithm,
        "weights": list(preset.weights) if preset.weights else None,
    }


def _list(as_json: bool) -> int:
    from ..registry import load_registry

    registry = load_registry()
    rows = [_model_row(spec, registry.default_model) for spec in registry.models.values()]
    presets = [_preset_row(preset, registry) for preset in registry.presets.values()]
    if as_json:
        _out(json.dumps(rows + presets, indent=2))
        return 0
    Table = PlainTable  # rich's layout, without rich's cost

    table = Table(box=None, pad_edge=False)
    for column in ("model", "family", "architecture", "stems", "SDR", "size", "cached", "description"):
        table.add_column(column, justify="right" if column in ("stems", "SDR", "size") else "left")
    for row in rows:
        label = row["name"] + (" *" if row["default"] else "")
        short = [alias for alias in row["aliases"] if len(alias) <= 12]  # all in `info`
        if short:
            label += f" ({', '.join(short)})"
        description = row["description"]
        if not row["supported"]:
            description = "not supported yet: " + description
        cached = "yes" if row["cached"] else "partly" if row["files_cached"] else "no"
        table.add_row(label, row["family"], row["architecture"], str(len(row["stems"])),
                      f"{row['sdr']:.1f}" if row["sdr"] else "-", _human(row["size_bytes"]),
                      cached, description)
    _print_table(table)
    if presets:
        _out()
        table = Table(box=None, pad_edge=False)
        for column in ("preset", "models", "algorithm", "stems", "cached", "description"):
            table.add_column(column, justify="right" if column == "stems" else "left")
        for row in presets:
            weights = f" ({':'.join(f'{w:g}' for w in row['weights'])})" if row["weights"] else ""
            table.add_row(row["name"], " + ".join(row["models"]), row["algorithm"] + weights,
                          str(len(row["stems"])), "yes" if row["cached"] else "no",
                          row["description"])
        _print_table(table)
    _out(f"* default ({registry.default_model}). `stemsplit models info NAME` for details, "
         "`stemsplit models download NAME` to fetch ahead; a preset is an ensemble of models "
         "(`-n PRESET`).")
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
