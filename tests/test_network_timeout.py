"""Without a network, a model that is not cached fails in seconds, with one line saying why.

Every connection here goes to loopback: a proxy port that refuses, a server that accepts and
never answers, a port whose accept queue is full (a blackhole: connects hang). The real Hub
is never reached: where its name is used, a refusing proxy stands in front of it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import pytest

from stemsplit.cache import http
from stemsplit.errors import WeightsUnavailableError
from stemsplit.families.demucs.files import resolve_demucs_model
from stemsplit.registry import load_registry
from tests.checkpoints import closed_port, demucs_spec

REGISTRY = load_registry()
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def no_proxies_or_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the proxies a test sets; no probe outcome remembered from another test."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.delenv("STEMSPLIT_CONNECT_TIMEOUT", raising=False)
    monkeypatch.setattr(http, "_probed", {})


def _refusing_proxy(monkeypatch: pytest.MonkeyPatch) -> int:
    port = closed_port()
    for name in ("HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{port}")
    return port


class SilentServer:
    """Accepts connections on loopback and never answers."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.port = self.socket.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.held.append(connection)

    def close(self) -> None:
        self.socket.close()
        for connection in self.held:
            connection.close()


def _blackhole() -> tuple[socket.socket, list[socket.socket], int] | None:
    """A loopback port whose accept queue is full, so that a new connect hangs (Linux drops
    the SYN); None where the platform answers such a connect at once instead."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers: list[socket.socket] = []
    for _ in range(16):
        filler = socket.socket()
        filler.settimeout(0.3)
        try:
            filler.connect(("127.0.0.1", port))
        except TimeoutError:
            filler.close()
            return server, fillers, port
        except OSError:
            filler.close()
            break
        fillers.append(filler)
    server.close()
    for filler in fillers:
        filler.close()
    return None


def _write_wav(path: Path) -> None:
    with wave.open(str(path), "wb") as file:
        file.setnchannels(2)
        file.setsampwidth(2)
        file.setframerate(44100)
        file.writeframes(b"\0\0" * 2 * 4410)


# --------------------------------------------------------------------------- refused


def test_a_refusing_proxy_gives_up_in_under_5_s_with_one_line(tmp_path: Path) -> None:
    """`stemsplit song.wav -n htdemucs` with HTTPS_PROXY on a port that refuses and an empty
    cache: huggingface_hub alone retried for 24 s (26 s in all). Now the network costs
    nothing to speak of: under 5 s in all, or, where the machine is so busy that starting
    the command (importing torch) takes over 2 s, within 3 s of the same command offline."""
    _write_wav(tmp_path / "song.wav")
    port = closed_port()
    env = {key: value for key, value in os.environ.items()
           if key.upper() not in PROXY_VARIABLES and key not in ("HF_HUB_OFFLINE", "STEMSPLIT_OFFLINE")}
    env.update(HTTP_PROXY=f"http://127.0.0.1:{port}", HTTPS_PROXY=f"http://127.0.0.1:{port}",
               HF_ENDPOINT="https://huggingface.co")  # behind the refusing proxy: never reached

    def run(**more: str) -> tuple[subprocess.CompletedProcess, float]:
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "stemsplit", "song.wav", "-n", "htdemucs"],
                                cwd=tmp_path, env={**env, **more}, capture_output=True, text=True,
                                timeout=120)
        return result, time.monotonic() - started

    result, elapsed = run()
    offline, baseline = run(HF_HUB_OFFLINE="1")
    assert result.returncode == 1 and offline.returncode == 1, result.stderr + offline.stderr
    assert elapsed < max(5.0, baseline + 3.0), (elapsed, baseline, result.stderr)
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[0] == errors[0], result.stderr
    assert all(line.startswith(("error:", "hint:")) for line in lines), result.stderr
    assert f"huggingface.co: connection refused (proxy 127.0.0.1:{port})" in errors[0]
    assert "htdemucs" in errors[0] and "stemsplit models download htdemucs" in errors[0]
    assert result.stdout == ""


def test_a_refusing_proxy_is_found_by_the_probe_before_any_download(
        monkeypatch: pytest.MonkeyPatch) -> None:
    port = _refusing_proxy(monkeypatch)
    monkeypatch.setenv("HF_ENDPOINT", "https://huggingface.co")
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda *a, **k: pytest.fail("hf_hub_download was called"))
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as caught:
        resolve_demucs_model(REGISTRY.get("htdemucs"), offline=False)
    assert time.monotonic() - started < 3
    message = str(caught.value)
    assert "\n" not in message
    assert f"huggingface.co: connection refused (proxy 127.0.0.1:{port})" in message
    assert f"dl.fbaipublicfiles.com: connection refused (proxy 127.0.0.1:{port})" in message


def test_no_proxy_sends_a_host_past_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.parse
    import urllib.request

    proxies = {"https": "http://proxy.example:3128", "http": "proxy.example"}
    first_hop = lambda url: http._first_hop(urllib.parse.urlsplit(url), proxies)  # noqa: E731
    assert first_hop("https://huggingface.co/x") == ("proxy.example", 3128,
                                                     " (proxy proxy.example:3128)")
    assert first_hop("http://host.example:8080/x") == ("proxy.example", 80, " (proxy proxy.example:80)")
    monkeypatch.setenv("no_proxy", "huggingface.co")
    assert urllib.request.proxy_bypass("huggingface.co")
    assert first_hop("https://huggingface.co/x") == ("huggingface.co", 443, "")
    assert http._first_hop(urllib.parse.urlsplit("https://h/x"),
                           {"https": "socks5://127.0.0.1:1080"}) is None  # not probed


# --------------------------------------------------------------------------- no answer


def test_a_server_that_never_answers_costs_one_metadata_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hub endpoint accepts connections and never answers: one HEAD, no retries.
    huggingface_hub alone retries such a file five times with a 60 s timeout each."""
    from huggingface_hub import constants

    server = SilentServer()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.port}")
        monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 1)  # as HF_HUB_ETAG_TIMEOUT=1 would
        spec = demucs_spec(REGISTRY.get("htdemucs"),
                           legacy_url_root=f"http://127.0.0.1:{closed_port()}/")
        started = time.monotonic()
        with pytest.raises(WeightsUnavailableError) as caught:
            resolve_demucs_model(spec, offline=False)
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert elapsed < 5, elapsed
    message = str(caught.value)
    assert "\n" not in message
    assert "127.0.0.1 (adefossez/HTDemucs): timed out" in message


