"""``--precision``: the number format the networks compute in, checked against the device.

``fp32`` is the default and the reference: every parity test runs with it, and on CUDA it
means true fp32 (TF32 off, unless ``STEMSPLIT_ALLOW_TF32`` is set). ``bf16`` and ``fp16``
run the networks in 16-bit floats: a family gives each of its networks a designed path
(weights converted once, the STFT, the masks and the overlap-add kept in fp32) or, where it
has none, autocast around the network (``families.base.Family.set_precision``). ``auto`` is
``fp32`` for now.

On a CPU: ``bf16`` is fast where the CPU has AMX or AVX512-BF16 and still runs (emulated,
slower than fp32) elsewhere, with a warning; ``fp16`` is refused (CPUs have no fast float16
arithmetic). On CUDA both are the GPU's half types; ``bf16`` needs a GPU that has it.

Imports no torch at import time: the command line checks the name before any slow work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import settings
from .errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
"""What ``--precision`` takes."""

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""/proc/cpuinfo flags of a CPU with bf16 arithmetic (AMX tiles, or AVX-512 dot products)."""


@dataclass(frozen=True)
class Precision:
    """A precision resolved for a device."""

    name: str
    """fp32, bf16 or fp16 (``auto`` resolved)."""
    warning: str | None = None
    """A one-line note for the user (bf16 emulated on this CPU), or None."""

    @property
    def reduced(self) -> bool:
        return self.name != "fp32"

    @property
    def dtype(self) -> "torch.dtype":
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]


FP32 = Precision("fp32")


def check_precision(name: str | None, device: str | None = None) -> str:
    """``name`` if ``--precision`` takes it (None: ``auto``), else a UsageError; also one
    for fp16 on ``device`` "cpu" (a device name, before torch is imported)."""
    name = "auto" if name is None else str(name).lower()
    if name not in PRECISIONS:
        raise UsageError(f"--precision {name}: unknown", hint=f"use {', '.join(PRECISIONS)}")
    if name == "fp16" and device == "cpu":
        _refuse_fp16_on_cpu()
    return name


def _refuse_fp16_on_cpu() -> None:
    raise UsageError("--precision fp16 needs a GPU: CPUs have no fast float16 arithmetic",
                     hint="use --precision bf16 on a CPU")


def resolve_precision(name: str | None, device: "torch.device") -> Precision:
    """The precision ``name`` means on ``device``: a UsageError where the device cannot run
    it, a warning where it runs slowly. On CUDA at fp32, TF32 is turned off (process-wide)
    unless ``STEMSPLIT_ALLOW_TF32`` is set."""
    name = check_precision(name)
    if name in ("auto", "fp32"):
        if device.type == "cuda":
            _tf32(settings.allow_tf32())
        return FP32
    if device.type == "cpu":
        if name == "fp16":
            _refuse_fp16_on_cpu()
        if not cpu_has_bf16():
            return Precision(name, warning="this CPU has neither AMX nor AVX512-BF16: bf16 "
                                           "is emulated, slower than fp32")
        return Precision(name)
    if device.type == "cuda" and name == "bf16":
        import torch

        if not torch.cuda.is_bf16_supported():
            raise UsageError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no "
                             "bfloat16 arithmetic", hint="use --precision fp16")
    return Precision(name)


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU does bf16 arithmetic natively (AMX or AVX512-BF16): from
    ``cpuinfo``'s flags on Linux, else from what torch's CPU dispatch detected."""
    try:
        flags = set()
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
                break
        if flags:
            return any(flag in flags for flag in CPU_BF16_FLAGS)
    except OSError:
        pass
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def _tf32(allowed: bool) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed
