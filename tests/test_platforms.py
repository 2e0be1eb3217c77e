"""Windows and macOS code paths, run on Linux by simulating the platform.

* no ``signal.SIGPIPE`` (Windows): a closed stdout still exits 141, quietly;
* no ``fcntl`` (Windows): cache locks through ``msvcrt.locking`` (a stand-in module whose
  ``locking`` is a real per-handle lock), and, with neither, through O_EXCL lock files
  naming their owner, taken over when the owner is gone;
* the glibc allocator tuning does nothing off Linux, even without ``ctypes``;
* output names on Windows (``os.name == "nt"``): no character Windows forbids in a name
  coming from a model, a track or a stem; ffmpeg gets ``file:C:\\...`` paths intact.

What needs a real Windows (the console, ``msvcrt`` itself, NTFS, ffmpeg.exe) is not here.
"""

from __future__ import annotations

import errno
import importlib
import ntpath
import os
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path

import pytest

from stemsplit.cache import locks
from stemsplit.cache.locks import file_lock, lock_path_for
from tests.checkpoints import hold_lock_in_threads

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- SIGPIPE


def _closed_stdout_exit(body: str) -> subprocess.CompletedProcess:
    """Run ``body`` in a Python without ``signal.SIGPIPE`` whose stdout reader is gone."""
    code = "import signal\ndel signal.SIGPIPE  # as on Windows\n" + textwrap.dedent(body)
    read, write = os.pipe()
    os.close(read)  # the reader went away before the first line
    try:
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)


def test_broken_pipe_without_sigpipe_exits_141_quietly() -> None:
    result = _closed_stdout_exit("""
        import sys
        import typer
        from stemsplit.cli.terminal import run_command

        def body():
            for number in range(1000):
                print(number)
            return 0

        try:
            run_command(body)
        except typer.Exit as done:
            sys.exit(done.exit_code)
    """)
    assert result.returncode == 141, result.stderr
    assert result.stderr == ""


def test_model_list_into_a_closed_pipe_without_sigpipe_exits_141_quietly() -> None:
    result = _closed_stdout_exit("""
        from stemsplit.__main__ import main
        main(["models"])
    """)
    assert result.returncode == 141, result.stderr
    assert result.stderr == ""


def test_no_posix_only_signal_is_read_unguarded() -> None:
    """Windows' signal module has SIGINT, SIGTERM, SIGABRT, SIGFPE, SIGILL, SIGSEGV,
    SIGBREAK: any other ``signal.SIGxxx`` in the package must be read with getattr."""
    windows = {"SIGINT", "SIGTERM", "SIGABRT", "SIGFPE", "SIGILL", "SIGSEGV", "SIGBREAK"}
    import re

    found = []
    for path in (ROOT / "stemsplit").rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for name in re.findall(r"\bsignal\.(SIG[A-Z0-9]+)\b", line):
                if name not in windows:
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


# --------------------------------------------------------------------------- cache locks


def _fake_msvcrt(calls: list[tuple[int, int]]) -> types.ModuleType:
    """``msvcrt`` with ``locking(fd, mode, nbytes)``: a lock on the open file (not the
    process), as Windows' LockFileEx is, made here with flock on that descriptor."""
    import fcntl as real_fcntl

    fake = types.ModuleType("msvcrt")
    fake.LK_UNLCK, fake.LK_LOCK, fake.LK_NBLCK, fake.LK_RLCK, fake.LK_NBRLCK = 0, 1, 2, 3, 4

    def locking(fd: int, mode: int, nbytes: int) -> None:
        assert nbytes == 1 and os.lseek(fd, 0, os.SEEK_CUR) == 0  # one byte at the start
        calls.append((fd, mode))
        if mode == fake.LK_UNLCK:
            real_fcntl.flock(fd, real_fcntl.LOCK_UN)
            return
        assert mode == fake.LK_NBLCK  # LK_LOCK gives up after 10 s on Windows: not used
        try:
            real_fcntl.flock(fd, real_fcntl.LOCK_EX | real_fcntl.LOCK_NB)
        except BlockingIOError:
            raise OSError(errno.EACCES, "Permission denied") from None  # what the CRT says

    fake.locking = locking
    return fake