def test_an_answering_server_error_is_left_to_huggingface_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 503 means the server is there: huggingface_hub's own retries are for that. A 404 is
    raised by the first request."""
    from stemsplit.cache import hub

    class Answer(Exception):
        def __init__(self, status: int) -> None:
            super().__init__(f"HTTP {status}")
            self.response = type("Response", (), {"status_code": status})()

    status = {"value": 503}

    def metadata(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise Answer(status["value"])

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", metadata)
    hub._ask_first("owner/repo", "file.yaml")  # 503: no error here
    status["value"] = 404
    with pytest.raises(Answer):
        hub._ask_first("owner/repo", "file.yaml")


# --------------------------------------------------------------------------- blackholed


def test_a_blackholed_host_is_bounded_by_the_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    hole = _blackhole()
    if hole is None:
        pytest.skip("this platform refuses a connect to a full accept queue instead of dropping it")
    server, fillers, port = hole
    try:
        monkeypatch.setenv("STEMSPLIT_CONNECT_TIMEOUT", "0.5")
        started = time.monotonic()
        outcome = http.probe_all([f"http://127.0.0.1:{port}/weights.th"])
        elapsed = time.monotonic() - started
        # through a proxy, the proxy is the host that hangs
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
        through = http.probe_all(["https://huggingface.co/x"])
    finally:
        server.close()
        for filler in fillers:
            filler.close()
    assert outcome == {f"http://127.0.0.1:{port}": "timed out"}
    assert 0.4 < elapsed < 2.5, elapsed
    assert through == {"https://huggingface.co": f"timed out (proxy 127.0.0.1:{port})"}


def test_connect_timeout_setting(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    assert http.connect_timeout() == http.CONNECT_TIMEOUT == 4.0
    monkeypatch.setenv("STEMSPLIT_CONNECT_TIMEOUT", "15")
    assert http.connect_timeout() == 15.0
    for bad in ("soon", "0", "-2", "nan", "inf"):
        monkeypatch.setenv("STEMSPLIT_CONNECT_TIMEOUT", bad)
        assert http.connect_timeout() == 4.0
    assert "STEMSPLIT_CONNECT_TIMEOUT=soon is not a number of seconds" in caplog.text


def test_hub_failures_in_a_few_words() -> None:
    from huggingface_hub.errors import LocalEntryNotFoundError

    from stemsplit.cache.hub import hf_failure

    class ConnectError(Exception):
        pass

    class ConnectTimeout(Exception):
        pass

    class ProxyError(Exception):
        pass

    wrapped = LocalEntryNotFoundError("An error happened while trying to locate the file on "
                                      "the Hub and we cannot find the requested files ...")
    wrapped.__cause__ = ConnectError("[Errno 111] Connection refused")
    assert hf_failure(wrapped) == "connection refused"
    assert hf_failure(ConnectError("[Errno -3] Temporary failure in name resolution")) == "cannot connect"
    assert hf_failure(ConnectTimeout("timed out")) == "timed out"
    assert hf_failure(ProxyError("502 Bad Gateway")) == "the proxy failed (502 Bad Gateway)"
    assert hf_failure(ConnectionRefusedError(111, "Connection refused")) == "connection refused"
