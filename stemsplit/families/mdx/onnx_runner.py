"""MDX-Net ONNX files: UVR's hash, the network's input shape, an onnxruntime session, and
the parameters that turn the file into a separator.

Where the parameters come from, in order: options (``--n-fft``, ``--compensate``,
``--primary-stem``) over weights.toml's entry (the model named, or for ``--weights FILE`` the
entry whose UVR hash the file has, so a renamed file is still recognised). ``dim_f`` and
``dim_t`` are read from the network's input shape and must agree with the entry.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ...errors import ChecksumError, ModelError, UsageError
from ...models.mdx import CHANNELS, HOP, MDXNet, MDXParameters
from ...specs import ModelSpec
from ...stems import complement_name, stem_name

UVR_HASH_BYTES = 10_240_000
"""UVR keys its model data by the MD5 of a file's last 10,240,000 bytes (all of a smaller one)."""

def uvr_hash(path: str | Path) -> str:
    """UVR's model hash: the MD5 of the last 10,240,000 bytes (or of the whole file)."""
    digest = hashlib.md5()
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        file.seek(max(0, size - UVR_HASH_BYTES))
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def stem_names(primary: str) -> tuple[str, str]:
    """Our (primary, secondary) stem names for a primary stem named the UVR way or ours:
    vocals -> (vocals, accompaniment); instrumental/accompaniment -> (accompaniment, vocals);
    any other source X -> (x, no_x), as ``--two-stems`` names complements."""
    name = stem_name(primary)
    if not name or name.startswith("no_"):
        raise UsageError(f"--primary-stem {primary!r}: name the stem the network estimates",
                         hint="e.g. vocals, instrumental, drums")
    return name, complement_name(name)


@dataclass(frozen=True)
class MDXOptions:
    """What the user said about an MDX-Net model; None = take it from weights.toml."""

    n_fft: int | None = None
    compensate: float | None = None
    primary_stem: str | None = None
    denoise: bool = False

    @property
    def given(self) -> bool:
        return any(value is not None for value in (self.n_fft, self.compensate,
                                                   self.primary_stem))


# -- onnxruntime ------------------------------------------------------------------------
def execution_providers(device: torch.device) -> list[str]:
    """onnxruntime providers for ``device``: CUDA or CoreML when asked for and present."""
    import onnxruntime

    available = set(onnxruntime.get_available_providers())
    wanted = {"cuda": ["CUDAExecutionProvider"], "mps": ["CoreMLExecutionProvider"]}
    providers = [p for p in wanted.get(device.type, []) if p in available]
    return providers + ["CPUExecutionProvider"]


@dataclass(frozen=True)
class InputShape:
    """The network's input: [batch, 4, dim_f, dim_t]; None where the file leaves it open."""

    batch: int | None
    planes: int | None
    dim_f: int | None
    dim_t: int | None


class OnnxSpectrumNetwork:
    """An onnxruntime session as a (batch, 4, dim_f, dim_t) -> same-shape torch callable."""

    def __init__(self, path: Path, device: torch.device, threads: int | None = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        threads = threads if threads is not None else torch.get_num_threads()
        if threads > 0:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=execution_providers(device))
        except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph types
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ModelError(f"{path}: not a loadable ONNX network ({type(error).__name__}"
                             f"{': ' + first[:200] if first else ''})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ModelError(f"{path}: an MDX-Net network has one input and one output, this "
                             f"one has {len(inputs)} and {len(outputs)}")
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        dims = [d if isinstance(d, int) and d > 0 else None for d in inputs[0].shape]
        if len(dims) != 4:
            raise ModelError(f"{path}: the network's input has shape {inputs[0].shape}, "
                             "not [batch, 4, dim_f, dim_t] as MDX-Net's")
        self.shape = InputShape(*dims)
        self.providers = self.session.get_providers()

    def __call__(self, spec: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(spec.detach().cpu().numpy(), dtype=np.float32)
        fixed = self.shape.batch
        if fixed is None or fixed == array.shape[0]:
            out = self.session.run([self.output_name], {self.input_name: array})[0]
        else:  # a network exported for a fixed batch (1): one chunk at a time
            if array.shape[0] % fixed:
                raise ModelError(f"MDX-Net: the network takes batches of {fixed}; use "
                                 f"--batch-size {fixed}")
            out = np.concatenate([
                self.session.run([self.output_name], {self.input_name: array[i:i + fixed]})[0]
                for i in range(0, array.shape[0], fixed)])
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(spec.device)


# -- parameters -------------------------------------------------------------------------
def spec_for_hash(digest: str, known: Sequence[ModelSpec]) -> ModelSpec | None:
    """The entry of ``known`` (the registry's MDX-Net models) whose UVR hash is ``digest``."""
    for spec in known:
        if (spec.config.uvr_hash or "") == digest:
            return spec
    return None


def check_uvr_hash(path: Path, spec: ModelSpec) -> None:
    """A downloaded file must have the UVR hash weights.toml records, or one of its
    ``uvr_hash_candidates`` (else it is deleted)."""
    expected = spec.config.uvr_hash
    allowed = ((str(expected).lower(),) if expected
               else tuple(getattr(spec.config, "uvr_hash_candidates", None) or ()))
    if not allowed:
        return
    actual = uvr_hash(path)
    if actual not in allowed:
        expected = expected or "one of " + ", ".join(allowed)
        try:
            path.unlink()
            fate = "deleted; run again to download it anew"
        except OSError:
            fate = f"delete {path} and run again"
        raise ChecksumError(
            f"{path}: UVR hash {actual}, expected {expected} for {spec.name}; the file was {fate}",
            hint="if it persists the server copy or a proxy is corrupting it")


def build_mdx_network(
    path: Path,
    *,
    spec: ModelSpec | None,
    options: MDXOptions,
    device: torch.device,
    known: Sequence[ModelSpec] = (),
) -> tuple[MDXNet, ModelSpec | None]:
    """The separator for ``path``: ``spec`` is the named model (None for ``--weights``, then
    the file's UVR hash may find one of ``known``). Returns the network and the spec used,
    if any."""
    digest = None
    if spec is None:
        digest = uvr_hash(path)
        spec = spec_for_hash(digest, known)
        label = f"{path.name} (recognised as {spec.name})" if spec is not None else path.name
    else:
        label = f"{path.name} ({spec.name})"
    entry = spec.config.as_dict() if spec is not None else {}
    n_fft = options.n_fft if options.n_fft is not None else entry.get("n_fft")
    compensate = options.compensate if options.compensate is not None else entry.get("compensate")
    if options.primary_stem is not None:
        sources = stem_names(options.primary_stem)
    else:
        sources = tuple(spec.stems) if spec is not None else None
    missing = [flag for flag, value in (("--n-fft", n_fft), ("--compensate", compensate),
                                        ("--primary-stem", sources)) if value is None]
    if missing:
        raise UsageError(
            f"{path.name}: an MDX-Net file stemsplit does not know (UVR hash {digest}); "
            f"give {', '.join(missing)}",
            hint="e.g. --n-fft 7680 --compensate 1.009 --primary-stem vocals (UVR's model data "
                 "for the file: mdx_n_fft_scale_set, compensate, primary_stem)")
    if len(sources) != 2 or sources[0] == sources[1]:
        raise ModelError(f"{label}: an MDX-Net model has two distinct stems, not {sources}")

    network = OnnxSpectrumNetwork(path, device)
    shape = network.shape
    if shape.planes not in (None, 2 * CHANNELS):
        raise ModelError(f"{label}: the network takes {shape.planes} input planes, not 4 "
                         "(left and right, real and imaginary) as MDX-Net's")
    for key in ("dim_f", "dim_t"):
        found, recorded = getattr(shape, key), entry.get(key)
        if found is not None and recorded is not None and int(recorded) != found:
            raise ModelError(
                f"{label}: the network's input has {key} {found}, but weights.toml's "
                f"{spec.name} has {key} {recorded}",
                hint="the file is not this model's; pass the right file or model name")
    dim_f = shape.dim_f or entry.get("dim_f")
    dim_t = shape.dim_t or entry.get("dim_t")
    if dim_f is None or dim_t is None:
        raise ModelError(f"{label}: the network's input shape leaves dim_f or dim_t open, "
                         "and no weights.toml entry gives them")
    try:
        parameters = MDXParameters(n_fft=int(n_fft), dim_f=int(dim_f), dim_t=int(dim_t),
                                   compensate=float(compensate),
                                   hop=int(entry.get("hop", HOP)))
    except (TypeError, ValueError) as error:
        raise ModelError(f"{label}: bad MDX-Net parameters ({error})") from None
    except ModelError as error:
        raise ModelError(f"{label}: {error.message}", hint=error.hint) from None
    sample_rate = spec.sample_rate if spec is not None else 44100
    return MDXNet(network, parameters, sources, sample_rate=sample_rate,
                  denoise=options.denoise), spec
