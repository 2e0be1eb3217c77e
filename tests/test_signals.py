"""Signals at the moments where they used to hurt, delivered deterministically by a hook.

The abort a user met (`terminate called without an active exception`, exit 134, temporary
files left) needs a second signal while the first one's cleanup runs: `timeout -s INT`
signals the process and then its group, and a Ctrl-C reaches the whole group. The second
KeyboardInterrupt cut the cleanup short (pool shutdown, writers' abort), and a third during
the interpreter's exit left a worker thread inside torch, whose C++ frames abort() when
the exiting interpreter ends the thread. Here a hook in the child sends those signals while
a worker thread is inside native torch code with the stem writers open, at three stages.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from stemsplit import temporaries
from tests.checkpoints import default_stop_signals

# The child: stemsplit's CLI, with a hook in the first stem write (a worker thread, writers
# open): it signals the process SIGNALS times, GAP seconds apart, while that thread runs
# native torch code that does not look at cancellation for ~WORK seconds.
CHILD = r"""
import os, signal, sys, threading, time
import torch
from stemsplit.audio import write

signals = [getattr(signal, name) for name in os.environ["SIGNALS"].split(",")]
gap = float(os.environ["GAP"])
work = float(os.environ["WORK"])
original = write.StemWriter.write
fired = []

def write_hook(self, block):
    if not fired:
        fired.append(1)
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        a = torch.randn(700, 700)
        end = time.monotonic() + work
        while time.monotonic() < end:
            a = torch.tanh(a @ a) * 0.5  # in C++ with the GIL released
    return original(self, block)

def send():
    for signum in signals:
        os.kill(os.getpid(), signum)
        time.sleep(gap)

write.StemWriter.write = write_hook
from stemsplit.__main__ import main
sys.argv = ["stemsplit", *sys.argv[1:]]
main()
"""


def tone(seconds: float, rate: int = 44100) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 330 * t)]).T


def leftovers(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.rglob("*")
            if p.is_file() and (p.name.startswith(".") or p.name.startswith("stemsplit-"))]


@pytest.fixture
def song(tmp_path: Path) -> Path:
    soundfile.write(tmp_path / "song.wav", tone(30.0), 44100)
    (tmp_path / "tmp").mkdir()
    (tmp_path / "child.py").write_text(CHILD)
    return tmp_path / "song.wav"


def run_child(tmp_path: Path, tiny_hf_home: Path, args: list[str], *, signals: str,
              gap: float, work: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(tiny_hf_home), "HF_HUB_OFFLINE": "1",
           "TMPDIR": str(tmp_path / "tmp"), "SIGNALS": signals, "GAP": str(gap),
           "WORK": str(work)}
    return subprocess.run([sys.executable, str(tmp_path / "child.py"), *args], cwd=tmp_path,
                          env=env, capture_output=True, timeout=240,
                          preexec_fn=default_stop_signals)


@pytest.mark.parametrize("signals,gap,code", [
    # a second signal while the first one's cleanup waits for the worker thread
    ("SIGINT,SIGINT", 0.3, 130),
    # and a third while the interpreter exits (the abort)
    ("SIGINT,SIGINT,SIGINT,SIGINT,SIGINT", 0.25, 130),
    # SIGTERM, then Ctrl-C on top of it
    ("SIGTERM,SIGINT,SIGTERM", 0.3, 143),
])
def test_repeated_signals_during_cleanup_leave_nothing(song, tmp_path, tiny_hf_home,
                                                        signals, gap, code):
    result = run_child(tmp_path, tiny_hf_home, ["song.wav", "-o", "out"], signals=signals,
                       gap=gap, work=1.5)
    stderr = result.stderr.decode()
    assert result.returncode == code, stderr
    assert "terminate called" not in stderr and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] in ("interrupted", "terminated"), stderr
    assert not leftovers(tmp_path / "out", tmp_path / "tmp")
    assert not (tmp_path / "out").exists()


def test_an_ensemble_interrupted_twice_leaves_nothing(song, tmp_path, tiny_hf_home):
    result = run_child(tmp_path, tiny_hf_home,
                       ["song.wav", "-n", "htdemucs", "-n", "htdemucs_6s", "-o", "out"],
                       signals="SIGINT,SIGINT", gap=0.3, work=1.0)
    assert result.returncode == 130, result.stderr.decode()
    assert not leftovers(tmp_path / "out", tmp_path / "tmp")


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX only")
def test_a_hangup_cleans_up_and_an_ignored_one_is_kept(song, tmp_path, tiny_hf_home):
    result = run_child(tmp_path, tiny_hf_home, ["song.wav", "-o", "out"], signals="SIGHUP",
                       gap=0.1, work=0.5)
    assert result.returncode == 129, result.stderr.decode()
    assert not leftovers(tmp_path / "out", tmp_path / "tmp")

    # `nohup stemsplit ...`: SIGHUP inherited as ignored stays ignored, and the run finishes.
    def ignore_hangups() -> None:
        default_stop_signals()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    env = {**os.environ, "HF_HOME": str(tiny_hf_home), "HF_HUB_OFFLINE": "1",
           "TMPDIR": str(tmp_path / "tmp"), "SIGNALS": "SIGHUP", "GAP": "0.1", "WORK": "0.3"}
    finished = subprocess.run([sys.executable, str(tmp_path / "child.py"), "song.wav", "-o",
                               "out2", "-q"], cwd=tmp_path, env=env, capture_output=True,
                              timeout=240, preexec_fn=ignore_hangups)
    assert finished.returncode == 0, finished.stderr.decode()
    assert (tmp_path / "out2" / "htdemucs" / "song" / "vocals.wav").is_file()


def test_a_killed_run_leaves_only_what_a_rerun_sweeps(song, tmp_path, tiny_hf_home):
    """SIGKILL: the mix and stem spools have no name, so nothing is left in TMPDIR; the
    named `.part` files carry their owner, and the rerun removes those of the dead process
    (and keeps a live process's)."""
    env = {**os.environ, "HF_HOME": str(tiny_hf_home), "HF_HUB_OFFLINE": "1",
           "TMPDIR": str(tmp_path / "tmp")}
    process = subprocess.Popen([sys.executable, "-m", "stemsplit", "song.wav", "-o", "out",
                                "--clip-mode", "rescale"], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               preexec_fn=default_stop_signals)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not leftovers(tmp_path / "out"):
        time.sleep(0.02)
    process.kill()
    process.wait()
    parts = leftovers(tmp_path / "out")
    assert parts and all(temporaries.owner_of(p.name) == (temporaries.host_name(), process.pid)
                         for p in parts), parts
    assert not leftovers(tmp_path / "tmp")  # the decoded mix had no name
    folder = parts[0].parent
    live = folder / temporaries.owned_name(".drums.wav.", ".part")  # this process: alive
    live.write_bytes(b"")
    foreign = folder / ".bass.wav.stemsplit~elsewhere~12~ab.part"  # another host, fresh
    foreign.write_bytes(b"")

    rerun = subprocess.run([sys.executable, "-m", "stemsplit", "song.wav", "-o", "out", "-q"],
                           cwd=tmp_path, env=env, capture_output=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert sorted(leftovers(tmp_path / "out")) == sorted([live, foreign])
    assert not leftovers(tmp_path / "tmp")
    assert {p.name for p in folder.iterdir() if not p.name.startswith(".")} == {
        "drums.wav", "bass.wav", "other.wav", "vocals.wav"}


def test_stdin_copies_of_dead_processes_are_swept(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = temporaries.host_name()
    gone = tmp_path / f"stemsplit-stdin-stemsplit~{host}~{dead.pid}~0a1b2c3d"
    mine = tmp_path / temporaries.owned_name("stemsplit-stdin-")
    old_foreign = tmp_path / "stemsplit-stdin-stemsplit~far~77~ff"
    other = tmp_path / "stemsplit-unrelated.f32"
    for path in (gone, mine, old_foreign, other):
        path.write_bytes(b"x")
    os.utime(old_foreign, (time.time() - 2 * temporaries.FOREIGN_AGE_SECONDS,) * 2)
    removed = temporaries.sweep_temporary_folder()
    assert sorted(removed) == sorted([gone, old_foreign])
    assert mine.exists() and other.exists()


# The child: a Ctrl-C in the middle of `import torch` (when its C start-up imports numpy).
DURING_TORCH_IMPORT = r"""
import os, signal, sys, time

class SignalDuringNumpyImport:
    fired = False

    def find_spec(self, name, path=None, target=None):
        if name == "numpy._core._multiarray_umath" and not self.fired and "torch" in sys.modules:
            SignalDuringNumpyImport.fired = True
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here, inside torch's import
        return None

sys.meta_path.insert(0, SignalDuringNumpyImport())
from stemsplit.__main__ import main
sys.argv = ["stemsplit", *sys.argv[1:]]
main()
"""


def test_a_signal_during_the_torch_import_is_not_swallowed(song, tmp_path, tiny_hf_home):
    """torch's C start-up imports numpy and clears any exception it meets: a KeyboardInterrupt
    raised there was lost (the run went on, and later signals were absorbed) or left numpy
    half-imported. The import is a deferred section now: the signal stops the run after it."""
    (tmp_path / "torch_child.py").write_text(DURING_TORCH_IMPORT)
    env = {**os.environ, "HF_HOME": str(tiny_hf_home), "HF_HUB_OFFLINE": "1",
           "TMPDIR": str(tmp_path / "tmp")}
    result = subprocess.run([sys.executable, str(tmp_path / "torch_child.py"), "song.wav", "-o",
                             "out"], cwd=tmp_path, env=env, capture_output=True, timeout=240,
                            preexec_fn=default_stop_signals)
    stderr = result.stderr.decode()
    assert result.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted", stderr
    assert not (tmp_path / "out").exists()
