"""Joining a Ray cluster, or starting one on this machine, for the length of a run.

``--ray local`` starts a cluster here (this machine's CPUs and GPUs) and stops it at the end;
``--ray auto`` joins the one ``ray start`` made on this machine; ``--ray HOST:PORT`` (or
``ray://HOST:PORT``) joins a remote head. What the user can get wrong is answered in one
line: ray not installed, an address that does not answer (checked with a plain TCP connect
first, within the downloads' connection timeout, ``cache.http.connect_timeout``: 4 s, or
``STEMSPLIT_CONNECT_TIMEOUT``, where Ray itself would retry for a minute), a head that
refuses this client's token.

Token authentication (Ray 2.52+; on by default for clusters ``ray start`` makes since 2.59):
a client sends its token only when ``RAY_AUTH_MODE=token`` is set. When it is not set and a
token is at hand (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``, where
``ray start`` writes it), joining sets it: a head without authentication accepts a token too.

Ray's own chatter (its INFO logs, the native core's retry warnings, Ray Data's progress bars)
stays off stderr unless ``debug``; the stemsplit variables (``STEMSPLIT_*``, ``HF_*``) go to
the workers, so that they find the same caches and settings as this process, and so do
glibc's malloc settings that the command line applies to its own process (see
``allocator``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ..errors import ClusterError, UsageError

RAY_EXTRA_HINT = "install the ray extra: pip install 'stemsplit[ray]' (from a checkout: " \
                 "pip install '.[ray]')"

LOCAL_OBJECT_STORE_BYTES = 1 << 30
"""The object store of a ``--ray local`` cluster. Only paths and small records go through it
(never audio), so 1 GiB is ample; Ray's default, 30% of memory (7 GiB on a 24 GiB machine),
would take /dev/shm that the separations need."""

FORWARDED_VARIABLE_PREFIXES = ("STEMSPLIT_", "HF_", "HUGGINGFACE_")
"""Environment variables the workers get from the driver: where the caches are, offline."""

TOKEN_VARIABLES = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
DEFAULT_TOKEN_PATH = Path("~/.ray/auth_token")


def import_ray() -> Any:
    """The ray module; a UsageError naming the extra when it is not installed."""
    try:
        import ray
        import ray.data  # noqa: F401 (the extra is ray[data])
    except ImportError as error:
        raise UsageError(f"--ray needs Ray Data, which is not installed ({error})",
                         hint=RAY_EXTRA_HINT) from None
    return ray


def check_address(address: str) -> None:
    """A UsageError for a ``--ray`` value that is none of local, auto, HOST:PORT."""
    if address in ("local", "auto"):
        return
    _host_and_port(address)


def _host_and_port(address: str) -> tuple[str, int]:
    bare = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = bare.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--ray {address}: give local, auto, or the head's HOST:PORT",
                         hint="`ray start --head` prints the address to join")
    return host.strip("[]"), int(port)


def _check_reachable(address: str) -> None:
    from ..cache.http import connect_timeout

    host, port = _host_and_port(address)
    timeout = connect_timeout()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as error:
        reason = "no answer" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        raise ClusterError(f"no Ray cluster answers at {address} ({reason} within {timeout:g} s)",
                           hint="start one with `ray start --head`, or use --ray local") from None


def _token_at_hand() -> bool:
    if any(os.environ.get(name) for name in TOKEN_VARIABLES):
        return True
    return DEFAULT_TOKEN_PATH.expanduser().is_file()


def _forwarded_variables() -> dict[str, str]:
    """What the workers' environment gets from this one: the stemsplit and Hugging Face
    variables, and the allocator settings the command line would apply (``allocator``)."""
    from ..allocator import child_environment

    forwarded = {name: value for name, value in os.environ.items()
                 if name.startswith(FORWARDED_VARIABLE_PREFIXES)}
    return {**child_environment(), **forwarded}


@contextlib.contextmanager
def _native_stderr_kept_aside(debug: bool) -> Iterator[None]:
    """While Ray starts or stops: what its native core writes to fd 2 goes to a temporary
    file, thrown away (Ray's Python errors, which the caller reports, are not on fd 2),
    unless ``debug``."""
    if debug:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as aside:
        os.dup2(aside.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _quiet_ray_logging(debug: bool) -> None:
    level = logging.DEBUG if debug else logging.ERROR
    for name in ("ray", "ray.data", "ray.data._internal"):
        logging.getLogger(name).setLevel(level)
    if not debug:
        # Ray Data logs a traceback for each block it gives up on (a worker that died every
        # attempt), which the run reports itself as that file's failure.
        logging.getLogger("ray.data._internal.execution").setLevel(logging.CRITICAL)


@contextlib.contextmanager
def _stdout_kept_for_results(debug: bool) -> Iterator[None]:
    """Ray's driver prints the cluster's error messages (a worker that died, a task to be
    retried) on stdout, from a thread of its own. stdout carries this tool's results alone:
    those messages go to stderr with ``debug``, else nowhere (the run reports each file's
    failure itself)."""
    try:
        from ray._private import worker as ray_worker
    except ImportError:
        yield
        return
    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None:
        yield
        return

    def to_stderr_or_nowhere(data: dict, *args: Any, **keywords: Any) -> None:
        if debug:
            original({**data, "is_err": True}, *args, **keywords)

    ray_worker.print_to_stdstream = to_stderr_or_nowhere
    try:
        yield
    finally:
        ray_worker.print_to_stdstream = original


@contextlib.contextmanager
def connected(address: str, *, debug: bool = False) -> Iterator[Any]:
    """Ray, initialised for ``address`` (local, auto, HOST:PORT), shut down on the way out
    (a ``local`` cluster stops with it; a joined cluster's actors of this run end with it)."""
    check_address(address)
    if address not in ("local", "auto"):
        _check_reachable(address)
    # Ray reads these when it is imported: set them first.
    if address != "local" and "RAY_AUTH_MODE" not in os.environ and _token_at_hand():
        os.environ["RAY_AUTH_MODE"] = "token"
    if not debug:  # the native core's warnings (retries, restart caveats) on our stderr
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    ray = import_ray()
    if ray.is_initialized():  # a user's own session (the Python API): use it as it is
        yield ray
        return
    arguments: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": debug,
        "logging_level": logging.DEBUG if debug else logging.WARNING,
        "runtime_env": {"env_vars": _forwarded_variables()},
    }
    if address == "local":
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        arguments.update(address="local", object_store_memory=LOCAL_OBJECT_STORE_BYTES)
    else:
        arguments["address"] = address
    _quiet_ray_logging(debug)
    with _stdout_kept_for_results(debug):
        yield from _initialised(ray, address, arguments, debug)


def _initialised(ray: Any, address: str, arguments: dict[str, Any], debug: bool) -> Iterator[Any]:
    try:
        with _native_stderr_kept_aside(debug):
            ray.init(**arguments)
    except ConnectionError as error:
        where = "this machine (no `ray start` cluster found)" if address == "auto" else address
        raise ClusterError(
            f"could not join the Ray cluster at {where}: {error}",
            hint="if its head runs with token authentication, set RAY_AUTH_TOKEN to its "
                 "token (`ray get-auth-token` on the head)") from None
    except (RuntimeError, ValueError) as error:
        raise ClusterError(f"Ray did not start: {str(error).splitlines()[0]}") from None
    try:
        data_context = ray.data.DataContext.get_current()
        data_context.enable_progress_bars = debug
        data_context.print_on_execution_start = debug
        yield ray
    finally:
        with _native_stderr_kept_aside(debug):
            ray.shutdown()