def test_windows_locks_with_msvcrt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    fake = _fake_msvcrt(calls)
    monkeypatch.setitem(sys.modules, "fcntl", None)  # `import fcntl` fails, as on Windows
    monkeypatch.setitem(sys.modules, "msvcrt", fake)
    order, told = hold_lock_in_threads(tmp_path / "model.th")
    assert order == ["first", "second"] and told
    locked = [fd for fd, mode in calls if mode == fake.LK_NBLCK]
    unlocked = [fd for fd, mode in calls if mode == fake.LK_UNLCK]
    assert len(unlocked) == 2 and set(unlocked) <= set(locked)
    assert lock_path_for(tmp_path / "model.th").exists()


def test_msvcrt_error_that_is_not_contention_goes_on_unlocked(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("msvcrt")
    fake.LK_NBLCK, fake.LK_UNLCK = 2, 0

    def locking(fd: int, mode: int, nbytes: int) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    fake.locking = locking
    monkeypatch.setitem(sys.modules, "fcntl", None)
    monkeypatch.setitem(sys.modules, "msvcrt", fake)
    with file_lock(tmp_path / "model.th"):
        pass  # neither hangs nor fails: the download just is not locked


@pytest.fixture
def no_lock_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fcntl", None)
    monkeypatch.setitem(sys.modules, "msvcrt", None)
    monkeypatch.setattr(locks, "POLL_SECONDS", (0.02, 0.1))


def _owned_lock(target: Path) -> Path:
    path = lock_path_for(target)
    return path.with_name(path.name + "ed")


def test_lock_files_exclude_threads_and_are_removed(tmp_path: Path, no_lock_modules: None) -> None:
    target = tmp_path / "model.th"
    with file_lock(target):
        from stemsplit.temporaries import host_name, owner_of

        assert owner_of(_owned_lock(target).read_text()) == (host_name(), os.getpid())
    assert not _owned_lock(target).exists()
    order, told = hold_lock_in_threads(target)
    assert order == ["first", "second"] and told
    assert not _owned_lock(target).exists()


_CHILD = """
import sys, time
from pathlib import Path
sys.modules["fcntl"] = None
sys.modules["msvcrt"] = None
from stemsplit.cache.locks import file_lock
with file_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _child_holding(target: Path, seconds: float) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(target), str(seconds)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def test_lock_files_exclude_another_process(tmp_path: Path, no_lock_modules: None) -> None:
    target = tmp_path / "model.th"
    child = _child_holding(target, 1.5)
    waited = threading.Event()
    try:
        started = time.monotonic()
        with file_lock(target, on_wait=waited.set):
            held_after = time.monotonic() - started
            assert child.poll() is not None  # the child had let go
    finally:
        child.kill()
        child.wait()
    assert waited.is_set() and held_after > 0.5


def test_a_lock_file_left_by_a_killed_process_is_taken_over(tmp_path: Path,
                                                             no_lock_modules: None) -> None:
    target = tmp_path / "model.th"
    child = _child_holding(target, 120)
    child.kill()  # SIGKILL: no cleanup; the lock file stays, naming a dead process
    child.wait()
    assert _owned_lock(target).exists()
    waited = threading.Event()
    started = time.monotonic()
    with file_lock(target, on_wait=waited.set):
        assert time.monotonic() - started < 2
    assert not waited.is_set()


def test_which_lock_files_count_as_abandoned(tmp_path: Path) -> None:
    from stemsplit.temporaries import FOREIGN_AGE_SECONDS, owner_tag

    path = tmp_path / "x.lock"
    path.write_text(owner_tag())  # this process: alive
    assert not locks._abandoned(path)
    path.write_text("stemsplit~another-host~12345~0123abcd")
    assert not locks._abandoned(path)  # another machine's, fresh: wait for it
    old = time.time() - FOREIGN_AGE_SECONDS - 60
    os.utime(path, (old, old))
    assert locks._abandoned(path)
    path.write_text("")  # its creator stopped before writing its name
    assert not locks._abandoned(path)
    old = time.time() - locks.ORPHAN_SECONDS - 5
    os.utime(path, (old, old))
    assert locks._abandoned(path)
    path.unlink()
    assert not locks._abandoned(path)  # gone: the next try takes it


def test_posix_locks_still_use_flock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl

    seen: list[int] = []
    real = fcntl.flock
    monkeypatch.setattr(fcntl, "flock", lambda fd, op: (seen.append(op), real(fd, op))[1])
    with file_lock(tmp_path / "model.th"):
        pass
    assert seen == [fcntl.LOCK_EX | fcntl.LOCK_NB, fcntl.LOCK_UN]


# --------------------------------------------------------------------------- allocator


@pytest.mark.parametrize("platform", ["darwin", "win32", "cygwin"])
def test_allocator_tuning_is_a_no_op_off_linux(platform: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from stemsplit import allocator

    monkeypatch.delenv("STEMSPLIT_MALLOC_TUNING", raising=False)
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setitem(sys.modules, "ctypes", None)  # not even ctypes is needed to say no
    assert allocator.keep_freed_memory() is False
    importlib.reload(allocator)  # importing it needs no ctypes either
    assert allocator.keep_freed_memory() is False


# --------------------------------------------------------------------------- Windows paths


def test_output_names_on_windows_avoid_forbidden_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    from stemsplit.plan import OutputOptions, output_paths

    options = OutputOptions(out_dir=Path("separated"), filename="{relpath}/{track}/{stem}.{ext}")
    track = Path("a?b.wav")  # a Linux name; a stem name from a config may hold anything
    posix = output_paths(track, ["vocals:lead", "drums"], "my|model", options, "sub")
    assert posix["vocals:lead"] == Path("separated/my|model/sub/a?b/vocals:lead.wav")
    with monkeypatch.context() as windows:
        windows.setattr(os, "name", "nt")
        paths = output_paths(track, ["vocals:lead", "drums"], "my|model", options, "sub")
    # "vocals:lead.wav" would be an NTFS stream of a file "vocals", not a file
    assert paths["vocals:lead"] == Path("separated/my_model/sub/a_b/vocals_lead.wav")
    assert paths["drums"] == Path("separated/my_model/sub/a_b/drums.wav")
    forbidden = set('<>:"|?*')
    for path in paths.values():
        assert not any(forbidden & set(part) for part in path.parts)


def test_ffmpeg_gets_windows_paths_intact(monkeypatch: pytest.MonkeyPatch) -> None:
    """``file:C:\\music\\a.mp3``: ffmpeg's file protocol strips ``file:`` and opens the
    rest, drive letter, backslashes and UNC names included."""
    from stemsplit.audio.ffmpeg import _url

    with monkeypatch.context() as windows:
        windows.setattr(os.path, "abspath", ntpath.abspath)
        assert _url(r"C:\music\a.mp3") == r"file:C:\music\a.mp3"
        assert _url(r"\\server\share\-x.mp3") == r"file:\\server\share\-x.mp3"
        assert _url("C:/music/b c.flac") == r"file:C:\music\b c.flac"


def test_files_outside_the_working_directory_mirror_from_their_common_folder() -> None:
    """Files named outside the working directory mirror from their common folder
    (``plan._mirrored_from``, ``os.path.commonpath``); on Windows that is ntpath's, which
    keeps the drive or UNC share in the root and never in the mirrored part."""
    import ntpath

    assert ntpath.commonpath([r"C:\music\a", r"C:\music\b\c"]) == r"C:\music"
    assert ntpath.relpath(r"C:\music\b\c", r"C:\music") == r"b\c"
    assert ntpath.commonpath([r"\\nas\share\music\a", r"\\nas\share\music"]) == \
        r"\\nas\share\music"