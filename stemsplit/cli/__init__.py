"""The command line: the only package that imports typer and rich, and the only one that
touches the terminal.

``app`` builds the Typer application from the commands (``separate``: separate and batch;
``eval``; ``models``); ``terminal`` holds what they share (the stderr console, error reports,
exit codes, completion); ``listing`` prints the model list with the standard library alone,
so that ``stemsplit models`` answers without importing the rest. Importing this package
imports nothing: ``main`` loads the application when it runs.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``stemsplit FILE...`` means ``stemsplit separate FILE...``."""
    from .app import main as run

    run(argv)
