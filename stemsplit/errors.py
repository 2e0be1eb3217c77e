"""Errors a user can cause. Each carries a one-line message and an optional hint.

The CLI prints ``error: <message>`` (and ``hint: <hint>``) on stderr and exits with
``exit_code``; nothing below the CLI prints anything.
"""

from __future__ import annotations


class StemsplitError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(StemsplitError):
    """Options that contradict each other or name something that does not exist."""

    exit_code = 2


class InputError(StemsplitError):
    """An input that is missing, unreadable, or not decodable audio."""


class ModelError(StemsplitError):
    """An unknown model name, or a checkpoint that cannot be built."""


class UnknownModelError(ModelError, UsageError):
    """A model name that weights.toml does not list (a usage error: exit code 2)."""


class WeightsUnavailableError(ModelError):
    """The weights are neither cached nor downloadable (offline, no network)."""


class UnsafeCheckpointError(ModelError):
    """A pickled checkpoint that asks for something other than plain data and tensors."""


class ChecksumError(ModelError):
    """A downloaded or cached file whose sha256 does not match the recorded one."""


class OutputError(StemsplitError):
    """An output that cannot be written (permissions, disk full, exists)."""


class ClusterError(StemsplitError):
    """A Ray cluster that cannot be reached or joined, or that failed under the run."""
