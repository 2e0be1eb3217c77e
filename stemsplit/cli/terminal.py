"""What the command line's modules share: the stderr console, one-line error reports, the
exit-code mapping of a command body, and shell completion of model names.

Part of the command-line layer (``stemsplit.cli``): only its modules touch the terminal. Importing it is cheap (no torch).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator

import typer
from rich.console import Console

from .. import settings, stopping
from ..errors import StemsplitError

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


class ProgressDisplay:
    """A context that shows ``self.progress`` (a rich Progress, set by the subclass where
    stderr is a terminal; None elsewhere) while it is open, and prints status lines unless
    ``quiet``."""

    progress = None
    quiet = False
    download_label = "download {filename}"
    """The description of a download's bar."""

    def message(self, text: str) -> None:
        """A status line on stderr, unless quiet."""
        if not self.quiet:
            stderr.print(text, markup=False)

    def download_progress(self, filename: str, done: int, total: int | None) -> None:
        """One bar per file being downloaded (``cache``'s progress callback)."""
        if self.progress is None:
            return
        bars = self.__dict__.setdefault("_download_bars", {})
        if filename not in bars:
            bars[filename] = self.progress.add_task(
                self.download_label.format(filename=filename), total=total)
        self.progress.update(bars[filename], completed=done, total=total)

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def report_error(error: BaseException, debug: bool) -> None:
    if debug:
        import traceback
        traceback.print_exception(error, file=sys.stderr)
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    stderr.print(f"error: {message}", markup=False)
    hint = getattr(error, "hint", None)
    if hint:
        stderr.print(f"hint: {hint}", markup=False)


def debug_requested() -> bool:
    return settings.debug() or "--debug" in sys.argv


def print_json_line(document: dict) -> None:
    """One JSON document on one line of stdout, flushed (JSON Lines)."""
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def prepare_process(jobs: int) -> None:
    """Before a command imports torch and starts its threads: glibc's malloc keeps freed
    memory (``allocator``), and torch gets ``jobs`` threads (0: its default, all cores)."""
    from ..allocator import keep_freed_memory

    keep_freed_memory()
    with stopping.deferred():  # torch's C start-up would swallow a KeyboardInterrupt
        import torch

    if jobs > 0:
        torch.set_num_threads(jobs)


def run_command(callback: Callable[[], int]) -> None:
    """Run a command body, mapping errors and signals to one stderr line and an exit code.

    Exit codes: 0 success, 1 an input or model failed, 2 usage, 130 Ctrl-C, 141 the reader
    of stdout went away, 143 SIGTERM."""
    previous = stopping.install()  # as `python -m stemsplit` did already (stemsplit.stopping)
    debug = debug_requested()
    try:
        with stopping.command_scope():
            code = callback()
            sys.stdout.flush()  # a closed stdout fails here, not at interpreter exit
    except StemsplitError as error:
        report_error(error, debug)
        code = error.exit_code
    except BrokenPipeError:
        # The reader of stdout went away (`stemsplit batch DIR | head`): stop quietly, as a
        # Unix tool killed by SIGPIPE would (temporary files are cleaned up on the way out).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141  # 128 + SIGPIPE (13), as on Unix; also on Windows, which has no SIGPIPE
    except KeyboardInterrupt:
        stderr.print(stopping.words(signal.SIGINT), markup=False)
        code = 128 + signal.SIGINT
    except stopping.Terminated as stop:
        stderr.print(stopping.words(stop.signum), markup=False)
        code = 128 + stop.signum
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as error:  # a bug: still one line, the traceback with --debug
        if debug:
            raise
        stderr.print(f"error: internal error: {type(error).__name__}: {error}".splitlines()[0],
                     markup=False)
        stderr.print("hint: rerun with --debug for the traceback, and please report it",
                     markup=False)
        code = 1
    finally:
        stopping.finish(previous)
    raise typer.Exit(code or 0)


@contextmanager
def warnings_as_lines() -> Iterator[None]:
    """The RuntimeWarnings the library issues in the block (``Separator``'s note on an
    emulated bf16, say), each printed as one ``warning:`` line on stderr, as the
    command line's own warnings are."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        try:
            yield
        finally:
            for warning in caught:
                if issubclass(warning.category, RuntimeWarning):
                    stderr.print(f"warning: {warning.message}", markup=False)
                else:
                    warnings.warn_explicit(warning.message, warning.category,
                                           warning.filename, warning.lineno)


class _StderrHandler(logging.Handler):
    """Library log records as stderr lines: ``warning: ...`` for warnings, plain for info."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # pragma: no cover - a malformed record
            return
        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        stderr.print(prefix + text, markup=False)


def install_log_handler(quiet: bool = False) -> None:
    """Show the cache's notices (a corrupt file deleted, waiting for another download)."""
    logger = logging.getLogger("stemsplit.cache")
    for handler in list(logger.handlers):
        if isinstance(handler, _StderrHandler):
            logger.removeHandler(handler)
    handler = _StderrHandler(level=logging.WARNING if quiet else logging.INFO)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def complete_model(incomplete: str) -> list[str]:
    """Shell completion of model names and aliases, from weights.toml only (names alone:
    typer wraps long descriptions into zsh's completion script and breaks it)."""
    try:
        from ..registry import load_registry

        return [name for name, _ in load_registry().completions(incomplete)]
    except Exception:  # a broken registry must not break the shell
        return []


def complete_for_implicit_separate(commands: tuple[str, ...]) -> None:
    """Shell completion of ``stemsplit song.mp3 -n <TAB>``: the words the shell hands over
    (bash: COMP_WORDS/COMP_CWORD; zsh, fish, PowerShell: _TYPER_COMPLETE_ARGS) get the
    implied ``separate`` inserted, as main() does for a real command line."""
    if not any(key.endswith("_COMPLETE") and key.startswith("_STEMSPLIT") for key in os.environ):
        return

    def needs_separate(words: list[str], typed: int) -> bool:
        return (typed >= 2 and len(words) >= 2 and words[1] not in commands
                and not words[1].startswith("-"))

    words = os.environ.get("COMP_WORDS")
    if words is not None and os.environ.get("COMP_CWORD", "").isdigit():
        split = words.split()
        if needs_separate(split, int(os.environ["COMP_CWORD"])):
            head, _, rest = words.partition(split[0])
            os.environ["COMP_WORDS"] = f"{head}{split[0]} separate{rest}"
            os.environ["COMP_CWORD"] = str(int(os.environ["COMP_CWORD"]) + 1)
        return
    line = os.environ.get("_TYPER_COMPLETE_ARGS")
    if line:
        split = line.split()
        typed = len(split) if line.endswith(" ") else len(split) - 1
        if needs_separate(split, typed):
            head, _, rest = line.partition(split[0])
            os.environ["_TYPER_COMPLETE_ARGS"] = f"{head}{split[0]} separate{rest}"
