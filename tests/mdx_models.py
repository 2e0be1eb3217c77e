"""Random-weight MDX-Net ONNX networks with the published input/output names and shapes, and
an independent whole-track reference of UVR's MDX-Net algorithm.

The published networks take ``input`` [batch, 4, dim_f, dim_t] float32 and return ``output``
of the same shape. Ours are tiny masking networks built with the onnx helper API:

    output = input * sigmoid(conv3x3(input) * scale) + conv3x3(input) * leak

so that the four planes, the bins and the frames must all be in the right place for two
implementations to agree, without the cost of a real U-Net.

Also here: ``write_registry`` (a weights.toml of MDX-Net entries for tests),
``reference_separation`` (UVR's algorithm over the whole track, numpy) and
``run_audio_separator`` (audio-separator 0.47.1 run offline on a seeded model folder).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# name -> (n_fft, dim_f, dim_t, compensate): shapes of published models (MODELS.md).
KIM_VOCAL_2 = dict(n_fft=7680, dim_f=3072, dim_t=256, compensate=1.009)
INST_HQ_4 = dict(n_fft=5120, dim_f=2560, dim_t=256, compensate=1.019)


def write_mdx_onnx(path: Path, dim_f: int, dim_t: int, *, seed: int = 0, kind: str = "mask",
                   hidden: int = 4, batch: int | str = "batch", opset: int = 17) -> Path:
    """Write a random-weight MDX-Net stand-in. ``kind``: "mask" (above), "identity" (output =
    input) or "heavy" (a deeper network for benchmarks). ``batch``: a symbolic (dynamic)
    batch dimension name, or a fixed size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    shape = [batch, 4, dim_f, dim_t]
    graph_input = helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)
    graph_output = helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)
    nodes, initializers = [], []

    def weight(name: str, array: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv(source: str, target: str, cin: int, cout: int, gain: float) -> None:
        w = weight(f"{target}_w", rng.standard_normal((cout, cin, 3, 3)) * gain / np.sqrt(9 * cin))
        b = weight(f"{target}_b", rng.standard_normal(cout) * 0.01)
        nodes.append(helper.make_node("Conv", [source, w, b], [target], pads=[1, 1, 1, 1]))

    if kind == "identity":
        nodes.append(helper.make_node("Identity", ["input"], ["output"]))
    elif kind in ("mask", "heavy"):
        scale = weight("scale", np.array(1e-2))
        leak = weight("leak", np.array(0.05))
        if kind == "mask":
            conv("input", "logits_raw", 4, 4, 1.0)
        else:  # three hidden layers: enough work per chunk to look like a real network
            conv("input", "h1", 4, hidden, 1.0)
            nodes.append(helper.make_node("Mul", ["h1", scale], ["h1s"]))
            nodes.append(helper.make_node("Tanh", ["h1s"], ["h1t"]))
            conv("h1t", "h2", hidden, hidden, 1.0)
            nodes.append(helper.make_node("Tanh", ["h2"], ["h2t"]))
            conv("h2t", "logits_raw", hidden, 4, 1.0)
        nodes.append(helper.make_node("Mul", ["logits_raw", scale], ["logits"]))
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["mask"]))
        nodes.append(helper.make_node("Mul", ["input", "mask"], ["masked"]))
        conv("input", "linear", 4, 4, 1.0)
        nodes.append(helper.make_node("Mul", ["linear", leak], ["leaked"]))
        nodes.append(helper.make_node("Add", ["masked", "leaked"], ["output"]))
    else:
        raise ValueError(kind)
    graph = helper.make_graph(nodes, "mdx_net_stand_in", [graph_input], [graph_output],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="stemsplit-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_registry(path: Path, entries: dict[str, dict],
                   server_url: str = "http://127.0.0.1:9/") -> Path:
    """A weights.toml with MDX-Net entries (name -> file, stems, n_fft, dim_f, dim_t,
    compensate, uvr_hash, optional aliases), downloading from ``server_url``."""
    lines = ['default_model = "%s"\n' % next(iter(entries))]
    for name, e in entries.items():
        lines.append(f'''
[models.{name}]
family = "mdx"
architecture = "MDX-Net (ONNX)"
description = "test"
aliases = {list(e.get("aliases", []))!r}
stems = {list(e["stems"])!r}
sample_rate = 44100
files = [{{ url = "{server_url}{e['file']}" }}]
parameters = {{ n_fft = {e['n_fft']}, dim_f = {e['dim_f']}, dim_t = {e['dim_t']}, hop = 1024, \
compensate = {e['compensate']}, uvr_hash = "{e['uvr_hash']}" }}
'''.replace("'", '"'))
    path.write_text("".join(lines))
    return path


# -- the reference: UVR's SeperateMDX.demix / audio-separator's MDXSeparator.demix, whole
# track, numpy float64 except for the network itself ------------------------------------
def _stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """torch.stft(center=True, pad_mode="reflect", periodic Hann), one-sided: (F, T)."""
    window = np.hanning(n_fft + 1)[:-1]  # periodic
    padded = np.pad(x, n_fft // 2, mode="reflect")
    frames = 1 + (len(padded) - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    return np.fft.rfft(padded[index] * window, axis=-1).T


def _istft(spec: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """torch.istft(center=True) with the same window: overlap-add / window power, trimmed."""
    window = np.hanning(n_fft + 1)[:-1]
    frames = spec.shape[1]
    length = n_fft + hop * (frames - 1)
    signal = np.zeros(length)
    envelope = np.zeros(length)
    pieces = np.fft.irfft(spec.T, n=n_fft, axis=-1) * window
    for t in range(frames):
        signal[t * hop: t * hop + n_fft] += pieces[t]
        envelope[t * hop: t * hop + n_fft] += window ** 2
    half = n_fft // 2
    with np.errstate(invalid="ignore", divide="ignore"):  # the window's zero, trimmed away
        return (signal / envelope)[half: length - half]


def reference_separation(mix: np.ndarray, run, n_fft: int, dim_f: int, dim_t: int,
                         compensate: float, hop: int = 1024, overlap: float = 0.25,
                         denoise: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(primary, secondary) of a (2, n) mixture, as UVR computes them. ``run`` maps a
    (1, 4, dim_f, dim_t) float32 array to the network's output."""
    mix = np.asarray(mix, dtype=np.float64)
    n = mix.shape[-1]
    trim = n_fft // 2
    chunk_size = hop * (dim_t - 1)
    gen_size = chunk_size - 2 * trim
    pad = gen_size + trim - n % gen_size
    mixture = np.concatenate([np.zeros((2, trim)), mix, np.zeros((2, pad))], axis=1)
    step = int((1 - overlap) * chunk_size)
    result = np.zeros((2, mixture.shape[-1]))
    divider = np.zeros((2, mixture.shape[-1]))
    for start in range(0, mixture.shape[-1], step):
        end = min(start + chunk_size, mixture.shape[-1])
        window = np.hanning(end - start) if overlap != 0 else np.ones(end - start)
        part = np.zeros((2, chunk_size))
        part[:, : end - start] = mixture[:, start:end]
        planes = []
        for channel in range(2):
            spec = _stft(part[channel], n_fft, hop)[:dim_f]
            planes += [spec.real, spec.imag]
        spek = np.stack(planes)[None].astype(np.float32)
        spek[:, :, :3, :] = 0
        if denoise:
            predicted = -0.5 * run(-spek).astype(np.float64) + 0.5 * run(spek).astype(np.float64)
        else:
            predicted = run(spek).astype(np.float64)
        bins = n_fft // 2 + 1
        full = np.zeros((4, bins, predicted.shape[-1]))
        full[:, :dim_f] = predicted[0]
        waves = np.stack([_istft(full[2 * c] + 1j * full[2 * c + 1], n_fft, hop)
                          for c in range(2)])
        result[:, start:end] += waves[:, : end - start] * window
        divider[:, start:end] += window
    with np.errstate(invalid="ignore", divide="ignore"):  # the first window's zero, trimmed
        estimate = (result / divider)[:, trim: trim + n]
    primary = estimate * compensate
    return primary, mix - primary


def onnx_runner(path: Path):
    """A single-threaded onnxruntime session as ``run(array) -> array``."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), sess_options=options,
                                           providers=["CPUExecutionProvider"])
    return lambda array: session.run(["output"], {"input": array})[0]


# -- the peer: audio-separator 0.47.1, run offline ---------------------------------------
def seed_audio_separator_models(models: Path, onnx: Path, *, n_fft: int, dim_f: int,
                                dim_t: int, compensate: float, primary: str) -> None:
    """Fill audio-separator's model folder so that it runs ``onnx`` (as Kim_Vocal_2.onnx)
    offline: UVR's download list and the MDX hash table entry with these parameters."""
    import json
    import shutil

    from stemsplit.families.mdx.onnx_runner import uvr_hash

    models.mkdir(parents=True, exist_ok=True)
    shutil.copy(onnx, models / "Kim_Vocal_2.onnx")
    lists = {key: {} for key in (
        "demucs_download_list", "vr_download_list", "mdx_download_list",
        "mdx_download_vip_list", "mdx23c_download_list", "mdx23c_download_vip_list",
        "roformer_download_list")}
    lists["mdx_download_list"]["MDX-Net Model: Kim Vocal 2"] = "Kim_Vocal_2.onnx"
    (models / "download_checks.json").write_text(json.dumps(lists))
    (models / "vr_model_data.json").write_text("{}")
    dim_t_set = int(np.log2(dim_t))
    assert 2 ** dim_t_set == dim_t, "audio-separator stores dim_t as a power of two"
    (models / "mdx_model_data.json").write_text(json.dumps({uvr_hash(onnx): {
        "compensate": compensate, "mdx_dim_f_set": dim_f, "mdx_dim_t_set": dim_t_set,
        "mdx_n_fft_scale_set": n_fft, "primary_stem": primary}}))


def run_audio_separator(executable: str, onnx: Path, wav: Path, work: Path, *, n_fft: int,
                        dim_f: int, dim_t: int, compensate: float, primary: str,
                        overlap: float = 0.25, timeout: float = 600) -> dict[str, np.ndarray]:
    """Separate ``wav`` with audio-separator (``executable``) and the ONNX file ``onnx``,
    offline: its model folder is seeded with UVR's download list and MDX hash table for the
    file (as Kim_Vocal_2.onnx), ``--normalization 1.0`` and soundfile output. Returns its
    stems by UVR name ("Vocals", "Instrumental", ...) as (channels, time) arrays."""
    import os
    import subprocess

    import soundfile

    models, out = work / "models", work / "out"
    out.mkdir(parents=True, exist_ok=True)
    seed_audio_separator_models(models, onnx, n_fft=n_fft, dim_f=dim_f, dim_t=dim_t,
                                compensate=compensate, primary=primary)
    import imageio_ffmpeg

    tools = work / "bin"  # audio-separator wants an ffmpeg on PATH
    tools.mkdir(exist_ok=True)
    if not (tools / "ffmpeg").exists():
        (tools / "ffmpeg").symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    environment = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(
        [executable, str(wav), "-m", "Kim_Vocal_2.onnx", "--model_file_dir", str(models),
         "--output_dir", str(out), "--use_soundfile", "--normalization", "1.0",
         "--output_format", "WAV", "--mdx_segment_size", str(dim_t),
         "--mdx_overlap", str(overlap), "--log_level", "warning"],
        check=True, env=environment, capture_output=True, timeout=timeout)
    stems = {}
    for path in out.glob("*.wav"):
        name = path.name.split("_(", 1)[1].split(")", 1)[0]
        stems[name] = soundfile.read(path, dtype="float32")[0].T
    return stems
