"""fp32 against bf16 (the designed paths) and int8 (measured, not shipped) on full-size networks.

Three random-weight networks at their published dimensions, each variant in a process of
its own (so that each one's peak RSS is its own), alternating, ``--repeats`` times:

- BS-RoFormer with viperx ep_317's dimensions (dim 512, depth 12, 62 bands) on an 8 s
  track: one chunk of its config (352800 samples);
- htdemucs (the published arguments) on one training segment (7.8 s);
- MDX23C-8KFFT-InstVoc_HQ's network on one chunk (261120 samples, 5.9 s).

Variants: ``fp32`` (what every parity test runs), ``bf16`` (``set_compute_dtype``: the
path ``--precision bf16`` takes) and, for the RoFormer and htdemucs, ``int8``: PyTorch's
dynamic quantisation of every linear the transformers run through ``cpu_kernels.linear``
(weights int8 per output channel, activations quantised per call; convolutions, norms,
attention and the STFTs stay fp32). int8 is a measurement for issue 22, not a stemsplit
option: its SDR cost cannot be judged without real weights.

Prints, per network and variant, the median time of the forward pass (the model built
and its weights converted before the clock starts), the peak RSS of the process, the
fp32 / variant speed ratio, and the SNR of the variant's output against fp32's.

    python benchmarks/bench_reduced_networks.py [--repeats 2] [--threads 2]
        [--networks roformer,htdemucs,mdx23c] [--variants fp32,bf16,int8]

Numbers, not assertions: run it on a quiet machine, and say which CPU
(``grep -m1 'model name' /proc/cpuinfo``; bf16 speed needs AVX512-BF16 or AMX).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import ROOT, htdemucs_pair

NETWORKS = ("roformer", "htdemucs", "mdx23c")
VARIANTS = ("fp32", "bf16", "int8")
INT8_NETWORKS = ("roformer", "htdemucs")


def build(network: str):
    """(the fp32 network, its input): fixed seeds, the same weights in every process."""
    import torch

    if network == "htdemucs":
        _, ours, mix = htdemucs_pair("full")
        return ours, mix
    torch.manual_seed(0)
    if network == "roformer":
        from stemsplit.models.bs_roformer import BSRoformer
        from tests.roformer_models import VIPERX_BS

        model, length = BSRoformer(**VIPERX_BS), 352800
    else:
        from stemsplit.models.mdx23c import MDX23C
        from tests.test_models_mdx23c import HQ, HQ_CHUNK

        model, length = MDX23C(**HQ), HQ_CHUNK
    mix = 0.2 * torch.randn(1, 2, length, generator=torch.Generator().manual_seed(1))
    return model.eval(), mix


def int8_linear():
    """``cpu_kernels.linear`` with every weight dynamically quantised to int8 (per output
    channel, once per weight) and the activations quantised per call."""
    import torch
    import torch.nn.functional as F

    packed_weights: dict[tuple, object] = {}

    def linear(x, weight, bias=None, gelu=False):
        key = (weight.data_ptr(), tuple(weight.shape))
        packed = packed_weights.get(key)
        if packed is None:
            w = weight.detach().float()
            scales = (w.abs().amax(dim=1).clamp_min(1e-8) / 127).double()
            quantised = torch.quantize_per_channel(
                w, scales, torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8)
            packed = torch.ops.quantized.linear_prepack(
                quantised, None if bias is None else bias.detach().float())
            packed_weights[key] = packed
        rows = x.reshape(-1, x.shape[-1]).contiguous()
        out = torch.ops.quantized.linear_dynamic(rows, packed, True)
        out = out.view(*x.shape[:-1], out.shape[-1])
        return F.gelu(out) if gelu else out

    return linear


def child(network: str, variant: str, threads: int, out: Path) -> None:
    """One forward pass of ``network`` at ``variant``; its output to ``out`` (.npy), its
    time and this process's peak RSS to stdout as JSON."""
    import torch

    from stemsplit.allocator import keep_freed_memory

    keep_freed_memory()  # as the stemsplit CLI does
    torch.set_num_threads(threads)
    model, mix = build(network)
    if variant == "bf16":
        model.set_compute_dtype(torch.bfloat16)
    elif variant == "int8":
        from stemsplit.models import roformer, transformer

        roformer.linear = transformer.linear = int8_linear()
    with torch.inference_mode():
        started = time.perf_counter()
        stems = model(mix)
        seconds = time.perf_counter() - started
    np.save(out, stems.float().numpy())
    print(json.dumps({"seconds": seconds,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    reference, estimate = reference.astype(np.float64), estimate.astype(np.float64)
    return float(10 * np.log10(np.sum(reference ** 2) / np.sum((reference - estimate) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", nargs=3, metavar=("NETWORK", "VARIANT", "OUT"),
                        help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        network, variant, out = options.child
        child(network, variant, options.threads, Path(out))
        return
    from bench_precision import cpu_name
    from stemsplit.precision import cpu_has_bf16

    print(f"CPU: {cpu_name()}; bf16 arithmetic: {'yes' if cpu_has_bf16() else 'no (emulated)'}; "
          f"AMX: {'yes' if 'amx_bf16' in Path('/proc/cpuinfo').read_text() else 'no'}; "
          f"{options.threads} threads; each variant a process of its own, alternating")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory(prefix="stemsplit-reduced-") as directory:
        for network in options.networks.split(","):
            variants = [v for v in options.variants.split(",")
                        if v != "int8" or network in INT8_NETWORKS]
            runs: dict[str, list[dict]] = {variant: [] for variant in variants}
            for repeat in range(options.repeats):
                for variant in variants:
                    out = Path(directory, f"{network}-{variant}.npy")
                    result = subprocess.run(
                        [sys.executable, __file__, "--threads", str(options.threads),
                         "--child", network, variant, str(out)],
                        env=env, capture_output=True, text=True, check=True)
                    runs[variant].append(json.loads(result.stdout.strip().splitlines()[-1]))
                    print(f"  {network} {variant} run {repeat + 1}: "
                          f"{runs[variant][-1]['seconds']:.2f} s, "
                          f"{runs[variant][-1]['peak_rss_mib']:.0f} MiB", flush=True)
            reference = np.load(Path(directory, f"{network}-fp32.npy"))
            base = statistics.median(r["seconds"] for r in runs["fp32"])
            print(f"{network}:")
            for variant in variants:
                seconds = statistics.median(r["seconds"] for r in runs[variant])
                rss = statistics.median(r["peak_rss_mib"] for r in runs[variant])
                closeness = ("" if variant == "fp32" else
                             f", SNR against fp32 "
                             f"{snr_db(reference, np.load(Path(directory, f'{network}-{variant}.npy'))):.1f} dB")
                print(f"  {variant:5} {seconds:7.2f} s  (fp32 / {variant} {base / seconds:.2f}x)  "
                      f"peak RSS {rss:6.0f} MiB{closeness}")


if __name__ == "__main__":
    main()
