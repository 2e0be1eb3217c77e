"""Random-weight demucs checkpoints in the exact published formats, for tests.

The networks are built by demucs' own classes (demucs==4.1.0 is a test dependency, the
oracle); stemsplit itself never imports demucs. Formats written here:

* ``<sig>.safetensors``: fp16 tensors; metadata ``klass`` (dotted name), ``args`` and
  ``kwargs`` as JSON with fractions as ``{"_type": "fraction", "numerator", "denominator"}``,
  which is what ``demucs.hf.load_safetensors_model`` reads.
* a Hugging Face cache (``$HF_HOME/hub/models--<owner>--<repo>/{blobs,snapshots,refs}``)
  holding ``<name>.yaml`` and the members, so that
  ``HF_HOME=... HF_HUB_OFFLINE=1 demucs -n <name>`` and stemsplit both find them.
* ``<sig>-<sha8>.th``: ``torch.save`` of {klass (pickled class reference), args, kwargs,
  fp16 state, training_args, metrics}, named the way ``demucs.states.save_with_checksum`` does.
* diffq-packed members (mdx_q, mdx_extra_q): ``make_diffq_member`` packs a random member with
  diffq (a test oracle, like demucs) through demucs' own ``get_quantizer``/``get_state``; the
  nested state goes as is into a ``.th``, and into a ``.safetensors`` flattened with a JSON
  ``structure`` as demucs' ``tools/export_hf.py`` writes the Hub files (``flatten_state``).

Also: tiny but real-format constructor arguments (``SMALL_*_KWARGS``), and a loopback HTTP
server serving a folder, with switches to corrupt a byte, drop the connection half way, or
count requests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import importlib
import io
import json
import os
import re
import signal
import socket
import threading
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Sequence

import torch
import yaml

SOURCES = ["drums", "bass", "other", "vocals"]
SOURCES_6 = SOURCES + ["guitar", "piano"]

HTDEMUCS = "demucs.htdemucs.HTDemucs"
HDEMUCS = "demucs.hdemucs.HDemucs"
DEMUCS = "demucs.demucs.Demucs"

# Tiny versions of the published architectures: same code paths as the real ones
# (htdemucs: hybrid branches, cross transformer, dconv in encoder and decoder, Fraction
# segment; hdemucs_mmi: hybrid, cac, dconv attention and LSTM; mdx's time-domain Demucs),
# with few channels so that a forward pass takes well under a second.
SMALL_HTDEMUCS_KWARGS: dict[str, Any] = dict(
    sources=SOURCES,
    audio_channels=2,
    channels=4,
    growth=2,
    nfft=4096,
    cac=True,
    depth=4,
    rewrite=True,
    freq_emb=0.2,
    emb_scale=10,
    emb_smooth=True,
    kernel_size=8,
    stride=4,
    time_stride=2,
    context=1,
    context_enc=0,
    norm_starts=4,
    norm_groups=4,
    dconv_mode=3,
    dconv_depth=2,
    dconv_comp=4,
    dconv_init=1e-3,
    bottom_channels=0,
    t_layers=2,
    t_hidden_scale=2.0,
    t_heads=2,
    t_dropout=0.0,
    t_layer_scale=True,
    t_gelu=True,
    t_emb="sin",
    t_max_period=1e4,
    t_weight_pos_embed=1.0,
    t_norm_in=True,
    t_norm_out=True,
    t_norm_first=True,
    t_cross_first=False,
    rescale=0.1,
    samplerate=44100,
    segment=Fraction(39, 10),
)

SMALL_HDEMUCS_KWARGS: dict[str, Any] = dict(
    sources=SOURCES,
    audio_channels=2,
    channels=4,
    growth=2,
    nfft=4096,
    cac=True,
    depth=6,
    rewrite=True,
    hybrid=True,
    kernel_size=8,
    stride=4,
    time_stride=2,
    context=1,
    norm_starts=4,
    norm_groups=4,
    dconv_mode=1,
    dconv_depth=2,
    dconv_comp=4,
    dconv_attn=4,
    dconv_lstm=4,
    dconv_init=1e-4,
    rescale=0.1,
    samplerate=44100,
    segment=44,
)

SMALL_DEMUCS_KWARGS: dict[str, Any] = dict(
    sources=SOURCES,
    audio_channels=2,
    channels=4,
    growth=2.0,
    depth=6,
    rewrite=True,
    lstm_layers=0,
    kernel_size=8,
    stride=4,
    context=1,
    gelu=True,
    glu=True,
    norm_starts=4,
    norm_groups=4,
    dconv_mode=1,
    dconv_depth=2,
    dconv_comp=4,
    dconv_attn=4,
    dconv_lstm=4,
    dconv_init=1e-4,
    normalize=True,
    resample=True,
    rescale=0.1,
    samplerate=44100,
    segment=44,
)

SMALL_KWARGS = {HTDEMUCS: SMALL_HTDEMUCS_KWARGS, HDEMUCS: SMALL_HDEMUCS_KWARGS, DEMUCS: SMALL_DEMUCS_KWARGS}


# --------------------------------------------------------------------------- networks


def _demucs_class(klass: str | type) -> type:
    if isinstance(klass, type):
        return klass
    module, name = klass.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def klass_name(klass: str | type) -> str:
    """'demucs.htdemucs.HTDemucs' for the class or the name."""
    if isinstance(klass, type):
        return f"{klass.__module__}.{klass.__name__}"
    return klass


def encode_json(value: Any) -> Any:
    """Arguments as demucs' HF export writes them: fractions as tagged objects."""
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
    if isinstance(value, dict):
        return {str(key): encode_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_json(item) for item in value]
    return value


def member_sig(klass: str | type, args: Sequence, kwargs: dict, seed: int) -> str:
    """A stable 8-hex-digit signature for a random member (real ones are dora XP hashes)."""
    text = json.dumps([klass_name(klass), encode_json(list(args)), encode_json(kwargs), seed], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def make_demucs_member(
    klass: str | type, args: Sequence, kwargs: dict, seed: int, *, perturb: bool = True
) -> tuple[torch.nn.Module, str]:
    """Build demucs' own network with random weights; returns (module in eval mode, sig).

    The weights are rounded through fp16, so the module computes exactly what a loader of
    the fp16 files written from it computes. With ``perturb`` every parameter whose
    initialisation is (nearly) constant, such as LayerScale (1e-3, 1e-4 or 0) and GroupNorm
    weights and biases, gets N(0, 0.1) added: otherwise whole branches of the network
    (DConv, transformer layers) contribute next to nothing and a bug in them would hide
    under a 1e-5 tolerance.
    """
    cls = _demucs_class(klass)
    torch.manual_seed(seed)
    module = cls(*_copy(list(args)), **_copy(dict(kwargs)))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in module.parameters():
            if perturb and parameter.is_floating_point():
                if parameter.numel() < 2 or float(parameter.std()) < 1e-2:
                    noise = torch.randn(parameter.shape, generator=generator) * 0.1
                    parameter.add_(noise.to(parameter.dtype))
            parameter.copy_(parameter.half().to(parameter.dtype))
        for buffer in module.buffers():
            if buffer.is_floating_point():
                buffer.copy_(buffer.half().to(buffer.dtype))
    module.eval()
    return module, member_sig(klass, args, kwargs, seed)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _state_of(module_or_state: torch.nn.Module | dict) -> dict[str, Any]:
    if isinstance(module_or_state, torch.nn.Module):
        state = module_or_state.state_dict()
    else:
        state = module_or_state
    if is_quantized_state(state):
        return state  # demucs stores a diffq state as get_state returns it
    # demucs.states.get_state(half=True): every entry cast to fp16 on the CPU.
    return {key: value.detach().to(device="cpu", dtype=torch.half).contiguous() for key, value in state.items()}


# --------------------------------------------------------------------------- safetensors


def safetensors_bytes(module_or_state: torch.nn.Module | dict, klass: str | type, args: Sequence, kwargs: dict) -> bytes:
    from safetensors.torch import save

    metadata = {
        "klass": klass_name(klass),
        "args": json.dumps(encode_json(list(args))),
        "kwargs": json.dumps(encode_json(dict(kwargs))),
    }
    state = _state_of(module_or_state)
    if is_quantized_state(state):
        state, structure = flatten_state(state)
        metadata["structure"] = json.dumps(structure)
    return save(state, metadata=metadata)


def write_safetensors_member(
    module_or_state: torch.nn.Module | dict, klass: str | type, args: Sequence, kwargs: dict, path: Path
) -> Path:
    """Write one member as demucs' Hugging Face export does (fp16, JSON metadata)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(safetensors_bytes(module_or_state, klass, args, kwargs))
    return path


# --------------------------------------------------------------------------- HF cache


def hf_repo_dir(hf_home: Path, repo_id: str) -> Path:
    """``$HF_HOME/hub/models--<owner>--<name>``."""
    return Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))


def hf_put_file(hf_home: Path, repo_id: str, filename: str, data: bytes) -> Path:
    """Place ``data`` as ``filename`` of ``repo_id`` at revision main in a real HF cache layout.

    Blobs are named by their sha256 (the etag the Hub gives LFS files); the snapshot entry is a
    relative symlink to the blob, as huggingface_hub makes them. Returns the snapshot path.
    """
    repo = hf_repo_dir(hf_home, repo_id)
    ref = repo / "refs" / "main"
    if ref.is_file():
        commit = ref.read_text().strip()
    else:
        commit = hashlib.sha1(f"stemsplit-test {repo_id}".encode()).hexdigest()
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    pointer = repo / "snapshots" / commit / filename
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink() or pointer.exists():
        pointer.unlink()
    try:
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    except OSError:  # no symlinks: huggingface_hub then keeps plain copies
        pointer.write_bytes(data)
    return pointer


def bag_yaml_text(sigs: Sequence[str], weights: Sequence[Sequence[float]] | None = None, segment: float | None = None) -> str:
    document: dict[str, Any] = {"models": list(sigs)}
    if weights is not None:
        document["weights"] = [[float(value) for value in row] for row in weights]
    if segment is not None:
        document["segment"] = segment
    return yaml.safe_dump(document, default_flow_style=None, sort_keys=False)


MemberDef = tuple  # (klass, args, kwargs, seed) or (klass, args, kwargs, seed, sig)


def _member_parts(member: MemberDef) -> tuple[str | type, list, dict, int, str | None]:
    if len(member) == 4:
        klass, args, kwargs, seed = member
        return klass, list(args), dict(kwargs), int(seed), None
    klass, args, kwargs, seed, sig = member
    return klass, list(args), dict(kwargs), int(seed), sig


def write_hf_bag(
    hf_home: Path,
    name: str,
    repo_id: str,
    members: Iterable[MemberDef],
    weights: Sequence[Sequence[float]] | None = None,
    segment: float | None = None,
    quantizer: dict | None = None,
) -> list[str]:
    """Write ``<name>.yaml`` and one ``<sig>.safetensors`` per member into an HF cache.

    A member is ``(klass, args, kwargs, seed)``, optionally with a fifth item, the signature
    to use (e.g. the registry's real one). With ``quantizer`` (``make_diffq_member``'s
    keywords, e.g. ``{}`` for the published settings) every member is diffq-packed. Returns
    the signatures in bag order.
    """
    sigs = []
    for member in members:
        klass, args, kwargs, seed, sig = _member_parts(member)
        if quantizer is None:
            module, made_sig = make_demucs_member(klass, args, kwargs, seed)
        else:
            module, _, made_sig = make_diffq_member(klass, args, kwargs, seed, **quantizer)
        sig = sig or made_sig
        hf_put_file(hf_home, repo_id, f"{sig}.safetensors", safetensors_bytes(module, klass, args, kwargs))
        sigs.append(sig)
    hf_put_file(hf_home, repo_id, f"{name}.yaml", bag_yaml_text(sigs, weights, segment).encode())
    return sigs


def load_member_module(member: MemberDef) -> torch.nn.Module:
    """The demucs module a member definition writes (same seed, same fp16 rounding)."""
    klass, args, kwargs, seed, _ = _member_parts(member)
    return make_demucs_member(klass, args, kwargs, seed)[0]


# --------------------------------------------------------------------------- legacy .th


def legacy_th_bytes(
    module_or_state: torch.nn.Module | dict,
    klass: str | type,
    args: Sequence,
    kwargs: dict,
    *,
    training_args: dict | None = None,
    metrics: dict | None = None,
) -> bytes:
    package = {
        "klass": _demucs_class(klass),  # pickled as a class reference, as demucs does
        "args": tuple(args),  # capture_init stores the positional arguments as a tuple
        "kwargs": dict(kwargs),
        "state": _state_of(module_or_state),
        "training_args": {} if training_args is None else training_args,
        "metrics": {} if metrics is None else metrics,
    }
    buffer = io.BytesIO()
    torch.save(package, buffer)
    return buffer.getvalue()


def write_legacy_th(
    path_dir: Path,
    sig: str | None,
    klass: str | type,
    args: Sequence,
    kwargs: dict,
    seed: int,
    *,
    training_args: dict | None = None,
    metrics: dict | None = None,
    quantizer: dict | None = None,
) -> Path:
    """Write ``<sig>-<sha8>.th`` like ``demucs.states.save_with_checksum`` (sig None: derived);
    with ``quantizer`` (``make_diffq_member``'s keywords) the state is diffq-packed."""
    if quantizer is None:
        module, made_sig = make_demucs_member(klass, args, kwargs, seed)
    else:
        module, _, made_sig = make_diffq_member(klass, args, kwargs, seed, **quantizer)
    data = legacy_th_bytes(module, klass, args, kwargs, training_args=training_args, metrics=metrics)
    sha8 = hashlib.sha256(data).hexdigest()[:8]
    path = Path(path_dir) / f"{sig or made_sig}-{sha8}.th"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- diffq

# demucs' training configuration (conf/config.yaml, ``quant:``) for the published mdx_q and
# mdx_extra_q: ``DiffQuantizer(model, min_size=0.2, group_size=8)`` (demucs.states.get_quantizer).
DIFFQ_PUBLISHED = {"min_size": 0.2, "group_size": 8}


def is_quantized_state(state: Any) -> bool:
    return isinstance(state, dict) and bool(state.get("__quantized"))


def make_diffq_member(
    klass: str | type, args: Sequence, kwargs: dict, seed: int, *,
    min_size: float = DIFFQ_PUBLISHED["min_size"], group_size: int = DIFFQ_PUBLISHED["group_size"],
    spread_bits: bool = True, **state_options: Any,
) -> tuple[dict, torch.nn.Module, str]:
    """A random member packed by diffq through demucs' own path: ``get_quantizer`` (a
    DiffQuantizer, as for mdx_q) and ``get_state``. Returns (the quantized state, the module
    demucs' ``load_model`` restores from it, sig).

    ``min_size`` (MB) decides which parameters are quantized; the tiny test networks need a
    small one (e.g. 1e-4) to quantize most of them. With ``spread_bits`` each group's number
    of bits is drawn from 2..14 (a fresh quantizer has 8 everywhere; diffq 0.2.4 cannot store
    15-bit groups). ``state_options`` (``packed``, ``torch_pack``) call the quantizer's
    ``get_quantized_state`` with them instead, as demucs' get_state would with defaults.
    """
    from demucs.states import get_quantizer, get_state, load_model

    module, sig = make_demucs_member(klass, args, kwargs, seed)
    quantizer = get_quantizer(module, SimpleNamespace(diffq=1e-4, qat=None, min_size=min_size,
                                                      group_size=group_size))
    if spread_bits:
        generator = torch.Generator().manual_seed(seed + 2)
        with torch.no_grad():
            for qparam in quantizer._qparams:
                if qparam.other is None:
                    qparam.logit.copy_(torch.rand(qparam.logit.shape, generator=generator) * 7 - 4)
    if state_options:
        state = quantizer.get_quantized_state(**state_options)
        state["__quantized"] = True
    else:
        state = get_state(module, quantizer)
    restored = load_model({"klass": _demucs_class(klass), "args": _copy(list(args)),
                           "kwargs": _copy(dict(kwargs)), "state": state})
    restored.eval()
    return state, restored, sig


def flatten_state(state: dict) -> tuple[dict[str, torch.Tensor], Any]:
    """A nested diffq state as a flat ``{key: tensor}`` plus its JSON ``structure``: a
    restatement of ``_flatten_state`` in demucs' ``tools/export_hf.py`` (the script that made
    the Hub files; it is not part of the demucs package). demucs' ``hf._unflatten_state`` is its
    inverse and reads what this writes."""
    tensors: dict[str, torch.Tensor] = {}

    def flatten(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[path] = value.detach().clone().contiguous()
            return {"_tensor": path}
        if isinstance(value, dict):
            return {"_dict": [[key, flatten(item, f"{path}.{key}")] for key, item in value.items()]}
        if isinstance(value, (list, tuple)):
            kind = "_" + type(value).__name__
            return {kind: [flatten(item, f"{path}.{index}") for index, item in enumerate(value)]}
        if isinstance(value, type):
            return {"_class": f"{value.__module__}.{value.__qualname__}"}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"Cannot serialize {path} of type {type(value)}.")

    structure = flatten(state, "state")
    return tensors, structure


def spec_with_legacy_files(spec: Any, th_paths: Sequence[Path], url_root: str | None = None, **changes: Any) -> Any:
    """A registry ``ModelSpec`` whose members are the given ``<sig>-<sha8>.th`` files.

    ``hf_repo`` is cleared (pass ``hf_repo=...`` to keep one) so that nothing asks the Hub.
    """
    names = [Path(path).name for path in th_paths]
    fields = dict(
        members=tuple(name.split("-", 1)[0] for name in names),
        legacy_files=tuple(names),
        legacy_url_root=url_root,
        hf_repo=None,
    )
    fields.update(changes)
    return demucs_spec(spec, **fields)


def demucs_spec(spec: Any, **changes: Any) -> Any:
    """A demucs ``ModelSpec`` with some fields changed: those every model has, or its demucs
    settings (``hf_repo``, ``members``, ``legacy_files``, ``sha256``, ...). Its files are
    worked out again by the demucs family, as the registry does."""
    from stemsplit.families.demucs.adapter import FAMILY

    own = {field.name for field in dataclasses.fields(spec.config)}
    config = dataclasses.replace(spec.config, **{k: v for k, v in changes.items() if k in own})
    table: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value is None or value == ():
            continue
        if field.name == "sha256":
            value = dict(value)
        elif field.name == "bag_weights":
            value = [list(row) for row in value]
        elif isinstance(value, tuple):
            value = list(value)
        table[field.name] = value
    extra = tuple(file for file in spec.files if file.source == "url" and file.kind == "url")
    config, files = FAMILY.parse(spec.name, table, extra)
    common = {k: v for k, v in changes.items() if k not in own}
    return dataclasses.replace(spec, config=config, files=files, **common)


# --------------------------------------------------------------------------- HTTP server


def closed_port() -> int:
    """A loopback TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FileServer:
    """Serves ``root`` on 127.0.0.1 from a thread. Switches (set them between requests):

    * ``corrupt``: flip one byte in the middle of every file served;
    * ``drop_halfway``: announce the full Content-Length, send half, close the connection;
    * ``status``: answer every request with this HTTP status instead (e.g. 404, 500).

    ``requests`` lists the paths asked for (``count`` is its length). It also answers as a
    minimal Hugging Face Hub: ``/<owner>/<repo>/resolve/<revision>/<file>`` serves
    ``root/<owner>/<repo>/<file>`` with the ``X-Repo-Commit`` and ``ETag`` headers that
    huggingface_hub needs, so ``HF_ENDPOINT=<url>`` downloads from ``root``.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.corrupt = False
        self.drop_halfway = False
        self.status: int | None = None
        self.requests: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                self._serve(send_body=False)

            def do_GET(self) -> None:
                self._serve(send_body=True)

            def _serve(self, send_body: bool) -> None:
                with server._lock:
                    server.requests.append(self.path)
                if server.status is not None:
                    self._empty(server.status)
                    return
                relative = self.path.split("?", 1)[0].lstrip("/")
                hub = re.fullmatch(r"([^/]+/[^/]+)/resolve/[^/]+/(.+)", relative)
                if hub:
                    relative = f"{hub.group(1)}/{hub.group(2)}"
                target = (server.root / relative).resolve()
                if server.root.resolve() not in target.parents or not target.is_file():
                    self._empty(404)
                    return
                data = target.read_bytes()
                if server.corrupt and data:
                    middle = len(data) // 2
                    data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                if hub:
                    commit = hashlib.sha1(hub.group(1).encode()).hexdigest()
                    self.send_header("X-Repo-Commit", commit)
                    self.send_header("ETag", f'"{hashlib.sha256(target.read_bytes()).hexdigest()}"')
                self.end_headers()
                if not send_body:
                    return
                if server.drop_halfway:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(data)

            def _empty(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def count(self) -> int:
        return len(self.requests)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "FileServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------- CLI runs
_IMPORT_PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write('\\nIMPORTED:' + ','.join(\n"
    "    m for m in {heavy!r} if m in sys.modules) + '\\n'))\n"
    "from stemsplit.__main__ import main\n"
    "main()\n")


def run_stemsplit_probed(args: Sequence[str], *, cwd: Path, env: dict | None = None,
                         heavy: Sequence[str] = ("torch", "numpy"), timeout: float = 120):
    """Run the ``stemsplit`` command with ``args`` (in ``cwd``, the environment plus ``env``);
    returns (the completed process, its stderr less the probe's line, the set of ``heavy``
    modules it imported)."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE.format(heavy=tuple(heavy)), *args], cwd=cwd,
        env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)
    lines = result.stderr.splitlines()
    probe = [line for line in lines if line.startswith("IMPORTED:")]
    assert probe, result.stderr
    imported = {name for name in probe[-1].split(":", 1)[1].split(",") if name}
    stderr = "\n".join(line for line in lines if not line.startswith("IMPORTED:")).strip()
    return result, stderr, imported


def default_sigint() -> None:
    """In the child: Ctrl-C's default disposition, as a terminal gives it. A child inherits
    an ignored SIGINT (Python then installs no KeyboardInterrupt handler), and the pytest
    process may hold one ignored after in-process CLI runs."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def default_stop_signals() -> None:
    """In the child: SIGINT, SIGTERM and SIGHUP at their defaults, as a terminal gives them
    (a run under `nohup` or in the background inherits some ignored, and stemsplit rightly
    keeps an ignored signal ignored)."""
    default_sigint()
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)


def hold_lock_in_threads(target: Path) -> tuple[list[str], bool]:
    """Two threads take the cache lock for ``target`` (``stemsplit.cache.locks.file_lock``,
    whichever way the platform locks): (the order they held it, whether the second was told
    to wait)."""
    import threading
    import time

    from stemsplit.cache.locks import file_lock

    order: list[str] = []
    waited = threading.Event()
    holding = threading.Event()

    def second() -> None:
        holding.wait(5)
        with file_lock(target, on_wait=waited.set):
            order.append("second")

    thread = threading.Thread(target=second)
    thread.start()
    with file_lock(target):
        holding.set()
        told = waited.wait(5)  # the other thread is blocked on our lock
        time.sleep(0.2)
        order.append("first")
    thread.join(10)
    return order, told


# --------------------------------------------------------------------------- albums
def tone_file(path: Path, seconds: float = 0.5, rate: int = 44100) -> Path:
    """A stereo 220 Hz tone written to ``path`` (its folders made)."""
    import numpy as np
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(path, np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2).T, rate)
    return path


def make_album(root: Path, seconds: float = 0.5) -> Path:
    """A folder as users have them: nested tracks (two with one name in different folders),
    hidden files, non-audio files and a broken mp3."""
    tone_file(root / "01 intro.wav", seconds)
    tone_file(root / "cd 1" / "02 song.flac", seconds)
    tone_file(root / "cd 1" / "deeper" / "03 song.wav", seconds)
    tone_file(root / "cd 2" / "02 song.flac", seconds)  # same name as in cd 1: no collision
    tone_file(root / ".hidden" / "skip.wav", seconds)
    tone_file(root / ".dotfile.wav", seconds)
    (root / "cd 2" / "cover.jpg").write_bytes(b"\xff\xd8not really a jpeg")
    (root / "cd 2" / "notes.txt").write_text("liner notes")
    (root / "broken.mp3").write_bytes(b"ID3" + b"\x00" * 200)
    return root


ALBUM_TRACKS = ("01 intro", "cd 1/02 song", "cd 1/deeper/03 song", "cd 2/02 song")
"""The relative output folders of ``make_album``'s good tracks."""
