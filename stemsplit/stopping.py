"""How the process stops on SIGINT, SIGTERM and SIGHUP: cleanly, once, whatever else arrives.

* Inside a command's body (``command_scope``), the first stop signal raises in the main
  thread (KeyboardInterrupt for SIGINT, ``Terminated`` otherwise), and the command's cleanup
  runs: worker threads stop and are joined, writers abort, temporaries go.
* Every signal after it is absorbed until the process exits, so that the cleanup is never
  cut short. A second signal used to land there (`timeout -s INT` signals the process and
  then its group; a terminal's Ctrl-C reaches the whole group): the interpreter exited with
  a worker thread inside torch, whose C++ frames call std::terminate when the exiting
  interpreter ends the thread (exit 134, temporary files left).
* Outside a command's body (starting up, parsing options, or after the body has finished
  and flushed its output) there is nothing to clean up: the process says so in one line and
  exits at once with 128 + the signal's number.
* While a ``deferred`` section runs (``import torch``), the first signal is held and raised
  at its end: torch's C initialisation imports numpy and clears any exception it meets, so
  a KeyboardInterrupt raised there was swallowed (the run went on, unstoppable since later
  signals are absorbed) or left numpy half-imported (`module 'numpy' has no attribute`).
* Once the command that ``python -m stemsplit`` runs has finished (cleanup included), the
  stop signals are ignored for the few moments left: the interpreter's finalisation would
  otherwise put back their default action, and a late signal would kill the process
  halfway through its exit.
* A signal the process inherited as ignored (``nohup``, a shell's background job) stays
  ignored.

Standard library only: ``stemsplit.__main__`` installs the handlers before anything else.
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from typing import Iterator

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))
"""The signals that stop a run cleanly (exit 128 + the signal's number)."""

_WORDS = {getattr(signal, "SIGINT", -1): "interrupted", getattr(signal, "SIGHUP", -1): "hung up"}


class Terminated(BaseException):
    """Raised on SIGTERM (or SIGHUP) so that temporary files are cleaned up like on Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_stopping: list[int] = []
"""The signal that is stopping this process, once one has arrived."""
_in_command = [False]
_deferring = [0]
_held: list[int] = []
"""The stop signal that arrived during a ``deferred`` section, raised at its end."""
_process_wide = [False]


def words(signum: int) -> str:
    """What stderr says when ``signum`` stops the run."""
    return _WORDS.get(signum, "terminated")


def _on_stop_signal(signum, frame):  # pragma: no cover - exercised through subprocess tests
    if _stopping:
        return
    if not _in_command[0]:
        try:
            os.write(2, (words(signum) + "\n").encode())
        except OSError:
            pass
        os._exit(128 + signum)
    _stopping.append(signum)
    if _deferring[0]:
        _held.append(signum)
        return
    _raise(signum)


def _raise(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt()
    raise Terminated(signum)


def install(process_wide: bool = False) -> dict:
    """Handle the stop signals as the module says (main thread only); returns the handlers
    they replace (``restore``). ``process_wide``: for the ``stemsplit`` process itself, whose
    command ends with its exit (``finish`` then ignores late signals)."""
    if process_wide:
        _process_wide[0] = True
    previous = {}
    for signum in STOP_SIGNALS:
        try:
            current = signal.getsignal(signum)
            if current == signal.SIG_IGN:
                continue  # ignored on purpose (`nohup`, a shell's background job): keep it
            previous[signum] = signal.signal(signum, _on_stop_signal)
        except (ValueError, OSError):  # not the main thread, or not settable here
            pass
    return previous


def finish(previous: dict) -> None:
    """A command has ended: in the ``stemsplit`` process, ignore the stop signals until the
    exit; in a process that called a command (the tests, the Python API), put back what
    ``install`` replaced, unless a stop signal has arrived (later ones stay absorbed)."""
    if _process_wide[0]:
        for signum in previous:
            try:
                signal.signal(signum, signal.SIG_IGN)
            except (ValueError, OSError):
                pass
        return
    if _stopping:
        return
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@contextmanager
def deferred() -> Iterator[None]:
    """A section a stop signal must not interrupt: it is raised when the section ends."""
    _deferring[0] += 1
    try:
        yield
    finally:
        _deferring[0] -= 1
    if not _deferring[0] and _held:
        _raise(_held.pop())


def stopping() -> int | None:
    """The stop signal that has arrived, if one has."""
    return _stopping[0] if _stopping else None


@contextmanager
def command_scope() -> Iterator[None]:
    """A command's body: a stop signal raises here, so the body can clean up."""
    _in_command[0] = True
    try:
        yield
    finally:
        _in_command[0] = False
